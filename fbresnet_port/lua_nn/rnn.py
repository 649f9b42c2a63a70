"""Models of the Element-Research ``rnn`` package (and the dpnn table helpers it builds with).

Ports of rnn's AbstractRecurrent.lua (step counter, hidden state, ``forget``), LSTM.lua / FastLSTM.lua,
GRU.lua, Recursor.lua, Sequencer.lua / AbstractSequencer.lua (``remember`` modes), BiSequencer.lua,
MaskZero.lua, SeqLSTM.lua, LinearNoBias.lua, SAdd.lua, of dpnn's ReverseTable.lua / ZipTable.lua /
Decorator.lua, and of jcjohnson/torch-rnn's LSTM.lua (also named ``nn.LSTM``: told apart by its fields),
VanillaRNN.lua, TemporalAdapter.lua and LanguageModel.lua (whole N x T sequences per call).

How the Lua machinery maps to PyTorch:

* An AbstractRecurrent module (``nn.LSTM``, ``nn.FastLSTM``, ``nn.GRU``, ``nn.Recursor``) does ONE time
  step per call, as Lua's ``updateOutput``: ``lstm(x_t)`` returns h_t and keeps (h_t, c_t) for the next
  call. Its ``recurrentModule`` (the step module Lua builds out of nn modules, or an nngraph gModule) is
  converted like any other module tree and shared by every step. In training mode Lua's per-step
  clones (``sharedClones``) and its back-propagation through time are what autograd does over the
  repeated calls. In evaluate mode Lua's backward linearises every step at the LAST step's state
  (see :func:`_lua_eval_step`); that is reproduced too (``lua_eval_backward = False``: exact).
* :func:`forget` (Lua ``module:forget()``) restarts every recurrent module inside a tree from its
  initial state (zeros, or the ``userPrevOutput`` / ``userPrevCell`` tensors a model carries).
* ``nn.Sequencer`` runs its module over a sequence (a list of T tensors, or a tensor whose first
  dimension is time) and forgets before each sequence unless its ``remember`` mode covers the current
  train/evaluate mode. A remembered state continues the forward values; the backward of a sequence
  stops at its first step, as Lua's.
* Switching a Sequencer or SeqLSTM between training and evaluation forgets (Lua's ``training()`` /
  ``evaluate()``); ``.double()`` / ``.float()`` / ``.to()`` of an LSTM or FastLSTM forgets too (Lua's
  ``LSTM:type``), while a GRU, Recursor or SeqLSTM keeps its state, converted.
* A model saved by Lua after some forward calls carries its state: the step counter, the outputs
  (and cells) of the last step, the remember mode. They are read from the file and continued from.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from .. import t7
from ..errors import UserError
from ._base import (ChildConverter, Fields, LuaModule, empty_tensor, export_param, export_weights, float_param,
                    lua_str, to_lua)
from .graph import lua_array
from .layers import LuaLinear
from .simple import REQUIRED, SimpleLuaModule

__all__ = ["forget", "remember", "RecurrentInputError", "LuaLinearNoBias", "LuaSAdd", "LuaReverseTable",
           "LuaZipTable", "LuaMaskZero", "LuaLSTM", "LuaGRU", "LuaRecursor", "LuaSequencer", "LuaBiSequencer",
           "LuaSeqLSTM", "LuaTorchRnnLSTM", "LuaVanillaRNN", "LuaTemporalAdapter", "LuaLanguageModel",
           "LuaDecorator", "LuaInception"]

REMEMBER_MODES = ("both", "eval", "train", "neither")


class RecurrentInputError(UserError, ValueError):
    """A recurrent module called with an input or a setting it cannot take (names the fix)."""


# ----------------------------------------------------------------------------------------------
# Small modules: LinearNoBias, SAdd, ReverseTable, ZipTable
# ----------------------------------------------------------------------------------------------

class LuaLinearNoBias(LuaLinear):
    """rnn's nn.LinearNoBias: an nn.Linear without bias (``weight`` only)."""

    lua_types = ("nn.LinearNoBias",)


class LuaSAdd(SimpleLuaModule):
    """rnn's nn.SAdd(addend, negate): ``x + addend``, negated when ``negate``."""

    lua_types = ("nn.SAdd",)
    lua_params = (("addend", REQUIRED), ("negate", False))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = input + self.addend
        return -out if self.negate else out


class LuaReverseTable(SimpleLuaModule):
    """dpnn's nn.ReverseTable: the list in reverse order."""

    lua_types = ("nn.ReverseTable",)
    lua_table_output = lua_table_grad_input = True

    def forward(self, input: list[Any]) -> list[Any]:
        return list(reversed(_as_list(input, self.lua_typename)))


class LuaZipTable(SimpleLuaModule):
    """dpnn's nn.ZipTable: ``{{a1, a2}, {b1, b2}}`` -> ``{{a1, b1}, {a2, b2}}``."""

    lua_types = ("nn.ZipTable",)
    lua_table_output = lua_table_grad_input = True

    def forward(self, input: list[list[Any]]) -> list[list[Any]]:
        out: list[list[Any]] = []
        for i, inner in enumerate(_as_list(input, self.lua_typename)):
            for j, x in enumerate(_as_list(inner, self.lua_typename)):
                if j == len(out):
                    out.append([])
                if len(out[j]) != i:
                    raise RecurrentInputError(f"{self.lua_typename}: the inner lists have different lengths; "
                                              f"give lists of equal length")
                out[j].append(x)
        return out

    def lua_fields(self) -> dict[str, Any]:
        return {"modules": t7.LuaTable()}


def _as_list(input: Any, who: str) -> list[Any]:
    if not isinstance(input, (list, tuple)):
        raise RecurrentInputError(f"{who}: expected a list (Lua table) input, got {type(input).__name__}")
    return list(input)


def _first_tensor(input: Any, who: str) -> torch.Tensor:
    """Lua ``recursiveGetFirst``: the first tensor of a nested list."""
    while isinstance(input, (list, tuple)):
        if not input:
            raise RecurrentInputError(f"{who}: empty list input")
        input = input[0]
    if not isinstance(input, torch.Tensor):
        raise RecurrentInputError(f"{who}: expected a tensor or a list of tensors, got {type(input).__name__}")
    return input


def _zero_rows(x: torch.Tensor, batch: bool) -> torch.Tensor:
    """The rows of ``x`` (all of it when not ``batch``) whose L2 norm is 0, as a bool vector.

    The squares are summed in float64 (THNN's accumulation type for float and double tensors)."""
    rows = x.reshape(x.shape[0] if batch else 1, -1)
    return rows.double().pow(2).sum(1) == 0


def _mask_rows(output: Any, zero: torch.Tensor, batch: bool) -> Any:
    """Lua ``maskedFill(mask, 0)`` of every tensor in ``output``: rows flagged in ``zero`` become 0."""
    if isinstance(output, (list, tuple)):
        return [_mask_rows(o, zero, batch) for o in output]
    mask = zero.reshape([-1] + [1] * (output.dim() - 1)) if batch else zero.reshape([1] * output.dim())
    return torch.where(mask, torch.zeros((), dtype=output.dtype, device=output.device), output)


