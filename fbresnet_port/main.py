"""Train and test ResNets and DenseNets: port of ``main.lua`` (fb.resnet.torch + liuzhuang13/DenseNet).

    python main.py -netType densenet -dataset cifar10 -depth 100 -growthRate 12 -data DIR
    fbresnet-train ...          (the same, once the package is installed)

Takes the flags of the original ``opts.lua`` (``python main.py -h`` lists them). Several GPUs or
machines: ``torchrun --nproc_per_node N main.py ...`` (DistributedDataParallel, one process per GPU;
``-batchSize`` stays the global batch size, as with Lua's DataParallelTable).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import sys
import time

import torch

from fbresnet_port import checkpoints, cpu_memory, distributed
from fbresnet_port.errors import UserError


def setup_device(opt) -> torch.device:
    """Pick the device (``-device auto|cpu|cuda``) and join a torch.distributed job when launched by torchrun."""
    want = getattr(opt, "device", "auto")
    use_cuda = torch.cuda.is_available() if want == "auto" else want == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise UserError("-device cuda: no CUDA device is available; use -device cpu")
    distributed.init_from_env("cuda" if use_cuda else "cpu")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
        cpu_memory.retain_freed_memory()  # no page faults for re-allocated activations (see the module)
    opt.device = device.type
    return device


def seed_everything(seed: int) -> None:
    """As main.lua: ``torch.manualSeed`` and ``cutorch.manualSeedAll``, always (also for 0)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def run(argv: list[str], prog: str = "main.py") -> None:
    from fbresnet_port import opts
    from fbresnet_port.dataloader import DataLoader
    from fbresnet_port.train import Trainer, format_results, sgd_state
    import models

    opt = opts.parse(argv, prog=prog)
    opts.apply_backend_flags(opt)
    if opt.nThreadsCompute > 0:  # -nThreadsCompute: threads of the model's CPU computation
        torch.set_num_threads(int(opt.nThreadsCompute))
    device = setup_device(opt)
    seed_everything(int(opt.manualSeed))
    main_process = distributed.is_main_process()
    if not main_process:  # logs and files come from rank 0 only
        sys.stdout = open(os.devnull, "w")

    checkpoint, optim_state = checkpoints.latest(opt)
    if checkpoint is not None and not opt.testOnly and int(checkpoint["epoch"]) >= int(opt.nEpochs):
        raise UserError(f"-resume {opt.resume}: that run already finished epoch {int(checkpoint['epoch'])} of "
                        f"-nEpochs {int(opt.nEpochs)}, so nothing would be trained; raise -nEpochs to train on, "
                        f"or add -testOnly true to test its model")
    # Cheap checks first: the SGD state, then the flags and -retrain/-resume files by building the model quietly;
    # then the data; the model's lines (and DenseNet's layer tree) are printed only once the data is there, so a
    # missing -data is the first thing the user reads.
    sgd_state(opt, optim_state)
    with contextlib.redirect_stdout(io.StringIO()) as model_lines:
        model, criterion = models.setup(opt, checkpoint)
    if not main_process:
        distributed.barrier()  # rank 0 builds the dataset cache first
    train_loader, val_loader = DataLoader.create(opt)
    if main_process:
        distributed.barrier()
    print(model_lines.getvalue(), end="")
    if checkpoint is not None or opt.retrain != "none":
        source = f"-resume {opt.resume}" if checkpoint else f"-retrain {opt.retrain}"
        models.check_fits_dataset(model, opt, source)
    model = model.to(device)
    criterion = criterion.to(device)
    if distributed.is_distributed():
        model = distributed.wrap_model(model, device)
    elif device.type == "cuda" and opt.nGPU > 1:
        model = torch.nn.DataParallel(model, device_ids=list(range(int(opt.nGPU))))
    trainer = Trainer(model, criterion, opt, optim_state)

    if opt.testOnly:
        top1, top5 = trainer.test(0, val_loader)
        print(format_results(top1, top5))
        return

    train_epochs(opt, checkpoint, model, trainer, train_loader, val_loader, main_process)


def train_epochs(opt, checkpoint: dict | None, model: torch.nn.Module, trainer, train_loader,
                 val_loader, main_process: bool) -> None:
    """main.lua's epoch loop (train, test, best model, checkpoint, final line), plus: exact resume
    (RNG states), a summary line per epoch, ``metrics.csv`` and a last line naming the best model."""
    from fbresnet_port import metrics
    from fbresnet_port.train import format_best, format_finished

    loaders = {"train": train_loader, "val": val_loader}
    checkpoints.restore_rng(checkpoint, loaders)
    if main_process:
        checkpoints.remove_stale_temp_files(opt.save)  # left by a run killed while writing
    run = checkpoints.RunCheckpoints(opt, checkpoint)
    start_epoch = int(checkpoint["epoch"]) + 1 if checkpoint else int(opt.epochNumber)
    n_epochs = int(opt.nEpochs)
    epoch_times: list[float] = []
    for epoch in range(start_epoch, n_epochs + 1):
        started = time.perf_counter()
        train_top1, train_top5, train_loss = trainer.train(epoch, train_loader)
        top1, top5 = trainer.test(epoch, val_loader)
        epoch_times.append(time.perf_counter() - started)
        if run.update(epoch, top1, top5, model if main_process else None):
            print(format_best(top1, top5))
        row = metrics.EpochMetrics(epoch, train_loss, train_top1, train_top5, top1, top5,
                                   trainer.current_lr, epoch_times[-1])
        eta = sum(epoch_times) / len(epoch_times) * (n_epochs - epoch)
        print(metrics.format_summary(row, n_epochs, time.perf_counter() - trainer.started, eta))
        if main_process:
            metrics.write_metrics(opt.save, row, previous=opt.resume if checkpoint else None)
            if run.due(epoch):
                run.save(epoch, model, trainer.optim_state_lua(), checkpoints.rng_state(loaders))
    print(format_finished(run.top1, run.top5))
    if math.isfinite(run.top1):
        print(metrics.format_final(run.epoch, run.top1, run.top5, run.path))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python main.py`` and ``fbresnet-train``: exit status 0, 1 (a user mistake, one
    ``error:`` line) or 130 (interrupted)."""
    if argv is None:
        argv = sys.argv[1:]
        prog = os.path.basename(sys.argv[0]) or "main.py"
        sys.stdout.reconfigure(line_buffering=True)  # progress lines show up at once under `| tee log`
    else:
        prog = "main.py"
    try:
        run(argv, prog)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        distributed.cleanup()
    return 0
