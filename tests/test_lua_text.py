"""fbresnet_port.lua_nn.text (LookupTable, Temporal*, Add/Mul/CMul, MM/MV/Bilinear, Replicate,
MixtureTable, similarity and distance layers, Index, MaskedSelect) and nn.Sum/Mean/SpatialSoftMax
against Lua Torch (../shared/reference/zoo_text) and hand-computed values."""
from __future__ import annotations

import pytest
import torch

from fbresnet_port import t7
from fbresnet_port.lua_nn import LuaForwardError, LuaModelError, from_lua, lua_module
from fbresnet_port.lua_nn.text import LuaInputError
from zoo_fixtures import check_case, check_round_trip

CASES = ["embedding_temporal", "temporal_1d", "similarity", "matrix", "index_maskedselect"]


@pytest.mark.parametrize("case", CASES)
def test_against_lua(case):
    check_case("zoo_text", case)


@pytest.mark.parametrize("case", CASES)
def test_export_round_trip(case, tmp_path):
    """to_lua -> t7.save -> t7.load -> from_lua computes Lua's output again."""
    check_round_trip("zoo_text", case, tmp_path)


def m(typename: str, **fields):
    return from_lua(lua_module(typename, **fields))


# ----------------------------------------------------------------------------------------------
# LookupTable
# ----------------------------------------------------------------------------------------------

def lookup(weight: torch.Tensor, **fields):
    return m("nn.LookupTable", weight=weight.clone(), **fields)


def test_lookup_padding_value_reads_its_row_but_gets_no_gradient():
    w = torch.arange(8.0).reshape(4, 2)
    lt = lookup(w, paddingValue=2)
    idx = torch.tensor([[2, 3], [2, 1]])
    out = lt(idx)
    assert out.tolist() == [[[2, 3], [4, 5]], [[2, 3], [0, 1]]]
    out.backward(torch.ones_like(out))
    assert lt.weight.grad.tolist() == [[1, 1], [0, 0], [1, 1], [0, 0]]


def test_lookup_max_norm_renormalises_the_rows_read_in_place():
    lt = lookup(torch.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]]), maxNorm=1.0)
    out = lt(torch.tensor([1, 2]))
    scale = 1.0 / (5.0 + 1e-7)  # THNN: maxNorm / (norm + 1e-7) for rows with norm > maxNorm
    expected = [[3 * scale, 4 * scale], [0.3, 0.4]]
    assert torch.allclose(out, torch.tensor(expected), atol=1e-7)
    assert torch.allclose(lt.weight.data[:2], torch.tensor(expected), atol=1e-7)
    assert lt.weight.data[2].tolist() == [6.0, 8.0]  # not read: untouched


def test_lookup_scale_grad_by_frequency_and_float_indices():
    lt = lookup(torch.zeros(3, 1), shouldScaleGradByFreq=True)
    out = lt(torch.tensor([1.0, 1.9, 3.0]))  # Lua copies into a LongTensor: 1.9 -> 1
    out.backward(torch.tensor([[2.0], [4.0], [5.0]]))
    assert lt.weight.grad.reshape(-1).tolist() == [(2 + 4) / 2, 0, 5]


def test_lookup_index_out_of_range_is_a_clear_error():
    lt = lookup(torch.zeros(3, 2))
    with pytest.raises(LuaInputError, match="index 0 is outside 1..3"):
        lt(torch.tensor([0, 1]))


# ----------------------------------------------------------------------------------------------
# Temporal layers
# ----------------------------------------------------------------------------------------------

def test_temporal_convolution_hand_computed_and_batch():
    """Frame t: bias + weight . (frames t, t+1 concatenated); 2 features, kW 2, stride 2."""
    conv = m("nn.TemporalConvolution", inputFrameSize=2, outputFrameSize=1, kW=2, dW=2,
             weight=torch.tensor([[1.0, 10.0, 100.0, 1000.0]]), bias=torch.tensor([0.5]))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0], [9.0, 9.0]])
    out = conv(x)
    assert out.tolist() == [[1 + 20 + 300 + 4000 + 0.5], [5 + 60 + 700 + 8000 + 0.5]]
    assert torch.equal(conv(torch.stack([x, x + 1]))[0], out)
    with pytest.raises(LuaInputError, match="frame size is 3, expected 2"):
        conv(torch.zeros(4, 3))


