"""models/densenet.py: architecture (paper/README parameter counts), every -optMemory level against
level 0 (plain autograd over nn modules), and parity with the original Lua DenseNet through its fixtures."""
from __future__ import annotations

import functools
import json
import warnings

import pytest
import torch
from torch import nn

from conftest import MODEL_CASES, reference
from fbresnet_port import opts, t7
from models import densenet, densenet_memory
from models.densenet import create_model, memory_level
from models.lua_weights import load_lua_weights

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make(*flags: object):
    """The model for a main.lua command line (``-netType densenet`` implied)."""
    return create_model(opts.parse(["-netType", "densenet", *map(str, flags)], check_dirs=False))


def n_params(*flags: object) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in make(*flags).parameters())


# ------------------------------------------------------------------ parameter counts (PARITY §8.1, §8.2)
NOBC = ("-bottleneck", "false", "-reduction", 1)
CIFAR_COUNTS = [  # (flags, CIFAR-10, CIFAR-100)
    (("-depth", 40, "-growthRate", 12, *NOBC), 1_059_298, 1_100_428),
    (("-depth", 100, "-growthRate", 12, *NOBC), 7_083_538, 7_189_468),
    (("-depth", 100, "-growthRate", 24, *NOBC), 28_071_706, 28_283_476),
    (("-depth", 100, "-growthRate", 12), 769_162, 800_032),
    (("-depth", 250, "-growthRate", 24), 15_324_406, 15_480_556),
    (("-depth", 190, "-growthRate", 40), 25_624_430, 25_821_620),
    (("-depth", 40, "-growthRate", 36), 1_542_682, 1_578_412),
    (("-depth", 40, "-growthRate", 48), 2_733_130, 2_780_740),
    (("-depth", 40, "-growthRate", 60), 4_261_690, 4_321_180),
]


@pytest.mark.parametrize("flags,c10,c100", CIFAR_COUNTS, ids=lambda v: "_".join(map(str, v)) if isinstance(v, tuple) else None)
def test_cifar_parameter_counts(flags, c10, c100):
    assert n_params("-dataset", "cifar10", *flags) == c10
    assert n_params("-dataset", "cifar100", *flags) == c100


def test_default_depth_20_has_two_layers_per_block():
    assert n_params() == 44_410
    assert make().classifier.in_features == 48


@pytest.mark.parametrize("flags,count", [
    (("-depth", 121, "-growthRate", 32), 7_978_856),
    (("-depth", 169, "-growthRate", 32), 14_149_480),
    (("-depth", 201, "-growthRate", 32), 20_013_928),
    (("-depth", 161, "-growthRate", 48), 28_681_000),
    (("-growthRate", 32, "-d1", 6, "-d2", 12, "-d3", 64, "-d4", 48), 33_337_704),
    (("-growthRate", 48, "-d1", 6, "-d2", 12, "-d3", 48, "-d4", 48), 55_570_984),
    (("-growthRate", 48, "-d1", 6, "-d2", 12, "-d3", 64, "-d4", 48), 72_686_632),
])
def test_imagenet_parameter_counts(flags, count):
    assert n_params("-dataset", "imagenet", *flags) == count


def test_classifier_is_last_child_linear_and_init():
    model = make("-depth", 40, "-dataset", "cifar100")
    last = list(model.children())[-1]
    assert isinstance(last, nn.Linear) and last.out_features == 100
    assert torch.all(last.bias == 0)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) and m.eps == 1e-5 and m.momentum == 0.1
               for m in bns)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.bias is None for m in convs)
    big = max(convs, key=lambda m: m.weight.numel())  # std sqrt(2/(kh*kw*nOut)), fan-out
    expected = (2.0 / (big.kernel_size[0] * big.kernel_size[1] * big.out_channels)) ** 0.5
    assert abs(big.weight.std().item() / expected - 1) < 0.05


