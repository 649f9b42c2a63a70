"""nngraph: ``nn.gModule`` (a graph of modules) and the helper modules ``node:split(1)``, nngraph.JustTable
and ``criterion(...)`` nodes create (nngraph.JustElement, nngraph.JustTable, nn.ModuleFromCriterion).

Port of torch/nngraph ``gmodule.lua`` / ``node.lua`` on the saved layout of torch/graph's ``Node`` and
``Graph``. What a saved gModule holds and what the conversion reads:

* ``forwardnodes``: the nodes of the forward graph in the topological order Lua evaluates them. Each
  ``nngraph.Node`` has a ``data`` table shared with the node's twin in the backward graph:
  ``module`` (absent for the input/output/split nodes, which pass their input on), ``mapindex``
  (the producing nodes' ``data`` tables in the order of the module's input table), ``selectindex``
  (the output of ``node:split(n)`` that takes element i of the table its one producer outputs) and
  ``nSplitOutputs`` (the split node: its input table must have that many elements).
* ``innode`` (its ``data`` receives the gModule input: one value when ``nInputs`` <= 1, otherwise the
  table of inputs) and ``outnode`` (its inputs are the outputs: one value, or a table of them).
* ``modules``: every node's module in ``forwardnodes`` order; ``model:parameters()`` follows it.

Lua tables in and out are Python lists. Gradients come from autograd: a node used by several
consumers receives the sum of their gradients, as Lua's ``getTotalGradOutput``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .. import t7
from ..errors import UserError
from ._base import (ChildConverter, Fields, LuaModelError, LuaModule, TablePlanes, lua_str, planes_after, shapes_str,
                    show_value, to_lua)
from .codegen import Code, CodeGen, ListVal, Value, Var, call_expr, shared
from .simple import SimpleLuaModule
from .standalone.graph import ModuleFromCriterion, just_element, split_outputs


class GraphInputError(UserError, ValueError):
    """The input given to a graph node does not have the shape of table the graph expects."""


def _named(module: nn.Module) -> str:
    """``nn.Linear at model.modules[3]``: a module's Lua class and place in the Lua tree (its class alone
    for a module built in Python)."""
    typename = getattr(module, "lua_typename", type(module).__name__)
    path = module.__dict__.get("_lua_path") if isinstance(module, LuaModule) else None
    return f"{typename} at {path}" if path else typename


def _python_name(name: str) -> str:
    """A node annotation as a name in generated code: ``_node`` appended where it would shadow something the code
    uses (torch, nn, F, math, a standalone definition, an nn.Module attribute) or look like the generator's
    temporaries ``x``, ``x1``, ..."""
    from .codegen import identifier, standalone_library

    ident = identifier(name)
    if (re.fullmatch(r"x\d*", ident) or ident in ("torch", "nn", "F", "math", "input", "self")
            or hasattr(nn.Module, ident) or ident in standalone_library().definitions):
        ident += "_node"
    return ident


def _input_kind(value: Any) -> str:
    """What a node got, for messages: ``a table of 3 elements``, ``a Tensor of size 2x3``."""
    if isinstance(value, (list, tuple)):
        return f"a table of {len(value)} element{'s' if len(value) != 1 else ''} ({shapes_str(value)})"
    if isinstance(value, torch.Tensor):
        return f"a Tensor of size {shapes_str(value)}"
    return shapes_str(value)


def lua_array(value: Any) -> list[Any]:
    """The array part ``t[1] .. t[n]`` of a Lua table (a LuaList, or a LuaTable that also has other keys,
    like nngraph's ``children`` and ``mapindex`` that map their elements back to their index)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, dict):
        out, i = [], 1
        while i in value:
            out.append(value[i])
            i += 1
        return out
    raise TypeError(f"expected a Lua table, got {type(value).__name__}")


def lua_index_table(items: Sequence[Any]) -> "t7.LuaTable":
    """A Lua table ``{items..., [item] = index}`` (graph.Node ``children``, nngraph ``mapindex``, graph.Graph
    ``nodes``/``edges``: a list that also maps each element back to its 1-based position)."""
    table = t7.LuaTable()
    for i, item in enumerate(items, 1):
        table[i] = item
        table[t7.IdKey(item)] = i
    return table


@dataclass(frozen=True)
class GraphNode:
    """One node of the forward graph (the ``data`` table of an nngraph.Node)."""

    inputs: tuple[int, ...] = ()       # producing nodes (positions in the node list), in ``mapindex`` order
    module: int | None = None          # index into LuaGModule.graph_modules; None: the input passes through
    selectindex: int | None = None     # 1-based element of the one input table (outputs of node:split(n))
    n_split: int | None = None         # nSplitOutputs: the split node, whose table must have n elements
    name: str | None = None            # annotations.name (nngraph's node:annotate{name = ...})


class LuaGModule(LuaModule, nn.Module):
    """nn.gModule: runs its nodes in forward topological order.

    ``forward(input)``: with one graph input, ``input`` is passed as it is (a tensor or a list); with
    ``n_inputs`` > 1 it must be a list of that many values. The result is one value when the graph has
    one output, else the list of outputs. Modules are registered in Lua's ``modules`` order, so
    ``parameters()`` is Lua's ``model:parameters()`` order.
    """

    lua_types = ("nn.gModule",)
    lua_takes_table_planes = True  # a graph's input may be a table (planes per element)

    def __init__(self, modules: Sequence[nn.Module], nodes: Sequence[GraphNode], innode: int, outnode: int,
                 n_inputs: int, name: str | None = None):
        super().__init__()
        for i, m in enumerate(modules):
            self.add_module(str(i), m)
        self.nodes = tuple(nodes)
        self.innode = innode
        self.outnode = outnode
        self.n_inputs = n_inputs
        self.name = name
        # After evaluating node k, the values no later node reads are dropped (free_after[k]).
        last_use = {j: k for k, node in enumerate(self.nodes) for j in node.inputs}
        free: list[list[int]] = [[] for _ in self.nodes]
        for j, k in last_use.items():
            free[k].append(j)
        self._free_after = tuple(tuple(f) for f in free)

    @property
    def graph_modules(self) -> list[nn.Module]:
        """The modules in Lua's ``modules`` order (node ``module`` indices point here)."""
        return list(self._modules.values())

    # ------------------------------------------------------------------------------------------
    # Reading a saved gModule
    # ------------------------------------------------------------------------------------------

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        """Read the saved graph as gmodule.lua's ``runForwardFunction`` uses it (see :class:`_SavedGraph`),
        refusing any inconsistency, then convert the nodes' modules in Lua's ``modules`` order."""
        graph = _SavedGraph(f)
        modules: list[nn.Module] = []
        module_index: dict[int, int] = {}
        for obj, path in graph.modules:
            if id(obj) not in module_index:  # one module used by several nodes is one module
                module_index[id(obj)] = len(modules)
                modules.append(convert(obj, path))
        nodes = [GraphNode(inputs=tuple(n.inputs), module=None if n.module is None else module_index[id(n.module)],
                           selectindex=n.selectindex, n_split=n.n_split, name=_node_name(n.data))
                 for n in graph.nodes]
        name = f.get("name")
        model = cls(modules, nodes, graph.innode, graph.outnode, graph.n_inputs,
                    name if isinstance(name, str) else None)
        model.lua_planes(None)  # the chains of the graph fit from their first module with a known width on
        return model

    def lua_planes(self, planes: Any) -> Any:
        """Planes through the graph as through its forward: each node's module gets the planes of its input (a
        :class:`TablePlanes` for several inputs) and checks them; the outnode's input gives the result."""
        modules = self.graph_modules
        values: list[Any] = [None] * len(self.nodes)
        for k, node in enumerate(self.nodes):
            if k == self.innode:
                value = planes if self.n_inputs <= 1 or isinstance(planes, TablePlanes) else None
            else:
                args = [values[j] for j in node.inputs]
                value = args[0] if len(args) == 1 else TablePlanes(args)
            if node.selectindex is not None:
                value = value[node.selectindex - 1] if isinstance(value, TablePlanes) and \
                    node.selectindex <= len(value) else None
            elif node.module is not None:
                value = planes_after(modules[node.module], value)
            values[k] = value
        return values[self.outnode]

    # ------------------------------------------------------------------------------------------
    # Evaluation
    # ------------------------------------------------------------------------------------------

    def forward(self, input: Any) -> Any:
        if self.n_inputs <= 1:
            feed = [input]
        elif not isinstance(input, (list, tuple)):
            raise GraphInputError(f"{self._where()}: expects a list of {self.n_inputs} inputs, got "
                                  f"{_input_kind(input)}; pass [x1, ..., x{self.n_inputs}] (Lua: {{x1, ...}})")
        elif len(input) != self.n_inputs:
            raise GraphInputError(f"{self._where()}: got {len(input)} inputs instead of {self.n_inputs}")
        else:
            feed = list(input)
        modules = self.graph_modules
        values: list[Any] = [None] * len(self.nodes)
        for k, node in enumerate(self.nodes):
            args = feed if k == self.innode else [values[j] for j in node.inputs]
            if node.selectindex is not None:
                table = args[0]
                if not isinstance(table, (list, tuple)) or not 1 <= node.selectindex <= len(table):
                    raise GraphInputError(self._node_error(k, f"split output {node.selectindex} needs a table "
                                                              f"of at least {node.selectindex} elements, got "
                                                              f"{_input_kind(table)}"))
                value = table[node.selectindex - 1]
            else:
                value = args[0] if len(args) == 1 else list(args)
                if node.module is not None:
                    value = modules[node.module](value)
                if node.n_split is not None:
                    try:
                        value = split_outputs(value, node.n_split)
                    except ValueError as exc:
                        raise GraphInputError(self._node_error(k, str(exc))) from None
            values[k] = value
            for j in self._free_after[k]:
                values[j] = None
        return values[self.outnode]

    def _where(self) -> str:
        return _named(self)

    def _node_error(self, k: int, msg: str) -> str:
        """A forward error at node k, naming the node and its module (class and Lua path) or, for a node
        without one (``node:split(n)`` outputs), the module whose output it passes on."""
        label = self._node_label(k, with_path=True)
        if self.nodes[k].module is None:
            source = self._node_source(k)
            if source:
                label += f", on the output of {source}"
        return f"{self._where()}: node {k + 1} ({label}): {msg}"

    def _node_source(self, k: int) -> str | None:
        """``nn.SplitTable at model.modules[3]``: the module that computed the value node k passes on."""
        seen: set[int] = set()
        while k not in seen and self.nodes[k].module is None and len(self.nodes[k].inputs) == 1:
            seen.add(k)
            k = self.nodes[k].inputs[0]
        node = self.nodes[k]
        if node.module is None:
            return None
        return _named(self.graph_modules[node.module])

    # ------------------------------------------------------------------------------------------
    # Printing
    # ------------------------------------------------------------------------------------------

    def lua_str(self) -> str:
        """Lua's ``tostring(gModule)``: its ``name`` field, else ``nn.gModule``."""
        return self.name or self.lua_typename

    def _node_label(self, k: int, with_path: bool = False) -> str:
        node = self.nodes[k]
        if k == self.innode:
            label = "input"
        elif k == self.outnode:
            label = "output"
        elif node.selectindex is not None:
            label = f"select {node.selectindex}"
        elif node.module is not None:
            module = self.graph_modules[node.module]
            label = _named(module) if with_path else lua_str(module).split("\n", 1)[0]
            if node.n_split is not None:
                label += f" -> split({node.n_split})"
        else:
            label = "identity" if node.n_split is None else f"split({node.n_split})"
        return f"{node.name}: {label}" if node.name else label

    def graph_str(self) -> str:
        """The nodes in evaluation order, each with the nodes it reads (``<- (i), (j)``, in input order)."""
        lines = [f"{self.lua_str()} {{ {self.n_inputs} input(s), {len(self.graph_modules)} modules"]
        for k, node in enumerate(self.nodes):
            src = ", ".join(f"({j + 1})" for j in node.inputs)
            lines.append(f"  ({k + 1}) {self._node_label(k)}" + (f" <- {src}" if src else ""))
        return "\n".join(lines + ["}"])

    # ------------------------------------------------------------------------------------------
    # Python code (convert --format python)
    # ------------------------------------------------------------------------------------------

    def python_children(self) -> list[tuple[str, nn.Module, str | None]]:
        """The modules in Lua's ``modules`` order (its parameters() order), each named after the annotation
        (``node:annotate{name = ...}``) of its first node when Lua had one."""
        lua_index: dict[int, int] = {}  # graph_modules index -> 1-based index in Lua's modules
        names: dict[int, str] = {}
        count = 0
        for node in self.nodes:
            if node.module is not None:
                count += 1
                lua_index.setdefault(node.module, count)
                if node.name:
                    names.setdefault(node.module, _python_name(node.name))
        return [(f"modules[{lua_index.get(i, i + 1)}]", m, names.get(i)) for i, m in enumerate(self.graph_modules)]

    def python_forward(self, g: CodeGen, x: Value) -> Value:
        """One statement per node with a module, in Lua's forward order (``forwardnodes``); the tables of
        ``node:split(n)`` are unpacked into one variable per element (``a, b = split_outputs(t, 2)``)."""
        modules = self.graph_modules
        consumers: list[list[int]] = [[] for _ in self.nodes]
        for k, node in enumerate(self.nodes):
            for j in node.inputs:
                consumers[j].append(k)
        values: list[Value | None] = [None] * len(self.nodes)
        for k, node in enumerate(self.nodes):
            if k == self.innode:
                value: Value = x
            else:
                args = [shared(values[j]) for j in node.inputs]  # type: ignore[arg-type]
                value = args[0] if len(args) == 1 else ListVal(tuple(args))
            if node.selectindex is not None:
                values[k] = self._python_select(g, value, node.selectindex)
                continue
            if node.module is not None:
                value = g.emit(modules[node.module], value)
            if node.n_split is not None:
                value = self._python_split(g, k, value, node.n_split, consumers)
            values[k] = value
        return values[self.outnode]  # type: ignore[return-value]

    def _python_split(self, g: CodeGen, k: int, value: Value, n: int, consumers: list[list[int]]) -> Value:
        """``node:split(n)`` of ``value``: its elements, checked as Lua checks them, one variable each, named
        after the annotation of the node that selects it (or of that node's one consumer), else ``part<i>``
        (``input<i>`` for the table of graph inputs)."""
        if isinstance(value, ListVal) and len(value.items) == n:
            return value
        inputs_table = self.innode in (k, *self.nodes[k].inputs) and self.nodes[k].module is None
        hints = [f"input{i}" if inputs_table else f"part{i}" for i in range(1, n + 1)]
        for c in consumers[k]:
            select = self.nodes[c]
            if select.selectindex is not None and 1 <= select.selectindex <= n:
                after = consumers[c]
                named = select.name or (self.nodes[after[0]].name if len(after) == 1 else None)
                if named:
                    hints[select.selectindex - 1] = _python_name(named)
        names = [g.fresh(h) for h in hints]
        g.line(f"{', '.join(names)}{',' if n == 1 else ''} = {g.use(split_outputs)}({g.expr(value)}, {n})")
        return ListVal(tuple(Var(name) for name in names))

    @staticmethod
    def _python_select(g: CodeGen, value: Value, index: int) -> Value:
        if isinstance(value, ListVal) and 1 <= index <= len(value.items):
            return value.items[index - 1]
        return g.assign(f"{g.expr(value)}[{index - 1}]")

    # ------------------------------------------------------------------------------------------
    # Export
    # ------------------------------------------------------------------------------------------

    def to_lua(self) -> "t7.TorchObject":
        obj = super().to_lua()
        del obj.fields["gradInput"]  # gModule.__init__ sets it to nil; updateGradInput makes it
        return obj

    def lua_fields(self) -> dict[str, Any]:
        """The saved layout of gModule.__init__: forward and backward graphs, their nodes, modules."""
        modules = [to_lua(m) for m in self.graph_modules]
        # gModule.__init: each node's module in forwardnodes order (a module of several nodes once per node)
        node_modules = [modules[node.module] for node in self.nodes if node.module is not None]
        n = len(self.nodes)
        datas = []
        for k, node in enumerate(self.nodes):
            data = t7.LuaTable(annotations=t7.LuaTable(), reverseMap=t7.LuaTable(), forwardNodeId=k + 1)
            if node.name:
                data["annotations"]["name"] = node.name
            if node.module is not None:
                data["module"] = modules[node.module]
            if node.selectindex is not None:
                data["selectindex"] = node.selectindex
            if node.n_split is not None:
                data["nSplitOutputs"] = node.n_split
            datas.append(data)
        consumers: list[list[int]] = [[] for _ in range(n)]
        for k, node in enumerate(self.nodes):
            datas[k]["mapindex"] = lua_index_table([datas[j] for j in node.inputs])
            for j in node.inputs:
                consumers[j].append(k)

        def make_node(k: int, node_id: int) -> "t7.TorchObject":
            return t7.TorchObject("nngraph.Node", t7.LuaTable(data=datas[k], id=node_id, visited=False,
                                                                marked=False))
        # Forward graph: edges producer -> consumer; backward graph (the definition graph): reversed.
        backward_order = list(range(n - 1, -1, -1))
        fg_nodes = [make_node(k, k + 1) for k in range(n)]
        bg_nodes = {k: make_node(k, i) for i, k in enumerate(backward_order, 1)}
        for k in range(n):
            fg_nodes[k]["children"] = lua_index_table([fg_nodes[c] for c in consumers[k]])
            bg_nodes[k]["children"] = lua_index_table([bg_nodes[j] for j in self.nodes[k].inputs])
            for c in consumers[k]:
                datas[k]["reverseMap"][t7.IdKey(bg_nodes[c])] = True

        def make_graph(nodes: list["t7.TorchObject"], edges: Iterable[tuple[Any, Any]]) -> "t7.TorchObject":
            edge_objs = [t7.TorchObject("graph.Edge", t7.LuaTable({"from": a, "to": b})) for a, b in edges]
            return t7.TorchObject("graph.Graph", t7.LuaTable(nodes=lua_index_table(nodes),
                                                             edges=lua_index_table(edge_objs)))
        fg = make_graph(fg_nodes, [(fg_nodes[j], fg_nodes[k]) for k in range(n) for j in self.nodes[k].inputs])
        bg = make_graph([bg_nodes[k] for k in backward_order],
                        [(bg_nodes[k], bg_nodes[j]) for k in backward_order for j in self.nodes[k].inputs])
        fields: dict[str, Any] = {
            "modules": t7.LuaList(node_modules), "forwardnodes": t7.LuaList(fg_nodes),
            "backwardnodes": t7.LuaList(bg_nodes[k] for k in backward_order), "fg": fg, "bg": bg,
            "innode": fg_nodes[self.innode], "outnode": bg_nodes[self.outnode], "nInputs": self.n_inputs,
            "verbose": False}
        if len(self.nodes[self.outnode].inputs) > 1:
            fields["output"] = t7.LuaTable()
        if self.name:
            fields["name"] = self.name
        return fields


# ----------------------------------------------------------------------------------------------
# Reading and checking a saved gModule
# ----------------------------------------------------------------------------------------------

class _GraphFields(Fields):
    """Fields of a table inside a gModule (a node's ``data``) read with the shared checks, each error a bare
    line "field 'forwardnodes[3].data.selectindex' = 2.5: ..." for :class:`_SavedGraph` to collect."""

    def __init__(self, f: Fields, table: dict, prefix: str):
        super().__init__(t7.TorchObject(f.typename, table), f.path)
        self.prefix = prefix

    def error(self, msg: str) -> LuaModelError:
        return LuaModelError(msg)

    def bad(self, name: str, value: Any, expected: str) -> LuaModelError:
        return super().bad(self.prefix + name, value, expected)


@dataclass
class _SavedNode:
    """One entry of ``forwardnodes`` as read from the file (positions are 0-based indices of forwardnodes)."""

    obj: Any
    data: dict
    module: Any = None                  # data.module (nil or false: none)
    selectindex: int | None = None
    n_split: int | None = None
    children: list[int] = field(default_factory=list)       # consumers: Lua propagates the output to them
    inputs: list[int] = field(default_factory=list)         # producers, in Lua's input order


def _lua_array(value: Any) -> list[Any] | None:
    """``ipairs(value)``: the elements t[1], t[2], ... up to the first nil; None if ``value`` is no table."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return lua_array(value)
    return None


class _SavedGraph:
    """The graph of a saved nn.gModule as torch/nngraph's gmodule.lua runs it, checked for consistency.

    Lua's ``runForwardFunction`` evaluates ``forwardnodes`` in order; each node's output goes to the nodes
    in its ``children`` (``propagate``), into input slot ``child.data.mapindex[node.data]`` (the reverse
    map); the innode's data receives the gModule input and the output is the outnode's input (one value
    when ``#outnode.children == 1``). The array part of ``mapindex`` (the inputs in order) must say the
    same, as ``nngraph.Node:add`` writes both halves. Every inconsistency is collected; all of them are
    raised in one LuaModelError.
    """

    def __init__(self, f: Fields):
        self.f = f
        self.problems: list[str] = []
        self.nodes: list[_SavedNode] = []
        self._read_nodes()  # (raises at once when the nodes themselves are unreadable)
        self._read_edges()
        self.innode = self._end_node("innode")
        self.outnode = self._end_node("outnode")
        n_inputs = self._read_n_inputs()
        listed = self._read_module_list()
        self._stop()
        self._check_order()
        self._stop()
        self._check_ends()
        self._check_splits()
        self.n_inputs = self._check_n_inputs(n_inputs)
        self.modules = self._match_modules(listed)
        self._stop()

    # -- helpers --------------------------------------------------------------------------------

    def bad(self, name: str, value: Any, expected: str) -> None:
        self.problems.append(f"field '{name}' = {value if isinstance(value, _Shown) else self.show(value)}: "
                             f"{expected}")

    def _stop(self) -> None:
        """Raise everything found so far (the later checks need a sound graph)."""
        if not self.problems:
            return
        if len(self.problems) == 1:
            raise self.f.error(self.problems[0])
        raise self.f.error(f"{len(self.problems)} problems in the saved graph:\n  " + "\n  ".join(self.problems))

    def show(self, value: Any) -> str:
        """A value for messages; nodes and data tables of the graph by their place in forwardnodes."""
        k = self._where.get(id(value))
        if k is not None:
            return f"forwardnodes[{k + 1}]" + (".data" if value is self.nodes[k].data else "")
        if isinstance(value, t7.TorchObject) and isinstance(value.get("data"), dict):
            k = self._where.get(id(value.get("data")))
            if k is not None:
                return f"a {value.typename} with the data of forwardnodes[{k + 1}]"
            return f"a {value.typename} that is not in forwardnodes"
        if isinstance(value, dict) and not isinstance(value, t7.TorchObject) and "mapindex" in value:
            return "the data table of a node that is not in forwardnodes"
        return show_value(value)

    def _position(self, node: Any) -> int | None:
        """The forwardnodes index of a node object (by its data table, as Lua compares nodes)."""
        data = node.get("data") if isinstance(node, t7.TorchObject) else None
        return self._where.get(id(data)) if isinstance(data, dict) else None

    def _node(self, k: int) -> str:
        return f"forwardnodes[{k + 1}]"

    # -- forwardnodes ---------------------------------------------------------------------------

    def _read_nodes(self) -> None:
        f = self.f
        self._where: dict[int, int] = {}  # id of a node object or data table -> its index in forwardnodes
        self._unknown_children: set[int] = set()  # nodes whose children field is no list (reported)
        value = f.raw.get("forwardnodes")
        lua_nodes = _lua_array(value)
        if value is None or lua_nodes == []:
            raise f.error("missing field 'forwardnodes' (the nodes of the graph in evaluation order)")
        if lua_nodes is None or isinstance(value, t7.TorchObject):
            raise f.bad("forwardnodes", value, "should be the list of the graph's nngraph.Node objects")
        for k, node in enumerate(lua_nodes):
            name = self._node(k)
            data = node.get("data") if isinstance(node, t7.TorchObject) else None
            if not isinstance(data, dict):
                self.bad(name, node if data is None else _Shown(f"a node whose data is {show_value(data)}"),
                         "should be an nngraph.Node with a data table")
                continue
            if id(node) in self._where:
                self.bad(name, node, "each node appears once in forwardnodes")
                continue
            if id(data) in self._where:
                self.bad(f"{name}.data", data, "each node has its own data table")
                continue
            self._where[id(node)] = self._where[id(data)] = len(self.nodes)
            self.nodes.append(_SavedNode(node, data))
        if len(self.nodes) != len(lua_nodes):  # positions would not be forwardnodes indices
            self._stop()

    def _read_edges(self) -> None:
        for k, node in enumerate(self.nodes):
            self._read_node_fields(k, node)
        for k, node in enumerate(self.nodes):
            self._read_children(k, node)
        for k, node in enumerate(self.nodes):
            self._read_mapindex(k, node)

    def _read_node_fields(self, k: int, node: _SavedNode) -> None:
        d = _GraphFields(self.f, node.data, f"{self._node(k)}.data.")
        module = node.data.get("module")
        if module is not None and module is not False:  # Lua: `if node.data.module then`
            if isinstance(module, t7.TorchObject):
                node.module = module
            else:
                self.bad(f"{self._node(k)}.data.module", module, "should be an nn module (or nil)")
        for name, attr, what in (("selectindex", "selectindex", "the element of its input table it outputs"),
                                 ("nSplitOutputs", "n_split", "the number of elements of its output table")):
            if node.data.get(name) is False:  # false: Lua reads it as absent
                continue
            try:
                setattr(node, attr, d.int(name, None, min=1))
            except LuaModelError as exc:
                self.problems.append(f"{exc} ({what})")

    def _read_children(self, k: int, node: _SavedNode) -> None:
        name = f"{self._node(k)}.children"
        value = node.obj.get("children")
        children = _lua_array(value)
        if children is None or isinstance(value, t7.TorchObject):
            self.bad(name, value, "should be the list of the nodes this node's output goes to (Lua's propagate)")
            self._unknown_children.add(k)  # its consumers' mapindex entries are then taken as they are
            return
        for i, child in enumerate(children, 1):
            j = self._position(child)
            if j is None:
                self.bad(f"{name}[{i}]", child, "should be a node of forwardnodes (a node that takes this output)")
            elif j in node.children:
                self.bad(f"{name}[{i}]", child, "is listed twice (Lua asserts 'each input should have one source')")
            else:
                node.children.append(j)
                self.nodes[j].inputs.append(k)  # in producer order for now; ordered by mapindex below

    def _read_mapindex(self, k: int, node: _SavedNode) -> None:
        """Input order: Lua's propagate puts the output of each producer listing this node in its children
        into slot ``mapindex[producer.data]`` (the reverse map); the array part must say the same. Each fault
        is reported once, where it is (a derived mismatch of the same input is not repeated)."""
        name = f"{self._node(k)}.data.mapindex"
        value = node.data.get("mapindex")
        array = [] if value is None else _lua_array(value)
        if array is None or isinstance(value, t7.TorchObject):
            self.bad(name, value, "should be a table of the input nodes' data (in input order) that also maps "
                                  "each of them to its position")
            node.inputs = []
            return
        before = len(self.problems)
        reported: set[int] = set()  # id of the data tables (inputs) already reported
        reverse: dict[int, Any] = {}  # id(data) -> the position the reverse map gives
        for key, pos in (value.items() if isinstance(value, dict) else ()):
            if not isinstance(key, t7.IdKey):
                continue
            j = self._where.get(id(key.obj))
            if j is None or key.obj is not self.nodes[j].data:
                reported.add(id(key.obj))
                self.bad(f"{name}[{self.show(key.obj)}]", pos, "should only give the positions of input nodes; "
                         "this table is not the data of a node in forwardnodes (a node missing there?)")
            elif k not in self.nodes[j].children and j in self._unknown_children:
                node.inputs.append(j)  # already reported: its children are not a list
                reverse[id(key.obj)] = pos
            elif k not in self.nodes[j].children:
                reported.add(id(key.obj))
                self.bad(f"{name}[{self._node(j)}.data]", pos, f"gives {self._node(j)} an input position, but "
                         f"{self._node(j)}.children does not list {self._node(k)}, so Lua never passes it that input")
            else:
                reverse[id(key.obj)] = pos
        producers = node.inputs
        n = len(producers)
        slots = n + len(reported)  # reported entries still hold their slots (no derived out-of-range lines)
        positions: dict[int, int] = {}  # producer index -> position (1-based)
        for j in producers:
            pos = reverse.get(id(self.nodes[j].data))
            key = f"{name}[{self._node(j)}.data]"
            if pos is None:
                self.bad(key, None, f"should be the input position of {self._node(j)} ({self._node(j)}.children "
                                    f"lists {self._node(k)}; Lua's propagate reads the position here)")
            elif not _int_in(pos, 1, slots):
                self.bad(key, pos, f"should be an integer in [1, {n}] (the position of {self._node(j)} among "
                                   f"the {n} input(s) of {self._node(k)})")
            elif int(pos) in positions.values():
                other = next(p for p, q in positions.items() if q == int(pos))
                self.bad(key, pos, f"is also the position of {self._node(other)} (Lua asserts 'each input "
                                   f"should have one source')")
            else:
                positions[j] = int(pos)
                continue
            reported.add(id(self.nodes[j].data))
        node.inputs = sorted(positions, key=positions.__getitem__)
        # The array part must list the same inputs in the same order (nngraph.Node:add writes both halves).
        for i, src in enumerate(array, 1):
            if id(src) in reported:
                continue
            j = self._where.get(id(src))
            if j is None or src is not self.nodes[j].data:
                self.bad(f"{name}[{i}]", src, f"should be the data table of a node of forwardnodes (input {i} of "
                                              f"{self._node(k)})")
            elif positions.get(j) != i:
                said = (f"{self._node(j)}.children does not list {self._node(k)}" if j not in producers else
                        f"mapindex[{self._node(j)}.data] = {show_value(positions[j])}")
                self.bad(f"{name}[{i}]", src, f"disagrees with how Lua feeds {self._node(k)}: {said} (the array part "
                                              "of mapindex, its reverse map and the producers' children must agree)")
        if len(array) != n and len(self.problems) == before:
            self.bad(name, _Shown(f"a table listing {len(array)} input(s)"),
                     f"should list the {n} input(s) that Lua feeds {self._node(k)} "
                     f"({', '.join(map(self._node, producers)) or 'none'})")

    # -- innode, outnode ------------------------------------------------------------------------

    def _end_node(self, name: str) -> int:
        value = self.f.raw.get(name)
        k = self._position(value)
        if k is None:
            what = "the graph's input node" if name == "innode" else "the graph's output node"
            self.bad(name, value, f"should be {what}, a node of forwardnodes")
            return -1
        return k

    def _check_order(self) -> None:
        """Lua evaluates forwardnodes in order: every node after its inputs (so no cycle)."""
        for k, node in enumerate(self.nodes):
            later = [j for j in node.inputs if j >= k]
            if not later:
                continue
            cycle = self._cycle_through(k)
            shown = _Shown("inputs " + ", ".join(map(self._node, later)))
            if cycle:
                self.bad(f"{self._node(k)}.data.mapindex", shown, "the graph has a cycle: " +
                         " -> ".join(map(self._node, cycle)) + " (nngraph graphs are acyclic)")
                return
            self.bad(f"{self._node(k)}.data.mapindex", shown, "an input comes later in forwardnodes (not a "
                     "topological order: Lua evaluates forwardnodes in order, each node after its inputs)")

    def _cycle_through(self, start: int) -> list[int] | None:
        """A path start -> ... -> start along producer edges, if any (depth-first, iterative)."""
        stack = [(start, iter(self.nodes[start].inputs))]
        path, seen = [start], {start}
        while stack:
            k, it = stack[-1]
            j = next(it, None)
            if j is None:
                stack.pop()
                path.pop()
            elif j == start:
                return list(reversed(path + [start]))
            elif j not in seen:
                seen.add(j)
                stack.append((j, iter(self.nodes[j].inputs)))
                path.append(j)
        return None

    def _check_ends(self) -> None:
        f, innode, outnode = self.f, self.innode, self.outnode
        if innode == outnode:
            self.problems.append(f"fields 'innode' and 'outnode' are the same node ({self._node(innode)}): the "
                                 "graph's input and output are two different nodes (gModule.__init makes them)")
            return
        inn = self.nodes[innode]
        if inn.inputs:
            self.bad("innode", f.raw["innode"], f"is fed by {', '.join(map(self._node, inn.inputs))}: the input "
                     "node takes no inputs (the gModule's input goes there)")
        if inn.selectindex is not None:
            self.bad("innode", f.raw["innode"], "the input node cannot be a split output (selectindex)")
        out = self.nodes[outnode]
        extra = [name for name, v in (("module", out.module), ("selectindex", out.selectindex),
                                      ("nSplitOutputs", out.n_split)) if v is not None]
        if extra:
            self.bad("outnode", f.raw["outnode"], f"the output node has no {' or '.join(extra)} (Lua returns its "
                     "input table; gModule.__init makes it a plain node)")
        if not out.inputs:
            self.bad("outnode", f.raw["outnode"], "the output node has no inputs (the graph's outputs)")
        # Lua: `if #self.outnode.children == 1 then output = output[1]`: the saved outnode (a node of the
        # backward graph) lists the output nodes as its children.
        value = f.raw["outnode"].get("children")
        outputs = _lua_array(value)
        listed = sorted(j for j in map(self._position, outputs or []) if j is not None)
        if outputs is None or isinstance(value, t7.TorchObject) or listed != sorted(out.inputs):
            shown = self.show(value) if outputs is None else ", ".join(self.show(c) for c in outputs) or "empty"
            self.bad("outnode.children", _Shown(shown),
                     "should list the nodes that feed the output node "
                     f"({', '.join(map(self._node, out.inputs))}; Lua returns one value when it lists one)")
        # Every node is run by Lua; a node other than the innode with no input must have a module (a parameter
        # node, as gModule.__init allows), else Lua's forward fails on it.
        for k, node in enumerate(self.nodes):
            if k != innode and not node.inputs and node.module is None:
                self.bad(f"{self._node(k)}.data.mapindex", _Shown("no input"), "only the innode and modules "
                         "without inputs (parameter nodes) have none; Lua's forward fails on this node")
        if not self._depends_on(outnode, innode):
            self.bad("outnode", f.raw["outnode"], "the graph's output does not depend on its innode "
                     "(gModule.__init builds the graph from the outputs back to the inputs)")

    def _depends_on(self, k: int, source: int) -> bool:
        todo, seen = [k], {k}
        while todo:
            j = todo.pop()
            if j == source:
                return True
            for i in self.nodes[j].inputs:
                if i not in seen:
                    seen.add(i)
                    todo.append(i)
        return False

    # -- splits, nInputs ------------------------------------------------------------------------

    def _check_splits(self) -> None:
        for k, node in enumerate(self.nodes):
            # gModule.__init: "N of split(n) outputs from the node declared at ... are unused"
            if node.n_split is not None and node.n_split != len(node.children):
                self.bad(f"{self._node(k)}.data.nSplitOutputs", node.n_split, f"should be the number of its split "
                         f"outputs: {len(node.children)} node(s) take its output (gModule.__init refuses unused "
                         "split outputs; Lua's forward fails on a table of another length)")
        taken: dict[tuple[int, int], int] = {}
        for k, node in enumerate(self.nodes):
            if node.selectindex is None:
                continue
            name = f"{self._node(k)}.data.selectindex"
            if node.module is not None or len(node.inputs) != 1:
                self.bad(name, node.selectindex, f"a split output has no module and one input (it has "
                         f"{'a module and ' if node.module is not None else ''}{len(node.inputs)} input(s); "
                         "Lua asserts both)")
                continue
            (j,) = node.inputs
            size = self.nodes[j].n_split
            if size is not None and node.selectindex > size:
                self.bad(name, node.selectindex, f"should be in [1, {size}]: its input {self._node(j)} is "
                                                 f"split({size})")
            elif (j, node.selectindex) in taken:
                self.bad(name, node.selectindex, f"{self._node(taken[j, node.selectindex])} already outputs "
                         f"element {node.selectindex} of {self._node(j)} (Lua's backward asserts one each)")
            else:
                taken[j, node.selectindex] = k

    def _read_n_inputs(self) -> int | None:
        """``nInputs``: an integer >= 1 (Lua's forward fails on anything else); None when the file has none."""
        if self.f.raw.get("nInputs") is None:
            return None
        try:
            return _GraphFields(self.f, self.f.raw, "").int("nInputs", min=1)
        except LuaModelError as exc:
            self.problems.append(f"{exc} (the number of graph inputs; Lua's forward fails on anything else)")
            return None

    def _check_n_inputs(self, n: int | None) -> int:
        """``self.nInputs or #self.innode.children`` (files from before nInputs), checked against the graph."""
        f, inn = self.f, self.nodes[self.innode]
        if n is None:
            n = len(_lua_array(f.raw["innode"].get("children")) or [])
            if n < 1:
                self.bad("nInputs", None, "should be the number of graph inputs (the innode has no children to "
                         "count them from)")
            return n
        if n > 1 and inn.module is None:
            # The input table of n elements passes through the innode: a split of it must take n elements.
            for j in [self.innode] + inn.children:
                size = self.nodes[j].n_split
                if size is not None and size != n:
                    self.bad("nInputs", n, f"disagrees with {self._node(j)}.data.nSplitOutputs = {size}, the split "
                             f"of the table of graph inputs (Lua's forward fails: split({size}) cannot split {n} "
                             "outputs); gModule.__init sets both to the number of inputs")
        return n

    def _show_module(self, obj: Any) -> str:
        """``forwardnodes[5].data.module (nn.Linear)`` for a node's module, else the value."""
        for k, node in enumerate(self.nodes):
            if node.module is obj:
                return f"{self._node(k)}.data.module ({obj.typename})"
        return show_value(obj) + (", the module of no node" if isinstance(obj, t7.TorchObject) else "")

    # -- modules --------------------------------------------------------------------------------

    def _read_module_list(self) -> list[Any] | None:
        """The saved ``modules`` (a Lua list); None when the file has none (gModule:read then rebuilds it)."""
        if self.f.raw.get("modules") is None:
            return None
        try:
            return self.f.module_list("modules")
        except LuaModelError as exc:
            self.problems.append(str(exc).split(": ", 1)[-1])
            return None

    def _match_modules(self, listed: list[Any] | None) -> list[tuple[Any, str]]:
        """The node modules in forwardnodes order with their paths: what gModule.__init puts in ``modules``
        (and gModule:read when a file has none); a saved ``modules`` must be exactly that."""
        f = self.f
        expected = [(k, n.module) for k, n in enumerate(self.nodes) if n.module is not None]
        if listed is None:
            return [(m, f"{f.path}.{self._node(k)}.data.module") for k, m in expected]
        out = []
        for i, ((k, m), obj) in enumerate(zip(expected, listed), 1):
            if obj is m:
                out.append((m, f"{f.path}.modules[{i}]"))
            elif _weight_sharing_copy(obj, m):  # cudnn.convert before gModule:replace (2016): copies in modules
                out.append((m, f"{f.path}.{self._node(k)}.data.module"))
            else:
                self.bad(f"modules[{i}]", _Shown(self._show_module(obj)), f"should be {self._node(k)}.data.module "
                         f"({m.typename}): gModule lists the nodes' modules in forwardnodes order")
        if len(listed) != len(expected):
            self.bad("modules", listed if len(listed) != 0 else t7.LuaTable(),
                     f"should list the {len(expected)} modules of the nodes in forwardnodes order "
                     f"(it has {len(listed)}; gModule.__init adds each node's module)")
        return out


def _int_in(value: Any, low: int, high: int) -> bool:
    """Whether ``value`` is an integral number (2.0 included) in ``[low, high]``."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
            and float(value).is_integer())


class _Shown(str):
    """A value already written for a message."""


def _weight_sharing_copy(obj: Any, module: Any) -> bool:
    """Whether ``obj`` is a copy of ``module`` holding the very same tensors (old ``cudnn.convert`` replaced
    ``modules[i]`` by such a copy, ``y[k] = x[k]`` for every field, and left the node's module in place)."""
    if not isinstance(obj, t7.TorchObject) or not isinstance(module, t7.TorchObject):
        return False
    tensors = [(k, v) for k, v in module.fields.items() if isinstance(v, torch.Tensor)]
    return bool(tensors) and all(obj.fields.get(k) is v for k, v in tensors)


def _node_name(data: dict) -> str | None:
    annotations = data.get("annotations")
    name = annotations.get("name") if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else None


# ----------------------------------------------------------------------------------------------
# The small modules nngraph inserts
# ----------------------------------------------------------------------------------------------

class LuaJustElement(SimpleLuaModule):
    """nngraph.JustElement (``node:split(1)``): the one element of a one-element table."""

    lua_types = ("nngraph.JustElement",)
    lua_table_grad_input = True

    def forward(self, input: Sequence[Any]) -> Any:
        return just_element(input)

    def python_children(self) -> list:
        return []  # no attribute: written inline

    def python_forward(self, g: CodeGen, x: Value) -> Value:
        if isinstance(x, ListVal) and len(x.items) == 1:
            return x.items[0]
        return g.assign(call_expr(g.use(just_element), Code(g.expr(x))))


class LuaJustTable(SimpleLuaModule):
    """nngraph.JustTable: ``x`` -> ``{x}``."""

    lua_types = ("nngraph.JustTable",)
    lua_table_output = True

    def forward(self, input: Any) -> list[Any]:
        return [input]

    def python_children(self) -> list:
        return []  # no attribute: written inline

    def python_forward(self, g: CodeGen, x: Value) -> Value:
        return ListVal((x,))


class LuaModuleFromCriterion(LuaModule, ModuleFromCriterion):
    """nn.ModuleFromCriterion (a criterion used as a graph node): ``{prediction, target}`` -> a one-element
    tensor holding ``criterion(prediction, target)``; no gradient flows to the target (standalone
    ``ModuleFromCriterion``)."""

    lua_types = ("nn.ModuleFromCriterion",)
    lua_table_grad_input = True

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        if not f.has("criterion"):
            raise f.error("missing field 'criterion'")
        return cls(convert(f.get("criterion"), f"{f.path}.criterion"))

    def python_ctor(self, g: CodeGen) -> str:
        return call_expr(g.use(ModuleFromCriterion), g.ctor(self.criterion))

    def lua_fields(self) -> dict[str, Any]:
        return {"criterion": to_lua(self.criterion), "output": torch.zeros(1)}

    def lua_str(self) -> str:
        return f"{self.lua_typename}({lua_str(self.criterion)})"


__all__ = ["LuaGModule", "GraphNode", "GraphInputError", "LuaJustElement", "LuaJustTable",
           "LuaModuleFromCriterion", "lua_array", "lua_index_table"]
