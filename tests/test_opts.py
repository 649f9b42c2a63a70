"""Command-line options against opts.lua (liuzhuang13/DenseNet) and torch.CmdLine (PARITY §1)."""
from __future__ import annotations


import click
import pytest
import torch

from fbresnet_port import opts, t7
from fbresnet_port.errors import UserError
from fbresnet_port.opts import OptionError

# opts.lua of liuzhuang13/DenseNet, in declaration order: (flag, default as the Lua table holds it
# after cmd:parse, before post-processing). Typed by hand from the Lua source.
LUA_DEFAULTS = [
    ("-data", ""), ("-dataset", "cifar10"), ("-manualSeed", 0), ("-nGPU", 1),
    ("-backend", "cudnn"), ("-cudnn", "fastest"), ("-gen", "gen"), ("-precision", "single"),
    ("-nThreads", 2), ("-nEpochs", 0), ("-epochNumber", 1), ("-batchSize", 32),
    ("-testOnly", "false"), ("-tenCrop", "false"), ("-save", "checkpoints"), ("-resume", "none"),
    ("-LR", 0.1), ("-momentum", 0.9), ("-weightDecay", 0.0001), ("-lrShape", "multistep"),
    ("-netType", "resnet"), ("-depth", 20), ("-shortcutType", ""), ("-retrain", "none"),
    ("-optimState", "none"), ("-shareGradInput", "false"), ("-optnet", "false"),
    ("-resetClassifier", "false"), ("-nClasses", 0), ("-growthRate", 12), ("-bottleneck", "true"),
    ("-reduction", 0.5), ("-dropRate", 0), ("-optMemory", 2), ("-d1", 0), ("-d2", 0), ("-d3", 0),
    ("-d4", 0),
]

# The opt table after opts.lua's post-processing of an empty command line.
EXPECTED_OPT = {
    "data": "", "dataset": "cifar10", "manualSeed": 0, "nGPU": 1, "backend": "cudnn",
    "cudnn": "fastest", "gen": "gen", "precision": "single", "nThreads": 2, "nEpochs": 164,
    "epochNumber": 1, "batchSize": 32, "testOnly": False, "tenCrop": False, "save": "checkpoints",
    "resume": "none", "LR": 0.1, "momentum": 0.9, "weightDecay": 0.0001, "lrShape": "multistep",
    "netType": "resnet", "depth": 20, "shortcutType": "A", "retrain": "none", "optimState": "none",
    "shareGradInput": False, "optnet": False, "resetClassifier": False, "nClasses": 0,
    "growthRate": 12, "bottleneck": True, "reduction": 0.5, "dropRate": 0, "optMemory": 2,
    "d1": 0, "d2": 0, "d3": 0, "d4": 0, "tensorType": "torch.CudaTensor",
}


def parse(*argv: str, **kw) -> opts.Options:
    kw.setdefault("check_dirs", False)
    return opts.parse(list(argv), **kw)


def error_of(*argv: str, **kw) -> str:
    with pytest.raises(OptionError) as info:
        parse(*argv, **kw)
    return str(info.value)


# -- defaults -------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: parse(), lambda: opts.default_options()],
                         ids=["parse", "default_options"])
def test_defaults_match_lua(make):
    opt = make()
    for name, value in EXPECTED_OPT.items():
        got = getattr(opt, name)
        assert got == value and type(got) is type(value), (name, got, value)
    assert opt.device in ("cpu", "cuda")
    assert opt.dtype == torch.float32 and opt.amp is False


def test_declared_options_are_the_lua_ones_in_order():
    lua_keys = [k for k, _ in LUA_DEFAULTS]
    declared = [spec.key for spec in opts.OPTIONS if spec.lua]
    assert declared == lua_keys
    assert [spec.key for spec in opts.OPTIONS if not spec.lua] == [
        "-device", "-nThreadsCompute", "-saveEvery", "-keepCheckpoints", "-checkpointTensorType",
        "-printModel"]
    for (key, default), spec in zip(LUA_DEFAULTS, [s for s in opts.OPTIONS if s.lua]):
        assert spec.default == default and type(spec.default) is type(default), key


