"""``python -m fbresnet_port.convert MODEL.t7 OUT.pt [--format state-dict|torchscript|torchvision|export|onnx]``:
turn a Lua Torch ``nn`` model into a PyTorch file.

``--format export`` writes a ``torch.export`` program (``torch.export.load(path).module()`` runs it), ``--format onnx``
an ONNX file checked with onnxruntime; both with a dynamic batch dimension (:mod:`fbresnet_port.export`).

``--format torchscript`` writes a traced module that plain PyTorch runs (``torch.jit.load``); ``--format torchvision
--arch densenet121`` a torchvision state dict (:mod:`models.torchvision_weights`). The default output holds ``{'format': 'fbresnet-port/lua-model', 'version': 2, 'lua_tree': ..., 'state_dict': ...}``
where ``lua_tree`` is the model exported back to its Lua module tree (:func:`lua_nn.to_lua`) encoded as
plain dicts, lists, strings, numbers and tensors (:func:`encode_tree`: an object table that keeps shared
and cyclic references and non-string keys), so that ``torch.load(path, weights_only=True)`` reads it;
:func:`load_converted` rebuilds the module from it (version-1 files too).
"""
from __future__ import annotations

import collections
import keyword
import os
import sys
import warnings
from typing import Any

import click
import numpy as np
import torch
from torch import nn

from . import export, fileio, t7
from .errors import UserError, unreadable_t7
from .lua_nn import LuaModule, from_lua, load_lua_model, to_lua

FORMAT = "fbresnet-port/lua-model"
VERSION = 2  # 2: the Lua tree as an object table (encode_tree); 1: nested data, still read
_GRAD_FIELDS = ("gradWeight", "gradBias")


def encode_tree(value: Any, stored: "_StoredTensors | None" = None) -> dict[str, Any]:
    """A Lua value (``t7`` objects) as plain Python data that ``torch.load(weights_only=True)`` accepts.

    Every table, list, torch object, storage, function and tensor is one entry of an object table
    (``{'objects': [...], 'root': value}``) and referenced by its index (``{'ref': i}``), so an object referenced
    twice stays one object (nngraph's nodes, shared modules), cycles survive, and so do keys that are not strings:
    numbers, booleans (``{'bool': b}``) and tables or objects (``{'ref': i}``, e.g. nngraph's ``mapindex``).
    With ``stored``, a floating tensor equal to one of the state dict's is written as its shape and dtype only
    (the state dict holds the values), so each parameter is stored once; ``gradWeight``/``gradBias`` are left out."""
    return _TreeEncoder(stored).encode(value)


