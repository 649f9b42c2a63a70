"""The user class of karpathy/char-rnn that its checkpoints hold: ``OneHot`` (util/OneHot.lua), and dpnn's
``nn.OneHot`` (OneHot.lua), its generalisation to inputs of any shape.

A char-rnn checkpoint ``{protos={rnn=..., criterion=...}, opt=..., vocab=...}`` converts with
``load_lua_model(path, key='protos.rnn')``: its model/LSTM.lua, GRU.lua and RNN.lua graphs are nngraph
gModules of standard nn modules (see :mod:`.graph`) plus this OneHot.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._base import ChildConverter, Fields, LuaModule, export_param
from .text import LuaInputError, _one_based

__all__ = ["LuaOneHot"]


class LuaOneHot(LuaModule, nn.Module):
    """char-rnn's OneHot(outputSize) / dpnn's nn.OneHot: 1-based indices -> one-hot rows of ``outputSize``.

    char-rnn's takes a 1-D input (N indices -> N x outputSize), dpnn's any shape (... -> ... x outputSize).
    The output has the module's float type (``.double()`` makes it float64); no gradient flows to the input.
    """

    lua_types = ("OneHot", "nn.OneHot")

    def __init__(self, output_size: int):
        super().__init__()
        self.outputSize = int(output_size)
        self.register_buffer("_one", torch.ones(()), persistent=False)  # the module's float type

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        size = f.int("outputSize")
        if size < 1:
            raise f.error(f"outputSize should be positive, got {size}")
        m = cls(size)
        eye = f.get("_eye")
        if isinstance(eye, torch.Tensor) and eye.is_floating_point():
            m._one = m._one.to(torch.float64 if eye.dtype == torch.float64 else torch.float32)
        return m

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.lua_typename == "OneHot" and input.dim() != 1:
            raise _bad_shape(self, input)
        index = _one_based(self, input.detach(), self.outputSize, "index")
        return F.one_hot(index, self.outputSize).to(self._one.dtype)

    def lua_fields(self) -> dict[str, Any]:
        if self.lua_typename == "OneHot":
            return {"outputSize": self.outputSize, "_eye": export_param(torch.eye(self.outputSize))}
        return {"outputSize": self.outputSize}

    def lua_str(self) -> str:
        return self.lua_typename if self.lua_typename == "OneHot" else f"{self.lua_typename}({self.outputSize})"


def _bad_shape(module: LuaOneHot, input: torch.Tensor) -> LuaInputError:
    return LuaInputError(f"{module.lua_typename}: char-rnn's OneHot takes a 1-D tensor of indices (one per "
                         f"sequence of the batch), got shape {tuple(input.shape)}; feed one time step at a time")
