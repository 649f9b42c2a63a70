"""fbresnet_port.lua_nn.criterions against Lua Torch (../shared/reference/zoo_criterions) and by hand.

Every fixture criterion (saved by Lua, converted with ``from_lua``): the loss in float64 against Lua's
``%.17g`` value, in float32 against the float criterion's own ``output``, and the float64 gradInput
(autograd) against Lua's ``backward``; the export back to Lua. Semantics the fixtures do not cover
(ignoreIndex, one-sample input, repeatTarget, ties, error messages) are checked against hand-computed
values or PyTorch's own loss functions.
"""
from __future__ import annotations

import functools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import reference
from fbresnet_port import t7
from fbresnet_port.errors import UserError
from fbresnet_port.lua_nn import LuaModelError, from_lua, lua_module, to_lua
from fbresnet_port.lua_nn.criterions import (LuaAbsCriterion, LuaBCECriterion, LuaClassNLLCriterion,
                                              LuaCosineEmbeddingCriterion, LuaCriterionError,
                                              LuaCrossEntropyCriterion, LuaHingeEmbeddingCriterion,
                                              LuaL1HingeEmbeddingCriterion, LuaMarginRankingCriterion,
                                              LuaMSECriterion, LuaMultiCriterion, LuaMultiLabelMarginCriterion,
                                              LuaMultiLabelSoftMarginCriterion, LuaMultiMarginCriterion,
                                              LuaParallelCriterion, LuaSmoothL1Criterion, LuaSoftMarginCriterion,
                                              LuaSpatialClassNLLCriterion, LuaWeightedMSECriterion)
from zoo_fixtures import case_names

CASE = "zoo_criterions"


def _names() -> list[str]:
    return case_names(CASE, "criterions")


@functools.lru_cache(maxsize=None)
def _entries() -> dict[str, dict]:
    data = json.loads(reference(CASE, "manifest.json").read_text())
    return {c["name"]: c for c in data["criterions"]}


@functools.lru_cache(maxsize=None)
def _load(name: str):
    return t7.load(reference(CASE, name))


def fixture(name: str) -> tuple[dict, dict]:
    """The manifest entry and its files: criterion, input, target, loss_f64, gradInput_f64."""
    entry = _entries()[name]
    files = {}
    for fname in entry["files"]:
        key = fname[len(name) + 1:-len(".t7")]
        files[key] = _load(fname)
    return entry, files


def as_double(x):
    if isinstance(x, (list, tuple)):
        return [as_double(v) for v in x]
    return x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def requiring_grad(x):
    """Fresh leaf copies of the float tensors of a (nested) list, structure kept."""
    if isinstance(x, (list, tuple)):
        return [requiring_grad(v) for v in x]
    return x.detach().clone().requires_grad_(True)


def flat(x) -> list[torch.Tensor]:
    return [t for v in x for t in flat(v)] if isinstance(x, (list, tuple)) else [x]


def assert_grad_close(actual, expected, rtol: float, what: str) -> None:
    actual, expected = flat(actual), flat(expected)
    assert len(actual) == len(expected), what
    scale = max(e.abs().max().item() for e in expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
        err = (a.double() - e.double()).abs().max().item()
        assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol} * max|ref| ({scale:.3g})"


# ----------------------------------------------------------------------------------------------
# Lua fixtures
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", _names())
def test_fixture_loss_float64(name):
    entry, f = fixture(name)
    crit = from_lua(f["criterion"])
    assert crit.lua_typename == entry["class"] == str(crit)
    loss = crit(as_double(f["input"]), as_double(f["target"]))
    assert loss.dtype == torch.float64 and loss.dim() == 0
    expected = float(entry["loss_f64_repr"])
    assert expected == pytest.approx(f["loss_f64"], rel=1e-15)
    assert abs(loss.item() - expected) <= 1e-12 * abs(expected), (loss.item(), expected)
    assert float(crit.output) == loss.item()


