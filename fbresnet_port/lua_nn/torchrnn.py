"""Models of jcjohnson/torch-rnn: LSTM.lua (also named ``nn.LSTM``: rnn's converter :class:`.rnn.LuaLSTM`
tells them apart by their fields and hands torch-rnn's here), VanillaRNN.lua, TemporalAdapter.lua and
LanguageModel.lua. They run whole N x T sequences per call; the state kept between calls with
``remember_states`` is restarted by ``resetStates()`` or :func:`.rnn.forget`.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .. import t7
from ._base import (MAX_DIM_SIZE, ChildConverter, Fields, LuaModule, empty_tensor, export_param, export_weights,
                    float_param, lua_str, to_lua)
from .codegen import Code, CodeGen, Value, call_expr, standalone_base
from .dpnn import _where
from .graph import lua_array
from .rnn import RecurrentInputError, _RecurrentErrors, _saved_state, _sized_tensor, forget
from .standalone.rnn import first_tensor, size_text
from .standalone.torchrnn import TorchRnnLSTM, VanillaRNN

__all__ = ["LuaTorchRnnLSTM", "LuaVanillaRNN", "LuaTemporalAdapter", "LuaLanguageModel"]


class _TorchRnnRecurrent(_RecurrentErrors, LuaModule):
    """Reading and exporting torch-rnn's nn.LSTM and nn.VanillaRNN (computed by
    :class:`.standalone.torchrnn.TorchRnnRecurrent`: a whole batch of sequences per call)."""

    state_names: ClassVar[tuple[str, ...]]
    n_gates: ClassVar[int]
    weight: nn.Parameter
    bias: nn.Parameter

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, input_dim: int, hidden_dim: int,
                 remember_states: bool = False):
        super().__init__(input_dim, hidden_dim, remember_states)  # type: ignore[call-arg]
        self.weight = nn.Parameter(float_param(weight))
        self.bias = nn.Parameter(float_param(bias))

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        D = f.int("input_dim", min=1, max=MAX_DIM_SIZE)
        H = f.int("hidden_dim", min=1, max=MAX_DIM_SIZE)
        k = cls.n_gates
        sizes, gates = f"input_dim {D}, hidden_dim {H}", f"{k} hidden_dim" if k > 1 else "hidden_dim"
        weight = _sized_tensor(f, "weight", (D + H, k * H), f"(input_dim + hidden_dim) x {gates}, from {sizes}")
        bias = _sized_tensor(f, "bias", (k * H,), f"{gates}, from {sizes}", like=weight)
        # Lua's buffers: h0 / c0 (N x H, non-empty once a call used them) and, in a model saved without
        # clearState(), the last call's output / cell (N x T x H) that remember_states continues from
        ready = [_saved_state(f, name, f.raw.get(name), (("N", H),)) for name in cls.state_names]
        last = [_saved_state(f, name, f.raw.get(name), (("N", "T", H),))
                for name in ("output", "cell")[:len(cls.state_names)]]
        if all(t is not None for t in last):
            if len({tuple(t.shape) for t in last}) > 1:
                raise f.bad("cell", last[1], f"should be of the size of the saved output "
                                             f"({size_text(tuple(last[0].shape))})")
            for name, t in zip(cls.state_names, ready):
                if t is not None and t.shape[0] != last[0].shape[0]:
                    raise f.bad(name, t, f"should have the batch size of the saved output ({last[0].shape[0]})")
        m = cls(weight, bias, D, H, f.flag("remember_states", False))
        m.state_ready = [t is not None for t in ready]
        if all(t is not None for t in last):  # a model saved without clearState()
            # Lua copies them into its h0 / c0 buffers (of the weight's type)
            m.last_state = [t[:, -1].to(m.weight.dtype, copy=True) for t in last]  # type: ignore[index]
        return m

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

    def python_ctor(self, g: CodeGen) -> str:
        base = standalone_base(type(self))
        return call_expr(g.use(base), self.input_dim, self.hidden_dim, remember_states=self.remember_states)

    def python_state(self) -> dict[str, torch.Tensor]:
        return {**self.state_dict(), **self.carried_tensors()}


class LuaTorchRnnLSTM(_TorchRnnRecurrent, TorchRnnLSTM):
    """torch-rnn's nn.LSTM (LSTM.lua; the converter of ``nn.LSTM`` picks it when the object has torch-rnn's
    fields): gates i, f, o, g in column blocks of ``weight`` (D + H) x 4H; input x, [h0, x] or [c0, h0, x]."""

    lua_types = ()  # registered through LuaLSTM (the same Lua class name as rnn's nn.LSTM)
    lua_buffers = ("cell", "gates", "buffer1", "buffer2", "buffer3", "grad_a_buffer")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lua_typename = "nn.LSTM"


class LuaVanillaRNN(_TorchRnnRecurrent, VanillaRNN):
    """torch-rnn's nn.VanillaRNN: ``h_t = tanh(b + x_t Wx + h_{t-1} Wh)``; input x or [h0, x]."""

    lua_types = ("nn.VanillaRNN",)
    lua_buffers = ("buffer1", "buffer2")



