"""``convert --format python`` for the text/similarity layers (fbresnet_port.lua_nn.text) and the criterions
(fbresnet_port.lua_nn.criterions): the zoo_text fixtures and every zoo_criterions criterion, written as standalone
files and run in a fresh ``python -I`` without this package, give Lua's outputs, losses and gradients; the layers
the fixtures lack give, as generated code, what the converted modules give (forward and gradients).
"""
from __future__ import annotations

import json
import re

import pytest
import torch

import python_export
from conftest import reference
from fbresnet_port import t7
from fbresnet_port.lua_nn import from_lua, lua_module
from fbresnet_port.lua_nn.codegen import check_generated, generate_python
from zoo_fixtures import assert_close, case_names, leaves, tree_map

TEXT_CASES = case_names("zoo_text")


@pytest.mark.parametrize("case", TEXT_CASES)
def test_zoo_text_case_runs_standalone_as_lua(case, tmp_path):
    python_export.check_zoo_case("zoo_text", case, tmp_path)


# ----------------------------------------------------------------------------------------------
# Criterions: all the fixture criterions in one generated file (one ParallelCriterion), one subprocess
# ----------------------------------------------------------------------------------------------

def _criterion_fixtures() -> list[dict]:
    entries = json.loads(reference("zoo_criterions", "manifest.json").read_text())["criterions"]
    for e in entries:
        for part in ("criterion", "input", "target", "loss_f64", "gradInput_f64"):
            e[part] = t7.load(reference("zoo_criterions", f"{e['name']}_{part}.t7"))
    return entries


def test_zoo_criterions_run_standalone_as_lua(tmp_path):
    """A ParallelCriterion holding every fixture criterion (parallel and multi ones nested): the generated file's
    total loss is the sum of Lua's losses, and the gradient of each criterion's input is Lua's gradInput."""
    fixtures = _criterion_fixtures()
    crit = from_lua(lua_module("nn.ParallelCriterion", criterions=t7.LuaList([e["criterion"] for e in fixtures]),
                               weights=t7.LuaList([1] * len(fixtures)), gradInput=t7.LuaTable()))
    out_dir = python_export.export(crit, tmp_path / "out", class_name="ZooCriterions")
    source = (out_dir / "model.py").read_text()
    assert re.search(r"\n        loss = self\.\w+\(input\[0\], target\[0\]\)\n", source)  # one line per criterion
    # plain lists and tensors (the fixtures' tables are t7.LuaList, which the other process cannot import)
    inputs = [tree_map(torch.Tensor.clone, e["input"]) for e in fixtures]
    targets = [tree_map(torch.Tensor.clone, e["target"]) for e in fixtures]
    one = torch.ones((), dtype=torch.float64)
    run32, run64 = python_export.run_isolated(out_dir, [
        dict(input=inputs, target=targets, dtype="float32"),
        dict(input=inputs, target=targets, dtype="float64", grad_output=one)], tmp_path / "run")
    lua64 = sum(float(e["loss_f64"]) for e in fixtures)
    lua32 = sum(float(e["criterion"]["output"]) for e in fixtures)  # each float criterion's own forward
    assert abs(run64["output"].item() - lua64) <= 1e-12 * abs(lua64)
    assert run32["output"].dtype == torch.float32 and abs(run32["output"].item() - lua32) <= 1e-5 * abs(lua32)
    ref = [t for e in fixtures for t in leaves(e["gradInput_f64"])]
    assert len(run64["grad_input"]) == len(ref)
    for e in fixtures:  # the criterions' inputs in order, each a tensor or a table of tensors
        n = len(list(leaves(e["gradInput_f64"])))
        got, run64["grad_input"] = run64["grad_input"][:n], run64["grad_input"][n:]
        for g, r in zip(got, leaves(e["gradInput_f64"])):
            assert_close(g, r, 1e-6, f"{e['name']} gradInput")


def test_each_criterion_alone_gives_lua_s_loss():
    """Each fixture criterion as the model of a generated file (executed here): Lua's float64 loss."""
    for e in _criterion_fixtures():
        crit = from_lua(e["criterion"])
        built = check_generated(generate_python(crit, "Crit"), crit).double()
        x, y = tree_map(torch.Tensor.double, e["input"]), e["target"]
        assert built(x, y).item() == pytest.approx(float(e["loss_f64"]), rel=1e-12), e["name"]


