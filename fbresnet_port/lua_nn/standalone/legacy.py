"""Older Lua Torch vision layers in plain PyTorch: SpatialConvolutionMap (connection tables), SpatialSubSampling
and the local contrast normalisations (Spatial{Subtractive,Divisive,Contrastive}Normalization, nnx's
SpatialNormalization), with THNN's semantics.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def image_input_error(module: nn.Module, what: str) -> Exception:
    """The error for an input ``module`` refuses: the module's own ``input_error(what)`` if it has one."""
    make = getattr(module, "input_error", None)
    return make(what) if callable(make) else ValueError(f"{type(module).__name__}: {what}")


def check_image_planes(module: nn.Module, input: torch.Tensor, n_planes: int, exact: bool = True) -> None:
    """A 3-D (planes x H x W) or 4-D (batch x planes x H x W) input with ``n_planes`` planes (at least, unless
    ``exact``), as THNN's shape checks."""
    got = "x".join(map(str, input.shape))
    if input.dim() not in (3, 4):
        raise image_input_error(module, f"expected a 3-D (planes x H x W) or 4-D (batch) input, got {got}")
    planes = input.shape[-3]
    if planes < n_planes or (exact and planes != n_planes):
        raise image_input_error(module, f"the input ({got}) has {planes} planes, the module expects "
                                        f"{'' if exact else 'at least '}{n_planes} (nInputPlane)")


class SpatialConvolutionMap(nn.Module):
    """Lua nn.SpatialConvolutionMap: kernel k (``weight[k]``, kH x kW) connects input plane ``conn[k, 0]`` to
    output plane ``conn[k, 1]`` (0-based here; Lua's connTable is 1-based). No padding.

    Computed as a dense convolution whose weight is scattered from the kernels (repeated pairs add up, as in
    THNN's loop), so autograd gives THNN's gradients.
    """

    def __init__(self, n_kernels: int, kernel_size: tuple[int, int], n_input_plane: int, n_output_plane: int,
                 stride: tuple[int, int] = (1, 1)):
        super().__init__()
        self.register_buffer("conn", torch.zeros(n_kernels, 2, dtype=torch.int64))
        self.weight = nn.Parameter(torch.empty((n_kernels,) + tuple(kernel_size)))
        self.bias = nn.Parameter(torch.empty(n_output_plane))
        self.n_in, self.n_out, self.stride = n_input_plane, n_output_plane, tuple(stride)

    def dense_weight(self) -> torch.Tensor:
        """The (nOutputPlane, P, kH, kW) weight of the equivalent full convolution over the first P input planes
        (P: the highest connected one, at most nInputPlane)."""
        used = int(self.conn[:, 0].max()) + 1
        dense = self.weight.new_zeros((self.n_out, used) + tuple(self.weight.shape[1:]))
        return dense.index_put((self.conn[:, 1], self.conn[:, 0]), self.weight, accumulate=True)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_image_planes(self, input, self.n_in, exact=False)
        weight = self.dense_weight()
        input = input.narrow(-3, 0, weight.shape[1])  # THNN reads the first nInputPlane planes
        return F.conv2d(input, weight, self.bias, stride=self.stride)


class SpatialSubSampling(nn.Module):
    """Lua nn.SpatialSubSampling: per plane, ``weight[p]`` * (sum over each kW x kH window) + ``bias[p]``."""

    def __init__(self, n_input_plane: int, kernel_size: tuple[int, int], stride: tuple[int, int]):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_input_plane))
        self.bias = nn.Parameter(torch.empty(n_input_plane))
        self.kernel, self.stride = tuple(kernel_size), tuple(stride)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        n = self.weight.numel()
        check_image_planes(self, input, n)
        # a depth-wise convolution whose kernel is filled with the plane's weight
        kernel = self.weight.reshape(n, 1, 1, 1).expand((n, 1) + self.kernel)
        return F.conv2d(input, kernel, self.bias, stride=self.stride, groups=n)


