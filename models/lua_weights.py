"""Copy the weights of a Lua ``nn`` model into a native PyTorch model.

Port of ``M.copyModel`` in liuzhuang13/DenseNet ``models/init.lua``, made strict and complete:

* parameters are matched in Lua ``model:parameters()`` order (depth-first over ``modules``, per module
  ``weight`` then ``bias``) against the native ``module.parameters()`` order;
* the running statistics of **every** BatchNorm (any class whose name ends in ``BatchNormalization``,
  not only ``cudnn.SpatialBatchNormalization``; PARITY §9 #9) are copied in Lua ``listModules()`` order
  into the native ``_BatchNorm`` modules in ``.modules()`` order;
* shapes are checked (the original's ``Tensor:copy`` only needs equal element counts) and a mismatch
  raises :class:`LuaWeightsMismatch` naming the tensor, its Lua module path and class, and both shapes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from fbresnet_port.errors import UserError

__all__ = ["LuaWeightsMismatch", "LuaTensorRef", "lua_parameters", "lua_batchnorms", "load_lua_weights",
           "layer_sequence", "structure_mismatch"]


class LuaWeightsMismatch(UserError):
    """The Lua model's parameters or BatchNorm layers do not line up with the native model's."""


@dataclass(frozen=True)
class LuaTensorRef:
    """One tensor of a Lua module: where it sits in the tree (``path``), its class and field name."""

    path: str  # 1-based child indices from the root, e.g. "4.1.1.1.2" (= model:get(4):get(1)...); "" = root
    typename: str
    field: str
    tensor: torch.Tensor

    def describe(self) -> str:
        where = f"module {self.path}" if self.path else "root module"
        return f"{where} ({self.typename}) .{self.field}"


def _typename(obj: Any) -> str:
    return str(getattr(obj, "typename", type(obj).__name__))


def _children(obj: Any) -> Any:
    """The ``modules`` of a container (an empty Lua table reads as an empty dict), else ``None``."""
    return obj.get("modules") if hasattr(obj, "get") else None


def _walk(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Pre-order walk over ``modules`` like Lua ``listModules()``: the module first, then each child.
    ``path`` holds 1-based child indices ("4.1.2" = ``model:get(4):get(1):get(2)``)."""
    yield path, obj
    for i, child in enumerate(_children(obj) or [], start=1):
        yield from _walk(child, f"{path}.{i}" if path else str(i))


def lua_parameters(lua_model: Any) -> list[LuaTensorRef]:
    """Port of Lua ``model:parameters()``: containers contribute their children's tensors in order;
    any other module contributes ``weight`` then ``bias`` when they are tensors."""
    return [LuaTensorRef(path, _typename(m), field, m.get(field))
            for path, m in _walk(lua_model) if _children(m) is None
            for field in ("weight", "bias") if isinstance(m.get(field), torch.Tensor)]


def lua_batchnorms(lua_model: Any) -> list[tuple[str, Any]]:
    """Every BatchNorm module (class name ending in ``BatchNormalization``) in ``listModules()`` order."""
    return [(p, m) for p, m in _walk(lua_model) if _typename(m).endswith("BatchNormalization")]


