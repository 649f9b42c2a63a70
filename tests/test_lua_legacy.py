"""fbresnet_port.lua_nn.legacy (SpatialConvolutionMap, SpatialSubSampling, SpatialLPPooling, the local
normalisations, the Volumetric layers, nn.Abs) against Lua Torch (../shared/reference/zoo_legacy) and
hand-computed values."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fbresnet_port import t7
from fbresnet_port.lua_nn import LuaModelError, from_lua, lua_module
from fbresnet_port.lua_nn.text import LuaInputError
from zoo_fixtures import check_case, check_round_trip, lua_file

CASES = ["conv_map_subsampling", "contrastive_norm", "volumetric"]


@pytest.mark.parametrize("case", CASES)
def test_against_lua(case):
    check_case("zoo_legacy", case)


@pytest.mark.parametrize("case", CASES)
def test_one_sample_without_batch_dimension(case):
    """A 3-D (4-D volumetric) input is one sample: Lua's batch output row i."""
    model = from_lua(lua_file("zoo_legacy", case, "model.t7")).double().eval()
    x = lua_file("zoo_legacy", case, "input.t7").double()
    ref = lua_file("zoo_legacy", case, "output_eval_f64.t7")
    with torch.no_grad():
        out = model(x[1])
    assert out.shape == ref.shape[1:]
    assert (out - ref[1]).abs().max() <= 1e-6 * ref.abs().max()


@pytest.mark.parametrize("case", CASES)
def test_export_round_trip(case, tmp_path):
    """to_lua -> t7.save -> t7.load -> from_lua computes Lua's output again."""
    check_round_trip("zoo_legacy", case, tmp_path)


# ----------------------------------------------------------------------------------------------
# SpatialConvolutionMap, SpatialSubSampling
# ----------------------------------------------------------------------------------------------

def conv_map(conn: list[list[int]], weight: torch.Tensor, bias: torch.Tensor, dW: int = 1, dH: int = 1):
    table = torch.tensor(conn, dtype=torch.float32)
    return from_lua(lua_module("nn.SpatialConvolutionMap", connTable=table, weight=weight, bias=bias,
                               kW=weight.shape[2], kH=weight.shape[1], dW=dW, dH=dH,
                               nInputPlane=int(table[:, 0].max()), nOutputPlane=int(table[:, 1].max())))


def test_conv_map_one_to_one_is_depthwise_convolution():
    torch.manual_seed(0)
    w, b, x = torch.randn(3, 2, 3), torch.randn(3), torch.randn(2, 3, 6, 7)
    m = conv_map([[1, 1], [2, 2], [3, 3]], w, b, dW=2)
    expected = F.conv2d(x, w.unsqueeze(1), b, stride=(1, 2), groups=3)
    assert torch.allclose(m(x), expected, atol=1e-6)


def test_conv_map_full_table_is_plain_convolution():
    """nn.tables.full(nin, nout): row p = (i, j) with j outer, i inner -> weight[(j-1)*nin + i]."""
    torch.manual_seed(1)
    nin, nout = 2, 3
    w, b, x = torch.randn(nin * nout, 3, 3), torch.randn(nout), torch.randn(nin, 5, 5)
    m = conv_map([[i, j] for j in range(1, nout + 1) for i in range(1, nin + 1)], w, b)
    assert torch.allclose(m(x), F.conv2d(x, w.reshape(nout, nin, 3, 3), b), atol=1e-5)


def test_conv_map_hand_computed_table_with_repeated_pair():
    """Output 1 gets kernels 1 and 3 from input 2 (both add), output 2 kernel 2 from input 1."""
    x = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])            # 2 planes of 1 x 2
    w = torch.tensor([[[1.0]], [[10.0]], [[100.0]]])           # 1 x 1 kernels
    m = conv_map([[2, 1], [1, 2], [2, 1]], w, torch.tensor([0.5, -1.0]))
    out = m(x)
    assert out.tolist() == [[[101 * 3 + 0.5, 101 * 4 + 0.5]], [[10 * 1 - 1.0, 10 * 2 - 1.0]]]
    out.sum().backward()
    assert m.weight.grad.reshape(-1).tolist() == [7.0, 3.0, 7.0]  # sums of the connected input plane
    assert m.bias.grad.tolist() == [2.0, 2.0]
    assert [tuple(p.shape) for p in m.parameters()] == [(3, 1, 1), (2,)]


