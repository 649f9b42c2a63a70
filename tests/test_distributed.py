"""Distributed training (DDP over gloo on the CPU, the port of Lua's ``-nGPU`` DataParallelTable):
batch sharding as DataParallelTable's ``sliceRange``, global scores on every rank, and training in two
processes that reaches the parameters of the same run in one process (PARITY §4.1, §6.1, §9 #29)."""
from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from fbresnet_port import distributed, opts
from fbresnet_port.dataloader import DataLoader, worker_seed
from fbresnet_port.train import Trainer

N_TRAIN, N_VAL, BATCH, N_CLASSES = 11, 6, 5, 7   # batches 5, 5, 1 (train), 5, 1 (val)
EPOCHS = (1, 2)
SEED = 3
TIMEOUT_S = 120


# -- an in-memory dataset and small models ------------------------------------------------------------

class MemoryDataset:
    """Fixed float64 images with the ``get_batch`` interface of datasets/cifar10.py (no augmentation,
    so that one and two processes see the same inputs)."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 2, 6, 6, generator=g, dtype=torch.float64)
        self.y = torch.randint(0, N_CLASSES, (n,), generator=g)

    def size(self) -> int:
        return len(self.y)

    def get_batch(self, indices, generator=None, n_crops=1):
        return self.x.index_select(0, indices), self.y.index_select(0, indices), 0

    def targets_of(self, inputs: torch.Tensor) -> torch.Tensor:
        """Labels of the rows of ``inputs``, found by matching them against the stored images."""
        match = (inputs.unsqueeze(1) == self.x.unsqueeze(0)).flatten(2).all(2)
        assert bool((match.sum(1) == 1).all())
        return self.y[match.int().argmax(1)]


class RandomDataset(MemoryDataset):
    """Inputs drawn from the loader's augmentation generator: shows which random stream a rank uses."""

    def get_batch(self, indices, generator=None, n_crops=1):
        return (torch.rand(len(indices), generator=generator, dtype=torch.float64),
                self.y.index_select(0, indices), 0)


def make_model(batch_norm: bool) -> nn.Module:
    torch.manual_seed(SEED)
    layers: list[nn.Module] = [nn.Conv2d(2, 4, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, N_CLASSES)]
    return nn.Sequential(*layers).double()


def options(**kw):
    base = dict(precision="double", batchSize=BATCH, nThreads=1, manualSeed=SEED)
    base.update(kw)
    return opts.default_options(**base)


# -- one training run (1 process, or one rank of 2) -----------------------------------------------------

def run_training(batch_norm: bool) -> dict:
    """Train ``EPOCHS`` and validate after each; record every forward pass of the bare model."""
    torch.manual_seed(SEED)
    bare = make_model(batch_norm)
    bn = [m for m in bare.modules() if isinstance(m, nn.BatchNorm2d)]
    calls: list[dict] = []

    def record(module, inputs, output):
        calls.append({"training": module.training, "input": inputs[0].detach().clone(),
                      "output": output.detach().clone(),
                      "running_mean": bn[0].running_mean.clone() if bn else None})

    bare.register_forward_hook(record)
    model = distributed.wrap_model(bare, torch.device("cpu"))
    opt = options()
    train = DataLoader(MemoryDataset(N_TRAIN, 1), opt, "train")
    val = DataLoader(MemoryDataset(N_VAL, 2), opt, "val")
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt)
    # ranks' global RNGs drift apart in real runs (CPU dropout over slices of different sizes):
    # the shuffle must still be rank 0's
    torch.rand(distributed.rank())
    log = io.StringIO()
    results, running_means = [], []
    with contextlib.redirect_stdout(log):
        for epoch in EPOCHS:
            train_scores = trainer.train(epoch, train)
            running_means.append(bn[0].running_mean.clone() if bn else None)
            results.append((train_scores, trainer.test(epoch, val)))
    return {"params": [p.detach().clone() for p in bare.parameters()], "log": log.getvalue(),
            "results": results, "calls": calls, "lens": (len(train), len(val)),
            "running_means": running_means}


