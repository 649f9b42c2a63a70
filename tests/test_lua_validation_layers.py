"""Validation of the converters of lua_nn.layers, lua_nn.legacy and lua_nn.charrnn (issue #15): each invalid
field gives one LuaModelError naming the path, the class, the field, the value and what Lua expects; layouts
that Lua accepts keep converting; and the torch/nn batch-of-one option (BatchNormalization and both
nn.InstanceNormalization variants) against statistics computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from fbresnet_port import t7
from fbresnet_port.lua_nn import LuaForwardError, LuaModelError, from_lua, lua_module

EPS = 1e-5
LATER = {"batch_of_one_running_stats": True}


def seq(*mods: t7.TorchObject) -> t7.TorchObject:
    return lua_module("nn.Sequential", modules=t7.LuaList(mods))


def at2(obj: t7.TorchObject) -> t7.TorchObject:
    """``obj`` as ``model.modules[2]`` of a Sequential (after an Identity)."""
    return seq(lua_module("nn.Identity"), obj)


def conv(typename: str = "nn.SpatialConvolution", **fields) -> t7.TorchObject:
    base = dict(nInputPlane=3, nOutputPlane=4, kW=3, kH=2, dW=1, dH=1, padW=1, padH=0,
                weight=torch.randn(4, 3, 2, 3), bias=torch.randn(4))
    base.update(fields)
    return lua_module(typename, **{k: v for k, v in base.items() if v is not None})


def bn(typename: str = "nn.SpatialBatchNormalization", n: int = 4, **fields) -> t7.TorchObject:
    base = dict(running_mean=torch.randn(n).double(), running_var=torch.rand(n).double() + 0.5,
                weight=torch.randn(n).double(), bias=torch.randn(n).double(), eps=EPS, momentum=0.1)
    base.update(fields)
    return lua_module(typename, **{k: v for k, v in base.items() if v is not None})


def conv_map(**fields) -> t7.TorchObject:
    base = dict(connTable=torch.tensor([[1.0, 1.0], [2.0, 1.0], [2.0, 2.0]]), weight=torch.randn(3, 2, 2),
                bias=torch.randn(2), kW=2, kH=2, dW=1, dH=1, nInputPlane=2, nOutputPlane=2)
    base.update(fields)
    return lua_module("nn.SpatialConvolutionMap", **{k: v for k, v in base.items() if v is not None})


def volumetric(**fields) -> t7.TorchObject:
    base = dict(nInputPlane=2, nOutputPlane=3, kT=2, kW=3, kH=1, dT=1, dW=1, dH=1,
                weight=torch.randn(3, 2, 2, 1, 3), bias=torch.randn(3))
    base.update(fields)
    return lua_module("nn.VolumetricConvolution", **{k: v for k, v in base.items() if v is not None})


def fns_instance_norm(n: int = 3, **fields) -> t7.TorchObject:
    """fast-neural-style's nn.InstanceNormalization(n) (fields nOutput, eps, prev_N, weight, bias[, bn])."""
    base = dict(nOutput=n, eps=EPS, prev_N=-1, weight=torch.randn(n).double(), bias=torch.randn(n).double())
    base.update(fields)
    return lua_module("nn.InstanceNormalization", **{k: v for k, v in base.items() if v is not None})


def cyclegan_instance_norm(n: int = 3, affine: bool = True, **fields) -> t7.TorchObject:
    """CycleGAN's / texture_nets' nn.InstanceNormalization(n, eps, momentum, affine)."""
    base = dict(nOutput=n, eps=EPS, momentum=0.0, affine=affine, prev_batch_size=-1,
                running_mean=torch.randn(n).double(), running_var=torch.rand(n).double() + 0.5)
    if affine:
        base.update(weight=torch.randn(n).double(), bias=torch.randn(n).double())
    base.update(fields)
    return lua_module("nn.InstanceNormalization", **{k: v for k, v in base.items() if v is not None})


def inner_bn(mean: torch.Tensor, var: torch.Tensor, momentum: float = 0.1) -> t7.TorchObject:
    n = mean.numel()
    return lua_module("nn.SpatialBatchNormalization", running_mean=mean, running_var=var, eps=EPS,
                      momentum=momentum, weight=torch.ones(n), bias=torch.zeros(n))


def error_of(obj: t7.TorchObject) -> str:
    with pytest.raises(LuaModelError) as info:
        from_lua(obj)
    return str(info.value)


