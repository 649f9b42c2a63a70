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
* integer-valued options (``-batchSize``, ``-depth``, ``-nEpochs`` ...) reject fractions and numbers
  must be finite (Lua accepted ``-batchSize 64.5``); impossible values are errors naming the rule and
  an example value (``-growthRate``/``-depth``/``-batchSize``/``-nGPU``/``-epochNumber`` >= 1,
  ``-LR``/``-weightDecay``/``-nClasses``/``-nThreads``/``-nEpochs``/``-d1``..``-d4`` >= 0,
  ``0 < -reduction``, ``0 <= -dropRate < 1``, ``0 <= -momentum < 1``, ``|-manualSeed| <= 2^53``),
  as are ``-shortcutType`` other than A/B/C, ``-epochNumber`` after ``-nEpochs`` (nothing
  trained) and ``-nGPU`` above the machine's CUDA devices;
* accepted values that build something else than they seem to print a ``note:`` line
  (``-reduction`` > 1, ``-optMemory`` outside 0..5, ``-nClasses`` without ``-resetClassifier``,
  ``-nGPU`` > 1 on the CPU); DenseNet depths are checked in :mod:`models.densenet`;
* ``-data sample`` names the CIFAR-10 sample shipped in ``datasets/sample/`` (``-dataset cifar10``);
* new options: ``-device auto|cpu|cuda`` (the Lua code ran on CUDA only), ``-nThreadsCompute``,
  ``-printModel``, ``-saveEvery``, ``-keepCheckpoints``, ``-checkpointTensorType`` (not written to
  the Lua ``opt`` of checkpoints);
* ``-cudnn`` must be ``fastest``, ``default`` or ``deterministic`` (Lua ignored typos);
* ``-tenCrop`` is refused for CIFAR and for ``-batchSize`` < 10 (the Lua code crashed / made
  empty batches);
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
from .errors import note as _note

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
SHORTCUT_TYPES = ("A", "B", "C")
CHECKPOINT_TENSOR_TYPES = ("cuda", "float")
OPT_MEMORY_LEVELS = range(0, 6)
SEED_LIMIT = 2 ** 53          # Lua numbers are doubles: larger seeds are not exact
SAMPLE_DATA = "sample"        # -data sample: the CIFAR-10 sample shipped in datasets/sample/


class OptionError(UserError):
    """A wrong command line or option value (``cmd:error`` in ``torch.CmdLine``)."""


