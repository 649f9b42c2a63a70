"""The one-hot encoders of Lua Torch language models in plain PyTorch: karpathy/char-rnn's ``OneHot``
(util/OneHot.lua) and dpnn's ``nn.OneHot``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .text import one_based_index


class OneHot(nn.Module):
    """char-rnn's OneHot(outputSize) (``char_rnn=True``: a 1-D input of N indices -> N x outputSize) and dpnn's
    nn.OneHot (any shape -> ... x outputSize): 1-based indices -> one-hot rows, of the module's float type; no
    gradient flows to the input. ``eye_rows`` > 0: char-rnn's saved ``_eye`` was not the identity; its rows (the
    buffer ``eye``) are the output rows, as Lua's ``self._eye:index(1, input)``."""

    def __init__(self, output_size: int, char_rnn: bool = False, eye_rows: int = 0):
        super().__init__()
        self.outputSize, self.char_rnn = int(output_size), char_rnn
        self.register_buffer("_one", torch.ones(()), persistent=False)  # the module's float type
        self.register_buffer("eye", torch.zeros(eye_rows, output_size) if eye_rows else None)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.char_rnn and input.dim() != 1:
            raise ValueError(f"char-rnn's OneHot takes a 1-D tensor of indices (one per sequence of the batch), got "
                             f"shape {tuple(input.shape)}; feed one time step at a time")
        if self.eye is not None:
            return self.eye[one_based_index(self, input.detach(), self.eye.shape[0], "index")].to(self._one.dtype)
        index = one_based_index(self, input.detach(), self.outputSize, "index")
        return F.one_hot(index, self.outputSize).to(self._one.dtype)
