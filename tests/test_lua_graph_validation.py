"""Checks of a saved nngraph ``nn.gModule`` (fbresnet_port.lua_nn.graph) against how torch/nngraph's gmodule.lua
uses it: edits of the Lua-made zoo_graph fixtures (../shared/reference) are refused with the exact LuaModelError
naming forwardnodes[k], the field, the value and what Lua expects, all problems of a graph in one error; edits that
keep the graph consistent are accepted and evaluated as Lua evaluates them (inputs in the order of the reverse map
``mapindex[producer.data]`` that Lua's ``propagate`` reads).
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch

from conftest import reference
from fbresnet_port import t7
from fbresnet_port.errors import UserError
from fbresnet_port.lua_nn import LuaModelError, from_lua
from fbresnet_port.lua_nn.graph import GraphInputError, lua_array
import zoo_fixtures
from zoo_fixtures import assert_tree_close

GROUP = "zoo_graph"
# b_two_in_two_out, as model.graph_str() lists it (forwardnodes order, 1-based):
#  (1) input  (2) split(2) <- (1)  (3) select 1 <- (2)  (4) nn.Identity <- (3)  (5) nn.Linear(4 -> 6) <- (4)
#  (6) nn.Tanh <- (5)  (7) select 2 <- (2)  (8) nn.Identity <- (7)  (9) nn.Linear(5 -> 6) <- (8)
#  (10) nn.Sigmoid <- (9)  (11) nn.CMulTable <- (6), (10)  (12) nn.Linear(6 -> 3) <- (11)
#  (13) nn.CAddTable <- (5), (11)  (14) output <- (12), (13)
TWO = "b_two_in_two_out"


def load(case: str = TWO) -> t7.TorchObject:
    """A fresh copy of a fixture's model (each test edits its own)."""
    return t7.load(reference(GROUP, case, "model.t7"))


def nodes(model: t7.TorchObject) -> list[t7.TorchObject]:
    return lua_array(model.forwardnodes)


def key(obj) -> t7.IdKey:
    """A table used as a Lua table key (the reverse maps of ``mapindex`` and ``children``)."""
    return t7.IdKey(obj)


def drop_child(node: t7.TorchObject, child: t7.TorchObject) -> None:
    """Remove ``child`` from ``node.children`` (both its array part and its reverse map, as graph.Node:add keeps
    them)."""
    kept = [c for c in lua_array(node.children) if c is not child]
    node.fields["children"] = t7.LuaTable({i: c for i, c in enumerate(kept, 1)} | {key(c): i for i, c in
                                                                                   enumerate(kept, 1)})


def conversion_error(model: t7.TorchObject) -> str:
    with pytest.raises(LuaModelError) as info:
        from_lua(model)
    return str(info.value)


def run(model: t7.TorchObject, case: str):
    with torch.no_grad():
        return from_lua(model).eval()(zoo_fixtures.lua_file(GROUP, case, "input.t7"))


# ----------------------------------------------------------------------------------------------
# Edges: children, both halves of mapindex
# ----------------------------------------------------------------------------------------------

def test_consistent_input_order_edit_is_evaluated_as_lua_does():
    """e_table_input_select's node (8) is JoinTable(2) of (3) x1 [5 wide], (5) x2+x3 [4], (7) Linear(x4) [4]. Swapping
    inputs 1 and 3 in both halves of its mapindex (what Lua's propagate reads) joins them in the new order."""
    case = "e_table_input_select"
    model = load(case)
    join = nodes(model)[7].data
    mapindex = join["mapindex"]
    first, third = mapindex[1], mapindex[3]
    mapindex[1], mapindex[3] = third, first
    mapindex[key(first)], mapindex[key(third)] = 3, 1
    out = run(model, case)
    ref = zoo_fixtures.lua_file(GROUP, case, "output_eval.t7")
    expected = torch.cat([ref[0][:, 9:13], ref[0][:, 5:9], ref[0][:, 0:5]], dim=1)
    assert_tree_close(out, [expected, ref[1]], 1e-4, "reordered join")


