"""Shared-buffer dense blocks for ``-optMemory`` 3, 4 and 5.

Port of the memory machinery of liuzhuang13/DenseNet: ``models/DenseConnectLayer.lua``
(``nn.DenseConnectLayerCustom``) together with ``models/init.lua`` ``sharePrevOutput`` and
``shareBNOutput``.  A whole dense block runs as one :class:`torch.autograd.Function`:

* every block owns one pre-allocated feature buffer ``(N, C_final, H, W)``; the block input is copied
  into its first channels once and every layer writes its ``k`` new channels into the next slice, while
  reading ``buf[:, :c]`` as a view, so concatenation copies nothing (Lua: shared ``input_c``).  The
  buffer is the block's output, so the ``nn.JoinTable`` before each transition costs nothing either;
* the backward pass walks the layers in reverse with one shared gradient buffer for the whole block,
  using explicit convolution and batch-norm backward kernels (Lua: shared ``gradInput``);
* level 3 (and 5) keep each layer's BN-ReLU outputs for the backward pass (Lua keeps ``net1.output``
  per layer: memory still quadratic in depth, but without the copies of the concatenations);
* level 4 keeps per layer only its ``k`` new channels (in the buffer) and the BN batch statistics:
  the backward pass re-runs the layer's BN-ReLU(-Conv1x1) chain from the buffer with the statistics
  saved in the forward pass (Lua: ``shareBNOutput`` + re-forward of ``net1``).  Running statistics
  are touched only in the forward pass, so they are updated exactly once per step (Lua restores them
  after its re-forward to the same effect).  Memory beyond the buffer is constant per layer.

Dense layers are :class:`models.densenet._DenseLayer` modules; this file only needs their
``stages()``: the list of ``(BatchNorm2d, Conv2d)`` pairs of the BN-ReLU-Conv chain.
"""
from __future__ import annotations

import contextlib
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

Stage = Tuple[nn.BatchNorm2d, nn.Conv2d]

__all__ = ["buffered_dense_block"]


def _compute_dtype(x: Tensor) -> torch.dtype:
    """Dtype the block computes in: the autocast dtype when autocast is on for x's device."""
    dev = x.device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev) and x.is_floating_point():
        return torch.get_autocast_dtype(dev)
    return x.dtype


def _no_autocast(x: Tensor):
    """Context that turns autocast off for x's device: the block casts explicitly."""
    dev = x.device.type
    return torch.autocast(dev, enabled=False) if dev in ("cpu", "cuda") else contextlib.nullcontext()


def _bn_update_factor(bn: nn.BatchNorm2d) -> float:
    """Count one training step for ``bn`` and return its running-average factor (as ``_BatchNorm``)."""
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    if bn.momentum is None:
        return 1.0 / float(bn.num_batches_tracked)
    return bn.momentum


def _bn_relu(t: Tensor, bn: nn.BatchNorm2d, training: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """BN (updating running statistics once when training) then in-place ReLU.

    Returns ``(y, save_mean, save_invstd)``; in eval mode the two statistics are empty.
    """
    if training:
        factor = _bn_update_factor(bn)
        y, mean, invstd = torch.native_batch_norm(t, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                                  True, factor, bn.eps)
    else:
        y, mean, invstd = torch.native_batch_norm(t, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                                  False, 0.0, bn.eps)
    return y.relu_(), mean, invstd


def _bn_relu_recompute(t: Tensor, bn: nn.BatchNorm2d, mean: Tensor, invstd: Tensor, training: bool) -> Tensor:
    """Recompute ``relu(bn(t))`` with the statistics of the forward pass (no running-stat update)."""
    if not training:
        mean, invstd = bn.running_mean, torch.rsqrt(bn.running_var + bn.eps)
    scale = bn.weight * invstd
    shift = bn.bias - mean * scale
    shape = (1, -1, 1, 1)
    return torch.addcmul(shift.to(t.dtype).view(shape), t, scale.to(t.dtype).view(shape)).relu_()


def _is_pointwise(conv: nn.Conv2d) -> bool:
    """True for a plain 1x1 convolution (the bottleneck), which runs as a batched matrix product."""
    return (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)
            and conv.dilation == (1, 1) and conv.groups == 1)


def _conv(y: Tensor, conv: nn.Conv2d) -> Tensor:
    w = conv.weight.to(y.dtype)
    if _is_pointwise(conv):  # the convolution kernel would copy y into a blocked layout first
        n, c, h, wd = y.shape
        return torch.bmm(w.view(1, -1, c).expand(n, -1, -1), y.reshape(n, c, h * wd)).view(n, -1, h, wd)
    return F.conv2d(y, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)


def _block_params(layers: Sequence[Sequence[Stage]]) -> List[Tensor]:
    return [p for stages in layers for bn, conv in stages for p in (bn.weight, bn.bias, conv.weight)]


