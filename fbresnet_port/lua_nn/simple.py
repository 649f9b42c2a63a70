"""Lua ``nn``/``cudnn`` modules without parameters: activations, dropout, pooling, LRN, up-sampling,
spatial padding and soft-max. Each class reads the fields its Lua ``updateOutput`` reads (same names)
and writes them back on export. Ports of the torch/nn and cudnn.torch classes named in ``lua_types``.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ._base import (MAX_DIM_SIZE, MISSING, TORCH_EXPORTERS, ChildConverter, Fields, LuaModule, empty_tensor,
                    long_storage, lua_module)
from .codegen import call_expr
from .standalone.simple import (ELEMENTWISE, CrossMapLRN, Dropout, Elementwise, Power, SoftMax, SpatialDropout,
                                SumPool2d, TotalVariation, UpSamplingBilinear, UpSamplingNearest, sum_pool2d)

REQUIRED = object()

# How a field of ``lua_params`` is read and checked: (fields, name, default) -> value, where default is
# MISSING for a required field. Built by the helpers below; see SimpleLuaModule.lua_checks.
Reader = Callable[[Fields, str, Any], Any]


def number(min: float | None = None, max: float | None = None) -> Reader:
    """A finite number in ``[min, max]``."""
    return lambda f, name, default: f.num(name, default, min=min, max=max)


def integer(min: int | None = -MAX_DIM_SIZE, max: int | None = MAX_DIM_SIZE) -> Reader:
    """An integer in ``[min, max]`` (3.0 is 3; 2.5, NaN and +-inf are refused)."""
    return lambda f, name, default: f.int(name, default, min=min, max=max)


def size(min: int = 1) -> Reader:
    """A size (kernel, stride, plane count): an integer in ``[min, MAX_DIM_SIZE]``."""
    return integer(min, MAX_DIM_SIZE)


def flag(f: Fields, name: str, default: Any) -> Any:
    """A Lua truth value (nil -> default; false -> False; anything else, 0 included -> True)."""
    return f.flag(name, None if default is MISSING else default)


def dimension(f: Fields, name: str, default: Any) -> Any:
    """A Lua tensor dimension: a nonzero integer (negative counts from the end)."""
    value = f.int(name, default, min=-MAX_DIM_SIZE, max=MAX_DIM_SIZE)
    f.check(value != 0, name, value, "should be a dimension: 1, 2, ... (or -1, -2, ... from the end), not 0")
    return value


def _raw(f: Fields, name: str, default: Any) -> Any:
    if default is MISSING and not f.has(name):
        raise f.error(f"missing field '{name}'")
    return f.get(name, None if default is MISSING else default)


def _inferred_reader(default: Any) -> Reader:
    """The check of a field without an entry in ``lua_checks``, from its default: a boolean default
    reads a Lua truth value, a number default a finite number; otherwise the value is taken as is."""
    if isinstance(default, bool):
        return flag
    if isinstance(default, (int, float)):
        return number()
    return _raw


class SimpleLuaModule(LuaModule, nn.Module):
    """A Lua module fully described by a few scalar fields ``lua_params`` = ((name, default), ...).

    ``default`` is used when the field is missing; :data:`REQUIRED` makes it an error. The fields become
    attributes of the same name and are exported unchanged (``None`` values are left out). Each field is
    checked by its reader in ``lua_checks`` (name -> :data:`Reader`: :func:`number`, :func:`integer`,
    :func:`size`, :func:`flag`, :func:`dimension`); without one, a boolean default means a Lua truth value
    and a number default a finite number. ``lua_keeps_planes`` makes :meth:`lua_planes` return its input's
    planes (shape-preserving modules).
    """

    lua_params: ClassVar[tuple[tuple[str, Any], ...]] = ()
    lua_checks: ClassVar[dict[str, Reader]] = {}
    lua_keeps_planes: ClassVar[bool] = False

    def __init__(self, **values: Any):
        # nn.Module's constructor only: a standalone base class (its plain-PyTorch semantics, see
        # lua_nn/standalone) gets its attributes from lua_params here, not from its own __init__ defaults
        nn.Module.__init__(self)
        for name, default in self.lua_params:
            value = values.get(name, default)
            if value is REQUIRED:
                raise TypeError(f"{type(self).__name__}: missing '{name}'")
            setattr(self, name, value)

    @classmethod
    def read_param(cls, f: Fields, name: str, default: Any) -> Any:
        """The field ``name`` read and checked by its reader (``default``: REQUIRED or the value if nil)."""
        reader = cls.lua_checks.get(name) or _inferred_reader(default)
        return reader(f, name, MISSING if default is REQUIRED else default)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        return cls(**{name: cls.read_param(f, name, default) for name, default in cls.lua_params})

    def lua_planes(self, planes: Any) -> Any:
        """The input's planes for shape-preserving classes (``lua_keeps_planes``), else unknown."""
        return planes if self.lua_keeps_planes else None

    def lua_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, _ in self.lua_params if getattr(self, name) is not None}