# ------------------------------------------------------------------ memory levels
def test_memory_level_mapping():
    assert [memory_level(i) for i in (-1, 0, 1, 2, 3, 4, 5, 6)] == [0, 0, 1, 2, 3, 4, 3, 3]
    assert memory_level(0, optnet=True) == 2 and memory_level(0, share_grad_input=True) == 2
    assert memory_level(4, optnet=True) == 4


SMALL = {"bc40": ("-depth", 40, "-growthRate", 12), "nobc16": ("-depth", 16, "-growthRate", 6, *NOBC)}


def _step(model: nn.Module, x: torch.Tensor, train: bool, seed: int = 1, grad_out: torch.Tensor | None = None):
    """Forward + backward with a fixed gradOutput (drawn from ``seed`` in the output's dtype, or ``grad_out``):
    output, input grad, parameter grads, running stats."""
    model.train(train)
    x = x.clone().requires_grad_()
    out = model(x)
    g = (grad_out if grad_out is not None else
         torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype))
    out.backward(g.to(out.device, out.dtype))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    stats = torch.cat([m.running_mean for m in bns] + [m.running_var for m in bns])
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    return out.detach(), x.grad, grads, stats


@functools.lru_cache(maxsize=None)
def _base_state(name: str):
    torch.manual_seed(0)
    model = make(*SMALL[name], "-optMemory", 2).double()
    for m in model.modules():  # non-trivial BN affine and running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.state_dict(), torch.randn(4, 3, 32, 32, dtype=torch.float64)


def _run(name: str, level: int, train: bool, device: str):
    state, x = _base_state(name)
    model = make(*SMALL[name], "-optMemory", level).double()
    model.load_state_dict(state)
    return _step(model.to(device), x.to(device), train)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_levels_match_plain_autograd(level, name, train, device):
    """Levels 1-5 (one autograd Function per block, explicit backward) equal level 0, which is autograd
    over the nn modules (recursive concatenation): outputs, input and parameter gradients, running stats."""
    ref = _run(name, 0, train, device)
    got = _run(name, level, train, device)
    for what, a, b in zip(("output", "gradInput", "gradParams", "running stats"), got, ref):
        assert (a - b).abs().max().item() <= 1e-10 * max(1.0, b.abs().max().item()), what


@pytest.mark.parametrize("level", [2, 3, 4])
def test_batch_chunked_blocks_match_plain_autograd(level, monkeypatch):
    """On CPU the 1x1 stages run in batch chunks sized for the caches; small chunks change nothing."""
    ref = _run("bc40", 0, True, "cpu")
    monkeypatch.setattr(densenet_memory, "_CHUNK_BYTES", 1)  # one image per chunk
    got = _run("bc40", level, True, "cpu")
    for what, a, b in zip(("output", "gradInput", "gradParams", "running stats"), got, ref):
        assert (a - b).abs().max().item() <= 1e-10 * max(1.0, b.abs().max().item()), what


@pytest.mark.parametrize("level", [2, 3, 4])
def test_library_convolution_path_matches_plain_autograd(level, monkeypatch):
    """Where 1x1 convolutions are not matrix products (CUDA), blocks use conv kernels and no chunks."""
    from models import pointwise
    ref = _run("bc40", 0, True, "cpu")
    monkeypatch.setattr(pointwise, "uses_matmul", lambda x, conv: False)
    monkeypatch.setattr(densenet_memory, "uses_matmul", pointwise.uses_matmul)
    got = _run("bc40", level, True, "cpu")
    for what, a, b in zip(("output", "gradInput", "gradParams", "running stats"), got, ref):
        assert (a - b).abs().max().item() <= 1e-10 * max(1.0, b.abs().max().item()), what


