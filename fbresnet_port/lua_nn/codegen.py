"""``--format python``: a converted Lua model as a standalone PyTorch source file plus its weights.

:func:`generate_python` walks a module tree made by :func:`from_lua` and writes

* one ``nn.Module`` class whose ``__init__`` builds every layer (standard ``torch.nn`` layers where the Lua
  class has an exact equivalent, small classes of the file's own where Lua's semantics differ) in Lua's
  ``parameters()`` order, each with a comment naming its Lua path and class, and whose ``forward`` is
  straight-line code following the Lua tree (containers become calls and expressions, nngraph nodes one
  line each);
* the definitions of those small classes and functions, copied from :mod:`fbresnet_port.lua_nn.standalone`,
  the same code the converted modules of this package run (one source of Lua's semantics);
* a ``load(path=None)`` function, and the state dict whose keys follow the attribute names.

The generated file imports only torch and the standard library.

How modules take part (hooks of :class:`~fbresnet_port.lua_nn._base.LuaModule`, defaults there):

* ``python_children()``: ``[(lua_field_path, child), ...]`` for a container written inline (Sequential,
  ConcatTable, gModule, ...); ``[]`` for a leaf (a layer declared as one attribute).
* ``python_ctor(g)``: a leaf's constructor expression, e.g. ``'nn.Conv2d(3, 16, (3, 3), padding=(1, 1))'``
  (``g.use(cls)`` names a standalone class/function and includes its definition). Raise
  :class:`NoPythonCode` if the module has no standalone code.
* ``python_forward(g, x)``: emit the forward lines computing the module on the value ``x``; return the value of
  its output. The default (leaves) is ``g.call(self, x)``: ``y = self.<attr>(x)``.
"""
from __future__ import annotations

import ast
import functools
import importlib
import keyword
import os
import pkgutil
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import torch
from torch import nn

from ._base import LuaModelError, LuaModule, lua_str

LINE_LENGTH = 120
_STANDALONE_PACKAGE = __package__ + ".standalone"


class ClassNameTaken(LuaModelError):
    """The class name asked for is the name of a definition the generated file needs."""


class NoPythonCode(Exception):
    """Raised by ``python_ctor``/``python_forward`` of a module that has no standalone code."""


# ----------------------------------------------------------------------------------------------
# Values flowing through forward
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Var:
    """A local variable of the generated ``forward``. ``owned``: the consumer may rebind the name (no other
    consumer reads it later)."""

    name: str
    owned: bool = False


@dataclass(frozen=True)
class ListVal:
    """A Lua table whose elements are known at generation time (ConcatTable outputs, graph inputs)."""

    items: tuple["Value", ...]


Value = Union[Var, ListVal]


def shared(value: Value) -> Value:
    """``value`` as read by one of several consumers: nobody may rebind it."""
    if isinstance(value, Var):
        return Var(value.name, False)
    return ListVal(tuple(shared(v) for v in value.items))


# ----------------------------------------------------------------------------------------------
# The standalone definitions (fbresnet_port/lua_nn/standalone/*.py)
# ----------------------------------------------------------------------------------------------

@dataclass
class _Definition:
    name: str
    module: str
    order: tuple[int, int]  # (file index, line): source order
    source: str
    uses: set[str] = field(default_factory=set)


@dataclass
class _Library:
    definitions: dict[str, _Definition]
    imports: dict[str, list[str]]  # module -> its non-relative import statements


def _names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


@functools.lru_cache(maxsize=1)
def standalone_library() -> _Library:
    """Every top-level definition of the standalone modules, with the top-level names it uses."""
    package = importlib.import_module(_STANDALONE_PACKAGE)
    definitions: dict[str, _Definition] = {}
    imports: dict[str, list[str]] = {}
    modules = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
    for file_index, short in enumerate(modules):
        name = f"{_STANDALONE_PACKAGE}.{short}"
        path = importlib.import_module(name).__file__
        with open(path, encoding="utf-8") as f:
            text = f.read()
        tree = ast.parse(text)
        lines = text.splitlines()
        imports[name] = []
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if isinstance(node, ast.ImportFrom) and node.level:
                    continue  # another standalone module: its definitions are included by name
                imports[name].append(ast.get_source_segment(text, node))
                continue
            targets: list[str] = []
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                targets = [node.name]
            elif isinstance(node, ast.Assign):
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                targets = [node.target.id]
            if not targets:
                continue
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            source = "\n".join(lines[first - 1:node.end_lineno])
            for target in targets:
                if target in definitions:
                    raise RuntimeError(f"{target} is defined in both {definitions[target].module} and {name}: "
                                       f"standalone names must be unique (they share one generated file)")
                definitions[target] = _Definition(target, name, (file_index, first), source,
                                                  _names_in(node) - {target})
    for d in definitions.values():
        d.uses &= definitions.keys()
    return _Library(definitions, imports)