def test_as_dict_is_plain_and_embeds_in_a_t7_file(tmp_path):
    opt = parse("-LR", "0.05", "-netType", "densenet")
    d = opt.as_dict()
    assert d == vars(opt) and type(d) is dict
    assert all(type(v) in (str, int, float, bool) for v in d.values())
    t7.save(tmp_path / "opt.t7", d)
    assert dict(t7.load(tmp_path / "opt.t7")) == d
    lua = opt.as_lua_dict()
    assert "device" not in lua and lua["tensorType"] == "torch.CudaTensor"
    assert set(lua) == set(EXPECTED_OPT)


# -- values -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,name,value", [
    (["-LR", "0.05"], "LR", 0.05),
    (["-LR", "1"], "LR", 1),
    (["-LR", "0x10"], "LR", 16),
    (["-momentum", ".5"], "momentum", 0.5),
    (["-weightDecay", "5e-4"], "weightDecay", 0.0005),
    (["-batchSize", "1e2"], "batchSize", 100),
    (["-depth", "40.0"], "depth", 40),
    (["-manualSeed", "-3"], "manualSeed", -3),
    (["-nEpochs", "300"], "nEpochs", 300),
    (["-batchSize", "64", "-batchSize", "128"], "batchSize", 128),   # last repeat wins
    (["-save", "-LR"], "save", "-LR"),                               # a value is always the next word
    (["-data", "-h"], "data", "-h"),
    (["-shortcutType", "C"], "shortcutType", "C"),
    (["-netType", "densenet"], "netType", "densenet"),
])
def test_values(argv, name, value):
    got = getattr(parse(*argv), name)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("word,expected", [
    ("false", False), ("true", True), ("False", True), ("0", True), ("no", True), ("", True),
    ("FALSE", True), ("1", True),
])
@pytest.mark.parametrize("flag", ["testOnly", "tenCrop", "shareGradInput", "optnet", "bottleneck"])
def test_boolean_strings(flag, word, expected):
    extra = ["-dataset", "imagenet", "-batchSize", "10"] if flag == "tenCrop" else []
    assert getattr(parse(*extra, f"-{flag}", word), flag) is expected


def test_boolean_oddity_is_noted(capsys):
    parse("-bottleneck", "False")
    assert "-bottleneck 'False' counts as true" in capsys.readouterr().err
    parse("-bottleneck", "false")
    assert capsys.readouterr().err == ""


def test_reset_classifier_with_classes():
    opt = parse("-resetClassifier", "true", "-nClasses", "80")
    assert opt.resetClassifier is True and opt.nClasses == 80


# -- post-processing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset,epochs,shortcut", [("cifar10", 164, "A"), ("cifar100", 164, "A"),
                                                     ("imagenet", 90, "B")])
def test_dataset_defaults(dataset, epochs, shortcut):
    opt = parse("-dataset", dataset)
    assert opt.nEpochs == epochs and opt.shortcutType == shortcut
    opt = parse("-dataset", dataset, "-nEpochs", "300", "-shortcutType", "C")
    assert opt.nEpochs == 300 and opt.shortcutType == "C"


@pytest.mark.parametrize("precision,tensor_type,dtype,amp", [
    ("single", "torch.CudaTensor", torch.float32, False),
    ("double", "torch.CudaDoubleTensor", torch.float64, False),
    ("half", "torch.CudaHalfTensor", torch.float32, True),
])
def test_precision(precision, tensor_type, dtype, amp):
    opt = parse("-precision", precision)
    assert (opt.tensorType, opt.dtype, opt.amp) == (tensor_type, dtype, amp)


def test_save_dir_created_single_level(tmp_path):
    target = tmp_path / "ck"
    parse("-save", str(target), check_dirs=False)
    assert not target.exists()
    parse("-save", str(target), check_dirs=True)
    assert target.is_dir()
    parse("-save", str(target), check_dirs=True)  # existing dir is fine
    deep = tmp_path / "a" / "b"
    msg = error_of("-save", str(deep), check_dirs=True)
    assert msg.startswith(f"unable to create checkpoint directory: {deep} (")
    assert not (tmp_path / "a").exists()


