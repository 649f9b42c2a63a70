"""Element-Research rnn's semantics in plain PyTorch: the recurrent state kept between calls (``forget``, the
``remember`` modes of AbstractSequencer.lua), MaskZero.lua's zeroed rows, SAdd.lua, and SeqLSTM.lua (Justin
Johnson's torch-rnn LSTM: one whole sequence per call, gates i, f, o, g in the column blocks of one weight).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch
from torch import nn

REMEMBER_MODES = ("both", "eval", "train", "neither")


def recurrent_input_error(module: Any, what: str) -> Exception:
    """The error for an input or setting that ``module`` refuses: its own ``input_error(what)`` if it has one."""
    make = getattr(module, "input_error", None)
    return make(what) if callable(make) else ValueError(f"{type(module).__name__}: {what}")


def remember_mode_problem(mode: Any) -> str | None:
    """What is wrong with a ``remember`` mode (Lua AbstractSequencer:remember asserts the set), or None."""
    if mode in REMEMBER_MODES:
        return None
    return f"unrecognized remember mode {mode!r}; use one of {', '.join(REMEMBER_MODES)}"


class RecurrentState:
    """Mixin of a module that carries state between forward calls (Lua rnn's step counter and hidden state).

    ``carried_state`` names the attributes holding it (a number, a flag, a tensor or a list of them, or None):
    :meth:`carried_tensors` writes them as state-dict entries ``carried.<name>...`` that ``load_state_dict``
    restores, so that a model saved in the middle of a sequence continues from there."""

    carried_state: tuple[str, ...] = ()

    def carried_tensors(self) -> dict[str, torch.Tensor]:
        """The carried state as tensors (a list as its length ``.n`` and its non-None items ``.<i>``)."""
        out: dict[str, torch.Tensor] = {}
        for name in self.carried_state:
            value = getattr(self, name)
            items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
            if isinstance(value, list):
                out[f"carried.{name}.n"] = torch.tensor(len(value))
            for i, v in items:
                if v is not None:
                    key = f"carried.{name}" + ("" if i is None else f".{i}")
                    out[key] = v.detach() if isinstance(v, torch.Tensor) else torch.tensor(v)
        return out

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        head = prefix + "carried."
        mine = {k[len(head):]: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(head)]}
        if mine:
            def value(t: torch.Tensor) -> Any:
                return t.item() if t.dim() == 0 else t.clone()
            for name in self.carried_state:
                if f"{name}.n" in mine:
                    n = int(mine[f"{name}.n"])
                    setattr(self, name, [value(mine[f"{name}.{i}"]) if f"{name}.{i}" in mine else None
                                         for i in range(n)])
                else:
                    setattr(self, name, value(mine[name]) if name in mine else None)
        super()._load_from_state_dict(state_dict, prefix, *args)  # type: ignore[misc]

    def reset_state(self) -> None:
        """Lua ``forget()`` of this module alone."""
        raise NotImplementedError

    def detach_state(self) -> None:
        """Cut the autograd history of the carried state (a new sequence's backward stops there)."""
        raise NotImplementedError


def forget_states(module: nn.Module) -> nn.Module:
    """Lua ``module:forget()``: every recurrent module in the tree restarts from its initial state."""
    for m in module.modules():
        if isinstance(m, RecurrentState):
            m.reset_state()
    return module


def detach_states(module: nn.Module) -> None:
    """The state of every recurrent module in the tree without its autograd history."""
    for m in module.modules():
        if isinstance(m, RecurrentState):
            m.detach_state()


class SequenceMemory(RecurrentState):
    """Lua AbstractSequencer's ``remember`` modes: in which of training / evaluation the state is kept from one
    sequence to the next ('both', 'eval', 'train', 'neither'); switching between the two modes forgets."""

    remember_mode: str = "neither"
    training: bool

    def remember(self, mode: str = "both") -> "SequenceMemory":
        """Lua ``seq:remember(mode)`` (default 'both')."""
        problem = remember_mode_problem(mode)
        if problem:
            raise recurrent_input_error(self, problem)
        self.remember_mode = mode
        return self

    def has_memory(self) -> bool:
        """Lua ``hasMemory()``: whether the current mode keeps the state across sequences."""
        return self.remember_mode in (("both", "train") if self.training else ("both", "eval"))

    def train(self, mode: bool = True):  # type: ignore[override]
        if bool(mode) != self.training:
            self.forget()
        return super().train(mode)  # type: ignore[misc]

    def forget(self):
        """Lua ``forget()``: this module and the recurrent modules inside start from their initial state."""
        return forget_states(self)  # type: ignore[arg-type]


def first_tensor(module: Any, input: Any) -> torch.Tensor:
    """Lua ``recursiveGetFirst``: the first tensor of a nested list."""
    while isinstance(input, (list, tuple)):
        if not input:
            raise recurrent_input_error(module, "empty list input")
        input = input[0]
    if not isinstance(input, torch.Tensor):
        raise recurrent_input_error(module, f"expected a tensor or a list of tensors, got {type(input).__name__}")
    return input


def zero_rows(x: torch.Tensor, batch: bool) -> torch.Tensor:
    """The rows of ``x`` (all of it when not ``batch``) whose L2 norm is 0, as a bool vector.

    The squares are summed in float64 (THNN's accumulation type for float and double tensors)."""
    rows = x.reshape(x.shape[0] if batch else 1, -1)
    return rows.double().pow(2).sum(1) == 0


def mask_rows(output: Any, zero: torch.Tensor, batch: bool) -> Any:
    """Lua ``maskedFill(mask, 0)`` of every tensor in ``output``: rows flagged in ``zero`` become 0."""
    if isinstance(output, (list, tuple)):
        return [mask_rows(o, zero, batch) for o in output]
    mask = zero.reshape([-1] + [1] * (output.dim() - 1)) if batch else zero.reshape([1] * output.dim())
    return torch.where(mask, torch.zeros((), dtype=output.dtype, device=output.device), output)


def zero_mask(module: Any, input: Any, n_input_dim: int) -> tuple[torch.Tensor, bool]:
    """Lua nn.MaskZero(module, nInputDim)'s mask: the rows of the first input tensor that are all zeros, and
    whether that tensor is a batch (nInputDim + 1 dimensions) or one sample (nInputDim). The module's output
    is then ``mask_rows(output, *zero_mask(...))``."""
    first = first_tensor(module, input)
    if first.dim() == n_input_dim:
        batch = False
    elif first.dim() - 1 == n_input_dim:
        batch = True
    else:
        raise recurrent_input_error(module, f"input has {first.dim()} dimensions but nInputDim is {n_input_dim} "
                                            f"(expected {n_input_dim} or {n_input_dim + 1} dimensions with a batch)")
    return zero_rows(first, batch), batch


class SAdd(nn.Module):
    """rnn's nn.SAdd(addend, negate): ``x + addend``, negated when ``negate``."""

    def __init__(self, addend: float = 0.0, negate: bool = False):
        super().__init__()
        self.addend, self.negate = addend, negate

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = input + self.addend
        return -out if self.negate else out


def size_text(sizes: tuple[Any, ...]) -> str:
    """``(2, 5)`` -> ``'2 x 5'``."""
    return " x ".join(str(s) for s in sizes)


# ----------------------------------------------------------------------------------------------
# AbstractRecurrent (LSTM, FastLSTM, GRU, Recursor): one time step per call
# ----------------------------------------------------------------------------------------------

def flat_tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in flat_tensors(v)]
    return [x] if isinstance(x, torch.Tensor) else []


def refill_tensors(x: Any, it: Any) -> Any:
    """``x``'s nesting filled with the next tensors of the iterator ``it``."""
    if isinstance(x, (list, tuple)):
        return [refill_tensors(v, it) for v in x]
    return next(it) if isinstance(x, torch.Tensor) else x


class RecurrentLastStep:
    """What a recurrent module's step module holds after a step, as Lua's buffers do: the step
    number, its input, the state it started from and the state it produced."""

    def __init__(self, step: int, input: Any, prev: list[torch.Tensor], state: list[torch.Tensor]):
        self.step = step
        self.input = refill_tensors(input, iter([t.detach() for t in flat_tensors(input)]))
        self.prev = [t.detach() for t in prev]
        self.state = [t.detach() for t in state]


class SavedTensorSwap:
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


def recurrent_eval_vjp(owner: "AbstractRecurrent", step: int, input: Any, grads: tuple[torch.Tensor | None, ...],
                  n_out: int, params: list[nn.Parameter]) -> list[torch.Tensor | None]:
    """Lua's evaluate-mode ``updateGradInput`` + ``accGradParameters`` of one step (see
    :func:`recurrent_eval_step`): the step module linearised at the LAST step it ran, the modules that
    get the input directly reading this step's input and previous state, the others the tensors
    they kept (the previous state's buffers now hold the last state)."""
    last = owner.last_step
    first = owner.first_state
    with torch.enable_grad():
        x_in = [t.clone().requires_grad_(t.is_floating_point()) for t in flat_tensors(last.input)]
        prev_in = [t.clone().requires_grad_(True) for t in last.prev]
        x_struct = refill_tensors(last.input, iter(x_in))
        # the state this step was handed: the initial one at step 1, else Lua's output/cell buffers
        passed_prev = first if step == 1 else last.state
        kept_prev = first if last.step == 1 else last.state
        kept = SavedTensorSwap(list(zip(prev_in, kept_prev)))
        direct = SavedTensorSwap(list(zip(x_in, flat_tensors(input))) + list(zip(prev_in, passed_prev)))
        handles = []
        for m in owner.direct_modules():
            stack: list[Any] = []
            handles.append(m.register_forward_pre_hook(functools.partial(swap_hooks_enter, stack, direct)))
            handles.append(m.register_forward_hook(functools.partial(swap_hooks_exit, stack)))
        for m in owner.copying_dropouts():
            # Lua's Dropout output is a copy of its input, not the input tensor itself
            handles.append(m.register_forward_hook(lambda mod, args, out: out.clone()))
        try:
            with kept.hooks():
                output, state = owner.step_forward(x_struct, prev_in)
        finally:
            for h in handles:
                h.remove()
        outs = distinct_tensors(flat_tensors(output) + list(state))[:n_out]
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
        candidates = x_in + prev_in + params
        wrt = [t for t in candidates if t.requires_grad]
        got = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)
                   if pairs and wrt else [None] * len(wrt))
    return [next(got) if t.requires_grad else None for t in candidates]


