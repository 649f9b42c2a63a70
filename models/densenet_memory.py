"""Dense blocks for ``-optMemory`` 1 to 5: one autograd Function per block with explicit backward.

Port of the memory machinery of liuzhuang13/DenseNet (``models/DenseConnectLayer.lua``,
``models/init.lua`` ``optnet``/``shareGradInput``/``sharePrevOutput``/``shareBNOutput``).  The levels
differ in what the forward pass stores and keeps for the backward pass:

* 1, 2: every layer's input is one fresh concatenation of the earlier features (``torch.cat``), kept
  for the backward pass together with the layer's BN-ReLU outputs (Lua: one ``Concat`` output per
  layer; gradient buffers shared as with ``shareGradInput``); memory quadratic in depth;
* 3 (and 5): one pre-allocated feature buffer ``(N, C_final, H, W)`` per block: the block input is
  copied into its first channels once, every layer reads ``buf[:, :c]`` as a view and writes its ``k``
  new channels into the next slice, so concatenation copies nothing and the buffer is the block's output
  (Lua: ``DenseConnectLayerCustom`` + ``sharePrevOutput``).  BN-ReLU outputs are kept;
* 4: as 3, but only the buffer and each BN's batch statistics are kept: the backward pass re-runs a
  layer's BN-ReLU(-Conv1x1-BN-ReLU) chain from the buffer with the statistics of the forward pass (Lua:
  ``shareBNOutput`` + re-forward of ``net1``).  The recomputed BN-ReLU output of a layer's input lives in
  one buffer shared by all layers of the block (sized for the widest, as Lua's shared BN output) until
  that layer's backward is done.  Running statistics are updated in the forward pass only, i.e. exactly
  once per step (Lua restores them after its re-forward).  Memory beyond the buffers is constant per
  layer.

All levels share one gradient buffer per block in the backward pass and the same arithmetic, which
uses what a dense block guarantees to go faster than layer-by-layer autograd:

* the batch mean and variance of a channel do not depend on which layer reads it: each feature's
  statistics are computed once, when it is produced, and every later BN-ReLU only normalises (one pass
  instead of the three of a training-mode BatchNorm);
* the input gradient of a training-mode BatchNorm is ``a*g + coef*x + d`` with per-channel ``a, coef,
  d``: the ``a*g`` part goes into the gradient buffer at once, the affine ``coef*x + d`` parts of all
  later layers are summed per channel and applied once, when the backward pass reaches the layer that
  produced the feature;
* 1x1 convolutions run as batched matrix products on CPU (:mod:`models.pointwise`).

Outputs, gradients and running statistics equal those of plain autograd over ``nn`` modules (tested in
float64 to 1e-10 against level 0).  Dense layers are :class:`models.densenet._DenseLayer` modules; this
file only needs their ``stages()``: the ``(BatchNorm2d, Conv2d)`` pairs of the BN-ReLU-Conv chain.
"""
from __future__ import annotations

import contextlib
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .pointwise import conv_backward, conv_forward, uses_matmul

Stage = Tuple[nn.BatchNorm2d, nn.Conv2d]

__all__ = ["dense_block"]

_SHAPE = (1, -1, 1, 1)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """Dtype the block computes in: the autocast dtype when autocast is on for x's device."""
    dev = x.device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev) and x.is_floating_point():
        return torch.get_autocast_dtype(dev)
    return x.dtype


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of BN statistics and per-channel sums: float32 for 16-bit compute, else the compute dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _no_autocast(x: Tensor):
    """Context that turns autocast off for x's device: the block casts explicitly."""
    dev = x.device.type
    return torch.autocast(dev, enabled=False) if dev in ("cpu", "cuda") else contextlib.nullcontext()


def _channel_stats(t: Tensor, acc: torch.dtype) -> Tuple[Tensor, Tensor]:
    """Batch mean and biased variance per channel of ``t`` (N, C, H, W), two-pass, in dtype ``acc``."""
    count = t.numel() // t.shape[1]
    mean = t.sum((0, 2, 3), dtype=acc).div_(count)
    var = (t - mean.view(_SHAPE)).square_().sum((0, 2, 3)).div_(count)
    return mean, var


