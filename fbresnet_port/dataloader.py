"""Port of fb.resnet.torch ``dataloader.lua``: multi-process batch loading for one split.

Behaviour (PARITY.md §6.1):

* ``DataLoader.create(opt)`` returns ``(train_loader, val_loader)``; each has ``-nThreads`` worker
  processes (persistent across epochs, so their random streams continue as Lua's threads do).
* Every pass (``iter(loader)`` or ``loader.run()``) draws a new ``torch.randperm(N)`` in the main
  process from torch's global RNG (Lua: the main thread's RNG), for train **and** val (PARITY §9 #15,
  reproduced). Batches are consecutive slices of it; the last one is partial, never dropped;
  ``len(loader) = ceil(N / batchSize)``.
* A worker builds a whole batch. Worker ``k`` (1-based) seeds its own generator with
  ``manualSeed + k``; with ``manualSeed == 0`` the seeds are random, as in Lua. Unlike Lua, batches
  come back in order (batch j always goes to worker ``j mod nThreads``), so a seeded run is
  reproducible. ``nThreads 0`` builds batches in the calling process (seed ``manualSeed + 1``).
* With ``-tenCrop`` the val loader takes ``floor(batchSize / 10)`` samples per batch and returns
  ``(B*10, C, H, W)``, the 10 crops of a sample contiguous. CIFAR rejects ``-tenCrop`` and a
  ten-crop batch size below 10 is an error (PARITY §9 #3, #4: clear errors instead of Lua's crash).
* Inputs are float32 (``-precision double``: float64, ``half``: float16, Lua's CPU tensor types);
  targets are 0-based int64 (Lua: 1-based labels).
* Datasets with a ``get_batch`` method (CIFAR) preprocess a batch at once (vectorised); others
  (ImageNet) run ``get`` + ``preprocess`` per sample. An image that cannot be read (``OSError``) is
  skipped with a warning and counted in ``loader.skipped``; a batch left empty is not yielded.
* Exact resume (not in Lua): every batch comes back with its worker's generator state, so
  :meth:`DataLoader.rng_state` knows each worker's stream position after a pass and
  :meth:`DataLoader.set_rng_state` (before the first pass) makes a resumed run's workers continue
  where the interrupted run's stopped.

Distributed (``torchrun``, Lua ``-nGPU N``, PARITY §9 #29): ``-batchSize`` stays the global batch
size and ``len(loader)`` the number of global batches on every rank. Every rank draws the pass's
permutation as above (keeping the global RNGs in step) and then takes rank 0's (broadcast), so all
ranks see the same global batches as a one-process run; rank ``r`` builds its slice
``distributed.shard_slice(n, r, world)`` of each (DataParallelTable's split). Worker ``k`` of rank
``r`` seeds ``manualSeed + max(nThreads, 1) * r + k`` (rank 0 as above). A rank whose slice is empty
(a global batch smaller than the world size) or wholly unreadable gets a *placeholder* batch: one
sample of the global batch with ``batch.placeholder = True``, which the trainer runs through the
model (so the rank joins the step's collectives) but weights zero.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Iterator

import torch
import torch.utils.data as tud

from . import distributed
from .errors import UserError

_DTYPES = {"double": torch.float64, "half": torch.float16}


class Batch:
    """One mini-batch: ``input`` (N x C x H x W) and 0-based ``target`` (int64).

    Unpacks as ``input, target = batch`` and also answers ``batch['input']`` like Lua's sample table.

    ``placeholder`` marks a distributed rank's stand-in batch that must count for nothing.
    """

    __slots__ = ("input", "target", "skipped", "placeholder")

    def __init__(self, input: torch.Tensor, target: torch.Tensor, skipped: int = 0,
                 placeholder: bool = False):
        self.input = input
        self.target = target
        self.skipped = skipped
        self.placeholder = placeholder

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.input, self.target))

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in ("input", "target"):
            raise KeyError(key)
        return getattr(self, key)

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def __repr__(self) -> str:
        return f"Batch(input={tuple(self.input.shape)}, target={tuple(self.target.shape)})"


def _make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``, or from OS entropy when ``seed == 0`` (Lua: /dev/urandom)."""
    g = torch.Generator()
    if seed:
        g.manual_seed(seed)
    else:
        g.seed()
    return g