@pytest.mark.parametrize("level", [1, 2])
def test_levels_1_2_with_dropout_match_level0(level):
    """With -dropRate the dense layers keep their Dropout at levels <= 2 (autograd path, same RNG use)."""
    runs = []
    for lv in (0, level):
        torch.manual_seed(0)
        model = make("-depth", 16, "-growthRate", 6, "-dropRate", 0.3, *NOBC, "-optMemory", lv).double()
        torch.manual_seed(5)
        runs.append(_step(model, torch.randn(2, 3, 32, 32, dtype=torch.float64), True))
    for what, a, b in zip(("output", "gradInput", "gradParams", "running stats"), *runs):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), what
    assert runs[0][0].std() > 0


@pytest.mark.parametrize("level", [2, 3, 4])
def test_levels_under_bfloat16_autocast_stay_close_to_float32(level):
    """-precision half on CPU: the blocks compute in bfloat16 with float32 statistics and weights."""
    state, _ = _base_state("bc40")
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    runs = []
    for amp in (False, True):
        model = make(*SMALL["bc40"], "-optMemory", level)
        model.load_state_dict(state)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            runs.append(_step(model, x, True))
    ref, got = runs
    assert got[0].dtype == torch.bfloat16 and got[2].dtype == torch.float32
    out_err = (got[0].float() - ref[0]).norm() / ref[0].norm()
    cos = torch.nn.functional.cosine_similarity(got[2].double(), ref[2].double(), dim=0)
    assert out_err < 0.05 and cos > 0.9, (out_err, cos)


def test_level4_updates_running_stats_once_per_step():
    state, x = _base_state("bc40")
    runs = []
    for level in (2, 4):
        model = make(*SMALL["bc40"], "-optMemory", level).double()
        model.load_state_dict(state)
        sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for step in range(2):
            sgd.zero_grad()
            _step(model, x * (1 + step), True, seed=step)
            sgd.step()
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(int(m.num_batches_tracked) == 2 for m in bns)
        runs.append(torch.cat([m.running_mean for m in bns] + [m.running_var for m in bns]))
    assert (runs[0] - runs[1]).abs().max().item() < 1e-10


def _saved_bytes(level: int) -> int:
    """Bytes of distinct storages autograd keeps for backward after one training forward."""
    state, x = _base_state("bc40")
    model = make(*SMALL["bc40"], "-optMemory", level).double()
    model.load_state_dict(state)
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values())


def test_levels_are_real_memory_mechanisms():
    level2, level3, level4 = (_saved_bytes(lv) for lv in (2, 3, 4))
    assert level3 < 0.8 * level2  # no copies of the concatenations
    assert level4 < 0.4 * level2  # BN-ReLU outputs recomputed, not kept


