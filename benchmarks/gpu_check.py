"""One command for a lent GPU: every CUDA check of the project in a few minutes, one Markdown report.

    python3 benchmarks/gpu_check.py OUT_DIR [--budget 470] [--steps tests,optmemory,...]

Steps, each in its own process with its own timeout, all within ``--budget`` seconds (default 470: under
8 minutes with start-up); a step that fails or runs out of time is recorded in the report and the next
one runs; the report is rewritten after every step, so even a killed check leaves one:

* ``tests``: the CUDA tests of the suite (``tests/test_cuda.py``, the CUDA cases of ``tests/test_densenet.py``);
* ``optmemory``: ``benchmarks/optmemory.py --device cuda``, DenseNet-BC-100 k=12 batch 64, ``-optMemory`` 0-5 in
  fp32 and fp16 and torchvision's DenseNet with and without ``memory_efficient``: time per iteration, peak memory;
* ``inference``: ``benchmarks/inference.py --device cuda`` (ResNet-50, DenseNet-121; batch 1 and 64; fp32, fp16);
* ``train``: 2 epochs on the CIFAR-10 sample with ``-device cuda``, in single and half precision, each also
  killed before its epoch-2 ``latest.t7`` and resumed; ``-cudnn deterministic``, and the resumed weights are
  compared with the uninterrupted run's (equal, or the largest difference);
* ``torchrun``: ``torchrun --nproc_per_node 1 main.py -device cuda`` (1 epoch), and the NCCL test of
  ``tests/test_cuda.py`` under torchrun.

The report, ``OUT_DIR/gpu_check.md``, has the GPU, driver, torch, CUDA and cuDNN versions and a table per step;
the logs and JSON of the steps are in ``OUT_DIR/raw/``. Without CUDA the script prints one line and exits 0.
``--device cpu --quick`` runs the same steps on the CPU with tiny sizes, training in single precision only (how the
test suite checks this script).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEPS = ("tests", "optmemory", "inference", "train", "torchrun")
REPORT = "gpu_check.md"
KILL_HOOK_ENV = "FBRESNET_TEST_KILL_BEFORE"  # fbresnet_port.checkpoints.KILL_HOOK_ENV (no torch import here)
NO_GPU_LINE = "gpu_check: needs a CUDA GPU (torch sees none on this machine); nothing was run"


@dataclass
class Config:
    """What the steps run: the GPU sizes of the issue, or tiny CPU sizes for the test suite."""

    device: str
    quick: bool
    out: Path

    @property
    def raw(self) -> Path:
        return self.out / "raw"

    def optmemory_args(self) -> list[str]:
        if self.quick:
            return ["--depth", "10", "--growthRate", "4", "--batchSize", "4", "--iters", "1", "--warmup", "0",
                    "--settings", "level0,level2_half,tv"]
        levels = [f"level{i}" for i in range(6)]
        settings = levels + [f"{lv}_half" for lv in levels] + ["tv", "tv_efficient", "tv_half", "tv_efficient_half"]
        return ["--depth", "100", "--growthRate", "12", "--batchSize", "64", "--iters", "10", "--warmup", "3",
                "--settings", ",".join(settings)]

    def inference_args(self) -> list[str]:
        if self.quick:
            return ["--models", "resnet50", "--batch-sizes", "1", "--precisions", "single", "--min-time", "0",
                    "--rounds", "1"]
        return ["--batch-sizes", "1,64", "--precisions", "single,half", "--min-time", "0.5", "--rounds", "2"]

    def train_flags(self, epochs: int = 2) -> list[str]:
        net = (["-depth", "7", "-growthRate", "4", "-reduction", "1", "-batchSize", "250"] if self.quick else
               ["-depth", "40", "-batchSize", "64"])
        return ["-netType", "densenet", "-bottleneck", "false", *net, "-data", "sample", "-nEpochs", str(epochs),
                "-manualSeed", "7", "-nThreads", "2", "-cudnn", "deterministic", "-printModel", "false",
                "-device", self.device, "-gen", str(self.raw / "gen")]


@dataclass
class StepResult:
    """One step: ``status`` ok | failed | timeout | skipped, with what it measured in ``data``."""

    name: str
    status: str = "skipped"
    seconds: float = 0.0
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class Budget:
    """Seconds left of ``--budget``; a step's timeout is its own limit or what is left, the smaller."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def timeout(self, limit: float) -> float:
        return max(0.0, min(limit, self.left()))


class StepFailed(Exception):
    """A command of a step failed; the message goes into the report."""