def _rank_main(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    # a spawned child inherits "spawn" for its own children: the loader's workers (which would
    # re-import everything) start with fork instead, as under torchrun
    mp.set_start_method("fork", force=True)
    try:
        got = distributed.init_from_env("cpu", timeout_s=TIMEOUT_S)
        out = {"init": got, "main": distributed.is_main_process(),
               "sum": distributed.all_reduce_sum([1.0, float(rank)]),
               "plain": run_training(batch_norm=False), "bn": run_training(batch_norm=True)}
        distributed.barrier()
    finally:
        distributed.cleanup()
    torch.save(out, Path(out_dir) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """Both configurations trained by 2 gloo processes on 127.0.0.1 (one spawn for the module)."""
    out_dir = tmp_path_factory.mktemp("ddp")
    ctx = mp.start_processes(_rank_main, args=(2, _free_port(), str(out_dir)), nprocs=2,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=1.0):   # raises with the child's traceback if a rank failed
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"2-process training did not finish within {TIMEOUT_S} s")
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def one_process() -> dict:
    assert "WORLD_SIZE" not in os.environ or os.environ["WORLD_SIZE"] == "1"
    return {"plain": run_training(batch_norm=False), "bn": run_training(batch_norm=True)}


def _untimed(log: str) -> str:
    return re.sub(r"Time +[\d.]+  Data +[\d.]+", "Time -  Data -", log)


def _train_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith(" | Epoch")]


# -- helpers --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,world,sizes", [
    (64, 3, [22, 21, 21]), (64, 2, [32, 32]), (5, 2, [3, 2]), (5, 4, [2, 1, 1, 1]),
    (2, 4, [1, 0, 1, 0]), (1, 2, [1, 0]), (10, 4, [3, 2, 3, 2]),   # ceil(10/4)=3, ceil(20/4)=5, ceil(30/4)=8
])
def test_shard_slice_matches_data_parallel_table(n, world, sizes):
    parts = [distributed.shard_slice(n, r, world) for r in range(world)]
    assert [p.stop - p.start for p in parts] == sizes
    assert parts[0].start == 0 and parts[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))


def test_shard_slice_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank 2"):
        distributed.shard_slice(8, 2, 2)


def test_helpers_without_process_group():
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    assert distributed.init_from_env("cpu") == (0, 1)
    assert distributed.is_main_process()
    assert distributed.all_reduce_sum([1.5, 2]) == [1.5, 2.0]
    t = torch.tensor([3.0])
    assert distributed.all_reduce_sum(t) is t and distributed.broadcast(t) is t
    distributed.barrier()
    distributed.cleanup()
    model = nn.Linear(2, 2)
    assert distributed.wrap_model(model, torch.device("cpu")) is model


def test_worker_seeds_differ_per_rank():
    # manualSeed + max(nThreads, 1) * rank + k; rank 0 keeps Lua's manualSeed + k; 0 stays random
    assert worker_seed(5, 2, 0, 1) == 6 and worker_seed(5, 2, 0, 2) == 7
    assert worker_seed(5, 2, 1, 1) == 8 and worker_seed(5, 2, 1, 2) == 9
    assert worker_seed(5, 0, 1, 1) == 7
    assert worker_seed(0, 2, 1, 1) == 0


# -- sharded loader (no process group needed: every rank draws the same permutation) ------------------

def test_rank_loaders_split_each_global_batch():
    dataset = MemoryDataset(N_TRAIN, 1)
    opt = options(nThreads=1)   # the job keys travel to a worker process
    torch.manual_seed(11)
    whole = list(DataLoader(dataset, opt, "train"))
    ranks = []
    for r in range(2):
        torch.manual_seed(11)
        loader = DataLoader(dataset, opt, "train", rank=r, world_size=2)
        assert len(loader) == 3 == len(whole)          # global batches on every rank
        ranks.append(list(loader))
    assert [len(b) for b in ranks[0]] == [3, 3, 1] and [len(b) for b in ranks[1]] == [2, 2, 1]
    assert [b.placeholder for b in ranks[0]] == [False] * 3
    assert [b.placeholder for b in ranks[1]] == [False, False, True]
    for step in range(2):
        assert torch.equal(torch.cat([ranks[0][step].input, ranks[1][step].input]),
                           whole[step].input)
    assert torch.equal(ranks[0][2].input, whole[2].input)
    assert torch.equal(ranks[1][2].input, whole[2].input)   # the stand-in is a sample of the batch


def test_rank_loader_augmentation_stream():
    dataset = RandomDataset(4, 1)
    opt = options(nThreads=0, batchSize=4)
    batch, = list(DataLoader(dataset, opt, "train", rank=1, world_size=2))
    expected = torch.rand(2, generator=torch.Generator().manual_seed(SEED + 1 + 1),
                          dtype=torch.float64)   # nThreads 0: one stream, manualSeed + 1*rank + 1
    assert torch.equal(batch.input, expected)


# -- two processes against one ------------------------------------------------------------------------

def test_ranks_joined_the_job(two_ranks):
    assert [r["init"] for r in two_ranks] == [(0, 2), (1, 2)]
    assert [r["main"] for r in two_ranks] == [True, False]
    assert two_ranks[0]["sum"] == two_ranks[1]["sum"] == [2.0, 1.0]
    assert two_ranks[0]["plain"]["lens"] == two_ranks[1]["plain"]["lens"] == (3, 2)


