"""``convert --format python`` for the containers, shape and parameter-free classes (containers.py, shapes.py,
simple.py and their standalone code): the generated file, run in a fresh ``python -I`` process where
fbresnet_port cannot be imported, gives the Lua fixtures' outputs (zoo_tables, zoo_dropout_eval, zoo_spatial:
float32 1e-4, float64 1e-6; zoo_spatial also gradInput_f64/gradParams_f64), and hand-computed values for what
the fixtures lack (Dropout v1 in training, DepthConcat's padding, tables of unknown length, DenseNet's
DenseConnectLayerCustom); a class converted by a registered function is refused naming it.
"""
from __future__ import annotations

import pytest
import torch

from fbresnet_port import t7
from fbresnet_port.lua_nn import LuaModelError, from_lua, lua_module, register, unregister
from fbresnet_port.lua_nn.codegen import generate_python
from python_export import export, run_isolated
from zoo_fixtures import assert_close, assert_tree_close, lua_file

L = t7.LuaList


@pytest.mark.parametrize("group", ["zoo_tables", "zoo_dropout_eval", "zoo_spatial"])
def test_fixture_through_generated_python(group, tmp_path):
    """Evaluation outputs (float32, float64); zoo_spatial also the training-mode float64 output, gradInput and
    flat parameter gradient for the stored gradOutput (the fixture's gradients are Lua's training-mode ones)."""
    model = from_lua(lua_file(group, "model.t7"))
    out_dir = export(model, tmp_path / "out", class_name="Zoo")
    x = lua_file(group, "input.t7")
    has_grads = group == "zoo_spatial"
    jobs = [dict(input=x, dtype="float32", train=False), dict(input=x, dtype="float64", train=False)]
    if has_grads:
        jobs.append(dict(input=x, dtype="float64", train=True, grad_output=lua_file(group, "gradOutput.t7")))
    results = run_isolated(out_dir, jobs, tmp_path / "run")
    eval32, eval64 = results[:2]
    assert eval64["params"] == [tuple(p.shape) for p in model.parameters()]
    assert_tree_close(eval32["output"], lua_file(group, "output_eval.t7"), 1e-4, f"{group} output_eval")
    assert_tree_close(eval64["output"], lua_file(group, "output_eval_f64.t7"), 1e-6, f"{group} output_eval_f64")
    if has_grads:
        train64 = results[2]
        assert_close(train64["output"], lua_file(group, "output_train_f64.t7"), 1e-6, f"{group} output_train_f64")
        assert_close(train64["grad_input"][0], lua_file(group, "gradInput_f64.t7"), 1e-6, f"{group} gradInput_f64")
        assert_close(train64["grad_params"], lua_file(group, "gradParams_f64.t7").double(), 1e-6,
                     f"{group} gradParams_f64")


def _seq(*mods: t7.TorchObject) -> t7.TorchObject:
    return lua_module("nn.Sequential", modules=L(mods))


