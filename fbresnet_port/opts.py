"""Command-line options: port of ``opts.lua`` (liuzhuang13/DenseNet, a superset of fb.resnet.torch's).

Every Lua flag is kept with its spelling (single dash, camelCase), type, default (the DenseNet
repo's: ``-dataset cifar10 -depth 20``), help text and declaration order, and the parsed ``opt``
gets the same post-processing as ``opts.lua`` (booleans, ``-save`` mkdir, dataset defaults for
``-nEpochs``/``-shortcutType``, ``tensorType``, consistency checks). The options are declared as a
:mod:`click` command; a small scanner in front of it keeps ``torch.CmdLine``'s token rules
(``-flag value`` only, exact case-sensitive keys, a value is always the next word even if it starts
with a dash, last repeat wins, ``-h``/``-help``/``--help`` print the help).

Deliberate differences from the Lua code (each named in the error or note it produces):

* errors are raised as :class:`OptionError` (a :class:`~fbresnet_port.errors.UserError`) with the
  Lua message (without its ``error:`` prefix) plus a hint, instead of printing the whole help;
  misspelt flags get a suggestion (``-lr`` -> ``did you mean -LR?``);
* integer-valued options (``-batchSize``, ``-depth``, ``-nEpochs`` ...) reject fractions, and
  ``-batchSize``/``-nGPU`` must be >= 1, ``-nThreads``/``-nEpochs`` >= 0 (Lua accepted
  ``-batchSize 64.5``); numbers must be finite;
* ``-cudnn`` must be ``fastest``, ``default`` or ``deterministic`` (Lua ignored typos);
* ``-tenCrop`` is refused for CIFAR and for ``-batchSize`` < 10 (the Lua code crashed / made
  empty batches);
* ``-device auto|cpu|cuda`` is new (the Lua code could only run on CUDA);
* flags that mean nothing in PyTorch (``-backend``, ``-optimState``, ``-optnet``,
  ``-shareGradInput``) are accepted and explained once on stderr with a ``note:`` line, as is a
  boolean value other than ``true``/``false`` (it counts as true, as in Lua) and an ``-lrShape``
  that is neither ``multistep`` nor ``cosine`` (the LR then stays constant, as in Lua).

``-save`` is created by :func:`parse` like Lua (single level, no parents); pass
``check_dirs=False`` to skip it and the ImageNet ``-data`` checks (tests, tools).
"""
from __future__ import annotations

import difflib
import math
import os
import sys
import types
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import click

from .errors import UserError

__all__ = [
    "Options", "OptionError", "OptionSpec", "OPTIONS", "HELP_FLAGS", "command", "parse",
    "default_options", "help_text", "apply_backend_flags",
]

HELP_FLAGS = ("-h", "-help", "--help")
TRUE_FALSE = ("true", "false")
DATASETS = ("imagenet", "cifar10", "cifar100")
TENSOR_TYPES = {"single": "torch.CudaTensor", "double": "torch.CudaDoubleTensor",
                "half": "torch.CudaHalfTensor"}
CUDNN_MODES = ("fastest", "default", "deterministic")
DEVICES = ("auto", "cpu", "cuda")
LR_SHAPES = ("multistep", "cosine")


class OptionError(UserError):
    """A wrong command line or option value (``cmd:error`` in ``torch.CmdLine``)."""


@dataclass(frozen=True)
class OptionSpec:
    """One ``cmd:option(key, default, help)`` line.

    ``kind`` is ``'string'``, ``'number'``, ``'integer'`` (a Lua number that must be whole) or
    ``'boolean'`` (a Lua string turned into a bool by ``value ~= 'false'``); ``minimum`` bounds
    numbers; ``lua`` is False for options the Lua code does not have.
    """
    key: str
    default: Any
    help: str
    kind: str = "string"
    minimum: float | None = None
    lua: bool = True

    @property
    def name(self) -> str:
        return self.key[1:]


def _o(key: str, default: Any, help: str, kind: str | None = None, **kw: Any) -> OptionSpec:
    if kind is None:
        kind = "number" if isinstance(default, (int, float)) else "string"
    return OptionSpec(key, default, help, kind, **kw)


