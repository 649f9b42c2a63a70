"""``convert --format python`` for the families of lua_nn.layers, lua_nn.legacy and lua_nn.charrnn: the generated
file, run in a fresh ``python -I`` without this package, computes what Lua (zoo_legacy) and the runtime modules
compute."""
from __future__ import annotations

import pytest
import torch

from fbresnet_port import t7
from fbresnet_port.lua_nn import from_lua, lua_module
from python_export import check_zoo_case, export, run_isolated

LEGACY = ["conv_map_subsampling", "contrastive_norm", "volumetric"]


@pytest.mark.parametrize("case", LEGACY)
def test_zoo_legacy_through_python_export(case, tmp_path):
    source = check_zoo_case("zoo_legacy", case, tmp_path)
    assert "import fbresnet_port" not in source


# ----------------------------------------------------------------------------------------------
# Classes the fixtures lack: the generated file against the runtime modules (same Lua semantics)
# ----------------------------------------------------------------------------------------------


def _normalisation_model() -> t7.TorchObject:
    """Full convolution (adj), THNN and cudnn BatchNorm, PReLU, both InstanceNormalization variants (the
    fast-neural-style one with a saved inner BN for a batch of one), a convolution, a Linear without bias."""
    g = torch.Generator().manual_seed(11)

    def r(*shape, low=-1.0, high=1.0):
        return (torch.rand(*shape, generator=g, dtype=torch.float64) * (high - low) + low)

    def bn(typename, n):
        return lua_module(typename, running_mean=r(n), running_var=r(n, low=0.5, high=1.5), weight=r(n), bias=r(n),
                          eps=1e-5, momentum=0.1)
    mods = [
        lua_module("nn.SpatialFullConvolution", nInputPlane=3, nOutputPlane=4, kW=3, kH=3, dW=2, dH=2, padW=1,
                   padH=1, adjW=1, adjH=0, weight=r(3, 4, 3, 3), bias=r(4)),
        bn("nn.SpatialBatchNormalization", 4),
        lua_module("nn.PReLU", nOutputPlane=4, weight=r(4)),
        lua_module("nn.InstanceNormalization", nOutput=4, eps=1e-5, prev_N=1, weight=r(4), bias=r(4),
                   bn=lua_module("nn.SpatialBatchNormalization", running_mean=r(4), running_var=r(4, low=0.5),
                                 eps=1e-5, momentum=0.1, weight=torch.ones(4), bias=torch.zeros(4))),
        bn("cudnn.SpatialBatchNormalization", 4),
        lua_module("nn.InstanceNormalization", nOutput=4, eps=1e-5, momentum=0.0, affine=True, prev_batch_size=-1,
                   running_mean=r(4), running_var=r(4, low=0.5), weight=r(4), bias=r(4)),
        lua_module("nn.SpatialConvolution", nInputPlane=4, nOutputPlane=2, kW=2, kH=2, dW=1, dH=1, padW=0, padH=0,
                   weight=r(2, 4, 2, 2), bias=r(2)),
        lua_module("nn.View", size=t7.Storage(torch.tensor([-1], dtype=torch.int64), "torch.LongStorage"),
                   numElements=2 * 6 * 9, numInputDims=3),
        lua_module("nn.Linear", weight=r(3, 108)),
        bn("nn.BatchNormalization", 3),
    ]
    return lua_module("nn.Sequential", modules=t7.LuaList(mods))


def _runtime(obj: t7.TorchObject, options: dict, x: torch.Tensor, train: bool, grad: torch.Tensor | None):
    model = from_lua(obj, options=options).double().train(train)
    x = x.clone().requires_grad_(grad is not None)
    out = model(x)
    if grad is None:
        return out.detach(), None, None
    out.backward(grad)
    return out.detach(), x.grad, torch.cat([p.grad.reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("options", [{}, {"batch_of_one_running_stats": True}], ids=["default", "later-torch"])
def test_normalisation_layers_through_python_export(options, tmp_path):
    obj = _normalisation_model()
    out_dir = export(from_lua(obj, options=options), tmp_path / "out")
    g = torch.Generator().manual_seed(12)
    x1 = torch.randn(1, 3, 4, 5, generator=g, dtype=torch.float64)
    x2 = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    grad1 = torch.randn(1, 3, generator=g, dtype=torch.float64)
    jobs = [dict(input=x1, dtype="float64", train=True, grad_output=grad1),
            dict(input=x2, dtype="float64", train=True),
            dict(input=x2, dtype="float64", train=False)]
    results = run_isolated(out_dir, jobs, tmp_path / "run")
    for job, res in zip(jobs, results):
        out, grad_in, grad_params = _runtime(obj, options, job["input"], job["train"], job.get("grad_output"))
        assert (res["output"] - out).abs().max() < 1e-12
        if grad_in is not None:
            assert (res["grad_input"][0] - grad_in).abs().max() < 1e-12
            assert (res["grad_params"] - grad_params).abs().max() < 1e-12
    source = (out_dir / "model.py").read_text()
    assert "class InstanceNormalization(nn.Module)" in source and "class ParametricReLU(nn.Module)" in source
    assert "nn.ConvTranspose2d(3, 4, (3, 3), stride=(2, 2), padding=(1, 1), output_padding=(0, 1)" in source
    assert "nn.Linear(108, 3, bias=False)" in source


def test_onehot_through_python_export(tmp_path):
    """char-rnn's OneHot with a saved _eye that is not the identity (its rows are Lua's output), then a Linear."""
    eye = torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 5.0]])
    obj = lua_module("nn.Sequential", modules=t7.LuaList([
        lua_module("OneHot", outputSize=3, _eye=eye),
        lua_module("nn.Linear", weight=torch.arange(6.0).reshape(2, 3), bias=torch.tensor([0.5, -0.5]))]))
    model = from_lua(obj)
    out_dir = export(model, tmp_path / "out")
    x = torch.tensor([4.0, 1.0, 2.0])
    (res,) = run_isolated(out_dir, [dict(input=x, dtype="float32", train=False)], tmp_path / "run")
    assert torch.equal(res["output"], model(x))
    assert torch.equal(res["output"], eye[[3, 0, 1]] @ torch.arange(6.0).reshape(2, 3).t() + torch.tensor([0.5, -0.5]))


def test_nnx_spatial_normalization_through_python_export(tmp_path):
    """nnx's SpatialNormalization (torch/demos' face detector) with its fixed estimator kernels: no parameters."""
    from test_lua_realmodels import nnx_normalization

    torch.manual_seed(13)
    obj = nnx_normalization(2, torch.rand(3, 3).double() + 0.1)
    model = from_lua(obj).double()
    out_dir = export(model, tmp_path / "out")
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64)
    (res,) = run_isolated(out_dir, [dict(input=x, dtype="float64", train=False)], tmp_path / "run")
    assert res["params"] == []
    # the generated DTYPE follows the parameters (none here), so the fixed kernels come back as float32
    assert (res["output"] - model(x)).abs().max() < 1e-6
