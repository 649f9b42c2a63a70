"""Lua ``nn`` modules of text and similarity models: LookupTable, the Temporal (1-D) layers, the
parametrised element-wise layers (Add, Mul, CMul), matrix products (MM, MV, Bilinear), Replicate,
MixtureTable, the similarity / distance layers (Cosine, Euclidean, CosineDistance, PairwiseDistance,
DotProduct) and the selection layers (Index, MaskedSelect).

The computation (ports of the torch/nn Lua classes of the same names and their THNN kernels) lives in
:mod:`fbresnet_port.lua_nn.standalone.text`, which ``convert --format python`` copies into the files it
writes; the classes here add reading and checking the Lua fields, export, printing and error paths.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import t7
from ..errors import UserError
from ._base import (MISSING, ChildConverter, Fields, LuaModule, check_planes, empty_tensor,
                    export_weights, float_param, long_storage)
from .codegen import CodeGen, call_expr
from .simple import REQUIRED, Reader, SimpleLuaModule, flag, integer, size
from .standalone.text import (MM, MV, Add, Bilinear, CMul, Cosine, CosineDistance, DotProduct, Euclidean, Index,
                              LookupTable, MaskedSelect, MixtureTable, Mul, PairwiseDistance, Replicate,
                              TemporalConvolution, TemporalMaxPooling, TemporalSubSampling, TextInputError,
                              one_based_index)


class LuaInputError(UserError, ValueError):
    """An input that the converted Lua module cannot take (shape, index range), as Lua would refuse it."""


def lua_param(t: torch.Tensor | None) -> nn.Parameter | None:
    """A Lua weight/bias as a trainable parameter (float64 kept, other types float32)."""
    return None if t is None else nn.Parameter(float_param(t))


def lua_where(module: LuaModule) -> str:
    """``<class> at <path>`` for a converted module, ``<class>`` for one built in Python."""
    path = module.__dict__.get("_lua_path")
    return f"{module.lua_typename} at {path}" if path else module.lua_typename


def lua_bool(f: Fields, name: str, default: Any) -> Any:
    """A field that Lua passes to a C ``bool`` argument of a THNN kernel (``sizeAverage``,
    ``shouldScaleGradByFreq``): true, false, or nil (-> ``default``). Anything else is refused: the FFI
    refuses strings and tables, and would read a number as C does (0 is false), unlike Lua's ``if``."""
    value = f.raw.get(name)
    if value is None:
        return default
    f.check(isinstance(value, bool), name, value, "should be true or false (a boolean)")
    return value


def _size(f: Fields, name: str, default: Any = MISSING) -> Any:
    """A size field (frame size, kernel width, stride): an integer in 1..MAX_DIM_SIZE."""
    return size()(f, name, default)


def positive(what: str) -> Reader:
    """A finite number > 0 (``what`` it is, for the message)."""
    def read(f: Fields, name: str, default: Any) -> Any:
        value = f.num(name, default)
        if value is not None:
            f.check(value > 0, name, value, f"should be a positive number ({what})")
        return value
    return read


def _flat(t: torch.Tensor | None) -> torch.Tensor | None:
    """A bias read by THNN element by element (any shape of the right element count) as a vector."""
    return None if t is None else t.reshape(-1)


def _one_based(module: LuaModule, index: torch.Tensor, size: int, what: str) -> torch.Tensor:
    """:func:`~.standalone.text.one_based_index` raising :class:`LuaInputError` for any converted module
    (charrnn's OneHot uses it)."""
    try:
        return one_based_index(module, index, size, what)
    except TextInputError as exc:
        raise LuaInputError(f"{lua_where(module)}: {exc.what}") from None


class _LuaText(LuaModule):
    """The runtime side of the text layers: an input the layer refuses raises :class:`LuaInputError` naming the
    module's class and path (the standalone layers call ``input_error``)."""

    def input_error(self, what: str) -> LuaInputError:
        return LuaInputError(f"{lua_where(self)}: {what}")


class _SimpleText(_LuaText, SimpleLuaModule):
    """A text layer described by its ``lua_params``, built by its standalone class's constructor (which takes
    the same keywords)."""

    def __init__(self, **values: Any):
        super(SimpleLuaModule, self).__init__(**values)


