"""``python -m fbresnet_port.convert MODEL.t7 OUT --format export|onnx``: a converted Lua model as a
``torch.export`` program (``.pt2``) or an ONNX file, both with a dynamic batch dimension.

Both trace the model in evaluate mode (BatchNorm running statistics, no Dropout) on an example input of
``--input-shape`` whose first size, the batch, stays free in the file. The ``.pt2`` file runs without this
package: ``torch.export.load(path).module()(x)``. The ONNX file is made by ``torch.onnx.export(..., dynamo=True)``
from the same program and checked with onnxruntime (installed by ``pip install .[onnx]``) against the PyTorch
output, on the example batch and on a batch of another size, before it is written.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from typing import Any, Iterator

import torch
from torch import nn

from . import fileio
from .errors import UserError

# --input-dtype choices: the model's floating dtype (default), or an index dtype for LookupTable-style inputs.
INPUT_DTYPES = ("model", "float32", "float64", "int64", "int32")
ONNX_RTOL = 1e-4  # onnxruntime vs PyTorch: max difference allowed, relative to the largest output magnitude


def example_input(model: nn.Module, shape: tuple[int, ...], dtype: str = "model", min_batch: int = 1
                  ) -> torch.Tensor:
    """A reproducible input of ``shape`` (the batch at least ``min_batch``): normal values for a floating dtype
    (``'model'``: the model's), ones for an index dtype (index 1 is valid for any Lua LookupTable)."""
    from .convert import model_dtype
    shape = (max(shape[0], min_batch),) + tuple(shape[1:])
    dt = model_dtype(model) if dtype == "model" else getattr(torch, dtype)
    if not dt.is_floating_point:
        return torch.ones(shape, dtype=dt)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dt)


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """Silence torch's export logging (graph dumps on failures) and torch.onnx's progress prints."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _failing_module(model: nn.Module, run: Any) -> str:
    """The innermost module that was running when ``run()`` raised (``'the model'`` when none was):
    ``run`` is repeated with hooks that keep the stack of running modules."""
    stack: list[str] = []

    def leave(*_: Any) -> None:  # a forward hook that returned a value would replace the module's output
        stack.pop()

    handles = []
    for name, m in model.named_modules():
        where = getattr(m, "lua_path", None) or (f"model.{name}" if name else "")  # the Lua path, when converted
        label = getattr(m, "lua_typename", type(m).__name__) + (f" at {where}" if where else " (the model)")
        handles.append(m.register_forward_pre_hook(lambda *_, label=label: stack.append(label)))
        handles.append(m.register_forward_hook(leave))
    try:
        run()
    except Exception:  # noqa: BLE001 - the same failure again, now with the module stack
        pass
    finally:
        for h in handles:
            h.remove()
    return stack[-1] if stack else "the model"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def export_program(model: nn.Module, input_shape: tuple[int, ...], input_dtype: str = "model"
                   ) -> tuple[torch.export.ExportedProgram, torch.Tensor]:
    """``torch.export`` of ``model`` in evaluate mode with a dynamic batch (dimension 0), and the example input
    it was traced with (a batch of 1 is traced as 2: torch.export specialises sizes 0 and 1).

    A model torch.export cannot trace is a :class:`UserError` naming the module that failed."""
    model = model.eval()
    example = example_input(model, input_shape, input_dtype, min_batch=2)
    batch = torch.export.Dim("batch", min=1)

    def run() -> torch.export.ExportedProgram:
        with torch.no_grad(), _quiet_torch():
            return torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False)

    try:
        return run(), example
    except Exception as err:  # noqa: BLE001 - explained to the user in one line
        shape = "x".join(map(str, input_shape))
        hint = " (give the shape the network takes with --input-shape, and --input-dtype int64 for indices)"
        if isinstance(err, UserError):
            why = str(err) + hint  # the module's own input check (a wrong --input-shape)
        elif "Constraints violated (batch)" in str(err):
            why = ("the model fixes the size of dimension 0, so it cannot be a dynamic batch dimension "
                   "(give --input-shape with the batch first)")
        elif "data-dependent" in str(err) or "DataDependent" in type(err).__name__:
            why = (f"{_failing_module(model, run)} branches on the values of a tensor (data-dependent control "
                   f"flow), which torch.export cannot trace: {_first_line(err)}")
        else:
            why = f"{_failing_module(model, run)}: {_first_line(err)}{hint}"
        raise UserError(f"cannot export the model with torch.export on an input of shape {shape} "
                        f"({str(example.dtype).replace('torch.', '')}, batch dynamic): {why}") from None


def _outputs(y: Any) -> list[torch.Tensor]:
    """The tensors of a (possibly nested) output, in order."""
    if isinstance(y, (list, tuple)):
        return [t for v in y for t in _outputs(v)]
    return [y]


def _max_diff(got: list[Any], expected: list[torch.Tensor]) -> tuple[float, float]:
    """Max |got - expected| over all outputs and the largest |expected|."""
    diff = max(((torch.as_tensor(g).double() - e.double()).abs().max().item() for g, e in zip(got, expected)
                if e.numel()), default=0.0)
    scale = max((e.double().abs().max().item() for e in expected if e.numel()), default=0.0)
    return diff, scale


def save_export(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...],
                input_dtype: str = "model") -> str:
    """Write ``model`` as a ``torch.export`` program (``torch.export.save``); returns a line on the check: the
    loaded program's output on the example batch against the module's."""
    program, example = export_program(model, input_shape, input_dtype)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    with torch.no_grad():
        expected = _outputs(model(example))
        buf.seek(0)
        got = _outputs(torch.export.load(buf).module()(example))
    diff, scale = _max_diff(got, expected)
    fileio.atomic_write_bytes(path, buf.getvalue())
    return (f"torch.export program, batch dimension dynamic; its output on a batch of {example.shape[0]} differs "
            f"from the module's by at most {diff:.3g} (max |output| {scale:.3g})")


def save_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...],
              input_dtype: str = "model") -> str:
    """Write ``model`` as ONNX through ``torch.onnx.export(dynamo=True)``, after checking it with onnxruntime on
    the example batch and a batch one larger; returns a line with the largest difference to PyTorch's outputs.

    Missing onnx packages, a failed export and an onnxruntime result off by more than :data:`ONNX_RTOL` (relative
    to the largest output) are :class:`UserError`; nothing is written then."""
    try:
        import onnx  # noqa: F401 - torch.onnx needs it
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise UserError(f"--format onnx needs the onnx, onnxscript and onnxruntime packages ({err.name} is missing): "
                        f"pip install 'fbresnet-port[onnx]' (or pip install onnx onnxscript onnxruntime)") from None
    program, example = export_program(model, input_shape, input_dtype)
    batch = torch.export.Dim("batch", min=1)
    try:
        with torch.no_grad(), _quiet_torch():
            onnx_program = torch.onnx.export(program, (example,), dynamo=True, input_names=["input"],
                                             dynamic_shapes=({0: batch},))
        data = onnx_program.model_proto.SerializeToString()
    except Exception as err:  # noqa: BLE001 - explained to the user in one line
        raise UserError(f"cannot convert the exported model to ONNX: {_first_line(err)}") from None
    try:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        worst, scale = 0.0, 0.0
        other = example_input(model, (example.shape[0] + 1,) + tuple(example.shape[1:]), input_dtype)
        for x in (example, other):
            with torch.no_grad():
                expected = _outputs(model(x))
            diff, s = _max_diff(session.run(None, {name: x.numpy()}), expected)
            worst, scale = max(worst, diff), max(scale, s)
    except Exception as err:  # noqa: BLE001 - e.g. a kernel onnxruntime lacks (float64 Conv)
        raise UserError(f"onnxruntime cannot run the exported model: {_first_line(err)}") from None
    if worst > ONNX_RTOL * max(scale, 1e-30):
        raise UserError(f"onnxruntime's outputs differ from PyTorch's by {worst:.3g} (max |output| {scale:.3g}, "
                        f"more than {ONNX_RTOL:g} of it); the ONNX file was not written")
    fileio.atomic_write_bytes(path, data)
    opset = next((o.version for o in onnx_program.model_proto.opset_import if o.domain in ("", "ai.onnx")), "?")
    return (f"ONNX opset {opset}, batch dimension dynamic; onnxruntime "
            f"checked on batches of {example.shape[0]} and {other.shape[0]}: max |difference| to PyTorch {worst:.3g} "
            f"(max |output| {scale:.3g})")
