"""The trainer against train.lua (DenseNet repo) and optim.sgd: PARITY §4.2-4.5, Lua fixtures."""
from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import reference
from fbresnet_port import opts, t7
from fbresnet_port.errors import UserError
from fbresnet_port.train import (Trainer, compute_score, format_best, format_finished,
                                 format_results, format_test_end, format_test_line,
                                 format_train_line)

torch.set_num_threads(2)


def make_trainer(model=None, optim_state=None, **overrides) -> Trainer:
    opt = opts.default_options(**overrides)
    return Trainer(model if model is not None else nn.Linear(2, 3), nn.CrossEntropyLoss(), opt,
                   optim_state)


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 7)).double()


def batches(n: int, seed: int = 1, batch: int = 5):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 4, generator=g, dtype=torch.float64),
             torch.randint(0, 7, (batch,), generator=g)) for _ in range(n)]


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# -- learning-rate schedules ---------------------------------------------------------------------------

@pytest.mark.parametrize("n_epochs,epoch,expected", [
    (300, 1, 0.1), (300, 149, 0.1), (300, 150, 0.01), (300, 224, 0.01), (300, 225, 0.001),
    (300, 300, 0.001),
    (164, 81, 0.1), (164, 82, 0.01), (164, 122, 0.01), (164, 123, 0.001),
    (3, 1, 0.1), (3, 2, 0.01), (3, 3, 0.001),   # 2 >= 1.5, 3 >= 2.25
])
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_multistep_cifar(dataset, n_epochs, epoch, expected):
    tr = make_trainer(dataset=dataset, nEpochs=n_epochs)
    assert tr.learning_rate(epoch) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("epoch,expected", [(1, 0.5), (30, 0.5), (31, 0.05), (60, 0.05),
                                            (61, 0.005), (90, 0.005), (91, 0.0005)])
def test_multistep_imagenet(epoch, expected):
    tr = make_trainer(dataset="imagenet", LR=0.5)
    assert tr.learning_rate(epoch) == pytest.approx(expected, rel=1e-12)


def test_first_epoch_learning_rate_is_exactly_lr():
    assert make_trainer(LR=0.1, nEpochs=300).learning_rate(1) == 0.1


# 0.5 * 0.1 * (1 + cos(pi * T_cur / T_total)) with nEpochs 2, 4 batches: T_total = 8.
# cos(pi/8) = 0.92387953251128674, cos(3pi/4) = -0.70710678118654752
@pytest.mark.parametrize("epoch,iteration,expected", [
    (1, 1, 0.096193976625564337), (1, 4, 0.05), (2, 2, 0.014644660940672624), (2, 4, 0.0),
    (3, 1, 0.096193976625564337),   # (epoch-1) mod nEpochs restarts the cycle
])
def test_cosine(epoch, iteration, expected):
    tr = make_trainer(lrShape="cosine", nEpochs=2, LR=0.1)
    assert tr.learning_rate(epoch, iteration, 4) == pytest.approx(expected, rel=1e-12, abs=1e-17)


def test_cosine_applied_per_iteration(capsys):
    tr = make_trainer(tiny_model(), lrShape="cosine", nEpochs=2, LR=0.1)
    tr.train(1, batches(4))
    lrs = re.findall(r"lr (\d\.\d{4})$", capsys.readouterr().out, re.M)
    assert lrs == ["0.0962", "0.0854", "0.0691", "0.0500"]


def test_unknown_lr_shape_keeps_lr(capsys):
    tr = make_trainer(tiny_model(), lrShape="step", nEpochs=10, LR=0.3)
    tr.train(9, batches(1))
    assert tr.current_lr == 0.3 and tr.learning_rate(9) == 0.3
    resumed = make_trainer(tiny_model(), {"learningRate": 0.02, "momentum": 0.9, "nesterov": True,
                                          "dampening": 0, "weightDecay": 1e-4},
                           lrShape="step", LR=0.3)
    resumed.train(1, batches(1))
    assert resumed.current_lr == 0.02
    assert capsys.readouterr().out.splitlines()[-1].endswith("lr 0.0200")


