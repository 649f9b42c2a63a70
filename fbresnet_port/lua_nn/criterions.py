"""Lua ``nn`` criterions as ``torch.nn.Module`` losses: ``loss = crit(input, target)``.

The losses (ports of torch/nn's ``*Criterion.lua`` and their THNN C kernels) live in
:mod:`fbresnet_port.lua_nn.standalone.criterions`, which ``convert --format python`` copies into the files it
writes; the classes here read and check the Lua fields (``sizeAverage``, ``weights``, ``margin``,
``ignoreIndex``, ...), export them back, and raise :class:`LuaCriterionError` naming the criterion's path.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from .. import t7
from ..errors import UserError
from ._base import ChildConverter, Fields, LuaModule, UnsupportedLuaModule, empty_tensor, export_param, \
    lua_module, to_lua
from .codegen import Code, CodeGen, ListVal, Value, Var, call_expr, standalone_base
from .simple import Reader, SimpleLuaModule, flag, integer, number
from .standalone.criterions import (AbsCriterion, BCECriterion, ClassNLLCriterion, CosineEmbeddingCriterion,
                                    Criterion, CrossEntropyCriterion, DistKLDivCriterion, HingeEmbeddingCriterion,
                                    L1HingeEmbeddingCriterion, MarginCriterion, MarginRankingCriterion,
                                    MSECriterion, MultiCriterion, MultiLabelMarginCriterion,
                                    MultiLabelSoftMarginCriterion, MultiMarginCriterion, ParallelCriterion,
                                    SmoothL1Criterion, SoftMarginCriterion, SpatialClassNLLCriterion,
                                    WeightedMSECriterion, class_nll, sum_in_order)
from .text import lua_bool, lua_where


class LuaCriterionError(UserError, ValueError):
    """A criterion called with an input or target Lua's criterion would reject (size, class range)."""


class LuaCriterion(SimpleLuaModule, Criterion):
    """Base of the converted criterions (Lua ``nn.Criterion``; see :class:`~.standalone.criterions.Criterion`).

    ``lua_params`` are the scalar Lua fields (read and checked as :class:`SimpleLuaModule`'s, exported as they
    are); the standalone class's ``weights_field`` is read as a tensor field. A converted criterion is built by
    its standalone class's constructor (which takes the same keywords).
    """

    lua_params: ClassVar[tuple[tuple[str, Any], ...]] = (("sizeAverage", True),)
    # the checks of the scalar fields of all criterions, as the Lua code that reads them needs them
    lua_checks: ClassVar[dict[str, Reader]] = {
        # a C bool of the THNN kernels (compared with true by the Lua-only criterions): true/false/nil
        "sizeAverage": lua_bool,
        "oldSizeAverage": lua_bool,
        "ignoreIndex": integer(-2 ** 63, 2 ** 63 - 1),  # THNN's long ignore_index
        "margin": number(),
        "p": integer(-2 ** 31, 2 ** 31 - 1),  # MultiMarginCriterion's C int p (1: hinge, else squared)
        "repeatTarget": flag,  # ParallelCriterion: `self.repeatTarget and target or target[i]`
    }
    python_forward_args = ("input", "target")

    def __init__(self, *args: Any, **kwargs: Any):
        super(SimpleLuaModule, self).__init__(*args, **kwargs)  # the standalone class's constructor

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        values = {name: cls.read_param(f, name, default) for name, default in cls.lua_params}
        if cls.weights_field is not None:
            # class/element weights: 1-D (the constructors assert it), floating, not empty (THNN compares
            # their element count with the classes; nil is "no weights")
            values["weights"] = f.tensor(cls.weights_field, required=cls.weights_required,
                                         dim=1 if cls.weights_field == "weights" else None, allow_empty=False)
        m = cls(**values)
        m.output = _lua_number(f.get("output", 0))
        return m

    def error(self, msg: str) -> LuaCriterionError:
        return LuaCriterionError(f"{lua_where(self)}: {msg}")

    # -- export -----------------------------------------------------------------------------------

    def lua_fields(self) -> dict[str, Any]:
        fields = super().lua_fields()
        w = self.weights_buffer()
        if w is not None:
            fields[self.weights_field] = export_param(w)
        return fields

    def to_lua(self) -> "t7.TorchObject":
        """The Lua criterion object (``output``, ``gradInput`` and the fields its methods read)."""
        if self.lua_table_grad_input:
            grad_input: Any = t7.LuaTable()
        elif self.table_input:
            grad_input = t7.LuaList([empty_tensor(), empty_tensor()])
        else:
            grad_input = empty_tensor()
        fields = {"gradInput": grad_input, "output": _lua_number(self.output)}
        fields.update(self.lua_fields())
        return t7.TorchObject(self.lua_typename, t7.LuaTable(fields), version=self.lua_version)

    # -- convert --format python ------------------------------------------------------------------

    def python_ctor(self, g: CodeGen) -> str:
        """``<Criterion>(weights=torch.empty(n), <lua_params>)`` (the weights' values come with the state dict)."""
        kwargs: dict[str, Any] = {}
        w = self.weights_buffer()
        if w is not None:
            kwargs["weights"] = Code(call_expr("torch.empty", *w.shape))
        kwargs.update({name: getattr(self, name) for name, _ in self.lua_params})
        return call_expr(g.use(standalone_base(type(self))), **kwargs)

    def python_forward(self, g: CodeGen, x: Value) -> Value:
        """``loss = self.<crit>(input, target)`` (``x``: the table {input, target})."""
        input, target = _input_and_target(g, x)
        return g.assign(f"{g.attr(self)}({g.expr(input)}, {g.expr(target)})", hint="loss")