class LuaMaskZero(LuaModule, nn.Module):
    """rnn's nn.MaskZero(module, nInputDim): runs ``module``; rows of its output whose row of the (first)
    input is all zeros are set to zero (their gradients are zero too). Around a recurrent step module
    (``lstm:maskZero(1)``) this also resets the hidden state of those rows."""

    lua_types = ("nn.MaskZero",)

    def __init__(self, module: nn.Module, n_input_dim: int):
        super().__init__()
        self.module = module
        self.nInputDim = int(n_input_dim)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        return cls(_single_child(f, convert), f.int("nInputDim"))

    def forward(self, input: Any) -> Any:
        first = _first_tensor(input, self.lua_typename)
        if first.dim() == self.nInputDim:
            batch = False
        elif first.dim() - 1 == self.nInputDim:
            batch = True
        else:
            raise RecurrentInputError(
                f"{self.lua_typename}: input has {first.dim()} dimensions but nInputDim is {self.nInputDim} "
                f"(expected {self.nInputDim} or {self.nInputDim + 1} dimensions with a batch)")
        zero = _zero_rows(first, batch)
        return _mask_rows(self.module(input), zero, batch)

    def lua_fields(self) -> dict[str, Any]:
        return {"modules": t7.LuaList([to_lua(self.module)]), "nInputDim": self.nInputDim}

    def lua_str(self) -> str:
        return _decorator_str(self, self.module)


def _decorator_str(module: LuaModule, child: nn.Module) -> str:
    """nn.Decorator's ``tostring``: ``<class> @ <child>``."""
    return f"{module.lua_typename} @ {lua_str(child)}"


def _single_child(f: Fields, convert: ChildConverter, *names: str) -> nn.Module:
    """Convert the decorated module: the first of ``names`` present, else ``modules[1]``."""
    for name in names:
        if f.has(name):
            return convert(f.get(name), f"{f.path}.{name}")
    mods = f.get("modules")
    if isinstance(mods, list) and len(mods) >= 1:
        return convert(mods[0], f"{f.path}.modules[1]")
    raise f.error("missing the decorated module (field 'modules')")


# ----------------------------------------------------------------------------------------------
# Fields kept for export
# ----------------------------------------------------------------------------------------------

def _scalar_fields(f: Fields, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The number/string/boolean fields of a Lua object (re-exported unchanged)."""
    return {k: v for k, v in f.raw.items()
            if isinstance(k, str) and isinstance(v, (bool, int, float, str)) and k not in skip
            and k not in ("train", "_type")}


def _module_path(root: "t7.TorchObject", target: "t7.TorchObject") -> list[int] | None:
    """Indices through nested ``modules`` lists that lead from ``root`` to ``target`` (identity)."""
    stack: list[tuple[Any, list[int]]] = [(root, [])]
    seen: set[int] = set()
    while stack:
        obj, path = stack.pop()
        if obj is target:
            return path
        if not isinstance(obj, t7.TorchObject) or id(obj) in seen:
            continue
        seen.add(id(obj))
        mods = obj.fields.get("modules")
        if isinstance(mods, list):
            stack.extend((m, path + [i]) for i, m in reversed(list(enumerate(mods))))
    return None


def _alias_paths(f: Fields, handled: tuple[str, ...]) -> dict[str, list[int]]:
    """Fields of ``f`` that name a module of its own tree (FastLSTM's ``i2g``, BiSequencer's ``fwdSeq``)."""
    out: dict[str, list[int]] = {}
    for k, v in f.raw.items():
        if isinstance(k, str) and k not in handled and isinstance(v, t7.TorchObject):
            path = _module_path(f.obj, v)
            if path:
                out[k] = path
    return out


def _follow(obj: "t7.TorchObject", path: list[int]) -> "t7.TorchObject | None":
    for i in path:
        mods = obj.fields.get("modules") if isinstance(obj, t7.TorchObject) else None
        if not isinstance(mods, list) or i >= len(mods):
            return None
        obj = mods[i]
    return obj


def _with_aliases(obj: "t7.TorchObject", aliases: dict[str, list[int]]) -> "t7.TorchObject":
    for name, path in aliases.items():
        target = _follow(obj, path)
        if target is not None:
            obj.fields[name] = target
    return obj


class _ExportsAliases(LuaModule):
    """Re-exports the scalar fields and the module aliases read from the Lua object."""

    lua_scalars: dict[str, Any]
    lua_aliases: dict[str, list[int]]

    def keep_lua_fields(self, f: Fields, handled: tuple[str, ...], skip_scalars: tuple[str, ...] = ()) -> None:
        self.lua_scalars = _scalar_fields(f, skip_scalars)
        self.lua_aliases = _alias_paths(f, handled)

    def to_lua(self) -> "t7.TorchObject":
        return _with_aliases(super().to_lua(), getattr(self, "lua_aliases", {}))


# ----------------------------------------------------------------------------------------------
# Hidden state: forget / remember / detach over a module tree
# ----------------------------------------------------------------------------------------------

class _Stateful:
    """A module that carries state between forward calls (Lua's step counter and hidden state)."""

    def reset_state(self) -> None:
        """Lua ``forget()`` of this module alone."""
        raise NotImplementedError

    def detach_state(self) -> None:
        """Cut the autograd history of the carried state (a new sequence's backward stops there)."""
        raise NotImplementedError


def forget(module: nn.Module) -> nn.Module:
    """Lua ``module:forget()``: every recurrent module in the tree restarts from its initial state."""
    for m in module.modules():
        if isinstance(m, _Stateful):
            m.reset_state()
    return module


def _detach_all(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, _Stateful):
            m.detach_state()


def _check_remember(mode: Any) -> str:
    if mode not in REMEMBER_MODES:
        raise RecurrentInputError(f"unrecognized remember mode {mode!r}; use one of {', '.join(REMEMBER_MODES)}")
    return mode


def remember(module: nn.Module, mode: str = "both") -> nn.Module:
    """Lua ``module:remember(mode)``: sets the mode of every Sequencer and SeqLSTM in the tree
    ('both', 'eval', 'train' or 'neither': in which of training / evaluation the state is kept
    from one sequence to the next)."""
    _check_remember(mode)
    if isinstance(module, (_Remembers, LuaBiSequencer)):
        module.remember(mode)  # an AbstractSequencer sets its own mode and stops there, as in Lua
    else:
        for child in module.children():
            remember(child, mode)
    return module


class _Remembers(_Stateful):
    """Lua AbstractSequencer's ``_remember`` and the forget-on-mode-switch of training()/evaluate()."""

    remember_mode: str = "neither"
    training: bool

    def remember(self, mode: str = "both") -> "_Remembers":
        """Lua ``seq:remember(mode)`` (default 'both')."""
        self.remember_mode = _check_remember(mode)
        return self

    def has_memory(self) -> bool:
        """Lua ``hasMemory()``: whether the current mode keeps the state across sequences."""
        return self.remember_mode in (("both", "train") if self.training else ("both", "eval"))

    def train(self, mode: bool = True):  # type: ignore[override]
        if bool(mode) != self.training:
            self.forget()
        return super().train(mode)  # type: ignore[misc]

    def forget(self):
        return forget(self)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# AbstractRecurrent: LSTM, FastLSTM, GRU, Recursor
# ----------------------------------------------------------------------------------------------

def _leaves(x: Any) -> list[torch.Tensor]:
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _leaves(v)]
    return [x] if isinstance(x, torch.Tensor) else []


def _rebuild(x: Any, it: Any) -> Any:
    """``x``'s nesting filled with the next tensors of the iterator ``it``."""
    if isinstance(x, (list, tuple)):
        return [_rebuild(v, it) for v in x]
    return next(it) if isinstance(x, torch.Tensor) else x


class _LastStep:
    """What a recurrent module's step module holds after a step, as Lua's buffers do: the step
    number, its input, the state it started from and the state it produced."""

    def __init__(self, step: int, input: Any, prev: list[torch.Tensor], state: list[torch.Tensor]):
        self.step = step
        self.input = _rebuild(input, iter([t.detach() for t in _leaves(input)]))
        self.prev = [t.detach() for t in prev]
        self.state = [t.detach() for t in state]


def _direct_modules(m: nn.Module) -> list[nn.Module]:
    """The modules of a step module that Lua's ``updateGradInput(input, ...)`` hands the given input
    to: Sequential passes it to its first module, ConcatTable / ParallelTable / decorators to every
    child; any other module keeps references to the tensors of its last forward (an nngraph gModule
    reads every node's input from its forward)."""
    name = getattr(m, "lua_typename", "")
    children = list(m.children())
    if name == "nn.gModule":
        return []
    if name == "nn.Sequential":
        return _direct_modules(children[0]) if children else []
    if name in ("nn.ConcatTable", "nn.ParallelTable", "nn.MaskZero"):
        return [d for c in children for d in _direct_modules(c)]
    return [m]


class _SavedSwap:
    """``saved_tensors_hooks`` packing: a tensor saved for backward that lies in the storage of a
    ``src`` tensor is replaced by the same view of ``dst`` (Lua modules read the tensor objects they
    kept, whose values have changed since)."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]):
        self.pairs = [(s, d.detach().contiguous()) for s, d in pairs
                      if s.numel() > 0 and tuple(s.shape) == tuple(d.shape)]

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        if t.layout != torch.strided or t.device.type == "meta":
            return t
        ptr = t.untyped_storage().data_ptr()
        for src, dst in self.pairs:
            if ptr == src.untyped_storage().data_ptr():
                return dst.as_strided(t.size(), t.stride(), t.storage_offset() - src.storage_offset())
        return t

    def hooks(self) -> Any:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


def _lua_eval_vjp(owner: "_LuaRecurrent", step: int, input: Any, grads: tuple[torch.Tensor | None, ...],
                  n_out: int, params: list[nn.Parameter]) -> list[torch.Tensor | None]:
    """Lua's evaluate-mode ``updateGradInput`` + ``accGradParameters`` of one step (see
    :func:`_lua_eval_step`): the step module linearised at the LAST step it ran, the modules that
    get the input directly reading this step's input and previous state, the others the tensors
    they kept (the previous state's buffers now hold the last state)."""
    last = owner.last_step
    first = owner.first_state
    with torch.enable_grad():
        x_in = [t.clone().requires_grad_(t.is_floating_point()) for t in _leaves(last.input)]
        prev_in = [t.clone().requires_grad_(True) for t in last.prev]
        x_struct = _rebuild(last.input, iter(x_in))
        # the state this step was handed: the initial one at step 1, else Lua's output/cell buffers
        passed_prev = first if step == 1 else last.state
        kept_prev = first if last.step == 1 else last.state
        kept = _SavedSwap(list(zip(prev_in, kept_prev)))
        direct = _SavedSwap(list(zip(x_in, _leaves(input))) + list(zip(prev_in, passed_prev)))
        handles = []
        for m in _direct_modules(owner.recurrentModule):
            stack: list[Any] = []
            handles.append(m.register_forward_pre_hook(functools.partial(_enter, stack, direct)))
            handles.append(m.register_forward_hook(functools.partial(_exit, stack)))
        for m in owner.recurrentModule.modules():
            if getattr(m, "lua_typename", "") == "nn.Dropout" and not getattr(m, "inplace", False):
                # Lua's Dropout output is a copy of its input, not the input tensor itself
                handles.append(m.register_forward_hook(lambda mod, args, out: out.clone()))
        try:
            with kept.hooks():
                output, state = owner.step_forward(x_struct, prev_in)
        finally:
            for h in handles:
                h.remove()
        outs = _unique(_leaves(output) + list(state))[:n_out]
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
        candidates = x_in + prev_in + params
        wrt = [t for t in candidates if t.requires_grad]
        got = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)
                   if pairs and wrt else [None] * len(wrt))
    return [next(got) if t.requires_grad else None for t in candidates]


