"""Lua containers and table modules: Sequential, Concat, ConcatTable, ParallelTable, the element-wise
table ops, JoinTable, SplitTable, SelectTable, NarrowTable, FlattenTable, and DenseNet's
``nn.DenseConnectLayerCustom`` (liuzhuang13/DenseNet models/DenseConnectLayer.lua).

Lua tables are Python lists (nested tables: nested lists). Children keep Lua's order, so
``parameters()`` is Lua's ``model:parameters()`` order and ``modules()`` is ``listModules()`` order.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from .. import t7
from ._base import (MAX_DIM_SIZE, TORCH_EXPORTERS, ChildConverter, Fields, LuaModule, TablePlanes, children_of,
                    empty_tensor, indent, long_storage, lua_module, lua_str, planes_after, to_lua)
from .codegen import Code, ListVal, Value, Var, call_expr, shared
from .shapes import _N_DIMS
from .simple import REQUIRED, SimpleLuaModule, dimension, flag, size
from .standalone.shapes import table_entries
from .text import LuaInputError, lua_where
from .standalone.containers import (SpatialClassifier, as_table, depth_concat, flatten_table, join_table,
                                    narrow_table, select_table, split_table, table_reduce)


def _chain(modules: Iterable[nn.Module], planes: Any) -> Any:
    """The planes after running ``modules`` one after the other from ``planes`` (each module checks what
    it gets: a LuaModelError names the first one whose input does not fit)."""
    for m in modules:
        planes = planes_after(m, planes)
    return planes


def _joined(planes: list[Any]) -> Any:
    """Planes of outputs joined along the planes dimension: their sum when all known."""
    return sum(planes) if planes and all(isinstance(p, int) for p in planes) else None


def _same(planes: list[Any]) -> Any:
    """Planes of outputs combined element-wise or joined along another dimension: the common value."""
    return planes[0] if planes and isinstance(planes[0], int) and all(p == planes[0] for p in planes) else None


def _inline_call(g: Any, func: Any, *args: Any) -> Var:
    """``x = func(args)`` in the generated forward (``func``: a standalone function; values as Code)."""
    return g.assign(call_expr(g.use(func), *[Code(g.expr(a)) if isinstance(a, (Var, ListVal)) else a for a in args]))


class _LuaContainer(LuaModule):
    """Children in Lua order; exported as ``modules``."""

    lua_takes_table_planes = True

    def lua_children(self) -> list[nn.Module]:
        return list(self.children())

    def python_children(self) -> list[tuple[str, nn.Module]]:
        """Written inline in the generated forward; children in Lua's order."""
        return [(f"modules[{i}]", m) for i, m in enumerate(self.lua_children(), 1)]

    def lua_fields(self) -> dict[str, Any]:
        return {"modules": t7.LuaList(to_lua(m) for m in self.lua_children())}

    def branch_str(self, head: str = "input", tail: str = "output") -> str:
        """Lua's ``tostring`` of Concat/ConcatTable/ParallelTable (branches drawn with ``|`->``)."""
        mods = self.lua_children()
        s = f"{self.lua_typename} {{\n  {head}"
        for i, m in enumerate(mods, 1):
            last = i == len(mods)
            arrow, ext = ("   `-> ", "       ") if last else ("  |`-> ", "  |    ")
            s += f"\n  {arrow}({i}): " + indent(lua_str(m), "  " + ext)
        return s + f"\n  {'   ... -> '}{tail}\n}}"


