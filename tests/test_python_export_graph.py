"""``convert --format python`` for nngraph models (fbresnet_port.lua_nn.graph's hooks): every zoo_graph fixture
(../shared/reference) written as a standalone file and run in a fresh ``python -I`` without this package gives Lua's
outputs and gradients; a graph with the helper nodes nngraph inserts (``node:split(1)``'s JustTable/JustElement, a
criterion used as a node) and annotated node names against hand-computed values.
"""
from __future__ import annotations

import pytest
import torch

import python_export
from fbresnet_port import t7
from fbresnet_port.lua_nn import from_lua, lua_module, to_lua
from fbresnet_port.lua_nn.graph import GraphNode, LuaGModule

GROUP = "zoo_graph"
CASES = ["a_multibranch_cnn", "b_two_in_two_out", "c_nested", "d_lstm_cell", "e_table_input_select"]


@pytest.mark.parametrize("case", CASES)
def test_zoo_graph_case_runs_standalone_as_lua(case, tmp_path):
    source = python_export.check_zoo_case(GROUP, case, tmp_path)
    if case in ("b_two_in_two_out", "d_lstm_cell"):  # the table of graph inputs, one variable per input
        n = 2 if case == "b_two_in_two_out" else 3
        names = ", ".join(f"input{i}" for i in range(1, n + 1))
        assert f"        {names} = split_outputs(input, {n})\n" in source


def helper_graph(weight: torch.Tensor, bias: torch.Tensor) -> t7.TorchObject:
    """gModule({x, y}, {e, loss}) as saved by nngraph: x, y = inputs; h = Linear(x) annotated 'proj';
    e = JustElement(JustTable(h)) (``node:split(1)`` of a one-element table); loss = MSECriterion node {e, y}."""
    linear = from_lua(lua_module("nn.Linear", weight=weight, bias=bias, gradWeight=torch.zeros_like(weight),
                                 gradBias=torch.zeros_like(bias)))
    mods = [from_lua(lua_module(name)) for name in ("nn.Identity", "nn.Identity")]
    mods += [linear, from_lua(lua_module("nngraph.JustTable")), from_lua(lua_module("nngraph.JustElement")),
             from_lua(lua_module("nn.ModuleFromCriterion",
                                 criterion=lua_module("nn.MSECriterion", sizeAverage=True)))]
    nodes = [GraphNode(),                                      # 0 innode
             GraphNode(inputs=(0,), n_split=2),                # 1 split of the inputs
             GraphNode(inputs=(1,), selectindex=1),            # 2
             GraphNode(inputs=(2,), module=0, name="x"),       # 3 x
             GraphNode(inputs=(1,), selectindex=2),            # 4
             GraphNode(inputs=(4,), module=1, name="y"),       # 5 y
             GraphNode(inputs=(3,), module=2, name="proj"),    # 6 h
             GraphNode(inputs=(6,), module=3),                 # 7 {h}
             GraphNode(inputs=(7,), module=4),                 # 8 e
             GraphNode(inputs=(8, 5), module=5, name="loss"),  # 9 loss
             GraphNode(inputs=(8, 9))]                         # 10 outnode
    return to_lua(LuaGModule(mods, nodes, innode=0, outnode=10, n_inputs=2))


def test_helper_nodes_and_annotations_against_hand_computed_values(tmp_path):
    gen = torch.Generator().manual_seed(3)
    weight, bias = torch.randn(4, 3, generator=gen), torch.randn(4, generator=gen)
    model = from_lua(t7.load_bytes(t7.dumps(helper_graph(weight, bias))))
    out_dir = python_export.export(model, tmp_path / "out", class_name="Helpers")
    source = (out_dir / "model.py").read_text()
    assert "self.proj = nn.Linear(3, 4" in source  # the node's annotation names the layer
    # inputs named after the annotations of the nodes that take them (x is one of the generator's temporaries)
    assert "        x_node, y = split_outputs(input, 2)\n" in source
    assert "just_element" not in source  # split(1) of a known one-element table: no code
    x, y = torch.randn(2, 3, generator=gen).double(), torch.randn(2, 4, generator=gen).double()
    grad_e, grad_loss = torch.randn(2, 4, generator=gen).double(), torch.tensor([0.5], dtype=torch.float64)
    (res,) = python_export.run_isolated(out_dir, [dict(input=[x, y], dtype="float64", train=False,
                                                       grad_output=[grad_e, grad_loss])], tmp_path / "run")
    # hand-computed: e = x W^T + b, loss = mean((e - y)^2); no gradient reaches y through the criterion's target
    w, b = weight.double().requires_grad_(), bias.double().requires_grad_()
    xr = x.clone().requires_grad_()
    e = xr @ w.T + b
    loss = ((e - y) ** 2).mean().reshape(1)
    torch.autograd.backward([e, loss], [grad_e, grad_loss])
    torch.testing.assert_close(res["output"][0], e.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(res["output"][1], loss.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(res["grad_input"][0], xr.grad, rtol=0, atol=1e-12)
    assert not res["grad_input"][1].abs().sum()
    torch.testing.assert_close(res["grad_params"], torch.cat([w.grad.reshape(-1), b.grad]), rtol=0, atol=1e-12)
