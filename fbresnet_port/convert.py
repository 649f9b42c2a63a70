"""``python -m fbresnet_port.convert MODEL.t7 OUT.pt``: turn a Lua Torch ``nn`` model into a PyTorch file.

The output holds ``{'format': 'fbresnet-port/lua-model', 'version': 1, 'lua_tree': ..., 'state_dict': ...}``
where ``lua_tree`` is the model exported back to its Lua module tree (:func:`lua_nn.to_lua`) encoded as
plain dicts, lists, strings, numbers and tensors, so that ``torch.load(path, weights_only=True)`` reads
it; :func:`load_converted` rebuilds the module from it.
"""
from __future__ import annotations

import collections
import os
import sys
from typing import Any

import click
import torch
from torch import nn

from . import t7
from .errors import UserError, unreadable_t7
from .lua_nn import LuaModule, from_lua, load_lua_model, to_lua

FORMAT = "fbresnet-port/lua-model"
VERSION = 1
_GRAD_FIELDS = ("gradWeight", "gradBias")


def encode_tree(value: Any) -> Any:
    """A Lua value (``t7`` objects) as plain Python data that ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, t7.TorchObject):
        fields = {k: encode_tree(v) for k, v in value.fields.items()
                  if isinstance(k, str) and k not in _GRAD_FIELDS}
        return {"__class__": value.typename, "__version__": value.version, "fields": fields}
    if isinstance(value, t7.Storage):
        return {"__storage__": value.typename, "tensor": value.tensor}
    if isinstance(value, t7.LuaList):
        return [encode_tree(v) for v in value]
    if isinstance(value, dict):
        return {"__table__": {k: encode_tree(v) for k, v in value.items() if isinstance(k, str)}}
    if isinstance(value, (torch.Tensor, str, int, float, bool)) or value is None:
        return value
    return None  # Lua functions and other opaque values are not needed to rebuild a module


def decode_tree(value: Any) -> Any:
    """Inverse of :func:`encode_tree`."""
    if isinstance(value, list):
        return t7.LuaList(decode_tree(v) for v in value)
    if isinstance(value, dict):
        if "__class__" in value:
            fields = t7.LuaTable({k: decode_tree(v) for k, v in value["fields"].items()})
            return t7.TorchObject(value["__class__"], fields, version=value["__version__"])
        if "__storage__" in value:
            return t7.Storage(value["tensor"], value["__storage__"])
        if "__table__" in value:
            return t7.LuaTable({k: decode_tree(v) for k, v in value["__table__"].items()})
        return {k: decode_tree(v) for k, v in value.items()}
    return value


def save_converted(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model`` in the converted format (see module docstring); atomic (temp file + rename)."""
    data = {"format": FORMAT, "version": VERSION, "lua_tree": encode_tree(to_lua(model)),
            "state_dict": model.state_dict()}
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_converted(path: str | os.PathLike) -> nn.Module:
    """Rebuild the module written by ``python -m fbresnet_port.convert`` (or :func:`save_converted`)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is not a converted Lua model (expected format '{FORMAT}'); "
                        f"make one with: python -m fbresnet_port.convert MODEL.t7 {path}")
    if data.get("version") != VERSION:
        raise UserError(f"{path}: unsupported converted-model version {data.get('version')} (expected {VERSION})")
    model = from_lua(decode_tree(data["lua_tree"]))
    model.load_state_dict(data["state_dict"])
    return model


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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_t7", type=click.Path(dir_okay=False))
@click.argument("out_pt", type=click.Path(dir_okay=False))
def main(model_t7: str, out_pt: str) -> None:
    """Convert the Lua Torch nn model MODEL_T7 (a torch.save file) to the PyTorch file OUT_PT."""
    try:
        if not os.path.isfile(model_t7):
            raise UserError(f"no such file: {model_t7}")
        out_dir = os.path.dirname(os.path.abspath(out_pt))
        if not os.path.isdir(out_dir):
            state = "is a file, not a folder" if os.path.exists(out_dir) else "does not exist"
            raise UserError(f"cannot write {out_pt}: {out_dir} {state} "
                            f"(create the folder or choose another output path)")
        try:
            obj = t7.load(model_t7)
        except t7.T7FormatError as err:
            raise unreadable_t7(model_t7, model_t7, err, "give a model file written by torch.save, "
                                "such as model_<epoch>.t7") from None
        if not isinstance(obj, t7.TorchObject):
            raise UserError(f"{model_t7} holds a {type(obj).__name__}, not a Lua nn module "
                            f"(give a model file such as model_<epoch>.t7, not a checkpoint table)")
        model = load_lua_model(obj)
        save_converted(model, out_pt)
    except (UserError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(summary(model))
    click.echo(f"wrote {out_pt}")


if __name__ == "__main__":
    main()