# Declaration order = help order (opts.lua of liuzhuang13/DenseNet, plus -device).
OPTIONS: tuple[OptionSpec, ...] = (
    # General options
    _o("-data", "", "Path to dataset"),
    _o("-dataset", "cifar10", "Options: imagenet | cifar10 | cifar100"),
    _o("-manualSeed", 0, "Manually set RNG seed", "integer"),
    _o("-nGPU", 1, "Number of GPUs to use by default", "integer", minimum=1),
    _o("-backend", "cudnn", "Options: cudnn | cunn (no effect in PyTorch)"),
    _o("-cudnn", "fastest", "Options: fastest | default | deterministic"),
    _o("-gen", "gen", "Path to save generated files"),
    _o("-precision", "single", "Options: single | double | half (half = mixed precision)"),
    _o("-device", "auto", "Options: auto | cpu | cuda (auto = cuda when available)", lua=False),
    # Data options
    _o("-nThreads", 2, "number of data loading threads", "integer", minimum=0),
    # Training options
    _o("-nEpochs", 0, "Number of total epochs to run", "integer", minimum=0),
    _o("-epochNumber", 1, "Manual epoch number (useful on restarts)", "integer"),
    _o("-batchSize", 32, "mini-batch size (1 = pure stochastic)", "integer", minimum=1),
    _o("-testOnly", "false", "Run on validation set only", "boolean"),
    _o("-tenCrop", "false", "Ten-crop testing", "boolean"),
    # Checkpointing options
    _o("-save", "checkpoints", "Directory in which to save checkpoints"),
    _o("-resume", "none", "Resume from the latest checkpoint in this directory"),
    # Optimization options
    _o("-LR", 0.1, "initial learning rate"),
    _o("-momentum", 0.9, "momentum"),
    _o("-weightDecay", 1e-4, "weight decay"),
    _o("-lrShape", "multistep", "Learning rate: multistep|cosine"),
    # Model options
    _o("-netType", "resnet", "Options: resnet | preresnet | densenet"),
    _o("-depth", 20, "ResNet depth: 18 | 34 | 50 | 101 | ...", "integer"),
    _o("-shortcutType", "", "Options: A | B | C"),
    _o("-retrain", "none", "Path to model to retrain with"),
    _o("-optimState", "none", "Path to an optimState to reload from"),
    _o("-shareGradInput", "false", "Share gradInput tensors to reduce memory usage", "boolean"),
    _o("-optnet", "false", "Use optnet to reduce memory usage", "boolean"),
    _o("-resetClassifier", "false", "Reset the fully connected layer for fine-tuning", "boolean"),
    _o("-nClasses", 0, "Number of classes in the dataset", "integer"),
    # Model options for DenseNet
    _o("-growthRate", 12, "Number of output channels at each convolutional layer", "integer"),
    _o("-bottleneck", "true", "Use 1x1 convolution to reduce dimension (DenseNet-B)", "boolean"),
    _o("-reduction", 0.5, "Channel compress ratio at transition layer (DenseNet-C)"),
    _o("-dropRate", 0, "Dropout probability"),
    _o("-optMemory", 2, "Optimize memory for DenseNet: 0 | 1 | 2 | 3 | 4 | 5", "integer"),
    # Used when depth is not one of 121, 161, 169, 201 (ImageNet only)
    _o("-d1", 0, "Number of layers in block 1", "integer"),
    _o("-d2", 0, "Number of layers in block 2", "integer"),
    _o("-d3", 0, "Number of layers in block 3", "integer"),
    _o("-d4", 0, "Number of layers in block 4", "integer"),
)
_BY_KEY = {spec.key: spec for spec in OPTIONS}
_BY_NAME = {spec.name: spec for spec in OPTIONS}

# cmd:text() lines before the options (torch.CmdLine prints them in this order).
_HEADER = ("", "Torch-7 ResNet Training script",
           "See https://github.com/facebook/fb.resnet.torch/blob/master/TRAINING.md for examples",
           "", "Options:")


class Options(types.SimpleNamespace):
    """The parsed ``opt`` table: attributes with the Lua field names (``opt.LR``, ``opt.netType``).

    ``vars(opt)`` / :meth:`as_dict` give a plain dict of str/int/float/bool values (what checkpoints
    and DenseNet's custom layers embed); ``dtype`` and ``amp`` are derived from ``precision``.
    """

    def as_dict(self) -> dict[str, Any]:
        """All fields as a plain dict."""
        return dict(vars(self))

    def as_lua_dict(self) -> dict[str, Any]:
        """Only the fields the Lua ``opt`` table has (for writing Lua checkpoints)."""
        extra = {spec.name for spec in OPTIONS if not spec.lua} | {"cudnnBenchmark",
                                                                   "cudnnDeterministic"}
        return {k: v for k, v in vars(self).items() if k not in extra}

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    @property
    def dtype(self):
        """Parameter dtype: float64 for ``-precision double``, else float32 (half keeps fp32 masters)."""
        import torch
        return torch.float64 if self.precision == "double" else torch.float32

    @property
    def amp(self) -> bool:
        """True for ``-precision half``: autocast with float32 master weights."""
        return self.precision == "half"


