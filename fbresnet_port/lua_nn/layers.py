"""Lua ``nn``/``cudnn`` layers with parameters or running statistics: convolutions, Linear, BatchNorm, PReLU,
InstanceNormalization.

Ports of torch/nn SpatialConvolution(MM), SpatialDilatedConvolution, SpatialFullConvolution, Linear,
(Spatial/Volumetric)BatchNormalization (incl. the pre-2016 ``running_std`` layout) and PReLU, of the cudnn.torch
classes of the same names, and of the nn.InstanceNormalization of fast-neural-style and texture_nets/CycleGAN. Lua
sizes are ``(kW, kH)``; PyTorch's are ``(kH, kW)``. Every field read is checked (type, finiteness, range) and every
weight's size against the fields before a module is built; the computations that torch.nn lacks live in
:mod:`.standalone.layers`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import t7
from ._base import (MAX_DIM_SIZE, TORCH_EXPORTERS, ChildConverter, Fields, LuaModule, check_planes, empty_tensor,
                    export_param, export_weights, float_param, lua_module)
from .standalone.layers import (BatchNormalization, InstanceNormalization, ParametricReLU, SpatialBatchNormalization,
                                VolumetricBatchNormalization)

# The option of :func:`from_lua` / ``load_lua_model`` (``options={...}``, listed in ``_base.LUA_OPTIONS``) and of
# ``convert --batch-of-one-running-stats`` that reproduces torch/nn after commit 919eeca (2017-08-03, "BN supports
# batchsize=1"): a training-mode nn.(Spatial/Volumetric)BatchNormalization given a batch of one normalises with its
# running statistics and leaves them alone, and so do both nn.InstanceNormalization variants (a training-mode BN
# over a 1 x (N*C) x H x W view). Off (the default): torch/nn before it, the batch's (the instance's) statistics.
BATCH_OF_ONE_OPTION = "batch_of_one_running_stats"
# Exported with a module converted with the option on, so that the converted file rebuilds the same way.
_OPTION_FIELD = "fbresnet_port_batch_of_one_running_stats"


def _batch_of_one_running_stats(f: Fields) -> bool:
    """The option for this conversion (a module exported with it keeps it through its own field)."""
    return f.flag(_OPTION_FIELD, False) or bool(f.options[BATCH_OF_ONE_OPTION])


def _option_fields(module: nn.Module) -> dict[str, Any]:
    return {_OPTION_FIELD: True} if getattr(module, "batch_of_one_running_stats", False) else {}


def _build(cls: type, *args: Any, params: dict[str, torch.Tensor | None],
           buffers: dict[str, torch.Tensor] | None = None, **kwargs: Any) -> nn.Module:
    """Construct on the meta device and fill with the file's tensors (already checked against the fields):
    nothing is allocated from the fields, and the random initialisation never runs."""
    m = cls(*args, device="meta", **kwargs)
    for name, value in params.items():
        setattr(m, name, None if value is None else nn.Parameter(float_param(value)))
    for name, value in (buffers or {}).items():
        setattr(m, name, value)
    left = [n for n, t in list(m.named_parameters()) + list(m.named_buffers()) if t.is_meta]
    if left:  # a parameter the caller did not provide: a bug of this module, not of the file
        raise RuntimeError(f"{cls.__name__}: no value for {', '.join(left)}")
    return m


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def weight_of(f: Fields, shapes: list[tuple[tuple[int, ...], str]], name: str = "weight") -> torch.Tensor:
    """The floating tensor ``name`` whose size is one of ``shapes`` ((size, its meaning) pairs, the
    layouts Lua's kernels accept); any other size is one error listing them."""
    t = f.tensor(name)
    if any(tuple(t.shape) == shape for shape, _ in shapes):
        return t
    want = " or ".join(f"{_size(shape)} ({what})" for shape, what in shapes)
    raise f.bad(name, t, f"should be of size {want}")


def bias_of(f: Fields, n: int, what: str, name: str = "bias", required: bool = False) -> torch.Tensor | None:
    """The optional 1-D floating tensor ``name`` of ``n`` elements (nil: none; Lua never broadcasts it)."""
    t = f.tensor(name, required=required)
    if t is not None and tuple(t.shape) != (n,):
        raise f.bad(name, t, f"should be of size {n} ({what})" + ("" if required else ", or nil for none"))
    return t


def size_field(f: Fields, name: str, default: Any = None, *, min: int = 1) -> int:
    """An integer size field (kernel, stride, dilation: >= 1; padding: ``min=0``) below MAX_DIM_SIZE."""
    if default is None:
        return f.int(name, min=min, max=MAX_DIM_SIZE)
    return f.int(name, default, min=min, max=MAX_DIM_SIZE)


def planes_field(f: Fields, name: str, default: Any = None) -> int:
    """A plane count (nInputPlane, nOutputPlane, nOutput): an integer in [1, MAX_DIM_SIZE]."""
    return size_field(f, name, default)


def groups_field(f: Fields, n_in: int, n_out: int) -> int:
    """cudnn's ``groups`` (default 1): >= 1 and dividing both plane counts."""
    groups = f.int("groups", 1, min=1, max=MAX_DIM_SIZE)
    f.check(n_in % groups == 0 and n_out % groups == 0, "groups", groups,
            f"should divide nInputPlane = {n_in} and nOutputPlane = {n_out}")
    return groups


# ----------------------------------------------------------------------------------------------
# Convolutions
# ----------------------------------------------------------------------------------------------

# Classes whose Lua code fills a missing padW/padH with 0 (nn.SpatialConvolution's backCompatibility; the cudnn
# classes); the others hand the fields to THNN as they are, where nil is an error.
_PAD_DEFAULT_0 = ("nn.SpatialConvolution", "cudnn.")


def _conv_geometry(f: Fields) -> dict[str, Any]:
    g: dict[str, Any] = {}
    g["n_in"], g["n_out"] = planes_field(f, "nInputPlane"), planes_field(f, "nOutputPlane")
    g["kW"], g["kH"] = size_field(f, "kW"), size_field(f, "kH")
    g["dW"], g["dH"] = size_field(f, "dW"), size_field(f, "dH")
    if f.has("padding"):  # very old layout: one padding for both sides (read as padW = padH = padding)
        g["padW"] = g["padH"] = size_field(f, "padding", min=0)
    else:
        default = 0 if f.typename == _PAD_DEFAULT_0[0] or f.typename.startswith(_PAD_DEFAULT_0[1]) else None
        g["padW"] = size_field(f, "padW", default, min=0)
        g["padH"] = size_field(f, "padH", default, min=0)
    g["groups"] = groups_field(f, g["n_in"], g["n_out"])
    return g


def _conv_str(m: Any, head: str) -> str:
    s = f"{m.lua_typename}({head}, {m.kernel_size[1]}x{m.kernel_size[0]}"
    sH, sW = m.stride
    pH, pW = m.padding
    if sW != 1 or sH != 1 or pW != 0 or pH != 0:
        s += f", {sW},{sH}"
    if pW != 0 or pH != 0:
        s += f", {pW},{pH}"
    return s + (")" if m.bias is not None else ") without bias")


class _LuaConv(LuaModule):
    """Chain checks and forward-error text shared by the Lua convolutions."""

    def lua_planes(self, planes: int | None) -> int | None:
        check_planes(self, planes, self.in_channels)
        return self.out_channels

    def lua_expected_input(self) -> str | None:
        return f"N x {self.in_channels} x H x W or {self.in_channels} x H x W (nInputPlane = {self.in_channels})"

    def python_ctor(self, g: Any) -> str:
        """``nn.Conv2d`` / ``nn.ConvTranspose2d``: exactly Lua's convolutions (3-D and 4-D inputs)."""
        from .codegen import call_expr
        extra: dict[str, Any] = {}
        if isinstance(self, nn.ConvTranspose2d):
            name = "nn.ConvTranspose2d"
            if tuple(self.output_padding) != (0, 0):
                extra["output_padding"] = tuple(self.output_padding)
        else:
            name = "nn.Conv2d"
            if tuple(self.dilation) != (1, 1):
                extra["dilation"] = tuple(self.dilation)
        if self.groups != 1:
            extra["groups"] = self.groups
        return call_expr(name, self.in_channels, self.out_channels, tuple(self.kernel_size), stride=tuple(self.stride),
                         padding=tuple(self.padding), **extra, bias=self.bias is not None)


class LuaSpatialConvolution(_LuaConv, nn.Conv2d):
    """nn.SpatialConvolution / SpatialConvolutionMM / SpatialDilatedConvolution / cudnn.SpatialConvolution.

    The weight is nOutputPlane x nInputPlane/groups x kH x kW, or its 2-D view nOutputPlane x
    (nInputPlane/groups*kH*kW) (SpatialConvolutionMM's own layout; THNN's SpatialConvolutionMM takes both, the
    dilated kernel only the 4-D one)."""

    lua_types = ("nn.SpatialConvolution", "cudnn.SpatialConvolution", "nn.SpatialConvolutionMM",
                 "nn.SpatialDilatedConvolution", "cudnn.SpatialDilatedConvolution")

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        g = _conv_geometry(f)
        groups = g["groups"]
        dilated = "Dilated" in f.typename  # THNN takes dilationW/H as they are (nil is an error)
        dil = (size_field(f, "dilationH", None if dilated else 1), size_field(f, "dilationW", None if dilated else 1))
        shape = (g["n_out"], g["n_in"] // groups, g["kH"], g["kW"])
        shapes = [(shape, "nOutputPlane x nInputPlane/groups x kH x kW" if groups > 1
                   else "nOutputPlane x nInputPlane x kH x kW")]
        if "Dilated" not in f.typename:
            shapes.append(((shape[0], shape[1] * shape[2] * shape[3]), "its 2-D view"))
        weight = weight_of(f, shapes)
        bias = bias_of(f, g["n_out"], "nOutputPlane")
        m = _build(cls, g["n_in"], g["n_out"], (g["kH"], g["kW"]), stride=(g["dH"], g["dW"]),
                   padding=(g["padH"], g["padW"]), dilation=dil, groups=groups, bias=bias is not None,
                   params={"weight": weight.reshape(shape), "bias": bias})
        m.lua_mm_weight = weight.dim() == 2 and f.typename == "nn.SpatialConvolutionMM"
        return m

    def lua_fields(self) -> dict[str, Any]:
        return _conv_fields(self, self.lua_typename, getattr(self, "lua_mm_weight", False))

    def lua_str(self) -> str:
        return _conv_str(self, f"{self.in_channels} -> {self.out_channels}")


def _conv_fields(m: nn.Conv2d, typename: str, mm_weight: bool = False) -> dict[str, Any]:
    """Fields of a Lua convolution (THNN SpatialConvolutionMM / cudnn / dilated) for a Conv2d."""
    (kH, kW), (dH, dW), (padH, padW) = m.kernel_size, m.stride, m.padding
    weight = m.weight.reshape(m.weight.shape[0], -1) if mm_weight else m.weight
    fields = dict(nInputPlane=m.in_channels, nOutputPlane=m.out_channels, kW=kW, kH=kH, dW=dW, dH=dH,
                  padW=padW, padH=padH, finput=empty_tensor(), fgradInput=empty_tensor(),
                  **export_weights(weight=weight, bias=m.bias))
    if typename.startswith("cudnn."):
        fields["groups"] = m.groups
    elif m.groups != 1:
        raise ValueError(f"{typename} has no groups; export a grouped convolution as cudnn.SpatialConvolution")
    if "Dilated" in typename:
        fields["dilationH"], fields["dilationW"] = m.dilation
    elif m.dilation != (1, 1):
        raise ValueError(f"{typename} has no dilation; use nn.SpatialDilatedConvolution")
    return fields


def _export_conv2d(m: nn.Conv2d) -> Any:
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise ValueError("only zero padding with explicit sizes exports to Lua")
    typename = "nn.SpatialDilatedConvolution" if m.dilation != (1, 1) else "cudnn.SpatialConvolution"
    return lua_module(typename, train=bool(m.training), **_conv_fields(m, typename))


class LuaSpatialFullConvolution(_LuaConv, nn.ConvTranspose2d):
    """nn.SpatialFullConvolution / cudnn.SpatialFullConvolution (transposed convolution; adjW/adjH = output
    padding, below the stride). The weight is nInputPlane x nOutputPlane/groups x kH x kW (or its 2-D view)."""

    lua_types = ("nn.SpatialFullConvolution", "cudnn.SpatialFullConvolution")

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        g = _conv_geometry(f)
        groups = g["groups"]
        adj = []
        for axis in "HW":
            stride, value = g["d" + axis], size_field(f, "adj" + axis, 0, min=0)
            f.check(value < stride, "adj" + axis, value, f"should be smaller than the stride d{axis} = {stride}")
            adj.append(value)
        shape = (g["n_in"], g["n_out"] // groups, g["kH"], g["kW"])
        weight = weight_of(f, [(shape, "nInputPlane x nOutputPlane" + ("/groups" if groups > 1 else "") + " x kH x kW"),
                               ((shape[0], shape[1] * shape[2] * shape[3]), "its 2-D view")])
        bias = bias_of(f, g["n_out"], "nOutputPlane")
        return _build(cls, g["n_in"], g["n_out"], (g["kH"], g["kW"]), stride=(g["dH"], g["dW"]),
                      padding=(g["padH"], g["padW"]), output_padding=tuple(adj), groups=groups,
                      bias=bias is not None, params={"weight": weight.reshape(shape), "bias": bias})

    def lua_fields(self) -> dict[str, Any]:
        (kH, kW), (dH, dW), (padH, padW) = self.kernel_size, self.stride, self.padding
        adjH, adjW = self.output_padding
        fields = dict(nInputPlane=self.in_channels, nOutputPlane=self.out_channels, kW=kW, kH=kH, dW=dW,
                      dH=dH, padW=padW, padH=padH, adjW=adjW, adjH=adjH, finput=empty_tensor(),
                      fgradInput=empty_tensor(), ones=empty_tensor(),
                      **export_weights(weight=self.weight, bias=self.bias))
        if self.lua_typename.startswith("cudnn."):
            fields["groups"] = self.groups
        return fields

    def lua_str(self) -> str:
        return _conv_str(self, f"{self.in_channels} -> {self.out_channels}")


# ----------------------------------------------------------------------------------------------
# Linear
# ----------------------------------------------------------------------------------------------

class LuaLinear(LuaModule, nn.Linear):
    """nn.Linear (also takes a 1-D input, as Lua's): weight outputSize x inputSize, bias of outputSize (or nil)."""

    lua_types = ("nn.Linear",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight = f.tensor("weight", dim=2)
        bias = bias_of(f, weight.shape[0], "outputSize = weight:size(1)")
        return _build(cls, weight.shape[1], weight.shape[0], bias=bias is not None,
                      params={"weight": weight, "bias": bias})

    def lua_planes(self, planes: int | None) -> int | None:
        check_planes(self, planes, self.in_features, "inputSize = weight:size(2)")
        return self.out_features

    def lua_expected_input(self) -> str | None:
        return f"N x {self.in_features} or {self.in_features} (inputSize = {self.in_features})"

    def python_ctor(self, g: Any) -> str:
        """``nn.Linear``: exactly Lua's (1-D and 2-D inputs)."""
        from .codegen import call_expr
        return call_expr("nn.Linear", self.in_features, self.out_features, bias=self.bias is not None)

    def lua_fields(self) -> dict[str, Any]:
        return dict(addBuffer=empty_tensor(), **export_weights(weight=self.weight, bias=self.bias))

    def lua_str(self) -> str:
        return f"{self.lua_typename}({self.in_features} -> {self.out_features})" + \
            ("" if self.bias is not None else " without bias")


TORCH_EXPORTERS[nn.Linear] = lambda m: lua_module("nn.Linear", train=bool(m.training),
                                                  **LuaLinear.lua_fields(m))
TORCH_EXPORTERS[nn.Conv2d] = _export_conv2d


# ----------------------------------------------------------------------------------------------
# Batch normalisation
# ----------------------------------------------------------------------------------------------

def _running_stats(f: Fields) -> tuple[torch.Tensor, torch.Tensor, int]:
    """running_mean and running_var (from the pre-2016 running_std = 1/sqrt(var + eps) if that is what the
    file holds), 1-D of the same length n >= 1, floating: ``(mean, var, n)``."""
    mean = f.tensor("running_mean", dim=1)
    n = mean.shape[0]
    if f.has("running_std") and not f.has("running_var"):
        # nn.BatchNormalization:read, version < 2
        std = bias_of(f, n, "running_mean's length", name="running_std", required=True)
        var = std.double().pow(-2) - f.num("eps", 1e-5)
    else:
        var = bias_of(f, n, "running_mean's length", name="running_var", required=True)
    return mean, var, n


class _LuaBatchNorm(LuaModule):
    """Behaviour shared by the Lua BatchNormalization classes (mixed into torch ``_BatchNorm`` subclasses).

    Lua semantics kept: ``eps``/``momentum`` from the file; running_var from the unbiased batch variance (as
    PyTorch); an input without the batch dimension only in evaluate mode; a weight without bias (or the reverse)
    as THNN's optional tensors. A training batch of one (THNN ``nn.*`` classes): the batch's statistics as torch/nn
    before 2017-08-03, or with the option ``batch_of_one_running_stats`` the running statistics, left alone, as
    torch/nn after it (commit 919eeca).
    """

    lua_version = 2

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        mean, var, n = _running_stats(f)
        weight = bias_of(f, n, "running_mean's length", name="weight")
        bias = bias_of(f, n, "running_mean's length")
        eps, momentum = f.num("eps"), f.num("momentum")  # handed to THNN / cudnn as they are
        dtype = float_param(mean).dtype
        m = _build(cls, n, eps=eps, momentum=momentum, affine=weight is not None or bias is not None,
                   thnn=not f.typename.startswith("cudnn."), batch_of_one_running_stats=_batch_of_one_running_stats(f),
                   params={"weight": weight, "bias": bias},
                   buffers={"running_mean": mean.detach().to(dtype).clone(),
                            "running_var": var.detach().to(dtype).clone(),
                            "num_batches_tracked": torch.zeros((), dtype=torch.long)})
        return m

    def lua_planes(self, planes: int | None) -> int | None:
        check_planes(self, planes, self.num_features, "running_mean's length")
        return planes

    def lua_expected_input(self) -> str | None:
        n, rest = self.num_features, " x H x W" if self.n_dim == 4 else " x T x H x W" if self.n_dim == 5 else ""
        return f"N x {n}{rest} ({n} = running_mean's length)"

    def python_ctor(self, g: Any) -> str:
        from .codegen import call_expr
        base = next(c for c in type(self).__mro__ if c.__module__.endswith("standalone.layers"))
        extra: dict[str, Any] = {}
        if not self.thnn:
            extra["thnn"] = False
        if self.batch_of_one_running_stats:
            extra["batch_of_one_running_stats"] = True
        if self.affine and (self.weight is None) != (self.bias is None):
            extra.update(weight=self.weight is not None, bias=self.bias is not None)
        if not self.affine:
            extra["affine"] = False
        return call_expr(g.use(base), self.num_features, eps=float(self.eps), momentum=float(self.momentum), **extra)

    def lua_fields(self) -> dict[str, Any]:
        fields = dict(running_mean=export_param(self.running_mean), running_var=export_param(self.running_var),
                      eps=float(self.eps), momentum=float(self.momentum if self.momentum is not None else 0.1),
                      affine=bool(self.affine), save_mean=empty_tensor(), save_std=empty_tensor())
        if self.affine:
            fields.update(export_weights(weight=self.weight, bias=self.bias))
        fields.update(_option_fields(self))
        return fields

    def lua_str(self) -> str:
        return f"{self.lua_typename} ({self.n_dim}D) ({self.num_features})"


class LuaBatchNormalization(_LuaBatchNorm, BatchNormalization):
    """nn.BatchNormalization / cudnn.BatchNormalization (2-D input: batch x features)."""

    lua_types = ("nn.BatchNormalization", "cudnn.BatchNormalization")


class LuaSpatialBatchNormalization(_LuaBatchNorm, SpatialBatchNormalization):
    """nn/cudnn/fbnn.SpatialBatchNormalization."""

    lua_types = ("nn.SpatialBatchNormalization", "cudnn.SpatialBatchNormalization",
                 "fbnn.SpatialBatchNormalization")


class LuaVolumetricBatchNormalization(_LuaBatchNorm, VolumetricBatchNormalization):
    """nn/cudnn.VolumetricBatchNormalization."""

    lua_types = ("nn.VolumetricBatchNormalization", "cudnn.VolumetricBatchNormalization")


def _bn_exporter(typename: str) -> Any:
    def export(m: nn.Module) -> Any:
        name = getattr(m, "lua_typename", None) or typename
        return lua_module(name, train=bool(m.training), **_LuaBatchNorm.lua_fields(m))
    return export


TORCH_EXPORTERS[nn.BatchNorm2d] = _bn_exporter("cudnn.SpatialBatchNormalization")
TORCH_EXPORTERS[nn.BatchNorm1d] = _bn_exporter("nn.BatchNormalization")
TORCH_EXPORTERS[nn.BatchNorm3d] = _bn_exporter("cudnn.VolumetricBatchNormalization")


# ----------------------------------------------------------------------------------------------
# PReLU
# ----------------------------------------------------------------------------------------------

class LuaPReLU(LuaModule, ParametricReLU):
    """nn.PReLU: one slope per plane (``nOutputPlane`` > 0; the plane is dim 1 of a 2-D/4-D input and
    dim 0 of a 1-D/3-D one) or one shared slope (``nOutputPlane`` = 0, a weight of one element).

    Computed by :class:`standalone.layers.ParametricReLU`."""

    lua_types = ("nn.PReLU",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        n = f.int("nOutputPlane", min=0, max=MAX_DIM_SIZE)
        what = "nOutputPlane" if n else "one shared slope: nOutputPlane = 0"
        weight = bias_of(f, max(n, 1), what, name="weight", required=True)
        m = cls(n)  # n is the checked weight's length
        m.weight = nn.Parameter(float_param(weight))
        return m

    def python_ctor(self, g: Any) -> str:
        from .codegen import call_expr
        return call_expr(g.use(ParametricReLU), self.n_planes)

    def lua_planes(self, planes: int | None) -> int | None:
        if self.n_planes:
            check_planes(self, planes, self.n_planes, "nOutputPlane")
        return planes

    def lua_expected_input(self) -> str | None:
        return f"N x {self.n_planes} (x H x W) (nOutputPlane = {self.n_planes})" if self.n_planes else None

    def lua_fields(self) -> dict[str, Any]:
        return dict(nOutputPlane=self.n_planes, **export_weights(weight=self.weight))


# ----------------------------------------------------------------------------------------------
# Instance normalisation (fast-neural-style; texture_nets and CycleGAN)
# ----------------------------------------------------------------------------------------------

_INSTANCE_NORM_LATER_TORCH = (
    "this file's nn.InstanceNormalization was saved by torch/nn of after 2017-08-03 (its inner "
    "SpatialBatchNormalization has run with momentum > 0 and still holds running mean 0 / variance 1): that "
    "torch/nn normalised it with those running statistics, not each image's own; converted with each image's "
    "statistics (what models trained before then expect); to reproduce that later torch/nn pass "
    "options={'batch_of_one_running_stats': True} to load_lua_model (convert: --batch-of-one-running-stats)")


class LuaInstanceNormalization(LuaModule, InstanceNormalization):
    """nn.InstanceNormalization(nOutput, eps) of jcjohnson/fast-neural-style, and nn.InstanceNormalization(nOutput,
    eps, momentum, affine) of DmitryUlyanov/texture_nets and junyanz/CycleGAN, told apart by the latter's fields
    running_mean, running_var, momentum, affine, prev_batch_size (the computation, with both torch/nn behaviours:
    :class:`standalone.layers.InstanceNormalization`). The saved inner ``bn`` and ``prev_N`` / ``prev_batch_size``
    are kept, so the first batch of the saved size reuses the saved statistics, as in Lua.
    """

    lua_types = ("nn.InstanceNormalization",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        texture_nets = any(f.has(k) for k in ("running_mean", "running_var", "momentum", "affine",
                                              "prev_batch_size"))
        eps = f.num("eps", 1e-5)  # nil: the inner BN's default
        option = _batch_of_one_running_stats(f)
        n = planes_field(f, "nOutput")  # updateOutput: assert(input:size(2) == self.nOutput)
        if texture_nets:
            # nil would make the inner BN affine with its random initial weight, never set: not reproducible
            f.check(isinstance(f.get("affine"), bool), "affine", f.get("affine"), "should be true or false")
            affine = f.flag("affine", True)
            mean = bias_of(f, n, "nOutput", name="running_mean", required=True)
            var = bias_of(f, n, "nOutput", name="running_var", required=True)
            weight = bias_of(f, n, "nOutput; affine is true", name="weight", required=True) if affine else None
            bias = bias_of(f, n, "nOutput; affine is true", required=True) if affine else None
            m = cls(n, eps, affine, texture_nets=True, momentum=f.num("momentum", 0.1),
                    batch_of_one_running_stats=option)
            m.running_mean, m.running_var = float_param(mean), float_param(var)
            prev_name = "prev_batch_size"
        else:
            weight = bias_of(f, n, "nOutput", name="weight", required=True)
            bias = bias_of(f, n, "nOutput", required=True)
            m = cls(n, eps, True, momentum=0.1, batch_of_one_running_stats=option)
            prev_name = "prev_N"
        if weight is not None:
            m.weight, m.bias = nn.Parameter(float_param(weight)), nn.Parameter(float_param(bias))
        dtype = (m.weight if m.weight is not None else m.running_mean).dtype
        m.bn_running_mean, m.bn_running_var = m.bn_running_mean.to(dtype), m.bn_running_var.to(dtype)
        prev = f.int(prev_name, -1, max=MAX_DIM_SIZE)
        if prev >= 1 and f.has("bn"):
            m._read_bn(f, prev, texture_nets)
        return m

    def _read_bn(self, f: Fields, prev: int, texture_nets: bool) -> None:
        """Keep the saved inner BN (made for a batch of ``prev``); note a file saved under later torch/nn."""
        obj = f.get("bn")
        f.check(isinstance(obj, t7.TorchObject) and obj.typename.endswith("BatchNormalization"), "bn", obj,
                "should be the inner nn.SpatialBatchNormalization (or nil)")
        bn = Fields(obj, f"{f.path}.bn")
        size = prev * self.n
        mean = bias_of(bn, size, f"{'prev_batch_size' if texture_nets else 'prev_N'} x nOutput",
                       name="running_mean", required=True)
        var = bias_of(bn, size, "the same as running_mean", name="running_var", required=True)
        momentum = bn.num("momentum", 0.1)
        self.prev_n = prev
        self.bn_running_mean = float_param(mean).to(self.bn_running_mean.dtype)
        self.bn_running_var = float_param(var).to(self.bn_running_var.dtype)
        self.bn_momentum, self.bn_eps = momentum, bn.num("eps", self.eps)
        self.bn_train = texture_nets is False or bn.flag("train", True)  # fast-neural-style calls bn:training()
        if (momentum > 0 and self.bn_train and not self.batch_of_one_running_stats
                and bool((mean == 0).all()) and bool((var == 1).all())):
            f.note(_INSTANCE_NORM_LATER_TORCH)

    def python_ctor(self, g: Any) -> str:
        from .codegen import call_expr
        defaults = InstanceNormalization(1)  # write only what differs from the constructor's defaults
        values = dict(eps=float(self.eps), affine=self.weight is not None, texture_nets=self.texture_nets,
                      momentum=float(self.momentum), batch_of_one_running_stats=self.batch_of_one_running_stats,
                      prev_n=self.prev_n, bn_momentum=float(self.bn_momentum), bn_eps=float(self.bn_eps),
                      bn_train=self.bn_train)
        if values["bn_momentum"] == values["momentum"]:
            defaults.bn_momentum = values["momentum"]
        if values["bn_eps"] == values["eps"]:
            defaults.bn_eps = values["eps"]
        return call_expr(g.use(InstanceNormalization), self.n,
                         **{k: v for k, v in values.items() if getattr(defaults, k, None) != v
                            and not (k == "affine" and v) and not (k == "texture_nets" and not v)})

    def lua_planes(self, planes: int | None) -> int | None:
        check_planes(self, planes, self.n, "nOutput")
        return planes

    def lua_expected_input(self) -> str | None:
        return f"N x {self.n} x H x W (nOutput = {self.n})"

    def lua_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = dict(nOutput=self.n, eps=float(self.eps), **_option_fields(self))
        if self.weight is not None:
            fields.update(export_weights(weight=self.weight, bias=self.bias))
        if self.texture_nets:
            fields.update(momentum=float(self.momentum), affine=self.weight is not None, prev_batch_size=self.prev_n,
                          running_mean=export_param(self.running_mean), running_var=export_param(self.running_var))
        else:
            fields["prev_N"] = self.prev_n
        if self.prev_n >= 1 and self.bn_running_mean.numel():
            bn: dict[str, Any] = dict(running_mean=export_param(self.bn_running_mean),
                                      running_var=export_param(self.bn_running_var), eps=float(self.bn_eps),
                                      momentum=float(self.bn_momentum), affine=self.weight is not None,
                                      train=bool(self.bn_train))
            if self.weight is not None:
                bn.update(export_weights(weight=self.weight.repeat(self.prev_n), bias=self.bias.repeat(self.prev_n)))
            fields["bn"] = lua_module("nn.SpatialBatchNormalization", **bn)
        return fields

    def lua_str(self) -> str:
        return self.lua_typename