@pytest.mark.parametrize("name", _names())
def test_fixture_loss_float32(name):
    entry, f = fixture(name)
    crit = from_lua(f["criterion"])
    loss = crit(f["input"], f["target"])
    assert loss.dtype == torch.float32
    lua_output = f["criterion"]["output"]  # the float criterion's own forward result
    assert lua_output == pytest.approx(entry.get("loss_f32", lua_output), rel=1e-6)
    assert abs(loss.item() - lua_output) <= 1e-5 * abs(lua_output)


@pytest.mark.parametrize("name", _names())
def test_fixture_grad_input_float64(name):
    _, f = fixture(name)
    ref = f["gradInput_f64"]
    # stored as doubles: an exact port agrees to rounding; stored rounded to float32: to 1e-6
    rtol = 1e-10 if all(t.dtype == torch.float64 for t in flat(ref)) else 1e-6
    crit = from_lua(f["criterion"]).double()
    x = requiring_grad(as_double(f["input"]))
    inputs = flat(x)
    crit(x, as_double(f["target"])).backward()
    assert_grad_close([t.grad for t in inputs], ref, rtol, f"{name} gradInput")
    # Lua's crit:backward(input, target) form gives the same
    assert_grad_close(crit.backward(as_double(f["input"]), as_double(f["target"])), ref, rtol, f"{name} backward()")


@pytest.mark.parametrize("name", _names())
def test_fixture_export_round_trip(name):
    """to_lua -> .t7 bytes -> from_lua keeps every field Lua's methods read, and the loss."""
    _, f = fixture(name)
    crit = from_lua(f["criterion"])
    lua = f["criterion"]
    back = t7.load_bytes(t7.dumps(to_lua(crit)))
    assert back.typename == lua.typename
    # buffers Lua's updateOutput creates on first use (not needed by a fresh object)
    lazy = {"output_tensor", "buffer", "_idx", "_outputs", "w", "w1", "w22", "w32", "_buffer1", "_buffer2",
            "_output", "dist", "mask", "target_tensor", "ty", "_y"}
    assert set(lua.fields) - lazy <= set(back.fields)
    for key in ("sizeAverage", "margin", "p", "ignoreIndex", "repeatTarget", "oldSizeAverage"):
        assert back.get(key) == lua.get(key), key
    if isinstance(lua.get("weights"), torch.Tensor):
        assert torch.equal(back["weights"], lua["weights"])
    x, y = f["input"], f["target"]
    assert from_lua(back)(x, y).item() == crit(x, y).item()


# ----------------------------------------------------------------------------------------------
# Semantics not covered by the fixtures
# ----------------------------------------------------------------------------------------------

def logp(n: int = 4, c: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(n, c, generator=g, dtype=torch.float64), 1)


def test_class_nll_ignore_index_and_weights_match_torch():
    x = logp(6, 4).requires_grad_(True)
    w = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    target = torch.tensor([1, 2, 2, 4, 3, 2])  # 1-based; class 2 is ignored
    crit = LuaClassNLLCriterion(weights=w, ignoreIndex=2)
    loss = crit(x, target)
    ref = F.nll_loss(x, target - 1, weight=w, ignore_index=1)  # mean over the kept samples' weights
    # by hand: kept rows 0, 3, 4 with classes 1, 4, 3
    by_hand = -(0.5 * x[0, 0] + 3.0 * x[3, 3] + 1.0 * x[4, 2]) / (0.5 + 3.0 + 1.0)
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-14)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-14)
    (g,) = torch.autograd.grad(loss, x)
    expected = torch.zeros_like(x)
    expected[0, 0], expected[3, 3], expected[4, 2] = -0.5 / 4.5, -3.0 / 4.5, -1.0 / 4.5
    assert torch.allclose(g, expected, rtol=0, atol=1e-15)

    crit.sizeAverage = False
    assert crit(x, target).item() == pytest.approx(-(0.5 * x[0, 0] + 3 * x[3, 3] + x[4, 2]).item(), rel=1e-14)