def test_temporal_subsampling_and_max_pooling_hand_computed():
    sub = m("nn.TemporalSubSampling", inputFrameSize=2, kW=2, dW=1, weight=torch.tensor([1.0, -2.0]),
            bias=torch.tensor([0.0, 1.0]))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert sub(x).tolist() == [[4.0, -11.0], [8.0, -19.0]]
    pool = m("nn.TemporalMaxPooling", kW=2)  # dW defaults to kW
    x = torch.tensor([[1.0, 5.0], [1.0, 2.0], [0.0, 7.0], [3.0, 7.0]], requires_grad=True)
    out = pool(x)
    assert out.tolist() == [[1.0, 5.0], [3.0, 7.0]]
    out.backward(torch.ones_like(out))
    assert x.grad.tolist() == [[1, 1], [0, 0], [0, 1], [1, 0]]  # ties: the first maximum


# ----------------------------------------------------------------------------------------------
# Add, Mul, CMul, MM, MV, Replicate, MixtureTable
# ----------------------------------------------------------------------------------------------

def test_add_mul_cmul_shapes():
    x = torch.arange(6.0).reshape(2, 3)
    assert m("nn.Add", bias=torch.tensor([1.0, 2.0, 3.0]))(x).tolist() == [[1, 3, 5], [4, 6, 8]]
    assert m("nn.Add", bias=torch.tensor([10.0]), scalar=True)(x).tolist() == [[10, 11, 12], [13, 14, 15]]
    assert m("nn.Mul", weight=torch.tensor([2.0]))(x).tolist() == [[0, 2, 4], [6, 8, 10]]
    w = torch.tensor([1.0, -1.0, 2.0])
    assert m("nn.CMul", weight=w, size=t7.Storage(torch.tensor([3])))(x).tolist() == [[0, -1, 4], [3, -4, 10]]
    cm = m("nn.CMul", weight=torch.tensor([[2.0], [3.0]]))  # same dims as the input: expanded
    assert cm(x).tolist() == [[0, 2, 4], [9, 12, 15]]
    cm = m("nn.CMul", weight=torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]))  # as many elements
    assert cm(x).tolist() == [[0, 2, 6], [12, 20, 30]]


def test_mm_mv_transposes():
    torch.manual_seed(4)
    a, b = torch.randn(2, 4, 3), torch.randn(2, 5, 4)
    mm = m("nn.MM", transA=True, transB=True)
    assert torch.allclose(mm([a, b]), torch.einsum("bki,bjk->bij", a, b), atol=1e-6)
    assert torch.allclose(mm([a[0], b[0]]), a[0].t() @ b[0].t(), atol=1e-6)
    mat, v = torch.randn(3, 4), torch.randn(3)
    assert torch.allclose(m("nn.MV", trans=True)([mat, v]), mat.t() @ v, atol=1e-6)
    with pytest.raises(LuaInputError, match="table"):
        mm(a)


def test_replicate_with_ndim():
    rep = m("nn.Replicate", nfeatures=3, dim=1, ndim=2)
    assert rep(torch.zeros(4, 5)).shape == (3, 4, 5)
    assert rep(torch.zeros(2, 4, 5)).shape == (2, 3, 4, 5)  # batch: one dimension further


