"""User mistakes on the command line, as a user meets them: ``python main.py ...`` and
``python -m fbresnet_port.convert ...`` in a subprocess must end with a short ``error: ...`` line that
names the problem (and the flag) and the fix, exit status 1, and no Python traceback; Ctrl-C exits 130
and leaves the last complete checkpoint as it was.

All cases run once, a few processes at a time (each is a tiny run: ``-testOnly`` or a failure before
training), and each test checks one of them.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT, data_file, reference
from fbresnet_port import t7

ENV = {**os.environ, "FBRESNET_NO_DOWNLOAD": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
IMAGENET_DENSENET = ("densenet_imagenet_custom_2342_k8", "model.t7")
RESNET20 = ("resnet_cifar10_d20_A",)


def _cli(cli: str, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    prog = ["main.py"] if cli == "main" else ["-m", "fbresnet_port.convert"]
    return subprocess.run([sys.executable, *prog, *map(str, args)], cwd=REPO_ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def _tiny(d: Path, name: str, *extra: object) -> list[object]:
    """A tiny test-only CIFAR-10 run with its own -gen/-save folders, then ``extra`` flags (last wins)."""
    return ["-netType", "resnet", "-depth", 8, "-batchSize", 100, "-nThreads", 0, "-testOnly", "true",
            "-data", data_file("cifar-10-small-python.tar.gz"), "-gen", d / f"gen_{name}",
            "-save", d / f"save_{name}", *extra]


@dataclass(frozen=True)
class Case:
    name: str
    args: Callable[[Path], list[object]]  # built from the folder of prepared files
    words: tuple[str, ...]                # must all appear in stderr
    rc: int = 1
    cli: str = "main"


def _case(name: str, extra: Callable[[Path], tuple], *words: str, **kw) -> Case:
    return Case(name, lambda d: _tiny(d, name, *extra(d)), words, **kw)


CASES = [
    # -retrain
    _case("retrain_missing", lambda d: ("-retrain", d / "nope.t7"), "File not found", "nope.t7"),
    _case("retrain_folder", lambda d: ("-retrain", d / "empty"), "-retrain", "is a folder", "model_best.t7",
          "-resume"),
    _case("retrain_truncated",
          lambda d: ("-retrain", reference("t7-format", "truncated_and_corrupt", "trunc_in_table_size.t7")),
          "-retrain", "not a readable Torch .t7 file (byte", "give a model file"),
    _case("retrain_garbage", lambda d: ("-retrain", d / "garbage.t7"),
          "-retrain", "garbage.t7: not a readable Torch .t7 file (byte 0", "give a model file"),
    _case("retrain_empty_file",
          lambda d: ("-retrain", reference("t7-format", "truncated_and_corrupt", "empty.t7")),
          "-retrain", "the file is empty"),
    _case("retrain_tensor", lambda d: ("-retrain", d / "tensor.t7"),
          "-retrain", "does not contain a Lua nn model (found a Tensor)", "model_<epoch>.t7"),
    _case("retrain_checkpoint_table", lambda d: ("-retrain", reference(*RESNET20, "checkpoint", "latest.t7")),
          "does not contain a Lua nn model", "not latest.t7"),
    _case("retrain_imagenet_net_on_cifar", lambda d: ("-retrain", reference(*IMAGENET_DENSENET)),
          "-retrain", "does not take -dataset cifar10 images (3x32x32)", "another dataset", "-dataset"),
    _case("retrain_imagenet_net_on_cifar_reset",
          lambda d: ("-retrain", reference(*IMAGENET_DENSENET), "-resetClassifier", "true", "-nClasses", 10),
          "-retrain", "does not take -dataset cifar10 images"),
    _case("retrain_cifar10_net_on_cifar100",
          lambda d: ("-retrain", reference(*RESNET20, "model.t7"), "-dataset", "cifar100", "-depth", 20,
                     "-data", d / "cifar100.t7"),
          "-retrain", "gives 10 class scores", "cifar100 has 100 classes",
          "-resetClassifier true -nClasses 100"),
    # -resume
    _case("resume_model_missing", lambda d: ("-resume", d / "resume_no_model"),
          "Saved model not found", "model_1.t7", "latest.t7"),
    _case("resume_optim_missing", lambda d: ("-resume", d / "resume_no_optim"),
          "names optimState_1.t7, which is missing", "-retrain"),
    _case("resume_corrupt_latest", lambda d: ("-resume", d / "resume_bad_latest"),
          "-resume", "latest.t7: not a readable Torch .t7 file", "start afresh"),
    _case("resume_corrupt_model", lambda d: ("-resume", d / "resume_bad_model"),
          "-resume", "model_1.t7: not a readable Torch .t7 file", "damaged"),
    _case("resume_a_file", lambda d: ("-resume", reference(*RESNET20, "checkpoint", "latest.t7")),
          "-resume", "is a file, not a folder", "-retrain FILE"),
    _case("resume_no_folder", lambda d: ("-resume", d / "no_such_run"), "-resume", "no such folder"),
    # -data
    _case("data_corrupt_archive", lambda d: ("-data", d / "corrupt.tar.gz"),
          "cannot read the archive", "corrupt or incomplete"),
    _case("data_empty_folder", lambda d: ("-data", d / "empty"), "-data", "no CIFAR-10 data found"),
    _case("data_text_file", lambda d: ("-data", d / "notes.txt"), "cannot read the archive", "notes.txt"),
    _case("imagenet_without_val", lambda d: ("-dataset", "imagenet", "-depth", 18, "-data", d / "inet_no_val"),
          "val directory not found", "train/ and val/"),
    _case("imagenet_missing_folder", lambda d: ("-dataset", "imagenet", "-depth", 18, "-data", d / "nothing"),
          "missing ImageNet data directory", "-data DIR"),
    # option values
    _case("tencrop_on_cifar", lambda d: ("-tenCrop", "true"), "-tenCrop", "-dataset imagenet", "drop -tenCrop"),
    _case("batchsize_zero", lambda d: ("-batchSize", 0), "-batchSize", "at least 1, got 0"),
    _case("nepochs_negative", lambda d: ("-nEpochs", -1), "-nEpochs", "at least 0, got -1"),
    _case("resnet_cifar_depth21", lambda d: ("-depth", 21), "depth should be one of 20, 32, 44, 56, 110, 1202"),
    _case("shortcut_a_imagenet_bottleneck",
          lambda d: ("-dataset", "imagenet", "-depth", 50, "-shortcutType", "A", "-data", d / "inet"),
          "shortcutType A", "use -shortcutType B or C"),
    _case("reset_classifier_without_nclasses", lambda d: ("-resetClassifier", "true"),
          "-nClasses required"),
    _case("precision_float", lambda d: ("-precision", "float"),
          "unknown precision: float", "single | double | half"),
    _case("learning_rate_not_a_number", lambda d: ("-LR", "abc"), "-LR", "should be number", "'abc'"),
    _case("double_dash_flag", lambda d: ("--LR", 0.1), "--LR", "single dash: -LR"),
    Case("flag_without_value", lambda d: [*_tiny(d, "flag_without_value"), "-nEpochs"],
         ("missing argument for option -nEpochs",)),
    _case("nesterov_needs_momentum", lambda d: ("-momentum", 0, "-testOnly", "false"),
          "Nesterov", "-momentum > 0"),
    # the case: the DenseNet-BC-100 of the README with no data and no network
    _case("no_data_offline", lambda d: ("-netType", "densenet", "-depth", 100, "-growthRate", 12, "-data", ""),
          "CIFAR-10 not found", "cifar-10-python.tar.gz", "-data sample"),
    # -save / -gen
    _case("save_parent_missing", lambda d: ("-save", d / "missing" / "run"),
          "unable to create checkpoint directory", "create its parent"),
    _case("save_is_a_file", lambda d: ("-save", d / "notes.txt"), "-save", "is a file, not a directory"),
    _case("gen_is_a_file", lambda d: ("-gen", d / "notes.txt"), "-gen", "is a file, not a folder"),
    _case("gen_under_a_file", lambda d: ("-gen", d / "notes.txt" / "gen"),
          "-gen", "cannot create the folder", "choose another -gen"),
    # DenseNet-BC depth 7 has no dense layer (Lua built and trained a net of transitions only)
    _case("densenet_depth7_has_no_layers", lambda d: ("-netType", "densenet", "-depth", 7),
          "DenseNet-BC -depth 7 has no dense layers", "6n+4", "-depth 10"),
    _case("growth_rate_zero", lambda d: ("-netType", "densenet", "-growthRate", 0),
          "-growthRate", "at least 1, got 0", "use e.g. -growthRate 12"),
    _case("drop_rate_above_one", lambda d: ("-dropRate", 1.5),
          "-dropRate", "at least 0 and less than 1, got 1.5", "use e.g. -dropRate 0"),
    # unusual but valid: DenseNet-BC depth 20 is not 6n+4; Lua's loop builds depth 16 (PARITY §9 #21)
    _case("densenet_depth20_builds_16", lambda d: ("-netType", "densenet", "-depth", 20),
          "note: DenseNet-BC depth 20: (20-4)/6 is not whole; building depth 16", rc=0),
    # convert CLI
    Case("convert_folder", lambda d: [d / "empty", d / "out.pt"], ("MODEL_T7", "is a directory"), rc=2,
         cli="convert"),
    Case("convert_checkpoint_table",
         lambda d: [reference(*RESNET20, "checkpoint", "latest.t7"), d / "out.pt"],
         ("is a checkpoint index (latest.t7), not a Lua nn module", "model_1.t7"), cli="convert"),
    Case("convert_garbage", lambda d: [d / "garbage.t7", d / "out.pt"],
         ("garbage.t7: not a readable Torch .t7 file (byte 0",), cli="convert"),
    Case("convert_output_folder_missing", lambda d: [reference(*RESNET20, "model.t7"), d / "missing" / "m.pt"],
         ("cannot write", "does not exist", "create the folder"), cli="convert"),
    Case("convert_output_under_a_file", lambda d: [reference(*RESNET20, "model.t7"), d / "notes.txt" / "m.pt"],
         ("cannot write", "is a file, not a folder"), cli="convert"),
]
if torch.cuda.is_available():
    CASES = [c for c in CASES if c.name != "device_cuda"]
else:
    CASES.append(_case("device_cuda", lambda d: ("-device", "cuda"), "-device cuda", "CUDA is not available",
                       "-device cpu"))


def _prepare(d: Path) -> None:
    """The broken and odd files the cases point at."""
    (d / "empty").mkdir()
    (d / "notes.txt").write_text("not a dataset\n")
    (d / "garbage.t7").write_bytes(b"this is not a torch file\n" * 4)
    t7.save(d / "tensor.t7", torch.zeros(3))
    archive = data_file("cifar-10-small-python.tar.gz").read_bytes()
    (d / "corrupt.tar.gz").write_bytes(archive[:5000])
    (d / "inet_no_val" / "train" / "n01").mkdir(parents=True)
    for split in ("train", "val"):  # one image each: the data is fine, the flags are the mistake
        (d / "inet" / split / "n01").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(d / "inet" / split / "n01" / "a.jpg")
    # a (Lua-layout) CIFAR-100 cache of 100 images, one per class: the data of a CIFAR-100 run
    split = {"data": torch.zeros(100, 3, 32, 32, dtype=torch.uint8), "labels": torch.arange(1, 101).to(torch.uint8)}
    t7.save(d / "cifar100.t7", {"train": split, "val": split})
    latest = {"epoch": 1, "modelFile": "model_1.t7", "optimFile": "optimState_1.t7"}
    for name in ("resume_no_model", "resume_no_optim", "resume_bad_latest", "resume_bad_model"):
        (d / name).mkdir()
        t7.save(d / name / "latest.t7", latest)
        if name != "resume_no_optim":
            t7.save(d / name / "optimState_1.t7", {"learningRate": 0.1, "evalCounter": 10})
        if name == "resume_no_optim":
            shutil.copy(reference(*RESNET20, "model.t7"), d / name / "model_1.t7")
    (d / "resume_bad_latest" / "latest.t7").write_bytes(b"\x00" * 7)
    shutil.copy(d / "garbage.t7", d / "resume_bad_model" / "model_1.t7")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess | BaseException]:
    d = tmp_path_factory.mktemp("cli_errors")
    _prepare(d)
    jobs: dict[str, tuple[str, list[object]] | BaseException] = {}
    for case in CASES:
        try:
            jobs[case.name] = (case.cli, case.args(d))
        except pytest.skip.Exception as skipped:  # a reference fixture is missing here
            jobs[case.name] = skipped
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(_cli, *job) for name, job in jobs.items() if isinstance(job, tuple)}
        return {name: futures[name].result() if name in futures else job for name, job in jobs.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_user_mistake_gives_a_short_error(case: Case, results):
    result = results[case.name]
    if isinstance(result, BaseException):
        raise result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == case.rc, result.stderr + result.stdout[-2000:]
    for word in case.words:
        assert word in result.stderr, (word, result.stderr)
    if case.rc == 1:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and len(result.stderr.strip().splitlines()) <= 6, result.stderr
    elif case.rc == 0:
        assert "error" not in result.stderr.lower(), result.stderr


# Mistakes found before the model is built: no model line (nor DenseNet's layer tree) precedes the error.
BEFORE_MODEL = ["no_data_offline", "retrain_missing", "retrain_folder", "data_text_file", "imagenet_without_val",
                "imagenet_missing_folder", "tencrop_on_cifar", "nesterov_needs_momentum", "save_is_a_file",
                "gen_is_a_file", "gen_under_a_file"]


@pytest.mark.parametrize("name", BEFORE_MODEL)
def test_cheap_preconditions_come_before_the_model(name, results):
    result = results[name]
    if isinstance(result, BaseException):
        raise result
    assert result.returncode == 1, result.stderr
    assert "Creating model" not in result.stdout and "nn.Sequential" not in result.stdout, result.stdout[:2000]


def test_cifar_cache_generation_shows_lua_progress(results):
    """Long work says what it does: building the CIFAR-10 cache prints Lua's lines (cifar10-gen.lua)."""
    out = results["densenet_depth20_builds_16"].stdout
    assert "=> Reading CIFAR-10 dataset from" in out
    assert " | saving CIFAR-10 dataset to" in out
    # and one progress line while the batch files are read: the sample's 5 train and 1 test files, 1000 + 200 images
    assert re.search(r"^ \| reading 6 batch files: 1 2 3 4 5 6 \(1,200 images, \d+\.\d s\)$", out, re.M), out
    assert " * Results top1:" in out