class LuaSequential(_LuaContainer, nn.Sequential):
    """nn.Sequential."""

    lua_types = ("nn.Sequential",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = cls(*children_of(f, convert))
        m.lua_planes(None)  # the chain fits from its first module with a known width on
        return m

    def lua_planes(self, planes: Any) -> Any:
        return _chain(self.lua_children(), planes)

    def python_forward(self, g: Any, x: Value) -> Value:
        for m in self.lua_children():
            x = g.emit(m, x)
        return x

    def python_ctor(self, g: Any) -> str:
        """As one constructor (for a wrapper whose constructor takes the container, e.g. SpatialClassifier)."""
        return "nn.Sequential(" + ", ".join(g.ctor(m).text for m in self.lua_children()) + ")"

    def lua_str(self) -> str:
        mods = self.lua_children()
        s = "nn.Sequential {\n  [input" + "".join(f" -> ({i})" for i in range(1, len(mods) + 1)) + " -> output]"
        for i, m in enumerate(mods, 1):
            s += f"\n  ({i}): " + indent(lua_str(m), "  ")
        return s + "\n}"


TORCH_EXPORTERS[nn.Sequential] = lambda m: lua_module(
    "nn.Sequential", train=bool(m.training), modules=t7.LuaList(to_lua(c) for c in m.children()))


class _ModuleListContainer(_LuaContainer, nn.Module):
    def __init__(self, modules: list[nn.Module], **attrs: Any):
        super().__init__()
        for i, m in enumerate(modules):
            self.add_module(str(i), m)
        for k, v in attrs.items():
            setattr(self, k, v)

    def lua_str(self) -> str:
        return self.branch_str()


class LuaConcat(_ModuleListContainer):
    """nn.Concat(dimension): every child gets the input; outputs joined along the (absolute) dimension."""

    lua_types = ("nn.Concat",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = cls(children_of(f, convert), dimension=f.int("dimension", min=1, max=MAX_DIM_SIZE))
        m.lua_planes(None)
        return m

    def lua_planes(self, planes: Any) -> Any:
        """Each branch checked from the input's planes; joined along dimension 2 (a batch's planes): the sum."""
        outs = [planes_after(m, planes) for m in self.lua_children()]
        return _joined(outs) if int(self.dimension) == 2 else _same(outs)

    def forward(self, input: Any) -> torch.Tensor:
        return torch.cat([m(input) for m in self.children()], int(self.dimension) - 1)

    def python_forward(self, g: Any, x: Value) -> Value:
        outs = ListVal(tuple(g.emit(m, shared(x)) for m in self.lua_children()))
        return g.assign(f"torch.cat({g.expr(outs)}, {int(self.dimension) - 1})")

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), dimension=self.dimension, outputSize=long_storage([]))


class LuaDepthConcat(LuaConcat):
    """nn.DepthConcat(dimension) (GoogLeNet / OpenFace nn4 inception blocks): as nn.Concat, but outputs
    smaller than the largest in another dimension are zero-padded around, starting at
    floor((largest - size) / 2) (one more pad after than before for odd differences)."""

    lua_types = ("nn.DepthConcat",)

    def forward(self, input: Any) -> torch.Tensor:
        return depth_concat([m(input) for m in self.children()], self.dimension)

    def python_forward(self, g: Any, x: Value) -> Value:
        outs = ListVal(tuple(g.emit(m, shared(x)) for m in self.lua_children()))
        return _inline_call(g, depth_concat, outs, int(self.dimension))

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), size=long_storage([]))


class LuaConcatTable(_ModuleListContainer):
    """nn.ConcatTable: every child gets the input; returns the list of their outputs."""

    lua_types = ("nn.ConcatTable",)
    lua_table_output = True

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = cls(children_of(f, convert))
        m.lua_planes(None)
        return m

    def lua_planes(self, planes: Any) -> Any:
        return TablePlanes(planes_after(m, planes) for m in self.lua_children())

    def forward(self, input: Any) -> list[Any]:
        return [m(input) for m in self.children()]

    def python_forward(self, g: Any, x: Value) -> Value:
        return ListVal(tuple(g.emit(m, shared(x)) for m in self.lua_children()))


class LuaParallelTable(_ModuleListContainer):
    """nn.ParallelTable: child i gets input[i]."""

    lua_types = ("nn.ParallelTable",)
    lua_table_output = lua_table_grad_input = True

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        m = cls(children_of(f, convert))
        m.lua_planes(None)
        return m

    def lua_planes(self, planes: Any) -> Any:
        mods = self.lua_children()
        ins = list(planes) if isinstance(planes, TablePlanes) else [None] * len(mods)
        ins += [None] * (len(mods) - len(ins))
        return TablePlanes(planes_after(m, p) for m, p in zip(mods, ins))

    def forward(self, input: list[Any]) -> list[Any]:
        mods = list(self.children())
        return [m(x) for m, x in zip(mods, table_entries(input, len(mods)))]

    def python_forward(self, g: Any, x: Value) -> Value:
        mods = self.lua_children()
        if isinstance(x, ListVal) and len(x.items) >= len(mods):
            items = x.items
        else:
            items = tuple(g.assign(f"{g.expr(x)}[{i}]") for i in range(len(mods)))
        return ListVal(tuple(g.emit(m, v) for m, v in zip(mods, items)))

    def lua_str(self) -> str:
        return self.branch_str()


