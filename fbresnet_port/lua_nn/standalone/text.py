"""Lua Torch's text and similarity layers in plain PyTorch (ports of torch/nn's LookupTable, Temporal*, Add,
Mul, CMul, MM, MV, Bilinear, Replicate, MixtureTable, Cosine, Euclidean, CosineDistance, DotProduct,
PairwiseDistance, Index and MaskedSelect, and of their THNN kernels).

Index inputs stay 1-based, as Lua had them; Lua tables are Python lists. Where Lua's hand-written backward is
not the exact derivative of its forward (Euclidean, PairwiseDistance), an autograd Function reproduces it.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class TextInputError(ValueError):
    """An input that a layer ported from Lua refuses (its shape, an index out of range), as Lua's error."""

    def __init__(self, message: str, what: str = ""):
        super().__init__(message)
        self.what = what or message


def input_error(module: nn.Module, what: str) -> Exception:
    """The error for an input that ``module`` refuses: the module's own ``input_error(what)`` if it has one."""
    make = getattr(module, "input_error", None)
    return make(what) if callable(make) else TextInputError(f"{type(module).__name__}: {what}", what)


def one_based_index(module: nn.Module, index: torch.Tensor, size: int, what: str) -> torch.Tensor:
    """Lua's 1-based ``index`` (any number type, truncated as Lua's copy to a LongTensor) as 0-based int64,
    checked against ``1..size``."""
    index = index.long()
    if index.numel() and (int(index.min()) < 1 or int(index.max()) > size):
        bad = int(index.min()) if int(index.min()) < 1 else int(index.max())
        raise input_error(module, f"{what} {bad} is outside 1..{size} (Lua indices are 1-based)")
    return index - 1


def table_pair(module: nn.Module, input: Any) -> tuple[Any, Any]:
    """The two elements of a Lua table input ``{a, b}`` (a list)."""
    if not isinstance(input, (list, tuple)) or len(input) != 2:
        raise input_error(module, "input must be a table (list) of two tensors")
    return input[0], input[1]


def _sizes(size: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    return (size,) if isinstance(size, int) else tuple(size)


# ----------------------------------------------------------------------------------------------
# LookupTable and the temporal layers
# ----------------------------------------------------------------------------------------------

class LookupTable(nn.Module):
    """Lua nn.LookupTable: rows of ``weight`` (nIndex x nOutput) picked by a 1-D (n) or 2-D (batch x n) tensor of
    1-based indices. ``padding_value``: that index still reads its row but the row gets no gradient; ``max_norm``
    / ``norm_type``: the rows read are first renormalised in place (THNN's LookupTable_renorm);
    ``scale_grad_by_freq``: gradients divided by the index's count in the batch."""

    def __init__(self, n_index: int, n_output: int, padding_value: int = 0, max_norm: float | None = None,
                 norm_type: float | None = None, scale_grad_by_freq: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_index, n_output))
        self.padding_value = padding_value
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() not in (1, 2):
            raise input_error(self, f"input must be a vector or matrix of indices, got {tuple(input.shape)}")
        n = self.weight.shape[0]
        index = one_based_index(self, input, n, "index")
        pad = int(self.padding_value) - 1
        return F.embedding(index, self.weight, padding_idx=pad if 0 <= pad < n else None,
                           max_norm=None if self.max_norm is None else float(self.max_norm),
                           norm_type=float(self.norm_type or 2), scale_grad_by_freq=bool(self.scale_grad_by_freq))


def check_temporal_input(module: nn.Module, input: torch.Tensor, frame_size: int | None, kW: int) -> None:
    """A (time x features) or (batch x time x features) input with at least ``kW`` frames."""
    if input.dim() not in (2, 3):
        raise input_error(module, f"expected a 2-D (time x features) or 3-D (batch) input, got {tuple(input.shape)}")
    if frame_size is not None and input.shape[-1] != frame_size:
        raise input_error(module, f"input frame size is {input.shape[-1]}, expected {frame_size}")
    if input.shape[-2] < kW:
        raise input_error(module, f"input sequence ({input.shape[-2]} frames) is shorter than the kernel ({kW})")


def temporal_windows(module: nn.Module, input: torch.Tensor, frame_size: int | None, kW: int,
                     dW: int) -> torch.Tensor:
    """The windows of kW frames every dW frames: (..., nOutputFrame, kW, features)."""
    check_temporal_input(module, input, frame_size, kW)
    return input.unfold(-2, kW, dW).transpose(-1, -2)