def _update_running_stats(bn: nn.BatchNorm2d, mean: Tensor, var: Tensor, count: int) -> None:
    """What a training-mode ``nn.BatchNorm2d`` forward does to its buffers, with the given batch stats."""
    if not bn.track_running_stats or bn.running_mean is None:
        return
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    unbiased = var * (count / max(count - 1, 1))
    bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
    bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)


def _normalize_relu(t: Tensor, bn: nn.BatchNorm2d, mean: Tensor, var: Tensor, dtype: torch.dtype,
                    out: Optional[Tensor] = None) -> Tensor:
    """``relu(bn(t))`` with the batch statistics ``mean, var``, as a contiguous tensor of ``dtype``.

    Runs the eval-mode BatchNorm kernel (one pass, and on CPU several times faster than the training-mode
    kernel, which also computes the statistics); a channel slice of the shared buffer (levels 3-5) in
    float32/64 is normalised by ``addcmul`` instead, which reads the slice in place.  ``out``: a reused
    contiguous workspace of ``t``'s shape and ``dtype`` for the result (else a new tensor).
    """
    if out is None:
        out = torch.empty(t.shape, dtype=dtype, device=t.device)
    if t.is_contiguous() or dtype in (torch.float16, torch.bfloat16):
        empty = mean.new_empty(0)
        torch.ops.aten.native_batch_norm.out(t.to(dtype).contiguous(), bn.weight, bn.bias, mean, var, False, 0.0,
                                             bn.eps, out=out, save_mean=empty, save_invstd=empty.clone())
    else:
        scale = bn.weight * torch.rsqrt(var + bn.eps)
        shift = bn.bias - mean * scale
        torch.addcmul(shift.view(_SHAPE), t, scale.view(_SHAPE), out=out)
    return out.relu_()


def _block_params(layers: Sequence[Sequence[Stage]]) -> List[Tensor]:
    return [p for stages in layers for bn, conv in stages for p in (bn.weight, bn.bias, conv.weight)]


_CHUNK_BYTES = 4 * 2 ** 20  # batch chunks of about this size stay in the CPU's caches between kernels


