"""Issue #15 for the recurrent families (lua_nn/rnn.py, torchrnn.py, dpnn.py): a malformed Lua file gives one
clear LuaModelError naming the module path, the class, the field, its value and what Lua expects; saved
recurrent state is used as Lua's forward uses it (never broadcast over a batch); a seeded set of field
corruptions of the Lua fixtures gives no raw Python exception.

The valid models are the Lua fixtures of ../shared/reference/zoo_rnn and torch-rnn / dpnn objects built with
the fields their Lua constructors save; what "valid" means follows the Lua sources (Element-Research rnn's
AbstractRecurrent/LSTM/SeqLSTM/Sequencer.lua, dpnn's Decorator.lua, jcjohnson/torch-rnn's LSTM/LanguageModel.lua).
"""
from __future__ import annotations

import copy
import random

import pytest
import torch

from fbresnet_port import t7
from fbresnet_port.errors import UserError
from fbresnet_port.lua_nn import LuaModelError, from_lua, lua_module
from fbresnet_port.lua_nn.rnn import RecurrentInputError, forget
from zoo_fixtures import case_names, lua_file

E = torch.empty(0)


def fixture(case: str) -> t7.TorchObject:
    """A private copy of a zoo_rnn fixture model (the tests edit it)."""
    return copy.deepcopy(lua_file("zoo_rnn", case, "model.t7"))


def error_of(obj: t7.TorchObject) -> str:
    with pytest.raises(LuaModelError) as err:
        from_lua(obj)
    return str(err.value)


def trnn_lstm(D: int = 3, H: int = 4, **fields) -> t7.TorchObject:
    """torch-rnn's nn.LSTM(D, H) as LSTM.lua's constructor leaves it (plus ``fields``)."""
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(D + H, 4 * H, generator=gen), torch.randn(4 * H, generator=gen)
    base = dict(input_dim=D, hidden_dim=H, weight=w, gradWeight=torch.zeros_like(w), bias=b,
                gradBias=torch.zeros_like(b), cell=E.clone(), gates=E.clone(), h0=E.clone(), c0=E.clone(),
                remember_states=False)
    base.update(fields)
    return lua_module("nn.LSTM", **base)


def view(*size: int, dims: int) -> t7.TorchObject:
    return lua_module("nn.View", size=t7.Storage(torch.tensor(size), "torch.LongStorage"), numElements=1,
                      numInputDims=dims)


def language_model(**fields) -> t7.TorchObject:
    """torch-rnn's LanguageModel (V = 3 tokens, one LSTM layer of 4) with LanguageModel.lua's fields."""
    gen = torch.Generator().manual_seed(1)
    lookup = lua_module("nn.LookupTable", weight=torch.randn(3, 2, generator=gen))
    rnn = trnn_lstm(2, 4, remember_states=True)
    view1, view2 = view(1, 1, -1, dims=3), view(1, -1, dims=2)
    linear = lua_module("nn.Linear", weight=torch.randn(3, 4, generator=gen), bias=torch.randn(3, generator=gen))
    net = lua_module("nn.Sequential", modules=t7.LuaList([lookup, rnn, view1, linear, view2]))
    base = dict(net=net, rnns=t7.LuaList([rnn]), view1=view1, view2=view2, bn_view_in=t7.LuaTable(),
                bn_view_out=t7.LuaTable(), idx_to_token=t7.LuaTable({1: "a", 2: "b", 3: "c"}),
                token_to_idx=t7.LuaTable({"a": 1, "b": 2, "c": 3}), model_type="lstm", rnn_size=4)
    base.update(fields)
    return lua_module("nn.LanguageModel", **base)


# ----------------------------------------------------------------------------------------------
# AbstractRecurrent (LSTM, FastLSTM, GRU, Recursor): integers, sizes, saved state
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, expected", [
    ("rho", float("nan"), "field 'rho' = nan: should be an integer"),
    ("rho", 2.5, "field 'rho' = 2.5: should be an integer"),
    ("rho", float("inf"), "field 'rho' = inf: should be an integer"),
    ("rho", -1, "field 'rho' = -1: should be an integer >= 0"),
    ("step", 0, "field 'step' = 0: should be an integer in [1, 2147483647]"),
    ("step", "3", "field 'step' = '3': should be an integer"),
    ("outputSize", None, "missing field 'outputSize' (an integer)"),
    ("outputSize", True, "field 'outputSize' = true: should be an integer"),
    ("outputSize", 6, "field 'outputSize' = 6: should be the width of the state its o2g takes "
                      "(nn.LinearNoBias weight 20 x 5)"),
    ("inputSize", 2 ** 40, "field 'inputSize' = 1099511627776: should be an integer in [1, 2147483647]"),
])
def test_recurrent_integer_fields(field, value, expected):
    obj = fixture("seq_fastlstm")
    obj.fields["module"].fields[field] = value
    assert error_of(obj) == f"nn.FastLSTM at model.module: {expected}"


