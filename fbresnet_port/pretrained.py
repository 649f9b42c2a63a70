"""Pretrained ImageNet models end to end: port of fb.resnet.torch ``pretrained/classify.lua`` and
``pretrained/extract-features.lua`` (the scripts ``pretrained/classify.py`` and
``pretrained/extract-features.py`` call :func:`classify_main` / :func:`extract_main`).

Both load a model (a Lua ``.t7`` that :func:`fbresnet_port.load_lua_model` converts, e.g. fb.resnet.torch's
ResNets, a DenseNet, a ``model_best.t7`` of main.lua or main.py, or a ``python -m fbresnet_port.convert``
``.pt`` file), preprocess every image as the Lua validation pipeline does (``image.load(f, 3, 'float')``
-> Scale(256) -> ColorNormalize(ImageNet mean/std) -> CenterCrop(224), with the Lua-exact transforms of
``datasets/transforms.py``), and run the network in evaluation mode.

Differences from the Lua scripts (PARITY §9 #33 and the port's fixes): they run from any folder, on CPU
or GPU (``-device``), read images of any mode (grey, RGBA, CMYK, palette: converted to RGB, alpha dropped),
batch the images in both scripts (``-batchSize``), list a batch-mode folder sorted and filtered to image
files, report an unreadable image on one line and go on with the others (exit status 1 at the end), and
take ``--topk``/``--json``/``--labels``/``--output`` options.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import click
import torch
from torch import nn

from datasets import transforms as T
from datasets.imagenet import MEANSTD, UnreadableImage, load_image

from . import cpu_memory, t7
from .errors import UserError, run_click
from .metrics import lua_tostring

__all__ = ["IMAGE_EXTENSIONS", "imagenet_labels", "load_network", "strip_classifier", "preprocess",
           "Network", "Batch", "iter_batches", "list_images", "classify_main", "extract_main"]

# Extensions of the files batch mode takes from a folder (case-insensitive); imagenet-gen's list plus
# the other formats Pillow reads.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".gif",
                              ".tif", ".tiff", ".webp"})
PRECISIONS = ("single", "half", "double")
SCALE, CROP = 256, 224


class ArgumentError(UserError):
    """A wrong command line of classify.py / extract-features.py (printed as one line, exit status 1)."""


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in sorted-wnid order (class i+1 of the Lua models is index i).

    Taken from torchvision's weight metadata (no download); pretrained/imagenet.lua has the same order
    with longer names. The list is read from torchvision's source without importing torchvision (which
    takes seconds); if that file has moved, from ``ResNet50_Weights.IMAGENET1K_V1.meta``.
    """
    import ast
    import importlib.util

    spec = importlib.util.find_spec("torchvision")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            tree = ast.parse(Path(folder, "models", "_meta.py").read_text(encoding="utf-8"))
        except (OSError, SyntaxError):
            continue
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and getattr(node.targets[0], "id", None) == "_IMAGENET_CATEGORIES"):
                labels = ast.literal_eval(node.value)
                if isinstance(labels, list) and len(labels) == 1000:
                    return labels
    from torchvision.models import ResNet50_Weights
    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def preprocess() -> T.Compose:
    """classify.lua's transform: Scale(256) -> ColorNormalize(ImageNet meanstd) -> CenterCrop(224)."""
    return T.Compose([T.Scale(SCALE), T.ColorNormalize(MEANSTD), T.CenterCrop(CROP)])


def _is_zip(path: str | os.PathLike) -> bool:
    try:
        return t7.torch_save_format(path) == "zip"
    except OSError as e:
        raise UserError(f"cannot read the model file {path} ({e.strerror or e})") from None


def load_network(path: str | os.PathLike) -> nn.Module:
    """The network in ``path`` as a PyTorch module in eval mode (``torch.load(arg[1])`` of the scripts).

    A Lua ``.t7`` holding an ``nn`` module is converted with :func:`fbresnet_port.lua_nn.from_lua`; a zip
    file must be a ``python -m fbresnet_port.convert`` output.
    """
    from models import load_model_file
    from .lua_nn import from_lua

    if not os.path.isfile(path):
        raise UserError(f"Model file not found at {path}")
    if _is_zip(path):
        from .convert import load_converted
        model = load_converted(path)
    else:
        model = from_lua(load_model_file(path, "MODEL", "give a model file written by torch.save, "
                                                        "such as resnet-50.t7 or model_best.t7"))
    return model.eval()


