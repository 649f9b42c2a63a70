"""Lua ``nn``/``cudnn`` modules without parameters: activations, dropout, pooling, LRN, up-sampling,
spatial padding and soft-max. Each class reads the fields its Lua ``updateOutput`` reads (same names)
and writes them back on export. Ports of the torch/nn and cudnn.torch classes named in ``lua_types``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ._base import TORCH_EXPORTERS, ChildConverter, Fields, LuaModule, empty_tensor, long_storage, lua_module

REQUIRED = object()


class SimpleLuaModule(LuaModule, nn.Module):
    """A Lua module fully described by a few scalar fields ``lua_params`` = ((name, default), ...).

    ``default`` is used when the field is missing; :data:`REQUIRED` makes it an error. The fields become
    attributes of the same name and are exported unchanged (``None`` values are left out).
    """

    lua_params: ClassVar[tuple[tuple[str, Any], ...]] = ()

    def __init__(self, **values: Any):
        super().__init__()
        for name, default in self.lua_params:
            value = values.get(name, default)
            if value is REQUIRED:
                raise TypeError(f"{type(self).__name__}: missing '{name}'")
            setattr(self, name, value)

    @classmethod
    def read_param(cls, f: Fields, name: str, default: Any) -> Any:
        if default is REQUIRED and not f.has(name):
            raise f.error(f"missing field '{name}'")
        return f.get(name, default)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        return cls(**{name: cls.read_param(f, name, default) for name, default in cls.lua_params})

    def lua_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, _ in self.lua_params if getattr(self, name) is not None}


# ----------------------------------------------------------------------------------------------
# Point-wise activations
# ----------------------------------------------------------------------------------------------

# Abs and Sqrt as THNN's: Abs has gradient +1 at 0 (torch.abs: 0), Sqrt gradient 0 where the output is 0
# (torch.sqrt: inf, which turns into NaN further back, e.g. in SpatialLPPooling over a window of zeros)
_POINTWISE = {
    "Tanh": torch.tanh, "Sigmoid": torch.sigmoid, "Exp": torch.exp, "Log": torch.log, "Square": torch.square,
    "Abs": lambda x: torch.where(x >= 0, x, -x),
    "Sqrt": lambda x: torch.where(x == 0, 0.0, torch.where(x == 0, 1.0, x).sqrt()),
    "LogSigmoid": F.logsigmoid, "SoftSign": F.softsign,
    "TanhShrink": F.tanhshrink,
}


class LuaPointwise(SimpleLuaModule):
    """Field-less element-wise functions: nn/cudnn.Tanh, Sigmoid, and nn.Abs, Exp, Log, Square, Sqrt, ..."""

    lua_types = tuple(f"nn.{k}" for k in _POINTWISE) + ("cudnn.Tanh", "cudnn.Sigmoid")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _POINTWISE[self.lua_typename.split(".", 1)[1]](input)


def relu_fields(inplace: bool) -> dict[str, Any]:
    """The fields Lua's ``nn.ReLU`` (``nn.Threshold(0, 0)``) reads in ``updateOutput``. Exported for
    cudnn.ReLU too, so that the module also runs as nn.ReLU (after ``cudnn.convert(model, nn)``)."""
    return {"threshold": 0, "val": 0, "inplace": bool(inplace)}


class LuaReLU(SimpleLuaModule, nn.ReLU):
    """nn.ReLU / cudnn.ReLU (nn.ReLU is Threshold(0, 0)).

    ``inplace`` (Lua's ``ReLU(true)``) overwrites the input, as Lua did, only where no gradient is recorded
    (inference: one activation buffer less, as torchvision's in-place ReLUs); with autograd it runs out of
    place, so a saved input is never overwritten."""

    lua_types = ("nn.ReLU", "cudnn.ReLU")
    lua_params = (("inplace", False),)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.inplace and not torch.is_grad_enabled():
            return F.relu_(input)
        return F.relu(input)

    def lua_fields(self) -> dict[str, Any]:
        return relu_fields(self.inplace)


TORCH_EXPORTERS[nn.ReLU] = lambda m: lua_module("cudnn.ReLU", train=bool(m.training), **relu_fields(m.inplace))


class LuaReLU6(SimpleLuaModule):
    """nn.ReLU6: min(max(x, 0), 6)."""

    lua_types = ("nn.ReLU6",)
    lua_params = (("inplace", False),)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(input, 0.0, 6.0)


class LuaClippedReLU(SimpleLuaModule):
    """cudnn.ClippedReLU: min(max(x, 0), ceiling)."""

    lua_types = ("cudnn.ClippedReLU",)
    lua_params = (("ceiling", REQUIRED), ("inplace", False))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(input, 0.0, float(self.ceiling))


class LuaThreshold(SimpleLuaModule):
    """nn.Threshold: x if x > threshold else val (defaults 1e-6, 0)."""

    lua_types = ("nn.Threshold",)
    lua_params = (("threshold", 1e-6), ("val", 0), ("inplace", False))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.threshold(input, float(self.threshold), float(self.val))

    def lua_str(self) -> str:
        return self.lua_typename


class LuaLeakyReLU(SimpleLuaModule):
    """nn.LeakyReLU: negative slope ``negval`` (default 1/100)."""

    lua_types = ("nn.LeakyReLU",)
    lua_params = (("negval", 0.01), ("inplace", False))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(input, float(self.negval))

    def lua_str(self) -> str:
        return f"{self.lua_typename}({self.negval:g})"


class LuaELU(SimpleLuaModule):
    """nn.ELU: x if x > 0 else alpha * (exp(x) - 1)."""

    lua_types = ("nn.ELU",)
    lua_params = (("alpha", 1), ("inplace", False))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.elu(input, float(self.alpha))

    def lua_str(self) -> str:
        return f"{self.lua_typename} (alpha:{float(self.alpha):f})"


class LuaHardTanh(SimpleLuaModule):
    """nn.HardTanh: clamp to [min_val, max_val] (defaults -1, 1)."""

    lua_types = ("nn.HardTanh",)
    lua_params = (("min_val", -1), ("max_val", 1), ("inplace", False))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(input, float(self.min_val), float(self.max_val))


class LuaClamp(LuaHardTanh):
    """nn.Clamp (a HardTanh with other defaults)."""

    lua_types = ("nn.Clamp",)


class LuaSoftPlus(SimpleLuaModule):
    """nn.SoftPlus: log(1 + exp(beta x)) / beta, linear above ``threshold``."""

    lua_types = ("nn.SoftPlus",)
    lua_params = (("beta", 1), ("threshold", 20))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.softplus(input, float(self.beta), float(self.threshold))


class LuaPower(SimpleLuaModule):
    """nn.Power: x ^ pow."""

    lua_types = ("nn.Power",)
    lua_params = (("pow", REQUIRED),)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input.pow(self.pow)


# ----------------------------------------------------------------------------------------------
# Soft-max
# ----------------------------------------------------------------------------------------------

class LuaSoftMax(SimpleLuaModule):
    """nn.SoftMax / LogSoftMax / SpatialSoftMax / SoftMin and cudnn's.

    THNN (and cudnn's channel mode) normalise over the first dimension of a 1-D or 3-D input and over
    the second of a 2-D or 4-D input; cudnn.SoftMax / cudnn.LogSoftMax (instance mode) normalise over
    all features of each sample (C x H x W).
    """

    lua_types = ("nn.SoftMax", "nn.LogSoftMax", "nn.SpatialSoftMax", "nn.SpatialLogSoftMax", "nn.SoftMin",
                 "cudnn.SoftMax", "cudnn.LogSoftMax", "cudnn.SpatialSoftMax", "cudnn.SpatialLogSoftMax")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        name = self.lua_typename
        log = "LogSoftMax" in name
        if name == "nn.SoftMin":
            input = -input
        fn = F.log_softmax if log else F.softmax
        if name in ("cudnn.SoftMax", "cudnn.LogSoftMax"):
            if input.dim() in (1, 3):
                return fn(input.reshape(-1), dim=0).reshape(input.shape)
            return fn(input.reshape(input.shape[0], -1), dim=1).reshape(input.shape)
        return fn(input, dim=0 if input.dim() in (1, 3) else 1)


TORCH_EXPORTERS[nn.Softmax] = lambda m: lua_module("nn.SoftMax", train=bool(m.training))
TORCH_EXPORTERS[nn.LogSoftmax] = lambda m: lua_module("nn.LogSoftMax", train=bool(m.training))


# ----------------------------------------------------------------------------------------------
# Dropout
# ----------------------------------------------------------------------------------------------

class LuaDropout(SimpleLuaModule):
    """nn.Dropout. v2 (default since 2015): training scales kept units by 1/(1-p), evaluation is the
    identity; v1 (``v2`` missing or false): training does not scale, evaluation multiplies by 1-p.
    ``stochastic_inference`` keeps the noise in evaluate mode."""

    lua_types = ("nn.Dropout",)
    lua_params = (("p", 0.5), ("v2", None), ("inplace", False), ("stochastic_inference", False))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        p = float(self.p)
        if p <= 0:
            return input
        if self.training or self.stochastic_inference:
            if self.v2:
                return F.dropout(input, p, training=True)
            return input * torch.empty_like(input).bernoulli_(1 - p)
        return input if self.v2 else input * (1 - p)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), v2=bool(self.v2), noise=empty_tensor())

    def lua_str(self) -> str:
        return f"{self.lua_typename}({float(self.p):f})"


TORCH_EXPORTERS[nn.Dropout] = lambda m: lua_module(
    "nn.Dropout", train=bool(m.training), p=float(m.p), v2=True, inplace=False, stochastic_inference=False,
    noise=empty_tensor())


class LuaSpatialDropout(SimpleLuaModule):
    """nn.SpatialDropout: drops whole planes; training does not rescale, evaluation multiplies by 1-p."""

    lua_types = ("nn.SpatialDropout",)
    lua_params = (("p", 0.5), ("stochastic_inference", False))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        p = float(self.p)
        if self.training or self.stochastic_inference:
            shape = input.shape[:2] + (1, 1) if input.dim() == 4 else input.shape[:1] + (1, 1)
            return input * torch.empty(shape, dtype=input.dtype, device=input.device).bernoulli_(1 - p)
        return input * (1 - p)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), noise=empty_tensor())

    def lua_str(self) -> str:
        return f"{self.lua_typename}({float(self.p):f})"


# ----------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------

class _LuaPooling(SimpleLuaModule):
    """Shared fields of the Lua spatial pooling classes. nn.SpatialMaxPooling and every cudnn pooling
    default the stride to the kernel size; nn.SpatialAveragePooling defaults it to 1."""

    lua_params = (("kW", REQUIRED), ("kH", REQUIRED), ("dW", None), ("dH", None), ("padW", 0), ("padH", 0),
                  ("ceil_mode", False))

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = super().from_fields(f, convert)
        stride_is_kernel = f.typename != "nn.SpatialAveragePooling"
        if m.dW is None:
            m.dW = m.kW if stride_is_kernel else 1
        if m.dH is None:
            m.dH = m.kH if stride_is_kernel else 1
        return m

    def geometry(self) -> dict[str, Any]:
        return dict(kernel_size=(int(self.kH), int(self.kW)), stride=(int(self.dH), int(self.dW)),
                    padding=(int(self.padH), int(self.padW)), ceil_mode=bool(self.ceil_mode))

    def lua_str(self) -> str:
        s = f"{self.lua_typename}({self.kW}x{self.kH}, {self.dW},{self.dH}"
        if self.padW or self.padH:
            s += f", {self.padW},{self.padH}"
        return s + ")"


class LuaSpatialMaxPooling(_LuaPooling):
    """nn/cudnn.SpatialMaxPooling and nn.SpatialDilatedMaxPooling."""

    lua_types = ("nn.SpatialMaxPooling", "cudnn.SpatialMaxPooling", "nn.SpatialDilatedMaxPooling")
    lua_params = _LuaPooling.lua_params + (("dilationW", None), ("dilationH", None))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dilation = (int(self.dilationH or 1), int(self.dilationW or 1))
        return F.max_pool2d(input, dilation=dilation, **self.geometry())

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), indices=empty_tensor(torch.int64))


class LuaSpatialAveragePooling(_LuaPooling):
    """nn/cudnn.SpatialAveragePooling (``count_include_pad``; ``divide`` false gives sum pooling)."""

    lua_types = ("nn.SpatialAveragePooling", "cudnn.SpatialAveragePooling")
    lua_params = _LuaPooling.lua_params + (("count_include_pad", True), ("divide", True))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool2d(input, count_include_pad=bool(self.count_include_pad), **self.geometry())
        return out if self.divide else out * (int(self.kW) * int(self.kH))


def _pool_exporter(typename: str) -> Any:
    def export(m: nn.Module) -> Any:
        def pair(v: Any) -> tuple[int, int]:
            return (v, v) if isinstance(v, int) else tuple(v)
        (kH, kW), (dH, dW), (padH, padW) = pair(m.kernel_size), pair(m.stride or m.kernel_size), pair(m.padding)
        fields = dict(kW=kW, kH=kH, dW=dW, dH=dH, padW=padW, padH=padH, ceil_mode=bool(m.ceil_mode))
        if isinstance(m, nn.AvgPool2d):
            if m.divisor_override is not None:
                raise ValueError("AvgPool2d with divisor_override has no Lua counterpart")
            fields.update(count_include_pad=bool(m.count_include_pad), divide=True)
        else:
            if pair(m.dilation) != (1, 1):
                raise ValueError("a dilated MaxPool2d has no Lua counterpart in this exporter")
            fields.update(indices=empty_tensor(torch.int64))
        return lua_module(typename, train=bool(m.training), **fields)
    return export


TORCH_EXPORTERS[nn.MaxPool2d] = _pool_exporter("nn.SpatialMaxPooling")
TORCH_EXPORTERS[nn.AvgPool2d] = _pool_exporter("cudnn.SpatialAveragePooling")


class LuaSpatialAdaptivePooling(SimpleLuaModule):
    """nn.SpatialAdaptiveAveragePooling / SpatialAdaptiveMaxPooling (output ``oW`` x ``oH``)."""

    lua_types = ("nn.SpatialAdaptiveAveragePooling", "nn.SpatialAdaptiveMaxPooling")
    lua_params = (("W", REQUIRED), ("H", REQUIRED))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        size = (int(self.H), int(self.W))
        if "Max" in self.lua_typename:
            return F.adaptive_max_pool2d(input, size)
        return F.adaptive_avg_pool2d(input, size)


# ----------------------------------------------------------------------------------------------
# Normalisation, up-sampling, padding
# ----------------------------------------------------------------------------------------------

class LuaSpatialCrossMapLRN(SimpleLuaModule):
    """nn/cudnn.SpatialCrossMapLRN: x / (k + alpha/size * sum of squares over ``size`` planes)^beta."""

    lua_types = ("nn.SpatialCrossMapLRN", "cudnn.SpatialCrossMapLRN")
    lua_params = (("size", 5), ("alpha", 1e-4), ("beta", 0.75), ("k", None))

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = super().from_fields(f, convert)
        if m.k is None:
            m.k = f.get("K", 1)  # old cudnn field name
        return m

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        batched = input if input.dim() == 4 else input.unsqueeze(0)
        out = F.local_response_norm(batched, int(self.size), float(self.alpha), float(self.beta), float(self.k))
        return out if input.dim() == 4 else out.squeeze(0)


def _batched4(fn: Any, input: torch.Tensor) -> torch.Tensor:
    if input.dim() == 3:
        return fn(input.unsqueeze(0)).squeeze(0)
    return fn(input)


class LuaSpatialUpSamplingNearest(SimpleLuaModule):
    """nn.SpatialUpSamplingNearest: integer ``scale_factor``."""

    lua_types = ("nn.SpatialUpSamplingNearest",)
    lua_params = (("scale_factor", REQUIRED),)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        s = int(self.scale_factor)
        return _batched4(lambda x: F.interpolate(x, scale_factor=(s, s), mode="nearest"), input)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), inputSize=long_storage([0] * 4), outputSize=long_storage([0] * 4))


class LuaSpatialUpSamplingBilinear(SimpleLuaModule):
    """nn.SpatialUpSamplingBilinear: corners aligned; ``scale_factor`` or ``owidth``/``oheight``."""

    lua_types = ("nn.SpatialUpSamplingBilinear",)
    lua_params = (("scale_factor", None), ("owidth", None), ("oheight", None))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        h, w = input.shape[-2:]
        if self.scale_factor is not None:
            size = (int(h * self.scale_factor), int(w * self.scale_factor))
        else:
            size = (int(self.oheight), int(self.owidth))
        return _batched4(lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=True), input)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), inputSize=long_storage([0] * 4), outputSize=long_storage([0] * 4))


class LuaSpatialPadding(SimpleLuaModule):
    """nn.SpatialZeroPadding (negative pads crop), SpatialReflectionPadding, SpatialReplicationPadding, and
    nnx's nn.SpatialPadding (2011-2013 models, e.g. torch/demos' face detector: zero padding, negative crops)."""

    lua_types = ("nn.SpatialZeroPadding", "nn.SpatialReflectionPadding", "nn.SpatialReplicationPadding",
                 "nn.SpatialPadding")
    lua_params = (("pad_l", REQUIRED), ("pad_r", None), ("pad_t", None), ("pad_b", None))

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = super().from_fields(f, convert)
        for side in ("pad_r", "pad_t", "pad_b"):
            if getattr(m, side) is None:
                setattr(m, side, m.pad_l)
        return m

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        pads = (int(self.pad_l), int(self.pad_r), int(self.pad_t), int(self.pad_b))
        mode = {"nn.SpatialReflectionPadding": "reflect",
                "nn.SpatialReplicationPadding": "replicate"}.get(self.lua_typename, "constant")
        return F.pad(input, pads, mode=mode)

    def lua_str(self) -> str:
        return f"{self.lua_typename}(l={self.pad_l}, r={self.pad_r}, t={self.pad_t}, b={self.pad_b})"



class _AddTotalVariationGradient(torch.autograd.Function):
    """Identity whose backward adds ``strength`` x the gradient of 1/2 sum of squared horizontal and
    vertical neighbour differences over the top-left (H-1) x (W-1) pixels (fast-neural-style's TVLoss)."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.save_for_backward(input)
        ctx.strength = strength
        return input.view_as(input)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        x_diff = x[..., :-1, :-1] - x[..., :-1, 1:]
        y_diff = x[..., :-1, :-1] - x[..., 1:, :-1]
        grad = torch.zeros_like(x)
        grad[..., :-1, :-1] += x_diff + y_diff
        grad[..., :-1, 1:] -= x_diff
        grad[..., 1:, :-1] -= y_diff
        return grad_output + ctx.strength * grad, None


class LuaTotalVariation(SimpleLuaModule):
    """fast-neural-style's nn.TotalVariation(strength): the identity forward; the backward pass adds
    the total-variation regulariser's gradient (``strength`` x neighbour differences)."""

    lua_types = ("nn.TotalVariation",)
    lua_params = (("strength", REQUIRED),)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not input.requires_grad:
            return input
        return _AddTotalVariationGradient.apply(input, float(self.strength))
