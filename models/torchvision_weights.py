"""torchvision weights, both ways: load a torchvision ``state_dict`` into a native model built from the flags, and
export a native (or Lua-imported) model as a torchvision ``state_dict``.

The DenseNet authors converted their Lua ImageNet models to torchvision's ``densenet121/169/201/161``, and
torchvision's ``resnet18..152`` are the fb.resnet.torch architectures (shortcut type B, stride on the 3x3
convolution of bottleneck blocks). The two sides register their layers in the same order, Lua's
``model:parameters()`` order, so tensors are paired by position and checked by shape; torchvision's key names
are those of a freshly built torchvision model of the same architecture (random weights, nothing downloaded).

=====================================================  ==================================
flags                                                  torchvision architecture
=====================================================  ==================================
``-netType densenet -dataset imagenet -depth 121``     ``densenet121`` (``-growthRate 32``)
``... -depth 169`` / ``201`` (``-growthRate 32``)      ``densenet169`` / ``densenet201``
``... -depth 161 -growthRate 48``                      ``densenet161``
``-netType resnet -dataset imagenet -depth 18..152``   ``resnet18`` ... ``resnet152`` (``-shortcutType B``)
=====================================================  ==================================
"""
from __future__ import annotations

import re
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from fbresnet_port import t7
from fbresnet_port.errors import UserError

__all__ = ["ARCHITECTURES", "arch_for", "torchvision_model", "load_torchvision_state_dict",
           "to_torchvision_state_dict", "is_state_dict"]

# torchvision name -> the flags that build the same network here
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "densenet121": dict(netType="densenet", depth=121, growthRate=32),
    "densenet169": dict(netType="densenet", depth=169, growthRate=32),
    "densenet201": dict(netType="densenet", depth=201, growthRate=32),
    "densenet161": dict(netType="densenet", depth=161, growthRate=48),
    "resnet18": dict(netType="resnet", depth=18),
    "resnet34": dict(netType="resnet", depth=34),
    "resnet50": dict(netType="resnet", depth=50),
    "resnet101": dict(netType="resnet", depth=101),
    "resnet152": dict(netType="resnet", depth=152),
}

_FLAGS_HELP = ("torchvision weights fit -dataset imagenet with -netType densenet -depth 121|169|201 -growthRate 32, "
               "-depth 161 -growthRate 48 (-bottleneck true -reduction 0.5), or -netType resnet -depth 18|34|50|101|152 "
               "-shortcutType B")


def arch_for(opt: Any) -> str:
    """The torchvision architecture that the flags ``opt`` build; a :class:`UserError` when there is none."""
    net, dataset = str(getattr(opt, "netType", "")), str(getattr(opt, "dataset", ""))
    depth = getattr(opt, "depth", None)
    if dataset == "imagenet":
        for name, flags in ARCHITECTURES.items():
            if flags["netType"] != net or flags["depth"] != depth:
                continue
            if net == "densenet":
                if (int(getattr(opt, "growthRate", 0)) == flags["growthRate"] and getattr(opt, "bottleneck", True)
                        and float(getattr(opt, "reduction", 0.5)) == 0.5):
                    return name
            elif str(getattr(opt, "shortcutType", "B") or "B") == "B":
                return name
    raise UserError(f"-netType {net} -dataset {dataset} -depth {depth} has no torchvision counterpart: {_FLAGS_HELP}")


