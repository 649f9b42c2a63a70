"""The README and docs say what the code does: the generated class lists are current, and the README's
``register`` example runs as written on a Lua file that uses the class."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import torch

from conftest import REPO_ROOT
from fbresnet_port import t7
from fbresnet_port.lua_nn import lua_module, unregister

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def _generated(*args: str) -> str:
    """``python -m fbresnet_port.lua_nn`` in a fresh process (no class registered by other tests)."""
    return subprocess.run([sys.executable, "-m", "fbresnet_port.lua_nn", *args], cwd=REPO_ROOT, check=True,
                          capture_output=True, text=True, timeout=120).stdout.strip()


def test_readme_lists_the_supported_classes_of_the_registry():
    block = re.search(r"<!-- supported-classes:begin -->\n(.*?)\n<!-- supported-classes:end -->", README, re.S)
    assert block, "README lacks the supported-classes block"
    assert block.group(1).strip() == _generated("--compact"), \
        "README's class list is stale: paste the output of python -m fbresnet_port.lua_nn --compact"
    assert "| nngraph" in block.group(1) and "`nn.gModule`" in block.group(1)


def test_docs_class_table_is_current():
    text = (REPO_ROOT / "docs" / "lua-classes.md").read_text(encoding="utf-8")
    assert _generated() in text, "docs/lua-classes.md is stale: regenerate it with python -m fbresnet_port.lua_nn"


def test_register_example_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n(import torch, fbresnet_port\n.*?)```", README, re.S).group(1)
    assert '@fbresnet_port.register("MyScale")' in code
    x = torch.randn(2, 3)
    tree = lua_module("nn.Sequential", modules=t7.LuaList([
        t7.TorchObject("MyScale", t7.LuaTable({"factor": 2.5, "output": torch.empty(0), "train": True})),
        lua_module("nn.Tanh")]))
    t7.save(tmp_path / "my_model.t7", tree)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    try:
        exec(compile(code, "README.md", "exec"), scope)
        with torch.no_grad():
            assert torch.allclose(scope["model"](x), torch.tanh(2.5 * x))
    finally:
        unregister("MyScale")
