"""Checkpoints: the Lua layout, resuming from Lua-written and own checkpoints, atomic writes."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

import models
from conftest import reference
from fbresnet_port import checkpoints, opts, t7
from fbresnet_port.lua_nn import from_lua
from fbresnet_port.train import Trainer
from models.lua_weights import lua_parameters

LUA_CHECKPOINT_CASES = ["resnet_cifar10_d20_A", "densenet_cifar10_d100_k12_bc_om2"]


def _flags(case: str) -> list[str]:
    manifest = json.loads(reference(case, "manifest.json").read_text())
    return [str(x) for x in manifest["flags"]]


@pytest.mark.parametrize("case", LUA_CHECKPOINT_CASES)
def test_resume_from_lua_checkpoint(case, tmp_path):
    """-resume on a folder written by the original checkpoints.lua: weights, BN stats, momentum, epoch."""
    folder = reference(case, "checkpoint")
    opt = opts.parse(_flags(case) + ["-resume", str(folder), "-save", str(tmp_path / "save")])
    checkpoint, optim_state = checkpoints.latest(opt)
    assert checkpoint["epoch"] == 1 and checkpoint["model_path"].endswith("model_1.t7")

    model, criterion = models.setup(opt, checkpoint)
    lua_model = t7.load(folder / "model_1.t7")
    lua_flat = torch.cat([p.tensor.reshape(-1) for p in lua_parameters(lua_model)])
    ours = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.equal(ours, lua_flat)  # the same weights, in Lua's parameter order

    # BatchNorm running statistics come along too (updated by the Lua training step)
    lua_means = [m["running_mean"] for _, m in _lua_bns(lua_model)]
    our_means = [m.running_mean for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(lua_means) == len(our_means)
    assert all(torch.equal(a, b) for a, b in zip(lua_means, our_means))

    trainer = Trainer(model, criterion, opt, optim_state)
    state = trainer.optim_state_lua()
    assert torch.equal(state["dfdx"].reshape(-1).float(), optim_state["dfdx"])
    assert state["evalCounter"] == 1 and state["momentum"] == 0.9 and state["nesterov"] is True
    assert state["weightDecay"] == optim_state["weightDecay"]


def _lua_bns(lua_model):
    from models.lua_weights import lua_batchnorms
    return lua_batchnorms(lua_model)


def _tiny_opt(tmp_path, *extra: str):
    return opts.parse(["-netType", "resnet", "-dataset", "cifar10", "-depth", "8", "-LR", "0.1",
                       "-nEpochs", "4", "-batchSize", "8", "-save", str(tmp_path / "run"), *extra])


def _batches(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(2)]


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_resumed_run_reaches_the_same_weights(tmp_path, capsys):
    """Train 2 epochs straight vs 1 epoch, save, resume from disk, 1 more epoch: identical weights."""
    data = _batches()
    torch.manual_seed(3)
    opt = _tiny_opt(tmp_path)
    model, criterion = models.setup(opt)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, criterion, opt)
    trainer.train(1, data)
    checkpoints.save(1, model, trainer.optim_state_lua(), True, opt, best=(50.0, 10.0))
    trainer.train(2, data)
    straight = _flat(model)

    resume_opt = _tiny_opt(tmp_path, "-resume", str(tmp_path / "run"))
    checkpoint, optim_state = checkpoints.latest(resume_opt)
    assert checkpoint["epoch"] == 1 and checkpoint["bestTop1"] == 50.0
    model2, criterion2 = models.setup(resume_opt, checkpoint)
    assert not torch.equal(_flat(model2), torch.cat([initial[k].reshape(-1) for k, _ in model2.named_parameters()]))
    trainer2 = Trainer(model2, criterion2, resume_opt, optim_state)
    trainer2.train(2, data)
    assert torch.equal(_flat(model2), straight)
    for (name, a), (_, b) in zip(model.named_buffers(), model2.named_buffers()):
        if not name.endswith("num_batches_tracked"):  # a PyTorch-only counter, not in Lua checkpoints
            assert torch.equal(a, b), name


def test_checkpoint_files_have_the_lua_layout(tmp_path, capsys):
    opt = _tiny_opt(tmp_path)
    model, criterion = models.setup(opt)
    trainer = Trainer(model, criterion, opt)
    trainer.train(1, _batches())
    checkpoints.save(1, model, trainer.optim_state_lua(), True, opt, best=(40.0, 5.0))
    folder = tmp_path / "run"
    assert sorted(p.name for p in folder.iterdir()) == ["latest.t7", "model_1.t7", "model_best.t7", "optimState_1.t7"]

    latest = t7.load(folder / "latest.t7")
    assert (latest["epoch"], latest["modelFile"], latest["optimFile"]) == (1, "model_1.t7", "optimState_1.t7")

    state = t7.load(folder / "optimState_1.t7")
    assert t7.typename_of(state["dfdx"]) == "torch.CudaTensor"  # as Lua's GPU runs wrote it
    n_params = sum(p.numel() for p in model.parameters())
    assert state["dfdx"].shape == (n_params,)
    assert state["nesterov"] is True and state["dampening"] == 0 and state["learningRateDecay"] == 0
    assert state["evalCounter"] == 2 and state["learningRate"] == pytest.approx(0.1)

    lua_model = t7.load(folder / "model_1.t7")
    assert lua_model.typename == "nn.Sequential"
    classes = set()
    stack = [lua_model]
    while stack:
        m = stack.pop()
        classes.add(m.typename)
        stack.extend(m.get("modules") or [])
    assert {"cudnn.SpatialConvolution", "nn.SpatialBatchNormalization", "nn.ConcatTable", "nn.CAddTable",
            "nn.Linear"} <= classes
    # the file, run through the generic Lua converter, computes what the native model computes
    converted = from_lua(lua_model).eval()
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), rtol=0, atol=1e-5)


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    opt = _tiny_opt(tmp_path)
    model, criterion = models.setup(opt)
    trainer = Trainer(model, criterion, opt)
    checkpoints.save(1, model, trainer.optim_state_lua(), False, opt)
    real_save = t7.save

    def dying_save(path, obj, **kw):
        if "optimState_2" in str(path):
            raise KeyboardInterrupt  # e.g. Ctrl-C while writing
        real_save(path, obj, **kw)

    monkeypatch.setattr(t7, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(2, model, trainer.optim_state_lua(), False, opt)
    latest = t7.load(tmp_path / "run" / "latest.t7")
    assert latest["epoch"] == 1
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_resume_without_latest_starts_fresh(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    opt = _tiny_opt(tmp_path, "-resume", str(tmp_path / "empty"))
    assert checkpoints.latest(opt) == (None, None)


def test_resume_errors_are_clear(tmp_path):
    from fbresnet_port.errors import UserError

    opt = _tiny_opt(tmp_path, "-resume", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no such folder"):
        checkpoints.latest(opt)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "latest.t7").write_bytes(b"\x03\x00")
    opt = _tiny_opt(tmp_path, "-resume", str(broken))
    with pytest.raises(UserError, match="latest.t7"):
        checkpoints.latest(opt)
    shutil.rmtree(broken)


# -- a run's checkpoint policy: -saveEvery, -keepCheckpoints, umask, stale temp files, RNG fields ---------

def _touch_epochs(folder, epochs):
    folder.mkdir(parents=True, exist_ok=True)
    for e in epochs:
        (folder / f"model_{e}.t7").write_bytes(b"m")
        (folder / f"optimState_{e}.t7").write_bytes(b"o")
    for name in ("latest.t7", "model_best.t7", "model_x.t7", "notes.txt"):
        (folder / name).write_bytes(b"x")


def test_prune_keeps_the_last_k_saved_epochs(tmp_path):
    folder = tmp_path / "run"
    _touch_epochs(folder, [2, 4, 6, 8, 10])
    removed = checkpoints.prune(folder, 8, keep=2)
    assert sorted(p.name for p in removed) == ["model_2.t7", "model_4.t7", "optimState_2.t7", "optimState_4.t7"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "latest.t7", "model_10.t7", "model_6.t7", "model_8.t7", "model_best.t7", "model_x.t7", "notes.txt",
        "optimState_10.t7", "optimState_6.t7", "optimState_8.t7"]  # epoch 10 is later than latest: kept
    assert checkpoints.prune(folder, 8, keep=0) == []
    checkpoints.prune(folder, 8, keep=1)
    assert not (folder / "model_6.t7").exists() and (folder / "model_8.t7").exists()


def test_save_every_keeps_the_best_model_for_the_next_save(tmp_path, capsys):
    """-saveEvery 2: epoch 1 (unsaved) is the best; its weights, not epoch 2's, become model_best.t7."""
    opt = _tiny_opt(tmp_path, "-saveEvery", "2", "-nEpochs", "5")
    model, criterion = models.setup(opt)
    run = checkpoints.RunCheckpoints(opt)
    assert [run.due(e) for e in range(1, 6)] == [False, True, False, True, True]  # and the last
    trainer = Trainer(model, criterion, opt)
    trainer.train(1, _batches())
    assert run.update(1, 60.0, 20.0, model)
    epoch1 = _flat(model).clone()
    trainer.train(2, _batches(1))
    assert not run.update(2, 60.0, 10.0, model)  # not strictly better
    assert not torch.equal(_flat(model), epoch1)
    run.save(2, model, trainer.optim_state_lua())
    folder = tmp_path / "run"
    best = torch.cat([p.tensor.reshape(-1) for p in lua_parameters(t7.load(folder / "model_best.t7"))])
    assert torch.equal(best, epoch1)
    latest = t7.load(folder / "latest.t7")
    assert (latest["epoch"], latest["bestEpoch"], latest["bestTop1"], latest["bestTop5"]) == (2, 1, 60.0, 20.0)
    assert run.path == folder / "model_best.t7"
    # a resumed run knows its best (and where the model is)
    resumed = checkpoints.RunCheckpoints(_tiny_opt(tmp_path, "-resume", str(folder)), dict(latest))
    assert (resumed.epoch, resumed.top1, resumed.top5, resumed.path) == (1, 60.0, 20.0, folder / "model_best.t7")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, umask, mode, capsys):
    opt = _tiny_opt(tmp_path)
    model, criterion = models.setup(opt)
    old = os.umask(umask)
    try:
        checkpoints.save(1, model, Trainer(model, criterion, opt).optim_state_lua(), True, opt)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir()}
    assert modes == dict.fromkeys(["latest.t7", "model_1.t7", "model_best.t7", "optimState_1.t7"], mode)


