"""Lua containers and table modules: Sequential, Concat, ConcatTable, ParallelTable, the element-wise
table ops, JoinTable, SplitTable, SelectTable, NarrowTable, FlattenTable, and DenseNet's
``nn.DenseConnectLayerCustom`` (liuzhuang13/DenseNet models/DenseConnectLayer.lua).

Lua tables are Python lists (nested tables: nested lists). Children keep Lua's order, so
``parameters()`` is Lua's ``model:parameters()`` order and ``modules()`` is ``listModules()`` order.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import t7
from ._base import (TORCH_EXPORTERS, ChildConverter, Fields, LuaModule, children_of, empty_tensor, indent,
                    long_storage, lua_module, lua_str, to_lua)
from .shapes import _pos_dim
from .simple import REQUIRED, SimpleLuaModule
from .text import LuaInputError


class _LuaContainer(LuaModule):
    """Children in Lua order; exported as ``modules``."""

    def lua_children(self) -> list[nn.Module]:
        return list(self.children())

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
        return cls(*children_of(f, convert))

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
        return cls(children_of(f, convert), dimension=f.int("dimension"))

    def forward(self, input: Any) -> torch.Tensor:
        return torch.cat([m(input) for m in self.children()], int(self.dimension) - 1)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), dimension=self.dimension, outputSize=long_storage([]))


class LuaDepthConcat(LuaConcat):
    """nn.DepthConcat(dimension) (GoogLeNet / OpenFace nn4 inception blocks): as nn.Concat, but outputs
    smaller than the largest in another dimension are zero-padded around, starting at
    floor((largest - size) / 2) (one more pad after than before for odd differences)."""

    lua_types = ("nn.DepthConcat",)

    def forward(self, input: Any) -> torch.Tensor:
        outs = [m(input) for m in self.children()]
        dim = int(self.dimension) - 1
        sizes = [max(o.shape[d] for o in outs) for d in range(outs[0].dim())]
        padded = []
        for o in outs:
            pads: list[int] = []
            for d in reversed(range(o.dim())):  # F.pad takes the last dimension first
                diff = 0 if d == dim else sizes[d] - o.shape[d]
                pads += [diff // 2, diff - diff // 2]
            padded.append(torch.nn.functional.pad(o, pads) if any(pads) else o)
        return torch.cat(padded, dim)

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), size=long_storage([]))


class LuaConcatTable(_ModuleListContainer):
    """nn.ConcatTable: every child gets the input; returns the list of their outputs."""

    lua_types = ("nn.ConcatTable",)
    lua_table_output = True

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        return cls(children_of(f, convert))

    def forward(self, input: Any) -> list[Any]:
        return [m(input) for m in self.children()]


class LuaParallelTable(_ModuleListContainer):
    """nn.ParallelTable: child i gets input[i]."""

    lua_types = ("nn.ParallelTable",)
    lua_table_output = lua_table_grad_input = True

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        return cls(children_of(f, convert))

    def forward(self, input: list[Any]) -> list[Any]:
        return [m(x) for m, x in zip(self.children(), input)]

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
    lua_table_grad_input = True

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        op = self.lua_typename[len("nn.C"):-len("Table")]
        if op == "Sub":
            return input[0] - input[1]
        if op == "Div":
            return input[0] / input[1]
        out = input[0]
        for x in input[1:]:
            out = {"Add": torch.add, "Mul": torch.mul, "Max": torch.maximum, "Min": torch.minimum}[op](out, x)
        return out


class LuaJoinTable(SimpleLuaModule):
    """nn.JoinTable(dimension, nInputDims): concatenation of the list along a Lua dimension."""

    lua_types = ("nn.JoinTable",)
    lua_params = (("dimension", REQUIRED), ("nInputDims", None))
    lua_table_grad_input = True

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(input), _pos_dim(int(self.dimension), input[0], self.nInputDims))

    def lua_fields(self) -> dict[str, Any]:
        return dict(super().lua_fields(), size=long_storage([]))


class LuaSplitTable(SimpleLuaModule):
    """nn.SplitTable(dimension, nInputDims): the list of slices along a dimension."""

    lua_types = ("nn.SplitTable",)
    lua_params = (("dimension", REQUIRED), ("nInputDims", None))
    lua_table_output = True

    def forward(self, input: torch.Tensor) -> list[torch.Tensor]:
        return list(input.unbind(_pos_dim(int(self.dimension), input, self.nInputDims)))


class LuaSelectTable(SimpleLuaModule):
    """nn.SelectTable(index): one element (negative: from the end)."""

    lua_types = ("nn.SelectTable",)
    lua_params = (("index", REQUIRED),)
    lua_table_grad_input = True

    def forward(self, input: list[Any]) -> Any:
        index = int(self.index)
        return input[index - 1] if index > 0 else input[len(input) + index]

    def lua_str(self) -> str:
        return f"{self.lua_typename}({self.index})"


class LuaNarrowTable(SimpleLuaModule):
    """nn.NarrowTable(offset, length): the sub-list offset .. offset+length-1."""

    lua_types = ("nn.NarrowTable",)
    lua_params = (("offset", REQUIRED), ("length", 1))
    lua_table_output = lua_table_grad_input = True

    def forward(self, input: list[Any]) -> list[Any]:
        start = int(self.offset) - 1
        return list(input[start:start + int(self.length)])


def _flatten(x: Any, out: list[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(x, (list, tuple)):
        for item in x:
            _flatten(item, out)
    else:
        out.append(x)
    return out


class LuaFlattenTable(SimpleLuaModule):
    """nn.FlattenTable: nested lists -> one flat list (depth first)."""

    lua_types = ("nn.FlattenTable",)
    lua_table_output = lua_table_grad_input = True

    def forward(self, input: list[Any]) -> list[torch.Tensor]:
        return _flatten(input, [])

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
            mods = children_of(f, convert)
            if len(mods) != 2:
                raise f.error(f"expected modules = {{net1, net2}}, got {len(mods)} modules")
            net1, net2 = mods
        opt = f.get("opt", {})
        return cls(net1, net2, {k: v for k, v in opt.items() if isinstance(k, str)} if isinstance(opt, dict) else {})

    def forward(self, input: Any) -> list[torch.Tensor]:
        if isinstance(input, torch.Tensor):
            return [input, self.net2(self.net1(input))]
        return list(input) + [self.net2(self.net1(torch.cat(list(input), 1)))]

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

class LuaSpatialClassifier(_LuaContainer, nn.Module):
    """nn.SpatialClassifier (clementfarabet/lua---nnx; torch/demos' face detector): applies ``classifier``
    (e.g. an nn.Linear over the K planes) to the K-vector of every pixel of a K x H x W input, giving
    N x H x W. A 4-D batch (B x K x H x W) is taken sample by sample (Lua accepts 3-D input only)."""

    lua_types = ("nn.SpatialClassifier",)

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    @classmethod
    def from_fields(cls, f: Fields, convert: ChildConverter) -> nn.Module:
        if f.has("classifier"):
            return cls(convert(f.get("classifier"), f"{f.path}.classifier"))
        mods = children_of(f, convert)  # `modules` is the classifier's own list when saved without it
        return cls(mods[0] if len(mods) == 1 else LuaSequential(*mods))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() == 4:
            return torch.stack([self(x) for x in input])
        if input.dim() != 3:
            raise LuaInputError(f"{self.lua_typename}: expected a K x H x W input (or a batch of them), "
                                f"got {tuple(input.shape)}")
        k, h, w = input.shape
        out = self.classifier(input.reshape(k, h * w).t())
        if out.dim() == 1:
            out = out.reshape(1, -1)
        return out.t().reshape(out.shape[1], h, w)

    def lua_fields(self) -> dict[str, Any]:
        classifier = to_lua(self.classifier)
        return {"classifier": classifier, "modules": t7.LuaList([classifier]), "spatialOutput": True}

    def lua_str(self) -> str:
        return f"{self.lua_typename} {{\n  " + indent(lua_str(self.classifier), "  ") + "\n}"
