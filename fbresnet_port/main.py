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

from fbresnet_port import checkpoints, cpu_memory, distributed, runlock
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

    if not opt.testOnly:
        lock_save_folder(opt)
    checkpoint, optim_state = checkpoints.latest(opt)
    if checkpoint is not None and not opt.testOnly and int(checkpoint["epoch"]) >= int(opt.nEpochs):
        trained = int(checkpoint["epoch"])
        if trained > int(opt.nEpochs):
            raise UserError(f"-resume {opt.resume}: that run already finished epoch {trained}, after "
                            f"-nEpochs {int(opt.nEpochs)}; give -nEpochs {trained} or more to train on, "
                            f"or add -testOnly true to test its model")
        # a finished run launched again (a re-queued job, a restart after the last checkpoint)
        print(f"=> Nothing left to train: -resume {opt.resume} already finished epoch {trained} of "
              f"-nEpochs {int(opt.nEpochs)} (raise -nEpochs to train on)")
        return
    announce_restart(opt, checkpoint)
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
    else:
        train_epochs(opt, checkpoint, model, trainer, train_loader, val_loader, main_process)
    for loader in (train_loader, val_loader):
        loader.close()


def lock_save_folder(opt) -> None:
    """One run per ``-save`` folder (:mod:`fbresnet_port.runlock`): rank 0 takes the lock, and
    every rank stops (exit 1; rank 0 prints the ``error:`` line) when it is held by another run."""
    error = None
    if distributed.is_main_process():
        try:
            runlock.SaveLock.acquire(opt.save, quiet_takeover=distributed.restart_count() > 0)
        except UserError as e:
            error = e
    refused = distributed.all_reduce_sum([1.0 if error else 0.0])[0]
    if error is not None:
        raise error
    if refused:
        raise distributed.PeerFailed("rank 0 could not lock -save")


def announce_restart(opt, checkpoint: dict | None) -> None:
    """After a torchrun restart, one line (rank 0): where training goes on, which restart it is."""
    count = distributed.restart_count()
    if not count:
        return
    which = f"restart {count} of {distributed.max_restarts()}"
    if checkpoint is not None:
        print(f"=> resuming after epoch {int(checkpoint['epoch'])} ({which})")
    elif opt.resume == "none":
        print(f"=> starting again from epoch {int(opt.epochNumber)} ({which}): without -resume a "
              f"restart trains from the start; add -resume {opt.save} to go on from the last checkpoint")
    else:
        print(f"=> starting again from epoch {int(opt.epochNumber)} ({which}): no checkpoint yet")


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
        rng = checkpoints.rng_state(loaders) if run.due(epoch) else None  # every rank's streams
        if main_process:
            metrics.write_metrics(opt.save, row, previous=opt.resume if checkpoint else None)
            if rng is not None:
                run.save(epoch, model, trainer.optim_state_lua(), rng)
    print(format_finished(run.top1, run.top5))
    if math.isfinite(run.top1):
        print(metrics.format_final(run.epoch, run.top1, run.top5, run.path))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python main.py`` and ``fbresnet-train``: exit status 0, 1 (a user mistake, one
    ``error:`` line; or another process of a torchrun job died) or 130 (interrupted).

    A torchrun worker started from the command line (``argv`` None) ends with ``os._exit`` once
    every rank has finished and every file is written and closed: a gloo thread could otherwise
    abort the interpreter's shutdown (``terminate called without an active exception``)."""
    cli = argv is None
    if argv is None:
        argv = sys.argv[1:]
        prog = os.path.basename(sys.argv[0]) or "main.py"
        sys.stdout.reconfigure(line_buffering=True)  # progress lines show up at once under `| tee log`
    else:
        prog = "main.py"
    code = 0
    joined = False
    try:
        run(argv, prog)
        joined = distributed.is_distributed()
        distributed.finish()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    except distributed.PeerFailed:
        code = 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    except RuntimeError as e:
        if not distributed.peer_lost(e):
            raise
        print(f"error: rank {distributed.rank()}: another process of the job died or was killed "
              f"({distributed.short_error(e)}); stopping this one too", file=sys.stderr)
        code = 1
    finally:
        joined = joined or distributed.is_distributed()
        runlock.release_all()
        distributed.cleanup()
    if cli and joined:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)
    return code