def test_imagenet_directories(tmp_path):
    save = ["-save", str(tmp_path / "ck")]
    missing = tmp_path / "nope"
    assert error_of(*save, "-dataset", "imagenet", "-data", str(missing), check_dirs=True) \
        .startswith("missing ImageNet data directory")
    (tmp_path / "in").mkdir()
    assert error_of(*save, "-dataset", "imagenet", "-data", str(tmp_path / "in"), check_dirs=True) \
        == f"ImageNet missing `train` directory: {tmp_path / 'in' / 'train'}"
    (tmp_path / "in" / "train").mkdir()
    opt = parse(*save, "-dataset", "imagenet", "-data", str(tmp_path / "in"), check_dirs=True)
    assert opt.nEpochs == 90
    # without check_dirs the data folder is not looked at
    assert parse("-dataset", "imagenet").data == ""


def test_cudnn_flags_and_apply():
    assert (parse().cudnnBenchmark, parse().cudnnDeterministic) == (True, False)
    opt = parse("-cudnn", "deterministic")
    assert (opt.cudnnBenchmark, opt.cudnnDeterministic) == (False, True)
    opt_default = parse("-cudnn", "default")
    assert (opt_default.cudnnBenchmark, opt_default.cudnnDeterministic) == (False, False)
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        opts.apply_backend_flags(opt)
        assert torch.backends.cudnn.deterministic is True
        assert torch.backends.cudnn.benchmark is False
        opts.apply_backend_flags(parse())
        assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cudnn.deterministic is False
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved


def test_device():
    assert parse("-device", "cpu").device == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert parse("-device", "auto").device == expected
    if not torch.cuda.is_available():
        assert error_of("-device", "cuda") == ("-device cuda: CUDA is not available on this "
                                               "machine (use -device cpu or -device auto)")
    assert error_of("-device", "gpu").startswith("unknown device: gpu (")


@pytest.mark.parametrize("argv,note", [
    (["-backend", "cunn"], "note: -backend has no effect in PyTorch"),
    (["-optimState", "x.t7"], "note: -optimState is accepted but never read"),
    (["-optnet", "true"], "note: -optnet has no direct PyTorch equivalent"),
    (["-shareGradInput", "true"], "note: -shareGradInput has no direct PyTorch equivalent"),
    (["-lrShape", "step"], "note: -lrShape 'step' is neither multistep nor cosine"),
])
def test_notes_on_stderr(capsys, argv, note):
    parse(*argv)
    err = capsys.readouterr().err
    assert err.startswith(note) and err.count("note:") == 1
    parse()
    assert capsys.readouterr().err == ""


# -- errors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["-lr", "0.1"], "invalid argument: -lr (did you mean -LR?)"),
    (["-batchsize", "3"], "invalid argument: -batchsize (did you mean -batchSize?)"),
    (["-netTyp", "densenet"], "invalid argument: -netTyp (did you mean -netType?)"),
    (["--LR", "0.1"], "invalid argument: --LR (options take a single dash: -LR)"),
    (["--depth=40"], "invalid argument: --depth=40 (write the value as a separate word: -depth 40)"),
    (["-LR=0.1"], "invalid argument: -LR=0.1 (write the value as a separate word: -LR 0.1)"),
    (["resnet"], "invalid argument: resnet (options are written '-name value'; "
                 "run 'main.py -h' to list them)"),
    (["-testOnly", "-LR", "0.1"], "invalid argument: 0.1 (-testOnly took '-LR' as its value; every "
                                  "option needs a value, e.g. -testOnly true)"),
    (["-LR"], "missing argument for option -LR"),
    (["-depth", "40", "-save"], "missing argument for option -save"),
    (["-LR", "abc"], "invalid type for option -LR (should be number, got 'abc')"),
    (["-depth", "1_0"], "invalid type for option -depth (should be number, got '1_0')"),
    (["-LR", "nan"], "invalid value for option -LR (should be a finite number, got nan)"),
    (["-batchSize", "64.5"], "invalid value for option -batchSize (should be a whole number, got 64.5)"),
    (["-nEpochs", "0.5"], "invalid value for option -nEpochs (should be a whole number, got 0.5)"),
    (["-batchSize", "0"], "invalid value for option -batchSize (should be at least 1, got 0); "
                          "use e.g. -batchSize 32"),
    (["-nGPU", "0"], "invalid value for option -nGPU (should be at least 1, got 0); use e.g. -nGPU 1"),
    (["-nThreads", "-1"], "invalid value for option -nThreads (should be at least 0, got -1); "
                          "use e.g. -nThreads 2"),
    (["-dataset", "cifar"], "unknown dataset: cifar (did you mean cifar10? "
                            "options: imagenet | cifar10 | cifar100)"),
    (["-dataset", "mnist"], "unknown dataset: mnist (options: imagenet | cifar10 | cifar100)"),
    (["-precision", "float"], "unknown precision: float (options: single | double | half)"),
    (["-cudnn", "determinstic"], "unknown -cudnn mode: determinstic (did you mean deterministic? "
                                 "options: fastest | default | deterministic)"),
    (["-resetClassifier", "true"], "-nClasses required when resetClassifier is set (give the size "
                                   "of the new classifier, e.g. -resetClassifier true -nClasses 10)"),
    (["-shareGradInput", "true", "-optnet", "true"], "cannot use both -shareGradInput and -optnet"),
    (["-tenCrop", "true"], "-tenCrop is only supported with -dataset imagenet (the cifar10 "
                           "validation images are single 32x32 crops); drop -tenCrop"),
    (["-dataset", "imagenet", "-tenCrop", "true", "-batchSize", "8"],
     "-tenCrop needs -batchSize of at least 10 (a batch holds batchSize/10 images x 10 crops), got 8"),
])
def test_error_messages(argv, message):
    assert error_of(*argv) == message