# ----------------------------------------------------------------------------------------------
# One error naming path, class, field, value and expectation
# ----------------------------------------------------------------------------------------------

P = "model.modules[2]"
INVALID = {
    "conv weight of another shape": (
        conv(weight=torch.randn(4, 3, 3, 2)),
        f"nn.SpatialConvolution at {P}: field 'weight' = a FloatTensor of size 4x3x3x2: should be of size "
        f"4x3x2x3 (nOutputPlane x nInputPlane x kH x kW) or 4x18 (its 2-D view)"),
    "dilated conv weight 2-D": (
        conv("nn.SpatialDilatedConvolution", weight=torch.randn(4, 18), dilationW=2, dilationH=1),
        f"nn.SpatialDilatedConvolution at {P}: field 'weight' = a FloatTensor of size 4x18: should be of size "
        f"4x3x2x3 (nOutputPlane x nInputPlane x kH x kW)"),
    "kernel NaN": (conv(kW=math.nan), f"nn.SpatialConvolution at {P}: field 'kW' = nan: should be an integer"),
    "kernel negative": (
        conv(kH=-2), f"nn.SpatialConvolution at {P}: field 'kH' = -2: should be an integer in [1, 2147483647]"),
    "kernel boolean": (conv(kW=True), f"nn.SpatialConvolution at {P}: field 'kW' = true: should be an integer"),
    "stride zero": (conv(dW=0), f"nn.SpatialConvolution at {P}: field 'dW' = 0: should be an integer in "
                                f"[1, 2147483647]"),
    "padding negative": (conv(padW=-1), f"nn.SpatialConvolution at {P}: field 'padW' = -1: should be an integer "
                                        f"in [0, 2147483647]"),
    "planes 2^40 (before any allocation)": (
        conv(nInputPlane=2 ** 40), f"nn.SpatialConvolution at {P}: field 'nInputPlane' = 1099511627776: should be "
                                   f"an integer in [1, 2147483647]"),
    "planes a string": (conv(nOutputPlane="4"),
                        f"nn.SpatialConvolution at {P}: field 'nOutputPlane' = '4': should be an integer"),
    "groups not dividing": (
        conv("cudnn.SpatialConvolution", groups=2, weight=torch.randn(4, 1, 2, 3)),
        f"cudnn.SpatialConvolution at {P}: field 'groups' = 2: should divide nInputPlane = 3 and nOutputPlane = 4"),
    "groups zero": (conv("cudnn.SpatialConvolution", groups=0),
                    f"cudnn.SpatialConvolution at {P}: field 'groups' = 0: should be an integer in [1, 2147483647]"),
    "integer weight": (
        conv(weight=torch.ones(4, 3, 2, 3, dtype=torch.int64)),
        f"nn.SpatialConvolution at {P}: field 'weight' = a LongTensor of size 4x3x2x3: should be a floating-point "
        f"tensor (Float/Double/Cuda), as Lua's float modules require"),
    "empty bias": (conv(bias=torch.zeros(0)), f"nn.SpatialConvolution at {P}: field 'bias' = an empty FloatTensor: "
                                              f"should be a non-empty tensor (nil when the module has none)"),
    "conv bias length": (conv(bias=torch.randn(3)), f"nn.SpatialConvolution at {P}: field 'bias' = a FloatTensor of "
                                                    f"size 3: should be of size 4 (nOutputPlane), or nil for none"),
    "full conv adj >= stride": (
        conv("nn.SpatialFullConvolution", dW=2, adjW=2, weight=torch.randn(3, 4, 2, 3)),
        f"nn.SpatialFullConvolution at {P}: field 'adjW' = 2: should be smaller than the stride dW = 2"),
    "full conv weight in conv layout": (
        conv("nn.SpatialFullConvolution", weight=torch.randn(4, 3, 2, 3)),
        f"nn.SpatialFullConvolution at {P}: field 'weight' = a FloatTensor of size 4x3x2x3: should be of size "
        f"3x4x2x3 (nInputPlane x nOutputPlane x kH x kW) or 3x24 (its 2-D view)"),
    "Linear bias of one element": (
        lua_module("nn.Linear", weight=torch.randn(5, 3), bias=torch.randn(1)),
        f"nn.Linear at {P}: field 'bias' = a FloatTensor of size 1: should be of size 5 "
        f"(outputSize = weight:size(1)), or nil for none"),
    "Linear weight (7.2e16, 0)": (
        lua_module("nn.Linear", weight=torch.empty(72_000_000_000_000_000, 0), bias=torch.randn(2)),
        f"nn.Linear at {P}: field 'weight' = an empty FloatTensor: should be a non-empty tensor"),
    "Linear weight 1-D": (lua_module("nn.Linear", weight=torch.randn(5)),
                          f"nn.Linear at {P}: field 'weight' = a FloatTensor of size 5: should be 2-dimensional"),
    "BN running_var length": (
        bn(running_var=torch.ones(3)),
        f"nn.SpatialBatchNormalization at {P}: field 'running_var' = a FloatTensor of size 3: should be of size 4 "
        f"(running_mean's length)"),
    "BN weight length": (
        bn(weight=torch.ones(5)),
        f"nn.SpatialBatchNormalization at {P}: field 'weight' = a FloatTensor of size 5: should be of size 4 "
        f"(running_mean's length), or nil for none"),
    "BN integer running_mean": (
        bn(running_mean=torch.zeros(4, dtype=torch.int64)),
        f"nn.SpatialBatchNormalization at {P}: field 'running_mean' = a LongTensor of size 4: should be a "
        f"floating-point tensor (Float/Double/Cuda), as Lua's float modules require"),
    "BN boolean running_var": (
        bn(running_var=torch.ones(4, dtype=torch.bool)),
        f"nn.SpatialBatchNormalization at {P}: field 'running_var' = a BoolTensor of size 4: should be a "
        f"floating-point tensor (Float/Double/Cuda), as Lua's float modules require"),
    "BN empty bias": (
        bn(bias=torch.zeros(0)),
        f"nn.SpatialBatchNormalization at {P}: field 'bias' = an empty FloatTensor: should be a non-empty tensor "
        f"(nil when the module has none)"),
    "BN eps infinite": (bn(eps=math.inf),
                        f"nn.SpatialBatchNormalization at {P}: field 'eps' = inf: should be a finite number"),
    "PReLU weight length": (
        lua_module("nn.PReLU", nOutputPlane=3, weight=torch.randn(2)),
        f"nn.PReLU at {P}: field 'weight' = a FloatTensor of size 2: should be of size 3 (nOutputPlane)"),
    "VolumetricConvolution weight of the right count, wrong shape": (
        volumetric(weight=torch.randn(3, 2, 3, 1, 2)),
        f"nn.VolumetricConvolution at {P}: field 'weight' = a FloatTensor of size 3x2x3x1x2: should be of size "
        f"3x2x2x1x3 (nOutputPlane x nInputPlane x kT x kH x kW) or 3x12 (its 2-D view)"),
    "connTable not n x 2": (
        conv_map(connTable=torch.ones(3, 3)),
        f"nn.SpatialConvolutionMap at {P}: field 'connTable' = a FloatTensor of size 3x3: should be of size n x 2 "
        f"(input plane, output plane of each kernel; nn.tables.full/oneToOne/random)"),
    "connTable fraction": (
        conv_map(connTable=torch.tensor([[1.0, 1.0], [2.5, 1.0], [2.0, 2.0]])),
        f"nn.SpatialConvolutionMap at {P}: field 'connTable' = a FloatTensor of size 3x2: should hold 1-based "
        f"plane numbers (has 2.5)"),
    "connTable NaN": (
        conv_map(connTable=torch.tensor([[1.0, 1.0], [math.nan, 1.0], [2.0, 2.0]])),
        f"nn.SpatialConvolutionMap at {P}: field 'connTable' = a FloatTensor of size 3x2: should hold 1-based "
        f"plane numbers (has nan)"),
    "connTable plane out of range": (
        conv_map(connTable=torch.tensor([[1.0, 1.0], [2.0, 3.0], [2.0, 2.0]])),
        f"nn.SpatialConvolutionMap at {P}: field 'connTable' = a FloatTensor of size 3x2: should hold output "
        f"planes in [1, nOutputPlane = 2] (has 3)"),
    "connTable NaN plane count": (
        conv_map(nInputPlane=math.nan),
        f"nn.SpatialConvolutionMap at {P}: field 'nInputPlane' = nan: should be an integer"),
    "conv map weight rows": (
        conv_map(weight=torch.randn(2, 2, 2)),
        f"nn.SpatialConvolutionMap at {P}: field 'weight' = a FloatTensor of size 2x2x2: should be of size "
        f"3 x kH x kW (one kernel per connTable row)"),
    "SubSampling bias length": (
        lua_module("nn.SpatialSubSampling", nInputPlane=2, kW=2, kH=2, dW=2, dH=2, weight=torch.randn(2),
                   bias=torch.randn(1)),
        f"nn.SpatialSubSampling at {P}: field 'bias' = a FloatTensor of size 1: should be of size 2 (nInputPlane)"),
    "volumetric pooling pad over half the kernel": (
        lua_module("nn.VolumetricMaxPooling", kT=2, kW=2, kH=2, dT=2, dW=2, dH=2, padT=0, padW=2, padH=0),
        f"nn.VolumetricMaxPooling at {P}: field 'padW' = 2: should be at most half the kernel size kW = 2"),
    "OneHot outputSize inf": (lua_module("OneHot", outputSize=math.inf),
                              f"OneHot at {P}: field 'outputSize' = inf: should be an integer"),
    "OneHot outputSize 0": (lua_module("nn.OneHot", outputSize=0),
                            f"nn.OneHot at {P}: field 'outputSize' = 0: should be an integer in [1, 2147483647]"),
    "OneHot _eye columns": (
        lua_module("OneHot", outputSize=4, _eye=torch.eye(3)),
        f"OneHot at {P}: field '_eye' = a FloatTensor of size 3x3: should be a matrix of outputSize = 4 columns "
        f"(torch.eye(outputSize))"),
    "InstanceNormalization weight length": (
        fns_instance_norm(weight=torch.randn(2)),
        f"nn.InstanceNormalization at {P}: field 'weight' = a FloatTensor of size 2: should be of size 3 (nOutput)"),
    "InstanceNormalization bn not a module": (
        fns_instance_norm(prev_N=2, bn=5),
        f"nn.InstanceNormalization at {P}: field 'bn' = 5: should be the inner nn.SpatialBatchNormalization "
        f"(or nil)"),
    "InstanceNormalization bn of another batch size": (
        fns_instance_norm(prev_N=2, bn=inner_bn(torch.zeros(3), torch.ones(3))),
        f"nn.SpatialBatchNormalization at {P}.bn: field 'running_mean' = a FloatTensor of size 3: should be of "
        f"size 6 (prev_N x nOutput)"),
    "CycleGAN InstanceNormalization running_var length": (
        cyclegan_instance_norm(running_var=torch.ones(2)),
        f"nn.InstanceNormalization at {P}: field 'running_var' = a FloatTensor of size 2: should be of size 3 "
        f"(nOutput)"),
    "CycleGAN InstanceNormalization affine without weight": (
        cyclegan_instance_norm(affine=True, weight=None),
        f"nn.InstanceNormalization at {P}: missing tensor field 'weight'"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_field_is_one_error_naming_path_class_field_value_and_expectation(case):
    obj, expected = INVALID[case]
    assert error_of(at2(obj)) == expected


def test_local_normalisation_estimator_must_keep_the_planes():
    """Lua's normaliser subtracts the estimator's output from the input element by element."""
    estimator = seq(lua_module("nn.SpatialConvolution", nInputPlane=3, nOutputPlane=1, kW=1, kH=1, dW=1, dH=1,
                               weight=torch.ones(1, 3, 1, 1), bias=torch.zeros(1)))
    obj = lua_module("nn.SpatialSubtractiveNormalization", nInputPlane=3, kernel=torch.ones(3, 3),
                     meanestimator=estimator)
    assert error_of(at2(obj)) == (f"nn.SpatialSubtractiveNormalization at {P}: sub-module meanestimator turns 3 planes "
                       f"(nInputPlane) into 1; Lua's normaliser combines its output with the input element by "
                       f"element, so it must keep 3")


def test_several_invalid_modules_are_listed_in_one_error():
    message = error_of(seq(conv(kW=math.nan), bn(running_var=torch.ones(2))))
    assert "nn.SpatialConvolution at model.modules[1]: field 'kW' = nan" in message
    assert "nn.SpatialBatchNormalization at model.modules[2]: field 'running_var'" in message


# ----------------------------------------------------------------------------------------------
# Layouts Lua accepts keep converting
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("typename", ["nn.SpatialConvolutionMM", "nn.SpatialConvolution"])
def test_two_dimensional_convolution_weight_is_lua_view(typename):
    """SpatialConvolutionMM's own weight layout; nn.SpatialConvolution views a 2-D weight (backCompatibility)."""
    torch.manual_seed(0)
    w4, b = torch.randn(4, 3, 2, 3).double(), torch.randn(4).double()
    m = from_lua(conv(typename, weight=w4.reshape(4, 18), bias=b))
    x = torch.randn(2, 3, 5, 6).double()
    expected = torch.nn.functional.conv2d(x, w4, b, padding=(0, 1))
    assert torch.equal(m.double()(x), expected)


def test_two_dimensional_volumetric_weight_is_lua_view():
    torch.manual_seed(1)
    w5 = torch.randn(3, 2, 2, 1, 3).double()
    m = from_lua(volumetric(weight=w5.reshape(3, 12), bias=torch.zeros(3).double())).double()
    x = torch.randn(1, 2, 3, 4, 5).double()
    assert torch.equal(m(x), torch.nn.functional.conv3d(x, w5))


def test_nil_bias_is_no_bias_and_grouped_cudnn_convolution_converts():
    m = from_lua(conv("cudnn.SpatialConvolution", nInputPlane=4, nOutputPlane=6, groups=2,
                      weight=torch.randn(6, 2, 2, 3), bias=None))
    assert m.bias is None and m.groups == 2 and m.weight.shape == (6, 2, 2, 3)


def test_batchnorm_with_only_a_bias_uses_weight_one():
    """THNN's optional weight: nil -> 1, while the bias is kept."""
    torch.manual_seed(2)
    obj = bn(weight=None)
    m = from_lua(obj).eval()
    x = torch.randn(2, 4, 3, 3).double()
    mean, var, bias = obj.running_mean, obj.running_var, obj.bias
    expected = (x - mean.reshape(1, -1, 1, 1)) / torch.sqrt(var.reshape(1, -1, 1, 1) + EPS) + bias.reshape(1, -1, 1, 1)
    assert (m.double()(x) - expected).abs().max() < 1e-12


def test_chain_planes_and_forward_error_name_the_module():
    m = from_lua(seq(conv()))
    first = m[0]
    assert first.lua_planes(3) == 4
    with pytest.raises(LuaModelError, match=r"^nn.SpatialConvolution at model.modules\[1\]: takes 3 planes "
                                            r"\(nInputPlane\), but the module before it gives 5$"):
        first.lua_planes(5)
    with pytest.raises(LuaForwardError) as info:
        m(torch.randn(1, 5, 6, 6))
    assert str(info.value).startswith("nn.SpatialConvolution at model.modules[1]: ")
    assert str(info.value).endswith("(input: 1x5x6x6; expected: N x 3 x H x W or 3 x H x W (nInputPlane = 3))")


def test_batchnorm_in_training_refuses_an_input_without_batch_dimension():
    m = from_lua(at2(bn("nn.BatchNormalization")))
    with pytest.raises(LuaForwardError, match=r"nn.BatchNormalization at model.modules\[2\]: only mini-batch "
                                              r"supported \(2D tensor\), got 1D tensor instead"):
        m(torch.randn(4).double())
    m.eval()
    assert m(torch.randn(4).double()).shape == (4,)


def test_onehot_uses_the_rows_of_its_saved_eye():
    """char-rnn's OneHot: output = self._eye:index(1, input)."""
    eye = torch.tensor([[0.0, 2.0], [3.0, 0.0], [1.0, 1.0]])
    m = from_lua(lua_module("OneHot", outputSize=2, _eye=eye))
    assert m(torch.tensor([3.0, 1.0])).tolist() == [[1.0, 1.0], [0.0, 2.0]]


# ----------------------------------------------------------------------------------------------
# torch/nn 919eeca (2017-08-03): a training-mode BatchNormalization with a batch of one
# ----------------------------------------------------------------------------------------------

def hand_instance_norm(x: torch.Tensor) -> torch.Tensor:
    """Each (sample, plane) normalised by its own mean and biased variance, element by element."""
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            plane = x[n, c]
            mean = plane.sum() / plane.numel()
            var = ((plane - mean) ** 2).sum() / plane.numel()
            out[n, c] = (plane - mean) / math.sqrt(float(var) + EPS)
    return out


def per_plane(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(1, -1, 1, 1)


def test_batchnorm_batch_of_one_uses_batch_statistics_by_default():
    """torch/nn before 919eeca: THNN's training statistics over the H*W values of each plane."""
    torch.manual_seed(3)
    obj = bn()
    m = from_lua(obj).double().train()
    x = torch.randn(1, 4, 3, 5).double()
    out = m(x)
    expected = hand_instance_norm(x) * per_plane(obj.weight) + per_plane(obj.bias)
    assert (out - expected).abs().max() < 1e-12
    means = x[0].reshape(4, -1).sum(1) / 15
    unbiased = ((x[0].reshape(4, -1) - means[:, None]) ** 2).sum(1) / 14
    assert (m.running_mean - (0.9 * obj.running_mean + 0.1 * means)).abs().max() < 1e-12
    assert (m.running_var - (0.9 * obj.running_var + 0.1 * unbiased)).abs().max() < 1e-12


def test_batchnorm_2d_batch_of_one_gives_the_bias_and_nan_running_variance_by_default():
    """THNN with one value per feature: x - mean = 0, and the unbiased variance is 0/0."""
    obj = bn("nn.BatchNormalization", n=3)
    m = from_lua(obj).double().train()
    x = torch.tensor([[1.5, -2.0, 7.0]], dtype=torch.float64)
    assert torch.equal(m(x), obj.bias.reshape(1, 3))
    assert torch.isnan(m.running_var).all()
    assert (m.running_mean - (0.9 * obj.running_mean + 0.1 * x[0])).abs().max() < 1e-15


@pytest.mark.parametrize("typename", ["nn.SpatialBatchNormalization", "nn.BatchNormalization"])
def test_batchnorm_batch_of_one_uses_running_statistics_with_the_option(typename):
    """torch/nn after 919eeca: train and (input:size(1) > 1) is false: running statistics, left alone."""
    torch.manual_seed(4)
    obj = bn(typename)
    m = from_lua(obj, options=LATER).double().train()
    x = torch.randn(1, 4, 3, 5).double() if typename == "nn.SpatialBatchNormalization" else torch.randn(1, 4).double()
    shape = [1, -1] + [1] * (x.dim() - 2)
    expected = ((x - obj.running_mean.reshape(shape)) / torch.sqrt(obj.running_var.reshape(shape) + EPS)
                * obj.weight.reshape(shape) + obj.bias.reshape(shape))
    assert (m(x) - expected).abs().max() < 1e-12
    assert torch.equal(m.running_mean, obj.running_mean) and torch.equal(m.running_var, obj.running_var)
    # a batch of two is a batch: its statistics, under both torch/nn versions
    x2 = torch.randn(2, *x.shape[1:]).double()
    assert (m(x2) - from_lua(obj).double().train()(x2)).abs().max() < 1e-12


def test_cudnn_batchnorm_batch_of_one_is_not_affected_by_the_option():
    torch.manual_seed(5)
    obj = bn("cudnn.SpatialBatchNormalization")
    x = torch.randn(1, 4, 3, 5).double()
    out = from_lua(obj, options=LATER).double().train()(x)
    assert (out - (hand_instance_norm(x) * per_plane(obj.weight) + per_plane(obj.bias))).abs().max() < 1e-12


def test_fast_neural_style_instance_norm_default_and_later_torch():
    torch.manual_seed(6)
    obj = fns_instance_norm()
    x = torch.randn(2, 3, 4, 5).double()
    w, b = per_plane(obj.weight), per_plane(obj.bias)
    default = from_lua(obj).double()
    assert (default(x) - (hand_instance_norm(x) * w + b)).abs().max() < 1e-12
    # later torch/nn: a new inner BN for batch 2 (running mean 0, variance 1), used as it is
    later = from_lua(obj, options=LATER).double()
    assert (later(x) - (x / math.sqrt(1 + EPS) * w + b)).abs().max() < 1e-12
    later.eval()  # evaluate()/training() of the outer module change nothing
    assert (later(x) - (x / math.sqrt(1 + EPS) * w + b)).abs().max() < 1e-12


def test_fast_neural_style_instance_norm_reuses_the_saved_inner_bn_for_its_batch_size():
    torch.manual_seed(7)
    mean, var = torch.randn(6).double(), torch.rand(6).double() + 0.5  # prev_N = 2 samples x 3 planes
    obj = fns_instance_norm(prev_N=2, bn=inner_bn(mean, var))
    w, b = per_plane(obj.weight), per_plane(obj.bias)
    m = from_lua(obj, options=LATER).double()
    x = torch.randn(2, 3, 4, 5).double()
    expected = (x - mean.reshape(2, 3, 1, 1)) / torch.sqrt(var.reshape(2, 3, 1, 1) + EPS) * w + b
    assert (m(x) - expected).abs().max() < 1e-12
    x1 = torch.randn(1, 3, 4, 5).double()  # another batch size: a new BN (0 / 1)
    assert (m(x1) - (x1 / math.sqrt(1 + EPS) * w + b)).abs().max() < 1e-12


def test_cyclegan_instance_norm_is_told_apart_by_its_fields():
    torch.manual_seed(8)
    obj = cyclegan_instance_norm(affine=False)
    x = torch.randn(2, 3, 4, 5).double()
    default = from_lua(obj).double()
    assert list(default.parameters()) == []
    assert (default(x) - hand_instance_norm(x)).abs().max() < 1e-12
    # later torch/nn: the module's running statistics repeated over the batch
    later = from_lua(obj, options=LATER).double()
    expected = (x - per_plane(obj.running_mean)) / torch.sqrt(per_plane(obj.running_var) + EPS)
    assert (later(x) - expected).abs().max() < 1e-12


def test_cyclegan_affine_instance_norm_with_the_option():
    torch.manual_seed(9)
    obj = cyclegan_instance_norm(affine=True)
    x = torch.randn(1, 3, 4, 5).double()
    w, b = per_plane(obj.weight), per_plane(obj.bias)
    assert (from_lua(obj).double()(x) - (hand_instance_norm(x) * w + b)).abs().max() < 1e-12
    expected = (x - per_plane(obj.running_mean)) / torch.sqrt(per_plane(obj.running_var) + EPS) * w + b
    assert (from_lua(obj, options=LATER).double()(x) - expected).abs().max() < 1e-12


def test_note_when_the_file_was_saved_under_later_torch(capsys):
    """An inner BN that has run (prev_N = 1) with momentum 0.1 and still holds mean 0 / variance 1: only later
    torch/nn leaves it so. One note line for the file, however many such modules, naming the option."""
    def saved_later() -> t7.TorchObject:
        return fns_instance_norm(prev_N=1, bn=inner_bn(torch.zeros(3), torch.ones(3)))
    from_lua(seq(saved_later(), saved_later()))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: ")
    assert "batch_of_one_running_stats" in lines[0] and "--batch-of-one-running-stats" in lines[0]
    from_lua(seq(saved_later()), options=LATER)  # the option given: nothing to say
    from_lua(fns_instance_norm(prev_N=1, bn=inner_bn(torch.full((3,), 0.2), torch.ones(3))))  # it has learnt
    from_lua(fns_instance_norm(prev_N=1, bn=inner_bn(torch.zeros(3), torch.ones(3), momentum=0.0)))
    assert capsys.readouterr().err == ""


def test_option_survives_export_and_reconversion():
    torch.manual_seed(10)
    obj = fns_instance_norm()
    m = from_lua(obj, options=LATER).double()
    again = from_lua(t7.load_bytes(t7.dumps(m.to_lua()))).double()
    x = torch.randn(1, 3, 4, 5).double()
    assert (again(x) - m(x)).abs().max() < 1e-6


def test_load_lua_model_option_from_a_file(tmp_path, capsys):
    """The option through load_lua_model, on a file saved under later torch/nn (one note line without it)."""
    from fbresnet_port.lua_nn import load_lua_model

    torch.manual_seed(11)
    obj = fns_instance_norm(prev_N=1, bn=inner_bn(torch.zeros(3), torch.ones(3)))
    path = tmp_path / "style.t7"
    t7.save(path, obj)
    x = torch.randn(1, 3, 4, 5).double()
    w, b = per_plane(obj.weight.float().double()), per_plane(obj.bias.float().double())
    default = load_lua_model(path).double()
    assert capsys.readouterr().err.count("note: ") == 1
    assert (default(x) - (hand_instance_norm(x) * w + b)).abs().max() < 1e-12
    later = load_lua_model(path, options=LATER).double()
    assert capsys.readouterr().err == ""
    assert (later(x) - (x / math.sqrt(1 + EPS) * w + b)).abs().max() < 1e-12