def test_tables_dropout_and_depth_concat_hand_computed(tmp_path):
    """One model through the generated file: Dropout v1 (training: no scaling; p = 0.5 keeps ~half the units at
    their value), DepthConcat (a 1x1 pooling output zero-padded to 3x3 around its centre), SplitTable -> tables of
    unknown length -> CAddTable/SelectTable(-1)/NarrowTable/JoinTable."""
    pool = lua_module("nn.SpatialMaxPooling", kW=3, kH=3, dW=1, dH=1, padW=0, padH=0)
    depth = lua_module("nn.DepthConcat", dimension=2, modules=L([lua_module("nn.Identity"), pool]))
    first = _seq(lua_module("nn.NarrowTable", offset=1, length=1),
                 lua_module("nn.JoinTable", dimension=1, nInputDims=2))
    branches = lua_module("nn.ConcatTable", modules=L([lua_module("nn.CAddTable"),
                                                       lua_module("nn.SelectTable", index=-1), first]))
    # N x 2 x 3 x 3 -> {N x 3 x 3, N x 3 x 3} -> {sum, last, first} -> N x 9 x 3
    tables = _seq(lua_module("nn.SplitTable", dimension=2), branches, lua_module("nn.JoinTable", dimension=2))
    model = from_lua(_seq(depth, tables))
    drop = from_lua(lua_module("nn.Dropout", p=0.5, v2=False))
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    out_dir = export(model, tmp_path / "tables", class_name="Tables")
    drop_dir = export(drop, tmp_path / "drop", class_name="Drop")
    (res,) = run_isolated(out_dir, [dict(input=x, dtype="float64")], tmp_path / "run1")
    plane = x[0, 0].double()
    padded = torch.zeros(3, 3, dtype=torch.float64)
    padded[1, 1] = plane.max()  # the 3x3 pooling's one output, centred
    expected = torch.cat([plane + padded, padded, plane], 0).reshape(1, 9, 3)
    assert torch.equal(res["output"], expected)
    ones = torch.ones(1000)
    train, evaluate = run_isolated(drop_dir, [dict(input=ones, dtype="float64", train=True),
                                             dict(input=ones, dtype="float64", train=False)], tmp_path / "run2")
    kept = train["output"]
    assert set(kept.unique().tolist()) <= {0.0, 1.0} and 400 < kept.sum() < 600  # v1: not rescaled
    assert torch.equal(evaluate["output"], torch.full((1000,), 0.5, dtype=torch.float64))  # v1: times 1 - p


def test_generated_forward_is_straight_line_code_for_known_tables():
    model = from_lua(_seq(lua_module("nn.ConcatTable", modules=L([lua_module("nn.ReLU"), lua_module("nn.Tanh"),
                                                                   lua_module("nn.Sigmoid")])),
                          lua_module("nn.NarrowTable", offset=2, length=2), lua_module("nn.CSubTable")))
    source = generate_python(model, "Net").source
    forward = source[source.index("    def forward"):source.index("\n\n\ndef load")]
    assert forward.splitlines()[1:] == [
        "        x = self.relu1_1(input)",
        "        x = self.tanh1_2(input)",
        "        x1 = self.sigmoid1_3(input)",
        "        x = x - x1",
        "        return x",
    ]  # the ReLU's output is computed (as in Lua) and dropped by the NarrowTable
    assert "self.tanh1_2 = nn.Tanh()" in source and "self.sigmoid1_3 = nn.Sigmoid()" in source


def test_dense_connect_layer_through_generated_python(tmp_path):
    """DenseNet -optMemory 3: DenseConnectLayerCustom{net1, net2} twice, then JoinTable(2)."""
    def relu_sum() -> tuple[t7.TorchObject, t7.TorchObject]:  # net2 gives one plane: the sum of the planes
        return lua_module("nn.ReLU"), lua_module("nn.Sum", dimension=2, squeeze=False)

    layers = [lua_module("nn.DenseConnectLayerCustom", net1=a, net2=b, modules=L([a, b]))
              for a, b in (relu_sum(), relu_sum())]
    model = from_lua(_seq(*layers, lua_module("nn.JoinTable", dimension=2)))
    x = torch.tensor([1.0, -2.0]).reshape(1, 2, 1, 1)
    out_dir = export(model, tmp_path / "out", class_name="Dense")
    (res,) = run_isolated(out_dir, [dict(input=x, dtype="float64")], tmp_path / "run")
    # layer 1: relu(1) + relu(-2) = 1; layer 2: relu(1) + relu(-2) + relu(1) = 2
    assert res["output"].flatten().tolist() == [1.0, -2.0, 1.0, 2.0]
    assert torch.equal(model(x).double(), res["output"])


def test_a_registered_class_is_refused_naming_it():
    register("my.Scale")(lambda obj: torch.nn.Identity())
    try:
        model = from_lua(_seq(lua_module("nn.ReLU"), lua_module("my.Scale")))
        with pytest.raises(LuaModelError) as err:
            generate_python(model, "Net")
        assert "my.Scale: 1 module, at model.modules[2]" in str(err.value)
        assert err.value.unsupported == {"my.Scale": ["model.modules[2]"]}
    finally:
        unregister("my.Scale")