def run_command(cmd: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run ``cmd`` from the repository root, its output to ``log``; return the output. A non-zero exit raises
    :class:`StepFailed`, a timeout :class:`TimeoutError` (the whole process group is killed)."""
    if timeout < 5:
        raise TimeoutError("no time left in the budget")
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    with open(log, "w", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TimeoutError(f"{Path(cmd[1]).name if len(cmd) > 1 else cmd[0]} ran past {timeout:.0f} s") from None
    out = log.read_text(encoding="utf-8", errors="replace")
    if rc != 0:
        tail = [line for line in out.splitlines() if line.strip()][-3:]
        raise StepFailed(f"exit status {rc}: " + " / ".join(tail))
    return out


# ---------------------------------------------------------------------------------------------
# Steps: each returns the data of its report section

def step_tests(cfg: Config, budget: Budget) -> dict[str, Any]:
    log = cfg.raw / "tests.log"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "tests/test_cuda.py",
           "tests/test_densenet.py", "-k", "cuda"]
    try:
        out = run_command(cmd, log, budget.timeout(150))
    except StepFailed:
        out = log.read_text(encoding="utf-8")
        data = parse_pytest(out)
        if not data["counts"]:
            raise
        data["failed_run"] = True
        return data
    return parse_pytest(out)


def parse_pytest(out: str) -> dict[str, Any]:
    """Counts of pytest's last line (``3 failed, 20 passed, 1 skipped in 4.2s``) and its FAILED/ERROR lines."""
    summary = [line for line in out.splitlines() if re.search(r"\b(passed|failed|skipped|error)\b.* in [\d.]+s", line)]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)",
                                              summary[-1] if summary else "")}
    problems = [line for line in out.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED ")]
    return {"counts": counts, "problems": problems, "skips": skips[:5]}


def step_optmemory(cfg: Config, budget: Budget) -> dict[str, Any]:
    out_json = cfg.raw / "optmemory.json"
    cmd = [sys.executable, "benchmarks/optmemory.py", "--device", cfg.device, *cfg.optmemory_args(),
           "--rounds", "1", "--no-interleaved", "--out", str(out_json)]
    run_command(cmd, cfg.raw / "optmemory.log", budget.timeout(200))
    return json.loads(out_json.read_text(encoding="utf-8"))


def step_inference(cfg: Config, budget: Budget) -> dict[str, Any]:
    out_json = cfg.raw / "inference.json"
    cmd = [sys.executable, "benchmarks/inference.py", "--device", cfg.device, *cfg.inference_args(),
           "--json", str(out_json)]
    run_command(cmd, cfg.raw / "inference.log", budget.timeout(120))
    return json.loads(out_json.read_text(encoding="utf-8"))


def _main_py(cfg: Config, flags: list[str], save: Path, log: Path, budget: Budget,
             env: dict[str, str] | None = None, launcher: list[str] | None = None) -> str:
    return run_command([*(launcher or [sys.executable]), "main.py", *flags, "-save", str(save)], log,
                       budget.timeout(150), env)


def step_train(cfg: Config, budget: Budget) -> dict[str, Any]:
    """2 epochs per precision, straight and interrupted-then-resumed; compares the epoch-2 models."""
    rows = []
    for precision in ("single",) if cfg.quick else ("single", "half"):
        flags = cfg.train_flags() + ["-precision", precision]
        straight, broken = cfg.raw / f"train_{precision}", cfg.raw / f"train_{precision}_resumed"
        for d in (straight, broken):
            shutil.rmtree(d, ignore_errors=True)
        row: dict[str, Any] = {"precision": precision}
        try:
            started = time.monotonic()
            out = _main_py(cfg, flags, straight, cfg.raw / f"train_{precision}.log", budget)
            row["seconds"] = time.monotonic() - started
            row.update(final_errors(out))
            row["epoch_s"] = [float(r["time_s"]) for r in read_csv(straight / "metrics.csv")]
            try:  # killed just before epoch 2's latest.t7 (SIGKILL: no clean-up), then -resume
                _main_py(cfg, flags, broken, cfg.raw / f"train_{precision}_killed.log", budget,
                         env={KILL_HOOK_ENV: "2:latest.t7"})
                raise StepFailed("the run meant to be killed before epoch 2's latest.t7 finished")
            except StepFailed as e:
                if "exit status -9" not in str(e) and "exit status 137" not in str(e):
                    raise
            _main_py(cfg, flags + ["-resume", str(broken)], broken, cfg.raw / f"train_{precision}_resume.log",
                     budget)
            row["resume"] = compare_models(straight / "model_2.t7", broken / "model_2.t7")
        except (StepFailed, TimeoutError, OSError) as e:
            row["error"] = str(e)
        rows.append(row)
    if all("error" in r for r in rows):
        raise StepFailed("; ".join(r["error"] for r in rows))
    return {"rows": rows, "flags": " ".join(cfg.train_flags())}


def step_torchrun(cfg: Config, budget: Budget) -> dict[str, Any]:
    """main.py under torchrun (one process), then the NCCL test under torchrun."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    flags = cfg.train_flags(epochs=1)
    save = cfg.raw / "torchrun"
    shutil.rmtree(save, ignore_errors=True)
    data: dict[str, Any] = {}
    out = _main_py(cfg, flags, save, cfg.raw / "torchrun.log", budget, env={"NCCL_DEBUG": "INFO"}, launcher=launcher)
    data.update(final_errors(out))
    data["nccl_in_main"] = "NCCL INFO" in out
    test_log = cfg.raw / "torchrun_nccl_test.log"
    cmd = [*launcher, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "tests/test_cuda.py", "-k", "nccl"]
    try:
        data["nccl_test"] = parse_pytest(run_command(cmd, test_log, budget.timeout(90), {"NCCL_DEBUG": "INFO"}))
    except StepFailed:
        data["nccl_test"] = parse_pytest(test_log.read_text(encoding="utf-8"))
        data["nccl_test"]["failed_run"] = True
    return data


STEP_FUNCTIONS: dict[str, Callable[[Config, Budget], dict[str, Any]]] = {
    "tests": step_tests, "optmemory": step_optmemory, "inference": step_inference, "train": step_train,
    "torchrun": step_torchrun}


# ---------------------------------------------------------------------------------------------
# Helpers that read what main.py wrote

def final_errors(out: str) -> dict[str, float]:
    """The best test errors from main.py's last line (`` * Best epoch N: top1 x  top5 y  path``)."""
    m = re.findall(r"^ \* Best (?:epoch \d+|model): top1 +(\S+)  top5 +(\S+)", out, re.M)
    return {"top1": float(m[-1][0]), "top5": float(m[-1][1])} if m else {}


def read_csv(path: Path) -> list[dict[str, str]]:
    import csv
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def compare_models(a: Path, b: Path) -> dict[str, Any]:
    """Parameters and BatchNorm statistics of two saved models: equal, or the largest difference."""
    import torch
    from fbresnet_port import t7
    from models.lua_weights import lua_batchnorms, lua_parameters

    def tensors(path: Path) -> list[torch.Tensor]:
        model = t7.load(path)
        bns = [m[k] for _, m in lua_batchnorms(model) for k in ("running_mean", "running_var")]
        return [p.tensor for p in lua_parameters(model)] + bns

    ta, tb = tensors(a), tensors(b)
    if len(ta) != len(tb) or any(x.shape != y.shape for x, y in zip(ta, tb)):
        return {"equal": False, "max_abs_diff": float("nan"), "n_tensors": len(ta)}
    diff = max((float((x.double() - y.double()).abs().max()) for x, y in zip(ta, tb) if x.numel()), default=0.0)
    return {"equal": all(torch.equal(x, y) for x, y in zip(ta, tb)), "max_abs_diff": diff, "n_tensors": len(ta)}


# ---------------------------------------------------------------------------------------------
# The report

def environment(device: str) -> dict[str, str]:
    """GPU name, driver, torch, CUDA, cuDNN and Python versions (CPU model on the CPU)."""
    import torch
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "torch": torch.__version__, "python": platform.python_version(), "cpus": str(os.cpu_count())}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(device=f"{props.name} ({props.total_memory / 2 ** 30:.0f} GiB)", cuda=str(torch.version.cuda),
                   cudnn=str(torch.backends.cudnn.version()), gpus=str(torch.cuda.device_count()),
                   driver=_driver_version())
    else:
        env.update(device=f"CPU ({platform.processor() or platform.machine()})", cuda="-", cudnn="-", gpus="0",
                   driver="-")
    return env