def test_reverse_map_disagreeing_with_the_array_part():
    model = load()
    n = nodes(model)
    mapindex = n[12].data["mapindex"]  # node (13) CAddTable <- (5), (11)
    mapindex[key(n[4].data)], mapindex[key(n[10].data)] = 2, 1
    agree = "(the array part of mapindex, its reverse map and the producers' children must agree)"
    assert conversion_error(model) == (
        "nn.gModule at model: 2 problems in the saved graph:\n"
        "  field 'forwardnodes[13].data.mapindex[1]' = forwardnodes[5].data: disagrees with how Lua feeds "
        f"forwardnodes[13]: mapindex[forwardnodes[5].data] = 2 {agree}\n"
        "  field 'forwardnodes[13].data.mapindex[2]' = forwardnodes[11].data: disagrees with how Lua feeds "
        f"forwardnodes[13]: mapindex[forwardnodes[11].data] = 1 {agree}")


def test_array_part_pointing_at_another_node():
    model = load()
    n = nodes(model)
    n[12].data["mapindex"][2] = n[9].data
    assert conversion_error(model) == (
        "nn.gModule at model: field 'forwardnodes[13].data.mapindex[2]' = forwardnodes[10].data: disagrees with how "
        "Lua feeds forwardnodes[13]: forwardnodes[10].children does not list forwardnodes[13] (the array part of "
        "mapindex, its reverse map and the producers' children must agree)")


def test_edge_missing_from_the_producers_children():
    model = load()
    n = nodes(model)
    drop_child(n[4], n[12])  # node (5) feeds (6) and (13)
    assert conversion_error(model) == (
        "nn.gModule at model: field 'forwardnodes[13].data.mapindex[forwardnodes[5].data]' = 1: gives forwardnodes[5] "
        "an input position, but forwardnodes[5].children does not list forwardnodes[13], so Lua never passes it "
        "that input")


def test_children_listing_a_node_that_does_not_take_the_output():
    model = load()
    n = nodes(model)
    n[4].children[3] = n[7]  # (5) also "feeds" (8), whose mapindex knows nothing of it
    n[4].children[key(n[7])] = 3
    assert conversion_error(model) == (
        "nn.gModule at model: field 'forwardnodes[8].data.mapindex[forwardnodes[5].data]' = nil: should be the input "
        "position of forwardnodes[5] (forwardnodes[5].children lists forwardnodes[8]; Lua's propagate reads the "
        "position here)")


def test_two_inputs_in_one_slot():
    model = load()
    n = nodes(model)
    n[12].data["mapindex"][key(n[10].data)] = 1
    assert conversion_error(model) == (
        "nn.gModule at model: field 'forwardnodes[13].data.mapindex[forwardnodes[11].data]' = 1: is also the position "
        "of forwardnodes[5] (Lua asserts 'each input should have one source')")


@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (2.5, "2.5"), (0, "0"), (3, "3"), ("1", "'1'"),
                                          (True, "true")])
def test_input_position_of_the_reverse_map(value, shown):
    model = load()
    n = nodes(model)
    n[5].data["mapindex"][key(n[4].data)] = value  # node (6) Tanh <- (5)
    assert conversion_error(model) == (
        f"nn.gModule at model: field 'forwardnodes[6].data.mapindex[forwardnodes[5].data]' = {shown}: should be an "
        "integer in [1, 1] (the position of forwardnodes[5] among the 1 input(s) of forwardnodes[6])")


def test_mapindex_entry_for_a_table_outside_the_graph():
    model = load()
    n = nodes(model)
    mapindex = n[5].data["mapindex"]
    stray = t7.LuaTable(mapindex=t7.LuaTable())
    del mapindex[key(n[4].data)]
    mapindex[1], mapindex[key(stray)] = stray, 1
    assert conversion_error(model) == (
        "nn.gModule at model: 2 problems in the saved graph:\n"
        "  field 'forwardnodes[6].data.mapindex[the data table of a node that is not in forwardnodes]' = 1: should "
        "only give the positions of input nodes; this table is not the data of a node in forwardnodes (a node "
        "missing there?)\n"
        "  field 'forwardnodes[6].data.mapindex[forwardnodes[5].data]' = nil: should be the input position of "
        "forwardnodes[5] (forwardnodes[5].children lists forwardnodes[6]; Lua's propagate reads the position here)")


