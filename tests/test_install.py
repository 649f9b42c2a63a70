"""``pip install .`` and ``pip install -e .`` into a fresh virtual environment, then use the package from another folder.

The inner venv is made without the base interpreter's site-packages (``python -m venv`` always starts from the
*base* interpreter, even when run from a venv, and what that one has installed differs between machines).
Instead a ``.pth`` file makes it see the site-packages of the environment running the tests: the torch,
torchvision, pip and setuptools that ``pip install -r requirements.txt`` put there. pip then installs the
project alone into the inner venv (``--no-deps --no-build-isolation``: no download). Slow (~10 s) but part of the
suite.
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import IN_CI, REPO_ROOT

pytestmark = pytest.mark.slow

_SKIP = shutil.ignore_patterns(".git", "tests", "checkpoints", "gen", "build", "*.egg-info", "__pycache__", ".ci",
                               "benchmarks", ".venv")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_NO_INPUT"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INDEX"] = "1"   # nothing is downloaded: a missing build requirement fails instead of fetching
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def running_site_dirs() -> list[Path]:
    """The site-packages folders of the interpreter running the tests (its venv's, plus the base ones when that
    venv includes them, plus the user site when enabled)."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    seen: list[Path] = []
    for d in map(Path, dirs):
        if d.is_dir() and d.resolve() not in seen:
            seen.append(d.resolve())
    return seen


def _require_wheel_builder() -> None:
    """pip builds the project with the running environment's setuptools, which must build wheels
    (``bdist_wheel`` is in setuptools from 70.1; before that it needs the ``wheel`` package)."""
    probe = ("import setuptools, importlib.util as u; v = tuple(int(p) for p in setuptools.__version__.split('.')[:2]);"
             "print(v >= (70, 1) or u.find_spec('wheel') is not None)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    if proc.stdout.strip() != "True":
        msg = ("the running environment has no setuptools that builds wheels (setuptools>=70.1, listed in "
               "requirements.txt): python3 -m pip install -r requirements.txt")
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def _venv(tmp_path: Path) -> Path:
    """A venv that sees the running environment's packages through a ``.pth`` file, not the base interpreter's."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    inner_site = _run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                      tmp_path).stdout.strip()
    # Plain path lines: .pth files inside those folders (e.g. a developer's own editable install of this
    # project) are not processed, so only what pip installs into the venv provides fbresnet_port.
    Path(inner_site, "_running_env.pth").write_text("".join(f"{d}\n" for d in running_site_dirs()),
                                                    encoding="utf-8")
    return venv / "bin"


CHECK = ("import sys, fbresnet_port, models, datasets, fbresnet_port.lua_nn, fbresnet_port.convert, "
         "fbresnet_port.main, torch; "
         "print(fbresnet_port.__file__); print(models.__file__); "
         "print(len(fbresnet_port.lua_nn.supported_classes()) > 100); "
         "print(datasets.SAMPLE_ARCHIVE.is_file() if hasattr(datasets, 'SAMPLE_ARCHIVE') else 'n/a'); "
         "print(torch.__file__); print(sys.prefix)")


@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_pip_install_in_a_fresh_venv(tmp_path, editable):
    _require_wheel_builder()
    src = tmp_path / "src"
    shutil.copytree(REPO_ROOT, src, ignore=_SKIP)
    bin_dir = _venv(tmp_path)
    _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
          *(["-e"] if editable else []), str(src)], tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _run([str(bin_dir / "python"), "-c", CHECK], elsewhere).stdout.splitlines()
    venv = (tmp_path / "venv").resolve()
    where = Path(out[0]).resolve()
    if editable:
        assert where.is_relative_to(src.resolve()), out
    else:
        assert "site-packages" in where.parts and where.is_relative_to(venv), out
    assert Path(out[1]).resolve().parent.parent == where.parent.parent
    assert out[2] == "True"
    assert out[3] in ("True", "n/a")
    # torch comes from the environment running the tests, whatever the base interpreter has
    assert any(Path(out[4]).resolve().is_relative_to(d) for d in running_site_dirs()), out
    assert Path(out[5]).resolve() == venv, out
    help_text = _run([str(bin_dir / "fbresnet-convert"), "--help"], elsewhere).stdout
    assert "--format" in help_text and "torchscript" in help_text
    train_help = _run([str(bin_dir / "fbresnet-train"), "-h"], elsewhere).stdout
    assert "-growthRate" in train_help and "-optMemory" in train_help
