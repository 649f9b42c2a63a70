"""``python -m fbresnet_port.convert``: Lua model -> PyTorch file -> rebuilt module (Lua fixtures as ground truth)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from conftest import MODEL_CASES, REPO_ROOT, ZOO_CASES, reference
from fbresnet_port import t7
from fbresnet_port.convert import decode_tree, encode_tree, load_converted, main, save_converted
from fbresnet_port.lua_nn import from_lua
from zoo_fixtures import case_names, leaves, lua_file

# Every Lua model fixture: the image models, the single-case zoo folders and each case of the zoo groups.
ROUND_TRIP_CASES = MODEL_CASES + ZOO_CASES + [f"{group}/{case}" for group in ("zoo_graph", "zoo_legacy", "zoo_rnn",
                                                                           "zoo_text") for case in case_names(group)]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fbresnet_port.convert", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_convert_then_load_reproduces_lua_output(tmp_path):
    out = tmp_path / "om4.pt"
    result = CliRunner().invoke(main, [str(reference("densenet_cifar10_d100_k12_bc_om4", "model.t7")), str(out)])
    assert result.exit_code == 0, result.output
    assert "nn.DenseConnectLayerCustom" in result.output and "48" in result.output
    assert "parameters: 769162" in result.output  # manifest param_count
    data = torch.load(out, weights_only=True)
    assert data["format"] == "fbresnet-port/lua-model" and data["version"] == 2
    model = load_converted(out).eval()
    x = t7.load(reference("densenet_cifar10_d100_k12_bc_om4", "input.t7"))[:2]
    expected = t7.load(reference("densenet_cifar10_d100_k12_bc_om4", "output_eval.t7"))[:2]
    with torch.no_grad():
        y = model(x)
    assert (y - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_convert_zoo_keeps_tables_and_sizes(tmp_path):
    out = tmp_path / "zoo.pt"
    result = CliRunner().invoke(main, [str(reference("zoo_tables", "model.t7")), str(out)])
    assert result.exit_code == 0, result.output
    model = load_converted(out).eval()
    with torch.no_grad():
        y = model(t7.load(reference("zoo_tables", "input.t7")))
    expected = t7.load(reference("zoo_tables", "output_eval.t7"))
    assert (y - expected).abs().max() <= 1e-4 * expected.abs().max()


@pytest.mark.parametrize("make_input, message", [
    (lambda d: d / "missing.t7", "no such file"),
    (lambda d: reference("t7-format", "truncated_and_corrupt", "trunc_last_byte.t7"), "runs past the end"),
    (lambda d: reference("t7-format", "ascii_cifar_batch.t7"), "which holds no nn module"),
])
def test_bad_input_is_a_one_line_error(tmp_path, make_input, message):
    result = CliRunner().invoke(main, [str(make_input(tmp_path)), str(tmp_path / "out.pt")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert not (tmp_path / "out.pt").exists()


def test_unknown_class_is_an_error_without_traceback(tmp_path):
    tree = t7.TorchObject("nn.Sequential", {"modules": t7.LuaList([t7.TorchObject("nn.NoSuchLayer", {})])})
    t7.save(tmp_path / "bad.t7", tree)
    proc = _run(str(tmp_path / "bad.t7"), str(tmp_path / "out.pt"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "unsupported Lua module nn.NoSuchLayer at model.modules[1]" in proc.stderr


def test_state_dict_format_stores_each_parameter_once_and_keeps_float64(tmp_path):
    from fbresnet_port.convert import save_converted
    from fbresnet_port.lua_nn import load_lua_model
    src = reference("resnet_cifar10_d20_A", "model.t7")
    model = load_lua_model(src).double()
    out = tmp_path / "double.pt"
    save_converted(model, out)
    data = torch.load(out, weights_only=True)
    n_state = sum(t.numel() for t in data["state_dict"].values() if t.is_floating_point())
    in_tree = []

    def walk(v):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            in_tree.append(v.numel())
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(data["lua_tree"])
    assert sum(in_tree) < 0.01 * n_state  # the tree keeps shapes only: 272,474 parameters are in the state dict once
    rebuilt = load_converted(out).eval()
    assert all(p.dtype == torch.float64 for p in rebuilt.parameters())
    x = t7.load(reference("resnet_cifar10_d20_A", "input.t7")).double()
    expected = t7.load(reference("resnet_cifar10_d20_A", "output_eval_f64.t7"))
    with torch.no_grad():
        y = rebuilt(x)
    assert (y - expected.double()).abs().max() <= 1e-6 * expected.abs().max()
    assert out.stat().st_size < 1.3 * 4 * 2 * 272474 + 200_000  # float64 once, not float64 + a float32 copy


def test_torchscript_runs_in_a_fresh_process_without_this_package(tmp_path):
    case = "preresnet_cifar10_d20"
    out = tmp_path / "net.ts"
    proc = _run(str(reference(case, "model.t7")), str(out), "--format", "torchscript", "--input-shape", "2,3,32,32")
    assert proc.returncode == 0, proc.stderr
    x = t7.load(reference(case, "input.t7"))
    torch.save(x, tmp_path / "x.pt")
    script = ("import sys, torch; sys.modules['fbresnet_port'] = None; m = torch.jit.load(sys.argv[1]); "
              "torch.save(m(torch.load(sys.argv[2])), sys.argv[3])")
    run = subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    y = torch.load(tmp_path / "y.pt")
    expected = t7.load(reference(case, "output_eval.t7"))
    assert y.shape == expected.shape  # a batch size other than the traced one
    assert (y - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_torchscript_with_a_wrong_input_shape_is_a_clear_error(tmp_path):
    proc = _run(str(reference("preresnet_cifar10_d20", "model.t7")), str(tmp_path / "n.ts"), "--format",
                "torchscript", "--input-shape", "1,1,32,32")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "cannot trace the model on an input of shape 1x1x32x32" in proc.stderr and "--input-shape" in proc.stderr
    assert not (tmp_path / "n.ts").exists()
    proc = _run(str(reference("preresnet_cifar10_d20", "model.t7")), str(tmp_path / "n.ts"), "--format",
                "torchscript", "--input-shape", "a,b")
    assert proc.returncode == 1 and "--input-shape 'a,b'" in proc.stderr


def test_torchvision_format_exports_a_lua_model(tmp_path):
    """The Lua-made DenseNet-121 fixture as a torchvision densenet121 state dict: same float64 outputs."""
    import torchvision
    case = "densenet_imagenet_d121_k32"
    out = tmp_path / "densenet121.pth"
    result = CliRunner().invoke(main, [str(reference(case, "model.t7")), str(out), "--format", "torchvision",
                                       "--arch", "densenet121"])
    assert result.exit_code == 0, result.output
    tv = torchvision.models.densenet121(weights=None)
    tv.load_state_dict(torch.load(out, weights_only=True))
    tv = tv.double().eval()
    x = t7.load(reference(case, "input.t7")).double()
    expected = t7.load(reference(case, "output_eval_f64.t7"))
    with torch.no_grad():
        y = tv(x)
    assert (y - expected.double()).abs().max() <= 1e-6 * expected.abs().max()
    result = CliRunner().invoke(main, [str(reference(case, "model.t7")), str(out), "--format", "torchvision"])
    assert result.exit_code == 1 and "needs --arch" in result.stderr


def _lua_outputs(model: torch.nn.Module, case: str) -> list[torch.Tensor]:
    """The model's evaluate output on the fixture input (nn.Recursor takes one step per call, as in Lua)."""
    x = lua_file(*case.split("/"), "input.t7")
    with torch.no_grad():
        return list(leaves([model(t) for t in x] if case.endswith("/recursor") else model(x)))


