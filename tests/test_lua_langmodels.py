"""Lua language-model checkpoints: jcjohnson/torch-rnn (nn.LanguageModel, its nn.LSTM, nn.VanillaRNN,
nn.TemporalAdapter) and karpathy/char-rnn (an nngraph LSTM with its OneHot class), plus dpnn's nn.Decorator.

No Lua fixtures exist for these projects: the Lua objects are built here with the exact fields the Lua
sources save (torch-rnn LSTM.lua / VanillaRNN.lua / LanguageModel.lua / train.lua's ``{model=..., opt=...}``;
char-rnn model/LSTM.lua / util/OneHot.lua / train.lua's ``{protos={rnn=..., criterion=...}, opt, vocab}``),
written to a .t7 file and read back. Expected values come from torch.nn.LSTM / torch.nn.RNN with the
weights re-ordered (torch-rnn and char-rnn keep the gates in the order i, f, o, g; PyTorch i, f, g, o)
and from the LSTM equations written out in the tests.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fbresnet_port import t7
from fbresnet_port.errors import UserError
from fbresnet_port.lua_nn import LuaModelError, from_lua, load_lua_model, lua_module, lua_str, to_lua
from fbresnet_port.lua_nn.graph import GraphNode, LuaGModule
from fbresnet_port.lua_nn.rnn import LuaLSTM, forget
from fbresnet_port.lua_nn.torchrnn import LuaTorchRnnLSTM

E = torch.empty(0)
ATOL = 1e-5


def rand(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * 0.5


def ifog_to_ifgo(t: torch.Tensor, H: int) -> torch.Tensor:
    """Gate blocks (first dimension) i, f, o, g -> PyTorch's i, f, g, o."""
    i, f, o, g = t.split(H, 0)
    return torch.cat([i, f, g, o], 0)


# ----------------------------------------------------------------------------------------------
# torch-rnn objects, with the fields of LSTM.lua / VanillaRNN.lua / LanguageModel.lua __init
# ----------------------------------------------------------------------------------------------

def trnn_lstm(D: int, H: int, gen: torch.Generator, remember: bool = False, **state) -> t7.TorchObject:
    w, b = rand(D + H, 4 * H, gen=gen), rand(4 * H, gen=gen)
    grads = dict(grad_c0=E.clone(), grad_h0=E.clone(), grad_x=E.clone())
    fields = dict(input_dim=D, hidden_dim=H, weight=w, gradWeight=torch.zeros_like(w), bias=b,
                  gradBias=torch.zeros_like(b), cell=E.clone(), gates=E.clone(), buffer1=E.clone(),
                  buffer2=E.clone(), buffer3=E.clone(), grad_a_buffer=E.clone(), h0=E.clone(), c0=E.clone(),
                  remember_states=remember, gradInput=t7.LuaList(grads.values()), **grads)
    fields.update(state)
    return lua_module("nn.LSTM", **fields)


def trnn_vanilla(D: int, H: int, gen: torch.Generator, remember: bool = False) -> t7.TorchObject:
    w, b = rand(D + H, H, gen=gen), rand(H, gen=gen)
    grads = dict(grad_h0=E.clone(), grad_x=E.clone())
    return lua_module("nn.VanillaRNN", input_dim=D, hidden_dim=H, weight=w, gradWeight=torch.zeros_like(w), bias=b,
                      gradBias=torch.zeros_like(b), h0=E.clone(), remember_states=remember, buffer1=E.clone(),
                      buffer2=E.clone(), gradInput=t7.LuaList(grads.values()), **grads)


def linear(w: torch.Tensor, b: torch.Tensor | None = None) -> t7.TorchObject:
    fields = dict(weight=w, gradWeight=torch.zeros_like(w), addBuffer=E.clone())
    if b is not None:
        fields.update(bias=b, gradBias=torch.zeros_like(b))
    return lua_module("nn.Linear", **fields)


def view(*size: int, num_input_dims: int) -> t7.TorchObject:
    return lua_module("nn.View", size=t7.Storage(torch.tensor(size), "torch.LongStorage"),
                      numElements=1, numInputDims=num_input_dims)


