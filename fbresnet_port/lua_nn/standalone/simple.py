"""Lua Torch's parameter-free layers in plain PyTorch where torch.nn has no exact equivalent: element-wise
functions with THNN's gradients, Lua's soft-max dimensions, Dropout v1/v2, SpatialDropout, sum pooling,
cross-map LRN and up-sampling of unbatched inputs, and fast-neural-style's TotalVariation.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def abs_thnn(x: torch.Tensor) -> torch.Tensor:
    """THNN's Abs: its gradient is +1 at 0 (torch.abs gives 0)."""
    return torch.where(x >= 0, x, -x)


def sqrt_thnn(x: torch.Tensor) -> torch.Tensor:
    """THNN's Sqrt: gradient 0 where the output is 0 (torch.sqrt gives inf there)."""
    return torch.where(x == 0, 0.0, torch.where(x == 0, 1.0, x).sqrt())


# Lua nn.<name> -> its element-wise function
ELEMENTWISE = {
    "Tanh": torch.tanh, "Sigmoid": torch.sigmoid, "Exp": torch.exp, "Log": torch.log, "Square": torch.square,
    "Abs": abs_thnn, "Sqrt": sqrt_thnn, "LogSigmoid": F.logsigmoid, "SoftSign": F.softsign,
    "TanhShrink": F.tanhshrink,
}


class Elementwise(nn.Module):
    """Lua nn.Exp, Log, Square, Abs, Sqrt, ... (``op``: the Lua class name without ``nn.``)."""

    def __init__(self, op: str):
        super().__init__()
        self.op = op

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ELEMENTWISE[self.op](input)


class Power(nn.Module):
    """Lua nn.Power: x ^ pow."""

    def __init__(self, pow: float):
        super().__init__()
        self.pow = pow

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input.pow(self.pow)


class SoftMax(nn.Module):
    """Lua nn.SoftMax / LogSoftMax / SoftMin (``log``, ``negate``): over dim 1 of a 1-D or 3-D input and dim 2
    of a 2-D or 4-D input, as THNN; ``per_sample`` (cudnn.SoftMax instance mode): over all features of a sample."""

    def __init__(self, log: bool = False, negate: bool = False, per_sample: bool = False):
        super().__init__()
        self.log, self.negate, self.per_sample = log, negate, per_sample

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.negate:
            input = -input
        fn = F.log_softmax if self.log else F.softmax
        if self.per_sample:
            if input.dim() in (1, 3):
                return fn(input.reshape(-1), dim=0).reshape(input.shape)
            return fn(input.reshape(input.shape[0], -1), dim=1).reshape(input.shape)
        return fn(input, dim=0 if input.dim() in (1, 3) else 1)


class Dropout(nn.Module):
    """Lua nn.Dropout. ``v2`` (the default since 2015): training scales kept units by 1/(1-p), evaluation is the
    identity; v1: training does not scale, evaluation multiplies by 1-p. ``stochastic_inference`` keeps the noise
    in evaluation mode."""

    def __init__(self, p: float = 0.5, v2: bool = True, inplace: bool = False, stochastic_inference: bool = False):
        super().__init__()
        self.p, self.v2, self.inplace, self.stochastic_inference = p, v2, inplace, stochastic_inference

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        p = float(self.p)
        if p <= 0:
            return input
        if self.training or self.stochastic_inference:
            if self.v2:
                return F.dropout(input, p, training=True)
            return input * torch.empty_like(input).bernoulli_(1 - p)
        return input if self.v2 else input * (1 - p)


class SpatialDropout(nn.Module):
    """Lua nn.SpatialDropout: drops whole planes; training does not rescale, evaluation multiplies by 1-p."""

    def __init__(self, p: float = 0.5, stochastic_inference: bool = False):
        super().__init__()
        self.p, self.stochastic_inference = p, stochastic_inference

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        p = float(self.p)
        if self.training or self.stochastic_inference:
            shape = input.shape[:2] + (1, 1) if input.dim() == 4 else input.shape[:1] + (1, 1)
            return input * torch.empty(shape, dtype=input.dtype, device=input.device).bernoulli_(1 - p)
        return input * (1 - p)


def sum_pool2d(input: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int],
               padding: tuple[int, int], ceil_mode: bool, count_include_pad: bool) -> torch.Tensor:
    """Lua nn.SpatialAveragePooling with ``divide = false``: the window sums."""
    out = F.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad)
    return out * (kernel_size[0] * kernel_size[1])


class SumPool2d(nn.AvgPool2d):
    """Lua nn.SpatialAveragePooling(..., divide = false): sums over the windows."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return sum_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)


def batched4(fn: Any, input: torch.Tensor) -> torch.Tensor:
    """``fn`` of a 4-D batch applied to a 3-D (C x H x W) input as a batch of one."""
    if input.dim() == 3:
        return fn(input.unsqueeze(0)).squeeze(0)
    return fn(input)


class CrossMapLRN(nn.Module):
    """Lua nn/cudnn.SpatialCrossMapLRN: x / (k + alpha/size * sum of squares over ``size`` planes)^beta, for a
    batch or one C x H x W sample."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return batched4(lambda x: F.local_response_norm(x, int(self.size), float(self.alpha), float(self.beta),
                                                        float(self.k)), input)


class UpSamplingNearest(nn.Module):
    """Lua nn.SpatialUpSamplingNearest: integer ``scale_factor``, for a batch or one C x H x W sample."""

    def __init__(self, scale_factor: int):
        super().__init__()
        self.scale_factor = scale_factor

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        s = int(self.scale_factor)
        return batched4(lambda x: F.interpolate(x, scale_factor=(s, s), mode="nearest"), input)


class UpSamplingBilinear(nn.Module):
    """Lua nn.SpatialUpSamplingBilinear: corners aligned; output ``scale_factor`` x the size, or oheight x owidth."""

    def __init__(self, scale_factor: int | None = None, owidth: int | None = None, oheight: int | None = None):
        super().__init__()
        self.scale_factor, self.owidth, self.oheight = scale_factor, owidth, oheight

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        h, w = input.shape[-2:]
        if self.scale_factor is not None:
            size = (int(h * self.scale_factor), int(w * self.scale_factor))
        else:
            size = (int(self.oheight), int(self.owidth))
        return batched4(lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=True), input)


class AddTotalVariationGradient(torch.autograd.Function):
    """Identity whose backward adds ``strength`` x the gradient of 1/2 sum of squared horizontal and vertical
    neighbour differences over the top-left (H-1) x (W-1) pixels (fast-neural-style's TVLoss)."""

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


class TotalVariation(nn.Module):
    """fast-neural-style's nn.TotalVariation(strength): the identity forward; the backward pass adds the total-variation
    regulariser's gradient."""

    def __init__(self, strength: float):
        super().__init__()
        self.strength = strength

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not input.requires_grad:
            return input
        return AddTotalVariationGradient.apply(input, float(self.strength))
