"""Older Lua ``nn`` vision layers: SpatialConvolutionMap (connection tables), SpatialSubSampling,
SpatialLPPooling, the Spatial{Subtractive,Divisive,Contrastive}Normalization family and the
Volumetric (3-D) convolution / pooling layers.

Ports of the torch/nn Lua classes of the same names and of their THNN C kernels (the computations live in
:mod:`.standalone.legacy`; here: the checked reading of the Lua fields, export and printing). Lua sizes are given
``(kW, kH)`` / ``(kT, kW, kH)``; PyTorch's are ``(kH, kW)`` / ``(kT, kH, kW)``. ``nn.Abs`` (Lua's
gradient +1 at 0) lives with the other point-wise functions in :mod:`.simple`.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import t7
from ._base import (ChildConverter, Fields, LuaModule, check_planes, empty_tensor, export_param,
                    export_weights, float_param, lua_module, planes_after, show_value, to_lua)
from .containers import LuaSequential
from .layers import _build, bias_of, planes_field, size_field, weight_of
from .simple import LuaThreshold
from .standalone.legacy import (SpatialContrastiveNormalization, SpatialConvolutionMap, SpatialDivisiveNormalization,
                                SpatialNormalization, SpatialSubSampling, SpatialSubtractiveNormalization)
from .text import LuaInputError, lua_param


class _LegacyModule(LuaModule):
    """Runtime side of the standalone legacy classes: input errors name the Lua module and its path; the
    generated code builds the standalone class from :meth:`python_ctor`."""

    def input_error(self, what: str) -> LuaInputError:
        return LuaInputError(f"{self.lua_typename} at {self.lua_path}: {what}")


def _sub_network(g: Any, module: nn.Module, name: str) -> Any:
    """A sub-network that a standalone class takes (an estimator, a normaliser), built on a line of its own in
    the generated ``__init__`` (``meanestimator = nn.Sequential(...)``); its local name, as code."""
    from .codegen import Code, wrap
    expr = g.ctor(module).text
    taken = g.__dict__.setdefault("_sub_network_names", set())
    local, k = name, 2
    while local in taken:
        local, k = f"{name}_{k}", k + 1
    taken.add(local)
    g.init_lines += wrap(f"{local} = {expr}", getattr(g, "_indent", " " * 8))
    return Code(local)


def _same_planes(f: Fields, name: str, module: nn.Module, n_planes: int) -> None:
    """A sub-network that must give as many planes as it takes (the local normalisations' estimators)."""
    out = planes_after(module, n_planes)
    if out is not None and out != n_planes:
        raise f.error(f"sub-module {name} turns {n_planes} planes (nInputPlane) into {out}; Lua's normaliser "
                      f"combines its output with the input element by element, so it must keep {n_planes}")


class _PlanesKept:
    """Chain check of modules that keep the number of planes and take ``n_planes`` of them."""

    n_planes: int

    def lua_planes(self, planes: int | None) -> int | None:
        check_planes(self, planes, self.n_planes)
        return planes

    def lua_expected_input(self) -> str | None:
        return f"(N x) {self.n_planes} x H x W (nInputPlane = {self.n_planes})"


# ----------------------------------------------------------------------------------------------
# Convolution with a connection table, sub-sampling, LP pooling
# ----------------------------------------------------------------------------------------------

class LuaSpatialConvolutionMap(_LegacyModule, SpatialConvolutionMap):
    """nn.SpatialConvolutionMap: kernel k (``weight[k]``, kH x kW) connects input plane ``connTable[k][1]``
    to output plane ``connTable[k][2]`` (1-based; ``nn.tables.full/oneToOne/random``). No padding.

    Computed by :class:`standalone.legacy.SpatialConvolutionMap` (a dense convolution whose weight is scattered
    from the kernels, so autograd gives THNN's gradients).
    """

    lua_types = ("nn.SpatialConvolutionMap",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        conn = f.tensor("connTable", dim=2, allow_empty=False)
        f.check(conn.shape[1] == 2, "connTable", conn, "should be of size n x 2 (input plane, output plane "
                                                       "of each kernel; nn.tables.full/oneToOne/random)")
        weight = f.tensor("weight", dim=3)
        f.check(weight.shape[0] == conn.shape[0], "weight", weight,
                f"should be of size {conn.shape[0]} x kH x kW (one kernel per connTable row)")
        pairs = conn.tolist()
        for row in pairs:
            for v in row:
                f.check(v == v and float(v).is_integer() and v >= 1, "connTable", conn,
                        f"should hold 1-based plane numbers (has {show_value(v)})")
        n_in = planes_field(f, "nInputPlane", int(max(r[0] for r in pairs)))
        n_out = planes_field(f, "nOutputPlane", int(max(r[1] for r in pairs)))
        for col, (n, field) in enumerate(((n_in, "nInputPlane"), (n_out, "nOutputPlane"))):
            top = max(r[col] for r in pairs)
            f.check(top <= n, "connTable", conn, f"should hold {'input' if col == 0 else 'output'} planes in "
                                                 f"[1, {field} = {n}] (has {show_value(top)})")
        for axis, size in (("H", weight.shape[1]), ("W", weight.shape[2])):
            f.check(f.int("k" + axis, size) == size, "k" + axis, f.get("k" + axis),
                    f"should be {size} (the weight's kernel size)")
        bias = bias_of(f, n_out, "nOutputPlane", required=True)
        m = cls(conn.shape[0], tuple(weight.shape[1:]), n_in, n_out, (size_field(f, "dH"), size_field(f, "dW")))
        m.conn = conn.detach().to(torch.int64) - 1  # 0-based (input plane, output plane)
        m.weight, m.bias = lua_param(weight), lua_param(bias)
        return m

    def python_ctor(self, g: Any) -> str:
        from .codegen import call_expr
        return call_expr(g.use(SpatialConvolutionMap), self.conn.shape[0], tuple(self.weight.shape[1:]), self.n_in,
                         self.n_out, stride=self.stride)

    def lua_planes(self, planes: int | None) -> int | None:
        if planes is not None and planes < self.n_in:
            check_planes(self, planes, self.n_in)
        return self.n_out

    def lua_expected_input(self) -> str | None:
        return f"(N x) P x H x W with P >= {self.n_in} (nInputPlane)"

    def lua_fields(self) -> dict[str, Any]:
        kH, kW = self.weight.shape[1:]
        return dict(connTable=(self.conn + 1).to(torch.float32), nInputPlane=self.n_in, nOutputPlane=self.n_out,
                    kW=kW, kH=kH, dW=self.stride[1], dH=self.stride[0],
                    **export_weights(weight=self.weight, bias=self.bias))


class LuaSpatialSubSampling(_PlanesKept, _LegacyModule, SpatialSubSampling):
    """nn.SpatialSubSampling: per plane, ``weight[p]`` * (sum over each kW x kH window) + ``bias[p]``.

    Computed by :class:`standalone.legacy.SpatialSubSampling`."""

    lua_types = ("nn.SpatialSubSampling",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight = f.tensor("weight")
        n = planes_field(f, "nInputPlane", weight.shape[0] if weight.dim() else None)
        # Files of 2011-2012 torch (e.g. the SpatialLPPooling of torch/demos' tracker) hold a weight of
        # nInputPlane x kH x kW; the C kernel takes nInputPlane = weight:size(1) and reads its first
        # nInputPlane elements (memory order).
        f.check(weight.dim() >= 1 and weight.shape[0] == n, "weight", weight,
                f"should be of size {n} (nInputPlane), or {n} x kH x kW (2011 layout)")
        bias = bias_of(f, n, "nInputPlane", required=True)
        m = cls(n, (size_field(f, "kH"), size_field(f, "kW")), (size_field(f, "dH"), size_field(f, "dW")))
        m.weight, m.bias = lua_param(weight.contiguous().reshape(-1)[:n]), lua_param(bias)
        return m

    def python_ctor(self, g: Any) -> str:
        from .codegen import call_expr
        return call_expr(g.use(SpatialSubSampling), self.n_planes, self.kernel, self.stride)

    @property
    def n_planes(self) -> int:
        return self.weight.numel()

    def lua_fields(self) -> dict[str, Any]:
        (kH, kW), (dH, dW) = self.kernel, self.stride
        return dict(nInputPlane=self.weight.numel(), kW=kW, kH=kH, dW=dW, dH=dH,
                    **export_weights(weight=self.weight, bias=self.bias))


class LuaSpatialLPPooling(LuaSequential):
    """nn.SpatialLPPooling: a Sequential subclass in Lua, saved with its modules
    (Square or Power(p), SpatialAveragePooling, MulConstant(kW*kH), Sqrt or Power(1/p)); prints as one."""

    lua_types = ("nn.SpatialLPPooling",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = super().from_fields(f, convert)
        kW, kH = size_field(f, "kW"), size_field(f, "kH")
        m.lua_geometry = {"kW": kW, "kH": kH, "dW": size_field(f, "dW", kW), "dH": size_field(f, "dH", kH)}
        return m

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), **getattr(self, "lua_geometry", {}))


# ----------------------------------------------------------------------------------------------
# Local normalisations
# ----------------------------------------------------------------------------------------------

def _kernel(f: Fields) -> torch.Tensor:
    """The normalisation kernel (1-D separable or 2-D): kept for export; the estimators hold its values."""
    kernel = f.tensor("kernel", floating=False, allow_empty=False)
    f.check(kernel.dim() in (1, 2) and kernel.dtype != torch.bool, "kernel", kernel,
            "should be a 1-D or 2-D tensor of numbers")
    return kernel


def _threshold(f: Fields) -> tuple[float, float]:
    threshold = f.num("threshold", 1e-4)
    return threshold, f.num("thresval", threshold)


def _sub_module(f: Fields, convert: ChildConverter, name: str, n_planes: int | None = None) -> nn.Module:
    """The saved sub-network ``name`` (required: every torch/nn version that has the class saves it); with
    ``n_planes``, it must keep that many planes."""
    if not f.has(name):
        raise f.error(f"missing sub-module {name} (saved by every torch/nn version that has this class; the file "
                      f"looks damaged)")
    net = convert(f.get(name), f"{f.path}.{name}")
    if n_planes is not None:
        _same_planes(f, name, net, n_planes)
    return net


class _LuaLocalNorm(_PlanesKept, _LegacyModule):
    """Runtime side of the Spatial*Normalization classes: the kernel (for export only; the estimator
    sub-networks converted from the file hold the very weights Lua used)."""

    def keep_kernel(self, kernel: torch.Tensor) -> None:
        self.register_buffer("kernel", float_param(kernel), persistent=False)

    def base_fields(self, *estimators: str) -> dict[str, Any]:
        fields = {"nInputPlane": self.n_planes, "kernel": export_param(self.kernel), "coef": torch.ones(1, 1, 1)}
        fields.update({n: to_lua(getattr(self, n)) for n in estimators})
        return fields


def _table_op(typename: str) -> t7.TorchObject:
    return lua_module(typename, gradInput=t7.LuaTable())


class LuaSpatialSubtractiveNormalization(_LuaLocalNorm, SpatialSubtractiveNormalization):
    """nn.SpatialSubtractiveNormalization: input - (local weighted mean / border coefficient).

    Computed by :class:`standalone.legacy.SpatialSubtractiveNormalization`."""

    lua_types = ("nn.SpatialSubtractiveNormalization",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        n = planes_field(f, "nInputPlane", 1)
        m = cls(n, _sub_module(f, convert, "meanestimator", n))
        m.keep_kernel(_kernel(f))
        return m

    def python_ctor(self, g: Any) -> str:
        from .codegen import call_expr
        return call_expr(g.use(SpatialSubtractiveNormalization), self.n_planes,
                         _sub_network(g, self.meanestimator, "meanestimator"))

    def lua_fields(self) -> dict[str, Any]:
        return dict(self.base_fields("meanestimator"), subtractor=_table_op("nn.CSubTable"),
                    divider=_table_op("nn.CDivTable"))


class LuaSpatialDivisiveNormalization(_LuaLocalNorm, SpatialDivisiveNormalization):
    """nn.SpatialDivisiveNormalization: input / threshold(local std / border coefficient), where the
    threshold module replaces values <= ``threshold`` by ``thresval``.

    Computed by :class:`standalone.legacy.SpatialDivisiveNormalization`."""

    lua_types = ("nn.SpatialDivisiveNormalization",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        n = planes_field(f, "nInputPlane", 1)
        threshold, thresval = _threshold(f)
        if f.has("thresholder"):
            thresholder = convert(f.get("thresholder"), f"{f.path}.thresholder")
        else:
            thresholder = LuaThreshold(threshold=threshold, val=thresval)
        m = cls(n, _sub_module(f, convert, "meanestimator", n), _sub_module(f, convert, "stdestimator", n),
                thresholder)
        m.threshold, m.thresval = threshold, thresval
        m.keep_kernel(_kernel(f))
        return m

    def python_ctor(self, g: Any) -> str:
        from .codegen import call_expr
        return call_expr(g.use(SpatialDivisiveNormalization), self.n_planes,
                         _sub_network(g, self.meanestimator, "meanestimator"),
                         _sub_network(g, self.stdestimator, "stdestimator"), g.ctor(self.thresholder))

    def lua_fields(self) -> dict[str, Any]:
        return dict(self.base_fields("meanestimator", "stdestimator"), threshold=self.threshold,
                    thresval=self.thresval, thresholder=to_lua(self.thresholder), normalizer=_table_op("nn.CDivTable"),
                    divider=_table_op("nn.CDivTable"))


class LuaSpatialContrastiveNormalization(_LuaLocalNorm, SpatialContrastiveNormalization):
    """nn.SpatialContrastiveNormalization: its ``normalizer`` Sequential (subtractive then divisive).

    Computed by :class:`standalone.legacy.SpatialContrastiveNormalization`."""

    lua_types = ("nn.SpatialContrastiveNormalization",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        n = planes_field(f, "nInputPlane", 1)
        m = cls(_sub_module(f, convert, "normalizer", n))
        m.n_planes = n
        m.threshold, m.thresval = _threshold(f)
        m.keep_kernel(_kernel(f))
        return m

    def python_ctor(self, g: Any) -> str:
        from .codegen import call_expr
        return call_expr(g.use(SpatialContrastiveNormalization), _sub_network(g, self.normalizer, "normalizer"))

    def lua_fields(self) -> dict[str, Any]:
        return dict(nInputPlane=self.n_planes, kernel=export_param(self.kernel), threshold=self.threshold,
                    thresval=self.thresval, normalizer=to_lua(self.normalizer))


class LuaSpatialNormalization(_PlanesKept, _LegacyModule, SpatialNormalization):
    """nnx's nn.SpatialNormalization (2011-2013 models, e.g. torch/demos' face detector): contrast
    normalisation over all planes with its saved ``convo``/``convostd`` sub-networks (replicate-free zero
    padding + per-plane kernel + sum over planes, normalised by the border coefficient ``convo(ones)``):
    z = x - mean; out = z / threshold(std), where the threshold (and the value below it) is
    ``fixedThres`` or else max(mean of std over the sample, 1e-3). Input planes x H x W (a 2-D input
    is one plane); a 4-D batch is taken sample by sample (Lua takes one sample).

    Computed by :class:`standalone.legacy.SpatialNormalization`."""

    lua_types = ("nn.SpatialNormalization",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        fixed = f.num("fixedThres", 0) or None  # Lua's read() maps a saved 0 to "adaptive"
        return cls(planes_field(f, "nfeatures", 1), _sub_module(f, convert, "convo"),
                   _sub_module(f, convert, "convostd"), fixed)

    def python_ctor(self, g: Any) -> str:
        from .codegen import call_expr
        return call_expr(g.use(SpatialNormalization), self.n_planes, _sub_network(g, self.convo, "convo"),
                         _sub_network(g, self.convostd, "convostd"), fixed_threshold=self.fixed_threshold)

    def lua_expected_input(self) -> str | None:
        return f"{self.n_planes} x H x W, H x W for one plane, or N x {self.n_planes} x H x W (nfeatures)"

    def lua_fields(self) -> dict[str, Any]:
        return {"convo": to_lua(self.convo), "convostd": to_lua(self.convostd), "nfeatures": self.n_planes,
                "fixedThres": self.fixed_threshold, "coef": torch.ones(1, 1),
                "squareMod": lua_module("nn.Square"), "sqrtMod": lua_module("nn.Sqrt"),
                "subtractMod": _table_op("nn.CSubTable"), "meanDiviseMod": _table_op("nn.CDivTable"),
                "stdDiviseMod": _table_op("nn.CDivTable"), "diviseMod": _table_op("nn.CDivTable"),
                "thresMod": lua_module("nn.Threshold", threshold=1e-6, val=0)}


# ----------------------------------------------------------------------------------------------
# Volumetric (time x height x width) layers
# ----------------------------------------------------------------------------------------------

def _triple(f: Fields, prefix: str, default: Any = None) -> tuple[int, int, int]:
    """The ``<prefix>T/H/W`` fields in PyTorch's (T, H, W) order; ``default``: None (required), a number,
    or a function of the axis letter."""
    def one(axis: str) -> int:
        low = 0 if prefix == "pad" else 1
        if default is None:
            return size_field(f, prefix + axis, min=low)
        return size_field(f, prefix + axis, default(axis) if callable(default) else default, min=low)
    return tuple(one(axis) for axis in "THW")


def _volumetric_str(m: Any, head: str, kernel: tuple, stride: tuple, pad: tuple, always_stride: bool) -> str:
    (kT, kH, kW), (dT, dH, dW), (pT, pH, pW) = kernel, stride, pad
    s = f"{m.lua_typename}({head}{kT}x{kW}x{kH}"
    if always_stride or (dT, dW, dH) != (1, 1, 1) or (pT, pW, pH) != (0, 0, 0):
        s += f", {dT},{dW},{dH}"
    if (pT, pW, pH) != (0, 0, 0):
        s += f", {pT},{pW},{pH}"
    return s + ")"


class LuaVolumetricConvolution(LuaModule, nn.Conv3d):
    """nn.VolumetricConvolution (weight nOutputPlane x nInputPlane x kT x kH x kW, or its 2-D view;
    ``noBias`` allowed). ``padW`` defaults to ``padT`` and ``padH`` to ``padW``, as in its constructor."""

    lua_types = ("nn.VolumetricConvolution",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        n_in, n_out = planes_field(f, "nInputPlane"), planes_field(f, "nOutputPlane")
        kernel = _triple(f, "k")
        pad_t = size_field(f, "padT", 0, min=0)
        pad_w = size_field(f, "padW", pad_t, min=0)
        pad = (pad_t, size_field(f, "padH", pad_w, min=0), pad_w)
        shape = (n_out, n_in) + kernel
        # THNN VolumetricConvolutionMM takes the 5-D weight or its 2-D view (as SpatialConvolutionMM)
        weight = weight_of(f, [(shape, "nOutputPlane x nInputPlane x kT x kH x kW"),
                               ((n_out, n_in * kernel[0] * kernel[1] * kernel[2]), "its 2-D view")])
        bias = bias_of(f, n_out, "nOutputPlane")
        return _build(cls, n_in, n_out, kernel, stride=_triple(f, "d"), padding=pad, bias=bias is not None,
                      params={"weight": weight.reshape(shape), "bias": bias})

    def lua_planes(self, planes: int | None) -> int | None:
        check_planes(self, planes, self.in_channels)
        return self.out_channels

    def lua_expected_input(self) -> str | None:
        n = self.in_channels
        return f"N x {n} x T x H x W or {n} x T x H x W (nInputPlane = {n})"

    def python_ctor(self, g: Any) -> str:
        from .codegen import call_expr
        return call_expr("nn.Conv3d", self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                         padding=self.padding, bias=self.bias is not None)

    def lua_fields(self) -> dict[str, Any]:
        (kT, kH, kW), (dT, dH, dW), (pT, pH, pW) = self.kernel_size, self.stride, self.padding
        return dict(nInputPlane=self.in_channels, nOutputPlane=self.out_channels, kT=kT, kW=kW, kH=kH,
                    dT=dT, dW=dW, dH=dH, padT=pT, padW=pW, padH=pH, finput=empty_tensor(),
                    fgradInput=empty_tensor(), **export_weights(weight=self.weight, bias=self.bias))

    def lua_str(self) -> str:
        return _volumetric_str(self, f"{self.in_channels} -> {self.out_channels}, ", self.kernel_size,
                               self.stride, self.padding, False)


class _LuaVolumetricPooling(LuaModule, nn.Module):
    """Kernel / stride / padding of the Lua volumetric poolings (stride defaults to the kernel)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int],
                 padding: tuple[int, int, int] = (0, 0, 0), ceil_mode: bool = False,
                 dilation: tuple[int, int, int] | None = None):
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.ceil_mode, self.dilation = ceil_mode, dilation

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        kernel = _triple(f, "k")
        stride = _triple(f, "d")
        return cls(kernel, stride, _triple(f, "pad", 0), f.flag("ceil_mode", False))

    def lua_planes(self, planes: int | None) -> int | None:
        return planes

    def geometry_fields(self) -> dict[str, Any]:
        (kT, kH, kW), (dT, dH, dW) = self.kernel, self.stride
        return dict(kT=kT, kW=kW, kH=kH, dT=dT, dW=dW, dH=dH)

    def lua_str(self) -> str:
        return _volumetric_str(self, "", self.kernel, self.stride, self.padding, True)


class LuaVolumetricMaxPooling(_LuaVolumetricPooling):
    """nn.VolumetricMaxPooling / VolumetricDilatedMaxPooling (padding, ``ceil_mode``; version 1 files
    have no ``ceil_mode`` and floor)."""

    lua_types = ("nn.VolumetricMaxPooling", "nn.VolumetricDilatedMaxPooling")
    lua_version = 2

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = super().from_fields(f, convert)
        for axis, k, p in zip("THW", m.kernel, m.padding):  # THNN's shape check
            f.check(p <= k // 2, "pad" + axis, p, f"should be at most half the kernel size k{axis} = {k}")
        if f.typename == "nn.VolumetricDilatedMaxPooling":
            m.dilation = _triple(f, "dilation", 1)
        return m

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(input, self.kernel, self.stride, self.padding, dilation=self.dilation or 1,
                            ceil_mode=self.ceil_mode)

    def python_ctor(self, g: Any) -> str:
        from .codegen import call_expr
        return call_expr("nn.MaxPool3d", self.kernel, stride=self.stride, padding=self.padding,
                         dilation=self.dilation or 1, ceil_mode=bool(self.ceil_mode))

    def lua_fields(self) -> dict[str, Any]:
        (pT, pH, pW) = self.padding
        fields = dict(self.geometry_fields(), padT=pT, padW=pW, padH=pH, ceil_mode=bool(self.ceil_mode),
                      indices=empty_tensor(torch.int64))
        if self.dilation is not None:
            fields.update(zip(("dilationT", "dilationH", "dilationW"), self.dilation))
        return fields


class LuaVolumetricAveragePooling(_LuaVolumetricPooling):
    """nn.VolumetricAveragePooling: THNN is called without padding, floor mode, padding counted."""

    lua_types = ("nn.VolumetricAveragePooling",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = super().from_fields(f, convert)
        m.padding, m.ceil_mode = (0, 0, 0), False  # its updateOutput passes 0, 0, 0, false, true
        return m

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(input, self.kernel, self.stride)

    def python_ctor(self, g: Any) -> str:
        from .codegen import call_expr
        return call_expr("nn.AvgPool3d", self.kernel, stride=self.stride)

    def lua_fields(self) -> dict[str, Any]:
        return self.geometry_fields()
