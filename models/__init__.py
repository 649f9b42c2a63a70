"""Model factory and start-up: port of ``models/init.lua`` (liuzhuang13/DenseNet's flow, fixed as PARITY §9 says).

* :func:`create` builds ``models/<netType>.py``'s ``create_model(opt)`` (one file per ``-netType``; drop a new
  ``models/mynet.py`` with ``create_model(opt)`` in and ``-netType mynet`` picks it up).
* :func:`setup` builds the net from the flags, then imports the weights of a ``-resume`` checkpoint or a
  ``-retrain`` file (Lua ``.t7``: original Lua models and this port's own checkpoints alike), replaces the
  classifier for ``-resetClassifier``, and returns ``(model, criterion)``.

Deliberate differences from the Lua code (PARITY §9):

* #9: the running statistics of every BatchNorm class are imported (Lua: only ``cudnn.SpatialBatchNormalization``,
  so ResNets lost theirs), and shapes are checked (Lua's ``Tensor:copy`` only compares element counts).
* #10: when resuming a run that used ``-resetClassifier``, the classifier is resized *before* the weights are
  copied, so the resume works (Lua failed on the size mismatch).
* A file whose tree does not match the flags (e.g. fb.resnet.torch's published ResNet-50, which has BN after the
  addition) is not an error: the saved Lua net itself is converted and used, as fb.resnet.torch's ``models/init.lua``
  did (it always used the saved model), and a line says so.
* ``-precision half`` leaves the weights in float32 (mixed precision is the trainer's business, §9 #30).
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from fbresnet_port import lua_nn, t7
from fbresnet_port.errors import UserError, unreadable_t7
from models import torchvision_weights
from models.lua_weights import LuaWeightsMismatch, load_lua_weights, structure_mismatch
from models.resnet import CIFAR_CLASSES, lua_number

__all__ = ["available", "create", "check_retrain", "setup", "replace_classifier", "load_model_file",
           "check_fits_dataset"]

MODELS_DIR = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names accepted by ``-netType``: the files ``models/<name>.py`` that define ``create_model``."""
    names = []
    for path in sorted(MODELS_DIR.glob("*.py")):
        if not path.stem.startswith("_") and "def create_model(" in path.read_text(encoding="utf-8"):
            names.append(path.stem)
    return names


def create(opt: Any) -> nn.Module:
    """Build a fresh ``-netType`` model from the flags: ``models/<netType>.py``'s ``create_model(opt)``."""
    name = str(opt.netType)
    if name not in available():
        raise UserError(
            f"unknown -netType {name!r}: there is no models/{name}.py with a create_model(opt) function "
            f"(available: {', '.join(available())}). To add a network, write models/{name}.py defining "
            f"create_model(opt) -> torch.nn.Module.")
    module = importlib.import_module(f"{__name__}.{name}")
    return module.create_model(opt)


def replace_classifier(model: nn.Module, n_classes: int) -> nn.Linear:
    """Replace the model's last child, which must be an ``nn.Linear``, by ``nn.Linear(in, n_classes)`` with the
    default weight init and a zero bias (port of the ``-resetClassifier`` block of models/init.lua)."""
    children = list(model.named_children())
    if not children or not isinstance(children[-1][1], nn.Linear):
        raise UserError("expected last layer to be fully connected (-resetClassifier replaces the model's last "
                        "module, which must be a Linear layer)")
    name, orig = children[-1]
    linear = nn.Linear(orig.in_features, int(n_classes), device=orig.weight.device, dtype=orig.weight.dtype)
    with torch.no_grad():
        linear.bias.zero_()
    setattr(model, name, linear)
    return linear


_RETRAIN_FIX = "give a model file written by torch.save, such as model_<epoch>.t7"
_RESUME_FIX = "the run's files are damaged: resume from another copy, or -retrain an earlier model_<epoch>.t7"


def load_model_file(path: str | os.PathLike, flag: str = "-retrain", fix: str = _RETRAIN_FIX) -> Any:
    """Read a Lua ``.t7`` model file and check that it holds an ``nn`` module (errors name ``flag``)."""
    try:
        obj = t7.load(path)
    except t7.T7FormatError as err:
        raise unreadable_t7(f"{flag} {path}", path, err, fix) from None
    if not isinstance(obj, t7.TorchObject):
        raise UserError(f"{flag} {path} does not contain a Lua nn model (found a {type(obj).__name__}); "
                        f"expected a model file such as model_<epoch>.t7, not latest.t7 or an optimState file")
    return obj


def _image_size(dataset: str) -> int:
    return 224 if dataset == "imagenet" else 32


