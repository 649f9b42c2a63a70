"""A run a user can trust and follow, through the real CLI (tiny DenseNet, CIFAR-10 sample):
interrupted checkpoints stay consistent, -resume is exact, metrics.csv and the plot follow the logs."""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from dataclasses import astuple

import pytest
import torch

from conftest import REPO_ROOT, data_file
from fbresnet_port import checkpoints, metrics, plot, runlock, t7
from models.lua_weights import lua_batchnorms, lua_parameters

import main

CASE_FLAGS = ["-netType", "densenet", "-dataset", "cifar10", "-depth", "7", "-growthRate", "4",
              "-bottleneck", "false", "-reduction", "1", "-batchSize", "250", "-LR", "0.1",
              "-manualSeed", "7", "-nEpochs", "2", "-printModel", "false"]


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gen")


def _flags(save, gen_dir, *extra: str) -> list[str]:
    return CASE_FLAGS + ["-data", str(data_file("cifar-10-small-python.tar.gz")), "-gen", str(gen_dir),
                         "-save", str(save), *extra]


def _model_tensors(path) -> list[torch.Tensor]:
    """Parameters and BatchNorm running statistics of a saved Lua model, in Lua order."""
    model = t7.load(path)
    bns = [m[k] for _, m in lua_batchnorms(model) for k in ("running_mean", "running_var")]
    return [p.tensor for p in lua_parameters(model)] + bns


def _assert_same_model(a, b) -> None:
    ta, tb = _model_tensors(a), _model_tensors(b)
    assert len(ta) == len(tb) > 10
    for x, y in zip(ta, tb):
        assert torch.equal(x, y)


def _assert_consistent(folder, epoch: int) -> None:
    """latest.t7 names epoch's complete files; no temp file is left."""
    latest = t7.load(folder / "latest.t7")
    assert latest["epoch"] == epoch
    assert t7.load(folder / latest["modelFile"]).typename == "nn.Sequential"
    assert "dfdx" in t7.load(folder / latest["optimFile"])
    assert t7.load(folder / "model_best.t7").typename == "nn.Sequential"
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp") and p.name != ".notes.txt.tmp"]


def _summaries(out: str) -> dict[int, re.Match]:
    pattern = (r"^ \* Epoch (\d+)/2 summary: train loss (\S+)  top1 +(\S+)  top5 +(\S+) \| test top1 +(\S+)  "
               r"top5 +(\S+) \| lr (\S+) \| time \d+:\d\d:\d\d \| elapsed \d+:\d\d:\d\d  ETA \d+:\d\d:\d\d$")
    return {int(m.group(1)): m for m in re.finditer(pattern, out, re.M)}


def _assert_rows_match_log(rows: list[metrics.EpochMetrics], out: str) -> None:
    """metrics.csv holds the numbers of the summary lines and of Lua's test-end lines."""
    logged = _summaries(out)
    lua_end = {int(m.group(1)): (m.group(2), m.group(3)) for m in
               re.finditer(r"^ \* Finished epoch # (\d+) +top1: +(\S+)  top5: +(\S+)$", out, re.M)}
    assert logged and set(logged) <= {r.epoch for r in rows}
    for r in rows:
        if r.epoch not in logged:
            continue
        m = logged[r.epoch]
        assert ("%.4f" % r.train_loss, "%.3f" % r.train_top1, "%.3f" % r.train_top5) == m.group(2, 3, 4)
        assert ("%.3f" % r.test_top1, "%.3f" % r.test_top5) == m.group(5, 6) == lua_end[r.epoch]
        assert "%.6g" % r.lr == m.group(7)


def _assert_lua_numbers(path) -> None:
    """metrics.csv writes every number as Lua's tostring (%.14g): with -LR 0.1 -nEpochs 2, the CIFAR schedule's
    epochs 1 and 2 train at 0.1 * 0.1^1 and 0.1 * 0.1^2, which Lua prints 0.01 and 0.001."""
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    assert [r[6] for r in rows] == ["0.01", "0.001"]
    assert all(f == "%.14g" % float(f) and len(f.split("e")[0].replace("-", "").replace(".", "").lstrip("0")) <= 14
               for r in rows for f in r[1:])