def strip_classifier(model: nn.Module, what: str = "MODEL") -> nn.Module:
    """Replace the network's last module, which must be an ``nn.Linear``, by an identity, in place.

    extract-features.lua's ``assert(torch.type(model:get(#model.modules)) == 'nn.Linear')`` and
    ``model:remove(#model.modules)``; works for the Lua-converted ``nn.Sequential`` and for this port's
    native models (ResNet ``fc``, DenseNet ``classifier``).
    """
    children = list(model.named_children())
    last = children[-1][1] if children else None
    if not isinstance(last, nn.Linear):
        found = type(last).__name__ if last is not None else "nothing"
        found = getattr(last, "lua_typename", found)
        raise UserError(f"{what}: the network's last module is {found}, not a Linear classifier; "
                        f"extract-features takes the output of the layer before the last Linear layer")
    setattr(model, children[-1][0], nn.Identity())
    return model


@dataclass
class Batch:
    """Preprocessed images: ``paths[i]`` is ``images[i]``; ``errors`` are the unreadable files' messages."""

    paths: list[str]
    images: Optional[torch.Tensor]
    errors: list[str]


def iter_batches(paths: Sequence[str], batch_size: int,
                 transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Iterator[Batch]:
    """Load and preprocess ``paths`` in order, ``batch_size`` readable images per batch (the last may be
    smaller); an unreadable image is reported in its batch's ``errors`` and skipped."""
    transform = transform or preprocess()
    pending: list[tuple[str, torch.Tensor]] = []
    errors: list[str] = []
    for path in paths:
        try:
            pending.append((path, transform(load_image(path))))
        except UnreadableImage as err:
            errors.append(str(err))
        if len(pending) == batch_size:
            yield Batch([p for p, _ in pending], torch.stack([x for _, x in pending]), errors)
            pending, errors = [], []
    if pending or errors:
        images = torch.stack([x for _, x in pending]) if pending else None
        yield Batch([p for p, _ in pending], images, errors)


class Network:
    """A model on a device in eval mode; calling it on a batch gives float32 CPU outputs, N x D.

    ``precision``: ``single`` (float32), ``double`` or ``half`` (autocast: float16 on CUDA, bfloat16 on
    CPU, weights kept in float32, as main.py's ``-precision half``).
    """

    def __init__(self, model: nn.Module, device: str = "cpu", precision: str = "single"):
        if precision not in PRECISIONS:
            raise UserError(f"-precision {precision}: must be one of {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = torch.float64 if precision == "double" else torch.float32
        self.model = model.to(self.device, self.dtype).eval()
        if self.device.type == "cpu":
            cpu_memory.retain_freed_memory()  # as main.py: no page faults for re-allocated activations

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision != "half":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.float16 if self.device.type == "cuda"
                              else torch.bfloat16)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, self.dtype, non_blocking=True)
        with self._autocast():
            out = self.model(x)
        return out.reshape(out.shape[0], -1).float().cpu()


def resolve_device(device: str) -> str:
    """``-device auto|cpu|cuda`` as main.py reads it (auto = cuda when available)."""
    from .opts import _resolve_device
    return _resolve_device(device)


_LUA_NUMBER = re.compile(r"\s*[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*")


