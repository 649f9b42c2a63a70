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
  ``shareBNOutput`` + re-forward of ``net1``).  Running statistics are updated in the forward pass only,
  i.e. exactly once per step (Lua restores them after its re-forward).  Memory beyond the buffer is
  constant per layer.

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
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .pointwise import conv_backward, conv_forward

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


class _Forward:
    """One forward pass over a block; records what the backward pass of the level needs."""

    def __init__(self, x0: Tensor, layers: Sequence[Sequence[Stage]], growth: int, training: bool, level: int,
                 dtype: torch.dtype, record: bool) -> None:
        n, c0, h, w = x0.shape
        self.c0, self.growth, self.count = c0, growth, n * h * w
        self.concat = level in (1, 2)
        keep_all = record and level != 4
        # BN-ReLU outputs that are not kept go into one reused workspace (a fresh tensor per layer would
        # be mapped and page-faulted anew each time): the widest stage-0 input is the last layer's.
        total = c0 + growth * len(layers)
        y_workspace = None if keep_all else x0.new_empty(n * max(total - growth, c0) * h * w, dtype=dtype)
        acc = _stats_dtype(dtype)
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
                y = _normalize_relu(t, bn, m, v, dtype, _view(y_workspace, t) if s == 0 else None)
                out = conv_forward(y, conv, conv.weight.to(dtype))
                row.append((t if keep_all and s > 0 else None, y if keep_all else None, m, v))
                del y
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


def _backward(ctx, grad_out: Tensor):
    flat = ctx.saved_tensors
    layers, growth, training, c0 = ctx.layers, ctx.growth, ctx.training, ctx.c0
    n_layers = len(layers)
    concat = ctx.level in (1, 2)
    if concat:
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
    # Reused for the widest per-layer temporary (a stage-0 input gradient): fresh tensors of this size
    # would be mapped and page-faulted anew in every layer.
    workspace = gbuf.new_empty(gbuf[:, :total - growth].numel())
    y_workspace = gbuf.new_empty(workspace.numel()) if ctx.level == 4 else None
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
        ts, ys = _stage_tensors(x, stages, row, flat, dtype, y_workspace)
        layer_grads: List[Tensor] = []
        for s in range(len(stages) - 1, -1, -1):
            bn, conv = stages[s]
            _, _, m_i, v_i = row[s]
            mean, var = flat[m_i], flat[v_i]
            invstd = torch.rsqrt(var + bn.eps)
            t, y = ts[s], ys[s]
            ts[s] = ys[s] = None
            if y is None:
                y = _normalize_relu(t, bn, mean, var, dtype)
            gy, gw = conv_backward(g, y, conv, True, conv.weight.to(dtype), out=_view(workspace, y) if s == 0 else None)
            gy = torch.ops.aten.threshold_backward.grad_input(gy, y, 0, grad_input=gy)  # ReLU, in place
            del y
            if s > 0:
                g, gbw, gbb = torch.ops.aten.native_batch_norm_backward(
                    gy, t, bn.weight, bn.running_mean, bn.running_var, mean, invstd, training, bn.eps,
                    [True, True, True])
            else:
                _, gbw, gbb = torch.ops.aten.native_batch_norm_backward(
                    gy, t, bn.weight, bn.running_mean, bn.running_var, mean, invstd, training, bn.eps,
                    [False, True, True])
                a = bn.weight * invstd
                gbuf[:, :c].addcmul_(gy, a.view(_SHAPE).to(dtype))
                if training:
                    coef = a * invstd * gbw / -ctx.count
                    coef_acc[:c] += coef
                    d_acc[:c] -= a * gbb / ctx.count + coef * mean
            layer_grads = [gbw, gbb, gw] + layer_grads
        grads = layer_grads + grads
    gx0 = gbuf[:, :c0]
    if training:
        gx0 = torch.addcmul(d_acc[:c0].view(_SHAPE), x0, coef_acc[:c0].view(_SHAPE)).add_(gx0)
    grads = [gr.to(dt) for gr, dt in zip(grads, ctx.param_dtypes)]
    return (gx0.to(ctx.x0_dtype), None, None, None, None, *grads)


def _view(workspace: Optional[Tensor], like: Tensor) -> Optional[Tensor]:
    """The first elements of a flat workspace as a contiguous tensor shaped like ``like``."""
    return None if workspace is None else workspace[:like.numel()].view(like.shape)


def _stage_tensors(x: Tensor, stages: Sequence[Stage], row: list, flat: Sequence[Tensor], dtype: torch.dtype,
                   y_workspace: Optional[Tensor] = None) -> Tuple[List[Optional[Tensor]], List[Optional[Tensor]]]:
    """Each stage's input and BN-ReLU output for one layer's backward pass.

    What the forward pass did not keep (level 4) is recomputed from the layer input and the saved
    statistics: the stage-0 BN-ReLU output into ``y_workspace`` (reused by every layer), the later
    stage inputs by re-running the convolutions.  A later stage's BN-ReLU output that was not kept is
    None: the caller recomputes it when its stage comes.
    """
    ts: List[Optional[Tensor]] = [x]
    ys: List[Optional[Tensor]] = []
    for s, (bn, conv) in enumerate(stages):
        _, y_i, m_i, v_i = row[s]
        y = flat[y_i] if y_i is not None else None
        if y is None and s == 0:
            y = _normalize_relu(x, bn, flat[m_i], flat[v_i], dtype, _view(y_workspace, x))
        ys.append(y)
        if s + 1 == len(stages):
            break
        t_i = row[s + 1][0]
        if t_i is not None:
            ts.append(flat[t_i])
        else:
            yr = y if y is not None else _normalize_relu(ts[s], bn, flat[m_i], flat[v_i], dtype)
            ts.append(conv_forward(yr, conv, conv.weight.to(dtype)))
            del yr
    return ts, ys


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