# ----------------------------------------------------------------------------------------------
# Point-wise activations
# ----------------------------------------------------------------------------------------------

# Lua classes whose maths is exactly a torch.nn class (forward and THNN's gradient)
_TORCH_POINTWISE = {"Tanh": "nn.Tanh", "Sigmoid": "nn.Sigmoid", "LogSigmoid": "nn.LogSigmoid",
                    "SoftSign": "nn.Softsign", "TanhShrink": "nn.Tanhshrink"}


class LuaPointwise(SimpleLuaModule, Elementwise):
    """Field-less element-wise functions: nn/cudnn.Tanh, Sigmoid, and nn.Abs, Exp, Log, Square, Sqrt, ..."""

    lua_types = tuple(f"nn.{k}" for k in ELEMENTWISE) + ("cudnn.Tanh", "cudnn.Sigmoid")
    lua_keeps_planes = True

    @property
    def op(self) -> str:
        return self.lua_typename.split(".", 1)[1]

    def python_ctor(self, g: Any) -> str:
        exact = _TORCH_POINTWISE.get(self.op)
        return f"{exact}()" if exact else call_expr(g.use(Elementwise), self.op)


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
    lua_keeps_planes = True

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        """nn.ReLU runs Threshold's updateOutput with its ``threshold`` and ``val`` fields (0 and 0 when made by
        nn.ReLU()): other values make it that nn.Threshold (cudnn.ReLU reads neither)."""
        if f.typename == "nn.ReLU":
            threshold, val = f.num("threshold", 0), f.num("val", 0)
            if (threshold, val) != (0, 0):
                return LuaThreshold(threshold=threshold, val=val, inplace=f.flag("inplace", False))
        return super().from_fields(f, convert)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.inplace and not torch.is_grad_enabled():
            return F.relu_(input)
        return F.relu(input)

    def lua_fields(self) -> dict[str, Any]:
        return relu_fields(self.inplace)

    def python_ctor(self, g: Any) -> str:
        return "nn.ReLU()"


TORCH_EXPORTERS[nn.ReLU] = lambda m: lua_module("cudnn.ReLU", train=bool(m.training), **relu_fields(m.inplace))


class LuaReLU6(SimpleLuaModule):
    """nn.ReLU6: min(max(x, 0), 6)."""

    lua_types = ("nn.ReLU6",)
    lua_params = (("inplace", False),)
    lua_keeps_planes = True

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(input, 0.0, 6.0)

    def python_ctor(self, g: Any) -> str:
        return "nn.ReLU6()"


class LuaClippedReLU(SimpleLuaModule):
    """cudnn.ClippedReLU: min(max(x, 0), ceiling)."""

    lua_types = ("cudnn.ClippedReLU",)
    lua_params = (("ceiling", REQUIRED), ("inplace", False))
    lua_keeps_planes = True
    lua_checks = {"ceiling": number()}

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(input, 0.0, float(self.ceiling))

    def python_ctor(self, g: Any) -> str:
        return call_expr("nn.Hardtanh", 0.0, float(self.ceiling))


class LuaThreshold(SimpleLuaModule):
    """nn.Threshold: x if x > threshold else val (defaults 1e-6, 0)."""

    lua_types = ("nn.Threshold",)
    lua_params = (("threshold", 1e-6), ("val", 0), ("inplace", False))
    lua_keeps_planes = True

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.threshold(input, float(self.threshold), float(self.val))

    def lua_str(self) -> str:
        return self.lua_typename

    def python_ctor(self, g: Any) -> str:
        return call_expr("nn.Threshold", float(self.threshold), float(self.val))


