"""fbresnet_port.lua_nn.rnn (Element-Research rnn models) against Lua Torch and independent references.

The Lua fixtures (../shared/reference/zoo_rnn): every case's evaluate output in float32 and float64, and
in float64 gradInput and the flat gradient of ``backward`` (Lua ``model:parameters()`` order) and the
parameter shapes. In evaluate mode Lua's backward of LSTM/FastLSTM/GRU linearises every step at the
last step's state (its step clones copy the step module after the whole forward); the port reproduces
that, and the fixtures check it.

Beyond the fixtures (other sizes, sequence lengths, batches, remember modes, saved states):
torch.nn.LSTM (FastLSTM and SeqLSTM weights re-ordered into it), the GRU and peephole-LSTM equations
written out here, and a hand-written version of Lua's evaluate-mode backward of FastLSTM.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fbresnet_port import t7
from fbresnet_port.errors import UserError
from fbresnet_port.lua_nn import LuaModelError, from_lua, lua_str, to_lua
from fbresnet_port.lua_nn.rnn import RecurrentInputError, forget, remember
from zoo_fixtures import assert_close, case_names, check_case, lua_file, manifest

GROUP = "zoo_rnn"


def _cases() -> list[str]:
    return case_names(GROUP)


def lua_model(case: str):
    return lua_file(GROUP, case, "model.t7")


def steps(x):
    return [t.clone() for t in x]


# ----------------------------------------------------------------------------------------------
# Lua fixtures
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [c for c in _cases() if c != "recursor"])
def test_fixture_case(case):
    """Outputs f32/f64, gradInput / gradParams f64 (Lua's evaluate-mode backward), parameter shapes."""
    check_case(GROUP, case)


def test_fixture_recursor_called_once_per_step():
    info = manifest(GROUP, "recursor")
    x = lua_file(GROUP, "recursor", "input.t7")
    rec = from_lua(lua_model("recursor")).eval()
    assert [tuple(p.shape) for p in rec.parameters()] == [tuple(s["shape"]) for s in info["param_shapes"]]
    with torch.no_grad():
        out = [rec(t) for t in x]
    assert rec.step == len(x) + 1
    for t, (o, ref) in enumerate(zip(out, lua_file(GROUP, "recursor", "output_eval.t7"))):
        assert_close(o, ref, 1e-4, f"recursor output[{t}]")
    rec = from_lua(lua_model("recursor")).double().eval()
    with torch.no_grad():
        out = [rec(t.double()) for t in x]
    for t, (o, ref) in enumerate(zip(out, lua_file(GROUP, "recursor", "output_eval_f64.t7"))):
        assert_close(o, ref, 1e-6, f"recursor output_f64[{t}]")


# ----------------------------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------------------------

def fastlstm_as_torch(seq) -> nn.LSTM:
    """torch.nn.LSTM with a FastLSTM's weights (FastLSTM gate blocks: i, g, f, o; torch: i, f, g, o)."""
    w_x, b, w_h = [p.detach() for p in seq.parameters()]
    H = w_h.shape[1]
    order = torch.cat([torch.arange(0, H), torch.arange(2 * H, 3 * H), torch.arange(H, 2 * H),
                       torch.arange(3 * H, 4 * H)])
    ref = nn.LSTM(w_x.shape[1], H).to(w_x.dtype)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(w_x[order])
        ref.weight_hh_l0.copy_(w_h[order])
        ref.bias_ih_l0.copy_(b[order])
        ref.bias_hh_l0.zero_()
    return ref


def seqlstm_as_torch(m) -> nn.LSTM:
    """torch.nn.LSTM with a SeqLSTM's (D+H) x 4H weight (column blocks i, f, o, g)."""
    D, H = m.inputsize, m.outputsize
    order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
    ref = nn.LSTM(D, H).to(m.weight.dtype)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(m.weight[:D, order].t())
        ref.weight_hh_l0.copy_(m.weight[D:, order].t())
        ref.bias_ih_l0.copy_(m.bias[order])
        ref.bias_hh_l0.zero_()
    return ref


def gru_reference(params, xs, h):
    """rnn's GRU: r, z = sigmoid(blocks of Wx x + b + Ux h); h~ = tanh(W x + b + U (r*h));
    h' = (1 - z) * h~ + z * h."""
    w_g, b_g, u_g, w, b, u = params
    H = u.shape[0]
    out = []
    for x in xs:
        a = x @ w_g.t() + b_g + h @ u_g.t()
        r, z = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H:])
        cand = torch.tanh(x @ w.t() + b + (r * h) @ u.t())
        h = (1 - z) * cand + z * h
        out.append(h)
    return out