def _closure(names: Iterable[str], library: _Library) -> list[_Definition]:
    """The definitions of ``names`` and of everything they use, dependencies first, else in source order."""
    out: list[_Definition] = []
    done: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in done or name in stack:
            return
        d = library.definitions[name]
        for dep in sorted(d.uses, key=lambda n: library.definitions[n].order):
            visit(dep, stack + (name,))
        done.add(name)
        out.append(d)

    for name in sorted(set(names), key=lambda n: library.definitions[n].order):
        visit(name, ())
    return out


def _import_lines(modules: Iterable[str], library: _Library) -> list[str]:
    statements = {"import torch", "from torch import nn"}
    for m in modules:
        statements.update(s for s in library.imports[m] if s != "from __future__ import annotations")
    def order(s: str) -> tuple[bool, str]:  # isort's: `import x` before `from x import y`, then by module
        return s.startswith("from "), s.split()[1]
    stdlib = sorted((s for s in statements if not re.match(r"(import|from) torch\b", s)), key=order)
    torch_lines = sorted((s for s in statements if re.match(r"(import|from) torch\b", s)), key=order)
    return ["from __future__ import annotations", ""] + stdlib + ([""] if stdlib else []) + torch_lines


# ----------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------

def py(value: Any) -> str:
    """A Python literal for a constructor argument (numbers, strings, booleans, None, tuples/lists of them)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if value != value:
            return "math.nan"
        if value in (float("inf"), float("-inf")):
            return "math.inf" if value > 0 else "-math.inf"
        return repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(py(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(py(v) for v in value) + "]"
    if isinstance(value, torch.dtype):
        return str(value)
    raise TypeError(f"no Python literal for {type(value).__name__}")


def call_expr(func: str, *args: Any, **kwargs: Any) -> str:
    """``func(arg, ..., key=value)`` with :func:`py` literals; arguments that are :class:`Code` are written as
    they are."""
    parts = [a.text if isinstance(a, Code) else py(a) for a in args]
    parts += [f"{k}={v.text if isinstance(v, Code) else py(v)}" for k, v in kwargs.items()]
    return f"{func}({', '.join(parts)})"


@dataclass(frozen=True)
class Code:
    """Source text passed through :func:`call_expr` unquoted (e.g. a nested constructor)."""

    text: str


def wrap(line: str, indent: str, width: int = LINE_LENGTH) -> list[str]:
    """``line`` (one statement at ``indent``) split after commas inside its outermost brackets when longer
    than ``width``: hanging indent of four spaces, as PEP 8."""
    if len(indent) + len(line) <= width:
        return [indent + line]
    depth, start = 0, None
    for i, ch in enumerate(line):
        if ch in "([{":
            if depth == 0 and start is None:
                start = i
            depth += 1
        elif ch in ")]}":
            depth -= 1
    if start is None:
        return [indent + line]
    head, body = line[:start + 1], line[start + 1:]
    # split body at top-level commas, up to the matching closing bracket
    depth, parts, current, end = 0, [], "", len(body)
    for i, ch in enumerate(body):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                end = i
                break
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    tail = body[end:]
    inner = indent + "    "
    out = [indent + head]
    row = ""
    for j, part in enumerate(p for p in parts if p):
        piece = part + ("," if j < len([p for p in parts if p]) - 1 else "")
        if row and len(inner) + len(row) + 1 + len(piece) > width:
            out.append(inner + row)
            row = piece
        else:
            row = f"{row} {piece}" if row else piece
    out.append(inner + row)
    out.append(indent + tail)
    return out


def comment_lines(text: str, indent: str, width: int = LINE_LENGTH) -> list[str]:
    """``# text`` at ``indent``, continued on ``#   `` lines when longer than ``width`` (split at spaces)."""
    return textwrap.wrap(text, width - len(indent), initial_indent="# ", subsequent_indent="#   ",
                         break_long_words=True, break_on_hyphens=False) and [
        indent + ln for ln in textwrap.wrap(text, width - len(indent), initial_indent="# ",
                                             subsequent_indent="#   ", break_on_hyphens=False)]


