"""Lua Torch's table modules in plain PyTorch, for tables whose length is only known when the model runs
(torch/nn's CAddTable family, JoinTable, SplitTable, SelectTable, NarrowTable, FlattenTable, DepthConcat's
zero-padded join, DenseNet's DenseConnectLayerCustom input, nnx's SpatialClassifier). Lua tables are Python
lists; indices and dimensions are Lua's (1-based, negative from the end).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .shapes import lua_index, lua_positive_dim, table_entries
from .text import input_error


def table_reduce(op: str, input: list[torch.Tensor]) -> torch.Tensor:
    """Lua nn.CAddTable, CSubTable, CMulTable, CDivTable, CMaxTable, CMinTable (``op``: Add, Sub, ...): element-wise
    over the table, first to last."""
    input = table_entries(input, 2 if op in ("Sub", "Div") else 1)
    if op == "Sub":
        return input[0] - input[1]
    if op == "Div":
        return input[0] / input[1]
    fn = {"Add": torch.add, "Mul": torch.mul, "Max": torch.maximum, "Min": torch.minimum}[op]
    out = input[0]
    for x in input[1:]:
        out = fn(out, x)
    return out


def join_table(input: list[torch.Tensor], dimension: int, n_input_dims: int | None = None) -> torch.Tensor:
    """Lua nn.JoinTable(dimension, nInputDims): the tensors of the table concatenated along ``dimension``."""
    input = table_entries(input)
    return torch.cat(input, lua_positive_dim(int(dimension), input[0], n_input_dims))


def split_table(input: torch.Tensor, dimension: int, n_input_dims: int | None = None) -> list[torch.Tensor]:
    """Lua nn.SplitTable(dimension, nInputDims): the table of slices along ``dimension``."""
    return list(input.unbind(lua_positive_dim(int(dimension), input, n_input_dims)))


def select_table(input: Any, index: int | str) -> Any:
    """Lua nn.SelectTable(index): one entry (negative index: from the end; a string: a named entry)."""
    if isinstance(index, str):
        if not isinstance(input, dict) or index not in input:
            raise KeyError(f"index {index!r} does not exist in the input table")
        return input[index]
    input = table_entries(input, 0)
    return input[lua_index(int(index), len(input), "index")]


def narrow_table(input: list[Any], offset: int, length: int = 1) -> list[Any]:
    """Lua nn.NarrowTable(offset, length): entries offset .. offset+length-1 (Lua fails further on past the end)."""
    start = int(offset) - 1
    input = table_entries(input, start + int(length))
    return input[start:start + int(length)]


def flatten_table(input: Any, out: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Lua nn.FlattenTable: nested tables as one flat table (depth first)."""
    out = [] if out is None else out
    if isinstance(input, (list, tuple)):
        for item in input:
            flatten_table(item, out)
    else:
        out.append(input)
    return out


def depth_concat(outputs: list[torch.Tensor], dimension: int) -> torch.Tensor:
    """Lua nn.DepthConcat: outputs joined along ``dimension`` (1-based), those smaller in another dimension
    zero-padded around (floor((largest - size) / 2) before)."""
    dim = int(dimension) - 1
    sizes = [max(o.shape[d] for o in outputs) for d in range(outputs[0].dim())]
    padded = []
    for o in outputs:
        pads: list[int] = []
        for d in reversed(range(o.dim())):  # F.pad takes the last dimension first
            diff = 0 if d == dim else sizes[d] - o.shape[d]
            pads += [diff // 2, diff - diff // 2]
        padded.append(F.pad(o, pads) if any(pads) else o)
    return torch.cat(padded, dim)


def as_table(input: Any) -> list[Any]:
    """A tensor as the table ``{input}``; a table as it is (DenseNet's DenseConnectLayerCustom input)."""
    return [input] if isinstance(input, torch.Tensor) else list(input)


class SpatialClassifier(nn.Module):
    """nnx's nn.SpatialClassifier: ``classifier`` applied to the K-vector of every pixel of a K x H x W input (a 4-D
    batch sample by sample), giving N x H x W."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() == 4:
            return torch.stack([self(x) for x in input])
        if input.dim() != 3:
            raise input_error(self, f"expected a K x H x W input (or a batch of them), got {tuple(input.shape)}")
        k, h, w = input.shape
        out = self.classifier(input.reshape(k, h * w).t())
        if out.dim() == 1:
            out = out.reshape(1, -1)
        return out.t().reshape(out.shape[1], h, w)