@dataclass(frozen=True)
class OptionSpec:
    """One ``cmd:option(key, default, help)`` line.

    ``kind`` is ``'string'``, ``'number'``, ``'integer'`` (a Lua number that must be whole) or
    ``'boolean'`` (a Lua string turned into a bool by ``value ~= 'false'``); ``minimum`` and
    ``maximum`` bound numbers (excluded when ``open_min`` / ``open_max``); ``choices`` lists the
    accepted strings; ``lua`` is False for options the Lua code does not have.
    """
    key: str
    default: Any
    help: str
    kind: str = "string"
    minimum: float | None = None
    maximum: float | None = None
    open_min: bool = False
    open_max: bool = False
    choices: tuple[str, ...] = ()
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
    _o("-data", "", "Path to dataset ('sample': the small CIFAR-10 sample shipped with the project)"),
    _o("-dataset", "cifar10", "Options: imagenet | cifar10 | cifar100"),
    _o("-manualSeed", 0, "Manually set RNG seed", "integer", minimum=-SEED_LIMIT, maximum=SEED_LIMIT),
    _o("-nGPU", 1, "Number of GPUs to use by default", "integer", minimum=1),
    _o("-backend", "cudnn", "Options: cudnn | cunn (no effect in PyTorch)"),
    _o("-cudnn", "fastest", "Options: fastest | default | deterministic"),
    _o("-gen", "gen", "Path to save generated files"),
    _o("-precision", "single", "Options: single | double | half (half = mixed precision)"),
    _o("-device", "auto", "Options: auto | cpu | cuda (auto = cuda when available)", lua=False),
    # Data options
    _o("-nThreads", 2, "number of data loading threads", "integer", minimum=0),
    _o("-nThreadsCompute", 0, "CPU threads for the model's computation (0 = PyTorch's default)",
       "integer", minimum=0, lua=False),
    # Training options
    _o("-nEpochs", 0, "Number of total epochs to run", "integer", minimum=0),
    _o("-epochNumber", 1, "Manual epoch number (useful on restarts)", "integer", minimum=1),
    _o("-batchSize", 32, "mini-batch size (1 = pure stochastic)", "integer", minimum=1),
    _o("-testOnly", "false", "Run on validation set only", "boolean"),
    _o("-tenCrop", "false", "Ten-crop testing", "boolean"),
    # Checkpointing options
    _o("-save", "checkpoints", "Directory in which to save checkpoints"),
    _o("-resume", "none", "Resume from the latest checkpoint in this directory"),
    _o("-saveEvery", 1, "Save a checkpoint every N epochs (1 = every epoch, as Lua)", "integer",
       minimum=1, lua=False),
    _o("-keepCheckpoints", 0, "Keep only the last K epochs' model/optimState files (0 = keep all)",
       "integer", minimum=0, lua=False),
    _o("-checkpointTensorType", "cuda", "Options: cuda | float (tensor class in saved optimStates; "
       "float loads in Lua without cutorch)", choices=CHECKPOINT_TENSOR_TYPES, lua=False),
    # Optimization options
    _o("-LR", 0.1, "initial learning rate", minimum=0),
    _o("-momentum", 0.9, "momentum", minimum=0, maximum=1, open_max=True),
    _o("-weightDecay", 1e-4, "weight decay", minimum=0),
    _o("-lrShape", "multistep", "Learning rate: multistep|cosine"),
    # Model options
    _o("-netType", "resnet", "Options: resnet | preresnet | densenet"),
    _o("-depth", 20, "ResNet depth: 18 | 34 | 50 | 101 | ...", "integer", minimum=1),
    _o("-shortcutType", "", "Options: A | B | C", choices=SHORTCUT_TYPES),
    _o("-retrain", "none", "Path to model to retrain with"),
    _o("-optimState", "none", "Path to an optimState to reload from"),
    _o("-shareGradInput", "false", "Share gradInput tensors to reduce memory usage", "boolean"),
    _o("-optnet", "false", "Use optnet to reduce memory usage", "boolean"),
    _o("-resetClassifier", "false", "Reset the fully connected layer for fine-tuning", "boolean"),
    _o("-nClasses", 0, "Number of classes in the dataset", "integer", minimum=0),
    _o("-printModel", "true", "Print the model's layers at start-up", "boolean", lua=False),
    # Model options for DenseNet
    _o("-growthRate", 12, "Number of output channels at each convolutional layer", "integer",
       minimum=1),
    _o("-bottleneck", "true", "Use 1x1 convolution to reduce dimension (DenseNet-B)", "boolean"),
    _o("-reduction", 0.5, "Channel compress ratio at transition layer (DenseNet-C)", minimum=0,
       open_min=True),
    _o("-dropRate", 0, "Dropout probability", minimum=0, maximum=1, open_max=True),
    _o("-optMemory", 2, "Optimize memory for DenseNet: 0 | 1 | 2 | 3 | 4 | 5", "integer"),
    # Used when depth is not one of 121, 161, 169, 201 (ImageNet only)
    _o("-d1", 0, "Number of layers in block 1", "integer", minimum=0),
    _o("-d2", 0, "Number of layers in block 2", "integer", minimum=0),
    _o("-d3", 0, "Number of layers in block 3", "integer", minimum=0),
    _o("-d4", 0, "Number of layers in block 4", "integer", minimum=0),
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
    if not _in_range(spec, number):
        raise OptionError(f"invalid value for option {spec.key} (should be {_range_rule(spec)}, "
                          f"got {_bound_string(number)}); use e.g. {spec.key} "
                          f"{_default_string(spec.default)}")
    return int(number) if integral else number


