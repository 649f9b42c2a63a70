"""jcjohnson/torch-rnn's recurrent layers in plain PyTorch: LSTM.lua and VanillaRNN.lua run a whole batch of
sequences (N x T x D, batch first) per call, keeping the last state for the next call with ``remember_states``.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import nn

from .rnn import RecurrentState, forget_states, lstm_sequence, recurrent_input_error


class TorchRnnRecurrent(RecurrentState, nn.Module):
    """Shared part of torch-rnn's nn.LSTM and nn.VanillaRNN: a whole batch of sequences per call.

    Input ``x`` (N x T x D, batch first), or ``[h0, x]`` (and ``[c0, h0, x]`` for the LSTM); output h
    (N x T x H). A state not given is zeros, or, when ``remember_states`` is set and a call since the
    last :meth:`resetStates` made it, the last step of the previous call (no gradient flows into the
    previous call). ``weight`` is (D + H) x kH (rows: Wx then Wh), ``bias`` kH.
    """

    state_names: ClassVar[tuple[str, ...]] = ("h0",)  # the states, in the order kept here (h first)
    n_gates: ClassVar[int] = 1
    carried_state = ("last_state", "state_ready")

    def __init__(self, input_dim: int, hidden_dim: int, remember_states: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(input_dim + hidden_dim, self.n_gates * hidden_dim))
        self.bias = nn.Parameter(torch.zeros(self.n_gates * hidden_dim))
        self.input_dim, self.hidden_dim = int(input_dim), int(hidden_dim)
        self.remember_states = bool(remember_states)
        self.last_state: list[torch.Tensor] | None = None  # the last step of the previous call (h, c)
        # Lua's self.h0 / self.c0 are non-empty: a call since resetStates() used them (remembering needs it)
        self.state_ready = [False] * len(self.state_names)

    def reset_state(self) -> None:
        self.last_state = None
        self.state_ready = [False] * len(self.state_names)

    def detach_state(self) -> None:
        if self.last_state is not None:
            self.last_state = [s.detach() for s in self.last_state]

    def resetStates(self) -> nn.Module:
        """Lua ``resetStates()``: the next call starts from zeros."""
        return forget_states(self)

    def _apply(self, fn: Callable, recurse: bool = True):  # type: ignore[override]
        result = super()._apply(fn, recurse)
        if self.last_state is not None:
            self.last_state = [fn(s) for s in self.last_state]
        return result

    def _initial(self, given: torch.Tensor | None, k: int, N: int, like: torch.Tensor) -> torch.Tensor:
        H, name = self.hidden_dim, self.state_names[k]
        if given is not None:
            if tuple(given.shape) != (N, H):
                raise recurrent_input_error(self, f"{name} should be {N} x {H}, got {tuple(given.shape)}")
            return given
        was_ready, self.state_ready[k] = self.state_ready[k], True
        if self.remember_states and was_ready and self.last_state is not None:
            last = self.last_state[k].detach()
            if last.shape[0] != N:
                raise recurrent_input_error(self, f"batch size {N} differs from the remembered state's "
                                                  f"{last.shape[0]}; call resetStates() before changing it")
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
            raise recurrent_input_error(self, f"expected {forms}, got {type(input).__name__}")
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[2] != self.input_dim:
            raise recurrent_input_error(self, f"x should be N x T x {self.input_dim} (batch, time, input_dim), "
                                              f"got {tuple(getattr(x, 'shape', ()))}")
        state = [self._initial(g, k, x.shape[0], x) for k, g in enumerate(given)]
        out, self.last_state = self.run(x.transpose(0, 1), state)
        return out.transpose(0, 1)

    def run(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The recurrence over ``x`` (T x N x D) from ``state``: h (T x N x H) and the last state."""
        raise NotImplementedError


class TorchRnnLSTM(TorchRnnRecurrent):
    """torch-rnn's nn.LSTM (LSTM.lua): gates i, f, o, g in column blocks of ``weight`` (D + H) x 4H;
    input x, [h0, x] or [c0, h0, x]."""

    state_names = ("h0", "c0")
    n_gates = 4

    def run(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return lstm_sequence(x, state, self.weight, self.bias)


class VanillaRNN(TorchRnnRecurrent):
    """torch-rnn's nn.VanillaRNN: ``h_t = tanh(b + x_t Wx + h_{t-1} Wh)``; input x or [h0, x]."""

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