# ----------------------------------------------------------------------------------------------
# Table modules without children
# ----------------------------------------------------------------------------------------------

class LuaCTable(SimpleLuaModule):
    """nn.CAddTable, CSubTable, CMulTable, CDivTable, CMaxTable, CMinTable: element-wise over the list."""

    lua_types = ("nn.CAddTable", "nn.CSubTable", "nn.CMulTable", "nn.CDivTable", "nn.CMaxTable",
                 "nn.CMinTable")
    lua_params = (("inplace", None),)
    lua_checks = {"inplace": flag}
    lua_table_grad_input = True
    lua_takes_table_planes = True

    def lua_planes(self, planes: Any) -> Any:
        return _same(list(planes)) if isinstance(planes, TablePlanes) else None

    @property
    def op(self) -> str:
        return self.lua_typename[len("nn.C"):-len("Table")]

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        return table_reduce(self.op, input)

    def python_children(self) -> list:
        return []

    def python_forward(self, g: Any, x: Value) -> Value:
        """A known table: an expression (``a + b``, ``torch.maximum(a, b)``); else :func:`table_reduce`."""
        op = self.op
        if not isinstance(x, ListVal) or len(x.items) < (2 if op in ("Sub", "Div") else 1):
            return _inline_call(g, table_reduce, op, x)
        names = [g.expr(v) for v in x.items]
        if op in ("Add", "Sub", "Mul", "Div"):
            sign = {"Add": " + ", "Sub": " - ", "Mul": " * ", "Div": " / "}[op]
            return g.assign(sign.join(names[:2] if op in ("Sub", "Div") else names))
        expr = names[0]
        for name in names[1:]:
            expr = f"torch.{'maximum' if op == 'Max' else 'minimum'}({expr}, {name})"
        return g.assign(expr)


class LuaJoinTable(SimpleLuaModule):
    """nn.JoinTable(dimension, nInputDims): concatenation of the list along a Lua dimension."""

    lua_types = ("nn.JoinTable",)
    lua_params = (("dimension", REQUIRED), ("nInputDims", None))
    lua_checks = {"dimension": dimension, "nInputDims": _N_DIMS}
    lua_table_grad_input = True
    lua_takes_table_planes = True

    def lua_planes(self, planes: Any) -> Any:
        """Joined along a batch's planes (dimension 2, or 1 of samples with nInputDims): the sum."""
        if not isinstance(planes, TablePlanes):
            return None
        dim = int(self.dimension)
        on_planes = dim == 2 if self.nInputDims is None else dim == 1
        return _joined(list(planes)) if on_planes else _same(list(planes))

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        return join_table(input, self.dimension, self.nInputDims)

    def python_children(self) -> list:
        return []

    def python_forward(self, g: Any, x: Value) -> Value:
        """A known table along a positive dimension without nInputDims: ``torch.cat([a, b], d)``."""
        if isinstance(x, ListVal) and x.items and int(self.dimension) > 0 and self.nInputDims is None:
            return g.assign(f"torch.cat({g.expr(x)}, {int(self.dimension) - 1})")
        return _inline_call(g, join_table, x, int(self.dimension), self.nInputDims)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), size=long_storage([]))


class LuaSplitTable(SimpleLuaModule):
    """nn.SplitTable(dimension, nInputDims): the list of slices along a dimension."""

    lua_types = ("nn.SplitTable",)
    lua_params = (("dimension", REQUIRED), ("nInputDims", None))
    lua_checks = {"dimension": dimension, "nInputDims": _N_DIMS}
    lua_table_output = True

    def forward(self, input: torch.Tensor) -> list[torch.Tensor]:
        return split_table(input, self.dimension, self.nInputDims)

    def python_children(self) -> list:
        return []

    def python_forward(self, g: Any, x: Value) -> Value:
        return _inline_call(g, split_table, x, int(self.dimension), self.nInputDims)


