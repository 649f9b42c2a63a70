"""Models of the Element-Research ``rnn`` package.

Ports of rnn's AbstractRecurrent.lua (step counter, hidden state, ``forget``), LSTM.lua / FastLSTM.lua,
GRU.lua, Recursor.lua, Sequencer.lua / AbstractSequencer.lua (``remember`` modes), BiSequencer.lua,
MaskZero.lua, SeqLSTM.lua, LinearNoBias.lua and SAdd.lua. The dpnn modules rnn builds with (ReverseTable,
ZipTable, Decorator) are in :mod:`.dpnn`; jcjohnson/torch-rnn's models (its ``nn.LSTM`` too, told apart
from rnn's by its fields) in :mod:`.torchrnn`, which shares the state machinery here (:func:`forget`).
What the modules compute lives in :mod:`.standalone.rnn` (also copied into ``convert --format python`` files);
the classes here read, check and export the Lua fields, and write the generated code (an AbstractRecurrent's
step module becomes a class of the generated file, run once per time step).

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

import textwrap

from typing import Any

import torch
from torch import nn

from .. import t7
from ._base import (MAX_DIM_SIZE, MISSING, ChildConverter, Fields, LuaModule, UnsupportedLuaModule, empty_tensor,
                    export_param, export_weights, float_param, planes_after, to_lua)
from .codegen import (Code, CodeGen, ListVal, Value, Var, call_expr, comment_lines, py, relative_path, shared,
                      standalone_base, wrap)
from .dpnn import _decorator_str, _scalar_fields, _single_child, _where
from .layers import LuaLinear
from .simple import REQUIRED, SimpleLuaModule
from .standalone.rnn import (REMEMBER_MODES, AbstractRecurrent, Recursor, SAdd, SeqLSTM, Sequencer, SequenceMemory,
                             StepGRU, StepLSTM, forget_states, mask_rows, remember_mode_problem, size_text,
                             time_steps, zero_mask)
from .text import LuaInputError

__all__ = ["forget", "remember", "RecurrentInputError", "LuaLinearNoBias", "LuaSAdd", "LuaMaskZero", "LuaLSTM",
           "LuaGRU", "LuaRecursor", "LuaSequencer", "LuaBiSequencer", "LuaSeqLSTM"]

_MAX_DIMS = 64  # a bound for tensor dimension counts read from a file (MaskZero's nInputDim)


class RecurrentInputError(LuaInputError):
    """A recurrent module called with an input or a setting it cannot take (names the fix)."""


class _RecurrentErrors:
    """The project error for what the standalone code refuses (:func:`.standalone.rnn.recurrent_input_error`)."""

    def input_error(self, what: str) -> RecurrentInputError:
        return RecurrentInputError(f"{_where(self)}: {what}")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# Small modules: LinearNoBias, SAdd
# ----------------------------------------------------------------------------------------------

class LuaLinearNoBias(LuaLinear):
    """rnn's nn.LinearNoBias: an nn.Linear without bias (``weight`` only)."""

    lua_types = ("nn.LinearNoBias",)


class LuaSAdd(SimpleLuaModule, SAdd):
    """rnn's nn.SAdd(addend, negate): ``x + addend``, negated when ``negate``."""

    lua_types = ("nn.SAdd",)
    lua_params = (("addend", REQUIRED), ("negate", False))

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        return cls(addend=f.num("addend"), negate=f.flag("negate", False))

    def lua_planes(self, planes: int | None) -> int | None:
        return planes


