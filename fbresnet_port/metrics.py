"""Following a run (no Lua counterpart): progress and summary lines, ``metrics.csv``.

Lua's log lines stay as they were (PARITY §4.5); these lines are added between them and start with
their own labels (`` | Progress:``, `` * Epoch N/M summary:``, `` * Best epoch``), so parsers of
Lua's lines see nothing new:

* every :func:`progress_interval` training batches, the epoch's elapsed time and ETA and the
  run's elapsed time;
* after each epoch's test, its mean train loss / top-1 / top-5, test top-1 / top-5, learning rate
  (of its last iteration), wall time, and the ETA of the run;
* at the end, the best epoch and the path of its ``model_best.t7``.

``metrics.csv`` in ``-save`` gets one row per epoch (columns :data:`COLUMNS`, numbers as Lua's ``tostring``
prints them: ``%.14g``, so ``lr`` is ``0.01``, not ``0.010000000000000002``), rewritten atomically; a redone
epoch (after ``-resume``) replaces its row and any later ones.
"""
from __future__ import annotations

import csv
import io
import math
import os
import sys
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from . import fileio
from .errors import UserError

__all__ = ["COLUMNS", "EpochMetrics", "METRICS_FILE", "format_duration", "format_progress", "lua_tostring",
           "format_summary", "format_final", "progress_interval", "read_metrics", "write_metrics"]

METRICS_FILE = "metrics.csv"


def lua_tostring(x: float) -> str:
    """Lua ``tostring`` of a number (``%.14g``), as the Lua log lines and ``metrics.csv`` write numbers."""
    return "%.14g" % x


@dataclass(frozen=True)
class EpochMetrics:
    """One row of ``metrics.csv``: errors in percent, loss = mean cross-entropy, time in seconds."""

    epoch: int
    train_loss: float
    train_top1: float
    train_top5: float
    test_top1: float
    test_top5: float
    lr: float
    time_s: float


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(EpochMetrics))


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (hours unbounded); ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def progress_interval(n_batches: int) -> int:
    """Batches between two progress lines: about ten lines an epoch, none for epochs of <= 10."""
    return max(10, math.ceil(n_batches / 10))


def format_progress(epoch: int, n_epochs: int, n: int, size: int, epoch_elapsed: float,
                    run_elapsed: float) -> str:
    """The progress line after training batch ``n`` of ``size`` (ETA from the mean batch time)."""
    eta = epoch_elapsed / n * (size - n) if n else math.nan
    return (f" | Progress: epoch {epoch}/{n_epochs}  batch {n}/{size}  "
            f"epoch time {format_duration(epoch_elapsed)}  epoch ETA {format_duration(eta)}  "
            f"run time {format_duration(run_elapsed)}")


def format_summary(m: EpochMetrics, n_epochs: int, run_elapsed: float, run_eta: float) -> str:
    """The end-of-epoch line (loss ``%.4f``, errors ``%7.3f`` as the test lines, lr ``%.6g``)."""
    return (" * Epoch %d/%d summary: train loss %.4f  top1 %7.3f  top5 %7.3f | test top1 %7.3f  "
            "top5 %7.3f | lr %.6g | time %s | elapsed %s  ETA %s"
            % (m.epoch, n_epochs, m.train_loss, m.train_top1, m.train_top5, m.test_top1,
               m.test_top5, m.lr, format_duration(m.time_s), format_duration(run_elapsed),
               format_duration(run_eta)))


def format_final(epoch: int | None, top1: float, top5: float, path: str | os.PathLike | None) -> str:
    """The last line: the best epoch, its errors and where its model is."""
    where = str(path) if path is not None else "(not saved)"
    which = f"epoch {epoch}" if epoch is not None else "model"
    return " * Best %s: top1 %6.3f  top5 %6.3f  %s" % (which, top1, top5, where)


def read_metrics(path: str | os.PathLike) -> list[EpochMetrics]:
    """The rows of a ``metrics.csv`` (empty list when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), 2):
            try:
                rows.append(EpochMetrics(int(row["epoch"]), *(float(row[c]) for c in COLUMNS[1:])))
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{path}, line {line}: not a metrics.csv row of main.py "
                                f"(columns {','.join(COLUMNS)}); move the file away") from None
    return rows


def write_metrics(folder: str | os.PathLike, m: EpochMetrics,
                  previous: str | os.PathLike | None = None) -> Path:
    """Add ``m`` to ``folder/metrics.csv``, dropping rows of its epoch and later (a redone epoch).

    ``previous``: another run folder (``-resume``) whose rows start the file when ``folder`` has none.
    """
    path = Path(folder) / METRICS_FILE
    source = path if path.is_file() or previous is None else Path(previous) / METRICS_FILE
    try:
        rows = [r for r in read_metrics(source) if r.epoch < m.epoch] + [m]
    except UserError as e:  # never stop a training run for its log: keep the file, start anew
        if source == path:
            os.replace(path, path.with_name(METRICS_FILE + ".unreadable"))
        print(f"warning: {e}; starting a new {METRICS_FILE}", file=sys.stderr)
        rows = [m]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([r.epoch, *(lua_tostring(float(v)) for v in astuple(r)[1:])])
    fileio.atomic_write_text(path, out.getvalue())
    return path