class LuaSelectTable(SimpleLuaModule):
    """nn.SelectTable(index): one element (negative: from the end)."""

    lua_types = ("nn.SelectTable",)
    lua_params = (("index", REQUIRED),)
    lua_table_grad_input = True
    lua_takes_table_planes = True

    @classmethod
    def read_param(cls, f: Fields, name: str, default: Any) -> Any:
        if isinstance(f.get(name), (str, bytes)):  # a key of a table with named entries
            return f.string(name)
        return dimension(f, name, default)

    def lua_planes(self, planes: Any) -> Any:
        if not isinstance(planes, TablePlanes) or isinstance(self.index, str):
            return None
        index = int(self.index)
        i = len(planes) + index if index < 0 else index - 1
        return planes[i] if 0 <= i < len(planes) else None

    def forward(self, input: list[Any]) -> Any:
        return select_table(input, self.index)

    def python_children(self) -> list:
        return []

    def python_forward(self, g: Any, x: Value) -> Value:
        if isinstance(x, ListVal) and not isinstance(self.index, str):
            n, index = len(x.items), int(self.index)
            i = n + index if index < 0 else index - 1
            if 0 <= i < n:
                return x.items[i]
        return _inline_call(g, select_table, x, self.index)

    def lua_str(self) -> str:
        return f"{self.lua_typename}({self.index})"


class LuaNarrowTable(SimpleLuaModule):
    """nn.NarrowTable(offset, length): the sub-list offset .. offset+length-1."""

    lua_types = ("nn.NarrowTable",)
    lua_params = (("offset", REQUIRED), ("length", 1))
    lua_checks = {"offset": size(), "length": size(0)}
    lua_table_output = lua_table_grad_input = True
    lua_takes_table_planes = True

    def lua_planes(self, planes: Any) -> Any:
        if not isinstance(planes, TablePlanes):
            return None
        start = int(self.offset) - 1
        return TablePlanes(planes[start:start + int(self.length)])

    def forward(self, input: list[Any]) -> list[Any]:
        return narrow_table(input, self.offset, self.length)

    def python_children(self) -> list:
        return []

    def python_forward(self, g: Any, x: Value) -> Value:
        start, length = int(self.offset) - 1, int(self.length)
        if isinstance(x, ListVal) and start + length <= len(x.items):
            return ListVal(x.items[start:start + length])
        return _inline_call(g, narrow_table, x, int(self.offset), length)


class LuaFlattenTable(SimpleLuaModule):
    """nn.FlattenTable: nested lists -> one flat list (depth first)."""

    lua_types = ("nn.FlattenTable",)
    lua_table_output = lua_table_grad_input = True
    lua_takes_table_planes = True

    def lua_planes(self, planes: Any) -> Any:
        if not isinstance(planes, TablePlanes):
            return None
        flat: list[Any] = []
        for p in planes:
            flat.extend(p if isinstance(p, TablePlanes) else [p])
        return TablePlanes(flat)

    def forward(self, input: list[Any]) -> list[torch.Tensor]:
        return flatten_table(input)

    def python_children(self) -> list:
        return []

    def python_forward(self, g: Any, x: Value) -> Value:
        return _inline_call(g, flatten_table, x)  # whether an entry is itself a table is known when it runs

    def lua_fields(self) -> dict[str, Any]:
        return {"input_map": t7.LuaTable()}


# ----------------------------------------------------------------------------------------------
# DenseNet's memory-efficient layer
# ----------------------------------------------------------------------------------------------