def test_interrupted_save_resumes_exactly(tmp_path, gen_dir, monkeypatch, capsys):
    """Interrupt between model_best.t7 and latest.t7 of epoch 2 (-nThreads 0): the folder stays at
    epoch 1; -resume redoes epoch 2 and gets bit-identical weights, momentum and metrics."""
    save = tmp_path / "run"
    flags = _flags(save, gen_dir, "-nThreads", "0", "-keepCheckpoints", "1", "-checkpointTensorType", "float")
    real_save = t7.save

    def interrupted_save(path, obj, **kw):
        if os.path.basename(path) == "latest.t7" and os.path.exists(save / "model_2.t7"):
            raise KeyboardInterrupt  # Ctrl-C between the two writes
        real_save(path, obj, **kw)

    monkeypatch.setattr(t7, "save", interrupted_save)
    assert main.main(flags) == 130
    monkeypatch.setattr(t7, "save", real_save)
    first = capsys.readouterr().out
    _assert_consistent(save, 1)
    assert (save / "model_1.t7").is_file()  # -keepCheckpoints runs only after latest.t7
    straight = {name: (save / name).read_bytes() for name in ("model_2.t7", "optimState_2.t7")}
    best_epoch = 2 if first.count(" * Best model ") == 2 else 1
    _assert_same_model(save / "model_best.t7", save / f"model_{best_epoch}.t7")
    rows = metrics.read_metrics(save / "metrics.csv")
    assert [r.epoch for r in rows] == [1, 2]
    _assert_rows_match_log(rows, first)
    _assert_lua_numbers(save / "metrics.csv")
    (save / ".latest.t7.k1ll3d.tmp").write_bytes(b"half")   # a write cut by a kill -9
    (save / ".notes.txt.tmp").write_bytes(b"someone else's")

    assert main.main(flags + ["-resume", str(save)]) == 0
    out = capsys.readouterr().out
    assert "=> Training epoch # 2" in out and "=> Training epoch # 1\n" not in out
    _assert_consistent(save, 2)
    assert not (save / ".latest.t7.k1ll3d.tmp").exists() and (save / ".notes.txt.tmp").exists()
    assert sorted(p.name for p in save.glob("*.t7")) == ["latest.t7", "model_2.t7", "model_best.t7",
                                                          "optimState_2.t7"]
    # the redone epoch equals the uninterrupted one, bit for bit
    (tmp_path / "straight_model_2.t7").write_bytes(straight["model_2.t7"])
    _assert_same_model(save / "model_2.t7", tmp_path / "straight_model_2.t7")
    before, after = t7.load_bytes(straight["optimState_2.t7"]), t7.load(save / "optimState_2.t7")
    assert t7.typename_of(after["dfdx"]) == "torch.FloatTensor"
    assert torch.equal(before["dfdx"], after["dfdx"]) and before["evalCounter"] == after["evalCounter"] == 8
    resumed = metrics.read_metrics(save / "metrics.csv")
    assert [r.epoch for r in resumed] == [1, 2]  # epoch 2 replaced, not added
    assert [astuple(r)[:-1] for r in resumed] == [astuple(r)[:-1] for r in rows]  # all but time
    _assert_rows_match_log(resumed, out)
    latest = t7.load(save / "latest.t7")
    best = min(rows, key=lambda r: r.test_top1)
    assert (latest["bestEpoch"], latest["bestTop1"]) == (best.epoch, best.test_top1)
    assert out.rstrip("\n").splitlines()[-1] == \
        " * Best epoch %d: top1 %6.3f  top5 %6.3f  %s" % (best.epoch, best.test_top1, best.test_top5,
                                                          save / "model_best.t7")