def frozen(module: nn.Module) -> nn.Module:
    """``module`` with every parameter turned into a buffer: Lua's normalisation modules hold convolutions whose
    weights are fixed kernels, not listed by ``parameters()``."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            del m._parameters[name]
            if p is not None:
                m.register_buffer(name, p.detach())
            else:
                setattr(m, name, None)
    return module


def same_elements(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``b`` laid out as ``a``: Lua's CSubTable/CDivTable pair the elements in memory order."""
    return b if a.shape == b.shape else b.reshape(a.shape)


def border_coef(meanestimator: nn.Module, input: torch.Tensor) -> torch.Tensor:
    """meanestimator applied to ones of one sample's shape, expanded over the batch: the border coefficients that
    undo the zero padding's shrinking of the local means."""
    batched = input.dim() == 4
    ones = input.new_ones(input.shape[1:] if batched else input.shape)
    coef = meanestimator(ones)
    return coef.unsqueeze(0).expand((input.shape[0],) + coef.shape) if batched else coef


class SpatialSubtractiveNormalization(nn.Module):
    """Lua nn.SpatialSubtractiveNormalization: input - (local weighted mean / border coefficient); the local mean
    is the saved ``meanestimator`` network (fixed weights)."""

    def __init__(self, n_input_plane: int, meanestimator: nn.Module):
        super().__init__()
        self.n_planes = n_input_plane
        self.meanestimator = frozen(meanestimator)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_image_planes(self, input, self.n_planes)
        local_sums = self.meanestimator(input)
        adjusted = local_sums / same_elements(local_sums, border_coef(self.meanestimator, input))
        return input - same_elements(input, adjusted)


class SpatialDivisiveNormalization(nn.Module):
    """Lua nn.SpatialDivisiveNormalization: input / thresholder(local std / border coefficient), the local std
    from the saved ``stdestimator`` network and the coefficients from ``meanestimator`` (fixed weights)."""

    def __init__(self, n_input_plane: int, meanestimator: nn.Module, stdestimator: nn.Module,
                 thresholder: nn.Module):
        super().__init__()
        self.n_planes = n_input_plane
        self.meanestimator = frozen(meanestimator)
        self.stdestimator = frozen(stdestimator)
        self.thresholder = thresholder

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_image_planes(self, input, self.n_planes)
        local_stds = self.stdestimator(input)
        adjusted = local_stds / same_elements(local_stds, border_coef(self.meanestimator, input))
        return input / same_elements(input, self.thresholder(adjusted))


class SpatialContrastiveNormalization(nn.Module):
    """Lua nn.SpatialContrastiveNormalization: its ``normalizer`` (subtractive then divisive normalisation)."""

    def __init__(self, normalizer: nn.Module):
        super().__init__()
        self.normalizer = normalizer

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.normalizer(input)


class SpatialNormalization(nn.Module):
    """nnx's nn.SpatialNormalization: contrast normalisation over all planes with the saved ``convo``/``convostd``
    networks (fixed weights), normalised by the border coefficient ``convo(ones)``: z = x - mean;
    out = z / threshold(std), the threshold being ``fixed_threshold`` or else max(mean of std, 1e-3). Input
    planes x H x W (a 2-D input is one plane); a 4-D batch is taken sample by sample (Lua takes one sample)."""

    def __init__(self, n_planes: int, convo: nn.Module, convostd: nn.Module, fixed_threshold: float | None = None):
        super().__init__()
        self.convo, self.convostd = frozen(convo), frozen(convostd)
        self.n_planes, self.fixed_threshold = n_planes, fixed_threshold

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() == 4:
            return torch.stack([self(x) for x in input])
        x = input.unsqueeze(0) if input.dim() == 2 else input
        check_image_planes(self, x, self.n_planes)
        coef = self.convo(x.new_ones((self.n_planes,) + tuple(x.shape[1:])))
        centred = x - self.convo(x) / coef
        std = self.convostd(centred.square()).sqrt() / coef
        thr = self.fixed_threshold if self.fixed_threshold is not None else max(float(std.mean()), 1e-3)
        return centred / F.threshold(std, thr, thr)