def saved(case: str, step: int, outputs: dict, cells: dict | None = None, remember: str = "both") -> t7.TorchObject:
    """A fixture Sequencer(LSTM) as saved after a forward in evaluate mode: step, outputs[], cells[]."""
    obj = fixture(case)
    obj.fields["train"] = False
    obj.fields["_remember"] = remember
    rnn = obj.fields["module"]
    rnn.fields["step"] = step
    rnn.fields["outputs"] = t7.LuaTable(outputs)
    if cells is not None:
        rnn.fields["cells"] = t7.LuaTable(cells)
    return obj


def test_saved_state_of_the_wrong_size_or_type_is_refused():
    at = "nn.FastLSTM at model.module: "
    assert error_of(saved("seq_fastlstm", 3, {2: torch.zeros(2, 7)}, {2: torch.zeros(2, 5)})) == \
        at + "field 'outputs[2]' = a FloatTensor of size 2x7: should be of size 5 or N x 5"
    assert error_of(saved("seq_fastlstm", 3, {2: torch.zeros(2, 5)}, {2: torch.zeros(3, 5)})) == \
        at + "field 'cells[2]' = a FloatTensor of size 3x5: should be of the size of outputs[2] (2 x 5)"
    assert error_of(saved("seq_fastlstm", 3, {2: torch.zeros(2, 5, dtype=torch.int64)}, {2: torch.zeros(2, 5)})) == \
        at + ("field 'outputs[2]' = a LongTensor of size 2x5: should be a floating-point tensor (Float/Double/Cuda), "
              "as Lua's float modules require")
    obj = saved("seq_fastlstm", 3, {})
    obj.fields["module"].fields["outputs"] = 5
    assert error_of(obj) == at + "field 'outputs' = 5: should be a table of the states of the last steps"
    obj = fixture("seq_lstm")
    obj.fields["module"].fields["userPrevOutput"] = torch.zeros(2, 3)
    assert error_of(obj) == ("nn.LSTM at model.module: field 'userPrevOutput' = a FloatTensor of size 2x3: "
                             "should be of size 5 or N x 5")


def test_one_dimensional_state_is_not_broadcast_over_a_batch():
    """Lua's step modules add the state to the batch's rows by element count: a 1-D state continues a batch
    of one (as 1 x H), and a batch of two is an error (PyTorch would broadcast it silently)."""
    h, c = torch.randn(5), torch.randn(5)
    x = torch.randn(3, 1, 3)
    with torch.no_grad():
        one_d = from_lua(saved("seq_fastlstm", 3, {2: h.clone()}, {2: c.clone()}))(x)
        two_d = from_lua(saved("seq_fastlstm", 3, {2: h[None].clone()}, {2: c[None].clone()}))(x)
    torch.testing.assert_close(one_d, two_d, rtol=0, atol=0)
    assert one_d.shape == (3, 1, 5)
    model = from_lua(saved("seq_fastlstm", 3, {2: h.clone()}, {2: c.clone()}))
    with pytest.raises(RecurrentInputError) as err, torch.no_grad():
        model(torch.randn(3, 2, 3))
    assert str(err.value) == ("nn.FastLSTM at model.module: the state of step 2 is 5, but the input 2 x 3 needs "
                              "2 x 5; call forget() first (or give an initial state of the input's batch size)")


def test_step_without_its_saved_state_fails_like_lua_unless_forgotten():
    obj = saved("seq_fastlstm", 4, {})  # step 4 but no outputs[3] / cells[3]
    with pytest.raises(RecurrentInputError) as err, torch.no_grad():
        from_lua(obj)(torch.randn(2, 2, 3))
    assert str(err.value) == ("nn.FastLSTM at model.module: the model was saved at step 4 without the state of "
                              "step 3 (outputs[3], cells[3]), which Lua's next step needs; call forget() to start "
                              "a new sequence")
    model = forget(from_lua(obj))
    fresh = from_lua(fixture("seq_fastlstm")).eval()
    x = torch.randn(2, 2, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x), fresh(x), rtol=0, atol=0)
        # a Sequencer that does not remember forgets before each sequence, as Lua's
        torch.testing.assert_close(from_lua(saved("seq_fastlstm", 4, {}, remember="neither"))(x), fresh(x),
                                   rtol=0, atol=0)


