"""``pip install .`` and ``pip install -e .`` into a fresh virtual environment, then use the package from another folder.

The venv sees this machine's torch/torchvision, pip and setuptools (``--system-site-packages --without-pip``: no
download), and pip installs the project alone into the venv (``--no-deps --no-build-isolation``).
Slow (~30 s) but part of the suite.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow

_SKIP = shutil.ignore_patterns(".git", "tests", "checkpoints", "gen", "build", "*.egg-info", "__pycache__", ".ci",
                               "benchmarks")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_NO_INPUT"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], tmp_path)
    return venv / "bin"


CHECK = ("import fbresnet_port, models, datasets, fbresnet_port.lua_nn, fbresnet_port.convert, fbresnet_port.main; "
         "print(fbresnet_port.__file__); print(models.__file__); "
         "print(len(fbresnet_port.lua_nn.supported_classes()) > 100); "
         "print(datasets.SAMPLE_ARCHIVE.is_file() if hasattr(datasets, 'SAMPLE_ARCHIVE') else 'n/a')")


@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_pip_install_in_a_fresh_venv(tmp_path, editable):
    src = tmp_path / "src"
    shutil.copytree(REPO_ROOT, src, ignore=_SKIP)
    bin_dir = _venv(tmp_path)
    _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
          *(["-e"] if editable else []), str(src)], tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _run([str(bin_dir / "python"), "-c", CHECK], elsewhere).stdout.splitlines()
    where = Path(out[0]).resolve()
    if editable:
        assert where.is_relative_to(src.resolve()), out
    else:
        assert "site-packages" in where.parts and where.is_relative_to((tmp_path / "venv").resolve()), out
    assert Path(out[1]).resolve().parent.parent == where.parent.parent
    assert out[2] == "True"
    assert out[3] in ("True", "n/a")
    help_text = _run([str(bin_dir / "fbresnet-convert"), "--help"], elsewhere).stdout
    assert "--format" in help_text and "torchscript" in help_text
    train_help = _run([str(bin_dir / "fbresnet-train"), "-h"], elsewhere).stdout
    assert "-growthRate" in train_help and "-optMemory" in train_help