def test_conv_map_rejects_too_few_planes():
    m = conv_map([[1, 1], [2, 1]], torch.ones(2, 1, 1), torch.zeros(1))
    with pytest.raises(LuaInputError, match="has 1 planes, the module expects at least 2 "):
        m(torch.ones(1, 4, 4))


def test_subsampling_hand_computed():
    """weight * (window sum) + bias per plane, 2x2 windows, stride 2 (plane 2 has weight -1, bias 0)."""
    m = from_lua(lua_module("nn.SpatialSubSampling", nInputPlane=2, kW=2, kH=2, dW=2, dH=2,
                            weight=torch.tensor([0.5, -1.0]), bias=torch.tensor([1.0, 0.0])))
    x = torch.arange(1.0, 17.0).reshape(2, 2, 4).repeat(1, 1, 1).reshape(2, 2, 4)
    out = m(x)
    # plane 1 rows [1 2 3 4; 5 6 7 8]: windows 1+2+5+6 = 14, 3+4+7+8 = 22
    assert out.tolist() == [[[0.5 * 14 + 1, 0.5 * 22 + 1]], [[-(9 + 10 + 13 + 14), -(11 + 12 + 15 + 16)]]]


def test_subsampling_old_weight_layout_reads_first_n_plane_elements():
    """2011-era files (torch/demos' tracker nets) store an nInputPlane x kH x kW weight; the C kernel
    uses only its first nInputPlane elements in memory order."""
    weight = torch.tensor([[[2.0, 7.0], [7.0, 7.0]], [[3.0, 7.0], [7.0, 7.0]]])  # first two elements: 2, 7
    m = from_lua(lua_module("nn.SpatialSubSampling", nInputPlane=2, kW=2, kH=2, dW=2, dH=2,
                            weight=weight, bias=torch.tensor([0.0, 1.0])))
    x = torch.ones(2, 2, 2)
    assert m(x).tolist() == [[[2.0 * 4]], [[7.0 * 4 + 1]]]
    assert list(m.parameters())[0].shape == (2,)


# ----------------------------------------------------------------------------------------------
# Local normalisations: objects laid out as torch/nn's constructors make them
# ----------------------------------------------------------------------------------------------