def test_every_core_class_generates_the_runtime_maths():
    """A chain holding every parameter-free class of simple.py and shapes.py: the generated module (run here from
    its source) computes what the converted one does, in evaluation mode, outputs and input gradients."""
    from fbresnet_port.lua_nn.codegen import check_generated

    m = lua_module
    pool = dict(kW=3, kH=2, dW=2, dH=1, padW=1, padH=1)
    image = [m("nn.SpatialZeroPadding", pad_l=1, pad_r=-1, pad_t=2, pad_b=0),
             m("nn.SpatialReflectionPadding", pad_l=2, pad_r=1, pad_t=1, pad_b=2),
             m("nn.SpatialReplicationPadding", pad_l=1, pad_r=1, pad_t=0, pad_b=1),
             m("nn.SpatialMaxPooling", ceil_mode=True, **pool),
             m("nn.SpatialDilatedMaxPooling", dilationW=2, dilationH=1, **pool),
             m("nn.SpatialUpSamplingNearest", scale_factor=2), m("nn.ShaveImage", size=1),
             m("nn.SpatialAveragePooling", count_include_pad=False, divide=True, ceil_mode=True, **pool),
             m("nn.SpatialAveragePooling", count_include_pad=True, divide=False, **pool),
             m("nn.SpatialUpSamplingBilinear", owidth=9, oheight=7),
             m("nn.SpatialCrossMapLRN", size=3, alpha=0.01, beta=0.75, k=2),
             m("nn.SpatialAdaptiveMaxPooling", W=5, H=4), m("nn.SpatialAdaptiveAveragePooling", W=4, H=3),
             m("nn.TotalVariation", strength=0.5),
             m("nn.Threshold", threshold=0.1, val=-1.0), m("nn.LeakyReLU", negval=0.2), m("nn.ELU", alpha=0.5),
             m("nn.HardTanh", min_val=-0.5, max_val=2), m("nn.Clamp", min_val=-3, max_val=3),
             m("nn.SoftPlus", beta=2, threshold=5), m("nn.ReLU6"), m("cudnn.ClippedReLU", ceiling=4),
             m("nn.Abs"), m("nn.AddConstant", constant_scalar=0.5), m("nn.Sqrt"), m("nn.Square"), m("nn.Exp"),
             m("nn.Log"), m("nn.Power", pow=3), m("nn.Tanh"), m("nn.Sigmoid"), m("nn.MulConstant", constant_scalar=3),
             m("nn.Dropout", p=0.3, v2=False), m("nn.SpatialDropout", p=0.2), m("nn.SpatialSoftMax"),
             m("cudnn.SpatialLogSoftMax"), m("nn.Copy"), m("nn.Contiguous"), m("nn.Identity")]
    shapes = [m("nn.Transpose", permutations=L([L([2, 4]), L([3, 4])])),
              m("nn.Narrow", dimension=-1, index=2, length=-1), m("nn.Select", dimension=2, index=-1),
              m("nn.Unsqueeze", pos=1, numInputDims=2), m("nn.Squeeze", dim=1, numInputDims=3),
              m("nn.Padding", dim=1, pad=-2, nInputDim=2, value=0.25, index=2),
              m("nn.Reshape", size=L([5, 2]), batchMode=None), m("nn.View", size=L([-1]), numInputDims=2),
              m("nn.Normalize", p=3), m("cudnn.SoftMax"),
              _seq(m("nn.ConcatTable", modules=L([m("nn.Sum", dimension=2, sizeAverage=False, squeeze=True),
                                                  m("nn.Mean", dimension=-1, squeeze=True),
                                                  m("nn.Max", dimension=2), m("nn.Min", dimension=2)])),
                   m("nn.FlattenTable"), m("nn.JoinTable", dimension=1)),
              m("nn.SoftMin"), m("nn.LogSoftMax")]
    model = from_lua(_seq(*image, *shapes)).double().eval()
    built = check_generated(generate_python(model, "Net"), model).eval()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 6, 7, dtype=torch.float64) + 0.1
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = model(xa), built(xb)
    assert ya.shape == yb.shape and torch.allclose(ya, yb, rtol=0, atol=1e-12)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert torch.allclose(xa.grad, xb.grad, rtol=0, atol=1e-12)