class TemporalConvolution(nn.Module):
    """Lua nn.TemporalConvolution: output frame t = bias + weight @ (frames t*dW .. t*dW+kW-1 concatenated);
    weight is outputFrameSize x (kW * inputFrameSize)."""

    def __init__(self, n_in: int, n_out: int, kW: int, dW: int = 1):
        super().__init__()
        self.n_in, self.n_out, self.kW, self.dW = n_in, n_out, kW, dW
        self.weight = nn.Parameter(torch.empty(n_out, kW * n_in))
        self.bias = nn.Parameter(torch.empty(n_out))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        windows = temporal_windows(self, input, self.n_in, self.kW, self.dW)
        return F.linear(windows.flatten(-2), self.weight, self.bias)


class TemporalSubSampling(nn.Module):
    """Lua nn.TemporalSubSampling: per feature, weight * (sum of kW frames) + bias."""

    def __init__(self, n_in: int, kW: int, dW: int = 1):
        super().__init__()
        self.n_in, self.kW, self.dW = n_in, kW, dW
        self.weight = nn.Parameter(torch.empty(n_in))
        self.bias = nn.Parameter(torch.empty(n_in))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return temporal_windows(self, input, self.n_in, self.kW, self.dW).sum(-2) * self.weight + self.bias


class TemporalMaxPooling(nn.Module):
    """Lua nn.TemporalMaxPooling(kW, dW = kW): max over each window of frames, per feature."""

    def __init__(self, kW: int, dW: int | None = None):
        super().__init__()
        self.kW, self.dW = kW, dW

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        kW = int(self.kW)
        check_temporal_input(self, input, None, kW)
        # max_pool1d: the gradient goes to the first maximum of a window, as in THNN
        return F.max_pool1d(input.transpose(-1, -2), kW, int(self.dW or kW)).transpose(-1, -2)


# ----------------------------------------------------------------------------------------------
# Add, Mul, CMul
# ----------------------------------------------------------------------------------------------

class Add(nn.Module):
    """Lua nn.Add: adds ``bias`` (its first value when ``scalar``; else per element of a sample, the input being
    one sample of the bias's size or a batch of them)."""

    def __init__(self, size: int | tuple[int, ...], scalar: bool = False):
        super().__init__()
        self.bias = nn.Parameter(torch.empty(_sizes(size)))
        self.scalar = scalar

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        b = self.bias
        if self.scalar:
            return input + b[0]
        if input.shape == b.shape:
            return input + b
        n = input.shape[0]
        return (input.reshape(n, -1) + b.reshape(1, -1)).reshape(input.shape)


class Mul(nn.Module):
    """Lua nn.Mul: the input times the single learnt number ``weight[1]``."""

    def __init__(self, size: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input * self.weight[0]


class CMul(nn.Module):
    """Lua nn.CMul: element-wise product with ``weight``: element by element when the sizes match in number,
    expanded when it has the input's dimensions, else per sample of a batch."""

    def __init__(self, size: int | tuple[int, ...]):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(_sizes(size)))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if input.numel() == w.numel():
            return input * w.reshape(input.shape)
        if w.dim() == input.dim():
            return input * w.expand_as(input)
        n = input.shape[0]
        return (input.reshape(n, -1) * w.reshape(1, -1)).reshape(input.shape)


# ----------------------------------------------------------------------------------------------
# Matrix products, Bilinear, Replicate, MixtureTable
# ----------------------------------------------------------------------------------------------

class MM(nn.Module):
    """Lua nn.MM(transA, transB): {A, B} -> A @ B for 2-D matrices or batches (3-D) of them."""

    def __init__(self, transA: bool = False, transB: bool = False):
        super().__init__()
        self.transA, self.transB = transA, transB

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        a, b = table_pair(self, input)
        if a.dim() not in (2, 3) or b.dim() != a.dim():
            raise input_error(self, f"expected two 2-D or two 3-D tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
        if self.transA:
            a = a.transpose(-1, -2)
        if self.transB:
            b = b.transpose(-1, -2)
        return a.mm(b) if a.dim() == 2 else a.bmm(b)


class MV(nn.Module):
    """Lua nn.MV(trans): {M, v} -> M @ v (2-D M, 1-D v) or batched (3-D M, 2-D v)."""

    def __init__(self, trans: bool = False):
        super().__init__()
        self.trans = trans

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        m, v = table_pair(self, input)
        if (m.dim(), v.dim()) not in ((2, 1), (3, 2)):
            raise input_error(self, f"expected (2-D, 1-D) or batched (3-D, 2-D) tensors, got {tuple(m.shape)} and "
                                    f"{tuple(v.shape)}")
        if self.trans:
            m = m.transpose(-1, -2)
        return m.mv(v) if m.dim() == 2 else m.bmm(v.unsqueeze(2)).squeeze(2)


class Bilinear(nn.Module):
    """Lua nn.Bilinear: {x1, x2} (batch x in1, batch x in2) -> x1 W[k] x2 + b[k] for each output k (torch's
    F.bilinear on a table input)."""

    def __init__(self, in1: int, in2: int, out: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out, in1, in2))
        self.bias = nn.Parameter(torch.empty(out)) if bias else None

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        x1, x2 = table_pair(self, input)
        if x1.dim() != 2 or x2.dim() != 2:
            raise input_error(self, f"inputs should be 2-D (batch x features), got {tuple(x1.shape)} and "
                                    f"{tuple(x2.shape)}")
        return F.bilinear(x1, x2, self.weight, self.bias)


