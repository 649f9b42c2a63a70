"""nngraph ``nn.gModule`` conversion (fbresnet_port.lua_nn.graph) against the original Lua Torch results
(../shared/reference/zoo_graph): for every case the float32 and float64 evaluate outputs, and in float64
gradInput and the flat gradient of the parameters (Lua ``model:parameters()`` order) of
``backward(input, gradOutput)``; parameter shapes and order; train/evaluate propagation; errors;
printing; export back to the Lua layout.
"""
from __future__ import annotations

import pytest
import torch

from conftest import reference
from fbresnet_port import t7
from fbresnet_port.errors import UserError
from fbresnet_port.lua_nn import LuaModelError, from_lua, lua_module, lua_str, to_lua
from fbresnet_port.lua_nn.graph import (GraphInputError, GraphNode, LuaGModule, LuaJustElement, LuaJustTable,
                                        lua_array)
import zoo_fixtures
from zoo_fixtures import assert_tree_close, leaves, tree_map

GROUP = "zoo_graph"
CASES = ["a_multibranch_cnn", "b_two_in_two_out", "c_nested", "d_lstm_cell", "e_table_input_select"]


def lua_file(case: str, name: str):
    """A fixture file of this group, read once (from_lua copies what it keeps; tests that edit a tree load
    their own)."""
    return zoo_fixtures.lua_file(GROUP, case, name)


def manifest(case: str) -> dict:
    return zoo_fixtures.manifest(GROUP, case)


def flat(x) -> list[torch.Tensor]:
    """Tensors of a (nested) Lua table in order."""
    return list(leaves(x))


def as_double(x):
    return tree_map(torch.Tensor.double, x)


# ----------------------------------------------------------------------------------------------
# Parity with Lua
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_eval_output_float32(case):
    model = from_lua(lua_file(case, "model.t7")).eval()
    with torch.no_grad():
        out = model(lua_file(case, "input.t7"))
    assert all(t.dtype == torch.float32 for t in flat(out))
    assert_tree_close(out, lua_file(case, "output_eval.t7"), 1e-4, f"{case} output_eval")


@pytest.mark.parametrize("case", CASES)
def test_float64_output_grad_input_and_grad_params(case):
    """model.double() in evaluate mode: output, then gradInput and gradParams for the fixed gradOutput."""
    model = from_lua(lua_file(case, "model.t7")).double().eval()
    x = as_double(lua_file(case, "input.t7"))
    for t in flat(x):
        t.requires_grad_(True)
    out = model(x)
    assert_tree_close(out, lua_file(case, "output_eval_f64.t7"), 1e-6, f"{case} output_eval_f64")
    torch.autograd.backward(flat(out), flat(as_double(lua_file(case, "gradOutput.t7"))))
    grad_input = [t.grad for t in flat(x)]
    ref_gi = lua_file(case, "gradInput_f64.t7")
    assert_tree_close(grad_input if isinstance(ref_gi, list) else grad_input[0], ref_gi, 1e-6, f"{case} gradInput")
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert_tree_close(grads, lua_file(case, "gradParams_f64.t7").reshape(-1), 1e-6, f"{case} gradParams")


@pytest.mark.parametrize("case", CASES)
def test_parameters_in_lua_order(case):
    info = manifest(case)
    model = from_lua(lua_file(case, "model.t7"))
    owner = {id(p): m.lua_typename for m in model.modules() for p in m.parameters(recurse=False)}
    got = [{"module": owner[id(p)], "shape": list(p.shape)} for p in model.parameters()]
    assert got == info["param_shapes"]
    assert sum(p.numel() for p in model.parameters()) == info["n_params"]


def test_structure_of_a_two_input_two_output_graph():
    model = from_lua(lua_file("b_two_in_two_out", "model.t7"))
    assert isinstance(model, LuaGModule) and model.n_inputs == 2
    assert len(model.nodes[model.outnode].inputs) == 2
    split = [n for n in model.nodes if n.n_split is not None]
    assert [n.n_split for n in split] == [2]
    assert sorted(n.selectindex for n in model.nodes if n.selectindex is not None) == [1, 2]
    # Lua's modules order (forward topological order) is the registration order.
    assert [m.lua_typename for m in model.graph_modules] == [
        m.typename for m in lua_array(lua_file("b_two_in_two_out", "model.t7").modules)]


# ----------------------------------------------------------------------------------------------
# Train / evaluate, errors
# ----------------------------------------------------------------------------------------------