def _bound_string(value: float) -> str:
    """A bound or value in a message: whole numbers in full (``9007199254740992``), else ``%.14g``."""
    return str(int(value)) if value == int(value) and abs(value) < 1e18 else _lua_number_string(value)


def _in_range(spec: OptionSpec, number: float) -> bool:
    """Whether ``number`` is within ``spec``'s bounds."""
    low, high = spec.minimum, spec.maximum
    if low is not None and (number < low or (spec.open_min and number == low)):
        return False
    return high is None or (number < high or (not spec.open_max and number == high))


def _range_rule(spec: OptionSpec) -> str:
    """``spec``'s bounds in words: ``at least 0 and less than 1``."""
    parts = []
    if spec.minimum is not None:
        parts.append(f"{'more than' if spec.open_min else 'at least'} {_bound_string(spec.minimum)}")
    if spec.maximum is not None:
        parts.append(f"{'less than' if spec.open_max else 'at most'} {_bound_string(spec.maximum)}")
    return " and ".join(parts)


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
    if opt.data == SAMPLE_DATA and opt.dataset in DATASETS and opt.dataset != "cifar10":
        raise OptionError(f"-data {SAMPLE_DATA} is the CIFAR-10 sample shipped with this project and "
                          f"works with -dataset cifar10 only; give -data PATH of your {opt.dataset} data")
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
        raise OptionError("-nClasses required when resetClassifier is set (give the size of the new "
                          "classifier, e.g. -resetClassifier true -nClasses 10)")
    if opt.shareGradInput and opt.optnet:
        raise OptionError("cannot use both -shareGradInput and -optnet")
    _check_values(opt)

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
    _check_gpus(opt, notes)

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
        _value_notes(opt, given)
    return opt


def _check_values(opt: Options) -> None:
    """Errors for values opts.lua accepts but that cannot give the run the user asked for."""
    for spec in OPTIONS:
        value = getattr(opt, spec.name)
        if spec.choices and value not in spec.choices:
            raise _unknown_choice(spec.key, str(value), spec.choices)
    if not opt.testOnly and opt.resume == "none" and opt.epochNumber > opt.nEpochs:
        raise OptionError(f"-epochNumber {opt.epochNumber} is after the last epoch -nEpochs "
                          f"{opt.nEpochs}: nothing would be trained; raise -nEpochs to at least "
                          f"{opt.epochNumber} or lower -epochNumber")


def _check_gpus(opt: Options, notes: bool) -> None:
    """``-nGPU`` against the machine (torchrun jobs use one GPU per process and ignore it)."""
    if opt.nGPU <= 1 or "WORLD_SIZE" in os.environ:
        return
    if opt.device == "cpu":
        if notes:
            _note(f"-nGPU {opt.nGPU}: running on the CPU (no CUDA device used), so one process "
                  f"computes the whole batch")
        return
    import torch
    count = torch.cuda.device_count()
    if opt.nGPU > count:
        raise OptionError(f"-nGPU {opt.nGPU}: this machine has {count} CUDA device(s); "
                          f"use -nGPU {count} or fewer")


def _value_notes(opt: Options, given: set[str]) -> None:
    """``note:`` lines for accepted values that build or do something else than they seem to."""
    densenet = opt.netType == "densenet"
    if densenet and opt.reduction > 1:
        _note(f"-reduction {_lua_number_string(opt.reduction)} is above 1: the transition layers "
              f"multiply the channels by {_lua_number_string(opt.reduction)} instead of compressing "
              f"them (DenseNet-C compresses with 0 < reduction <= 1, e.g. 0.5)")
    if densenet and opt.optMemory not in OPT_MEMORY_LEVELS:
        level = 5 if opt.optMemory > 5 else 0
        _note(f"-optMemory {opt.optMemory} is outside 0..5: it acts as -optMemory {level} "
              f"(as in the Lua code)")
    if "nClasses" in given and opt.nClasses and not opt.resetClassifier:
        _note(f"-nClasses {opt.nClasses} is only used with -resetClassifier true; the classifier "
              f"has the classes of -dataset {opt.dataset}")


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