def test_lstm_state_width_against_its_gates():
    obj = fixture("seq_lstm")
    obj.fields["module"].fields["outputSize"] = 4
    assert error_of(obj) == ("nn.LSTM at model.module: field 'outputSize' = 4: should be the width of the state its "
                             "inputGate takes (nn.LinearNoBias weight 5 x 5)")


def test_gru_dropout_field():
    obj = fixture("seq_gru")
    obj.fields["module"].fields["p"] = "0.5"
    assert error_of(obj) == "nn.GRU at model.module: field 'p' = '0.5': should be a number"


# ----------------------------------------------------------------------------------------------
# Decorators and sequencers: the decorated child, remember modes, cycles
# ----------------------------------------------------------------------------------------------

def test_decorated_child_must_be_one_module_in_both_fields():
    obj = fixture("seq_fastlstm")
    obj.fields["modules"] = t7.LuaList([obj.fields["module"], obj.fields["module"]])
    assert error_of(obj) == ("nn.Sequencer at model: field 'modules' = a table of 2 entries: "
                             "should hold the one decorated module")
    obj = fixture("seq_fastlstm")
    obj.fields["modules"] = t7.LuaList([lua_module("nn.Tanh")])
    assert error_of(obj) == ("nn.Sequencer at model: field 'modules' = a table of 1 entries: modules[1] should be "
                             "the module of field 'module' (the same object; got a nn.Tanh object)")
    obj = fixture("seq_fastlstm")
    obj.fields["modules"] = 3
    assert error_of(obj) == "nn.Sequencer at model: field 'modules' = 3: should be a Lua list of modules"
    rec = fixture("recursor")
    rec.fields["module"] = lua_module("nn.Tanh")
    assert error_of(rec) == ("nn.Recursor at model: field 'module' = a nn.Tanh object: should be the module of "
                             "field 'recurrentModule' (the same object, as Lua's constructor sets both)")
    inner = lua_module("nn.Linear", weight=torch.ones(3, 2), bias=torch.zeros(3))
    deco = lua_module("nn.Decorator", module=inner, modules=t7.LuaList([lua_module("nn.Tanh")]))
    assert error_of(deco) == ("nn.Decorator at model: field 'modules' = a table of 1 entries: modules[1] should be "
                              "the module of field 'module' (the same object; got a nn.Tanh object)")
    assert error_of(lua_module("nn.Inception", modules=t7.LuaTable())) == \
        "nn.Inception at model: missing the decorated module (field 'modules')"


def test_sequencer_module_and_remember_mode():
    obj = fixture("seq_fastlstm")
    concat = obj.fields["module"].fields["recurrentModule"].fields["modules"][0]
    obj.fields["module"] = concat
    obj.fields["modules"] = t7.LuaList([concat])
    assert error_of(obj) == ("nn.Sequencer at model: field 'module' = a nn.ConcatTable object: should be a recurrent "
                             "module (nn.LSTM, nn.FastLSTM, nn.GRU, nn.Recursor, ...): Lua's Sequencer wraps any "
                             "other module in an nn.Recursor (got nn.ConcatTable)")
    obj = fixture("seq_fastlstm")
    obj.fields["_remember"] = 1
    assert error_of(obj) == "nn.Sequencer at model: field '_remember' = 1: should be a string"
    bi = fixture("bisequencer")
    bi.fields["_remember"] = "always"
    assert error_of(bi) == ("nn.BiSequencer at model: field '_remember' = 'always': "
                            "should be one of 'both', 'eval', 'train', 'neither'")


def test_cycles_through_the_recurrent_module():
    obj = fixture("seq_fastlstm")
    lstm = obj.fields["module"]
    lstm.fields["recurrentModule"].fields["modules"][0] = lstm
    assert error_of(obj) == ("nn.Sequential at model.module.recurrentModule: contains itself "
                             "(modules[1] is model.module)")
    obj = fixture("seq_fastlstm")
    obj.fields["module"] = obj.fields["modules"][0] = obj
    assert error_of(obj) == "nn.Sequencer at model: contains itself (module is model)"
    # an alias field (FastLSTM's i2g) naming the module itself is only kept for export, as Lua keeps it
    obj = fixture("seq_fastlstm")
    obj.fields["module"].fields["i2g"] = obj.fields["module"]
    from_lua(obj)