def test_class_nll_all_ignored_gives_zero_loss_and_gradient():
    x = logp(3, 4).requires_grad_(True)
    crit = LuaClassNLLCriterion(ignoreIndex=3)
    loss = crit(x, torch.tensor([3, 3, 3]))
    assert loss.item() == 0
    loss.backward()
    assert torch.count_nonzero(x.grad) == 0


def test_class_nll_one_sample_input():
    """1-D input: one sample, target a number (or a 1-element tensor); gradInput -1 or -w (THNN)."""
    x = logp(1, 5)[0].requires_grad_(True)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    for size_average, weights, grad in [(True, None, -1.0), (False, None, -1.0), (True, w, -1.0),
                                        (False, w, -3.0)]:
        crit = LuaClassNLLCriterion(weights=weights, sizeAverage=size_average)
        loss = crit(x, 3)
        scale = 1.0 if weights is None or size_average else 3.0
        assert loss.item() == pytest.approx(-scale * x[2].item(), rel=1e-15)
        assert crit(x, torch.tensor([3])).item() == loss.item()
        (g,) = torch.autograd.grad(loss, x)
        assert g.tolist() == [0, 0, grad, 0, 0]


def test_spatial_class_nll_matches_torch():
    x = torch.log_softmax(torch.randn(2, 3, 4, 5, dtype=torch.float64), 1).requires_grad_(True)
    t = torch.randint(1, 4, (2, 4, 5))
    w = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    for size_average in (True, False):
        loss = LuaSpatialClassNLLCriterion(weights=w, sizeAverage=size_average)(x, t)
        ref = F.nll_loss(x, t - 1, weight=w, reduction="mean" if size_average else "sum")
        assert loss.item() == pytest.approx(ref.item(), rel=1e-14)
        g, gr = torch.autograd.grad(loss, x)[0], torch.autograd.grad(ref, x)[0]
        assert torch.allclose(g, gr, rtol=1e-14, atol=0)


def test_cross_entropy_squeezes_one_sample_batch_and_follows_size_average():
    x = torch.randn(1, 6, dtype=torch.float64)
    crit = LuaCrossEntropyCriterion()
    expected = F.cross_entropy(x, torch.tensor([3]))
    assert crit(x, torch.tensor([[4]])).item() == pytest.approx(expected.item(), rel=1e-14)
    xb = torch.randn(5, 6, 1, 1, dtype=torch.float64)  # squeezed to 5 x 6
    t = torch.tensor([1, 6, 2, 2, 3])
    assert crit(xb, t).item() == pytest.approx(F.cross_entropy(xb[:, :, 0, 0], t - 1).item(), rel=1e-14)
    crit.sizeAverage = False  # Lua: a changed sizeAverage is passed on to nll
    assert crit(xb, t).item() == pytest.approx(
        F.cross_entropy(xb[:, :, 0, 0], t - 1, reduction="sum").item(), rel=1e-14)
    assert crit.nll.sizeAverage is False
    with pytest.raises(LuaCriterionError, match="squeezes"):
        crit(torch.randn(1, 1), torch.tensor([1]))


def test_parallel_criterion_repeat_target():
    x1 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 4, dtype=torch.float64)
    crit = LuaParallelCriterion(repeatTarget=True).add(LuaMSECriterion(), 0.5).add(LuaAbsCriterion(sizeAverage=False), 2)
    loss = crit([x1, x2], y)
    expected = 0.5 * ((x1 - y) ** 2).mean() + 2 * (x2 - y).abs().sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-14)
    loss.backward()
    assert torch.allclose(x1.grad, 0.5 * 2 * (x1 - y).detach() / 12, rtol=1e-14, atol=0)
    assert torch.allclose(x2.grad, 2 * torch.sign(x2 - y).detach(), rtol=0, atol=0)
    # without repeatTarget each criterion gets its own target; a tensor target is an error
    plain = LuaParallelCriterion().add(LuaMSECriterion()).add(LuaClassNLLCriterion(), 3)
    xp = logp(3, 4)
    assert plain([x1, xp], [y, torch.tensor([1, 2, 4])]).item() == pytest.approx(
        (F.mse_loss(x1, y) + 3 * F.nll_loss(xp, torch.tensor([0, 1, 3]))).item(), rel=1e-14)
    with pytest.raises(LuaCriterionError, match="repeatTarget"):
        plain([x1, xp], y)
    assert str(plain) == "nn.ParallelCriterion"


