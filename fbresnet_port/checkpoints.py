"""Checkpoints in the original layout (port of ``checkpoints.lua``), plus what a long run needs.

Every saved epoch (every ``-saveEvery`` epochs and the last) writes, in ``-save``:

* ``model_<epoch>.t7``: the model as a Lua ``nn`` tree in float32 (what ``model:float():clearState()``
  gives), so the original Lua code can ``torch.load`` and run it;
* ``optimState_<epoch>.t7``: the ``optim.sgd`` state table (``learningRate``, ``momentum``,
  ``nesterov``, ``dampening``, ``weightDecay``, ``evalCounter``, ``dfdx``) with ``dfdx`` the momentum
  buffer in Lua's flat parameter order, stored as a CUDA tensor class as Lua's GPU runs did
  (``-checkpointTensorType float``: ``torch.FloatTensor``/``DoubleTensor``, loadable without cutorch);
* ``model_best.t7`` when an epoch since the last save had the best top-1 error so far;
* ``latest.t7``, written **last**: ``{epoch, modelFile, optimFile}`` as Lua's, plus fields Lua
  ignores: ``bestTop1``/``bestTop5``/``bestEpoch`` (the Lua code forgot the best, PARITY §9 #11) and
  ``rngState`` (torch's CPU and CUDA generators and the data loaders' worker streams, ByteTensors;
  under torchrun every rank's, in ``rngState.ranks``) so that ``-resume`` continues a seeded run
  exactly as if it had not stopped.

``latest.t7`` is the commit point. Each file is written atomically (temp file + rename, with the
user's umask), so a run killed at any moment leaves: ``latest.t7`` naming complete files of the last
committed epoch; perhaps complete ``model_<N>``/``optimState_<N>`` files of the next one (they are
rewritten when that epoch is redone); perhaps a ``model_best.t7`` of that uncommitted epoch (it was
better than every committed one, and the exact resume redoes the epoch and writes it again); perhaps
``.<name>.<random>.tmp`` files, which the next run removes at start. ``-keepCheckpoints K`` deletes
older ``model_<N>``/``optimState_<N>`` files only after ``latest.t7`` is written, and never the ones
``latest.t7`` names or ``model_best.t7``.
"""
from __future__ import annotations

import math
import os
import re
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed, fileio, t7
from .errors import UserError, note, unreadable_t7

# Lua tensor class of the optimiser's dfdx, by -checkpointTensorType and -precision (the original
# kept it on the GPU; "float" names the CPU class of the same precision).
_DFDX_TYPENAME = {("cuda", "single"): "torch.CudaTensor", ("cuda", "double"): "torch.CudaDoubleTensor",
                  ("cuda", "half"): "torch.CudaTensor", ("float", "single"): "torch.FloatTensor",
                  ("float", "double"): "torch.DoubleTensor", ("float", "half"): "torch.FloatTensor"}

_EPOCH_FILE = re.compile(r"^(model|optimState)_(\d+)\.t7$")
# temp files of the names a run writes in -save (t7.save / fileio: ".<name>.<random>.tmp")
STALE_TEMP = fileio.temp_name_pattern([r"latest\.t7", r"model_best\.t7", r"model_\d+\.t7",
                                       r"optimState_\d+\.t7", r"metrics\.csv"])
# Test hook: "<epoch>:<point>[:<rank>]" kills the process (SIGKILL) at that point of the first
# attempt (not after a torchrun restart): a file name (just before it is written) or "batch<N>"
# (before training batch N); <rank> limits it to one rank of a distributed job.
KILL_HOOK_ENV = "FBRESNET_TEST_KILL_BEFORE"


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DataParallel / DistributedDataParallel (Lua: ``model:get(1)``)."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return getattr(model, "_orig_mod", model)  # torch.compile wrapper