# ----------------------------------------------------------------------------------------------
# Layers the fixtures lack: the generated code against the converted module
# ----------------------------------------------------------------------------------------------

def _params(**shapes: tuple[int, ...]) -> dict:
    g = torch.Generator().manual_seed(7)
    return {k: torch.randn(*s, generator=g) for k, s in shapes.items()}


IDX = torch.tensor([[3, 1, 4], [4, 4, 2]])
G = torch.Generator().manual_seed(3)
X23 = torch.randn(2, 3, generator=G)
X53 = torch.randn(5, 3, generator=G)
LAYERS = {
    "lookup_padding_maxnorm": (lua_module("nn.LookupTable", paddingValue=4, maxNorm=1.5, normType=1.0,
                                          shouldScaleGradByFreq=True, **_params(weight=(5, 3))), IDX),
    "temporal_subsampling": (lua_module("nn.TemporalSubSampling", inputFrameSize=3, kW=2, dW=2,
                                        **_params(weight=(3,), bias=(3,))), X53),
    "temporal_maxpool_batch": (lua_module("nn.TemporalMaxPooling", kW=2, dW=1), X53.reshape(1, 5, 3)),
    "add_scalar": (lua_module("nn.Add", scalar=True, **_params(bias=(1,))), X23),
    "add_per_sample": (lua_module("nn.Add", **_params(bias=(3,))), X23),
    "mul": (lua_module("nn.Mul", **_params(weight=(1,))), X23),
    "cmul_expand": (lua_module("nn.CMul", **_params(weight=(1, 3))), X23),
    "bilinear_no_bias": (lua_module("nn.Bilinear", **_params(weight=(2, 3, 3))), [X23, X23.flip(0)]),
    "mm_trans": (lua_module("nn.MM", transA=True), [X23, X23]),
    "mv": (lua_module("nn.MV"), [X53, X23[0]]),
    "replicate": (lua_module("nn.Replicate", nfeatures=4, dim=2, ndim=1), X23),
    "mixture_table": (lua_module("nn.MixtureTable"), [torch.softmax(X23[:, :2], 1), [X23, 2 * X23]]),
    "cosine": (lua_module("nn.Cosine", **_params(weight=(4, 3))), X23),
    "euclidean_vector": (lua_module("nn.Euclidean", **_params(weight=(3, 2))), X23[0]),
    "cosine_distance": (lua_module("nn.CosineDistance"), [X23, X23.flip(1)]),
    "dot_product": (lua_module("nn.DotProduct"), [X23, X23.flip(1)]),
    "pairwise_p15": (lua_module("nn.PairwiseDistance", norm=1.5), [X23, X23.flip(1)]),
    "index": (lua_module("nn.Index", dimension=2), [X53, torch.tensor([3, 1, 3])]),
    "masked_select": (lua_module("nn.MaskedSelect"), [X23, (X23 > 0).to(torch.uint8)]),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_generated_layer_computes_what_the_converted_module_computes(name):
    lua, x = LAYERS[name]
    model = from_lua(lua).double()
    built = check_generated(generate_python(model, "Layer"), model).double()
    outs, grads = [], []
    for m in (model, built):
        xi = tree_map(lambda t: t.double().requires_grad_(True) if t.is_floating_point() else t.clone(), x)
        out = m(xi)
        out.backward(torch.ones_like(out))
        outs.append(out.detach())
        grads.append([t.grad for t in leaves(xi) if t.is_floating_point()] + [p.grad for p in m.parameters()])
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(grads[0], grads[1]))


def test_lookup_table_standalone_takes_lua_s_1_based_indices(tmp_path):
    """A generated LookupTable in a fresh process: index 1 is the first row; paddingValue's row (index 2) is
    read but gets no gradient."""
    weight = torch.arange(8.0).reshape(4, 2)
    model = from_lua(lua_module("nn.LookupTable", weight=weight, paddingValue=2))
    out_dir = python_export.export(model, tmp_path / "out")
    source = (out_dir / "model.py").read_text()
    assert re.search(r"self\.\w+ = LookupTable\(4, 2, padding_value=2\)\n", source)
    (res,) = python_export.run_isolated(out_dir, [dict(input=torch.tensor([[2, 3], [2, 1]]), dtype="float32",
                                                       grad_output=torch.ones(2, 2, 2))], tmp_path / "run")
    assert res["output"].tolist() == [[[2, 3], [4, 5]], [[2, 3], [0, 1]]]
    assert res["grad_params"].tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
