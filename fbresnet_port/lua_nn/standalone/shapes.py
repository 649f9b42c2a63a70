"""Lua Torch's reshaping, slicing and reduction layers in plain PyTorch (torch/nn's View, Reshape, Narrow,
Select, Transpose, Squeeze, Unsqueeze, Padding, Sum/Mean, Max/Min, Normalize, AddConstant, MulConstant and
fast-neural-style's ShaveImage). Dimensions are Lua's: 1-based, negative ones count from the end, and
``numInputDims``/``nInputDims`` shift them by one for a batch.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def lua_positive_dim(dim: int, input: torch.Tensor, n_input_dims: int | None = None) -> int:
    """Lua's ``_getPositiveDimension`` as a 0-based dimension (negative: from the end; one more for a batch of
    ``n_input_dims``-dimensional samples); a dimension outside the input raises IndexError."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"expected a tensor, got {type(input).__name__}")
    lua_dim = dim
    if dim < 0:
        dim = input.dim() + dim + 1
    elif n_input_dims is not None and input.dim() == int(n_input_dims) + 1:
        dim += 1
    if not 1 <= dim <= input.dim():
        raise IndexError(f"dimension {lua_dim} is out of range for a {input.dim()}-D input")
    return dim - 1


def lua_index(index: int, size: int, what: str = "index") -> int:
    """A 1-based Lua ``index`` (negative: from the end) as a 0-based index; IndexError outside ``1..size``."""
    i = size + index + 1 if index < 0 else index
    if not 1 <= i <= size:
        raise IndexError(f"{what} {index} is out of range 1..{size}")
    return i - 1


class View(nn.Module):
    """Lua nn.View(size): ``size`` may hold one -1; ``numInputDims`` decides which leading dimensions are a batch."""

    def __init__(self, size: list[int], numInputDims: int | None = None):
        super().__init__()
        self.size, self.numInputDims = list(size), numInputDims

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        size = [int(s) for s in self.size]
        n_elements = math.prod(s for s in size if s >= 0)
        nd = input.dim()
        maxdim = nd if self.numInputDims is None else int(self.numInputDims)
        ine = math.prod(input.shape[nd - maxdim:]) if maxdim > 0 else 1
        if n_elements == 0 or ine % n_elements != 0:
            raise ValueError(f"input view ({'x'.join(map(str, input.shape))}) and desired view "
                             f"({'x'.join(map(str, size))}) do not match")
        bsz = 1 if -1 in size else ine // n_elements
        bsz *= math.prod(input.shape[:nd - maxdim])
        if bsz == 1 and (self.numInputDims is None or nd <= int(self.numInputDims)):
            return input.reshape(size)
        return input.reshape([bsz] + size)


class Reshape(nn.Module):
    """Lua nn.Reshape(size): the input is a batch unless it has exactly prod(size) elements and a first size other
    than 1 (``batchMode`` true/false forces either)."""

    def __init__(self, size: list[int], batchMode: bool | None = None):
        super().__init__()
        self.size, self.batchMode = list(size), batchMode

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        size = [int(s) for s in self.size]
        if self.batchMode is False or (self.batchMode is None and input.numel() == math.prod(size)
                                       and input.shape[0] != 1):
            return input.reshape(size)
        return input.reshape([input.shape[0]] + size)


class Narrow(nn.Module):
    """Lua nn.Narrow(dimension, index, length): negative dimension, index or length count from the end."""

    def __init__(self, dimension: int, index: int, length: int = 1):
        super().__init__()
        self.dimension, self.index, self.length = dimension, index, length

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = lua_positive_dim(int(self.dimension), input)
        length, index = int(self.length), int(self.index)
        if length < 0:
            length = input.shape[dim] - index + length + 2
        if index < 0:
            index, length = 1, input.shape[dim] - length
        return input.narrow(dim, index - 1, length)


class Select(nn.Module):
    """Lua nn.Select(dimension, index): negative values count from the end."""

    def __init__(self, dimension: int, index: int):
        super().__init__()
        self.dimension, self.index = dimension, index

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = lua_positive_dim(int(self.dimension), input)
        return input.select(dim, lua_index(int(self.index), input.shape[dim]))


class Transpose(nn.Module):
    """Lua nn.Transpose({d1, d2}, ...): the swaps in order, shifted by the batch dimensions of ``numInputDims``."""

    def __init__(self, permutations: list[list[int]], numInputDims: int | None = None):
        super().__init__()
        self.permutations, self.numInputDims = [list(p) for p in permutations], numInputDims

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        offset = input.dim() - int(self.numInputDims) if self.numInputDims is not None else 0
        for a, b in self.permutations:
            input = input.transpose(a + offset - 1, b + offset - 1)
        return input


class Squeeze(nn.Module):
    """Lua nn.Squeeze([dim[, numInputDims]]): squeezes ``dim`` (if of size 1) or every singleton dimension; with
    ``numInputDims`` a batch of one keeps its batch dimension."""

    def __init__(self, dim: int | None = None, numInputDims: int | None = None):
        super().__init__()
        self.dim, self.numInputDims = dim, numInputDims

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = None if self.dim is None else int(self.dim)
        keep_batch = False
        if self.numInputDims is not None and input.dim() == int(self.numInputDims) + 1:
            if dim is not None:
                dim += 1
            elif input.shape[0] == 1:
                keep_batch = True
        out = input.squeeze() if dim is None else input.squeeze(dim - 1)
        return out.unsqueeze(0) if keep_batch else out


