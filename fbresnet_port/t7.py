"""Read and write Torch7 ``.t7`` files (Lua ``torch.save`` / ``torch.load``).

Port of the serialiser in torch7's ``File.lua`` with the tensor and storage layouts of
``generic/Tensor.c`` and ``generic/Storage.c``. Both the binary format (checkpoints, pretrained
models) and the ASCII format (``torch.save(f, x, 'ascii')``, e.g. the ``cifar-10-torch`` batches)
are read; :func:`save` writes the binary format that Lua ``torch.load`` reads back.

Value mapping (Lua -> Python)::

    nil                  None
    number               int when integral (and not -0.0), else float
    string               str when the bytes are valid UTF-8, else bytes
    boolean              bool
    table, keys 1..n     LuaList (a list)
    any other table      LuaTable (a dict; boolean keys as BoolKey, table keys as IdKey)
    torch.*Tensor        torch.Tensor (CPU; views share memory as in Lua; Cuda names kept, see typename_of)
    torch.*Storage       Storage
    other torch classes  TorchObject (nn modules, torch.class objects)
    function             LuaFunction (opaque; never executed)

Nothing from a file is ever executed, and a corrupt file raises :class:`T7FormatError` naming the
file, the byte offset and what was expected, before any allocation larger than the file itself.
"""
from __future__ import annotations

import functools
import io
import math
import mmap
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterable

import numpy as np
import torch

