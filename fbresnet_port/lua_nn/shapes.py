"""Lua ``nn`` modules that reshape, slice or reduce a tensor: View, Reshape, Narrow, Select, Transpose,
Squeeze, Unsqueeze, Padding, Sum/Mean, Max/Min, Normalize, Add/MulConstant, Identity, Copy, Contiguous.

Dimensions in the fields are Lua's (1-based; negative counts from the end); ``numInputDims`` /
``nInputDims`` fields shift them by one for a batched input, as in torch/nn.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._base import TORCH_EXPORTERS, ChildConverter, Fields, LuaModule, long_storage, lua_module
from .simple import REQUIRED, SimpleLuaModule


def _pos_dim(dim: int, input: torch.Tensor, n_input_dims: int | None = None) -> int:
    """Port of ``_getPositiveDimension`` (Sum, Max, JoinTable, ...): a 0-based dimension."""
    if dim < 0:
        dim = input.dim() + dim + 1
    elif n_input_dims is not None and input.dim() == n_input_dims + 1:
        dim += 1
    return dim - 1


class LuaIdentity(SimpleLuaModule):
    """nn.Identity (tensors and tables pass through)."""

    lua_types = ("nn.Identity",)

    def forward(self, input: Any) -> Any:
        return input


TORCH_EXPORTERS[nn.Identity] = lambda m: lua_module("nn.Identity", train=bool(m.training))


class LuaContiguous(SimpleLuaModule):
    """nn.Contiguous."""

    lua_types = ("nn.Contiguous",)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input.contiguous()


class LuaCopy(SimpleLuaModule):
    """nn.Copy (the type conversion it may do is the caller's ``.to(dtype)`` here)."""

    lua_types = ("nn.Copy",)
    lua_params = (("dontCast", None),)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input.clone()


class LuaView(SimpleLuaModule):
    """nn.View: ``size`` (may hold one -1) with optional ``numInputDims`` deciding the batch dimensions."""

    lua_types = ("nn.View",)
    lua_params = (("size", REQUIRED), ("numInputDims", None))

    @classmethod
    def read_param(cls, f: Fields, name: str, default: Any) -> Any:
        return f.ints(name) if name == "size" else super().read_param(f, name, default)

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

    def lua_fields(self) -> dict[str, Any]:
        fields = {"size": long_storage(self.size),
                  "numElements": math.prod(int(s) for s in self.size if s >= 0)}
        if self.numInputDims is not None:
            fields["numInputDims"] = self.numInputDims
        return fields

    def lua_str(self) -> str:
        return f"{self.lua_typename}({', '.join(str(int(s)) for s in self.size)})"


TORCH_EXPORTERS[nn.Flatten] = lambda m: lua_module(
    "nn.View", train=bool(m.training), **LuaView(size=[-1], numInputDims=getattr(m, "lua_num_input_dims", 3))
    .lua_fields())


class LuaReshape(SimpleLuaModule):
    """nn.Reshape: ``size``; the input is taken as a batch unless it has exactly ``nelement`` elements
    and a first size other than 1 (``batchMode`` forces either)."""

    lua_types = ("nn.Reshape",)
    lua_params = (("size", REQUIRED), ("batchMode", None))

    @classmethod
    def read_param(cls, f: Fields, name: str, default: Any) -> Any:
        return f.ints(name) if name == "size" else super().read_param(f, name, default)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        size = [int(s) for s in self.size]
        if self.batchMode is False or (self.batchMode is None and input.numel() == math.prod(size)
                                       and input.shape[0] != 1):
            return input.reshape(size)
        return input.reshape([input.shape[0]] + size)

    def lua_fields(self) -> dict[str, Any]:
        size = [int(s) for s in self.size]
        fields = {"size": long_storage(size), "batchsize": long_storage([1] + size), "nelement": math.prod(size)}
        if self.batchMode is not None:
            fields["batchMode"] = bool(self.batchMode)
        return fields

    def lua_str(self) -> str:
        return f"{self.lua_typename}({'x'.join(str(int(s)) for s in self.size)})"


class LuaNarrow(SimpleLuaModule):
    """nn.Narrow(dimension, index, length): negative dimension/length count from the end."""

    lua_types = ("nn.Narrow",)
    lua_params = (("dimension", REQUIRED), ("index", REQUIRED), ("length", 1))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = _pos_dim(int(self.dimension), input)
        length, index = int(self.length), int(self.index)
        if length < 0:
            length = input.shape[dim] - index + length + 2
        if index < 0:
            index, length = 1, input.shape[dim] - length
        return input.narrow(dim, index - 1, length)


class LuaSelect(SimpleLuaModule):
    """nn.Select(dimension, index): negative values count from the end."""

    lua_types = ("nn.Select",)
    lua_params = (("dimension", REQUIRED), ("index", REQUIRED))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = _pos_dim(int(self.dimension), input)
        index = int(self.index)
        index = input.shape[dim] + index + 1 if index < 0 else index
        return input.select(dim, index - 1)


class LuaTranspose(SimpleLuaModule):
    """nn.Transpose({d1, d2}, ...): swaps applied in order, shifted by the batch dims of ``numInputDims``."""

    lua_types = ("nn.Transpose",)
    lua_params = (("permutations", REQUIRED), ("numInputDims", None))

    @classmethod
    def read_param(cls, f: Fields, name: str, default: Any) -> Any:
        if name == "permutations":
            return [[int(a), int(b)] for a, b in f.get(name, [])]
        return super().read_param(f, name, default)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        offset = input.dim() - int(self.numInputDims) if self.numInputDims is not None else 0
        for a, b in self.permutations:
            input = input.transpose(a + offset - 1, b + offset - 1)
        return input

    def lua_fields(self) -> dict[str, Any]:
        from .. import t7
        fields = {"permutations": t7.LuaList(t7.LuaList(p) for p in self.permutations)}
        if self.numInputDims is not None:
            fields["numInputDims"] = self.numInputDims
        return fields


class LuaSqueeze(SimpleLuaModule):
    """nn.Squeeze([dim[, numInputDims]]): squeezes ``dim`` (if of size 1) or every singleton dimension;
    with ``numInputDims`` a batch of one keeps its batch dimension."""

    lua_types = ("nn.Squeeze",)
    lua_params = (("dim", None), ("numInputDims", None))

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


class LuaUnsqueeze(SimpleLuaModule):
    """nn.Unsqueeze(pos[, numInputDims]): inserts a singleton dimension at ``pos`` after the batch dims."""

    lua_types = ("nn.Unsqueeze",)
    lua_params = (("pos", REQUIRED), ("numInputDims", None))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        n = input.dim() if self.numInputDims is None else int(self.numInputDims)
        return input.unsqueeze(int(self.pos) + input.dim() - n - 1)

    def lua_str(self) -> str:
        return f"{self.lua_typename}(dim {self.pos})"


class LuaPadding(SimpleLuaModule):
    """nn.Padding(dim, pad, nInputDim, value, index): ``|pad|`` entries of ``value`` inserted along ``dim``,
    after the input for pad > 0 (index counted from the end) and before it for pad < 0."""

    lua_types = ("nn.Padding",)
    lua_params = (("dim", REQUIRED), ("pad", REQUIRED), ("nInputDim", None), ("value", 0), ("index", 1))

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

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), outputSize=long_storage([]))