def peephole_lstm_reference(params, xs, h, c):
    """rnn's nn.LSTM (cell2gate): gates see the previous cell (input, forget) or the new one (output).
    Parameter order is Lua's: forget gate, input gate, hidden, output gate."""
    (wf, bf, uf, pf), (wi, bi, ui, pi), (wh, bh, uh), (wo, bo, uo, po) = \
        params[0:4], params[4:8], params[8:11], params[11:15]
    out = []
    for x in xs:
        i = torch.sigmoid(x @ wi.t() + bi + h @ ui.t() + c * pi)
        f = torch.sigmoid(x @ wf.t() + bf + h @ uf.t() + c * pf)
        g = torch.tanh(x @ wh.t() + bh + h @ uh.t())
        c = f * c + i * g
        o = torch.sigmoid(x @ wo.t() + bo + h @ uo.t() + c * po)
        h = o * torch.tanh(c)
        out.append(h)
    return out, h, c


def test_fastlstm_training_is_exact_bptt_other_sizes():
    """Training mode: outputs, gradInput and parameter gradients of torch.nn.LSTM (T=6, B=3)."""
    torch.manual_seed(0)
    seq = from_lua(lua_model("seq_fastlstm")).double().train()
    ref = fastlstm_as_torch(seq)
    x = torch.randn(6, 3, 3, dtype=torch.float64, requires_grad=True)
    out = seq(list(x.unbind(0)))
    expected, _ = ref(x.detach().clone().requires_grad_(True))
    g = torch.randn(6, 3, 5, dtype=torch.float64)
    torch.autograd.backward(out, list(g.unbind(0)))
    x2 = x.detach().clone().requires_grad_(True)
    expected, _ = ref(x2)
    expected.backward(g)
    assert_close(torch.stack(out).detach(), expected.detach(), 1e-12, "output")
    assert_close(x.grad, x2.grad, 1e-12, "gradInput")
    assert_fastlstm_grads(seq, ref)


def assert_fastlstm_grads(seq, ref: nn.LSTM) -> None:
    w_x, b, w_h = [p.grad for p in seq.parameters()]
    H = w_h.shape[1]
    order = torch.cat([torch.arange(0, H), torch.arange(2 * H, 3 * H), torch.arange(H, 2 * H),
                       torch.arange(3 * H, 4 * H)])
    assert_close(w_x[order], ref.weight_ih_l0.grad, 1e-12, "grad Wx")
    assert_close(w_h[order], ref.weight_hh_l0.grad, 1e-12, "grad Wh")
    assert_close(b[order], ref.bias_ih_l0.grad, 1e-12, "grad b")