def test_multistep_set_at_epoch_start(capsys):
    tr = make_trainer(tiny_model(), nEpochs=300, LR=0.1)
    tr.train(150, batches(2))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "=> Training epoch # 150"
    assert all(line.endswith("lr 0.0100") for line in out[1:])
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(0.01, rel=1e-12)


# -- scores ----------------------------------------------------------------------------------------------

def test_compute_score_hand_made():
    output = torch.tensor([
        [0.1, 0.9, 0.3, 0.2, 0.0, -1.0, 0.5],   # target 1: rank 1
        [0.9, 0.1, 0.8, 0.7, 0.6, 0.5, 0.4],    # target 4: rank 4
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],    # target 0: rank 7
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],    # target 1: rank 6
    ])
    top1, top5 = compute_score(output, torch.tensor([1, 4, 0, 1]))
    assert (top1, top5) == (75.0, 50.0)


def test_compute_score_fewer_than_five_classes():
    output = torch.tensor([[2.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    assert compute_score(output, torch.tensor([0, 1, 0])) == pytest.approx((200 / 3, 0.0))


def ten_crop_logits():
    # sample 0: nine crops say class 0 by a margin of 2, one crop says class 1 by 100 ->
    #   summed logits pick 1 (summed probabilities would pick 0); target 1
    # sample 1: all crops say class 2; target 2
    s0 = [[2.0, 0.0, 0.0]] * 9 + [[0.0, 100.0, 0.0]]
    s1 = [[0.0, 0.0, 1.0]] * 10
    return torch.tensor(s0 + s1), torch.tensor([1, 2])


def test_compute_score_ten_crop_sums_logits_sample_major():
    output, target = ten_crop_logits()
    assert compute_score(output, target, 10) == (0.0, 0.0)
    assert compute_score(output, torch.tensor([0, 2]), 10) == (50.0, 0.0)


# -- log lines --------------------------------------------------------------------------------------------

def test_log_line_formats():
    assert format_train_line(1, 2, 782, 0.1234, 0.0056, 2.34567, 87.5, 50.0, 0.1) == \
        " | Epoch: [1][2/782]   Time 0.123  Data 0.006  Err 2.346  top1   87.50  top5   50.00  lr 0.1000"
    assert format_train_line(12, 100, 100, 10.5, 0.0, 0.01, 100.0, 0.0, 0.00125) == \
        " | Epoch: [12][100/100]   Time 10.500  Data 0.000  Err 0.010  top1  100.00  top5    0.00  lr 0.0013"
    assert format_test_line(3, 1, 157, 0.5, 0.25, 12.5, 12.5, 3.125, 3.125) == \
        " | Test: [3][1/157]    Time 0.500  Data 0.250  top1  12.500 ( 12.500)  top5   3.125 (  3.125)"
    assert format_test_end(5, 7.25, 1.5) == " * Finished epoch # 5     top1:   7.250  top5:   1.500\n"
    assert format_results(7.25, 1.5) == " * Results top1:  7.250  top5:  1.500"
    assert format_finished(math.inf, math.inf) == " * Finished top1:    inf  top5:    inf"
    assert format_best(7.25, 1.5) == " * Best model \t7.25\t1.5"
    assert format_best(100 / 3, 0.1) == " * Best model \t33.333333333333\t0.1"


NUM = r"\d+\.\d{3}"
PCT = r"[ \d]{2}\d\.\d{3}"  # %7.3f of a percentage


def test_train_and_test_output(capsys):
    tr = make_trainer(tiny_model(), nEpochs=10)
    top1, top5, loss = tr.train(2, batches(3))
    tr.test(2, batches(2, seed=7))
    lines = capsys.readouterr().out.split("\n")
    assert lines[0] == "=> Training epoch # 2"
    for n, line in enumerate(lines[1:4], 1):
        assert re.fullmatch(rf" \| Epoch: \[2\]\[{n}/3\]   Time {NUM}  Data {NUM}  Err \d\.\d{{3}}  "
                            r"top1 [ \d]{3}\d\.\d\d  top5 [ \d]{3}\d\.\d\d  lr 0\.1000", line), line
    for n, line in enumerate(lines[4:6], 1):
        assert re.fullmatch(rf" \| Test: \[2\]\[{n}/2\]    Time {NUM}  Data {NUM}  "
                            rf"top1 {PCT} \({PCT}\)  top5 {PCT} \({PCT}\)", line), line
    assert re.fullmatch(rf" \* Finished epoch # 2     top1: {PCT}  top5: {PCT}", lines[6]), lines[6]
    assert lines[7:] == ["", ""]   # the '\n' of the format plus print's newline
    assert 0 <= top5 <= top1 <= 100 and loss > 0


def test_epoch_averages_weighted_by_samples(capsys):
    # nn.Identity: the "model output" is the input, so the scores are known by construction.
    wrong = (torch.tensor([[0.0, 1.0, 0.0]] * 3), torch.tensor([0, 0, 0]))     # top1 100%, top3 0%
    right = (torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0]))               # 0%
    tr = Trainer(nn.Identity(), nn.CrossEntropyLoss(), opts.default_options(), None)
    assert tr.test(1, [wrong, right]) == (75.0, 0.0)
    out = capsys.readouterr().out
    assert " top1 100.000 (100.000)  top5   0.000 (  0.000)" in out
    assert " top1   0.000 ( 75.000)  top5   0.000 (  0.000)" in out


class MustNotBeCalled(nn.Module):
    def forward(self, *args):
        raise AssertionError("ten-crop testing must not compute the loss (train.lua crashed there)")


def test_ten_crop_test():
    output, target = ten_crop_logits()
    opt = opts.default_options(dataset="imagenet", tenCrop=True, batchSize=20)
    tr = Trainer(nn.Identity(), MustNotBeCalled(), opt)
    assert tr.test(1, [(output, target), (output, torch.tensor([0, 2]))]) == (25.0, 0.0)
    opt.batchSize = 8
    with pytest.raises(UserError, match="-tenCrop needs -batchSize of at least 10"):
        tr.test(1, [(output, target)])
    opt.batchSize = 20
    with pytest.raises(UserError, match="not a multiple of 10"):
        tr.test(1, [(output[:15], target)])


def test_test_uses_eval_mode_and_restores_training():
    model = tiny_model()
    bn = model[1]
    before = bn.running_mean.clone()
    tr = make_trainer(model)
    tr.test(1, batches(2))
    assert torch.equal(bn.running_mean, before) and model.training
    tr.train(1, batches(1))
    assert not torch.equal(bn.running_mean, before)


def test_empty_loader_gives_nan():
    tr = make_trainer(tiny_model())
    assert all(math.isnan(v) for v in tr.test(1, []))


# -- optimiser -------------------------------------------------------------------------------------------

def lua_sgd_reference(model: nn.Module, data, lr=0.1, mom=0.9, wd=1e-4, damp=0.0):
    """optim.sgd as written in torch/optim sgd.lua, with Nesterov, on a copy of ``model``."""
    model = copy.deepcopy(model)
    params = list(model.parameters())
    buffers = None
    for x, y in data:
        for p in params:
            p.grad = None
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            grads = [p.grad.clone() + wd * p for p in params]        # dfdx:add(wd, x)
            if buffers is None:
                buffers = [g.clone() for g in grads]                   # state.dfdx = dfdx (copy)
            else:
                buffers = [mom * b + (1 - damp) * g for b, g in zip(buffers, grads)]
            grads = [g + mom * b for g, b in zip(grads, buffers)]     # nesterov
            for p, g in zip(params, grads):
                p -= lr * g                                            # x:add(-clr, dfdx)
    return model, buffers


def test_sgd_matches_lua_formula_over_three_steps(capsys):
    model = tiny_model()
    data = batches(3)
    expected, buffers = lua_sgd_reference(model, data)
    tr = make_trainer(model, nEpochs=10, LR=0.1)
    tr.train(1, data)
    torch.testing.assert_close(flat(model), flat(expected), rtol=0, atol=1e-13)
    state = tr.optim_state_lua()
    torch.testing.assert_close(state["dfdx"], torch.cat([b.reshape(-1) for b in buffers]),
                               rtol=0, atol=1e-13)
    assert state["evalCounter"] == 3


def test_learning_rate_decay_from_table(capsys):
    # optim.sgd: clr = lr / (1 + evalCounter * learningRateDecay); momentum 0 => plain SGD.
    model = tiny_model()
    data = batches(2)
    table = {"learningRate": 0.2, "learningRateDecay": 0.5, "momentum": 0, "nesterov": False,
             "dampening": 0, "weightDecay": 0, "evalCounter": 1}
    tr = make_trainer(model, table, lrShape="none")
    expected = copy.deepcopy(model)
    for (x, y), clr in zip(data, (0.2 / 1.5, 0.2 / 2.0)):
        expected.zero_grad()
        F.cross_entropy(expected(x), y).backward()
        with torch.no_grad():
            for p in expected.parameters():
                p -= clr * p.grad
    tr.train(1, data)
    torch.testing.assert_close(flat(model), flat(expected), rtol=0, atol=1e-13)
    assert "dfdx" not in tr.optim_state_lua() and tr.optim_state_lua()["evalCounter"] == 3


def test_optim_state_lua_fresh_table():
    tr = make_trainer(tiny_model(), LR=0.05, momentum=0.8, weightDecay=5e-4)
    assert tr.optim_state_lua() == {"learningRate": 0.05, "learningRateDecay": 0.0, "momentum": 0.8,
                                    "nesterov": True, "dampening": 0.0, "weightDecay": 0.0005}


def test_optim_state_round_trip_through_t7(tmp_path, capsys):
    data = batches(3)
    model = tiny_model()
    tr = make_trainer(model, nEpochs=10)
    tr.train(1, data[:2])
    t7.save(tmp_path / "optimState_1.t7", tr.optim_state_lua())
    table = t7.load(tmp_path / "optimState_1.t7")
    assert table["evalCounter"] == 2 and table["nesterov"] is True
    assert table["dfdx"].shape == (sum(p.numel() for p in model.parameters()),)

    resumed_model = copy.deepcopy(model)
    # the table's momentum and weight decay win over the flags, as in Lua
    resumed = make_trainer(resumed_model, table, nEpochs=10, momentum=0.5, weightDecay=0.1)
    assert (resumed.momentum, resumed.weight_decay) == (0.9, 1e-4)
    tr.train(2, data[2:])
    resumed.train(2, data[2:])
    torch.testing.assert_close(flat(resumed_model), flat(model), rtol=0, atol=0)
    assert resumed.optim_state_lua()["evalCounter"] == 3
    torch.testing.assert_close(resumed.optim_state_lua()["dfdx"], tr.optim_state_lua()["dfdx"],
                               rtol=0, atol=0)


def test_optim_state_wrong_size():
    table = {"learningRate": 0.1, "momentum": 0.9, "nesterov": True, "dampening": 0,
             "weightDecay": 1e-4, "dfdx": torch.zeros(5)}
    with pytest.raises(UserError, match="dfdx has 5 elements but the model has 91 parameters"):
        make_trainer(tiny_model(), table)


def test_nesterov_needs_momentum():
    with pytest.raises(UserError, match="Nesterov momentum requires a momentum and zero dampening"):
        make_trainer(momentum=0)
    # a negative momentum can only come from an optimState table (the flag rejects it)
    with pytest.raises(UserError, match="Nesterov momentum requires a momentum and zero dampening"):
        make_trainer(None, {"learningRate": 0.1, "momentum": -0.5, "nesterov": True, "dampening": 0,
                            "weightDecay": 0})


def test_nesterov_needs_zero_dampening():
    with pytest.raises(UserError, match="Nesterov momentum requires a momentum and zero dampening"):
        make_trainer(None, {"learningRate": 0.1, "momentum": 0.9, "nesterov": True,
                            "dampening": 0.1, "weightDecay": 0})


# -- precision -------------------------------------------------------------------------------------------

def test_double_precision_casts_inputs(capsys):
    model = tiny_model()          # float64
    data = [(x.float(), y.int()) for x, y in batches(2)]   # loader gives float32 / int32
    *_, loss = make_trainer(model, precision="double").train(1, data)
    assert math.isfinite(loss) and all(p.dtype == torch.float64 for p in model.parameters())


def test_half_precision_keeps_float32_master_weights(capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 7))
    before = flat(model).clone()
    data = [(x.float(), y) for x, y in batches(2)]
    *_, loss = make_trainer(model, precision="half").train(1, data)
    assert math.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not torch.equal(flat(model), before)