@pytest.mark.parametrize("field", ["children", "mapindex"])
def test_edge_tables_that_are_not_tables(field):
    model = load()
    n = nodes(model)
    if field == "children":
        n[5].fields["children"] = True
        expected = ("field 'forwardnodes[6].children' = true: should be the list of the nodes this node's output "
                    "goes to (Lua's propagate)")
    else:
        n[5].data["mapindex"] = 3
        expected = ("field 'forwardnodes[6].data.mapindex' = 3: should be a table of the input nodes' data (in input "
                    "order) that also maps each of them to its position")
    assert conversion_error(model) == f"nn.gModule at model: {expected}"


# ----------------------------------------------------------------------------------------------
# Nodes: missing, duplicated, not nodes; cycles and order
# ----------------------------------------------------------------------------------------------

def test_node_missing_from_forwardnodes():
    model = load()
    n = nodes(model)
    model.fields["forwardnodes"] = t7.LuaList(n[:8] + n[9:])  # drop (9) Linear(5 -> 6)
    assert conversion_error(model) == (
        "nn.gModule at model: 2 problems in the saved graph:\n"
        "  field 'forwardnodes[8].children[1]' = a nngraph.Node that is not in forwardnodes: should be a node of "
        "forwardnodes (a node that takes this output)\n"
        "  field 'forwardnodes[9].data.mapindex[the data table of a node that is not in forwardnodes]' = 1: should "
        "only give the positions of input nodes; this table is not the data of a node in forwardnodes (a node "
        "missing there?)")


def test_node_listed_twice():
    model = load()
    n = nodes(model)
    model.fields["forwardnodes"] = t7.LuaList(n[:5] + [n[3]] + n[5:])
    assert conversion_error(model) == (
        "nn.gModule at model: field 'forwardnodes[6]' = forwardnodes[4]: each node appears once in forwardnodes")


def test_two_nodes_sharing_one_data_table():
    model = load()
    n = nodes(model)
    n[6].fields["data"] = n[2].data
    assert conversion_error(model) == (
        "nn.gModule at model: field 'forwardnodes[7].data' = forwardnodes[3].data: each node has its own data table")


def test_forwardnodes_entry_that_is_not_a_node():
    model = load()
    n = nodes(model)
    n[4] = 7
    model.fields["forwardnodes"] = t7.LuaList(n)
    assert conversion_error(model) == (
        "nn.gModule at model: field 'forwardnodes[5]' = 7: should be an nngraph.Node with a data table")


def test_cycle_is_named_with_its_path():
    """a_multibranch_cnn: (4) ReLU -> (5) conv -> (8) CAddTable -> (9) JoinTable; make (9) also feed (4)."""
    model = load("a_multibranch_cnn")
    n = nodes(model)
    n[8].children[2], n[8].children[key(n[3])] = n[3], 2
    n[3].data["mapindex"][2], n[3].data["mapindex"][key(n[8].data)] = n[8].data, 2
    assert conversion_error(model) == (
        "nn.gModule at model: field 'forwardnodes[4].data.mapindex' = inputs forwardnodes[9]: the graph has a cycle: "
        "forwardnodes[4] -> forwardnodes[5] -> forwardnodes[8] -> forwardnodes[9] -> forwardnodes[4] (nngraph "
        "graphs are acyclic)")


def test_forwardnodes_out_of_topological_order():
    model = load()
    n = nodes(model)
    model.fields["forwardnodes"] = t7.LuaList([n[-1]] + n[:-1])
    assert conversion_error(model) == (
        "nn.gModule at model: field 'forwardnodes[1].data.mapindex' = inputs forwardnodes[13], forwardnodes[14]: an "
        "input comes later in forwardnodes (not a topological order: Lua evaluates forwardnodes in order, each node "
        "after its inputs)")


# ----------------------------------------------------------------------------------------------
# innode, outnode, nInputs
# ----------------------------------------------------------------------------------------------

def test_outnode_equal_to_innode():
    model = load()
    model.fields["outnode"] = model.innode
    assert conversion_error(model) == (
        "nn.gModule at model: fields 'innode' and 'outnode' are the same node (forwardnodes[1]): the graph's input "
        "and output are two different nodes (gModule.__init makes them)")