def _driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        return out.splitlines()[0] if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (no nvidia-smi)"


def _num(x: Any, fmt: str = "{:.3g}") -> str:
    return "-" if x is None or (isinstance(x, float) and x != x) else fmt.format(x)


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def section_tests(r: StepResult) -> list[str]:
    d = r.data
    counts = ", ".join(f"{v} {k}" for k, v in d.get("counts", {}).items()) or "no summary"
    lines = [f"pytest `tests/test_cuda.py` and the CUDA cases of `tests/test_densenet.py`: {counts}."]
    lines += [f"* `{p}`" for p in d.get("problems", [])]
    if d.get("skips") and not d.get("counts", {}).get("passed"):
        lines += [f"* `{s}`" for s in d["skips"][:2]]
    return lines


def section_optmemory(r: StepResult) -> list[str]:
    meta, results = r.data.get("meta", {}), r.data.get("results", {})
    lines = [f"DenseNet-BC L={meta.get('depth')} k={meta.get('growthRate')}, batch {meta.get('batchSize')}, "
             f"{meta.get('device')}; median of {meta.get('iters')} iterations after {meta.get('warmup')} warm-up; "
             "peak = peak allocated (CUDA) or peak RSS (CPU); ratios against torchvision's DenseNet (not "
             "memory-efficient) in the same precision.", ""]
    rows = []
    for name, res in results.items():
        half = name.endswith("_half")
        base = results.get("tv_half" if half else "tv", {})
        label = name[:-5] if half else name
        if "error" in res:
            rows.append([label, "fp16" if half else "fp32", "error: " + " ".join(res["error"]), "", "", "", "", ""])
            continue
        acc = res.get("accuracy_vs_fp32", {})
        rows.append([label, "fp16" if half else "fp32", _num(res.get("sec_per_iter"), "{:.4f}"),
                     _num(res.get("peak_mb"), "{:.0f}"), _num(res.get("step_mb"), "{:.0f}"),
                     _ratio(res.get("sec_per_iter"), base.get("sec_per_iter")),
                     _ratio(res.get("peak_mb"), base.get("peak_mb")),
                     _num(acc.get("grad_cosine"), "{:.5f}") if acc else "-"])
    return lines + _table(["setting", "precision", "s/iter", "peak MB", "step MB", "time / tv", "peak / tv",
                           "grad cosine vs fp32"], rows)


