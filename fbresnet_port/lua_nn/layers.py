"""Lua ``nn``/``cudnn`` layers with parameters or running statistics: convolutions, Linear, BatchNorm, PReLU.

Ports of torch/nn SpatialConvolution(MM), SpatialDilatedConvolution, SpatialFullConvolution, Linear,
(Spatial/Volumetric)BatchNormalization (incl. the pre-2016 ``running_std`` layout) and PReLU, and of
the cudnn.torch classes of the same names. Lua sizes are ``(kW, kH)``; PyTorch's are ``(kH, kW)``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._base import (TORCH_EXPORTERS, ChildConverter, Fields, LuaModule, empty_tensor, export_param,
                    export_weights, float_param, lua_module)


def _on_cpu(cls: type, *args: Any, **kwargs: Any) -> nn.Module:
    """Construct without running the random initialisation (the file provides every value)."""
    return cls(*args, device="meta", **kwargs).to_empty(device="cpu")


def _set_param(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    if value is None:
        setattr(module, name, None)
    else:
        setattr(module, name, nn.Parameter(float_param(value)))


# ----------------------------------------------------------------------------------------------
# Convolutions
# ----------------------------------------------------------------------------------------------

def _conv_geometry(f: Fields, weight: torch.Tensor) -> dict[str, Any]:
    g: dict[str, Any] = {}
    g["n_in"], g["n_out"] = f.int("nInputPlane"), f.int("nOutputPlane")
    g["kW"], g["kH"] = f.int("kW"), f.int("kH")
    g["dW"], g["dH"] = f.int("dW", 1), f.int("dH", 1)
    if f.has("padding"):  # very old layout: one padding for both sides
        g["padW"] = g["padH"] = f.int("padding")
    else:
        g["padW"] = f.int("padW", 0)
        g["padH"] = f.int("padH", g["padW"] if f.typename.startswith("nn.") else 0)
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


class LuaSpatialConvolution(LuaModule, nn.Conv2d):
    """nn.SpatialConvolution / SpatialConvolutionMM / SpatialDilatedConvolution / cudnn.SpatialConvolution."""

    lua_types = ("nn.SpatialConvolution", "cudnn.SpatialConvolution", "nn.SpatialConvolutionMM",
                 "nn.SpatialDilatedConvolution", "cudnn.SpatialDilatedConvolution")

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight = f.tensor("weight")
        bias = f.tensor("bias", required=False)
        g = _conv_geometry(f, weight)
        groups = f.int("groups", 1)
        dil = (f.int("dilationH", 1), f.int("dilationW", 1))
        m = _on_cpu(cls, g["n_in"], g["n_out"], (g["kH"], g["kW"]), stride=(g["dH"], g["dW"]),
                    padding=(g["padH"], g["padW"]), dilation=dil, groups=groups, bias=bias is not None)
        shape = (g["n_out"], g["n_in"] // groups, g["kH"], g["kW"])
        if weight.numel() != torch.Size(shape).numel():
            raise f.error(f"weight has {tuple(weight.shape)} elements, expected {shape}")
        _set_param(m, "weight", weight.reshape(shape))
        _set_param(m, "bias", bias)
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


class LuaSpatialFullConvolution(LuaModule, nn.ConvTranspose2d):
    """nn.SpatialFullConvolution / cudnn.SpatialFullConvolution (transposed convolution; adjW/adjH = output padding)."""

    lua_types = ("nn.SpatialFullConvolution", "cudnn.SpatialFullConvolution")

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight = f.tensor("weight")
        bias = f.tensor("bias", required=False)
        g = _conv_geometry(f, weight)
        groups = f.int("groups", 1)
        m = _on_cpu(cls, g["n_in"], g["n_out"], (g["kH"], g["kW"]), stride=(g["dH"], g["dW"]),
                    padding=(g["padH"], g["padW"]), output_padding=(f.int("adjH", 0), f.int("adjW", 0)),
                    groups=groups, bias=bias is not None)
        _set_param(m, "weight", weight.reshape(g["n_in"], g["n_out"] // groups, g["kH"], g["kW"]))
        _set_param(m, "bias", bias)
        return m

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
    """nn.Linear (also takes a 1-D input, as Lua's)."""

    lua_types = ("nn.Linear",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight = f.tensor("weight")
        bias = f.tensor("bias", required=False)
        if weight.dim() != 2:
            raise f.error(f"weight should be 2-D, got {tuple(weight.shape)}")
        m = _on_cpu(cls, weight.shape[1], weight.shape[0], bias=bias is not None)
        _set_param(m, "weight", weight)
        _set_param(m, "bias", bias)
        return m

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

class _LuaBatchNorm(LuaModule):
    """Behaviour shared by the Lua BatchNormalization classes (mixed into torch ``_BatchNorm`` subclasses).

    Lua semantics kept: ``eps``/``momentum`` from the file; running_var from the unbiased batch
    variance (as PyTorch); an input without the batch dimension is accepted in evaluate mode; THNN
    (``nn.*``) uses the running statistics and leaves them alone for a training batch of size 1.
    """

    lua_version = 2
    lua_nDim = 4

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        mean = f.tensor("running_mean")
        if f.has("running_std") and not f.has("running_var"):
            # pre-2016 layout (nn.BatchNormalization:read, version < 2): running_std = 1/sqrt(var + eps)
            var = f.tensor("running_std").double().pow(-2) - f.num("eps", 1e-5)
        else:
            var = f.tensor("running_var")
        weight = f.tensor("weight", required=False)
        bias = f.tensor("bias", required=False)
        n = mean.numel()
        m = _on_cpu(cls, n, eps=f.num("eps", 1e-5), momentum=f.num("momentum", 0.1),
                    affine=weight is not None)
        if weight is not None:
            _set_param(m, "weight", weight)
            _set_param(m, "bias", bias if bias is not None else torch.zeros(n))
        dtype = float_param(mean).dtype
        m.running_mean = mean.detach().to(dtype).clone()
        m.running_var = var.detach().to(dtype).clone()
        m.num_batches_tracked = torch.zeros((), dtype=torch.long)
        return m

    @property
    def _thnn(self) -> bool:
        return not self.lua_typename.startswith("cudnn.")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        unbatched = input.dim() == self.lua_nDim - 1
        if unbatched:
            input = input.unsqueeze(0)
        if self.training and self._thnn and input.shape[0] == 1:
            self._check_input_dim(input)
            out = F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                               False, 0.0, self.eps)
        else:
            out = super().forward(input)
        return out.squeeze(0) if unbatched else out

    def lua_fields(self) -> dict[str, Any]:
        fields = dict(running_mean=export_param(self.running_mean), running_var=export_param(self.running_var),
                      eps=float(self.eps), momentum=float(self.momentum if self.momentum is not None else 0.1),
                      affine=bool(self.affine), save_mean=empty_tensor(), save_std=empty_tensor())
        if self.affine:
            fields.update(export_weights(weight=self.weight, bias=self.bias))
        return fields

    def lua_str(self) -> str:
        return f"{self.lua_typename} ({self.lua_nDim}D) ({self.num_features})"


class LuaBatchNormalization(_LuaBatchNorm, nn.BatchNorm1d):
    """nn.BatchNormalization / cudnn.BatchNormalization (2-D input: batch x features)."""

    lua_types = ("nn.BatchNormalization", "cudnn.BatchNormalization")
    lua_nDim = 2


class LuaSpatialBatchNormalization(_LuaBatchNorm, nn.BatchNorm2d):
    """nn/cudnn/fbnn.SpatialBatchNormalization."""

    lua_types = ("nn.SpatialBatchNormalization", "cudnn.SpatialBatchNormalization",
                 "fbnn.SpatialBatchNormalization")
    lua_nDim = 4


class LuaVolumetricBatchNormalization(_LuaBatchNorm, nn.BatchNorm3d):
    """nn/cudnn.VolumetricBatchNormalization."""

    lua_types = ("nn.VolumetricBatchNormalization", "cudnn.VolumetricBatchNormalization")
    lua_nDim = 5


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

class LuaPReLU(LuaModule, nn.Module):
    """nn.PReLU: one slope per plane (``nOutputPlane`` > 0; the plane is dim 1 of a 2-D/4-D input and
    dim 0 of a 1-D/3-D one) or one shared slope (``nOutputPlane`` = 0)."""

    lua_types = ("nn.PReLU",)

    def __init__(self, weight: torch.Tensor, n_planes: int):
        super().__init__()
        self.weight = nn.Parameter(float_param(weight))
        self.n_planes = n_planes

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        return cls(f.tensor("weight"), f.int("nOutputPlane", 0))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self.n_planes > 0:
            plane_dim = 0 if input.dim() in (1, 3) else 1
            w = w.reshape([-1] + [1] * (input.dim() - plane_dim - 1))
        return torch.where(input > 0, input, input * w)

    def lua_fields(self) -> dict[str, Any]:
        return dict(nOutputPlane=self.n_planes, **export_weights(weight=self.weight))


# ----------------------------------------------------------------------------------------------
# Instance normalisation (fast-neural-style, texture_nets)
# ----------------------------------------------------------------------------------------------

class LuaInstanceNormalization(LuaModule, nn.Module):
    """nn.InstanceNormalization(nOutput, eps) of jcjohnson/fast-neural-style (from DmitryUlyanov/texture_nets):
    each sample's plane is normalised by its own mean and biased variance, in training and evaluation alike
    (Lua runs an inner training-mode SpatialBatchNormalization over N*C planes), then scaled by ``weight``
    and shifted by ``bias`` per plane. Running statistics, if the file has any, are not used."""

    lua_types = ("nn.InstanceNormalization",)

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        super().__init__()
        self.weight = nn.Parameter(float_param(weight))
        self.bias = nn.Parameter(float_param(bias))
        self.eps = eps

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight, bias = f.tensor("weight"), f.tensor("bias")
        n = f.int("nOutput", weight.numel())
        if weight.numel() != n or bias.numel() != n:
            raise f.error(f"expected weight and bias of nOutput = {n} elements, got {tuple(weight.shape)} and "
                          f"{tuple(bias.shape)}")
        return cls(weight.reshape(-1), bias.reshape(-1), float(f.num("eps", 1e-5)))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(input, weight=self.weight, bias=self.bias, use_input_stats=True, eps=self.eps)

    def lua_fields(self) -> dict[str, Any]:
        return dict(nOutput=self.weight.numel(), eps=float(self.eps), prev_N=-1,
                    **export_weights(weight=self.weight, bias=self.bias))

    def lua_str(self) -> str:
        return self.lua_typename
