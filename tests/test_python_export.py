"""``convert --format python``: the framework (fbresnet_port/lua_nn/codegen.py) and the model cases.

The Lua model fixtures (DenseNets, ResNets) go through the generated ``model.py`` run in a fresh ``python -I`` in
another folder where fbresnet_port cannot be imported (tests/python_export.py), against Lua's results: evaluate
output (float32, float64), training-mode output and BatchNorm running statistics, gradients and one SGD step
(float64). The zoo_* groups are tested family by family in tests/test_python_export_<family>.py.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
import sys

import pytest
import torch
from click.testing import CliRunner

from conftest import MODEL_CASES, reference
from fbresnet_port import t7
from fbresnet_port.lua_nn import LuaModelError, from_lua, register, unregister
from fbresnet_port.lua_nn import codegen
from fbresnet_port.lua_nn.codegen import class_name_from_file, wrap
from python_export import check_imports, export, run_isolated
from zoo_fixtures import assert_close, manifest

# ---------------------------------------------------------------------------------------------- framework


def test_standalone_modules_import_only_torch_and_the_standard_library():
    package = importlib.import_module("fbresnet_port.lua_nn.standalone")
    allowed = {"torch", "__future__"} | set(sys.stdlib_module_names)
    modules = [m.name for m in pkgutil.iter_modules(package.__path__)]
    for name in modules:
        path = importlib.import_module(f"{package.__name__}.{name}").__file__
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] in allowed for a in node.names), f"{name}: {ast.dump(node)}"
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] in allowed, f"{name} imports {node.module}"
    codegen.standalone_library.cache_clear()
    library = codegen.standalone_library()  # raises if two modules define one name
    assert all(d.module.startswith("fbresnet_port.lua_nn.standalone.") for d in library.definitions.values())


def test_class_name_from_file():
    assert class_name_from_file("resnet-50.t7") == "Resnet50"
    assert class_name_from_file("/a/b/model_best.t7") == "ModelBest"
    assert class_name_from_file("2011_face.net") == "Lua2011Face"
    assert class_name_from_file("nin_imagenet.t7") == "NinImagenet"


def test_wrap_splits_long_calls_at_top_level_commas():
    line = "self.conv = nn.Conv2d(" + ", ".join(f"arg{i}=({i}, {i})" for i in range(12)) + ")"
    lines = wrap(line, "        ", width=60)
    assert lines[0] == "        self.conv = nn.Conv2d("
    assert lines[-1] == "        )"
    assert all(len(ln) <= 60 for ln in lines)
    # the pieces put back together are the original call
    joined = lines[0].strip() + " ".join(ln.strip() for ln in lines[1:-1]) + lines[-1].strip()
    assert joined.replace(" ", "") == line.replace(" ", "")


def test_temporaries_are_reused_once_dead():
    stmts = [("code", "x = f(input)"), ("code", "x1 = g(x)"), ("code", "x2 = h(x1)"), ("code", "x3 = x2 + x"),
             ("code", "x4 = k(x3)"), ("code", "return x4")]
    out = [t for _, t in codegen._reuse_names(stmts)]
    assert out == ["x = f(input)", "x1 = g(x)", "x1 = h(x1)", "x = x1 + x", "x = k(x)", "return x"]


def test_a_registered_class_is_refused_with_its_paths():
    lua = t7.load(reference("resnet_cifar10_d20_A", "model.t7"))

    @register("nn.MulConstant")
    def convert(obj):
        return torch.nn.Identity()

    try:
        model = from_lua(lua)
    finally:
        unregister("nn.MulConstant")
    with pytest.raises(LuaModelError) as err:
        codegen.generate_python(model, "ResNet20")
    text = str(err.value)
    assert "nn.MulConstant: 2 modules, at model.modules[5].modules[1].modules[1].modules[2].modules[2]" in text
    assert "register()" in text


# ---------------------------------------------------------------------------------------------- model cases

def _optim(case: str) -> dict:
    state = manifest_of(case)["optimState"]
    return dict(lr=state["learningRate"], momentum=state["momentum"], nesterov=bool(state["nesterov"]),
                weight_decay=state["weightDecay"])


def manifest_of(case: str) -> dict:
    import json
    return json.loads(reference(case, "manifest.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("case", MODEL_CASES)
def test_model_case_runs_as_plain_pytorch(case, tmp_path):
    files = set(manifest_of(case)["files"])
    load = lambda name: t7.load(reference(case, name))  # noqa: E731
    model = from_lua(load("model.t7"))
    out_dir = export(model, tmp_path / "out", class_name="Net")
    x = load("input.t7")
    jobs = [dict(input=x, dtype="float32", train=False), dict(input=x, dtype="float64", train=False)]
    if "output_train_f64.t7" in files:
        jobs.append(dict(input=x, dtype="float64", train=True,
                         grad_output=load("gradOutput.t7") if "gradOutput.t7" in files else None))
    if "params_after_step_f64.t7" in files:
        jobs.append(dict(input=x, dtype="float64", train=True, sgd=_optim(case), sgd_targets=load("targets.t7") - 1))
    results = run_isolated(out_dir, jobs, tmp_path / "run")
    assert results[0]["params"] == [tuple(p.shape) for p in model.parameters()]
    assert_close(results[0]["output"], load("output_eval.t7"), 1e-4, "output_eval (float32)")
    assert_close(results[1]["output"], load("output_eval_f64.t7"), 1e-6, "output_eval_f64")
    if "output_train_f64.t7" in files:
        train = results[2]
        assert_close(train["output"], load("output_train_f64.t7"), 1e-6, "output_train_f64")
        stats = load("running_stats_after_train_forward_f64.t7")
        assert_close(torch.cat([m for m, _ in train["running_stats"]]), stats["running_mean"], 1e-6, "running_mean")
        assert_close(torch.cat([v for _, v in train["running_stats"]]), stats["running_var"], 1e-6, "running_var")
        if "gradOutput.t7" in files:
            assert_close(train["grad_input"][0], load("gradInput_f64.t7"), 1e-6, "gradInput_f64")
            assert_close(train["grad_params"], load("gradParams_f64.t7"), 1e-6, "gradParams_f64")
    if "params_after_step_f64.t7" in files:
        step = results[-1]
        assert step["loss"] == pytest.approx(load("loss_f64.t7"), rel=1e-7)
        assert_close(step["params_after_step"], load("params_after_step_f64.t7"), 1e-6, "params after one SGD step")


def test_float64_model_keeps_its_type(tmp_path):
    model = from_lua(t7.load(reference("resnet_cifar10_d20_A", "model.t7"))).double()
    export(model, tmp_path, class_name="ResNet20")
    state = torch.load(tmp_path / "model.pth", weights_only=True)
    assert {v.dtype for k, v in state.items() if not k.endswith("num_batches_tracked")} == {torch.float64}
    assert "DTYPE = torch.float64" in (tmp_path / "model.py").read_text()


def test_convert_cli_writes_a_python_folder(tmp_path):
    from fbresnet_port.convert import main

    src = reference("preresnet_cifar10_d20", "model.t7")
    result = CliRunner().invoke(main, [str(src), str(tmp_path / "pre"), "--format", "python",
                                       "--class-name", "PreResNet20"])
    assert result.exit_code == 0, result.output
    assert "class PreResNet20" in result.output
    text = (tmp_path / "pre" / "model.py").read_text()
    assert "class PreResNet20(nn.Module):" in text and "def load(path: str | None = None)" in text
    assert "# modules[1]: cudnn.SpatialConvolution(3 -> 16, 3x3, 1,1, 1,1) without bias" in text
    check_imports(tmp_path / "pre" / "model.py")
    result = CliRunner().invoke(main, [str(src), str(tmp_path / "pre"), "--format", "python",
                                       "--class-name", "not valid"])
    assert result.exit_code == 1 and "not a valid Python class name" in result.output
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(main, [str(src), str(tmp_path / "file"), "--format", "python"])
    assert result.exit_code == 1 and "it is a file" in result.output


def test_class_name_of_a_needed_definition_is_refused_or_avoided(tmp_path):
    from fbresnet_port.lua_nn.codegen import ClassNameTaken, write_python

    model = from_lua(t7.load(reference("resnet_cifar10_d20_A", "model.t7")))
    with pytest.raises(ClassNameTaken, match="'MulConstant' is also the name of a definition"):
        write_python(model, tmp_path / "a", class_name="MulConstant")
    assert write_python(model, tmp_path / "b", source_name="mul-constant.t7").class_name == "MulConstantNet"