def section_inference(r: StepResult) -> list[str]:
    rows = [[row["model"], str(row["batch"]), row["precision"], _num(row["port"]), _num(row["torchvision"]),
             _ratio(row["port"], row["torchvision"])] for row in r.data.get("rows", [])]
    unit = r.data["rows"][0]["unit"] if r.data.get("rows") else "img/s"
    return _table(["model", "batch", "precision", f"port {unit}", f"torchvision {unit}", "ratio"], rows)


def section_train(r: StepResult) -> list[str]:
    lines = [f"`python3 main.py {r.data.get('flags', '')} -precision P`; the resumed run was killed (SIGKILL) "
             "just before epoch 2's `latest.t7` and continued with `-resume`.", ""]
    rows = []
    for row in r.data.get("rows", []):
        if "error" in row and "resume" not in row:
            rows.append([row["precision"], "error: " + row["error"], "", "", ""])
            continue
        res = row.get("resume", {})
        same = ("bit-identical" if res.get("equal") else
                f"differ: max abs diff {_num(res.get('max_abs_diff'), '{:.3g}')}") if res else "-"
        epochs = ", ".join(f"{s:.1f}" for s in row.get("epoch_s", []))
        rows.append([row["precision"], _num(row.get("top1"), "{:.2f}"), _num(row.get("top5"), "{:.2f}"),
                     epochs, same])
    return lines + _table(["precision", "best test top1 %", "top5 %", "epoch times (s)",
                           "resumed vs uninterrupted weights"], rows)


def section_torchrun(r: StepResult) -> list[str]:
    d = r.data
    test = d.get("nccl_test", {})
    counts = ", ".join(f"{v} {k}" for k, v in test.get("counts", {}).items()) or "no summary"
    return [f"* `torchrun --standalone --nproc_per_node 1 main.py ... -nEpochs 1`: best test top1 "
            f"{_num(d.get('top1'), '{:.2f}')} %; NCCL initialised by main.py: "
            f"{'yes' if d.get('nccl_in_main') else 'no (world size 1: main.py forms no process group)'}",
            f"* NCCL test of `tests/test_cuda.py` under torchrun: {counts}",
            *(f"  * `{p}`" for p in test.get("problems", []))]


