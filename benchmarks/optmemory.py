"""Time and peak memory of a DenseNet training step for every ``-optMemory`` level.

Compares models/densenet.py at each level with a torchvision DenseNet (``memory_efficient`` False and
True, CIFAR stem) built in this script as the baseline.  Every setting runs in its own process, so the
peak memory of one cannot hide in another's.  Reported per setting: median seconds per training
iteration (forward, loss, backward, SGD step as train.lua: momentum 0.9, Nesterov, weight decay 1e-4)
after warm-up, and peak memory of one step (CPU: peak RSS of the process, and the part the step adds =
peak minus the RSS just before it, measured with glibc returning freed blocks >= 128 KiB to the OS at
once so that RSS tracks live memory; CUDA: peak allocated).  On CPU the timed steps run with freed
memory kept in the process, as ``main.py`` trains (``fbresnet_port.cpu_memory``; ``--malloc default``:
glibc's usual steady state instead, mmap for blocks >= 32 MiB).  With ``--interleaved`` (default) all
settings are also timed round-robin in one process, which gives every setting the same load from other
processes on a shared machine.  ``-precision half`` settings run
under autocast (bfloat16 on CPU, float16 on CUDA) with fp32 weights; their accuracy effect is measured
on the same batch against fp32 (relative error of logits and loss, cosine of the parameter gradients).

Usage::

    python3 benchmarks/optmemory.py                 # DenseNet-BC L=100 k=12, CIFAR-10, batch 64
    python3 benchmarks/optmemory.py --depth 40 --batchSize 32 --iters 3
    python3 benchmarks/optmemory.py --profile level2   # where the time goes in one setting
    python3 benchmarks/optmemory.py --largest          # largest depth within --budget GB, per level

Writes ``benchmarks/results/optmemory_<device>_d<depth>_k<k>_b<batch>[_malloc-default].json``
(``largest_...`` for --largest), or ``--out FILE``. ``--device cuda`` runs the same settings on the GPU
(``benchmarks/gpu_check.py`` passes every level in fp32 and fp16).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

# name -> (kind, level or memory_efficient, precision)
SETTINGS: Dict[str, tuple] = {
    **{f"level{i}": ("port", i, "single") for i in range(6)},
    "tv": ("torchvision", False, "single"),
    "tv_efficient": ("torchvision", True, "single"),
    **{f"level{i}_half": ("port", i, "half") for i in range(6)},
    "tv_half": ("torchvision", False, "half"),
    "tv_efficient_half": ("torchvision", True, "half"),
}
DEFAULT_SETTINGS = ["level0", "level1", "level2", "level3", "level4", "level5", "tv", "tv_efficient",
                    "level2_half", "level4_half", "tv_half"]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _hwm_mb() -> float:
    """Peak RSS since the last :func:`_reset_peak_rss` (``VmHWM``)."""
    with open("/proc/self/status") as f:
        line = next(l for l in f if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _mallopt_mmap_threshold(nbytes: int) -> bool:
    """Set glibc's mmap threshold (blocks at least this big are returned to the OS when freed; also
    stops glibc from raising it dynamically); False where that is not possible (not Linux/glibc)."""
    from fbresnet_port.cpu_memory import M_MMAP_THRESHOLD, mallopt
    return mallopt(M_MMAP_THRESHOLD, nbytes)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def build(kind: str, arg: Any, depth: int, growth: int, num_classes: int = 10):
    """The port at level ``arg`` or the torchvision DenseNet with ``memory_efficient=arg``."""
    import torch.nn as nn
    if kind == "port":
        from models.densenet import create_model
        return create_model(SimpleNamespace(dataset="cifar10", depth=depth, growthRate=growth, bottleneck=True,
                                            reduction=0.5, dropRate=0.0, optMemory=arg))
    from torchvision.models.densenet import DenseNet
    n = (depth - 4) // 6
    model = DenseNet(growth_rate=growth, block_config=(n, n, n), num_init_features=2 * growth, bn_size=4,
                     drop_rate=0, num_classes=num_classes, memory_efficient=arg)
    # CIFAR stem of densenet.lua: a 3x3 convolution only; the 8x8 final map is averaged as here.
    model.features.conv0 = nn.Conv2d(3, 2 * growth, 3, 1, 1, bias=False)
    for name in ("norm0", "relu0", "pool0"):
        setattr(model.features, name, nn.Identity())
    return model


def make_setting(name: str, args: argparse.Namespace):
    """Model, training-step closure, batch and half dtype for setting ``name``."""
    import torch
    import torch.nn.functional as F
    torch.manual_seed(0)
    kind, arg, precision = SETTINGS[name]
    device = torch.device(args.device)
    model = build(kind, arg, args.depth, args.growthRate).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x = torch.randn(args.batchSize, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batchSize,), device=device)
    half_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    amp = precision == "half"
    scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=half_dtype, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return model, step, x, y, (half_dtype if amp else None)


def interleaved(args: argparse.Namespace, names: List[str]) -> Dict[str, float]:
    """Median time per setting with all settings in one process, one step each in turn: every setting
    sees the same load from other processes (memory is not measured here)."""
    import torch
    torch.set_num_threads(args.threads)
    if args.device == "cpu" and args.malloc == "retain":
        from fbresnet_port.cpu_memory import retain_freed_memory
        retain_freed_memory()
    steps = {name: make_setting(name, args)[1] for name in names}
    times: Dict[str, List[float]] = {name: [] for name in names}
    for i in range(args.warmup + args.iters):
        for name in names:
            t0 = time.perf_counter()
            steps[name]()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def worker(args: argparse.Namespace) -> Dict[str, Any]:
    """Run one setting in this process and return its measurements."""
    # Memory is measured with glibc returning every freed block of >= 128 KiB at once, so peak RSS
    # tracks live memory rather than the allocator's retained heap (which hides the differences).
    live = args.device == "cpu" and _mallopt_mmap_threshold(128 * 1024)
    import torch
    torch.set_num_threads(args.threads)
    model, step, x, y, half_dtype = make_setting(args.worker, args)
    device = x.device
    amp = half_dtype is not None

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    result: Dict[str, Any] = {"setting": args.worker}
    if amp:
        result["accuracy_vs_fp32"] = accuracy_effect(model, x, y, half_dtype)
    if args.profile:
        for _ in range(args.warmup):
            step()
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            step()
            sync()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25))
        return result
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2 ** 20
    else:
        base = _rss_mb()
        _reset_peak_rss()
    if not args.iters or device.type == "cpu":  # a separate memory step on CPU (see above)
        step()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak = _hwm_mb()
        if args.malloc == "retain":  # time as main.py trains: freed memory stays in the process
            from fbresnet_port.cpu_memory import retain_freed_memory
            retain_freed_memory()
        elif live:  # time with glibc's usual steady state: mmap only for blocks >= 32 MiB
            _mallopt_mmap_threshold(32 * 2 ** 20)
    times: List[float] = []
    cpu_times: List[float] = []
    for i in range(args.iters + (1 if live else 0)):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        if i >= (1 if live else 0):  # the first step after the switch refills the heap
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    result.update(sec_per_iter=statistics.median(times) if times else None, times=times,
                  cpu_sec_per_iter=statistics.median(cpu_times) if cpu_times else None, cpu_times=cpu_times,
                  peak_mb=peak, base_mb=base, step_mb=peak - base)
    return result


def accuracy_effect(model, x, y, half_dtype) -> Dict[str, float]:
    """Logits, loss and gradients under autocast vs fp32 on the same batch and weights (BN stats restored)."""
    import torch
    import torch.nn.functional as F
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def run(amp: bool):
        model.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=half_dtype, enabled=amp):
            out = model(x)
            loss = F.cross_entropy(out, y)
        loss.backward()
        grad = torch.cat([p.grad.flatten().float() for p in model.parameters()])
        model.load_state_dict(state)
        return out.float().detach(), loss.float().item(), grad

    o32, l32, g32 = run(False)
    o16, l16, g16 = run(True)
    model.zero_grad(set_to_none=True)
    return {"logits_rel_err": ((o16 - o32).norm() / o32.norm()).item(),
            "loss_rel_err": abs(l16 - l32) / abs(l32),
            "grad_rel_err": ((g16 - g32).norm() / g32.norm()).item(),
            "grad_cosine": torch.nn.functional.cosine_similarity(g16, g32, dim=0).item()}


def run_setting(args: argparse.Namespace, name: str, depth: Optional[int] = None,
                iters: Optional[int] = None, warmup: Optional[int] = None) -> Dict[str, Any]:
    """Run ``name`` in a fresh Python process and parse its JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name,
           "--depth", str(depth or args.depth), "--growthRate", str(args.growthRate),
           "--batchSize", str(args.batchSize), "--iters", str(args.iters if iters is None else iters),
           "--warmup", str(args.warmup if warmup is None else warmup), "--threads", str(args.threads),
           "--device", args.device, "--malloc", args.malloc]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        return {"setting": name, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def merge(prev: Optional[Dict[str, Any]], new: Dict[str, Any]) -> Dict[str, Any]:
    """Pool the iteration times of two runs of one setting; keep the lower peak memory."""
    if prev is None or "error" in prev or "error" in new:
        return new if prev is None or "error" in prev else prev
    out = dict(new if new["peak_mb"] < prev["peak_mb"] else prev)
    out["times"] = prev["times"] + new["times"]
    out["cpu_times"] = prev.get("cpu_times", []) + new.get("cpu_times", [])
    out["sec_per_iter"] = statistics.median(out["times"])
    out["cpu_sec_per_iter"] = statistics.median(out["cpu_times"]) if out["cpu_times"] else None
    return out


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:6.2f}" if a and b else "    - "


