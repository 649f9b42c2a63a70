"""Lua ``nn`` modules of text and similarity models: LookupTable, the Temporal (1-D) layers, the
parametrised element-wise layers (Add, Mul, CMul), matrix products (MM, MV, Bilinear), Replicate,
MixtureTable, the similarity / distance layers (Cosine, Euclidean, CosineDistance, PairwiseDistance,
DotProduct) and the selection layers (Index, MaskedSelect).

Ports of the torch/nn Lua classes of the same names (and their THNN kernels). Index inputs stay
1-based, as Lua had them; tables are Python lists. Where Lua's hand-written backward is not the exact
derivative of its forward (PairwiseDistance, Euclidean: the small constants added against division
by zero, PairwiseDistance's missing factor for 1 < p < 2), a custom autograd function reproduces it.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import t7
from ..errors import UserError
from ._base import ChildConverter, Fields, LuaModule, empty_tensor, export_weights, float_param, long_storage
from .simple import REQUIRED, SimpleLuaModule


class LuaInputError(UserError, ValueError):
    """An input that the converted Lua module cannot take (shape, index range), as Lua would refuse it."""


def lua_param(t: torch.Tensor | None) -> nn.Parameter | None:
    """A Lua weight/bias as a trainable parameter (float64 kept, other types float32)."""
    return None if t is None else nn.Parameter(float_param(t))


def _bad_input(module: LuaModule, what: str) -> LuaInputError:
    return LuaInputError(f"{module.lua_typename}: {what}")


def _one_based(module: LuaModule, index: torch.Tensor, size: int, what: str) -> torch.Tensor:
    """Lua's 1-based ``index`` (any number type, truncated as Lua's copy to a LongTensor) as 0-based
    int64, checked against ``1..size``."""
    index = index.long()
    if index.numel() and (int(index.min()) < 1 or int(index.max()) > size):
        bad = int(index.min()) if int(index.min()) < 1 else int(index.max())
        raise _bad_input(module, f"{what} {bad} is outside 1..{size} (Lua indices are 1-based)")
    return index - 1


class _ParamModule(LuaModule, nn.Module):
    """A module with Lua parameters ``weight`` and/or ``bias`` (parameters() lists weight first)."""

    def __init__(self, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, **attrs: Any):
        super().__init__()
        self.weight = lua_param(weight)
        self.bias = lua_param(bias)
        for k, v in attrs.items():
            setattr(self, k, v)

    def lua_fields(self) -> dict[str, Any]:
        return export_weights(weight=self.weight, bias=self.bias)


# ----------------------------------------------------------------------------------------------
# LookupTable and the temporal layers
# ----------------------------------------------------------------------------------------------

class LuaLookupTable(_ParamModule):
    """nn.LookupTable: rows of ``weight`` (nIndex x nOutput) picked by a 1-D (n) or 2-D (batch x n)
    tensor of 1-based indices. ``paddingValue``: that index still reads its row but its row gets no
    gradient; ``maxNorm``/``normType``: the rows read are first renormalised in place (THNN's
    LookupTable_renorm); ``shouldScaleGradByFreq``: gradients divided by the index's count in the batch."""

    lua_types = ("nn.LookupTable",)
    lua_version = 4

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight = f.tensor("weight")
        if weight.dim() != 2:
            raise f.error(f"weight should be 2-D, got {tuple(weight.shape)}")
        return cls(weight, padding_value=f.int("paddingValue", 0), max_norm=f.num("maxNorm", None),
                   norm_type=f.num("normType", None), scale_grad_by_freq=f.flag("shouldScaleGradByFreq", False))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() not in (1, 2):
            raise _bad_input(self, f"input must be a vector or matrix of indices, got {tuple(input.shape)}")
        n = self.weight.shape[0]
        index = _one_based(self, input, n, "index")
        pad = int(self.padding_value) - 1
        return F.embedding(index, self.weight, padding_idx=pad if 0 <= pad < n else None,
                           max_norm=None if self.max_norm is None else float(self.max_norm),
                           norm_type=float(self.norm_type or 2), scale_grad_by_freq=bool(self.scale_grad_by_freq))

    def lua_fields(self) -> dict[str, Any]:
        fields = dict(super().lua_fields(), paddingValue=self.padding_value,
                      shouldScaleGradByFreq=bool(self.scale_grad_by_freq), _count=empty_tensor(torch.int32),
                      _input=empty_tensor(torch.int64))
        if self.max_norm is not None:
            fields["maxNorm"] = self.max_norm
        if self.norm_type is not None:
            fields["normType"] = self.norm_type
        return fields