def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
    s = re.sub(r"\W+", "_", s).strip("_")
    return s or "m"


_SHORT = {"SpatialConvolution": "conv", "SpatialConvolutionMM": "conv", "SpatialDilatedConvolution": "conv",
          "SpatialFullConvolution": "deconv", "VolumetricConvolution": "conv3d", "Linear": "fc",
          "LinearNoBias": "fc", "SpatialBatchNormalization": "bn", "BatchNormalization": "bn",
          "VolumetricBatchNormalization": "bn3d", "SpatialMaxPooling": "maxpool",
          "SpatialAveragePooling": "avgpool", "Dropout": "dropout", "ReLU": "relu", "LookupTable": "embed",
          "InstanceNormalization": "inorm", "gModule": "graph", "Sequential": "seq",
          "TemporalConvolution": "tconv", "TemporalMaxPooling": "tmaxpool", "TemporalSubSampling": "tsub",
          "SpatialConvolutionMap": "convmap", "SpatialSubSampling": "subsample", "VolumetricMaxPooling": "maxpool3d",
          "VolumetricAveragePooling": "avgpool3d", "SpatialReflectionPadding": "reflpad",
          "SpatialReplicationPadding": "replpad", "SpatialZeroPadding": "zeropad", "SpatialUpSamplingNearest": "upsample",
          "SpatialUpSamplingBilinear": "upsample", "SpatialCrossMapLRN": "lrn", "LeakyReLU": "lrelu",
          "ClassNLLCriterion": "nll", "CrossEntropyCriterion": "xent", "MSECriterion": "mse", "AbsCriterion": "l1",
          "BCECriterion": "bce", "SmoothL1Criterion": "smooth_l1", "DistKLDivCriterion": "kldiv",
          "MulConstant": "mul", "AddConstant": "add", "CAddTable": "add", "JoinTable": "join", "Tanh": "tanh",
          "Sigmoid": "sigmoid", "SoftMax": "softmax", "LogSoftMax": "log_softmax", "MaskZero": "mask_zero",
          "PReLU": "prelu", "ReLU6": "relu6", "ELU": "elu", "SoftPlus": "softplus", "HardTanh": "hardtanh",
          "SpatialSubtractiveNormalization": "subnorm", "SpatialDivisiveNormalization": "divnorm",
          "SpatialContrastiveNormalization": "contrastnorm", "SpatialLPPooling": "lppool", "Reshape": "reshape",
          "View": "view", "Normalize": "normalize", "Padding": "pad", "Replicate": "replicate"}


def identifier(text: str, default: str = "m") -> str:
    """A valid, lowercase Python identifier made from ``text``."""
    s = _snake(text) if text else default
    if s[0].isdigit():
        s = f"{default}_{s}"
    return s + "_" if keyword.iskeyword(s) else s


def class_name_from_file(path: str) -> str:
    """``resnet-50.t7`` -> ``Resnet50``; ``model_best.t7`` -> ``ModelBest`` (a valid class name)."""
    stem = re.sub(r"\.(t7|net|th|lua|pt|pth)$", "", path.replace("\\", "/").rsplit("/", 1)[-1])
    words = [w for w in re.split(r"[^0-9A-Za-z]+", stem) if w]
    name = "".join(w[:1].upper() + w[1:] for w in words) or "LuaModel"
    return f"Lua{name}" if name[0].isdigit() else name


def relative_path(path: str) -> str:
    """``model.modules[3].modules[1]`` -> ``modules[3].modules[1]`` (``model`` for the root)."""
    return path[len("model."):] if path.startswith("model.") else path


def index_suffix(path: str) -> str:
    """The numbers of a Lua path: ``model.modules[3].modules[1]`` -> ``3_1``."""
    return "_".join(re.findall(r"\[(\d+)\]", path))


