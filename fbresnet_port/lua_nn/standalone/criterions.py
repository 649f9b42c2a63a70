"""Lua Torch's criterions as ``torch.nn.Module`` losses in plain PyTorch: ``loss = crit(input, target)``.

Ports of torch/nn's ``*Criterion.lua`` and their THNN C kernels (``lib/THNN/generic/*Criterion.c``). Each class
has the fields Lua's ``updateOutput`` reads (``sizeAverage``, ``weights``, ``margin``, ``ignoreIndex``, ...),
takes targets exactly as Lua did (class indices are 1-based, embedding targets are +-1, a number where Lua
accepted one) and returns a 0-dim tensor that autograd differentiates into Lua's ``gradInput`` (including Lua's
choices at ties, e.g. AbsCriterion's +1 at ``input == target``). ``crit.output`` holds the last loss and
``crit.backward(input, target)`` returns the gradient, as in Lua.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import nn

Target = Any  # a tensor, a number, or (table criterions) a list of them
Input = Any   # a tensor or (table criterions) a list of tensors


class CriterionInputError(ValueError):
    """A criterion called with an input or target that Lua's criterion refuses (size, class range)."""


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def map_tensor_tree(x: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``fn`` applied to every tensor of a (nested) list, keeping the list structure."""
    if isinstance(x, (list, tuple)):
        return [map_tensor_tree(v, fn) for v in x]
    return fn(x) if isinstance(x, torch.Tensor) else x


def tensor_leaves(x: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) list, depth first."""
    out: list[torch.Tensor] = []
    map_tensor_tree(x, out.append)
    return out


def keep_grad_where(keep: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` unchanged, but with no gradient where ``keep`` is false (Lua zeroing its gradInput there)."""
    return torch.where(keep, value, value.detach())


class FixedGradient(torch.autograd.Function):
    """``loss`` whose gradient w.r.t. ``input`` is ``grad`` (Lua's own updateGradInput formula)."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grad)
        return loss.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None, None


def size_str(t: torch.Tensor) -> str:
    """A tensor's size as Lua prints it in messages: ``4x5``."""
    return "x".join(str(s) for s in t.shape) or "scalar"


# ----------------------------------------------------------------------------------------------
# Base class
# ----------------------------------------------------------------------------------------------

class Criterion(nn.Module):
    """Base of the criterions (Lua ``nn.Criterion``): ``forward(input, target)`` -> 0-dim loss.

    ``weights_field`` names an optional tensor (class or element weights, a buffer, so ``.double()`` converts
    it); a table criterion (``table_input``) takes ``[x1, x2]``. ``output`` is the last loss (Lua's ``output``),
    ``gradInput`` the last :meth:`backward` result. Subclasses implement :meth:`loss`.
    """

    weights_field: ClassVar[str | None] = None
    weights_required: ClassVar[bool] = False
    table_input: ClassVar[bool] = False

    def __init__(self, weights: torch.Tensor | None = None, sizeAverage: bool | None = True):
        super().__init__()
        self.sizeAverage = sizeAverage
        self.output: Any = 0
        self.gradInput: Any = None
        if self.weights_field is not None:
            if weights is None and self.weights_required:
                raise TypeError(f"{type(self).__name__}: missing '{self.weights_field}'")
            if weights is not None:  # float64 kept, any other type float32 (Lua's float criterion)
                weights = weights.detach().to(torch.float64 if weights.dtype == torch.float64 else torch.float32,
                                              copy=True)
            self.register_buffer(self.weights_field, weights)
        elif weights is not None:
            raise TypeError(f"{type(self).__name__} takes no weights")

    # -- Lua API ---------------------------------------------------------------------------------

    def forward(self, input: Input, target: Target) -> torch.Tensor:
        """Lua ``crit:forward(input, target)`` (``updateOutput``): the loss as a 0-dim tensor."""
        self.check_input(input)
        loss = self.loss(input, target)
        self.output = loss.detach()
        return loss

    def backward(self, input: Input, target: Target) -> Any:
        """Lua ``crit:backward(input, target)``: d loss / d input (a tensor, or a list for table inputs),
        computed by autograd and kept in ``gradInput``."""
        leaves = map_tensor_tree(input, lambda t: t.detach().requires_grad_(t.is_floating_point()))
        with torch.enable_grad():
            loss = self(leaves, target)
        wanted = [t for t in tensor_leaves(leaves) if t.requires_grad]
        grads: list[Any] = [None] * len(wanted)
        if loss.requires_grad and wanted:
            grads = list(torch.autograd.grad(loss, wanted, allow_unused=True))
        found = {id(t): g for t, g in zip(wanted, grads) if g is not None}
        self.gradInput = map_tensor_tree(leaves, lambda t: found.get(id(t), torch.zeros_like(t)))
        return self.gradInput

    def loss(self, input: Input, target: Target) -> torch.Tensor:
        raise NotImplementedError

    def check_input(self, input: Input) -> None:
        """A table criterion takes a list of tensors, the others one tensor."""
        if self.table_input and not isinstance(input, (list, tuple)):
            raise self.error(f"input should be a list (Lua table) of tensors, got {type(input).__name__}")
        if not self.table_input and not isinstance(input, torch.Tensor):
            raise self.error(f"input should be a tensor, got {type(input).__name__}")

    # -- helpers for subclasses -------------------------------------------------------------------

    def error(self, msg: str) -> Exception:
        """The error for an input or target this criterion refuses."""
        return CriterionInputError(f"{type(self).__name__}: {msg}")

    @property
    def size_average(self) -> bool:
        """The ``sizeAverage`` flag (``None``, a field missing from an old file, counts as true)."""
        return self.sizeAverage is None or bool(self.sizeAverage)

    def average(self, total: torch.Tensor, count: int) -> torch.Tensor:
        """``total / count`` if ``sizeAverage``."""
        return total / count if self.size_average else total

    def with_lua_gradient(self, input: torch.Tensor, total: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The loss ``total`` (averaged over the elements if sizeAverage) whose gradient w.r.t. ``input`` is
        ``grad`` (scaled by 1/nElement likewise): for Lua formulas that are not the exact derivative."""
        n = input.numel()
        if self.size_average:
            grad = grad * (1.0 / n)
        return FixedGradient.apply(input, self.average(total, n), grad)

    def weights_buffer(self) -> torch.Tensor | None:
        """The tensor named by ``weights_field`` (None if the class has none or it is unset)."""
        return getattr(self, self.weights_field) if self.weights_field is not None else None

    def weights_tensor(self, like: torch.Tensor) -> torch.Tensor | None:
        """The weights in ``like``'s dtype and device (None without weights)."""
        w = self.weights_buffer()
        return None if w is None else w.to(device=like.device, dtype=like.dtype)

    def float_target(self, input: torch.Tensor, target: Target, same_shape: bool = False) -> torch.Tensor:
        """``target`` as a tensor of ``input``'s shape, dtype and device (THNN pairs elements in order; a number
        is broadcast). ``same_shape`` requires equal sizes, not just element counts."""
        if isinstance(target, (int, float)) and not isinstance(target, bool):
            return torch.full_like(input, float(target))
        if not isinstance(target, torch.Tensor):
            raise self.error(f"target should be a tensor, got {type(target).__name__}")
        if same_shape and target.shape != input.shape:
            raise self.error(f"input and target should have the same size "
                             f"(got {size_str(input)} and {size_str(target)})")
        if target.numel() != input.numel():
            raise self.error(f"input and target size mismatch ({size_str(input)} = {input.numel()} elements, "
                             f"{size_str(target)} = {target.numel()})")
        return target.to(device=input.device, dtype=input.dtype).reshape(input.shape)

    def class_target(self, target: Target, device: torch.device) -> torch.Tensor:
        """1-based class indices as a flat LongTensor (Lua ``target:long()``; a number is one sample)."""
        if isinstance(target, (int, float)) and not isinstance(target, bool):
            return torch.tensor([int(target)], dtype=torch.long, device=device)
        if not isinstance(target, torch.Tensor):
            raise self.error(f"target should be a tensor of 1-based class indices or a number, "
                             f"got {type(target).__name__}")
        return target.to(device=device).long().reshape(-1)

    def check_classes(self, idx: torch.Tensor, n_classes: int, keep: torch.Tensor | None = None) -> None:
        """Raise if a 1-based class index (where ``keep``) is outside 1..n_classes."""
        bad = (idx < 1) | (idx > n_classes)
        if keep is not None:
            bad &= keep
        if bool(bad.any()):
            value = int(idx[bad][0])
            raise self.error(f"target class {value} out of range 1..{n_classes} (Lua class indices are "
                             f"1-based: add 1 to 0-based labels)")

    def weight_for(self, target: torch.Tensor, input: torch.Tensor) -> torch.Tensor | None:
        """Element weights as Lua's BCE/MultiLabelSoftMargin use them: a 1-D target takes ``weights`` element by
        element; a 2-D target repeats them along each row (``weights:view(1, C)``)."""
        w = self.weights_tensor(input)
        if w is None:
            return None
        shape = target.shape if isinstance(target, torch.Tensor) else input.shape
        if len(shape) == 1 and w.numel() == shape[0]:
            return w.reshape(input.shape)
        if len(shape) == 2 and w.numel() == shape[1]:
            return w.reshape(1, -1).expand(shape).reshape(input.shape)
        raise self.error(f"weights of {w.numel()} elements do not fit a target of shape {'x'.join(map(str, shape))} "
                         f"(Lua: one weight per element of a 1-D target, per column of a 2-D target)")


# ----------------------------------------------------------------------------------------------
# Element-wise criterions (THNN: sum over elements, divided by nElement if sizeAverage)
# ----------------------------------------------------------------------------------------------

class PointwiseCriterion(Criterion):
    """Sum of ``pointwise(input, target)`` over the elements, averaged if ``sizeAverage``."""

    same_shape: ClassVar[bool] = False

    def pointwise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, input: torch.Tensor, target: Target) -> torch.Tensor:
        t = self.float_target(input, target, self.same_shape)
        return self.average(self.pointwise(input, t).sum(), input.numel())


class MSECriterion(PointwiseCriterion):
    """Lua nn.MSECriterion: (x - t)^2."""

    def pointwise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z = x - t
        return z * z


class WeightedMSECriterion(MSECriterion):
    """Lua nn.WeightedMSECriterion: MSE against ``target * weight`` (``weight`` per sample when it has
    one dimension less than the input, else element-wise)."""

    weights_field = "weight"
    weights_required = True

    def __init__(self, weights: torch.Tensor | None = None, sizeAverage: bool | None = True):
        super().__init__(weights=weights, sizeAverage=sizeAverage)

    def loss(self, input: torch.Tensor, target: Target) -> torch.Tensor:
        t = self.float_target(input, target)
        w = self.weights_tensor(input)
        per_sample = input.dim() - 1 == w.dim()
        shape = input.shape[1:] if per_sample else input.shape
        if w.numel() != shape.numel():
            raise self.error(f"weight of shape {size_str(w)} does not fit input of shape {size_str(input)}")
        return super().loss(input, t * w.reshape(shape))


class AbsCriterion(PointwiseCriterion):
    """Lua nn.AbsCriterion: |x - t| (gradient +1 at x == t, as THNN)."""

    def pointwise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z = x - t
        return torch.where(z >= 0, z, -z)


class SmoothL1Criterion(PointwiseCriterion):
    """Lua nn.SmoothL1Criterion: 0.5 z^2 if |z| < 1 else |z| - 0.5, z = x - t."""

    def pointwise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z = (x - t).abs()
        return torch.where(z < 1, 0.5 * z * z, z - 0.5)


class SoftMarginCriterion(PointwiseCriterion):
    """Lua nn.SoftMarginCriterion: log(1 + exp(-x t)), targets +-1."""

    def pointwise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.log(1 + torch.exp(-x * t))


class DistKLDivCriterion(PointwiseCriterion):
    """Lua nn.DistKLDivCriterion: t (log t - x) where t > 0 (input: log-probabilities; same sizes)."""

    same_shape = True

    def pointwise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        positive = t > 0
        safe_t = torch.where(positive, t, torch.ones_like(t))
        return torch.where(positive, t * (torch.log(safe_t) - x), torch.zeros_like(x))


class MarginCriterion(PointwiseCriterion):
    """Lua nn.MarginCriterion: max(0, margin - x t), targets +-1."""

    def __init__(self, margin: float = 1, sizeAverage: bool | None = True):
        super().__init__(sizeAverage=sizeAverage)
        self.margin = margin

    def pointwise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.relu(float(self.margin) - x * t)


class BCECriterion(Criterion):
    """Lua nn.BCECriterion: -w (t log(x + eps) + (1 - t) log(1 - x + eps)), eps = 1e-12; input in [0, 1].

    The gradient is THNN's ``-(t - x) / ((1 - x + eps)(x + eps)) * w`` (it differs from the exact
    derivative by eps terms, visibly at x = 0 or 1).
    """

    weights_field = "weights"
    EPS: ClassVar[float] = 1e-12

    def __init__(self, weights: torch.Tensor | None = None, sizeAverage: bool | None = True):
        super().__init__(weights=weights, sizeAverage=sizeAverage)

    def loss(self, input: torch.Tensor, target: Target) -> torch.Tensor:
        w = self.weight_for(target, input)
        t = self.float_target(input, target)
        x = input.detach()
        outside = ~((x >= 0) & (x <= 1))  # NaN too, as THNN's assertion
        if bool(outside.any()):
            raise self.error(f"input values should be between 0 and 1 (probabilities), "
                             f"got {float(x[outside][0]):g}")
        eps = self.EPS
        terms = torch.log(x + eps) * t + torch.log(1.0 - x + eps) * (1.0 - t)
        grad = -(t - x) / ((1.0 - x + eps) * (x + eps))
        if w is not None:
            terms, grad = terms * w, grad * w
        return self.with_lua_gradient(input, -terms.sum(), grad)


class HingeEmbeddingCriterion(Criterion):
    """Lua nn.HingeEmbeddingCriterion: x where y = 1, max(0, margin - x) where y = -1.

    Gradient as Lua's: ``y``, zeroed where y = -1 and x > margin.
    """

    def __init__(self, margin: float = 1, sizeAverage: bool | None = True):
        super().__init__(sizeAverage=sizeAverage)
        self.margin = margin

    def loss(self, input: torch.Tensor, target: Target) -> torch.Tensor:
        y = self.float_target(input, target)
        x = input.detach()
        margin = float(self.margin)
        zero = torch.zeros_like(x)
        total = torch.where(y == -1, zero, x).sum() + torch.where(y == 1, zero, (margin - x).clamp_min(0)).sum()
        return self.with_lua_gradient(input, total, torch.where((y == -1) & (x > margin), zero, y))


# ----------------------------------------------------------------------------------------------
# Classification criterions
# ----------------------------------------------------------------------------------------------

class ClassNLLCriterion(Criterion):
    """Lua nn.ClassNLLCriterion: -sum w[t_i] input[i, t_i] over samples whose target is not ``ignoreIndex``,
    divided (sizeAverage) by the sum of those weights. Input: log-probabilities, batch x classes or one
    sample (1-D); targets: 1-based class indices (a number for one sample)."""

    weights_field = "weights"

    def __init__(self, weights: torch.Tensor | None = None, sizeAverage: bool | None = True,
                 ignoreIndex: int = -100):
        super().__init__(weights=weights, sizeAverage=sizeAverage)
        self.ignoreIndex = ignoreIndex

    def loss(self, input: torch.Tensor, target: Target) -> torch.Tensor:
        return class_nll(self, input, target, self.size_average, int(self.ignoreIndex))


def class_nll(crit: Criterion, input: torch.Tensor, target: Target, size_average: bool,
              ignore_index: int | None) -> torch.Tensor:
    """THNN ``ClassNLLCriterion_updateOutput`` with ``crit``'s class weights (its gradient is THNN's,
    including none at all when the total weight is not positive); ``None``: no ignored index."""
    if input.dim() not in (1, 2):
        raise crit.error(f"input should be 1-D (one sample) or 2-D (batch x classes), got shape {size_str(input)}")
    n_classes = input.shape[-1]
    t = crit.class_target(target, input.device)
    if input.dim() == 1:
        if t.numel() < 1:
            raise crit.error("empty target")
        t, x = t[:1], input.unsqueeze(0)
    else:
        if t.numel() != input.shape[0]:
            raise crit.error(f"target should hold one class index per sample: {input.shape[0]} samples, "
                             f"target of {t.numel()} elements")
        x = input
    keep = t != ignore_index if ignore_index is not None else torch.ones_like(t, dtype=torch.bool)
    crit.check_classes(t, n_classes, keep)
    idx = torch.where(keep, t - 1, torch.zeros_like(t))
    picked = x.gather(1, idx.unsqueeze(1)).squeeze(1)
    w = crit.weights_tensor(input)
    if w is not None:
        if w.numel() != n_classes:
            raise crit.error(f"weights should have one value per class: {n_classes} classes, "
                             f"{w.numel()} weights")
        w = w[idx]
    else:
        w = torch.ones_like(picked)
    w = torch.where(keep, w, torch.zeros_like(w))
    total_weight = w.sum()
    loss = -torch.where(keep, picked * w, torch.zeros_like(w)).sum()
    if size_average:
        nonzero = total_weight != 0
        loss = torch.where(nonzero, loss / torch.where(nonzero, total_weight, torch.ones_like(total_weight)), loss)
    return keep_grad_where(total_weight > 0, loss)


class SpatialClassNLLCriterion(ClassNLLCriterion):
    """Lua nn.SpatialClassNLLCriterion: ClassNLLCriterion over every pixel of a batch x classes x H x W
    input, targets batch x H x W (1-based); sizeAverage divides by the summed weights of all pixels."""

    def __init__(self, weights: torch.Tensor | None = None, sizeAverage: bool | None = True):
        super().__init__(weights=weights, sizeAverage=sizeAverage)

    def loss(self, input: torch.Tensor, target: Target) -> torch.Tensor:
        if input.dim() != 4 or not isinstance(target, torch.Tensor) or target.dim() != 3 \
                or target.shape != (input.shape[0],) + input.shape[2:]:
            got = size_str(target) if isinstance(target, torch.Tensor) else type(target).__name__
            raise self.error(f"input should be batch x classes x H x W and target batch x H x W, "
                             f"got {size_str(input)} and {got}")
        pixels = input.permute(0, 2, 3, 1).reshape(-1, input.shape[1])
        return class_nll(self, pixels, target.reshape(-1), self.size_average, None)


class CrossEntropyCriterion(Criterion):
    """Lua nn.CrossEntropyCriterion: LogSoftMax then ClassNLLCriterion (``nll``: weights, ignoreIndex) on the
    squeezed input and target. Setting ``sizeAverage`` overrides ``nll.sizeAverage`` (Lua's
    ``oldSizeAverage`` rule: only a changed value is propagated)."""

    nll_class: ClassVar[type] = ClassNLLCriterion  # the criterion built when no ``nll`` is given

    def __init__(self, weights: torch.Tensor | None = None, sizeAverage: bool | None = True,
                 oldSizeAverage: bool | None = None, nll: nn.Module | None = None):
        super().__init__(sizeAverage=sizeAverage)
        self.oldSizeAverage = oldSizeAverage
        self.nll = nll if nll is not None else self.nll_class(
            weights=weights, sizeAverage=True if sizeAverage is None else sizeAverage)
        if nll is None:
            self.oldSizeAverage = self.sizeAverage

    def loss(self, input: torch.Tensor, target: Target) -> torch.Tensor:
        if self.sizeAverage != self.oldSizeAverage:
            self.nll.sizeAverage = self.sizeAverage
        self.oldSizeAverage = self.sizeAverage
        x = input.squeeze()
        if x.dim() not in (1, 2):
            raise self.error(f"input of shape {size_str(input)} squeezes to {x.dim()} dimensions; it should "
                             f"squeeze to 1-D (one sample) or 2-D (batch x classes, at least 2 classes)")
        if isinstance(target, torch.Tensor):
            target = target.squeeze()
        logp = torch.log_softmax(x, dim=x.dim() - 1)
        return self.nll(logp, target)


class MultiMarginCriterion(Criterion):
    """Lua nn.MultiMarginCriterion: sum over d != t of w[t] max(0, margin - x[t] + x[d])^p / nClasses
    (p 1 or 2; averaged over samples if sizeAverage); targets 1-based class indices."""

    weights_field = "weights"

    def __init__(self, p: int = 1, margin: float = 1, sizeAverage: bool | None = True,
                 weights: torch.Tensor | None = None):
        super().__init__(weights=weights, sizeAverage=sizeAverage)
        self.p, self.margin = p, margin

    def loss(self, input: torch.Tensor, target: Target) -> torch.Tensor:
        if input.dim() not in (1, 2):
            raise self.error(f"input should be a vector or a matrix, got shape {size_str(input)}")
        x = input if input.dim() == 2 else input.unsqueeze(0)
        nframe, dim = x.shape
        t = self.class_target(target, input.device)
        if input.dim() == 1:
            t = t[:1]
        if t.numel() != nframe:
            raise self.error(f"inconsistent target size: {nframe} samples, target of {t.numel()} elements")
        self.check_classes(t, dim)
        idx = (t - 1).unsqueeze(1)
        z = float(self.margin) - x.gather(1, idx) + x
        h = torch.relu(z)
        if (1 if self.p is None else int(self.p)) != 1:  # THNN: (p == 1) ? z : z*z
            h = h * h
        w = self.weights_tensor(input)
        if w is not None:
            if w.numel() != dim:
                raise self.error(f"weights should have one value per class: {dim} classes, {w.numel()} weights")
            h = h * w[idx]
        others = torch.ones_like(h, dtype=torch.bool).scatter(1, idx, False)
        return self.average(torch.where(others, h, torch.zeros_like(h)).sum() / dim, nframe)


class MultiLabelMarginCriterion(Criterion):
    """Lua nn.MultiLabelMarginCriterion: per sample, the 1-based target classes are listed first and ended
    by 0; sum over targets j and non-targets d of max(0, 1 - x[j] + x[d]) / nClasses."""

    def loss(self, input: torch.Tensor, target: Target) -> torch.Tensor:
        if input.dim() not in (1, 2) or not isinstance(target, torch.Tensor) or target.shape != input.shape:
            got = size_str(target) if isinstance(target, torch.Tensor) else target
            raise self.error(f"input should be a vector or a matrix and target of the same size, got "
                             f"{size_str(input)} and {got}")
        t = target.to(input.device).long()
        if bool(((t < 0) | (t > input.shape[-1])).any()):
            raise self.error(f"target out of range: values should be 1..{input.shape[-1]} (class indices), "
                             f"0 ending the list")
        reduction = "mean" if self.size_average else "sum"
        return nn.functional.multilabel_margin_loss(input, t - 1, reduction=reduction)


class MultiLabelSoftMarginCriterion(Criterion):
    """Lua nn.MultiLabelSoftMarginCriterion: w (log(1 + exp(-|x|)) + max(x, 0) - x t) (the stable form of
    binary cross-entropy on sigmoid(x)), summed over all elements, / nElement if sizeAverage."""

    weights_field = "weights"

    def __init__(self, weights: torch.Tensor | None = None, sizeAverage: bool | None = True):
        super().__init__(weights=weights, sizeAverage=sizeAverage)

    def loss(self, input: torch.Tensor, target: Target) -> torch.Tensor:
        w = self.weight_for(target, input)
        t = self.float_target(input, target)
        ind = (input >= 0).to(input.dtype)
        terms = torch.log(torch.exp(input * ind * -2 + input) + 1) - (t - ind) * input
        if w is not None:
            terms = terms * w
        return self.average(terms.sum(), input.numel())


# ----------------------------------------------------------------------------------------------
# Criterions on a pair of inputs {x1, x2}
# ----------------------------------------------------------------------------------------------

def criterion_pair(crit: Criterion, input: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    if len(input) != 2 or not all(isinstance(x, torch.Tensor) for x in input):
        raise crit.error(f"input should be a list of two tensors {{x1, x2}}, got {len(input)} items")
    x1, x2 = input
    if x1.shape != x2.shape:
        raise crit.error(f"x1 and x2 should have the same size, got {size_str(x1)} and {size_str(x2)}")
    return x1, x2


def sign_targets(crit: Criterion, target: Target, like: torch.Tensor) -> torch.Tensor:
    if isinstance(target, (int, float)) and not isinstance(target, bool):
        return torch.full((1,), float(target), dtype=like.dtype, device=like.device)
    if not isinstance(target, torch.Tensor):
        raise crit.error(f"target should be a tensor of +-1 or a number, got {type(target).__name__}")
    return target.to(device=like.device, dtype=like.dtype).reshape(-1)


class CosineEmbeddingCriterion(Criterion):
    """Lua nn.CosineEmbeddingCriterion: with c = cos(x1, x2) (squared norms + 1e-12), 1 - c for y = 1 and
    max(0, c - margin) for y = -1; summed over the batch (rows), / batch size if sizeAverage."""

    table_input = True
    EPS: ClassVar[float] = 1e-12

    def __init__(self, margin: float = 0, sizeAverage: bool | None = True):
        super().__init__(sizeAverage=sizeAverage)
        self.margin = margin

    def loss(self, input: list[torch.Tensor], target: Target) -> torch.Tensor:
        x1, x2 = criterion_pair(self, input)
        if x1.dim() == 1:
            x1, x2 = x1.view(1, -1), x2.view(1, -1)
        if x1.dim() != 2:
            raise self.error(f"inputs should be vectors or batch x features matrices, got {size_str(x1)}")
        y = sign_targets(self, target, x1)
        if y.numel() != x1.shape[0]:
            raise self.error(f"target should hold one +-1 per row: {x1.shape[0]} rows, {y.numel()} targets")
        dot = (x1 * x2).sum(1)
        inv1 = 1 / ((x1 * x1).sum(1) + self.EPS)
        inv2 = 1 / ((x2 * x2).sum(1) + self.EPS)
        cos = dot * torch.sqrt(inv1 * inv2)
        out = torch.where(y == -1, (cos - float(self.margin)).clamp_min(0), cos)
        out = torch.where(y == 1, 1 - out, out)
        out = keep_grad_where(out > 0, out)  # Lua zeroes the gradient of rows whose loss is <= 0
        return self.average(out.sum(), y.numel())


class MarginRankingCriterion(Criterion):
    """Lua nn.MarginRankingCriterion: max(0, -y (x1 - x2) + margin); a number ``y`` compares x1[1], x2[1]
    only (Lua's non-batch mode), a tensor ``y`` every row (/ its size if sizeAverage)."""

    table_input = True

    def __init__(self, margin: float = 1, sizeAverage: bool | None = True):
        super().__init__(sizeAverage=sizeAverage)
        self.margin = margin

    def loss(self, input: list[torch.Tensor], target: Target) -> torch.Tensor:
        x1, x2 = criterion_pair(self, input)
        margin = float(self.margin)
        if not isinstance(target, torch.Tensor):
            y = sign_targets(self, target, x1)[0]
            dist = -y * (x1.reshape(-1)[0] - x2.reshape(-1)[0]) + margin
            return torch.where(dist >= 0, dist, torch.zeros_like(dist))
        y = self.float_target(x1, target)
        dist = -(x1 - x2) * y + margin
        total = torch.where(dist >= 0, dist, torch.zeros_like(dist)).sum()
        return self.average(total, target.shape[0])


class L1HingeEmbeddingCriterion(Criterion):
    """Lua nn.L1HingeEmbeddingCriterion: d = ||x1 - x2||_1; d for y = 1, max(0, margin - d) for y = -1
    (no averaging). ``y`` is a number (a 1-element tensor is read as its value; Lua would treat any
    tensor as 1). At x1 = x2 the gradient is 0 where Lua draws a random sign."""

    table_input = True

    def __init__(self, margin: float = 1):
        super().__init__()
        self.margin = margin

    def loss(self, input: list[torch.Tensor], target: Target) -> torch.Tensor:
        x1, x2 = criterion_pair(self, input)
        y = sign_targets(self, target, x1)
        if y.numel() != 1:
            raise self.error(f"target should be one number (1 or -1), got {y.numel()} values")
        dist = (x1 - x2).abs().sum()
        if float(y[0]) != -1:
            return dist
        margin = float(self.margin)
        return torch.where(dist > margin, torch.zeros_like(dist), margin - dist)


# ----------------------------------------------------------------------------------------------
# Criterions of criterions
# ----------------------------------------------------------------------------------------------

def sum_in_order(*values: torch.Tensor) -> torch.Tensor:
    """``values[0] + values[1] + ...`` from the left, as Lua's loop over its criterions adds them."""
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


class WeightedCriterionSum(Criterion):
    """Weighted sum of child criterions (``criterions``, ``weights``); Lua's ``add(criterion, weight)``."""

    def __init__(self, criterions: list[nn.Module] | None = None, weights: list[float] | None = None):
        super().__init__()
        self.criterions = nn.ModuleList()
        self.weights: list[float] = []
        for i, c in enumerate(criterions or []):
            self.add(c, 1 if weights is None else weights[i])

    def add(self, criterion: nn.Module, weight: float = 1) -> "WeightedCriterionSum":
        """Lua ``crit:add(criterion, weight)``: append a criterion with its weight (default 1)."""
        self.criterions.append(criterion)
        self.weights.append(float(weight))
        return self

    def weighted_sum(self, terms: list[tuple[float, torch.Tensor]]) -> torch.Tensor:
        return sum_in_order(*(w * loss for w, loss in terms)) if terms else torch.zeros(())


class ParallelCriterion(WeightedCriterionSum):
    """Lua nn.ParallelCriterion: sum of weights[i] * criterions[i](input[i], target[i]); with
    ``repeatTarget`` every criterion gets the whole target."""

    table_input = True

    def __init__(self, criterions: list[nn.Module] | None = None, weights: list[float] | None = None,
                 repeatTarget: bool | None = None):
        super().__init__(criterions, weights)
        self.repeatTarget = repeatTarget

    def loss(self, input: list[Any], target: Target) -> torch.Tensor:
        if len(input) < len(self.criterions):
            raise self.error(f"input should be a list of {len(self.criterions)} items, got {len(input)}")
        if not self.repeatTarget and (not isinstance(target, (list, tuple)) or len(target) < len(self.criterions)):
            raise self.error(f"target should be a list of {len(self.criterions)} targets (or set repeatTarget)")
        return self.weighted_sum([(w, c(input[i], target if self.repeatTarget else target[i]))
                                  for i, (c, w) in enumerate(zip(self.criterions, self.weights))])


class MultiCriterion(WeightedCriterionSum):
    """Lua nn.MultiCriterion: sum of weights[i] * criterions[i](input, target)."""

    def check_input(self, input: Input) -> None:
        pass  # the children check it

    def loss(self, input: Input, target: Target) -> torch.Tensor:
        return self.weighted_sum([(w, c(input, target)) for c, w in zip(self.criterions, self.weights)])


