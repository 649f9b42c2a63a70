"""The CUDA paths, on a machine with a GPU (skipped with the reason elsewhere; ``benchmarks/gpu_check.py`` runs
this file first): every ``-optMemory`` level's DenseNet forward/backward on CUDA against the CPU float64 result,
a mixed-precision training step with loss scaling, the CUDA RNG state through a checkpoint, a checkpoint written
on the GPU resumed on the CPU and back, and the distributed helpers over NCCL.

Ground truth is always computed independently: CPU float64 autograd, a plain float32 SGD step, the generator's
own next numbers, the GPU run's own test errors.
"""
from __future__ import annotations

import functools
import os
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fbresnet_port import checkpoints, distributed, opts, t7
from fbresnet_port.train import Trainer
from test_densenet import SMALL, _base_state, _step, make
from test_distributed import _free_port

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch sees none here); on a GPU machine run "
                                       "python3 benchmarks/gpu_check.py OUT_DIR")

# CPU float64 is the reference. float64 on the GPU must agree to 1e-9 (relative norm); float32 (TF32 off: cuDNN and
# cuBLAS would otherwise round the inputs of convolutions and matrix products to 10 mantissa bits) within 10x the
# error of the CPU's own float32 plain-autograd run: BatchNorm's training backward on 4 images cancels most of the
# gradient, so even that run is ~4e-3 off in the input gradient.
FLOAT64_TOLERANCE = 1e-9
WHAT = ("output", "gradInput", "gradParams", "running stats")


@pytest.fixture
def no_tf32(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double().cpu() - ref).norm() / max(1e-12, ref.norm().item())).item()


def _reference(level: int, train: bool, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, ...]:
    state, x = _base_state("bc40")
    grad_out = torch.randn(x.shape[0], 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = make(*SMALL["bc40"], "-optMemory", level).to(dtype)
    model.load_state_dict(state)
    return _step(model.to(device), x.to(device, dtype), train, grad_out=grad_out)


@functools.lru_cache(maxsize=None)
def _cpu_float32_errors(train: bool) -> tuple[float, ...]:
    ref = _reference(0, train, torch.float64, "cpu")
    return tuple(_rel_err(a, b) for a, b in zip(_reference(0, train, torch.float32, "cpu"), ref))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("level", [0, 1, 2, 3, 4, 5])
def test_levels_on_cuda_match_cpu_float64(level, train, dtype, no_tf32):
    """The dense blocks (autograd Function with cuDNN convolutions from level 1) on the GPU give CPU float64's
    outputs, input and parameter gradients and running statistics."""
    ref = _reference(0, train, torch.float64, "cpu")
    got = _reference(level, train, dtype, "cuda")
    limits = ((FLOAT64_TOLERANCE,) * 4 if dtype == torch.float64 else
              tuple(max(10 * e, 1e-6) for e in _cpu_float32_errors(train)))
    for what, a, b, limit in zip(WHAT, got, ref, limits):
        assert a.is_cuda and a.dtype == dtype
        assert _rel_err(a, b) <= limit, (what, _rel_err(a, b), limit)


def _tiny_trainer(precision: str, seed: int = 0) -> Trainer:
    torch.manual_seed(seed)
    opt = opts.default_options(netType="densenet", depth=16, growthRate=6, bottleneck=False, reduction=1.0,
                               precision=precision, LR=0.1, optMemory=2)
    model = make("-depth", 16, "-growthRate", 6, "-bottleneck", "false", "-reduction", 1, "-optMemory", 2).cuda()
    return Trainer(model, nn.CrossEntropyLoss().cuda(), opt)


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().double().cpu() for p in model.parameters()])


