"""Validation of Lua models while converting (issue #15), the shared part: field readers of ``Fields``, cycles
and ``modules`` lists of containers, chain checks of the planes, forward errors naming the Lua module, and
the checks of the containers, shape and parameter-free classes (containers.py, shapes.py, simple.py).

Expected messages follow the format "<class> at <path>: field '<name>' = <value>: <what Lua expects>"; what
Lua expects is taken from the torch/nn sources (View.resetSize, Dropout.__init, THNN's pooling shape check,
Sum:_getPositiveDimension, SelectTable:updateOutput, ...). Values are hand-computed.
"""
from __future__ import annotations

import math

import pytest
import torch

from fbresnet_port import t7
from fbresnet_port.errors import UserError
from fbresnet_port.lua_nn import LuaForwardError, LuaModelError, from_lua, lua_module
from fbresnet_port.lua_nn._base import MAX_DIM_SIZE, Fields, show_value

L = t7.LuaList


def seq(*mods: t7.TorchObject, **fields) -> t7.TorchObject:
    return lua_module("nn.Sequential", modules=L(mods), **fields)


def linear(n_in: int, n_out: int) -> t7.TorchObject:
    return lua_module("nn.Linear", weight=torch.ones(n_out, n_in), bias=torch.zeros(n_out))


def conv(n_in: int, n_out: int, k: int = 3) -> t7.TorchObject:
    return lua_module("nn.SpatialConvolution", nInputPlane=n_in, nOutputPlane=n_out, kW=k, kH=k, dW=1, dH=1,
                      padW=0, padH=0, weight=torch.ones(n_out, n_in, k, k), bias=torch.zeros(n_out))


def pool(**fields) -> t7.TorchObject:
    base = dict(kW=2, kH=2, dW=2, dH=2, padW=0, padH=0, ceil_mode=False)
    base.update(fields)
    return lua_module("nn.SpatialMaxPooling", **base)


def error_of(obj: t7.TorchObject) -> str:
    with pytest.raises(LuaModelError) as err:
        from_lua(obj)
    return str(err.value)


def fields(**values) -> Fields:
    return Fields(lua_module("nn.Foo", **values), "model.modules[3]")


# ----------------------------------------------------------------------------------------------
# Fields
# ----------------------------------------------------------------------------------------------

def test_int_refuses_non_integral_non_finite_and_booleans_naming_field_and_value():
    f = fields(a=2.5, b=math.nan, c=math.inf, d=True, e="3", g=3.0, h=-1)
    expected = {"a": "2.5", "b": "nan", "c": "inf", "d": "true", "e": "'3'"}
    for name, shown in expected.items():
        with pytest.raises(LuaModelError) as err:
            f.int(name)
        assert str(err.value) == f"nn.Foo at model.modules[3]: field '{name}' = {shown}: should be an integer"
    assert f.int("g") == 3 and isinstance(f.int("g"), int)
    with pytest.raises(LuaModelError, match=r"field 'h' = -1: should be an integer >= 1$"):
        f.int("h", min=1)
    with pytest.raises(LuaModelError, match=r"field 'g' = 3: should be an integer in \[0, 2\]$"):
        f.int("g", min=0, max=2)
    assert f.int("missing", 7) == 7 and f.int("missing", None) is None
    with pytest.raises(LuaModelError, match=r"^nn.Foo at model.modules\[3\]: missing field 'zz' \(an integer\)$"):
        f.int("zz")


def test_num_refuses_nan_inf_and_non_numbers_but_keeps_fractions():
    f = fields(a=0.25, b=-math.inf, c=t7.LuaTable())
    assert f.num("a") == 0.25
    with pytest.raises(LuaModelError, match=r"field 'b' = -inf: should be a finite number$"):
        f.num("b")
    with pytest.raises(LuaModelError, match=r"field 'c' = an empty table: should be a number$"):
        f.num("c")
    with pytest.raises(LuaModelError, match=r"field 'a' = 0.25: should be a number >= 1$"):
        f.num("a", min=1)


def test_flag_is_lua_truthiness():
    f = fields(zero=0, no=False, yes=True, s="", t=t7.LuaTable())
    assert f.flag("zero", False) is True  # 0 is true in Lua
    assert f.flag("s", False) is True and f.flag("t", False) is True
    assert f.flag("no", True) is False and f.flag("yes", False) is True
    assert f.flag("missing", True) is True and f.flag("missing", False) is False