class _ParamText(_LuaText):
    """A text layer with Lua parameters ``weight`` and/or ``bias`` (parameters() lists weight first)."""

    def set_lua_params(self, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> nn.Module:
        """Take the Lua tensors as the parameters (float64 kept, other types float32); returns the module."""
        if weight is not None:
            self.weight = lua_param(weight)
        if bias is not None:
            self.bias = lua_param(bias)
        return self

    def lua_fields(self) -> dict[str, Any]:
        return export_weights(weight=getattr(self, "weight", None), bias=getattr(self, "bias", None))


def _size_arg(shape: torch.Size) -> int | tuple[int, ...]:
    """A parameter's shape as a constructor argument: a number for a vector."""
    return shape[0] if len(shape) == 1 else tuple(shape)


# ----------------------------------------------------------------------------------------------
# LookupTable and the temporal layers
# ----------------------------------------------------------------------------------------------

class LuaLookupTable(_ParamText, LookupTable):
    """nn.LookupTable: rows of ``weight`` (nIndex x nOutput) picked by a 1-D (n) or 2-D (batch x n)
    tensor of 1-based indices. ``paddingValue``: that index still reads its row but its row gets no
    gradient; ``maxNorm``/``normType``: the rows read are first renormalised in place (THNN's
    LookupTable_renorm); ``shouldScaleGradByFreq``: gradients divided by the index's count in the batch.

    Computed by :class:`~.standalone.text.LookupTable`."""

    lua_types = ("nn.LookupTable",)
    lua_version = 4

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight = f.tensor("weight", dim=2)  # nIndex x nOutput
        # renorm() runs when maxNorm is truthy: nil and false mean none; its value and normType (`or 2`)
        # are C doubles of THNN's LookupTable_renorm
        max_norm = None if f.raw.get("maxNorm") is False else f.num("maxNorm", None)
        norm_type = None if f.raw.get("normType") is False else positive("the p of the p-norm")(f, "normType", None)
        padding = 0 if f.raw.get("paddingValue") is False else f.int("paddingValue", 0)  # `or 0`
        return cls(*weight.shape, padding_value=padding, max_norm=max_norm, norm_type=norm_type,
                   scale_grad_by_freq=lua_bool(f, "shouldScaleGradByFreq", False)).set_lua_params(weight)

    def lua_expected_input(self) -> str:
        return f"a vector or a batch x n matrix of indices in 1..{self.weight.shape[0]} (nIndex)"

    def lua_planes(self, planes: int | None) -> int | None:
        # the features of its frames (n x nOutput, or batch x n x nOutput): what a temporal layer after it takes
        return self.weight.shape[1]

    def python_ctor(self, g: CodeGen) -> str:
        options = {k: v for k, v in (("max_norm", self.max_norm), ("norm_type", self.norm_type),
                                     ("scale_grad_by_freq", bool(self.scale_grad_by_freq) or None)) if v is not None}
        return call_expr(g.use(LookupTable), *self.weight.shape, padding_value=self.padding_value, **options)

    def lua_fields(self) -> dict[str, Any]:
        fields = dict(super().lua_fields(), paddingValue=self.padding_value,
                      shouldScaleGradByFreq=bool(self.scale_grad_by_freq), _count=empty_tensor(torch.int32),
                      _input=empty_tensor(torch.int64))
        if self.max_norm is not None:
            fields["maxNorm"] = self.max_norm
        if self.norm_type is not None:
            fields["normType"] = self.norm_type
        return fields


class LuaTemporalConvolution(_ParamText, TemporalConvolution):
    """nn.TemporalConvolution: output frame t = bias + weight @ (frames t*dW .. t*dW+kW-1 concatenated);
    weight is outputFrameSize x (kW * inputFrameSize).

    Computed by :class:`~.standalone.text.TemporalConvolution`."""

    lua_types = ("nn.TemporalConvolution",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        n_in, n_out = _size(f, "inputFrameSize"), _size(f, "outputFrameSize")
        kW, dW = _size(f, "kW"), _size(f, "dW", 1)
        # THNN: addmm with weight:t(), so exactly outputFrameSize x (kW * inputFrameSize); the bias is
        # copied into every output frame (any shape of outputFrameSize elements); Lua has no bias-less variant
        weight = f.tensor("weight", shape=(n_out, kW * n_in))
        bias = f.tensor("bias", numel=n_out)
        return cls(n_in, n_out, kW, dW).set_lua_params(weight, _flat(bias))

    def lua_expected_input(self) -> str:
        return (f"T x {self.n_in} or N x T x {self.n_in} (inputFrameSize = {self.n_in}), "
                f"T >= {self.kW} (kW)")

    def lua_planes(self, planes: int | None) -> int | None:
        # frames of features (the last dimension): inputFrameSize in, outputFrameSize out
        check_planes(self, planes, self.n_in, "inputFrameSize")
        return self.n_out

    def python_ctor(self, g: CodeGen) -> str:
        return call_expr(g.use(TemporalConvolution), self.n_in, self.n_out, self.kW, dW=self.dW)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), inputFrameSize=self.n_in, outputFrameSize=self.n_out, kW=self.kW,
                    dW=self.dW)