def lua_eval_backward_fastlstm(w_x, b, w_h, xs, grads):
    """Lua rnn's evaluate-mode backward of Sequencer(FastLSTM), written out from the Lua sources:
    every step uses the gate values of the last step, the input x_T and the last h_T / c_T that the
    output and cell buffers hold (zero initial state at step 1)."""
    H = w_h.shape[1]
    h = torch.zeros(xs[0].shape[0], H, dtype=xs[0].dtype)
    c = torch.zeros_like(h)
    for x in xs:
        a = x @ w_x.t() + b + h @ w_h.t()
        i, g, f, o = (torch.sigmoid(a[:, :H]), torch.tanh(a[:, H:2 * H]), torch.sigmoid(a[:, 2 * H:3 * H]),
                      torch.sigmoid(a[:, 3 * H:]))
        c = f * c + i * g
        h = o * torch.tanh(c)
    gw_x, gb, gw_h = torch.zeros_like(w_x), torch.zeros_like(b), torch.zeros_like(w_h)
    gh_next, gc_next = torch.zeros_like(h), torch.zeros_like(c)
    grad_in = [None] * len(xs)
    for t in reversed(range(len(xs))):
        gh = grads[t] + gh_next
        tc = torch.tanh(c)
        gc = gc_next + gh * o * (1 - tc ** 2)
        ga = torch.cat([gc * g * i * (1 - i), gc * i * (1 - g ** 2), gc * c * f * (1 - f),
                        gh * tc * o * (1 - o)], 1)
        grad_in[t] = ga @ w_x
        gh_next, gc_next = ga @ w_h, gc * f
        gw_x += ga.t() @ xs[-1]
        gb += ga.sum(0)
        gw_h += ga.t() @ h
    return grad_in, torch.cat([gw_x.reshape(-1), gb, gw_h.reshape(-1)])


def test_fastlstm_evaluate_backward_is_luas_other_sizes():
    torch.manual_seed(1)
    seq = from_lua(lua_model("seq_fastlstm")).double().eval()
    xs = [torch.randn(4, 3, dtype=torch.float64, requires_grad=True) for _ in range(7)]
    grads = [torch.randn(4, 5, dtype=torch.float64) for _ in range(7)]
    torch.autograd.backward(seq(xs), grads)
    w_x, b, w_h = [p.detach() for p in seq.parameters()]
    ref_in, ref_params = lua_eval_backward_fastlstm(w_x, b, w_h, [x.detach() for x in xs], grads)
    for t, (x, r) in enumerate(zip(xs, ref_in)):
        assert_close(x.grad, r, 1e-12, f"gradInput[{t}]")
    assert_close(torch.cat([p.grad.reshape(-1) for p in seq.parameters()]), ref_params, 1e-12, "gradParams")
    # the exact back-propagation through time in evaluate mode on request
    exact = from_lua(lua_model("seq_fastlstm")).double().eval()
    exact.module.lua_eval_backward = False
    x = torch.stack([t.detach() for t in xs]).requires_grad_(True)
    torch.autograd.backward(exact(list(x.unbind(0))), grads)
    x2 = x.detach().clone().requires_grad_(True)
    fastlstm_as_torch(exact)(x2)[0].backward(torch.stack(grads))
    assert_close(x.grad, x2.grad, 1e-12, "exact gradInput")


def test_gru_and_peephole_lstm_against_equations():
    torch.manual_seed(2)
    xs = [torch.randn(3, 3, dtype=torch.float64) for _ in range(5)]
    gru = from_lua(lua_model("seq_gru")).double().eval()
    params = [p.detach() for p in gru.parameters()]
    with torch.no_grad():
        out = gru(xs)
    for t, (o, r) in enumerate(zip(out, gru_reference(params, xs, torch.zeros(3, 5, dtype=torch.float64)))):
        assert_close(o, r, 1e-12, f"GRU output[{t}]")
    lstm = from_lua(lua_model("seq_lstm")).double().eval()
    params = [p.detach() for p in lstm.parameters()]
    zeros = torch.zeros(3, 5, dtype=torch.float64)
    with torch.no_grad():
        out = lstm(xs)
    for t, (o, r) in enumerate(zip(out, peephole_lstm_reference(params, xs, zeros, zeros)[0])):
        assert_close(o, r, 1e-12, f"LSTM output[{t}]")


def test_sequencer_tensor_input_and_one_dimensional_steps():
    seq = from_lua(lua_model("seq_fastlstm")).double().eval()
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        out = seq(x)
        expected, _ = fastlstm_as_torch(seq)(x)
        assert isinstance(out, torch.Tensor) and out.shape == (4, 2, 5)
        assert_close(out, expected, 1e-12, "tensor input")
        out1 = seq([x[t, 0] for t in range(4)])  # steps without a batch dimension
    assert out1[0].shape == (5,)
    assert_close(torch.stack(out1), expected[:, 0], 1e-12, "1-D steps")


