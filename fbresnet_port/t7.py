"""Read and write Torch7 ``.t7`` files (Lua ``torch.save`` / ``torch.load``).

Port of the serialiser in torch7's ``File.lua`` with the tensor and storage layouts of
``generic/Tensor.c`` and ``generic/Storage.c``. Both the binary format (checkpoints, pretrained
models) and the ASCII format (``torch.save(f, x, 'ascii')``, e.g. the ``cifar-10-torch`` batches)
are read; :func:`save` writes either (``ascii=True``) byte for byte as Lua ``torch.save`` does, and
the tds containers (torch/tds ``hash.lua``/``vec.lua`` serialisation) both ways.

Value mapping (Lua -> Python)::

    nil                  None
    number               int when integral (and not -0.0), else float
    string               str when the bytes are valid UTF-8, else bytes
    boolean              bool
    table, keys 1..n     LuaList (a list)
    any other table      LuaTable (a dict; boolean keys as BoolKey, table keys as IdKey)
    torch.*Tensor        torch.Tensor (CPU; views share memory as in Lua; Cuda names kept, see typename_of)
    torch.*Storage       Storage
    tds.Hash / tds.Vec   TdsHash (a dict) / TdsVec (a list; None for nil); tds.AtomicCounter
    other torch classes  TorchObject (nn modules, torch.class objects)
    function             LuaFunction (opaque; never executed)

Nothing from a file is ever executed, and a corrupt file raises :class:`T7FormatError` naming the
file, the byte offset and what was expected, before any allocation larger than the file itself.
A file that ends early raises :class:`T7TruncatedError`, one of another format (a PyTorch
checkpoint, HDF5, NumPy, a Git LFS pointer, gzip, HTML ...) :class:`NotT7FileError` saying what it is.
"""
from __future__ import annotations

import functools
import io
import math
import mmap
import os
import re
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Iterable

import numpy as np
import torch

from . import fileio
from .errors import UserError

__all__ = [
    "load", "load_bytes", "save", "dumps", "T7FormatError", "T7TruncatedError", "NotT7FileError",
    "T7WriteError", "LuaTable", "LuaList", "TorchObject", "Storage", "LuaFunction", "BoolKey", "IdKey",
    "TdsHash", "TdsVec", "TdsAtomicCounter", "as_typename", "typename_of",
]

# Type codes of File.lua.
TYPE_NIL, TYPE_NUMBER, TYPE_STRING, TYPE_TABLE, TYPE_TORCH, TYPE_BOOLEAN = 0, 1, 2, 3, 4, 5
TYPE_FUNCTION, TYPE_RECUR_FUNCTION_LEGACY, TYPE_RECUR_FUNCTION = 6, 7, 8

# Lua tensor/storage class stem -> torch dtype. 'Cuda' alone is the float32 CUDA type.
_STEM_DTYPE = {
    "Byte": torch.uint8, "Char": torch.int8, "Short": torch.int16, "Int": torch.int32,
    "Long": torch.int64, "Float": torch.float32, "Double": torch.float64, "Half": torch.float16,
}
_DTYPE_STEM = {v: k for k, v in _STEM_DTYPE.items()}
_NP_DTYPE = {
    torch.uint8: np.uint8, torch.int8: np.int8, torch.int16: np.int16, torch.int32: np.int32,
    torch.int64: np.int64, torch.float32: np.float32, torch.float64: np.float64,
    torch.float16: np.float16,
}
_MAX_NDIM = 1024


class T7FormatError(ValueError):
    """A ``.t7`` file that cannot be read: names the file, the byte offset and what was expected."""

    offset: int = 0  # where reading failed


class T7TruncatedError(T7FormatError):
    """The file ends before the object it holds does (an interrupted copy or download)."""


class NotT7FileError(T7FormatError, UserError):
    """The file is not a Torch7 file at all; the message says what it is and how to read it."""


class T7WriteError(UserError, ValueError):
    """A value Lua's ``torch.save``/``torch.load`` cannot represent (a NaN table key, a long too wide,
    an integer a Lua number (a double) cannot hold exactly)."""


class _InexactNumber(Exception):
    """An integer that a double cannot hold exactly; ``path`` collects the keys that lead to it while the
    writer unwinds (turned into a :class:`T7WriteError` by :func:`_write`)."""

    def __init__(self, value: int):
        super().__init__(value)
        self.value = value
        self.path: list[str] = []
        self.is_key = False

    def within(self, key: Any, in_list: bool = False) -> "_InexactNumber":
        """Add the table key (or 0-based list index, ``in_list``) one level up; returns ``self``."""
        if isinstance(key, (BoolKey, IdKey)):
            key = key.value if isinstance(key, BoolKey) else key.obj
        if in_list:
            self.path.insert(0, f"[{key + 1}]")
        elif isinstance(key, str) and key.isidentifier():
            self.path.insert(0, f".{key}")
        elif isinstance(key, (str, bytes, bool, int, float, np.integer, np.floating)):
            self.path.insert(0, f"[{key!r}]")
        else:
            self.path.insert(0, f"[<{type(key).__name__} key>]")
        return self


# ----------------------------------------------------------------------------------------------
# Python representations of Lua values
# ----------------------------------------------------------------------------------------------
class LuaTable(dict):
    """A Lua table that is not a plain list (also the empty table ``{}``)."""

    __hash__ = object.__hash__  # tables are compared by identity when used as keys


class LuaList(list):
    """A Lua table whose keys are exactly ``1..n`` (n >= 1); Python index ``i`` is Lua key ``i + 1``."""

    __hash__ = object.__hash__


class BoolKey:
    """A boolean used as a table key (Python would merge ``True`` with ``1``)."""

    __slots__ = ("value",)

    def __init__(self, value: bool):
        self.value = bool(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BoolKey) and other.value == self.value

    def __hash__(self) -> int:
        return hash(("lua-boolean-key", self.value))

    def __repr__(self) -> str:
        return f"BoolKey({self.value})"