def test_mask_zero_fields():
    obj = fixture("maskzero")
    mz = obj.fields["module"].fields["recurrentModule"]
    mz.fields["nInputDim"] = 1.5
    assert error_of(obj) == ("nn.MaskZero at model.module.recurrentModule: field 'nInputDim' = 1.5: "
                             "should be an integer")
    mz.fields["nInputDim"] = None
    assert error_of(obj) == "nn.MaskZero at model.module.recurrentModule: missing field 'nInputDim' (an integer)"


def test_sadd_fields():
    assert error_of(lua_module("nn.SAdd", addend=float("nan"))) == \
        "nn.SAdd at model: field 'addend' = nan: should be a finite number"
    assert error_of(lua_module("nn.SAdd", addend="1")) == "nn.SAdd at model: field 'addend' = '1': should be a number"
    m = from_lua(lua_module("nn.SAdd", addend=-1, negate=0))  # Lua: 0 is true
    torch.testing.assert_close(m(torch.tensor([3.0])), torch.tensor([-2.0]))


# ----------------------------------------------------------------------------------------------
# SeqLSTM and torch-rnn: fused weights, saved buffers
# ----------------------------------------------------------------------------------------------

def test_seqlstm_weights_and_buffers():
    at = "nn.SeqLSTM at model: "
    obj = fixture("seqlstm")
    obj.fields["inputsize"] = 4
    assert error_of(obj) == at + ("field 'weight' = a FloatTensor of size 8x20: should be of size 9x20: (inputsize + "
                                  "outputsize) x 4 outputsize, from inputsize 4, outputsize 5")
    obj = fixture("seqlstm")
    obj.fields["bias"] = obj.fields["bias"].double()
    assert error_of(obj) == at + ("field 'bias' = a DoubleTensor of size 20: should be of the type of the weight "
                                  "(FloatTensor)")
    obj = fixture("seqlstm")
    obj.fields["hiddensize"] = 4
    assert error_of(obj) == at + ("field 'hiddensize' = 4: should be outputsize (5): an LSTM with a projection "
                                  "(nn.SeqLSTMP) is not supported")
    obj = fixture("seqlstm")
    obj.fields["cell"] = torch.zeros(3, 2, 4)
    assert error_of(obj) == at + "field 'cell' = a FloatTensor of size 3x2x4: should be of size T x N x 5"
    obj = fixture("seqlstm")
    obj.fields["userPrevOutput"] = torch.zeros(5)
    assert error_of(obj) == at + "field 'userPrevOutput' = a FloatTensor of size 5: should be of size N x 5"
    obj = fixture("seqlstm")
    obj.fields.update(cell=torch.zeros(3, 2, 5), _output=torch.zeros(3, 4, 5))
    assert error_of(obj) == at + ("field 'cell' = a FloatTensor of size 3x2x5: should have the steps and batch size "
                                  "of the output it was saved with (3 x 4 x 5)")


def test_torch_rnn_lstm_fields():
    at = "nn.LSTM at model: "
    assert error_of(trnn_lstm(hidden_dim=float("nan"))) == at + "field 'hidden_dim' = nan: should be an integer"
    assert error_of(trnn_lstm(input_dim=0)) == at + "field 'input_dim' = 0: should be an integer in [1, 2147483647]"
    assert error_of(trnn_lstm(weight=torch.zeros(7, 16, dtype=torch.int32))) == \
        at + ("field 'weight' = an IntTensor of size 7x16: should be a floating-point tensor (Float/Double/Cuda), "
              "as Lua's float modules require")
    assert error_of(trnn_lstm(output=torch.zeros(2, 3, 4), cell=torch.zeros(2, 3, 5))) == \
        at + "field 'cell' = a FloatTensor of size 2x3x5: should be of size N x T x 4"
    assert error_of(trnn_lstm(output=torch.zeros(2, 3, 4), cell=torch.zeros(2, 2, 4))) == \
        at + "field 'cell' = a FloatTensor of size 2x2x4: should be of the size of the saved output (2 x 3 x 4)"
    assert error_of(trnn_lstm(output=torch.zeros(2, 3, 4), cell=torch.zeros(2, 3, 4), h0=torch.zeros(3, 4))) == \
        at + "field 'h0' = a FloatTensor of size 3x4: should have the batch size of the saved output (2)"