def _check_frames(module: LuaModule, input: torch.Tensor, frame_size: int | None, kW: int) -> None:
    """A (time x features) or (batch x time x features) input with at least ``kW`` frames."""
    if input.dim() not in (2, 3):
        raise _bad_input(module, f"expected a 2-D (time x features) or 3-D (batch) input, got {tuple(input.shape)}")
    if frame_size is not None and input.shape[-1] != frame_size:
        raise _bad_input(module, f"input frame size is {input.shape[-1]}, expected {frame_size}")
    if input.shape[-2] < kW:
        raise _bad_input(module, f"input sequence ({input.shape[-2]} frames) is shorter than the kernel ({kW})")


def _frames(module: LuaModule, input: torch.Tensor, frame_size: int | None, kW: int, dW: int) -> torch.Tensor:
    """The windows of kW frames every dW frames: (..., nOutputFrame, kW, features)."""
    _check_frames(module, input, frame_size, kW)
    return input.unfold(-2, kW, dW).transpose(-1, -2)


class LuaTemporalConvolution(_ParamModule):
    """nn.TemporalConvolution: output frame t = bias + weight @ (frames t*dW .. t*dW+kW-1 concatenated);
    weight is outputFrameSize x (kW * inputFrameSize)."""

    lua_types = ("nn.TemporalConvolution",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        n_in, n_out, kW = f.int("inputFrameSize"), f.int("outputFrameSize"), f.int("kW")
        weight = f.tensor("weight")
        if weight.numel() != n_out * kW * n_in:
            raise f.error(f"weight has {tuple(weight.shape)} elements, expected {n_out} x {kW * n_in}")
        return cls(weight.reshape(n_out, kW * n_in), f.tensor("bias", required=False), n_in=n_in, n_out=n_out,
                   kW=kW, dW=f.int("dW", 1))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        windows = _frames(self, input, self.n_in, self.kW, self.dW)
        return F.linear(windows.flatten(-2), self.weight, self.bias)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), inputFrameSize=self.n_in, outputFrameSize=self.n_out, kW=self.kW,
                    dW=self.dW)


class LuaTemporalSubSampling(_ParamModule):
    """nn.TemporalSubSampling: per feature, weight * (sum of kW frames) + bias."""

    lua_types = ("nn.TemporalSubSampling",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight = f.tensor("weight")
        return cls(weight, f.tensor("bias"), n_in=f.int("inputFrameSize", weight.numel()), kW=f.int("kW"),
                   dW=f.int("dW", 1))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _frames(self, input, self.n_in, self.kW, self.dW).sum(-2) * self.weight + self.bias

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), inputFrameSize=self.n_in, kW=self.kW, dW=self.dW)


class LuaTemporalMaxPooling(SimpleLuaModule):
    """nn.TemporalMaxPooling(kW, dW = kW): max over each window of frames, per feature."""

    lua_types = ("nn.TemporalMaxPooling",)
    lua_params = (("kW", REQUIRED), ("dW", None))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        kW = int(self.kW)
        _check_frames(self, input, None, kW)
        # max_pool1d: the gradient goes to the first maximum of a window, as in THNN
        return F.max_pool1d(input.transpose(-1, -2), kW, int(self.dW or kW)).transpose(-1, -2)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), indices=empty_tensor(torch.int64))


# ----------------------------------------------------------------------------------------------
# Add, Mul, CMul
# ----------------------------------------------------------------------------------------------