def _enter(stack: list[Any], swap: _SavedSwap, module: nn.Module, args: Any) -> None:
    cm = swap.hooks()
    cm.__enter__()
    stack.append(cm)


def _exit(stack: list[Any], module: nn.Module, args: Any, output: Any) -> None:
    stack.pop().__exit__(None, None, None)


def _unique(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for t in tensors:
        if not any(t is u for u in out):
            out.append(t)
    return out


class _LuaEvalStep(torch.autograd.Function):
    """One evaluate-mode step: the normal forward; Lua's backward (:func:`_lua_eval_vjp`)."""

    @staticmethod
    def forward(ctx: Any, owner: "_LuaRecurrent", step: int, input: Any, box: dict, n_prev: int,
                *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n_x = len(_leaves(input))
        x = list(tensors[:n_x])
        prev = list(tensors[n_x:n_x + n_prev])
        output, state = owner.step_forward(_rebuild(input, iter(x)), prev)
        outs = _unique(_leaves(output) + list(state))
        index = lambda t: next(i for i, o in enumerate(outs) if o is t)  # noqa: E731
        box["output"] = _rebuild(output, iter([index(t) for t in _leaves(output)]))
        box["state"] = [index(t) for t in state]
        ctx.owner, ctx.step, ctx.n_out = owner, step, len(outs)
        ctx.input = _rebuild(input, iter([t.detach() for t in x]))
        # outputs that are inputs (an Identity step) must be new tensors for autograd
        return tuple(o.view_as(o) if any(o is t for t in tensors) else o for o in outs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        owner = ctx.owner
        params = list(owner.recurrentModule.parameters())
        got = _lua_eval_vjp(owner, ctx.step, ctx.input, grads, ctx.n_out, params)
        return (None, None, None, None, None, *got)


def _lua_eval_step(owner: "_LuaRecurrent", input: Any, prev: list[torch.Tensor]) -> tuple[Any, list[torch.Tensor]]:
    """An evaluate-mode step whose backward is Lua rnn's.

    In evaluate mode Lua runs every step with the one ``recurrentModule``, whose output and cell
    buffers are the per-step states (all the same tensors); its backward then builds each step's
    clone from that module, i.e. from the state of the LAST step, and hands it the previous state's
    buffers, which hold the last state (the initial state at step 1). Training mode keeps one clone
    per step and is exact back-propagation through time (plain autograd here).
    """
    box: dict[str, Any] = {}
    params = list(owner.recurrentModule.parameters())
    outs = _LuaEvalStep.apply(owner, owner.step, input, box, len(prev), *_leaves(input), *prev, *params)
    return _pick(box["output"], outs), [outs[i] for i in box["state"]]


def _pick(index: Any, outs: tuple[torch.Tensor, ...]) -> Any:
    return [_pick(i, outs) for i in index] if isinstance(index, list) else outs[index]


def _state_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor) and value.numel() > 0:
        return float_param(value)
    return None


def _step_table(f: Fields, name: str, step: int) -> torch.Tensor | None:
    table = f.get(name)
    if isinstance(table, list):
        value = table[step - 1] if 1 <= step <= len(table) else None
    elif isinstance(table, dict):
        value = table.get(step, table.get(float(step)))
    else:
        value = None
    return _state_tensor(value)


class _LuaRecurrent(_ExportsAliases, _Stateful, nn.Module):
    """Lua nn.AbstractRecurrent: one time step per call, the state kept until :meth:`forget`.

    ``state_tables`` names the Lua tables holding the per-step state ('outputs', 'cells') and
    ``user_fields`` the user-given initial state ('userPrevOutput', 'userPrevCell').
    """

    state_tables: ClassVar[tuple[str, ...]] = ()
    user_fields: ClassVar[tuple[str, ...]] = ()
    forget_on_type: ClassVar[bool] = False
    #: evaluate mode: reproduce Lua's backward (every step linearised at the last step's state);
    #: False gives the exact back-propagation through time in evaluate mode too.
    lua_eval_backward: bool = True

    def __init__(self, recurrent_module: nn.Module, *, rho: int = 9999, output_size: int | None = None,
                 input_size: int | None = None):
        super().__init__()
        self.recurrentModule = recurrent_module
        self.rho = rho
        self.outputSize = output_size
        self.inputSize = input_size
        self.step = 1
        self.state: list[torch.Tensor] | None = None
        self.last_step: _LastStep | None = None
        self.first_state: list[torch.Tensor] = []
        self.user_state: list[torch.Tensor | None] = [None] * len(self.user_fields)
        self.lua_scalars = {}
        self.lua_aliases = {}

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = cls(_single_child(f, convert, "recurrentModule"), rho=f.int("rho", 9999),
                output_size=f.int("outputSize", None), input_size=f.int("inputSize", None))
        m.keep_lua_fields(f, ("recurrentModule", "module"), ("step", "rho", "inputSize", "outputSize",
                                                            "updateGradInputStep", "accGradParametersStep",
                                                            "nSharedClone"))
        step = f.int("step", 1)
        if step > 1 and cls.state_tables:
            state = [_step_table(f, name, step - 1) for name in cls.state_tables]
            if all(s is not None for s in state):
                m.step, m.state = step, state
        elif step > 1:
            m.step = step
        m.user_state = [_state_tensor(f.get(name)) for name in cls.user_fields]
        return m

    # -- state -----------------------------------------------------------------------------
    def reset_state(self) -> None:
        self.step = 1
        self.state = None

    def detach_state(self) -> None:
        if self.state is not None:
            self.state = [s.detach() for s in self.state]

    def forget(self) -> nn.Module:
        """Lua ``forget()``: the next call is step 1 again (this module and the ones inside)."""
        return forget(self)

    def initial_state(self, input: torch.Tensor) -> list[torch.Tensor]:
        """Lua ``getHiddenState(0, input)``: the user's tensors, else zeros (batch, outputSize)."""
        if self.outputSize is None:
            raise RecurrentInputError(f"{self.lua_typename}: unknown outputSize (field missing in the model)")
        shape = (input.shape[0], self.outputSize) if input.dim() == 2 else (self.outputSize,)
        return [u if u is not None else torch.zeros(shape, dtype=input.dtype, device=input.device)
                for u in self.user_state]

    def forward(self, input: Any) -> Any:
        if self.state is None:
            if not isinstance(input, torch.Tensor) and self.state_tables:
                raise RecurrentInputError(f"{self.lua_typename}: expected one time step as a tensor "
                                          f"(batch x inputSize or inputSize), got {type(input).__name__}")
            prev = self.initial_state(input) if self.state_tables else []
            self.first_state = [t.detach() for t in prev]
        else:
            prev = self.state
            if isinstance(input, torch.Tensor) and prev and input.dim() == 2 and prev[0].dim() == 2 \
                    and input.shape[0] != prev[0].shape[0]:
                raise RecurrentInputError(f"{self.lua_typename}: batch size {input.shape[0]} differs from the "
                                          f"state's {prev[0].shape[0]} (step {self.step}); call forget() first")
        if self.uses_lua_eval_backward(input, prev):
            output, state = _lua_eval_step(self, input, prev)
        else:
            output, state = self.step_forward(input, prev)
        self.last_step = _LastStep(self.step, input, prev, state)
        self.state = state
        self.step += 1
        return output

    def uses_lua_eval_backward(self, input: Any, prev: list[torch.Tensor]) -> bool:
        """Whether this step's backward is Lua's evaluate-mode one (see :func:`_lua_eval_step`)."""
        if self.training or not self.lua_eval_backward or not torch.is_grad_enabled():
            return False
        if any(isinstance(m, _Stateful) for m in self.recurrentModule.modules()):
            return False  # recurrent modules inside keep their own steps: plain autograd
        return any(t.requires_grad for t in _leaves([input, prev])) or \
            any(p.requires_grad for p in self.recurrentModule.parameters())

    def step_forward(self, input: Any, prev: list[torch.Tensor]) -> tuple[Any, list[torch.Tensor]]:
        raise NotImplementedError

    def _apply(self, fn: Callable, recurse: bool = True):  # type: ignore[override]
        if self.forget_on_type:
            self.reset_state()
            self.user_state = [None] * len(self.user_fields)
        result = super()._apply(fn, recurse)
        if self.state is not None:
            self.state = [fn(s) for s in self.state]
        self.user_state = [None if u is None else fn(u) for u in self.user_state]
        return result

    # -- export ------------------------------------------------------------------------------
    def lua_fields(self) -> dict[str, Any]:
        rm = to_lua(self.recurrentModule)
        fields: dict[str, Any] = dict(self.lua_scalars)
        fields.update(recurrentModule=rm, modules=t7.LuaList([rm]), sharedClones=t7.LuaList([rm]),
                      rho=self.rho, step=self.step, outputs=t7.LuaTable(), gradInputs=t7.LuaTable(),
                      gradOutputs=t7.LuaTable(), _gradOutputs=t7.LuaTable())
        if self.outputSize is not None:
            fields["outputSize"] = self.outputSize
        if self.inputSize is not None:
            fields["inputSize"] = self.inputSize
        if self.state_tables:
            fields.update(zeroTensor=empty_tensor(), cells=t7.LuaTable(), gradCells=t7.LuaTable())
            for name, value in zip(self.state_tables, self.state or []):
                fields[name] = t7.LuaTable({self.step - 1: export_param(value)})
        for name, value in zip(self.user_fields, self.user_state):
            if value is not None:
                fields[name] = export_param(value)
        return fields

    def lua_str(self) -> str:
        if self.inputSize is not None and self.outputSize is not None:
            return f"{self.lua_typename}({self.inputSize} -> {self.outputSize})"
        return self.lua_typename


class LuaLSTM(_LuaRecurrent):
    """rnn's nn.LSTM and nn.FastLSTM: ``recurrentModule{x_t, h_{t-1}, c_{t-1}} = {h_t, c_t}``; returns h_t.
    torch-rnn's nn.LSTM (told apart by its fields) runs whole N x T x D sequences instead.

    torch-rnn's class of the same name (fields ``weight``, ``hidden_dim``, no ``recurrentModule``)
    converts to :class:`LuaTorchRnnLSTM`."""

    lua_types = ("nn.LSTM", "nn.FastLSTM")
    state_tables = ("outputs", "cells")
    user_fields = ("userPrevOutput", "userPrevCell")
    forget_on_type = True

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        if f.typename == "nn.LSTM" and not f.has("recurrentModule") and (f.has("hidden_dim") or f.has("weight")):
            return LuaTorchRnnLSTM.from_fields(f, convert)
        return super().from_fields(f, convert)

    def step_forward(self, input: torch.Tensor, prev: list[torch.Tensor]) -> tuple[Any, list[torch.Tensor]]:
        out = self.recurrentModule([input, prev[0], prev[1]])
        return out[0], [out[0], out[1]]


class LuaGRU(_LuaRecurrent):
    """rnn's nn.GRU: ``recurrentModule{x_t, h_{t-1}} = h_t``."""

    lua_types = ("nn.GRU",)
    state_tables = ("outputs",)
    user_fields = ("userPrevOutput",)

    def step_forward(self, input: torch.Tensor, prev: list[torch.Tensor]) -> tuple[Any, list[torch.Tensor]]:
        out = self.recurrentModule([input, prev[0]])
        return out, [out]

    def lua_str(self) -> str:
        return f"{self.lua_typename}({self.inputSize} -> {self.outputSize}, {float(self.lua_scalars.get('p', 0)):.2f})"


class LuaRecursor(_LuaRecurrent):
    """rnn's nn.Recursor(module): makes any module a one-step-per-call recurrent module (the steps
    share the parameters; recurrent modules inside keep their own state)."""

    lua_types = ("nn.Recursor",)

    def step_forward(self, input: Any, prev: list[torch.Tensor]) -> tuple[Any, list[torch.Tensor]]:
        return self.recurrentModule(input), []

    def lua_fields(self) -> dict[str, Any]:
        fields = super().lua_fields()
        fields["module"] = fields["recurrentModule"]
        return fields

    def lua_str(self) -> str:
        return _decorator_str(self, self.recurrentModule)


# ----------------------------------------------------------------------------------------------
# Sequencers
# ----------------------------------------------------------------------------------------------

def _time_steps(input: Any, who: str) -> tuple[list[Any], bool]:
    if isinstance(input, torch.Tensor):
        if input.dim() == 0:
            raise RecurrentInputError(f"{who}: expected a sequence, got a 0-dimensional tensor")
        return list(input.unbind(0)), True
    if isinstance(input, (list, tuple)):
        return list(input), False
    raise RecurrentInputError(f"{who}: expected a sequence (a list of T tensors, or a tensor with time as "
                              f"its first dimension), got {type(input).__name__}")


class LuaSequencer(_ExportsAliases, _Remembers, nn.Module):
    """rnn's nn.Sequencer(module): the module applied to each element of a sequence, in order.

    The input is a list of T steps (the output is a list) or a tensor T x ... (the output is a tensor).
    The state of the recurrent modules inside is forgotten before each sequence unless the
    ``remember`` mode covers the current mode (default 'neither')."""

    lua_types = ("nn.Sequencer",)

    def __init__(self, module: nn.Module, remember_mode: str = "neither"):
        super().__init__()
        self.module = module
        self.remember_mode = _check_remember(remember_mode)
        self.lua_scalars = {}
        self.lua_aliases = {}

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        remember_mode = f.get("_remember", "neither")
        if remember_mode not in REMEMBER_MODES:
            raise f.error(f"unknown remember mode {remember_mode!r}")
        m = cls(_single_child(f, convert, "module"), remember_mode)
        m.keep_lua_fields(f, ("module",), ("_remember",))
        return m

    def reset_state(self) -> None:
        pass

    def detach_state(self) -> None:
        pass

    def forward(self, input: Any) -> Any:
        steps, is_tensor = _time_steps(input, self.lua_typename)
        if self.has_memory():
            _detach_all(self.module)
        else:
            forget(self.module)
        outputs = [self.module(x) for x in steps]
        if is_tensor:
            if not outputs:
                return input.new_empty((0,))
            return torch.stack(outputs, 0)
        return outputs

    def lua_fields(self) -> dict[str, Any]:
        child = to_lua(self.module)
        fields = dict(self.lua_scalars)
        fields.update(module=child, modules=t7.LuaList([child]), _remember=self.remember_mode,
                      output=t7.LuaTable(), tableoutput=t7.LuaTable(), _output=t7.LuaTable(),
                      tablegradInput=t7.LuaTable(),
                      dpnn_mediumEmpty=t7.LuaList(["output", "gradInput", "momGradParams", "dpnn_input", "_output"]))
        return fields

    def lua_str(self) -> str:
        return _decorator_str(self, self.module)


class LuaBiSequencer(_ExportsAliases, nn.Module):
    """rnn's nn.BiSequencer: its ``module`` = Sequential{ConcatTable{fwdSeq, Sequential{ReverseTable,
    bwdSeq, ReverseTable}}, ZipTable, mergeSeq}: a forward and a backward RNN over the sequence, merged
    per step (default JoinTable(1, 1))."""

    lua_types = ("nn.BiSequencer",)
    lua_table_output = lua_table_grad_input = True

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.lua_scalars = {}
        self.lua_aliases = {}

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = cls(_single_child(f, convert, "module"))
        m.keep_lua_fields(f, ("module",))
        return m

    def forward(self, input: Any) -> Any:
        _time_steps(input, self.lua_typename)
        return self.module(input)

    def remember(self, mode: str = "both") -> "LuaBiSequencer":
        """Lua ``bi:remember(mode)``: records the mode on the BiSequencer itself only, which (as in
        Lua) changes nothing: its inner Sequencers keep their own modes."""
        self.lua_scalars["_remember"] = _check_remember(mode)
        return self

    def lua_fields(self) -> dict[str, Any]:
        child = to_lua(self.module)
        return dict(self.lua_scalars, module=child, modules=t7.LuaList([child]))

    def lua_str(self) -> str:
        return _decorator_str(self, self.module)


# ----------------------------------------------------------------------------------------------
# SeqLSTM
# ----------------------------------------------------------------------------------------------

def _lstm_sequence(x: torch.Tensor, state: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
                   maskzero: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The LSTM of torch-rnn's LSTM.lua / rnn's SeqLSTM.lua over ``x`` (T x N x D) from ``state`` = [h0, c0]:
    ``a = b + x_t Wx + h Wh`` (``weight`` = [Wx; Wh], (D + H) x 4H), gates i, f, o (sigmoid) and g (tanh)
    in column blocks, ``c = f c + i g``, ``h = o tanh(c)``. Returns h (T x N x H) and [h_T, c_T]."""
    T, N, D = x.shape
    H = weight.shape[1] // 4
    h, c = state
    Wx, Wh = weight[:D], weight[D:]
    outs = []
    for t in range(T):
        a = torch.addmm(bias, x[t], Wx) + h.mm(Wh)
        sig = torch.sigmoid(a[:, :3 * H])
        i, f, o = sig[:, :H], sig[:, H:2 * H], sig[:, 2 * H:]
        g = torch.tanh(a[:, 3 * H:])
        c = f * c + i * g
        h = o * torch.tanh(c)
        if maskzero:
            zero = _zero_rows(x[t], True)
            h, c = _mask_rows([h, c], zero, True)
        outs.append(h)
    out = torch.stack(outs, 0) if outs else x.new_zeros((0, N, H))
    return out, [h, c]


class LuaSeqLSTM(_Remembers, LuaModule, nn.Module):
    """rnn's nn.SeqLSTM (Justin Johnson's torch-rnn LSTM): a whole sequence per call.

    Input ``x`` (T x N x D; N x T x D with ``batchfirst``), or ``[h0, x]`` / ``[c0, h0, x]``; output
    h (T x N x H). ``weight`` is (D + H) x 4H with the gates i, f, o, g in column blocks, ``bias`` 4H.
    ``maskzero`` zeroes h, c (and the gates) of the rows whose input step is all zeros. The initial
    state is the given h0/c0, else the one-shot ``userPrevOutput``/``userPrevCell``, else the last
    state of the previous call when remembering, else zeros.
    """

    lua_types = ("nn.SeqLSTM",)

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, input_size: int, output_size: int,
                 *, batchfirst: bool = False, maskzero: bool = False, remember_mode: str = "neither"):
        super().__init__()
        self.weight = nn.Parameter(float_param(weight))
        self.bias = nn.Parameter(float_param(bias))
        self.inputsize, self.outputsize = int(input_size), int(output_size)
        self.batchfirst, self.maskzero = bool(batchfirst), bool(maskzero)
        self.remember_mode = _check_remember(remember_mode)
        self.last_state: list[torch.Tensor] | None = None   # (h_T, c_T) of the previous call
        # Lua's self.h0 / self.c0 are non-empty (a call since forget() used them): remembering needs it
        self.state_ready = [False, False]
        self.user_state: list[torch.Tensor | None] = [None, None]  # userPrevOutput, userPrevCell

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight, bias = f.tensor("weight"), f.tensor("bias")
        D, R = f.int("inputsize"), f.int("outputsize")
        H = f.int("hiddensize", R)
        if H != R:
            raise f.error(f"hiddensize {H} != outputsize {R} (an LSTM with a projection, nn.SeqLSTMP, "
                          f"is not supported)")
        if tuple(weight.shape) != (D + R, 4 * H) or tuple(bias.shape) != (4 * H,):
            raise f.error(f"weight {tuple(weight.shape)} / bias {tuple(bias.shape)} do not match "
                          f"inputsize {D}, outputsize {R} (expected {(D + R, 4 * H)} / {(4 * H,)})")
        remember_mode = f.get("_remember", "neither")
        if remember_mode not in REMEMBER_MODES:
            raise f.error(f"unknown remember mode {remember_mode!r}")
        m = cls(weight, bias, D, R, batchfirst=f.flag("batchfirst", False), maskzero=f.flag("maskzero", False),
                remember_mode=remember_mode)
        h0, c0 = _state_tensor(f.get("h0")), _state_tensor(f.get("c0"))
        cell = _state_tensor(f.get("cell"))
        out = _state_tensor(f.get("_output"))
        if out is None:
            out = _state_tensor(f.get("output"))
            if out is not None and m.batchfirst:
                out = out.transpose(0, 1)
        if cell is not None and out is not None and cell.dim() == 3 and out.dim() == 3:
            m.last_state = [out[-1].clone(), cell[-1].clone()]
        m.state_ready = [h0 is not None, c0 is not None]
        m.user_state = [_state_tensor(f.get("userPrevOutput")), _state_tensor(f.get("userPrevCell"))]
        return m

    def reset_state(self) -> None:
        self.last_state = None
        self.state_ready = [False, False]

    def detach_state(self) -> None:
        if self.last_state is not None:
            self.last_state = [s.detach() for s in self.last_state]

    def _apply(self, fn: Callable, recurse: bool = True):  # type: ignore[override]
        result = super()._apply(fn, recurse)
        if self.last_state is not None:
            self.last_state = [fn(s) for s in self.last_state]
        self.user_state = [None if u is None else fn(u) for u in self.user_state]
        return result

    def _initial(self, given: torch.Tensor | None, index: int, N: int, like: torch.Tensor) -> torch.Tensor:
        H = self.outputsize
        name = ("h0", "c0")[index]
        if given is not None:
            if tuple(given.shape) != (N, H):
                raise RecurrentInputError(f"{self.lua_typename}: {name} should be {N} x {H}, got {tuple(given.shape)}")
            return given
        was_ready, self.state_ready[index] = self.state_ready[index], True
        user = self.user_state[index]
        if user is not None:
            if user.shape[0] != N:
                raise RecurrentInputError(f"{self.lua_typename}: batch size {N} differs from the user-set "
                                          f"initial state's {user.shape[0]}")
            return user
        if self.last_state is not None and self.has_memory() and was_ready:
            last = self.last_state[index].detach()
            if last.shape[0] != N:
                raise RecurrentInputError(f"{self.lua_typename}: batch size {N} differs from the remembered "
                                          f"state's {last.shape[0]}; call forget() before changing it")
            return last
        return like.new_zeros((N, H))

    def forward(self, input: Any) -> torch.Tensor:
        c0 = h0 = None
        if isinstance(input, (list, tuple)) and len(input) == 3:
            c0, h0, x = input
        elif isinstance(input, (list, tuple)) and len(input) == 2:
            h0, x = input
        elif isinstance(input, torch.Tensor):
            x = input
        else:
            raise RecurrentInputError(f"{self.lua_typename}: expected x, [h0, x] or [c0, h0, x], got "
                                      f"{type(input).__name__}")
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise RecurrentInputError(f"{self.lua_typename}: only batch mode is supported: x should be "
                                      f"3-D (seqlen x batch x inputsize), got {getattr(x, 'shape', x)}")
        if self.batchfirst:
            x = x.transpose(0, 1)
        _, N, D = x.shape
        if D != self.inputsize:
            raise RecurrentInputError(f"{self.lua_typename}: input size {D} != inputsize {self.inputsize}")
        h = self._initial(h0, 0, N, x)
        c = self._initial(c0, 1, N, x)
        self.user_state = [None, None]
        out, self.last_state = _lstm_sequence(x, [h, c], self.weight, self.bias, maskzero=self.maskzero)
        return out.transpose(0, 1) if self.batchfirst else out

    def lua_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = dict(
            inputsize=self.inputsize, hiddensize=self.outputsize, outputsize=self.outputsize,
            batchfirst=self.batchfirst, maskzero=self.maskzero, _remember=self.remember_mode,
            **export_weights(weight=self.weight, bias=self.bias))
        for name in ("cell", "gates", "buffer1", "buffer2", "buffer3", "grad_a_buffer", "h0", "c0",
                     "grad_c0", "grad_h0", "grad_x"):
            fields[name] = empty_tensor()
        fields["gradInput"] = t7.LuaList([fields["grad_c0"], fields["grad_h0"], fields["grad_x"]])  # as __init
        if self.last_state is not None:
            h, c = (export_param(s) for s in self.last_state)
            fields.update(cell=c.unsqueeze(0), _output=h.unsqueeze(0))
            for name, state, ready in zip(("h0", "c0"), (h, c), self.state_ready):
                if ready:
                    fields[name] = torch.zeros_like(state)
            fields["output"] = fields["_output"].transpose(0, 1) if self.batchfirst else fields["_output"]
        for name, value in zip(("userPrevOutput", "userPrevCell"), self.user_state):
            if value is not None:
                fields[name] = export_param(value)
        return fields

    def lua_str(self) -> str:
        return self.lua_typename


# ----------------------------------------------------------------------------------------------
# jcjohnson/torch-rnn: LSTM, VanillaRNN, TemporalAdapter, LanguageModel
# ----------------------------------------------------------------------------------------------

class _TorchRnnRecurrent(_Stateful, LuaModule, nn.Module):
    """Shared part of torch-rnn's nn.LSTM and nn.VanillaRNN: a whole batch of sequences per call.

    Input ``x`` (N x T x D, batch first), or ``[h0, x]`` (and ``[c0, h0, x]`` for the LSTM); output h
    (N x T x H). A state not given is zeros, or, when ``remember_states`` is set and a call since the
    last :meth:`resetStates` made it, the last step of the previous call (no gradient flows into the
    previous call). ``weight`` is (D + H) x kH (rows: Wx then Wh), ``bias`` kH.
    """

    state_names: ClassVar[tuple[str, ...]] = ("h0",)  # the states, in the order kept here (h first)
    n_gates: ClassVar[int] = 1

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, input_dim: int, hidden_dim: int,
                 remember_states: bool = False):
        super().__init__()
        self.weight = nn.Parameter(float_param(weight))
        self.bias = nn.Parameter(float_param(bias))
        self.input_dim, self.hidden_dim = int(input_dim), int(hidden_dim)
        self.remember_states = bool(remember_states)
        self.last_state: list[torch.Tensor] | None = None  # the last step of the previous call (h, c)
        # Lua's self.h0 / self.c0 are non-empty: a call since resetStates() used them (remembering needs it)
        self.state_ready = [False] * len(self.state_names)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        weight, bias = f.tensor("weight"), f.tensor("bias")
        D, H = f.int("input_dim"), f.int("hidden_dim")
        k = cls.n_gates
        if tuple(weight.shape) != (D + H, k * H) or tuple(bias.shape) != (k * H,):
            raise f.error(f"weight {tuple(weight.shape)} / bias {tuple(bias.shape)} do not match input_dim {D}, "
                          f"hidden_dim {H} (expected {(D + H, k * H)} / {(k * H,)})")
        m = cls(weight, bias, D, H, f.flag("remember_states", False))
        m.state_ready = [_state_tensor(f.get(name)) is not None for name in m.state_names]
        last = [_state_tensor(f.get(name)) for name in ("output", "cell")[:len(m.state_names)]]
        if all(t is not None and t.dim() == 3 for t in last):  # a model saved without clearState()
            m.last_state = [t[:, -1].clone() for t in last]
        return m

    # -- state -----------------------------------------------------------------------------
    def reset_state(self) -> None:
        self.last_state = None
        self.state_ready = [False] * len(self.state_names)

    def detach_state(self) -> None:
        if self.last_state is not None:
            self.last_state = [s.detach() for s in self.last_state]

    def resetStates(self) -> nn.Module:
        """Lua ``resetStates()``: the next call starts from zeros (also :func:`forget`)."""
        return forget(self)

    def _apply(self, fn: Callable, recurse: bool = True):  # type: ignore[override]
        result = super()._apply(fn, recurse)
        if self.last_state is not None:
            self.last_state = [fn(s) for s in self.last_state]
        return result

    def _initial(self, given: torch.Tensor | None, k: int, N: int, like: torch.Tensor) -> torch.Tensor:
        H, name = self.hidden_dim, self.state_names[k]
        if given is not None:
            if tuple(given.shape) != (N, H):
                raise RecurrentInputError(f"{self.lua_str()}: {name} should be {N} x {H}, got {tuple(given.shape)}")
            return given
        was_ready, self.state_ready[k] = self.state_ready[k], True
        if self.remember_states and was_ready and self.last_state is not None:
            last = self.last_state[k].detach()
            if last.shape[0] != N:
                raise RecurrentInputError(f"{self.lua_str()}: batch size {N} differs from the remembered state's "
                                          f"{last.shape[0]}; call resetStates() (or forget(model)) before changing it")
            return last
        return like.new_zeros((N, H))

    def forward(self, input: Any) -> torch.Tensor:
        n = len(self.state_names)
        if isinstance(input, torch.Tensor):
            given: list[Any] = [None] * n
            x = input
        elif isinstance(input, (list, tuple)) and 2 <= len(input) <= n + 1:
            *states, x = input
            given = list(reversed(states)) + [None] * (n - len(states))  # Lua's order is {c0, h0, x}
        else:
            forms = "x, [h0, x] or [c0, h0, x]" if n == 2 else "x or [h0, x]"
            raise RecurrentInputError(f"{self.lua_str()}: expected {forms}, got {type(input).__name__}")
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[2] != self.input_dim:
            raise RecurrentInputError(f"{self.lua_str()}: x should be N x T x {self.input_dim} (batch, time, "
                                      f"input_dim), got {tuple(getattr(x, 'shape', ()))}")
        state = [self._initial(g, k, x.shape[0], x) for k, g in enumerate(given)]
        out, self.last_state = self.run(x.transpose(0, 1), state)
        return out.transpose(0, 1)

    def run(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The recurrence over ``x`` (T x N x D) from ``state``: h (T x N x H) and the last state."""
        raise NotImplementedError

    # -- export ------------------------------------------------------------------------------
    def lua_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = dict(input_dim=self.input_dim, hidden_dim=self.hidden_dim,
                                      remember_states=self.remember_states,
                                      **export_weights(weight=self.weight, bias=self.bias))
        names = self.lua_buffers + tuple(self.state_names) + tuple("grad_" + n for n in self.state_names)
        fields.update({name: empty_tensor() for name in names + ("grad_x",)})
        fields["gradInput"] = t7.LuaList([fields["grad_" + n] for n in reversed(self.state_names)] + [fields["grad_x"]])
        if self.last_state is not None:  # the previous call's last step, as Lua's output / cell buffers
            for name, state in zip(("output", "cell"), self.last_state):
                fields[name] = export_param(state).unsqueeze(1)
            for name, state, ready in zip(self.state_names, self.last_state, self.state_ready):
                if ready:
                    fields[name] = torch.zeros_like(export_param(state))
        return fields

    lua_buffers: ClassVar[tuple[str, ...]] = ()

    def lua_str(self) -> str:
        return f"{self.lua_typename}({self.input_dim} -> {self.hidden_dim})"


class LuaTorchRnnLSTM(_TorchRnnRecurrent):
    """torch-rnn's nn.LSTM (LSTM.lua; the converter of ``nn.LSTM`` picks it when the object has torch-rnn's
    fields): gates i, f, o, g in column blocks of ``weight`` (D + H) x 4H; input x, [h0, x] or [c0, h0, x]."""

    lua_types = ()  # registered through LuaLSTM (the same Lua class name as rnn's nn.LSTM)
    state_names = ("h0", "c0")
    n_gates = 4
    lua_buffers = ("cell", "gates", "buffer1", "buffer2", "buffer3", "grad_a_buffer")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lua_typename = "nn.LSTM"

    def run(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _lstm_sequence(x, state, self.weight, self.bias)


class LuaVanillaRNN(_TorchRnnRecurrent):
    """torch-rnn's nn.VanillaRNN: ``h_t = tanh(b + x_t Wx + h_{t-1} Wh)``; input x or [h0, x]."""

    lua_types = ("nn.VanillaRNN",)
    lua_buffers = ("buffer1", "buffer2")

    def run(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        D = self.input_dim
        Wx, Wh = self.weight[:D], self.weight[D:]
        h = state[0]
        outs = []
        for t in range(x.shape[0]):
            h = torch.tanh(torch.addmm(self.bias, x[t], Wx) + h.mm(Wh))
            outs.append(h)
        out = torch.stack(outs, 0) if outs else x.new_zeros((0, x.shape[1], self.hidden_dim))
        return out, [h]


class _TorchRnnNet(LuaModule, nn.Module):
    """torch-rnn's containers: run ``net`` (an nn.Sequential) after resizing the nn.View modules that
    fields name to the input's N, T: ``flat_fields`` to (N*T, -1), ``unflat_fields`` to (N, T, -1).

    Fields naming modules of ``net`` (one, or a list such as LanguageModel's ``rnns``) and the plain
    fields (numbers, strings, the vocabulary tables) are kept for export.
    """

    flat_fields: ClassVar[tuple[str, ...]] = ()
    unflat_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, net: nn.Module, aliases: dict[str, Any], extra: dict[str, Any]):
        super().__init__()
        self.net = net
        self.aliases = aliases  # field -> index in net (int) or list of indices
        self.lua_extra = extra

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        lua_net = f.get("net")
        if not isinstance(lua_net, t7.TorchObject) or not isinstance(lua_net.get("modules"), (list, dict)):
            raise f.error("missing field 'net' (the nn.Sequential it runs)")
        members = lua_array(lua_net.get("modules"))
        index = {id(m): i for i, m in enumerate(members)}
        aliases: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, v in f.raw.items():
            if not isinstance(k, str) or k in ("net", "train", "_type", "output", "gradInput"):
                continue
            if isinstance(v, t7.TorchObject):
                if id(v) in index:
                    aliases[k] = index[id(v)]
                continue
            items = lua_array(v) if isinstance(v, (list, dict)) else []
            if items and len(items) == len(v) and all(id(m) in index for m in items):
                aliases[k] = [index[id(m)] for m in items]
            elif isinstance(v, (bool, int, float, str, dict, list)):
                extra[k] = v
        for name in cls.flat_fields + cls.unflat_fields:
            for i in _as_indices(aliases.get(name)):
                if lua_net.typename != "nn.Sequential" or members[i].typename != "nn.View":
                    raise f.error(f"field '{name}' should be an nn.View of its net (an nn.Sequential)")
        net = convert(lua_net, f"{f.path}.net")
        return cls(net, aliases, extra)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = _first_tensor(input, self.lua_typename)
        if x.dim() < 2:
            raise RecurrentInputError(f"{self.lua_typename}: expected an input N x T x ..., got {tuple(x.shape)}")
        N, T = x.shape[0], x.shape[1]
        for names, size in ((self.flat_fields, [N * T, -1]), (self.unflat_fields, [N, T, -1])):
            for name in names:
                for i in _as_indices(self.aliases.get(name)):
                    self.net[i].size = list(size)  # Lua's view:resetSize(...)
        return self.net(input)

    def lua_fields(self) -> dict[str, Any]:
        net = to_lua(self.net)
        members = net.fields["modules"]
        fields = dict(self.lua_extra, net=net)
        for name, at in self.aliases.items():
            fields[name] = members[at] if isinstance(at, int) else t7.LuaList(members[i] for i in at)
        return fields


def _as_indices(at: Any) -> list[int]:
    return [] if at is None else [at] if isinstance(at, int) else list(at)


class LuaTemporalAdapter(_TorchRnnNet):
    """torch-rnn's nn.TemporalAdapter(module): a module of N x A -> N x B applied at every step of
    N x T x A (``net`` = Sequential{view_in, module, view_out})."""

    lua_types = ("nn.TemporalAdapter",)
    flat_fields = ("view_in",)
    unflat_fields = ("view_out",)

    def lua_str(self) -> str:
        inner = list(self.net.children())
        return f"{self.lua_typename}: {lua_str(inner[1] if len(inner) == 3 else self.net)}"


class LuaLanguageModel(_TorchRnnNet):
    """torch-rnn's nn.LanguageModel: tokens N x T (1-based indices) -> scores N x T x V through ``net``
    (LookupTable, LSTM/VanillaRNN layers remembering their states, Dropout, Linear). ``idx_to_token`` /
    ``token_to_idx`` give the vocabulary; :meth:`encode_string` / :meth:`decode_string` as Lua's."""

    lua_types = ("nn.LanguageModel",)
    flat_fields = ("view1", "bn_view_in")
    unflat_fields = ("view2", "bn_view_out")

    @property
    def idx_to_token(self) -> dict[int, str]:
        """Token index (1-based) -> token (Lua's ``idx_to_token``)."""
        table = self.lua_extra.get("idx_to_token", {})
        items = enumerate(table, 1) if isinstance(table, list) else table.items()
        return {int(i): _text(t) for i, t in items}

    @property
    def token_to_idx(self) -> dict[str, int]:
        """Token -> index (1-based), built from ``idx_to_token`` as Lua's ``__init``."""
        return {t: i for i, t in self.idx_to_token.items()}

    def encode_string(self, s: str) -> torch.Tensor:
        """Lua ``encode_string``: one 1-based index per character (a LongTensor of len(s))."""
        table = self.token_to_idx
        unknown = sorted({ch for ch in s if ch not in table})
        if unknown:
            raise RecurrentInputError(f"{self.lua_typename}: characters not in the vocabulary: {unknown!r}")
        return torch.tensor([table[ch] for ch in s], dtype=torch.int64)

    def decode_string(self, encoded: torch.Tensor) -> str:
        """Lua ``decode_string``: the tokens of a 1-D tensor of 1-based indices, joined."""
        table = self.idx_to_token
        return "".join(table[int(i)] for i in encoded.reshape(-1).tolist())

    def resetStates(self) -> nn.Module:
        """Lua ``resetStates()``: every RNN layer starts from zeros at the next call."""
        return forget(self)

    def lua_str(self) -> str:
        return self.lua_typename


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


# ----------------------------------------------------------------------------------------------
# dpnn's Decorator
# ----------------------------------------------------------------------------------------------

class LuaDecorator(LuaModule, nn.Module):
    """dpnn's nn.Decorator(module): passes everything to ``module`` (also its ``modules[1]``)."""

    lua_types = ("nn.Decorator",)

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        return cls(_single_child(f, convert, "module"))

    def forward(self, input: Any) -> Any:
        return self.module(input)

    def lua_fields(self) -> dict[str, Any]:
        child = to_lua(self.module)
        return {"module": child, "modules": t7.LuaList([child])}

    def lua_str(self) -> str:
        return _decorator_str(self, self.module)


class LuaInception(LuaDecorator):
    """dpnn's nn.Inception (OpenFace nn4 models): a Decorator around its nn.DepthConcat(2) ``module``
    of branches (1x1 / 3x3 / 5x5 convolutions and a pooling branch); computes that module. Its scalar
    configuration fields (kernel sizes, strides, ...) are kept for export."""

    lua_types = ("nn.Inception",)

    def __init__(self, module: nn.Module, config: dict[str, Any] | None = None):
        super().__init__(module)
        self.lua_config = dict(config or {})

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        if not f.has("module") and len(lua_array(f.get("modules"))) != 1:
            raise f.error(f"expected the decorated module in 'module' or modules = {{module}}, "
                          f"got {len(lua_array(f.get('modules')))} modules")
        return cls(_single_child(f, convert, "module"), _scalar_fields(f))

    def lua_fields(self) -> dict[str, Any]:
        return dict(self.lua_config, **super().lua_fields())