class _TorchRnnNet(_RecurrentErrors, LuaModule, nn.Module):
    """torch-rnn's containers: run ``net`` (an nn.Sequential) after resizing the nn.View modules that
    fields name to the input's N, T: ``flat_fields`` to (N*T, -1), ``unflat_fields`` to (N, T, -1).

    Fields naming modules of ``net`` (one, or a list such as LanguageModel's ``rnns``) and the plain
    fields (numbers, strings, the vocabulary tables) are kept for export.
    """

    flat_fields: ClassVar[tuple[str, ...]] = ()
    unflat_fields: ClassVar[tuple[str, ...]] = ()
    required_views: ClassVar[tuple[str, ...]] = ()  # view fields Lua's updateOutput resizes without a check

    def __init__(self, net: nn.Module, aliases: dict[str, Any], extra: dict[str, Any]):
        super().__init__()
        self.net = net
        self.aliases = aliases  # field -> index in net (int) or list of indices
        self.lua_extra = extra

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        lua_net = f.get("net")
        if lua_net is None:
            raise f.error("missing field 'net' (the nn.Sequential it runs)")
        if not isinstance(lua_net, t7.TorchObject) or lua_net.typename != "nn.Sequential":
            raise f.bad("net", lua_net, "should be the nn.Sequential it runs")
        members = Fields(lua_net, f"{f.path}.net").module_list("modules")
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
            if name not in aliases and (f.has(name) or name in cls.required_views) \
                    and not (isinstance(f.get(name), (list, dict)) and not f.get(name)):
                raise f.bad(name, f.get(name), "should be an nn.View of its net (one of net.modules), or a list "
                                               "of them: the view its forward resizes to the input's N, T")
            for i in _as_indices(aliases.get(name)):
                if members[i].typename != "nn.View":
                    raise f.bad(name, members[i], "should be an nn.View of its net (one of net.modules), or a "
                                                  "list of them: the view its forward resizes to the input's N, T")
        cls.check_extra(f, extra)
        net = convert(lua_net, f"{f.path}.net")
        return cls(net, aliases, extra)

    @classmethod
    def check_extra(cls, f: Fields, extra: dict[str, Any]) -> None:
        """Check the plain fields kept (none by default)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = first_tensor(self, input)
        if x.dim() < 2:
            raise RecurrentInputError(f"{_where(self)}: expected an input N x T x ..., got {tuple(x.shape)}")
        N, T = x.shape[0], x.shape[1]
        for names, size in ((self.flat_fields, [N * T, -1]), (self.unflat_fields, [N, T, -1])):
            for name in names:
                for i in _as_indices(self.aliases.get(name)):
                    self.net[i].size = list(size)  # Lua's view:resetSize(...)
        return self.net(input)

    def python_children(self) -> list:
        return [(f"net.modules[{i}]", m) for i, m in enumerate(self.net.children(), 1)]

    def python_forward(self, g: CodeGen, x: Value) -> Value:
        """The net's modules in order, its resized views as reshapes to the input's N x T (Lua's resetSize)."""
        n, t = g.fresh("n"), g.fresh("t")
        g.line(f"{n}, {t} = {call_expr(g.use(first_tensor), Code('self'), Code(g.expr(x)))}.shape[:2]")
        flat = {i for name in self.flat_fields for i in _as_indices(self.aliases.get(name))}
        unflat = {i for name in self.unflat_fields for i in _as_indices(self.aliases.get(name))}
        for i, m in enumerate(self.net.children()):
            if i in flat or i in unflat:
                size = f"{n} * {t}, -1" if i in flat else f"{n}, {t}, -1"
                g.comment(f"net.modules[{i + 1}]: nn.View resized to ({size}) for this input")
                x = g.assign(f"{g.expr(x)}.reshape({size})", x)
            else:
                x = g.emit(m, x)
        return x

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
    required_views = ("view_in", "view_out")

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
    required_views = ("view1", "view2")

    @classmethod
    def check_extra(cls, f: Fields, extra: dict[str, Any]) -> None:
        """The vocabulary: ``idx_to_token`` maps 1-based indices to tokens (strings), as Lua's ``__init`` reads it."""
        for name in ("idx_to_token", "token_to_idx"):
            value = f.get(name)
            if value is None:
                continue
            items = enumerate(value, 1) if isinstance(value, list) else \
                value.items() if isinstance(value, dict) and not isinstance(value, t7.TorchObject) else None
            keys, values = (int, float), (str, bytes)
            if name == "token_to_idx":
                keys, values = values, keys
            if items is None or not all(isinstance(k, keys) and not isinstance(k, bool) and isinstance(v, values)
                                        and not isinstance(v, bool) for k, v in items):
                what = "index -> token (string)" if name == "idx_to_token" else "token (string) -> index"
                raise f.bad(name, value, f"should be a table {what}")

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
            raise RecurrentInputError(f"{_where(self)}: characters not in the vocabulary: {unknown!r}")
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