def check_fits_dataset(model: nn.Module, opt: Any, what: str) -> None:
    """Check that a model loaded from a file (``what``: e.g. ``'-retrain model.t7'``) takes ``-dataset``'s
    images and gives a score for each class (``-nClasses`` with ``-resetClassifier``).

    A file made for another dataset (an ImageNet net with CIFAR flags, a CIFAR-10 net for CIFAR-100) is
    used as saved when it does not match the flags (see :func:`setup`) and would otherwise fail deep inside
    the first batch. Runs one zero image through ``model`` in eval mode.
    """
    size = _image_size(opt.dataset)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            param = next(model.parameters(), None)
            like = param if param is not None else torch.zeros(())
            out = model(like.new_zeros(1, 3, size, size))
    except (RuntimeError, ValueError, IndexError) as err:  # shape errors of a net made for other images
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{what}: the network does not take -dataset {opt.dataset} images (3x{size}x{size}): "
                        f"{first}. It was made for another dataset: pass that dataset's flags "
                        f"(-dataset, -netType, -depth) or train a new model without -retrain/-resume") from None
    finally:
        model.train(was_training)
    reset = getattr(opt, "resetClassifier", False)
    n_classes = int(opt.nClasses) if reset else CIFAR_CLASSES.get(opt.dataset)  # ImageNet folders vary
    width = out.shape[-1] if out.dim() == 2 else None
    if n_classes and width != n_classes:  # fewer scores: labels out of range; more: another dataset's net
        got = f"{width} class scores" if width is not None else f"an output of shape {tuple(out.shape)}"
        raise UserError(f"{what}: the network gives {got} but -dataset {opt.dataset} has {n_classes} classes; "
                        f"pass -resetClassifier true -nClasses {n_classes} to fine-tune it with a new classifier")


def _import_weights(model: nn.Module, lua_model: Any, path: str, model_tree: Any = None) -> nn.Module:
    """Copy ``lua_model``'s weights into ``model``; when the trees differ, use the converted Lua model instead.

    ``model_tree`` is ``model``'s Lua tree when the caller already exported it (its layer sequence is all
    that is compared)."""
    try:
        reason = structure_mismatch(model_tree if model_tree is not None else lua_nn.to_lua(model), lua_model)
    except lua_nn.LuaModelError:  # a user's model without a Lua form: match on the parameters alone
        reason = None
    if reason is None:
        try:
            load_lua_weights(model, lua_model)
            return model
        except LuaWeightsMismatch as err:
            reason = str(err)
    print(f"=> The network in {path} does not match the flags ({reason}); "
          f"using the network as saved in the file instead")
    return lua_nn.from_lua(lua_model)


def check_retrain(opt: Any) -> str | None:
    """The ``-retrain`` file (None for ``none``), checked to be a file: main.py asks before building anything."""
    source = str(getattr(opt, "retrain", "none"))
    if source == "none":
        return None
    if os.path.isdir(source):
        raise UserError(f"-retrain {source} is a folder; give a model file such as {source}/model_best.t7 "
                        f"(use -resume {source} to continue that run)")
    if not os.path.isfile(source):
        raise UserError(f"File not found: {source}")
    return source


def setup(opt: Any, checkpoint: Mapping[str, Any] | None = None) -> tuple[nn.Module, nn.Module]:
    """Port of ``M.setup(opt, checkpoint)``; returns ``(model, criterion)``.

    ``checkpoint`` is ``None`` for a fresh run, or the ``latest.t7`` table of ``-resume`` as a mapping with
    ``epoch``, ``modelFile``, ``optimFile`` and, preferably, ``model_path`` (the model file to load). Without
    ``model_path`` the file is ``<opt.resume>/<modelFile>``.
    The model stays on one process: the caller wraps it for several GPUs. It is moved to ``opt.device`` when
    ``opt`` has that attribute, and converted to float64 for ``-precision double``.
    """
    print(f"=> Creating model from file: models/{opt.netType}.py")
    model = create(opt)
    model_tree = None  # the Lua tree of the model built from the flags, exported at most once
    if getattr(model, "print_lua_tree", False) and getattr(opt, "printModel", True):
        model_tree = lua_nn.to_lua(model)
        print(lua_nn.lua_str(lua_nn.from_lua(model_tree)))

    source = None
    if checkpoint is not None:
        source = checkpoint.get("model_path") or os.path.join(str(opt.resume), str(checkpoint["modelFile"]))
        if not os.path.isfile(source):
            raise UserError(f"Saved model not found: {source} (named by {opt.resume}/latest.t7; "
                            f"resume from a complete -save folder or remove its latest.t7 to start afresh)")
        flag, fix = f"-resume {opt.resume}: model file", _RESUME_FIX
        print(f"=> Resuming model from {source}")
        if getattr(opt, "resetClassifier", False):
            replace_classifier(model, opt.nClasses)  # §9 #10: the checkpoint has the nClasses-way classifier
    elif str(getattr(opt, "retrain", "none")) != "none":
        source = check_retrain(opt)
        flag, fix = "-retrain", _RETRAIN_FIX
        print(f"Loading model from file: {source}")
    if source is not None and checkpoint is None and torchvision_weights.is_torch_file(source):
        model = torchvision_weights.load_file(model, source, opt, flag)  # a torchvision state dict (.pth)
    elif source is not None:
        model = _import_weights(model, load_model_file(source, flag, fix), source, model_tree)

    if getattr(opt, "resetClassifier", False) and checkpoint is None:
        print(f" => Replacing classifier with {lua_number(opt.nClasses)}-way classifier")
        replace_classifier(model, opt.nClasses)

    model = model.double() if getattr(opt, "precision", "single") == "double" else model.float()
    if getattr(opt, "device", None) is not None:
        model = model.to(opt.device)
    return model, nn.CrossEntropyLoss()
