"""Inference speed of pretrained/classify.py's model path against torchvision's same network.

    python benchmarks/inference.py [--models resnet50,densenet121] [--batch-sizes 1,64]
                                   [--precisions single,half] [--device cpu] [--min-time 2] [--threads N]
                                   [--json rows.json]

The port's side is exactly what classify.py runs: the network is written as a Lua ``.t7`` (this port's
ResNet-50 / DenseNet-121 built from main.py's flags and exported with ``lua_nn.to_lua``), read back with
:func:`fbresnet_port.pretrained.load_network` (``.t7`` -> ``lua_nn.from_lua``) and called through
:class:`fbresnet_port.pretrained.Network` (eval mode, ``inference_mode``, ``-precision half`` = float16
autocast on CUDA, bfloat16 on CPU). torchvision's ``resnet50()`` / ``densenet121()`` (random weights,
the same architecture) run through the same :class:`Network` wrapper in the same process, so only the
modules differ. Each cell: one warm-up batch each, then ``--rounds`` interleaved rounds of batches for
``--min-time / --rounds`` seconds (at least ``--min-iters`` batches); the best round's images/s is kept.
``--clock cpu`` counts this process's CPU seconds instead of wall time (for a machine shared with other
jobs; with several threads it is images per CPU-second, not per second).
Prints a table and the ratio port / torchvision.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from fbresnet_port import lua_nn, t7  # noqa: E402
from fbresnet_port.opts import default_options  # noqa: E402
from fbresnet_port.pretrained import Network, load_network  # noqa: E402

# main.py flags of each network, and torchvision's builder of the same architecture
NETWORKS = {
    "resnet50": ({"netType": "resnet", "depth": 50}, "resnet50"),
    "densenet121": ({"netType": "densenet", "depth": 121, "growthRate": 32, "bottleneck": True,
                     "reduction": 0.5, "optMemory": 2}, "densenet121"),
}


def port_model(name: str, folder: Path) -> nn.Module:
    """The network as classify.py gets it: built from the flags, saved as .t7, loaded back."""
    import models
    flags, _ = NETWORKS[name]
    opt = default_options(dataset="imagenet", **flags)
    path = folder / f"{name}.t7"
    with contextlib.redirect_stdout(io.StringIO()):     # the Lua model prints its name
        t7.save(path, lua_nn.to_lua(models.create(opt)))
    return load_network(path)


def torchvision_model(name: str) -> nn.Module:
    import torchvision
    return getattr(torchvision.models, NETWORKS[name][1])(weights=None)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _rate(net: Network, x: torch.Tensor, min_time: float, min_iters: int, clock) -> float:
    n, start = 0, clock()
    while n < min_iters or clock() - start < min_time:
        net(x)                                      # returns CPU outputs: synchronised
        n += 1
    return n * x.shape[0] / (clock() - start)


def images_per_second(nets: tuple[Network, ...], batch: int, min_time: float, min_iters: int,
                      rounds: int, clock=time.perf_counter) -> list[float]:
    """Best images/s of each net over ``rounds`` interleaved rounds (so that other load on the machine
    hits both sides alike), after one warm-up batch each (allocator, oneDNN/cuDNN kernel choice)."""
    x = torch.randn(batch, 3, 224, 224)
    for net in nets:
        net(x)
    best = [0.0] * len(nets)
    for _ in range(rounds):
        for i, net in enumerate(nets):
            best[i] = max(best[i], _rate(net, x, min_time / rounds, min_iters, clock))
    return best


def _csv(kind):
    return lambda s: [kind(v) for v in s.split(",") if v]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=_csv(str), default=list(NETWORKS))
    parser.add_argument("--batch-sizes", type=_csv(int), default=[1, 64])
    parser.add_argument("--precisions", type=_csv(str), default=["single", "half"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds per cell (after a warm-up batch)")
    parser.add_argument("--min-iters", type=int, default=1, help="batches per round at least")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per cell (best is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="wall: images per second; cpu: images per CPU-second of this process (steadier "
                             "on a machine shared with other jobs)")
    parser.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in NETWORKS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(NETWORKS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, >= {args.min_time:g} s per cell "
          f"({args.clock} clock)")
    unit = "img/s" if args.clock == "wall" else "img/cpu-s"
    header = f"{'model':<12}{'batch':>6}  {'precision':<10}{'port ' + unit:>14}{'torchvision ' + unit:>23}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            port, ref = port_model(name, Path(tmp)), torchvision_model(name)
            for precision in args.precisions:
                nets = Network(port, args.device, precision), Network(ref, args.device, precision)
                for batch in args.batch_sizes:
                    a, b = images_per_second(nets, batch, args.min_time, args.min_iters, args.rounds,
                                             CLOCKS[args.clock])
                    print(f"{name:<12}{batch:>6}  {precision:<10}{a:>14.3g}{b:>23.3g}{a / b:>7.2f}x", flush=True)
                    rows.append({"model": name, "batch": batch, "precision": precision, "port": a,
                                 "torchvision": b, "unit": unit})
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "torch": torch.__version__, "rows": rows},
                                              indent=1))


if __name__ == "__main__":
    main()
