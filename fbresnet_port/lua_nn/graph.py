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

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .. import t7
from ..errors import UserError
from ._base import ChildConverter, Fields, LuaModule, lua_str, to_lua
from .simple import SimpleLuaModule


class GraphInputError(UserError, ValueError):
    """The input given to a graph node does not have the shape of table the graph expects."""


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
        try:
            lua_nodes = lua_array(f.get("forwardnodes"))
        except TypeError as exc:
            raise f.error(f"field 'forwardnodes': {exc}") from None
        if not lua_nodes:
            raise f.error("missing field 'forwardnodes' (the nodes of the graph in evaluation order)")
        datas = [_node_data(f, node, k) for k, node in enumerate(lua_nodes)]
        position = {id(d): k for k, d in enumerate(datas)}

        # Modules in Lua's `modules` order (files without it: in forwardnodes order, as gModule:read).
        lua_modules = lua_array(f.get("modules")) if f.has("modules") else [
            d["module"] for d in datas if d.get("module") is not None]
        where = "modules" if f.has("modules") else "forwardnodes"
        modules: list[nn.Module] = []
        module_index: dict[int, int] = {}
        for i, obj in enumerate(lua_modules, 1):
            if id(obj) not in module_index:  # one module used by several nodes is one module
                module_index[id(obj)] = len(modules)
                modules.append(convert(obj, f"{f.path}.{where}[{i}]"))

        nodes = []
        for k, d in enumerate(datas):
            path = f"forwardnodes[{k + 1}].data"
            inputs = []
            for i, src in enumerate(_mapindex(f, d, path), 1):
                j = position.get(id(src))
                if j is None:
                    raise f.error(f"{path}.mapindex[{i}] is not the data of a node in forwardnodes")
                if j >= k:
                    raise f.error(f"{path}: its input {i} comes later in forwardnodes (not a topological order)")
                inputs.append(j)
            module = d.get("module")
            if module is not None and id(module) not in module_index:
                module_index[id(module)] = len(modules)
                modules.append(convert(module, f"{f.path}.{path}.module"))
            node = GraphNode(
                inputs=tuple(inputs),
                module=None if module is None else module_index[id(module)],
                selectindex=_opt_int(f, d, "selectindex", path),
                n_split=_opt_int(f, d, "nSplitOutputs", path),
                name=_node_name(d))
            if node.selectindex is not None and (node.module is not None or len(inputs) != 1):
                raise f.error(f"{path}: a split output (selectindex) must have no module and one input")
            nodes.append(node)

        innode = _end_node(f, "innode", position)
        outnode = _end_node(f, "outnode", position)
        if nodes[innode].inputs:
            raise f.error("the innode has inputs of its own")
        n_inputs = f.int("nInputs", None)
        if n_inputs is None:  # files from before nInputs: the number of nodes fed by the innode
            n_inputs = sum(innode in node.inputs for node in nodes)
        name = f.get("name")
        return cls(modules, nodes, innode, outnode, n_inputs, name if isinstance(name, str) else None)

    # ------------------------------------------------------------------------------------------
    # Evaluation
    # ------------------------------------------------------------------------------------------

    def forward(self, input: Any) -> Any:
        if self.n_inputs <= 1:
            feed = [input]
        elif not isinstance(input, (list, tuple)):
            raise GraphInputError(f"nn.gModule expects a list of {self.n_inputs} inputs, got a "
                                  f"{type(input).__name__}; pass [x1, ..., x{self.n_inputs}] (Lua: {{x1, ...}})")
        elif len(input) != self.n_inputs:
            raise GraphInputError(f"nn.gModule got {len(input)} inputs instead of {self.n_inputs}")
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
                                                              f"of at least {node.selectindex} elements"))
                value = table[node.selectindex - 1]
            else:
                value = args[0] if len(args) == 1 else list(args)
                if node.module is not None:
                    value = modules[node.module](value)
                if node.n_split is not None and (not isinstance(value, (list, tuple))
                                                 or len(value) != node.n_split):
                    got = len(value) if isinstance(value, (list, tuple)) else "a non-table value"
                    raise GraphInputError(self._node_error(k, f"split({node.n_split}) cannot split {got}"))
            values[k] = value
            for j in self._free_after[k]:
                values[j] = None
        return values[self.outnode]

    def _node_error(self, k: int, msg: str) -> str:
        return f"nn.gModule node {k + 1} ({self._node_label(k)}): {msg}"

    # ------------------------------------------------------------------------------------------
    # Printing
    # ------------------------------------------------------------------------------------------

    def lua_str(self) -> str:
        """Lua's ``tostring(gModule)``: its ``name`` field, else ``nn.gModule``."""
        return self.name or self.lua_typename

    def _node_label(self, k: int) -> str:
        node = self.nodes[k]
        if k == self.innode:
            label = "input"
        elif k == self.outnode:
            label = "output"
        elif node.selectindex is not None:
            label = f"select {node.selectindex}"
        elif node.module is not None:
            label = lua_str(self.graph_modules[node.module]).split("\n", 1)[0]
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
    # Export
    # ------------------------------------------------------------------------------------------

    def to_lua(self) -> "t7.TorchObject":
        obj = super().to_lua()
        del obj.fields["gradInput"]  # gModule.__init__ sets it to nil; updateGradInput makes it
        return obj

    def lua_fields(self) -> dict[str, Any]:
        """The saved layout of gModule.__init__: forward and backward graphs, their nodes, modules."""
        modules = [to_lua(m) for m in self.graph_modules]
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
            "modules": t7.LuaList(modules), "forwardnodes": t7.LuaList(fg_nodes),
            "backwardnodes": t7.LuaList(bg_nodes[k] for k in backward_order), "fg": fg, "bg": bg,
            "innode": fg_nodes[self.innode], "outnode": bg_nodes[self.outnode], "nInputs": self.n_inputs,
            "verbose": False}
        if len(self.nodes[self.outnode].inputs) > 1:
            fields["output"] = t7.LuaTable()
        if self.name:
            fields["name"] = self.name
        return fields


