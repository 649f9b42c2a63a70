"""Shared machinery of the Lua ``nn`` <-> PyTorch conversion: the :class:`LuaModule` mixin, the class
registry, field access with error paths, and the export helpers (:func:`lua_module`, :func:`to_lua`).

Port of the object model of torch/nn ``Module.lua`` / ``Container.lua``: a module is a Lua class name
plus a table of fields; ``parameters()`` is depth-first over ``modules``, weight before bias.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable, ClassVar, Iterable, TypeVar

import torch
from torch import nn

from .. import t7
from ..errors import UserError

_MISSING = object()


class LuaModelError(UserError, ValueError):
    """A Lua model that cannot be converted (unknown class, missing or bad field).

    ``unsupported`` maps each Lua class without a converter to the paths of its objects in the tree,
    ``problems`` lists the other errors (one line each), both in the order met.
    """

    def __init__(self, message: str, unsupported: dict[str, list[str]] | None = None,
                 problems: list[str] | None = None):
        super().__init__(message)
        self.unsupported = unsupported or {}
        self.problems = problems or []


# Lua typename -> the converter of that class: a LuaModule subclass, or a function registered with
# :func:`register`; anything with ``from_fields(f, convert) -> nn.Module``.
REGISTRY: dict[str, Any] = {}
# Converters that :func:`register` replaced, restored by :func:`unregister` (last in, first out).
_SHADOWED: dict[str, list[Any]] = {}


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

# Lua packages whose classes are nn modules (used to find the modules inside a checkpoint table).
_MODULE_PACKAGES = ("nn.", "cudnn.", "cunn.", "nngraph.", "rnn.", "dpnn.")
_SHOWN_PATHS = 3  # paths listed per unsupported class


class UnsupportedLuaModule(LuaModule, nn.Module):
    """Stands for an object of a class without a converter while the rest of the tree is converted
    (so that :func:`from_lua` can list every such class at once); never returned to the user."""

    def __init__(self, typename: str, path: str):
        super().__init__()
        self.lua_typename, self.path = typename, path

    def forward(self, *args: Any) -> Any:
        raise LuaModelError(f"unsupported Lua module {self.lua_typename} at {self.path}")


class _Conversion:
    """One :func:`from_lua` call: converts the tree depth first and collects, instead of stopping at
    the first, every object whose class has no converter and every other conversion error."""

    def __init__(self) -> None:
        self.unsupported: dict[str, list[str]] = {}
        self.problems: list[str] = []
        self.shared: dict[tuple, nn.Parameter] = {}  # Lua weight/bias storage region -> its Parameter

    def _failures(self) -> int:
        return sum(map(len, self.unsupported.values())) + len(self.problems)

    def convert(self, obj: Any, path: str) -> nn.Module:
        """The ``convert`` callback handed to every ``from_fields``: Lua object -> module."""
        if not isinstance(obj, t7.TorchObject):
            raise LuaModelError(f"expected a Lua nn module at {path}, got {_kind(obj)}")
        converter = REGISTRY.get(obj.typename)
        if converter is None:
            self.unsupported.setdefault(obj.typename, []).append(path)
            return UnsupportedLuaModule(obj.typename, path)
        failures = self._failures()
        f = Fields(obj, path)
        try:
            module = converter.from_fields(f, self.convert)
        except LuaModelError as exc:
            self._merge(exc, failures)
            return UnsupportedLuaModule(obj.typename, path)
        except Exception:
            if self._failures() > failures:  # fallout of a child already reported
                return UnsupportedLuaModule(obj.typename, path)
            raise
        module.lua_typename = obj.typename
        self._tie_shared(obj, module)
        if isinstance(converter, _FunctionConverter):
            module.train(f.flag("train", True))
        else:
            module.training = f.flag("train", True)
        return module

    def _tie_shared(self, obj: "t7.TorchObject", module: nn.Module) -> None:
        """Modules whose Lua ``weight``/``bias`` are the same storage region (``clone('weight', 'bias')``:
        unrolled RNN steps, siamese branches) get one shared Parameter, so training updates them together as
        in Lua (``parameters()`` lists it once, like ``getParameters()``)."""
        for name in ("weight", "bias"):
            lua_t, param = obj.fields.get(name), getattr(module, name, None)
            if not isinstance(lua_t, torch.Tensor) or not isinstance(param, nn.Parameter) or lua_t.numel() == 0:
                continue
            key = (lua_t.untyped_storage().data_ptr(), lua_t.storage_offset(), tuple(lua_t.shape),
                   lua_t.stride(), lua_t.dtype)
            first = self.shared.setdefault(key, param)
            if first is not param and first.shape == param.shape and first.dtype == param.dtype:
                setattr(module, name, first)

    def _merge(self, exc: LuaModelError, failures: int) -> None:
        if exc.unsupported or exc.problems:  # raised by a nested from_lua: keep its lists
            for name, paths in exc.unsupported.items():
                self.unsupported.setdefault(name, []).extend(paths)
            self.problems.extend(exc.problems)
        elif self._failures() == failures:  # not a consequence of an unsupported child
            self.problems.append(str(exc))

    def error(self) -> LuaModelError | None:
        """One error describing everything that went wrong, or None."""
        if not self.unsupported and not self.problems:
            return None
        lines: list[str] = []
        if self.unsupported:
            total = sum(map(len, self.unsupported.values()))
            if total == 1:
                (name, (path,)), = self.unsupported.items()
                lines.append(f"unsupported Lua module {name} at {path} (no PyTorch conversion is known for this class)")
            else:
                n = len(self.unsupported)
                lines.append(f"unsupported Lua modules: {total} modules of {n} class{'es' if n > 1 else ''} "
                             f"with no known PyTorch conversion:")
                for name, paths in self.unsupported.items():
                    shown = ", ".join(paths[:_SHOWN_PATHS]) + (", ..." if len(paths) > _SHOWN_PATHS else "")
                    lines.append(f"  {name}: {len(paths)} module{'s' if len(paths) > 1 else ''}, at {shown}")
        if self.problems:
            if self.unsupported:
                lines.append("other problems:")
            lines.extend(self.problems if len(self.problems) == 1 and not self.unsupported
                         else [f"  {p}" for p in self.problems])
        if self.unsupported:
            example = next(iter(self.unsupported))
            lines.append(
                "To convert a class of your own project, register a converter before loading the model:\n"
                "    from fbresnet_port.lua_nn import register\n"
                f"    @register({example!r})\n"
                "    def convert(obj):  # obj['field'] reads a field of the Lua object\n"
                "        return torch.nn.Identity()  # any torch.nn.Module computing what the Lua class does")
        return LuaModelError("\n".join(lines), dict(self.unsupported), list(self.problems))


def _kind(obj: Any) -> str:
    """A short description of a loaded Lua value for error messages."""
    if isinstance(obj, t7.LuaList):
        return "a Lua list (a table)"
    if isinstance(obj, t7.TorchObject):
        return f"a {obj.typename} object"
    if isinstance(obj, dict):
        return f"a {getattr(obj, 'typename', 'Lua table')}"
    return f"a {type(obj).__name__}"


def from_lua(obj: "t7.TorchObject") -> nn.Module:
    """Convert a Lua ``nn`` module tree (as read by :func:`fbresnet_port.t7.load`) to a PyTorch module.

    ``parameters()`` follows Lua's ``model:parameters()`` order; the train/evaluate flag is taken from
    the file. Objects of classes without a converter are all listed in one :class:`LuaModelError`
    (class, count, first paths in the tree), with other conversion errors; a table that is not a module
    (a checkpoint such as char-rnn's ``{protos=..., opt=...}``) names the paths of the modules it holds.
    """
    if not is_lua_module(obj) and (not isinstance(obj, t7.TorchObject) or find_modules(obj)):
        raise LuaModelError(not_a_module_message(obj))
    conversion = _Conversion()
    try:
        module = conversion.convert(obj, "model")
    except LuaModelError as exc:  # the root itself failed: report it with everything collected so far
        conversion._merge(exc, -1)
    error = conversion.error()
    if error is not None:
        raise error
    return module


# ----------------------------------------------------------------------------------------------
# Modules inside checkpoint tables
# ----------------------------------------------------------------------------------------------

def is_lua_module(obj: Any) -> bool:
    """Whether ``obj`` is a loaded Lua nn module (or an object of a class with a converter)."""
    if not isinstance(obj, t7.TorchObject):
        return False
    return (obj.typename in REGISTRY or obj.typename.startswith(_MODULE_PACKAGES)
            or "output" in obj.fields or "gradInput" in obj.fields or "modules" in obj.fields)


def find_modules(obj: Any, max_depth: int = 6) -> list[tuple[str, "t7.TorchObject"]]:
    """``(path, module)`` of the outermost nn modules inside nested tables (paths as ``protos.rnn``,
    ``layers[2]``; list indices 1-based as in Lua), each module once, in table order."""
    found: list[tuple[str, t7.TorchObject]] = []
    seen: set[int] = set()

    def walk(x: Any, path: str, depth: int) -> None:
        if id(x) in seen or depth > max_depth:
            return
        seen.add(id(x))
        if is_lua_module(x):
            found.append((path, x))
            return
        if isinstance(x, t7.TorchObject):
            x = x.fields
        if isinstance(x, dict):
            for k, v in x.items():
                if isinstance(k, str):
                    walk(v, f"{path}.{k}" if path else k, depth + 1)
                elif isinstance(k, int) and not isinstance(k, bool):
                    walk(v, f"{path}[{k}]", depth + 1)
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i + 1}]", depth + 1)

    walk(obj, "", 0)
    return found


def not_a_module_message(obj: Any) -> str:
    """Why ``obj`` cannot be converted, naming the paths of the modules it holds if any."""
    what = _kind(obj)
    if isinstance(obj, dict) and obj:
        keys = [str(k) for k in list(obj)[:8]]
        what += f" (keys: {', '.join(keys)}{', ...' if len(obj) > 8 else ''})"
    modules = find_modules(obj)
    if not modules:
        return f"expected a Lua nn module, got {what}, which holds no nn module"
    listed = ", ".join(f"{p} ({m.typename})" for p, m in modules[:10]) + (", ..." if len(modules) > 10 else "")
    return (f"expected a Lua nn module, got {what}; it holds nn modules at: {listed}. "
            f"Convert one with load_lua_model(path, key={modules[0][0]!r})")


_KEY_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def select(obj: Any, key: str) -> Any:
    """The value at ``key`` in nested tables: ``'protos.rnn'``, ``'layers[2]'`` (1-based as in Lua)."""
    at = ""
    for m in _KEY_PART.finditer(key):
        index, name = m.group(1), m.group(2)
        container = obj.fields if isinstance(obj, t7.TorchObject) else obj
        value = _MISSING
        if index is not None and isinstance(container, list) and 1 <= int(index) <= len(container):
            value = container[int(index) - 1]
        elif isinstance(container, dict):
            for k in ((name,) if index is None else ()) + ((int(name or index),) if (name or index).isdigit() else ()):
                if k in container:
                    value = container[k]
                    break
        if value is _MISSING:
            where = f"at {at}" if at else "in the object"
            keys = ", ".join(str(k) for k in list(container)[:12]) if isinstance(container, dict) else ""
            raise LuaModelError(f"no {m.group(0)!r} {where} (key {key!r})" + (f"; its keys: {keys}" if keys else ""))
        obj = value
        at += m.group(0) if index is not None or not at else "." + m.group(0)
    return obj


# ----------------------------------------------------------------------------------------------
# Converters of the user's own classes
# ----------------------------------------------------------------------------------------------

class _FunctionConverter:
    """A function registered with :func:`register` as the converter of a Lua class."""

    def __init__(self, typename: str, fn: Callable[..., nn.Module]):
        self.typename, self.fn = typename, fn
        self.__doc__ = fn.__doc__
        params = inspect.signature(fn).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.takes_convert = len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)

    def from_fields(self, f: Fields, convert: ChildConverter) -> nn.Module:
        if self.takes_convert:
            module = self.fn(f.obj, lambda child, name="child": convert(child, f"{f.path}.{name}"))
        else:
            module = self.fn(f.obj)
        if not isinstance(module, nn.Module):
            name = getattr(self.fn, "__qualname__", repr(self.fn))
            raise f.error(f"the converter {name} registered for {self.typename} returned "
                          f"{type(module).__name__}, not a torch.nn.Module")
        return module


_F = TypeVar("_F", bound=Callable[..., nn.Module])


def register(*typenames: str) -> Callable[[_F], _F]:
    """Decorator: convert Lua objects of class(es) ``typenames`` with the decorated function.

    The function takes the loaded Lua object (``obj['field']`` / ``obj.get('field')`` read its fields,
    ``obj.typename`` its class) and returns any ``torch.nn.Module``; a second parameter, if declared,
    receives ``convert(child, name)`` to convert a child Lua module (``name`` labels its path in error
    messages). The module takes part in the converted model like any other (parameters, train/eval).
    Registering a class that already has a converter (built in or registered) overrides it until
    :func:`unregister`. Port helper for user classes of ``torch.class`` (e.g. char-rnn's ``OneHot``).
    """
    if not typenames or not all(isinstance(t, str) and t for t in typenames):
        raise TypeError("register() takes the Lua class name(s), e.g. @register('OneHot')")

    def decorate(fn: _F) -> _F:
        if not callable(fn):
            raise TypeError(f"register({typenames[0]!r}) decorates a function (obj) -> torch.nn.Module")
        for typename in typenames:
            if typename in REGISTRY:
                _SHADOWED.setdefault(typename, []).append(REGISTRY[typename])
            REGISTRY[typename] = _FunctionConverter(typename, fn)
        return fn

    return decorate


def unregister(typename: str) -> None:
    """Undo the last :func:`register` of ``typename`` (the converter it overrode comes back)."""
    if not isinstance(REGISTRY.get(typename), _FunctionConverter):
        raise KeyError(f"no converter registered with register() for {typename!r}")
    previous = _SHADOWED.get(typename)
    if previous:
        REGISTRY[typename] = previous.pop()
    else:
        del REGISTRY[typename]


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