def _input_and_target(g: CodeGen, x: Value) -> tuple[Value, Value]:
    """The two values of a criterion's {input, target} (elements of a variable holding the pair if unknown)."""
    if isinstance(x, ListVal) and len(x.items) == 2:
        return x.items[0], x.items[1]
    name = g.expr(g.as_var(x))
    return Var(f"{name}[0]"), Var(f"{name}[1]")


def _item(g: CodeGen, x: Value, i: int) -> Value:
    """Element ``i`` (0-based) of a table value."""
    if isinstance(x, ListVal):
        return x.items[i]
    return Var(f"{g.expr(x)}[{i}]")


def _check_helper(f: Fields, name: str, cls_name: str) -> None:
    """The module field ``name`` that a criterion runs (CrossEntropyCriterion's ``lsm``,
    MultiLabelSoftMarginCriterion's ``sigmoid``) is there and an nn/cudnn ``cls_name``: Lua calls it, so
    it fails without it, and another class would compute something else."""
    value = f.raw.get(name)
    if value is None:
        raise f.error(f"missing field '{name}' (its nn.{cls_name})")
    f.check(isinstance(value, t7.TorchObject) and value.typename in (f"nn.{cls_name}", f"cudnn.{cls_name}"),
            name, value, f"should be an nn.{cls_name}")


def _lua_number(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().reshape(-1)[0]) if value.numel() else 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return 0.0


# ----------------------------------------------------------------------------------------------
# Element-wise criterions
# ----------------------------------------------------------------------------------------------

class LuaMSECriterion(LuaCriterion, MSECriterion):
    """nn.MSECriterion: (x - t)^2.

    Computed by :class:`~.standalone.criterions.MSECriterion`."""

    lua_types = ("nn.MSECriterion",)


class LuaWeightedMSECriterion(LuaCriterion, WeightedMSECriterion):
    """nn.WeightedMSECriterion: MSE against ``target * weight`` (``weight`` per sample when it has
    one dimension less than the input, else element-wise).

    Computed by :class:`~.standalone.criterions.WeightedMSECriterion`."""

    lua_types = ("nn.WeightedMSECriterion",)


class LuaAbsCriterion(LuaCriterion, AbsCriterion):
    """nn.AbsCriterion: |x - t| (gradient +1 at x == t, as THNN).

    Computed by :class:`~.standalone.criterions.AbsCriterion`."""

    lua_types = ("nn.AbsCriterion",)