class LuaTemporalSubSampling(_ParamText, TemporalSubSampling):
    """nn.TemporalSubSampling: per feature, weight * (sum of kW frames) + bias.

    Computed by :class:`~.standalone.text.TemporalSubSampling`."""

    lua_types = ("nn.TemporalSubSampling",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        n_in, kW, dW = _size(f, "inputFrameSize"), _size(f, "kW"), _size(f, "dW", 1)
        # THNN multiplies and adds them frame by frame, element by element: inputFrameSize elements each
        weight, bias = f.tensor("weight", numel=n_in), f.tensor("bias", numel=n_in)
        return cls(n_in, kW, dW).set_lua_params(_flat(weight), _flat(bias))

    def lua_expected_input(self) -> str:
        return f"T x {self.n_in} (inputFrameSize = {self.n_in}), T >= {self.kW} (kW)"

    def lua_planes(self, planes: int | None) -> int | None:
        check_planes(self, planes, self.n_in, "inputFrameSize")
        return self.n_in

    def python_ctor(self, g: CodeGen) -> str:
        return call_expr(g.use(TemporalSubSampling), self.n_in, self.kW, dW=self.dW)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), inputFrameSize=self.n_in, kW=self.kW, dW=self.dW)


class LuaTemporalMaxPooling(_SimpleText, TemporalMaxPooling):
    """nn.TemporalMaxPooling(kW, dW = kW): max over each window of frames, per feature.

    Computed by :class:`~.standalone.text.TemporalMaxPooling`."""

    lua_types = ("nn.TemporalMaxPooling",)
    lua_params = (("kW", REQUIRED), ("dW", None))
    lua_checks = {"kW": size(), "dW": size()}
    lua_keeps_planes = True  # the features of the frames

    def lua_expected_input(self) -> str:
        return f"T x features or N x T x features, T >= {self.kW} (kW)"

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), indices=empty_tensor(torch.int64))


# ----------------------------------------------------------------------------------------------
# Add, Mul, CMul
# ----------------------------------------------------------------------------------------------

class LuaAdd(_ParamText, Add):
    """nn.Add(inputSize, scalar): adds ``bias`` (one value when ``scalar``; else per element of a sample).

    Computed by :class:`~.standalone.text.Add`."""

    lua_types = ("nn.Add",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        scalar = f.flag("scalar", False)
        # scalar: Lua adds the number bias[1], which only a vector gives
        bias = f.tensor("bias", dim=1 if scalar else None)
        return cls(tuple(bias.shape), scalar=scalar).set_lua_params(bias=bias)

    def lua_planes(self, planes: int | None) -> int | None:
        return planes

    def lua_expected_input(self) -> str | None:
        if self.scalar:
            return None
        size = "x".join(map(str, self.bias.shape))
        return f"a tensor of size {size} (the bias) or a batch of them ({self.bias.numel()} elements per sample)"

    def python_ctor(self, g: CodeGen) -> str:
        return call_expr(g.use(Add), _size_arg(self.bias.shape), **({"scalar": True} if self.scalar else {}))

    def lua_fields(self) -> dict[str, Any]:
        fields = dict(super().lua_fields(), _ones=torch.ones(1))
        if self.scalar:
            fields["scalar"] = True
        return fields


class LuaMul(_ParamText, Mul):
    """nn.Mul: input times the single ``weight``.

    Computed by :class:`~.standalone.text.Mul`."""

    lua_types = ("nn.Mul",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight = f.tensor("weight", dim=1)  # Lua multiplies by the number weight[1]
        return cls(weight.shape[0]).set_lua_params(weight)

    def lua_planes(self, planes: int | None) -> int | None:
        return planes

    def python_ctor(self, g: CodeGen) -> str:
        n = self.weight.shape[0]
        return call_expr(g.use(Mul), *([n] if n != 1 else []))


class LuaCMul(_ParamText, CMul):
    """nn.CMul(size): element-wise product with ``weight`` - element by element when the sizes match in
    number, expanded when it has the input's dimensions, else per sample of a batch.

    Computed by :class:`~.standalone.text.CMul`."""

    lua_types = ("nn.CMul",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        # only the weight is read (``size`` is the constructor's argument, never used again)
        weight = f.tensor("weight")
        return cls(tuple(weight.shape)).set_lua_params(weight)

    def lua_planes(self, planes: int | None) -> int | None:
        return planes

    def lua_expected_input(self) -> str:
        size = "x".join(map(str, self.weight.shape))
        return (f"{self.weight.numel()} elements, a tensor expandable from {size} (the weight), or a batch of "
                f"{self.weight.numel()} elements per sample")

    def python_ctor(self, g: CodeGen) -> str:
        return call_expr(g.use(CMul), _size_arg(self.weight.shape))

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), size=long_storage(self.weight.shape))


# ----------------------------------------------------------------------------------------------
# Matrix products, Replicate, MixtureTable
# ----------------------------------------------------------------------------------------------

def _pair_grad_input() -> t7.LuaList:
    """The ``gradInput = {Tensor, Tensor}`` the constructors of the two-input modules create."""
    return t7.LuaList([empty_tensor(), empty_tensor()])


class _PairText(_SimpleText):
    """Modules taking a table of two tensors."""

    lua_table_grad_input = True

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), gradInput=_pair_grad_input())