def torchvision_model(arch: str) -> nn.Module:
    """A torchvision model of architecture ``arch`` with random weights (no download)."""
    import torchvision

    if arch not in ARCHITECTURES:
        raise UserError(f"unknown torchvision architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return getattr(torchvision.models, arch)(weights=None)


# Keys of the DenseNet checkpoints torchvision published first ('norm.1' for 'norm1'); torchvision renames them too.
_OLD_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _normalise_keys(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key  # saved from DataParallel / DDP
        match = _OLD_DENSENET_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


def is_state_dict(obj: Any) -> bool:
    """Whether ``obj`` is a mapping of names to tensors (what ``torch.save(model.state_dict())`` writes)."""
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _pairs(src: nn.Module, dst: nn.Module, src_name: str, dst_name: str) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name in ``dst``, source tensor, destination tensor) for every parameter and BatchNorm statistic, in order."""
    names = {id(p): n for n, p in dst.named_parameters()}
    names.update((id(b), n) for n, b in dst.named_buffers())
    src_params, dst_params = list(src.parameters()), list(dst.parameters())
    src_bns, dst_bns = _batchnorms(src), _batchnorms(dst)
    if len(src_params) != len(dst_params) or len(src_bns) != len(dst_bns):
        raise UserError(f"{src_name} has {len(src_params)} parameter tensors and {len(src_bns)} BatchNorm layers, "
                        f"{dst_name} has {len(dst_params)} and {len(dst_bns)}: not the same architecture ({_FLAGS_HELP})")
    pairs = list(zip(src_params, dst_params))
    for a, b in zip(src_bns, dst_bns):
        pairs += [(a.running_mean, b.running_mean), (a.running_var, b.running_var)]
    for s, d in pairs:
        name = names.get(id(d), "?")
        if s.shape != d.shape:
            raise UserError(f"{src_name} does not fit {dst_name}: {name} has shape {tuple(d.shape)} there but "
                            f"{tuple(s.shape)} in {src_name} ({_FLAGS_HELP})")
        yield name, s, d


def _copy(src: nn.Module, dst: nn.Module, src_name: str, dst_name: str) -> None:
    with torch.no_grad():
        for _, s, d in list(_pairs(src, dst, src_name, dst_name)):
            d.copy_(s)


def load_torchvision_state_dict(model: nn.Module, state_dict: Mapping[str, Any], arch: str,
                                source: str = "the state dict") -> nn.Module:
    """Copy a torchvision ``arch`` state dict into ``model`` (a native model of the same architecture, see the
    table in the module docstring); returns ``model``. Errors name the missing, unexpected or misshapen keys."""
    reference = torchvision_model(arch)
    state = _normalise_keys(state_dict)
    _check_shapes(reference, state, arch, source)
    missing, unexpected = reference.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        parts = [f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" if missing else "",
                 f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}" if unexpected else ""]
        raise UserError(f"{source} is not a torchvision {arch} state dict ({'; '.join(p for p in parts if p)}); "
                        f"{_FLAGS_HELP}")
    _copy(reference, model, f"torchvision {arch}", "the model built from the flags")
    return model


def _check_shapes(reference: nn.Module, state: Mapping[str, Any], arch: str, source: str) -> None:
    own = reference.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise UserError(f"{source} does not fit torchvision {arch}: {key} has shape {tuple(value.shape)}, "
                            f"expected {tuple(own[key].shape)} ({_FLAGS_HELP})")


def to_torchvision_state_dict(model: nn.Module, arch: str) -> dict[str, torch.Tensor]:
    """The torchvision ``arch`` state dict holding ``model``'s weights and BatchNorm statistics.

    ``model`` is a native model or one converted from Lua (``load_lua_model``) with the same layers in the same
    order; the tensors keep their dtype as torchvision's (float32)."""
    reference = torchvision_model(arch)
    _copy(model, reference, "the model", f"torchvision {arch}")
    return reference.state_dict()


def is_torch_file(path: str) -> bool:
    """Whether ``path`` was written by ``torch.save`` (a zip archive, or the legacy pickle format)."""
    return t7.torch_save_format(path) is not None


def load_file(model: nn.Module, path: str, opt: Any, flag: str = "-retrain") -> nn.Module:
    """``-retrain FILE.pth``: copy the torchvision state dict in ``path`` into ``model`` (built from ``opt``).

    The file may hold the state dict itself or a dict with it under ``'state_dict'`` or ``'model'``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem is the file's
        raise UserError(f"{flag} {path}: not a readable PyTorch file ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}); give a torchvision state dict "
                        f"saved with torch.save(model.state_dict(), path)") from None
    if isinstance(obj, Mapping) and not is_state_dict(obj):
        obj = next((obj[k] for k in ("state_dict", "model") if is_state_dict(obj.get(k))), obj)
    if not is_state_dict(obj):
        raise UserError(f"{flag} {path} holds a {type(obj).__name__}, not a state dict of tensors; give a torchvision "
                        f"state dict saved with torch.save(model.state_dict(), path)")
    arch = arch_for(opt)
    print(f"=> Loading torchvision {arch} weights from {path}")
    return load_torchvision_state_dict(model, obj, arch, f"{flag} {path}")