class LuaSmoothL1Criterion(LuaCriterion, SmoothL1Criterion):
    """nn.SmoothL1Criterion: 0.5 z^2 if |z| < 1 else |z| - 0.5, z = x - t.

    Computed by :class:`~.standalone.criterions.SmoothL1Criterion`."""

    lua_types = ("nn.SmoothL1Criterion",)


class LuaSoftMarginCriterion(LuaCriterion, SoftMarginCriterion):
    """nn.SoftMarginCriterion: log(1 + exp(-x t)), targets +-1.

    Computed by :class:`~.standalone.criterions.SoftMarginCriterion`."""

    lua_types = ("nn.SoftMarginCriterion",)


class LuaDistKLDivCriterion(LuaCriterion, DistKLDivCriterion):
    """nn.DistKLDivCriterion: t (log t - x) where t > 0 (input: log-probabilities; same sizes).

    Computed by :class:`~.standalone.criterions.DistKLDivCriterion`."""

    lua_types = ("nn.DistKLDivCriterion",)


class LuaMarginCriterion(LuaCriterion, MarginCriterion):
    """nn.MarginCriterion: max(0, margin - x t), targets +-1.

    Computed by :class:`~.standalone.criterions.MarginCriterion`."""

    lua_types = ("nn.MarginCriterion",)
    lua_params = (("margin", 1), ("sizeAverage", True))


class LuaBCECriterion(LuaCriterion, BCECriterion):
    """nn.BCECriterion: -w (t log(x + eps) + (1 - t) log(1 - x + eps)), eps = 1e-12; input in [0, 1].

    The gradient is THNN's ``-(t - x) / ((1 - x + eps)(x + eps)) * w`` (it differs from the exact
    derivative by eps terms, visibly at x = 0 or 1).

    Computed by :class:`~.standalone.criterions.BCECriterion`."""

    lua_types = ("nn.BCECriterion",)


class LuaHingeEmbeddingCriterion(LuaCriterion, HingeEmbeddingCriterion):
    """nn.HingeEmbeddingCriterion: x where y = 1, max(0, margin - x) where y = -1.

    Gradient as Lua's: ``y``, zeroed where y = -1 and x > margin.

    Computed by :class:`~.standalone.criterions.HingeEmbeddingCriterion`."""

    lua_types = ("nn.HingeEmbeddingCriterion",)
    lua_params = (("margin", 1), ("sizeAverage", True))


# ----------------------------------------------------------------------------------------------
# Classification criterions
# ----------------------------------------------------------------------------------------------

class LuaClassNLLCriterion(LuaCriterion, ClassNLLCriterion):
    """nn.ClassNLLCriterion: -sum w[t_i] input[i, t_i] over samples whose target is not ``ignoreIndex``,
    divided (sizeAverage) by the sum of those weights. Input: log-probabilities, batch x classes or one
    sample (1-D); targets: 1-based class indices (a number for one sample).

    Computed by :class:`~.standalone.criterions.ClassNLLCriterion`."""

    lua_types = ("nn.ClassNLLCriterion",)
    lua_params = (("sizeAverage", True), ("ignoreIndex", -100))

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), output_tensor=torch.zeros(1), total_weight_tensor=torch.ones(1),
                    target=torch.zeros(1, dtype=torch.long))


class LuaSpatialClassNLLCriterion(LuaClassNLLCriterion, SpatialClassNLLCriterion):
    """nn.SpatialClassNLLCriterion: ClassNLLCriterion over every pixel of a batch x classes x H x W
    input, targets batch x H x W (1-based); sizeAverage divides by the summed weights of all pixels.

    Computed by :class:`~.standalone.criterions.SpatialClassNLLCriterion`."""

    lua_types = ("nn.SpatialClassNLLCriterion",)
    lua_params = (("sizeAverage", True),)