class LuaLeakyReLU(SimpleLuaModule):
    """nn.LeakyReLU: negative slope ``negval`` (default 1/100)."""

    lua_types = ("nn.LeakyReLU",)
    lua_params = (("negval", 0.01), ("inplace", False))
    lua_keeps_planes = True

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(input, float(self.negval))

    def lua_str(self) -> str:
        return f"{self.lua_typename}({self.negval:g})"

    def python_ctor(self, g: Any) -> str:
        return call_expr("nn.LeakyReLU", float(self.negval))


class LuaELU(SimpleLuaModule):
    """nn.ELU: x if x > 0 else alpha * (exp(x) - 1)."""

    lua_types = ("nn.ELU",)
    lua_params = (("alpha", 1), ("inplace", False))
    lua_keeps_planes = True

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.elu(input, float(self.alpha))

    def lua_str(self) -> str:
        return f"{self.lua_typename} (alpha:{float(self.alpha):f})"

    def python_ctor(self, g: Any) -> str:
        return call_expr("nn.ELU", float(self.alpha))


class LuaHardTanh(SimpleLuaModule):
    """nn.HardTanh: clamp to [min_val, max_val] (defaults -1, 1)."""

    lua_types = ("nn.HardTanh",)
    lua_params = (("min_val", -1), ("max_val", 1), ("inplace", False))
    lua_keeps_planes = True

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = super().from_fields(f, convert)
        f.check(m.max_val > m.min_val, "max_val", m.max_val, f"should be larger than min_val = {m.min_val}")
        return m

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(input, float(self.min_val), float(self.max_val))

    def python_ctor(self, g: Any) -> str:
        return call_expr("nn.Hardtanh", float(self.min_val), float(self.max_val))


class LuaClamp(LuaHardTanh):
    """nn.Clamp (a HardTanh with other defaults)."""

    lua_types = ("nn.Clamp",)


class LuaSoftPlus(SimpleLuaModule):
    """nn.SoftPlus: log(1 + exp(beta x)) / beta, linear above ``threshold``."""

    lua_types = ("nn.SoftPlus",)
    lua_params = (("beta", 1), ("threshold", 20))
    lua_keeps_planes = True

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.softplus(input, float(self.beta), float(self.threshold))

    def python_ctor(self, g: Any) -> str:
        return call_expr("nn.Softplus", float(self.beta), float(self.threshold))


class LuaPower(SimpleLuaModule, Power):
    """nn.Power: x ^ pow."""

    lua_types = ("nn.Power",)
    lua_params = (("pow", REQUIRED),)
    lua_keeps_planes = True
    lua_checks = {"pow": number()}


# ----------------------------------------------------------------------------------------------
# Soft-max
# ----------------------------------------------------------------------------------------------

class LuaSoftMax(SimpleLuaModule, SoftMax):
    """nn.SoftMax / LogSoftMax / SpatialSoftMax / SoftMin and cudnn's.

    THNN (and cudnn's channel mode) normalise over the first dimension of a 1-D or 3-D input and over
    the second of a 2-D or 4-D input; cudnn.SoftMax / cudnn.LogSoftMax (instance mode) normalise over
    all features of each sample (C x H x W).
    """

    lua_types = ("nn.SoftMax", "nn.LogSoftMax", "nn.SpatialSoftMax", "nn.SpatialLogSoftMax", "nn.SoftMin",
                 "cudnn.SoftMax", "cudnn.LogSoftMax", "cudnn.SpatialSoftMax", "cudnn.SpatialLogSoftMax")
    lua_keeps_planes = True

    @property
    def log(self) -> bool:
        return "LogSoftMax" in self.lua_typename

    @property
    def negate(self) -> bool:
        return self.lua_typename == "nn.SoftMin"

    @property
    def per_sample(self) -> bool:
        return self.lua_typename in ("cudnn.SoftMax", "cudnn.LogSoftMax")

    def python_ctor(self, g: Any) -> str:
        return call_expr(g.use(SoftMax), log=self.log, negate=self.negate, per_sample=self.per_sample)


TORCH_EXPORTERS[nn.Softmax] = lambda m: lua_module("nn.SoftMax", train=bool(m.training))
TORCH_EXPORTERS[nn.LogSoftmax] = lambda m: lua_module("nn.LogSoftMax", train=bool(m.training))


# ----------------------------------------------------------------------------------------------
# Dropout
# ----------------------------------------------------------------------------------------------