def swap_hooks_enter(stack: list[Any], swap: SavedTensorSwap, module: nn.Module, args: Any) -> None:
    cm = swap.hooks()
    cm.__enter__()
    stack.append(cm)


def swap_hooks_exit(stack: list[Any], module: nn.Module, args: Any, output: Any) -> None:
    stack.pop().__exit__(None, None, None)


def distinct_tensors(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for t in tensors:
        if not any(t is u for u in out):
            out.append(t)
    return out


class RecurrentEvalStep(torch.autograd.Function):
    """One evaluate-mode step: the normal forward; Lua's backward (:func:`recurrent_eval_vjp`)."""

    @staticmethod
    def forward(ctx: Any, owner: "AbstractRecurrent", step: int, input: Any, box: dict, n_prev: int,
                *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n_x = len(flat_tensors(input))
        x = list(tensors[:n_x])
        prev = list(tensors[n_x:n_x + n_prev])
        output, state = owner.step_forward(refill_tensors(input, iter(x)), prev)
        outs = distinct_tensors(flat_tensors(output) + list(state))
        index = lambda t: next(i for i, o in enumerate(outs) if o is t)  # noqa: E731
        box["output"] = refill_tensors(output, iter([index(t) for t in flat_tensors(output)]))
        box["state"] = [index(t) for t in state]
        ctx.owner, ctx.step, ctx.n_out = owner, step, len(outs)
        ctx.input = refill_tensors(input, iter([t.detach() for t in x]))
        # outputs that are inputs (an Identity step) must be new tensors for autograd
        return tuple(o.view_as(o) if any(o is t for t in tensors) else o for o in outs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        owner = ctx.owner
        params = list(owner.recurrentModule.parameters())
        got = recurrent_eval_vjp(owner, ctx.step, ctx.input, grads, ctx.n_out, params)
        return (None, None, None, None, None, *got)


def recurrent_eval_step(owner: "AbstractRecurrent", input: Any, prev: list[torch.Tensor]
                        ) -> tuple[Any, list[torch.Tensor]]:
    """An evaluate-mode step whose backward is Lua rnn's.

    In evaluate mode Lua runs every step with the one ``recurrentModule``, whose output and cell
    buffers are the per-step states (all the same tensors); its backward then builds each step's
    clone from that module, i.e. from the state of the LAST step, and hands it the previous state's
    buffers, which hold the last state (the initial state at step 1). Training mode keeps one clone
    per step and is exact back-propagation through time (plain autograd here).
    """
    box: dict[str, Any] = {}
    params = list(owner.recurrentModule.parameters())
    outs = RecurrentEvalStep.apply(owner, owner.step, input, box, len(prev), *flat_tensors(input), *prev, *params)
    return pick_outputs(box["output"], outs), [outs[i] for i in box["state"]]


def pick_outputs(index: Any, outs: tuple[torch.Tensor, ...]) -> Any:
    return [pick_outputs(i, outs) for i in index] if isinstance(index, list) else outs[index]


class AbstractRecurrent(RecurrentState, nn.Module):
    """rnn's nn.AbstractRecurrent: one time step per call of ``recurrentModule``, the state kept until
    :meth:`forget`.

    In training mode the repeated calls are back-propagated through time by autograd (Lua's per-step clones).
    In evaluate mode Lua's backward linearises every step at the LAST step's state (see
    :func:`recurrent_eval_step`); set ``lua_eval_backward = False`` for the exact gradient instead.
    ``direct_names`` / ``dropout_names`` name the modules of ``recurrentModule`` that get the step's input directly
    and its Dropout modules (used by that backward; by default the step module's class attributes of these names).
    ``user_state`` is Lua's userPrevOutput (/ userPrevCell).
    """

    # Lua's tables of the per-step state ('outputs', 'cells': h, and c for an LSTM) and its user-given initial
    # state ('userPrevOutput', 'userPrevCell'): one entry per state tensor carried from step to step
    state_tables: tuple[str, ...] = ()
    user_fields: tuple[str, ...] = ()
    forget_on_type: bool = False  # Lua's LSTM:type() forgets (a GRU keeps its state)
    carried_state = ("step", "state", "user_state", "state_lost")
    lua_eval_backward: bool = True

    def __init__(self, recurrent_module: nn.Module, rho: int = 9999, output_size: int | None = None,
                 input_size: int | None = None, direct_names: tuple[str, ...] | None = None,
                 dropout_names: tuple[str, ...] | None = None):
        super().__init__()
        self.recurrentModule = recurrent_module
        self.rho = rho
        self.outputSize = output_size
        self.inputSize = input_size
        self.direct_names = tuple(getattr(recurrent_module, "direct_names", ()) if direct_names is None
                                  else direct_names)
        self.dropout_names = tuple(getattr(recurrent_module, "dropout_names", ()) if dropout_names is None
                                   else dropout_names)
        self.step = 1
        self.state: list[torch.Tensor] | None = None
        self.last_step: RecurrentLastStep | None = None
        self.first_state: list[torch.Tensor] = []
        self.user_state: list[torch.Tensor | None] = [None] * len(self.user_fields)
        # a step > 1 without its saved state: Lua fails at the next step unless forgotten
        self.state_lost = False

    def direct_modules(self) -> list[nn.Module]:
        """The modules of ``recurrentModule`` that Lua's backward hands this step's input (not the last step's)."""
        return [self.recurrentModule.get_submodule(n) for n in self.direct_names]

    def copying_dropouts(self) -> list[nn.Module]:
        """The Dropout modules of ``recurrentModule`` whose output is a copy of their input (not in place)."""
        return [self.recurrentModule.get_submodule(n) for n in self.dropout_names]

    def reset_state(self) -> None:
        self.step = 1
        self.state = None
        self.state_lost = False

    def detach_state(self) -> None:
        if self.state is not None:
            self.state = [s.detach() for s in self.state]

    def forget(self) -> nn.Module:
        """Lua ``forget()``: the next call is step 1 again (this module and the ones inside)."""
        return forget_states(self)

    def initial_state(self, input: torch.Tensor) -> list[torch.Tensor]:
        """Lua ``getHiddenState(0, input)``: the user's tensors, else zeros (batch, outputSize)."""
        if self.outputSize is None:
            raise recurrent_input_error(self, "unknown outputSize (field missing in the model)")
        shape = (input.shape[0], self.outputSize) if input.dim() == 2 else (self.outputSize,)
        return [u if u is not None else torch.zeros(shape, dtype=input.dtype, device=input.device)
                for u in self.user_state]

    def forward(self, input: Any) -> Any:
        if self.state is None:
            if not isinstance(input, torch.Tensor) and self.state_tables:
                raise recurrent_input_error(self, f"expected one time step as a tensor (batch x inputSize or "
                                                  f"inputSize), got {type(input).__name__}")
            if self.state_lost:
                raise recurrent_input_error(
                    self, f"the model was saved at step {self.step} without the state of step "
                    f"{self.step - 1} ({', '.join(f'{n}[{self.step - 1}]' for n in self.state_tables)}), which "
                    f"Lua's next step needs; call forget() to start a new sequence")
            prev = self.initial_state(input) if self.state_tables else []
            prev = self.fit_state(prev, input)
            self.first_state = [t.detach() for t in prev]
        else:
            prev = self.fit_state(self.state, input)
        if self.uses_lua_eval_backward(input, prev):
            output, state = recurrent_eval_step(self, input, prev)
        else:
            output, state = self.step_forward(input, prev)
        self.last_step = RecurrentLastStep(self.step, input, prev, state)
        self.state = state
        self.step += 1
        return output

    def fit_state(self, prev: list[torch.Tensor], input: Any) -> list[torch.Tensor]:
        """The state as this step takes it: N x width for an N x D input, width for a D input. Lua's step
        modules add and multiply tensors of equal element counts whatever their shapes (a 1-D state with a
        batch of one, a 1 x width state with one sample); any other size is refused (never broadcast)."""
        if not isinstance(input, torch.Tensor) or input.dim() not in (1, 2):
            return prev
        out = []
        for s in prev:
            want = (input.shape[0], s.shape[-1]) if input.dim() == 2 else (s.shape[-1],)
            if tuple(s.shape) != want:
                if s.numel() != math.prod(want):
                    where = "initial state" if self.state is None else f"state of step {self.step - 1}"
                    raise recurrent_input_error(
                        self, f"the {where} is {size_text(tuple(s.shape))}, but the input "
                        f"{size_text(tuple(input.shape))} needs {size_text(want)}; call forget() first "
                        f"(or give an initial state of the input's batch size)")
                s = s.reshape(want)
            out.append(s)
        return out

    def uses_lua_eval_backward(self, input: Any, prev: list[torch.Tensor]) -> bool:
        """Whether this step's backward is Lua's evaluate-mode one (see :func:`recurrent_eval_step`)."""
        if self.training or not self.lua_eval_backward or not torch.is_grad_enabled():
            return False
        if any(isinstance(m, RecurrentState) for m in self.recurrentModule.modules()):
            return False  # recurrent modules inside keep their own steps: plain autograd
        return any(t.requires_grad for t in flat_tensors([input, prev])) or \
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


class StepLSTM(AbstractRecurrent):
    """rnn's nn.LSTM and nn.FastLSTM: ``recurrentModule([x_t, h_{t-1}, c_{t-1}]) = [h_t, c_t]``; returns h_t."""

    state_tables = ("outputs", "cells")
    user_fields = ("userPrevOutput", "userPrevCell")
    forget_on_type = True

    def step_forward(self, input: torch.Tensor, prev: list[torch.Tensor]) -> tuple[Any, list[torch.Tensor]]:
        out = self.recurrentModule([input, prev[0], prev[1]])
        return out[0], [out[0], out[1]]


class StepGRU(AbstractRecurrent):
    """rnn's nn.GRU: ``recurrentModule([x_t, h_{t-1}]) = h_t``."""

    state_tables = ("outputs",)
    user_fields = ("userPrevOutput",)

    def step_forward(self, input: torch.Tensor, prev: list[torch.Tensor]) -> tuple[Any, list[torch.Tensor]]:
        out = self.recurrentModule([input, prev[0]])
        return out, [out]


class Recursor(AbstractRecurrent):
    """rnn's nn.Recursor(module): any module made a one-step-per-call recurrent module (the steps share the
    parameters; recurrent modules inside keep their own state)."""

    def step_forward(self, input: Any, prev: list[torch.Tensor]) -> tuple[Any, list[torch.Tensor]]:
        return self.recurrentModule(input), []


# ----------------------------------------------------------------------------------------------
# Sequencer
# ----------------------------------------------------------------------------------------------

def time_steps(module: Any, input: Any) -> tuple[list[Any], bool]:
    """The steps of a sequence (a list of T tensors, or a tensor whose first dimension is time) and whether it
    was a tensor."""
    if isinstance(input, torch.Tensor):
        if input.dim() == 0:
            raise recurrent_input_error(module, "expected a sequence, got a 0-dimensional tensor")
        return list(input.unbind(0)), True
    if isinstance(input, (list, tuple)):
        return list(input), False
    raise recurrent_input_error(module, f"expected a sequence (a list of T tensors, or a tensor with time as its "
                                        f"first dimension), got {type(input).__name__}")


class Sequencer(SequenceMemory, nn.Module):
    """rnn's nn.Sequencer(module): the module applied to each element of a sequence, in order.

    The input is a list of T steps (the output is a list) or a tensor T x ... (the output is a tensor).
    The state of the recurrent modules inside is forgotten before each sequence unless the ``remember`` mode
    covers the current mode (default 'neither')."""

    def __init__(self, module: nn.Module, remember_mode: str = "neither"):
        super().__init__()
        self.module = module
        self.remember(remember_mode)

    def reset_state(self) -> None:
        pass

    def detach_state(self) -> None:
        pass

    def forward(self, input: Any) -> Any:
        steps, is_tensor = time_steps(self, input)
        if self.has_memory():
            detach_states(self.module)
        else:
            forget_states(self.module)
        outputs = [self.module(x) for x in steps]
        if is_tensor:
            if not outputs:
                return input.new_empty((0,))
            return torch.stack(outputs, 0)
        return outputs


def lstm_sequence(x: torch.Tensor, state: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
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
            zero = zero_rows(x[t], True)
            h, c = mask_rows([h, c], zero, True)
        outs.append(h)
    out = torch.stack(outs, 0) if outs else x.new_zeros((0, N, H))
    return out, [h, c]


class SeqLSTM(SequenceMemory, nn.Module):
    """rnn's nn.SeqLSTM (Justin Johnson's torch-rnn LSTM): a whole sequence per call.

    Input ``x`` (T x N x D; N x T x D with ``batchfirst``), or ``[h0, x]`` / ``[c0, h0, x]``; output
    h (T x N x H). ``weight`` is (D + H) x 4H with the gates i, f, o, g in column blocks, ``bias`` 4H.
    ``maskzero`` zeroes h, c (and the gates) of the rows whose input step is all zeros. The initial
    state is the given h0/c0, else the one-shot ``user_state`` (Lua's userPrevOutput/userPrevCell), else the
    last state of the previous call when remembering, else zeros.
    """

    def __init__(self, inputsize: int, outputsize: int, batchfirst: bool = False, maskzero: bool = False,
                 remember_mode: str = "neither"):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(inputsize + outputsize, 4 * outputsize))
        self.bias = nn.Parameter(torch.zeros(4 * outputsize))
        self.inputsize, self.outputsize = int(inputsize), int(outputsize)
        self.batchfirst, self.maskzero = bool(batchfirst), bool(maskzero)
        self.remember(remember_mode)
        self.last_state: list[torch.Tensor] | None = None   # (h_T, c_T) of the previous call
        # Lua's self.h0 / self.c0 are non-empty (a call since forget() used them): remembering needs it
        self.state_ready = [False, False]
        self.user_state: list[torch.Tensor | None] = [None, None]  # userPrevOutput, userPrevCell

    carried_state = ("last_state", "state_ready", "user_state")

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
                raise recurrent_input_error(self, f"{name} should be {N} x {H}, got {tuple(given.shape)}")
            return given
        was_ready, self.state_ready[index] = self.state_ready[index], True
        user = self.user_state[index]
        if user is not None:
            if user.shape[0] != N:
                raise recurrent_input_error(self, f"batch size {N} differs from the user-set initial state's "
                                                  f"{user.shape[0]}")
            return user
        if self.last_state is not None and self.has_memory() and was_ready:
            last = self.last_state[index].detach()
            if last.shape[0] != N:
                raise recurrent_input_error(self, f"batch size {N} differs from the remembered state's "
                                                  f"{last.shape[0]}; call forget() before changing it")
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
            raise recurrent_input_error(self, f"expected x, [h0, x] or [c0, h0, x], got {type(input).__name__}")
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise recurrent_input_error(self, f"only batch mode is supported: x should be 3-D (seqlen x batch x "
                                              f"inputsize), got {getattr(x, 'shape', x)}")
        if self.batchfirst:
            x = x.transpose(0, 1)
        _, N, D = x.shape
        if D != self.inputsize:
            raise recurrent_input_error(self, f"input size {D} != inputsize {self.inputsize}")
        h = self._initial(h0, 0, N, x)
        c = self._initial(c0, 1, N, x)
        self.user_state = [None, None]
        out, self.last_state = lstm_sequence(x, [h, c], self.weight, self.bias, maskzero=self.maskzero)
        return out.transpose(0, 1) if self.batchfirst else out
