"""A training run a user can trust (issue #11), through ``main.main`` as the command line calls it.

* the dataset cache follows ``-data``: another or a changed archive rebuilds it (with a ``note:``), a broken
  one is an error even when a cache exists, no ``-data`` keeps using the cache;
* ``-data sample`` trains on the CIFAR-10 sample shipped in ``datasets/sample/`` with no download;
* impossible option values give one ``error:`` line naming the flag, the rule and a fix (exit 1);
  accepted values that build something else than asked give one ``note:`` line saying what is built;
* a CIFAR-100 model given to a CIFAR-10 run is an error suggesting ``-resetClassifier true -nClasses 10``;
* ``-nThreadsCompute`` sets PyTorch's thread count and ``-printModel false`` skips the model tree.
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import main
import models
from conftest import reference
from datasets import source
from fbresnet_port import opts, t7

SAMPLE = source.SAMPLE_ARCHIVE
# A tiny DenseNet (depth 10, no bottleneck, growth 4: 2 layers per block) that tests 200 images in well under 1 s.
TINY = ["-netType", "densenet", "-depth", 10, "-bottleneck", "false", "-growthRate", 4, "-nThreads", 0,
        "-batchSize", 100, "-printModel", "false"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("FBRESNET_NO_DOWNLOAD", "1")


def cli(*args: object) -> tuple[int, str, str]:
    """``python main.py ARGS`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main.main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def _read_batches(archive: Path) -> dict[str, dict]:
    """The python-layout archive's pickles, read as torchvision does (independent of datasets/)."""
    with tarfile.open(archive) as tar:
        return {Path(m.name).name: pickle.load(tar.extractfile(m), encoding="latin1")
                for m in tar.getmembers() if m.isfile() and "_batch" in m.name}


def _expected_cache(archive: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """What the Lua cache must hold for ``archive``: N x 3 x 32 x 32 bytes and labels + 1 per split."""
    b = _read_batches(archive)
    out = {}
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("val", ["test_batch"])):
        data = np.concatenate([b[n]["data"] for n in names]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([np.asarray(b[n]["labels"]) for n in names]) + 1
        out[split] = (torch.from_numpy(data), torch.from_numpy(labels.astype(np.uint8)))
    return out


def _write_archive(path: Path, seed: int, per_batch: int = 4, n_test: int = 6, n_classes: int = 10) -> None:
    """A tiny CIFAR-10 python archive (official layout) of random images with labels 0..n_classes-1."""
    rng = np.random.RandomState(seed)
    names = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]
    with tarfile.open(path, "w:gz") as tar:
        for name, n in names:
            raw = pickle.dumps({"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
                                "labels": [int(x) for x in rng.randint(0, n_classes, n)]}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def _assert_cache_holds(gen: Path, archive: Path) -> None:
    info = t7.load(gen / "cifar10.t7")
    for split, (data, labels) in _expected_cache(archive).items():
        assert torch.equal(info[split]["data"], data), split
        assert torch.equal(info[split]["labels"], labels), split


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory) -> tuple[Path, tuple[int, str, str]]:
    """One epoch on ``-data sample`` from an empty ``-gen``: the folder with the cache, and the run's output."""
    d = tmp_path_factory.mktemp("sample_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FBRESNET_NO_DOWNLOAD", "1")
        result = cli(*TINY, "-data", "sample", "-gen", d / "gen", "-save", d / "save", "-nEpochs", 1,
                     "-batchSize", 250)
    return d / "gen", result


@pytest.fixture
def gen(tmp_path, sample_run) -> Path:
    """A copy of the sample run's ``-gen`` folder (cache and its source record, times kept)."""
    shutil.copytree(sample_run[0], tmp_path / "gen", copy_function=shutil.copy2)
    return tmp_path / "gen"


def test_data_sample_trains_out_of_the_box(sample_run):
    gen, (rc, out, err) = sample_run
    assert rc == 0, err
    assert f"=> Reading CIFAR-10 dataset from {SAMPLE}" in out and "Downloading" not in out
    assert " | Epoch: [1][4/4]" in out and " * Finished top1:" in out  # 1000 images / batch 250
    assert not lines(err, "error:") and not lines(err, "note:"), err
    _assert_cache_holds(gen, SAMPLE)
    assert SAMPLE.stat().st_size < 4_000_000  # small enough to ship in the repository


def test_cache_is_rebuilt_for_another_archive_then_kept_then_rebuilt_when_changed(gen, tmp_path):
    other = tmp_path / "other.tar.gz"
    _write_archive(other, seed=1)
    args = [*TINY, "-batchSize", 10, "-testOnly", "true", "-gen", gen, "-save", tmp_path / "save"]

    rc, out, err = cli(*args, "-data", other)
    assert rc == 0, err
    assert lines(err, "note:") == [f"note: -data {other}: the cache {gen / 'cifar10.t7'} was built from "
                                   f"{SAMPLE}; rebuilding it"]
    _assert_cache_holds(gen, other)
    assert " | Test: [0][1/1]" in out  # 6 test images

    stamp = (gen / "cifar10.t7").stat().st_mtime_ns
    rc, out, err = cli(*args, "-data", other)  # same archive: the cache is used as it is
    assert rc == 0 and not lines(err, "note:"), err
    assert (gen / "cifar10.t7").stat().st_mtime_ns == stamp

    _write_archive(other, seed=2)  # same path, new content (same size: the time tells)
    os.utime(other, ns=(stamp + 10**9, stamp + 10**9))
    rc, out, err = cli(*args, "-data", other)
    assert rc == 0, err
    assert lines(err, "note:") == [f"note: -data {other}: {other} changed since the cache "
                                   f"{gen / 'cifar10.t7'} was built from it; rebuilding it"]
    _assert_cache_holds(gen, other)


def test_broken_data_is_an_error_even_with_a_cache(gen, tmp_path):
    junk = tmp_path / "random.tar.gz"
    junk.write_bytes(np.random.RandomState(0).randint(0, 256, 5000).astype(np.uint8).tobytes())
    before = (gen / "cifar10.t7").read_bytes()
    rc, out, err = cli(*TINY, "-testOnly", "true", "-gen", gen, "-save", tmp_path / "save", "-data", junk)
    assert rc == 1
    assert len(lines(err, "error: ")) == 1 and f"cannot read the archive {junk}" in err, err
    assert "Results" not in out  # nothing was trained or tested on the old cache
    assert (gen / "cifar10.t7").read_bytes() == before


def test_missing_data_is_an_error_even_with_a_cache(gen, tmp_path):
    rc, out, err = cli(*TINY, "-testOnly", "true", "-gen", gen, "-save", tmp_path / "save",
                       "-data", tmp_path / "nope.tar.gz")
    assert rc == 1 and lines(err, "error: ") == [
        f"error: -data {tmp_path / 'nope.tar.gz'}: no such file or folder (expected the CIFAR-10 archive "
        f"cifar-10-python.tar.gz, its extracted folder, or a cifar10.t7 cache)"], err


def test_cache_of_unknown_origin_is_rebuilt_from_data(gen, tmp_path):
    """A cache without a source record (made by Lua, or replaced by a copy) is rebuilt once from -data."""
    source.sidecar(gen / "cifar10.t7").unlink()
    rc, out, err = cli(*TINY, "-testOnly", "true", "-gen", gen, "-save", tmp_path / "save", "-data", "sample")
    assert rc == 0, err
    assert lines(err, "note:") == [f"note: -data sample: the cache {gen / 'cifar10.t7'} does not record "
                                   f"which data it was built from; rebuilding it"]
    assert source.stale_reason(gen / "cifar10.t7", str(SAMPLE)) is None


def test_without_data_the_cache_is_used(gen, tmp_path):
    rc, out, err = cli(*TINY, "-testOnly", "true", "-gen", gen, "-save", tmp_path / "save")
    assert rc == 0 and err == "", err
    assert "Reading CIFAR-10" not in out and " * Results top1:" in out


def test_offline_without_data_names_the_option(tmp_path):
    rc, out, err = cli(*TINY, "-testOnly", "true", "-gen", tmp_path / "gen", "-save", tmp_path / "save")
    assert rc == 1 and len(lines(err, "error: ")) == 1, err
    assert "pass -data <path of the archive or of its extracted folder> (or -data sample" in err


# ---------------------------------------------------------------------------------------------
# option values


def _imagenet_dir(tmp_path: Path) -> Path:
    for split in ("train", "val"):
        (tmp_path / "inet" / split / "n01").mkdir(parents=True)
    return tmp_path / "inet"


BAD_VALUES = [  # (flags, words of the one error line: the flag, the rule, the fix)
    (["-netType", "densenet", "-growthRate", 0], ["-growthRate", "at least 1, got 0", "-growthRate 12"]),
    (["-netType", "densenet", "-growthRate", -12], ["-growthRate", "at least 1, got -12"]),
    (["-netType", "densenet", "-reduction", 0], ["-reduction", "more than 0, got 0", "-reduction 0.5"]),
    (["-netType", "densenet", "-depth", 10, "-bottleneck", "false", "-reduction", 0.01],  # 24 + 2 x 12 channels
     ["-reduction 0.01 leaves floor(48 x 0.01) = 0 channels after dense block 1", "e.g. 0.5"]),
    (["-dropRate", 1.5], ["-dropRate", "at least 0 and less than 1, got 1.5", "-dropRate 0"]),
    (["-dropRate", 1], ["-dropRate", "less than 1, got 1"]),
    (["-LR", -0.1], ["-LR", "at least 0, got -0.1", "-LR 0.1"]),
    (["-weightDecay", -1], ["-weightDecay", "at least 0, got -1", "-weightDecay 0.0001"]),
    (["-momentum", -0.5], ["-momentum", "at least 0 and less than 1, got -0.5", "-momentum 0.9"]),
    (["-momentum", 1], ["-momentum", "less than 1, got 1"]),
    (["-resetClassifier", "true", "-nClasses", -5], ["-nClasses", "at least 0, got -5"]),
    (["-batchSize", 0], ["-batchSize", "at least 1, got 0", "-batchSize 32"]),
    (["-nEpochs", -1], ["-nEpochs", "at least 0, got -1"]),
    (["-depth", -40], ["-depth", "at least 1, got -40", "-depth 20"]),
    (["-epochNumber", 0], ["-epochNumber", "at least 1, got 0"]),
    (["-epochNumber", 5, "-nEpochs", 3],
     ["-epochNumber 5 is after the last epoch -nEpochs 3", "nothing would be trained", "raise -nEpochs"]),
    (["-shortcutType", "D"], ["unknown -shortcutType: D", "A | B | C"]),
    (["-checkpointTensorType", "double"], ["unknown -checkpointTensorType: double", "cuda | float"]),
    (["-saveEvery", 0], ["-saveEvery", "at least 1, got 0", "-saveEvery 1"]),
    (["-keepCheckpoints", -1], ["-keepCheckpoints", "at least 0, got -1", "-keepCheckpoints 0"]),
    (["-nThreadsCompute", -2], ["-nThreadsCompute", "at least 0, got -2"]),
    (["-manualSeed", 1e300], ["-manualSeed", "at most 9007199254740992", "-manualSeed 0"]),
    (["-d1", -1], ["-d1", "at least 0, got -1"]),
    (["-netType", "densenet", "-depth", 7], ["DenseNet-BC -depth 7 has no dense layers", "-depth 10"]),
    (["-netType", "densenet", "-depth", 6, "-bottleneck", "false"],
     ["DenseNet -depth 6 has no dense layers", "3n+4", "-depth 7"]),
    (["-dataset", "cifar100", "-data", "sample"], ["-data sample", "-dataset cifar10 only"]),
    (["-dataset", "imagenet", "-netType", "densenet", "-depth", 40, "-data", "INET"],
     ["-depth 40 is not one of 121, 161, 169, 201", "-d1 6 -d2 12 -d3 24 -d4 16"]),
]


@pytest.mark.parametrize("flags,words", BAD_VALUES, ids=[" ".join(map(str, f)) for f, _ in BAD_VALUES])
def test_impossible_value_is_one_error_line(flags, words, tmp_path):
    flags = [_imagenet_dir(tmp_path) if f == "INET" else f for f in flags]
    rc, out, err = cli("-gen", tmp_path / "gen", "-save", tmp_path / "save", *flags)
    assert rc == 1
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "gen").exists()  # found before any data work


def _convs(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


NOTES = [  # (flags, the note line, a check of the model built from the same flags)
    (["-netType", "densenet", "-depth", 20, "-bottleneck", "true"],
     "note: DenseNet-BC depth 20: (20-4)/6 is not whole; building depth 16 (2 layers per block)",
     lambda m: _convs(m) == 16),  # stem + 3 blocks x 2 layers x 2 convs + 2 transitions + Linear
    (["-netType", "densenet", "-depth", 12, "-bottleneck", "false"],
     "note: DenseNet depth 12: (12-4)/3 is not whole; building depth 10 (2 layers per block)",
     lambda m: _convs(m) == 10),
    (["-netType", "densenet", "-depth", 10, "-bottleneck", "false", "-reduction", 2],
     "note: -reduction 2 is above 1: the transition layers multiply the channels by 2 instead of compressing "
     "them (DenseNet-C compresses with 0 < reduction <= 1, e.g. 0.5)",
     lambda m: m.features.transition1.conv.out_channels == 2 * m.features.transition1.conv.in_channels == 96),
    (["-netType", "densenet", "-depth", 10, "-bottleneck", "false", "-optMemory", 9],
     "note: -optMemory 9 is outside 0..5: it acts as -optMemory 5 (as in the Lua code)",
     lambda m: m.level == models.densenet.memory_level(5)),
    (["-netType", "densenet", "-depth", 10, "-bottleneck", "false", "-nClasses", 7],
     "note: -nClasses 7 is only used with -resetClassifier true; the classifier has the classes of -dataset "
     "cifar10", lambda m: m.classifier.out_features == 10),
]


@pytest.mark.parametrize("flags,note,check", NOTES, ids=[" ".join(map(str, f)) for f, _, _ in NOTES])
def test_value_that_builds_something_else_is_noted(flags, note, check, gen, tmp_path):
    rc, out, err = cli(*TINY, "-testOnly", "true", "-gen", gen, "-save", tmp_path / "save", *flags)
    assert rc == 0, err
    assert err.splitlines() == [note]
    assert check(models.create(opts.parse([str(f) for f in flags], check_dirs=False)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only case")
def test_ngpu_without_gpus_is_noted(gen, tmp_path):
    rc, out, err = cli(*TINY, "-testOnly", "true", "-gen", gen, "-save", tmp_path / "save", "-nGPU", 2)
    assert rc == 0 and err.splitlines() == [
        "note: -nGPU 2: running on the CPU (no CUDA device used), so one process computes the whole batch"], err


def test_dropout_note_is_not_a_python_warning(gen, tmp_path, monkeypatch):
    monkeypatch.setattr(models.densenet, "_dropout_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc, out, err = cli(*TINY, "-testOnly", "true", "-gen", gen, "-save", tmp_path / "save",
                           "-dropRate", 0.2, "-optMemory", 4)
    assert rc == 0 and not caught
    assert err.splitlines() == ["note: -optMemory 4 uses the memory-efficient dense layers, which (as in the Lua "
                                "code) have no Dropout: -dropRate 0.2 applies to transitions only. Use -optMemory 2 "
                                "or lower for Dropout inside dense layers."]


def test_reset_classifier_needs_a_score_for_every_label(gen, tmp_path):
    """-nClasses below the data's largest label is an error; a 7-class archive in CIFAR-10 form fine-tunes
    with -nClasses 7."""
    args = [*TINY, "-testOnly", "true", "-save", tmp_path / "save", "-resetClassifier", "true"]
    rc, out, err = cli(*args, "-gen", gen, "-nClasses", 5)
    assert rc == 1 and lines(err, "error: ") == [
        f"error: -nClasses 5: the labels of {gen / 'cifar10.t7'} go up to 10, so the new classifier needs at "
        f"least 10 classes; use -nClasses 10"], err
    seven = tmp_path / "seven.tar.gz"
    _write_archive(seven, seed=3, per_batch=20, n_test=20, n_classes=7)
    assert max(max(b["labels"]) for b in _read_batches(seven).values()) == 6
    rc, out, err = cli(*args, "-gen", tmp_path / "gen7", "-data", seven, "-nClasses", 7)
    assert rc == 0 and " => Replacing classifier with 7-way classifier" in out, err


def test_cifar100_model_on_cifar10_is_an_error(gen, tmp_path):
    model = reference("densenet_cifar100_d40_k12_bc_drop02", "model.t7")
    args = ["-netType", "densenet", "-depth", 40, "-nThreads", 0, "-batchSize", 100, "-testOnly", "true",
            "-printModel", "false", "-gen", gen, "-save", tmp_path / "save", "-retrain", model]
    rc, out, err = cli(*args)
    assert rc == 1 and lines(err, "error: ") == [
        f"error: -retrain {model}: the network gives 100 class scores but -dataset cifar10 has 10 classes; "
        f"pass -resetClassifier true -nClasses 10 to fine-tune it with a new classifier"], err
    rc, out, err = cli(*args, "-resetClassifier", "true", "-nClasses", 10)
    assert rc == 0 and " * Results top1:" in out, err


# ---------------------------------------------------------------------------------------------
# new options


def test_nthreads_compute_sets_torch_threads(gen, tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        rc, out, err = cli(*TINY, "-testOnly", "true", "-gen", gen, "-save", tmp_path / "save")
        assert rc == 0 and torch.get_num_threads() == 2  # 0: PyTorch's default is left alone
        rc, out, err = cli(*TINY, "-testOnly", "true", "-gen", gen, "-save", tmp_path / "save",
                           "-nThreadsCompute", 1)
        assert rc == 0 and torch.get_num_threads() == 1, err
    finally:
        torch.set_num_threads(before)


def test_print_model_false_skips_the_model_tree(gen, tmp_path):
    args = [*TINY, "-testOnly", "true", "-gen", gen, "-save", tmp_path / "save"]
    rc, shown, err = cli(*args, "-printModel", "true")
    assert rc == 0 and "nn.Sequential {" in shown and "nn.Concat" in shown, err
    rc, hidden, err = cli(*args, "-printModel", "false")
    assert rc == 0 and "nn.Sequential" not in hidden and " * Results top1:" in hidden, err
    assert len(shown.splitlines()) > len(hidden.splitlines()) + 20


def test_new_options_are_declared_with_defaults():
    opt = opts.parse([], check_dirs=False)
    assert (opt.nThreadsCompute, opt.printModel, opt.saveEvery, opt.keepCheckpoints,
            opt.checkpointTensorType) == (0, True, 1, 0, "cuda")
    opt = opts.parse(["-saveEvery", "5", "-keepCheckpoints", "2", "-checkpointTensorType", "float",
                      "-printModel", "false", "-nThreadsCompute", "3"], check_dirs=False)
    assert (opt.saveEvery, opt.keepCheckpoints, opt.checkpointTensorType, opt.printModel,
            opt.nThreadsCompute) == (5, 2, "float", False, 3)
    lua = opt.as_lua_dict()  # not in the Lua opt table written into checkpoints
    assert not {"saveEvery", "keepCheckpoints", "checkpointTensorType", "printModel", "nThreadsCompute"} & set(lua)


def test_resuming_a_finished_run(tmp_path):
    """latest.t7 at epoch 2: launched again with -nEpochs 2 (a re-queued job, a restart after the last
    checkpoint) it exits 0 saying there is nothing left to train; -nEpochs 1 is a mistake."""
    from fbresnet_port import t7
    t7.save(tmp_path / "latest.t7", {"epoch": 2, "modelFile": "model_2.t7", "optimFile": "optimState_2.t7"})
    t7.save(tmp_path / "optimState_2.t7", {"learningRate": 0.1})
    rc, out, err = cli("-resume", tmp_path, "-nEpochs", 2, "-data", "sample", "-gen", tmp_path / "gen")
    assert rc == 0 and err == "", err
    assert out.splitlines()[-1] == (f"=> Nothing left to train: -resume {tmp_path} already finished epoch 2 "
                                    f"of -nEpochs 2 (raise -nEpochs to train on)")
    rc, out, err = cli("-resume", tmp_path, "-nEpochs", 1, "-data", "sample", "-gen", tmp_path / "gen")
    assert rc == 1 and err.count("\n") == 1
    assert err.startswith(f"error: -resume {tmp_path}: that run already finished epoch 2, after -nEpochs 1; "
                          f"give -nEpochs 2 or more")
    assert "-testOnly true" in err