def _forward(x0: Tensor, layers: Sequence[Sequence[Stage]], growth: int, training: bool,
             keep: Optional[str], dtype: torch.dtype) -> Tuple[Tensor, list]:
    """Run the block into a fresh buffer. ``keep``: None (no backward), 'all' (level 3), 'min' (level 4).

    Returns the buffer and, per layer and stage, the tensors the backward pass needs
    (stage input, BN-ReLU output, save_mean, save_invstd; None where not kept).
    """
    n, c0, h, w = x0.shape
    buf = x0.new_empty((n, c0 + growth * len(layers), h, w), dtype=dtype)
    buf[:, :c0].copy_(x0)
    saved = []
    c = c0
    for stages in layers:
        t = buf[:, :c]
        per_layer = []
        for s, (bn, conv) in enumerate(stages):
            y, mean, invstd = _bn_relu(t, bn, training)
            out = _conv(y, conv)
            if keep is not None:
                kept_t = None if s == 0 or keep == "min" else t
                per_layer.append((kept_t, y if keep == "all" else None, mean, invstd))
            del y
            t = out
        buf[:, c:c + growth].copy_(t)
        saved.append(per_layer)
        c += growth
    return buf, saved


def _conv_backward(g: Tensor, y: Tensor, conv: nn.Conv2d, need_input: bool) -> Tuple[Optional[Tensor], Tensor]:
    if _is_pointwise(conv):  # as matrix products, without the kernel's blocked-layout copies of y and gy
        n, c, h, wd = y.shape
        g2, y2 = g.reshape(n, -1, h * wd), y.reshape(n, c, h * wd)
        gw = torch.bmm(g2, y2.transpose(1, 2)).sum(0).view_as(conv.weight)
        wt = conv.weight.to(y.dtype).view(1, -1, c).transpose(1, 2).expand(n, -1, -1)
        gy = torch.bmm(wt, g2).view(n, c, h, wd) if need_input else None
        return gy, gw
    gy, gw, _ = torch.ops.aten.convolution_backward(
        g, y, conv.weight.to(y.dtype), None, list(conv.stride), list(conv.padding), list(conv.dilation),
        False, [0, 0], conv.groups, [need_input, True, False])
    return gy, gw


def _bn_train_backward(gy: Tensor, t: Tensor, bn: nn.BatchNorm2d, mean: Tensor, invstd: Tensor,
                       need_input: bool, chunk: int = 8) -> Tuple[Optional[Tensor], Tensor, Tensor]:
    """Training-mode BN backward that overwrites ``gy`` (owned by the caller) with the input gradient.

    Reads ``t`` in place (a channel slice of the buffer is fine) and works in batch chunks, where the
    native kernel would hold a contiguous copy of ``t`` and a new gradient tensor.  Per-channel sums and
    each chunk's arithmetic are in the statistics' dtype (float32 under autocast), rounded once.
    """
    shape = (1, -1, 1, 1)
    acc = mean.dtype
    m = mean.view(shape)
    sum_gy = gy.sum((0, 2, 3), dtype=acc)
    sum_gy_xmu = sum((t[i:i + chunk] - m).mul_(gy[i:i + chunk]).sum((0, 2, 3))
                     for i in range(0, t.shape[0], chunk))
    if need_input:
        count = gy.numel() // gy.shape[1]
        a = (bn.weight.to(acc) * invstd).view(shape)               # d out / d gy
        coef = (-a.flatten() * invstd * invstd * sum_gy_xmu / count)  # through the variance, per t
        d = (-a.flatten() * sum_gy / count - coef * mean).view(shape)  # through the mean
        for i in range(0, t.shape[0], chunk):
            g = gy[i:i + chunk]
            g.copy_(torch.addcmul(d, t[i:i + chunk], coef.view(shape)).addcmul_(g, a))
    return (gy if need_input else None), sum_gy_xmu * invstd, sum_gy


def _bn_backward(gy: Tensor, t: Tensor, bn: nn.BatchNorm2d, mean: Tensor, invstd: Tensor,
                 training: bool, need_input: bool) -> Tuple[Optional[Tensor], Tensor, Tensor]:
    if training:
        return _bn_train_backward(gy, t, bn, mean, invstd, need_input)
    if not t.is_contiguous():
        t = t.contiguous()  # the native CPU kernel is ~2.5x slower on a channel slice than copy + run
    return torch.ops.aten.native_batch_norm_backward(
        gy, t, bn.weight, bn.running_mean, bn.running_var, None, None, False, bn.eps, [need_input, True, True])


