"""``python -m fbresnet_port.convert --format export|onnx``: the Lua image models (every densenet_*, resnet_* and
preresnet_* fixture) as torch.export programs and ONNX files give Lua's evaluate outputs, on batch sizes other
than the one they were traced with (the batch dimension is dynamic).

The ONNX tests need onnx, onnxscript and onnxruntime (``pip install .[onnx]``; the test requirements install
them): without them they skip, naming the package, and fail under CI (``CI=true``).
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from conftest import IN_CI, MODEL_CASES, REPO_ROOT, reference
from fbresnet_port.convert import main
from zoo_fixtures import lua_file


def _traced_shape(case: str) -> str:
    """An --input-shape whose batch (3) differs from the fixture's (4 for CIFAR, 2 for ImageNet)."""
    size = 224 if "imagenet" in case else 32
    return f"3,3,{size},{size}"


def _convert(case: str, out, *args: str) -> str:
    result = CliRunner().invoke(main, [str(reference(case, "model.t7")), str(out), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _assert_lua_output(y: torch.Tensor, case: str, batch: int) -> None:
    expected = lua_file(case, "output_eval.t7")[:batch]
    assert y.shape == expected.shape
    assert (y - expected).abs().max() <= 1e-4 * expected.abs().max()


def _require_onnx() -> None:
    for name in ("onnx", "onnxscript", "onnxruntime"):
        if importlib.util.find_spec(name) is None:
            msg = f"{name} is not installed (pip install .[onnx], or pip install -r requirements.txt)"
            if IN_CI:
                pytest.fail(msg)
            pytest.skip(msg)


@pytest.mark.parametrize("case", MODEL_CASES)
def test_export_program_gives_lua_outputs_for_other_batch_sizes(case, tmp_path):
    out = tmp_path / "model.pt2"
    output = _convert(case, out, "--format", "export", "--input-shape", _traced_shape(case))
    assert "batch dimension dynamic" in output and "differs from the module's by at most 0 " in output
    program = torch.export.load(out).module()
    x = lua_file(case, "input.t7")
    with torch.no_grad():
        _assert_lua_output(program(x), case, x.shape[0])  # the fixture's batch, not the traced 3
        _assert_lua_output(program(x[:1]), case, 1)


def test_export_program_runs_in_a_fresh_process_without_this_package(tmp_path):
    case = "resnet_cifar10_d20_A"
    _convert(case, tmp_path / "net.pt2", "--format", "export", "--input-shape", "1,3,32,32")  # traced as a batch of 2
    torch.save(lua_file(case, "input.t7"), tmp_path / "x.pt")
    script = ("import sys, torch; sys.modules['fbresnet_port'] = None; m = torch.export.load(sys.argv[1]).module(); "
              "torch.save(m(torch.load(sys.argv[2])), sys.argv[3])")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "net.pt2"), str(tmp_path / "x.pt"),
                          str(tmp_path / "y.pt")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    _assert_lua_output(torch.load(tmp_path / "y.pt"), case, 4)


@pytest.mark.parametrize("case", MODEL_CASES)
def test_onnx_file_gives_lua_outputs_in_onnxruntime_for_other_batch_sizes(case, tmp_path):
    _require_onnx()
    import onnxruntime
    out = tmp_path / "model.onnx"
    output = _convert(case, out, "--format", "onnx", "--input-shape", _traced_shape(case))
    assert "onnxruntime checked on batches of 3 and 4: max |difference| to PyTorch" in output
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape[0] == "batch" and inp.shape[1:] == [int(v) for v in _traced_shape(case).split(",")[1:]]
    x = lua_file(case, "input.t7")
    for batch in (x.shape[0], 1):
        (y,) = session.run(None, {inp.name: x[:batch].numpy()})
        _assert_lua_output(torch.from_numpy(y), case, batch)


def _error(*args: str) -> str:
    """The stderr of a convert run that must fail with one ``error:`` line and no traceback."""
    proc = subprocess.run([sys.executable, "-m", "fbresnet_port.convert", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr


def test_wrong_input_shape_names_the_module(tmp_path):
    err = _error(str(reference("zoo_tables", "model.t7")), str(tmp_path / "m.pt2"), "--format", "export",
                 "--input-shape", "1,3,32,32")
    assert "cannot export the model with torch.export on an input of shape 1x3x32x32 (float32" in err
    assert "nn.Narrow at model.modules[1].modules[2].modules[1]" in err and "--input-shape" in err
    assert not (tmp_path / "m.pt2").exists()


def test_model_whose_first_dimension_is_not_a_batch_is_a_clear_error(tmp_path):
    """zoo_tables (Narrow, Select, JoinTable ... over its 3x4x5x7 input) fixes the size of dimension 0."""
    err = _error(str(reference("zoo_tables", "model.t7")), str(tmp_path / "m.pt2"), "--format", "export",
                 "--input-shape", "3,4,5,7")
    assert "the model fixes the size of dimension 0, so it cannot be a dynamic batch dimension" in err


def test_data_dependent_module_is_named(tmp_path):
    """nn.LookupTable checks its indices' range (a branch on tensor values): torch.export cannot trace it."""
    case = reference("zoo_text", "temporal_1d", "model.t7")
    err = _error(str(case), str(tmp_path / "m.onnx"), "--format", "onnx", "--input-shape", "2,10",
                 "--input-dtype", "int64")
    assert "on an input of shape 2x10 (int64, batch dynamic): nn.LookupTable at model.modules[1] branches on the values" in err
    err = _error(str(case), str(tmp_path / "m.pt2"), "--format", "export", "--input-shape", "2,3,10")
    assert "nn.LookupTable at model.modules[1]: input must be a vector or matrix of indices" in err  # its own check


def test_onnx_without_the_onnx_packages_says_what_to_install(tmp_path):
    script = ("import sys; sys.modules['onnxruntime'] = None; from fbresnet_port.convert import main; "
              "main(sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", script, str(reference("resnet_cifar10_d20_A", "model.t7")),
                           str(tmp_path / "m.onnx"), "--format", "onnx", "--input-shape", "1,3,32,32"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: --format onnx needs the onnx, onnxscript and onnxruntime packages (onnxruntime is missing)" in \
        proc.stderr and "pip install 'fbresnet-port[onnx]'" in proc.stderr
    assert not (tmp_path / "m.onnx").exists()
