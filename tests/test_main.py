"""main.py end to end: help, clean errors, and real training on the CIFAR-10 sample with resume."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, data_file
from fbresnet_port import metrics, t7

import main


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


# Every option of the two original opts.lua files (PARITY.md §1.2), in declaration order.
LUA_OPTIONS = ["data", "dataset", "manualSeed", "nGPU", "backend", "cudnn", "gen", "precision", "nThreads",
               "nEpochs", "epochNumber", "batchSize", "testOnly", "tenCrop", "save", "resume", "LR", "momentum",
               "weightDecay", "lrShape", "netType", "depth", "shortcutType", "retrain", "optimState",
               "shareGradInput", "optnet", "resetClassifier", "nClasses", "growthRate", "bottleneck",
               "reduction", "dropRate", "optMemory", "d1", "d2", "d3", "d4"]


def test_help_lists_every_option():
    result = _run_cli("-h")
    assert result.returncode == 0
    for name in LUA_OPTIONS:
        assert re.search(rf"^  -{name} +\S", result.stdout, re.M), name


@pytest.mark.parametrize("args, message", [
    (["-lr", "0.1"], "did you mean -LR?"),
    (["-depth", "abc"], "invalid type for option -depth (should be number"),
    (["-dataset", "mnist"], "unknown dataset: mnist"),
    (["-netType", "nosuchnet", "-dataset", "cifar10"], "nosuchnet"),
])
def test_user_mistakes_give_a_message_not_a_traceback(args, message, tmp_path):
    result = _run_cli(*args, "-save", str(tmp_path / "save"), "-data", str(tmp_path))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FBRESNET_NO_DOWNLOAD", "1")
    result = _run_cli("-netType", "resnet", "-dataset", "cifar10", "-depth", "8",
                      "-data", str(tmp_path / "nothing-here"), "-gen", str(tmp_path / "gen"),
                      "-save", str(tmp_path / "save"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "nothing-here" in result.stderr


def _final(out: str) -> tuple[float, float]:
    m = re.search(r"^ \* Finished top1: +([\d.]+)  top5: +([\d.]+)$", out, re.M)
    assert m, out[-2000:]
    return float(m.group(1)), float(m.group(2))


def test_trains_densenet_on_cifar10_sample_and_resumes(tmp_path, capsys):
    """A small DenseNet on the 1000/200-image CIFAR-10 sample: test error falls well below chance
    (90%) within a few epochs; the run checkpoints every epoch and -resume continues it."""
    archive = data_file("cifar-10-small-python.tar.gz")
    common = ["-netType", "densenet", "-dataset", "cifar10", "-depth", "10", "-growthRate", "12",
              "-bottleneck", "false", "-reduction", "1", "-batchSize", "50", "-LR", "0.1",
              "-lrShape", "cosine", "-nThreads", "1", "-manualSeed", "7",
              "-data", str(archive), "-gen", str(tmp_path / "gen"), "-save", str(tmp_path / "run")]
    assert main.main(common + ["-nEpochs", "6", "-epochNumber", "1"]) == 0
    out = capsys.readouterr().out
    errors = [float(x) for x in re.findall(r"^ \* Finished epoch # \d+ +top1: +([\d.]+)", out, re.M)]
    assert len(errors) == 6
    assert min(errors) < 80.0, errors  # chance is 90%
    best_top1, _ = _final(out)
    assert best_top1 == min(errors)
    assert (tmp_path / "gen" / "cifar10.t7").is_file()  # the Lua-layout cache
    latest = t7.load(tmp_path / "run" / "latest.t7")
    assert latest["epoch"] == 6 and (tmp_path / "run" / "model_6.t7").is_file()
    # metrics.csv: one row per epoch with the logged test errors; the last line names the best model
    rows = metrics.read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r.epoch for r in rows] == [1, 2, 3, 4, 5, 6]
    assert ["%.3f" % r.test_top1 for r in rows] == \
        re.findall(r"^ \* Finished epoch # \d+ +top1: +([\d.]+)", out, re.M)
    best = min(rows, key=lambda r: r.test_top1)
    assert latest["bestEpoch"] == best.epoch
    assert out.splitlines()[-1] == " * Best epoch %d: top1 %6.3f  top5 %6.3f  %s" % (
        best.epoch, best.test_top1, best.test_top5, tmp_path / "run" / "model_best.t7")

    # resume: one more epoch (a longer schedule), starting from epoch 7 with the saved weights
    assert main.main(common + ["-nEpochs", "7", "-resume", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "=> Loading checkpoint" in out and "=> Training epoch # 7" in out
    assert "=> Training epoch # 1\n" not in out
    assert t7.load(tmp_path / "run" / "latest.t7")["epoch"] == 7
    assert [r.epoch for r in metrics.read_metrics(tmp_path / "run" / "metrics.csv")] == list(range(1, 8))

    # test only, from the best model
    assert main.main(common + ["-testOnly", "true", "-retrain", str(tmp_path / "run" / "model_best.t7")]) == 0
    out = capsys.readouterr().out
    m = re.search(r"^ \* Results top1: +([\d.]+)  top5: +([\d.]+)$", out, re.M)
    assert m and float(m.group(1)) == pytest.approx(best_top1, abs=1e-6) or float(m.group(1)) < 90