def test_outnode_moved_to_another_node():
    model = load()
    model.fields["outnode"] = nodes(model)[11]  # (12) Linear: a module node whose children are its consumers
    assert conversion_error(model) == (
        "nn.gModule at model: 2 problems in the saved graph:\n"
        "  field 'outnode' = forwardnodes[12]: the output node has no module (Lua returns its input table; "
        "gModule.__init makes it a plain node)\n"
        "  field 'outnode.children' = forwardnodes[14]: should list the nodes that feed the output node "
        "(forwardnodes[11]; Lua returns one value when it lists one)")


def test_outnode_children_must_be_the_outputs():
    """Lua returns one value when ``#outnode.children == 1``: a saved outnode listing one of two outputs is refused."""
    model = load()
    drop_child(model.outnode, [c for c in lua_array(model.outnode.children) if c.data is nodes(model)[12].data][0])
    assert conversion_error(model) == (
        "nn.gModule at model: field 'outnode.children' = a nngraph.Node with the data of forwardnodes[12]: should list "
        "the nodes that feed the output node (forwardnodes[12], forwardnodes[13]; Lua returns one value when it "
        "lists one)")


@pytest.mark.parametrize("field", ["innode", "outnode"])
def test_missing_end_node(field):
    model = load()
    del model.fields[field]
    what = "input" if field == "innode" else "output"
    assert conversion_error(model) == (
        f"nn.gModule at model: field '{field}' = nil: should be the graph's {what} node, a node of forwardnodes")


def test_innode_with_inputs():
    model = load()
    model.fields["innode"] = nodes(model)[3]  # (4) Identity <- (3)
    assert conversion_error(model) == (
        "nn.gModule at model: 2 problems in the saved graph:\n"
        "  field 'innode' = forwardnodes[4]: is fed by forwardnodes[3]: the input node takes no inputs (the "
        "gModule's input goes there)\n"
        "  field 'forwardnodes[1].data.mapindex' = no input: only the innode and modules without inputs (parameter "
        "nodes) have none; Lua's forward fails on this node")


@pytest.mark.parametrize("value, expected", [
    (2.5, "= 2.5: should be an integer"), (float("nan"), "= nan: should be an integer"),
    (float("inf"), "= inf: should be an integer"), (0, "= 0: should be an integer >= 1"),
    (-1, "= -1: should be an integer >= 1"), (True, "= true: should be an integer"),
    ("2", "= '2': should be an integer"), (t7.LuaTable(), "= an empty table: should be an integer")])
def test_n_inputs_must_be_a_positive_integer(value, expected):
    model = load()
    model.fields["nInputs"] = value
    assert conversion_error(model) == (
        f"nn.gModule at model: field 'nInputs' {expected} (the number of graph inputs; Lua's forward fails on "
        "anything else)")


def test_n_inputs_must_match_the_split_of_the_inputs():
    model = load()
    model.fields["nInputs"] = 3
    assert conversion_error(model) == (
        "nn.gModule at model: field 'nInputs' = 3: disagrees with forwardnodes[2].data.nSplitOutputs = 2, the split "
        "of the table of graph inputs (Lua's forward fails: split(2) cannot split 3 outputs); gModule.__init sets "
        "both to the number of inputs")


# ----------------------------------------------------------------------------------------------
# selectindex, nSplitOutputs, module
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (2.5, "= 2.5: should be an integer (the element of its input table it outputs)"),
    (float("nan"), "= nan: should be an integer (the element of its input table it outputs)"),
    (0, "= 0: should be an integer >= 1 (the element of its input table it outputs)"),
    ("1", "= '1': should be an integer (the element of its input table it outputs)"),
    (3, "= 3: should be in [1, 2]: its input forwardnodes[2] is split(2)"),
    (2, "= 2: forwardnodes[3] already outputs element 2 of forwardnodes[2] (Lua's backward asserts one each)")])
def test_selectindex(value, expected):
    model = load()
    nodes(model)[2].data["selectindex"] = value  # (3) is select 1, (7) select 2 of the split (2)
    node = 7 if value == 2 else 3
    assert conversion_error(model) == f"nn.gModule at model: field 'forwardnodes[{node}].data.selectindex' {expected}"


def test_selectindex_on_a_module_node():
    model = load()
    nodes(model)[4].data["selectindex"] = 1  # (5) Linear
    assert conversion_error(model) == (
        "nn.gModule at model: field 'forwardnodes[5].data.selectindex' = 1: a split output has no module and one "
        "input (it has a module and 1 input(s); Lua asserts both)")