def latest(opt: Any) -> tuple[dict | None, dict | None]:
    """Port of ``checkpoints.latest``: the ``-resume`` folder's latest checkpoint and optimiser state.

    Returns ``(checkpoint, optim_state)``; ``checkpoint`` is the ``latest.t7`` table plus
    ``model_path``/``optim_path``; ``(None, None)`` when ``-resume`` is ``none`` or the folder has no
    ``latest.t7`` (a fresh run, as in Lua).
    """
    if opt.resume == "none":
        return None, None
    folder = Path(opt.resume)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "no such folder"
        raise UserError(f"-resume {opt.resume}: {what}; give the -save folder of an earlier run "
                        f"(to start from a model file, use -retrain FILE)")
    latest_path = folder / "latest.t7"
    if not latest_path.is_file():
        print(f"=> No checkpoint in {folder} (no latest.t7): starting a fresh run")
        return None, None
    print(f"=> Loading checkpoint {latest_path}")
    info = _load_table(latest_path, opt.resume)
    for key in ("epoch", "modelFile", "optimFile"):
        if key not in info:
            raise UserError(f"{latest_path} has no '{key}' entry: not a checkpoint written by main.lua or main.py")
    checkpoint = dict(info)
    checkpoint["model_path"] = str(folder / info["modelFile"])
    checkpoint["optim_path"] = str(folder / info["optimFile"])
    optim_path = Path(checkpoint["optim_path"])
    if not optim_path.is_file():
        raise UserError(f"{latest_path} names {optim_path.name}, which is missing from {folder}; "
                        f"restore it, or use -retrain {checkpoint['model_path']} to start a new run "
                        f"from that model")
    optim_state = _load_table(optim_path, opt.resume)
    return checkpoint, dict(optim_state)


def _load_table(path: Path, resume: str) -> dict:
    try:
        obj = t7.load(path)
    except t7.T7FormatError as e:
        raise unreadable_t7(f"-resume {resume}: checkpoint file {path}", path, e,
                            "the run's files are damaged: resume from another copy or start afresh "
                            "(move its latest.t7 away)") from None
    if not isinstance(obj, dict):
        raise UserError(f"-resume {resume}: {path} holds a {type(obj).__name__}, expected a table "
                        f"written by main.lua or main.py")
    return obj


def model_to_lua(model: nn.Module) -> t7.TorchObject:
    """The Lua ``nn`` tree of ``model`` in float32, as ``deepCopy(model):float():clearState()``."""
    from .lua_nn import to_lua

    return to_lua(unwrap(model))


