"""Shared test helpers: where the Lua reference fixtures live and how a missing one is reported.

The fixtures are made by the ORIGINAL Lua Torch code (see ``../shared/reference/README.md``).
They are found through ``$FBRESNET_REFERENCE`` (default: ``<repo>/../shared/reference``) and the
CIFAR archive through ``$FBRESNET_DATA`` (default: ``<repo>/../shared/data``).
Under CI (``CI=true``) a missing fixture is a test failure; elsewhere it is a skip with the reason.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DIR = Path(os.environ.get("FBRESNET_REFERENCE", REPO_ROOT.parent / "shared" / "reference"))
DATA_DIR = Path(os.environ.get("FBRESNET_DATA", REPO_ROOT.parent / "shared" / "data"))
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(path: Path) -> Path:
    """Return ``path`` if it exists; otherwise fail (CI) or skip (elsewhere) naming what is missing."""
    if not path.exists():
        msg = (f"reference fixture missing: {path} "
               f"(set FBRESNET_REFERENCE / FBRESNET_DATA to the shared folder)")
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def reference(*parts: str) -> Path:
    """Path of a file or folder under the Lua reference fixtures, checked with :func:`require`."""
    return require(REFERENCE_DIR.joinpath(*parts))


def data_file(*parts: str) -> Path:
    """Path of a file under the shared data folder, checked with :func:`require`."""
    return require(DATA_DIR.joinpath(*parts))


# Every Lua model case shipped in ../shared/reference (folders with model.t7).
MODEL_CASES = [
    "densenet_cifar10_d40_k12_nobc_om2",
    "densenet_cifar10_d100_k12_bc_om2",
    "densenet_cifar10_d100_k12_bc_om4",
    "densenet_cifar100_d40_k12_bc_drop02",
    "densenet_imagenet_d121_k32",
    "densenet_imagenet_custom_2342_k8",
    "resnet_cifar10_d20_A",
    "preresnet_cifar10_d20",
]
ZOO_CASES = ["zoo_spatial", "zoo_tables", "zoo_dropout_eval"]


@pytest.fixture
def ref():
    """Fixture form of :func:`reference`."""
    return reference