# -- Lua fixtures ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["resnet_cifar10_d20_A", "densenet_cifar10_d40_k12_nobc_om2"])
def test_one_step_matches_lua(case, capsys):
    """train.lua's Trainer:train(1) with a one-batch loader, optim.sgd lr 0.1 (float64 references)."""
    from fbresnet_port.lua_nn import load_lua_model

    folder = reference(case)
    model = load_lua_model(folder / "model.t7").double()
    x = t7.load(folder / "input.t7")
    y = t7.load(folder / "targets.t7") - 1
    opt = opts.default_options(precision="double", LR=0.1, momentum=0.9, weightDecay=1e-4)
    tr = Trainer(model, nn.CrossEntropyLoss(), opt)
    top1, top5, loss = tr.train(1, [(x, y)])

    assert loss == pytest.approx(t7.load(folder / "loss_f64.t7"), rel=1e-9)
    expected = t7.load(folder / "params_after_step_f64.t7").double()
    got = flat(model)
    assert got.shape == expected.shape
    # an exact port agrees to the float32 rounding of the stored values (~1e-7); a missing weight
    # decay or Nesterov term would show at ~1e-5
    assert (got - expected).abs().max().item() <= 1e-6 * expected.abs().max().item()
    # scores come from the forward output before the update (output_train_f64 is that output)
    assert (top1, top5) == compute_score(t7.load(folder / "output_train_f64.t7"), y)
    assert "lr 0.1000" in capsys.readouterr().out