class LuaDropout(SimpleLuaModule, Dropout):
    """nn.Dropout. v2 (default since 2015): training scales kept units by 1/(1-p), evaluation is the
    identity; v1 (``v2`` missing or false): training does not scale, evaluation multiplies by 1-p.
    ``stochastic_inference`` keeps the noise in evaluate mode."""

    lua_types = ("nn.Dropout",)
    lua_params = (("p", 0.5), ("v2", None), ("inplace", False), ("stochastic_inference", False))
    lua_keeps_planes = True
    lua_checks = {"p": number(0, 1), "v2": flag}

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = super().from_fields(f, convert)
        f.check(m.p < 1, "p", m.p, "should be a probability 0 <= p < 1")
        return m

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), v2=bool(self.v2), noise=empty_tensor())

    def lua_str(self) -> str:
        return f"{self.lua_typename}({float(self.p):f})"

    def python_ctor(self, g: Any) -> str:
        if self.v2 and not self.stochastic_inference and 0 < float(self.p) < 1:
            return call_expr("nn.Dropout", float(self.p))  # torch's dropout is Lua's v2
        return call_expr(g.use(Dropout), p=float(self.p), v2=bool(self.v2),
                         stochastic_inference=bool(self.stochastic_inference))


TORCH_EXPORTERS[nn.Dropout] = lambda m: lua_module(
    "nn.Dropout", train=bool(m.training), p=float(m.p), v2=True, inplace=False, stochastic_inference=False,
    noise=empty_tensor())


class LuaSpatialDropout(SimpleLuaModule, SpatialDropout):
    """nn.SpatialDropout: drops whole planes; training does not rescale, evaluation multiplies by 1-p."""

    lua_types = ("nn.SpatialDropout",)
    lua_params = (("p", 0.5), ("stochastic_inference", False))
    lua_keeps_planes = True
    lua_checks = {"p": number(0, 1)}

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
    lua_keeps_planes = True
    lua_checks = {"kW": size(), "kH": size(), "dW": size(), "dH": size(), "padW": size(0), "padH": size(0),
                  "dilationW": size(), "dilationH": size()}

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = super().from_fields(f, convert)
        stride_is_kernel = f.typename != "nn.SpatialAveragePooling"
        if m.dW is None:
            m.dW = m.kW if stride_is_kernel else 1
        if m.dH is None:
            m.dH = m.kH if stride_is_kernel else 1
        for pad, k in (("padW", "kW"), ("padH", "kH")):  # THNN's shape check
            f.check(getattr(m, pad) <= getattr(m, k) // 2, pad, getattr(m, pad),
                    f"should be at most half the kernel size ({k} = {getattr(m, k)}), as THNN requires")
        return m

    def lua_expected_input(self) -> str | None:
        return (f"N x C x H x W or C x H x W with H + 2*padH >= kH and W + 2*padW >= kW "
                f"(kW = {self.kW}, kH = {self.kH}, padW = {self.padW}, padH = {self.padH})")

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

    def dilation(self) -> tuple[int, int]:
        return int(self.dilationH or 1), int(self.dilationW or 1)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(input, dilation=self.dilation(), **self.geometry())

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), indices=empty_tensor(torch.int64))

    def python_ctor(self, g: Any) -> str:
        geometry = self.geometry()
        if self.dilation() != (1, 1):
            geometry["dilation"] = self.dilation()
        return call_expr("nn.MaxPool2d", **geometry)


class LuaSpatialAveragePooling(_LuaPooling):
    """nn/cudnn.SpatialAveragePooling (``count_include_pad``; ``divide`` false gives sum pooling)."""

    lua_types = ("nn.SpatialAveragePooling", "cudnn.SpatialAveragePooling")
    lua_params = _LuaPooling.lua_params + (("count_include_pad", True), ("divide", True))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        pool = F.avg_pool2d if self.divide else sum_pool2d
        return pool(input, count_include_pad=bool(self.count_include_pad), **self.geometry())

    def python_ctor(self, g: Any) -> str:
        cls = "nn.AvgPool2d" if self.divide else g.use(SumPool2d)
        return call_expr(cls, count_include_pad=bool(self.count_include_pad), **self.geometry())


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
    lua_keeps_planes = True
    lua_checks = {"W": size(), "H": size()}

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        size = (int(self.H), int(self.W))
        if "Max" in self.lua_typename:
            return F.adaptive_max_pool2d(input, size)
        return F.adaptive_avg_pool2d(input, size)

    def python_ctor(self, g: Any) -> str:
        cls = "nn.AdaptiveMaxPool2d" if "Max" in self.lua_typename else "nn.AdaptiveAvgPool2d"
        return call_expr(cls, (int(self.H), int(self.W)))