def torch_lstm(lua: t7.TorchObject) -> nn.LSTM:
    """A torch.nn.LSTM (batch first) with a torch-rnn LSTM's weights."""
    D, H = lua["input_dim"], lua["hidden_dim"]
    m = nn.LSTM(D, H, batch_first=True)
    with torch.no_grad():
        m.weight_ih_l0.copy_(ifog_to_ifgo(lua["weight"][:D].T, H))
        m.weight_hh_l0.copy_(ifog_to_ifgo(lua["weight"][D:].T, H))
        m.bias_ih_l0.copy_(ifog_to_ifgo(lua["bias"], H))
        m.bias_hh_l0.zero_()
    return m


def test_torch_rnn_lstm_dispatches_and_matches_torch_lstm():
    gen = torch.Generator().manual_seed(1)
    lua = trnn_lstm(3, 4, gen)
    lstm = from_lua(lua)
    assert isinstance(lstm, LuaTorchRnnLSTM)
    assert lua_str(lstm) == "nn.LSTM(3 -> 4)" and lstm.lua_typename == "nn.LSTM"
    assert [tuple(p.shape) for p in lstm.parameters()] == [(7, 16), (16,)]
    ref = torch_lstm(lua)
    x = torch.randn(2, 5, 3, generator=gen, requires_grad=True)
    out = lstm(x)
    expected, _ = ref(x)
    assert out.shape == (2, 5, 4)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    (g,) = torch.autograd.grad(out.sum(), x)
    (g_ref,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(g, g_ref, atol=ATOL, rtol=0)

    # {c0, h0, x} and {h0, x} (Lua's table order), against torch.nn.LSTM started from (h0, c0)
    h0, c0 = torch.randn(2, 2, 4, generator=gen)
    out = lstm([c0, h0, x])
    torch.testing.assert_close(out, ref(x, (h0[None], c0[None]))[0], atol=ATOL, rtol=0)
    out = lstm([h0, x])
    torch.testing.assert_close(out, ref(x, (h0[None], torch.zeros(1, 2, 4)))[0], atol=ATOL, rtol=0)
    with pytest.raises(UserError, match=r"h0 should be 2 x 4"):
        lstm([torch.zeros(3, 4), x])
    with pytest.raises(UserError, match=r"N x T x 3"):
        lstm(torch.zeros(2, 5, 7))


def test_torch_rnn_lstm_remember_states_and_reset():
    gen = torch.Generator().manual_seed(2)
    lua = trnn_lstm(3, 4, gen, remember=True)
    lstm, ref = from_lua(lua), torch_lstm(lua)
    x = torch.randn(2, 5, 3, generator=gen)
    whole, _ = ref(x)
    first, second = lstm(x[:, :2]), lstm(x[:, 2:])  # the second call continues from the first's last step
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=ATOL, rtol=0)
    with pytest.raises(UserError, match="batch size 3 differs"):
        lstm(torch.zeros(3, 1, 3))
    lstm.resetStates()
    torch.testing.assert_close(lstm(x[:, 2:]), ref(x[:, 2:])[0], atol=ATOL, rtol=0)
    forget(lstm)  # the generic rnn forget() resets it too
    torch.testing.assert_close(lstm(x[:, 2:]), ref(x[:, 2:])[0], atol=ATOL, rtol=0)

    # without remember_states every call starts from zeros
    plain = from_lua(trnn_lstm(3, 4, torch.Generator().manual_seed(2)))
    plain(x[:, :2])
    torch.testing.assert_close(plain(x[:, 2:]), ref(x[:, 2:])[0], atol=ATOL, rtol=0)