def test_parallel_criterion_from_lua_fields():
    lua = lua_module("nn.ParallelCriterion", criterions=t7.LuaList([
        t7.TorchObject("nn.MSECriterion", {"sizeAverage": False, "output": 0}),
        t7.TorchObject("nn.SmoothL1Criterion", {"sizeAverage": True, "output": 0})]),
        weights=t7.LuaList([2, 0.25]), repeatTarget=True)
    crit = from_lua(lua)
    x, y = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    expected = 2 * F.mse_loss(x, y, reduction="sum") + 0.25 * F.smooth_l1_loss(x, y)
    assert crit([x, x], y).item() == pytest.approx(expected.item(), rel=1e-14)


def test_abs_criterion_gradient_at_ties_is_positive():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1.0, 3.0, 3.0, 0.0], dtype=torch.float64)
    LuaAbsCriterion()(x, t).backward()
    assert x.grad.tolist() == [0.25, -0.25, 0.25, 0.25]  # THNN: (x - t) >= 0 ? norm : -norm


def test_hinge_embedding_gradient_at_the_margin_is_lua_s():
    x = torch.tensor([1.5, 2.0, 0.3, -0.2], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
    loss = LuaHingeEmbeddingCriterion(margin=1.5)(x, y)
    assert loss.item() == pytest.approx((0 + 0 + 0.3 - 0.2) / 4, rel=1e-14)
    loss.backward()
    assert x.grad.tolist() == [-0.25, 0.0, 0.25, 0.25]  # Lua: y, zeroed only where y = -1 and x > margin


def test_bce_without_weights_and_boundary_gradient():
    x = torch.tensor([[0.2, 0.9], [0.5, 0.35]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    loss = LuaBCECriterion()(x, t)
    assert loss.item() == pytest.approx(F.binary_cross_entropy(x, t).item(), rel=1e-10)
    # THNN's gradient -(t - x) / ((1 - x + eps)(x + eps)) / n is 0 at x = t = 0 or 1 (not the eps terms)
    xb = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64, requires_grad=True)
    tb = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    loss = LuaBCECriterion()(xb, tb)
    eps = 1e-12
    expected = -(math.log(1 + eps) + math.log(1 + eps) + math.log(0.5 + eps)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-14)
    loss.backward()
    assert xb.grad[:2].tolist() == [0.0, 0.0]
    assert xb.grad[2].item() == pytest.approx(-0.5 / (0.5 + eps) ** 2 / 3, rel=1e-14)
    with pytest.raises(LuaCriterionError, match="between 0 and 1"):
        LuaBCECriterion()(torch.tensor([1.5]), torch.tensor([1.0]))


def test_bce_weights_on_one_sample():
    w = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    x = torch.tensor([0.3, 0.6, 0.8], dtype=torch.float64)
    t = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    loss = LuaBCECriterion(weights=w, sizeAverage=False)(x, t)
    assert loss.item() == pytest.approx(F.binary_cross_entropy(x, t, weight=w, reduction="sum").item(), rel=1e-10)


def test_multi_margin_p2_weights_margin_match_torch():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1, 4, 2, 2, 3])
    w = torch.tensor([1.0, 0.5, 2.0, 1.5], dtype=torch.float64)
    loss = LuaMultiMarginCriterion(p=2, margin=0.7, weights=w)(x, t)
    ref = F.multi_margin_loss(x, t - 1, p=2, margin=0.7, weight=w)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-14)
    (g,) = torch.autograd.grad(loss, x)
    (gr,) = torch.autograd.grad(ref, x)
    assert torch.allclose(g, gr, rtol=1e-12, atol=1e-15)
    one = LuaMultiMarginCriterion()(x[1].detach(), 4)  # one sample, number target
    assert one.item() == pytest.approx(F.multi_margin_loss(x[1:2].detach(), torch.tensor([3])).item(), rel=1e-14)