# ----------------------------------------------------------------------------------------------
# Normalisation, up-sampling, padding
# ----------------------------------------------------------------------------------------------

class LuaSpatialCrossMapLRN(SimpleLuaModule, CrossMapLRN):
    """nn/cudnn.SpatialCrossMapLRN: x / (k + alpha/size * sum of squares over ``size`` planes)^beta."""

    lua_types = ("nn.SpatialCrossMapLRN", "cudnn.SpatialCrossMapLRN")
    lua_params = (("size", 5), ("alpha", 1e-4), ("beta", 0.75), ("k", None))
    lua_keeps_planes = True
    lua_checks = {"size": size(), "k": number()}

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = super().from_fields(f, convert)
        if m.k is None:
            m.k = f.num("K", 1)  # old cudnn field name
        return m


class LuaSpatialUpSamplingNearest(SimpleLuaModule, UpSamplingNearest):
    """nn.SpatialUpSamplingNearest: integer ``scale_factor``."""

    lua_types = ("nn.SpatialUpSamplingNearest",)
    lua_params = (("scale_factor", REQUIRED),)
    lua_keeps_planes = True
    lua_checks = {"scale_factor": size()}

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), inputSize=long_storage([0] * 4), outputSize=long_storage([0] * 4))


class LuaSpatialUpSamplingBilinear(SimpleLuaModule, UpSamplingBilinear):
    """nn.SpatialUpSamplingBilinear: corners aligned; ``scale_factor`` or ``owidth``/``oheight``."""

    lua_types = ("nn.SpatialUpSamplingBilinear",)
    lua_params = (("scale_factor", None), ("owidth", None), ("oheight", None))
    lua_keeps_planes = True
    lua_checks = {"scale_factor": size(), "owidth": size(), "oheight": size()}

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = super().from_fields(f, convert)
        if m.scale_factor is None:
            for name in ("owidth", "oheight"):
                f.check(getattr(m, name) is not None, name, None,
                        "an output size (owidth and oheight) or a scale_factor is required")
        return m

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), inputSize=long_storage([0] * 4), outputSize=long_storage([0] * 4))


_PAD_MODES = {"nn.SpatialReflectionPadding": ("reflect", "nn.ReflectionPad2d"),
              "nn.SpatialReplicationPadding": ("replicate", "nn.ReplicationPad2d")}


class LuaSpatialPadding(SimpleLuaModule):
    """nn.SpatialZeroPadding (negative pads crop), SpatialReflectionPadding, SpatialReplicationPadding, and
    nnx's nn.SpatialPadding (2011-2013 models, e.g. torch/demos' face detector: zero padding, negative crops)."""

    lua_types = ("nn.SpatialZeroPadding", "nn.SpatialReflectionPadding", "nn.SpatialReplicationPadding",
                 "nn.SpatialPadding")
    lua_params = (("pad_l", REQUIRED), ("pad_r", None), ("pad_t", None), ("pad_b", None))
    lua_keeps_planes = True
    lua_checks = {"pad_l": integer(), "pad_r": integer(), "pad_t": integer(), "pad_b": integer()}

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = super().from_fields(f, convert)
        for side in ("pad_r", "pad_t", "pad_b"):
            if getattr(m, side) is None:
                setattr(m, side, m.pad_l)
        return m

    def pads(self) -> tuple[int, int, int, int]:
        return int(self.pad_l), int(self.pad_r), int(self.pad_t), int(self.pad_b)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        mode = _PAD_MODES.get(self.lua_typename, ("constant",))[0]
        return F.pad(input, self.pads(), mode=mode)

    def lua_str(self) -> str:
        return f"{self.lua_typename}(l={self.pad_l}, r={self.pad_r}, t={self.pad_t}, b={self.pad_b})"

    def python_ctor(self, g: Any) -> str:
        return call_expr(_PAD_MODES.get(self.lua_typename, ("", "nn.ZeroPad2d"))[1], self.pads())


class LuaTotalVariation(SimpleLuaModule, TotalVariation):
    """fast-neural-style's nn.TotalVariation(strength): the identity forward; the backward pass adds
    the total-variation regulariser's gradient (``strength`` x neighbour differences)."""

    lua_types = ("nn.TotalVariation",)
    lua_params = (("strength", REQUIRED),)
    lua_keeps_planes = True
    lua_checks = {"strength": number()}