@pytest.mark.parametrize("value, expected", [
    (2.5, "= 2.5: should be an integer"), (float("inf"), "= inf: should be an integer"),
    (0, "= 0: should be an integer >= 1"), (False, None)])
def test_n_split_outputs(value, expected):
    model = load()
    nodes(model)[1].data["nSplitOutputs"] = value
    if expected is None:  # false: Lua's `if node.data.nSplitOutputs` skips the check, as nil does
        assert len(run(model, TWO)) == 2
        return
    assert conversion_error(model) == (
        f"nn.gModule at model: field 'forwardnodes[2].data.nSplitOutputs' {expected} (the number of elements of its "
        "output table)")


def test_split_of_another_size_fails_at_forward_naming_the_module():
    """d_lstm_cell: (10) nn.Reshape(4x5) -> (11) nn.SplitTable(2) -> (12) split(4). Reshaped to 5x4, the SplitTable
    gives 5 tables, which Lua's forward refuses: 'split(4) cannot split 5 outputs'."""
    model = load("d_lstm_cell")
    reshape = nodes(model)[9].data["module"]
    reshape.fields["size"] = t7.Storage(torch.tensor([5, 4]), "torch.LongStorage")
    converted = from_lua(model)
    with pytest.raises(GraphInputError) as info:
        converted(zoo_fixtures.lua_file(GROUP, "d_lstm_cell", "input.t7"))
    assert str(info.value) == ("nn.gModule at model: node 12 (split(4), on the output of nn.SplitTable at "
                               "model.modules[7]): split(4) cannot split 5 outputs")


def test_split_outputs_must_all_be_taken():
    """gModule.__init refuses unused split outputs: nSplitOutputs is the number of nodes taking the split."""
    model = load("d_lstm_cell")
    nodes(model)[11].data["nSplitOutputs"] = 5
    assert conversion_error(model) == (
        "nn.gModule at model: field 'forwardnodes[12].data.nSplitOutputs' = 5: should be the number of its split "
        "outputs: 4 node(s) take its output (gModule.__init refuses unused split outputs; Lua's forward fails on a "
        "table of another length)")


def test_node_module_that_is_not_a_module():
    model = load()
    nodes(model)[5].data["module"] = 3
    assert conversion_error(model) == (
        "nn.gModule at model: field 'forwardnodes[6].data.module' = 3: should be an nn module (or nil)")


def test_node_module_false_is_no_module():
    """Lua's ``if node.data.module`` reads false as nil: the node passes its input on, and it is not in modules."""
    model = load()
    n = nodes(model)
    identity = n[3].data["module"]  # (4) nn.Identity, modules[1]
    n[3].data["module"] = False
    model.fields["modules"] = t7.LuaList([m for m in lua_array(model.modules) if m is not identity])
    assert_tree_close(run(model, TWO), zoo_fixtures.lua_file(GROUP, TWO, "output_eval.t7"), 1e-4, "module = false")


# ----------------------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------------------

def test_modules_swapped():
    model = load()
    mods = lua_array(model.modules)
    mods[1], mods[7] = mods[7], mods[1]
    model.fields["modules"] = t7.LuaList(mods)
    order = "gModule lists the nodes' modules in forwardnodes order"
    assert conversion_error(model) == (
        "nn.gModule at model: 2 problems in the saved graph:\n"
        "  field 'modules[2]' = forwardnodes[12].data.module (nn.Linear): should be forwardnodes[5].data.module "
        f"(nn.Linear): {order}\n"
        "  field 'modules[8]' = forwardnodes[5].data.module (nn.Linear): should be forwardnodes[12].data.module "
        f"(nn.Linear): {order}")


@pytest.mark.parametrize("edit, expected", [
    (lambda mods: t7.LuaList(mods[:-1]), "= a table of 8 entries: should list the 9 modules of the nodes in "
                                         "forwardnodes order (it has 8; gModule.__init adds each node's module)"),
    (lambda mods: t7.LuaTable(), "= an empty table: should list the 9 modules of the nodes in forwardnodes order "
                                 "(it has 0; gModule.__init adds each node's module)"),
    (lambda mods: 3, "= 3: should be a Lua list of modules"),
    (lambda mods: mods[0], "= a nn.Identity object: should be a Lua list of modules")])