class LuaMaskZero(_RecurrentErrors, LuaModule, nn.Module):
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
        return cls(_single_child(f, convert), f.int("nInputDim", min=0, max=_MAX_DIMS))

    def forward(self, input: Any) -> Any:
        zero, batch = zero_mask(self, input, self.nInputDim)
        return mask_rows(self.module(input), zero, batch)

    def python_children(self) -> list:
        return [("modules[1]", self.module)]

    def python_forward(self, g: CodeGen, x: Value) -> Value:
        zero, batch = g.fresh("zero"), g.fresh("batch")
        g.line(f"{zero}, {batch} = {call_expr(g.use(zero_mask), Code('self'), Code(g.expr(x)), self.nInputDim)}")
        out = g.emit(self.module, shared(x))
        return g.assign(call_expr(g.use(mask_rows), Code(g.expr(out)), Code(zero), Code(batch)), out)

    def lua_fields(self) -> dict[str, Any]:
        return {"modules": t7.LuaList([to_lua(self.module)]), "nInputDim": self.nInputDim}

    def lua_str(self) -> str:
        return _decorator_str(self, self.module)

    def lua_planes(self, planes: int | None) -> int | None:
        return planes_after(self.module, planes)


# ----------------------------------------------------------------------------------------------
# Fields kept for export
# ----------------------------------------------------------------------------------------------

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

def forget(module: nn.Module) -> nn.Module:
    """Lua ``module:forget()``: every recurrent module in the tree restarts from its initial state."""
    return forget_states(module)


def remember(module: nn.Module, mode: str = "both") -> nn.Module:
    """Lua ``module:remember(mode)``: sets the mode of every Sequencer and SeqLSTM in the tree
    ('both', 'eval', 'train' or 'neither': in which of training / evaluation the state is kept
    from one sequence to the next)."""
    problem = remember_mode_problem(mode)
    if problem:
        raise RecurrentInputError(problem)
    if isinstance(module, (SequenceMemory, LuaBiSequencer)):
        module.remember(mode)  # an AbstractSequencer sets its own mode and stops there, as in Lua
    else:
        for child in module.children():
            remember(child, mode)
    return module


# ----------------------------------------------------------------------------------------------
# AbstractRecurrent: LSTM, FastLSTM, GRU, Recursor
# ----------------------------------------------------------------------------------------------