class Unsqueeze(nn.Module):
    """Lua nn.Unsqueeze(pos[, numInputDims]): a singleton dimension at ``pos`` after the batch dimensions."""

    def __init__(self, pos: int, numInputDims: int | None = None):
        super().__init__()
        self.pos, self.numInputDims = pos, numInputDims

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        n = input.dim() if self.numInputDims is None else int(self.numInputDims)
        return input.unsqueeze(int(self.pos) + input.dim() - n - 1)


class Padding(nn.Module):
    """Lua nn.Padding(dim, pad, nInputDim, value, index): ``|pad|`` entries of ``value`` inserted along ``dim``,
    after the input for pad > 0 (``index`` counted from the end) and before it for pad < 0."""

    def __init__(self, dim: int, pad: int, nInputDim: int | None = None, value: float = 0, index: int = 1):
        super().__init__()
        self.dim, self.pad, self.nInputDim, self.value, self.index = dim, pad, nInputDim, value, index

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = int(self.dim)
        if self.nInputDim is not None and input.dim() != int(self.nInputDim):
            dim += 1
        dim -= 1
        pad, index, size = int(self.pad), int(self.index), input.shape[dim]
        if pad > 0:
            index = size - index + 2
        else:
            pad = -pad
        shape = list(input.shape)
        shape[dim] = pad
        filler = input.new_full(shape, float(self.value))
        return torch.cat([input.narrow(dim, 0, index - 1), filler, input.narrow(dim, index - 1, size - index + 1)],
                         dim)


class Sum(nn.Module):
    """Lua nn.Sum / nn.Mean (``sizeAverage``) over ``dimension``; ``squeeze`` drops that dimension (not of a 1-D
    result)."""

    def __init__(self, dimension: int, nInputDims: int | None = None, sizeAverage: bool = False,
                 squeeze: bool = True):
        super().__init__()
        self.dimension, self.nInputDims, self.sizeAverage, self.squeeze = dimension, nInputDims, sizeAverage, squeeze

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = lua_positive_dim(int(self.dimension), input, self.nInputDims)
        out = input.sum(dim, keepdim=True)
        if self.sizeAverage:
            out = out / input.shape[dim]
        if (self.squeeze is None or self.squeeze) and out.dim() > 1:
            out = out.squeeze(dim)
        return out


class Max(nn.Module):
    """Lua nn.Max over ``dimension``: the values (Lua keeps the indices internally)."""

    largest = True

    def __init__(self, dimension: int, nInputDims: int | None = None):
        super().__init__()
        self.dimension, self.nInputDims = dimension, nInputDims

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = lua_positive_dim(int(self.dimension), input, self.nInputDims)
        fn = torch.max if self.largest else torch.min
        return fn(input, dim, keepdim=input.dim() == 1).values


class Min(Max):
    """Lua nn.Min over ``dimension``: the values."""

    largest = False


class Normalize(nn.Module):
    """Lua nn.Normalize(p, eps): x / (sum |x|^p + eps)^(1/p) per row of a 1-D or 2-D input (p = inf: max |x| + eps)."""

    def __init__(self, p: float, eps: float = 1e-10):
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = input.reshape(1, -1) if input.dim() == 1 else input
        p = float(self.p)
        if math.isinf(p):
            norm = x.abs().amax(1, keepdim=True) + self.eps
        else:
            powered = x.abs().pow(p) if p % 2 != 0 else x.pow(p)
            norm = (powered.sum(1, keepdim=True) + self.eps).pow(1 / p)
        return (x / norm).reshape(input.shape)


class AddConstant(nn.Module):
    """Lua nn.AddConstant(constant_scalar)."""

    def __init__(self, constant_scalar: float, inplace: bool = False):
        super().__init__()
        self.constant_scalar, self.inplace = constant_scalar, inplace

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        c = self.constant_scalar
        return input + (c.to(input) if isinstance(c, torch.Tensor) else c)


class MulConstant(nn.Module):
    """Lua nn.MulConstant(constant_scalar)."""

    def __init__(self, constant_scalar: float, inplace: bool = False):
        super().__init__()
        self.constant_scalar, self.inplace = constant_scalar, inplace

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input * self.constant_scalar


class ShaveImage(nn.Module):
    """fast-neural-style's nn.ShaveImage(size): crops ``size`` pixels from each side of the last two dimensions."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        s = int(self.size)
        h, w = input.shape[-2:]
        return input[..., s:h - s, s:w - s]


def table_entries(input: Any, least: int = 1) -> list[Any]:
    """A Lua table input (a list) of at least ``least`` entries; TypeError/IndexError otherwise."""
    if not isinstance(input, (list, tuple)):
        raise TypeError(f"expected a table (list) of inputs, got {type(input).__name__}")
    if len(input) < least:
        raise IndexError(f"expected a table of at least {least} entries, got {len(input)}")
    return list(input)
