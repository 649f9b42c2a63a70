"""Models of the Element-Research ``rnn`` package (and the dpnn table helpers it builds with).

Ports of rnn's AbstractRecurrent.lua (step counter, hidden state, ``forget``), LSTM.lua / FastLSTM.lua,
GRU.lua, Recursor.lua, Sequencer.lua / AbstractSequencer.lua (``remember`` modes), BiSequencer.lua,
MaskZero.lua, SeqLSTM.lua, LinearNoBias.lua, SAdd.lua, and of dpnn's ReverseTable.lua / ZipTable.lua.

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
from .layers import LuaLinear
from .simple import REQUIRED, SimpleLuaModule

__all__ = ["forget", "remember", "RecurrentInputError", "LuaLinearNoBias", "LuaSAdd", "LuaReverseTable",
           "LuaZipTable", "LuaMaskZero", "LuaLSTM", "LuaGRU", "LuaRecursor", "LuaSequencer", "LuaBiSequencer",
           "LuaSeqLSTM"]

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
    """rnn's nn.LSTM and nn.FastLSTM: ``recurrentModule{x_t, h_{t-1}, c_{t-1}} = {h_t, c_t}``; returns h_t."""

    lua_types = ("nn.LSTM", "nn.FastLSTM")
    state_tables = ("outputs", "cells")
    user_fields = ("userPrevOutput", "userPrevCell")
    forget_on_type = True

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
        T, N, D = x.shape
        H = self.outputsize
        if D != self.inputsize:
            raise RecurrentInputError(f"{self.lua_typename}: input size {D} != inputsize {self.inputsize}")
        h = self._initial(h0, 0, N, x)
        c = self._initial(c0, 1, N, x)
        self.user_state = [None, None]
        Wx, Wh = self.weight[:D], self.weight[D:]
        outs = []
        for t in range(T):
            a = torch.addmm(self.bias, x[t], Wx) + h.mm(Wh)
            sig = torch.sigmoid(a[:, :3 * H])
            i, f, o = sig[:, :H], sig[:, H:2 * H], sig[:, 2 * H:]
            g = torch.tanh(a[:, 3 * H:])
            c = f * c + i * g
            h = o * torch.tanh(c)
            if self.maskzero:
                zero = _zero_rows(x[t], True)
                h, c = _mask_rows([h, c], zero, True)
            outs.append(h)
        self.last_state = [h, c]
        out = torch.stack(outs, 0) if outs else x.new_zeros((0, N, H))
        return out.transpose(0, 1) if self.batchfirst else out

    def lua_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = dict(
            inputsize=self.inputsize, hiddensize=self.outputsize, outputsize=self.outputsize,
            batchfirst=self.batchfirst, maskzero=self.maskzero, _remember=self.remember_mode,
            **export_weights(weight=self.weight, bias=self.bias))
        for name in ("cell", "gates", "buffer1", "buffer2", "buffer3", "grad_a_buffer", "h0", "c0",
                     "grad_c0", "grad_h0", "grad_x"):
            fields[name] = empty_tensor()
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
