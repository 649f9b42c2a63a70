"""``convert --format python`` for the recurrent families (lua_nn/rnn.py, torchrnn.py, dpnn.py): the generated
file, run in a fresh ``python -I`` without this package, gives Lua's results on the zoo_rnn fixtures (outputs,
and the evaluate-mode gradients of Lua's rnn backward); beyond the fixtures, torch-rnn's language model, the
state kept across calls and the training-mode gradients equal the converted modules' (the same standalone code
runs in both, so these check the generated structure: parameter order, step classes, state, reshapes).
"""
from __future__ import annotations

import copy

import pytest
import torch

import python_export
from fbresnet_port import t7
from fbresnet_port.lua_nn import from_lua, lua_module
from fbresnet_port.lua_nn.codegen import check_generated, generate_python
from fbresnet_port.lua_nn.rnn import forget
from test_lua_rnn_validation import language_model, trnn_lstm, view
from zoo_fixtures import assert_close, case_names, lua_file, manifest


@pytest.mark.parametrize("case", [c for c in case_names("zoo_rnn") if c != "recursor"])
def test_zoo_rnn_case_runs_as_lua_in_a_fresh_python(case, tmp_path):
    source = python_export.check_zoo_case("zoo_rnn", case, tmp_path)
    if case != "seqlstm":  # an AbstractRecurrent: its step module is a class of the file, run once per step
        assert "Step(nn.Module):" in source


def generated(model: torch.nn.Module) -> torch.nn.Module:
    """The generated module, built in this process (its parameters checked against Lua's order)."""
    return check_generated(generate_python(model, "Generated"), model)


def test_recursor_fixture_runs_step_by_step_in_a_fresh_python(tmp_path):
    """Lua's Recursor fixture is called once per time step: so is the generated model, in a fresh ``python -I``
    where fbresnet_port cannot be imported (float32 1e-4 and float64 1e-6 of Lua's outputs)."""
    model = from_lua(lua_file("zoo_rnn", "recursor", "model.t7"))
    out_dir = python_export.export(model, tmp_path / "out", class_name="StepByStep")
    x = lua_file("zoo_rnn", "recursor", "input.t7")
    out32, out64 = python_export.run_isolated(out_dir, [dict(input=x, dtype=d, train=False, per_step=True)
                                                        for d in ("float32", "float64")], tmp_path / "run")
    for name, got, tol in (("output_eval.t7", out32["output"], 1e-4), ("output_eval_f64.t7", out64["output"], 1e-6)):
        for t, (o, ref) in enumerate(zip(got, lua_file("zoo_rnn", "recursor", name))):
            assert_close(o, ref, tol, f"{name} step {t + 1}")
    assert len(out32["output"]) == len(x)


def test_recursor_called_once_per_step():
    """Lua's Recursor fixture is called once per time step; the generated model is the Recursor itself."""
    model = from_lua(lua_file("zoo_rnn", "recursor", "model.t7")).eval()
    gen = generated(model).eval()
    info = manifest("zoo_rnn", "recursor")
    assert [tuple(p.shape) for p in gen.parameters()] == [tuple(s["shape"]) for s in info["param_shapes"]]
    with torch.no_grad():
        out = [gen(t) for t in lua_file("zoo_rnn", "recursor", "input.t7")]
    for t, (o, ref) in enumerate(zip(out, lua_file("zoo_rnn", "recursor", "output_eval.t7"))):
        assert_close(o, ref, 1e-5, f"step {t + 1}")
    assert gen.recursor.step == len(out) + 1