class LuaAdd(_ParamModule):
    """nn.Add(inputSize, scalar): adds ``bias`` (one value when ``scalar``; else per element of a sample)."""

    lua_types = ("nn.Add",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        return cls(bias=f.tensor("bias"), scalar=f.flag("scalar", False))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        b = self.bias
        if self.scalar:
            return input + b[0]
        if input.shape == b.shape:
            return input + b
        n = input.shape[0]
        return (input.reshape(n, -1) + b.reshape(1, -1)).reshape(input.shape)

    def lua_fields(self) -> dict[str, Any]:
        fields = dict(super().lua_fields(), _ones=torch.ones(1))
        if self.scalar:
            fields["scalar"] = True
        return fields


class LuaMul(_ParamModule):
    """nn.Mul: input times the single ``weight``."""

    lua_types = ("nn.Mul",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        return cls(f.tensor("weight").reshape(1))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input * self.weight[0]


class LuaCMul(_ParamModule):
    """nn.CMul(size): element-wise product with ``weight`` - element by element when the sizes match in
    number, expanded when it has the input's dimensions, else per sample of a batch."""

    lua_types = ("nn.CMul",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        return cls(f.tensor("weight"))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if input.numel() == w.numel():
            return input * w.reshape(input.shape)
        if w.dim() == input.dim():
            return input * w.expand_as(input)
        n = input.shape[0]
        return (input.reshape(n, -1) * w.reshape(1, -1)).reshape(input.shape)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), size=long_storage(self.weight.shape))


# ----------------------------------------------------------------------------------------------
# Matrix products, Replicate, MixtureTable
# ----------------------------------------------------------------------------------------------

def _pair_grad_input() -> t7.LuaList:
    """The ``gradInput = {Tensor, Tensor}`` the constructors of the two-input modules create."""
    return t7.LuaList([empty_tensor(), empty_tensor()])


def _pair(module: LuaModule, input: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(input, (list, tuple)) or len(input) != 2:
        raise _bad_input(module, "input must be a table (list) of two tensors")
    return input[0], input[1]


class _PairModule(SimpleLuaModule):
    """Modules taking a table of two tensors."""

    lua_table_grad_input = True

    def pair(self, input: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return _pair(self, input)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), gradInput=_pair_grad_input())


class LuaMM(_PairModule):
    """nn.MM(transA, transB): {A, B} -> A @ B for 2-D matrices or batches (3-D) of them."""

    lua_types = ("nn.MM",)
    lua_params = (("transA", False), ("transB", False))

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        a, b = self.pair(input)
        if a.dim() not in (2, 3) or b.dim() != a.dim():
            raise _bad_input(self, f"expected two 2-D or two 3-D tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
        if self.transA:
            a = a.transpose(-1, -2)
        if self.transB:
            b = b.transpose(-1, -2)
        return a.mm(b) if a.dim() == 2 else a.bmm(b)


class LuaMV(_PairModule):
    """nn.MV(trans): {M, v} -> M @ v (2-D M, 1-D v) or batched (3-D M, 2-D v)."""

    lua_types = ("nn.MV",)
    lua_params = (("trans", False),)

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        m, v = self.pair(input)
        if (m.dim(), v.dim()) not in ((2, 1), (3, 2)):
            raise _bad_input(self, f"expected (2-D, 1-D) or batched (3-D, 2-D) tensors, got {tuple(m.shape)} "
                                   f"and {tuple(v.shape)}")
        if self.trans:
            m = m.transpose(-1, -2)
        return m.mv(v) if m.dim() == 2 else m.bmm(v.unsqueeze(2)).squeeze(2)


class LuaBilinear(_ParamModule):
    """nn.Bilinear: {x1, x2} (batch x in1, batch x in2) -> x1 W[k] x2 + b[k] for each output k."""

    lua_types = ("nn.Bilinear",)
    lua_table_grad_input = True

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight = f.tensor("weight")
        if weight.dim() != 3:
            raise f.error(f"weight should be 3-D (out x in1 x in2), got {tuple(weight.shape)}")
        return cls(weight, f.tensor("bias", required=False))

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        x1, x2 = _pair(self, input)
        if x1.dim() != 2 or x2.dim() != 2:
            raise _bad_input(self, f"inputs should be 2-D (batch x features), got {tuple(x1.shape)} and "
                                   f"{tuple(x2.shape)}")
        return F.bilinear(x1, x2, self.weight, self.bias)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), gradInput=_pair_grad_input())

    def lua_str(self) -> str:
        out, in1, in2 = self.weight.shape
        return f"{self.lua_typename}({in1}x{in2} -> {out}) {' without bias' if self.bias is None else ''}"


