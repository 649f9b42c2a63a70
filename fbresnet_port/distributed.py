"""torch.distributed helpers: the DDP counterpart of Lua's ``-nGPU N`` (``nn.DataParallelTable``).

Lua split each ``-batchSize`` batch across the GPUs of one process (PARITY §4.1, §9 #29). Here one
process per GPU (or per CPU worker) is started by ``torchrun --nproc_per_node N main.py ...``, which
sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; ``-batchSize`` stays the global batch size and every rank
takes the slice :func:`shard_slice` gives it of each global batch (the same ranges as
DataParallelTable's ``sliceRange``). Every function is a no-op (or the identity) when the process is
not part of a distributed job, so single-process code paths are unchanged.

Faults (see docs/training.md, "Faults and restarts"): :func:`init_from_env` makes ``torchrun
--max-restarts`` restarts join reliably and fail fast; :func:`peer_lost` recognises a collective
broken by a dead rank (``main`` prints one line for it); :func:`finish` ends a good run on every
rank together.
"""
from __future__ import annotations

import datetime
import inspect
import os
import re
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn

from .errors import UserError

__all__ = [
    "init_from_env", "is_distributed", "rank", "world_size", "is_main_process", "shard_slice",
    "all_reduce_sum", "broadcast", "all_gather_objects", "barrier", "cleanup", "finish",
    "wrap_model", "restart_count", "max_restarts", "peer_lost", "short_error", "PeerFailed",
]

SETUP_TIMEOUT_ENV = "FBRESNET_DIST_SETUP_TIMEOUT"
SETUP_TIMEOUT_S = 120.0  # joining the job (store + connections), not the collectives after it


class PeerFailed(Exception):
    """Another rank stopped the job and says why (rank 0 prints the ``error:`` line): exit 1 quietly."""


