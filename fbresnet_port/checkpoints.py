"""Checkpoints in the original layout (port of ``checkpoints.lua``).

Every epoch ``save`` writes, in ``-save``:

* ``model_<epoch>.t7``: the model as a Lua ``nn`` tree in float32 (what ``model:float():clearState()``
  gives), so the original Lua code can ``torch.load`` and run it;
* ``optimState_<epoch>.t7``: the ``optim.sgd`` state table (``learningRate``, ``momentum``,
  ``nesterov``, ``dampening``, ``weightDecay``, ``evalCounter``, ``dfdx``) with ``dfdx`` the momentum
  buffer in Lua's flat parameter order, stored as a CUDA tensor class as Lua's GPU runs did;
* ``latest.t7``: ``{epoch, modelFile, optimFile}``, written last, plus ``bestTop1``/``bestTop5`` so a
  resumed run knows its best model (the Lua code forgot it, PARITY §9 #11);
* ``model_best.t7`` when this epoch's top-1 error is the best so far.

Every file is written atomically (temp file + rename): an interrupted save never leaves a broken
``latest.t7``, and ``latest.t7`` only names files that are complete.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import t7
from .errors import UserError, unreadable_t7

# Lua tensor class of the optimiser's dfdx, by -precision (the original kept it on the GPU).
_DFDX_TYPENAME = {"single": "torch.CudaTensor", "double": "torch.CudaDoubleTensor",
                  "half": "torch.CudaTensor"}


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


def optim_state_to_lua(optim_state: dict, precision: str = "single") -> dict:
    """The ``optim.sgd`` table with ``dfdx`` as a 1-D CUDA-class tensor, as Lua wrote it."""
    table = {k: v for k, v in optim_state.items() if v is not None}
    dfdx = table.get("dfdx")
    if isinstance(dfdx, torch.Tensor):
        name = _DFDX_TYPENAME.get(precision, "torch.CudaTensor")
        dtype = torch.float64 if name == "torch.CudaDoubleTensor" else torch.float32
        table["dfdx"] = t7.as_typename(dfdx.detach().to("cpu", dtype).contiguous().view(-1), name)
    return table


def save(epoch: int, model: nn.Module, optim_state: dict, is_best: bool, opt: Any,
         best: tuple[float, float] | None = None) -> None:
    """Port of ``checkpoints.save``: model, optimiser state, ``latest.t7`` (and ``model_best.t7``)."""
    folder = Path(opt.save)
    folder.mkdir(parents=True, exist_ok=True)
    model_file, optim_file = f"model_{epoch}.t7", f"optimState_{epoch}.t7"
    lua_model = model_to_lua(model)
    t7.save(folder / model_file, lua_model)
    t7.save(folder / optim_file, optim_state_to_lua(optim_state, getattr(opt, "precision", "single")))
    info: dict[str, Any] = {"epoch": epoch, "modelFile": model_file, "optimFile": optim_file}
    if best is not None and all(math.isfinite(v) for v in best):
        info["bestTop1"], info["bestTop5"] = float(best[0]), float(best[1])
    t7.save(folder / "latest.t7", info)
    if is_best:
        t7.save(folder / "model_best.t7", lua_model)
