"""Older Lua ``nn`` vision layers: SpatialConvolutionMap (connection tables), SpatialSubSampling,
SpatialLPPooling, the Spatial{Subtractive,Divisive,Contrastive}Normalization family and the
Volumetric (3-D) convolution / pooling layers.

Ports of the torch/nn Lua classes of the same names and of their THNN C kernels. Lua sizes are given
``(kW, kH)`` / ``(kT, kW, kH)``; PyTorch's are ``(kH, kW)`` / ``(kT, kH, kW)``. ``nn.Abs`` (Lua's
gradient +1 at 0) lives with the other point-wise functions in :mod:`.simple`.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import t7
from ._base import (ChildConverter, Fields, LuaModule, empty_tensor, export_param, export_weights, float_param,
                    lua_module, to_lua)
from .containers import LuaSequential
from .layers import _on_cpu, _set_param
from .simple import LuaThreshold
from .text import LuaInputError, lua_param


def _check_planes(module: LuaModule, input: torch.Tensor, n_planes: int, exact: bool = True) -> None:
    """A 3-D (planes x H x W) or 4-D (batch x planes x H x W) input with ``n_planes`` planes."""
    if input.dim() not in (3, 4):
        raise LuaInputError(f"{module.lua_typename}: expected a 3-D or 4-D (batch) input, "
                            f"got {tuple(input.shape)}")
    planes = input.shape[-3]
    if planes < n_planes or (exact and planes != n_planes):
        raise LuaInputError(f"{module.lua_typename}: the input has {planes} planes, the module "
                            f"expects {n_planes}")


# ----------------------------------------------------------------------------------------------
# Convolution with a connection table, sub-sampling, LP pooling
# ----------------------------------------------------------------------------------------------

class LuaSpatialConvolutionMap(LuaModule, nn.Module):
    """nn.SpatialConvolutionMap: kernel k (``weight[k]``, kH x kW) connects input plane ``connTable[k][1]``
    to output plane ``connTable[k][2]`` (1-based; ``nn.tables.full/oneToOne/random``). No padding.

    Computed as a dense convolution whose weight is scattered from the kernels (repeated pairs add up,
    as in THNN's loop), so autograd gives THNN's gradients.
    """

    lua_types = ("nn.SpatialConvolutionMap",)

    def __init__(self, conn_table: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n_in: int, n_out: int,
                 stride: tuple[int, int]):
        super().__init__()
        conn = conn_table.detach().reshape(-1, 2).to(torch.int64)
        if conn.shape[0] != weight.shape[0]:
            raise ValueError(f"connTable has {conn.shape[0]} rows, weight {weight.shape[0]} kernels")
        self.register_buffer("conn", conn - 1)  # 0-based (input plane, output plane)
        self.weight = lua_param(weight)
        self.bias = lua_param(bias)
        self.n_in, self.n_out, self.stride = n_in, n_out, stride

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        conn = f.tensor("connTable")
        weight = f.tensor("weight")
        if conn.numel() % 2 or weight.dim() != 3 or weight.shape[0] != conn.numel() // 2:
            raise f.error(f"expected connTable (n x 2) and weight (n x kH x kW), got {tuple(conn.shape)} and "
                          f"{tuple(weight.shape)}")
        pairs = conn.reshape(-1, 2)
        n_in = f.int("nInputPlane", int(pairs[:, 0].max()))
        n_out = f.int("nOutputPlane", int(pairs[:, 1].max()))
        return cls(conn, weight, f.tensor("bias"), n_in, n_out, (f.int("dH", 1), f.int("dW", 1)))

    def dense_weight(self) -> torch.Tensor:
        """The (nOutputPlane, nInputPlane, kH, kW) weight of the equivalent full convolution."""
        dense = self.weight.new_zeros((self.n_out, self.n_in) + tuple(self.weight.shape[1:]))
        return dense.index_put((self.conn[:, 1], self.conn[:, 0]), self.weight, accumulate=True)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        _check_planes(self, input, self.n_in, exact=False)
        input = input.narrow(-3, 0, self.n_in)  # THNN reads the first nInputPlane planes
        return F.conv2d(input, self.dense_weight(), self.bias, stride=self.stride)

    def lua_fields(self) -> dict[str, Any]:
        kH, kW = self.weight.shape[1:]
        return dict(connTable=(self.conn + 1).to(torch.float32), nInputPlane=self.n_in, nOutputPlane=self.n_out,
                    kW=kW, kH=kH, dW=self.stride[1], dH=self.stride[0],
                    **export_weights(weight=self.weight, bias=self.bias))


class LuaSpatialSubSampling(LuaModule, nn.Module):
    """nn.SpatialSubSampling: per plane, ``weight[p]`` * (sum over each kW x kH window) + ``bias[p]``."""

    lua_types = ("nn.SpatialSubSampling",)

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]):
        super().__init__()
        self.weight = lua_param(weight)
        self.bias = lua_param(bias)
        self.kernel, self.stride = kernel, stride

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight, bias = f.tensor("weight"), f.tensor("bias")
        n = f.int("nInputPlane", bias.numel())
        if weight.numel() < n or bias.numel() != n:
            raise f.error(f"expected weight and bias of nInputPlane = {n} elements, got {tuple(weight.shape)} "
                          f"and {tuple(bias.shape)}")
        # Files of 2011-2012 torch (e.g. the SpatialLPPooling of torch/demos' tracker) hold a weight of
        # nInputPlane x kH x kW; the C kernel reads only its first nInputPlane elements (memory order).
        weight = weight.contiguous().reshape(-1)[:n]
        return cls(weight, bias, (f.int("kH"), f.int("kW")), (f.int("dH", 1), f.int("dW", 1)))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        n = self.weight.numel()
        _check_planes(self, input, n)
        # a depth-wise convolution whose kernel is filled with the plane's weight
        kernel = self.weight.reshape(n, 1, 1, 1).expand((n, 1) + self.kernel)
        return F.conv2d(input, kernel, self.bias, stride=self.stride, groups=n)

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
        m.lua_geometry = {k: f.int(k) for k in ("kW", "kH", "dW", "dH")}
        return m

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), **getattr(self, "lua_geometry", {}))


# ----------------------------------------------------------------------------------------------
# Local normalisations
# ----------------------------------------------------------------------------------------------

def _frozen(module: nn.Module) -> nn.Module:
    """Turn every parameter of ``module`` into a buffer: Lua's normalisation modules hold convolutions
    whose weights are fixed kernels, not listed by ``parameters()``."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            del m._parameters[name]
            if p is not None:
                m.register_buffer(name, p.detach())
            else:
                setattr(m, name, None)
    return module


def _same_elements(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``b`` laid out as ``a``: Lua's CSubTable/CDivTable pair the elements in memory order."""
    return b if a.shape == b.shape else b.reshape(a.shape)


class _LuaLocalNorm(LuaModule, nn.Module):
    """Shared by the Spatial*Normalization classes: the kernel, the frozen estimator sub-networks
    (converted from the file, so the computation uses the very weights Lua used) and the border
    coefficients ``coef`` = meanestimator(ones), which undo the zero padding's shrinking at the borders."""

    estimators: tuple[str, ...] = ()

    def __init__(self, n_planes: int, kernel: torch.Tensor, **estimators: nn.Module):
        super().__init__()
        self.n_planes = n_planes
        self.register_buffer("kernel", float_param(kernel))
        for name, m in estimators.items():
            setattr(self, name, _frozen(m))

    @classmethod
    def read_estimators(cls, f: Fields, convert: ChildConverter) -> dict[str, nn.Module]:
        missing = [n for n in cls.estimators if not f.has(n)]
        if missing:
            raise f.error(f"missing sub-module(s) {', '.join(missing)} (saved by every torch/nn version "
                          f"that has this class; the file looks damaged)")
        return {n: convert(f.get(n), f"{f.path}.{n}") for n in cls.estimators}

    def coef(self, input: torch.Tensor) -> torch.Tensor:
        """meanestimator applied to ones of one sample's shape, expanded over the batch."""
        batched = input.dim() == 4
        ones = input.new_ones(input.shape[1:] if batched else input.shape)
        coef = self.meanestimator(ones)
        return coef.unsqueeze(0).expand((input.shape[0],) + coef.shape) if batched else coef

    def check(self, input: torch.Tensor) -> None:
        _check_planes(self, input, self.n_planes)

    def base_fields(self) -> dict[str, Any]:
        fields = {"nInputPlane": self.n_planes, "kernel": export_param(self.kernel),
                  "coef": torch.ones(1, 1, 1)}
        fields.update({n: to_lua(getattr(self, n)) for n in self.estimators})
        return fields


def _table_op(typename: str) -> t7.TorchObject:
    return lua_module(typename, gradInput=t7.LuaTable())


class LuaSpatialSubtractiveNormalization(_LuaLocalNorm):
    """nn.SpatialSubtractiveNormalization: input - (local weighted mean / border coefficient)."""

    lua_types = ("nn.SpatialSubtractiveNormalization",)
    estimators = ("meanestimator",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        return cls(f.int("nInputPlane", 1), f.tensor("kernel"), **cls.read_estimators(f, convert))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.check(input)
        local_sums = self.meanestimator(input)
        adjusted = local_sums / _same_elements(local_sums, self.coef(input))
        return input - _same_elements(input, adjusted)

    def lua_fields(self) -> dict[str, Any]:
        return dict(self.base_fields(), subtractor=_table_op("nn.CSubTable"), divider=_table_op("nn.CDivTable"))


class LuaSpatialDivisiveNormalization(_LuaLocalNorm):
    """nn.SpatialDivisiveNormalization: input / threshold(local std / border coefficient), where the
    threshold module replaces values <= ``threshold`` by ``thresval``."""

    lua_types = ("nn.SpatialDivisiveNormalization",)
    estimators = ("meanestimator", "stdestimator")

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = cls(f.int("nInputPlane", 1), f.tensor("kernel"), **cls.read_estimators(f, convert))
        threshold = f.num("threshold", 1e-4)
        m.threshold, m.thresval = threshold, f.num("thresval", threshold)
        if f.has("thresholder"):
            m.thresholder = convert(f.get("thresholder"), f"{f.path}.thresholder")
        else:
            m.thresholder = LuaThreshold(threshold=m.threshold, val=m.thresval)
        return m

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.check(input)
        local_stds = self.stdestimator(input)
        adjusted = local_stds / _same_elements(local_stds, self.coef(input))
        return input / _same_elements(input, self.thresholder(adjusted))

    def lua_fields(self) -> dict[str, Any]:
        return dict(self.base_fields(), threshold=self.threshold, thresval=self.thresval,
                    thresholder=to_lua(self.thresholder), normalizer=_table_op("nn.CDivTable"),
                    divider=_table_op("nn.CDivTable"))


class LuaSpatialContrastiveNormalization(LuaModule, nn.Module):
    """nn.SpatialContrastiveNormalization: its ``normalizer`` Sequential (subtractive then divisive)."""

    lua_types = ("nn.SpatialContrastiveNormalization",)

    def __init__(self, normalizer: nn.Module, n_planes: int, kernel: torch.Tensor, threshold: float, thresval: float):
        super().__init__()
        self.normalizer = normalizer
        self.n_planes, self.threshold, self.thresval = n_planes, threshold, thresval
        self.register_buffer("kernel", float_param(kernel))

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        if not f.has("normalizer"):
            raise f.error("missing sub-module normalizer (the file looks damaged)")
        threshold = f.num("threshold", 1e-4)
        return cls(convert(f.get("normalizer"), f"{f.path}.normalizer"), f.int("nInputPlane", 1),
                   f.tensor("kernel"), threshold, f.num("thresval", threshold))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.normalizer(input)

    def lua_fields(self) -> dict[str, Any]:
        return dict(nInputPlane=self.n_planes, kernel=export_param(self.kernel), threshold=self.threshold,
                    thresval=self.thresval, normalizer=to_lua(self.normalizer))


class LuaSpatialNormalization(LuaModule, nn.Module):
    """nnx's nn.SpatialNormalization (2011-2013 models, e.g. torch/demos' face detector): contrast
    normalisation over all planes with its saved ``convo``/``convostd`` sub-networks (replicate-free zero
    padding + per-plane kernel + sum over planes, normalised by the border coefficient ``convo(ones)``):
    z = x - mean; out = z / threshold(std), where the threshold (and the value below it) is
    ``fixedThres`` or else max(mean of std over the sample, 1e-3). Input planes x H x W (a 2-D input
    is one plane); a 4-D batch is taken sample by sample (Lua takes one sample)."""

    lua_types = ("nn.SpatialNormalization",)

    def __init__(self, convo: nn.Module, convostd: nn.Module, n_planes: int, fixed_threshold: float | None):
        super().__init__()
        self.convo, self.convostd = _frozen(convo), _frozen(convostd)
        self.n_planes, self.fixed_threshold = n_planes, fixed_threshold

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        missing = [n for n in ("convo", "convostd") if not f.has(n)]
        if missing:
            raise f.error(f"missing sub-module(s) {', '.join(missing)} (the file looks damaged)")
        fixed = f.num("fixedThres", 0) or None  # Lua's read() maps a saved 0 to "adaptive"
        return cls(convert(f.get("convo"), f"{f.path}.convo"), convert(f.get("convostd"), f"{f.path}.convostd"),
                   f.int("nfeatures", 1), fixed)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() == 4:
            return torch.stack([self(x) for x in input])
        x = input.unsqueeze(0) if input.dim() == 2 else input
        _check_planes(self, x, self.n_planes)
        coef = self.convo(x.new_ones((self.n_planes,) + tuple(x.shape[1:])))
        centred = x - self.convo(x) / coef
        std = self.convostd(centred.square()).sqrt() / coef
        thr = self.fixed_threshold if self.fixed_threshold is not None else max(float(std.mean()), 1e-3)
        return centred / F.threshold(std, thr, thr)

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
        if default is None:
            return f.int(prefix + axis)
        return f.int(prefix + axis, default(axis) if callable(default) else default)
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
    """nn.VolumetricConvolution (weight nOutputPlane x nInputPlane x kT x kH x kW; ``noBias`` allowed).
    ``padW`` defaults to ``padT`` and ``padH`` to ``padW``, as in its constructor."""

    lua_types = ("nn.VolumetricConvolution",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight = f.tensor("weight")
        bias = f.tensor("bias", required=False)
        n_in, n_out = f.int("nInputPlane"), f.int("nOutputPlane")
        kernel = (f.int("kT"), f.int("kH"), f.int("kW"))
        pad_t = f.int("padT", 0)
        pad_w = f.int("padW", pad_t)
        pad = (pad_t, f.int("padH", pad_w), pad_w)
        m = _on_cpu(cls, n_in, n_out, kernel, stride=_triple(f, "d", 1), padding=pad, bias=bias is not None)
        shape = (n_out, n_in) + kernel
        if weight.numel() != torch.Size(shape).numel():
            raise f.error(f"weight has {tuple(weight.shape)} elements, expected {shape}")
        _set_param(m, "weight", weight.reshape(shape))
        _set_param(m, "bias", bias)
        return m

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
        stride = _triple(f, "d", lambda axis: f.int("k" + axis))
        return cls(kernel, stride, _triple(f, "pad", 0), f.flag("ceil_mode", False))

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
        if f.typename == "nn.VolumetricDilatedMaxPooling":
            m.dilation = _triple(f, "dilation", 1)
        return m

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(input, self.kernel, self.stride, self.padding, dilation=self.dilation or 1,
                            ceil_mode=self.ceil_mode)

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

    def lua_fields(self) -> dict[str, Any]:
        return self.geometry_fields()