class LuaCrossEntropyCriterion(LuaCriterion, CrossEntropyCriterion):
    """nn.CrossEntropyCriterion: LogSoftMax then ClassNLLCriterion (``nll``: weights, ignoreIndex) on the
    squeezed input and target. Setting ``sizeAverage`` overrides ``nll.sizeAverage`` (Lua's
    ``oldSizeAverage`` rule: only a changed value is propagated).

    Computed by :class:`~.standalone.criterions.CrossEntropyCriterion`; its ``nll`` is a converted
    nn.ClassNLLCriterion, and Lua's ``lsm`` must be an nn.LogSoftMax."""

    lua_types = ("nn.CrossEntropyCriterion",)
    lua_params = (("sizeAverage", None), ("oldSizeAverage", None))
    nll_class = LuaClassNLLCriterion

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        if not f.has("nll"):
            raise f.error("missing field 'nll' (its nn.ClassNLLCriterion)")
        _check_helper(f, "lsm", "LogSoftMax")
        nll_obj = f.get("nll")
        f.check(isinstance(nll_obj, t7.TorchObject), "nll", nll_obj, "should be an nn.ClassNLLCriterion")
        nll = convert(nll_obj, f"{f.path}.nll")
        if not isinstance(nll, (LuaClassNLLCriterion, UnsupportedLuaModule)):
            raise f.bad("nll", nll_obj, "should be an nn.ClassNLLCriterion")
        m = cls(sizeAverage=cls.read_param(f, "sizeAverage", None),
                oldSizeAverage=cls.read_param(f, "oldSizeAverage", None), nll=nll)
        m.output = _lua_number(f.get("output", 0))
        return m

    def python_ctor(self, g: CodeGen) -> str:
        return call_expr(g.use(CrossEntropyCriterion), sizeAverage=self.sizeAverage,
                         oldSizeAverage=self.oldSizeAverage, nll=g.ctor(self.nll))

    def lua_fields(self) -> dict[str, Any]:
        fields = super().lua_fields()
        fields.update(lsm=lua_module("nn.LogSoftMax"), nll=to_lua(self.nll))
        return fields


class LuaMultiMarginCriterion(LuaCriterion, MultiMarginCriterion):
    """nn.MultiMarginCriterion: sum over d != t of w[t] max(0, margin - x[t] + x[d])^p / nClasses
    (p 1 or 2; averaged over samples if sizeAverage); targets 1-based class indices.

    Computed by :class:`~.standalone.criterions.MultiMarginCriterion`."""

    lua_types = ("nn.MultiMarginCriterion",)
    lua_params = (("p", 1), ("margin", 1), ("sizeAverage", True))


class LuaMultiLabelMarginCriterion(LuaCriterion, MultiLabelMarginCriterion):
    """nn.MultiLabelMarginCriterion: per sample, the 1-based target classes are listed first and ended
    by 0; sum over targets j and non-targets d of max(0, 1 - x[j] + x[d]) / nClasses.

    Computed by :class:`~.standalone.criterions.MultiLabelMarginCriterion`."""

    lua_types = ("nn.MultiLabelMarginCriterion",)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), isTarget=empty_tensor())


class LuaMultiLabelSoftMarginCriterion(LuaCriterion, MultiLabelSoftMarginCriterion):
    """nn.MultiLabelSoftMarginCriterion: w (log(1 + exp(-|x|)) + max(x, 0) - x t) (the stable form of
    binary cross-entropy on sigmoid(x)), summed over all elements, / nElement if sizeAverage.

    Computed by :class:`~.standalone.criterions.MultiLabelSoftMarginCriterion`; Lua's ``sigmoid`` must be an
    nn.Sigmoid."""

    lua_types = ("nn.MultiLabelSoftMarginCriterion",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        _check_helper(f, "sigmoid", "Sigmoid")  # Lua's gradient is its output
        return super().from_fields(f, convert)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), sigmoid=lua_module("nn.Sigmoid"))


# ----------------------------------------------------------------------------------------------
# Criterions on a pair of inputs {x1, x2}
# ----------------------------------------------------------------------------------------------