def estimator(n: int, kernel: torch.Tensor, std: bool) -> t7.TorchObject:
    """meanestimator / stdestimator of SpatialSubtractive/DivisiveNormalization(n, kernel)."""
    kh = kernel.shape[0]
    kw = kernel.shape[1] if kernel.dim() == 2 else kh
    mods = [lua_module("nn.Square")] if std else []
    mods.append(lua_module("nn.SpatialZeroPadding", pad_l=kw // 2, pad_r=kw // 2, pad_t=kh // 2, pad_b=kh // 2))
    if kernel.dim() == 2:
        mods.append(lua_module("nn.SpatialConvolution", nInputPlane=n, nOutputPlane=1, kW=kw, kH=kh, dW=1, dH=1,
                               padW=0, padH=0, weight=kernel.expand(1, n, kh, kw).clone(), bias=torch.zeros(1)))
    else:
        mods.append(lua_module("nn.SpatialConvolutionMap", connTable=torch.tensor([[i, i] for i in range(1, n + 1)],
                               dtype=torch.float32), nInputPlane=n, nOutputPlane=n, kW=kh, kH=1, dW=1, dH=1,
                               weight=kernel.expand(n, 1, kh).clone(), bias=torch.zeros(n)))
        mods.append(lua_module("nn.SpatialConvolution", nInputPlane=n, nOutputPlane=1, kW=1, kH=kh, dW=1, dH=1,
                               padW=0, padH=0, weight=kernel.reshape(1, 1, kh, 1).expand(1, n, kh, 1).clone(),
                               bias=torch.zeros(1)))
    mods.append(lua_module("nn.Replicate", nfeatures=n, dim=1, ndim=3))
    if std:
        mods.append(lua_module("nn.Sqrt", eps=0))
    return lua_module("nn.Sequential", modules=t7.LuaList(mods))


def local_sum(x: torch.Tensor, kernel2d: torch.Tensor) -> torch.Tensor:
    """sum over planes and the zero-padded window of kernel * x, by explicit loops."""
    n, h, w = x.shape
    kh, kw = kernel2d.shape
    out = torch.zeros(h, w, dtype=torch.float64)
    for y in range(h):
        for xx in range(w):
            for c in range(n):
                for i in range(kh):
                    for j in range(kw):
                        yy, xj = y + i - kh // 2, xx + j - kw // 2
                        if 0 <= yy < h and 0 <= xj < w:
                            out[y, xx] += kernel2d[i, j] * x[c, yy, xj]
    return out


def test_subtractive_normalization_2d_kernel_one_sample():
    torch.manual_seed(2)
    n, kernel = 2, torch.rand(3, 5).double()
    k = kernel / (kernel.sum() * n)  # as the constructor normalises it
    m = from_lua(lua_module("nn.SpatialSubtractiveNormalization", nInputPlane=n, kernel=k,
                            meanestimator=estimator(n, k, std=False))).double()
    assert list(m.parameters()) == []
    x = torch.randn(n, 4, 6, dtype=torch.float64)
    mean = local_sum(x, k) / local_sum(torch.ones_like(x), k)  # border coefficient
    assert torch.allclose(m(x), x - mean, atol=1e-12)
    assert torch.allclose(m(x.unsqueeze(0).expand(2, -1, -1, -1))[1], x - mean, atol=1e-12)


def test_divisive_normalization_1d_kernel_threshold():
    torch.manual_seed(3)
    n, kernel = 3, torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    k = kernel / (kernel.sum() * n ** 0.5)
    fields = dict(nInputPlane=n, kernel=k, threshold=0.8, thresval=2.0,
                  meanestimator=estimator(n, k, std=False), stdestimator=estimator(n, k, std=True))
    m = from_lua(lua_module("nn.SpatialDivisiveNormalization", **fields)).double()
    x = torch.randn(n, 5, 4, dtype=torch.float64)
    k2 = torch.outer(k, k)
    std = local_sum(x * x, k2).sqrt() / local_sum(torch.ones_like(x), k2)
    assert (std > 0.8).any() and (std <= 0.8).any()  # both sides of the threshold are exercised
    expected = x / torch.where(std > 0.8, std, torch.full_like(std, 2.0))
    x.requires_grad_(True)
    out = m(x)
    assert torch.allclose(out, expected, atol=1e-12)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_lp_pooling_is_a_sequential_without_parameters():
    model = from_lua(lua_file("zoo_legacy", "conv_map_subsampling", "model.t7"))
    lp = model[6]
    assert lp.lua_typename == "nn.SpatialLPPooling" and len(list(lp.parameters())) == 0
    assert lp.lua_str().startswith("nn.Sequential {")
    x = torch.rand(1, 4, 4)
    expected = F.avg_pool2d(x.square(), 2).mul(4).sqrt()  # Lua: Square, AvgPool, MulConstant(kW*kH), Sqrt
    assert torch.allclose(lp(x), expected, atol=1e-6)


def test_lp_pooling_gradient_over_a_window_of_zeros_is_zero():
    """THNN's Sqrt backward gives 0 where its output is 0 (torch.sqrt would give inf, then NaN)."""
    lp = from_lua(lua_file("zoo_legacy", "conv_map_subsampling", "model.t7"))[6]
    x = torch.zeros(1, 4, 4)
    x[0, 2:, 2:] = torch.tensor([[1.0, 2.0], [2.0, 4.0]])
    x.requires_grad_(True)
    lp(x).sum().backward()
    assert x.grad[0, :2].abs().sum() == 0 and x.grad[0, 2:, :2].abs().sum() == 0
    assert torch.allclose(x.grad[0, 2:, 2:], torch.tensor([[1.0, 2.0], [2.0, 4.0]]) / 5)  # x / ||window||


# ----------------------------------------------------------------------------------------------
# Volumetric layers, Abs
# ----------------------------------------------------------------------------------------------

def test_volumetric_str_and_defaults():
    model = from_lua(lua_file("zoo_legacy", "volumetric", "model.t7"))
    assert [m.lua_str() for m in model] == [
        "nn.VolumetricConvolution(2 -> 4, 3x3x3, 1,1,1, 1,1,1)", "nn.Tanh", "nn.VolumetricMaxPooling(2x2x2, 2,2,2)",
        "nn.VolumetricConvolution(4 -> 3, 2x3x3, 1,1,1, 0,1,1)", "nn.VolumetricAveragePooling(1x2x2, 1,2,2)",
        "nn.Abs"]


def test_volumetric_max_pooling_ceil_mode_and_padding_sizes():
    pool = from_lua(lua_module("nn.VolumetricMaxPooling", kT=2, kW=3, kH=2, dT=2, dW=2, dH=2, padT=1, padW=1,
                               padH=0, ceil_mode=True))
    out = pool(torch.randn(1, 5, 6, 7))
    # THNN: ceil((5 - 2 + 2) / 2) + 1 = 4 (its last window starts at 5 + 1 >= 6: dropped -> 3),
    # ceil((6 - 2) / 2) + 1 = 3, ceil((7 - 3 + 2) / 2) + 1 = 4
    assert out.shape == (1, 3, 3, 4)


def test_volumetric_average_pooling_ignores_padding_fields():
    """Its updateOutput passes padding 0: windows of 2 x 1 x 1 averaged, stride defaults to the kernel."""
    pool = from_lua(lua_module("nn.VolumetricAveragePooling", kT=2, kW=1, kH=1, dT=2, dW=1, dH=1, padT=1))
    x = torch.arange(4.0).reshape(1, 4, 1, 1)
    assert pool(x).reshape(-1).tolist() == [0.5, 2.5]


def test_abs_gradient_is_plus_one_at_zero():
    m = from_lua(lua_module("nn.Abs"))
    x = torch.tensor([-2.0, 0.0, 3.0], requires_grad=True)
    m(x).backward(torch.ones(3))
    assert x.grad.tolist() == [-1.0, 1.0, 1.0]


# ----------------------------------------------------------------------------------------------
# Validation (issue #15): what THNN reads, and the errors for what it cannot
# ----------------------------------------------------------------------------------------------

def test_conv_map_reads_the_first_nInputPlane_planes_of_a_wider_input():
    """THNN checks input planes >= nInputPlane and reads the planes the table names."""
    torch.manual_seed(3)
    w, b = torch.randn(2, 2, 2), torch.randn(1)
    table = torch.tensor([[1.0, 1.0], [2.0, 1.0]])
    m = from_lua(lua_module("nn.SpatialConvolutionMap", connTable=table, weight=w, bias=b, kW=2, kH=2, dW=1, dH=1,
                            nInputPlane=4, nOutputPlane=1))
    x = torch.randn(2, 5, 4, 4)
    expected = F.conv2d(x[:, :2], w.unsqueeze(0), b)
    assert torch.allclose(m(x), expected, atol=1e-6)
    with pytest.raises(LuaInputError, match=r"nn.SpatialConvolutionMap at model: the input \(2x3x4x4\) has 3 planes, "
                                            r"the module expects at least 4 \(nInputPlane\)"):
        m(x[:, :3])


def test_subsampling_2011_weight_layout_and_its_errors():
    """2011 files: weight nInputPlane x kH x kW, of which THNN reads the first nInputPlane values."""
    w = torch.arange(1.0, 9.0).reshape(2, 2, 2)
    fields = dict(nInputPlane=2, kW=2, kH=2, dW=2, dH=2, bias=torch.zeros(2))
    m = from_lua(lua_module("nn.SpatialSubSampling", weight=w, **fields))
    assert m.weight.tolist() == [1.0, 2.0]
    with pytest.raises(LuaModelError) as info:
        from_lua(lua_module("nn.SpatialSubSampling", weight=torch.ones(3, 2, 2), **fields))
    assert str(info.value) == ("nn.SpatialSubSampling at model: field 'weight' = a FloatTensor of size 3x2x2: should "
                               "be of size 2 (nInputPlane), or 2 x kH x kW (2011 layout)")


def test_normalisation_without_its_estimator_is_one_error():
    with pytest.raises(LuaModelError) as info:
        from_lua(lua_module("nn.SpatialSubtractiveNormalization", nInputPlane=3, kernel=torch.ones(3, 3)))
    assert str(info.value) == ("nn.SpatialSubtractiveNormalization at model: missing sub-module meanestimator (saved "
                               "by every torch/nn version that has this class; the file looks damaged)")


def test_volumetric_convolution_2d_weight_view_and_missing_stride():
    """THNN VolumetricConvolutionMM takes the 2-D view of the weight; the strides are handed to it as they are."""
    torch.manual_seed(4)
    w = torch.randn(2, 1, 1, 2, 2)
    fields = dict(nInputPlane=1, nOutputPlane=2, kT=1, kW=2, kH=2, dT=1, dW=1, bias=torch.zeros(2))
    with pytest.raises(LuaModelError) as info:
        from_lua(lua_module("nn.VolumetricConvolution", weight=w.reshape(2, 4), **fields))
    assert str(info.value) == "nn.VolumetricConvolution at model: missing field 'dH' (an integer)"
    m = from_lua(lua_module("nn.VolumetricConvolution", weight=w.reshape(2, 4), dH=1, **fields))
    x = torch.randn(1, 1, 2, 3, 3)
    assert torch.allclose(m(x), F.conv3d(x, w, torch.zeros(2)), atol=1e-6)
