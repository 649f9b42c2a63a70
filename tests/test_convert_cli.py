"""``python -m fbresnet_port.convert``: Lua model -> PyTorch file -> rebuilt module (Lua fixtures as ground truth)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from conftest import REPO_ROOT, reference
from fbresnet_port import t7
from fbresnet_port.convert import load_converted, main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fbresnet_port.convert", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_convert_then_load_reproduces_lua_output(tmp_path):
    out = tmp_path / "om4.pt"
    result = CliRunner().invoke(main, [str(reference("densenet_cifar10_d100_k12_bc_om4", "model.t7")), str(out)])
    assert result.exit_code == 0, result.output
    assert "nn.DenseConnectLayerCustom" in result.output and "48" in result.output
    assert "parameters: 769162" in result.output  # manifest param_count
    data = torch.load(out, weights_only=True)
    assert data["format"] == "fbresnet-port/lua-model" and data["version"] == 1
    model = load_converted(out).eval()
    x = t7.load(reference("densenet_cifar10_d100_k12_bc_om4", "input.t7"))[:2]
    expected = t7.load(reference("densenet_cifar10_d100_k12_bc_om4", "output_eval.t7"))[:2]
    with torch.no_grad():
        y = model(x)
    assert (y - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_convert_zoo_keeps_tables_and_sizes(tmp_path):
    out = tmp_path / "zoo.pt"
    result = CliRunner().invoke(main, [str(reference("zoo_tables", "model.t7")), str(out)])
    assert result.exit_code == 0, result.output
    model = load_converted(out).eval()
    with torch.no_grad():
        y = model(t7.load(reference("zoo_tables", "input.t7")))
    expected = t7.load(reference("zoo_tables", "output_eval.t7"))
    assert (y - expected).abs().max() <= 1e-4 * expected.abs().max()


@pytest.mark.parametrize("make_input, message", [
    (lambda d: d / "missing.t7", "no such file"),
    (lambda d: reference("t7-format", "truncated_and_corrupt", "trunc_last_byte.t7"), "runs past the end"),
    (lambda d: reference("t7-format", "ascii_cifar_batch.t7"), "not a Lua nn module"),
])
def test_bad_input_is_a_one_line_error(tmp_path, make_input, message):
    result = CliRunner().invoke(main, [str(make_input(tmp_path)), str(tmp_path / "out.pt")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert not (tmp_path / "out.pt").exists()


def test_unknown_class_is_an_error_without_traceback(tmp_path):
    tree = t7.TorchObject("nn.Sequential", {"modules": t7.LuaList([t7.TorchObject("nn.NoSuchLayer", {})])})
    t7.save(tmp_path / "bad.t7", tree)
    proc = _run(str(tmp_path / "bad.t7"), str(tmp_path / "out.pt"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "unsupported Lua module nn.NoSuchLayer at model.modules[1]" in proc.stderr