# ----------------------------------------------------------------------------------------------
# The generator
# ----------------------------------------------------------------------------------------------

@dataclass
class _Leaf:
    module: nn.Module
    attr: str
    path: str


class CodeGen:
    """One generation: collects the ``__init__`` declarations, the ``forward`` lines and the standalone names
    used. Module hooks call its methods (see the module docstring)."""

    def __init__(self, root: "CodeGen | None" = None) -> None:
        self.root = root or self
        self.classes: list[str] = []  # (root only) sources of the helper classes made by subclass()
        self._class_names: set[str] = set()
        self.init_lines: list[str] = []
        self.forward_stmts: list[tuple[str, str]] = []  # ('code' | 'comment', text), wrapped when rendered
        self.leaves: dict[int, _Leaf] = {}
        self.paths: dict[int, str] = {}
        self.used: set[str] = set()
        self.unsupported: dict[str, list[str]] = {}
        self._attrs: set[str] = set()
        self._vars: set[str] = set()
        self._indent = "        "

    # --- standalone definitions ------------------------------------------------------------------

    def use(self, obj: Any) -> str:
        """The name of a standalone class/function/constant (``obj`` or its name), whose definition (and what
        it uses) goes into the generated file."""
        name = obj if isinstance(obj, str) else obj.__name__
        library = standalone_library()
        if name not in library.definitions:
            raise RuntimeError(f"{name} is not defined in {_STANDALONE_PACKAGE}")
        self.root.used.add(name)
        return name

    def generate(self, module: nn.Module, path: str, args: Sequence[str]) -> Value:
        """Declare ``module`` (at Lua path ``path``) and emit its forward code on the arguments ``args`` (one: the
        input as it is; several: a table of them); returns the output value (``None`` when a module has no code)."""
        self.declare(module, path)
        for a in args:
            self.reserve(a)
        if self.unsupported:
            return Var("None")
        start: Value = Var(args[0]) if len(args) == 1 else ListVal(tuple(Var(a) for a in args))
        return self.emit(module, start)

    def subclass(self, module: nn.Module, path: str, name_hint: str, args: Sequence[str] = ("input",)) -> "SubModel":
        """Write ``module`` (a subtree) as an ``nn.Module`` class of its own in the generated file (its leaves in
        its ``__init__``, its code in its ``forward``), e.g. the step module an rnn LSTM runs once per time step.
        Returns the class (``sub.class_name``: construct it with ``f"{sub.class_name}()"``; ``sub.state_dict()``:
        its weights, keys relative to an instance)."""
        root = self.root
        base = "".join(w[:1].upper() + w[1:] for w in re.split(r"[^0-9A-Za-z]+", name_hint) if w) or "Sub"
        name, k = base, 2
        while name in root._class_names:
            name, k = f"{base}{k}", k + 1
        root._class_names.add(name)
        sub = CodeGen(root)
        out = sub.generate(module, path, args)
        for cls, paths in sub.unsupported.items():
            self.unsupported.setdefault(cls, []).extend(paths)
        state, ties = _state_dict(sub)
        head = lua_str(module).split("\n", 1)[0].rstrip(" {")
        root.classes.append("\n".join(_class_source(sub, name, f"{relative_path(path)}: {head} (Lua).", args, out,
                                                    ties)))
        return SubModel(name, state)

    # --- __init__ ------------------------------------------------------------------------------

    def _unique_attr(self, base: str) -> str:
        name, k = base, 2
        while name in self._attrs or name in ("forward", "training", "load"):
            name, k = f"{base}_{k}", k + 1
        self._attrs.add(name)
        return name

    def leaf_name(self, module: nn.Module, path: str, hint: str | None = None) -> str:
        """The attribute name of a leaf: ``hint`` (e.g. a graph node's annotation) or a short name of its Lua
        class followed by the numbers of its path (``conv3_1``)."""
        if hint:
            return self._unique_attr(identifier(hint))
        typename = getattr(module, "lua_typename", type(module).__name__)
        short = typename.split(".")[-1]
        base = _SHORT.get(short) or (identifier(short[:-len("Criterion")]) + "_crit" if short.endswith("Criterion")
                                     and len(short) > len("Criterion") else identifier(short))
        suffix = index_suffix(path)
        return self._unique_attr(f"{base}{suffix}" if suffix and not base[-1].isdigit()
                                 else f"{base}_{suffix}" if suffix else base)

    def declare(self, module: nn.Module, path: str, hint: str | None = None) -> None:
        """Declare ``module`` and, for inline containers, its children (depth first: Lua's parameter order)."""
        if id(module) in self.leaves or id(module) in self.paths:
            return
        self.paths[id(module)] = path
        children = python_children(module)
        if children is None:  # a leaf
            self._declare_leaf(module, path, hint)
            return
        for rel, child, child_hint in children:
            self.declare(child, f"{path}.{rel}" if rel else path, child_hint)

    def _declare_leaf(self, module: nn.Module, path: str, hint: str | None) -> None:
        try:
            ctor = python_ctor(module, self)
        except NoPythonCode:
            self.unsupported.setdefault(_typename(module), []).append(path)
            return
        attr = self.leaf_name(module, path, hint)
        self.leaves[id(module)] = _Leaf(module, attr, path)
        head = lua_str(module).split("\n", 1)[0]
        self.init_lines += comment_lines(f"{relative_path(path)}: {head}", self._indent)
        self.init_lines += wrap(f"self.{attr} = {ctor}", self._indent)

    def attr(self, module: nn.Module) -> str:
        """``self.<name>`` of a declared leaf (declared now if it was not: its parameters then come later)."""
        leaf = self.leaves.get(id(module))
        if leaf is None:
            self.declare(module, self.paths.get(id(module), "model"))
            leaf = self.leaves.get(id(module))
            if leaf is None:
                raise NoPythonCode(_typename(module))
        return f"self.{leaf.attr}"

    def ctor(self, module: nn.Module) -> Code:
        """The constructor expression of ``module`` (for wrappers whose constructor takes modules)."""
        return Code(python_ctor(module, self))

    # --- forward -------------------------------------------------------------------------------

    def fresh(self, hint: str = "x") -> str:
        """A new local variable name (``x``, ``x1``, ``x2``, ...)."""
        base = identifier(hint, "x")
        name, k = base, 1
        while name in self._vars or name == "self":
            name, k = f"{base}{k}", k + 1
        self._vars.add(name)
        return name

    def reserve(self, name: str) -> None:
        self._vars.add(name)

    def line(self, code: str) -> None:
        """One statement of ``forward`` (wrapped at 120 columns when written). A compound statement is given as
        several lines, the inner ones indented by four spaces more."""
        self.forward_stmts.append(("code", code))

    def comment(self, text: str) -> None:
        self.forward_stmts.append(("comment", text))

    def forward_lines(self, result: str) -> list[str]:
        """The body of ``forward``: the statements, ``return result``, variables renamed so that a value's name
        is reused once it is dead (``x = self.conv1(x)``), wrapped at 120 columns."""
        stmts = self.forward_stmts + [("code", f"return {result}")]
        stmts = _reuse_names(stmts)
        out: list[str] = []
        for kind, text in stmts:
            if kind == "comment":
                out += comment_lines(text, self._indent)
            else:
                for part in text.split("\n"):
                    stripped = part.lstrip(" ")
                    out += wrap(stripped, self._indent + " " * (len(part) - len(stripped)))
        return out

    def expr(self, value: Value) -> str:
        """The Python expression of a value: a variable name or a list display."""
        if isinstance(value, Var):
            return value.name
        return "[" + ", ".join(self.expr(v) for v in value.items) + "]"

    def assign(self, expr: str, reuse: Value | None = None, hint: str = "x") -> Var:
        """``x.. = expr`` into a new temporary; returns it. Names are reused when the code is written (a name
        whose value is no longer read is taken again), so every value gets its own temporary here; ``reuse`` is
        accepted for readability of callers and ignored."""
        target = self.fresh(hint)
        self.line(f"{target} = {expr}")
        return Var(target, True)

    def call(self, module: nn.Module, x: Value, method: str = "") -> Var:
        """``y = self.<attr>(x)``: the default forward of a leaf."""
        attr = self.attr(module) + (f".{method}" if method else "")
        return self.assign(f"{attr}({self.expr(x)})", x)

    def emit(self, module: nn.Module, x: Value) -> Value:
        """Emit the forward code of ``module`` on ``x`` (a child of a container calls this)."""
        if id(module) not in self.paths:
            raise RuntimeError(f"{_typename(module)} was not declared before its forward code was emitted")
        try:
            return python_forward(module, self, x)
        except NoPythonCode:
            self.unsupported.setdefault(_typename(module), []).append(self.paths[id(module)])
            return Var("None")

    def as_var(self, value: Value, hint: str = "t") -> Var:
        """``value`` in one variable (a known table is assigned to a list variable)."""
        if isinstance(value, Var):
            return value
        return self.assign(self.expr(value), hint=hint)