def _node_data(f: Fields, node: Any, k: int) -> dict:
    data = node.get("data") if isinstance(node, t7.TorchObject) else None
    if not isinstance(data, dict):
        raise f.error(f"forwardnodes[{k + 1}] is not an nngraph.Node with a data table")
    return data


def _mapindex(f: Fields, data: dict, path: str) -> list[Any]:
    try:
        return lua_array(data.get("mapindex"))
    except TypeError as exc:
        raise f.error(f"{path}.mapindex: {exc}") from None


def _opt_int(f: Fields, data: dict, name: str, path: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise f.error(f"{path}.{name} should be a number, got {type(value).__name__}")
    return int(value)


def _node_name(data: dict) -> str | None:
    annotations = data.get("annotations")
    name = annotations.get("name") if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else None


def _end_node(f: Fields, field: str, position: dict[int, int]) -> int:
    node = f.get(field)
    data = node.get("data") if isinstance(node, t7.TorchObject) else None
    k = position.get(id(data))
    if k is None:
        raise f.error(f"field '{field}' is missing or is not a node of forwardnodes")
    return k


# ----------------------------------------------------------------------------------------------
# The small modules nngraph inserts
# ----------------------------------------------------------------------------------------------

class LuaJustElement(SimpleLuaModule):
    """nngraph.JustElement (``node:split(1)``): the one element of a one-element table."""

    lua_types = ("nngraph.JustElement",)
    lua_table_grad_input = True

    def forward(self, input: Sequence[Any]) -> Any:
        if not isinstance(input, (list, tuple)) or len(input) != 1:
            raise GraphInputError("nngraph.JustElement expects a table of one element")
        return input[0]


class LuaJustTable(SimpleLuaModule):
    """nngraph.JustTable: ``x`` -> ``{x}``."""

    lua_types = ("nngraph.JustTable",)
    lua_table_output = True

    def forward(self, input: Any) -> list[Any]:
        return [input]


def _detached(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, (list, tuple)):
        return [_detached(v) for v in x]
    return x


class LuaModuleFromCriterion(LuaModule, nn.Module):
    """nn.ModuleFromCriterion (a criterion used as a graph node): ``{prediction, target}`` -> a one-element
    tensor holding ``criterion(prediction, target)``; no gradient flows to the target."""

    lua_types = ("nn.ModuleFromCriterion",)
    lua_table_grad_input = True

    def __init__(self, criterion: nn.Module):
        super().__init__()
        self.criterion = criterion

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        if not f.has("criterion"):
            raise f.error("missing field 'criterion'")
        return cls(convert(f.get("criterion"), f"{f.path}.criterion"))

    def forward(self, input: Sequence[Any]) -> torch.Tensor:
        if not isinstance(input, (list, tuple)) or len(input) != 2:
            raise GraphInputError("nn.ModuleFromCriterion expects the table {prediction, target}")
        return self.criterion(input[0], _detached(input[1])).reshape(1)

    def lua_fields(self) -> dict[str, Any]:
        return {"criterion": to_lua(self.criterion), "output": torch.zeros(1)}

    def lua_str(self) -> str:
        return f"{self.lua_typename}({lua_str(self.criterion)})"


__all__ = ["LuaGModule", "GraphNode", "GraphInputError", "LuaJustElement", "LuaJustTable",
           "LuaModuleFromCriterion", "lua_array", "lua_index_table"]