def list_images(folder: str) -> list[str]:
    """Batch mode's file list: ``folder/name`` for the image files in ``folder``, sorted by name
    (Lua: every entry but ``.`` and ``..``, in ``lfs.dir`` order)."""
    if not os.path.isdir(folder):
        raise ArgumentError(f"directory not found: {folder}")
    names = sorted(n for n in os.listdir(folder)
                   if Path(n).suffix.lower() in IMAGE_EXTENSIONS and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise ArgumentError(f"no image files in {folder} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return [os.path.join(folder, n) for n in names]


# ---------------------------------------------------------------------------------------------
# Command lines

_COMMON = [
    click.option("-device", "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                 show_default=True, help="auto = cuda when available"),
    click.option("-precision", "--precision", type=click.Choice(PRECISIONS), default="single",
                 show_default=True, help="half = float16 (CUDA) / bfloat16 (CPU) autocast"),
    click.option("-batchSize", "--batch-size", "batch_size", type=int, default=16, show_default=True,
                 help="images per forward pass"),
]


def _common_options(f: Callable) -> Callable:
    for option in reversed(_COMMON):
        f = option(f)
    return f


def _check_batch_size(n: int) -> None:
    if n < 1:
        raise ArgumentError(f"-batchSize {n}: must be a positive integer")


def _lua_tonumber(text: str) -> float:
    """Lua's ``tonumber`` of a string that :data:`_LUA_NUMBER` matched (decimal or hexadecimal)."""
    text = text.strip()
    body = text.lstrip("+-")
    value = float(int(body, 16)) if body[:2].lower() == "0x" else float(body)
    return -value if text.startswith("-") else value


def _apply(net: Network, images: torch.Tensor, model_path: str) -> torch.Tensor:
    """``net(images)`` with a network that cannot take the images reported as a :class:`UserError`."""
    try:
        out = net(images)
        if out.shape[0] != images.shape[0]:     # e.g. a CIFAR net's View folding 7x7 positions into the batch
            raise ValueError(f"a batch of {images.shape[0]} gave {out.shape[0]} rows of output")
        return out
    except torch.cuda.OutOfMemoryError:
        raise UserError(f"out of GPU memory with batches of {images.shape[0]} images: "
                        f"use a smaller -batchSize or -device cpu") from None
    except (RuntimeError, ValueError, IndexError) as err:      # shape errors of a net made for other images
        lines = str(err).strip().splitlines()
        raise UserError(f"{model_path}: the network does not take 3x{CROP}x{CROP} ImageNet images "
                        f"({lines[0] if lines else type(err).__name__}); give an ImageNet model") from None


def _setup(model_path: str, device: str, precision: str, features: bool) -> Network:
    device = resolve_device(device)
    model = load_network(model_path)
    if features:
        strip_classifier(model, model_path)
    return Network(model, device, precision)


def _read_labels(path: Optional[str], n_classes: int) -> list[str]:
    if path is not None:
        try:
            labels = [line.rstrip("\r\n") for line in open(path, encoding="utf-8")]
        except OSError as e:
            raise UserError(f"--labels {path}: cannot read ({e.strerror or e})") from None
        labels = [s for s in labels if s.strip()]
        if len(labels) != n_classes:
            raise UserError(f"--labels {path} has {len(labels)} names but the network gives "
                            f"{n_classes} class scores; give one name per line, in class order")
        return labels
    if n_classes == 1000:
        return imagenet_labels()
    return [str(i) for i in range(1, n_classes + 1)]      # a fine-tuned net: the 1-based class index


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("args", nargs=-1, metavar="MODEL FILE...")
@_common_options
@click.option("--topk", "-topk", type=int, default=5, show_default=True, help="classes printed per image")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document instead of the Lua text")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="class names, one per line (default: ImageNet's 1000 for a 1000-class net)")
def _classify(args: tuple[str, ...], device: str, precision: str, batch_size: int, topk: int,
              as_json: bool, labels: Optional[str]) -> int:
    """classify.py MODEL FILE...: the top classes of each image (port of classify.lua)."""
    prog = click.get_current_context().info_name
    if len(args) < 2:
        raise ArgumentError(f"Usage: {prog} [MODEL] [FILE]... (options: see {prog} --help)")
    for f in args:
        if not os.path.isfile(f):
            raise ArgumentError(f"file not found: {f}")
    _check_batch_size(batch_size)
    if topk < 1:
        raise ArgumentError(f"--topk {topk}: must be a positive integer")
    net = _setup(args[0], device, precision, features=False)
    names: Optional[list[str]] = None
    failed = 0
    results = []
    for batch in iter_batches(args[1:], batch_size):
        for err in batch.errors:
            click.echo(err, err=True)
        failed += len(batch.errors)
        if batch.images is None:
            continue
        probs = torch.softmax(_apply(net, batch.images, args[0]), dim=1)
        if names is None:
            names = _read_labels(labels, probs.shape[1])
        top_p, top_i = probs.topk(min(topk, probs.shape[1]), dim=1, largest=True, sorted=True)
        for path, ps, idx in zip(batch.paths, top_p.tolist(), top_i.tolist()):
            if as_json:
                results.append({"path": path, "predictions": [
                    {"class": i + 1, "label": names[i], "prob": p} for p, i in zip(ps, idx)]})
                continue
            lines = [f"Classes for\t{path}"] + [f"{lua_tostring(p)}\t{names[i]}" for p, i in zip(ps, idx)]
            click.echo("\n".join(lines) + "\n")
    if as_json:
        click.echo(json.dumps(results, indent=1))
    if failed:
        click.echo(f"{failed} of {len(args) - 1} images could not be read", err=True)
    return 1 if failed else 0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("args", nargs=-1, metavar="MODEL FILE... | MODEL BATCH_SIZE DIRECTORY")
@_common_options
@click.option("-o", "--output", default="features.t7", show_default=True,
              help="where to write {features=FloatTensor[N x D], image_list={...}}")
def _extract(args: tuple[str, ...], device: str, precision: str, batch_size: int, output: str) -> int:
    """extract-features.py MODEL FILE... | MODEL BATCH_SIZE DIR: the features of the layer before the
    last Linear layer (port of extract-features.lua), saved as a Lua-readable .t7."""
    prog = click.get_current_context().info_name
    if len(args) < 2:
        raise ArgumentError(f"Usage: {prog} [MODEL] [FILE]... | {prog} [MODEL] [BATCH_SIZE] [DIRECTORY]")
    if not os.path.isfile(args[0]):
        raise ArgumentError(f"Model file not found at {args[0]}")
    if _LUA_NUMBER.fullmatch(args[1]):          # Lua: tonumber(arg[2]) ~= nil => batch mode
        if len(args) != 3:
            raise ArgumentError(f"batch mode takes MODEL BATCH_SIZE DIRECTORY, got {len(args)} arguments")
        number = _lua_tonumber(args[1])
        if not number.is_integer() or number < 1:
            raise ArgumentError(f"BATCH_SIZE {args[1]}: must be a positive integer")
        batch_size = int(number)
        files = list_images(args[2])
    else:
        files = list(args[1:])
        for f in files:
            if not os.path.isfile(f):
                raise ArgumentError(f"file not found: {f}")
    _check_batch_size(batch_size)
    out_dir = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(out_dir):
        raise ArgumentError(f"--output {output}: folder {out_dir} does not exist")
    net = _setup(args[0], device, precision, features=True)
    rows: list[torch.Tensor] = []
    image_list: list[str] = []
    failed = 0
    for batch in iter_batches(files, min(batch_size, len(files))):
        for err in batch.errors:
            click.echo(err, err=True)
        failed += len(batch.errors)
        if batch.images is not None:
            rows.append(_apply(net, batch.images, args[0]))
            image_list += batch.paths
    if not rows:
        raise UserError(f"none of the {len(files)} images could be read; nothing saved")
    t7.save(output, {"features": torch.cat(rows).float().contiguous(), "image_list": image_list})
    click.echo(f"saved features to {output}")
    if failed:
        click.echo(f"{failed} of {len(files)} images could not be read (left out of {output})", err=True)
    return 1 if failed else 0


def classify_main(argv: Optional[Sequence[str]] = None, prog: str = "classify.py") -> int:
    """Entry point of ``pretrained/classify.py``; returns the exit status."""
    return run_click(_classify, argv, prog)


def extract_main(argv: Optional[Sequence[str]] = None, prog: str = "extract-features.py") -> int:
    """Entry point of ``pretrained/extract-features.py``; returns the exit status."""
    return run_click(_extract, argv, prog)