# ---------------------------------------------------------------------------------------------
# Values

def _lua_number_string(value: float) -> str:
    """Lua ``tostring`` of a number (``%.14g``)."""
    return "%.14g" % value


def _default_string(value: Any) -> str:
    return _lua_number_string(value) if isinstance(value, (int, float)) else str(value)


def _tonumber(text: str) -> float | None:
    """Lua ``tonumber`` for decimal and hexadecimal strings; None when not a number."""
    s = text.strip()
    if not s or "_" in s:
        return None
    try:
        return float(s)
    except ValueError:
        pass
    body = s[1:] if s[:1] in "+-" else s
    if body[:2].lower() == "0x":
        try:
            value = float(int(body[2:], 16))
        except ValueError:
            return None
        return -value if s.startswith("-") else value
    return None


def _number(spec: OptionSpec, value: Any) -> int | float:
    """Convert a command-line word (or a Python number) for a number option; int when integral."""
    if isinstance(value, bool):
        raise OptionError(f"invalid type for option {spec.key} (should be number, got {value!r})")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        number = _tonumber(str(value))
        if number is None:
            raise OptionError(f"invalid type for option {spec.key} (should be number, "
                              f"got {value!r})")
    if not math.isfinite(number):
        raise OptionError(f"invalid value for option {spec.key} (should be a finite number, "
                          f"got {value})")
    integral = number == int(number)
    if spec.kind == "integer" and not integral:
        raise OptionError(f"invalid value for option {spec.key} (should be a whole number, "
                          f"got {_lua_number_string(number)})")
    if spec.minimum is not None and number < spec.minimum:
        raise OptionError(f"invalid value for option {spec.key} (should be at least "
                          f"{_lua_number_string(spec.minimum)}, got {_lua_number_string(number)})")
    return int(number) if integral else number


def _coerce(spec: OptionSpec, value: Any) -> Any:
    """Value for ``spec`` from a command-line word or a Python value (``default_options``)."""
    if spec.kind in ("number", "integer"):
        return _number(spec, value)
    if spec.kind == "boolean" and isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise OptionError(f"invalid type for option {spec.key} (should be string, got {value!r})")
    return value


class _LuaValue(click.ParamType):
    """click type converting one option word like ``torch.CmdLine`` (numbers via ``tonumber``)."""

    def __init__(self, spec: OptionSpec):
        self.spec = spec
        self.name = spec.kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return _coerce(self.spec, value)
        except OptionError as e:
            self.fail(str(e), param, ctx)


# ---------------------------------------------------------------------------------------------
# click command and help

