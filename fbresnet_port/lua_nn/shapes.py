"""Lua ``nn`` modules that reshape, slice or reduce a tensor: View, Reshape, Narrow, Select, Transpose,
Squeeze, Unsqueeze, Padding, Sum/Mean, Max/Min, Normalize, Add/MulConstant, Identity, Copy, Contiguous.

Dimensions in the fields are Lua's (1-based; negative counts from the end); ``numInputDims`` /
``nInputDims`` fields shift them by one for a batched input, as in torch/nn. The forward passes are the
plain-PyTorch classes of :mod:`.standalone.shapes` (also copied into ``convert --format python`` files).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._base import MAX_DIM_SIZE, TORCH_EXPORTERS, ChildConverter, Fields, long_storage, lua_module
from .codegen import NoPythonCode, Value
from .simple import REQUIRED, SimpleLuaModule, dimension, flag, integer, number, size
from .standalone.shapes import (AddConstant, Max, Min, MulConstant, Narrow, Normalize, Padding, Reshape, Select,
                                ShaveImage, Squeeze, Sum, Transpose, Unsqueeze, View, lua_index, lua_positive_dim)

# numInputDims / nInputDims: how many dimensions one sample has
_N_DIMS = integer(0, MAX_DIM_SIZE)
_pos_dim = lua_positive_dim
_index = lua_index


class _Inline:
    """A module written as an expression in the generated forward (no attribute of its own)."""

    def python_children(self) -> list:
        return []


class LuaIdentity(_Inline, SimpleLuaModule):
    """nn.Identity (tensors and tables pass through)."""

    lua_types = ("nn.Identity",)
    lua_keeps_planes = True
    lua_takes_table_planes = True

    def forward(self, input: Any) -> Any:
        return input

    def python_forward(self, g: Any, x: Value) -> Value:
        return x


TORCH_EXPORTERS[nn.Identity] = lambda m: lua_module("nn.Identity", train=bool(m.training))


class LuaContiguous(_Inline, SimpleLuaModule):
    """nn.Contiguous."""

    lua_types = ("nn.Contiguous",)
    lua_keeps_planes = True

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input.contiguous()

    def python_forward(self, g: Any, x: Value) -> Value:
        return g.assign(f"{g.expr(x)}.contiguous()", x)


class LuaCopy(_Inline, SimpleLuaModule):
    """nn.Copy (the type conversion it may do is the caller's ``.to(dtype)`` here)."""

    lua_types = ("nn.Copy",)
    lua_params = (("dontCast", None),)
    lua_checks = {"dontCast": flag}
    lua_keeps_planes = True

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input.clone()

    def python_forward(self, g: Any, x: Value) -> Value:
        return g.assign(f"{g.expr(x)}.clone()", x)


class LuaView(SimpleLuaModule, View):
    """nn.View: ``size`` (may hold one -1) with optional ``numInputDims`` deciding the batch dimensions."""

    lua_types = ("nn.View",)
    lua_params = (("size", REQUIRED), ("numInputDims", None))
    lua_checks = {"numInputDims": _N_DIMS}

    @classmethod
    def read_param(cls, f: Fields, name: str, default: Any) -> Any:
        if name != "size":
            return super().read_param(f, name, default)
        sizes = f.ints(name, min=-1, max=MAX_DIM_SIZE)  # View.resetSize: positive or -1, one -1 at most
        f.check(sizes.count(-1) <= 1, name, f.get(name), "only one dimension can be -1")
        return sizes

    def lua_planes(self, planes: Any) -> Any:
        """``View(n)`` gives n features (N x n, or n for one sample); other sizes: unknown."""
        return int(self.size[0]) if len(self.size) == 1 and int(self.size[0]) > 0 else None

    def lua_expected_input(self) -> str | None:
        n = math.prod(int(s) for s in self.size if s >= 0)
        per = f" per sample ({self.numInputDims} dims)" if self.numInputDims is not None else ""
        return f"a multiple of {n} elements{per}" if -1 in self.size else f"{n} elements{per}"

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


class LuaReshape(SimpleLuaModule, Reshape):
    """nn.Reshape: ``size``; the input is taken as a batch unless it has exactly ``nelement`` elements
    and a first size other than 1 (``batchMode`` forces either)."""

    lua_types = ("nn.Reshape",)
    lua_params = (("size", REQUIRED), ("batchMode", None))
    lua_checks = {"batchMode": flag}

    @classmethod
    def read_param(cls, f: Fields, name: str, default: Any) -> Any:
        if name != "size":
            return super().read_param(f, name, default)
        return f.ints(name, min=0, max=MAX_DIM_SIZE)

    def lua_fields(self) -> dict[str, Any]:
        size = [int(s) for s in self.size]
        fields = {"size": long_storage(size), "batchsize": long_storage([1] + size), "nelement": math.prod(size)}
        if self.batchMode is not None:
            fields["batchMode"] = bool(self.batchMode)
        return fields

    def lua_str(self) -> str:
        return f"{self.lua_typename}({'x'.join(str(int(s)) for s in self.size)})"


class LuaNarrow(SimpleLuaModule, Narrow):
    """nn.Narrow(dimension, index, length): negative dimension/length count from the end."""

    lua_types = ("nn.Narrow",)
    lua_params = (("dimension", REQUIRED), ("index", REQUIRED), ("length", 1))
    lua_checks = {"dimension": dimension, "index": dimension, "length": dimension}


class LuaSelect(SimpleLuaModule, Select):
    """nn.Select(dimension, index): negative values count from the end."""

    lua_types = ("nn.Select",)
    lua_params = (("dimension", REQUIRED), ("index", REQUIRED))
    lua_checks = {"dimension": dimension, "index": dimension}


class LuaTranspose(SimpleLuaModule, Transpose):
    """nn.Transpose({d1, d2}, ...): swaps applied in order, shifted by the batch dims of ``numInputDims``."""

    lua_types = ("nn.Transpose",)
    lua_params = (("permutations", REQUIRED), ("numInputDims", None))
    lua_checks = {"numInputDims": _N_DIMS}

    @classmethod
    def read_param(cls, f: Fields, name: str, default: Any) -> Any:
        if name != "permutations":
            return super().read_param(f, name, default)
        perms = []
        for i, pair in enumerate(f.module_list(name, what="pairs {d1, d2}")):
            label = f"{name}[{i + 1}]"
            dims = f.ints_value(label, pair, min=1, max=MAX_DIM_SIZE)
            f.check(len(dims) == 2, label, pair, "should be a pair of dimensions {d1, d2}")
            perms.append(dims)
        return perms

    def lua_fields(self) -> dict[str, Any]:
        from .. import t7
        fields = {"permutations": t7.LuaList(t7.LuaList(p) for p in self.permutations)}
        if self.numInputDims is not None:
            fields["numInputDims"] = self.numInputDims
        return fields


class LuaSqueeze(SimpleLuaModule, Squeeze):
    """nn.Squeeze([dim[, numInputDims]]): squeezes ``dim`` (if of size 1) or every singleton dimension;
    with ``numInputDims`` a batch of one keeps its batch dimension."""

    lua_types = ("nn.Squeeze",)
    lua_params = (("dim", None), ("numInputDims", None))
    lua_checks = {"dim": size(), "numInputDims": _N_DIMS}


class LuaUnsqueeze(SimpleLuaModule, Unsqueeze):
    """nn.Unsqueeze(pos[, numInputDims]): inserts a singleton dimension at ``pos`` after the batch dims."""

    lua_types = ("nn.Unsqueeze",)
    lua_params = (("pos", REQUIRED), ("numInputDims", None))
    lua_checks = {"pos": integer(), "numInputDims": _N_DIMS}

    def lua_str(self) -> str:
        return f"{self.lua_typename}(dim {self.pos})"


class LuaPadding(SimpleLuaModule, Padding):
    """nn.Padding(dim, pad, nInputDim, value, index): ``|pad|`` entries of ``value`` inserted along ``dim``,
    after the input for pad > 0 (index counted from the end) and before it for pad < 0."""

    lua_types = ("nn.Padding",)
    lua_params = (("dim", REQUIRED), ("pad", REQUIRED), ("nInputDim", None), ("value", 0), ("index", 1))
    lua_checks = {"dim": size(), "pad": integer(), "nInputDim": _N_DIMS, "index": size()}

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), outputSize=long_storage([]))