class IdKey:
    """A table, object or function used as a table key (compared by identity, as in Lua)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdKey) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __repr__(self) -> str:
        return f"IdKey({type(self.obj).__name__} at {id(self.obj):#x})"


class TorchObject:
    """An object of a ``torch.class`` that has no native Python form: nn modules, user classes.

    ``typename`` is the Lua class name (``'nn.Linear'``), ``version`` the number of its ``"V n"``
    header and ``fields`` its fields. Fields read as attributes or items: ``m.weight``, ``m['weight']``.
    """

    __slots__ = ("typename", "version", "fields")

    def __init__(self, typename: str, fields: dict | None = None, version: int = 1):
        self.typename = typename
        self.version = version
        self.fields = fields if isinstance(fields, LuaTable) else LuaTable(fields or {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(f"{self.typename} object has no field {name!r}") from None

    def __getitem__(self, key: Any) -> Any:
        return self.fields[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.fields[key] = value

    def __contains__(self, key: Any) -> bool:
        return key in self.fields

    def get(self, key: Any, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def __repr__(self) -> str:
        return f"TorchObject({self.typename!r}, fields=[{', '.join(map(str, self.fields))}])"


class Storage:
    """A Torch storage: ``tensor`` is a 1-D tensor over all its elements (shared with its views)."""

    __slots__ = ("typename", "tensor")

    def __init__(self, tensor: torch.Tensor, typename: str | None = None):
        self.tensor = tensor
        self.typename = typename or f"torch.{_DTYPE_STEM[tensor.dtype]}Storage"

    def __len__(self) -> int:
        return self.tensor.numel()

    def __repr__(self) -> str:
        return f"Storage({self.typename}, size={len(self)})"


class LuaFunction:
    """A serialised Lua function: LuaJIT bytecode and its upvalues, kept opaque (never executed)."""

    __slots__ = ("bytecode", "upvalues", "type_code")

    def __init__(self, bytecode: bytes, upvalues: Any, type_code: int = TYPE_RECUR_FUNCTION):
        self.bytecode = bytecode
        self.upvalues = upvalues
        self.type_code = type_code

    def __repr__(self) -> str:
        return f"LuaFunction({len(self.bytecode)} bytes of bytecode)"


class TdsHash(dict):
    """A ``tds.Hash`` (torch/tds): keys are numbers or strings; values numbers, strings, booleans,
    tensors or other tds containers (no Lua tables). Written back as a ``tds.Hash``."""

    __hash__ = object.__hash__  # compared by identity, as the cdata object it stands for

    def __init__(self, *args: Any, typename: str = "tds.Hash", version: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.typename, self.version = typename, version

    def __repr__(self) -> str:
        return f"TdsHash({dict.__repr__(self)})"


class TdsVec(list):
    """A ``tds.Vec`` (torch/tds): a 1-based vector of the same value types as :class:`TdsHash`;
    ``None`` stands for a nil element. Python index ``i`` is tds index ``i + 1``."""

    __hash__ = object.__hash__

    def __init__(self, items: Iterable[Any] = (), *, typename: str = "tds.Vec", version: int = 0):
        super().__init__(items)
        self.typename, self.version = typename, version

    def __repr__(self) -> str:
        return f"TdsVec({list.__repr__(self)})"


class TdsAtomicCounter:
    """A ``tds.AtomicCounter``: its integer ``value``."""

    __slots__ = ("value", "typename", "version")

    def __init__(self, value: int = 0, *, typename: str = "tds.AtomicCounter", version: int = 0):
        self.value, self.typename, self.version = int(value), typename, version

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TdsAtomicCounter) and other.value == self.value

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"TdsAtomicCounter({self.value})"


_TDS_TYPES = (TdsHash, TdsVec, TdsAtomicCounter)
# Class names of the tds containers (the 'tds_hash' spelling is that of early tds releases).
_TDS_CLASSES = {"tds.Hash": TdsHash, "tds_hash": TdsHash, "tds.Vec": TdsVec, "tds_vec": TdsVec,
                "tds.AtomicCounter": TdsAtomicCounter}


class _Typed:
    """A tensor to be written under an explicit Lua class name (see :func:`as_typename`)."""

    __slots__ = ("tensor", "typename")

    def __init__(self, tensor: torch.Tensor, typename: str):
        self.tensor = tensor
        self.typename = typename


def as_typename(tensor: torch.Tensor, typename: str) -> _Typed:
    """Mark ``tensor`` to be saved as Lua class ``typename`` (e.g. ``'torch.CudaTensor'``)."""
    stem = _class_stem(typename, "Tensor")
    if stem is None or _STEM_DTYPE[stem] != tensor.dtype:
        raise ValueError(f"{typename} cannot hold a tensor of dtype {tensor.dtype}")
    return _Typed(tensor, typename)


def typename_of(tensor: torch.Tensor) -> str:
    """The Lua class name a loaded tensor had (``torch.CudaTensor`` ...), or its CPU class name."""
    name = getattr(tensor, "_t7_typename", None)
    return name or f"torch.{_DTYPE_STEM[tensor.dtype]}Tensor"


@functools.lru_cache(maxsize=256)
def _class_stem(typename: str, kind: str) -> str | None:
    """'torch.CudaLongTensor' -> 'Long'; 'torch.CudaTensor' -> 'Float'; None if not a tensor/storage class."""
    if not (typename.startswith("torch.") and typename.endswith(kind)):
        return None
    stem = typename[len("torch."):-len(kind)]
    if stem.startswith("Cuda"):
        stem = stem[len("Cuda"):] or "Float"
    return stem if stem in _STEM_DTYPE else None


# ----------------------------------------------------------------------------------------------
# Low-level readers: binary and ASCII
# ----------------------------------------------------------------------------------------------
class _Source:
    """Position, size and error reporting shared by the binary and ASCII readers."""

    def __init__(self, data, name: str, long_size: int):
        self.data, self.pos, self.size, self.name, self.long_size = data, 0, len(data), name, long_size

    def tell(self) -> int:
        return self.pos

    def fail(self, what: str, offset: int | None = None, *, truncated: bool = False) -> T7FormatError:
        """The error to raise; ``truncated`` when the data needed lies past the end of the file."""
        cls = T7TruncatedError if truncated else T7FormatError
        pos = self.pos if offset is None else offset
        err = cls(f"{self.name}: byte {pos}: {_describe(what)}")
        err.offset = pos
        return err

    def remaining(self) -> int:
        return self.size - self.pos


class _BinarySource(_Source):
    """Little-endian binary reads from a buffer (the mapped file), with bounds checks."""

    def __init__(self, buf, name: str, long_size: int):
        super().__init__(buf, name, long_size)
        self.buf = buf
        self._long = {4: "<i", 8: "<q"}[long_size]
        # An 8-byte long outside the int32 range: what 4-byte longs read 8 at a time look like
        # (Lua writes sizes, strides and offsets that fit an int32 in all but gigantic files).
        self.wide_long_seen = False

    def _need(self, n: int, what: str) -> int:
        pos = self.pos
        if pos + n > self.size:
            raise self.fail(f"file ends after {self.size - pos} of {n} bytes while reading {_describe(what)}",
                            truncated=True)
        self.pos = pos + n
        return pos

    def _check_wide(self, values: Iterable[int]) -> None:
        if self.long_size == 8 and any(not -0x80000000 <= v <= 0x7FFFFFFF for v in values):
            self.wide_long_seen = True

    def int(self, what: str = "an int32") -> int:
        pos = self.pos
        if pos + 4 > self.size:
            self._need(4, what)  # raises with the message
        self.pos = pos + 4
        return _INT.unpack_from(self.buf, pos)[0]

    def long(self, what: str = "a long") -> int:
        value = struct.unpack_from(self._long, self.buf, self._need(self.long_size, what))[0]
        self._check_wide((value,))
        return value

    def longs(self, n: int, what: str) -> list[int]:
        pos = self._need(n * self.long_size, what)
        values = list(struct.unpack_from(f"<{n}{self._long[1]}", self.buf, pos))
        self._check_wide(values)
        return values

    def double(self) -> float:
        return _DOUBLE.unpack_from(self.buf, self._need(8, "a number (float64)"))[0]

    def raw(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise self.fail(f"{_describe(what)} of {n} bytes runs past the end of the file ({self.remaining()} bytes left)",
                            truncated=True)
        pos = self._need(n, what)
        return bytes(self.buf[pos:pos + n])

    def elements(self, dtype: torch.dtype, n: int, what: str) -> torch.Tensor:
        npdtype = np.dtype(_NP_DTYPE[dtype]).newbyteorder("<")
        if dtype == torch.int64 and self.long_size == 4:
            npdtype = np.dtype("<i4")
        nbytes = n * npdtype.itemsize
        if nbytes > self.remaining():
            raise self.fail(f"{_describe(what)} of {n} elements ({nbytes} bytes) runs past the end of the file "
                            f"({self.remaining()} bytes left)", truncated=True)
        pos = self._need(nbytes, what)
        arr = np.frombuffer(self.buf, dtype=npdtype, count=n, offset=pos)
        return torch.from_numpy(arr.astype(_NP_DTYPE[dtype], copy=True))  # owned, aligned memory


_INT = struct.Struct("<i")
_DOUBLE = struct.Struct("<d")


class _AsciiSource(_Source):
    """Reads the text form of DiskFile's ASCII mode (scalars on lines, raw bytes for chars).

    Lua ends every write call with a newline, so a number or a string that reaches the very end of
    the data was cut short: that is reported as truncation, never read as a shorter value.
    """

    wide_long_seen = False

    def _spacing(self) -> None:  # DiskFile auto-spacing: one newline after each read/write call
        if self.pos < self.size and self.data[self.pos] == 0x0A:
            self.pos += 1

    def _tokens(self, n: int, what: str) -> list[bytes]:
        out = []
        data, pos = self.data, self.pos
        for _ in range(n):
            while pos < self.size and data[pos] in b" \t\r\n":
                pos += 1
            end = pos
            while end < self.size and data[end] not in b" \t\r\n":
                end += 1
            if end == pos or end == self.size:
                raise self.fail(f"file ends while reading {_describe(what)}", pos, truncated=True)
            out.append(data[pos:end])
            pos = end
        self.pos = pos
        self._spacing()
        return out

    def _ints(self, n: int, what: str) -> list[int]:
        tokens = self._tokens(n, what)
        try:
            return [int(t) for t in tokens]
        except ValueError:
            raise self.fail(f"expected {_describe(what)} as an integer") from None

    def int(self, what: str = "an int32") -> int:
        return self._ints(1, what)[0]

    def long(self, what: str = "a long") -> int:
        return self._ints(1, what)[0]

    def longs(self, n: int, what: str) -> list[int]:
        return self._ints(n, what) if n else []

    def double(self) -> float:
        tok = self._tokens(1, "a number")[0]
        try:
            return float(tok)
        except ValueError:
            raise self.fail(f"expected a number, found {tok[:20]!r}") from None

    def raw(self, n: int, what: str) -> bytes:
        if n and n >= self.remaining():  # the bytes and the newline Lua writes after them
            raise self.fail(f"{_describe(what)} of {n} bytes runs past the end of the file ({self.remaining()} bytes left)",
                            truncated=True)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        if n:
            self._spacing()
        return out

    def elements(self, dtype: torch.dtype, n: int, what: str) -> torch.Tensor:
        if dtype in (torch.uint8, torch.int8):  # Byte/Char data are raw bytes in ASCII mode
            return torch.from_numpy(np.frombuffer(self.raw(n, what), dtype=_NP_DTYPE[dtype]).copy())
        if n > self.remaining():
            raise self.fail(f"{_describe(what)} of {n} elements cannot fit in the {self.remaining()} bytes left",
                            truncated=True)
        toks = self._tokens(n, what) if n else []
        try:
            if dtype.is_floating_point:
                values = np.array([float(t) for t in toks], dtype=np.float64)
            else:
                values = np.array([int(t) for t in toks], dtype=np.int64)
        except ValueError:
            raise self.fail(f"malformed number in {_describe(what)}") from None
        return torch.from_numpy(values.astype(_NP_DTYPE[dtype]))


# ----------------------------------------------------------------------------------------------
# Object reader
# ----------------------------------------------------------------------------------------------
def _lua_number(x: float) -> int | float:
    if math.isfinite(x) and x == int(x) and abs(x) < 2.0**63 and not (x == 0 and math.copysign(1, x) < 0):
        return int(x)
    return x


def _lua_string(b: bytes) -> str | bytes:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


class _Reader:
    def __init__(self, src: _BinarySource | _AsciiSource):
        self.src = src
        self.memo: dict[int, Any] = {}
        self.in_progress: set[int] = set()
        self.early_refs: set[int] = set()  # tables referenced before they were complete
        self.replaced: dict[int, Any] = {}  # id(placeholder dict) -> final list

    def read(self) -> Any:
        obj = self.value("the root object")
        if self.replaced:
            obj = _Patcher(self.replaced).patch(obj)
        return obj

    def value(self, where: str) -> Any:
        src = self.src
        start = src.tell()
        code = src.int(("the type code of", where))
        if code == TYPE_NIL:
            return None
        if code == TYPE_NUMBER:
            return _lua_number(src.double())
        if code == TYPE_STRING:
            return _lua_string(self.string(where))
        if code == TYPE_BOOLEAN:
            return src.int("a boolean") == 1
        if code in (TYPE_TABLE, TYPE_TORCH, TYPE_RECUR_FUNCTION, TYPE_RECUR_FUNCTION_LEGACY):
            index = src.int(("the object index of", where))
            if index in self.memo:
                if index in self.in_progress:
                    self.early_refs.add(index)
                return self.memo[index]
            if code == TYPE_TABLE:
                return self.table(index, where)
            if code == TYPE_TORCH:
                return self.torch_object(index, where)
            return self.function(index, code)
        if code == TYPE_FUNCTION:
            return self.function(None, code)
        raise src.fail(f"unknown type code {code} for {_describe(where)} (valid codes are 0-8); "
                       "the file is corrupt or not a Torch .t7 file", start)

    def string(self, what: str) -> bytes:
        n = self.src.int(("the length of a string in", what))
        if n < 0:
            raise self.src.fail(f"negative string length {n} in {_describe(what)}")
        return self.src.raw(n, ("a string in", what))

    def table(self, index: int, where: str) -> Any:
        src = self.src
        n = src.int("a table size")
        if n < 0:
            raise src.fail(f"negative table size {n}")
        if n * 8 > src.remaining():
            raise src.fail(f"table size {n} is impossible with {src.remaining()} bytes left", truncated=True)
        table = LuaTable()
        self.memo[index] = table
        self.in_progress.add(index)
        for _ in range(n):
            key = self.value(("a table key in", where))
            value = self.value(("key", key, where))
            if key is None:
                raise src.fail(f"nil table key in {_describe(where)}")
            table[_as_key(key)] = value
        self.in_progress.discard(index)
        if _is_list_keys(table):
            result = LuaList(table[i] for i in range(1, len(table) + 1))
            self.memo[index] = result
            if index in self.early_refs:
                self.replaced[id(table)] = result
            return result
        return table

    def torch_object(self, index: int, where: str) -> Any:
        src = self.src
        header = _lua_string(self.string(("the class header of", where)))
        if isinstance(header, str) and header.startswith("V "):
            try:
                version = int(header[2:])
            except ValueError:
                raise src.fail(f"bad version header {header!r}") from None
            name = _lua_string(self.string(("the class name of", where)))
        else:  # files from before versioned classes: the header is the class name
            version, name = 0, header
        if not isinstance(name, str) or not name:
            raise src.fail(f"invalid class name {name!r}")
        stem = _class_stem(name, "Tensor")
        if stem is not None:
            return self.tensor(index, name, _STEM_DTYPE[stem])
        stem = _class_stem(name, "Storage")
        if stem is not None:
            return self.storage(index, name, _STEM_DTYPE[stem])
        if name in _TDS_CLASSES:
            return self.tds(index, name, version)
        obj = TorchObject(name, LuaTable(), version)
        self.memo[index] = obj
        fields = self.value(("the fields of", name))
        if isinstance(fields, LuaList):  # a class whose fields happen to be 1..n
            fields = LuaTable((i + 1, v) for i, v in enumerate(fields))
        if fields is not None and not isinstance(fields, dict):
            raise src.fail(f"the fields of {name} are a {type(fields).__name__}, expected a table")
        obj.fields = fields if fields is not None else LuaTable()
        return obj

    def tds(self, index: int, name: str, version: int) -> Any:
        """A tds container: its ``__write`` puts a long count, then the key/value pairs (Hash) or the
        values (Vec) as ordinary objects; an AtomicCounter is one long (torch/tds hash.lua, vec.lua)."""
        src = self.src
        cls = _TDS_CLASSES[name]
        start = src.tell()
        n = src.long(("the element count of a", name))
        if cls is TdsAtomicCounter:
            obj = self.memo[index] = TdsAtomicCounter(n, typename=name, version=version)
            return obj
        per_item = (8 if cls is TdsHash else 4) // (1 if isinstance(src, _BinarySource) else 2)  # smallest entry
        if n < 0:
            raise src.fail(f"negative element count {n} of a {name}", start)
        if n * per_item > src.remaining():
            raise src.fail(f"a {name} of {n} elements cannot fit in the {src.remaining()} bytes left", start,
                           truncated=True)
        if cls is TdsVec:
            vec = self.memo[index] = TdsVec(typename=name, version=version)
            for i in range(n):
                vec.append(self.value(("element", f"{i + 1} of a {name}")))
            return vec
        table = self.memo[index] = TdsHash(typename=name, version=version)
        for _ in range(n):
            key_pos = src.tell()
            key = self.value(("a key in a", name))
            if isinstance(key, bool) or not isinstance(key, (str, bytes, int, float)):
                raise src.fail(f"a {name} key must be a number or a string, not {type(key).__name__}", key_pos)
            value = self.value(("key", key, name))
            if value is not None:  # tds: assigning nil removes the key
                table[key] = value
        return table

    def storage(self, index: int, name: str, dtype: torch.dtype) -> Storage:
        src = self.src
        start = src.tell()
        n = src.long(("the size of a", name))
        if n < 0:
            raise src.fail(f"negative size {n} of a {name}", start)
        st = Storage(src.elements(dtype, n, ("the data of a", name)), name)
        self.memo[index] = st
        return st

    def tensor(self, index: int, name: str, dtype: torch.dtype) -> torch.Tensor:
        src = self.src
        start = src.tell()
        ndim = src.int(("the number of dimensions of a", name))
        if ndim < 0 or ndim > _MAX_NDIM:
            raise src.fail(f"impossible number of dimensions {ndim} for a {name}", start)
        if ndim * 2 * (src.long_size if isinstance(src, _BinarySource) else 2) > src.remaining():
            raise src.fail(f"a {name} of {ndim} dimensions cannot fit in the {src.remaining()} bytes left", start,
                           truncated=True)
        sizes = src.longs(ndim, ("the sizes of a", name))
        strides = src.longs(ndim, ("the strides of a", name))
        offset = src.long(("the storage offset of a", name)) - 1
        if any(s < 0 for s in sizes) or any(s < 0 for s in strides):
            raise src.fail(f"negative size or stride in a {name}: sizes {sizes}, strides {strides}", start)
        storage = self.value(("the storage of a", name))
        if storage is not None and not isinstance(storage, Storage):
            raise src.fail(f"the storage of a {name} is a {type(storage).__name__}")
        numel = math.prod(sizes) if ndim else 0
        if storage is None:
            if numel:
                raise src.fail(f"a {name} of {numel} elements has no storage", start)
            t = torch.empty(sizes if ndim else (0,), dtype=dtype)
        else:
            if storage.tensor.dtype != dtype:
                raise src.fail(f"a {name} refers to a {storage.typename}", start)
            if ndim == 0 or numel == 0:
                shape = tuple(sizes) if ndim else (0,)
                if not 0 <= offset <= len(storage):
                    raise src.fail(f"storage offset {offset + 1} out of range for a storage of {len(storage)}", start)
                t = torch.as_strided(storage.tensor, shape, tuple(strides) if ndim else (1,), offset)
            else:
                last = offset + sum((s - 1) * st for s, st in zip(sizes, strides))
                if offset < 0 or last >= len(storage):
                    raise src.fail(f"a {name} of sizes {sizes} strides {strides} offset {offset + 1} "
                                   f"reaches past its storage of {len(storage)} elements", start)
                t = torch.as_strided(storage.tensor, sizes, strides, offset)
        if name != f"torch.{_DTYPE_STEM[dtype]}Tensor":
            t._t7_typename = name
        self.memo[index] = t
        return t

    def function(self, index: int | None, code: int) -> LuaFunction:
        src = self.src
        n = src.int("the bytecode length of a function")
        if n < 0:
            raise src.fail(f"negative bytecode length {n}")
        fn = LuaFunction(src.raw(n, "function bytecode"), None, code)
        if index is not None:
            self.memo[index] = fn
        fn.upvalues = self.value("the upvalues of a function")
        return fn


def _describe(what: Any) -> str:
    """Error-message text for a lazily built location (tuples are only formatted on failure)."""
    if isinstance(what, str):
        return what
    if what[0] == "key":
        _, key, parent = what
        shown = repr(key) if isinstance(key, (str, int, float, bytes)) else type(key).__name__
        return f"the value of key {shown} in {_describe(parent)}"
    return f"{what[0]} {_describe(what[1])}"


def _as_key(key: Any) -> Any:
    if isinstance(key, bool):
        return BoolKey(key)
    if isinstance(key, (LuaTable, LuaList, TorchObject, LuaFunction, Storage, torch.Tensor) + _TDS_TYPES):
        return IdKey(key)
    return key


def _is_list_keys(table: dict) -> bool:
    n = len(table)
    return n > 0 and all(type(k) is int and 1 <= k <= n for k in table)


class _Patcher:
    """Replaces placeholder dicts by the lists they became (tables referenced inside themselves)."""

    def __init__(self, replaced: dict[int, Any]):
        self.replaced = replaced
        self.seen: set[int] = set()

    def sub(self, x: Any) -> Any:
        return self.replaced.get(id(x), x)

    def patch(self, root: Any) -> Any:
        root = self.sub(root)
        stack = [root]
        while stack:
            x = stack.pop()
            if id(x) in self.seen:
                continue
            self.seen.add(id(x))
            if isinstance(x, LuaList):
                for i, v in enumerate(x):
                    x[i] = self.sub(v)
                    stack.append(x[i])
            elif isinstance(x, LuaTable):
                items = list(x.items())
                x.clear()
                for k, v in items:
                    if isinstance(k, IdKey):
                        k = IdKey(self.sub(k.obj))
                        stack.append(k.obj)
                    x[k] = self.sub(v)
                    stack.append(x[k])
            elif isinstance(x, TorchObject):
                stack.append(x.fields)
            elif isinstance(x, LuaFunction):
                x.upvalues = self.sub(x.upvalues)
                stack.append(x.upvalues)
        return root


# ----------------------------------------------------------------------------------------------
# Recognising what a file is
# ----------------------------------------------------------------------------------------------
_ASCII_START = re.compile(rb"[0-8](\n|$)")  # ASCII mode: the root type code on its own line

# Leading bytes of formats people mistake for .t7 files -> what the file is and how to read it.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (e.g. Keras/torch-hdf5 weights); read it with h5py"),
    (b"\x93NUMPY", "a NumPy .npy array; read it with numpy.load(path)"),
    (b"version https://git-lfs.github.com/spec/",
     "a Git LFS pointer, not the file itself; fetch the real file with `git lfs pull` (Git LFS installed)"),
    (b"\x1f\x8b", "gzip-compressed data (a .gz or .tar.gz); decompress or extract it first (gunzip / tar -xzf)"),
    (b"BZh", "bzip2-compressed data; decompress it first (bunzip2 / tar -xjf)"),
    (b"\xfd7zXZ\x00", "xz-compressed data; decompress it first (unxz / tar -xJf)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data; decompress it first (unzstd)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive; extract it first"),
    (b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19",
     "a PyTorch checkpoint in the legacy (pre-1.6) format; load it with torch.load(path)"),
)


def _describe_zip(buf) -> str:
    try:
        with zipfile.ZipFile(buf if hasattr(buf, "seek") else io.BytesIO(buf)) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "a ZIP archive (damaged); a .t7 file is not zipped"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "a TorchScript archive; load it with torch.jit.load(path)"
        return "a PyTorch checkpoint (zip format, torch.save); load it with torch.load(path)"
    if names and all(n.endswith(".npy") for n in names):
        return "a NumPy .npz archive; read it with numpy.load(path)"
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"a ZIP archive ({len(names)} members: {shown}); extract it first"


def _describe_text(head: bytes) -> str | None:
    """What a text file is (HTML, JSON, other text), or None for binary data."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:  # a multi-byte character cut at the end of ``head`` is fine
        if e.start < len(head) - 3:
            return None
        text = head[:e.start].decode("utf-8")
    if any(not (c.isprintable() or c in "\r\n\t\f") for c in text):
        return None
    lead = text.lstrip("\ufeff \r\n\t").lower()
    if lead.startswith(("<!doctype html", "<html", "<head", "<body")):
        return ("an HTML page (a download that saved an error or login page instead of the file?); "
                "download the file itself")
    if lead.startswith("<?xml") or lead.startswith("<"):
        return "an XML/HTML text file"
    if lead.startswith(("{", "[")):
        return "a JSON text file"
    first = lead.splitlines()[0][:60] if lead else ""
    return f"a text file (starting {first!r})"


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _is_pickle(head: bytes) -> bool:
    """A pickle of protocol 2-5 (what ``torch.save`` wrote before its zip format)."""
    return head[:1] == b"\x80" and len(head) >= 2 and 2 <= head[1] <= 5