def test_dropout_dropped_in_dense_layers_from_level3(monkeypatch, capsys):
    monkeypatch.setattr(densenet, "_dropout_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m4 = make("-depth", 40, "-dropRate", 0.2, "-optMemory", 4)
        make("-depth", 40, "-dropRate", 0.2, "-optMemory", 3)
    assert not caught  # a note: line on stderr, not a Python warning
    assert capsys.readouterr().err.count("note: -optMemory 4 uses the memory-efficient dense layers") == 1
    m2 = make("-depth", 40, "-dropRate", 0.2, "-optMemory", 2)
    n_drop = lambda m: sum(isinstance(x, nn.Dropout) for x in m.modules())
    assert n_drop(m2) == 2 * 3 * 6 + 2 and n_drop(m4) == 2  # transitions keep theirs


# ------------------------------------------------------------------ Lua fixtures
DENSENET_CASES = [c for c in MODEL_CASES if c.startswith("densenet")]
ALL_LEVELS_CASE = "densenet_cifar10_d40_k12_nobc_om2"
CHECK_LEVELS = {ALL_LEVELS_CASE: [0, 1, 2, 3, 4, 5], "densenet_cifar10_d100_k12_bc_om4": [2, 3, 4]}


def _fixture(case: str):
    folder = reference(case)
    man = json.loads((folder / "manifest.json").read_text())
    return folder, opts.parse([str(f) for f in man["flags"]], check_dirs=False), t7.load(folder / "model.t7")


def _close(got: torch.Tensor, ref: torch.Tensor, rel: float, what: str) -> None:
    got, ref = got.detach().double().flatten(), ref.double().flatten()
    assert got.shape == ref.shape, what
    err, scale = (got - ref).abs().max().item(), ref.abs().max().item()
    assert err <= rel * scale, f"{what}: max error {err:.3g} > {rel} * {scale:.3g}"


def _native(case: str, level: int | None = None):
    folder, opt, lua = _fixture(case)
    if level is not None:
        opt.optMemory = level
    model = create_model(opt)
    load_lua_weights(model, lua)
    return folder, model


@pytest.mark.parametrize("case,level", [(c, lv) for c in DENSENET_CASES for lv in CHECK_LEVELS.get(c, [None])])
def test_lua_fixture_parity(case, level):
    folder, model = _native(case, level)
    x = t7.load(folder / "input.t7")
    big = case == "densenet_imagenet_d121_k32"  # time budget: eval + one float64 train forward
    with torch.no_grad():
        _close(model.eval()(x), t7.load(folder / "output_eval.t7"), 1e-4, "float32 eval output")
    model.double()
    x64 = x.double()
    with torch.no_grad():
        _close(model.eval()(x64), t7.load(folder / "output_eval_f64.t7"), 1e-5, "float64 eval output")
    if not (folder / "output_train_f64.t7").exists():
        return
    model.train()
    x64.requires_grad_(not big and (folder / "gradOutput.t7").exists())
    with torch.set_grad_enabled(x64.requires_grad):
        out = model(x64)
    _close(out, t7.load(folder / "output_train_f64.t7"), 1e-5, "float64 train output")
    stats = t7.load(folder / "running_stats_after_train_forward_f64.t7")
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    _close(torch.cat([m.running_mean for m in bns]), stats["running_mean"], 1e-5, "running_mean")
    _close(torch.cat([m.running_var for m in bns]), stats["running_var"], 1e-5, "running_var")
    if not x64.requires_grad:
        return
    out.backward(t7.load(folder / "gradOutput.t7").double())
    _close(x64.grad, t7.load(folder / "gradInput_f64.t7"), 1e-5, "gradInput")
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    _close(grads, t7.load(folder / "gradParams_f64.t7"), 1e-5, "gradParams")


@pytest.mark.parametrize("case", ["densenet_cifar10_d40_k12_nobc_om2", "densenet_cifar10_d100_k12_bc_om4"])
def test_to_lua_rebuilds_the_lua_tree(case):
    """The export has the fixture's module classes, in order, with the same fields, and runs the same."""
    from fbresnet_port.lua_nn import from_lua

    folder, model = _native(case)

    def walk(o):
        yield o
        for c in o.get("modules") or []:
            yield from walk(c)

    exported, lua = list(walk(model.to_lua())), list(walk(_fixture(case)[2]))
    assert [o.typename for o in exported] == [o.typename for o in lua]
    assert all(set(a.fields) == set(b.fields) for a, b in zip(exported, lua))
    x = t7.load(folder / "input.t7")
    back = from_lua(model.to_lua()).eval()
    with torch.no_grad():
        _close(back(x), t7.load(folder / "output_eval.t7"), 1e-4, "re-imported export")


def test_setup_prints_the_lua_tree_like_densenet_lua(capsys):
    """densenet.lua ends with print(model): the same nn tree text (Lua's tostring layout)."""
    import models
    from fbresnet_port import opts

    models.setup(opts.parse(["-netType", "densenet", "-dataset", "cifar10", "-depth", "40"], check_dirs=False))
    out = capsys.readouterr().out
    assert out.startswith("=> Creating model from file: models/densenet.py\nnn.Sequential {\n")
    assert "  (1): cudnn.SpatialConvolution(3 -> 24, 3x3, 1,1, 1,1) without bias\n" in out
    assert "cudnn.SpatialBatchNormalization (4D) (24)" in out and "nn.Linear(" in out