SECTIONS: dict[str, tuple[str, Callable[[StepResult], list[str]]]] = {
    "tests": ("CUDA tests", section_tests), "optmemory": ("`-optMemory` levels (benchmarks/optmemory.py)",
                                                        section_optmemory),
    "inference": ("Inference (benchmarks/inference.py)", section_inference),
    "train": ("Training on the CIFAR-10 sample, interrupted and resumed", section_train),
    "torchrun": ("torchrun and NCCL", section_torchrun)}


def render_report(env: dict[str, str], results: list[StepResult], budget_s: float) -> str:
    """The Markdown report: the machine, a status line per step, then each step's tables."""
    lines = [f"# GPU check, {env['date']}", "",
             f"* device: {env['device']}, {env['gpus']} GPU(s) visible; driver {env['driver']}",
             f"* torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, Python {env['python']}, "
             f"{env['cpus']} CPU cores", f"* budget {budget_s:.0f} s; total {sum(r.seconds for r in results):.0f} s",
             ""]
    lines += _table(["step", "status", "seconds", "note"],
                    [[r.name, r.status, f"{r.seconds:.0f}", r.detail.replace("|", "/")[:300]] for r in results])
    for r in results:
        if r.status in ("ok", "failed") and r.data:
            title, section = SECTIONS[r.name]
            lines += ["", f"## {title}", ""]
            try:
                lines += section(r)
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:  # never lose the report
                lines.append(f"(could not render this step's data: {type(e).__name__}: {e}; see raw/)")
    return "\n".join(lines) + "\n"


def write_report(folder: Path, env: dict[str, str], results: list[StepResult], budget_s: float) -> Path:
    path = folder / REPORT
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(render_report(env, results, budget_s), encoding="utf-8")
    os.replace(tmp, path)
    return path


def run_checks(cfg: Config, steps: list[str], budget_s: float) -> list[StepResult]:
    """Every step in turn; the report is rewritten after each."""
    cfg.raw.mkdir(parents=True, exist_ok=True)
    env = environment(cfg.device)
    budget = Budget(budget_s)
    results = [StepResult(name, detail="not reached") for name in steps]
    write_report(cfg.out, env, results, budget_s)
    for result in results:
        started = time.monotonic()
        click.echo(f"gpu_check: {result.name} ...", nl=False)
        try:
            if budget.left() < 10:
                raise TimeoutError("no time left in the budget")
            result.data = STEP_FUNCTIONS[result.name](cfg, budget)
            result.status, result.detail = "ok", ""
            if result.data.get("failed_run") or result.data.get("counts", {}).get("failed"):
                result.status, result.detail = "failed", "tests failed (below)"
        except TimeoutError as e:
            result.status, result.detail = "timeout", str(e)
        except StepFailed as e:
            result.status, result.detail = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - whatever breaks in a step, the report records it and goes on
            result.status, result.detail = "failed", f"{type(e).__name__}: {e}"
        result.seconds = time.monotonic() - started
        click.echo(f" {result.status} ({result.seconds:.0f} s)")
        write_report(cfg.out, env, results, budget_s)
    tidy(cfg.raw)
    return results


def tidy(raw: Path) -> None:
    """Keep the logs, JSON and metrics.csv files; drop the dataset cache and the checkpoints (megabytes)."""
    shutil.rmtree(raw / "gen", ignore_errors=True)
    for path in raw.rglob("*.t7"):
        path.unlink()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--budget", type=float, default=470.0, show_default=True, help="seconds for all steps together")
@click.option("--steps", default=",".join(STEPS), show_default=True, help="comma-separated subset of the steps")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
              help="cpu: the same steps on the CPU (to test this script where there is no GPU)")
@click.option("--quick", is_flag=True, help="tiny sizes (with --device cpu, for the test suite)")
def main(out_dir: Path, budget: float, steps: str, device: str, quick: bool) -> None:
    """Run every CUDA check of the project and write OUT_DIR/gpu_check.md."""
    chosen = [s for s in steps.split(",") if s]
    unknown = [s for s in chosen if s not in STEPS]
    if unknown:
        raise click.UsageError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    import torch
    if device == "cuda" and not torch.cuda.is_available():
        click.echo(NO_GPU_LINE)
        return
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise click.UsageError(f"cannot create {out_dir}: {e.strerror or e}") from None
    results = run_checks(Config(device, quick, out_dir), chosen, budget)
    click.echo(f"wrote {out_dir / REPORT} ({sum(r.status == 'ok' for r in results)} of {len(results)} steps ok)")


if __name__ == "__main__":
    from fbresnet_port.errors import run_click
    sys.exit(run_click(main, None, "gpu_check.py", prefix="error: "))