def table(results: Dict[str, Dict[str, Any]]) -> str:
    """Rows per setting with ratios to level 0 and to the torchvision baseline (fp32, not efficient).

    Time ratios use the median wall time; memory ratios both the process's peak RSS (``peak``) and the
    part added by the training step (``step`` = peak minus the RSS just before it).
    """
    l0, tv = results.get("level0", {}), results.get("tv", {})
    head = (f"{'setting':13s} {'s/iter':>7s} {'cpu s':>7s} {'t/lvl0':>6s} {'t/tv':>6s} {'peakMB':>7s} "
            f"{'stepMB':>7s} {'peak/l0':>7s} {'step/l0':>7s} {'peak/tv':>7s} {'step/tv':>7s}")
    lines = [head]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"{name:13s} error: {r['error']}")
            continue
        t = r["sec_per_iter"]
        t_txt = "      -" if t is None else f"{t:7.3f}"  # --iters 0: memory only
        lines.append(
            f"{name:13s} {t_txt} {r.get('cpu_sec_per_iter') or 0:7.3f} {_ratio(t, l0.get('sec_per_iter'))} "
            f"{_ratio(t, tv.get('sec_per_iter'))} {r['peak_mb']:7.0f} {r['step_mb']:7.0f} "
            f"{_ratio(r['peak_mb'], l0.get('peak_mb')):>7s} {_ratio(r['step_mb'], l0.get('step_mb')):>7s} "
            f"{_ratio(r['peak_mb'], tv.get('peak_mb')):>7s} {_ratio(r['step_mb'], tv.get('step_mb')):>7s}")
    if any("sec_per_iter_interleaved" in r for r in results.values()):
        lines += ["", "interleaved in one process (same load for all):",
                  f"{'setting':13s} {'s/iter':>7s} {'t/lvl0':>6s} {'t/tv':>6s} {'t/lvl2':>6s}"]
        key = "sec_per_iter_interleaved"
        l2 = results.get("level2", {})
        for name, r in results.items():
            if key in r:
                t = r[key]
                lines.append(f"{name:13s} {t:7.3f} {_ratio(t, l0.get(key))} {_ratio(t, tv.get(key))} "
                             f"{_ratio(t, l2.get(key))}")
    return "\n".join(lines)