def test_stale_temp_files_of_the_run_are_removed_on_save(tmp_path, capsys):
    opt = _tiny_opt(tmp_path)
    folder = tmp_path / "run"
    folder.mkdir(exist_ok=True)
    stale = [".latest.t7.a1b2c3.tmp", ".model_7.t7.x.tmp", ".optimState_12.t7.q_9.tmp", ".model_best.t7.zz.tmp",
             ".metrics.csv.k.tmp"]
    foreign = [".latest.t7", "latest.t7.tmp", ".data.bin.abc.tmp", ".model_7.t7.tmp.keep"]
    for name in stale + foreign:
        (folder / name).write_bytes(b"partial")
    model, criterion = models.setup(opt)
    checkpoints.save(1, model, Trainer(model, criterion, opt).optim_state_lua(), False, opt)
    assert sorted(p.name for p in folder.iterdir()) == sorted(foreign + ["latest.t7", "model_1.t7",
                                                                         "optimState_1.t7"])


@pytest.mark.parametrize("precision, typename", [("single", "torch.FloatTensor"), ("double", "torch.DoubleTensor")])
def test_checkpoint_tensor_type_float(precision, typename, tmp_path):
    state = {"learningRate": 0.1, "momentum": 0.9, "dfdx": torch.arange(4, dtype=torch.float64) / 3}
    table = checkpoints.optim_state_to_lua(state, precision, "float")
    t7.save(tmp_path / "o.t7", table)
    back = t7.load(tmp_path / "o.t7")
    assert t7.typename_of(back["dfdx"]) == typename
    expected = state["dfdx"] if precision == "double" else state["dfdx"].float()
    assert torch.equal(back["dfdx"], expected)
    cuda = t7.load_bytes(t7.dumps(checkpoints.optim_state_to_lua(state, precision, "cuda")))
    assert t7.typename_of(cuda["dfdx"]) == typename.replace("torch.", "torch.Cuda").replace("CudaFloat", "Cuda")


