"""benchmarks/gpu_check.py without a GPU: the one-line dry run, and every step and the report on the CPU
(``--device cpu --quick``), checked against what the steps themselves wrote (their JSON, logs and checkpoints)."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = _load()


def _script(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    result = _script(str(tmp_path / "out"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout == gpu_check.NO_GPU_LINE + "\n" and "needs a CUDA GPU" in result.stdout
    assert not (tmp_path / "out").exists()


def test_usage_mistakes_are_one_error_line(tmp_path):
    result = _script(str(tmp_path), "--steps", "tests,benchmark")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: unknown step(s) benchmark; choose from tests, optmemory")


def test_steps_out_of_budget_are_recorded_and_the_report_is_still_written(tmp_path):
    result = _script(str(tmp_path), "--device", "cpu", "--quick", "--budget", "0")
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "gpu_check.md").read_text()
    for step in gpu_check.STEPS:
        assert f"| {step} | timeout | " in report and "no time left in the budget" in report
    assert "wrote" in result.stdout and "(0 of 5 steps ok)" in result.stdout


def test_a_failing_command_is_a_step_failure_with_its_last_lines(tmp_path):
    code = "import sys; print('first'); print('the reason', file=sys.stderr); sys.exit(3)"
    with pytest.raises(gpu_check.StepFailed, match=r"exit status 3: .*first / the reason"):
        gpu_check.run_command([sys.executable, "-c", code], tmp_path / "log", 60)
    with pytest.raises(TimeoutError, match="ran past 6 s"):
        gpu_check.run_command([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "log", 6)
    env = {"date": "d", "device": "x", "gpus": "0", "driver": "-", "torch": "t", "cuda": "-", "cudnn": "-",
           "python": "p", "cpus": "2"}
    results = [gpu_check.StepResult("optmemory", "failed", 3.0, "exit status 3: first / the reason"),
               gpu_check.StepResult("train", "ok", 5.0, "", {"rows": [{"precision": "single", "error": "boom"}]})]
    report = gpu_check.render_report(env, results, 470)
    assert "| optmemory | failed | 3 | exit status 3: first / the reason |" in report
    assert "| single | error: boom |" in report


@pytest.mark.slow
def test_every_step_on_the_cpu_writes_the_report(tmp_path):
    """The whole script with tiny sizes on the CPU: every step succeeds and the report holds the numbers the
    steps wrote: the benchmarks' JSON, the runs' last lines, and the exact resume (bit-identical on the CPU)."""
    result = _script(str(tmp_path), "--device", "cpu", "--quick", "--budget", "800")
    report = (tmp_path / "gpu_check.md").read_text()
    assert result.returncode == 0, result.stderr + report
    for step in gpu_check.STEPS:
        assert re.search(rf"^\| {step} \| ok \| \d+ \|", report, re.M), report
    assert "* device: CPU" in report and "torch " in report
    raw = tmp_path / "raw"
    # tests: the CUDA tests are skipped here, with their reason
    assert re.search(r"CUDA cases of `tests/test_densenet.py`: (\d+ deselected, )?\d+ skipped", report), report
    # optmemory: a row per setting with the JSON's numbers
    bench = json.loads((raw / "optmemory.json").read_text())["results"]
    assert set(bench) == {"level0", "level2_half", "tv"}
    for name, res in bench.items():
        label, precision = (name[:-5], "fp16") if name.endswith("_half") else (name, "fp32")
        assert f"| {label} | {precision} | {res['sec_per_iter']:.4f} | {res['peak_mb']:.0f} | " in report
    assert "| tv | fp32 | " in report and " | 1.00x | 1.00x | - |" in report
    # inference: the JSON's row
    row = json.loads((raw / "inference.json").read_text())["rows"][0]
    assert f"| resnet50 | 1 | single | {row['port']:.3g} | {row['torchvision']:.3g} |" in report
    # train (--quick: single precision): the resumed run equals the uninterrupted one on the CPU
    for precision in ("single",):
        last = (raw / f"train_{precision}.log").read_text().rstrip().splitlines()[-1]
        top1 = float(re.search(r"top1 +(\S+)", last).group(1))
        assert re.search(rf"^\| {precision} \| {top1:.2f} \| .* \| bit-identical \|$", report, re.M), report
    assert "NCCL initialised by main.py: no (world size 1" in report
    assert not list(raw.rglob("*.t7")) and (raw / "train_single" / "metrics.csv").is_file()  # no megabytes left