class _CmdLineCommand(click.Command):
    """A click command whose help has ``torch.CmdLine``'s layout."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write(help_text(ctx.info_name or "main.py"))


def help_text(prog: str = "main.py") -> str:
    """Help in ``torch.CmdLine:help`` layout: usage, text lines, one line per option, blank line."""
    width = max(len(spec.key) for spec in OPTIONS)
    lines = [f"Usage: {prog} [options]", *_HEADER]
    for spec in OPTIONS:
        lines.append(f"  {spec.key.ljust(width)} {spec.help} [{_default_string(spec.default)}]")
    lines.append("")
    return "\n".join(lines) + "\n"


def _make_command() -> click.Command:
    params = [click.Option([spec.key, spec.name], type=_LuaValue(spec), default=spec.default,
                           help=spec.help) for spec in OPTIONS]
    return _CmdLineCommand("main.py", params=params, add_help_option=False,
                           context_settings={"ignore_unknown_options": False})


command: click.Command = _make_command()


# ---------------------------------------------------------------------------------------------
# Token scanner (torch.CmdLine:parse rules) and suggestions

def _suggest(word: str) -> str | None:
    """The option key closest to ``word`` (case-insensitive and dash-insensitive first)."""
    base = word.split("=", 1)[0]
    stem = base.lstrip("-")
    for spec in OPTIONS:
        if spec.name.lower() == stem.lower():
            return spec.key
    lowered = {spec.name.lower(): spec.key for spec in OPTIONS}
    close = difflib.get_close_matches(stem.lower(), lowered, n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def _invalid_argument(word: str, previous: tuple[str, str] | None, prog: str) -> OptionError:
    """Error for a word that is not an option key (Lua: ``invalid argument: <word>``)."""
    hint = None
    base = word.split("=", 1)[0]
    if "=" in word and base.lstrip("-") in _BY_NAME:
        key = "-" + base.lstrip("-")
        hint = f"write the value as a separate word: {key} {word.split('=', 1)[1]}"
    elif word.startswith("--") and word[2:] in _BY_NAME:
        hint = f"options take a single dash: -{word[2:]}"
    elif word.startswith("-"):
        key = _suggest(word)
        if key:
            hint = f"did you mean {key}?"
    if hint is None and previous is not None and previous[1] in _BY_KEY:
        hint = (f"{previous[0]} took '{previous[1]}' as its value; every option needs a value, "
                f"e.g. {previous[0]} true")
    if hint is None:
        hint = f"options are written '-name value'; run '{prog} -h' to list them"
    return OptionError(f"invalid argument: {word} ({hint})")


def _scan(argv: Sequence[str], prog: str) -> set[str]:
    """Check the word structure like ``torch.CmdLine:parse``; print help and exit 0 on a help flag.

    Returns the names of the options that were given.
    """
    given: set[str] = set()
    previous: tuple[str, str] | None = None
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in HELP_FLAGS:
            sys.stdout.write(help_text(prog))
            sys.stdout.flush()
            raise SystemExit(0)
        spec = _BY_KEY.get(word)
        if spec is None:
            raise _invalid_argument(word, previous, prog)
        if i + 1 >= len(argv):
            raise OptionError(f"missing argument for option {word}")
        given.add(spec.name)
        previous = (word, argv[i + 1])
        i += 2
    return given


# ---------------------------------------------------------------------------------------------
# Post-processing (opts.lua after cmd:parse)

def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


def _unknown_choice(what: str, value: str, choices: Iterable[str]) -> OptionError:
    choices = tuple(choices)
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]}? " if close else ""
    return OptionError(f"unknown {what}: {value} ({hint}options: {' | '.join(choices)})")


def _make_save_dir(path: str) -> None:
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):  # found now, not when the first epoch is saved
            raise OptionError(f"checkpoint directory is not writable: {path} (choose another -save)")
        return
    if os.path.exists(path):
        raise OptionError(f"-save {path} is a file, not a directory (choose another -save)")
    try:
        os.mkdir(path)  # single level, as paths.mkdir
    except OSError as e:
        raise OptionError(f"unable to create checkpoint directory: {path} "
                          f"({e.strerror or e}; create its parent or choose another -save)") from None


def _resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise _unknown_choice("device", device, DEVICES)
    if device == "cpu":
        return "cpu"
    import torch
    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise OptionError("-device cuda: CUDA is not available on this machine "
                          "(use -device cpu or -device auto)")
    return "cpu"


def _finish(values: dict[str, Any], given: set[str], *, check_dirs: bool, notes: bool) -> Options:
    """Apply opts.lua's post-processing (in its order) and this port's extra checks."""
    opt = Options(**values)

    # 1. Boolean strings: anything but the exact string 'false' is true.
    for spec in OPTIONS:
        if spec.kind != "boolean":
            continue
        raw = getattr(opt, spec.name)
        if isinstance(raw, str):
            if notes and raw not in TRUE_FALSE:
                _note(f"{spec.key} '{raw}' counts as true: only the exact word 'false' is false "
                      f"(as in the Lua code)")
            setattr(opt, spec.name, raw != "false")

    # 2. Checkpoint directory.
    if check_dirs:
        _make_save_dir(opt.save)

    # 3. Dataset defaults.
    if opt.dataset == "imagenet":
        if check_dirs:
            train_dir = os.path.join(opt.data, "train")
            if not os.path.isdir(opt.data):
                raise OptionError("missing ImageNet data directory (give the folder holding "
                                  "train/ and val/ with -data DIR)")
            if not os.path.isdir(train_dir):
                raise OptionError(f"ImageNet missing `train` directory: {train_dir}")
        opt.shortcutType = opt.shortcutType or "B"
        opt.nEpochs = opt.nEpochs or 90
    elif opt.dataset in ("cifar10", "cifar100"):
        opt.shortcutType = opt.shortcutType or "A"
        opt.nEpochs = opt.nEpochs or 164
    else:
        raise _unknown_choice("dataset", opt.dataset, DATASETS)

    # 4. Precision.
    if opt.precision not in TENSOR_TYPES:
        raise _unknown_choice("precision", opt.precision, TENSOR_TYPES)
    opt.tensorType = TENSOR_TYPES[opt.precision]

    # 5., 6. Consistency checks of opts.lua.
    if opt.resetClassifier and opt.nClasses == 0:
        raise OptionError("-nClasses required when resetClassifier is set")
    if opt.shareGradInput and opt.optnet:
        raise OptionError("cannot use both -shareGradInput and -optnet")

    # This port's checks (the Lua code crashed later or silently ignored these).
    if opt.tenCrop and opt.dataset != "imagenet":
        raise OptionError(f"-tenCrop is only supported with -dataset imagenet (the {opt.dataset} "
                          f"validation images are single 32x32 crops); drop -tenCrop")
    if opt.tenCrop and opt.batchSize < 10:
        raise OptionError(f"-tenCrop needs -batchSize of at least 10 (a batch holds "
                          f"batchSize/10 images x 10 crops), got {opt.batchSize}")
    if opt.cudnn not in CUDNN_MODES:
        raise _unknown_choice("-cudnn mode", opt.cudnn, CUDNN_MODES)
    opt.cudnnBenchmark = opt.cudnn == "fastest"
    opt.cudnnDeterministic = opt.cudnn == "deterministic"
    opt.device = _resolve_device(opt.device)

    if notes:
        if "backend" in given:
            _note("-backend has no effect in PyTorch; PyTorch picks its own kernels "
                  "(cuDNN on CUDA)")
        if opt.optimState != "none":
            _note("-optimState is accepted but never read (as in the Lua code); "
                  "use -resume DIR to continue with a saved optimState")
        for name in ("optnet", "shareGradInput"):
            if getattr(opt, name):
                _note(f"-{name} has no direct PyTorch equivalent (autograd frees buffers "
                      f"itself); it is recorded in opt and only the models' memory options use it")
        if opt.lrShape not in LR_SHAPES:
            _note(f"-lrShape '{opt.lrShape}' is neither multistep nor cosine: the learning rate "
                  f"stays at its initial value for every epoch (as in the Lua code)")
    return opt


# ---------------------------------------------------------------------------------------------
# Public API

def parse(argv: Sequence[str], *, check_dirs: bool = True, prog: str = "main.py") -> Options:
    """Port of ``opts.parse(arg)``: parse ``argv`` (without the program name) into :class:`Options`.

    ``-h``/``-help``/``--help`` print the help to stdout and raise ``SystemExit(0)``; mistakes raise
    :class:`OptionError`. With ``check_dirs`` (default) the ``-save`` directory is created (one
    level, as Lua) and ImageNet's ``-data`` is checked.
    """
    argv = [str(a) for a in argv]
    given = _scan(argv, prog)
    try:
        ctx = command.make_context(prog, list(argv))
    except click.BadParameter as e:
        raise OptionError(e.message) from None
    except click.ClickException as e:  # not expected after _scan; keep the message readable
        raise OptionError(e.format_message()) from None
    values = {spec.name: ctx.params[spec.name] for spec in OPTIONS}  # declaration order
    return _finish(values, given, check_dirs=check_dirs, notes=True)


def default_options(*, check_dirs: bool = False, **overrides: Any) -> Options:
    """The options of an empty command line with ``overrides`` (Lua names) applied, post-processed.

    Values may be Python values (``bottleneck=False``, ``LR=0.05``) or command-line words
    (``bottleneck='false'``). Directories are neither created nor checked unless ``check_dirs``.
    """
    values = {spec.name: spec.default for spec in OPTIONS}
    for name, value in overrides.items():
        spec = _BY_NAME.get(name)
        if spec is None:
            key = _suggest(name)
            hint = f"; did you mean {key[1:]}?" if key else ""
            raise TypeError(f"default_options() got an unknown option {name!r}{hint}")
        values[name] = _coerce(spec, value)
    return _finish(values, set(overrides), check_dirs=check_dirs, notes=False)


def apply_backend_flags(opt: Options) -> None:
    """Port of the ``-cudnn`` handling in models/init.lua: ``fastest`` turns on
    ``torch.backends.cudnn.benchmark``, ``deterministic`` turns on ``cudnn.deterministic``."""
    import torch
    mode = getattr(opt, "cudnn", "fastest")
    torch.backends.cudnn.benchmark = bool(getattr(opt, "cudnnBenchmark", mode == "fastest"))
    torch.backends.cudnn.deterministic = bool(getattr(opt, "cudnnDeterministic",
                                                      mode == "deterministic"))