@pytest.mark.parametrize("case", ROUND_TRIP_CASES)
def test_default_format_round_trips_every_fixture(case, tmp_path):
    """save_converted -> load_converted gives Lua's evaluate output (1e-4 of each output's largest magnitude),
    for every family: nngraph graphs (nodes referenced from several places), rnn, legacy, text, tables."""
    out = tmp_path / "m.pt"
    save_converted(from_lua(lua_file(*case.split("/"), "model.t7")), out)
    got = _lua_outputs(load_converted(out).eval(), case)
    ref = list(leaves(lua_file(*case.split("/"), "output_eval.t7")))
    assert len(got) == len(ref)
    for a, e in zip(got, ref):
        assert a.shape == e.shape and (a - e).abs().max() <= 1e-4 * e.abs().max(), case


@pytest.mark.parametrize("case", case_names("zoo_graph"))
def test_cli_output_of_a_graph_loads_back(case, tmp_path):
    """The nngraph fixtures through the CLI (version 1 could not load them back: its tree copied shared nodes)."""
    out = tmp_path / "graph.pt"
    result = CliRunner().invoke(main, [str(reference("zoo_graph", case, "model.t7")), str(out)])
    assert result.exit_code == 0, result.output
    got = _lua_outputs(load_converted(out).eval(), f"zoo_graph/{case}")
    for a, e in zip(got, leaves(lua_file("zoo_graph", case, "output_eval.t7"))):
        assert (a - e).abs().max() <= 1e-4 * e.abs().max()


def test_encoded_tree_keeps_shared_and_cyclic_references_and_non_string_keys(tmp_path):
    shared = t7.LuaTable({"x": 1.5})
    node = t7.TorchObject("nngraph.Node", {"data": shared})
    cycle = t7.LuaTable({"name": "loop"})
    cycle["self"] = cycle
    tensor = torch.arange(3.0)
    tree = t7.LuaTable({"a": shared, "b": t7.LuaList([shared, node]), 7: "seven", 2.5: "half",
                        t7.BoolKey(True): "yes", t7.IdKey(node): 3, "cycle": cycle, "t1": tensor, "t2": tensor,
                        "storage": t7.Storage(torch.tensor([2, 3]), "torch.LongStorage"), "big": 2**60})
    torch.save(encode_tree(tree), tmp_path / "tree.pt")
    back = decode_tree(torch.load(tmp_path / "tree.pt", weights_only=True))
    assert back["a"] is back["b"][0] and back["b"][1]["data"] is back["a"] and back["a"] == {"x": 1.5}
    assert back[7] == "seven" and back[2.5] == "half" and back[t7.BoolKey(True)] == "yes"
    assert back[t7.IdKey(back["b"][1])] == 3  # a table key is the same object as the value elsewhere
    assert back["cycle"]["self"] is back["cycle"] and back["t1"] is back["t2"] and torch.equal(back["t1"], tensor)
    assert back["storage"].typename == "torch.LongStorage" and back["storage"].tensor.tolist() == [2, 3]
    assert back["big"] == 2**60 and isinstance(back["b"], t7.LuaList) and back["b"][1].typename == "nngraph.Node"
    assert t7.dumps(back) == t7.dumps(tree)  # the same Lua file as the original tree


def test_version_1_files_still_load():
    """tests/data/converted_v1_zoo_spatial.pt was written by the version-1 converter (before the object table)."""
    path = REPO_ROOT / "tests" / "data" / "converted_v1_zoo_spatial.pt"
    assert torch.load(path, weights_only=True)["version"] == 1
    got = _lua_outputs(load_converted(path).eval(), "zoo_spatial")
    expected = lua_file("zoo_spatial", "output_eval.t7")
    assert (got[0] - expected).abs().max() <= 1e-4 * expected.abs().max()