def build_batch(dataset: Any, preprocess: Any, indices: torch.Tensor, n_crops: int,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The job of dataloader.lua for one batch: ``get`` -> ``preprocess`` per sample, stacked.

    Returns ``(input (B*n_crops) x C x H x W, 0-based target (B), number of unreadable images skipped)``.
    """
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(indices, generator, n_crops)
    inputs, targets, skipped = [], [], 0
    for i in indices.tolist():
        try:
            sample = dataset.get(i)
        except OSError as e:
            skipped += 1
            print(f"warning: skipping unreadable image: {e}", file=sys.stderr)
            continue
        inputs.append(preprocess(sample["input"], generator))
        targets.append(sample["target"])
    if not inputs:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), skipped
    first = inputs[0].shape
    for x in inputs:
        if x.shape != first:
            raise ValueError(f"samples of a batch differ in shape: {tuple(first)} and {tuple(x.shape)}")
    batch = torch.stack(inputs)
    if n_crops > 1:
        batch = batch.reshape(-1, *batch.shape[2:])
    return batch, torch.tensor(targets, dtype=torch.int64) - 1, skipped


def worker_seed(manual_seed: int, n_threads: int, rank: int, idx: int) -> int:
    """Seed of worker ``idx`` (1-based) of ``rank``: ``manualSeed + max(nThreads, 1)*rank + idx``
    (Lua ``manualSeed + idx`` on rank 0); 0 (= seed from OS entropy) when ``manualSeed`` is 0."""
    return manual_seed + max(n_threads, 1) * rank + idx if manual_seed else 0


class _Jobs(tud.Dataset):
    """Map-style dataset whose items are whole batches, keyed by an index tensor, or (distributed)
    by ``(global batch indices, start, stop)``: this rank's slice of a global batch."""

    def __init__(self, dataset: Any, n_crops: int, dtype: torch.dtype, seed: int,
                 n_threads: int = 0, rank: int = 0):
        self.dataset = dataset
        self.n_crops = n_crops
        self.dtype = dtype
        self.seed = seed
        self.n_threads = n_threads
        self.rank = rank
        self.generator: torch.Generator | None = None
        self.worker_idx = 0
        self.resume_states: dict[int, torch.Tensor] = {}  # worker idx -> generator state to start from
        self._preprocess = None

    def start_worker(self, idx: int) -> None:
        """Lua ``main(idx)``: seed this worker (:func:`worker_seed`, 1-based idx), build preprocess.

        A state in ``resume_states[idx]`` (a resumed run) replaces the seed's."""
        if tud.get_worker_info() is not None:  # a worker process; -nThreads 0 keeps the main process's threads
            torch.set_num_threads(1)
        self.worker_idx = idx
        self.generator = _make_generator(worker_seed(self.seed, self.n_threads, self.rank, idx))
        if idx in self.resume_states:
            self.generator.set_state(self.resume_states[idx])
        if not hasattr(self.dataset, "get_batch"):
            self._preprocess = self.dataset.preprocess()

    def __len__(self) -> int:
        return self.dataset.size()

    def _build(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        return build_batch(self.dataset, self._preprocess, indices, self.n_crops, self.generator)

    def __getitem__(self, key: torch.Tensor | tuple[torch.Tensor, int, int]
                    ) -> tuple[torch.Tensor, torch.Tensor, int, bool, int, torch.Tensor]:
        """``(input, target, skipped, placeholder, worker idx, worker generator state after it)``."""
        if self.generator is None:
            self.start_worker(1)
        x, y, skipped, placeholder = self._job(key)
        return x, y, skipped, placeholder, self.worker_idx, self.generator.get_state()

    def _job(self, key: torch.Tensor | tuple[torch.Tensor, int, int]
             ) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
        if isinstance(key, torch.Tensor):
            x, y, skipped = self._build(key)
            return x.to(self.dtype), y, skipped, False
        indices, start, stop = key
        x, y, skipped = self._build(indices[start:stop])
        placeholder = False
        if not y.numel():
            # Nothing of our own: stand in with one readable sample of the global batch (from
            # the end) so that this rank still joins the step; the trainer weights it zero.
            for i in reversed(range(len(indices))):
                x, y, _ = self._build(indices[i:i + 1])
                if y.numel():
                    placeholder = True
                    break
        return x.to(self.dtype), y, skipped, placeholder


def _worker_init(worker_id: int) -> None:
    info = tud.get_worker_info()
    info.dataset.start_worker(worker_id + 1)


class _EpochSampler(tud.Sampler):
    """Yields the index tensor of each batch: consecutive slices of a fresh permutation per pass.

    With ``world > 1`` the permutation is rank 0's (broadcast) and each item is this rank's job key
    ``(global batch indices, start, stop)``.
    """

    def __init__(self, size: int, batch_size: int, generator: torch.Generator | None,
                 rank: int = 0, world: int = 1):
        self.size = size
        self.batch_size = batch_size
        self.generator = generator
        self.rank = rank
        self.world = world

    def __len__(self) -> int:
        return math.ceil(self.size / self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        # a generator: the permutation is drawn at the first batch, so iterators that torch's
        # DataLoader creates and discards (it makes two on a first multi-worker pass) draw nothing
        perm = torch.randperm(self.size, generator=self.generator)
        if self.world == 1:
            yield from perm.split(self.batch_size)
            return
        distributed.broadcast(perm, src=0)
        for indices in perm.split(self.batch_size):
            part = distributed.shard_slice(len(indices), self.rank, self.world)
            yield indices, part.start, part.stop


class DataLoader:
    """Port of ``resnet.DataLoader`` (dataloader.lua) for one split of ``dataset``.

    ``generator`` (default: torch's global RNG, like Lua's main-thread ``torch.randperm``) draws the
    per-pass permutation. ``rank``/``world_size`` default to the torch.distributed job's (0/1 alone).
    """

    @staticmethod
    def create(opt) -> tuple["DataLoader", "DataLoader"]:
        """Port of ``DataLoader.create(opt)``: the train and val loaders (the cache is read once)."""
        import datasets
        info = datasets.load_image_info(opt)
        return tuple(DataLoader(datasets.create(opt, split, info), opt, split)  # type: ignore[return-value]
                     for split in ("train", "val"))

    def __init__(self, dataset: Any, opt, split: str, generator: torch.Generator | None = None, *,
                 rank: int | None = None, world_size: int | None = None):
        self.dataset = dataset
        self.split = split
        self.n_crops = 10 if (split == "val" and getattr(opt, "tenCrop", False)) else 1
        if self.n_crops > 1 and str(getattr(opt, "dataset", "")).startswith("cifar"):
            raise UserError("-tenCrop is only supported for ImageNet (the original crashes with CIFAR)")
        self.batch_size = int(math.floor(opt.batchSize / self.n_crops))
        if self.batch_size < 1:
            extra = " (-tenCrop puts floor(batchSize / 10) images in a batch)" if self.n_crops > 1 else ""
            raise UserError(f"-batchSize {opt.batchSize} gives batches of 0 images{extra}; use a larger -batchSize")
        self.size_ = dataset.size()
        self.n_threads = max(int(getattr(opt, "nThreads", 0) or 0), 0)
        self.dtype = _DTYPES.get(str(getattr(opt, "precision", "single")), torch.float32)
        self.manual_seed = int(getattr(opt, "manualSeed", 0) or 0)
        self.rank = distributed.rank() if rank is None else int(rank)
        self.world_size = distributed.world_size() if world_size is None else int(world_size)
        self.skipped = 0
        self._worker_states: dict[int, torch.Tensor] = {}  # worker idx -> state after its last batch
        self._jobs = _Jobs(dataset, self.n_crops, self.dtype, self.manual_seed, self.n_threads,
                           self.rank)
        self._sampler = _EpochSampler(self.size_, self.batch_size, generator, self.rank,
                                      self.world_size)
        workers = self.n_threads
        self._loader = tud.DataLoader(
            self._jobs, batch_size=None, sampler=self._sampler, num_workers=workers,
            worker_init_fn=_worker_init if workers else None, persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(), prefetch_factor=4 if workers else None,
            generator=torch.Generator())  # torch's own worker seeds: not drawn from the global RNG

    def size(self) -> int:
        """Number of (global) batches per pass: ceil(N / batchSize), on every rank."""
        return math.ceil(self.size_ / self.batch_size)

    __len__ = size

    def __iter__(self) -> Iterator[Batch]:
        skipped = 0
        for x, y, n_skipped, placeholder, worker, state in self._loader:
            self._worker_states[worker] = state
            skipped += n_skipped
            self.skipped += n_skipped
            if y.numel():
                yield Batch(x, y, n_skipped, placeholder)
        if skipped:
            print(f" | {self.split}: skipped {skipped} unreadable image(s) this pass", file=sys.stderr)

    def close(self) -> None:
        """Stop the ``-nThreads`` worker processes now (persistent workers otherwise live until the
        loader is garbage-collected, which a process ending with ``os._exit`` never does)."""
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self._loader._iterator = None
        self._jobs.resume_states = dict(self._worker_states)  # a later pass goes on with the streams

    def run(self) -> Iterator[tuple[int, Batch]]:
        """Lua ``DataLoader:run()``: ``(n, sample)`` pairs, n counting from 1."""
        return enumerate(self, start=1)

    # -- exact resume (no Lua counterpart: Lua checkpoints keep no RNG state) ---------------------

    def rng_state(self) -> dict[str, Any]:
        """This loader's random streams between passes, as a Lua-storable table:
        ``{nThreads, rank, worldSize, workers = {[idx] = ByteTensor}}`` (+ ``permutation`` when the
        loader has its own permutation generator). Workers that built no batch yet are left out
        (they are still at their seed)."""
        state: dict[str, Any] = {"nThreads": self.n_threads, "rank": self.rank,
                                 "worldSize": self.world_size,
                                 "workers": {k: v.clone() for k, v in sorted(self._worker_states.items())}}
        if self._sampler.generator is not None:
            state["permutation"] = self._sampler.generator.get_state()
        return state

    def set_rng_state(self, state: Any) -> bool:
        """Continue the streams saved by :meth:`rng_state`; call before the first pass.

        Returns False (and changes nothing) when the state is from another ``-nThreads``, rank or
        world size, where worker streams cannot line up with the saved ones."""
        if (int(state.get("nThreads", -1)) != self.n_threads or int(state.get("rank", -1)) != self.rank
                or int(state.get("worldSize", -1)) != self.world_size):
            return False
        if self.n_threads and getattr(self._loader, "_iterator", None) is not None:
            raise RuntimeError("set_rng_state must be called before the loader's worker processes start")
        workers = state.get("workers") or {}
        items = workers.items() if isinstance(workers, dict) else enumerate(workers, 1)
        states = {int(k): torch.as_tensor(v, dtype=torch.uint8).clone() for k, v in items}
        self._jobs.resume_states = states
        self._worker_states = dict(states)
        if self._jobs.generator is not None and self._jobs.worker_idx in states:  # nThreads 0, started
            self._jobs.generator.set_state(states[self._jobs.worker_idx])
        if self._sampler.generator is not None and state.get("permutation") is not None:
            self._sampler.generator.set_state(torch.as_tensor(state["permutation"], dtype=torch.uint8))
        return True