def _saved_state(f: Fields, name: str, value: Any, shapes: tuple[tuple[Any, ...], ...]) -> torch.Tensor | None:
    """A recurrent state saved in the file (field ``name``, or a table entry so named): nil or an empty tensor
    (Lua's cleared buffer) -> None; else a floating-point tensor whose size is one of ``shapes`` (entries:
    an int, or a letter for any size, e.g. ``("N", 5)``), as Lua's forward uses it."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise f.bad(name, value, "should be a tensor (a saved recurrent state) or nil")
    if value.numel() == 0:
        return None
    if not value.is_floating_point():
        raise f.bad(name, value, "should be a floating-point tensor (Float/Double/Cuda), as Lua's float modules "
                                 "require")
    if not any(value.dim() == len(sh) and all(not isinstance(e, int) or e == n for e, n in zip(sh, value.shape))
               for sh in shapes):
        raise f.bad(name, value, "should be of size " + " or ".join(size_text(sh) for sh in shapes))
    return float_param(value)


def _sized_tensor(f: Fields, name: str, shape: tuple[int, ...], why: str, like: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """The parameter ``name`` (a non-empty floating-point tensor) of size ``shape``; ``why`` says where the
    size comes from (``"(inputsize + outputsize) x 4 hiddensize"``). With ``like``, of its type too (a Lua
    module's parameters share one tensor type: its ``addmm`` of a Float and a Double tensor fails)."""
    t = f.tensor(name)
    if tuple(t.shape) != shape:
        raise f.bad(name, t, f"should be of size {'x'.join(map(str, shape))}: {why}")
    if like is not None and t.dtype != like.dtype:
        kind = {torch.float64: "DoubleTensor", torch.float32: "FloatTensor"}.get(like.dtype, str(like.dtype))
        raise f.bad(name, t, f"should be of the type of the weight ({kind})")
    return t


def _state_shapes(width: int | None) -> tuple[tuple[Any, ...], ...]:
    """The sizes of an AbstractRecurrent state: ``outputSize`` (one sample) or ``N x outputSize`` (a batch)."""
    w: Any = "outputSize" if width is None else width
    return ((w,), ("N", w))


def _step_table(f: Fields, name: str, step: int, width: int | None) -> torch.Tensor | None:
    """Entry ``step`` of the per-step state table ``name`` (Lua's ``outputs`` / ``cells``), checked."""
    table = f.get(name)
    if table is None:
        return None
    if isinstance(table, list):
        value = table[step - 1] if 1 <= step <= len(table) else None
    elif isinstance(table, dict) and not isinstance(table, t7.TorchObject):
        value = table.get(step, table.get(float(step)))
    else:
        raise f.bad(name, table, "should be a table of the states of the last steps")
    return _saved_state(f, f"{name}[{step}]", value, _state_shapes(width))


def _linear_weights(obj: Any) -> list[tuple[str, torch.Tensor]]:
    """``(class, weight)`` of every nn.Linear / nn.LinearNoBias in the Lua tree ``obj`` (each once)."""
    found: list[tuple[str, torch.Tensor]] = []
    stack, seen = [obj], set()
    while stack:
        o = stack.pop()
        if not isinstance(o, t7.TorchObject) or id(o) in seen:
            continue
        seen.add(id(o))
        w = o.fields.get("weight")
        if o.typename in ("nn.Linear", "nn.LinearNoBias") and isinstance(w, torch.Tensor) and w.dim() == 2:
            found.append((o.typename, w))
        mods = o.fields.get("modules")
        if isinstance(mods, (list, dict)):
            stack.extend(mods if isinstance(mods, list) else mods.values())
    return found


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


def _python_state(module: nn.Module) -> dict[str, Any]:
    """The state dict of a generated leaf: its ``python_state()`` hook, else its own state dict."""
    hook = getattr(module, "python_state", None)
    return hook() if callable(hook) else module.state_dict()


def _step_class(g: CodeGen, owner: "_LuaRecurrent") -> str:
    """Write the class of ``owner.recurrentModule`` (run once per time step, so an nn.Module of its own) into the
    generated file, before the model's class; returns the class name and keeps the generator of its body in
    ``owner._python_step`` (its leaves, for the state dict). Its forward takes the step's table
    ``[x_t, h_{t-1}(, c_{t-1})]`` as a list (a Recursor's: the step input as it is)."""
    root = g.root
    sub = CodeGen(root)
    path = g.paths.get(id(owner), "model")
    sub.declare(owner.recurrentModule, f"{path}.recurrentModule")
    start: Value
    if owner.state_tables:
        names = [sub.fresh(n) for n in ("x_t", "h_prev", "c_prev")[:1 + len(owner.state_tables)]]
        sub.line(f"{', '.join(names)} = input")
        start = ListVal(tuple(Var(n) for n in names))
    else:
        sub.reserve("input")
        start = Var("input")
    out = sub.emit(owner.recurrentModule, start)
    for name, paths in sub.unsupported.items():
        g.unsupported.setdefault(name, []).extend(paths)
    base = "".join(w[:1].upper() + w[1:] for w in owner.lua_typename.split(".")[-1:]) + "Step"
    name, k = base, 2
    while name in root._class_names:
        name, k = f"{base}{k}", k + 1
    root._class_names.add(name)
    owner._python_step = sub
    attrs = {id(leaf.module): leaf.attr for leaf in sub.leaves.values()}
    direct = tuple(attrs[id(m)] for m in owner.direct_modules() if id(m) in attrs)
    dropouts = tuple(attrs[id(m)] for m in owner.copying_dropouts() if id(m) in attrs)
    lines = [f"class {name}(nn.Module):",
             f'    """{relative_path(path)}.recurrentModule: the step module of {owner.lua_typename}, run once per '
             f'time step."""', ""]
    if direct or dropouts:
        lines += comment_lines("the modules that Lua's evaluate-mode backward hands each step's own input, "
                               "and its Dropout modules (see AbstractRecurrent)", " " * 4)
        for attr, names in (("direct_names", direct), ("dropout_names", dropouts)):
            lines += wrap(f"{attr} = {py(names)}", " " * 4) + ([""] if attr == "dropout_names" else [])
    lines += ["    def __init__(self) -> None:", "        super().__init__()"]
    lines += sub.init_lines
    lines += ["", "    def forward(self, input):"] + sub.forward_lines(sub.expr(out))
    root.classes.append("\n".join(wrap_long_docstring(lines)))
    return name


def wrap_long_docstring(lines: list[str]) -> list[str]:
    """The class docstring line split at 120 columns (the path of a deep step module can be long)."""
    out = []
    for line in lines:
        if len(line) > 120 and line.lstrip().startswith('"""'):
            out += ['    """'] + ["    " + ln for ln in textwrap.wrap(line.strip().strip('"'), 112)] + ['    """']
        else:
            out.append(line)
    return out


class _LuaRecurrent(_RecurrentErrors, _ExportsAliases, AbstractRecurrent):
    """Reading and exporting rnn's AbstractRecurrent modules (computed by :class:`.standalone.rnn.AbstractRecurrent`:
    one time step per call, the state kept until :meth:`forget`)."""

    def __init__(self, recurrent_module: nn.Module, *, rho: int = 9999, output_size: int | None = None,
                 input_size: int | None = None):
        super().__init__(recurrent_module, rho=rho, output_size=output_size, input_size=input_size)
        self.lua_scalars = {}
        self.lua_aliases = {}

    def direct_modules(self) -> list[nn.Module]:
        return _direct_modules(self.recurrentModule)

    def copying_dropouts(self) -> list[nn.Module]:
        return [m for m in self.recurrentModule.modules()
                if getattr(m, "lua_typename", "") == "nn.Dropout" and not getattr(m, "inplace", False)]

    # -- generated code (convert --format python) --------------------------------------------
    def python_ctor(self, g: CodeGen) -> str:
        name = _step_class(g, self)
        return call_expr(g.use(standalone_base(type(self))), Code(f"{name}()"), rho=self.rho,
                         output_size=self.outputSize, input_size=self.inputSize)

    def python_state(self) -> dict[str, Any]:
        state = {f"recurrentModule.{leaf.attr}.{k}": v for leaf in self._python_step.leaves.values()
                 for k, v in _python_state(leaf.module).items()}
        state.update(self.carried_tensors())  # the step and the state it continues from
        return state

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        rho = f.int("rho", 9999, min=0)
        # the state width: Lua's first step makes its zero state N x outputSize (Recursor has no state)
        output_size = f.int("outputSize", MISSING if cls.state_tables else None, min=1, max=MAX_DIM_SIZE)
        input_size = f.int("inputSize", None, min=1, max=MAX_DIM_SIZE)
        step = f.int("step", 1, min=1, max=MAX_DIM_SIZE)
        if f.has("module") and f.has("recurrentModule") and f.get("module") is not f.get("recurrentModule"):
            raise f.bad("module", f.get("module"), "should be the module of field 'recurrentModule' (the same "
                                                   "object, as Lua's constructor sets both)")
        cls.check_weights(f, output_size)
        state: list[torch.Tensor | None] = []
        if step > 1 and cls.state_tables:
            state = [_step_table(f, name, step - 1, output_size) for name in cls.state_tables]
            if all(s is not None for s in state) and len({tuple(s.shape) for s in state}) > 1:
                raise f.bad(f"{cls.state_tables[1]}[{step - 1}]", state[1], f"should be of the size of "
                            f"{cls.state_tables[0]}[{step - 1}] ({size_text(tuple(state[0].shape))})")
        user_state = [_saved_state(f, name, f.raw.get(name), _state_shapes(output_size)) for name in cls.user_fields]
        m = cls(_single_child(f, convert, "recurrentModule", "module"), rho=rho, output_size=output_size,
                input_size=input_size)
        m.keep_lua_fields(f, ("recurrentModule", "module"), ("step", "rho", "inputSize", "outputSize",
                                                            "updateGradInputStep", "accGradParametersStep",
                                                            "nSharedClone"))
        m.step = step
        if state and all(s is not None for s in state):
            m.state = state  # type: ignore[assignment]
        elif state:  # Lua's next step would fail on the missing state (unless forget() comes first)
            m.state_lost = True
        m.user_state = user_state
        return m

    @classmethod
    def check_weights(cls, f: Fields, output_size: int | None) -> None:
        """The state width ``outputSize`` against the weights that take the state (FastLSTM's / GRU's ``o2g``,
        the h -> gate Linear of LSTM's gates): Lua's first step feeds a zero state of that width to them."""
        if output_size is None:
            return
        takes_state = [("o2g", f.get("o2g"))]  # FastLSTM, GRU: the state's Linear of all gates
        for gate in ("inputGate", "forgetGate", "outputGate"):  # LSTM: each gate's ParallelTable{x, h, c}
            para = f.get(gate).fields.get("modules") if isinstance(f.get(gate), t7.TorchObject) else None
            para = para[0] if isinstance(para, list) and para else None
            mods = para.fields.get("modules") if isinstance(para, t7.TorchObject) else None
            if para is not None and para.typename == "nn.ParallelTable" and isinstance(mods, list) and len(mods) > 1:
                takes_state.append((gate, mods[1]))
        for alias, obj in takes_state:
            for typename, w in _linear_weights(obj) if isinstance(obj, t7.TorchObject) else ():
                if w.shape[1] != output_size:
                    raise f.bad("outputSize", output_size, f"should be the width of the state its {alias} takes "
                                                           f"({typename} weight {size_text(tuple(w.shape))})")

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

    def lua_planes(self, planes: int | None) -> int | None:
        """One step N x D -> N x outputSize (the width of the state; Lua never checks ``inputSize``)."""
        return self.outputSize if self.state_tables else planes_after(self.recurrentModule, planes)

    def lua_expected_input(self) -> str | None:
        return f"N x {self.inputSize} or {self.inputSize} (one time step)" if self.inputSize else None


class LuaLSTM(_LuaRecurrent, StepLSTM):
    """rnn's nn.LSTM and nn.FastLSTM: ``recurrentModule{x_t, h_{t-1}, c_{t-1}} = {h_t, c_t}``; returns h_t.
    torch-rnn's nn.LSTM (told apart by its fields) runs whole N x T x D sequences instead.

    torch-rnn's class of the same name (fields ``weight``, ``hidden_dim``, no ``recurrentModule``)
    converts to :class:`LuaTorchRnnLSTM`."""

    lua_types = ("nn.LSTM", "nn.FastLSTM")

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        if f.typename == "nn.LSTM" and not f.has("recurrentModule") and (f.has("hidden_dim") or f.has("weight")):
            from .torchrnn import LuaTorchRnnLSTM  # torchrnn builds on this module
            return LuaTorchRnnLSTM.from_fields(f, convert)
        return super().from_fields(f, convert)


class LuaGRU(_LuaRecurrent, StepGRU):
    """rnn's nn.GRU: ``recurrentModule{x_t, h_{t-1}} = h_t``."""

    lua_types = ("nn.GRU",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        f.num("p", 0, min=0, max=1)  # the dropout probability its tostring shows
        return super().from_fields(f, convert)


    def lua_str(self) -> str:
        return f"{self.lua_typename}({self.inputSize} -> {self.outputSize}, {float(self.lua_scalars.get('p', 0)):.2f})"


class LuaRecursor(_LuaRecurrent, Recursor):
    """rnn's nn.Recursor(module): makes any module a one-step-per-call recurrent module (the steps
    share the parameters; recurrent modules inside keep their own state)."""

    lua_types = ("nn.Recursor",)

    def lua_fields(self) -> dict[str, Any]:
        fields = super().lua_fields()
        fields["module"] = fields["recurrentModule"]
        return fields

    def lua_str(self) -> str:
        return _decorator_str(self, self.recurrentModule)


# ----------------------------------------------------------------------------------------------
# Sequencers
# ----------------------------------------------------------------------------------------------

class LuaSequencer(_RecurrentErrors, _ExportsAliases, Sequencer):
    """rnn's nn.Sequencer(module): the module applied to each element of a sequence, in order.

    The input is a list of T steps (the output is a list) or a tensor T x ... (the output is a tensor).
    The state of the recurrent modules inside is forgotten before each sequence unless the
    ``remember`` mode covers the current mode (default 'neither')."""

    lua_types = ("nn.Sequencer",)

    def __init__(self, module: nn.Module, remember_mode: str = "neither"):
        super().__init__(module, remember_mode)
        self.lua_scalars = {}
        self.lua_aliases = {}

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        remember_mode = f.string("_remember", "neither", choices=REMEMBER_MODES)
        child = _single_child(f, convert, "module")
        if isinstance(child, LuaModule) and not isinstance(child, (_LuaRecurrent, UnsupportedLuaModule)) \
                and type(child).__module__.startswith(__package__ + "."):
            raise f.bad("module", f.get("module", child.lua_typename), "should be a recurrent module "
                        "(nn.LSTM, nn.FastLSTM, nn.GRU, nn.Recursor, ...): Lua's Sequencer wraps any other module "
                        f"in an nn.Recursor (got {child.lua_typename})")
        m = cls(child, remember_mode)
        m.keep_lua_fields(f, ("module",), ("_remember",))
        return m

    def python_ctor(self, g: CodeGen) -> str:
        g.paths.setdefault(id(self.module), f"{g.paths.get(id(self), 'model')}.module")
        return call_expr(g.use(Sequencer), g.ctor(self.module), remember_mode=self.remember_mode)

    def python_state(self) -> dict[str, Any]:
        state = {f"module.{k}": v for k, v in _python_state(self.module).items()}
        return state

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


class LuaBiSequencer(_RecurrentErrors, _ExportsAliases, nn.Module):
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
        f.string("_remember", None, choices=REMEMBER_MODES)  # kept for export; Lua's remember() asserts the set
        m = cls(_single_child(f, convert, "module"))
        m.keep_lua_fields(f, ("module",))
        return m

    def forward(self, input: Any) -> Any:
        time_steps(self, input)
        return self.module(input)

    def python_children(self) -> list:
        return [("module", self.module)]

    def python_forward(self, g: CodeGen, x: Value) -> Value:
        return g.emit(self.module, x)

    def remember(self, mode: str = "both") -> "LuaBiSequencer":
        """Lua ``bi:remember(mode)``: records the mode on the BiSequencer itself only, which (as in
        Lua) changes nothing: its inner Sequencers keep their own modes."""
        problem = remember_mode_problem(mode)
        if problem:
            raise self.input_error(problem)
        self.lua_scalars["_remember"] = mode
        return self

    def lua_fields(self) -> dict[str, Any]:
        child = to_lua(self.module)
        return dict(self.lua_scalars, module=child, modules=t7.LuaList([child]))

    def lua_str(self) -> str:
        return _decorator_str(self, self.module)


# ----------------------------------------------------------------------------------------------
# SeqLSTM
# ----------------------------------------------------------------------------------------------

class LuaSeqLSTM(_RecurrentErrors, LuaModule, SeqLSTM):
    """rnn's nn.SeqLSTM (Justin Johnson's torch-rnn LSTM): a whole sequence per call.

    Input ``x`` (T x N x D; N x T x D with ``batchfirst``), or ``[h0, x]`` / ``[c0, h0, x]``; output
    h (T x N x H). ``weight`` is (D + H) x 4H with the gates i, f, o, g in column blocks, ``bias`` 4H.
    ``maskzero`` zeroes h, c (and the gates) of the rows whose input step is all zeros. The initial
    state is the given h0/c0, else the one-shot ``userPrevOutput``/``userPrevCell``, else the last
    state of the previous call when remembering, else zeros. (Computed by :class:`.standalone.rnn.SeqLSTM`.)
    """

    lua_types = ("nn.SeqLSTM",)

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, input_size: int, output_size: int,
                 *, batchfirst: bool = False, maskzero: bool = False, remember_mode: str = "neither"):
        super().__init__(input_size, output_size, batchfirst=batchfirst, maskzero=maskzero,
                         remember_mode=remember_mode)
        self.weight = nn.Parameter(float_param(weight))
        self.bias = nn.Parameter(float_param(bias))

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        D = f.int("inputsize", min=1, max=MAX_DIM_SIZE)
        R = f.int("outputsize", min=1, max=MAX_DIM_SIZE)
        H = f.int("hiddensize", R, min=1, max=MAX_DIM_SIZE)
        if H != R:
            raise f.bad("hiddensize", H, f"should be outputsize ({R}): an LSTM with a projection (nn.SeqLSTMP) "
                                         f"is not supported")
        sizes = f"inputsize {D}, outputsize {R}"
        weight = _sized_tensor(f, "weight", (D + R, 4 * H), f"(inputsize + outputsize) x 4 outputsize, from {sizes}")
        bias = _sized_tensor(f, "bias", (4 * H,), f"4 outputsize, from {sizes}", like=weight)
        remember_mode = f.string("_remember", "neither", choices=REMEMBER_MODES)
        batchfirst = f.flag("batchfirst", False)
        # Lua's buffers: h0 / c0 (N x R / N x H, non-empty once a call used them), the last call's cell
        # (T x N x H) and output (T x N x R; N x T x R with batchfirst), the one-shot userPrevOutput/Cell
        h0 = _saved_state(f, "h0", f.raw.get("h0"), (("N", R),))
        c0 = _saved_state(f, "c0", f.raw.get("c0"), (("N", H),))
        cell = _saved_state(f, "cell", f.raw.get("cell"), (("T", "N", H),))
        if f.has("_output"):
            out = _saved_state(f, "_output", f.raw.get("_output"), (("T", "N", R),))
        else:
            out = _saved_state(f, "output", f.raw.get("output"), (("N", "T", R) if batchfirst else ("T", "N", R),))
            if out is not None and batchfirst:
                out = out.transpose(0, 1)
        if cell is not None and out is not None:
            if tuple(out.shape[:2]) != tuple(cell.shape[:2]):
                raise f.bad("cell", cell, f"should have the steps and batch size of the output it was saved with "
                                          f"({size_text(tuple(out.shape[:2]))} x {H})")
            for name, ready in (("h0", h0), ("c0", c0)):
                if ready is not None and ready.shape[0] != cell.shape[1]:
                    raise f.bad(name, ready, f"should have the batch size of the saved state ({cell.shape[1]})")
        user = [_saved_state(f, "userPrevOutput", f.raw.get("userPrevOutput"), (("N", R),)),
                _saved_state(f, "userPrevCell", f.raw.get("userPrevCell"), (("N", H),))]
        m = cls(weight, bias, D, R, batchfirst=batchfirst, maskzero=f.flag("maskzero", False),
                remember_mode=remember_mode)
        if cell is not None and out is not None:
            # Lua copies them into its h0 / c0 buffers (of the weight's type)
            m.last_state = [out[-1].to(m.weight.dtype, copy=True), cell[-1].to(m.weight.dtype, copy=True)]
        m.state_ready = [h0 is not None, c0 is not None]
        m.user_state = [None if u is None else u.to(m.weight.dtype) for u in user]  # Lua copies them into h0 / c0
        return m

    def python_ctor(self, g: CodeGen) -> str:
        return call_expr(g.use(SeqLSTM), self.inputsize, self.outputsize, batchfirst=self.batchfirst,
                         maskzero=self.maskzero, remember_mode=self.remember_mode)

    def python_state(self) -> dict[str, torch.Tensor]:
        return {**self.state_dict(), **self.carried_tensors()}

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
