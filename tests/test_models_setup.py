"""models.setup / models.create / models.lua_weights against the Lua reference fixtures.

Every fixture model.t7 was written by the original Lua code; loading it through ``models.setup`` with the
fixture's own flags and ``-retrain`` must reproduce the Lua outputs, statistics and gradients.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from conftest import MODEL_CASES, reference
from fbresnet_port import opts, t7
from fbresnet_port.errors import UserError
import models
from models.lua_weights import LuaWeightsMismatch, load_lua_weights, lua_parameters


def manifest(case: str) -> dict:
    return json.loads(reference(case, "manifest.json").read_text())


def parse(flags, *extra) -> opts.Options:
    return opts.parse([str(f) for f in flags] + [str(e) for e in extra], check_dirs=False)


def load(case: str, name: str) -> torch.Tensor:
    return t7.load(reference(case, name))


def assert_close(actual: torch.Tensor, ref: torch.Tensor, rel: float, what: str) -> None:
    ref = ref.to(actual.dtype).reshape(actual.shape)
    err = (actual.detach() - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err <= rel * scale, f"{what}: max |diff| {err:.3g} > {rel} * max|ref| {scale:.3g}"


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


# ---------------------------------------------------------------------------------------------- fixtures

@pytest.mark.parametrize("case", MODEL_CASES)
def test_setup_retrain_reproduces_lua(case, capsys):
    info = manifest(case)
    files = set(info["files"])
    flags = info["flags"]
    path = reference(case, "model.t7")
    x = load(case, "input.t7")

    model, criterion = models.setup(parse(flags, "-retrain", path))
    out = capsys.readouterr().out
    assert f"=> Creating model from file: models/{info['opt']['netType']}.py" in out
    assert f"Loading model from file: {path}" in out
    assert "does not match" not in out  # imported into the native model, not the fallback
    assert isinstance(criterion, nn.CrossEntropyLoss)
    assert sum(p.numel() for p in model.parameters()) == info["param_count"]
    model.eval()
    with torch.no_grad():
        assert_close(model(x), load(case, "output_eval.t7"), 1e-4, "output_eval (float32)")

    model, _ = models.setup(parse(flags, "-retrain", path, "-precision", "double"))
    assert next(model.parameters()).dtype == torch.float64
    x = x.double()
    model.eval()
    with torch.no_grad():
        assert_close(model(x), load(case, "output_eval_f64.t7"), 1e-5, "output_eval_f64")
    if "output_train_f64.t7" not in files:
        return
    model.train()
    x.requires_grad_(True)
    y = model(x)
    assert_close(y, load(case, "output_train_f64.t7"), 1e-5, "output_train_f64")
    stats = load(case, "running_stats_after_train_forward_f64.t7")
    bns = batchnorms(model)
    assert len(bns) == info.get("num_batchnorm", len(bns))
    assert_close(torch.cat([b.running_mean for b in bns]), stats["running_mean"], 1e-5, "running_mean")
    assert_close(torch.cat([b.running_var for b in bns]), stats["running_var"], 1e-5, "running_var")
    if "gradOutput.t7" not in files:
        return
    y.backward(load(case, "gradOutput.t7").double())
    assert_close(x.grad, load(case, "gradInput_f64.t7"), 1e-5, "gradInput_f64")
    flat = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert_close(flat, load(case, "gradParams_f64.t7"), 1e-5, "gradParams_f64")


def test_criterion_matches_lua_loss():
    case = "resnet_cifar10_d20_A"
    model, criterion = models.setup(parse(manifest(case)["flags"], "-retrain", reference(case, "model.t7"),
                                          "-precision", "double"))
    model.train()
    targets = load(case, "targets.t7") - 1  # Lua class indices are 1-based
    loss = criterion(model(load(case, "input.t7").double()), targets)
    assert loss.item() == pytest.approx(load(case, "loss_f64.t7"), rel=1e-6)


# ---------------------------------------------------------------------------------------------- resume

def test_resume_from_lua_checkpoint(capsys):
    case = "resnet_cifar10_d20_A"
    ckpt_dir = reference(case, "checkpoint")
    latest = t7.load(ckpt_dir / "latest.t7")
    assert latest["modelFile"] == "model_1.t7"
    opt = parse(manifest(case)["flags"], "-resume", ckpt_dir)
    model, _ = models.setup(opt, {**latest})  # no model_path: <resume>/<modelFile>
    assert f"=> Resuming model from {os.path.join(str(ckpt_dir), 'model_1.t7')}" in capsys.readouterr().out
    flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
    assert_close(flat, load(case, "params_after_step_f64.t7"), 1e-5, "parameters after the Lua SGD step")
    # BN statistics come along too (PARITY §9 #9: the DenseNet copyModel skipped nn.SpatialBatchNormalization)
    saved = t7.load(ckpt_dir / "model_1.t7")
    saved_bn = saved.modules[1]  # the stem's nn.SpatialBatchNormalization
    assert torch.equal(model.bn1.running_mean, saved_bn.running_mean)
    assert torch.equal(model.bn1.running_var, saved_bn.running_var)
    assert not torch.equal(model.bn1.running_var, torch.ones(16))

    with pytest.raises(UserError, match="Saved model not found: .*model_9.t7"):
        models.setup(opt, {"epoch": 9, "modelFile": "model_9.t7", "optimFile": "optimState_9.t7"})


def test_reset_classifier_retrain_and_resume(tmp_path, capsys):
    case = "resnet_cifar10_d20_A"
    flags = manifest(case)["flags"] + ["-resetClassifier", "true", "-nClasses", 7]
    path = reference(case, "model.t7")
    model, _ = models.setup(parse(flags, "-retrain", path))
    assert " => Replacing classifier with 7-way classifier" in capsys.readouterr().out.splitlines()
    assert isinstance(model.fc, nn.Linear) and tuple(model.fc.weight.shape) == (7, 64)
    assert torch.all(model.fc.bias == 0)
    lua = t7.load(path)
    assert torch.equal(model.conv1.weight, lua.modules[0].weight)  # the rest came from the file
    with torch.no_grad():
        assert model.eval()(load(case, "input.t7")).shape == (4, 7)

    # a checkpoint of that run resumes (PARITY §9 #10: Lua failed copying 7-way weights into a 10-way net)
    lua_nn = pytest.importorskip("fbresnet_port.lua_nn")
    nn.init.uniform_(model.fc.bias)
    t7.save(tmp_path / "model_3.t7", lua_nn.to_lua(model))
    checkpoint = {"epoch": 3, "modelFile": "model_3.t7", "optimFile": "optimState_3.t7",
                  "model_path": str(tmp_path / "model_3.t7")}
    resumed, _ = models.setup(parse(flags, "-resume", tmp_path), checkpoint)
    out = capsys.readouterr().out
    assert "Replacing classifier" not in out and "does not match" not in out
    assert torch.equal(resumed.fc.bias, model.fc.bias) and torch.equal(resumed.fc.weight, model.fc.weight)


def test_reset_classifier_needs_linear_last():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    with pytest.raises(UserError, match="expected last layer to be fully connected"):
        models.replace_classifier(model, 5)
    model = nn.Sequential(nn.ReLU(), nn.Linear(4, 3).double())
    new = models.replace_classifier(model, 5)
    assert model[1] is new and new.weight.dtype == torch.float64 and tuple(new.weight.shape) == (5, 4)


def test_fresh_setup_prints_and_precision(capsys):
    model, criterion = models.setup(parse(["-netType", "preresnet", "-dataset", "cifar100", "-depth", 20,
                                           "-precision", "double"]))
    assert capsys.readouterr().out.splitlines() == ["=> Creating model from file: models/preresnet.py",
                                                    " | ResNet-20 CIFAR-100"]
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert isinstance(criterion, nn.CrossEntropyLoss)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 32, 32, dtype=torch.float64)).shape == (1, 100)


# ---------------------------------------------------------------------------------------------- errors, fallback

def test_unknown_net_type_lists_model_files():
    with pytest.raises(UserError) as err:
        models.create(opts.default_options(netType="mynet"))
    message = str(err.value)
    assert "models/mynet.py" in message and "create_model(opt)" in message
    assert "preresnet" in message and "resnet" in message and "lua_weights" not in message
    assert {"resnet", "preresnet"} <= set(models.available())


def test_missing_or_wrong_retrain_file(tmp_path):
    flags = manifest("resnet_cifar10_d20_A")["flags"]
    missing = tmp_path / "nope.t7"
    with pytest.raises(UserError, match=f"^File not found: {missing}$"):
        models.setup(parse(flags, "-retrain", missing))
    latest = reference("resnet_cifar10_d20_A", "checkpoint", "latest.t7")
    with pytest.raises(UserError, match="does not contain a Lua nn model"):
        models.setup(parse(flags, "-retrain", latest))


@pytest.mark.parametrize("case,flags", [
    ("zoo_spatial", ["-netType", "resnet", "-dataset", "cifar10", "-depth", 20]),
    # same 59 tensors with the same shapes as pre-activation ResNet-20, but BN/ReLU sit elsewhere
    ("resnet_cifar10_d20_A", ["-netType", "preresnet", "-dataset", "cifar10", "-depth", 20]),
])
def test_non_matching_file_falls_back_to_converted_model(case, flags, capsys):
    pytest.importorskip("fbresnet_port.lua_nn")
    path = reference(case, "model.t7")
    model, _ = models.setup(parse(flags, "-retrain", path))
    out = capsys.readouterr().out
    assert f"=> The network in {path} does not match the flags" in out
    assert "using the network as saved in the file instead" in out
    model.eval()
    with torch.no_grad():
        assert_close(model(load(case, "input.t7")), load(case, "output_eval.t7"), 1e-4, "converted model")


def test_load_lua_weights_mismatch_messages():
    lua = t7.load(reference("resnet_cifar10_d20_A", "model.t7"))
    assert len(lua_parameters(lua)) == 59
    deeper = models.create(opts.default_options(netType="resnet", dataset="cifar10", depth=32))
    with pytest.raises(LuaWeightsMismatch, match="Lua model has 59 parameter tensors.*flags has 95"):
        load_lua_weights(deeper, lua)
    wider = models.create(opts.default_options(netType="resnet", dataset="cifar100", depth=20))
    before = wider.conv1.weight.clone()
    with pytest.raises(LuaWeightsMismatch, match=r"parameter 58 of 59: Lua module 9 \(nn.Linear\) .weight has "
                                                 r"shape 10x64, native 'fc.weight' has shape 100x64"):
        load_lua_weights(wider, lua)
    assert torch.equal(wider.conv1.weight, before)  # nothing copied


def test_load_lua_weights_old_batchnorm_layout():
    # pre-2016 nn: running_std = 1/sqrt(var + eps) instead of running_var (one BN already has running_var)
    lua = t7.load(reference("t7-format", "old_bn.t7"))
    native = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4, eps=1e-3),
                           nn.Flatten(), nn.Linear(100, 6), nn.BatchNorm1d(6)).eval()
    load_lua_weights(native, lua)
    with torch.no_grad():
        out = native(load("t7-format", "old_bn_input.t7"))
    assert_close(out, load("t7-format", "old_bn_output.t7"), 1e-4, "old BatchNorm layout")