def test_tensor_checks_type_emptiness_dtype_and_shape():
    f = fields(weight=torch.ones(4, 3), empty=torch.empty(0), bias=torch.empty(0),
               longs=torch.ones(2, dtype=torch.long), n=3)
    assert f.tensor("weight", shape=(4, None)).shape == (4, 3)
    with pytest.raises(LuaModelError, match=r"field 'weight' = a FloatTensor of size 4x3: should be of size 3x4$"):
        f.tensor("weight", shape=(3, 4))
    with pytest.raises(LuaModelError, match=r"field 'weight' = a FloatTensor of size 4x3: should be 1-dimensional$"):
        f.tensor("weight", dim=1)
    with pytest.raises(LuaModelError, match=r"field 'weight' = a FloatTensor of size 4x3: should have 4 elements$"):
        f.tensor("weight", numel=4)
    # nil is how Lua says "no bias"; an empty bias fails in Lua
    with pytest.raises(LuaModelError, match=r"field 'bias' = an empty FloatTensor: should be a non-empty tensor "
                                            r"\(nil when the module has none\)$"):
        f.tensor("bias", required=False)
    assert f.tensor("absent", required=False) is None
    assert f.tensor("empty", required=False) is None  # an empty optional buffer
    assert f.tensor("empty", allow_empty=True).numel() == 0
    with pytest.raises(LuaModelError, match=r"field 'longs' = a LongTensor of size 2: should be a floating-point"):
        f.tensor("longs")
    assert f.tensor("longs", floating=False).dtype == torch.long
    with pytest.raises(LuaModelError, match=r"field 'n' = 3: should be a tensor$"):
        f.tensor("n")
    with pytest.raises(LuaModelError, match=r"missing tensor field 'zz'$"):
        f.tensor("zz")


def test_ints_string_module_list_and_check():
    f = fields(size=t7.Storage(torch.tensor([2, -1]), "torch.LongStorage"), bad=L([1, 2.5]), s="avg",
               mods=t7.LuaTable({1: "a", 3: "b"}), mods2=t7.LuaTable({1: "a", 2: "b"}), n=4)
    assert f.ints("size") == [2, -1] and f.ints("n") == [4]
    with pytest.raises(LuaModelError, match=r"field 'bad' = \{1, 2.5\}: should be a list of integers \(has 2.5\)$"):
        f.ints("bad")
    with pytest.raises(LuaModelError, match=r"field 'size' = LongStorage\{2, -1\}: should be a list of integers "
                                            r">= 0 \(has -1\)$"):
        f.ints("size", min=0)
    assert f.string("s", choices=["avg", "max"]) == "avg"
    with pytest.raises(LuaModelError, match=r"field 's' = 'avg': should be one of 'max'$"):
        f.string("s", choices=["max"])
    assert f.module_list("mods2") == ["a", "b"] and f.module_list("absent", required=False) == []
    with pytest.raises(LuaModelError, match=r"field 'mods' = a table of 2 entries: should be a Lua list of modules "
                                            r"\(keys 1..n, no holes\)$"):
        f.module_list("mods")
    with pytest.raises(LuaModelError, match=r"^nn.Foo at model.modules\[3\]: field 'n' = 4: should be even$"):
        f.check(f.int("n") % 2 == 1, "n", 4, "should be even")


def test_show_value_writes_lua_values():
    assert [show_value(v) for v in (None, True, math.nan, -math.inf, 3.0, 2 ** 40 + 0.0, "x")] == \
        ["nil", "true", "nan", "-inf", "3", "1099511627776", "'x'"]
    assert show_value(torch.ones(2, 3, dtype=torch.float64)) == "a DoubleTensor of size 2x3"
    assert show_value(lua_module("nn.ReLU")) == "a nn.ReLU object"


# ----------------------------------------------------------------------------------------------
# Containers: cycles, modules lists
# ----------------------------------------------------------------------------------------------

def test_container_holding_itself_is_one_error_naming_both_paths():
    inner = seq(lua_module("nn.ReLU"))
    outer = seq(inner)
    inner.fields["modules"].append(outer)  # model.modules[1].modules[2] is the root
    assert error_of(outer) == "nn.Sequential at model.modules[1]: contains itself (modules[2] is model)"
    direct = seq(lua_module("nn.ReLU"))
    direct.fields["modules"].append(direct)
    assert error_of(direct) == "nn.Sequential at model: contains itself (modules[2] is model)"