class LuaReplicate(SimpleLuaModule):
    """nn.Replicate(nf, dim, ndim): a new dimension of size ``nf`` at ``dim`` (one further for an input
    with more than ``ndim`` dimensions), by expansion."""

    lua_types = ("nn.Replicate",)
    lua_params = (("nfeatures", REQUIRED), ("dim", 1), ("ndim", None))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        rdim = int(self.dim) + (1 if self.ndim is not None and input.dim() > int(self.ndim) else 0)
        if not 1 <= rdim <= input.dim() + 1:
            raise _bad_input(self, f"cannot replicate along dimension {rdim} of a {input.dim()}-D input")
        out = input.unsqueeze(rdim - 1)
        shape = list(out.shape)
        shape[rdim - 1] = int(self.nfeatures)
        return out.expand(shape)


class LuaMixtureTable(SimpleLuaModule):
    """nn.MixtureTable(dim): {gater, experts} -> sum_i gater[:, i] * expert_i; experts a list of tensors
    or one tensor with the experts along ``dim`` (default 2, or 1 for a 1-D gater)."""

    lua_types = ("nn.MixtureTable",)
    lua_params = (("dim", None), ("table", None))
    lua_table_grad_input = True

    def forward(self, input: list[Any]) -> torch.Tensor:
        gater, experts = input
        batched = gater.dim() >= 2
        if self.dim is None:
            self.dim = 2 if batched else 1  # Lua fixes it at the first forward
        dim = int(self.dim) - 1
        n = gater.shape[1 if batched else 0]
        as_table = isinstance(experts, (list, tuple))
        first = experts[0] if as_table else experts
        size = [1] * (first.dim() + (1 if as_table else 0))
        if batched:
            size[0] = gater.shape[0]
        size[dim] = n
        gates = gater.reshape(size)
        if not as_table:
            return (gates.expand_as(experts) * experts).sum(dim)
        if len(experts) != n:
            raise _bad_input(self, f"the gater has {n} outputs for {len(experts)} experts (should be one per expert)")
        out = experts[0] * gates.select(dim, 0).expand_as(experts[0])
        for i in range(1, n):
            out = out + experts[i] * gates.select(dim, i).expand_as(experts[i])
        return out

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), size=long_storage([]), size2=long_storage([]), batchSize=0,
                    backwardSetup=False)


# ----------------------------------------------------------------------------------------------
# Similarity and distance layers
# ----------------------------------------------------------------------------------------------

def _rows(x: torch.Tensor) -> torch.Tensor:
    """A 1-D vector as one row (Lua's ``view(1, -1)``)."""
    return x.reshape(1, -1) if x.dim() == 1 else x


class LuaCosine(_ParamModule):
    """nn.Cosine(inputSize, outputSize): cosine of the input with each row of ``weight`` (outputSize x
    inputSize); both norms get + 1e-12."""

    lua_types = ("nn.Cosine",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        return cls(f.tensor("weight"))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() not in (1, 2):
            raise _bad_input(self, f"input must be a vector or matrix, got {tuple(input.shape)}")
        w_norm = self.weight.norm(2, 1) + 1e-12
        x = _rows(input)
        out = x.matmul(self.weight.t()) / w_norm / (x.norm(2, 1, keepdim=True) + 1e-12)
        return out.reshape(-1) if input.dim() == 1 else out


class _EuclideanFn(torch.autograd.Function):
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


class LuaEuclidean(_ParamModule):
    """nn.Euclidean(inputSize, outputSize): distances of the input to the columns of ``weight``
    (inputSize x outputSize)."""

    lua_types = ("nn.Euclidean",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        return cls(f.tensor("weight"))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() not in (1, 2):
            raise _bad_input(self, f"input must be 1-D or 2-D, got {tuple(input.shape)}")
        return _EuclideanFn.apply(input, self.weight)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), fastBackward=True)