def restart_count() -> int:
    """How many times torchrun restarted the job's workers (``TORCHELASTIC_RESTART_COUNT``; 0 unset)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def max_restarts() -> int:
    """torchrun's ``--max-restarts`` (``TORCHELASTIC_MAX_RESTARTS``; 0 unset)."""
    return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes in the job (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0, the process that prints logs and writes checkpoints (Lua: GPU 1's replica).

    Before the process group exists it reads ``RANK`` from the environment (torchrun sets it).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def init_from_env(device_type: str, timeout_s: float = 1800.0,
                  setup_timeout_s: float | None = None) -> tuple[int, int]:
    """Join the job torchrun describes in the environment; returns ``(rank, world_size)``.

    ``WORLD_SIZE`` unset or 1: nothing is initialised and ``(0, 1)`` is returned. Otherwise the
    backend is NCCL for ``device_type == 'cuda'`` (and ``LOCAL_RANK`` selects the GPU), gloo for CPU.

    Restarts (``torchrun --max-restarts``): torchrun keeps its rendezvous store across restarts
    and hands it to the workers without a per-attempt key prefix (pytorch#135712), so new workers
    would read the dead workers' addresses (``Connection refused``, or a hang). The keys of this
    job go under ``fbresnet/restart<TORCHELASTIC_RESTART_COUNT>/`` in that store instead (not
    when torchrun gives each attempt a fresh store: ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``).
    Joining must succeed within ``setup_timeout_s`` (default :data:`SETUP_TIMEOUT_S`,
    ``$FBRESNET_DIST_SETUP_TIMEOUT``), else a :class:`UserError` names the rendezvous; the
    collectives after it get ``timeout_s``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return rank(), world_size()
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if setup_timeout_s is None:
            setup_timeout_s = float(os.environ.get(SETUP_TIMEOUT_ENV, SETUP_TIMEOUT_S))
        setup = datetime.timedelta(seconds=setup_timeout_s)
        try:
            store, r, w = next(dist.rendezvous("env://", timeout=setup))
            if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":  # torchrun's store, kept
                store = dist.PrefixStore(f"fbresnet/restart{restart_count()}/", store)
            dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo",
                                    store=store, rank=r, world_size=w, timeout=setup)
        except (RuntimeError, ValueError) as e:  # DistStoreError, DistNetworkError, gloo's errors
            where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
            detail = short_error(e)
            raise UserError(f"rank {os.environ.get('RANK', '?')} could not join the {world} processes "
                            f"of the job at {where} within {setup_timeout_s:g} s ({detail}); check "
                            f"that every process started, or raise ${SETUP_TIMEOUT_ENV}") from None
        set_timeout = getattr(dist, "set_timeout", None) or dist.distributed_c10d._set_pg_timeout
        set_timeout(datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def shard_slice(n: int, rank: int, world: int) -> slice:
    """The part of a global batch of ``n`` samples that rank ``rank`` (0-based) of ``world`` takes.

    Port of DataParallelTable's ``sliceRange``: boundaries at ``ceil(r * n / world)``, so the sizes
    differ by at most one (64 over 3 ranks: 22, 21, 21) and every rank gets at least one sample when
    ``n >= world``; with ``n < world`` some slices are empty (2 over 4: 1, 0, 1, 0). Exact integer
    arithmetic (Lua used floating point, which can only differ for boundaries that are integers).
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    start = -(-rank * n // world)
    stop = n if rank == world - 1 else -(-(rank + 1) * n // world)
    return slice(start, stop)


def _collective_device() -> torch.device:
    """Where a tensor must live for the current backend (NCCL: the current GPU; gloo: CPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: torch.Tensor | Sequence[float]) -> torch.Tensor | list[float]:
    """Sum over all ranks.

    A tensor is reduced in place (moved to the backend's device and back when needed) and
    returned; a sequence of numbers is summed in float64 and returned as a list of floats. Not
    distributed: the input is returned unchanged (a sequence as a new list).
    """
    if isinstance(values, torch.Tensor):
        if not is_distributed():
            return values
        device = _collective_device()
        if values.device == device:
            dist.all_reduce(values)
            return values
        buf = values.to(device)
        dist.all_reduce(buf)
        values.copy_(buf)
        return values
    floats = [float(v) for v in values]
    if not is_distributed():
        return floats
    buf = torch.tensor(floats, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(buf)
    return buf.tolist()


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Replace ``tensor`` (in place) by rank ``src``'s copy; returned for chaining. No-op alone."""
    if not is_distributed():
        return tensor
    device = _collective_device()
    if tensor.device == device:
        dist.broadcast(tensor, src)
        return tensor
    buf = tensor.to(device)
    dist.broadcast(buf, src)
    tensor.copy_(buf)
    return tensor


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` when not distributed."""
    if not is_distributed():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def short_error(err: BaseException) -> str:
    """The first sentence of a torch.distributed error, without gloo's ``[file.cc:line]`` prefix."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", line).split(". ")[0][:200]


def peer_lost(err: BaseException) -> bool:
    """Whether ``err`` is a collective that failed because another rank died (gloo/NCCL lost a
    connection), as opposed to a bug of this process."""
    if not isinstance(err, RuntimeError) or not (dist.is_available() and dist.is_initialized()):
        return False
    if isinstance(err, getattr(dist, "DistNetworkError", ())):
        return True
    text = str(err)
    return any(s in text for s in ("Connection reset by peer", "Connection closed by peer",
                                   "Broken pipe", "Connection refused", "NCCL communicator was aborted",
                                   "Socket Timeout", "Timed out waiting"))


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group if one was initialised (safe to call more than once)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def finish() -> None:
    """End of a distributed run that went well: wait for every rank (rank 0 may still be writing
    its last files), then leave the process group. A no-op alone."""
    if is_distributed():
        dist.barrier()
    cleanup()


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed, else ``model`` itself.

    No buffer sync in forward (``forward_sync_buffers=False``; ``broadcast_buffers=False`` before
    torch 2.14) keeps each rank's BatchNorm running statistics its own, as each
    DataParallelTable replica's were (PARITY §9 #29); checkpoints come from rank 0 (Lua: replica 1).
    Parameters start equal on all ranks (DDP broadcasts rank 0's at construction).
    """
    if not is_distributed():
        return model
    device_ids = None
    if device.type == "cuda":
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
    ddp = nn.parallel.DistributedDataParallel
    # rank 0's buffers are still copied once at construction (Lua: replicas cloned from replica 1)
    no_sync = ({"forward_sync_buffers": False}
               if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
               else {"broadcast_buffers": False})
    return ddp(model, device_ids=device_ids, **no_sync)