def test_shared_non_cyclic_references_stay_legal():
    relu = lua_module("nn.ReLU")
    lin = linear(2, 2)
    model = from_lua(seq(lin, relu, lin, relu))
    x = torch.tensor([[1.0, -2.0]])
    assert torch.equal(model(x), torch.tensor([[0.0, 0.0]]))  # ones(2,2) @ [1,-2] = [-1,-1] -> relu 0
    assert [m.lua_path for m in model] == [f"model.modules[{i}]" for i in range(1, 5)]


@pytest.mark.parametrize("value, shown", [(3, "3"), (True, "true"), ("x", "'x'"),
                                          (lua_module("nn.ReLU"), "a nn.ReLU object")])
def test_modules_that_is_not_a_list_is_an_error(value, shown):
    assert error_of(lua_module("nn.Sequential", modules=value)) == \
        f"nn.Sequential at model: field 'modules' = {shown}: should be a Lua list of modules"


def test_modules_missing_is_an_error_and_an_empty_list_the_identity():
    assert error_of(lua_module("nn.Sequential")) == \
        "nn.Sequential at model: missing field 'modules' (a Lua list of modules)"
    x = torch.randn(2, 3)
    assert torch.equal(from_lua(lua_module("nn.Sequential", modules=t7.LuaTable()))(x), x)


def test_all_problems_of_a_file_in_one_error():
    msg = error_of(seq(lua_module("nn.Sum"), pool(kW=math.nan), lua_module("nn.SelectTable", index=0)))
    assert msg.splitlines() == [
        "3 problems in the Lua model:",
        "  nn.Sum at model.modules[1]: missing field 'dimension' (an integer)",
        "  nn.SpatialMaxPooling at model.modules[2]: field 'kW' = nan: should be an integer",
        "  nn.SelectTable at model.modules[3]: field 'index' = 0: should be a dimension: 1, 2, ... "
        "(or -1, -2, ... from the end), not 0",
    ]


# ----------------------------------------------------------------------------------------------
# Fields of the shape, table and parameter-free classes
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("obj, message", [
    (lua_module("nn.Sum", squeeze=True), "nn.Sum at model: missing field 'dimension' (an integer)"),
    (lua_module("nn.Mean", dimension="2"), "nn.Mean at model: field 'dimension' = '2': should be an integer"),
    (lua_module("nn.Max", dimension=0), "nn.Max at model: field 'dimension' = 0: should be a dimension: 1, 2, ... "
                                        "(or -1, -2, ... from the end), not 0"),
    (lua_module("nn.JoinTable", dimension=math.nan), "nn.JoinTable at model: field 'dimension' = nan: "
                                                     "should be an integer"),
    (lua_module("nn.SplitTable", dimension=2, nInputDims=-1), "nn.SplitTable at model: field 'nInputDims' = -1: "
                                                              f"should be an integer in [0, {MAX_DIM_SIZE}]"),
    (lua_module("nn.SelectTable", index=2.5), "nn.SelectTable at model: field 'index' = 2.5: should be an integer"),
    (lua_module("nn.NarrowTable", offset=0, length=1), "nn.NarrowTable at model: field 'offset' = 0: "
                                                        f"should be an integer in [1, {MAX_DIM_SIZE}]"),
    (lua_module("nn.View", size=L([2, math.inf])), "nn.View at model: field 'size' = {2, inf}: "
                                                   "should be a list of integers (has inf)"),
    (lua_module("nn.View", size=L([-1, -1])), "nn.View at model: field 'size' = {-1, -1}: "
                                              "only one dimension can be -1"),
    (lua_module("nn.View", size=L([-2])), "nn.View at model: field 'size' = {-2}: "
                                          f"should be a list of integers in [-1, {MAX_DIM_SIZE}] (has -2)"),
    (lua_module("nn.Transpose", permutations=L([L([1, 2, 3])])),
     "nn.Transpose at model: field 'permutations[1]' = {1, 2, 3}: should be a pair of dimensions {d1, d2}"),
    (pool(kW=True), "nn.SpatialMaxPooling at model: field 'kW' = true: should be an integer"),
    (pool(kW=-2), f"nn.SpatialMaxPooling at model: field 'kW' = -2: should be an integer in [1, {MAX_DIM_SIZE}]"),
    (pool(dH=0), f"nn.SpatialMaxPooling at model: field 'dH' = 0: should be an integer in [1, {MAX_DIM_SIZE}]"),
    (pool(kW=2 ** 40), "nn.SpatialMaxPooling at model: field 'kW' = 1099511627776: "
                       f"should be an integer in [1, {MAX_DIM_SIZE}]"),
    (pool(kW=3, padW=2), "nn.SpatialMaxPooling at model: field 'padW' = 2: should be at most half the kernel size "
                         "(kW = 3), as THNN requires"),
    (lua_module("nn.Dropout", p=1, v2=True), "nn.Dropout at model: field 'p' = 1: should be a probability 0 <= p < 1"),
    (lua_module("nn.Dropout", p="0.5"), "nn.Dropout at model: field 'p' = '0.5': should be a number"),
    (lua_module("nn.HardTanh", min_val=1, max_val=-1), "nn.HardTanh at model: field 'max_val' = -1: "
                                                       "should be larger than min_val = 1"),
    (lua_module("nn.SpatialZeroPadding", pad_l=1, pad_r=math.inf, pad_t=0, pad_b=0),
     "nn.SpatialZeroPadding at model: field 'pad_r' = inf: should be an integer"),
    (lua_module("nn.SpatialUpSamplingNearest", scale_factor=1.5),
     "nn.SpatialUpSamplingNearest at model: field 'scale_factor' = 1.5: should be an integer"),
    (lua_module("nn.Normalize", p=0), "nn.Normalize at model: field 'p' = 0: should be a positive number (the p of "
                                      "the p-norm) or math.huge"),
    (lua_module("nn.Concat", dimension=0, modules=L()), "nn.Concat at model: field 'dimension' = 0: "
                                                        f"should be an integer in [1, {MAX_DIM_SIZE}]"),
])
def test_invalid_fields_are_refused_naming_path_class_field_value_and_expectation(obj, message):
    assert error_of(obj) == message