def torch_save_format(path: str | os.PathLike) -> str | None:
    """``'zip'`` or ``'pickle'`` for a file in one of ``torch.save``'s formats (from its first bytes), else None."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    return "pickle" if _is_pickle(head) else None


def _sniff(buf, name: str) -> bool:
    """True for an ASCII-mode .t7 file, False for a binary one; :class:`NotT7FileError` for any other format.

    A binary .t7 file starts with the root's int32 type code (0-8, little-endian), an ASCII one with
    that code on its own line; everything else is named from its leading bytes.
    """
    size = len(buf)
    head = bytes(buf[:512])
    if size == 0:
        what = "the file is empty (0 bytes)"
    elif _ASCII_START.match(head):
        return True
    elif head[0] <= TYPE_RECUR_FUNCTION and not head[1:4].strip(b"\0"):
        return False  # a type code, or the start of one in a file cut after 1-3 bytes
    elif head.startswith(_ZIP_MAGIC):
        what = _describe_zip(buf)
    elif size > 262 and head[257:262] == b"ustar":
        what = "a tar archive; extract it first (tar -xf)"
    else:
        what = next((desc for magic, desc in _MAGIC if head.startswith(magic)), None)
        if what is None and _is_pickle(head):
            what = "a Python pickle (e.g. a PyTorch checkpoint); load it with torch.load(path) or pickle.load"
        if what is None:
            what = _describe_text(head)
        if what is None:
            what = f"unknown binary data (first bytes {head[:8].hex(' ')})"
    if size == 0:
        raise NotT7FileError(f"{name}: byte 0: {what}, expected a Torch .t7 object")
    raise NotT7FileError(f"{name}: byte 0: not a Torch7 .t7 file: {what}")


def load(path: str | os.PathLike, *, long_size: int | None = None) -> Any:
    """Read a Lua ``torch.save`` file, binary or ASCII (port of ``torch.load``).

    ``long_size`` is the byte width of C ``long`` in the file (8 on Linux/macOS, 4 on Windows or
    32-bit builds, Lua ``torch.load(path, 'b32')``). By default 8 is used, and 4 only when the file
    cannot be read with 8 and shows the signs of 4-byte longs (a file that simply ends early is
    reported as truncated, never read in the other layout).
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return _load_buffer(b"", str(path), long_size)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _load_buffer(buf, str(path), long_size)


