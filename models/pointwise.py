"""1x1 convolutions as batched matrix products (CPU).

On CPU the oneDNN convolution kernel copies input and output of a 1x1 convolution to and from a blocked
channel layout; for the narrow channel counts of a DenseNet (bottlenecks of 4k channels over 32x32 maps)
those copies cost more than the arithmetic: a DenseNet-BC training step spends most of its 1x1 time
there.  Seen per image, a 1x1 convolution is the matrix product ``W (C_out x C_in) @ x (C_in x HW)``, and
``torch.bmm`` over the batch runs it with no layout copies (2-4x faster per call on this project's CPU,
``benchmarks/optmemory.py``).  Other devices keep the library convolution (cuDNN is fast there).

:class:`Conv2d` is an ``nn.Conv2d`` (same parameters, same ``to_lua`` export) that takes this path when it
is a plain 1x1 convolution on a CPU tensor.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["Conv2d", "is_pointwise", "uses_matmul", "conv_forward", "conv_backward"]


def is_pointwise(conv: nn.Conv2d) -> bool:
    """True for a plain 1x1 convolution: stride 1, no padding, no dilation, one group, no bias."""
    return (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is None)


def uses_matmul(x: Tensor, conv: nn.Conv2d) -> bool:
    """True when :func:`conv_forward` runs ``conv`` on ``x`` as a batched matrix product."""
    return x.device.type == "cpu" and is_pointwise(conv)


def _bmm_forward(x: Tensor, w: Tensor, out: Optional[Tensor] = None) -> Tensor:
    n, c, h, wd = x.shape
    wx = w.view(1, -1, c).expand(n, -1, -1)
    if out is None:
        return torch.bmm(wx, x.reshape(n, c, h * wd)).view(n, -1, h, wd)
    torch.bmm(wx, x.reshape(n, c, h * wd), out=out.view(n, -1, h * wd))
    return out


def _bmm_backward(g: Tensor, x: Tensor, w: Tensor, need_input: bool,
                  out: Optional[Tensor] = None) -> Tuple[Optional[Tensor], Tensor]:
    n, c, h, wd = x.shape
    g2 = g.reshape(n, -1, h * wd)
    gw = torch.bmm(g2, x.reshape(n, c, h * wd).transpose(1, 2)).sum(0).view_as(w)
    gx = None
    if need_input:
        wt = w.view(1, -1, c).transpose(1, 2).expand(n, -1, -1)
        gx = (torch.bmm(wt, g2) if out is None else torch.bmm(wt, g2, out=out.view(n, c, h * wd))).view(n, c, h, wd)
    return gx, gw


def conv_forward(x: Tensor, conv: nn.Conv2d, weight: Optional[Tensor] = None, out: Optional[Tensor] = None) -> Tensor:
    """``conv(x)`` without bias, as a batched matrix product for a 1x1 convolution on CPU.

    ``weight`` overrides ``conv.weight`` (e.g. the weight cast to the compute dtype); ``out`` (contiguous,
    the output's shape) receives the result.
    """
    w = conv.weight if weight is None else weight
    if uses_matmul(x, conv):
        return _bmm_forward(x, w, out)
    y = F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return y if out is None else out.copy_(y)


def conv_backward(g: Tensor, x: Tensor, conv: nn.Conv2d, need_input: bool = True,
                  weight: Optional[Tensor] = None, out: Optional[Tensor] = None) -> Tuple[Optional[Tensor], Tensor]:
    """Gradients ``(d input, d weight)`` of :func:`conv_forward` for output gradient ``g``.

    ``out``: a contiguous tensor shaped like ``x`` that may receive the input gradient (a reused workspace:
    a fresh tensor of this size costs page faults on every call).
    """
    w = conv.weight if weight is None else weight
    if uses_matmul(x, conv):
        return _bmm_backward(g, x, w, need_input, out)
    gx, gw, _ = torch.ops.aten.convolution_backward(
        g, x, w, None, list(conv.stride), list(conv.padding), list(conv.dilation), False, [0, 0], conv.groups,
        [need_input, True, False])
    return gx, gw


class _PointwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        return _bmm_forward(x, w)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        x, w = ctx.saved_tensors
        gx, gw = _bmm_backward(g.contiguous(), x, w, ctx.needs_input_grad[0])
        return gx, gw


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose plain 1x1 form runs as a batched matrix product on CPU (see the module doc)."""

    def forward(self, x: Tensor) -> Tensor:
        if not uses_matmul(x, self) or x.dim() != 4:
            return super().forward(x)
        w = self.weight
        dev = x.device.type
        if torch.is_autocast_enabled(dev):  # autocast would run the convolution in its lower precision
            dtype = torch.get_autocast_dtype(dev)
            x, w = x.to(dtype), w.to(dtype)
        elif w.dtype != x.dtype:
            return super().forward(x)  # let F.conv2d report the dtype mismatch
        with torch.autocast(dev, enabled=False):
            return _PointwiseConv.apply(x, w)