class LuaCosineEmbeddingCriterion(LuaCriterion, CosineEmbeddingCriterion):
    """nn.CosineEmbeddingCriterion: with c = cos(x1, x2) (squared norms + 1e-12), 1 - c for y = 1 and
    max(0, c - margin) for y = -1; summed over the batch (rows), / batch size if sizeAverage.

    Computed by :class:`~.standalone.criterions.CosineEmbeddingCriterion`."""

    lua_types = ("nn.CosineEmbeddingCriterion",)
    lua_params = (("margin", 0), ("sizeAverage", True))


class LuaMarginRankingCriterion(LuaCriterion, MarginRankingCriterion):
    """nn.MarginRankingCriterion: max(0, -y (x1 - x2) + margin); a number ``y`` compares x1[1], x2[1]
    only (Lua's non-batch mode), a tensor ``y`` every row (/ its size if sizeAverage).

    Computed by :class:`~.standalone.criterions.MarginRankingCriterion`."""

    lua_types = ("nn.MarginRankingCriterion",)
    lua_params = (("margin", 1), ("sizeAverage", True))


class LuaL1HingeEmbeddingCriterion(LuaCriterion, L1HingeEmbeddingCriterion):
    """nn.L1HingeEmbeddingCriterion: d = ||x1 - x2||_1; d for y = 1, max(0, margin - d) for y = -1
    (no averaging). ``y`` is a number (a 1-element tensor is read as its value; Lua would treat any
    tensor as 1). At x1 = x2 the gradient is 0 where Lua draws a random sign.

    Computed by :class:`~.standalone.criterions.L1HingeEmbeddingCriterion`."""

    lua_types = ("nn.L1HingeEmbeddingCriterion",)
    lua_params = (("margin", 1),)


# ----------------------------------------------------------------------------------------------
# Criterions of criterions
# ----------------------------------------------------------------------------------------------

def _weights_list(f: Fields, n: int) -> list[float]:
    """The ``weights`` of a criterion container: a Lua list (ParallelCriterion) or DoubleStorage
    (MultiCriterion) of finite numbers, of which Lua reads the first ``n`` (one per criterion; longer is
    fine, as Lua never reads the rest)."""
    value = f.raw.get("weights")
    if n == 0:
        return []
    if value is None:
        raise f.error("missing field 'weights' (one number per criterion)")
    items = value.tensor if isinstance(value, t7.Storage) else value
    if isinstance(items, torch.Tensor):
        if items.dim() != 1 or items.dtype == torch.bool or items.is_complex():
            raise f.bad("weights", value, "should be a list of numbers (one per criterion)")
        items = items.tolist()
    elif isinstance(items, dict) and not isinstance(items, t7.TorchObject):
        items = [items.get(i + 1) for i in range(n)]
    elif not isinstance(items, list):
        raise f.bad("weights", value, "should be a list of numbers (one per criterion)")
    if len(items) < n:
        raise f.bad("weights", value, f"should hold {n} number{'s' if n > 1 else ''} (one per criterion)")
    for i, v in enumerate(items[:n]):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise f.bad(f"weights[{i + 1}]", v, "should be a finite number (the weight of criterions"
                                                f"[{i + 1}])")
    return [float(v) for v in items[:n]]


def _criterion_children(f: Fields, convert: ChildConverter) -> list[nn.Module]:
    """The converted ``criterions`` list (a Lua list of criterions) of a criterion container."""
    children = []
    for i, obj in enumerate(f.module_list("criterions")):
        name = f"criterions[{i + 1}]"
        f.check(isinstance(obj, t7.TorchObject), name, obj, "should be a criterion (an nn.*Criterion object)")
        child = convert(obj, f"{f.path}.{name}")
        # a module of a built-in class that is not a criterion (a function-registered converter may
        # return any module; an unsupported class is reported by the conversion)
        if isinstance(child, LuaModule) and not isinstance(child, (LuaCriterion, UnsupportedLuaModule)):
            raise f.bad(name, obj, "should be a criterion (Lua calls criterion:updateOutput(input, target))")
        children.append(child)
    return children