def test_lua_valid_odd_values_are_accepted():
    x = torch.tensor([[3.0, -4.0]])
    # Normalize(math.huge): max norm; SelectTable(-1): the last entry; Dropout v2 = 0 is true in Lua
    out = from_lua(lua_module("nn.Normalize", p=math.inf, eps=0.0))(x)
    assert torch.allclose(out, torch.tensor([[0.75, -1.0]]))
    assert from_lua(lua_module("nn.SelectTable", index=-1))([x, 2 * x]).equal(2 * x)
    drop = from_lua(lua_module("nn.Dropout", p=0.5, v2=0, train=False))
    assert drop(x).equal(x)  # v2 evaluation is the identity (v1 would multiply by 1 - p)


# ----------------------------------------------------------------------------------------------
# Chain checks and forward errors
# ----------------------------------------------------------------------------------------------

def test_swapped_layers_that_no_longer_chain_are_refused_at_conversion():
    model = seq(conv(3, 16), lua_module("nn.ReLU"), pool(), conv(8, 4))
    assert error_of(model) == ("nn.SpatialConvolution at model.modules[4]: takes 8 planes (nInputPlane), "
                               "but the module before it gives 16")
    # through a residual block: ConcatTable branches, CAddTable, then the next layer
    block = seq(lua_module("nn.ConcatTable", modules=L([conv(16, 16), lua_module("nn.Identity")])),
                lua_module("nn.CAddTable"), lua_module("nn.View", size=L([16])), linear(32, 10))
    assert error_of(seq(conv(3, 16), block)) == ("nn.Linear at model.modules[2].modules[4]: takes 32 planes "
                                                 "(inputSize = weight:size(2)), but the module before it gives 16")


def test_concat_joins_the_planes_of_its_branches():
    branch = lua_module("nn.Concat", dimension=2, modules=L([conv(3, 4, 1), conv(3, 6, 1)]))
    assert "takes 7 planes (nInputPlane), but the module before it gives 10" in error_of(seq(branch, conv(7, 2, 1)))
    model = from_lua(seq(branch, conv(10, 2, 1)))
    assert model(torch.ones(1, 3, 2, 2)).shape == (1, 2, 2, 2)


def test_a_forward_error_names_the_innermost_lua_module_and_the_input_shape():
    model = from_lua(seq(lua_module("nn.ReLU"), seq(linear(4, 3))))
    with pytest.raises(LuaForwardError) as err:
        model(torch.ones(2, 5))
    msg = str(err.value)
    assert msg.startswith("nn.Linear at model.modules[2].modules[1]: ")
    assert msg.endswith("(input: 2x5)") or "(input: 2x5; expected: " in msg
    assert isinstance(err.value, UserError) and isinstance(err.value.__cause__, RuntimeError)