class Replicate(nn.Module):
    """Lua nn.Replicate(nfeatures, dim, ndim): a new dimension of size ``nfeatures`` at ``dim`` (one further for
    an input with more than ``ndim`` dimensions), by expansion."""

    def __init__(self, nfeatures: int, dim: int = 1, ndim: int | None = None):
        super().__init__()
        self.nfeatures, self.dim, self.ndim = nfeatures, dim, ndim

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        rdim = int(self.dim) + (1 if self.ndim is not None and input.dim() > int(self.ndim) else 0)
        if not 1 <= rdim <= input.dim() + 1:
            raise input_error(self, f"cannot replicate along dimension {rdim} of a {input.dim()}-D input")
        out = input.unsqueeze(rdim - 1)
        shape = list(out.shape)
        shape[rdim - 1] = int(self.nfeatures)
        return out.expand(shape)


class MixtureTable(nn.Module):
    """Lua nn.MixtureTable(dim): {gater, experts} -> sum_i gater[:, i] * expert_i; experts a list of tensors or one
    tensor with the experts along ``dim`` (default 2, or 1 for a 1-D gater, fixed at the first call as in Lua).
    ``table``: the experts came as a table once, and must from then on."""

    def __init__(self, dim: int | None = None, table: bool | None = None):
        super().__init__()
        self.dim, self.table = dim, table

    def forward(self, input: list[Any]) -> torch.Tensor:
        if not isinstance(input, (list, tuple)) or len(input) != 2 or not isinstance(input[0], torch.Tensor):
            raise input_error(self, "input must be a table (list) {gater, experts}")
        gater, experts = input
        as_table = isinstance(experts, (list, tuple))
        if self.table and not as_table:
            raise input_error(self, "this module took its experts as a table (its field 'table' is true); "
                                    "Lua refuses a tensor of experts then")
        if as_table:
            self.table = True
        batched = gater.dim() >= 2
        if self.dim is None:
            self.dim = 2 if batched else 1
        dim = int(self.dim) - 1
        n = gater.shape[1 if batched else 0]
        first = experts[0] if as_table else experts
        size = [1] * (first.dim() + (1 if as_table else 0))
        if batched:
            size[0] = gater.shape[0]
        size[dim] = n
        gates = gater.reshape(size)
        if not as_table:
            return (gates.expand_as(experts) * experts).sum(dim)
        if len(experts) != n:
            raise input_error(self, f"the gater has {n} outputs for {len(experts)} experts (should be one per expert)")
        out = experts[0] * gates.select(dim, 0).expand_as(experts[0])
        for i in range(1, n):
            out = out + experts[i] * gates.select(dim, i).expand_as(experts[i])
        return out


# ----------------------------------------------------------------------------------------------
# Similarity and distance layers
# ----------------------------------------------------------------------------------------------

def as_rows(x: torch.Tensor) -> torch.Tensor:
    """A 1-D vector as one row (Lua's ``view(1, -1)``)."""
    return x.reshape(1, -1) if x.dim() == 1 else x


class Cosine(nn.Module):
    """Lua nn.Cosine(inputSize, outputSize): cosine of the input with each row of ``weight`` (outputSize x
    inputSize); both norms get + 1e-12."""

    def __init__(self, input_size: int, output_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(output_size, input_size))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() not in (1, 2):
            raise input_error(self, f"input must be a vector or matrix, got {tuple(input.shape)}")
        w_norm = self.weight.norm(2, 1) + 1e-12
        x = as_rows(input)
        out = x.matmul(self.weight.t()) / w_norm / (x.norm(2, 1, keepdim=True) + 1e-12)
        return out.reshape(-1) if input.dim() == 1 else out