def test_mixed_precision_step_scales_the_loss(no_tf32):
    """-precision half on CUDA: float16 autocast, float32 master weights, a GradScaler; the update is the float32
    update (cosine > 0.99), and a step whose gradients overflow is skipped with the scale halved."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 32, 32, generator=g).cuda(), torch.randint(0, 10, (16,), generator=g).cuda()
    updates = {}
    for precision in ("single", "half"):
        trainer = _tiny_trainer(precision)
        before = _flat(trainer.model)
        for _ in range(8):  # a first scale of 2^16 may overflow: that step is skipped and the scale halved
            with trainer._autocast(x.device):
                out = trainer.model(x)
                loss = trainer.criterion(out, y)
            assert out.dtype == (torch.float16 if precision == "half" else torch.float32)
            trainer._step(loss, x.device)
            if not torch.equal(_flat(trainer.model), before):
                break
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
        updates[precision] = _flat(trainer.model) - before
        if precision == "half":
            assert trainer.scaler is not None and 1 <= trainer.scaler.get_scale() <= 2.0 ** 16
            scale, weights = trainer.scaler.get_scale(), _flat(trainer.model)
            with trainer._autocast(x.device):
                loss = trainer.criterion(trainer.model(x), y) * torch.tensor(float("inf"), device="cuda")
            trainer._step(loss, x.device)  # inf loss: inf gradients, the step is skipped
            assert torch.equal(_flat(trainer.model), weights)
            assert trainer.scaler.get_scale() == scale / 2
    assert F.cosine_similarity(updates["half"], updates["single"], dim=0) > 0.99


def test_checkpoint_keeps_the_cuda_rng_state(tmp_path):
    """latest.t7's rngState holds the CUDA generator: after restoring it, the GPU draws the numbers it would have
    drawn next (through the .t7 file, as -resume reads it)."""
    torch.cuda.manual_seed_all(5)
    torch.rand(7, device="cuda")  # somewhere in the stream
    state = checkpoints.rng_state({})
    assert len(state["cuda"]) == torch.cuda.device_count()
    expected = torch.rand(1000, device="cuda")
    t7.save(tmp_path / "latest.t7", {"epoch": 1, "rngState": state})
    torch.cuda.manual_seed_all(99)
    checkpoints.restore_rng(t7.load(tmp_path / "latest.t7"), {})
    assert torch.equal(torch.rand(1000, device="cuda"), expected)


def _test_errors(out: str) -> tuple[float, float]:
    found = re.findall(r"^ \* Results top1: +(\S+)  top5: +(\S+)$", out, re.M)
    assert found, out[-2000:]
    return float(found[-1][0]), float(found[-1][1])


def test_checkpoint_written_on_gpu_resumes_on_cpu_and_back(tmp_path, capsys):
    """A run trained on the GPU resumes on the CPU (which writes the next epoch) and that one on the GPU again;
    each checkpoint tests (-testOnly) to nearly the same errors on both devices: at most 4 of the 200 sample images
    classified differently, as float32 rounding differs between the devices and the barely trained net has close
    scores."""
    import main
    flags = ["-netType", "densenet", "-depth", "16", "-growthRate", "6", "-bottleneck", "false", "-reduction", "1",
             "-batchSize", "50", "-manualSeed", "3", "-nThreads", "0", "-printModel", "false",
             "-data", "sample", "-gen", str(tmp_path / "gen")]
    runs = [("cuda", 1, tmp_path / "gpu"), ("cpu", 2, tmp_path / "cpu"), ("cuda", 3, tmp_path / "gpu2")]
    previous = None
    for device, epochs, save in runs:
        resume = ["-resume", str(previous)] if previous else []
        assert main.main(flags + ["-device", device, "-nEpochs", str(epochs), "-save", str(save), *resume]) == 0
        capsys.readouterr()
        errors = {}
        for other in ("cuda", "cpu"):
            assert main.main(flags + ["-device", other, "-nEpochs", str(epochs), "-save", str(tmp_path / "t"),
                                      "-resume", str(save), "-testOnly", "true"]) == 0
            errors[other] = _test_errors(capsys.readouterr().out)
        assert abs(errors["cuda"][0] - errors["cpu"][0]) <= 2.0, errors
        previous = save


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_nccl_available()),
                    reason="this torch has no NCCL")
def test_distributed_helpers_over_nccl(monkeypatch, no_tf32):
    """One NCCL process (under torchrun, or a local rendezvous): the port's collectives move CPU tensors to the GPU
    and back, and a DistributedDataParallel SGD step gives the plain step's weights."""
    import torch.distributed as dist
    if "MASTER_ADDR" not in os.environ:
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    for name, value in (("WORLD_SIZE", "1"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    dist.init_process_group("nccl", world_size=1, rank=0)
    # world size 1 is "not distributed" for main.py; here the helpers are made to take their NCCL path
    monkeypatch.setattr(distributed, "is_distributed", lambda: dist.is_initialized())
    try:
        assert dist.get_backend() == "nccl"
        cpu = torch.tensor([1.5, -2.0], dtype=torch.float64)
        assert distributed.all_reduce_sum(cpu) is cpu and cpu.tolist() == [1.5, -2.0]
        assert distributed.all_reduce_sum([3.0, 4.0]) == [3.0, 4.0]
        perm = torch.randperm(10)
        assert torch.equal(distributed.broadcast(perm.clone()), perm)
        device = torch.device("cuda", torch.cuda.current_device())
        g = torch.Generator().manual_seed(2)
        x, y = torch.randn(8, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (8,), generator=g).to(device)
        weights = []
        for wrap in (False, True):
            torch.manual_seed(0)
            model = make("-depth", 16, "-growthRate", 6, "-bottleneck", "false", "-reduction", 1).to(device)
            net = distributed.wrap_model(model, device) if wrap else model
            assert isinstance(net, nn.parallel.DistributedDataParallel) == wrap
            sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            F.cross_entropy(net(x), y).backward()
            sgd.step()
            distributed.barrier()
            weights.append(_flat(model))
        assert torch.allclose(weights[0], weights[1], rtol=0, atol=1e-6)
    finally:
        distributed.cleanup()