def test_multilabel_margin_by_hand():
    x = torch.tensor([[0.1, 0.2, 0.4, 0.8], [0.5, -0.3, 0.0, 0.2]], dtype=torch.float64)
    t = torch.tensor([[4, 1, 0, 2], [2, 0, 0, 0]])  # classes {4, 1} (the 2 after the 0 is ignored), {2}
    # row 1: targets 4, 1 vs non-targets 2, 3: (1-0.8+0.2)+(1-0.8+0.4)+(1-0.1+0.2)+(1-0.1+0.4) = 3.4
    # row 2: target 2 vs 1, 3, 4: (1+0.3+0.5)+(1+0.3+0)+(1+0.3+0.2) = 4.6
    crit = LuaMultiLabelMarginCriterion()
    assert crit(x, t).item() == pytest.approx((3.4 / 4 + 4.6 / 4) / 2, rel=1e-14)
    assert crit(x[0], t[0]).item() == pytest.approx(3.4 / 4, rel=1e-14)


def test_pair_criterions_by_hand():
    a = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)
    b = torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)
    cos = (2 + 0 + 2) / (3 * math.sqrt(5))
    crit = LuaCosineEmbeddingCriterion(margin=0.5)
    assert crit([a, b], 1).item() == pytest.approx(1 - cos, rel=1e-11)  # one sample: 1-D inputs, number y
    assert crit([a, b], -1).item() == pytest.approx(cos - 0.5, rel=1e-11)
    assert crit([a, -b], -1).item() == 0
    l1 = LuaL1HingeEmbeddingCriterion(margin=6)
    assert l1([a, b], 1).item() == 4 and l1([a, b], -1).item() == 2 and l1([a, -b], -1).item() == 0
    x1 = torch.randn(6, dtype=torch.float64)
    x2 = torch.randn(6, dtype=torch.float64)
    y = torch.tensor([1.0, -1, 1, -1, -1, 1], dtype=torch.float64)
    rank = LuaMarginRankingCriterion(margin=0.3)
    assert rank([x1, x2], y).item() == pytest.approx(F.margin_ranking_loss(x1, x2, y, margin=0.3).item(), rel=1e-14)
    assert rank([x1, x2], -1).item() == pytest.approx(max(0.0, (x1[0] - x2[0]).item() + 0.3), rel=1e-14)