def test_ctrl_c_exits_130_and_keeps_the_last_checkpoint(tmp_path):
    """SIGINT during a resumed epoch: exit 130, one line, no traceback; the folder's latest.t7 and the
    files it names are byte-for-byte what they were, and no half-written file is left."""
    run = tmp_path / "run"
    shutil.copytree(reference(*RESNET20, "checkpoint"), run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    args = ["-netType", "resnet", "-depth", 20, "-batchSize", 100, "-nThreads", 0, "-nEpochs", 3,
            "-data", data_file("cifar-10-small-python.tar.gz"), "-gen", tmp_path / "gen",
            "-save", run, "-resume", run]
    # SIGINT as a terminal delivers it, also when the suite itself runs in the background (`... &` starts
    # commands with SIGINT ignored, and Python keeps an ignored SIGINT ignored)
    proc = subprocess.Popen([sys.executable, "main.py", *map(str, args)], cwd=REPO_ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        seen = []
        for line in proc.stdout:  # wait until epoch 2 (the first after the checkpoint) is training
            seen.append(line)
            if line.startswith(" | Epoch: [2][1/"):
                break
        else:
            pytest.fail("training never started:\n" + "".join(seen) + proc.stderr.read())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip() == "interrupted", err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert t7.load(run / "latest.t7")["epoch"] == 1