def test_forward_errors_of_tables_show_the_shapes_and_what_the_module_expects():
    join = from_lua(lua_module("nn.JoinTable", dimension=-5))
    with pytest.raises(LuaForwardError, match=r"^nn.JoinTable at model: dimension -5 is out of range for a 2-D "
                                              r"input \(input: \{2x3, 2x4\}\)$"):
        join([torch.ones(2, 3), torch.ones(2, 4)])
    select = from_lua(lua_module("nn.SelectTable", index=3))
    with pytest.raises(LuaForwardError, match=r"^nn.SelectTable at model: index 3 is out of range 1..2 "):
        select([torch.ones(1), torch.ones(1)])
    narrow = from_lua(lua_module("nn.NarrowTable", offset=2, length=2))
    with pytest.raises(LuaForwardError, match=r"expected a table of at least 3 entries, got 2"):
        narrow([torch.ones(1), torch.ones(1)])
    pooling = from_lua(pool(kW=4, kH=4, dW=1, dH=1))
    with pytest.raises(LuaForwardError) as err:
        pooling(torch.ones(1, 2, 3, 3))
    assert str(err.value).startswith("nn.SpatialMaxPooling at model: ")
    assert str(err.value).endswith("(input: 1x2x3x3; expected: N x C x H x W or C x H x W with H + 2*padH >= kH "
                                   "and W + 2*padW >= kW (kW = 4, kH = 4, padW = 0, padH = 0))")


def test_select_and_sum_do_not_wrap_indices_as_python_would():
    x = torch.arange(6.0).reshape(2, 3)
    with pytest.raises(LuaForwardError, match=r"index -4 is out of range 1..3"):
        from_lua(lua_module("nn.Select", dimension=2, index=-4))(x)
    assert from_lua(lua_module("nn.Select", dimension=2, index=-1))(x).tolist() == [2.0, 5.0]
    with pytest.raises(LuaForwardError, match=r"dimension -3 is out of range for a 2-D input"):
        from_lua(lua_module("nn.Sum", dimension=-3))(x)
    assert from_lua(lua_module("nn.Sum", dimension=-1))(x).tolist() == [3.0, 12.0]


def test_export_and_compile_see_the_plain_forward():
    model = from_lua(seq(linear(4, 3), lua_module("nn.ReLU")))
    exported = torch.export.export(model, (torch.ones(2, 4),))
    assert torch.equal(exported.module()(torch.ones(2, 4)), torch.full((2, 3), 4.0))


# ----------------------------------------------------------------------------------------------
# Conversion options and notes
# ----------------------------------------------------------------------------------------------

def test_unknown_option_is_refused_and_known_ones_reach_the_converters(capsys):
    from fbresnet_port.lua_nn import _base

    with pytest.raises(LuaModelError, match=r"^unknown conversion option 'batch_of_one_running_statz'; known: "
                                            r"batch_of_one_running_stats"):
        from_lua(lua_module("nn.ReLU"), options={"batch_of_one_running_statz": True})
    seen = []

    class Probe(torch.nn.Identity):
        @classmethod
        def from_fields(cls, f: Fields, convert):
            seen.append(f.options["batch_of_one_running_stats"])
            f.note("saved under a later torch/nn")
            return cls()

    saved = dict(_base.REGISTRY)
    _base.REGISTRY["test.Probe"] = Probe
    try:
        from_lua(seq(lua_module("test.Probe"), lua_module("test.Probe")), options={"batch_of_one_running_stats": True})
        from_lua(lua_module("test.Probe"))
    finally:
        _base.REGISTRY.clear()
        _base.REGISTRY.update(saved)
    assert seen == [True, True, False]
    # one note per conversion, however many modules say it
    assert capsys.readouterr().err.splitlines() == ["note: saved under a later torch/nn"] * 2


def test_nn_relu_runs_its_threshold_and_val_fields_as_lua():
    """nn.ReLU is Threshold(0, 0): Lua's updateOutput reads ``threshold`` and ``val``, so a file where they were
    changed computes x > threshold and x or val; a table there is refused (cudnn.ReLU reads neither)."""
    relu = from_lua(lua_module("nn.ReLU", threshold=0.5, val=-1.0))
    assert relu(torch.tensor([0.25, 0.75, -3.0])).tolist() == [-1.0, 0.75, -1.0]
    assert error_of(lua_module("nn.ReLU", threshold=0, val=t7.LuaTable())) == \
        "nn.ReLU at model: field 'val' = an empty table: should be a number"
    assert from_lua(lua_module("cudnn.ReLU", val=t7.LuaTable()))(torch.tensor([-1.0, 2.0])).tolist() == [0.0, 2.0]