_TEMP = re.compile(r"(?<![.\w])((?:x|t)\d*)\b")  # the temporaries: x, x1, ... (tensors), t, t1, ... (tables)


def _family(name: str) -> str:
    return name.rstrip("0123456789")


def _reuse_names(stmts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Rename the temporaries (``x``, ``x1``, ...; ``t``, ``t1``, ...) of straight-line code so that each assignment
    takes the lowest name of its family whose value is no longer read (register allocation over single-assignment
    versions). Code with compound statements is left as it is."""
    if any(kind == "code" and ("\n" in text or text.rstrip().endswith(":")) for kind, text in stmts):
        return stmts
    # each assignment `x.. = rhs` defines a new version; the names read refer to the versions current then
    parsed: list[tuple[str, int | None, dict[str, int], str] | None] = []  # (family, defined, reads, rhs)
    current: dict[str, int] = {}
    last_read: dict[int, int] = {}
    for i, (kind, text) in enumerate(stmts):
        if kind != "code":
            parsed.append(None)
            continue
        m = re.match(r"((?:x|t)\d*) = (.*)$", text)
        rhs = m.group(2) if m else text
        reads = {n: current[n] for n in _TEMP.findall(rhs) if n in current}
        for v in reads.values():
            last_read[v] = i
        defined = None
        if m:
            defined = current[m.group(1)] = i + 1  # one version per statement
        parsed.append((_family(m.group(1)) if m else "", defined, reads, rhs))
    name_of: dict[int, str] = {}
    busy: dict[str, int] = {}  # name -> the live version holding it
    out: list[tuple[str, str]] = []
    for i, (kind, text) in enumerate(stmts):
        if parsed[i] is None:
            out.append((kind, text))
            continue
        family, defined, reads, rhs = parsed[i]
        renamed = {n: name_of.get(v, n) for n, v in reads.items()}
        rhs = _TEMP.sub(lambda m: renamed.get(m.group(1), m.group(1)), rhs)
        for v in reads.values():  # values read for the last time free their names
            if last_read[v] == i and busy.get(name_of.get(v, "")) == v:
                del busy[name_of[v]]
        if defined is None:
            out.append((kind, rhs))
            continue
        k = 0
        while (family if k == 0 else f"{family}{k}") in busy:
            k += 1
        target = name_of[defined] = family if k == 0 else f"{family}{k}"
        if defined in last_read:
            busy[target] = defined
        out.append((kind, f"{target} = {rhs}"))
    return out


def _owned_name(value: Value | None) -> str | None:
    if isinstance(value, Var):
        return value.name if value.owned else None
    if isinstance(value, ListVal):
        for v in value.items:
            name = _owned_name(v)
            if name:
                return name
    return None


def _typename(module: nn.Module) -> str:
    return getattr(module, "lua_typename", None) or type(module).__name__


# --- dispatch to the hooks (modules that are not LuaModules have no standalone code) ---------------

def python_children(module: nn.Module) -> list[tuple[str, nn.Module, str | None]] | None:
    """``None`` for a leaf, else ``[(relative Lua path, child, attribute-name hint or None), ...]``."""
    hook = getattr(module, "python_children", None) if isinstance(module, LuaModule) else None
    if hook is None:
        return None
    children = hook()
    if children is None:
        return None
    return [c if len(c) == 3 else (c[0], c[1], None) for c in children]


def standalone_base(cls: type) -> type | None:
    """The first class of ``cls``'s MRO defined in :mod:`fbresnet_port.lua_nn.standalone` (its plain-PyTorch
    semantics), or None."""
    return next((c for c in cls.__mro__ if c.__module__.startswith(_STANDALONE_PACKAGE)), None)


def python_ctor(module: nn.Module, g: CodeGen) -> str:
    """A leaf's constructor expression: its ``python_ctor`` hook, else (modules described by ``lua_params``) its
    standalone base class called with those fields as keywords."""
    if not isinstance(module, LuaModule):
        raise NoPythonCode(_typename(module))
    hook = getattr(module, "python_ctor", None)
    if hook is not None:
        return hook(g)
    base = standalone_base(type(module))
    params = getattr(module, "lua_params", None)
    if base is None or params is None:
        raise NoPythonCode(_typename(module))
    return call_expr(g.use(base), **{name: getattr(module, name) for name, _ in params})


def python_forward(module: nn.Module, g: CodeGen, x: Value) -> Value:
    hook = getattr(module, "python_forward", None) if isinstance(module, LuaModule) else None
    if hook is None:
        return g.call(module, x)
    return hook(g, x)


# ----------------------------------------------------------------------------------------------
# The whole file
# ----------------------------------------------------------------------------------------------

@dataclass
class SubModel:
    """A class made by :meth:`CodeGen.subclass`."""

    class_name: str
    weights: dict[str, torch.Tensor]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.weights)


def _class_source(g: CodeGen, name: str, doc: str, args: Sequence[str], out: Value, ties: list[str]) -> list[str]:
    """The lines of ``class name(nn.Module)`` from a generation: declarations, ties, forward."""
    src = [f"class {name}(nn.Module):"]
    src += wrap(f'"""{doc}"""', "    ") if len(doc) + 10 <= LINE_LENGTH else \
        ['    """'] + ["    " + ln for ln in textwrap.wrap(doc, LINE_LENGTH - 4)] + ['    """']
    src += ["", "    def __init__(self) -> None:", "        super().__init__()"]
    src += g.init_lines
    src += [f"        {t}" for t in ties]
    src += ["", f"    def forward(self, {', '.join(args)}):"]
    src += g.forward_lines(g.expr(out))
    return src


@dataclass
class GeneratedModel:
    source: str                          # model.py
    state_dict: dict[str, torch.Tensor]  # model.pth
    class_name: str


def _state_dict(g: CodeGen) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The weights under the generated attribute names, and the lines tying parameters that Lua shares."""
    state: dict[str, torch.Tensor] = {}
    first: dict[int, str] = {}
    ties: list[str] = []
    for leaf in g.leaves.values():
        module = leaf.module
        hook = getattr(module, "python_state", None)
        local = hook() if callable(hook) else module.state_dict()
        for k, v in local.items():
            state[f"{leaf.attr}.{k}"] = v.detach()
        for k, p in module.named_parameters(remove_duplicate=False):
            key = f"{leaf.attr}.{k}"
            if id(p) in first and first[id(p)] != key:
                owner, _, name = key.rpartition(".")
                ties.append(f"self.{owner}.{name} = self.{first[id(p)]}  # one tensor in Lua (clone('weight', ...))")
            else:
                first.setdefault(id(p), key)
    return state, ties