def test_train_and_eval_reach_every_module_of_nested_graphs():
    lua = lua_file("c_nested", "model.t7")
    model = from_lua(lua)
    assert lua.train is False and not any(m.training for m in model.modules())
    inner = [m for m in model.modules() if isinstance(m, LuaGModule)]
    assert len(inner) == 3  # the outer graph and the two graphs nested in it
    model.train()
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())


def test_wrong_number_of_inputs_is_one_clear_error():
    model = from_lua(lua_file("d_lstm_cell", "model.t7"))
    x, c, h = lua_file("d_lstm_cell", "input.t7")
    with pytest.raises(GraphInputError) as info:
        model([x, c])
    assert str(info.value) == "nn.gModule at model: got 2 inputs instead of 3"
    with pytest.raises(UserError) as info:
        model(x)
    assert str(info.value) == ("nn.gModule at model: expects a list of 3 inputs, got a Tensor of size 3x4; pass "
                               "[x1, ..., x3] (Lua: {x1, ...})")


def test_split_of_a_table_of_another_size_names_the_node():
    """split(2) of a 3-element table fails as in Lua ('split(2) cannot split 3 outputs')."""
    nodes = [GraphNode(), GraphNode(inputs=(0,), n_split=2), GraphNode(inputs=(1,), selectindex=1),
             GraphNode(inputs=(1,), selectindex=2), GraphNode(inputs=(2, 3))]
    model = LuaGModule([], nodes, innode=0, outnode=4, n_inputs=1)
    a, b, c = torch.ones(1), torch.zeros(1), torch.full((1,), 2.0)
    assert model([a, b]) == [a, b]
    with pytest.raises(GraphInputError) as info:
        model([a, b, c])
    assert str(info.value) == "nn.gModule: node 2 (split(2)): split(2) cannot split 3 outputs"


def test_unsupported_child_is_reported_with_its_path():
    lua = t7.load(reference(GROUP, "b_two_in_two_out", "model.t7"))
    lua_array(lua.modules)[2].typename = "nn.NoSuchModule"  # the Tanh: modules[3]
    with pytest.raises(LuaModelError, match=r"nn\.NoSuchModule at model\.modules\[3\]"):
        from_lua(lua)


def test_broken_graph_fields_are_reported():
    lua = t7.load(reference(GROUP, "b_two_in_two_out", "model.t7"))
    del lua.fields["forwardnodes"]
    with pytest.raises(LuaModelError, match=r"nn\.gModule at model: missing field 'forwardnodes'"):
        from_lua(lua)
    lua = t7.load(reference(GROUP, "b_two_in_two_out", "model.t7"))
    nodes = lua_array(lua.forwardnodes)
    lua.fields["forwardnodes"] = t7.LuaList([nodes[-1]] + nodes[:-1])  # output first: not topological
    with pytest.raises(LuaModelError, match=r"not a topological order"):
        from_lua(lua)


def test_files_without_modules_and_nInputs_use_forwardnodes():
    """Older nngraph files: gModule:read rebuilds ``modules`` from forwardnodes; nInputs = innode fan-out."""
    lua = t7.load(reference(GROUP, "a_multibranch_cnn", "model.t7"))
    del lua.fields["modules"], lua.fields["nInputs"]
    model = from_lua(lua).eval()
    with torch.no_grad():
        assert_tree_close(model(lua_file("a_multibranch_cnn", "input.t7")),
                     lua_file("a_multibranch_cnn", "output_eval.t7"), 1e-4, "no modules field")
    assert model.n_inputs == 1
    assert [list(p.shape) for p in model.parameters()] == [
        p["shape"] for p in manifest("a_multibranch_cnn")["param_shapes"]]


# ----------------------------------------------------------------------------------------------
# Built graphs: the helper modules, long chains
# ----------------------------------------------------------------------------------------------

def test_just_element_and_just_table():
    a = torch.tensor([1.0, -2.0])
    assert LuaJustElement()([a]) is a
    assert LuaJustTable()(a) == [a]
    with pytest.raises(UserError) as info:
        from_lua(lua_module("nngraph.JustElement"))([a, a])
    assert str(info.value) == ("nngraph.JustElement at model: expecting a table of one element (node:split(1)) "
                               "(input: {2, 2})")


