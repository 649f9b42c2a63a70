"""The training loop and learning-rate schedules: port of ``train.lua`` (liuzhuang13/DenseNet version).

:class:`Trainer` runs one epoch of training (:meth:`Trainer.train`) or validation
(:meth:`Trainer.test`) over any sized iterable of ``(input, target)`` batches (targets 0-based) and
prints the Lua log lines character for character (plus, for long epochs, a `` | Progress:`` line
with the epoch's ETA every :func:`~fbresnet_port.metrics.progress_interval` batches). The optimiser
is Lua ``optim.sgd`` as configured by ``train.lua`` (Nesterov, dampening 0, weight decay on every parameter), which is exactly
``torch.optim.SGD(nesterov=True, dampening=0)`` with one parameter group; :meth:`Trainer.optim_state_lua`
converts its state to the Lua ``optimState`` table and ``Trainer(..., optim_state=table)`` back.

Deliberate differences from the Lua code: top-5 uses ``k = min(5, nClasses)`` (Lua crashed below 5
classes), the ten-crop test loss is not computed (Lua crashed on it), ``-precision half`` is mixed
precision with float32 master weights (Lua kept fp16 weights), and an empty loader gives NaN scores.

Distributed (DDP, Lua ``-nGPU``; see :mod:`fbresnet_port.distributed`): each rank gets its slice of
every global batch. After the forward pass the ranks sum ``(loss * n, correct@1, correct@k, n)`` so
that logs and returned scores are those of the whole global batch (Lua computed them on the gathered
output), and each rank's loss is scaled by ``n_rank * world / n_global`` before backward, which makes
DDP's gradient average exactly the gradient of the global-batch mean loss. Placeholder batches
(``batch.placeholder``, a rank with no samples of its own) count zero and leave the BatchNorm
running statistics as they were, as an idle DataParallelTable replica did.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from typing import Any, Iterable

import torch
from torch import nn

from . import distributed
from .checkpoints import kill_hook
from .errors import UserError
from .metrics import format_progress, lua_tostring, progress_interval
from .opts import apply_backend_flags

__all__ = [
    "Trainer", "compute_score", "multistep_lr", "cosine_lr", "format_train_line",
    "format_test_line", "format_test_end", "format_results", "format_finished", "format_best", "lua_tostring",
    "sgd_state",
]

_TRAIN_LINE = (" | Epoch: [%d][%d/%d]   Time %.3f  Data %.3f  Err %1.3f  top1 %7.2f  top5 %7.2f"
               "  lr %.4f")
_TEST_LINE = " | Test: [%d][%d/%d]    Time %.3f  Data %.3f  top1 %7.3f (%7.3f)  top5 %7.3f (%7.3f)"
_TEST_END = " * Finished epoch # %d     top1: %7.3f  top5: %7.3f\n"
NESTEROV_MESSAGE = "Nesterov momentum requires a momentum and zero dampening"


# ---------------------------------------------------------------------------------------------
# Log lines (Lua string.format == C printf for these conversions)

def format_train_line(epoch: int, n: int, size: int, elapsed: float, data_time: float,
                      loss: float, top1: float, top5: float, lr: float) -> str:
    """The per-iteration training line of DenseNet's train.lua (with the ``lr`` column)."""
    return _TRAIN_LINE % (epoch, n, size, elapsed, data_time, loss, top1, top5, lr)


def format_test_line(epoch: int, n: int, size: int, elapsed: float, data_time: float,
                     top1: float, top1_avg: float, top5: float, top5_avg: float) -> str:
    """The per-iteration validation line of train.lua (batch score and running average)."""
    return _TEST_LINE % (epoch, n, size, elapsed, data_time, top1, top1_avg, top5, top5_avg)


def format_test_end(epoch: int, top1: float, top5: float) -> str:
    """The end-of-validation line; ends with ``\\n`` so ``print`` leaves a blank line, as in Lua."""
    return _TEST_END % (epoch, top1, top5)


def format_results(top1: float, top5: float) -> str:
    """main.lua's ``-testOnly`` line."""
    return " * Results top1: %6.3f  top5: %6.3f" % (top1, top5)