__all__ = [
    "load", "save", "T7FormatError", "LuaTable", "LuaList", "TorchObject", "Storage",
    "LuaFunction", "BoolKey", "IdKey", "as_typename", "typename_of",
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

    def fail(self, what: str, offset: int | None = None) -> T7FormatError:
        return T7FormatError(f"{self.name}: byte {self.pos if offset is None else offset}: {_describe(what)}")

    def remaining(self) -> int:
        return self.size - self.pos


class _BinarySource(_Source):
    """Little-endian binary reads from a buffer (the mapped file), with bounds checks."""

    def __init__(self, buf, name: str, long_size: int):
        super().__init__(buf, name, long_size)
        self.buf = buf
        self._long = {4: "<i", 8: "<q"}[long_size]

    def _need(self, n: int, what: str) -> int:
        pos = self.pos
        if pos + n > self.size:
            raise self.fail(f"file ends after {self.size - pos} of {n} bytes while reading {_describe(what)}")
        self.pos = pos + n
        return pos

    def int(self, what: str = "an int32") -> int:
        pos = self.pos
        if pos + 4 > self.size:
            self._need(4, what)  # raises with the message
        self.pos = pos + 4
        return _INT.unpack_from(self.buf, pos)[0]

    def long(self, what: str = "a long") -> int:
        return struct.unpack_from(self._long, self.buf, self._need(self.long_size, what))[0]

    def longs(self, n: int, what: str) -> list[int]:
        pos = self._need(n * self.long_size, what)
        return list(struct.unpack_from(f"<{n}{self._long[1]}", self.buf, pos))

    def double(self) -> float:
        return _DOUBLE.unpack_from(self.buf, self._need(8, "a number (float64)"))[0]

    def raw(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise self.fail(f"{_describe(what)} of {n} bytes runs past the end of the file ({self.remaining()} bytes left)")
        pos = self._need(n, what)
        return bytes(self.buf[pos:pos + n])

    def elements(self, dtype: torch.dtype, n: int, what: str) -> torch.Tensor:
        npdtype = np.dtype(_NP_DTYPE[dtype]).newbyteorder("<")
        if dtype == torch.int64 and self.long_size == 4:
            npdtype = np.dtype("<i4")
        nbytes = n * npdtype.itemsize
        if nbytes > self.remaining():
            raise self.fail(f"{_describe(what)} of {n} elements ({nbytes} bytes) runs past the end of the file "
                            f"({self.remaining()} bytes left)")
        pos = self._need(nbytes, what)
        arr = np.frombuffer(self.buf, dtype=npdtype, count=n, offset=pos)
        return torch.from_numpy(arr.astype(_NP_DTYPE[dtype], copy=True))  # owned, aligned memory


_INT = struct.Struct("<i")
_DOUBLE = struct.Struct("<d")


class _AsciiSource(_Source):
    """Reads the text form of DiskFile's ASCII mode (scalars on lines, raw bytes for chars)."""

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
            if end == pos:
                raise self.fail(f"file ends while reading {_describe(what)}", pos)
            out.append(data[pos:end])
            pos = end
        self.pos = pos
        self._spacing()
        return out

    def _ints(self, n: int, what: str) -> list[int]:
        try:
            return [int(t) for t in self._tokens(n, what)]
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
        if n > self.remaining():
            raise self.fail(f"{_describe(what)} of {n} bytes runs past the end of the file ({self.remaining()} bytes left)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        if n:
            self._spacing()
        return out

    def elements(self, dtype: torch.dtype, n: int, what: str) -> torch.Tensor:
        if dtype in (torch.uint8, torch.int8):  # Byte/Char data are raw bytes in ASCII mode
            return torch.from_numpy(np.frombuffer(self.raw(n, what), dtype=_NP_DTYPE[dtype]).copy())
        if n > self.remaining():
            raise self.fail(f"{_describe(what)} of {n} elements cannot fit in the {self.remaining()} bytes left")
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
        if n < 0 or n * 8 > src.remaining():
            raise src.fail(f"table size {n} is impossible with {src.remaining()} bytes left")
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
        obj = TorchObject(name, LuaTable(), version)
        self.memo[index] = obj
        fields = self.value(("the fields of", name))
        if isinstance(fields, LuaList):  # a class whose fields happen to be 1..n
            fields = LuaTable((i + 1, v) for i, v in enumerate(fields))
        if fields is not None and not isinstance(fields, dict):
            raise src.fail(f"the fields of {name} are a {type(fields).__name__}, expected a table")
        obj.fields = fields if fields is not None else LuaTable()
        return obj

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
        if ndim < 0 or ndim > _MAX_NDIM or ndim * 2 * (src.long_size if isinstance(src, _BinarySource) else 1) > src.remaining():
            raise src.fail(f"impossible number of dimensions {ndim} for a {name}", start)
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
    if isinstance(key, (LuaTable, LuaList, TorchObject, LuaFunction, Storage, torch.Tensor)):
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


def _detect_ascii(head: bytes) -> bool:
    return bool(head) and head[:1] in b"0123456789-"


def load(path: str | os.PathLike, *, long_size: int | None = None) -> Any:
    """Read a Lua ``torch.save`` file, binary or ASCII (port of ``torch.load``).

    ``long_size`` is the byte width of C ``long`` in the file (8 on Linux/macOS, 4 on Windows or
    32-bit builds, Lua ``torch.load(path, 'b32')``). By default 8 is tried first, then 4.
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


def _load_buffer(buf, name: str, long_size: int | None) -> Any:
    size = len(buf)
    if not size:
        raise T7FormatError(f"{name}: byte 0: the file is empty, expected a Torch .t7 object")
    ascii_mode = _detect_ascii(bytes(buf[:4]))
    data = bytes(buf) if ascii_mode else b""
    first_error: T7FormatError | None = None
    for ls in ([long_size] if long_size else [8, 4]):
        if ls not in (4, 8):
            raise ValueError(f"long_size must be 4 or 8, not {ls}")
        src = _AsciiSource(data, name, ls) if ascii_mode else _BinarySource(buf, name, ls)
        try:
            obj = _Reader(src).read()
            trailing = size - src.tell()
            if trailing and not (ascii_mode and not data[src.tell():].strip()):
                raise src.fail(f"{trailing} unexpected bytes after the end of the object")
            return obj
        except T7FormatError as e:
            first_error = first_error or e
        except RecursionError:
            first_error = first_error or T7FormatError(f"{name}: objects nested too deeply")
    assert first_error is not None
    raise first_error


# ----------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------
class _Writer:
    def __init__(self, f: BinaryIO, long_size: int):
        self.f = f
        self.long = {4: "<i", 8: "<q"}[long_size]
        self.long_size = long_size
        self.index: dict[int, int] = {}  # id(object) -> object index
        self.keep: list[Any] = []  # keeps objects alive so ids stay unique while writing
        self.storages: dict[tuple, int] = {}  # (data_ptr, dtype, nbytes) -> index
        self.counter = 0

    def next_index(self) -> int:
        self.counter += 1
        return self.counter

    def int(self, v: int) -> None:
        self.f.write(struct.pack("<i", v))

    def longs(self, vs: Iterable[int]) -> None:
        vs = list(vs)
        self.f.write(struct.pack(f"<{len(vs)}{self.long[1]}", *vs))

    def string(self, b: bytes) -> None:
        self.int(len(b))
        self.f.write(b)

    def new_index(self, obj: Any) -> tuple[int, bool]:
        """(index, already written) for a reference-type object."""
        key = id(obj)
        if key in self.index:
            return self.index[key], True
        idx = self.next_index()
        self.index[key] = idx
        self.keep.append(obj)
        return idx, False

    def value(self, x: Any) -> None:
        if x is None:
            self.int(TYPE_NIL)
        elif isinstance(x, (bool, np.bool_)):
            self.int(TYPE_BOOLEAN)
            self.int(1 if x else 0)
        elif isinstance(x, (int, float, np.integer, np.floating)):
            self.int(TYPE_NUMBER)
            self.f.write(struct.pack("<d", float(x)))
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
        elif isinstance(x, TorchObject):
            idx, done = self.new_index(x)
            self.int(TYPE_TORCH)
            self.int(idx)
            if not done:
                self.string(f"V {x.version}".encode())
                self.string(x.typename.encode())
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
            for k, v in items:
                if isinstance(k, BoolKey):
                    k = k.value
                elif isinstance(k, IdKey):
                    k = k.obj
                if k is None:
                    raise ValueError("a Lua table key cannot be None")
                self.value(k)
                self.value(v)
        else:
            raise TypeError(f"cannot write a {type(x).__name__} to a .t7 file")

    def tensor(self, x: Any) -> None:
        typename = None
        if isinstance(x, _Typed):
            x, typename = x.tensor, x.typename
        elif isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        key_obj = x
        idx, done = self.new_index(key_obj)
        self.int(TYPE_TORCH)
        self.int(idx)
        if done:
            return
        t = _writable(x)
        typename = typename or getattr(x, "_t7_typename", None) or f"torch.{_DTYPE_STEM[t.dtype]}Tensor"
        self.string(b"V 1")
        self.string(typename.encode())
        storage_name = typename[:-len("Tensor")] + "Storage"
        if t.numel() == 0 and t.dim() <= 1:  # Torch7 has no 0-dim tensors: an empty tensor
            self.int(0)
            self.longs([t.storage_offset() + 1])
            if t.untyped_storage().nbytes():
                self.storage(t, storage_name, None)
            else:
                self.int(TYPE_NIL)
            return
        if t.dim() == 0:
            t = t.reshape(1)
        self.int(t.dim())
        self.longs(t.shape)
        self.longs(t.stride())
        self.longs([t.storage_offset() + 1])
        self.storage(t, storage_name, None)

    def storage(self, t: torch.Tensor, typename: str, storage_obj: Storage | None) -> None:
        t = _writable(t)
        untyped = t.untyped_storage()
        n = untyped.nbytes() // t.element_size()
        key = (untyped.data_ptr(), t.dtype, n) if n else ("empty", id(storage_obj or t))
        if storage_obj is not None and id(storage_obj) in self.index:
            self.int(TYPE_TORCH)
            self.int(self.index[id(storage_obj)])
            return
        if key in self.storages:
            self.int(TYPE_TORCH)
            self.int(self.storages[key])
            if storage_obj is not None:
                self.index[id(storage_obj)] = self.storages[key]
                self.keep.append(storage_obj)
            return
        idx = self.next_index()
        self.storages[key] = idx
        if storage_obj is not None:
            self.index[id(storage_obj)] = idx
            self.keep.append(storage_obj)
        self.keep.append(untyped)
        self.int(TYPE_TORCH)
        self.int(idx)
        self.string(b"V 1")
        self.string(typename.encode())
        self.longs([n])
        if n:
            flat = torch.empty(0, dtype=t.dtype).set_(untyped, 0, (n,), (1,))
            if self.long_size == 4 and t.dtype == torch.int64:
                self.f.write(flat.numpy().astype("<i4").tobytes())
            else:
                self.f.write(memoryview(flat.numpy()).cast("B"))


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


def save(path: str | os.PathLike, obj: Any, *, long_size: int = 8) -> None:
    """Write ``obj`` in Lua's binary ``torch.save`` format, atomically (temp file + rename).

    Everything :func:`load` returns can be written back. Python lists and tuples become Lua lists,
    dicts become tables (``None`` values are dropped, as Lua cannot store nil), tensors of the same
    storage are written with one shared storage.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            f = io.BufferedWriter(raw, buffer_size=1 << 20)
            _Writer(f, long_size).value(obj)
            f.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def dumps(obj: Any, *, long_size: int = 8) -> bytes:
    """The bytes :func:`save` would write for ``obj``."""
    buf = io.BytesIO()
    _Writer(buf, long_size).value(obj)
    return buf.getvalue()