# ----------------------------------------------------------------------------------------------
# State: forget, remember, saved state, user states, type conversion
# ----------------------------------------------------------------------------------------------

def test_remember_modes_continue_the_state():
    seq = from_lua(lua_model("seq_fastlstm")).double().eval()
    ref = fastlstm_as_torch(seq)
    a, b = torch.randn(3, 2, 3, dtype=torch.float64), torch.randn(4, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        ref_a, state = ref(a)
        ref_b_cont, _ = ref(b, state)
        ref_b_fresh, _ = ref(b)
        seq(a)
        assert_close(seq(b), ref_b_fresh, 1e-12, "default 'neither' forgets")
        for mode, keeps in (("both", True), ("eval", True), ("train", False), ("neither", False)):
            seq.remember(mode)
            forget(seq)
            seq(a)
            expected = ref_b_cont if keeps else ref_b_fresh
            assert_close(seq(b), expected, 1e-12, f"remember {mode!r} in evaluate mode")
        remember(nn.Sequential(seq), "train")  # Lua's module:remember reaches the Sequencer
        assert seq.remember_mode == "train"


def test_training_sequence_after_remembered_one_backpropagates_only_itself():
    seq = from_lua(lua_model("seq_fastlstm")).double().train().remember("both")
    ref = fastlstm_as_torch(seq)
    a = torch.randn(3, 2, 3, dtype=torch.float64)
    b = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    seq(list(a.unbind(0)))
    out = seq(list(b.unbind(0)))
    torch.autograd.backward(out, [torch.ones(2, 5, dtype=torch.float64)] * 2)
    with torch.no_grad():
        _, state = ref(a)
    b2 = b.detach().clone().requires_grad_(True)
    expected, _ = ref(b2, state)
    expected.backward(torch.ones(2, 2, 5, dtype=torch.float64))
    assert_close(torch.stack(out).detach(), expected.detach(), 1e-12, "continued output")
    assert_close(b.grad, b2.grad, 1e-12, "gradInput")
    assert_fastlstm_grads(seq, ref)


def test_evaluate_switch_forgets_state_kept_in_training():
    seq = from_lua(lua_model("seq_fastlstm")).double().train().remember("both")
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        seq(x)
        assert seq.module.step == 4
        seq.eval()  # Lua Sequencer:evaluate() forgets
        assert seq.module.step == 1 and seq.module.state is None
        expected, _ = fastlstm_as_torch(seq)(x)
        assert_close(seq(x), expected, 1e-12, "after evaluate()")


def saved_state_model(case: str, step: int, outputs: dict, cells: dict | None = None, **fields):
    """The fixture's model with the fields Lua saves after a forward (as torch.save would keep them)."""
    obj = copy.deepcopy(lua_model(case))
    obj.fields["train"] = False
    obj.fields["_remember"] = fields.pop("remember", "both")
    rnn_obj = obj.fields["module"]
    rnn_obj.fields["step"] = step
    rnn_obj.fields["outputs"] = t7.LuaTable(outputs)
    if cells is not None:
        rnn_obj.fields["cells"] = t7.LuaTable(cells)
    rnn_obj.fields.update(fields)
    return obj


@pytest.mark.parametrize("remember_mode", ["both", "eval", "neither"])
def test_saved_lstm_state_is_continued(remember_mode):
    """A model saved after a forward carries step, outputs[step-1] and cells[step-1]."""
    base = from_lua(lua_model("seq_fastlstm")).eval()
    ref = fastlstm_as_torch(base)
    a, b = torch.randn(3, 2, 3), torch.randn(3, 2, 3)
    with torch.no_grad():
        _, (h, c) = ref(a)
        cont, _ = ref(b, (h, c))
        fresh, _ = ref(b)
        model = from_lua(saved_state_model("seq_fastlstm", 4, {3: h[0].clone()}, {3: c[0].clone()},
                                           remember=remember_mode))
        assert model.module.step == 4
        out = model(b)
        expected = fresh if remember_mode == "neither" else cont
        assert_close(out, expected, 1e-5, "float32 continued")
        # Lua's LSTM:type() forgets: the float64 copy starts from zeros
        model = from_lua(saved_state_model("seq_fastlstm", 4, {3: h[0].clone()}, {3: c[0].clone()},
                                           remember=remember_mode)).double()
        assert model.module.step == 1
        assert_close(model(b.double()), fresh.double(), 1e-5, "float64 copy")


def test_saved_gru_state_survives_double():
    """GRU has no type() override in Lua: the converted copy keeps (and converts) the state."""
    base = from_lua(lua_model("seq_gru")).double().eval()
    params = [p.detach() for p in base.parameters()]
    a, b = [torch.randn(2, 3, dtype=torch.float64) for _ in range(3)], [torch.randn(2, 3) for _ in range(2)]
    h = gru_reference(params, a, torch.zeros(2, 5, dtype=torch.float64))[-1]
    model = from_lua(saved_state_model("seq_gru", 4, {3: h.float()})).double()
    with torch.no_grad():
        out = model([x.double() for x in b])
    expected = gru_reference(params, [x.double() for x in b], h.float().double())
    for o, e in zip(out, expected):
        assert_close(o, e, 1e-12, "GRU continued in float64")


def test_user_prev_output_and_cell_are_the_initial_state():
    base = from_lua(lua_model("seq_lstm")).double().eval()
    params = [p.detach() for p in base.parameters()]
    h0, c0 = torch.randn(2, 5), torch.randn(2, 5)
    obj = saved_state_model("seq_lstm", 1, {}, {}, userPrevOutput=h0, userPrevCell=c0, remember="neither")
    model = from_lua(obj).double()
    model.module.user_state = [h0.double(), c0.double()]  # Lua's type() empties them (an error in Lua)
    xs = [torch.randn(2, 3, dtype=torch.float64) for _ in range(3)]
    with torch.no_grad():
        for _ in range(2):  # forget() keeps the user state
            out = model(xs)
            for o, e in zip(out, peephole_lstm_reference(params, xs, h0.double(), c0.double())[0]):
                assert_close(o, e, 1e-12, "from userPrevOutput/userPrevCell")
    model = from_lua(obj).eval()
    assert [u.shape for u in model.module.user_state] == [(2, 5), (2, 5)]


def test_sequencer_over_recursor_evaluate_backward_is_luas():
    """Sequencer(Recursor(Linear, Tanh)) in evaluate mode: Lua's step clones all copy the module after
    the last step, so Tanh's derivative is the last step's, while Linear (handed each step's input)
    accumulates x_t: grad W = sum_t (g_t (1 - y_T^2))^T x_t, gradInput_t = (g_t (1 - y_T^2)) W."""
    from fbresnet_port.lua_nn import lua_module
    rec = lua_model("recursor")
    seq = from_lua(lua_module("nn.Sequencer", module=rec, modules=t7.LuaList([rec]), _remember="neither"))
    seq = seq.double().eval()
    torch.manual_seed(3)
    xs = [torch.randn(2, 3, dtype=torch.float64, requires_grad=True) for _ in range(5)]
    grads = [torch.randn(2, 5, dtype=torch.float64) for _ in range(5)]
    torch.autograd.backward(seq(xs), grads)
    lin = seq.module.recurrentModule[0]
    w, b = lin.weight.detach(), lin.bias.detach()
    y_last = torch.tanh(xs[-1].detach() @ w.t() + b)
    assert_close(lin.weight.grad, sum((g * (1 - y_last ** 2)).t() @ x.detach() for g, x in zip(grads, xs)),
                 1e-12, "grad W")
    assert_close(lin.bias.grad, sum((g * (1 - y_last ** 2)).sum(0) for g in grads), 1e-12, "grad b")
    for t, (g, x) in enumerate(zip(grads, xs)):
        assert_close(x.grad, (g * (1 - y_last ** 2)) @ w, 1e-12, f"gradInput[{t}]")


def test_recursor_steps_and_forget():
    rec = from_lua(lua_model("recursor")).eval()
    lin = rec.recurrentModule[0]
    x = torch.randn(2, 3)
    with torch.no_grad():
        assert_close(rec(x), torch.tanh(lin(x)), 1e-6, "one step")
    assert rec.step == 2
    rec.forget()
    assert rec.step == 1


# ----------------------------------------------------------------------------------------------
# SeqLSTM beyond the fixture
# ----------------------------------------------------------------------------------------------

def test_seqlstm_against_torch_lstm_inputs_and_remember():
    m = from_lua(lua_model("seqlstm")).double().eval()
    ref = seqlstm_as_torch(m)
    x, y = torch.randn(5, 3, 3, dtype=torch.float64), torch.randn(2, 3, 3, dtype=torch.float64)
    h0, c0 = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    with torch.no_grad():
        expected, state = ref(x)
        assert_close(m(x), expected, 1e-12, "x")
        assert_close(m([h0, x]), ref(x, (h0[None], torch.zeros_like(c0)[None]))[0], 1e-12, "{h0, x}")
        assert_close(m([c0, h0, x]), ref(x, (h0[None], c0[None]))[0], 1e-12, "{c0, h0, x}")
        m.batchfirst = True
        assert_close(m(x.transpose(0, 1)), expected.transpose(0, 1), 1e-12, "batchfirst")
        m.batchfirst = False
        m.remember("eval")
        m.forget()
        m(x)
        assert_close(m(y), ref(y, state)[0], 1e-12, "remembered")
        m.user_state = [h0, c0]  # userPrevOutput / userPrevCell: used once
        assert_close(m(y), ref(y, (h0[None], c0[None]))[0], 1e-12, "userPrev")
        assert m.user_state == [None, None]
        # Lua remembers through self.h0 / self.c0 only: after an explicit h0, h starts from zeros again
        m.forget()
        m([h0, x])
        c_last = ref(x, (h0[None], torch.zeros_like(c0)[None]))[1][1]
        assert_close(m(y), ref(y, (torch.zeros_like(h0)[None], c_last))[0], 1e-12, "h0 given before")
        m.train()
        assert m.last_state is None  # Lua's SeqLSTM:training() forgets


def test_seqlstm_maskzero_resets_rows():
    m = from_lua(lua_model("seqlstm")).double().eval()
    m.maskzero = True
    ref = seqlstm_as_torch(m)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    x[1, 0] = 0  # sequence 0 restarts after step 2
    with torch.no_grad():
        out = m(x)
        expected0 = torch.cat([ref(x[:1, :1])[0], torch.zeros(1, 1, 5, dtype=torch.float64),
                               ref(x[2:, :1])[0]])
        expected1, _ = ref(x[:, 1:])
    assert_close(out[:, :1], expected0, 1e-12, "masked sequence")
    assert_close(out[:, 1:], expected1, 1e-12, "unmasked sequence")


def test_seqlstm_saved_state_and_export():
    m = from_lua(lua_model("seqlstm")).eval().remember("both")
    x, y = torch.randn(3, 2, 3), torch.randn(2, 2, 3)
    with torch.no_grad():
        m(x)
        expected = m(y)
        m.forget()
        m(x)
    saved = to_lua(m)
    assert saved.fields["_remember"] == "both" and tuple(saved.fields["cell"].shape) == (1, 2, 5)
    again = from_lua(t7.load_bytes(t7.dumps(saved)))
    with torch.no_grad():
        assert_close(again(y), expected, 1e-6, "continued after export")


# ----------------------------------------------------------------------------------------------
# Small modules, export, printing, errors
# ----------------------------------------------------------------------------------------------

def test_small_modules():
    from fbresnet_port.lua_nn import lua_module
    lin = from_lua(lua_module("nn.LinearNoBias", weight=torch.ones(2, 3), gradWeight=torch.zeros(2, 3)))
    assert lin.bias is None and lua_str(lin) == "nn.LinearNoBias(3 -> 2) without bias"
    assert lin(torch.tensor([1.0, 2.0, 3.0])).tolist() == [6.0, 6.0]
    sadd = from_lua(lua_module("nn.SAdd", addend=-1, negate=True))
    assert sadd(torch.tensor([0.25, 2.0])).tolist() == [0.75, -1.0]
    a, b, c = torch.ones(1), torch.zeros(1), torch.full((1,), 2.0)
    assert from_lua(lua_module("nn.ReverseTable"))([a, b, c]) == [c, b, a]
    zipped = from_lua(lua_module("nn.ZipTable"))([[a, b], [c, a]])
    assert zipped == [[a, c], [b, a]]


def test_export_round_trip_keeps_structure_and_aliases():
    for case in _cases():
        if case == "missing-fixtures":
            pytest.skip("fixtures missing")
        model = from_lua(lua_model(case)).eval()
        obj = to_lua(model)
        again = from_lua(t7.load_bytes(t7.dumps(obj))).eval()
        assert lua_str(again) == lua_str(model)
        for p, q in zip(model.parameters(), again.parameters()):
            assert torch.equal(p, q)
    fast = to_lua(from_lua(lua_model("seq_fastlstm"))).fields["module"]
    rm = fast.fields["recurrentModule"]
    assert fast.fields["i2g"] is rm.fields["modules"][0].fields["modules"][0].fields["modules"][1].fields["modules"][0]
    assert fast.fields["sharedClones"][0] is rm and fast.fields["modules"][0] is rm
    bi = to_lua(from_lua(lua_model("bisequencer")))
    assert bi.fields["fwdSeq"] is bi.fields["module"].fields["modules"][0].fields["modules"][0]


def test_printing_like_lua():
    assert lua_str(from_lua(lua_model("seq_fastlstm"))) == "nn.Sequencer @ nn.FastLSTM(3 -> 5)"
    assert lua_str(from_lua(lua_model("seq_gru"))) == "nn.Sequencer @ nn.GRU(3 -> 5, 0.00)"
    assert lua_str(from_lua(lua_model("seqlstm"))) == "nn.SeqLSTM"
    assert lua_str(from_lua(lua_model("maskzero")).module.recurrentModule).startswith("nn.MaskZero @ nn.Sequential {")
    assert lua_str(from_lua(lua_model("recursor"))).startswith("nn.Recursor @ nn.Sequential {")
    assert lua_str(from_lua(lua_model("bisequencer"))).startswith("nn.BiSequencer @ nn.Sequential {")


def test_errors_are_user_errors():
    seq = from_lua(lua_model("seq_fastlstm"))
    with pytest.raises(RecurrentInputError, match="expected a sequence"):
        seq(3)
    with pytest.raises(UserError, match="remember mode"):
        seq.remember("always")
    mz = from_lua(lua_model("maskzero")).module.recurrentModule
    with pytest.raises(RecurrentInputError, match="nInputDim is 1"):
        mz([torch.zeros(2, 2, 3), torch.zeros(2, 5), torch.zeros(2, 5)])
    seqlstm = from_lua(lua_model("seqlstm"))
    with pytest.raises(RecurrentInputError, match="only batch mode"):
        seqlstm(torch.zeros(2, 3))
    seqlstm.remember("both").eval()
    seqlstm(torch.zeros(2, 2, 3))
    with pytest.raises(RecurrentInputError, match="call forget"):
        seqlstm(torch.zeros(2, 4, 3))
    lstm = from_lua(lua_model("seq_fastlstm")).module
    lstm(torch.zeros(2, 3))
    with torch.no_grad(), pytest.raises(RecurrentInputError, match="call forget"):
        lstm(torch.zeros(4, 3))
    bad = copy.deepcopy(lua_model("seq_gru"))
    bad.fields["_remember"] = "sometimes"
    with pytest.raises(LuaModelError) as err:
        from_lua(bad)
    assert str(err.value) == ("nn.Sequencer at model: field '_remember' = 'sometimes': "
                              "should be one of 'both', 'eval', 'train', 'neither'")
