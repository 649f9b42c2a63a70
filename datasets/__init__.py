"""Port of fb.resnet.torch ``datasets/init.lua``: dataset creation with a cached index.

``create(opt, split)`` loads ``<opt.gen>/<opt.dataset>.t7``, generating it first with
``datasets/<dataset>_gen.py`` when it is missing or (ImageNet) when its ``basedir`` differs from
``opt.data``. The cache files have exactly the Lua layout, so Lua and this port share them both ways.
Unlike Lua (which writes downloads to a hard-coded ``gen/``), everything goes to ``-gen`` (PARITY §9 #13).

Unlike Lua, a CIFAR cache is also rebuilt (with a ``note:`` line) when ``-data`` names another source
than the one it was built from, or the same one changed since (see :mod:`datasets.source`); Lua kept
training on the old cache. ``-data sample`` is the CIFAR-10 sample shipped in ``datasets/sample/``.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from fbresnet_port import t7
from fbresnet_port.errors import UserError, note

from . import source

DATASETS = ("imagenet", "cifar10", "cifar100")
_CLASSES = {"imagenet": ("imagenet", "ImagenetDataset"), "cifar10": ("cifar10", "CifarDataset"),
            "cifar100": ("cifar100", "CifarDataset")}


def cache_path(opt) -> Path:
    """``paths.concat(opt.gen, opt.dataset .. '.t7')``."""
    return Path(str(getattr(opt, "gen", "gen") or "gen")) / f"{opt.dataset}.t7"


def _load_cache(path: Path) -> Any:
    try:
        return t7.load(path)
    except (t7.T7FormatError, OSError) as e:
        raise UserError(f"cannot read the dataset cache {path}: {e}. Delete it to regenerate it.") from None


def _make_gen_dir(folder: Path) -> None:
    """Create ``-gen`` (with parents) before generating, so a bad path is reported as such."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"-gen {folder} is a file, not a folder (choose another -gen for the generated files)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"-gen {folder}: cannot create the folder for generated files "
                        f"({e.strerror or e}); choose another -gen") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"-gen {folder} is not writable (choose another -gen for the generated files)")


def _basedir_reason(opt, info: Any, path: Path) -> str | None:
    """``isvalid``: a cache with a ``basedir`` is stale when it differs from ``-data`` (exact string)."""
    basedir = info.get("basedir") if isinstance(info, dict) else None
    if basedir is None or basedir == str(opt.data):
        return None
    return f"the cache {path} lists the images of {basedir}"


def load_image_info(opt) -> Any:
    """The cache table for ``opt.dataset``, generated first when missing or stale."""
    if opt.dataset not in DATASETS:
        raise UserError(f"unknown dataset: {opt.dataset}")
    path = cache_path(opt)
    info, reason = None, None
    if path.is_file() and opt.dataset == "imagenet":
        info = _load_cache(path)
        reason = _basedir_reason(opt, info, path)
    elif path.is_file() and source.data_path(opt):
        reason = source.stale_reason(path, source.data_path(opt))
    if not path.is_file() or reason is not None:
        if reason is not None:
            note(f"-data {opt.data}: {reason}; rebuilding it")
        gen = importlib.import_module(f"{__name__}.{opt.dataset}_gen")
        _make_gen_dir(path.parent)
        built_from = gen.exec(opt, path)
        if opt.dataset != "imagenet":
            source.record(path, source.data_path(opt), built_from)
        info = None
    if info is None:
        info = _load_cache(path)
    if opt.dataset.startswith("cifar"):
        from .cifar10_gen import CIFAR10, check_cache
        from .cifar100_gen import CIFAR100
        check_cache(info, CIFAR10 if opt.dataset == "cifar10" else CIFAR100, path)
    _check_classes(opt, info, path)
    return info


def _check_classes(opt, info: Any, path: Path) -> None:
    """With ``-resetClassifier``, the new classifier needs a score for every label of the data (Lua failed
    in the criterion at the first batch holding a larger label)."""
    if not getattr(opt, "resetClassifier", False):
        return
    key = "imageClass" if opt.dataset == "imagenet" else "labels"
    top = max((int(info[split][key].max()) for split in ("train", "val") if info[split][key].numel()), default=0)
    if top > int(opt.nClasses):
        raise UserError(f"-nClasses {opt.nClasses}: the labels of {path} go up to {top}, so the new classifier "
                        f"needs at least {top} classes; use -nClasses {top}")


def create(opt, split: str, image_info: Any = None):
    """Port of ``M.create(opt, split)``: the dataset object of ``opt.dataset`` for ``split``.

    ``image_info`` (the loaded cache) may be passed to avoid reading the cache again.
    """
    info = image_info if image_info is not None else load_image_info(opt)
    module, cls = _CLASSES[opt.dataset]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(info, opt, split)