def lua_running_stats(bn: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(running_mean, running_var)`` of a Lua BatchNorm; the pre-2016 layout stored
    ``running_std`` = 1/sqrt(var + eps) instead of ``running_var``."""
    mean, var, std = bn.get("running_mean"), bn.get("running_var"), bn.get("running_std")
    if isinstance(std, torch.Tensor):  # as nn's BatchNormalization:read converts on load
        eps = bn.get("eps")
        var = std.double().pow(-2) - (1e-5 if eps is None else float(eps))
    if not isinstance(mean, torch.Tensor) or not isinstance(var, torch.Tensor):
        raise LuaWeightsMismatch(f"{_typename(bn)} has no running statistics (running_mean/running_var)")
    return mean, var


def _fits(src: torch.Tensor, dst: torch.Tensor) -> bool:
    """Equal shapes, or an old 2-D ``SpatialConvolutionMM`` weight for a 4-D convolution weight."""
    if tuple(src.shape) == tuple(dst.shape):
        return True
    return src.dim() == 2 and dst.dim() == 4 and src.numel() == dst.numel() and src.shape[0] == dst.shape[0]


def _shape(t: torch.Tensor | None) -> str:
    return "missing" if t is None else "x".join(map(str, t.shape)) or "scalar"


def load_lua_weights(native: nn.Module, lua_model: Any) -> None:
    """Copy every parameter and BatchNorm running statistic of ``lua_model`` (a ``t7.TorchObject`` tree)
    into ``native``, in place. Raises :class:`LuaWeightsMismatch` (nothing copied) when the two differ in
    the number of parameter tensors, the number of BatchNorm layers, or any shape."""
    src_params = lua_parameters(lua_model)
    dst_params = list(native.named_parameters())
    if len(src_params) != len(dst_params):
        raise LuaWeightsMismatch(
            f"Model configurations do not match: the Lua model has {len(src_params)} parameter tensors, "
            f"the model built from the flags has {len(dst_params)}")
    for i, (ref, (name, dst)) in enumerate(zip(src_params, dst_params), start=1):
        if not _fits(ref.tensor, dst):
            raise LuaWeightsMismatch(
                f"Model configurations do not match at parameter {i} of {len(dst_params)}: "
                f"Lua {ref.describe()} has shape {_shape(ref.tensor)}, "
                f"native '{name}' has shape {_shape(dst)}")

    src_bns = lua_batchnorms(lua_model)
    dst_bns = [(n, m) for n, m in native.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if len(src_bns) != len(dst_bns):
        raise LuaWeightsMismatch(
            f"Model configurations do not match: the Lua model has {len(src_bns)} BatchNorm layers, "
            f"the model built from the flags has {len(dst_bns)}")
    stats = []
    for i, ((path, bn), (name, dst)) in enumerate(zip(src_bns, dst_bns), start=1):
        mean, var = lua_running_stats(bn)
        for field, src, tgt in (("running_mean", mean, dst.running_mean), ("running_var", var, dst.running_var)):
            if tgt is None or tuple(src.shape) != tuple(tgt.shape):
                raise LuaWeightsMismatch(
                    f"Model configurations do not match at BatchNorm {i} of {len(dst_bns)}: Lua module "
                    f"{path or '(root)'} ({_typename(bn)}) .{field} has shape {_shape(src)}, "
                    f"native '{name}' has shape {_shape(tgt)}")
        stats.append((dst, mean, var))

    with torch.no_grad():
        for ref, (_, dst) in zip(src_params, dst_params):
            dst.copy_(ref.tensor.reshape(dst.shape))
        for dst, mean, var in stats:
            dst.running_mean.copy_(mean)
            dst.running_var.copy_(var)


# Leaves that do not change what a net computes, and class names that are the same layer under another name.
_SKIPPED_LEAVES = {"Identity", "JoinTable"}
_SAME_LAYER = {"SpatialConvolutionMM": "SpatialConvolution", "Reshape": "View"}


def layer_sequence(lua_model: Any) -> list[tuple[str, str]]:
    """The net's layers as ``(path, class)`` in ``listModules()`` order: containers, ``Identity`` and
    ``JoinTable`` left out, package prefixes dropped (``cudnn.ReLU`` = ``nn.ReLU``), so that nets computing
    the same thing in different containers (DenseNet's standard and memory-efficient layers) compare equal."""
    seq = []
    for path, m in _walk(lua_model):
        if _children(m) is not None:
            continue
        name = _typename(m).rsplit(".", 1)[-1]
        name = _SAME_LAYER.get(name, name)
        if name not in _SKIPPED_LEAVES:
            seq.append((path, name))
    return seq


def structure_mismatch(expected: Any, lua_model: Any) -> str | None:
    """Compare the layer sequences of two Lua trees (e.g. a native model's ``to_lua()`` and a loaded file).
    Returns ``None`` when they agree, else a sentence naming the first difference. Parameter shapes alone
    cannot tell e.g. ResNet-20 from pre-activation ResNet-20 (same tensors in the same order)."""
    want, got = layer_sequence(expected), layer_sequence(lua_model)
    for i, (w, g) in enumerate(zip(want, got), start=1):
        if w[1] != g[1]:
            return (f"layer {i} is a {g[1]} (module {g[0] or '(root)'}) in the file but a {w[1]} "
                    f"in the network built from the flags")
    if len(want) != len(got):
        return f"the file has {len(got)} layers, the network built from the flags has {len(want)}"
    return None