def test_remembered_state_and_training_gradients_match_the_converted_model():
    obj = copy.deepcopy(lua_file("zoo_rnn", "seq_fastlstm", "model.t7"))
    obj.fields["_remember"] = "both"
    model = from_lua(obj).train()
    gen = generated(model).train()
    xs = [torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    for m in (model, gen):
        forget(m)
    for x in xs:  # the second sequence continues from the first one's state in both
        outs = [m(x) for m in (model, gen)]
        torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-6)
    grads = [torch.autograd.grad(m(xs[0]).square().sum(), list(m.parameters())) for m in (model, gen)]
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def test_state_saved_in_the_file_is_continued_by_the_generated_model():
    """A FastLSTM saved at step 3 (outputs[2], cells[2]) inside a Sequencer that remembers: the generated model
    continues from that state, as the converted one does (and Lua)."""
    from test_lua_rnn_validation import saved
    h, c = torch.randn(2, 5), torch.randn(2, 5)
    model = from_lua(saved("seq_fastlstm", 3, {2: h}, {2: c}))
    gen = generated(model)
    for m in gen.modules():  # evaluate mode as in the file (eval() would forget, as Lua's evaluate() does)
        m.training = False
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        torch.testing.assert_close(gen(x), model(x), rtol=0, atol=1e-6)
        fresh = from_lua(saved("seq_fastlstm", 1, {}, {}))(x)
    assert not torch.allclose(model(x), fresh)
    seq = from_lua(lua_file("zoo_rnn", "seqlstm", "model.t7")).remember("both").eval()
    seq(torch.randn(2, 2, 3))  # a SeqLSTM with a last state to continue from
    gen = generated(seq)
    for m in gen.modules():
        m.training = False
    torch.testing.assert_close(gen(x), seq(x), rtol=0, atol=1e-6)


def test_torch_rnn_language_model_runs_in_a_fresh_python(tmp_path):
    model = from_lua(language_model())
    out_dir = python_export.export(model, tmp_path / "out", class_name="CharLM")
    source = (out_dir / "model.py").read_text()
    assert "TorchRnnLSTM(2, 4, remember_states=True)" in source and ".reshape(n * t, -1)" in source
    tokens = torch.tensor([[1, 2, 3, 1], [3, 3, 2, 1]])
    with torch.no_grad():
        expected = model.eval()(tokens)
        again = model(tokens)  # remember_states: the second call continues from the first
    job = dict(input=tokens, dtype="float32", train=False)
    first, second = python_export.run_isolated(out_dir, [job, job], tmp_path / "run")
    torch.testing.assert_close(first["output"], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(second["output"], expected, rtol=0, atol=1e-6)  # a fresh load() each job
    assert not torch.equal(again, expected)


def test_torch_rnn_layers_temporal_adapter_and_dpnn_tables():
    lstm = trnn_lstm(3, 4)
    inner = lua_module("nn.Linear", weight=torch.randn(2, 4), bias=torch.randn(2))
    vi, vo = view(1, -1, dims=3), view(1, -1, dims=2)
    adapter = t7.TorchObject("nn.TemporalAdapter", t7.LuaTable(
        view_in=vi, view_out=vo, net=lua_module("nn.Sequential", modules=t7.LuaList([vi, inner, vo]))))
    vanilla = lua_module("nn.VanillaRNN", input_dim=2, hidden_dim=3, weight=torch.randn(5, 3), bias=torch.randn(3),
                         h0=torch.empty(0), remember_states=False)
    deco = lua_module("nn.Decorator", module=vanilla, modules=t7.LuaList([vanilla]))
    net = lua_module("nn.Sequential", modules=t7.LuaList([lstm, adapter, deco, lua_module("nn.SAdd", addend=-1,
                                                                                          negate=True)]))
    model = from_lua(net)
    gen = generated(model)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(gen(x), model(x), rtol=0, atol=1e-6)
    pair = lua_module("nn.Sequential", modules=t7.LuaList([lua_module("nn.ReverseTable"), lua_module("nn.ZipTable")]))
    a, b, c, d = (torch.full((2,), float(i)) for i in range(4))
    zipped = generated(from_lua(pair))([[a, b], [c, d]])
    assert [[t.tolist() for t in row] for row in zipped] == [[c.tolist(), a.tolist()], [d.tolist(), b.tolist()]]


def test_mask_zero_around_a_plain_module():
    inner = lua_module("nn.Linear", weight=torch.randn(2, 3), bias=torch.randn(2))
    model = from_lua(lua_module("nn.MaskZero", modules=t7.LuaList([inner]), nInputDim=1))
    x = torch.randn(4, 3)
    x[1] = 0
    out = generated(model)(x)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)
    assert out[1].abs().sum() == 0 and out[0].abs().sum() > 0