def test_modules_field(edit: Callable, expected: str):
    model = load()
    model.fields["modules"] = edit(lua_array(model.modules))
    assert conversion_error(model) == f"nn.gModule at model: field 'modules' {expected}"


def test_module_outside_the_graph_in_modules():
    model = load()
    mods = lua_array(model.modules)
    extra = lua_array(load().modules)[4]  # an equal nn.Linear that is no node's module
    mods[4] = extra
    model.fields["modules"] = t7.LuaList(mods)
    assert conversion_error(model) == (
        "nn.gModule at model: field 'modules[5]' = a nn.Linear object, the module of no node: should be "
        "forwardnodes[9].data.module (nn.Linear): gModule lists the nodes' modules in forwardnodes order")


def test_modules_copies_sharing_the_node_weights_are_accepted():
    """cudnn.convert before nngraph had gModule:replace (early 2016) replaced ``modules[i]`` by a copy of the node's
    module holding the same tensors (``y[k] = x[k]``) and left the node's module in place; Lua runs the nodes'
    modules and its parameters() lists the very same tensors."""
    model = load()
    mods = lua_array(model.modules)
    copies = []
    for m in mods:
        copies.append(t7.TorchObject(m.typename.replace("nn.", "cudnn.") if m.typename == "nn.Tanh" else m.typename,
                                     t7.LuaTable(m.fields)))
    model.fields["modules"] = t7.LuaList(copies)
    converted = from_lua(model)
    assert [list(p.shape) for p in converted.parameters()] == [
        p["shape"] for p in zoo_fixtures.manifest(GROUP, TWO)["param_shapes"]]
    assert_tree_close(run(model, TWO), zoo_fixtures.lua_file(GROUP, TWO, "output_eval.t7"), 1e-4, "copies")


def test_all_problems_of_a_graph_in_one_error():
    model = load()
    nodes(model)[5].data["module"] = 3
    nodes(model)[2].data["selectindex"] = 2.5
    model.fields["nInputs"] = float("nan")
    assert conversion_error(model) == (
        "nn.gModule at model: 3 problems in the saved graph:\n"
        "  field 'forwardnodes[3].data.selectindex' = 2.5: should be an integer (the element of its input table it "
        "outputs)\n"
        "  field 'forwardnodes[6].data.module' = 3: should be an nn module (or nil)\n"
        "  field 'nInputs' = nan: should be an integer (the number of graph inputs; Lua's forward fails on anything "
        "else)")


def test_nested_graph_errors_name_their_path():
    model = load("c_nested")
    inner = lua_array(model.modules)[0]
    assert inner.typename == "nn.gModule"
    inner.fields["nInputs"] = 0
    assert conversion_error(model) == (
        "nn.gModule at model.modules[1]: field 'nInputs' = 0: should be an integer >= 1 (the number of graph "
        "inputs; Lua's forward fails on anything else)")


def test_error_inside_a_node_names_the_module_path():
    """a_multibranch_cnn's first convolution takes 3 planes: 4 fails there, named by its Lua path."""
    model = from_lua(load("a_multibranch_cnn"))
    with pytest.raises(UserError) as info:
        model(torch.zeros(2, 4, 8, 8))
    assert str(info.value).startswith("nn.SpatialConvolution at model.modules[2]: ")


def test_planes_are_checked_along_the_graph():
    """a_multibranch_cnn: (3) conv 3 -> 6, (4) ReLU, (5) conv 6 -> 4 (1x1). Swapping the two convolutions (in their
    nodes and in modules, consistently) makes (5) take 3 planes where (4) gives 4: refused at conversion, as Lua's
    forward would fail there."""
    model = load("a_multibranch_cnn")
    n = nodes(model)
    first, second = n[2].data["module"], n[4].data["module"]
    n[2].data["module"], n[4].data["module"] = second, first
    mods = lua_array(model.modules)
    mods[1], mods[3] = mods[3], mods[1]
    model.fields["modules"] = t7.LuaList(mods)
    assert conversion_error(model) == (
        "nn.SpatialConvolution at model.modules[4]: takes 3 planes (nInputPlane), but the module before it gives 4")