def test_long_chain_graph_and_split_of_one():
    """input -> Tanh x 300 -> JustTable -> split(1) (JustElement) -> output, checked against torch.tanh,
    after a trip through a .t7 file (a graph as deep as an unrolled RNN nests 300 tables deep there)."""
    n = 300
    mods = [from_lua(lua_module("nn.Tanh")) for _ in range(n)] + [LuaJustTable(), LuaJustElement()]
    nodes = [GraphNode()] + [GraphNode(inputs=(k,), module=k) for k in range(n + 2)] + [GraphNode(inputs=(n + 2,))]
    built = LuaGModule(mods, nodes, innode=0, outnode=n + 3, n_inputs=1)
    model = from_lua(t7.load_bytes(t7.dumps(to_lua(built))))
    assert len(model.nodes) == n + 4 and model.nodes[-2].module == n + 1
    x = torch.linspace(-3, 3, 7, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y = x_ref
    for _ in range(n):
        y = torch.tanh(y)
    out = model(x)
    assert torch.equal(out, y)
    out.sum().backward()
    y.sum().backward()
    assert torch.equal(x.grad, x_ref.grad)


def test_module_from_criterion_node():
    """nn.ModuleFromCriterion: {prediction, target} -> {loss}; no gradient to the target."""
    m = from_lua(lua_module("nn.ModuleFromCriterion", criterion=lua_module("nn.MSECriterion", sizeAverage=True)))
    p = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    t = torch.tensor([0.0, 2.0, 1.0], requires_grad=True)
    out = m([p, t])
    assert out.shape == (1,) and abs(out.item() - 10.0 / 3) < 1e-6
    out.sum().backward()
    assert torch.allclose(p.grad, torch.tensor([2.0 / 3, 0.0, 2.0])) and t.grad is None


# ----------------------------------------------------------------------------------------------
# Printing and export
# ----------------------------------------------------------------------------------------------

def test_print_is_lua_tostring_and_graph_str_lists_nodes():
    nested = from_lua(lua_file("c_nested", "model.t7"))
    assert lua_str(nested).splitlines()[2] == "  (1): nn.gModule"  # gModule:__tostring__
    model = from_lua(lua_file("e_table_input_select", "model.t7"))
    model.name = "selector"
    assert str(model) == "selector"
    lines = model.graph_str().splitlines()
    assert lines[0] == "selector { 1 input(s), 8 modules"
    assert "  (1) input" in lines and lines[-2] == "  (10) output <- (8), (9)"
    assert "  (8) nn.JoinTable <- (3), (5), (7)" in lines  # join(x1, x2+x3, Linear(x4)): mapindex order


@pytest.mark.parametrize("case", CASES)
def test_export_round_trip_keeps_lua_results(case):
    model = from_lua(lua_file(case, "model.t7")).eval()
    back = from_lua(t7.load_bytes(t7.dumps(to_lua(model)))).eval()
    with torch.no_grad():
        assert_tree_close(back(lua_file(case, "input.t7")), lua_file(case, "output_eval.t7"), 1e-4, f"{case} export")
    assert [list(p.shape) for p in back.parameters()] == [p["shape"] for p in manifest(case)["param_shapes"]]


def producer(data) -> tuple:
    """What a node is, for comparing graphs: (module class, selectindex, nSplitOutputs)."""
    module = data.get("module")
    return (module.typename if module is not None else None, data.get("selectindex"), data.get("nSplitOutputs"))


def test_export_has_the_saved_gmodule_layout():
    lua = lua_file("b_two_in_two_out", "model.t7")
    out = to_lua(from_lua(lua))
    assert out.typename == "nn.gModule" and set(out.fields) == set(lua.fields)
    assert len(lua_array(out.forwardnodes)) == len(lua_array(lua.forwardnodes))
    for orig, new in zip(lua_array(lua.forwardnodes), lua_array(out.forwardnodes)):
        assert producer(new.data) == producer(orig.data)
        assert new.typename == "nngraph.Node" and set(new.fields) == set(orig.fields)
        assert set(new.data) == set(orig.data)
        # consumers (children) and producers (mapindex, both ways) as in the Lua file
        assert len(lua_array(new.children)) == len(lua_array(orig.children))
        sources = lua_array(new.data["mapindex"])
        assert [new.data["mapindex"][t7.IdKey(s)] for s in sources] == list(range(1, len(sources) + 1))
        assert [producer(s) for s in sources] == [producer(s) for s in lua_array(orig.data["mapindex"])]
    assert out.innode.data is lua_array(out.forwardnodes)[0].data
    assert out.outnode.data is lua_array(out.forwardnodes)[-1].data
    assert lua_array(out.modules)[0] is lua_array(out.forwardnodes)[3].data["module"]
    assert "gradInput" not in out.fields and out.nInputs == 2 and isinstance(out.output, dict)