def _stage_tensors(t0: Tensor, stages: Sequence[Stage], row: list, flat: Sequence[Tensor],
                   training: bool) -> Tuple[List[Optional[Tensor]], List[Optional[Tensor]]]:
    """Each stage's input and (when at hand) BN-ReLU output for one layer's backward pass.

    Kept tensors come from ``flat``; a stage input that was not kept (level 4) is recomputed by
    re-running the earlier stages (BN-ReLU with the saved statistics, then the convolution).  A BN-ReLU
    output that was not kept is None: the caller recomputes it when its stage comes.
    """
    ts: List[Optional[Tensor]] = [t0]
    ys: List[Optional[Tensor]] = []
    for s, (bn, conv) in enumerate(stages):
        _, y_i, m_i, v_i = row[s]
        y = flat[y_i] if y_i is not None else None
        if s + 1 < len(stages) and row[s + 1][0] is None:
            yr = y if y is not None else _bn_relu_recompute(ts[s], bn, flat[m_i], flat[v_i], training)
            ts.append(_conv(yr, conv))
            del yr  # recomputed again when its stage comes: keeping it would raise the peak
        elif s + 1 < len(stages):
            ts.append(flat[row[s + 1][0]])
        ys.append(y)
    return ts, ys


class _BufferedBlock(torch.autograd.Function):
    """One dense block over a shared feature buffer; backward with a shared gradient buffer."""

    @staticmethod
    def forward(ctx, x0: Tensor, layers, growth: int, training: bool, recompute: bool, *params: Tensor) -> Tensor:
        dtype = _compute_dtype(x0)
        with _no_autocast(x0), torch.no_grad():
            buf, saved = _forward(x0, layers, growth, training, "min" if recompute else "all", dtype)
        ctx.layers, ctx.growth, ctx.training, ctx.recompute = layers, growth, training, recompute
        ctx.c0, ctx.x0_dtype = x0.shape[1], x0.dtype
        ctx.param_dtypes = [p.dtype for p in params]
        flat, ctx.layout = [buf], []
        for per_layer in saved:
            row = []
            for entry in per_layer:
                idx = []
                for item in entry:
                    if item is None:
                        idx.append(None)
                    else:
                        idx.append(len(flat))
                        flat.append(item)
                row.append(idx)
            ctx.layout.append(row)
        ctx.save_for_backward(*flat)
        return buf

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_buf: Tensor):
        flat = ctx.saved_tensors
        buf = flat[0]
        growth, training = ctx.growth, ctx.training
        need_x0 = ctx.needs_input_grad[0]
        gbuf = grad_buf.to(buf.dtype, copy=True).contiguous()  # the block's shared gradient buffer
        grads: List[Tensor] = []
        c = buf.shape[1]
        for stages, row in zip(reversed(ctx.layers), reversed(ctx.layout)):
            c -= growth
            g = gbuf[:, c:c + growth].contiguous()
            layer_grads: List[Tensor] = []
            ts, ys = _stage_tensors(buf[:, :c], stages, row, flat, training)
            for s in range(len(stages) - 1, -1, -1):
                bn, conv = stages[s]
                _, _, m_i, v_i = row[s]
                t, y = ts[s], ys[s]
                ts[s] = ys[s] = None
                mean, invstd = flat[m_i], flat[v_i]
                if y is None:
                    y = _bn_relu_recompute(t, bn, mean, invstd, training)
                need_in = s > 0 or c > ctx.c0 or need_x0
                gy, gw = _conv_backward(g, y, conv, True)
                # ReLU backward in place (masked_fill_ is 6x slower)
                gy = torch.ops.aten.threshold_backward.grad_input(gy, y, 0, grad_input=gy)
                del y
                gt, gbw, gbb = _bn_backward(gy, t, bn, mean, invstd, training, need_in)
                layer_grads = [gbw, gbb, gw] + layer_grads
                g = gt
            grads = layer_grads + grads
            if g is not None:
                gbuf[:, :c] += g
        grads = [gr.to(dt) for gr, dt in zip(grads, ctx.param_dtypes)]
        gx0 = gbuf[:, :ctx.c0].to(ctx.x0_dtype) if need_x0 else None
        return (gx0, None, None, None, None, *grads)


def buffered_dense_block(x0: Tensor, layers: Sequence[Sequence[Stage]], growth: int, training: bool,
                         recompute: bool) -> Tensor:
    """Run a dense block (layers given by their BN-ReLU-Conv stages) over one shared buffer.

    Returns the concatenation of the input and every layer's new features, ``(N, C0 + L*k, H, W)``.
    ``recompute`` selects level 4 (recompute BN-ReLU(-Conv1x1) in backward) over level 3 (keep them).
    """
    params = _block_params(layers)
    if torch.is_grad_enabled() and (x0.requires_grad or any(p.requires_grad for p in params)):
        return _BufferedBlock.apply(x0, layers, growth, training, recompute, *params)
    dtype = _compute_dtype(x0)
    with _no_autocast(x0), torch.no_grad():
        return _forward(x0, layers, growth, training, None, dtype)[0]