class LuaSum(SimpleLuaModule, Sum):
    """nn.Sum / nn.Mean (dimension, nInputDims, sizeAverage, squeeze)."""

    lua_types = ("nn.Sum", "nn.Mean")
    lua_params = (("dimension", REQUIRED), ("nInputDims", None), ("sizeAverage", None), ("squeeze", True))
    lua_checks = {"dimension": dimension, "nInputDims": _N_DIMS, "sizeAverage": flag}

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = super().from_fields(f, convert)
        if m.sizeAverage is None:
            m.sizeAverage = f.typename == "nn.Mean"
        return m


class LuaMax(SimpleLuaModule, Max):
    """nn.Max over ``dimension``: the values only (Lua keeps the indices internally)."""

    lua_types = ("nn.Max",)
    lua_params = (("dimension", REQUIRED), ("nInputDims", None))
    lua_checks = {"dimension": dimension, "nInputDims": _N_DIMS}


class LuaMin(LuaMax, Min):
    """nn.Min over ``dimension``: the values only."""

    lua_types = ("nn.Min",)


class LuaNormalize(SimpleLuaModule, Normalize):
    """nn.Normalize(p, eps): x / (sum |x|^p + eps)^(1/p) per row of a 1-D or 2-D input (p = inf: max |x| + eps)."""

    lua_types = ("nn.Normalize",)
    lua_params = (("p", REQUIRED), ("eps", 1e-10))
    lua_keeps_planes = True

    @classmethod
    def read_param(cls, f: Fields, name: str, default: Any) -> Any:
        if name != "p":
            return super().read_param(f, name, default)
        if f.get("p") == math.inf:  # math.huge: the max norm
            return math.inf
        p = f.num("p")
        f.check(p > 0, "p", p, "should be a positive number (the p of the p-norm) or math.huge")
        return p