def format_finished(top1: float, top5: float) -> str:
    """main.lua's last line (``math.huge`` prints as ``   inf``)."""
    return " * Finished top1: %6.3f  top5: %6.3f" % (top1, top5)


def format_best(top1: float, top5: float) -> str:
    """main.lua's ``print(' * Best model ', top1, top5)`` (tab-separated, numbers as ``%.14g``)."""
    return "\t".join((" * Best model ", lua_tostring(top1), lua_tostring(top5)))


# ---------------------------------------------------------------------------------------------
# Scores

def _correct_counts(output: torch.Tensor, target: torch.Tensor, n_crops: int) -> torch.Tensor:
    """Number of samples right at top-1 and within top-k (k = min(5, classes)), as a 2-element tensor.

    Ten-crop outputs (sample-major, ``(B*n_crops, C)``) are summed over the crops as raw logits.
    """
    out = output.detach().float()
    if n_crops > 1:
        if out.size(0) % n_crops:
            raise UserError(f"ten-crop output has {out.size(0)} rows, not a multiple of {n_crops}; "
                            f"the loader must give {n_crops} crops per image")
        out = out.view(out.size(0) // n_crops, n_crops, out.size(1)).sum(1)
    k = min(5, out.size(1))
    predictions = out.topk(k, 1, largest=True, sorted=True).indices
    correct = predictions.eq(target.to(predictions.device, torch.long).view(-1, 1))
    return torch.stack((correct[:, 0].sum(), correct.sum()))


def _global_counts(counts: torch.Tensor, n_local: int, loss: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """Sum over the ranks of ``[loss * n, correct@1, correct@k, n]`` (loss entry only when given),
    float64 on the counts' device; ``n_local = 0`` (a placeholder) contributes nothing."""
    parts = [counts.double() * (1.0 if n_local else 0.0),
             torch.full((1,), float(n_local), dtype=torch.float64, device=counts.device)]
    if loss is not None:
        parts.insert(0, loss.detach().double().view(1) * n_local)
    return distributed.all_reduce_sum(torch.cat(parts))


def _snapshot_buffers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Copies of the module buffers (BatchNorm running statistics), for :func:`_restore_buffers`."""
    return [(b, b.detach().clone()) for b in model.buffers()]


def _restore_buffers(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Put back buffers saved by :func:`_snapshot_buffers` (after backward: autograd saved them)."""
    with torch.no_grad():
        for b, copy in saved:
            b.copy_(copy)


def _error_rates(correct1: float, correct5: float, batch_size: int) -> tuple[float, float]:
    # Same operation order as computeScore: (1 - correct/B) * 100.
    return (1.0 - correct1 / batch_size) * 100, (1.0 - correct5 / batch_size) * 100


def compute_score(output: torch.Tensor, target: torch.Tensor, n_crops: int = 1
                  ) -> tuple[float, float]:
    """Port of ``Trainer:computeScore``: top-1 and top-5 error (percent) of one batch.

    ``output`` is ``(B*n_crops, C)`` logits (crops of a sample contiguous), ``target`` ``(B,)``
    0-based. Differs from Lua only for fewer than 5 classes, where top-5 uses all classes.
    """
    correct1, correct5 = _correct_counts(output, target, n_crops).tolist()
    return _error_rates(correct1, correct5, output.size(0) // n_crops)


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules

def multistep_lr(base_lr: float, epoch: int, dataset: str, n_epochs: int) -> float:
    """Port of ``Trainer:learningRate`` (DenseNet): ImageNet /10 every 30 epochs; CIFAR /10 at
    50% and /100 at 75% of ``n_epochs`` (``epoch >= fraction*nEpochs``); other datasets constant."""
    decay = 0
    if dataset == "imagenet":
        decay = math.floor((epoch - 1) / 30)
    elif dataset in ("cifar10", "cifar100"):
        decay = 2 if epoch >= 0.75 * n_epochs else 1 if epoch >= 0.5 * n_epochs else 0
    return base_lr * math.pow(0.1, decay)


def cosine_lr(base_lr: float, epoch: int, iteration: int, n_batches: int, n_epochs: int) -> float:
    """Port of ``Trainer:learningRateCosine``: per-iteration cosine from ``base_lr`` to 0, with
    ``T_cur = ((epoch-1) mod nEpochs)*nBatches + iteration`` (1-based, so the first step is < LR)."""
    t_total = n_epochs * n_batches
    t_cur = ((epoch - 1) % n_epochs) * n_batches + iteration
    return 0.5 * base_lr * (1 + math.cos(math.pi * t_cur / t_total))


# ---------------------------------------------------------------------------------------------
# Trainer

def _fresh_optim_state(opt: Any) -> dict[str, Any]:
    """The table train.lua builds when there is no checkpoint."""
    return {"learningRate": opt.LR, "learningRateDecay": 0.0, "momentum": opt.momentum,
            "nesterov": True, "dampening": 0.0, "weightDecay": opt.weightDecay}


def sgd_state(opt: Any, optim_state: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``optim.sgd`` table training starts from (a loaded optimState, else train.lua's fresh one), checked
    before any model is built: Nesterov momentum needs a momentum and zero dampening (as optim.sgd asserts)."""
    state = dict(optim_state) if optim_state is not None else _fresh_optim_state(opt)
    momentum = float(state.get("momentum", 0.0))
    dampening = float(state.get("dampening", momentum))
    if bool(state.get("nesterov", False)) and (momentum <= 0 or dampening != 0):
        raise UserError(f"{NESTEROV_MESSAGE} (got momentum {lua_tostring(momentum)}, "
                        f"dampening {lua_tostring(dampening)}); use -momentum > 0")
    return state


class Trainer:
    """Port of ``resnet.Trainer`` (train.lua): SGD training and validation epochs with Lua logs.

    ``optim_state`` is a Lua ``optim.sgd`` table (e.g. a loaded ``optimState_<n>.t7``); as in Lua its
    momentum, weight decay, Nesterov and dampening replace the flags and its ``dfdx`` restores the
    momentum buffers. The model must already be on its device and dtype; batches follow the model.
    """

    def __init__(self, model: nn.Module, criterion: nn.Module, opt: Any,
                 optim_state: Mapping[str, Any] | None = None):
        self.model = model
        self.criterion = criterion
        self.opt = opt
        self.params = list(model.parameters())  # getParameters() order
        state = sgd_state(opt, optim_state)

        self.current_lr = float(state.get("learningRate", 1e-3))
        self.lr_decay = float(state.get("learningRateDecay", 0.0))
        self.momentum = float(state.get("momentum", 0.0))
        self.dampening = float(state.get("dampening", self.momentum))
        self.nesterov = bool(state.get("nesterov", False))
        self.weight_decay = float(state.get("weightDecay", 0.0))
        self.eval_counter: int | None = (int(state["evalCounter"]) if "evalCounter" in state
                                         else None)
        # A model without parameters can still be validated (getParameters() is empty in Lua).
        self.optimizer = torch.optim.SGD(
            self.params or [torch.zeros(0, requires_grad=True)], lr=self.current_lr,
            momentum=self.momentum, dampening=self.dampening, nesterov=self.nesterov,
            weight_decay=self.weight_decay)
        if self.momentum != 0 and state.get("dfdx") is not None:
            self._restore_momentum(state["dfdx"])
        self.scaler: torch.amp.GradScaler | None = None
        self.started = time.perf_counter()  # the run's clock, for the progress lines
        apply_backend_flags(opt)

    # -- optimiser state ---------------------------------------------------------------------

    def _restore_momentum(self, dfdx: torch.Tensor) -> None:
        flat = torch.as_tensor(dfdx).reshape(-1)
        total = sum(p.numel() for p in self.params)
        if flat.numel() != total:
            raise UserError(f"optimState dfdx has {flat.numel()} elements but the model has {total} "
                            f"parameters: the optimState belongs to another model configuration")
        offset = 0
        for p in self.params:
            chunk = flat[offset:offset + p.numel()].view_as(p)
            self.optimizer.state[p]["momentum_buffer"] = chunk.to(p.device, p.dtype).clone()
            offset += p.numel()

    def optim_state_lua(self) -> dict[str, Any]:
        """The Lua ``optim.sgd`` state table: config fields, ``evalCounter`` and ``dfdx`` (momentum
        buffers flattened in parameter order, on the CPU) once a step has been taken."""
        state: dict[str, Any] = {
            "learningRate": self.current_lr, "learningRateDecay": self.lr_decay,
            "momentum": self.momentum, "nesterov": self.nesterov, "dampening": self.dampening,
            "weightDecay": self.weight_decay,
        }
        if self.eval_counter is not None:
            state["evalCounter"] = self.eval_counter
        buffers = [self.optimizer.state.get(p, {}).get("momentum_buffer") for p in self.params]
        if any(b is not None for b in buffers):
            state["dfdx"] = torch.cat([
                (b if b is not None else torch.zeros_like(p)).detach().reshape(-1).cpu()
                for b, p in zip(buffers, self.params)])
        return state

    # -- learning rate -------------------------------------------------------------------------

    def learning_rate(self, epoch: int, iteration: int | None = None,
                      n_batches: int | None = None) -> float:
        """LR for ``epoch`` (1-based) under ``-lrShape``: multistep per epoch, cosine per iteration
        (needs ``iteration``, 1-based, and ``n_batches``); any other shape keeps the current LR."""
        opt = self.opt
        if opt.lrShape == "multistep":
            return multistep_lr(opt.LR, epoch, opt.dataset, opt.nEpochs)
        if opt.lrShape == "cosine":
            if iteration is None or n_batches is None:
                raise ValueError("the cosine schedule needs iteration and n_batches")
            return cosine_lr(opt.LR, epoch, iteration, n_batches, opt.nEpochs)
        return self.current_lr

    # -- helpers -------------------------------------------------------------------------------

    def _placement(self) -> tuple[torch.device, torch.dtype]:
        device, dtype = torch.device("cpu"), torch.float32
        for p in self.params:
            device = p.device
            if p.is_floating_point():
                return device, p.dtype
        return device, dtype

    def _amp(self) -> bool:
        return getattr(self.opt, "precision", "single") == "half"

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if not self._amp():
            return contextlib.nullcontext()
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        return torch.autocast(device.type, dtype=dtype)

    @staticmethod
    def _split(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, Mapping):
            return batch["input"], batch["target"]
        input, target = batch
        return input, target

    def _copy_inputs(self, batch: Any, device: torch.device, dtype: torch.dtype
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Port of ``Trainer:copyInputs``: the batch on the model's device, input in its dtype."""
        input, target = self._split(batch)
        input = input.to(device, dtype if input.is_floating_point() else None, non_blocking=True)
        target = target.to(device, torch.long, non_blocking=True)
        return input, target

    def _step(self, loss: torch.Tensor, device: torch.device) -> None:
        """Backward and one ``optim.sgd`` step (zeroGradParameters, backward, sgd)."""
        counter = self.eval_counter or 0
        for group in self.optimizer.param_groups:
            group["lr"] = self.current_lr / (1 + counter * self.lr_decay)
        self.optimizer.zero_grad(set_to_none=True)
        if self._amp() and device.type == "cuda":
            if self.scaler is None:
                self.scaler = torch.amp.GradScaler("cuda")
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.eval_counter = counter + 1

    # -- epochs --------------------------------------------------------------------------------

    def train(self, epoch: int, dataloader: Iterable[Any]) -> tuple[float, float, float]:
        """Port of ``Trainer:train``: one epoch of SGD; returns sample-weighted (top1, top5, loss)."""
        opt = self.opt
        if opt.lrShape == "multistep":
            self.current_lr = self.learning_rate(epoch)
        size = len(dataloader)
        device, dtype = self._placement()
        world = distributed.world_size()
        top1_sum = top5_sum = loss_sum = 0.0
        n_samples = 0

        print("=> Training epoch # " + lua_tostring(epoch), flush=True)
        self.model.train()
        every = progress_interval(size)
        timer = data_timer = epoch_start = time.perf_counter()
        for n, batch in enumerate(dataloader, 1):
            kill_hook(epoch, f"batch{n}")  # tests only: $FBRESNET_TEST_KILL_BEFORE
            if opt.lrShape == "cosine":
                self.current_lr = self.learning_rate(epoch, n, size)
            data_time = time.perf_counter() - data_timer
            input, target = self._copy_inputs(batch, device, dtype)
            placeholder = bool(getattr(batch, "placeholder", False))
            saved = _snapshot_buffers(self.model) if placeholder else None

            with self._autocast(device):
                output = self.model(input)
                loss = self.criterion(output, target)

            if world == 1:
                self._step(loss, device)
                batch_size = output.size(0)
                stats = torch.cat((loss.detach().double().view(1),
                                   _correct_counts(output, target, 1).double()))
                loss_value, correct1, correct5 = stats.tolist()  # the one sync per iteration
            else:
                n_local = 0 if placeholder else output.size(0)
                stats = _global_counts(_correct_counts(output, target, 1), n_local, loss)
                # DDP averages gradients over ranks: weight this rank's mean loss by its share
                scale = (stats[3].clamp(min=1).reciprocal() * (n_local * world)).to(loss.dtype)
                self._step(loss * scale, device)
                if saved is not None:  # an idle replica's statistics do not move
                    _restore_buffers(saved)
                loss_total, correct1, correct5, n_global = stats.tolist()
                batch_size = int(n_global)
                loss_value = loss_total / max(n_global, 1)
            top1, top5 = _error_rates(correct1, correct5, max(batch_size, 1))
            top1_sum += top1 * batch_size
            top5_sum += top5 * batch_size
            loss_sum += loss_value * batch_size
            n_samples += batch_size

            now = time.perf_counter()
            print(format_train_line(epoch, n, size, now - timer, data_time, loss_value, top1, top5,
                                    self.current_lr), flush=True)
            if n % every == 0 and n < size:
                print(format_progress(epoch, int(opt.nEpochs), n, size, now - epoch_start,
                                      now - self.started), flush=True)
            timer = data_timer = time.perf_counter()

        return _mean(top1_sum, n_samples), _mean(top5_sum, n_samples), _mean(loss_sum, n_samples)

    def test(self, epoch: int, dataloader: Iterable[Any]) -> tuple[float, float]:
        """Port of ``Trainer:test``: one validation pass; returns sample-weighted (top1, top5).

        With ``-tenCrop`` a batch is ``(B*10, C, H, W)``, sample-major; no loss is computed.
        """
        opt = self.opt
        n_crops = 10 if getattr(opt, "tenCrop", False) else 1
        if n_crops > 1 and opt.batchSize < n_crops:
            raise UserError(f"-tenCrop needs -batchSize of at least 10, got {opt.batchSize}")
        size = len(dataloader)
        device, dtype = self._placement()
        world = distributed.world_size()
        top1_sum = top5_sum = 0.0
        n_samples = 0

        self.model.eval()
        timer = data_timer = time.perf_counter()
        with torch.no_grad():
            for n, batch in enumerate(dataloader, 1):
                data_time = time.perf_counter() - data_timer
                input, target = self._copy_inputs(batch, device, dtype)
                with self._autocast(device):
                    output = self.model(input)

                batch_size = output.size(0) // n_crops
                counts = _correct_counts(output, target, n_crops)
                if world == 1:
                    correct1, correct5 = counts.tolist()
                else:
                    n_local = 0 if getattr(batch, "placeholder", False) else batch_size
                    correct1, correct5, n_global = _global_counts(counts, n_local).tolist()
                    batch_size = int(n_global)
                top1, top5 = _error_rates(correct1, correct5, batch_size)
                top1_sum += top1 * batch_size
                top5_sum += top5 * batch_size
                n_samples += batch_size

                now = time.perf_counter()
                print(format_test_line(epoch, n, size, now - timer, data_time, top1,
                                       top1_sum / n_samples, top5, top5_sum / n_samples),
                      flush=True)
                timer = data_timer = time.perf_counter()
        self.model.train()

        top1, top5 = _mean(top1_sum, n_samples), _mean(top5_sum, n_samples)
        print(format_test_end(epoch, top1, top5), flush=True)
        return top1, top5


def _mean(total: float, count: int) -> float:
    return total / count if count else math.nan