def test_two_processes_train_like_one(two_ranks, one_process):
    single = one_process["plain"]
    rank0, rank1 = (r["plain"] for r in two_ranks)
    for a, b in zip(rank0["params"], rank1["params"]):
        assert torch.equal(a, b)                      # replicas stay identical
    initial = [p.detach() for p in make_model(False).parameters()]
    moved = max(float((a - b).abs().max()) for a, b in zip(single["params"], initial))
    assert moved > 1e-3                               # training changed the weights
    for a, b in zip(rank0["params"], single["params"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_two_processes_see_the_global_batches_of_one(two_ranks, one_process):
    single = [c["input"] for c in one_process["plain"]["calls"] if c["training"]]
    per_rank = [[c["input"] for c in r["plain"]["calls"] if c["training"]] for r in two_ranks]
    assert len(single) == len(per_rank[0]) == len(per_rank[1]) == 3 * len(EPOCHS)
    for step, whole in enumerate(single):
        if len(whole) == 1:                           # rank 1 had no sample: stand-in
            assert torch.equal(per_rank[0][step], whole) and torch.equal(per_rank[1][step], whole)
        else:
            assert torch.equal(torch.cat([per_rank[0][step], per_rank[1][step]]), whole)


def test_rank_logs_and_scores_equal_one_process(two_ranks, one_process):
    single = one_process["plain"]
    for r in two_ranks:
        assert _untimed(r["plain"]["log"]) == _untimed(single["log"])
        for (train2, test2), (train1, test1) in zip(r["plain"]["results"], single["results"]):
            assert train2[:2] == pytest.approx(train1[:2], abs=1e-9)
            assert train2[2] == pytest.approx(train1[2], rel=1e-12)
            assert test2 == pytest.approx(test1, abs=1e-9)


def _scores(output: torch.Tensor, target: torch.Tensor) -> tuple[float, float, float]:
    """top-1 / top-5 error (%) and mean cross-entropy of a whole batch, computed directly."""
    top5 = output.topk(5, 1).indices
    n = len(target)
    err1 = 100.0 * (n - int((top5[:, 0] == target).sum())) / n
    err5 = 100.0 * (n - int((top5 == target[:, None]).any(1).sum())) / n
    return err1, err5, float(F.cross_entropy(output, target))


def test_batch_norm_ranks_report_global_scores(two_ranks):
    dataset = MemoryDataset(N_TRAIN, 1)
    rank0, rank1 = (r["bn"] for r in two_ranks)
    train0 = [c for c in rank0["calls"] if c["training"]]
    train1 = [c for c in rank1["calls"] if c["training"]]
    lines = _train_lines(rank0["log"])
    assert len(lines) == len(train0) == len(train1) == 6
    n_total = correct1 = 0
    loss_total = 0.0
    for step, (c0, c1) in enumerate(zip(train0, train1)):
        own = [c0] if step % 3 == 2 else [c0, c1]      # the 1-sample batch: rank 1 stands in
        output = torch.cat([c["output"] for c in own])
        target = dataset.targets_of(torch.cat([c["input"] for c in own]))
        err1, err5, loss = _scores(output, target)
        assert lines[step].split("Err ")[1] == "%1.3f  top1 %7.2f  top5 %7.2f  lr 0.1000" % (
            loss, err1, err5)
        if step < 3:
            n_total += len(target)
            correct1 += len(target) * (100 - err1) / 100
            loss_total += loss * len(target)
    top1, _, loss = rank0["results"][0][0]
    assert top1 == pytest.approx(100.0 * (1 - correct1 / n_total), abs=1e-9)
    assert loss == pytest.approx(loss_total / n_total, rel=1e-12)
    assert rank1["results"][0] == rank0["results"][0]


def test_batch_norm_statistics_stay_per_rank(two_ranks):
    rank0, rank1 = (r["bn"] for r in two_ranks)
    train0 = [c for c in rank0["calls"] if c["training"]]
    train1 = [c for c in rank1["calls"] if c["training"]]
    # own slices give each replica its own running statistics (no SyncBN, no buffer broadcast)
    assert not torch.equal(rank0["running_means"][0], rank1["running_means"][0])
    assert torch.equal(rank0["running_means"][0], train0[2]["running_mean"])
    # rank 1's stand-in forward (step 3) moved the statistics, and the trainer undid it
    assert not torch.equal(train1[2]["running_mean"], train1[1]["running_mean"])
    assert torch.equal(rank1["running_means"][0], train1[1]["running_mean"])
    for a, b in zip(rank0["params"], rank1["params"]):
        assert torch.equal(a, b)
