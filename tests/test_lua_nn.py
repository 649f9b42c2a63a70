"""fbresnet_port.lua_nn against the original Lua Torch results (../shared/reference).

Every model case: float32 evaluate output; in float64 (``model.double()``) the evaluate and training
outputs, the running statistics after one training forward, gradInput and the flat gradient (Lua
``model:parameters()`` order) of ``backward(gradOutput)``. Plus the t7-format nn fixtures, error
messages, ``print(model)``, and the export back to Lua through t7.save / t7.load.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import MODEL_CASES, REFERENCE_DIR, ZOO_CASES, reference
from fbresnet_port import t7
from fbresnet_port.lua_nn import LuaModelError, from_lua, load_lua_model, lua_module, to_lua
from zoo_fixtures import assert_close, lua_file

CASES = MODEL_CASES + ZOO_CASES


def manifest(case: str) -> dict:
    return json.loads(reference(case, "manifest.json").read_text())


def ref_file(case: str, name: str):
    """The reference tensor ``name`` of ``case`` if its manifest lists it, else None."""
    if name not in manifest(case)["files"]:
        return None
    return lua_file(case, name)


def bn_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("case", CASES)
def test_eval_output_float32(case):
    model = from_lua(lua_file(case, "model.t7"))
    model.eval()
    with torch.no_grad():
        out = model(lua_file(case, "input.t7"))
    assert out.dtype == torch.float32
    assert_close(out, lua_file(case, "output_eval.t7"), 1e-4, f"{case} output_eval")


@pytest.mark.parametrize("case", MODEL_CASES)
def test_parameter_count_matches_manifest(case):
    info = manifest(case)
    model = from_lua(lua_file(case, "model.t7"))
    assert sum(p.numel() for p in model.parameters()) == info["param_count"]
    if "num_batchnorm" in info:
        assert len(bn_modules(model)) == info["num_batchnorm"]


@pytest.mark.parametrize("case", CASES)
def test_float64_against_lua_double(case):
    """Evaluate / training outputs, running statistics, gradInput, gradParams in float64."""
    lua = lua_file(case, "model.t7")
    x = lua_file(case, "input.t7").double()

    model = from_lua(lua).double().eval()
    with torch.no_grad():
        assert_close(model(x), ref_file(case, "output_eval_f64.t7"), 1e-5, f"{case} output_eval_f64")

    out_train = ref_file(case, "output_train_f64.t7")
    if out_train is None:
        return  # Dropout cases: only evaluate mode is deterministic
    model = from_lua(lua).double().train()
    x.requires_grad_(True)
    out = model(x)
    assert_close(out.detach(), out_train, 1e-5, f"{case} output_train_f64")

    stats = ref_file(case, "running_stats_after_train_forward_f64.t7")
    if stats is not None:
        bns = bn_modules(model)
        assert_close(torch.cat([m.running_mean for m in bns]), stats["running_mean"], 1e-5, f"{case} running_mean")
        assert_close(torch.cat([m.running_var for m in bns]), stats["running_var"], 1e-5, f"{case} running_var")

    grad_out = ref_file(case, "gradOutput.t7")
    if grad_out is None:
        return
    out.backward(grad_out.double())
    assert_close(x.grad, ref_file(case, "gradInput_f64.t7"), 1e-5, f"{case} gradInput_f64")
    flat = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert_close(flat, ref_file(case, "gradParams_f64.t7"), 1e-5, f"{case} gradParams_f64")


def test_dense_connect_layer_custom_has_plain_densenet_parameter_layout():
    """optMemory 4 (nn.DenseConnectLayerCustom) and optMemory 2 (nn.Concat) list the same parameters."""
    om2 = from_lua(lua_file("densenet_cifar10_d100_k12_bc_om2", "model.t7"))
    om4 = from_lua(lua_file("densenet_cifar10_d100_k12_bc_om4", "model.t7"))
    assert any(getattr(m, "lua_typename", "") == "nn.DenseConnectLayerCustom" for m in om4.modules())
    assert [p.shape for p in om2.parameters()] == [p.shape for p in om4.parameters()]
    assert [m.num_features for m in bn_modules(om2)] == [m.num_features for m in bn_modules(om4)]


def test_dense_connect_layer_returns_table():
    om4 = from_lua(lua_file("densenet_cifar10_d100_k12_bc_om4", "model.t7")).eval()
    layer = om4[1]
    assert layer.lua_typename == "nn.DenseConnectLayerCustom"
    x = torch.randn(2, 24, 8, 8)
    out = layer(x)
    assert isinstance(out, list) and len(out) == 2 and out[0] is x and out[1].shape == (2, 12, 8, 8)
    out2 = om4[2](out)
    assert len(out2) == 3 and out2[2].shape == (2, 12, 8, 8)


# ----------------------------------------------------------------------------------------------
# t7-format nn fixtures
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["nn_model", "old_bn"])
def test_t7_format_models(name):
    model = load_lua_model(reference("t7-format", f"{name}.t7")).eval()
    with torch.no_grad():
        out = model(t7.load(reference("t7-format", f"{name}_input.t7")))
    assert_close(out, t7.load(reference("t7-format", f"{name}_output.t7")), 1e-4, name)


def test_old_bn_running_std_converted_only_when_present():
    lua = t7.load(reference("t7-format", "old_bn.t7"))
    model = from_lua(lua)
    bns = bn_modules(model)
    assert len(bns) == 3
    for lua_bn, bn in zip([m for m in lua.modules if "BatchNormalization" in m.typename], bns):
        if "running_std" in lua_bn:
            expected = lua_bn.running_std.double().pow(-2) - lua_bn.eps
        else:
            expected = lua_bn.running_var.double()
        assert torch.allclose(bn.running_var.double(), expected, rtol=1e-6)
        assert bn.eps == lua_bn.eps
    assert isinstance(bns[-1], nn.BatchNorm1d) and isinstance(bns[0], nn.BatchNorm2d)


def test_cuda_typed_linear_converts():
    root = t7.load(reference("t7-format", "cuda_types.t7"))
    lua_linear = root["linear"]
    model = from_lua(lua_linear)
    x = torch.tensor([0.5, -1.0, 2.0])
    expected = lua_linear.weight.double() @ x.double() + lua_linear.bias.double()
    assert_close(model(x), expected, 1e-6, "1-D input through nn.Linear")


# ----------------------------------------------------------------------------------------------
# Errors and printing
# ----------------------------------------------------------------------------------------------

def test_unknown_class_names_class_and_path():
    tree = lua_module("nn.Sequential", modules=t7.LuaList([
        lua_module("nn.Identity"),
        lua_module("nn.Sequential", modules=t7.LuaList([lua_module("nn.Identity"), lua_module("nn.Foo")])),
    ]))
    with pytest.raises(LuaModelError, match=r"unsupported Lua module nn\.Foo at model\.modules\[2\]\.modules\[2\]"):
        from_lua(tree)


def test_missing_field_is_reported_with_path():
    tree = lua_module("nn.Sequential", modules=t7.LuaList([lua_module("nn.Linear")]))
    with pytest.raises(LuaModelError, match=r"nn\.Linear at model\.modules\[1\].*weight"):
        from_lua(tree)


def test_print_model_reads_like_lua():
    text = str(load_lua_model(reference("t7-format", "nn_model.t7")))
    lines = text.splitlines()
    assert lines[0] == "nn.Sequential {"
    assert lines[1] == "  [input -> (1) -> (2) -> (3) -> (4) -> output]"
    assert "  (1): nn.SpatialConvolution(2 -> 3, 3x3, 1,1, 1,1)" in lines
    assert "  (2): nn.ReLU" in lines
    assert "  (3): nn.View(48)" in lines
    assert "  (4): nn.Linear(48 -> 5)" in lines
    assert lines[-1] == "}"
    resnet = str(load_lua_model(reference("resnet_cifar10_d20_A", "model.t7")))
    assert "nn.ConcatTable {" in resnet and "|`-> (1): nn.Sequential {" in resnet
    assert "cudnn.SpatialConvolution(3 -> 16, 3x3, 1,1, 1,1) without bias" in resnet
    assert "nn.SpatialBatchNormalization (4D) (16)" in resnet


def test_train_flag_and_types_follow_the_file():
    lua = t7.load(reference("densenet_cifar10_d40_k12_nobc_om2", "model.t7"))
    model = from_lua(lua)
    assert model.lua_typename == "nn.Sequential" and isinstance(model[0], nn.Conv2d)
    assert model[0].lua_typename == "cudnn.SpatialConvolution" and model[0].bias is None
    bn = bn_modules(model)[0]
    assert bn.lua_typename == "cudnn.SpatialBatchNormalization" and bn.momentum == 0.1 and bn.eps == 1e-5
    assert model.training == bool(lua.get("train", True))


# ----------------------------------------------------------------------------------------------
# Export to Lua
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["zoo_spatial", "zoo_tables", "zoo_dropout_eval", "resnet_cifar10_d20_A",
                                  "densenet_cifar10_d100_k12_bc_om4"])
def test_round_trip_through_lua_file(case, tmp_path):
    model = from_lua(lua_file(case, "model.t7")).eval()
    path = tmp_path / "exported.t7"
    t7.save(path, to_lua(model))
    again = load_lua_model(path).eval()
    assert [type(m) for m in again.modules()] == [type(m) for m in model.modules()]
    assert [m.lua_typename for m in again.modules()] == [m.lua_typename for m in model.modules()]
    x = lua_file(case, "input.t7")
    x = x[:1] if case.startswith("densenet") else x  # a batch of one is enough for the big model
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
    for b, c in zip(model.buffers(), again.buffers()):
        assert torch.equal(b, c)


def test_exported_fields_are_lua_checkpoint_layout():
    model = from_lua(lua_file("resnet_cifar10_d20_A", "model.t7"))
    tree = to_lua(model)
    conv = tree.modules[0]
    assert conv.typename == "cudnn.SpatialConvolution"
    assert (conv.nInputPlane, conv.nOutputPlane, conv.kW, conv.kH, conv.dW, conv.dH, conv.padW, conv.padH) == \
        (3, 16, 3, 3, 1, 1, 1, 1)
    assert "bias" not in conv and conv.weight.dtype == torch.float32
    assert torch.equal(conv.gradWeight, torch.zeros(16, 3, 3, 3))
    assert conv._type == "torch.FloatTensor" and isinstance(tree.modules, t7.LuaList)
    bn = tree.modules[1]
    assert bn.typename == "nn.SpatialBatchNormalization" and bn.version == 2
    assert {"running_mean", "running_var", "weight", "bias", "gradWeight", "gradBias", "eps", "momentum",
            "affine", "train"} <= set(bn.fields)


def test_standard_torch_modules_export_and_come_back(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(16, 5),
                        nn.BatchNorm1d(5), nn.Identity())
    with torch.no_grad():
        for bn in (net[1], net[8]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    net.eval()
    tree = to_lua(net)
    assert [m.typename for m in tree.modules] == [
        "cudnn.SpatialConvolution", "cudnn.SpatialBatchNormalization", "cudnn.ReLU", "nn.SpatialMaxPooling",
        "cudnn.SpatialAveragePooling", "nn.View", "nn.Dropout", "nn.Linear", "nn.BatchNormalization",
        "nn.Identity"]
    t7.save(tmp_path / "net.t7", tree)
    back = load_lua_model(tmp_path / "net.t7").eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert_close(back(x), net(x), 1e-6, "exported torch model")


def test_clones_sharing_weights_share_one_parameter(tmp_path):
    """Lua ``clone('weight', 'bias')`` (unrolled RNN steps): one storage in the file, one Parameter here,
    so a step updates both clones as in Lua; a copy with equal values but its own storage stays separate."""
    w, b = torch.randn(3, 3), torch.randn(3)

    def linear(weight, bias):
        return lua_module("nn.Linear", weight=weight, bias=bias, gradWeight=torch.zeros(3, 3), gradBias=torch.zeros(3))

    tree = lua_module("nn.Sequential", modules=t7.LuaList([
        linear(w, b), lua_module("nn.Tanh"), linear(w, b), lua_module("nn.Tanh"), linear(w.clone(), b.clone())]))
    t7.save(tmp_path / "clones.t7", tree)
    model = load_lua_model(tmp_path / "clones.t7")
    assert model[0].weight is model[2].weight and model[0].bias is model[2].bias
    assert model[4].weight is not model[0].weight
    assert len(list(model.parameters())) == 4
    x = torch.randn(2, 3)
    model(x).sum().backward()
    h1 = torch.tanh(x @ w.T + b)
    h2 = torch.tanh(h1 @ w.T + b)
    y = h2 @ w.T + b
    wl = w.clone().requires_grad_()  # the same net with the first two layers tied by hand
    h1 = torch.tanh(x @ wl.T + b)
    (torch.tanh(h1 @ wl.T + b) @ w.T + b).sum().backward()
    assert torch.allclose(model(x), y, atol=1e-6)
    assert torch.allclose(model[0].weight.grad, wl.grad, atol=1e-5)


def test_relu_inplace_overwrites_only_without_autograd():
    """cudnn.ReLU(true): in inference the input buffer is reused as Lua did; with autograd it is left alone."""
    relu = from_lua(lua_module("cudnn.ReLU", inplace=True))
    x = torch.tensor([-1.0, 0.5, -2.0, 3.0])
    y = relu(x.clone().requires_grad_())
    assert torch.equal(y.detach(), torch.tensor([0.0, 0.5, 0.0, 3.0]))
    with torch.no_grad():
        z = x.clone()
        out = relu(z)
    assert out.data_ptr() == z.data_ptr() and torch.equal(z, torch.tensor([0.0, 0.5, 0.0, 3.0]))
    keep = from_lua(lua_module("nn.ReLU", inplace=False))
    with torch.no_grad():
        w = x.clone()
        keep(w)
    assert torch.equal(w, x)
