"""Load time of the largest .t7 fixture: fbresnet_port.t7.load against torchfile.load, same process.

    python benchmarks/t7_load.py [FILE.t7] [--repeat N]

Prints a table (median seconds, MB/s) and the speed ratio against torchfile.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fbresnet_port import t7  # noqa: E402

DEFAULT = ROOT.parent / "shared" / "reference" / "densenet_imagenet_d121_k32" / "model.t7"


def _time(fn, repeat: int) -> float:
    fn()  # warm the page cache and imports
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default=str(DEFAULT))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    path = Path(args.file)
    mb = path.stat().st_size / 1e6
    rows = [("fbresnet_port.t7.load", _time(lambda: t7.load(path), args.repeat))]
    try:
        import torchfile
        rows.append(("torchfile.load (baseline)", _time(lambda: torchfile.load(str(path)), args.repeat)))
    except ImportError:
        print("torchfile is not installed: no baseline")
    base = rows[-1][1]
    print(f"file: {path} ({mb:.1f} MB), median of {args.repeat}")
    print(f"{'reader':<28}{'seconds':>10}{'MB/s':>10}{'speed vs baseline':>20}")
    for name, sec in rows:
        print(f"{name:<28}{sec:>10.4f}{mb / sec:>10.1f}{base / sec:>19.2f}x")


if __name__ == "__main__":
    main()
