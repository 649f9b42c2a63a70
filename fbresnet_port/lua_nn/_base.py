"""Shared machinery of the Lua ``nn`` <-> PyTorch conversion: the :class:`LuaModule` mixin, the class
registry, field access with error paths, and the export helpers (:func:`lua_module`, :func:`to_lua`).

A Lua file is untrusted: :class:`Fields` checks every field a converter reads (type, finiteness, range, shape;
sizes up to :data:`MAX_DIM_SIZE`, so nothing allocates more than the file holds) and raises one
:class:`LuaModelError` line "<class> at <path>: field '<name>' = <value>: <what Lua expects>"; containers refuse
cycles and check that their chain of modules fits (:meth:`LuaModule.lua_planes`); an error while a converted module
runs becomes a :class:`LuaForwardError` naming its Lua path, class and input shapes.

Port of the object model of torch/nn ``Module.lua`` / ``Container.lua``: a module is a Lua class name
plus a table of fields; ``parameters()`` is depth-first over ``modules``, weight before bias.
"""
from __future__ import annotations

import contextvars
import inspect
import math
import re
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Iterable, Mapping, TypeVar

import torch
from torch import nn

from .. import t7
from ..errors import UserError, note

_MISSING = object()
MISSING = _MISSING  # the "no default" marker of the Fields readers

# Upper bound of any size read from a Lua file (a dimension, a plane count, a kernel): what Torch's
# 32-bit int arguments of the THNN kernels take. A size above it is refused before anything is allocated.
MAX_DIM_SIZE = 2 ** 31 - 1
# Fields whose tensors are a module's parameters or running statistics: checked strictly (no empty
# tensor, a floating dtype), as Lua's float/double modules fail on anything else.
_PARAM_FIELDS = frozenset({"weight", "bias", "running_mean", "running_var", "running_std"})

# Options of a conversion (from_lua(obj, options=...), convert --...): name -> default. Converters read
# ``f.options[name]``; an unknown name is refused by from_lua.
LUA_OPTIONS: dict[str, Any] = {
    # torch/nn after 2017-08-03 (commit 919eeca): a training-mode BatchNormalization given a batch of one, and so
    # nn.InstanceNormalization, normalises with its running statistics (default: the batch's, as before)
    "batch_of_one_running_stats": False,
}


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