class LuaCosineDistance(_PairModule):
    """nn.CosineDistance: {x1, x2} -> cosine similarity per row (squared norms + 1e-12); a pair of
    vectors gives a 1-element output."""

    lua_types = ("nn.CosineDistance",)

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        x1, x2 = (_rows(x) for x in self.pair(input))
        w = ((x1 * x1).sum(1) + 1e-12).reciprocal() * ((x2 * x2).sum(1) + 1e-12).reciprocal()
        return (x1 * x2).sum(1) * w.sqrt()


class LuaDotProduct(_PairModule):
    """nn.DotProduct: {x1, x2} -> dot product per row (a pair of vectors gives a 1-element output)."""

    lua_types = ("nn.DotProduct",)

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        x1, x2 = (_rows(x) for x in self.pair(input))
        return (x1 * x2).sum(1)


class _PairwiseDistanceFn(torch.autograd.Function):
    """sum(|x1 - x2|^p)^(1/p) per row, with Lua's backward: d = x1 - x2; sign(d) for p = 1 (Lua picks a
    random sign at 0, here 0), else d * |d|^(p-2) (that factor only for p > 2) / (out + 1e-6)^(p-1)."""

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


class LuaPairwiseDistance(_PairModule):
    """nn.PairwiseDistance(p): {x1, x2} -> p-norm of x1 - x2 per row (vectors give a 1-element output)."""

    lua_types = ("nn.PairwiseDistance",)
    lua_params = (("norm", 2),)

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        x1, x2 = self.pair(input)
        if x1.dim() not in (1, 2):
            raise _bad_input(self, f"input must be vectors or matrices, got {tuple(x1.shape)}")
        out = _PairwiseDistanceFn.apply(x1, x2, float(self.norm))
        return out.reshape(1) if x1.dim() == 1 else out

    def lua_fields(self) -> dict[str, Any]:
        return dict(SimpleLuaModule.lua_fields(self), gradInput=t7.LuaTable(), diff=empty_tensor())


# ----------------------------------------------------------------------------------------------
# Selection
# ----------------------------------------------------------------------------------------------

class LuaIndex(_PairModule):
    """nn.Index(dimension): {t, index} -> t:index(dimension, index) with a 1-based LongTensor index."""

    lua_types = ("nn.Index",)
    lua_params = (("dimension", REQUIRED),)

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        t, index = self.pair(input)
        dim = int(self.dimension) - 1
        if not 0 <= dim < t.dim():
            raise _bad_input(self, f"dimension {self.dimension} is outside the {t.dim()}-D input")
        return t.index_select(dim, _one_based(self, index, t.shape[dim], "index").reshape(-1))


class LuaMaskedSelect(_PairModule):
    """nn.MaskedSelect: {t, mask} -> the elements of t where mask is 1, as a 1-D tensor in row-major
    order (the mask may have another shape with as many elements, as in TH)."""

    lua_types = ("nn.MaskedSelect",)
    lua_table_grad_input = False  # Lua's __init leaves gradInput a tensor (its :type() calls gradInput:type)

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        t, mask = self.pair(input)
        if mask.numel() != t.numel():
            raise _bad_input(self, f"mask has {mask.numel()} elements, the input {t.numel()}")
        return t.masked_select(mask.reshape(t.shape) != 0)

    def lua_fields(self) -> dict[str, Any]:
        return dict(_maskIndices=empty_tensor(torch.int64),
                    _maskIndexBuffer=empty_tensor(torch.int64), _maskIndexBufferCPU=empty_tensor(),
                    _gradBuffer=empty_tensor(), _gradMask=empty_tensor(torch.uint8))
