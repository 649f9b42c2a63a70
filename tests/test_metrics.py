"""fbresnet_port/metrics.py: the added log lines and metrics.csv (hand-made values)."""
from __future__ import annotations

import math

import pytest

from fbresnet_port import metrics
from fbresnet_port.metrics import EpochMetrics


@pytest.mark.parametrize("seconds, text", [(0, "0:00:00"), (59.4, "0:00:59"), (61, "0:01:01"),
                                           (3723, "1:02:03"), (27 * 3600 + 5, "27:00:05"),
                                           (math.nan, "?"), (math.inf, "?"), (-1, "?")])
def test_format_duration(seconds, text):
    assert metrics.format_duration(seconds) == text


@pytest.mark.parametrize("n_batches, every", [(1, 10), (10, 10), (100, 10), (101, 11), (782, 79)])
def test_progress_interval(n_batches, every):
    assert metrics.progress_interval(n_batches) == every


def test_format_progress():
    # 41 s for 79 of 782 batches: 41 / 79 * 703 = 364.8 s left
    assert metrics.format_progress(3, 300, 79, 782, 41.0, 3723.0) == \
        " | Progress: epoch 3/300  batch 79/782  epoch time 0:00:41  epoch ETA 0:06:05  run time 1:02:03"


def test_format_summary_and_final():
    m = EpochMetrics(12, 0.123456, 3.5, 0.25, 7.125, 1.0, 0.00125, 95.0)
    assert metrics.format_summary(m, 300, 1200.0, 288 * 95.0) == (
        " * Epoch 12/300 summary: train loss 0.1235  top1   3.500  top5   0.250 | test top1   7.125  "
        "top5   1.000 | lr 0.00125 | time 0:01:35 | elapsed 0:20:00  ETA 7:36:00")
    assert metrics.format_final(12, 7.125, 1.0, "/runs/a/model_best.t7") == \
        " * Best epoch 12: top1  7.125  top5  1.000  /runs/a/model_best.t7"


def _row(epoch: int, loss: float = 1.0) -> EpochMetrics:
    return EpochMetrics(epoch, loss, 50.0, 10.0, 60.0, 20.0, 0.1, 1.5)


def test_metrics_csv_rows_and_redone_epochs(tmp_path):
    for e in (1, 2, 3):
        metrics.write_metrics(tmp_path, _row(e, 0.375))
    text = (tmp_path / "metrics.csv").read_text()
    assert text.splitlines()[0] == "epoch,train_loss,train_top1,train_top5,test_top1,test_top5,lr,time_s"
    assert text.splitlines()[1] == "1,0.375,50,10,60,20,0.1,1.5"
    assert metrics.read_metrics(tmp_path / "metrics.csv") == [_row(1, 0.375), _row(2, 0.375), _row(3, 0.375)]
    # a resumed run redoes epoch 2: its row replaces the old epoch 2 and drops the later one
    metrics.write_metrics(tmp_path, _row(2, 0.5))
    assert metrics.read_metrics(tmp_path / "metrics.csv") == [_row(1, 0.375), _row(2, 0.5)]


def test_metrics_csv_writes_numbers_as_lua_prints_them(tmp_path):
    """Lua's tostring (%.14g): 0.1 * 0.1 is 0.01 (Python's repr: 0.010000000000000002), 1/3 has 14 digits."""
    metrics.write_metrics(tmp_path, EpochMetrics(7, 1 / 3, 2 / 3, 1e-20, 100.0, 12.5, 0.1 * 0.1, 3600.25))
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1] == \
        "7,0.33333333333333,0.66666666666667,1e-20,100,12.5,0.01,3600.25"


def test_metrics_csv_continues_the_resumed_folder(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    for e in (1, 2, 3):
        metrics.write_metrics(old, _row(e))
    metrics.write_metrics(new, _row(3, 0.25), previous=old)
    assert metrics.read_metrics(new / "metrics.csv") == [_row(1), _row(2), _row(3, 0.25)]
    assert len(metrics.read_metrics(old / "metrics.csv")) == 3


def test_unreadable_metrics_csv_is_kept_aside(tmp_path, capsys):
    (tmp_path / "metrics.csv").write_text("epoch,loss\n1,abc\n")
    metrics.write_metrics(tmp_path, _row(4))
    assert "not a metrics.csv row" in capsys.readouterr().err
    assert (tmp_path / "metrics.csv.unreadable").read_text() == "epoch,loss\n1,abc\n"
    assert metrics.read_metrics(tmp_path / "metrics.csv") == [_row(4)]