class LuaMM(_PairText, MM):
    """nn.MM(transA, transB): {A, B} -> A @ B for 2-D matrices or batches (3-D) of them.

    Computed by :class:`~.standalone.text.MM`."""

    lua_types = ("nn.MM",)
    lua_params = (("transA", False), ("transB", False))  # Lua: `if self.transA` (truth values)


class LuaMV(_PairText, MV):
    """nn.MV(trans): {M, v} -> M @ v (2-D M, 1-D v) or batched (3-D M, 2-D v).

    Computed by :class:`~.standalone.text.MV`."""

    lua_types = ("nn.MV",)
    lua_params = (("trans", False),)  # Lua: `if self.trans` (a truth value)


class LuaBilinear(_ParamText, Bilinear):
    """nn.Bilinear: {x1, x2} (batch x in1, batch x in2) -> x1 W[k] x2 + b[k] for each output k.

    Computed by :class:`~.standalone.text.Bilinear`."""

    lua_types = ("nn.Bilinear",)
    lua_table_grad_input = True

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight = f.tensor("weight", dim=3)  # outputSize x inputSize1 x inputSize2
        # nil: no bias; else added as a 1 x outputSize row (and its gradient summed into it)
        bias = f.tensor("bias", required=False, numel=weight.shape[0])
        out, in1, in2 = weight.shape
        return cls(in1, in2, out, bias=bias is not None).set_lua_params(weight, _flat(bias))

    def lua_expected_input(self) -> str:
        out, in1, in2 = self.weight.shape
        return f"{{N x {in1}, N x {in2}}} (weight {out}x{in1}x{in2})"

    def python_ctor(self, g: CodeGen) -> str:
        out, in1, in2 = self.weight.shape
        return call_expr(g.use(Bilinear), in1, in2, out, **({} if self.bias is not None else {"bias": False}))

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), gradInput=_pair_grad_input())

    def lua_str(self) -> str:
        out, in1, in2 = self.weight.shape
        return f"{self.lua_typename}({in1}x{in2} -> {out}) {' without bias' if self.bias is None else ''}"


class LuaReplicate(_SimpleText, Replicate):
    """nn.Replicate(nf, dim, ndim): a new dimension of size ``nf`` at ``dim`` (one further for an input
    with more than ``ndim`` dimensions), by expansion.

    Computed by :class:`~.standalone.text.Replicate`."""

    lua_types = ("nn.Replicate",)
    lua_params = (("nfeatures", REQUIRED), ("dim", 1), ("ndim", None))
    # dim: `self.dim or 1`, > 0; ndim: nil or compared with the input's number of dimensions
    lua_checks = {"nfeatures": size(), "dim": size(), "ndim": integer(0)}


class LuaMixtureTable(_SimpleText, MixtureTable):
    """nn.MixtureTable(dim): {gater, experts} -> sum_i gater[:, i] * expert_i; experts a list of tensors
    or one tensor with the experts along ``dim`` (default 2, or 1 for a 1-D gater).

    Computed by :class:`~.standalone.text.MixtureTable`."""

    lua_types = ("nn.MixtureTable",)
    lua_params = (("dim", None), ("table", None))
    # dim: nil until the first forward fixes it; table: set (true) once experts came as a table
    lua_checks = {"dim": size(), "table": flag}
    lua_table_grad_input = True

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), size=long_storage([]), size2=long_storage([]), batchSize=0,
                    backwardSetup=False)


