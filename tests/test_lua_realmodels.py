"""Classes and layouts met in real .t7 files of public repositories (see notes/realt7_report.md):
nnx's nn.SpatialClassifier, nn.SpatialPadding and nn.SpatialNormalization (torch/demos' face detector),
built here as small Lua objects with the field layout those files have, and checked against
hand-computed values or loops written independently of the converters."""
from __future__ import annotations

import pytest
import torch

from fbresnet_port import t7
from fbresnet_port.lua_nn import from_lua, lua_module, to_lua
from fbresnet_port.lua_nn.text import LuaInputError
from test_lua_legacy import local_sum  # explicit-loop reference: zero-padded window sum over planes


# ----------------------------------------------------------------------------------------------
# nn.SpatialClassifier: the classifier applied to every pixel's plane vector
# ----------------------------------------------------------------------------------------------

def spatial_classifier(weight: torch.Tensor, bias: torch.Tensor, with_classifier_field: bool = True):
    linear = lua_module("nn.Linear", weight=weight, bias=bias)
    fields = {"modules": t7.LuaList([linear]), "spatialOutput": True}
    if with_classifier_field:
        fields["classifier"] = linear
    return lua_module("nn.SpatialClassifier", **fields)


@pytest.mark.parametrize("with_classifier_field", [True, False])
def test_spatial_classifier_hand_computed(with_classifier_field):
    w = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]])  # 3 classes from 2 planes
    b = torch.tensor([0.0, 1.0, -2.0])
    m = from_lua(spatial_classifier(w, b, with_classifier_field))
    x = torch.tensor([[[1.0, 2.0, 3.0]], [[4.0, 5.0, 6.0]]])  # 2 planes x 1 x 3
    out = m(x)
    # pixel (1, 1): planes (1, 4) -> (1 + 8, -4 + 1, 3 + 2 - 2) = (9, -3, 3); pixel (1, 3): (3, 6) -> (15, -5, 10)
    expected = [[[9.0, 12.0, 15.0]], [[-3.0, -4.0, -5.0]], [[3.0, 6.5, 10.0]]]
    assert out.tolist() == expected
    assert m(x.unsqueeze(0).repeat(2, 1, 1, 1)).tolist() == [expected, expected]
    assert [p.shape for p in m.parameters()] == [w.shape, b.shape]


def test_spatial_classifier_rejects_a_2d_input_and_round_trips(tmp_path):
    m = from_lua(spatial_classifier(torch.eye(2), torch.zeros(2)))
    with pytest.raises(LuaInputError, match="K x H x W"):
        m(torch.ones(2, 3))
    t7.save(tmp_path / "c.t7", to_lua(m))
    back = from_lua(t7.load(tmp_path / "c.t7"))
    x = torch.randn(2, 3, 4)
    assert torch.equal(back(x), x)


# ----------------------------------------------------------------------------------------------
# nn.SpatialPadding (nnx): zero padding, negative values crop
# ----------------------------------------------------------------------------------------------

