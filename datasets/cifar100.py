"""Port of ``datasets/cifar100.lua``: as CIFAR-10 (:mod:`datasets.cifar10`) with CIFAR-100's mean/std."""
from __future__ import annotations

from .cifar10 import CifarDataset as _Cifar10Dataset

# Computed by the Lua authors from the CIFAR-100 training set (0..255 scale)
MEANSTD = {"mean": (129.3, 124.1, 112.4), "std": (68.2, 65.4, 70.4)}


class CifarDataset(_Cifar10Dataset):
    """Port of cifar100.lua ``resnet.CifarDataset``: only the normalisation constants differ."""

    MEANSTD = MEANSTD
