"""Shared machinery of the Lua ``nn`` <-> PyTorch conversion: the :class:`LuaModule` mixin, the class
registry, field access with error paths, and the export helpers (:func:`lua_module`, :func:`to_lua`).

Port of the object model of torch/nn ``Module.lua`` / ``Container.lua``: a module is a Lua class name
plus a table of fields; ``parameters()`` is depth-first over ``modules``, weight before bias.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterable

import torch
from torch import nn

from .. import t7
from ..errors import UserError

_MISSING = object()


class LuaModelError(UserError, ValueError):
    """A Lua model that cannot be converted (unknown class, missing or bad field)."""


# Lua typename -> Python class that converts it.
REGISTRY: dict[str, type["LuaModule"]] = {}


class LuaModule:
    """Mixin of every module converted from Lua: keeps the Lua class name and prints like Lua's ``tostring``.

    Subclasses list the Lua classes they stand for in ``lua_types`` and implement :meth:`from_fields`
    (Lua fields -> module) and :meth:`lua_fields` (module -> the fields Lua's ``updateOutput`` reads).
    """

    lua_types: ClassVar[tuple[str, ...]] = ()
    lua_version: ClassVar[int] = 1
    lua_table_output: ClassVar[bool] = False     # Lua ``output`` is a table ({}), not a tensor
    lua_table_grad_input: ClassVar[bool] = False  # Lua ``gradInput`` is a table ({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.__dict__.get("lua_types", ()):
            REGISTRY[name] = cls

    @property
    def lua_typename(self) -> str:
        return self.__dict__.get("_lua_typename") or type(self).lua_types[0]

    @lua_typename.setter
    def lua_typename(self, value: str) -> None:
        self.__dict__["_lua_typename"] = value

    @classmethod
    def from_fields(cls, f: "Fields", convert: "ChildConverter") -> nn.Module:
        """Build the module from the Lua fields ``f`` (``convert`` turns child objects into modules)."""
        return cls()

    def lua_fields(self) -> dict[str, Any]:
        """Fields of the exported Lua object besides the nn.Module ones (output, gradInput, train, _type)."""
        return {}

    def to_lua(self) -> "t7.TorchObject":
        """Export to a Lua object of class :attr:`lua_typename` (see :func:`lua_module`)."""
        fields = {}
        if self.lua_table_output:
            fields["output"] = t7.LuaTable()
        if self.lua_table_grad_input:
            fields["gradInput"] = t7.LuaTable()
        fields["train"] = bool(self.training)
        fields.update(self.lua_fields())
        return lua_module(self.lua_typename, version=self.lua_version, **fields)

    def lua_str(self) -> str:
        """Lua's ``tostring(module)``."""
        return self.lua_typename

    def __repr__(self) -> str:
        return self.lua_str()


def lua_str(module: nn.Module) -> str:
    """``tostring`` of a module: Lua's format for converted modules, PyTorch's repr otherwise."""
    return module.lua_str() if isinstance(module, LuaModule) else repr(module)


def indent(text: str, prefix: str) -> str:
    """Lua's ``str:gsub('\\n', '\\n' .. prefix)``."""
    return text.replace("\n", "\n" + prefix)


# ----------------------------------------------------------------------------------------------
# Reading fields
# ----------------------------------------------------------------------------------------------

def _int_list(value: Any) -> list[int]:
    if isinstance(value, t7.Storage):
        value = value.tensor
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    if isinstance(value, (int, float)):
        return [int(value)]
    raise TypeError(f"expected a list of numbers, got {type(value).__name__}")


def float_param(t: torch.Tensor) -> torch.Tensor:
    """A parameter as stored in PyTorch: float64 stays float64, any other type becomes float32."""
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    return t.detach().to(dtype=dtype, copy=True).contiguous()


class Fields:
    """Read access to the fields of one Lua object; errors name the object's path in the tree."""

    def __init__(self, obj: "t7.TorchObject", path: str):
        self.obj = obj
        self.typename: str = obj.typename
        self.path = path
        self.raw = obj.fields

    def error(self, msg: str) -> LuaModelError:
        return LuaModelError(f"{self.typename} at {self.path}: {msg}")

    def has(self, name: str) -> bool:
        return name in self.raw and self.raw[name] is not None

    def get(self, name: str, default: Any = None) -> Any:
        value = self.raw.get(name, default)
        return default if value is None else value

    def num(self, name: str, default: Any = _MISSING) -> Any:
        value = self.raw.get(name)
        if value is None:
            if default is _MISSING:
                raise self.error(f"missing field '{name}'")
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"field '{name}' should be a number, got {type(value).__name__}")
        return value

    def int(self, name: str, default: Any = _MISSING) -> int:
        value = self.num(name, default)
        return value if value is None else int(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw.get(name)
        return default if value is None else bool(value)

    def tensor(self, name: str, required: bool = True) -> torch.Tensor | None:
        """A tensor field; ``None`` when missing (or empty and not required)."""
        value = self.raw.get(name)
        if isinstance(value, torch.Tensor) and (value.numel() > 0 or required):
            return value
        if value is None or isinstance(value, torch.Tensor):
            if required:
                raise self.error(f"missing tensor field '{name}'")
            return None
        raise self.error(f"field '{name}' should be a tensor, got {type(value).__name__}")

    def ints(self, name: str, default: Any = _MISSING) -> list[int] | None:
        value = self.raw.get(name)
        if value is None:
            if default is _MISSING:
                raise self.error(f"missing field '{name}'")
            return default
        try:
            return _int_list(value)
        except TypeError as exc:
            raise self.error(f"field '{name}': {exc}") from None


ChildConverter = Callable[[Any, str], nn.Module]


def _convert(obj: Any, path: str) -> nn.Module:
    if not isinstance(obj, t7.TorchObject):
        raise LuaModelError(f"expected a Lua nn module at {path}, got {type(obj).__name__}")
    cls = REGISTRY.get(obj.typename)
    if cls is None:
        raise LuaModelError(f"unsupported Lua module {obj.typename} at {path} "
                            f"(no PyTorch conversion is known for this class)")
    f = Fields(obj, path)
    module = cls.from_fields(f, _convert)
    module.lua_typename = obj.typename
    module.training = f.flag("train", True)
    return module


def from_lua(obj: "t7.TorchObject") -> nn.Module:
    """Convert a Lua ``nn`` module tree (as read by :func:`fbresnet_port.t7.load`) to a PyTorch module.

    ``parameters()`` follows Lua's ``model:parameters()`` order; the train/evaluate flag is taken from
    the file. An unknown class raises :class:`LuaModelError` naming it and its path in the tree.
    """
    return _convert(obj, "model")


def children_of(f: Fields, convert: ChildConverter, name: str = "modules") -> list[nn.Module]:
    """Convert the ``modules`` list of a Lua container (paths ``<path>.modules[i]``, 1-based)."""
    mods = f.get(name, [])
    if isinstance(mods, dict):  # a table that is not a list (empty, or with holes)
        if not mods:
            return []
        keys = sorted(k for k in mods if isinstance(k, int))
        mods = [mods[k] for k in keys]
    return [convert(m, f"{f.path}.{name}[{i + 1}]") for i, m in enumerate(mods)]


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------

def empty_tensor(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(0, dtype=dtype)


def long_storage(values: Iterable[int]) -> "t7.Storage":
    """A ``torch.LongStorage`` holding ``values`` (Lua View/Reshape sizes and size buffers)."""
    return t7.Storage(torch.tensor(list(values), dtype=torch.int64), "torch.LongStorage")


def export_param(t: torch.Tensor) -> torch.Tensor:
    """A parameter as Lua checkpoints store it: float32 (``model:float()``), contiguous, detached."""
    return t.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()


def export_weights(**params: torch.Tensor | None) -> dict[str, Any]:
    """``weight``/``bias`` (float32) with ``gradWeight``/``gradBias`` zero buffers of the same shape."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        out[name] = export_param(value)
        out["grad" + name[0].upper() + name[1:]] = torch.zeros_like(out[name])
    return out


def lua_module(typename: str, *, version: int | None = None, **fields: Any) -> "t7.TorchObject":
    """A Lua object of class ``typename`` with the nn.Module fields (output, gradInput, train, _type) filled.

    ``fields`` override the defaults, e.g. ``lua_module('nn.Concat', dimension=2, modules=LuaList([...]))``.
    BatchNormalization classes get version 2 (the layout with ``running_var``).
    """
    base: dict[str, Any] = {"output": empty_tensor(), "gradInput": empty_tensor(), "train": True,
                            "_type": "torch.FloatTensor"}
    base.update(fields)
    if version is None:
        version = 2 if typename.endswith("BatchNormalization") else 1
    return t7.TorchObject(typename, t7.LuaTable(base), version=version)


# Standard PyTorch modules -> exporters (registered by the submodules).
TORCH_EXPORTERS: dict[type, Callable[[nn.Module], "t7.TorchObject"]] = {}


def to_lua(module: nn.Module) -> "t7.TorchObject":
    """Export ``module`` to a Lua ``nn`` tree that Lua ``torch.load`` can read and run.

    A module with a ``to_lua()`` method exports itself (converted Lua modules, native model blocks);
    standard torch modules are mapped as in the project brief (Conv2d -> cudnn.SpatialConvolution, ...).
    """
    method = getattr(module, "to_lua", None)
    if callable(method):
        return method()
    for cls in type(module).__mro__:
        exporter = TORCH_EXPORTERS.get(cls)
        if exporter is not None:
            return exporter(module)
    raise LuaModelError(f"cannot export {type(module).__name__} to Lua: no Lua nn class is known for it "
                        f"(give the module a to_lua() method)")