def load_bytes(data: bytes, *, name: str = "<bytes>", long_size: int | None = None) -> Any:
    """:func:`load` from an in-memory buffer (e.g. a member of a tar archive)."""
    return _load_buffer(data, name, long_size)


# Python frames allowed while reading/writing: a saved nngraph graph (e.g. an unrolled RNN) nests one
# table per node along its longest path (~6 frames per node); Python-to-Python calls use no C stack.
_DEEP_RECURSION = 200_000


def _deeply(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` with the recursion limit raised to :data:`_DEEP_RECURSION` (restored after)."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, _DEEP_RECURSION))
    try:
        return fn(*args)
    finally:
        sys.setrecursionlimit(old)


def _read_all(src: _BinarySource | _AsciiSource) -> Any:
    """The one object of the file; trailing bytes (other than ASCII white space) are an error."""
    try:
        obj = _deeply(_Reader(src).read)
    except RecursionError:
        raise T7FormatError(f"{src.name}: objects nested too deeply") from None
    if src.tell() < src.size:
        rest = src.data[src.tell():] if isinstance(src, _AsciiSource) else b"x"
        if rest.strip():
            raise src.fail(f"{src.size - src.tell()} unexpected bytes after the end of the object")
    return obj


def _load_buffer(buf, name: str, long_size: int | None) -> Any:
    if long_size not in (None, 4, 8):
        raise ValueError(f"long_size must be 4 or 8, not {long_size}")
    if _sniff(buf, name):  # ASCII: longs are text, their width does not matter
        return _read_all(_AsciiSource(bytes(buf), name, long_size or 8))
    if long_size:
        return _read_all(_BinarySource(buf, name, long_size))
    src8 = _BinarySource(buf, name, 8)
    try:
        return _read_all(src8)
    except T7FormatError as e8:
        error8 = e8
    # Every long read was a plausible 8-byte value and the data simply ran out: a truncated file,
    # which 4-byte longs may parse by chance. Otherwise report the reading that got further.
    truncated8 = isinstance(error8, T7TruncatedError) and not src8.wide_long_seen
    try:
        obj = _read_all(_BinarySource(buf, name, 4))
    except T7FormatError as error4:
        raise (error8 if truncated8 or error8.offset >= error4.offset else error4) from None
    if truncated8:  # only the user can tell
        raise T7TruncatedError(f"{error8}; (the file does read completely with 4-byte longs: if it was written "
                               f"with them, on Windows or a 32-bit build, load it with long_size=4)") from None
    return obj


# ----------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------
_INT32_RANGE = (-0x80000000, 0x7FFFFFFF)


class _Writer:
    """Lua's ``File:writeObject`` over a binary sink (see :class:`_AsciiWriter` for the text form)."""

    def __init__(self, f: BinaryIO, long_size: int):
        if long_size not in (4, 8):
            raise ValueError(f"long_size must be 4 or 8, not {long_size}")
        self.f = f
        self.long = {4: "<i", 8: "<q"}[long_size]
        self.long_size = long_size
        self.index: dict[int, int] = {}  # id(object) -> object index
        self.keep: list[Any] = []  # keeps objects alive so ids stay unique while writing
        self.storages: dict[tuple, int] = {}  # (data_ptr, dtype, nbytes) -> index
        self.counter = 0

    # -- scalars and arrays (DiskFile's writeInt / writeLong / writeDouble / writeChar) -------------
    def int(self, v: int) -> None:
        self.f.write(struct.pack("<i", v))

    def longs(self, vs: Iterable[int]) -> None:
        vs = list(vs)
        self.check_longs(vs, "a tensor size, stride or offset, or a storage size")
        self.f.write(struct.pack(f"<{len(vs)}{self.long[1]}", *vs))

    def double(self, v: float) -> None:
        self.f.write(struct.pack("<d", v))

    def chars(self, b: bytes) -> None:
        self.f.write(b)

    def data(self, flat: torch.Tensor) -> None:
        """The elements of a storage (``flat``: a 1-D CPU tensor over all of them)."""
        if self.long_size == 4 and flat.dtype == torch.int64:
            self.check_longs(flat, f"a {_DTYPE_STEM[flat.dtype]}Storage")
            self.f.write(flat.numpy().astype("<i4").tobytes())
        else:
            self.f.write(memoryview(flat.numpy()).cast("B"))

    def check_longs(self, values: Any, what: str) -> None:
        if self.long_size != 4 or not len(values):
            return
        lo, hi = ((int(values.min()), int(values.max())) if isinstance(values, torch.Tensor)
                  else (min(values), max(values)))
        if lo < _INT32_RANGE[0] or hi > _INT32_RANGE[1]:
            bad = lo if lo < _INT32_RANGE[0] else hi
            raise T7WriteError(f"cannot write {what} holding {bad} with 4-byte longs (long_size=4 keeps "
                               f"-2^31..2^31-1); save with the default long_size=8")

    def string(self, b: bytes) -> None:
        self.int(len(b))
        self.chars(b)

    # -- objects -----------------------------------------------------------------------------------
    def next_index(self) -> int:
        self.counter += 1
        return self.counter

    def new_index(self, obj: Any) -> tuple[int, bool]:
        """(index, already written) for a reference-type object."""
        key = id(obj)
        if key in self.index:
            return self.index[key], True
        idx = self.next_index()
        self.index[key] = idx
        self.keep.append(obj)
        return idx, False

    def header(self, idx: int, typename: str, version: int) -> None:
        """Type code, index, "V <version>" and class name of a torch object."""
        self.int(TYPE_TORCH)
        self.int(idx)
        self.string(f"V {version}".encode())
        self.string(typename.encode())

    def value(self, x: Any) -> None:
        if x is None:
            self.int(TYPE_NIL)
        elif isinstance(x, (bool, np.bool_)):
            self.int(TYPE_BOOLEAN)
            self.int(1 if x else 0)
        elif isinstance(x, (int, float, np.integer, np.floating)):
            self.int(TYPE_NUMBER)
            self.double(_exact_double(x))
        elif isinstance(x, str):
            self.int(TYPE_STRING)
            self.string(x.encode("utf-8"))
        elif isinstance(x, (bytes, bytearray)):
            self.int(TYPE_STRING)
            self.string(bytes(x))
        elif isinstance(x, (torch.Tensor, _Typed, np.ndarray)):
            self.tensor(x)
        elif isinstance(x, Storage):
            self.storage(x.tensor, x.typename, x)
        elif isinstance(x, _TDS_TYPES):
            self.tds(x)
        elif isinstance(x, TorchObject):
            idx, done = self.new_index(x)
            if done:
                self.int(TYPE_TORCH)
                self.int(idx)
            else:
                self.header(idx, x.typename, x.version)
                self.value(x.fields)
        elif isinstance(x, LuaFunction):
            idx, done = self.new_index(x)
            self.int(x.type_code)
            if x.type_code != TYPE_FUNCTION:
                self.int(idx)
            if not done or x.type_code == TYPE_FUNCTION:
                self.string(x.bytecode)
                self.value(x.upvalues)
        elif isinstance(x, (dict, list, tuple)):
            idx, done = self.new_index(x)
            self.int(TYPE_TABLE)
            self.int(idx)
            if done:
                return
            items = (x.items() if isinstance(x, dict) else ((i + 1, v) for i, v in enumerate(x)))
            items = [(k, v) for k, v in items if v is not None]
            self.int(len(items))
            in_list = not isinstance(x, dict)
            for k, v in items:
                if isinstance(k, BoolKey):
                    k = k.value
                elif isinstance(k, IdKey):
                    k = k.obj
                _check_key(k, "a Lua table")
                self.entry(k, v, k - 1 if in_list else k, in_list)
        else:
            raise TypeError(f"cannot write a {type(x).__name__} to a .t7 file")

    def entry(self, key: Any, value: Any, where: Any, in_list: bool = False) -> None:
        """One table entry, key then value; an integer a double cannot hold in either says where it is (``where``:
        the key, or the 0-based index with ``in_list``)."""
        try:
            self.value(key)
        except _InexactNumber as err:
            err.is_key = True
            raise
        try:
            self.value(value)
        except _InexactNumber as err:
            raise err.within(where, in_list)

    def tds(self, x: Any) -> None:
        """tds.Hash / tds.Vec / tds.AtomicCounter in the layout of their ``__write`` (torch/tds)."""
        idx, done = self.new_index(x)
        if done:
            self.int(TYPE_TORCH)
            self.int(idx)
            return
        self.header(idx, x.typename, x.version)
        if isinstance(x, TdsAtomicCounter):
            self.longs([x.value])
            return
        if isinstance(x, TdsVec):
            self.longs([len(x)])
            for i, v in enumerate(x):
                try:
                    self.value(_tds_element(v, x.typename))
                except _InexactNumber as err:
                    raise err.within(i, in_list=True)
            return
        items = [(k, v) for k, v in x.items() if v is not None]
        self.longs([len(items)])
        for k, v in items:
            if isinstance(k, bool) or not isinstance(k, (str, bytes, int, float, np.integer, np.floating)):
                raise T7WriteError(f"a {x.typename} key must be a number or a string, not {type(k).__name__}")
            _check_key(k, f"a {x.typename}")
            self.entry(k, _tds_element(v, x.typename), k)

    def tensor(self, x: Any) -> None:
        typename = None
        if isinstance(x, _Typed):
            x, typename = x.tensor, x.typename
        elif isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        idx, done = self.new_index(x)
        if done:
            self.int(TYPE_TORCH)
            self.int(idx)
            return
        t = _writable(x)
        typename = typename or getattr(x, "_t7_typename", None) or f"torch.{_DTYPE_STEM[t.dtype]}Tensor"
        self.header(idx, typename, 1)
        storage_name = typename[:-len("Tensor")] + "Storage"
        if t.numel() == 0:
            # Torch7 has no 0-sized dimensions: an empty tensor has nDimension 0. Like a Lua
            # torch.Tensor() it has no storage, unless it views a non-empty one (which is kept).
            self.int(0)
            has_storage = t.untyped_storage().nbytes() > 0
            self.longs([t.storage_offset() + 1 if has_storage else 1])
            if has_storage:
                self.storage(t, storage_name, None)
            else:
                self.int(TYPE_NIL)
            return
        if t.dim() == 0:  # a PyTorch scalar: Torch7 has no 0-dim tensors
            t = t.reshape(1)
        self.int(t.dim())
        self.longs(t.shape)
        self.longs(t.stride())
        self.longs([t.storage_offset() + 1])
        self.storage(t, storage_name, None)

    def storage(self, t: torch.Tensor, typename: str, storage_obj: Storage | None) -> None:
        """A storage object; the storages of tensors are shared by memory, Storage objects by identity."""
        if storage_obj is not None and id(storage_obj) in self.index:
            self.int(TYPE_TORCH)
            self.int(self.index[id(storage_obj)])
            return
        t = _writable(t)
        untyped = t.untyped_storage()
        n = untyped.nbytes() // t.element_size()
        # An empty storage has no memory to share: it is never merged with another one.
        key = (untyped.data_ptr(), t.dtype, n) if n else None
        if key is not None and key in self.storages:
            self.int(TYPE_TORCH)
            self.int(self.storages[key])
            if storage_obj is not None:
                self.index[id(storage_obj)] = self.storages[key]
                self.keep.append(storage_obj)
            return
        idx = self.next_index()
        if key is not None:
            self.storages[key] = idx
        if storage_obj is not None:
            self.index[id(storage_obj)] = idx
            self.keep.append(storage_obj)
        self.keep.append(untyped)
        self.header(idx, typename, 1)
        self.longs([n])
        if n:
            self.data(torch.empty(0, dtype=t.dtype).set_(untyped, 0, (n,), (1,)))


def _fmt_c(spec: str, v: float) -> str:
    """C ``printf`` of a double: NaN keeps its sign ("-nan"), as glibc prints it."""
    if v != v:
        return "-nan" if math.copysign(1.0, v) < 0 else "nan"
    return spec % v


# Element formats of DiskFile's ASCII mode (Float and Half as %.9g of the float value).
_ASCII_FORMAT = {torch.int16: "%d", torch.int32: "%d", torch.int64: "%d", torch.float32: "%.9g",
                 torch.float16: "%.9g", torch.float64: "%.17g"}


class _AsciiWriter(_Writer):
    """DiskFile's ASCII mode (``torch.save(path, x, 'ascii')``): every write call prints its values
    separated by spaces and ends with a newline; Char/Byte data and strings are raw bytes."""

    def __init__(self, f: BinaryIO):
        super().__init__(f, 8)

    def _line(self, text: str) -> None:
        self.f.write(text.encode("ascii") + b"\n")

    def int(self, v: int) -> None:
        self._line(str(int(v)))

    def longs(self, vs: Iterable[int]) -> None:
        vs = [str(int(v)) for v in vs]
        if vs:
            self._line(" ".join(vs))

    def double(self, v: float) -> None:
        self._line(_fmt_c("%.17g", v))

    def chars(self, b: bytes) -> None:
        if b:
            self.f.write(b + b"\n")

    def data(self, flat: torch.Tensor) -> None:
        if flat.dtype in (torch.uint8, torch.int8):
            self.chars(flat.numpy().tobytes())
            return
        spec = _ASCII_FORMAT[flat.dtype]
        values = flat.tolist()
        if flat.dtype.is_floating_point:
            self._line(" ".join(_fmt_c(spec, v) for v in values))
        else:
            self._line(" ".join(map(str, values)))


_EXACT_INT = 2 ** 53  # every integer up to this magnitude is a double


def _exact_double(x: int | float | np.integer | np.floating) -> float:
    """``float(x)``; an integer a double cannot hold exactly (beyond +-2^53, e.g. 2^53 + 1, or beyond the
    double range) raises :class:`_InexactNumber` instead of being rounded."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool) and abs(int(x)) > _EXACT_INT:
        try:
            if int(float(x)) == int(x):
                return float(x)
        except OverflowError:
            pass
        raise _InexactNumber(int(x))
    return float(x)


def _check_key(k: Any, where: str) -> None:
    if k is None:
        raise T7WriteError(f"a key of {where} cannot be None (nil)")
    if isinstance(k, (float, np.floating)) and k != k:
        raise T7WriteError(f"a key of {where} is NaN: Lua tables cannot hold NaN keys (torch.load would fail)")


def _tds_element(v: Any, where: str) -> Any:
    """A value a tds container can hold (tds refuses Lua tables: use TdsHash / TdsVec for nesting)."""
    if isinstance(v, (dict, list, tuple, TorchObject, LuaFunction)) and not isinstance(v, _TDS_TYPES):
        raise T7WriteError(f"a {where} cannot hold a {type(v).__name__} (tds holds numbers, strings, booleans, "
                           f"tensors and tds containers: nest TdsHash / TdsVec instead)")
    return v


def _writable(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor of a dtype Torch7 knows (bool -> Byte, bfloat16 -> Float)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    elif t.dtype == torch.bfloat16:
        t = t.float()
    elif t.dtype not in _DTYPE_STEM:
        raise TypeError(f"Torch7 has no tensor type for {t.dtype}")
    return t


def _write(f: BinaryIO, obj: Any, long_size: int, ascii: bool) -> None:
    try:
        _deeply((_AsciiWriter(f) if ascii else _Writer(f, long_size)).value, obj)
    except _InexactNumber as err:
        where = f"at {''.join(err.path)} of the saved object" if err.path else "in the saved object"
        text = str(err.value)
        text = text if len(text) <= 30 else f"{text[:12]}... ({len(text.lstrip('-'))} digits)"
        what = "table key" if err.is_key else "integer"
        raise T7WriteError(f"cannot write the {what} {text} {where}: a Lua number is a double, which "
                           f"holds integers exactly only up to +-2^53 ({_EXACT_INT}); store it as a string or "
                           f"in a torch.LongTensor") from None


def save(path: str | os.PathLike, obj: Any, *, long_size: int = 8, ascii: bool = False) -> None:
    """Write ``obj`` in Lua's ``torch.save`` format, atomically (temp file + rename).

    Binary by default (``long_size=4``: Lua's ``'b32'`` layout); ``ascii=True`` writes the text form of
    ``torch.save(path, x, 'ascii')``. Everything :func:`load` returns can be written back. Python lists
    and tuples become Lua lists, dicts become tables (``None`` values are dropped, as Lua cannot store
    nil), tensors of the same storage are written with one shared storage. Values Lua cannot read back
    (a NaN table key, a long beyond int32 with ``long_size=4``, an integer a double cannot hold exactly,
    such as 2^53 + 1) raise :class:`T7WriteError` instead of being written inexactly.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(raw: BinaryIO) -> None:
        f = io.BufferedWriter(raw, buffer_size=1 << 20)
        _write(f, obj, long_size, ascii)
        f.flush()
        f.detach()  # leave ``raw`` open for atomic_write's fsync

    fileio.atomic_write(path, write)


def dumps(obj: Any, *, long_size: int = 8, ascii: bool = False) -> bytes:
    """The bytes :func:`save` would write for ``obj``."""
    buf = io.BytesIO()
    _write(buf, obj, long_size, ascii)
    return buf.getvalue()