class LuaSum(SimpleLuaModule):
    """nn.Sum / nn.Mean (dimension, nInputDims, sizeAverage, squeeze)."""

    lua_types = ("nn.Sum", "nn.Mean")
    lua_params = (("dimension", 1), ("nInputDims", None), ("sizeAverage", None), ("squeeze", True))

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = super().from_fields(f, convert)
        if m.sizeAverage is None:
            m.sizeAverage = f.typename == "nn.Mean"
        return m

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = _pos_dim(int(self.dimension), input, self.nInputDims)
        out = input.sum(dim, keepdim=True)
        if self.sizeAverage:
            out = out / input.shape[dim]
        if (self.squeeze is None or self.squeeze) and out.dim() > 1:
            out = out.squeeze(dim)
        return out


class LuaMax(SimpleLuaModule):
    """nn.Max / nn.Min over ``dimension``: the values only (Lua keeps the indices internally)."""

    lua_types = ("nn.Max", "nn.Min")
    lua_params = (("dimension", 1), ("nInputDims", None))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = _pos_dim(int(self.dimension), input, self.nInputDims)
        fn = torch.max if self.lua_typename == "nn.Max" else torch.min
        return fn(input, dim, keepdim=input.dim() == 1).values


class LuaNormalize(SimpleLuaModule):
    """nn.Normalize(p, eps): x / (sum |x|^p + eps)^(1/p) per row of a 1-D or 2-D input (p = inf: max |x| + eps)."""

    lua_types = ("nn.Normalize",)
    lua_params = (("p", REQUIRED), ("eps", 1e-10))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = input.reshape(1, -1) if input.dim() == 1 else input
        p = float(self.p)
        if math.isinf(p):
            norm = x.abs().amax(1, keepdim=True) + self.eps
        else:
            powered = x.abs().pow(p) if p % 2 != 0 else x.pow(p)
            norm = (powered.sum(1, keepdim=True) + self.eps).pow(1 / p)
        return (x / norm).reshape(input.shape)


class LuaAddConstant(SimpleLuaModule):
    """nn.AddConstant(constant_scalar)."""

    lua_types = ("nn.AddConstant",)
    lua_params = (("constant_scalar", REQUIRED), ("inplace", False))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        c = self.constant_scalar
        return input + (c.to(input) if isinstance(c, torch.Tensor) else c)


class LuaMulConstant(SimpleLuaModule):
    """nn.MulConstant(constant_scalar)."""

    lua_types = ("nn.MulConstant",)
    lua_params = (("constant_scalar", REQUIRED), ("inplace", False))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input * self.constant_scalar


class LuaShaveImage(SimpleLuaModule):
    """fast-neural-style's nn.ShaveImage(size): crops ``size`` pixels from each side of an N x C x H x W input."""

    lua_types = ("nn.ShaveImage",)
    lua_params = (("size", REQUIRED),)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        s = int(self.size)
        h, w = input.shape[-2:]
        return input[..., s:h - s, s:w - s]