class _TreeEncoder:
    """:func:`encode_tree`: the object table is filled from a work list (no recursion, however deep the tree)."""

    def __init__(self, stored: "_StoredTensors | None"):
        self.stored = stored
        self.objects: list[Any] = []
        self.index: dict[int, int] = {}  # id(object) -> its entry
        self.pending: list[Any] = []

    def encode(self, root: Any) -> dict[str, Any]:
        encoded_root = self.value(root)
        while self.pending:
            obj = self.pending.pop()
            self.objects[self.index[id(obj)]] = self.entry(obj)
        return {"objects": self.objects, "root": encoded_root}

    def value(self, x: Any) -> Any:
        if x is None or isinstance(x, (str, bytes, bool, int, float)):
            return x
        if isinstance(x, np.generic):
            return x.item()  # a numpy number or boolean
        if not isinstance(x, (t7.TorchObject, t7.Storage, t7.LuaFunction, t7.TdsAtomicCounter, dict, list, tuple,
                              torch.Tensor)):
            return None  # nothing else is needed to rebuild a module
        if id(x) not in self.index:
            self.index[id(x)] = len(self.objects)
            self.objects.append(None)
            self.pending.append(x)
        return {"ref": self.index[id(x)]}

    def key(self, k: Any) -> Any:
        if isinstance(k, (t7.BoolKey, bool)):
            return {"bool": bool(k.value if isinstance(k, t7.BoolKey) else k)}
        return self.value(k.obj if isinstance(k, t7.IdKey) else k)

    def items(self, table: dict, skip: tuple[str, ...] = ()) -> list[list[Any]]:
        return [[self.key(k), self.value(v)] for k, v in table.items()
                if not (k in skip and isinstance(v, torch.Tensor))]

    def entry(self, x: Any) -> dict[str, Any]:
        if isinstance(x, torch.Tensor):
            if self.stored is not None and self.stored.holds(x):
                return {"kind": "placeholder", "shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}
            return {"kind": "tensor", "tensor": x.detach()}
        if isinstance(x, t7.TorchObject):
            return {"kind": "object", "class": x.typename, "version": x.version,
                    "items": self.items(x.fields, _GRAD_FIELDS)}
        if isinstance(x, t7.Storage):
            return {"kind": "storage", "class": x.typename, "tensor": x.tensor}
        if isinstance(x, t7.LuaFunction):
            return {"kind": "function", "bytecode": x.bytecode, "upvalues": self.value(x.upvalues),
                    "type_code": x.type_code}
        if isinstance(x, t7.TdsAtomicCounter):
            return {"kind": "tds.AtomicCounter", "class": x.typename, "version": x.version, "value": x.value}
        if isinstance(x, t7.TdsHash):
            return {"kind": "tds.Hash", "class": x.typename, "version": x.version, "items": self.items(x)}
        if isinstance(x, t7.TdsVec):
            return {"kind": "tds.Vec", "class": x.typename, "version": x.version, "items": [self.value(v) for v in x]}
        if isinstance(x, dict):
            return {"kind": "table", "items": self.items(x)}
        return {"kind": "list", "items": [self.value(v) for v in x]}


def decode_tree(data: Any) -> Any:
    """Inverse of :func:`encode_tree` (placeholders become zero tensors of their shape and dtype)."""
    entries = data["objects"]
    objects = [_shell(e) for e in entries]

    def value(v: Any) -> Any:
        return objects[v["ref"]] if isinstance(v, dict) else v

    def key(k: Any) -> Any:
        if isinstance(k, dict):
            return t7.BoolKey(k["bool"]) if "bool" in k else t7.IdKey(objects[k["ref"]])
        return k

    for obj, e in zip(objects, entries):
        if e["kind"] in ("table", "object", "tds.Hash"):
            table = obj.fields if e["kind"] == "object" else obj
            for k, v in e["items"]:
                table[key(k)] = value(v)
        elif e["kind"] in ("list", "tds.Vec"):
            obj.extend(value(v) for v in e["items"])
        elif e["kind"] == "function":
            obj.upvalues = value(e["upvalues"])
    return value(data["root"])


def _shell(e: dict[str, Any]) -> Any:
    """The object of one entry of :func:`encode_tree`'s table, before its contents are filled in."""
    kind = e["kind"]
    if kind == "tensor":
        return e["tensor"]
    if kind == "placeholder":
        return torch.zeros(e["shape"], dtype=getattr(torch, e["dtype"]))
    if kind == "object":
        return t7.TorchObject(e["class"], t7.LuaTable(), version=e["version"])
    if kind == "storage":
        return t7.Storage(e["tensor"], e["class"])
    if kind == "function":
        return t7.LuaFunction(e["bytecode"], None, e["type_code"])
    if kind == "tds.AtomicCounter":
        return t7.TdsAtomicCounter(e["value"], typename=e["class"], version=e["version"])
    if kind == "tds.Hash":
        return t7.TdsHash(typename=e["class"], version=e["version"])
    if kind == "tds.Vec":
        return t7.TdsVec(typename=e["class"], version=e["version"])
    return t7.LuaTable() if kind == "table" else t7.LuaList()


def _decode_tree_v1(value: Any) -> Any:
    """The tree of a version-1 file (nested plain data: shared objects were copies, non-string keys dropped)."""
    if isinstance(value, list):
        return t7.LuaList(_decode_tree_v1(v) for v in value)
    if isinstance(value, dict):
        if "__class__" in value:
            fields = t7.LuaTable({k: _decode_tree_v1(v) for k, v in value["fields"].items()})
            return t7.TorchObject(value["__class__"], fields, version=value["__version__"])
        if "__storage__" in value:
            return t7.Storage(value["tensor"], value["__storage__"])
        if "__table__" in value:
            return t7.LuaTable({k: _decode_tree_v1(v) for k, v in value["__table__"].items()})
        if "__placeholder__" in value:
            return torch.zeros(value["__placeholder__"], dtype=getattr(torch, value["dtype"]))
        return {k: _decode_tree_v1(v) for k, v in value.items()}
    return value


class _StoredTensors:
    """The floating tensors of a state dict, found by value (the exported tree holds float32 copies)."""

    def __init__(self, state_dict: dict[str, torch.Tensor]):
        self._by_key: dict[tuple, list[torch.Tensor]] = collections.defaultdict(list)
        for t in state_dict.values():
            if t.is_floating_point() and t.numel() > 0:
                self._by_key[self._key(t)].append(t)

    @staticmethod
    def _key(t: torch.Tensor) -> tuple:
        t = t.detach().float()
        return tuple(t.shape), float(t.sum()), float(t.square().sum())

    def holds(self, t: torch.Tensor) -> bool:
        if not t.is_floating_point() or t.numel() == 0:
            return False
        return any(torch.equal(t.float(), s.detach().float()) for s in self._by_key.get(self._key(t), ()))


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter (float32 when it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _atomic_torch_save(obj: Any, path: str | os.PathLike, save: Any = torch.save) -> None:
    """``save(obj, file)`` through :func:`fileio.atomic_write` (temp file + rename, the user's file mode)."""
    fileio.atomic_write(path, lambda f: save(obj, f))


def save_converted(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model`` in the converted format (see module docstring); atomic (temp file + rename).

    Each parameter and buffer is stored once (in the state dict, in the model's dtype: a float64 model stays
    float64); the Lua tree keeps only the structure and the non-parameter fields."""
    state = model.state_dict()
    data = {"format": FORMAT, "version": VERSION, "dtype": str(model_dtype(model)).replace("torch.", ""),
            "lua_tree": encode_tree(to_lua(model), _StoredTensors(state)), "state_dict": state}
    _atomic_torch_save(data, path)


def load_converted(path: str | os.PathLike) -> nn.Module:
    """Rebuild the module written by ``python -m fbresnet_port.convert`` (or :func:`save_converted`)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is not a converted Lua model (expected format '{FORMAT}'); "
                        f"make one with: python -m fbresnet_port.convert MODEL.t7 {path}")
    if data.get("version") not in (1, VERSION):
        raise UserError(f"{path}: unsupported converted-model version {data.get('version')} (this version of "
                        f"fbresnet_port reads 1 and {VERSION}; a newer one wrote it)")
    decode = decode_tree if data["version"] == VERSION else _decode_tree_v1
    model = from_lua(decode(data["lua_tree"]))
    dtype = getattr(torch, data.get("dtype", "float32"))
    if dtype.is_floating_point:
        model = model.to(dtype)
    model.load_state_dict(data["state_dict"])
    return model


def parse_shape(text: str) -> tuple[int, ...]:
    """``'1,3,224,224'`` (or ``1x3x224x224``) -> ``(1, 3, 224, 224)``."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        shape = ()
    if not shape or any(v <= 0 for v in shape):
        raise UserError(f"--input-shape {text!r}: give positive sizes separated by commas, e.g. 1,3,224,224")
    return shape


def save_torchscript(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...]) -> None:
    """Trace ``model`` in evaluate mode on a random input of ``input_shape`` and save it as TorchScript, which
    plain PyTorch runs with ``torch.jit.load(path)`` (no fbresnet_port needed). The trace fixes evaluate-mode
    behaviour (BatchNorm running statistics, no Dropout)."""
    model = model.eval()
    example = torch.randn(input_shape, dtype=model_dtype(model))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            traced = torch.jit.trace(model, example, check_trace=False)
    except Exception as err:  # noqa: BLE001 - report why the net cannot be traced with this input
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot trace the model on an input of shape {'x'.join(map(str, input_shape))}: {first} "
                        f"(give the shape the network takes with --input-shape)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        _atomic_torch_save(traced, path, save=torch.jit.save)


def _describe(module: nn.Module) -> str:
    """The module's class, and the torch.nn class it derives from (if any)."""
    for cls in type(module).__mro__[1:]:
        if cls.__module__.startswith("torch.nn.modules") and cls is not nn.Module:
            return f"{type(module).__name__} (a torch.nn.{cls.__name__})"
    return type(module).__name__


def summary(model: nn.Module) -> str:
    """Class counts, parameter count and the PyTorch class each Lua class became."""
    counts: collections.Counter[str] = collections.Counter()
    became: dict[str, str] = {}
    for m in model.modules():
        name = m.lua_typename if isinstance(m, LuaModule) else type(m).__name__
        counts[name] += 1
        became[name] = _describe(m)
    width = max(map(len, counts)) if counts else 0
    lines = [f"{'Lua class':<{width}}  count  PyTorch module"]
    lines += [f"{name:<{width}}  {counts[name]:5d}  {became[name]}" for name in sorted(counts)]
    n_params = sum(p.numel() for p in model.parameters())
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    lines.append(f"parameters: {n_params} in {len(list(model.parameters()))} tensors; BatchNorm layers: {n_bn}")
    return "\n".join(lines)


FORMATS = ("state-dict", "python", "torchscript", "torchvision", "export", "onnx")
_TRACED = ("torchscript", "export", "onnx")  # the formats that run the model on an --input-shape example


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_t7", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="state-dict", show_default=True,
              help="state-dict: this package's file (load_converted rebuilds the module); python: the folder OUT with "
                   "model.py (plain PyTorch source, trainable) and model.pth; torchscript: a traced module that plain "
                   "PyTorch runs (torch.jit.load); torchvision: a torchvision state dict (--arch); export: a "
                   "torch.export program (.pt2, torch.export.load); onnx: an ONNX file checked with onnxruntime "
                   "(pip install .[onnx])")
@click.option("--class-name", default=None,
              help="--format python: the name of the generated nn.Module class (default: from MODEL_T7's file name)")
@click.option("--batch-of-one-running-stats", is_flag=True, default=False,
              help="Reproduce torch/nn after 2017-08-03 (commit 919eeca): a training-mode BatchNormalization given a "
                   "batch of one, and so nn.InstanceNormalization (fast-neural-style, CycleGAN, texture_nets), "
                   "normalises with its running statistics instead of the batch's (default: the instance statistics "
                   "the published models were trained with)")
@click.option("--input-shape", default="1,3,224,224", show_default=True,
              help="input shape to trace with (--format torchscript, export, onnx), e.g. 1,3,32,32 for CIFAR nets; "
                   "export and onnx keep the first size (the batch) dynamic")
@click.option("--input-dtype", type=click.Choice(export.INPUT_DTYPES), default="model", show_default=True,
              help="dtype of the example input (--format export, onnx): the model's floating dtype, or an index "
                   "dtype (int64) for models that take indices, such as nn.LookupTable")
@click.option("--arch", default=None, help="torchvision architecture for --format torchvision, e.g. densenet121, resnet50")
def main(model_t7: str, out: str, fmt: str, input_shape: str, input_dtype: str, arch: str | None,
         class_name: str | None, batch_of_one_running_stats: bool) -> None:
    """Convert the Lua Torch nn model MODEL_T7 (a torch.save file) to the PyTorch file (or, --format python, the
    folder) OUT."""
    try:
        if not os.path.isfile(model_t7):
            raise UserError(f"no such file: {model_t7}")
        out_dir = os.path.dirname(os.path.abspath(out))
        if fmt == "python":
            if os.path.exists(out) and not os.path.isdir(out):
                raise UserError(f"cannot write {out}: it is a file; --format python writes a folder "
                                f"(model.py and model.pth): give a folder path")
        elif os.path.isdir(out):
            raise UserError(f"cannot write {out}: it is a folder; give a file path, e.g. {os.path.join(out, 'model.pt')}")
        if class_name is not None and fmt != "python":
            raise UserError("--class-name is for --format python")
        if class_name is not None and (not class_name.isidentifier() or keyword.iskeyword(class_name)):
            raise UserError(f"--class-name {class_name!r} is not a valid Python class name (e.g. ResNet50)")
        if not os.path.isdir(out_dir):
            state = "is a file, not a folder" if os.path.exists(out_dir) else "does not exist"
            raise UserError(f"cannot write {out}: {out_dir} {state} "
                            f"(create the folder or choose another output path)")
        if fmt == "torchvision" and not arch:
            raise UserError("--format torchvision needs --arch (densenet121, densenet169, densenet201, densenet161, "
                            "resnet18, resnet34, resnet50, resnet101 or resnet152)")
        shape = parse_shape(input_shape) if fmt in _TRACED else ()
        try:
            obj = t7.load(model_t7)
        except t7.T7FormatError as err:
            raise unreadable_t7(model_t7, model_t7, err, "give a model file written by torch.save, "
                                "such as model_<epoch>.t7") from None
        if isinstance(obj, dict) and isinstance(obj.get("modelFile"), str):
            named = os.path.join(os.path.dirname(model_t7), obj["modelFile"])
            raise UserError(f"{model_t7} is a checkpoint index (latest.t7), not a Lua nn module; convert the model "
                            f"file it names: {named} (the run's model_<epoch>.t7 files)")
        model = load_lua_model(obj, options={"batch_of_one_running_stats": batch_of_one_running_stats})
        checked = ""
        if fmt == "state-dict":
            save_converted(model, out)
        elif fmt == "python":
            from .lua_nn.codegen import write_python
            generated = write_python(model, out, class_name=class_name, source_name=model_t7)
        elif fmt == "torchscript":
            save_torchscript(model, out, shape)
        elif fmt == "export":
            checked = export.save_export(model, out, shape, input_dtype)
        elif fmt == "onnx":
            checked = export.save_onnx(model, out, shape, input_dtype)
        else:
            from models.torchvision_weights import to_torchvision_state_dict
            _atomic_torch_save(to_torchvision_state_dict(model, arch), out)
    except (UserError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(summary(model))
    if fmt == "python":
        click.echo(f"wrote {os.path.join(out, 'model.py')} (class {generated.class_name}, load() builds it) and "
                   f"{os.path.join(out, 'model.pth')} ({len(generated.state_dict)} tensors)")
    else:
        click.echo(f"wrote {out} ({fmt})")
    if checked:
        click.echo(checked)


if __name__ == "__main__":
    main()
