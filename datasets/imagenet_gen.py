"""Port of ``datasets/imagenet-gen.lua``: list the images of an ImageNet-style folder into a cache.

``<data>/train/<class>/<image>`` and ``<data>/val/<class>/<image>``. Classes are the entries of
``train/`` sorted by bytes (Lua string ``<`` under LuaJIT), except ``.``, ``..`` and ``.DS_Store``;
class index = 1-based position. Images are files whose names end in .jpg/.jpeg/.png/.ppm/.bmp in
any letter case (``find -iname``), listed per split sorted by the bytes of their path (Lua keeps
``find``'s directory order, which is not reproducible). Cache (same layout as Lua)::

    {basedir = <data>, classList = {names...},
     train = {imagePath = CharTensor[n, maxLen+1] ('class/file', zero padded), imageClass = LongTensor[n]},
     val   = {...}}

Errors (UserError): missing ``train``/``val`` folder, no classes, an image outside a class folder
of ``train/``, a class without training images, a split without images.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from fbresnet_port import t7
from fbresnet_port.errors import UserError

EXTENSIONS = ("jpg", "png", "jpeg", "ppm", "bmp")
IGNORED = {".", "..", ".DS_Store"}


def find_classes(train_dir: Path) -> list[str]:
    """Entries of ``train_dir`` in byte order, like ``findClasses`` (plain files included, as in Lua)."""
    return sorted((n for n in os.listdir(train_dir) if n not in IGNORED), key=os.fsencode)


def _is_image(name: str) -> bool:
    return name.lower().rsplit(".", 1)[-1] in EXTENSIONS and "." in name


class _Progress:
    """`` | <split>: 30% of the class folders (300/1000), 384,123 images`` lines, one per tenth of the
    folders (ImageNet's 1.28 M training images take minutes to list; Lua printed nothing)."""

    STEPS = 10

    def __init__(self, split_dir: Path) -> None:
        self.name = split_dir.name
        with os.scandir(split_dir) as entries:
            self.total = sum(1 for e in entries if e.is_dir())
        self.shown = 0

    def update(self, folders_done: int, images: int) -> None:
        if not self.total:
            return
        step = folders_done * self.STEPS // self.total
        if step > self.shown:
            self.shown = step
            print(f" | {self.name}: {100 * folders_done // self.total}% of the class folders "
                  f"({folders_done}/{self.total}), {images:,} images", flush=True)


def find_images(split_dir: Path, class_to_idx: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``findImages``: ``class/file`` paths as a zero-padded CharTensor and 1-based classes (LongTensor).

    Prints a progress line every tenth of the class folders."""
    paths: list[bytes] = []
    classes: list[int] = []
    found: list[tuple[bytes, str, str]] = []
    progress = _Progress(split_dir)
    folders_done = 0
    for root, dirs, files in os.walk(split_dir, followlinks=True):
        depth = len(Path(root).relative_to(split_dir).parts)
        if depth == 0:
            dirs.sort()
        elif depth == 1:  # os.walk is depth-first: entering a class folder finishes the previous one
            progress.update(folders_done, len(found))
            folders_done += 1
        for f in files:
            if _is_image(f):
                full = Path(root) / f
                found.append((os.fsencode(full.relative_to(split_dir).as_posix()), Path(root).name, f))
    progress.update(folders_done, len(found))
    found.sort(key=lambda x: x[0])
    for rel, class_name, f in found:
        idx = class_to_idx.get(class_name)
        if idx is None:
            raise UserError(f"class not found: {class_name} (image {split_dir / rel.decode(errors='replace')}); "
                            f"images must be at {split_dir}/<class>/<image> with <class> a folder of train/")
        paths.append(os.fsencode(class_name) + b"/" + os.fsencode(f))
        classes.append(idx)
    if not paths:
        raise UserError(f"no images found in {split_dir} (expected {split_dir}/<class>/<image>."
                        f"{'|'.join(EXTENSIONS)})")
    max_len = max(len(p) for p in paths) + 1
    buf = bytearray(len(paths) * max_len)
    for i, p in enumerate(paths):
        buf[i * max_len:i * max_len + len(p)] = p
    image_path = torch.frombuffer(buf, dtype=torch.int8).reshape(len(paths), max_len).clone()
    return image_path, torch.tensor(classes, dtype=torch.int64)


def image_path(info_split: dict, i: int) -> str:
    """Path ``class/file`` of image ``i`` (0-based) from a cache split (``ffi.string`` of the row)."""
    row = info_split["imagePath"][i]
    raw = bytes(row.to(torch.uint8).tolist())
    return os.fsdecode(raw.split(b"\0", 1)[0])


_LAYOUT = "-data must be a folder holding train/ and val/, each with one sub-folder of images per class"


def exec(opt, cache_path: str | os.PathLike) -> dict:
    """Port of ``imagenet-gen.lua`` ``M.exec(opt, cacheFile)``: scan ``opt.data`` and write the cache."""
    data = str(opt.data)
    train_dir, val_dir = Path(data) / "train", Path(data) / "val"
    if not train_dir.is_dir():
        raise UserError(f"train directory not found: {train_dir} ({_LAYOUT})")
    if not val_dir.is_dir():
        raise UserError(f"val directory not found: {val_dir} ({_LAYOUT})")
    print("=> Generating list of images")
    class_list = find_classes(train_dir)
    if not class_list:
        raise UserError(f"no class folders in {train_dir}")
    class_to_idx = {c: i + 1 for i, c in enumerate(class_list)}
    print(" | finding all validation images")
    val_path, val_class = find_images(val_dir, class_to_idx)
    print(" | finding all training images")
    train_path, train_class = find_images(train_dir, class_to_idx)
    counts = torch.bincount(train_class, minlength=len(class_list) + 1)[1:]
    empty = [class_list[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
    if empty:
        shown = ", ".join(empty[:10]) + (f" (and {len(empty) - 10} more)" if len(empty) > 10 else "")
        raise UserError(f"{len(empty)} class(es) of {train_dir} have no training images: {shown}. "
                        f"Every entry of train/ is a class; add images or remove these entries.")
    info = {
        "basedir": data,
        "classList": list(class_list),
        "train": {"imagePath": train_path, "imageClass": train_class},
        "val": {"imagePath": val_path, "imageClass": val_class},
    }
    cache_path = Path(cache_path)
    print(f" | saving list of images to {cache_path}")
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    t7.save(cache_path, info)
    return info