def _lua_values(x):
    if isinstance(x, dict):
        for k, v in x.items():
            yield k
            yield from _lua_values(v)
    elif isinstance(x, list):
        for v in x:
            yield from _lua_values(v)
    else:
        yield x


def test_latest_rng_fields_are_plain_lua_values(tmp_path, capsys):
    """What Lua's torch.load reads without extra classes: numbers, strings, booleans, tables, ByteTensors;
    Lua's own fields keep their types."""
    from fbresnet_port.dataloader import DataLoader

    class Tiny:
        def size(self):
            return 10

        def get_batch(self, indices, generator, n_crops):
            return torch.rand(len(indices), 1, generator=generator), indices.clone(), 0

    opt = _tiny_opt(tmp_path, "-batchSize", "4", "-manualSeed", "3")
    loader = DataLoader(Tiny(), opt, "train")
    first_pass = [b.input for b in loader]
    model, criterion = models.setup(opt)
    rng = checkpoints.rng_state({"train": loader})
    checkpoints.save(1, model, Trainer(model, criterion, opt).optim_state_lua(), True, opt, best=(5.0, 1.0),
                     best_epoch=1, rng=rng)
    latest = t7.load(tmp_path / "run" / "latest.t7")
    assert (latest["epoch"], latest["modelFile"], latest["optimFile"]) == (1, "model_1.t7", "optimState_1.t7")
    for v in _lua_values(latest):
        assert isinstance(v, (int, float, str, bool, torch.Tensor)), type(v)
        if isinstance(v, torch.Tensor):
            assert t7.typename_of(v) == "torch.ByteTensor"
    assert torch.equal(latest["rngState"]["torch"], torch.get_rng_state())

    # the saved worker stream continues: a new loader set to it draws what the old one draws next
    torch.manual_seed(11)
    second_pass = [b.input for b in loader]
    fresh = DataLoader(Tiny(), opt, "train")
    assert fresh.set_rng_state(latest["rngState"]["train"])
    torch.manual_seed(11)
    assert all(torch.equal(a, b) for a, b in zip(second_pass, [b.input for b in fresh]))
    assert not torch.equal(torch.cat(first_pass), torch.cat(second_pass))
    other = DataLoader(Tiny(), _tiny_opt(tmp_path, "-batchSize", "4", "-nThreads", "1"), "train")
    assert not other.set_rng_state(latest["rngState"]["train"])  # another -nThreads: not restorable