# ----------------------------------------------------------------------------------------------
# Similarity and distance layers
# ----------------------------------------------------------------------------------------------

class LuaCosine(_ParamText, Cosine):
    """nn.Cosine(inputSize, outputSize): cosine of the input with each row of ``weight`` (outputSize x
    inputSize); both norms get + 1e-12.

    Computed by :class:`~.standalone.text.Cosine`."""

    lua_types = ("nn.Cosine",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight = f.tensor("weight", dim=2)  # outputSize x inputSize
        return cls(weight.shape[1], weight.shape[0]).set_lua_params(weight)

    def lua_planes(self, planes: int | None) -> int | None:
        check_planes(self, planes, self.weight.shape[1], "inputSize, weight:size(2)")
        return self.weight.shape[0]

    def lua_expected_input(self) -> str:
        return f"{self.weight.shape[1]} or N x {self.weight.shape[1]} (inputSize)"

    def python_ctor(self, g: CodeGen) -> str:
        return call_expr(g.use(Cosine), self.weight.shape[1], self.weight.shape[0])


class LuaEuclidean(_ParamText, Euclidean):
    """nn.Euclidean(inputSize, outputSize): distances of the input to the columns of ``weight``
    (inputSize x outputSize).

    Computed by :class:`~.standalone.text.Euclidean`."""

    lua_types = ("nn.Euclidean",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight = f.tensor("weight", dim=2)  # inputSize x outputSize
        return cls(*weight.shape).set_lua_params(weight)

    def lua_planes(self, planes: int | None) -> int | None:
        check_planes(self, planes, self.weight.shape[0], "inputSize, weight:size(1)")
        return self.weight.shape[1]

    def lua_expected_input(self) -> str:
        return f"{self.weight.shape[0]} or N x {self.weight.shape[0]} (inputSize)"

    def python_ctor(self, g: CodeGen) -> str:
        return call_expr(g.use(Euclidean), *self.weight.shape)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), fastBackward=True)


class LuaCosineDistance(_PairText, CosineDistance):
    """nn.CosineDistance: {x1, x2} -> cosine similarity per row (squared norms + 1e-12); a pair of
    vectors gives a 1-element output.

    Computed by :class:`~.standalone.text.CosineDistance`."""

    lua_types = ("nn.CosineDistance",)


class LuaDotProduct(_PairText, DotProduct):
    """nn.DotProduct: {x1, x2} -> dot product per row (a pair of vectors gives a 1-element output).

    Computed by :class:`~.standalone.text.DotProduct`."""

    lua_types = ("nn.DotProduct",)


class LuaPairwiseDistance(_PairText, PairwiseDistance):
    """nn.PairwiseDistance(p): {x1, x2} -> p-norm of x1 - x2 per row (vectors give a 1-element output).

    Computed by :class:`~.standalone.text.PairwiseDistance`."""

    lua_types = ("nn.PairwiseDistance",)
    lua_params = (("norm", 2),)
    lua_checks = {"norm": positive("the p of the p-norm")}

    def lua_fields(self) -> dict[str, Any]:
        return dict(SimpleLuaModule.lua_fields(self), gradInput=t7.LuaTable(), diff=empty_tensor())


# ----------------------------------------------------------------------------------------------
# Selection
# ----------------------------------------------------------------------------------------------

class LuaIndex(_PairText, Index):
    """nn.Index(dimension): {t, index} -> t:index(dimension, index) with a 1-based LongTensor index.

    Computed by :class:`~.standalone.text.Index`."""

    lua_types = ("nn.Index",)
    lua_params = (("dimension", REQUIRED),)
    lua_checks = {"dimension": size()}  # Lua's index(t, dimension, index): 1..t:dim()


class LuaMaskedSelect(_PairText, MaskedSelect):
    """nn.MaskedSelect: {t, mask} -> the elements of t where mask is 1, as a 1-D tensor in row-major
    order (the mask may have another shape with as many elements, as in TH).

    Computed by :class:`~.standalone.text.MaskedSelect`."""

    lua_types = ("nn.MaskedSelect",)
    lua_table_grad_input = False  # Lua's __init leaves gradInput a tensor (its :type() calls gradInput:type)

    def lua_fields(self) -> dict[str, Any]:
        return dict(_maskIndices=empty_tensor(torch.int64),
                    _maskIndexBuffer=empty_tensor(torch.int64), _maskIndexBufferCPU=empty_tensor(),
                    _gradBuffer=empty_tensor(), _gradMask=empty_tensor(torch.uint8))
