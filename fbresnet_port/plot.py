"""Draw a run's learning curves from its ``metrics.csv`` (no Lua counterpart).

    python -m fbresnet_port.plot SAVE [-o curves.png]      (fbresnet-plot once the package is installed)

Two panels against the epoch: the mean training loss, and the top-1 / top-5 errors of training and
test. Needs matplotlib (optional: ``pip install matplotlib``); the PNG goes to ``SAVE/curves.png``
unless ``-o`` says otherwise.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import click

from .errors import UserError, run_click
from .metrics import METRICS_FILE, EpochMetrics, read_metrics

DEFAULT_OUTPUT = "curves.png"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("plotting needs matplotlib, which is not installed: pip install matplotlib") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def plot_metrics(rows: list[EpochMetrics], output: str | Path, title: str = "") -> Path:
    """Write the loss and error curves of ``rows`` to the PNG ``output``."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    epochs = [r.epoch for r in rows]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    ax_loss.plot(epochs, [r.train_loss for r in rows], marker=".", label="train loss")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
    for values, label, style, colour in (([r.train_top1 for r in rows], "train top-1", "--", "C1"),
                                         ([r.test_top1 for r in rows], "test top-1", "-", "C1"),
                                         ([r.train_top5 for r in rows], "train top-5", "--", "C2"),
                                         ([r.test_top5 for r in rows], "test top-5", "-", "C2")):
        ax_err.plot(epochs, values, style, color=colour, marker=".", label=label)
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="error")
    for ax in (ax_loss, ax_err):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    output = Path(output)
    fig.savefig(output, format="png")
    plt.close(fig)
    return output


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("save", type=click.Path(file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help=f"PNG to write [SAVE/{DEFAULT_OUTPUT}]")
def _plot(save: str, output: str | None) -> int:
    """Plot the loss and error curves of a training run: SAVE is the run's -save folder (holding metrics.csv)."""
    folder = Path(save)
    csv_path = folder / METRICS_FILE
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: no such file; give the -save folder of a run "
                        f"(metrics.csv is written after each epoch)")
    rows = read_metrics(csv_path)
    if not rows:
        raise UserError(f"{csv_path} has no epochs yet; plot again after the first epoch")
    click.echo(plot_metrics(rows, output or folder / DEFAULT_OUTPUT, title=str(folder)))
    return 0


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``python -m fbresnet_port.plot SAVE [-o out.png]`` and ``fbresnet-plot``: prints the PNG's path; returns
    the exit status (1 with one ``error:`` line for a mistake)."""
    if prog is None:  # the console script's name, else the module form
        script = os.path.basename(sys.argv[0]) if argv is None else ""
        prog = script if script.startswith("fbresnet-") else "python -m fbresnet_port.plot"
    return run_click(_plot, argv, prog, prefix="error: ")


if __name__ == "__main__":
    sys.exit(main())
