"""Conversion time of the Lua fixture models: ``t7.load`` + ``lua_nn.from_lua`` of this tree against the
same code at an earlier commit (default d2946db, before the validating converter of issue #15).

    python benchmarks/convert_speed.py [--rounds 3] [--repeat 3] [--baseline-rev d2946db] [--models NAME ...]

Each (tree, model) pair runs in its own Python process importing that tree's ``fbresnet_port`` (one warm-up, then
``--repeat`` timings); the trees alternate within each of ``--rounds`` rounds, so that load on a shared machine
affects both alike. Prints the fastest time seen per tree (load and conversion wall-clock seconds, and the
conversion's CPU seconds of the process, less sensitive to other processes on the machine) and the ratios this
tree / baseline of the conversion (wall, CPU).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference"
DEFAULT_MODELS = ["densenet_imagenet_d121_k32", "densenet_cifar10_d100_k12_bc_om2", "densenet_cifar10_d40_k12_nobc_om2",
                  "densenet_imagenet_custom_2342_k8", "resnet_cifar10_d20_A", "preresnet_cifar10_d20", "zoo_spatial"]

# Run in the child process: time load and conversion of one file with the fbresnet_port found first on sys.path.
_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from fbresnet_port import t7
from fbresnet_port.lua_nn import from_lua
path, repeat = sys.argv[2], int(sys.argv[3])
from_lua(t7.load(path))  # warm-up: page cache, imports, first-call costs
loads, converts, cpus = [], [], []
for _ in range(repeat):
    t0 = time.perf_counter(); obj = t7.load(path); t1 = time.perf_counter()
    c1 = time.process_time(); from_lua(obj); c2 = time.process_time(); t2 = time.perf_counter()
    loads.append(t1 - t0); converts.append(t2 - t1); cpus.append(c2 - c1)
print(json.dumps({"load": min(loads), "convert": min(converts), "cpu": min(cpus)}))
"""


def time_tree(tree: Path, model: Path, repeat: int) -> dict[str, float]:
    """The fastest load and conversion seconds of ``model`` with the code of ``tree``."""
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tree), str(model), str(repeat)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def extract(rev: str, dest: Path) -> Path:
    """The ``fbresnet_port`` package at ``rev`` (``git archive``, read only) under ``dest``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "fbresnet_port"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timings per process")
    parser.add_argument("--rounds", type=int, default=3, help="processes per tree and model, trees alternating")
    parser.add_argument("--baseline-rev", default="d2946db", help="git revision to compare with ('' for none)")
    parser.add_argument("--models", nargs="*", default=DEFAULT_MODELS,
                        help="fixture folders under ../shared/reference (or paths to .t7 files)")
    args = parser.parse_args()
    models = [Path(m) if m.endswith(".t7") else REFERENCE / m / "model.t7" for m in args.models]
    with tempfile.TemporaryDirectory() as tmp:
        trees = [("this tree", ROOT)]
        if args.baseline_rev:
            trees.append((args.baseline_rev, extract(args.baseline_rev, Path(tmp))))
        print(f"fastest of {args.rounds} x {args.repeat} timings (each process after one warm-up); seconds")
        head = f"{'model':<34}{'MB':>5}" + "".join(f"{'load':>7}{'convert':>9}{'cpu':>7}  ({n})" for n, _ in trees)
        print(head + (f"{'ratio':>7}{'cpu ratio':>11}" if len(trees) > 1 else ""))
        for model in models:
            rounds = [[time_tree(tree, model, args.repeat) for _, tree in trees] for _ in range(args.rounds)]
            t = [{k: min(r[i][k] for r in rounds) for k in ("load", "convert", "cpu")} for i in range(len(trees))]
            row = f"{model.parent.name:<34}{model.stat().st_size / 1e6:>5.1f}"
            row += "".join(f"{r['load']:>7.3f}{r['convert']:>9.3f}{r['cpu']:>7.3f}  ({name})"
                           for r, (name, _) in zip(t, trees))
            if len(t) > 1:
                row += f"{t[0]['convert'] / t[1]['convert']:>6.2f}x{t[0]['cpu'] / t[1]['cpu']:>10.2f}x"
            print(row, flush=True)


if __name__ == "__main__":
    main()
