"""Modules of the Element-Research ``dpnn`` package (which rnn builds on): ReverseTable.lua, ZipTable.lua,
Decorator.lua and Inception.lua, with the decorated-child lookup and ``tostring`` that rnn's decorators
(MaskZero, Sequencer, Recursor, BiSequencer) share. dpnn's nn.OneHot is converted in :mod:`.charrnn`.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .. import t7
from ._base import ChildConverter, Fields, LuaModule, lua_str, planes_after, show_value, to_lua
from .simple import SimpleLuaModule
from .codegen import Code, CodeGen, ListVal, Value, call_expr
from .standalone.dpnn import reverse_table, zip_table
from .text import LuaInputError

__all__ = ["LuaReverseTable", "LuaZipTable", "LuaDecorator", "LuaInception"]


# ----------------------------------------------------------------------------------------------
# Table helpers: ReverseTable, ZipTable
# ----------------------------------------------------------------------------------------------

class LuaReverseTable(SimpleLuaModule):
    """dpnn's nn.ReverseTable: the list in reverse order."""

    lua_types = ("nn.ReverseTable",)
    lua_table_output = lua_table_grad_input = True

    def forward(self, input: list[Any]) -> list[Any]:
        return reverse_table(input, self.input_error)

    def input_error(self, what: str) -> LuaInputError:
        return LuaInputError(f"{_where(self)}: {what}")

    def python_children(self) -> list:
        return []  # no layer: a list expression in the generated forward

    def python_forward(self, g: CodeGen, x: Value) -> Value:
        if isinstance(x, ListVal):
            return ListVal(tuple(reversed(x.items)))
        return g.assign(call_expr(g.use(reverse_table), Code(g.expr(x))), x)


class LuaZipTable(SimpleLuaModule):
    """dpnn's nn.ZipTable: ``{{a1, a2}, {b1, b2}}`` -> ``{{a1, b1}, {a2, b2}}``."""

    lua_types = ("nn.ZipTable",)
    lua_table_output = lua_table_grad_input = True

    def forward(self, input: list[list[Any]]) -> list[list[Any]]:
        return zip_table(input, self.input_error)

    def input_error(self, what: str) -> LuaInputError:
        return LuaInputError(f"{_where(self)}: {what}")

    def lua_fields(self) -> dict[str, Any]:
        return {"modules": t7.LuaTable()}

    def python_children(self) -> list:
        return []  # no layer: a list expression in the generated forward

    def python_forward(self, g: CodeGen, x: Value) -> Value:
        if isinstance(x, ListVal) and all(isinstance(v, ListVal) for v in x.items) \
                and len({len(v.items) for v in x.items}) <= 1:  # type: ignore[union-attr]
            return ListVal(tuple(ListVal(col) for col in zip(*(v.items for v in x.items))))  # type: ignore[union-attr]
        return g.assign(call_expr(g.use(zip_table), Code(g.expr(x))), x)


def _where(module: LuaModule) -> str:
    """``<class> at <path>`` of a converted module for error messages (its class alone if it has no path)."""
    path = module.lua_path
    return module.lua_typename if path == module.lua_typename else f"{module.lua_typename} at {path}"


# ----------------------------------------------------------------------------------------------
# Decorator, Inception
# ----------------------------------------------------------------------------------------------

def _decorator_str(module: LuaModule, child: nn.Module) -> str:
    """nn.Decorator's ``tostring``: ``<class> @ <child>``."""
    return f"{module.lua_typename} @ {lua_str(child)}"


def _single_child(f: Fields, convert: ChildConverter, *names: str) -> nn.Module:
    """Convert the decorated module: the first of ``names`` present (the field Lua's forward runs), else
    ``modules[1]``. ``modules``, when there, holds exactly that one module (as every Lua constructor of a
    decorator sets it: ``self.module = module; self.modules[1] = module``)."""
    mods = f.module_list("modules", required=False)
    if len(mods) > 1:
        raise f.bad("modules", f.get("modules"), "should hold the one decorated module")
    for name in names:
        if f.has(name):
            child = f.get(name)
            if mods and mods[0] is not child:
                raise f.bad("modules", f.get("modules"), f"modules[1] should be the module of field '{name}' "
                                                         f"(the same object; got {show_value(mods[0])})")
            return convert(child, f"{f.path}.{name}")
    if not mods:
        raise f.error("missing the decorated module (field 'modules')")
    return convert(mods[0], f"{f.path}.modules[1]")


def _scalar_fields(f: Fields, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The number/string/boolean fields of a Lua object (re-exported unchanged)."""
    return {k: v for k, v in f.raw.items()
            if isinstance(k, str) and isinstance(v, (bool, int, float, str)) and k not in skip
            and k not in ("train", "_type")}


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

    def lua_planes(self, planes: int | None) -> int | None:
        return planes_after(self.module, planes)

    def python_children(self) -> list:
        return [("module", self.module)]

    def python_forward(self, g: CodeGen, x: Value) -> Value:
        return g.emit(self.module, x)


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
        return cls(_single_child(f, convert, "module"), _scalar_fields(f))

    def lua_fields(self) -> dict[str, Any]:
        return dict(self.lua_config, **super().lua_fields())
