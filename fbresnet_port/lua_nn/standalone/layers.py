"""Lua Torch layers with parameters or running statistics in plain PyTorch where torch.nn differs from Lua: THNN's
BatchNormalization (a batch of one, an input without batch dimension), PReLU's plane dimension, and the
nn.InstanceNormalization of fast-neural-style / texture_nets / CycleGAN with its inner BatchNormalization.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn


def one_value_batch_norm(bn: nn.Module, input: torch.Tensor) -> torch.Tensor:
    """THNN BatchNormalization in training mode when each plane has a single value (a batch of one 2-D input,
    or 1 x C x 1 x 1): the output is the bias, and the running variance takes 0/0 = NaN."""
    dims = [d for d in range(input.dim()) if d != 1]
    mean = input.mean(dims, keepdim=True)
    invstd = 0.0 if bn.eps == 0 else 1 / math.sqrt(bn.eps)  # THNN: sum == 0 and eps == 0 -> invstd = 0
    shape = [1, -1] + [1] * (input.dim() - 2)
    out = (input - mean) * invstd
    if bn.weight is not None:
        out = out * bn.weight.reshape(shape)
    if bn.bias is not None:
        out = out + bn.bias.reshape(shape)
    if bn.running_mean is not None and bn.momentum is not None:
        with torch.no_grad():
            m = bn.momentum
            bn.running_mean.mul_(1 - m).add_(m * mean.reshape(-1).to(bn.running_mean.dtype))
            bn.running_var.mul_(1 - m).add_(m * torch.full_like(bn.running_var, math.nan))
    return out


def lua_batch_norm(bn: nn.Module, input: torch.Tensor, n_dim: int,
                   torch_forward: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Lua's BatchNormalization forward around torch's (``torch_forward``): an input without the batch dimension
    only in evaluate mode; THNN (``bn.thnn``) with a training batch of one: the batch's statistics as torch/nn
    before 2017-08-03, or, with ``bn.batch_of_one_running_stats``, the running statistics, left alone, as torch/nn
    after its commit 919eeca."""
    unbatched = input.dim() == n_dim - 1
    if unbatched:
        if bn.training:  # BN:checkInputDim
            raise ValueError(f"only mini-batch supported ({n_dim}D tensor), got {input.dim()}D tensor instead "
                             f"(an input without the batch dimension works in evaluate mode)")
        input = input.unsqueeze(0)
    if bn.training and bn.thnn and input.dim() >= 2 and input.shape[0] == 1:
        bn._check_input_dim(input)
        if bn.batch_of_one_running_stats:
            out = F.batch_norm(input, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        elif input[0, 0].numel() == 1:
            out = one_value_batch_norm(bn, input)
        else:
            out = torch_forward(input)
    else:
        out = torch_forward(input)
    return out.squeeze(0) if unbatched else out


class _LuaBatchNormBase:
    """What the Lua BatchNormalization classes add to torch's (mixed in before a ``_BatchNorm`` class): ``thnn``
    (nn.* classes: THNN's batch-of-one rule; cudnn.*: none), ``batch_of_one_running_stats``, ``weight``/``bias``
    False for a Lua module holding only one of them, and Lua's forward for inputs of ``n_dim`` dimensions."""

    n_dim: int

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True, *,
                 thnn: bool = True, batch_of_one_running_stats: bool = False, weight: bool = True,
                 bias: bool = True, device: Any = None):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine, device=device)  # type: ignore
        self.thnn, self.batch_of_one_running_stats = thnn, batch_of_one_running_stats
        if not weight:
            self.weight = None
        if not bias:
            self.bias = None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return lua_batch_norm(self, input, self.n_dim, super().forward)  # type: ignore[misc]


class BatchNormalization(_LuaBatchNormBase, nn.BatchNorm1d):
    """Lua nn.BatchNormalization (batch x features; a vector in evaluate mode)."""

    n_dim = 2


class SpatialBatchNormalization(_LuaBatchNormBase, nn.BatchNorm2d):
    """Lua nn.SpatialBatchNormalization (batch x planes x H x W; planes x H x W in evaluate mode)."""

    n_dim = 4


class VolumetricBatchNormalization(_LuaBatchNormBase, nn.BatchNorm3d):
    """Lua nn.VolumetricBatchNormalization (batch x planes x T x H x W)."""

    n_dim = 5


class ParametricReLU(nn.Module):
    """Lua nn.PReLU: one slope per plane (``n_planes`` > 0; the plane is dim 1 of a 2-D/4-D input and dim 0 of a
    1-D/3-D one) or one shared slope (``n_planes`` = 0)."""

    def __init__(self, n_planes: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((max(n_planes, 1),), 0.25))
        self.n_planes = n_planes

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self.n_planes > 0:
            plane_dim = 0 if input.dim() in (1, 3) else 1
            w = w.reshape([-1] + [1] * (input.dim() - plane_dim - 1))
        return torch.where(input > 0, input, input * w)


