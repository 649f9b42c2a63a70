"""Port of ``datasets/cifar10.lua``: the CIFAR-10 dataset and its preprocessing.

``get(i)`` (0-based ``i``) returns ``{'input': FloatTensor 3x32x32 in 0..255, 'target': 1-based label}``
as Lua does. ``preprocess()`` is the Lua pipeline on one image: train = ColorNormalize ->
HorizontalFlip(0.5) -> RandomCrop(32, 4) (padding after normalisation, so it pads with the mean
colour); val = ColorNormalize. ``get_batch`` does the same for a whole batch at once, vectorised
(used by the data loader); its targets are 0-based.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from fbresnet_port.errors import UserError

from . import transforms as t

# Computed by the Lua authors from the CIFAR-10 training set (0..255 scale)
MEANSTD = {"mean": (125.3, 123.0, 113.9), "std": (63.0, 62.1, 66.7)}

PAD = 4
SIZE = 32


def augment_batch(batch: Tensor, flip: Tensor, x1: Tensor, y1: Tensor, pad: int = PAD) -> Tensor:
    """HorizontalFlip + zero-pad + crop for a whole normalised batch (B x C x H x W) with given draws.

    ``flip`` (bool, B) mirrors sample b; (x1[b], y1[b]) is the top-left corner of its crop in the
    padded image (0..2*pad). Equal to transforms ``HorizontalFlip`` then ``RandomCrop(H, pad)``.
    """
    B, C, H, W = batch.shape
    padded = batch.new_zeros(B, H + 2 * pad, W + 2 * pad, C)
    padded[:, pad:pad + H, pad:pad + W] = batch.permute(0, 2, 3, 1)
    cols = x1.view(B, 1) + torch.arange(W).view(1, W)                  # B x W
    # flipping the padded image maps column c to (W + 2 pad - 1) - c (padding is symmetric)
    cols = torch.where(flip.view(B, 1), (W + 2 * pad - 1) - cols, cols)
    rows = y1.view(B, 1) + torch.arange(H).view(1, H)                  # B x H
    b = torch.arange(B).view(B, 1, 1)
    out = padded[b, rows.view(B, H, 1), cols.view(B, 1, W)]           # B x H x W x C
    return out.permute(0, 3, 1, 2).contiguous()


class CifarDataset:
    """Port of ``resnet.CifarDataset`` (cifar10.lua). ``imageInfo`` is the loaded cache table."""

    MEANSTD: Mapping[str, Sequence[float]] = MEANSTD

    def __init__(self, image_info: Mapping, opt, split: str):
        if split not in image_info:
            raise UserError(f"the dataset cache has no '{split}' split")
        self.image_info = image_info[split]
        self.data: Tensor = self.image_info["data"]
        self.labels: Tensor = self.image_info["labels"].reshape(-1)
        self.split = split
        self.opt = opt
        if split not in ("train", "val"):
            raise ValueError(f"invalid split: {split}")

    def get(self, i: int) -> dict:
        """Image ``i`` (0-based) as float 0..255 and its 1-based label."""
        return {"input": self.data[i].float(), "target": int(self.labels[i])}

    def size(self) -> int:
        return int(self.data.shape[0])

    __len__ = size

    def preprocess(self) -> t.Transform:
        """The per-image Lua pipeline for this split."""
        if self.split == "train":
            return t.Compose([t.ColorNormalize(self.MEANSTD), t.HorizontalFlip(0.5), t.RandomCrop(SIZE, PAD)])
        return t.ColorNormalize(self.MEANSTD)

    def normalize(self, batch: Tensor) -> Tensor:
        """ColorNormalize for a B x 3 x H x W float batch (same float32 arithmetic as per image)."""
        mean = torch.tensor(self.MEANSTD["mean"], dtype=batch.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.MEANSTD["std"], dtype=batch.dtype).view(1, 3, 1, 1)
        return (batch - mean) / std

    def get_batch(self, indices: Tensor, generator: torch.Generator | None = None,
                  n_crops: int = 1) -> tuple[Tensor, Tensor, int]:
        """Preprocessed images and 0-based targets of ``indices`` (0-based), vectorised.

        Train draws, per batch: B flip uniforms, then B x1, then B y1 (Lua draws them per image in
        the order flip, x1, y1). Returns ``(input float32 B x 3 x 32 x 32, target int64 B, 0)``.
        """
        if n_crops != 1:
            raise UserError("-tenCrop is only for ImageNet (CIFAR images have a single 32x32 view)")
        x = self.normalize(self.data.index_select(0, indices).float())
        target = self.labels.index_select(0, indices).to(torch.int64) - 1
        if self.split == "train":
            B = x.shape[0]
            flip = torch.rand(B, dtype=torch.float64, generator=generator) < 0.5
            x1 = torch.randint(0, 2 * PAD + 1, (B,), generator=generator)
            y1 = torch.randint(0, 2 * PAD + 1, (B,), generator=generator)
            x = augment_batch(x, flip, x1, y1)
        return x, target, 0