def test_killed_process_resumes_exactly_with_workers(tmp_path, gen_dir, capsys):
    """kill -9 just before latest.t7 of epoch 2 (2 loader workers, umask 077): the files are 0600,
    the folder is at epoch 1, and the resumed run (umask 022) rewrites epoch 2 identically, 0644."""
    save = tmp_path / "run"
    flags = _flags(save, gen_dir, "-nThreads", "2", "-nThreadsCompute", "1")
    env = dict(os.environ, **{checkpoints.KILL_HOOK_ENV: "2:latest.t7"})
    result = subprocess.run([sys.executable, "main.py", *flags], cwd=REPO_ROOT, env=env, umask=0o077,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr[-2000:]
    _assert_consistent(save, 1)
    modes = {p.name: p.stat().st_mode & 0o777 for p in save.iterdir()}
    assert modes == dict.fromkeys(["latest.t7", "metrics.csv", "model_1.t7", "optimState_1.t7",
                                   "model_2.t7", "optimState_2.t7", "model_best.t7",
                                   runlock.LOCK_NAME], 0o600)   # the killed run's lock stays
    del modes[runlock.LOCK_NAME]
    straight = tmp_path / "straight_model_2.t7"
    straight.write_bytes((save / "model_2.t7").read_bytes())

    old = os.umask(0o022)
    try:
        assert main.main(flags + ["-resume", str(save)]) == 0
    finally:
        os.umask(old)
    assert "=> Training epoch # 2" in capsys.readouterr().out
    _assert_consistent(save, 2)
    _assert_same_model(save / "model_2.t7", straight)
    rewritten = ["latest.t7", "metrics.csv", "model_2.t7", "optimState_2.t7"]
    if t7.load(save / "latest.t7")["bestEpoch"] == 2:
        rewritten.append("model_best.t7")
    assert {p.name: p.stat().st_mode & 0o777 for p in save.iterdir()} == \
        dict(modes, **dict.fromkeys(rewritten, 0o644))   # taken over, removed at the end


# -- plot ---------------------------------------------------------------------------------------------

def _rows() -> list[metrics.EpochMetrics]:
    return [metrics.EpochMetrics(e, 2.3 / e, 90 - 10 * e, 50 - 8 * e, 88 - 9 * e, 45 - 7 * e, 0.1, 3.0)
            for e in range(1, 5)]


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib (optional, for plots) is not installed")
    for r in _rows():
        metrics.write_metrics(tmp_path, r)
    assert plot.main([str(tmp_path)]) == 0
    png = tmp_path / "curves.png"
    assert capsys.readouterr().out.strip() == str(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1100, 420)  # figsize 11 x 4.2 at 100 dpi
    from PIL import Image
    with Image.open(png) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # curves, text and grid, not a blank canvas
    assert plot.main([str(tmp_path), "-o", str(tmp_path / "other.png")]) == 0
    assert (tmp_path / "other.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_errors_are_one_line(tmp_path, monkeypatch, capsys):
    assert plot.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics.csv: no such file" in err
    metrics.write_metrics(tmp_path, _rows()[0])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert plot.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == "error: plotting needs matplotlib, which is not installed: pip install matplotlib\n"


def _plot_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fbresnet_port.plot", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


def test_plot_cli_module(tmp_path):
    """`python -m fbresnet_port.plot` parses its arguments with click, as the other commands do; every mistake is
    one `error:` line (without matplotlib too)."""
    result = _plot_cli(str(tmp_path / "nothing"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "error: " in result.stderr
    assert "metrics.csv: no such file" in result.stderr
    helped = _plot_cli("--help")
    assert helped.returncode == 0 and helped.stdout.startswith("Usage: python -m fbresnet_port.plot [OPTIONS] SAVE")
    assert "-o, --output FILE" in helped.stdout and _plot_cli("-h").stdout == helped.stdout
    for args, message in (((), "error: Missing argument 'SAVE'."),
                          ((str(tmp_path), "extra"), "error: Got unexpected extra argument (extra)"),
                          ((str(tmp_path), "--colour", "red"), "error: No such option '--colour'")):
        result = _plot_cli(*args)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(message) and "see python -m fbresnet_port.plot --help" in result.stderr


def test_plot_cli_writes_the_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (optional, for plots) is not installed")
    for r in _rows():
        metrics.write_metrics(tmp_path, r)
    result = _plot_cli(str(tmp_path), "-o", str(tmp_path / "run.png"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'run.png'}\n"
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
