"""Port of ``datasets/imagenet.lua``: the ImageNet dataset (images decoded with Pillow) and its preprocessing.

``get(i)`` (0-based) returns ``{'input': FloatTensor 3xHxW in [0, 1], 'target': 1-based class}``
like ``image.load(path, 3, 'float')`` (gray -> 3 channels, alpha dropped, x * float(1/255)).
An unreadable image raises :class:`UnreadableImage` (an ``OSError``); the data loader skips it and
counts it. train: RandomSizedCrop(224) -> ColorJitter(0.4, 0.4, 0.4) -> Lighting(0.1) ->
ColorNormalize -> HorizontalFlip(0.5); val: Scale(256) -> ColorNormalize -> CenterCrop(224)
(TenCrop(224) with ``-tenCrop``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from PIL import Image

from fbresnet_port.errors import UserError

from . import transforms as t
from .imagenet_gen import image_path

# Computed by the Lua authors from a random subset of ImageNet training images
MEANSTD = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
PCA = {
    "eigval": (0.2175, 0.0188, 0.0045),
    "eigvec": ((-0.5675, 0.7192, 0.4009),
               (-0.5808, -0.0045, -0.8140),
               (-0.5836, -0.6948, 0.4203)),
}
CROP, SCALE = 224, 256


class UnreadableImage(OSError):
    """An image file that cannot be opened or decoded."""


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """``image.load(path, 3, 'float')``: RGB float32 3 x H x W, values x * float32(1/255).

    The format is detected from the file's content (not its extension), so Lua's fallback to
    ``image.decompress`` for a misnamed file is implicit.
    """
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32) * np.float32(1 / 65535)
                x = torch.from_numpy(arr).unsqueeze(0).expand(3, -1, -1).contiguous()
                return x
            rgb = im.convert("RGB")
            arr = np.asarray(rgb)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"Error reading: {path} ({e})") from None
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float()
    return x.mul_(1 / 255)


class ImagenetDataset:
    """Port of ``resnet.ImagenetDataset`` (imagenet.lua). ``image_info`` is the loaded cache table."""

    MEANSTD = MEANSTD
    PCA = PCA

    def __init__(self, image_info: Mapping, opt, split: str):
        if split not in image_info:
            raise UserError(f"the dataset cache has no '{split}' split")
        self.image_info = image_info[split]
        self.opt = opt
        self.split = split
        self.dir = Path(str(opt.data)) / split
        if not self.dir.is_dir():
            raise UserError(f"directory does not exist: {self.dir}")
        self.image_class: torch.Tensor = self.image_info["imageClass"].reshape(-1)

    def path(self, i: int) -> Path:
        return self.dir / image_path(self.image_info, i)

    def get(self, i: int) -> dict:
        """Image ``i`` (0-based) and its 1-based class; raises UnreadableImage for a bad file."""
        return {"input": load_image(self.path(i)), "target": int(self.image_class[i])}

    def size(self) -> int:
        return int(self.image_class.shape[0])

    __len__ = size

    def preprocess(self, crop: int | None = None, scale: int | None = None) -> t.Transform:
        """The Lua pipeline for this split (``crop``/``scale`` default to CROP/SCALE = 224/256, as in Lua)."""
        crop = crop or CROP
        scale = scale or SCALE
        if self.split == "train":
            return t.Compose([
                t.RandomSizedCrop(crop),
                t.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
                t.Lighting(0.1, self.PCA["eigval"], self.PCA["eigvec"]),
                t.ColorNormalize(self.MEANSTD),
                t.HorizontalFlip(0.5),
            ])
        if self.split == "val":
            crop_t = t.TenCrop(crop) if getattr(self.opt, "tenCrop", False) else t.CenterCrop(crop)
            return t.Compose([t.Scale(scale), t.ColorNormalize(self.MEANSTD), crop_t])
        raise ValueError(f"invalid split: {self.split}")