def test_errors_are_user_errors():
    assert issubclass(OptionError, UserError)


def test_error_before_later_help():
    # torch.CmdLine handles words left to right: a bad word before -h is an error.
    assert error_of("-bogus", "1", "-h").startswith("invalid argument: -bogus")


def test_default_options_overrides():
    opt = opts.default_options(bottleneck=False, LR="0.05", depth=40, dataset="imagenet")
    assert opt.bottleneck is False and opt.LR == 0.05 and opt.depth == 40
    assert opt.nEpochs == 90 and opt.shortcutType == "B"
    assert opts.default_options(bottleneck="false").bottleneck is False
    with pytest.raises(TypeError, match="unknown option 'lr'; did you mean LR"):
        opts.default_options(lr=0.1)
    with pytest.raises(OptionError, match="whole number"):
        opts.default_options(batchSize=2.5)


# -- help ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["-h", "-help", "--help"])
def test_help(capsys, flag):
    with pytest.raises(SystemExit) as info:
        parse("-LR", "0.5", flag, "-bogus")
    assert info.value.code == 0
    out = capsys.readouterr().out
    lines = out.split("\n")
    assert lines[:6] == [
        "Usage: main.py [options]", "", "Torch-7 ResNet Training script",
        "See https://github.com/facebook/fb.resnet.torch/blob/master/TRAINING.md for examples",
        "", "Options:"]
    option_lines = [line for line in lines if line.startswith("  -")]
    keys = [line.split()[0] for line in option_lines]
    assert keys == [spec.key for spec in opts.OPTIONS]
    assert [k for k in keys if opts._BY_KEY[k].lua] == [k for k, _ in LUA_DEFAULTS]
    # key padded to the longest key (-checkpointTensorType, 21 chars), then help and [default]
    pad = " " * 5
    assert f"  -weightDecay     {pad}weight decay [0.0001]" in option_lines
    assert f"  -resetClassifier {pad}Reset the fully connected layer for fine-tuning [false]" \
        in option_lines
    assert f"  -data            {pad}Path to dataset ('sample': the small CIFAR-10 sample shipped with the " \
        f"project) []" in option_lines
    assert f"  -LR              {pad}initial learning rate [0.1]" in option_lines
    assert f"  -bottleneck      {pad}Use 1x1 convolution to reduce dimension (DenseNet-B) [true]" \
        in option_lines
    assert "  -nThreadsCompute      CPU threads for the model's computation (0 = PyTorch's default) [0]" \
        in option_lines
    assert "  -printModel           Print the model's layers at start-up [true]" in option_lines
    assert out.endswith("[0]\n\n")


def test_click_command_declares_single_dash_options():
    assert isinstance(opts.command, click.Command)
    names = {p.name: p.opts for p in opts.command.params}
    assert names["LR"] == ["-LR"] and names["resetClassifier"] == ["-resetClassifier"]
    ctx = click.Context(opts.command, info_name="main.py")
    assert opts.command.get_help(ctx) == opts.help_text("main.py").rstrip("\n")