class _LuaCriterionContainer(LuaCriterion):
    """Weighted sum of child criterions (``criterions``, ``weights``) read from Lua; written inline by
    ``convert --format python`` (one line per child, then their weighted sum)."""

    lua_params = ()
    weights_storage: ClassVar[bool] = False

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        children = _criterion_children(f, convert)
        values = {name: cls.read_param(f, name, default) for name, default in cls.lua_params}
        m = cls(children, _weights_list(f, len(children)), **values)
        m.output = _lua_number(f.get("output", 0))
        return m

    def lua_fields(self) -> dict[str, Any]:
        fields = super().lua_fields()
        weights: Any = t7.LuaList(self.weights) if self.weights else t7.LuaTable()
        if self.weights_storage:
            weights = t7.Storage(torch.tensor(self.weights, dtype=torch.float64), "torch.DoubleStorage")
        fields.update(criterions=t7.LuaList(to_lua(c) for c in self.criterions) if len(self.criterions)
                      else t7.LuaTable(), weights=weights)
        return fields

    def python_children(self) -> list[tuple[str, nn.Module]]:
        return [(f"criterions[{i}]", c) for i, c in enumerate(self.criterions, 1)]

    def python_ctor(self, g: CodeGen) -> str:
        """The container as one constructor expression (when it is held by a module, e.g. a graph's
        nn.ModuleFromCriterion, rather than written inline)."""
        children = Code("[" + ", ".join(g.ctor(c).text for c in self.criterions) + "]")
        values = {name: getattr(self, name) for name, _ in self.lua_params}
        return call_expr(g.use(standalone_base(type(self))), children, weights=self.weights, **values)

    def child_pair(self, g: CodeGen, i: int, input: Value, target: Value) -> ListVal:
        """The {input, target} of criterion ``i`` (0-based)."""
        raise NotImplementedError

    def python_forward(self, g: CodeGen, x: Value) -> Value:
        input, target = _input_and_target(g, x)
        losses = [g.emit(c, self.child_pair(g, i, input, target)) for i, c in enumerate(self.criterions)]
        if not losses:
            return g.assign("torch.zeros(())", hint="loss")
        # weights[i] * loss_i summed in order (a weight of 1 left out: x * 1.0 is x)
        terms = [g.expr(v) if w == 1 else f"{w!r} * {g.expr(v)}" for w, v in zip(self.weights, losses)]
        total = " + ".join(terms)
        if len(total) > 80:  # the same sum, wrapped at the commas
            total = call_expr(g.use(sum_in_order), *(Code(t) for t in terms))
        return g.assign(total, hint="loss")


class LuaParallelCriterion(_LuaCriterionContainer, ParallelCriterion):
    """nn.ParallelCriterion: sum of weights[i] * criterions[i](input[i], target[i]); with
    ``repeatTarget`` every criterion gets the whole target.

    Computed by :class:`~.standalone.criterions.ParallelCriterion`."""

    lua_types = ("nn.ParallelCriterion",)
    lua_params = (("repeatTarget", None),)
    lua_table_grad_input = True

    def child_pair(self, g: CodeGen, i: int, input: Value, target: Value) -> ListVal:
        return ListVal((_item(g, input, i), target if self.repeatTarget else _item(g, target, i)))


class LuaMultiCriterion(_LuaCriterionContainer, MultiCriterion):
    """nn.MultiCriterion: sum of weights[i] * criterions[i](input, target).

    Computed by :class:`~.standalone.criterions.MultiCriterion`."""

    lua_types = ("nn.MultiCriterion",)
    weights_storage = True

    def child_pair(self, g: CodeGen, i: int, input: Value, target: Value) -> ListVal:
        return ListVal((input, target))


__all__ = ["LuaCriterion", "LuaCriterionError", "class_nll"] + [
    name for name in dir() if name.startswith("Lua") and name.endswith("Criterion")]