def _batch_chunks(x: Tensor, conv: nn.Conv2d) -> List[slice]:
    """Batch slices for running BN-ReLU-``conv`` on ``x`` chunk by chunk (the whole batch when ``conv``
    is not a matrix product, which takes no output buffer)."""
    n = x.shape[0]
    step = n
    if uses_matmul(x, conv) and n > 0:
        step = max(1, min(n, _CHUNK_BYTES // max(1, x[0].numel() * x.element_size())))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)] or [slice(0, 0)]


class _Workspace:
    """A flat scratch buffer for temporaries that are dead before the next one is needed.

    Fresh tensors of tens of MB are mapped and page-faulted anew on every allocation (glibc serves
    them with mmap), which costs as much as the arithmetic here; one buffer, grown on demand, is not.
    """

    def __init__(self) -> None:
        self.buf: Optional[Tensor] = None

    def take(self, shape: Sequence[int], like: Tensor, dtype: torch.dtype) -> Tensor:
        numel = math.prod(shape)
        if self.buf is None or self.buf.numel() < numel or self.buf.dtype != dtype:
            self.buf = like.new_empty(numel, dtype=dtype)
        return self.buf[:numel].view(shape)


def _bn_relu_conv(x: Tensor, bn: nn.BatchNorm2d, conv: nn.Conv2d, mean: Tensor, var: Tensor, dtype: torch.dtype,
                  keep_y: bool, scratch: Optional[_Workspace]) -> Tuple[Tensor, Optional[Tensor]]:
    """``conv(relu(bn(x)))`` with the given statistics, batch chunk by chunk; returns ``(output, y)``.

    ``y`` is the whole BN-ReLU output when ``keep_y`` (in ``scratch`` when given, else a new tensor);
    otherwise its chunks live in ``scratch`` (or in new tensors) and ``y`` is None.
    """
    w = conv.weight.to(dtype)
    y_full = None
    if keep_y:
        y_full = scratch.take(x.shape, x, dtype) if scratch is not None else torch.empty(x.shape, dtype=dtype, device=x.device)
    chunks = _batch_chunks(x, conv)
    out = None
    for sl in chunks:
        xc = x[sl]
        y_out = y_full[sl] if keep_y else (scratch.take(xc.shape, xc, dtype) if scratch is not None else None)
        yc = _normalize_relu(xc, bn, mean, var, dtype, y_out)
        if len(chunks) == 1:
            return conv_forward(yc, conv, w), y_full
        if out is None:
            out = x.new_empty((x.shape[0], conv.out_channels, *x.shape[2:]), dtype=dtype)
        conv_forward(yc, conv, w, out=out[sl])
    return out, y_full


class _Forward:
    """One forward pass over a block; records what the backward pass of the level needs."""

    def __init__(self, x0: Tensor, layers: Sequence[Sequence[Stage]], growth: int, training: bool, level: int,
                 dtype: torch.dtype, record: bool) -> None:
        n, c0, h, w = x0.shape
        self.c0, self.growth, self.count = c0, growth, n * h * w
        self.concat = level in (1, 2)
        keep_all = record and level != 4
        scratch = _Workspace()  # BN-ReLU outputs that are not kept
        acc = _stats_dtype(dtype)
        total = c0 + growth * len(layers)
        x0c = x0.to(dtype).contiguous()
        if self.concat:
            self.features = [x0c]
            self.buf = None
        else:
            self.buf = x0.new_empty((n, total, h, w), dtype=dtype)
            self.buf[:, :c0].copy_(x0c)
        if training:
            means, var = x0.new_empty(total, dtype=acc), x0.new_empty(total, dtype=acc)
            means[:c0], var[:c0] = _channel_stats(x0c, acc)
        self.inputs: List[Tensor] = []          # level 1/2: each layer's concatenated input
        self.kept: List[List[tuple]] = []       # per layer and stage: (stage input, BN-ReLU output, mean, var)
        for i, stages in enumerate(layers):
            c = c0 + i * growth
            x = self.layer_input(i)
            if self.concat and record:
                self.inputs.append(x)
            t, row = x, []
            for s, (bn, conv) in enumerate(stages):
                if training:
                    m, v = (means[:c], var[:c]) if s == 0 else _channel_stats(t, acc)
                    _update_running_stats(bn, m, v, self.count)
                else:
                    m, v = bn.running_mean, bn.running_var
                out, y = _bn_relu_conv(t, bn, conv, m, v, dtype, keep_all, None if keep_all or s > 0 else scratch)
                row.append((t if keep_all and s > 0 else None, y, m, v))
                t = out
            if training and i + 1 < len(layers):
                means[c:c + growth], var[c:c + growth] = _channel_stats(t, acc)
            if self.concat:
                self.features.append(t)
            else:
                self.buf[:, c:c + growth].copy_(t)
            self.kept.append(row)
        self.output = torch.cat(self.features, 1) if self.concat else self.buf

    def layer_input(self, i: int) -> Tensor:
        """Concatenation of the block input and the features of layers before ``i``."""
        if self.concat:
            return self.features[0] if i == 0 else torch.cat(self.features[:i + 1], 1)
        return self.buf[:, :self.c0 + i * self.growth]


class _DenseBlockFunction(torch.autograd.Function):
    """One dense block (see the module docstring); backward with a shared gradient buffer."""

    @staticmethod
    def forward(ctx, x0: Tensor, layers, growth: int, training: bool, level: int, *params: Tensor) -> Tensor:
        dtype = _compute_dtype(x0)
        with _no_autocast(x0), torch.no_grad():
            run = _Forward(x0, layers, growth, training, level, dtype, record=True)
        ctx.layers, ctx.growth, ctx.training, ctx.level = layers, growth, training, level
        ctx.c0, ctx.x0_dtype, ctx.count = x0.shape[1], x0.dtype, run.count
        ctx.param_dtypes = [p.dtype for p in params]
        # Saved tensors: features (the buffer, or the block input and every layer's new channels), the
        # concatenated inputs (levels 1/2), then per layer and stage what _Forward kept.
        flat: List[Tensor] = list(run.features) if run.concat else [run.buf]
        flat += run.inputs
        ctx.layout = []
        for row in run.kept:
            idx_row = []
            for entry in row:
                idx = []
                for item in entry:
                    idx.append(None if item is None else len(flat))
                    if item is not None:
                        flat.append(item)
                idx_row.append(idx)
            ctx.layout.append(idx_row)
        ctx.save_for_backward(*flat)
        return run.output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        with _no_autocast(grad_out):
            return _backward(ctx, grad_out)


def _input_stage_backward(g: Tensor, x: Tensor, y: Optional[Tensor], bn: nn.BatchNorm2d, conv: nn.Conv2d,
                          mean: Tensor, var: Tensor, invstd: Tensor, training: bool, dtype: torch.dtype,
                          gbuf: Tensor, y_scratch: _Workspace,
                          g_scratch: _Workspace) -> Tuple[Tensor, Tensor, Tensor]:
    """Backward of BN-ReLU-conv on a layer's input ``x`` (the first stage), batch chunk by chunk.

    Adds the ``a * g`` part of the input gradient (``a = weight * invstd``) to ``gbuf`` (the gradient
    buffer's first ``c`` channels) and returns the gradients of the conv weight, BN weight and BN bias.
    ``y``: the kept BN-ReLU output, or None to recompute it (level 4) into ``y_scratch``.
    """
    w = conv.weight.to(dtype)
    a_d = (bn.weight * invstd).view(_SHAPE).to(dtype)
    gw = gbw = gbb = None
    for sl in _batch_chunks(x, conv):
        xc = x[sl]
        yc = y[sl] if y is not None else _normalize_relu(xc, bn, mean, var, dtype, y_scratch.take(xc.shape, xc, dtype))
        gx, gw_c = conv_backward(g[sl], yc, conv, True, w, out=g_scratch.take(xc.shape, xc, dtype))
        gx = torch.ops.aten.threshold_backward.grad_input(gx, yc, 0, grad_input=gx)  # ReLU, in place
        _, gbw_c, gbb_c = torch.ops.aten.native_batch_norm_backward(
            gx, xc, bn.weight, bn.running_mean, bn.running_var, mean, invstd, training, bn.eps, [False, True, True])
        gbuf[sl].addcmul_(gx, a_d)
        if gw is None:
            gw, gbw, gbb = gw_c.to(mean.dtype, copy=True), gbw_c, gbb_c
        else:
            gw.add_(gw_c)
            gbw, gbb = gbw + gbw_c, gbb + gbb_c
    return gw, gbw, gbb


def _backward(ctx, grad_out: Tensor):
    flat = ctx.saved_tensors
    layers, growth, training, c0 = ctx.layers, ctx.growth, ctx.training, ctx.c0
    n_layers = len(layers)
    if ctx.level in (1, 2):
        features, inputs = flat[:n_layers + 1], flat[n_layers + 1:2 * n_layers + 1]
        feature = lambda i: features[i + 1]
        layer_input = lambda i: inputs[i]
        x0 = features[0]
    else:
        buf = flat[0]
        feature = lambda i: buf[:, c0 + i * growth:c0 + (i + 1) * growth]
        layer_input = lambda i: buf[:, :c0 + i * growth]
        x0 = buf[:, :c0]
    dtype = x0.dtype
    acc = _stats_dtype(dtype)
    total = c0 + growth * n_layers
    gbuf = grad_out.to(dtype, memory_format=torch.contiguous_format, copy=True)  # the shared gradient buffer
    if training:  # per channel: the deferred ``coef * x + d`` parts of the BN input gradients
        coef_acc, d_acc = gbuf.new_zeros(total, dtype=acc), gbuf.new_zeros(total, dtype=acc)
    y_scratch, g_scratch = _Workspace(), _Workspace()
    grads: List[Tensor] = []
    for i in range(n_layers - 1, -1, -1):
        stages, row = layers[i], ctx.layout[i]
        c = c0 + i * growth
        g = gbuf[:, c:c + growth]
        if training:  # the gradient of this layer's feature is complete now
            g = torch.addcmul(d_acc[c:c + growth].view(_SHAPE), feature(i), coef_acc[c:c + growth].view(_SHAPE)).add_(g)
            g = g.to(dtype)
        else:
            g = g.contiguous()
        x = layer_input(i)
        ts, y0 = _stage_inputs(x, stages, row, flat, dtype, y_scratch)
        layer_grads: List[Tensor] = []
        for s in range(len(stages) - 1, -1, -1):
            bn, conv = stages[s]
            _, y_i, m_i, v_i = row[s]
            mean, var = flat[m_i], flat[v_i]
            invstd = torch.rsqrt(var + bn.eps)
            y = flat[y_i] if y_i is not None else (y0 if s == 0 else None)
            if s == 0:
                gw, gbw, gbb = _input_stage_backward(g, x, y, bn, conv, mean, var, invstd, training, dtype,
                                                     gbuf[:, :c], y_scratch, g_scratch)
                if training:
                    a = bn.weight * invstd
                    coef = a * invstd * gbw / -ctx.count
                    coef_acc[:c] += coef
                    d_acc[:c] -= a * gbb / ctx.count + coef * mean
            else:
                t = ts[s]
                if y is None:
                    y = _normalize_relu(t, bn, mean, var, dtype)
                gy, gw = conv_backward(g, y, conv, True, conv.weight.to(dtype))
                gy = torch.ops.aten.threshold_backward.grad_input(gy, y, 0, grad_input=gy)  # ReLU, in place
                del y
                g, gbw, gbb = torch.ops.aten.native_batch_norm_backward(
                    gy, t, bn.weight, bn.running_mean, bn.running_var, mean, invstd, training, bn.eps,
                    [True, True, True])
                ts[s] = None
            layer_grads = [gbw, gbb, gw] + layer_grads
        grads = layer_grads + grads
    gx0 = gbuf[:, :c0]
    if training:
        gx0 = torch.addcmul(d_acc[:c0].view(_SHAPE), x0, coef_acc[:c0].view(_SHAPE)).add_(gx0)
    grads = [gr.to(dt) for gr, dt in zip(grads, ctx.param_dtypes)]
    return (gx0.to(ctx.x0_dtype), None, None, None, None, *grads)


def _stage_inputs(x: Tensor, stages: Sequence[Stage], row: list, flat: Sequence[Tensor], dtype: torch.dtype,
                  scratch: _Workspace) -> Tuple[List[Optional[Tensor]], Optional[Tensor]]:
    """Each stage's input for one layer's backward pass, and the recomputed stage-0 BN-ReLU output.

    Kept inputs come from ``flat``; the others (level 4) are recomputed from the layer input ``x`` with
    the saved statistics.  The stage-0 BN-ReLU output computed on the way is returned (it lives in
    ``scratch``, reused by every layer) so that the stage-0 backward needs no second recomputation;
    None when nothing was recomputed.
    """
    ts: List[Optional[Tensor]] = [x]
    y0 = None
    for s in range(len(stages) - 1):
        t_i = row[s + 1][0]
        if t_i is not None:
            ts.append(flat[t_i])
        else:
            bn, conv = stages[s]
            _, _, m_i, v_i = row[s]
            t, y = _bn_relu_conv(ts[s], bn, conv, flat[m_i], flat[v_i], dtype, s == 0, scratch if s == 0 else None)
            ts.append(t)
            y0 = y if s == 0 else y0
    return ts, y0


def dense_block(x0: Tensor, layers: Sequence[Sequence[Stage]], growth: int, training: bool, level: int) -> Tensor:
    """Run a dense block (layers given by their BN-ReLU-Conv stages) at memory level 1-5.

    Returns the concatenation of the input and every layer's new features, ``(N, C0 + L*k, H, W)``.
    """
    level = 3 if level >= 5 else level
    params = _block_params(layers)
    if torch.is_grad_enabled() and (x0.requires_grad or any(p.requires_grad for p in params)):
        return _DenseBlockFunction.apply(x0, layers, growth, training, level, *params)
    dtype = _compute_dtype(x0)
    with _no_autocast(x0), torch.no_grad():
        return _Forward(x0, layers, growth, training, level, dtype, record=False).output