def generate_python(model: nn.Module, class_name: str = "LuaModel", source_name: str = "") -> GeneratedModel:
    """The standalone source and state dict of ``model`` (a tree made by :func:`from_lua`).

    Raises :class:`LuaModelError` naming every class (and its paths) that has no standalone code, e.g. classes
    converted by a function given to :func:`register`."""
    if not class_name.isidentifier() or keyword.iskeyword(class_name):
        raise LuaModelError(f"--class-name {class_name!r} is not a valid Python class name")
    g = CodeGen()
    root_args = tuple(getattr(model, "python_forward_args", ("input",)))
    out = g.generate(model, "model", root_args)
    if g.unsupported:
        lines = [f"no standalone PyTorch code for {sum(map(len, g.unsupported.values()))} module(s) of "
                 f"{len(g.unsupported)} class(es):"]
        for name, paths in g.unsupported.items():
            shown = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
            lines.append(f"  {name}: {len(paths)} module{'s' if len(paths) > 1 else ''}, at {shown}")
        lines.append("Classes converted by a function given to register() have no standalone code; keep such a "
                     "model in this package's format (the default --format) or --format export.")
        raise LuaModelError("\n".join(lines), dict(g.unsupported))
    state, ties = _state_dict(g)
    library = standalone_library()
    definitions = _closure(g.used, library)
    taken = {d.name for d in definitions} | g._class_names | {"DTYPE", "load", "torch", "nn", "F", "math", "os"}
    if class_name in taken:
        raise ClassNameTaken(f"--class-name {class_name!r} is also the name of a definition the generated file needs; "
                             f"choose another name (e.g. {class_name}Net)")
    dtype = next((t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), torch.float32)
    head = lua_str(model).split("\n", 1)[0].rstrip(" {")
    summary = (f"{class_name}: {head}, converted from the Lua Torch file {source_name or '(a Lua object)'} by "
               f"fbresnet-port (python -m fbresnet_port.convert --format python).")
    doc = ('"""' + textwrap.fill(summary, LINE_LENGTH - 4) + "\n\nPlain PyTorch: this file imports only torch and "
           "the standard library. ``load()`` builds the model and loads\nthe weights in model.pth next to this file; "
           'parameters() follow Lua\'s model:parameters() order.\n"""')
    src = [doc] + _import_lines(sorted({d.module for d in definitions}), library) + ["", ""]
    src.append(f"DTYPE = {py(dtype)}  # the Lua model's tensor type")
    src += ["", ""]
    for d in definitions:
        src += [d.source, "", ""]
    for cls_src in g.classes:
        src += [cls_src, "", ""]
    src += _class_source(g, class_name, f"{head} (Lua), as plain PyTorch.", root_args, out, ties)
    src += ["", ""]
    src += [f"def load(path: str | None = None) -> {class_name}:",
            '    """The model with the converted weights: model.pth next to this file, or ``path`` (the file or its\n'
            '    folder). In training mode, like any new nn.Module."""',
            "    import os",
            "    if path is None:",
            "        path = os.path.dirname(os.path.abspath(__file__))",
            "    if os.path.isdir(path):",
            "        path = os.path.join(path, \"model.pth\")",
            f"    model = {class_name}().to(DTYPE)",
            "    model.load_state_dict(torch.load(path, map_location=\"cpu\", weights_only=True))",
            "    return model",
            ""]
    text = "\n".join(src)
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return GeneratedModel(text, state, class_name)