def test_more_elementwise_criterions_match_torch():
    x = torch.randn(3, 5, dtype=torch.float64)
    y = torch.randn(3, 5, dtype=torch.float64)
    sign = torch.where(y > 0, 1.0, -1.0).double()
    assert LuaSoftMarginCriterion()(x, sign).item() == pytest.approx(F.soft_margin_loss(x, sign).item(), rel=1e-14)
    assert LuaSmoothL1Criterion(sizeAverage=False)(3 * x, y).item() == pytest.approx(
        F.smooth_l1_loss(3 * x, y, reduction="sum").item(), rel=1e-14)
    assert LuaHingeEmbeddingCriterion(margin=0.4)(x.reshape(-1), sign.reshape(-1)).item() == pytest.approx(
        F.hinge_embedding_loss(x.reshape(-1), sign.reshape(-1), margin=0.4).item(), rel=1e-14)
    w = torch.rand(5, dtype=torch.float64)
    t01 = (y > 0).double()
    assert LuaMultiLabelSoftMarginCriterion(weights=w)(x, t01).item() == pytest.approx(
        F.multilabel_soft_margin_loss(x, t01, weight=w).item(), rel=1e-13)
    # WeightedMSE: weight per sample row (one dimension less than the input)
    assert LuaWeightedMSECriterion(weights=w)(x, y).item() == pytest.approx(F.mse_loss(x, y * w).item(), rel=1e-14)
    # MultiCriterion of table criterions: every child gets the whole list
    multi = LuaMultiCriterion().add(LuaCosineEmbeddingCriterion(margin=0.1), 2).add(
        LuaCosineEmbeddingCriterion(margin=0.3), 0.5)
    y3 = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    x2 = x.flip(0) + 0.5 * x
    expected = (2 * F.cosine_embedding_loss(x, x2, y3, margin=0.1)
                + 0.5 * F.cosine_embedding_loss(x, x2, y3, margin=0.3))
    assert multi([x, x2], y3).item() == pytest.approx(expected.item(), rel=1e-10)
    assert str(multi) == "nn.MultiCriterion"