class LuaDenseConnectLayerCustom(_LuaContainer, nn.Module):
    """nn.DenseConnectLayerCustom (DenseNet -optMemory >= 3): input x (tensor) or {x1..xn} (list);
    output {x1..xn, net2(net1(cat(x1..xn, 2)))} as a list. Its optMemory 4 recomputation of net1 in
    the backward pass leaves the same gradients and running statistics as one plain forward."""

    lua_types = ("nn.DenseConnectLayerCustom",)
    lua_table_output = lua_table_grad_input = True

    def __init__(self, net1: nn.Module, net2: nn.Module, opt: dict[str, Any] | None = None):
        super().__init__()
        self.net1 = net1
        self.net2 = net2
        self.lua_opt = dict(opt or {})

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        if f.has("net1") and f.has("net2"):
            net1 = convert(f.get("net1"), f"{f.path}.net1")
            net2 = convert(f.get("net2"), f"{f.path}.net2")
        else:
            f.check(len(f.module_list()) == 2, "modules", f.get("modules"),
                    "should be {net1, net2} (or fields net1 and net2)")
            net1, net2 = children_of(f, convert)
        opt = f.get("opt", {})
        f.check(isinstance(opt, dict), "opt", opt, "should be the table of DenseNet options")
        m = cls(net1, net2, {k: v for k, v in opt.items() if isinstance(k, str)})
        m.lua_planes(None)
        return m

    def lua_planes(self, planes: Any) -> Any:
        """{x1..xn} (or x) -> {x1..xn, net2(net1(cat(x1..xn, 2)))}."""
        ins = list(planes) if isinstance(planes, TablePlanes) else [planes]
        return TablePlanes(ins + [_chain((self.net1, self.net2), _joined(ins))])

    def forward(self, input: Any) -> list[torch.Tensor]:
        table = as_table(input)
        return table + [self.net2(self.net1(table[0] if len(table) == 1 else torch.cat(table, 1)))]

    def python_children(self) -> list[tuple[str, nn.Module]]:
        return [("modules[1]", self.net1), ("modules[2]", self.net2)]  # Lua's modules = {net1, net2}

    def python_forward(self, g: Any, x: Value) -> Value:
        """{x1..xn} -> {x1..xn, net2(net1(cat(x1..xn, 2)))} (x alone: {x, net2(net1(x))})."""
        if isinstance(x, ListVal):
            table = x
            joined = shared(table.items[0]) if len(table.items) == 1 else g.assign(f"torch.cat({g.expr(shared(x))}, 1)")
        else:
            table = g.assign(f"{g.use(as_table)}({g.expr(x)})", hint="t")
            joined = g.assign(f"torch.cat({table.name}, 1)")
        y = g.emit(self.net2, g.emit(self.net1, joined))
        if isinstance(table, ListVal):
            return ListVal(tuple(shared(v) for v in table.items) + (y,))
        return g.assign(f"{table.name} + [{g.expr(y)}]", hint="t")

    def lua_fields(self) -> dict[str, Any]:
        net1, net2 = to_lua(self.net1), to_lua(self.net2)
        opt = t7.LuaTable(self.lua_opt)
        opt.setdefault("optMemory", 3)
        return {"net1": net1, "net2": net2, "modules": t7.LuaList([net1, net2]), "opt": opt,
                "input_c": empty_tensor(), "saved_bn_running_mean": empty_tensor(),
                "saved_bn_running_var": empty_tensor()}

    def lua_str(self) -> str:
        return self.branch_str("{input}", "{output}").replace(self.lua_typename, "DenseConnectLayerCustom", 1)


# ----------------------------------------------------------------------------------------------
# nnx's per-pixel classifier
# ----------------------------------------------------------------------------------------------

class LuaSpatialClassifier(_LuaContainer, SpatialClassifier):
    """nn.SpatialClassifier (clementfarabet/lua---nnx; torch/demos' face detector): applies ``classifier``
    (e.g. an nn.Linear over the K planes) to the K-vector of every pixel of a K x H x W input, giving
    N x H x W. A 4-D batch (B x K x H x W) is taken sample by sample (Lua accepts 3-D input only)."""

    lua_types = ("nn.SpatialClassifier",)

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        if f.has("classifier"):
            return cls(convert(f.get("classifier"), f"{f.path}.classifier"))
        mods = children_of(f, convert)  # `modules` is the classifier's own list when saved without it
        return cls(mods[0] if len(mods) == 1 else LuaSequential(*mods))

    def lua_planes(self, planes: Any) -> Any:
        """The K planes are the classifier's features; its outputs are the planes of the result."""
        return planes_after(self.classifier, planes)

    def input_error(self, what: str) -> LuaInputError:
        return LuaInputError(f"{lua_where(self)}: {what}")

    def python_children(self) -> None:
        return None  # a leaf: SpatialClassifier(<the classifier's constructor>)

    def python_ctor(self, g: Any) -> str:
        return call_expr(g.use(SpatialClassifier), g.ctor(self.classifier))

    def lua_fields(self) -> dict[str, Any]:
        classifier = to_lua(self.classifier)
        return {"classifier": classifier, "modules": t7.LuaList([classifier]), "spatialOutput": True}

    def lua_str(self) -> str:
        return f"{self.lua_typename} {{\n  " + indent(lua_str(self.classifier), "  ") + "\n}"