def test_nnx_spatial_padding_pads_and_crops():
    m = from_lua(lua_module("nn.SpatialPadding", pad_l=1, pad_r=-1, pad_t=0, pad_b=2, x_dim=3, y_dim=2))
    x = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    assert m(x).tolist() == [[[0.0, 1.0, 2.0], [0.0, 4.0, 5.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]


# ----------------------------------------------------------------------------------------------
# nn.SpatialNormalization (nnx), laid out as its constructor makes it
# ----------------------------------------------------------------------------------------------

def nnx_estimator(n: int, kernel: torch.Tensor) -> t7.TorchObject:
    """convo / convostd of nn.SpatialNormalization(n, kernel): pad, one kernel per plane, sum, replicate."""
    kh, kw = kernel.shape
    k = kernel / kernel.sum()
    return lua_module("nn.Sequential", modules=t7.LuaList([
        lua_module("nn.SpatialPadding", pad_l=kw // 2, pad_r=kw // 2 - (1 - kw % 2),
                   pad_t=kh // 2, pad_b=kh // 2 - (1 - kh % 2)),
        lua_module("nn.SpatialConvolutionMap", connTable=torch.tensor([[i, i] for i in range(1, n + 1)]).double(),
                   nInputPlane=n, nOutputPlane=n, kW=kw, kH=kh, dW=1, dH=1,
                   weight=k.expand(n, kh, kw).clone(), bias=torch.zeros(n, dtype=k.dtype)),
        lua_module("nn.Sum", dimension=1),
        lua_module("nn.Replicate", nfeatures=n)]))


def nnx_normalization(n: int, kernel: torch.Tensor, fixed: float | None = None) -> t7.TorchObject:
    fields = dict(convo=nnx_estimator(n, kernel), convostd=nnx_estimator(n, kernel), nfeatures=n,
                  kernel=kernel, padW=kernel.shape[1] // 2, padH=kernel.shape[0] // 2,
                  thresMod=lua_module("nn.Threshold", threshold=1e-6, val=0), coef=torch.ones(1, 1))
    if fixed is not None:
        fields["fixedThres"] = fixed
    return lua_module("nn.SpatialNormalization", **fields)


@pytest.mark.parametrize("fixed", [None, 0.05])
def test_nnx_spatial_normalization_against_loops(fixed):
    torch.manual_seed(3)
    n, kernel = 2, torch.rand(3, 3).double() + 0.1
    x = torch.randn(n, 5, 6).double()
    m = from_lua(nnx_normalization(n, kernel, fixed))
    k = kernel / kernel.sum()
    coef = local_sum(torch.ones_like(x), k)
    centred = x - local_sum(x, k) / coef
    std = local_sum(centred ** 2, k).sqrt() / coef
    thr = fixed if fixed is not None else max(std.mean().item() * 1.0, 1e-3)
    # the std map is replicated over the n planes, so its mean is the mean of one plane
    expected = centred / torch.where(std > thr, std, torch.full_like(std, thr))
    out = m(x)
    assert (out - expected).abs().max() < 1e-12
    assert list(m.parameters()) == []  # Lua's parameters() lists none: the kernels are fixed
    assert (m(x.unsqueeze(0).repeat(2, 1, 1, 1)) - expected).abs().max() < 1e-12


def test_nnx_spatial_normalization_2d_input_is_one_plane_and_bad_planes_error():
    m = from_lua(nnx_normalization(1, torch.ones(3, 3).double()))
    x = torch.randn(4, 4).double()
    assert torch.allclose(m(x), m(x.unsqueeze(0)))
    with pytest.raises(LuaInputError):
        m(torch.randn(3, 4, 4).double())


# ----------------------------------------------------------------------------------------------
# nn.DepthConcat and dpnn's nn.Inception (OpenFace nn4 models)
# ----------------------------------------------------------------------------------------------

def depth_concat(*children: t7.TorchObject, dimension: int = 2) -> t7.TorchObject:
    return lua_module("nn.DepthConcat", dimension=dimension, modules=t7.LuaList(children))


def test_depth_concat_pads_smaller_outputs_around():
    x = torch.arange(1.0, 26.0).reshape(1, 1, 5, 5)
    crop3 = lua_module("nn.SpatialZeroPadding", pad_l=-1, pad_r=-1, pad_t=-1, pad_b=-1)   # 5x5 -> 3x3
    crop4 = lua_module("nn.SpatialZeroPadding", pad_l=0, pad_r=-1, pad_t=0, pad_b=-1)     # 5x5 -> 4x4
    m = from_lua(depth_concat(lua_module("nn.Identity"), crop3, crop4))
    out = m(x)
    assert out.shape == (1, 3, 5, 5)
    assert torch.equal(out[0, 0], x[0, 0])
    # 3x3 in 5x5: start floor((5-3)/2) = 1, one pad on each side
    expected3 = torch.zeros(5, 5)
    expected3[1:4, 1:4] = x[0, 0, 1:4, 1:4]
    assert torch.equal(out[0, 1], expected3)
    # 4x4 in 5x5: start floor(1/2) = 0, the pad goes after
    expected4 = torch.zeros(5, 5)
    expected4[0:4, 0:4] = x[0, 0, 0:4, 0:4]
    assert torch.equal(out[0, 2], expected4)


def test_inception_computes_its_depth_concat_and_round_trips(tmp_path):
    inner = depth_concat(lua_module("nn.Identity"), lua_module("nn.MulConstant", constant_scalar=2.0))
    m = from_lua(lua_module("nn.Inception", module=inner, modules=t7.LuaList([inner]), kernelSize=3))
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(m(x), torch.cat([x, 2 * x], 1))
    t7.save(tmp_path / "i.t7", to_lua(m))
    assert torch.equal(from_lua(t7.load(tmp_path / "i.t7"))(x), torch.cat([x, 2 * x], 1))


# ----------------------------------------------------------------------------------------------
# fast-neural-style: nn.InstanceNormalization, nn.ShaveImage, nn.TotalVariation
# ----------------------------------------------------------------------------------------------

def test_instance_normalization_uses_each_planes_own_statistics_in_both_modes():
    torch.manual_seed(4)
    w, b = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.1, 0.0, 3.0])
    m = from_lua(lua_module("nn.InstanceNormalization", nOutput=3, eps=1e-5, prev_N=2, weight=w, bias=b))
    x = torch.randn(2, 3, 4, 5).double()
    m = m.double()
    expected = torch.empty_like(x)
    for n in range(2):
        for c in range(3):
            plane = x[n, c]
            mean = plane.sum() / plane.numel()
            var = ((plane - mean) ** 2).sum() / plane.numel()  # biased, as batch normalisation in training
            expected[n, c] = (plane - mean) / torch.sqrt(var + 1e-5) * w[c] + b[c]
    assert (m(x) - expected).abs().max() < 1e-12
    m.eval()
    assert (m(x) - expected).abs().max() < 1e-12
    assert [p.shape for p in m.parameters()] == [(3,), (3,)]


def test_shave_image_crops_each_side():
    m = from_lua(lua_module("nn.ShaveImage", size=1))
    x = torch.arange(1.0, 21.0).reshape(1, 1, 4, 5)
    assert m(x).tolist() == [[[[7.0, 8.0, 9.0], [12.0, 13.0, 14.0]]]]


def test_total_variation_is_identity_forward_and_adds_the_tv_gradient():
    torch.manual_seed(5)
    strength = 0.3
    m = from_lua(lua_module("nn.TotalVariation", strength=strength))
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    out = m(x)
    assert torch.equal(out.detach(), x.detach())
    (grad,) = torch.autograd.grad(out, x, g)
    # reference: the gradient of strength/2 * sum of squared neighbour differences over the top-left block
    x2 = x.detach().clone().requires_grad_(True)
    dx = x2[..., :-1, :-1] - x2[..., :-1, 1:]
    dy = x2[..., :-1, :-1] - x2[..., 1:, :-1]
    (tv,) = torch.autograd.grad(strength * 0.5 * (dx.square().sum() + dy.square().sum()), x2)
    assert (grad - (g + tv)).abs().max() < 1e-12


def test_nnx_spatial_normalization_export_round_trip():
    torch.manual_seed(6)
    m = from_lua(nnx_normalization(2, torch.rand(3, 3).double() + 0.1, 0.05))
    back = from_lua(t7.load_bytes(t7.dumps(to_lua(m)))).double()  # exported as float32, as Lua checkpoints
    x = torch.randn(2, 6, 7).double()
    assert back.fixed_threshold == 0.05
    assert (back(x) - m(x)).abs().max() < 1e-5
