"""Distributed runs that survive faults, through real ``torchrun`` jobs (2 ranks, gloo, CPU, a
ResNet-8 on the shipped CIFAR-10 sample): a rank killed during an epoch or while rank 0 writes a
checkpoint is restarted by torchrun (default settings, ``--max-restarts 2``) and the run ends with
the uninterrupted run's files bit for bit; a finished run launched again exits 0; finished runs
exit 0; one run per ``-save`` folder; what the user reads at a restart.

Kills are deterministic: ``$FBRESNET_TEST_KILL_BEFORE`` (``epoch:point:rank``) makes one rank
SIGKILL itself at that point of the first attempt. Every job runs in its own session with a
bounded wait; on a timeout the test kills that session's processes (by the job's process id).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT
from fbresnet_port import checkpoints, distributed, runlock, t7
from fbresnet_port.errors import UserError

pytestmark = pytest.mark.slow

FLAGS = ["-netType", "resnet", "-depth", "8", "-data", "sample", "-nThreads", "0", "-nThreadsCompute", "1",
         "-batchSize", "250", "-manualSeed", "5", "-printModel", "false"]
JOB_TIMEOUT_S = 240
RESUMED = "=> resuming after epoch 1 (restart 1 of 2)"
PEER_LINE = re.compile(r"^error: rank [01]: another process of the job died or was killed \(.+\); "
                       r"stopping this one too$", re.M)


def _wait(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """``proc``'s exit status and output; on timeout its whole session is killed and the test fails."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # the job's own session: torchrun and its workers
        out, err = proc.communicate()
        pytest.fail(f"job did not finish within {timeout} s:\n{err[-3000:]}")
    return proc.returncode, out, err