def check_generated(generated: GeneratedModel, model: nn.Module) -> nn.Module:
    """Run the generated source (in a namespace of its own), load the weights and check that its parameters have
    Lua's order and shapes; returns the generated module. An internal error (a bug of a hook) is raised as such."""
    namespace: dict[str, Any] = {"__name__": "fbresnet_generated"}
    exec(compile(generated.source, f"<generated {generated.class_name}>", "exec"), namespace)
    built = namespace[generated.class_name]()
    dtype = namespace["DTYPE"]
    built = built.to(dtype)
    built.load_state_dict(generated.state_dict)
    got = [tuple(p.shape) for p in built.parameters()]
    want = [tuple(p.shape) for p in model.parameters()]
    if got != want:
        raise RuntimeError(f"generated parameters do not follow Lua's order: {got[:8]}... vs {want[:8]}...")
    return built


def write_python(model: nn.Module, out_dir: str | os.PathLike, class_name: str | None = None,
                 source_name: str = "") -> GeneratedModel:
    """Write ``out_dir/model.py`` and ``out_dir/model.pth`` (atomically; the folder is created) for ``model``; the
    class name defaults to one made from ``source_name`` (``resnet-50.t7`` -> ``Resnet50``). The generated code is
    run once in this process first (its parameters must follow Lua's order and shapes)."""
    from .. import fileio

    name = class_name or class_name_from_file(source_name or "LuaModel")
    try:
        generated = generate_python(model, name, os.path.basename(str(source_name)))
    except ClassNameTaken:
        if class_name is not None:
            raise
        generated = generate_python(model, name + "Net", os.path.basename(str(source_name)))  # recursor.t7
    check_generated(generated, model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_text(out / "model.py", generated.source)
    fileio.atomic_write(out / "model.pth", lambda f: torch.save(generated.state_dict, f))
    return generated


__all__ = ["CodeGen", "Var", "ListVal", "Value", "Code", "NoPythonCode", "GeneratedModel", "generate_python",
           "check_generated", "write_python", "call_expr", "py", "shared", "wrap", "class_name_from_file",
           "standalone_library", "standalone_base"]