def test_optim_state_matches_lua_checkpoint(capsys):
    """optimState_1.t7 written by the original checkpoints.save after the step above."""
    from fbresnet_port.lua_nn import load_lua_model

    folder = reference("resnet_cifar10_d20_A")
    lua_state = t7.load(folder / "checkpoint" / "optimState_1.t7")
    model = load_lua_model(folder / "model.t7").double()
    tr = Trainer(model, nn.CrossEntropyLoss(), opts.default_options(precision="double"))
    tr.train(1, [(t7.load(folder / "input.t7"), t7.load(folder / "targets.t7") - 1)])
    state = tr.optim_state_lua()
    assert {k: v for k, v in state.items() if k != "dfdx"} == \
        {k: v for k, v in lua_state.items() if k != "dfdx"}
    ref = lua_state["dfdx"].double()   # Lua float32 run: agree to float32 rounding of gradients
    assert state["dfdx"].shape == ref.shape
    assert (state["dfdx"] - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


# -- progress lines (not in Lua: added between Lua's lines, which stay as they were) ------------------

def test_progress_lines_between_unchanged_lua_lines(capsys):
    tr = make_trainer(tiny_model(), nEpochs=30)
    tr.train(3, batches(25, batch=2))
    lines = capsys.readouterr().out.splitlines()
    progress = [(i, line) for i, line in enumerate(lines) if line.startswith(" | Progress:")]
    # every max(10, ceil(25/10)) = 10 batches, right after that batch's line; none after the last
    assert [i for i, _ in progress] == [11, 22]
    for (i, line), n in zip(progress, (10, 20)):
        assert re.fullmatch(rf" \| Progress: epoch 3/30  batch {n}/25  epoch time \d+:\d\d:\d\d  "
                            r"epoch ETA \d+:\d\d:\d\d  run time \d+:\d\d:\d\d", line), line
        assert lines[i - 1].startswith(f" | Epoch: [3][{n}/25]   Time ")
    lua = [line for line in lines[1:] if not line.startswith(" | Progress:")]
    assert len(lua) == 25 and all(re.fullmatch(rf" \| Epoch: \[3\]\[{n}/25\]   Time {NUM}  Data {NUM}  "
                                               r"Err \d\.\d{3}  top1 [ \d]{3}\d\.\d\d  top5 [ \d]{3}\d\.\d\d"
                                               r"  lr 0\.1000", line)
                                  for n, line in enumerate(lua, 1))