def test_torch_rnn_lstm_saved_state_is_continued_and_exported(tmp_path):
    gen = torch.Generator().manual_seed(3)
    out, cell = torch.randn(2, 2, 3, 4, generator=gen)  # N=2, T=3: a model saved without clearState()
    lua = trnn_lstm(3, 4, gen, remember=True, output=out, cell=cell, h0=torch.zeros(2, 4), c0=torch.zeros(2, 4))
    lstm, ref = from_lua(lua), torch_lstm(lua)
    x = torch.randn(2, 2, 3, generator=gen)
    expected, _ = ref(x, (out[:, -1][None], cell[:, -1][None]))
    back = from_lua(reload(to_lua(from_lua(lua)), tmp_path))  # exported state continues the same
    torch.testing.assert_close(lstm(x), expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(back(x), expected, atol=ATOL, rtol=0)


def reload(obj, tmp_path):
    """``obj`` written to a .t7 file and read back (as Lua would save and load it)."""
    path = tmp_path / "reload.t7"
    t7.save(path, obj)
    return t7.load(path)


def test_torch_rnn_lstm_with_bad_weight_shape_is_one_clear_error():
    lua = trnn_lstm(3, 4, torch.Generator().manual_seed(0))
    lua["hidden_dim"] = 5
    with pytest.raises(LuaModelError) as err:
        from_lua(lua)
    assert str(err.value) == ("nn.LSTM at model: field 'weight' = a FloatTensor of size 7x16: should be of size "
                              "8x20: (input_dim + hidden_dim) x 4 hidden_dim, from input_dim 3, hidden_dim 5")


def test_element_research_lstm_still_converts_to_the_step_module():
    step = lua_module("nn.Identity")
    lua = lua_module("nn.LSTM", recurrentModule=step, modules=t7.LuaList([step]), inputSize=2, outputSize=2,
                     rho=5, step=1)
    assert type(from_lua(lua)) is LuaLSTM


def test_vanilla_rnn_matches_torch_rnn():
    gen = torch.Generator().manual_seed(4)
    lua = trnn_vanilla(3, 5, gen, remember=True)
    rnn = from_lua(lua)
    ref = nn.RNN(3, 5, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(lua["weight"][:3].T)
        ref.weight_hh_l0.copy_(lua["weight"][3:].T)
        ref.bias_ih_l0.copy_(lua["bias"])
        ref.bias_hh_l0.zero_()
    x = torch.randn(2, 4, 3, generator=gen)
    h0 = torch.randn(2, 5, generator=gen)
    torch.testing.assert_close(rnn([h0, x]), ref(x, h0[None])[0], atol=ATOL, rtol=0)
    rnn.resetStates()
    whole = ref(x)[0]
    torch.testing.assert_close(torch.cat([rnn(x[:, :3]), rnn(x[:, 3:])], 1), whole, atol=ATOL, rtol=0)
    assert lua_str(rnn) == "nn.VanillaRNN(3 -> 5)"


def test_temporal_adapter_applies_its_module_at_every_step():
    gen = torch.Generator().manual_seed(5)
    w, b = rand(2, 3, gen=gen), rand(2, gen=gen)
    inner = linear(w, b)
    view_in, view_out = view(1, -1, num_input_dims=3), view(1, -1, num_input_dims=2)
    net = lua_module("nn.Sequential", modules=t7.LuaList([view_in, inner, view_out]))
    # TemporalAdapter.__init does not call parent.__init: only these three fields
    lua = t7.TorchObject("nn.TemporalAdapter", t7.LuaTable(view_in=view_in, view_out=view_out, net=net))
    m = from_lua(lua)
    x = torch.randn(4, 5, 3, generator=gen)
    torch.testing.assert_close(m(x), x @ w.T + b, atol=ATOL, rtol=0)
    torch.testing.assert_close(m(x[:2, :1]), x[:2, :1] @ w.T + b, atol=ATOL, rtol=0)  # other N, T
    assert lua_str(m) == "nn.TemporalAdapter: nn.Linear(3 -> 2)"
    assert [p.shape for p in m.parameters()] == [(2, 3), (2,)]
    lua["view_out"] = inner  # not a View: one clear error
    with pytest.raises(LuaModelError) as err:
        from_lua(lua)
    assert str(err.value) == ("nn.TemporalAdapter at model: field 'view_out' = a nn.Linear object: should be an "
                              "nn.View of its net (one of net.modules), or a list of them: the view its forward "
                              "resizes to the input's N, T")


# ----------------------------------------------------------------------------------------------
# torch-rnn's LanguageModel checkpoint
# ----------------------------------------------------------------------------------------------

def torch_rnn_checkpoint(gen: torch.Generator, V: int = 6, D: int = 3, H: int = 4) -> t7.LuaTable:
    """train.lua's checkpoint of a 2-layer LSTM LanguageModel (dropout 0.25), as LanguageModel.lua builds it."""
    idx_to_token = t7.LuaTable({i + 1: ch for i, ch in enumerate("abc de"[:V])})
    lookup = lua_module("nn.LookupTable", weight=rand(V, D, gen=gen), gradWeight=torch.zeros(V, D),
                        paddingValue=0, shouldScaleGradByFreq=False, _count=torch.empty(0, dtype=torch.int32),
                        _input=torch.empty(0, dtype=torch.int64))
    rnns = [trnn_lstm(D, H, gen, remember=True), trnn_lstm(H, H, gen, remember=True)]
    drops = [lua_module("nn.Dropout", p=0.25, v2=True, inplace=False, noise=E.clone()) for _ in rnns]
    view1, view2 = view(1, 1, -1, num_input_dims=3), view(1, -1, num_input_dims=2)
    net = lua_module("nn.Sequential", modules=t7.LuaList(
        [lookup, rnns[0], drops[0], rnns[1], drops[1], view1, linear(rand(V, H, gen=gen), rand(V, gen=gen)), view2]))
    lm = lua_module("nn.LanguageModel", idx_to_token=idx_to_token,
                    token_to_idx=t7.LuaTable({t: i for i, t in idx_to_token.items()}), vocab_size=V,
                    model_type="lstm", wordvec_dim=D, rnn_size=H, num_layers=2, dropout=0.25, net=net,
                    rnns=t7.LuaList(rnns), view1=view1, view2=view2)
    opt = t7.LuaTable(model_type="lstm", wordvec_size=D, rnn_size=H, num_layers=2, dropout=0.25, batch_size=2)
    return t7.LuaTable(opt=opt, model=lm, train_loss_history=t7.LuaList([2.5, 2.1]), i=2,
                       val_loss_history=t7.LuaList([2.4]), val_loss_history_it=t7.LuaList([2]))


def reference_lm(lm_obj: t7.TorchObject):
    """Embedding -> 2 torch.nn.LSTM -> Linear, the weights of the Lua LanguageModel."""
    mods = lm_obj["net"]["modules"]
    emb = nn.Embedding.from_pretrained(mods[0]["weight"].clone())
    l1, l2 = torch_lstm(mods[1]), torch_lstm(mods[3])
    lin = mods[6]

    def run(tokens: torch.Tensor, state=(None, None)):
        h1, s1 = l1(emb(tokens - 1), state[0])
        h2, s2 = l2(h1, state[1])
        return h2 @ lin["weight"].T + lin["bias"], (s1, s2)
    return run


def test_language_model_checkpoint_runs_like_the_lua_code(tmp_path):
    gen = torch.Generator().manual_seed(6)
    path = tmp_path / "checkpoint_2.t7"
    t7.save(path, torch_rnn_checkpoint(gen))
    with pytest.raises(LuaModelError, match=r"key='model'"):
        load_lua_model(path)
    lm = load_lua_model(path, key="model").eval()
    lua = t7.load(path)["model"]
    ref = reference_lm(lua)
    assert lua_str(lm) == "nn.LanguageModel"
    assert [tuple(p.shape) for p in lm.parameters()] == [(6, 3), (7, 16), (16,), (8, 16), (16,), (6, 4), (6,)]

    tokens = torch.tensor([[1, 2, 3, 4], [6, 5, 1, 1]])
    scores = lm(tokens)
    expected, state = ref(tokens)
    assert scores.shape == (2, 4, 6)
    torch.testing.assert_close(scores, expected, atol=ATOL, rtol=0)
    # the RNNs remember their states: a next batch continues the sequences (as train.lua's truncated BPTT)
    more = torch.tensor([[2, 2], [3, 6]])
    torch.testing.assert_close(lm(more), ref(more, state)[0], atol=ATOL, rtol=0)
    # resetStates, then another N and T (view1 / view2 follow the input's size)
    lm.resetStates()
    one = torch.tensor([[5, 4, 3]])
    torch.testing.assert_close(lm(one), ref(one)[0], atol=ATOL, rtol=0)

    assert lm.idx_to_token == {1: "a", 2: "b", 3: "c", 4: " ", 5: "d", 6: "e"}
    assert lm.decode_string(lm.encode_string("bad ace")) == "bad ace"
    assert lm.encode_string("cab").tolist() == [3, 1, 2]
    with pytest.raises(UserError, match="not in the vocabulary"):
        lm.encode_string("xyz")

    # export -> Lua layout -> converted again: same scores, same shared View / rnns objects
    obj = reload(to_lua(lm), tmp_path)
    assert obj["view1"] is obj["net"]["modules"][5] and obj["rnns"][1] is obj["net"]["modules"][3]
    back = from_lua(obj).eval()
    back.resetStates()
    torch.testing.assert_close(back(tokens), expected, atol=ATOL, rtol=0)


def test_language_model_trains_with_dropout():
    lm = from_lua(torch_rnn_checkpoint(torch.Generator().manual_seed(7))["model"])
    assert lm.training
    scores = lm(torch.tensor([[1, 2, 3]]))
    nn.functional.cross_entropy(scores.reshape(-1, 6), torch.tensor([1, 2, 3])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lm.parameters())


# ----------------------------------------------------------------------------------------------
# char-rnn
# ----------------------------------------------------------------------------------------------

class GraphBuilder:
    """Builds the nodes of an nngraph gModule as ``nn.gModule(inputs, outputs)`` lays them out: a
    module-less input node split into the graph inputs, ``module(node)`` calls, ``node:split(n)``."""

    def __init__(self, n_inputs: int):
        self.nodes: list[GraphNode] = [GraphNode()]
        self.modules: list[nn.Module] = []
        split = self._add(GraphNode(inputs=(0,), n_split=n_inputs))
        self.inputs = [self.add(lua_module("nn.Identity"), self._add(GraphNode(inputs=(split,), selectindex=i)))
                       for i in range(1, n_inputs + 1)]

    def _add(self, node: GraphNode) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def add(self, lua: t7.TorchObject, *inputs: int, name: str | None = None) -> int:
        self.modules.append(from_lua(lua))
        return self._add(GraphNode(inputs=inputs, module=len(self.modules) - 1, name=name))

    def split(self, node: int, n: int) -> list[int]:
        s = self._add(GraphNode(inputs=(node,), n_split=n))
        return [self._add(GraphNode(inputs=(s,), selectindex=i)) for i in range(1, n + 1)]

    def gmodule(self, outputs: list[int]) -> t7.TorchObject:
        out = self._add(GraphNode(inputs=tuple(outputs)))
        n_inputs = len(self.inputs)
        return to_lua(LuaGModule(self.modules, self.nodes, innode=0, outnode=out, n_inputs=n_inputs))


def char_rnn_lstm(V: int, H: int, n: int, dropout: float, gen: torch.Generator) -> tuple[t7.TorchObject, dict]:
    """char-rnn's model/LSTM.lua ``LSTM.lstm(V, H, n, dropout)`` as a saved gModule, and its weights."""
    g = GraphBuilder(2 * n + 1)  # x, prev_c[1], prev_h[1], ..., prev_c[n], prev_h[n]
    weights: dict = {}
    outputs: list[int] = []
    for L in range(1, n + 1):
        prev_c, prev_h = g.inputs[2 * L - 1], g.inputs[2 * L]
        if L == 1:
            x = g.add(lua_module("OneHot", outputSize=V, _eye=torch.eye(V)), g.inputs[0])
            size = V
        else:
            x = g.add(lua_module("nn.Dropout", p=dropout, v2=True, inplace=False, noise=E.clone()), outputs[-1])
            size = H
        wi, bi, wh = rand(4 * H, size, gen=gen), rand(4 * H, gen=gen), rand(4 * H, H, gen=gen)
        weights[L] = (wi, bi, wh)
        i2h = g.add(lua_module("nn.Identity"), g.add(linear(wi, bi), x, name=f"i2h_{L}"), name=f"bn_wx_{L}")
        h2h = g.add(lua_module("nn.Identity"), g.add(linear(wh), prev_h, name=f"h2h_{L}"), name=f"bn_wh_{L}")
        sums = g.add(lua_module("nn.CAddTable"), i2h, h2h)
        reshaped = g.add(lua_module("nn.Reshape", size=t7.Storage(torch.tensor([4, H]), "torch.LongStorage"),
                                    nelement=4 * H), sums)
        n1, n2, n3, n4 = g.split(g.add(lua_module("nn.SplitTable", dimension=2), reshaped), 4)
        in_gate, forget_gate, out_gate = (g.add(lua_module("nn.Sigmoid"), k) for k in (n1, n2, n3))
        in_transform = g.add(lua_module("nn.Tanh"), n4)
        next_c = g.add(lua_module("nn.CAddTable"), g.add(lua_module("nn.CMulTable"), forget_gate, prev_c),
                       g.add(lua_module("nn.CMulTable"), in_gate, in_transform))
        bn_c = g.add(lua_module("nn.Identity"), next_c, name=f"bn_c_{L}")
        next_h = g.add(lua_module("nn.CMulTable"), out_gate, g.add(lua_module("nn.Tanh"), bn_c))
        outputs += [next_c, next_h]
    top = g.add(lua_module("nn.Dropout", p=dropout, v2=True, inplace=False, noise=E.clone()), outputs[-1])
    wd, bd = rand(V, H, gen=gen), rand(V, gen=gen)
    weights["decoder"] = (wd, bd)
    proj = g.add(linear(wd, bd), top, name="decoder")
    outputs.append(g.add(lua_module("nn.LogSoftMax"), proj))
    return g.gmodule(outputs), weights


def lstm_equations(x_idx: torch.Tensor, state: list[torch.Tensor], weights: dict, V: int, H: int):
    """One step of char-rnn's LSTM, written out: the new [c1, h1, ..., cn, hn] and the log-probabilities."""
    inp = torch.zeros(len(x_idx), V)
    inp[torch.arange(len(x_idx)), x_idx - 1] = 1.0
    new = []
    for L in range(1, len(state) // 2 + 1):
        wi, bi, wh = weights[L]
        prev_c, prev_h = state[2 * L - 2], state[2 * L - 1]
        a = inp @ wi.T + bi + prev_h @ wh.T
        i, f, o = (torch.sigmoid(a[:, k * H:(k + 1) * H]) for k in range(3))
        g = torch.tanh(a[:, 3 * H:])
        c = f * prev_c + i * g
        h = o * torch.tanh(c)
        new += [c, h]
        inp = h
    wd, bd = weights["decoder"]
    return new, torch.log_softmax(inp @ wd.T + bd, dim=1)


def test_char_rnn_checkpoint_one_step_matches_the_lstm_equations(tmp_path):
    V, H, n, N = 5, 3, 2, 2
    gen = torch.Generator().manual_seed(8)
    rnn, weights = char_rnn_lstm(V, H, n, 0.5, gen)
    criterion = lua_module("nn.ClassNLLCriterion", sizeAverage=True, output_tensor=torch.zeros(1),
                           total_weight_tensor=torch.ones(1), target=torch.zeros(1, dtype=torch.int64))
    vocab = t7.LuaTable({ch: i for i, ch in enumerate("abcd\n", 1)})
    opt = t7.LuaTable(model="lstm", rnn_size=H, num_layers=n, dropout=0.5, seq_length=10, batch_size=N,
                      learning_rate=2e-3, seed=123, gpuid=-1)
    checkpoint = t7.LuaTable(protos=t7.LuaTable(rnn=rnn, criterion=criterion), opt=opt, vocab=vocab, i=100,
                             epoch=1.5, train_losses=t7.LuaList([1.6, 1.5]), val_loss=1.4,
                             val_losses=t7.LuaTable({100: 1.4}))
    path = tmp_path / "lm_lstm_epoch1.50_1.4000.t7"
    t7.save(path, checkpoint)
    with pytest.raises(LuaModelError, match=r"key='protos\.rnn'"):
        load_lua_model(path)
    model = load_lua_model(path, key="protos.rnn").eval()  # sample.lua: protos.rnn:evaluate()
    assert model.n_inputs == 2 * n + 1

    x = torch.tensor([2, 5])
    state = [torch.randn(N, H, generator=gen) for _ in range(2 * n)]
    out = model([x] + state)
    assert len(out) == 2 * n + 1
    expected_state, expected_logp = lstm_equations(x, state, weights, V, H)
    for got, want in zip(out, expected_state + [expected_logp]):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_char_rnn_sampling_loop_matches_torch_lstm():
    """Feeding the state through time steps (sample.lua's loop) equals a 2-layer torch.nn.LSTM."""
    V, H, n = 5, 4, 2
    gen = torch.Generator().manual_seed(9)
    rnn_obj, weights = char_rnn_lstm(V, H, n, 0.0, gen)
    model = from_lua(rnn_obj).eval()
    ref = nn.LSTM(V, H, num_layers=n)
    with torch.no_grad():
        for L in range(n):
            wi, bi, wh = weights[L + 1]
            getattr(ref, f"weight_ih_l{L}").copy_(ifog_to_ifgo(wi, H))
            getattr(ref, f"weight_hh_l{L}").copy_(ifog_to_ifgo(wh, H))
            getattr(ref, f"bias_ih_l{L}").copy_(ifog_to_ifgo(bi, H))
            getattr(ref, f"bias_hh_l{L}").zero_()
    seq = torch.tensor([1, 3, 3, 5, 2, 4])
    state = [torch.zeros(1, H) for _ in range(2 * n)]
    logps = []
    for t in range(len(seq)):
        out = model([seq[t:t + 1]] + state)
        state, logp = out[:-1], out[-1]
        logps.append(logp)
    h, (hn, cn) = ref(nn.functional.one_hot(seq - 1, V).float()[:, None])
    wd, bd = weights["decoder"]
    torch.testing.assert_close(torch.cat(logps), torch.log_softmax(h[:, 0] @ wd.T + bd, 1), atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.cat(state[1::2]), hn[:, 0], atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.cat(state[0::2]), cn[:, 0], atol=ATOL, rtol=0)


def test_one_hot_classes():
    m = from_lua(lua_module("OneHot", outputSize=4, _eye=torch.eye(4)))
    assert torch.equal(m(torch.tensor([3, 1])), torch.tensor([[0.0, 0, 1, 0], [1, 0, 0, 0]]))
    assert m(torch.tensor([2.0])).dtype == torch.float32
    assert m.double()(torch.tensor([2])).dtype == torch.float64
    with pytest.raises(UserError, match=r"index 5 is outside 1\.\.4"):
        m(torch.tensor([5]))
    with pytest.raises(UserError, match="1-D tensor"):
        m(torch.ones(2, 2, dtype=torch.int64))
    dp = from_lua(lua_module("nn.OneHot", outputSize=3))  # dpnn's: any input shape
    assert torch.equal(dp(torch.tensor([[1, 3]])), torch.tensor([[[1.0, 0, 0], [0, 0, 1]]]))
    assert lua_str(dp) == "nn.OneHot(3)"
    assert to_lua(m)["_eye"].shape == (4, 4) and "_eye" not in to_lua(dp).fields


# ----------------------------------------------------------------------------------------------
# dpnn's Decorator
# ----------------------------------------------------------------------------------------------

def test_decorator_passes_through():
    w, b = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]]), torch.tensor([0.5, 0.0, -1.0])
    inner = linear(w, b)
    m = from_lua(lua_module("nn.Decorator", module=inner, modules=t7.LuaList([inner])))
    x = torch.tensor([[1.0, -2.0]])
    assert torch.equal(m(x), torch.tensor([[-2.5, 2.0, 1.0]]))  # W x + b by hand
    assert lua_str(m) == "nn.Decorator @ nn.Linear(2 -> 3)"
    assert len(list(m.parameters())) == 2
    back = to_lua(m)
    assert back["module"] is back["modules"][0]