def largest(args: argparse.Namespace) -> Dict[str, Any]:
    """Peak memory of one training step at increasing depth per level; extrapolate to ``--budget`` GB.

    Memory is fitted as a + b*L + c*L^2 (least squares over the measured depths, L = depth).
    """
    import numpy as np
    depths = [int(d) for d in args.depths.split(",")]
    out: Dict[str, Any] = {}
    budget_mb = args.budget * 1024
    for name in args.settings.split(",") if args.settings else ["level0", "level2", "level3", "level4"]:
        pts = []
        for d in depths:
            r = run_setting(args, name, depth=d, iters=1, warmup=0)
            if "error" in r:
                break
            pts.append((d, r["peak_mb"]))
            print(f"  {name:8s} depth {d:4d}: peak RSS {r['peak_mb']:8.0f} MB  ({r['sec_per_iter']:.2f} s/iter)",
                  flush=True)
        entry: Dict[str, Any] = {"measured": pts}
        if len(pts) >= 3:
            ds, ms = np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)
            c, b, a = np.polyfit(ds, ms, 2)
            grid = np.arange(ds[0], 10000, 6)  # BC depths: (depth-4)/6 layers per block
            fits = grid[(a + b * grid + c * grid ** 2) <= budget_mb]
            entry.update(fit_mb={"a": a, "b": b, "c": c},
                         est_largest_depth=int(fits.max()) if fits.size else None)
        out[name] = entry
    return out


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--growthRate", type=int, default=12)
    p.add_argument("--batchSize", type=int, default=64)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--interleaved", action=argparse.BooleanOptionalAction, default=True,
                   help="also time all settings round-robin in one process (robust to other load)")
    p.add_argument("--rounds", type=int, default=2, help="runs per setting (alternating order), times pooled")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--malloc", choices=("retain", "default"), default="retain",
                   help="CPU timing with freed memory kept in the process as main.py does (retain), or with "
                        "glibc's defaults (default); peak memory is measured the same way in both")
    p.add_argument("--settings", default="", help="comma-separated subset of: " + ", ".join(SETTINGS))
    p.add_argument("--profile", default="", metavar="SETTING", help="print a profile of one step of SETTING")
    p.add_argument("--largest", action="store_true", help="estimate the largest depth within --budget GB")
    p.add_argument("--budget", type=float, default=16.0)
    p.add_argument("--depths", default="40,64,88,112")
    p.add_argument("--out", default="", help="JSON file to write [benchmarks/results/optmemory_<device>_...json]")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.profile_setting = args.profile
    if args.worker:
        args.profile = bool(args.profile)
        print(json.dumps(worker(args)))
        return
    if args.profile:
        cmd_args = argparse.Namespace(**{**vars(args), "worker": args.profile})
        cmd_args.profile = True
        sys.path.insert(0, str(ROOT))
        worker(cmd_args)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"loadavg_start": os.getloadavg(), "malloc": args.malloc, "rounds": args.rounds, "device": args.device, "threads": args.threads, "depth": args.depth, "growthRate": args.growthRate,
            "batchSize": args.batchSize, "iters": args.iters, "warmup": args.warmup,
            "machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    tag = f"{args.device}_d{args.depth}_k{args.growthRate}_b{args.batchSize}"
    if args.largest:
        print(f"largest DenseNet-BC (k={args.growthRate}, batch {args.batchSize}) within {args.budget} GB:")
        res = largest(args)
        for name, e in res.items():
            print(f"  {name}: estimated largest depth {e.get('est_largest_depth')}")
        path = RESULTS / f"largest_{tag}.json"
        path.write_text(json.dumps({"meta": {**meta, "budget_gb": args.budget}, "results": res}, indent=1))
        print(f"wrote {path}")
        return
    names = args.settings.split(",") if args.settings else DEFAULT_SETTINGS
    results: Dict[str, Dict[str, Any]] = {}
    for rnd in range(args.rounds):  # rounds in alternating order spread load from other processes
        for name in (names if rnd % 2 == 0 else names[::-1]):
            r = run_setting(args, name)
            print(f"  round {rnd + 1} {name}: {r.get('times', r.get('error'))}", flush=True)
            results[name] = merge(results.get(name), r)
    results = {name: results[name] for name in names}
    if args.interleaved:
        sys.path.insert(0, str(ROOT))
        for name, t in interleaved(args, names).items():
            if "error" not in results[name]:
                results[name]["sec_per_iter_interleaved"] = t
    print(f"\nDenseNet-BC L={args.depth} k={args.growthRate}, batch {args.batchSize}, {args.device}, "
          f"{args.threads} threads (median of {args.iters} after {args.warmup} warm-up)")
    print(table(results))
    for name, r in results.items():
        if "accuracy_vs_fp32" in r:
            print(f"{name} vs fp32: " + ", ".join(f"{k} {v:.2e}" for k, v in r["accuracy_vs_fp32"].items()))
    meta["loadavg_end"] = os.getloadavg()
    path = RESULTS / f"optmemory_{tag}{'' if args.malloc == 'retain' else '_malloc-' + args.malloc}.json"
    if args.out:
        path = Path(args.out)
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