def test_mixture_table_tensor_and_table_experts_and_vector_gater():
    torch.manual_seed(5)
    gater, experts = torch.rand(2, 3), torch.randn(2, 3, 4)
    expected = (gater.unsqueeze(2) * experts).sum(1)
    as_table = m("nn.MixtureTable")([gater, list(experts.unbind(1))])
    as_tensor = m("nn.MixtureTable")([gater, experts])
    assert torch.allclose(as_table, expected, atol=1e-6) and torch.allclose(as_tensor, expected, atol=1e-6)
    one = m("nn.MixtureTable")([gater[0], list(experts[0].unbind(0))])  # 1-D gater: dim 1
    assert torch.allclose(one, expected[0], atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Similarity and distances
# ----------------------------------------------------------------------------------------------

def test_euclidean_and_cosine_hand_computed():
    eu = m("nn.Euclidean", weight=torch.tensor([[3.0, 0.0], [4.0, 1.0]]))  # columns (3, 4), (0, 1)
    assert eu(torch.zeros(2)).tolist() == [5.0, 1.0]
    x = torch.zeros(1, 2, requires_grad=True)
    eu(x).backward(torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(x.grad, torch.tensor([[-3.0, -4.0]]) / (5 + 1e-7))  # Lua: (x - w) / (y + 1e-7)
    cos = m("nn.Cosine", weight=torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert torch.allclose(cos(torch.tensor([2.0, 0.0])), torch.tensor([1.0, 2 ** -0.5]))


@pytest.mark.parametrize("p, d, expected_grad", [
    (2.0, [3.0, 4.0], [3 / (5 + 1e-6), 4 / (5 + 1e-6)]),
    (1.5, [4.0, 0.0], [4 * (4 + 1e-6) ** -0.5, 0.0]),  # Lua leaves out |d|^(p-2) for p < 2
    (3.0, [1.0, 2.0], [1 / (9 ** (1 / 3) + 1e-6) ** 2, 4 / (9 ** (1 / 3) + 1e-6) ** 2]),
    (1.0, [-2.0, 3.0], [-1.0, 1.0]),
])
def test_pairwise_distance_output_and_lua_gradient(p, d, expected_grad):
    pd = m("nn.PairwiseDistance", norm=p)
    x1 = torch.tensor([d], dtype=torch.float64, requires_grad=True)
    x2 = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    out = pd([x1, x2])
    assert out.item() == pytest.approx(sum(abs(v) ** p for v in d) ** (1 / p))
    out.backward(torch.ones(1, dtype=torch.float64))
    assert x1.grad[0].tolist() == pytest.approx(expected_grad, rel=1e-12)
    assert x2.grad[0].tolist() == pytest.approx([-g for g in expected_grad], rel=1e-12)
    assert pd([x1[0], x2[0]]).shape == (1,)


def test_vector_pairs_give_one_element():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0])
    assert m("nn.DotProduct")([a, b]).tolist() == [1.0]
    cd = m("nn.CosineDistance")([a, b])
    assert cd.shape == (1,) and cd.item() == pytest.approx(1 / (5 ** 0.5 * 10 ** 0.5))


# ----------------------------------------------------------------------------------------------
# Index, MaskedSelect
# ----------------------------------------------------------------------------------------------

def test_index_second_dimension_and_gradient():
    t = torch.arange(6.0).reshape(2, 3).requires_grad_(True)
    out = m("nn.Index", dimension=2)([t, torch.tensor([3, 1, 3])])
    assert out.tolist() == [[2, 0, 2], [5, 3, 5]]
    out.backward(torch.ones_like(out))
    assert t.grad.tolist() == [[1, 0, 2], [1, 0, 2]]
    with pytest.raises(LuaInputError, match="index 4 is outside 1..3"):
        m("nn.Index", dimension=2)([t, torch.tensor([4])])


def test_masked_select_row_major_and_mask_of_other_shape():
    t = torch.arange(6.0).reshape(2, 3)
    mask = torch.tensor([1, 0, 0, 1, 1, 0], dtype=torch.uint8)  # TH pairs the elements in order
    assert m("nn.MaskedSelect")([t, mask]).tolist() == [0, 3, 4]


# ----------------------------------------------------------------------------------------------
# Sum / Mean, SpatialSoftMax
# ----------------------------------------------------------------------------------------------

X = torch.arange(24.0).reshape(2, 3, 4)


@pytest.mark.parametrize("typename, fields, expected", [
    ("nn.Sum", dict(dimension=-1), X.sum(2)),
    ("nn.Sum", dict(dimension=1, nInputDims=2), X.sum(1)),          # batch input: one dimension further
    ("nn.Sum", dict(dimension=2, nInputDims=3), X.sum(1)),          # not a batch: dimension as given
    ("nn.Sum", dict(dimension=2, sizeAverage=True, squeeze=False), X.mean(1, keepdim=True)),
    ("nn.Mean", dict(dimension=3), X.mean(2)),                      # old nn.Mean without sizeAverage
    ("nn.Mean", dict(dimension=-2, nInputDims=2), X.mean(1)),       # negative: nInputDims ignored
])
def test_sum_mean_dimensions(typename, fields, expected):
    assert torch.allclose(m(typename, **fields)(X), expected)


def test_sum_of_a_vector_keeps_one_element():
    assert m("nn.Sum", dimension=1, sizeAverage=False, squeeze=True)(torch.tensor([1.0, 2.0])).tolist() == [3.0]


def test_spatial_softmax_over_planes():
    sm = m("nn.SpatialSoftMax")
    x = torch.randn(3, 2, 2)
    assert torch.allclose(sm(x).sum(0), torch.ones(2, 2))
    assert torch.allclose(sm(x.unsqueeze(0))[0], sm(x))


# ----------------------------------------------------------------------------------------------
# Validation at conversion (issue #15): one LuaModelError naming path, class, field, value, expectation
# ----------------------------------------------------------------------------------------------

W32 = torch.zeros(3, 2)
CONV = dict(inputFrameSize=2, outputFrameSize=3, kW=2, dW=1, weight=torch.zeros(3, 4), bias=torch.zeros(3))
SUB = dict(inputFrameSize=2, kW=2, dW=1, weight=torch.zeros(2), bias=torch.zeros(2))


@pytest.mark.parametrize("typename, fields, message", [
    # LookupTable: weight nIndex x nOutput, floating, not empty; maxNorm/normType numbers; C bool flag
    ("nn.LookupTable", {}, "missing tensor field 'weight'"),
    ("nn.LookupTable", dict(weight=torch.zeros(6)),
     "field 'weight' = a FloatTensor of size 6: should be 2-dimensional"),
    ("nn.LookupTable", dict(weight=torch.zeros(3, 2, dtype=torch.long)),
     "field 'weight' = a LongTensor of size 3x2: should be a floating-point tensor"),
    ("nn.LookupTable", dict(weight=torch.zeros(3, 2, dtype=torch.bool)), "field 'weight' = a BoolTensor"),
    ("nn.LookupTable", dict(weight=torch.zeros(0)), "field 'weight' = an empty FloatTensor: should be a non-empty"),
    ("nn.LookupTable", dict(weight=W32, paddingValue=1.5), "field 'paddingValue' = 1.5: should be an integer"),
    ("nn.LookupTable", dict(weight=W32, maxNorm=True), "field 'maxNorm' = true: should be a number"),
    ("nn.LookupTable", dict(weight=W32, maxNorm=float("nan")), "field 'maxNorm' = nan: should be a finite number"),
    ("nn.LookupTable", dict(weight=W32, maxNorm=1.0, normType=0), "field 'normType' = 0: should be a positive number"),
    ("nn.LookupTable", dict(weight=W32, shouldScaleGradByFreq=1),
     "field 'shouldScaleGradByFreq' = 1: should be true or false"),
    # TemporalConvolution: sizes are integers >= 1; weight exactly outputFrameSize x kW*inputFrameSize (never
    # reshaped), a bias of outputFrameSize elements (Lua has no bias-less TemporalConvolution)
    ("nn.TemporalConvolution", dict(CONV, kW=float("nan")), "field 'kW' = nan: should be an integer"),
    ("nn.TemporalConvolution", dict(CONV, kW=float("inf")), "field 'kW' = inf: should be an integer"),
    ("nn.TemporalConvolution", dict(CONV, kW=True), "field 'kW' = true: should be an integer"),
    ("nn.TemporalConvolution", dict(CONV, kW=0), r"field 'kW' = 0: should be an integer in \[1, 2147483647\]"),
    ("nn.TemporalConvolution", dict(CONV, dW=-1), r"field 'dW' = -1: should be an integer in \[1, "),
    ("nn.TemporalConvolution", dict(CONV, inputFrameSize=2 ** 40),
     r"field 'inputFrameSize' = 1099511627776: should be an integer in \[1, 2147483647\]"),
    ("nn.TemporalConvolution", dict(CONV, outputFrameSize="3"), "field 'outputFrameSize' = '3': should be an integer"),
    ("nn.TemporalConvolution", dict(CONV, weight=torch.zeros(12)),
     "field 'weight' = a FloatTensor of size 12: should be of size 3x4"),
    ("nn.TemporalConvolution", dict(CONV, weight=torch.zeros(3, 2, 2)),
     "field 'weight' = a FloatTensor of size 3x2x2: should be of size 3x4"),
    ("nn.TemporalConvolution", dict(CONV, bias=None), "missing tensor field 'bias'"),
    ("nn.TemporalConvolution", dict(CONV, bias=torch.zeros(4)),
     "field 'bias' = a FloatTensor of size 4: should have 3 elements"),
    ("nn.TemporalConvolution", dict(CONV, bias=torch.zeros(3, dtype=torch.int32)),
     "field 'bias' = an? IntTensor of size 3: should be a floating-point tensor"),
    # TemporalSubSampling: weight and bias of inputFrameSize elements
    ("nn.TemporalSubSampling", dict(SUB, inputFrameSize=None), "missing field 'inputFrameSize'"),
    ("nn.TemporalSubSampling", dict(SUB, weight=torch.zeros(3)),
     "field 'weight' = a FloatTensor of size 3: should have 2"),
    ("nn.TemporalSubSampling", dict(SUB, bias=torch.zeros(0)), "field 'bias' = an empty FloatTensor"),
    ("nn.TemporalMaxPooling", {}, "missing field 'kW'"),
    ("nn.TemporalMaxPooling", dict(kW=2, dW=2.5), "field 'dW' = 2.5: should be an integer"),
    # Add / Mul / CMul
    ("nn.Add", {}, "missing tensor field 'bias'"),
    ("nn.Add", dict(bias=torch.zeros(2, 2), scalar=True),
     "field 'bias' = a FloatTensor of size 2x2: should be 1-dimensional"),
    ("nn.Mul", dict(weight=torch.zeros(1, 1)), "field 'weight' = a FloatTensor of size 1x1: should be 1-dimensional"),
    ("nn.Mul", dict(weight=torch.zeros(0)), "field 'weight' = an empty FloatTensor"),
    ("nn.CMul", dict(weight=torch.ones(3, dtype=torch.uint8)), "field 'weight' = a ByteTensor of size 3"),
    ("nn.CMul", dict(weight=3.0), "field 'weight' = 3: should be a tensor"),
    # Bilinear: weight out x in1 x in2, bias (optional) of out elements
    ("nn.Bilinear", dict(weight=torch.zeros(3, 4)),
     "field 'weight' = a FloatTensor of size 3x4: should be 3-dimensional"),
    ("nn.Bilinear", dict(weight=torch.zeros(3, 4, 5), bias=torch.zeros(4)),
     "field 'bias' = a FloatTensor of size 4: should have 3"),
    ("nn.Bilinear", dict(weight=torch.zeros(3, 4, 5), bias=torch.zeros(0)), "field 'bias' = an empty FloatTensor"),
    # Cosine / Euclidean: a 2-D weight
    ("nn.Cosine", dict(weight=torch.zeros(5)), "field 'weight' = a FloatTensor of size 5: should be 2-dimensional"),
    ("nn.Euclidean", dict(weight=torch.zeros(2, 3, dtype=torch.float64)[:, :0]),
     "field 'weight' = an empty DoubleTensor"),
    # scalar fields of the table / selection layers
    ("nn.Replicate", {}, "missing field 'nfeatures'"),
    ("nn.Replicate", dict(nfeatures=float("inf")), "field 'nfeatures' = inf: should be an integer"),
    ("nn.Replicate", dict(nfeatures=3, dim=0), r"field 'dim' = 0: should be an integer in \[1, "),
    ("nn.Replicate", dict(nfeatures=3, ndim="2"), "field 'ndim' = '2': should be an integer"),
    ("nn.MixtureTable", dict(dim=-1), r"field 'dim' = -1: should be an integer in \[1, "),
    ("nn.PairwiseDistance", dict(norm=0), "field 'norm' = 0: should be a positive number"),
    ("nn.PairwiseDistance", dict(norm=t7.LuaTable()), "field 'norm' = .*: should be a number"),
    ("nn.Index", {}, "missing field 'dimension'"),
    ("nn.Index", dict(dimension=1.5), "field 'dimension' = 1.5: should be an integer"),
])
def test_invalid_fields_are_refused_naming_them(typename, fields, message):
    fields = {k: v for k, v in fields.items() if v is not None}  # None: the field left out
    with pytest.raises(LuaModelError, match=rf"^{typename.replace('.', '[.]')} at model: " + message):
        m(typename, **fields)


def test_invalid_field_deep_in_a_model_is_named_by_its_path():
    seq = lua_module("nn.Sequential", modules=t7.LuaList([
        lua_module("nn.LookupTable", weight=torch.zeros(5, 2)),
        lua_module("nn.TemporalConvolution", **dict(CONV, weight=torch.zeros(4, 3)))]))
    with pytest.raises(LuaModelError, match=r"nn\.TemporalConvolution at model\.modules\[2\]: field 'weight' = "
                                            r"a FloatTensor of size 4x3: should be of size 3x4"):
        from_lua(seq)


def test_what_lua_accepts_is_accepted():
    """Lua reads these as they are: maxNorm/normType false (`if not self.maxNorm`, `normType or 2`),
    paddingValue false (`or 0`), biases by their element count, a Mul weight of several elements
    (weight[1]), a Bilinear without bias, flags of any value (`if self.transA`)."""
    lt = m("nn.LookupTable", weight=torch.arange(6.0).reshape(3, 2), maxNorm=False, normType=False,
           paddingValue=False)
    assert lt.max_norm is None and lt.padding_value == 0
    assert lt(torch.tensor([3])).tolist() == [[4.0, 5.0]]
    conv = m("nn.TemporalConvolution", **dict(CONV, bias=torch.tensor([[1.0], [2.0], [3.0]])))
    assert conv(torch.zeros(2, 2)).tolist() == [[1.0, 2.0, 3.0]]
    assert m("nn.Mul", weight=torch.tensor([2.0, 7.0]))(torch.ones(2)).tolist() == [2.0, 2.0]
    bil = m("nn.Bilinear", weight=torch.ones(1, 2, 2))
    assert bil.bias is None and bil([torch.ones(1, 2), torch.ones(1, 2)]).tolist() == [[4.0]]
    mm = m("nn.MM", transA=0)  # 0 is true in Lua
    a, b = torch.randn(3, 2), torch.randn(3, 4)
    assert torch.allclose(mm([a, b]), a.t() @ b)


def test_chain_of_similarity_layers_is_checked_at_conversion():
    seq = lua_module("nn.Sequential", modules=t7.LuaList([
        lua_module("nn.Cosine", weight=torch.zeros(4, 5)), lua_module("nn.Euclidean", weight=torch.zeros(3, 2))]))
    with pytest.raises(LuaModelError, match=r"nn\.Euclidean at model\.modules\[2\]: takes 3 planes "
                                            r"\(inputSize, weight:size\(1\)\), but the module before it gives 4"):
        from_lua(seq)
    cos = from_lua(lua_module("nn.Cosine", weight=torch.zeros(4, 5)))
    assert cos.lua_planes(5) == 4 and cos.lua_planes(None) == 4


def test_forward_errors_name_the_module_path_and_what_it_expects():
    seq = from_lua(lua_module("nn.Sequential", modules=t7.LuaList([
        lua_module("nn.TemporalConvolution", **CONV), lua_module("nn.LookupTable", weight=torch.zeros(3, 2))])))
    with pytest.raises(LuaInputError, match=r"nn\.TemporalConvolution at model\.modules\[1\]: input frame size "
                                            r"is 5, expected 2"):
        seq(torch.zeros(4, 5))
    lt = from_lua(lua_module("nn.Sequential", modules=t7.LuaList([lua_module("nn.LookupTable", weight=W32)])))
    with pytest.raises(LuaInputError, match=r"nn\.LookupTable at model\.modules\[1\]: index 4 is outside 1\.\.3"):
        lt(torch.tensor([4]))
    add = from_lua(lua_module("nn.Add", bias=torch.zeros(3)))
    with pytest.raises(LuaForwardError, match=r"nn\.Add at model: .*\(input: 2x4; expected: a tensor of size 3 "
                                              r"\(the bias\) or a batch of them \(3 elements per sample\)\)"):
        add(torch.zeros(2, 4))


def test_mixture_table_used_with_table_experts_refuses_a_tensor_of_experts():
    mix = m("nn.MixtureTable", dim=2, table=True)  # as Lua saves it after a forward with a table of experts
    gater = torch.tensor([[0.25, 0.75]])
    assert mix([gater, [torch.ones(1, 3), 3 * torch.ones(1, 3)]]).tolist() == [[2.5, 2.5, 2.5]]
    with pytest.raises(LuaInputError, match="field 'table' is true"):
        mix([gater, torch.ones(1, 2, 3)])


def test_chain_of_temporal_layers_is_checked_at_conversion():
    """LookupTable -> TemporalConvolution -> TemporalMaxPooling -> TemporalConvolution: each temporal layer takes
    the frame size (features) the layer before it gives."""
    conv2 = lua_module("nn.TemporalConvolution", inputFrameSize=3, outputFrameSize=2, kW=1, dW=1,
                       weight=torch.zeros(2, 3), bias=torch.zeros(2))
    chain = [lua_module("nn.LookupTable", weight=torch.zeros(5, 2)), lua_module("nn.TemporalConvolution", **CONV),
             lua_module("nn.TemporalMaxPooling", kW=2), conv2]
    seq = from_lua(lua_module("nn.Sequential", modules=t7.LuaList(chain)))
    assert seq(torch.tensor([[1, 2, 3, 4, 5]])).shape == (1, 2, 2)
    swapped = lua_module("nn.Sequential", modules=t7.LuaList([chain[0], conv2, chain[2], chain[1]]))
    with pytest.raises(LuaModelError, match=r"nn\.TemporalConvolution at model\.modules\[2\]: takes 3 planes "
                                            r"\(inputFrameSize\), but the module before it gives 2"):
        from_lua(swapped)