class EuclideanFunction(torch.autograd.Function):
    """||x - w_j|| for the columns w_j; backward as Lua's: (x - w_j) * gradOutput_j / (y_j + 1e-7)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        diff = x.unsqueeze(-1) - w
        y = diff.norm(2, -2)
        ctx.save_for_backward(diff, y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        diff, y = ctx.saved_tensors
        scaled = diff * (grad / (y + 1e-7)).unsqueeze(-2)
        grad_w = scaled if scaled.dim() == 2 else scaled.sum(0)
        return scaled.sum(-1), -grad_w


class Euclidean(nn.Module):
    """Lua nn.Euclidean(inputSize, outputSize): distances of the input to the columns of ``weight`` (inputSize x
    outputSize)."""

    def __init__(self, input_size: int, output_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(input_size, output_size))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() not in (1, 2):
            raise input_error(self, f"input must be 1-D or 2-D, got {tuple(input.shape)}")
        return EuclideanFunction.apply(input, self.weight)


class CosineDistance(nn.Module):
    """Lua nn.CosineDistance: {x1, x2} -> cosine similarity per row (squared norms + 1e-12); a pair of vectors
    gives a 1-element output."""

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        x1, x2 = (as_rows(x) for x in table_pair(self, input))
        w = ((x1 * x1).sum(1) + 1e-12).reciprocal() * ((x2 * x2).sum(1) + 1e-12).reciprocal()
        return (x1 * x2).sum(1) * w.sqrt()


class DotProduct(nn.Module):
    """Lua nn.DotProduct: {x1, x2} -> dot product per row (a pair of vectors gives a 1-element output)."""

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        x1, x2 = (as_rows(x) for x in table_pair(self, input))
        return (x1 * x2).sum(1)


class PairwiseDistanceFunction(torch.autograd.Function):
    """sum(|x1 - x2|^p)^(1/p) per row, with Lua's backward: d = x1 - x2; sign(d) for p = 1 (Lua picks a random
    sign at 0, here 0), else d * |d|^(p-2) (that factor only for p > 2) / (out + 1e-6)^(p-1)."""

    @staticmethod
    def forward(ctx: Any, x1: torch.Tensor, x2: torch.Tensor, p: float) -> torch.Tensor:
        diff = x1 - x2
        out = diff.abs().pow(p).sum(-1).pow(1.0 / p)
        ctx.p = p
        ctx.save_for_backward(diff, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        diff, out = ctx.saved_tensors
        p = ctx.p
        if p == 1:
            g = diff.sign()
        else:
            g = diff * diff.abs().pow(p - 2) if p > 2 else diff
            g = g * (out + 1e-6).pow(-(p - 1)).unsqueeze(-1)
        g = g * grad.unsqueeze(-1)
        return g, -g, None


class PairwiseDistance(nn.Module):
    """Lua nn.PairwiseDistance(p): {x1, x2} -> p-norm of x1 - x2 per row (vectors give a 1-element output)."""

    def __init__(self, norm: float = 2):
        super().__init__()
        self.norm = norm

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        x1, x2 = table_pair(self, input)
        if x1.dim() not in (1, 2):
            raise input_error(self, f"input must be vectors or matrices, got {tuple(x1.shape)}")
        out = PairwiseDistanceFunction.apply(x1, x2, float(self.norm))
        return out.reshape(1) if x1.dim() == 1 else out


# ----------------------------------------------------------------------------------------------
# Selection
# ----------------------------------------------------------------------------------------------

class Index(nn.Module):
    """Lua nn.Index(dimension): {t, index} -> t:index(dimension, index) with a 1-based LongTensor index."""

    def __init__(self, dimension: int):
        super().__init__()
        self.dimension = dimension

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        t, index = table_pair(self, input)
        dim = int(self.dimension) - 1
        if not 0 <= dim < t.dim():
            raise input_error(self, f"dimension {self.dimension} is outside the {t.dim()}-D input")
        return t.index_select(dim, one_based_index(self, index, t.shape[dim], "index").reshape(-1))


class MaskedSelect(nn.Module):
    """Lua nn.MaskedSelect: {t, mask} -> the elements of t where mask is 1, as a 1-D tensor in row-major order
    (the mask may have another shape with as many elements, as in TH)."""

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        t, mask = table_pair(self, input)
        if mask.numel() != t.numel():
            raise input_error(self, f"mask has {mask.numel()} elements, the input {t.numel()}")
        return t.masked_select(mask.reshape(t.shape) != 0)