class LuaForwardError(UserError, RuntimeError):
    """An error raised inside a converted module while it runs, naming the Lua module (path and class),
    the shapes it got and, where the class knows it, what it expects; ``__cause__`` is torch's error."""

    def __init__(self, message: str, path: str = "", typename: str = ""):
        super().__init__(message)
        self.path, self.typename = path, typename


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

    @property
    def lua_path(self) -> str:
        """Where the module was in the Lua tree (``model.modules[2]``); its class name if not converted."""
        return self.__dict__.get("_lua_path") or self.lua_typename

    @lua_path.setter
    def lua_path(self, value: str) -> None:
        self.__dict__["_lua_path"] = value

    def lua_planes(self, planes: int | None) -> int | None:
        """The feature planes after this module (dim 1 of a batch, the features of a 2-D input) from
        ``planes`` before it; None = unknown. Layers that take a fixed number check it with
        :func:`check_planes`; shape-preserving ones return ``planes``. Default: unknown."""
        return None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``nn.Module.__call__``; an exception other than a project error becomes a :class:`LuaForwardError`
        naming this module (like Lua's error, which names the module that failed). Not while compiling,
        exporting or tracing (the graph must stay the plain forward)."""
        if _tracing():
            return super().__call__(*args, **kwargs)  # type: ignore[misc]
        try:
            return super().__call__(*args, **kwargs)  # type: ignore[misc]
        except (UserError, MemoryError, torch.OutOfMemoryError):
            raise
        except Exception as exc:
            raise forward_error(self, exc, args) from exc


def _tracing_checks() -> tuple[Callable[[], bool], ...]:
    checks: list[Callable[[], bool]] = [torch.jit.is_scripting, torch.jit.is_tracing]
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    if compiling is not None:
        checks.append(compiling)
    try:
        from torch.fx import _symbolic_trace as fx
        fx_tracing = getattr(fx, "_get_is_fx_tracing", None) or getattr(fx, "is_fx_tracing", None)
        if fx_tracing is not None:
            checks.append(fx_tracing)
    except ImportError:  # an older torch
        pass
    return tuple(checks)


_TRACING_CHECKS = _tracing_checks()


def _tracing() -> bool:
    """Whether torch is compiling, exporting or tracing (then the plain ``nn.Module.__call__`` runs)."""
    return any(check() for check in _TRACING_CHECKS)


def shapes_str(value: Any) -> str:
    """Input(s) for messages: a tensor as its shape ``2x3x32x32``, a table as ``{2x3, {4, 5}}``."""
    if isinstance(value, torch.Tensor):
        return "x".join(map(str, value.shape)) if value.dim() else "a scalar tensor"
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(shapes_str(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={shapes_str(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "nil"
    if isinstance(value, (bool, int, float)):
        return show_value(value)
    return type(value).__name__


def forward_error(module: "LuaModule", exc: Exception, args: tuple) -> LuaForwardError:
    """The :class:`LuaForwardError` for ``exc`` raised while ``module`` ran on ``args``."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    inputs = shapes_str(args[0] if len(args) == 1 else list(args))
    detail = f"input: {inputs}"
    describe = getattr(module, "lua_expected_input", None)
    if callable(describe):
        try:
            expected = describe()
        except Exception:
            expected = None
        if expected:
            detail += f"; expected: {expected}"
    typename, path = module.lua_typename, module.lua_path
    return LuaForwardError(f"{typename} at {path}: {msg} ({detail})", path, typename)


def check_planes(module: nn.Module, planes: int | None, expected: int | None,
                 field: str = "nInputPlane") -> None:
    """Chain check: ``module`` takes ``expected`` planes (its field ``field``) and the module before it
    gives ``planes``; raises the :class:`LuaModelError` naming both when they differ (None = unknown)."""
    if not isinstance(planes, int) or expected is None or planes == expected:  # unknown, or a table's
        return
    typename = getattr(module, "lua_typename", type(module).__name__)
    path = getattr(module, "lua_path", typename)
    raise LuaModelError(f"{typename} at {path}: takes {expected} planes ({field}), "
                        f"but the module before it gives {planes}")


class TablePlanes(tuple):
    """The planes of each element of a table output (ConcatTable, SplitTable...; None where unknown). Only
    classes with ``lua_takes_table_planes`` get it from :func:`planes_after`; the others get None."""


def planes_after(module: nn.Module, planes: Any) -> Any:
    """``module.lua_planes(planes)`` for converted modules; None (unknown) for any other module. A
    :class:`TablePlanes` is handed only to classes with ``lua_takes_table_planes`` (others get None)."""
    method = getattr(module, "lua_planes", None)
    if not callable(method):
        return None
    if isinstance(planes, TablePlanes) and not getattr(module, "lua_takes_table_planes", False):
        planes = None
    return method(planes)


def lua_str(module: nn.Module) -> str:
    """``tostring`` of a module: Lua's format for converted modules, PyTorch's repr otherwise."""
    return module.lua_str() if isinstance(module, LuaModule) else repr(module)


def indent(text: str, prefix: str) -> str:
    """Lua's ``str:gsub('\\n', '\\n' .. prefix)``."""
    return text.replace("\n", "\n" + prefix)


# ----------------------------------------------------------------------------------------------
# Reading fields
# ----------------------------------------------------------------------------------------------

def _numbers(value: Any) -> list[Any]:
    """The numbers of a Lua size list: a number, a list/table 1..n, a LongStorage or a tensor."""
    if isinstance(value, t7.Storage):
        value = value.tensor
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"expected a list of numbers, got {show_value(value)}")
        return value.reshape(-1).tolist()
    if isinstance(value, dict) and not isinstance(value, t7.LuaList):
        if not value:
            return []
        if sorted(k for k in value if isinstance(k, int) and not isinstance(k, bool)) != list(range(1, len(value) + 1)):
            raise TypeError(f"expected a list of numbers, got {show_value(value)}")
        value = [value[k] for k in range(1, len(value) + 1)]
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise TypeError(f"expected a list of numbers, got {show_value(value)}")
        return list(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    raise TypeError(f"expected a list of numbers, got {show_value(value)}")


def _int_list(value: Any) -> list[int]:
    return [int(v) for v in _numbers(value)]


_TENSOR_KIND = {torch.float32: "FloatTensor", torch.float64: "DoubleTensor", torch.float16: "HalfTensor",
                torch.int64: "LongTensor", torch.int32: "IntTensor", torch.int16: "ShortTensor",
                torch.int8: "CharTensor", torch.uint8: "ByteTensor", torch.bool: "BoolTensor"}


def show_value(value: Any) -> str:
    """A Lua value for error messages, written as Lua would (nil, true, nan, inf; tensors as their size)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return str(int(value)) if value.is_integer() and abs(value) < 2 ** 53 else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, torch.Tensor):
        kind = _TENSOR_KIND.get(value.dtype, f"{value.dtype} tensor")
        if value.numel() == 0:
            return f"an empty {kind}"
        article = "an" if kind[0] in "AEIOU" else "a"
        return f"{article} {kind} of size {'x'.join(map(str, value.shape)) or 'scalar'}"
    if isinstance(value, t7.Storage):
        if len(value) <= 8 and not value.tensor.is_complex():
            return f"{value.typename.split('.')[-1]}{{{', '.join(show_value(v) for v in value.tensor.tolist())}}}"
        return f"a {value.typename} of {len(value)} elements"
    if isinstance(value, t7.TorchObject):
        return f"a {value.typename} object"
    if isinstance(value, list) and 0 < len(value) <= 8 and \
            all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return "{" + ", ".join(show_value(v) for v in value) + "}"
    if isinstance(value, (list, dict)):
        return "an empty table" if not value else f"a table of {len(value)} entries"
    return f"a {type(value).__name__}"


def _bound(value: Any, min: Any, max: Any) -> str | None:
    """What is wrong with ``value`` against the bounds, or None."""
    if min is not None and value < min:
        return f">= {show_value(min)}" if max is None else f"in [{show_value(min)}, {show_value(max)}]"
    if max is not None and value > max:
        return f"<= {show_value(max)}" if min is None else f"in [{show_value(min)}, {show_value(max)}]"
    return None


def float_param(t: torch.Tensor) -> torch.Tensor:
    """A parameter as stored in PyTorch: float64 stays float64, any other type becomes float32."""
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    return t.detach().to(dtype=dtype, copy=True).contiguous()


class Fields:
    """Read access to the fields of one Lua object; errors name the object's path in the tree."""

    def __init__(self, obj: "t7.TorchObject", path: str, conversion: "_Conversion | None" = None):
        self.obj = obj
        self.typename: str = obj.typename
        self.path = path
        self.raw = obj.fields
        self._conversion = conversion or _CURRENT.get()

    @property
    def options(self) -> Mapping[str, Any]:
        """The options of this conversion (every name of :data:`LUA_OPTIONS`, defaults filled in)."""
        if self._conversion is not None:
            return self._conversion.options
        return MappingProxyType(dict(LUA_OPTIONS))

    def note(self, message: str) -> None:
        """Tell the user ``message`` as one ``note:`` line, once per conversion however many modules say it."""
        if self._conversion is not None:
            self._conversion.note(message)
        else:
            note(message)

    def error(self, msg: str) -> LuaModelError:
        return LuaModelError(f"{self.typename} at {self.path}: {msg}")

    def bad(self, name: str, value: Any, expected: str) -> LuaModelError:
        """The error "<class> at <path>: field '<name>' = <value>: <what Lua expects>"."""
        return self.error(f"field '{name}' = {show_value(value)}: {expected}")

    def check(self, condition: Any, name: str, value: Any, expected: str) -> None:
        """Raise :meth:`bad` (naming ``name``, ``value`` and what Lua expects) unless ``condition``."""
        if not condition:
            raise self.bad(name, value, expected)

    def has(self, name: str) -> bool:
        return name in self.raw and self.raw[name] is not None

    def get(self, name: str, default: Any = None) -> Any:
        value = self.raw.get(name, default)
        return default if value is None else value

    def _missing(self, name: str, default: Any, what: str) -> Any:
        if default is _MISSING:
            raise self.error(f"missing field '{name}' ({what})")
        return default

    def num(self, name: str, default: Any = _MISSING, *, min: Any = None, max: Any = None) -> Any:
        """A finite number (int or float; not a boolean, string, NaN or +-inf) within ``[min, max]``."""
        value = self.raw.get(name)
        if value is None:
            return self._missing(name, default, "a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.bad(name, value, "should be a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.bad(name, value, "should be a finite number")
        wrong = _bound(value, min, max)
        if wrong:
            raise self.bad(name, value, f"should be a number {wrong}")
        return value

    def int(self, name: str, default: Any = _MISSING, *, min: Any = None, max: Any = None) -> Any:
        """An integer (an integral finite number, 3.0 included) within ``[min, max]``."""
        value = self.raw.get(name)
        if value is None:
            return self._missing(name, default, "an integer")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not value.is_integer()):
            raise self.bad(name, value, "should be an integer")
        value = int(value)
        wrong = _bound(value, min, max)
        if wrong:
            raise self.bad(name, value, f"should be an integer {wrong}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        """Lua truthiness: nil -> ``default``, false -> False, anything else (0 included) -> True."""
        value = self.raw.get(name)
        if value is None:
            return default
        return value is not False

    def string(self, name: str, default: Any = _MISSING, choices: Iterable[str] | None = None) -> Any:
        """A string, one of ``choices`` when given."""
        value = self.raw.get(name)
        if value is None:
            return self._missing(name, default, "a string")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if not isinstance(value, str):
            raise self.bad(name, value, "should be a string")
        if choices is not None:
            choices = list(choices)
            if value not in choices:
                raise self.bad(name, value, "should be one of " + ", ".join(map(repr, choices)))
        return value

    def tensor(self, name: str, required: bool = True, *, dim: int | None = None,
               shape: tuple | None = None, numel: int | None = None, floating: bool = True,
               allow_empty: bool | None = None) -> torch.Tensor | None:
        """A tensor field; ``None`` when missing/nil and not ``required``.

        An empty tensor is an error (Lua fails on it; nil is how Lua says "no bias") unless
        ``allow_empty``; by default (None) that holds for parameters and running statistics
        (weight, bias, running_*), while an empty optional buffer of another name reads as None.
        ``floating`` refuses integer and boolean dtypes; ``dim``/``shape`` (entries int or None = any)/
        ``numel`` are checked. NaN values are kept (Lua keeps them).
        """
        value = self.raw.get(name)
        if value is None:
            if required:
                raise self.error(f"missing tensor field '{name}'")
            return None
        if isinstance(value, t7.Storage):
            value = value.tensor
        if not isinstance(value, torch.Tensor):
            raise self.bad(name, value, "should be a tensor")
        if value.numel() == 0:
            strict = name in _PARAM_FIELDS if allow_empty is None else not allow_empty
            if strict:
                what = "a non-empty tensor" + ("" if required else " (nil when the module has none)")
                raise self.bad(name, value, f"should be {what}")
            if allow_empty is None and not required:
                return None
        if floating and not value.is_floating_point():
            raise self.bad(name, value, "should be a floating-point tensor (Float/Double/Cuda), "
                                        "as Lua's float modules require")
        if dim is not None and value.dim() != dim:
            raise self.bad(name, value, f"should be {dim}-dimensional")
        if shape is not None:
            if value.dim() != len(shape) or any(e is not None and e != n for e, n in zip(shape, value.shape)):
                want = "x".join("*" if e is None else str(e) for e in shape)
                raise self.bad(name, value, f"should be of size {want}")
        if numel is not None and value.numel() != numel:
            raise self.bad(name, value, f"should have {numel} elements")
        return value

    def ints(self, name: str, default: Any = _MISSING, *, min: Any = None, max: Any = None) -> Any:
        """A list of integers (a number, a table, a LongStorage or a tensor) each within ``[min, max]``."""
        value = self.raw.get(name)
        if value is None:
            return self._missing(name, default, "a list of integers")
        return self.ints_value(name, value, min=min, max=max)

    def ints_value(self, name: str, value: Any, *, min: Any = None, max: Any = None) -> list[int]:
        """:meth:`ints` of a value found inside a field (``name`` labels it, e.g. ``permutations[2]``)."""
        try:
            numbers = _numbers(value)
        except TypeError:
            raise self.bad(name, value, "should be a list of integers") from None
        out = []
        for v in numbers:
            if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
                raise self.bad(name, value, f"should be a list of integers (has {show_value(v)})")
            wrong = _bound(v, min, max)
            if wrong:
                raise self.bad(name, value, f"should be a list of integers {wrong} (has {show_value(v)})")
            out.append(int(v))
        return out

    def module_list(self, name: str = "modules", required: bool = True, *, what: str = "modules") -> list[Any]:
        """The Lua array ``name`` of child objects (a list 1..n; ``{}`` is empty); missing -> error if
        ``required`` else ``[]``; a number, boolean, string, nn object or table with holes is an error.
        ``what`` names the entries in messages."""
        value = self.raw.get(name)
        if value is None:
            return self._missing(name, _MISSING if required else [], f"a Lua list of {what}")
        if isinstance(value, list):
            return list(value)
        if isinstance(value, dict):
            if not value:
                return []
            keys = [k for k in value if isinstance(k, int) and not isinstance(k, bool)]
            if len(keys) == len(value) and sorted(keys) == list(range(1, len(value) + 1)):
                return [value[k] for k in range(1, len(value) + 1)]
            raise self.bad(name, value, f"should be a Lua list of {what} (keys 1..n, no holes)")
        raise self.bad(name, value, f"should be a Lua list of {what}")


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

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: Mapping[str, Any] = MappingProxyType({**LUA_OPTIONS, **(options or {})})
        self.notes: set[str] = set()
        self.unsupported: dict[str, list[str]] = {}
        self.problems: list[str] = []
        self.shared: dict[tuple, nn.Parameter] = {}  # Lua weight/bias storage region -> its Parameter
        self.stack: dict[int, str] = {}  # id of each object being converted -> its path (cycle check)
        self.parents: list[tuple[str, str]] = []  # (typename, path) of the objects being converted

    def _failures(self) -> int:
        return sum(map(len, self.unsupported.values())) + len(self.problems)

    def convert(self, obj: Any, path: str) -> nn.Module:
        """The ``convert`` callback handed to every ``from_fields``: Lua object -> module."""
        if not isinstance(obj, t7.TorchObject):
            raise LuaModelError(f"expected a Lua nn module at {path}, got {_kind(obj)}")
        if id(obj) in self.stack:
            raise self._cycle(path, self.stack[id(obj)])
        converter = REGISTRY.get(obj.typename)
        if converter is None:
            self.unsupported.setdefault(obj.typename, []).append(path)
            return UnsupportedLuaModule(obj.typename, path)
        failures = self._failures()
        f = Fields(obj, path, self)
        self.stack[id(obj)] = path
        self.parents.append((obj.typename, path))
        try:
            module = converter.from_fields(f, self.convert)
        except LuaModelError as exc:
            self._merge(exc, failures)
            return UnsupportedLuaModule(obj.typename, path)
        except RecursionError:
            raise LuaModelError(f"{obj.typename} at {path}: modules nested too deeply to convert") from None
        except Exception:
            if self._failures() > failures:  # fallout of a child already reported
                return UnsupportedLuaModule(obj.typename, path)
            raise
        finally:
            del self.stack[id(obj)]
            self.parents.pop()
        module.lua_typename = obj.typename
        try:
            module.lua_path = path
        except (AttributeError, TypeError):  # a user's module that refuses new attributes
            pass
        self._tie_shared(obj, module)
        if isinstance(converter, _FunctionConverter):
            module.train(f.flag("train", True))
        else:
            module.training = f.flag("train", True)
        return module

    def note(self, message: str) -> None:
        """A ``note:`` line for the user, printed the first time this conversion meets it."""
        if message not in self.notes:
            self.notes.add(message)
            note(message)

    def _cycle(self, path: str, ancestor: str) -> LuaModelError:
        """The error for an object at ``path`` that is already being converted at ``ancestor``."""
        typename, parent = self.parents[-1] if self.parents else ("object", path)
        rel = path[len(parent) + 1:] if path.startswith(parent + ".") else path
        return LuaModelError(f"{typename} at {parent}: contains itself ({rel} is {ancestor})")

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
            elif len(self.problems) > 1:
                lines.append(f"{len(self.problems)} problems in the Lua model:")
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


def check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` of a conversion with every key checked against :data:`LUA_OPTIONS` (a typo is an error)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(LUA_OPTIONS))
    if unknown:
        raise LuaModelError(f"unknown conversion option{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}; known: {', '.join(sorted(LUA_OPTIONS))}")
    return options


# The conversion under way (nested from_lua calls of converters share its options and notes).
_CURRENT: contextvars.ContextVar["_Conversion | None"] = contextvars.ContextVar("lua_conversion", default=None)


def from_lua(obj: "t7.TorchObject", options: Mapping[str, Any] | None = None) -> nn.Module:
    """Convert a Lua ``nn`` module tree (as read by :func:`fbresnet_port.t7.load`) to a PyTorch module.

    ``parameters()`` follows Lua's ``model:parameters()`` order; the train/evaluate flag is taken from
    the file. Objects of classes without a converter are all listed in one :class:`LuaModelError`
    (class, count, first paths in the tree), with other conversion errors; a table that is not a module
    (a checkpoint such as char-rnn's ``{protos=..., opt=...}``) names the paths of the modules it holds.
    ``options`` (names in :data:`LUA_OPTIONS`, e.g. ``{"batch_of_one_running_stats": True}``) choose between
    torch/nn versions; a conversion inside a converter inherits those of the conversion under way.
    """
    if not is_lua_module(obj) and (not isinstance(obj, t7.TorchObject) or find_modules(obj)):
        raise LuaModelError(not_a_module_message(obj))
    outer = _CURRENT.get()
    options = check_options(options) if options is not None or outer is None else dict(outer.options)
    conversion = _Conversion(options)
    if outer is not None:
        conversion.notes = outer.notes
    token = _CURRENT.set(conversion)
    try:
        module = conversion.convert(obj, "model")
    except LuaModelError as exc:  # the root itself failed: report it with everything collected so far
        conversion._merge(exc, -1)
    finally:
        _CURRENT.reset(token)
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


def children_of(f: Fields, convert: ChildConverter, name: str = "modules",
                required: bool = True) -> list[nn.Module]:
    """Convert the ``modules`` list of a Lua container (paths ``<path>.modules[i]``, 1-based); the list is
    read with :meth:`Fields.module_list` (missing: an error if ``required``, else no children)."""
    return [convert(m, f"{f.path}.{name}[{i + 1}]") for i, m in enumerate(f.module_list(name, required))]


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