def test_float32_input_with_float_weights_stays_float32():
    crit = LuaClassNLLCriterion(weights=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    x = torch.log_softmax(torch.randn(2, 3), 1)
    assert crit(x, torch.tensor([1, 3])).dtype == torch.float32


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------

def test_user_errors_are_clear():
    with pytest.raises(LuaCriterionError, match=r"target class 0 out of range 1\.\.5 .*1-based"):
        LuaClassNLLCriterion()(logp(2, 5), torch.tensor([1, 0]))
    with pytest.raises(LuaCriterionError, match="size mismatch"):
        LuaMSECriterion()(torch.zeros(3), torch.zeros(4))
    with pytest.raises(LuaCriterionError, match="same size"):
        from_lua(t7.TorchObject("nn.DistKLDivCriterion", {"sizeAverage": True}))(torch.zeros(2, 2), torch.zeros(4))
    with pytest.raises(LuaCriterionError, match="list"):
        LuaCosineEmbeddingCriterion()(torch.zeros(2, 3), torch.ones(2))
    with pytest.raises(LuaModelError, match=r"nn\.CrossEntropyCriterion at model: missing field 'nll'"):
        from_lua(t7.TorchObject("nn.CrossEntropyCriterion", {"sizeAverage": True}))
    assert issubclass(LuaCriterionError, UserError)


# ----------------------------------------------------------------------------------------------
# Validation at conversion (issue #15)
# ----------------------------------------------------------------------------------------------

def crit(typename: str, **fields):
    return t7.TorchObject(typename, t7.LuaTable(dict({"output": 0, "gradInput": torch.zeros(0)}, **fields)))


def mse(**fields):
    return crit("nn.MSECriterion", **dict({"sizeAverage": True}, **fields))


def double_storage(values):
    return t7.Storage(torch.tensor(values, dtype=torch.float64), "torch.DoubleStorage")


@pytest.mark.parametrize("typename, fields, message", [
    # sizeAverage goes to a C bool (THNN) or is compared with true: only true/false/nil mean something
    ("nn.MSECriterion", dict(sizeAverage="yes"), "field 'sizeAverage' = 'yes': should be true or false"),
    ("nn.AbsCriterion", dict(sizeAverage=0), "field 'sizeAverage' = 0: should be true or false"),
    ("nn.HingeEmbeddingCriterion", dict(sizeAverage=t7.LuaTable()), "field 'sizeAverage' = .*: should be true or false"),
    # weights: 1-D, floating, not empty (nil = none); WeightedMSECriterion's weight is required
    ("nn.ClassNLLCriterion", dict(weights=torch.ones(2, 3)),
     "field 'weights' = a FloatTensor of size 2x3: should be 1-dim"),
    ("nn.ClassNLLCriterion", dict(weights=torch.zeros(0)),
     "field 'weights' = an empty FloatTensor: should be a non-empty"),
    ("nn.ClassNLLCriterion", dict(weights=torch.ones(3, dtype=torch.long)),
     "field 'weights' = a LongTensor of size 3: should be a floating-point tensor"),
    ("nn.BCECriterion", dict(weights=2.0), "field 'weights' = 2: should be a tensor"),
    ("nn.SpatialClassNLLCriterion", dict(weights=torch.ones(3, dtype=torch.bool)), "field 'weights' = a BoolTensor"),
    ("nn.WeightedMSECriterion", {}, "missing tensor field 'weight'"),
    ("nn.WeightedMSECriterion", dict(weight=torch.zeros(0)), "field 'weight' = an empty FloatTensor"),
    # numbers
    ("nn.ClassNLLCriterion", dict(ignoreIndex=float("nan")), "field 'ignoreIndex' = nan: should be an integer"),
    ("nn.ClassNLLCriterion", dict(ignoreIndex=2.5), "field 'ignoreIndex' = 2.5: should be an integer"),
    ("nn.ClassNLLCriterion", dict(ignoreIndex=2.0 ** 70), "field 'ignoreIndex' = .*: should be an integer in"),
    ("nn.MarginCriterion", dict(margin="1"), "field 'margin' = '1': should be a number"),
    ("nn.HingeEmbeddingCriterion", dict(margin=float("inf")), "field 'margin' = inf: should be a finite number"),
    ("nn.CosineEmbeddingCriterion", dict(margin=True), "field 'margin' = true: should be a number"),
    ("nn.MultiMarginCriterion", dict(p=1.5), "field 'p' = 1.5: should be an integer"),
    # CrossEntropyCriterion runs its lsm and nll
    ("nn.CrossEntropyCriterion", dict(nll=crit("nn.ClassNLLCriterion")), "missing field 'lsm' \\(its nn.LogSoftMax\\)"),
    ("nn.CrossEntropyCriterion", dict(nll=crit("nn.ClassNLLCriterion"), lsm=lua_module("nn.SoftMax")),
     "field 'lsm' = a.? nn.SoftMax object: should be an nn.LogSoftMax"),
    ("nn.CrossEntropyCriterion", dict(nll=mse(), lsm=lua_module("nn.LogSoftMax")),
     "field 'nll' = a.? nn.MSECriterion object: should be an nn.ClassNLLCriterion"),
    ("nn.CrossEntropyCriterion", dict(nll=crit("nn.ClassNLLCriterion"), lsm=lua_module("nn.LogSoftMax"),
                                      sizeAverage="no"), "field 'sizeAverage' = 'no': should be true or false"),
    ("nn.MultiLabelSoftMarginCriterion", {}, "missing field 'sigmoid' \\(its nn.Sigmoid\\)"),
    ("nn.MultiLabelSoftMarginCriterion", dict(sigmoid=lua_module("nn.Tanh")), "field 'sigmoid' = a.? nn.Tanh object"),
    # criterion containers: a list of criterions and one finite number per criterion
    ("nn.ParallelCriterion", dict(criterions=3), "field 'criterions' = 3: should be a Lua list of modules"),
    ("nn.ParallelCriterion", {}, "missing field 'criterions'"),
    ("nn.ParallelCriterion", dict(criterions=t7.LuaTable({1: mse(), 3: mse()}), weights=t7.LuaList([1, 1])),
     "field 'criterions' = .*: should be a Lua list of modules \\(keys 1..n, no holes\\)"),
    ("nn.ParallelCriterion", dict(criterions=t7.LuaList([mse(), lua_module("nn.Tanh")]), weights=t7.LuaList([1, 2])),
     "field 'criterions\\[2\\]' = a.? nn.Tanh object: should be a criterion"),
    ("nn.ParallelCriterion", dict(criterions=t7.LuaList([mse()])),
     "missing field 'weights' \\(one number per criterion\\)"),
    ("nn.ParallelCriterion", dict(criterions=t7.LuaList([mse(), mse()]), weights=t7.LuaList([1])),
     "field 'weights' = .*: should hold 2 numbers"),
    ("nn.ParallelCriterion", dict(criterions=t7.LuaList([mse()]), weights=t7.LuaList([float("nan")])),
     "field 'weights\\[1\\]' = nan: should be a finite number"),
    ("nn.ParallelCriterion", dict(criterions=t7.LuaList([mse()]), weights=t7.LuaList(["2"])),
     "field 'weights\\[1\\]' = '2': should be a finite number"),
    ("nn.ParallelCriterion", dict(criterions=t7.LuaList([mse()]), weights=3), "field 'weights' = 3: should be a list"),
    ("nn.MultiCriterion", dict(criterions=t7.LuaList([mse()]), weights=double_storage([])),
     "field 'weights' = .*: should hold 1 number \\(one per criterion\\)"),
])
def test_invalid_criterion_fields_are_refused_naming_them(typename, fields, message):
    with pytest.raises(LuaModelError, match=rf"^{typename.replace('.', '[.]')} at model: " + message):
        from_lua(crit(typename, **fields))


def test_invalid_child_criterion_is_named_by_its_path():
    lua = crit("nn.ParallelCriterion", criterions=t7.LuaList([mse(), mse(sizeAverage=1)]),
               weights=t7.LuaList([1, 1]))
    with pytest.raises(LuaModelError, match=r"^nn\.MSECriterion at model\.criterions\[2\]: field 'sizeAverage' = 1"):
        from_lua(lua)


def test_criterion_container_holding_itself_is_refused():
    lua = crit("nn.ParallelCriterion", weights=t7.LuaList([1]))
    lua.fields["criterions"] = t7.LuaList([lua])
    with pytest.raises(LuaModelError,
                       match=r"nn\.ParallelCriterion at model: contains itself \(criterions\[1\] is model\)"):
        from_lua(lua)


def test_what_lua_accepts_in_criterions_is_accepted():
    """Lua reads only the first #criterions weights and any numeric storage; sizeAverage nil is the default;
    MultiMarginCriterion's C p squares for any p other than 1 (THNN's `p == 1 ? z : z*z`)."""
    parallel = from_lua(crit("nn.ParallelCriterion", criterions=t7.LuaList([mse()]), weights=t7.LuaList([2, 5]),
                             repeatTarget=1))
    assert parallel.weights == [2.0] and parallel.repeatTarget is True
    x, y = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    assert parallel([x], y).item() == 2.0
    multi = from_lua(crit("nn.MultiCriterion", criterions=t7.LuaList([mse(), mse()]),
                          weights=t7.Storage(torch.tensor([1, 3]), "torch.LongStorage")))
    assert multi(x, y).item() == 4.0
    assert from_lua(crit("nn.MSECriterion")).size_average
    scores = torch.tensor([[0.0, 0.5]], dtype=torch.float64)
    p3 = from_lua(crit("nn.MultiMarginCriterion", p=3, margin=1, sizeAverage=True))
    assert p3(scores, torch.tensor([1])).item() == pytest.approx(1.5 ** 2 / 2)
    empty = from_lua(crit("nn.ParallelCriterion", criterions=t7.LuaTable(), weights=t7.LuaTable()))
    assert len(empty.criterions) == 0


def test_criterion_errors_at_forward_name_the_path():
    lua = crit("nn.ParallelCriterion", criterions=t7.LuaList([mse(), crit("nn.ClassNLLCriterion")]),
               weights=t7.LuaList([1, 1]))
    parallel = from_lua(lua)
    with pytest.raises(LuaCriterionError, match=r"nn\.ClassNLLCriterion at model\.criterions\[2\]: target class 7 "
                                                r"out of range 1\.\.3"):
        parallel([torch.zeros(2), torch.zeros(2, 3)], [torch.zeros(2), torch.tensor([1, 7])])