class LuaAddConstant(SimpleLuaModule, AddConstant):
    """nn.AddConstant(constant_scalar)."""

    lua_types = ("nn.AddConstant",)
    lua_params = (("constant_scalar", REQUIRED), ("inplace", False))
    lua_keeps_planes = True

    @classmethod
    def read_param(cls, f: Fields, name: str, default: Any) -> Any:
        if name == "constant_scalar" and isinstance(f.get(name), torch.Tensor):  # a vector (one per feature)
            return f.tensor(name, dim=1, allow_empty=False)
        return f.num(name) if name == "constant_scalar" else super().read_param(f, name, default)

    def python_ctor(self, g: Any) -> str:
        if isinstance(self.constant_scalar, torch.Tensor):
            raise NoPythonCode(self.lua_typename)
        return f"{g.use(AddConstant)}(constant_scalar={self.constant_scalar!r})"


class LuaMulConstant(SimpleLuaModule, MulConstant):
    """nn.MulConstant(constant_scalar)."""

    lua_types = ("nn.MulConstant",)
    lua_params = (("constant_scalar", REQUIRED), ("inplace", False))
    lua_checks = {"constant_scalar": number()}
    lua_keeps_planes = True


class LuaShaveImage(SimpleLuaModule, ShaveImage):
    """fast-neural-style's nn.ShaveImage(size): crops ``size`` pixels from each side of an N x C x H x W input."""

    lua_types = ("nn.ShaveImage",)
    lua_params = (("size", REQUIRED),)
    lua_checks = {"size": size(0)}
    lua_keeps_planes = True