def optim_state_to_lua(optim_state: dict, precision: str = "single", tensor_type: str = "cuda") -> dict:
    """The ``optim.sgd`` table with ``dfdx`` as a 1-D tensor of class ``torch.Cuda[Double]Tensor``
    (``tensor_type`` ``cuda``, as Lua's GPU runs wrote it) or ``torch.Float/DoubleTensor`` (``float``)."""
    table = {k: v for k, v in optim_state.items() if v is not None}
    dfdx = table.get("dfdx")
    if isinstance(dfdx, torch.Tensor):
        name = _DFDX_TYPENAME.get((tensor_type, precision), "torch.CudaTensor")
        dtype = torch.float64 if "Double" in name else torch.float32
        table["dfdx"] = t7.as_typename(dfdx.detach().to("cpu", dtype).contiguous().view(-1), name)
    return table


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files a killed run left in ``folder`` for the names a run writes there."""
    return fileio.remove_stale_temp_files(folder, STALE_TEMP)


def kill_hook(epoch: int, point: str) -> None:
    """For tests: die here (SIGKILL, no cleanup) when ``$FBRESNET_TEST_KILL_BEFORE`` names this
    ``epoch:point`` (and this rank, if it names one) and torchrun has not restarted the job yet."""
    want = os.environ.get(KILL_HOOK_ENV)
    if not want or distributed.restart_count():
        return
    parts = want.split(":")
    if parts[:2] == [str(epoch), point] and (len(parts) < 3 or parts[2] == str(distributed.rank())):
        os.kill(os.getpid(), signal.SIGKILL)


def _write(folder: Path, epoch: int, name: str, obj: Any) -> None:
    kill_hook(epoch, name)
    if isinstance(obj, bytes):  # an already serialised object (a kept best model)
        fileio.atomic_write_bytes(folder / name, obj)
    else:
        t7.save(folder / name, obj)  # atomic, with the user's file mode


def prune(folder: str | os.PathLike, epoch: int, keep: int) -> list[Path]:
    """``-keepCheckpoints keep``: delete ``model_<N>``/``optimState_<N>`` files of all but the last
    ``keep`` saved epochs up to ``epoch`` (``epoch``'s own files, which latest.t7 names, always stay;
    later epochs' files and ``model_best.t7`` are not touched). ``keep <= 0`` keeps everything."""
    if keep <= 0:
        return []
    files: dict[int, list[Path]] = {}
    for path in Path(folder).iterdir():
        m = _EPOCH_FILE.match(path.name)
        if m and int(m.group(2)) <= epoch:
            files.setdefault(int(m.group(2)), []).append(path)
    kept = set(sorted(files)[-keep:]) | {epoch}
    removed = []
    for e, paths in files.items():
        if e not in kept:
            for path in paths:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def save(epoch: int, model: nn.Module, optim_state: dict, is_best: bool, opt: Any,
         best: tuple[float, float] | None = None, *, best_epoch: int | None = None,
         best_model: bytes | None = None, rng: Mapping[str, Any] | None = None) -> None:
    """Port of ``checkpoints.save``: model, optimiser state, ``model_best.t7`` (when ``is_best``) and
    ``latest.t7`` last (the commit point), then ``-keepCheckpoints`` pruning.

    ``best_model``: the serialised best model of an earlier, unsaved epoch (``-saveEvery``), written
    as ``model_best.t7`` instead of this epoch's; ``rng``: :func:`rng_state`'s table for latest.t7.
    """
    folder = Path(opt.save)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(folder)
    model_file, optim_file = f"model_{epoch}.t7", f"optimState_{epoch}.t7"
    lua_model = model_to_lua(model)
    _write(folder, epoch, model_file, lua_model)
    tensor_type = str(getattr(opt, "checkpointTensorType", "cuda"))
    _write(folder, epoch, optim_file,
           optim_state_to_lua(optim_state, getattr(opt, "precision", "single"), tensor_type))
    if is_best:
        _write(folder, epoch, "model_best.t7", best_model if best_model is not None else lua_model)
    info: dict[str, Any] = {"epoch": epoch, "modelFile": model_file, "optimFile": optim_file}
    if best is not None and all(math.isfinite(v) for v in best):
        info["bestTop1"], info["bestTop5"] = float(best[0]), float(best[1])
        if best_epoch is not None:
            info["bestEpoch"] = int(best_epoch)
    if rng is not None:
        info["rngState"] = dict(rng)
    _write(folder, epoch, "latest.t7", info)
    prune(folder, epoch, int(getattr(opt, "keepCheckpoints", 0) or 0))


# ---------------------------------------------------------------------------------------------
# Random number generator states (no Lua counterpart: what makes -resume exact)

def rng_state(loaders: Mapping[str, Any]) -> dict[str, Any]:
    """Lua-storable snapshot of every random stream of the run: ``{torch = ByteTensor,
    cuda = {ByteTensor per device}, <loader name> = loader.rng_state()}`` of this process, and in a
    distributed job ``ranks = {every rank's such table, in rank order}`` (a collective: every rank
    calls it; the top-level fields stay rank 0's, which is what a one-process resume reads)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    for name, loader in loaders.items():
        state[name] = loader.rng_state()
    every = distributed.all_gather_objects(state)
    if len(every) > 1:
        state = dict(every[0], ranks=every)
    return state


def _saved_world(state: Mapping[str, Any]) -> int:
    """Number of processes of the run that saved ``state`` (1 for Lua and one-process runs)."""
    ranks = state.get("ranks")
    if ranks:
        return len(ranks)
    loader = next((v for v in state.values() if isinstance(v, Mapping) and "worldSize" in v), None)
    return int(loader["worldSize"]) if loader is not None else 1


def restore_rng(checkpoint: Mapping[str, Any] | None, loaders: Mapping[str, Any]) -> None:
    """Put back the streams :func:`rng_state` saved in ``checkpoint`` (latest.t7), before training:
    each rank its own (``ranks``; rank 0 also reads the top-level fields of older checkpoints).

    When the resume cannot be exact rank 0 says why in one line (a checkpoint without streams,
    written by Lua: ``=> ...``; another number of processes, another ``-nThreads``, or rank 0's
    streams only: ``note: ...``); the run continues, as Lua's did, with the streams that cannot
    line up restarted from their seeds.
    """
    if checkpoint is None:
        return
    state = checkpoint.get("rngState")
    main = distributed.is_main_process()
    if not isinstance(state, Mapping) or not isinstance(state.get("torch"), torch.Tensor):
        if main:
            print("=> The checkpoint has no random number generator states (written by Lua or an older "
                  "version): data order and augmentation will differ from an uninterrupted run")
        return
    world, me = distributed.world_size(), distributed.rank()
    ranks = state.get("ranks")
    ranks = list(ranks.values()) if isinstance(ranks, Mapping) else list(ranks or [])
    own = ranks[me] if me < len(ranks) else (state if me == 0 and not ranks else None)
    saved = _saved_world(state)
    reason = None
    if saved != world:
        reason = f"the interrupted run had {saved} process(es) and this one has {world}"
    elif world > 1 and not ranks:
        reason = "the checkpoint holds rank 0's streams only (written by an older version)"
    if own is not None:
        torch.set_rng_state(torch.as_tensor(own["torch"], dtype=torch.uint8).clone())
        cuda = own.get("cuda")
        if cuda is not None and torch.cuda.is_available():
            states = list(cuda.values()) if isinstance(cuda, Mapping) else list(cuda)
            for device, s in enumerate(states[:torch.cuda.device_count()]):
                torch.cuda.set_rng_state(torch.as_tensor(s, dtype=torch.uint8).clone(), device)
        lost = [name for name, loader in loaders.items()
                if isinstance(own.get(name), Mapping) and not loader.set_rng_state(own[name])]
        if lost and reason is None:
            reason = f"-nThreads differs from the interrupted run's ({' and '.join(lost)} loader)"
    if reason is not None and main:
        note(f"-resume is not exact: {reason}; the data-loader augmentation streams restart from "
             f"their seeds, so the weights will differ from an uninterrupted run")


def _as_epoch(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


class RunCheckpoints:
    """When to save, and the best model so far, across one run (main.lua's loop bookkeeping).

    ``update`` records an epoch's test scores (best = strictly lower top-1, as Lua); ``due`` says
    whether the epoch is saved (every ``-saveEvery`` epochs and the last); ``save`` writes the set.
    With ``-saveEvery N > 1`` a best model of an unsaved epoch is kept (serialised, in memory) and
    written as ``model_best.t7`` with the next save, so ``model_best.t7`` and the best recorded in
    ``latest.t7`` always go together.
    """

    def __init__(self, opt: Any, checkpoint: Mapping[str, Any] | None = None):
        self.opt = opt
        self.folder = Path(opt.save)
        self.save_every = max(1, int(getattr(opt, "saveEvery", 1) or 1))
        cp = checkpoint or {}
        self.top1 = float(cp.get("bestTop1", math.inf))
        self.top5 = float(cp.get("bestTop5", math.inf))
        self.epoch = _as_epoch(cp.get("bestEpoch"))
        self.path: Path | None = None
        if checkpoint is not None and math.isfinite(self.top1):
            for folder in (Path(str(opt.resume)), self.folder):
                if (folder / "model_best.t7").is_file():  # the resumed run's own, first
                    self.path = folder / "model_best.t7"
                    break
        self._unsaved_best: bytes | int | None = None  # serialised model, or the epoch to take it from

    def due(self, epoch: int) -> bool:
        """Whether ``epoch`` writes a checkpoint: every ``-saveEvery`` epochs, and the last one."""
        return epoch % self.save_every == 0 or epoch >= int(self.opt.nEpochs)

    def update(self, epoch: int, top1: float, top5: float, model: nn.Module | None) -> bool:
        """Record ``epoch``'s test errors; True when it is the best so far (Lua: ``top1 < bestTop1``).

        ``model`` is kept for the next save when ``epoch`` is not saved (None: a process that
        does not write checkpoints)."""
        if not top1 < self.top1:
            return False
        self.top1, self.top5, self.epoch = top1, top5, epoch
        keep = model is not None and not self.due(epoch)
        self._unsaved_best = t7.dumps(model_to_lua(model)) if keep else epoch
        return True

    def save(self, epoch: int, model: nn.Module, optim_state: dict,
             rng: Mapping[str, Any] | None = None) -> None:
        """:func:`save` of ``epoch`` with the pending best model, if any."""
        pending = self._unsaved_best
        save(epoch, model, optim_state, pending is not None, self.opt, best=(self.top1, self.top5),
             best_epoch=self.epoch, best_model=pending if isinstance(pending, bytes) else None, rng=rng)
        if pending is not None:
            self.path = self.folder / "model_best.t7"
        self._unsaved_best = None