class InstanceNormalization(nn.Module):
    """nn.InstanceNormalization of fast-neural-style (``texture_nets=False``) and of texture_nets / CycleGAN.

    Both run an inner training-mode SpatialBatchNormalization of N*C planes over the input viewed as
    1 x (N*C) x H x W, made anew when the batch size N changes (fast-neural-style: running mean 0, variance 1,
    momentum 0.1; texture_nets: the module's ``running_mean``/``running_var`` repeated N times, its momentum);
    the module's train/eval mode plays no part. Before torch/nn 919eeca (2017-08-03) that BN normalises each plane
    of each image by its own mean and biased variance (and updates its running statistics); after it
    (``batch_of_one_running_stats``) a batch of one uses the running statistics and leaves them alone. Then
    ``weight``/``bias`` per plane (when ``affine``). ``prev_n`` and the ``bn_*`` values describe the inner BN the
    Lua file held (made for a batch of ``prev_n``; -1: none).
    """

    def __init__(self, n: int, eps: float = 1e-5, affine: bool = True, texture_nets: bool = False,
                 momentum: float = 0.1, batch_of_one_running_stats: bool = False, prev_n: int = -1,
                 bn_momentum: float | None = None, bn_eps: float | None = None, bn_train: bool = True):
        super().__init__()
        self.n, self.eps, self.texture_nets, self.momentum = n, eps, texture_nets, momentum
        self.weight = nn.Parameter(torch.ones(n)) if affine else None
        self.bias = nn.Parameter(torch.zeros(n)) if affine else None
        self.register_buffer("running_mean", torch.zeros(n) if texture_nets else None)
        self.register_buffer("running_var", torch.ones(n) if texture_nets else None)
        self.batch_of_one_running_stats = batch_of_one_running_stats
        self.prev_n = prev_n
        size = prev_n * n if prev_n >= 1 else 0
        self.register_buffer("bn_running_mean", torch.zeros(size))
        self.register_buffer("bn_running_var", torch.ones(size))
        self.bn_momentum = momentum if bn_momentum is None else bn_momentum
        self.bn_eps = eps if bn_eps is None else bn_eps
        self.bn_train = bn_train

    def new_bn(self, batch: int) -> None:
        """Lua's ``self.bn = nn.SpatialBatchNormalization(N * C, ...)`` for a batch of ``batch``."""
        if self.texture_nets:
            self.bn_running_mean = self.running_mean.repeat(batch)
            self.bn_running_var = self.running_var.repeat(batch)
        else:
            self.bn_running_mean = self.bn_running_mean.new_zeros(batch * self.n)
            self.bn_running_var = self.bn_running_var.new_ones(batch * self.n)
        self.prev_n, self.bn_momentum, self.bn_eps, self.bn_train = batch, self.momentum, self.eps, True

    def input_problem(self, input: torch.Tensor) -> str | None:
        if input.dim() != 4 or input.shape[1] != self.n:
            return (f"expected a 4-D input of {self.n} planes (nOutput), got "
                    f"{'x'.join(map(str, input.shape))}")
        return None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        problem = self.input_problem(input)
        if problem:
            raise ValueError(problem)
        batch = input.shape[0]
        stats = dict(device=input.device, dtype=input.dtype)
        with torch.no_grad():
            if batch != self.prev_n or self.bn_running_mean.numel() != batch * self.n:
                self.new_bn(batch)
            if self.texture_nets:  # "Get statistics", before the BN runs
                self.running_mean.copy_(self.bn_running_mean.reshape(batch, self.n).mean(0))
                self.running_var.copy_(self.bn_running_var.reshape(batch, self.n).mean(0))
        if self.batch_of_one_running_stats or not self.bn_train:
            mean = self.bn_running_mean.to(**stats).reshape(batch, self.n, 1, 1)
            invstd = (self.bn_running_var.to(**stats).reshape(batch, self.n, 1, 1) + self.bn_eps).rsqrt()
            out = (input - mean) * invstd
        else:
            mean = input.mean((2, 3), keepdim=True)
            centred = input - mean
            sum_sq = centred.square().sum((2, 3), keepdim=True)
            plane = input.shape[2] * input.shape[3]
            if self.bn_eps == 0:  # THNN: a constant plane with eps = 0 gets invstd = 0
                invstd = torch.where(sum_sq == 0, torch.zeros_like(sum_sq), (sum_sq / plane).rsqrt())
            else:
                invstd = (sum_sq / plane + self.bn_eps).rsqrt()
            out = centred * invstd
            with torch.no_grad():  # THNN updates the running statistics (unbiased variance)
                m = self.bn_momentum
                self.bn_running_mean.mul_(1 - m).add_(m * mean.reshape(-1).to(self.bn_running_mean.dtype))
                if plane > 1:
                    unbiased = sum_sq.reshape(-1).to(self.bn_running_var.dtype) / (plane - 1)
                else:
                    unbiased = torch.full_like(self.bn_running_var, math.nan)
                self.bn_running_var.mul_(1 - m).add_(m * unbiased)
        if self.weight is not None:
            out = out * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)
        return out