def _start(save: Path, gen: Path, *extra: str, nproc: int = 2, kill: str | None = None,
           torchrun_args: tuple[str, ...] = ("--max-restarts", "2")) -> subprocess.Popen:
    """A torchrun job of ``main.py`` (``nproc`` 0: plain ``python main.py``) into ``save``."""
    env = {k: v for k, v in os.environ.items() if k != checkpoints.KILL_HOOK_ENV}
    if kill:
        env[checkpoints.KILL_HOOK_ENV] = kill
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                 str(nproc), *torchrun_args] if nproc else [sys.executable])
    return subprocess.Popen([*launcher, "main.py", *FLAGS, "-gen", str(gen), "-save", str(save), *extra],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _job(save: Path, gen: Path, *extra: str, **kw) -> tuple[int, str, str]:
    return _wait(_start(save, gen, *extra, **kw), JOB_TIMEOUT_S)


def _train(save: Path, gen: Path, epochs: int = 2, **kw) -> tuple[int, str, str]:
    return _job(save, gen, "-nEpochs", str(epochs), "-resume", str(save), **kw)


@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gen")


@pytest.fixture(scope="module")
def straight(tmp_path_factory, gen) -> Path:
    """The uninterrupted 2-epoch, 2-rank run: the ground truth of the restarted ones."""
    save = tmp_path_factory.mktemp("straight")
    rc, out, err = _train(save, gen)
    assert rc == 0, err[-3000:]
    assert out.count("=> Training epoch # ") == 2 and "resuming" not in out
    return save


def _assert_same_files(save: Path, straight: Path, epoch: int) -> None:
    for name in (f"model_{epoch}.t7", f"optimState_{epoch}.t7"):
        assert (save / name).read_bytes() == (straight / name).read_bytes(), name
    a, b = t7.load(save / "latest.t7"), t7.load(straight / "latest.t7")
    assert a["epoch"] == b["epoch"] == epoch
    ranks_a, ranks_b = a["rngState"]["ranks"], b["rngState"]["ranks"]
    assert len(ranks_a) == len(ranks_b) == 2
    for ra, rb in zip(ranks_a, ranks_b):
        assert torch.equal(ra["torch"], rb["torch"])
        for split in ("train", "val"):
            assert ra[split]["rank"] == rb[split]["rank"]
            assert all(torch.equal(x, y) for x, y in zip(ra[split]["workers"], rb[split]["workers"]))
    assert not (save / runlock.LOCK_NAME).exists()


def test_every_rank_saves_its_own_streams(straight):
    rng = t7.load(straight / "latest.t7")["rngState"]
    ranks = rng["ranks"]
    assert [r["train"]["rank"] for r in ranks] == [0, 1] and ranks[1]["train"]["worldSize"] == 2
    assert torch.equal(rng["train"]["workers"][0], ranks[0]["train"]["workers"][0])   # top level: rank 0's
    # rank 1's augmentation stream is its own (seeded manualSeed + 1*rank + 1), not rank 0's
    assert not torch.equal(ranks[0]["train"]["workers"][0], ranks[1]["train"]["workers"][0])


def _a_worker_died(err: str) -> bool:
    """torchrun reports the first failure it observed: the killed rank (-9), or the survivor that saw its peer die
    first and stopped with its one line (exit 1)."""
    return "exitcode: -9" in err or bool(PEER_LINE.search(err))


def test_rank_killed_during_an_epoch_restarts_exactly(tmp_path, gen, straight):
    rc, out, err = _train(tmp_path, gen, kill="2:batch2:1")   # rank 1, epoch 2, before batch 2
    assert rc == 0, err[-3000:]
    assert _a_worker_died(err) and "Traceback" not in out + err, err[-3000:]
    assert out.count(RESUMED) == 1 and out.count("=> Training epoch # 2") == 2
    assert len(PEER_LINE.findall(err)) <= 1 and "note:" not in err   # no stale-lock or inexact note
    _assert_same_files(tmp_path, straight, 2)


def test_rank_killed_while_writing_a_checkpoint_restarts_exactly(tmp_path, gen, straight):
    rc, out, err = _train(tmp_path, gen, kill="2:latest.t7:0")   # rank 0, after model_2/optimState_2
    assert rc == 0, err[-3000:]
    assert _a_worker_died(err) and "Traceback" not in out + err, err[-3000:]
    assert out.count(RESUMED) == 1 and out.index("=> Loading checkpoint") < out.index(RESUMED)
    assert all(line.startswith("error: rank 1: ") for line in PEER_LINE.findall(err))   # if in time
    assert len(PEER_LINE.findall(err)) <= 1 and "note:" not in err
    _assert_same_files(tmp_path, straight, 2)


def test_surviving_rank_says_one_line(tmp_path, gen):
    """Rank 0 dies while writing; rank 1, waiting for it, says so in one line and exits 1. (Two
    plain processes: under torchrun the agent often stops the survivor before it can print.)"""
    port = _free_port()
    env = dict(os.environ, WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               GLOO_SOCKET_IFNAME="lo", **{checkpoints.KILL_HOOK_ENV: "1:latest.t7:0"})
    args = [sys.executable, "main.py", *FLAGS, "-gen", str(gen), "-save", str(tmp_path), "-nEpochs", "1"]
    ranks = [subprocess.Popen(args, cwd=REPO_ROOT, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for r in range(2)]
    (rc0, _, _), (rc1, out1, err1) = [_wait(p, JOB_TIMEOUT_S) for p in ranks]
    assert rc0 == -signal.SIGKILL and rc1 == 1
    assert out1 == ""   # rank 1 prints no logs
    line, = err1.splitlines()
    assert PEER_LINE.fullmatch(line) and line.startswith("error: rank 1: ") and "by peer" in line


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_finished_run_launched_again_exits_0(straight, gen, tmp_path):
    before = {p.name: p.read_bytes() for p in straight.iterdir()}
    rc, out, err = _train(straight, gen)
    assert rc == 0, err[-3000:]
    assert out.count("=> Nothing left to train: ") == 1 and "already finished epoch 2 of -nEpochs 2" in out
    assert "error" not in err and "Training epoch" not in out
    assert {p.name: p.read_bytes() for p in straight.iterdir()} == before
    # fewer epochs than were trained is still a mistake (one line, in a one-process run)
    rc, out, err = _job(tmp_path, gen, "-nEpochs", "1", "-resume", str(straight), nproc=0)
    assert rc == 1 and err.splitlines()[-1].startswith("error: -resume ") and "-nEpochs 1" in err
    assert "Traceback" not in err


EXIT_RUNS = int(os.environ.get("FBRESNET_TEST_EXIT_RUNS", "4"))   # docs/training.md: 40 measured


def test_finished_runs_exit_0(tmp_path, gen, straight):
    """Uninterrupted 2-rank runs (1 epoch, 2 jobs at a time) all exit 0 (a gloo thread used to
    abort rank 1 at interpreter exit in about 1 run of 11)."""
    results = []
    for start in range(0, EXIT_RUNS, 2):
        jobs = [_start(tmp_path / f"run{i}", gen, "-nEpochs", "1", "-batchSize", "500")
                for i in range(start, min(start + 2, EXIT_RUNS))]
        results += [_wait(job, JOB_TIMEOUT_S) for job in jobs]
    assert [rc for rc, _, _ in results] == [0] * EXIT_RUNS, [err[-500:] for _, _, err in results]
    assert not [err for _, _, err in results if "terminate called" in err or "Traceback" in err]
    assert all((tmp_path / f"run{i}" / "latest.t7").is_file() for i in range(EXIT_RUNS))


# -- one run per -save folder -----------------------------------------------------------------------

def test_second_run_into_a_folder_in_use_is_refused(tmp_path, gen):
    save = tmp_path / "run"
    held = runlock.SaveLock.acquire(save)   # this test process is the run using the folder
    try:
        owner = (save / runlock.LOCK_NAME).read_text()
        assert owner.startswith(f"process {os.getpid()} on ")
        rc, out, err = _job(save, gen, "-nEpochs", "1", nproc=0)
        assert rc == 1 and err.splitlines() == [
            f"error: -save {save}: another run is writing into this folder ({owner.strip()}); wait for "
            f"it to end or stop it, or choose another -save"]
        # 2 ranks: rank 0 says it once, rank 1 stops quietly, nothing was written
        rc, out, err = _job(save, gen, "-nEpochs", "1", torchrun_args=("--max-restarts", "0"))
        assert rc != 0 and err.count("another run is writing into this folder") == 1
        assert "Traceback (most recent call last):\n  File \"/" not in err.split("main.py FAILED")[0]
        assert (save / runlock.LOCK_NAME).read_text() == owner   # the holder is unharmed
        assert sorted(p.name for p in save.iterdir()) == [runlock.LOCK_NAME]
    finally:
        held.release()
    assert not (save / runlock.LOCK_NAME).exists()


def test_stale_lock_is_taken_over_with_a_note(tmp_path, capsys):
    (tmp_path / runlock.LOCK_NAME).write_text("process 4242 on elsewhere since 2026-01-01T00:00:00+00:00\n")
    lock = runlock.SaveLock.acquire(tmp_path)   # nobody holds the lock: its process is gone
    try:
        assert capsys.readouterr().err == (
            f"note: -save {tmp_path}: taking over the lock left by process 4242 on elsewhere since "
            f"2026-01-01T00:00:00+00:00, which ended without releasing it\n")
        assert (tmp_path / runlock.LOCK_NAME).read_text().startswith(f"process {os.getpid()} on ")
    finally:
        lock.release()
    lock = runlock.SaveLock.acquire(tmp_path)   # released cleanly: no note
    lock.release()
    assert capsys.readouterr().err == ""


# -- joining the job ----------------------------------------------------------------------------------

def test_setup_timeout_is_one_clear_error(monkeypatch):
    port = _free_port()   # nobody serves the store there
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    with pytest.raises(UserError, match=rf"^rank 1 could not join the 2 processes of the job at "
                                        rf"127\.0\.0\.1:{port} within 2 s \(.+\); check that every"):
        distributed.init_from_env("cpu", setup_timeout_s=2)
    assert not distributed.is_distributed()


def test_inexact_resume_is_said_by_rank_0(monkeypatch, capsys):
    """A checkpoint of rank 0's streams only (older versions) or of another number of processes."""
    state = {"torch": torch.get_rng_state(),
             "train": {"nThreads": 0, "rank": 0, "worldSize": 2, "workers": {}}}
    for rank, expect in ((0, "note: -resume is not exact: "), (1, "")):
        monkeypatch.setattr(distributed, "world_size", lambda: 2)
        monkeypatch.setattr(distributed, "rank", lambda r=rank: r)
        monkeypatch.setattr(distributed, "is_main_process", lambda r=rank: r == 0)
        checkpoints.restore_rng({"rngState": state}, {})
        assert capsys.readouterr().err.startswith(expect)
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    monkeypatch.setattr(distributed, "is_main_process", lambda: True)
    checkpoints.restore_rng({"rngState": dict(state, ranks=[state, state])}, {})
    assert "the interrupted run had 2 process(es) and this one has 3" in capsys.readouterr().err


def test_lock_of_a_killed_run_is_free_though_its_forked_workers_live(tmp_path, capsys):
    """A run killed with data-loader workers still alive (forked: they share its open files and so its flock) does
    not block an immediate -resume: the process the lock file names is gone, so the file is replaced and taken."""
    save, pid_file = tmp_path / "run", tmp_path / "worker.pid"
    script = (f"import os, signal, sys, time\nsys.path.insert(0, {str(REPO_ROOT)!r})\n"
              f"from fbresnet_port import runlock\nrunlock.SaveLock.acquire({str(save)!r})\n"
              "if os.fork() == 0:\n    null = os.open(os.devnull, os.O_WRONLY)\n    os.dup2(null, 1)\n"
              f"    os.dup2(null, 2)\n    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
              "    time.sleep(60)\n    os._exit(0)\n"
              f"while not os.path.exists({str(pid_file)!r}):\n    time.sleep(0.01)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    worker = int(pid_file.read_text())
    try:
        os.kill(worker, 0)  # the forked worker still lives, holding the old lock file's flock
        lock = runlock.SaveLock.acquire(save)
        lock.release()
        assert "taking over the lock left by process" in capsys.readouterr().err
    finally:
        os.kill(worker, signal.SIGKILL)
