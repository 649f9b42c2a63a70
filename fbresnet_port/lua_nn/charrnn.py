"""The user class of karpathy/char-rnn that its checkpoints hold: ``OneHot`` (util/OneHot.lua), and dpnn's
``nn.OneHot`` (OneHot.lua), its generalisation to inputs of any shape.

A char-rnn checkpoint ``{protos={rnn=..., criterion=...}, opt=..., vocab=...}`` converts with
``load_lua_model(path, key='protos.rnn')``: its model/LSTM.lua, GRU.lua and RNN.lua graphs are nngraph
gModules of standard nn modules (see :mod:`.graph`) plus this OneHot.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._base import MAX_DIM_SIZE, ChildConverter, Fields, LuaModule, export_param, float_param
from .standalone.charrnn import OneHot
from .text import LuaInputError

__all__ = ["LuaOneHot"]


class LuaOneHot(LuaModule, OneHot):
    """char-rnn's OneHot(outputSize) / dpnn's nn.OneHot (the computation: :class:`standalone.charrnn.OneHot`).

    char-rnn's output rows are the rows of its saved ``_eye`` (``self._eye:index(1, input)``): a saved ``_eye``
    other than the identity is kept and used as Lua uses it (its rows are the valid indices).
    """

    lua_types = ("OneHot", "nn.OneHot")

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        size = f.int("outputSize", min=1, max=MAX_DIM_SIZE)
        char_rnn = f.typename == "OneHot"
        if not char_rnn or not f.has("_eye"):
            return cls(size, char_rnn)
        # updateOutput: output (N x outputSize) :copy(self._eye:float():index(1, input)); nil -> torch.eye
        eye = f.tensor("_eye", floating=False, allow_empty=False, dim=2)
        f.check(eye.shape[1] == size and eye.dtype != torch.bool, "_eye", eye,
                f"should be a matrix of outputSize = {size} columns (torch.eye(outputSize))")
        identity = eye.shape[0] == size and torch.equal(eye, torch.eye(size, dtype=eye.dtype))
        m = cls(size, char_rnn, 0 if identity else eye.shape[0])
        if not identity:
            m.eye = float_param(eye).float()
        if eye.is_floating_point():
            m._one = m._one.to(torch.float64 if eye.dtype == torch.float64 else torch.float32)
        return m

    def input_error(self, what: str) -> LuaInputError:
        return LuaInputError(f"{self.lua_typename}: {what}")

    def python_ctor(self, g: Any) -> str:
        from .codegen import call_expr
        rows = 0 if self.eye is None else self.eye.shape[0]
        return call_expr(g.use(OneHot), self.outputSize, char_rnn=self.char_rnn, eye_rows=rows)

    def lua_fields(self) -> dict[str, Any]:
        if self.lua_typename == "OneHot":
            return {"outputSize": self.outputSize,
                    "_eye": export_param(torch.eye(self.outputSize) if self.eye is None else self.eye)}
        return {"outputSize": self.outputSize}

    def lua_str(self) -> str:
        return self.lua_typename if self.lua_typename == "OneHot" else f"{self.lua_typename}({self.outputSize})"