def test_torch_rnn_saved_state_in_double_continues_as_lua_copies_it():
    """Lua's ``h0:copy(self.output[{{}, T}])`` converts the saved double state to the weight's float type."""
    h, c = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    ready = dict(h0=torch.zeros(2, 4), c0=torch.zeros(2, 4), remember_states=True)
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        out = from_lua(trnn_lstm(output=h, cell=c, **ready))(x)
        ref = from_lua(trnn_lstm(output=h.float(), cell=c.float(), **ready))(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_language_model_fields():
    at = "nn.LanguageModel at model: "
    assert error_of(language_model(view1=None)) == \
        at + ("field 'view1' = nil: should be an nn.View of its net (one of net.modules), or a list of them: "
              "the view its forward resizes to the input's N, T")
    assert error_of(language_model(view2=view(1, -1, dims=2))) == \
        at + ("field 'view2' = a nn.View object: should be an nn.View of its net (one of net.modules), or a list "
              "of them: the view its forward resizes to the input's N, T")
    assert error_of(language_model(idx_to_token=5)) == \
        at + "field 'idx_to_token' = 5: should be a table index -> token (string)"
    assert error_of(language_model(idx_to_token=t7.LuaTable({1: "a", 2: 7}))) == \
        at + "field 'idx_to_token' = a table of 2 entries: should be a table index -> token (string)"
    assert error_of(language_model(net=lua_module("nn.Linear", weight=torch.ones(1, 1)))) == \
        at + "field 'net' = a nn.Linear object: should be the nn.Sequential it runs"
    lm = from_lua(language_model())
    assert lm(torch.tensor([[1, 2, 3]])).shape == (1, 3, 3)
    assert lm.decode_string(lm.encode_string("cab")) == "cab"


def test_temporal_adapter_needs_its_views():
    inner = lua_module("nn.Linear", weight=torch.ones(2, 3), bias=torch.zeros(2))
    vi, vo = view(1, -1, dims=3), view(1, -1, dims=2)
    net = lua_module("nn.Sequential", modules=t7.LuaList([vi, inner, vo]))
    obj = t7.TorchObject("nn.TemporalAdapter", t7.LuaTable(view_in=vi, net=net))
    assert error_of(obj) == ("nn.TemporalAdapter at model: field 'view_out' = nil: should be an nn.View of its net "
                             "(one of net.modules), or a list of them: the view its forward resizes to the "
                             "input's N, T")


# ----------------------------------------------------------------------------------------------
# Seeded corruptions: never a raw Python exception
# ----------------------------------------------------------------------------------------------

_RNN_CLASSES = {"nn.LSTM", "nn.FastLSTM", "nn.GRU", "nn.Recursor", "nn.Sequencer", "nn.BiSequencer", "nn.MaskZero",
                "nn.SeqLSTM", "nn.SAdd", "nn.ReverseTable", "nn.ZipTable", "nn.LinearNoBias"}


def _objects(root: t7.TorchObject) -> list[t7.TorchObject]:
    out, stack, seen = [], [root], set()
    while stack:
        o = stack.pop()
        if isinstance(o, t7.TorchObject):
            if id(o) in seen:
                continue
            seen.add(id(o))
            out.append(o)
            stack.extend(o.fields.values())
        elif isinstance(o, (list, dict)):
            stack.extend(o.values() if isinstance(o, dict) else o)
    return out


def _bad_values(obj: t7.TorchObject, old: object) -> list[object]:
    values = [None, float("nan"), float("inf"), 2.5, -1, 2 ** 40, "x", True, t7.LuaTable({"a": 1}),
              t7.LuaList([1, 2]), torch.zeros(0), torch.zeros(3, dtype=torch.int64), torch.zeros(7, 2), obj]
    if isinstance(old, torch.Tensor) and old.numel():
        values += [old.int(), old.reshape(-1).clone(), old[..., :1].clone(), old.double()]
    return values


@pytest.mark.parametrize("case", case_names("zoo_rnn"))
def test_seeded_corruptions_give_project_errors_only(case):
    """Every field of the recurrent modules of a fixture, set to one of the usual corruptions (seeded sample):
    conversion and a forward in both modes raise nothing but the project's errors (UserError)."""
    rng = random.Random(f"rnn-{case}")
    base = lua_file("zoo_rnn", case, "model.t7")
    x = lua_file("zoo_rnn", case, "input.t7")
    edits = [(i, name, j) for i, o in enumerate(_objects(base)) if o.typename in _RNN_CLASSES
             for name in o.fields for j in range(len(_bad_values(o, o.fields[name])))]
    for i, name, j in rng.sample(edits, min(len(edits), 60)):
        obj = copy.deepcopy(base)
        target = _objects(obj)[i]
        target.fields[name] = _bad_values(target, target.fields[name])[j]
        try:
            model = from_lua(obj)
            for mode in (model.eval, model.train):
                mode()
                forget(model)
                with torch.no_grad():
                    [model(t) for t in x] if case == "recursor" else model(copy.deepcopy(x))
        except UserError:
            pass
