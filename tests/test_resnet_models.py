"""Native ResNet / pre-activation ResNet (models/resnet.py, models/preresnet.py) against fb.resnet.torch.

Ground truth: the parameter counts of PARITY §8.3 (ImageNet ones equal torchvision's), the layer layout and
init rules of resnet.lua / preresnet.lua, and the Lua-built fixture models in ../shared/reference.
"""
from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import reference
from fbresnet_port.errors import UserError
from models import preresnet, resnet
from models.resnet import Residual, ZeroPadShortcut


def opt(**kw) -> SimpleNamespace:
    fields = {"dataset": "imagenet", "depth": 18, "shortcutType": "B"}
    fields.update(kw)
    return SimpleNamespace(**fields)


def build(module, device: str = "cpu", **kw) -> nn.Module:
    with torch.device(device):
        return module.create_model(opt(**kw))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- counts

@pytest.mark.parametrize("depth,expected", [
    (18, 11_689_512), (34, 21_797_672), (50, 25_557_032), (101, 44_549_160), (152, 60_192_808)])
def test_resnet_imagenet_param_counts(depth, expected):
    assert n_params(build(resnet, "meta", depth=depth)) == expected


@pytest.mark.parametrize("depth,expected", [
    (18, 11_687_720), (34, 21_795_880), (50, 25_549_352), (101, 44_541_480), (152, 60_185_128),
    (200, 64_666_152)])
def test_preresnet_imagenet_param_counts(depth, expected):
    assert n_params(build(preresnet, "meta", depth=depth)) == expected


CIFAR_COUNTS = [(20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018), (110, 1_727_962),
                (1202, 19_421_274)]


@pytest.mark.parametrize("module", [resnet, preresnet], ids=["resnet", "preresnet"])
@pytest.mark.parametrize("depth,expected", CIFAR_COUNTS)
def test_cifar_param_counts_shortcut_a(module, depth, expected):
    assert n_params(build(module, "meta", dataset="cifar10", depth=depth, shortcutType="A")) == expected
    # CIFAR-100: only the classifier grows, Linear(64, 100) instead of (64, 10): +90*64 + 90
    assert n_params(build(module, "meta", dataset="cifar100", depth=depth, shortcutType="A")) == expected + 5_850


# ---------------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("module", [resnet, preresnet], ids=["resnet", "preresnet"])
@pytest.mark.parametrize("dataset,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_output_shape(module, dataset, classes):
    model = build(module, dataset=dataset, depth=20, shortcutType="A").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, classes)


@pytest.mark.parametrize("module,depth", [(resnet, 18), (preresnet, 18), (resnet, 50), (preresnet, 200)])
def test_imagenet_output_shape(module, depth):
    # bottleneck nets run on the meta device (shapes only); ResNet-18 runs for real
    device = "cpu" if depth == 18 else "meta"
    model = build(module, device, depth=depth).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224, device=device))
    assert out.shape == (1, 1000)


def test_final_pool_is_fixed_kernel_stride_one():
    # cudnn.SpatialAveragePooling(8, 8, 1, 1): on a 40x40 input the 10x10 map pools to 3x3, so View(64) fails
    model = build(resnet, dataset="cifar10", depth=20, shortcutType="A").eval()
    assert model.avgpool.kernel_size == 8 and model.avgpool.stride == 1
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 3, 40, 40))


# ---------------------------------------------------------------------------------------------- init

def test_init_statistics():
    torch.manual_seed(0)
    model = build(resnet, depth=18)
    w = model.layer4[1].branch.conv2.weight  # 512x512x3x3 = 2.4M draws
    expected_std = math.sqrt(2 / (3 * 3 * 512))
    assert abs(w.std().item() / expected_std - 1) < 0.01
    assert abs(w.mean().item()) < 0.01 * expected_std * 10
    stem = model.conv1.weight  # 7x7, nOutputPlane 64: std sqrt(2/(49*64))
    assert abs(stem.std().item() / math.sqrt(2 / (7 * 7 * 64)) - 1) < 0.05
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.bias is None
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
            assert torch.all(m.running_mean == 0) and torch.all(m.running_var == 1)
            assert m.eps == 1e-5 and m.momentum == 0.1
    fc = model.fc
    assert torch.all(fc.bias == 0)
    bound = 1 / math.sqrt(512)  # nn.Linear reset: U(-1/sqrt(in), 1/sqrt(in))
    assert fc.weight.abs().max().item() <= bound
    assert abs(fc.weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.02


# ---------------------------------------------------------------------------------------------- layout

def test_shortcut_a_appends_zero_channels():
    x = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
    out = ZeroPadShortcut(2)(x)
    assert out.shape == (2, 4, 2, 2)
    # subsampled input at rows/cols 0 and 2, then two all-zero channels
    assert out[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]
    assert out[1, 1].tolist() == [[48.0, 50.0], [56.0, 58.0]]
    assert torch.all(out[:, 2:] == 0)
    # MulConstant(0) keeps NaN (NaN * 0 = NaN) rather than writing zeros
    assert torch.isnan(ZeroPadShortcut(1)(torch.full((1, 1, 1, 1), float("nan"))))[0, 1].all()


def test_shortcut_types():
    a = build(resnet, dataset="cifar10", depth=20, shortcutType="A")
    assert isinstance(a.layer1[0].shortcut, nn.Identity)
    assert isinstance(a.layer2[0].shortcut, ZeroPadShortcut) and a.layer2[0].shortcut.stride == 2
    b = build(resnet, dataset="cifar10", depth=20, shortcutType="B")
    assert isinstance(b.layer1[0].shortcut, nn.Identity)
    assert [type(m) for m in b.layer2[0].shortcut] == [nn.Conv2d, nn.BatchNorm2d]
    assert b.layer2[0].shortcut.conv.stride == (2, 2) and b.layer2[0].shortcut.conv.kernel_size == (1, 1)
    c = build(resnet, dataset="cifar10", depth=20, shortcutType="C")
    assert [type(m) for m in c.layer1[0].shortcut] == [nn.Conv2d, nn.BatchNorm2d]  # even 16 -> 16
    pc = build(preresnet, dataset="cifar10", depth=20, shortcutType="C")
    assert [type(m) for m in pc.layer1[0].shortcut] == [nn.Conv2d]  # preresnet: no BN on the shortcut
    # any string other than B/C acts like A
    odd = build(resnet, dataset="cifar10", depth=20, shortcutType="x")
    assert isinstance(odd.layer3[0].shortcut, ZeroPadShortcut)


def test_resnet_block_parameter_order_is_lua_order():
    # basicblock: residual branch conv, bn, conv, bn, then the shortcut's conv, bn
    block = build(resnet, dataset="cifar10", depth=20, shortcutType="B").layer2[0]
    names = [n for n, _ in block.named_parameters()]
    assert names == ["branch.conv1.weight", "branch.bn1.weight", "branch.bn1.bias", "branch.conv2.weight",
                     "branch.bn2.weight", "branch.bn2.bias", "shortcut.conv.weight", "shortcut.bn.weight",
                     "shortcut.bn.bias"]
    bottleneck = build(resnet, depth=50).layer1[0]
    shapes = [tuple(p.shape) for p in bottleneck.parameters()]
    assert shapes == [(64, 64, 1, 1), (64,), (64,), (64, 64, 3, 3), (64,), (64,), (256, 64, 1, 1), (256,), (256,),
                      (256, 64, 1, 1), (256,), (256,)]
    assert bottleneck.branch.conv2.stride == (1, 1)
    assert build(resnet, "meta", depth=50).layer2[0].branch.conv2.stride == (2, 2)  # stride on the 3x3


def test_preresnet_block_kinds():
    cifar = build(preresnet, dataset="cifar10", depth=20, shortcutType="A")
    assert [type(m) for m in cifar[:2]] == [nn.Conv2d, nn.Sequential]  # stem: conv only
    first, second = cifar.layer1[0], cifar.layer1[1]
    assert first.preact is not None and type(first.branch[0]) is nn.Conv2d  # both_preact (CIFAR stage 1 too)
    assert second.preact is None and isinstance(second.branch[0], nn.BatchNorm2d)  # BN+ReLU open the branch
    assert all(b.relu is None for stage in (cifar.layer1, cifar.layer2, cifar.layer3) for b in stage)
    assert [type(m) for m in cifar[-5:]] == [nn.BatchNorm2d, resnet.ReLU, nn.AvgPool2d, resnet.View, nn.Linear]
    imagenet = build(preresnet, "meta", depth=50)
    assert imagenet.layer1[0].preact is None and isinstance(imagenet.layer1[0].branch[0], nn.Conv2d)  # no_preact
    assert imagenet.layer2[0].preact is not None and imagenet.layer4[0].preact is not None
    assert imagenet.bn.num_features == 2048
    post = build(resnet, dataset="cifar10", depth=20, shortcutType="A")
    assert all(isinstance(b, Residual) and b.relu is not None for b in post.layer2)


def test_zero_padded_shortcut_lets_x_through_unscaled():
    # branch zeroed: ResNet block output = relu(shortcut(x)); pre-act block output = shortcut(relu(bn(x)))
    model = build(resnet, dataset="cifar10", depth=20, shortcutType="A").eval()
    block = model.layer2[0]
    for p in block.branch.parameters():
        nn.init.zeros_(p)
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        out = block(x)
    assert torch.equal(out[:, :16], torch.relu(x[:, :, ::2, ::2])) and torch.all(out[:, 16:] == 0)


def test_prints_like_lua(capsys):
    build(resnet, "meta", dataset="cifar10", depth=20.0, shortcutType="A")
    build(preresnet, "meta", dataset="cifar100", depth=56, shortcutType="A")
    build(resnet, "meta", depth=50)
    assert capsys.readouterr().out.splitlines() == [
        " | ResNet-20 CIFAR-10", " | ResNet-56 CIFAR-100", " | ResNet-50 ImageNet"]


@pytest.mark.parametrize("module,kw,message", [
    (resnet, dict(depth=200), "Invalid depth: 200"),
    (preresnet, dict(depth=19), "Invalid depth: 19"),
    (resnet, dict(dataset="cifar10", depth=21), "depth should be one of 20, 32, 44, 56, 110, 1202"),
    (preresnet, dict(dataset="cifar100", depth=18), "depth should be one of 20, 32, 44, 56, 110, 1202"),
    (resnet, dict(dataset="mnist"), "invalid dataset: mnist"),
])
def test_invalid_configurations(module, kw, message):
    # the Lua message first, then a hint on the valid values
    with pytest.raises(UserError, match=f"^{re.escape(message)}( \\(.+\\))?$") as err:
        build(module, "meta", **kw)
    if "depth" in message:
        assert "-depth" in str(err.value)


@pytest.mark.parametrize("module", [resnet, preresnet])
def test_shortcut_a_with_bottleneck_imagenet_is_a_user_error(module):
    # resnet.lua builds it and crashes at the first forward (64 -> 128 zero-padded vs 256 channels)
    with pytest.raises(UserError, match="64 to 256 channels.*-shortcutType B or C"):
        build(module, "meta", depth=50, shortcutType="A")
    assert n_params(build(module, "meta", depth=18, shortcutType="A")) > 0  # basic blocks only double


# ---------------------------------------------------------------------------------------------- Lua export

from fbresnet_port import t7  # noqa: E402


@pytest.fixture
def lua_nn():
    return pytest.importorskip("fbresnet_port.lua_nn")  # written in parallel; required once it exists

# fields that define the computation of each class found in resnet.lua / preresnet.lua
KEY_FIELDS = ["nInputPlane", "nOutputPlane", "kW", "kH", "dW", "dH", "padW", "padH", "inplace", "dimension",
              "constant_scalar", "numInputDims", "numElements", "eps", "momentum", "affine", "ceil_mode",
              "count_include_pad"]


def assert_same_tree(mine, lua, path="model"):
    assert mine.typename == lua.typename, path
    for field in KEY_FIELDS:
        if field in lua:
            assert field in mine and mine[field] == lua[field], f"{path}.{field}"
    for field in ("weight", "running_mean"):
        if field in lua:
            assert tuple(mine[field].shape) == tuple(lua[field].shape), f"{path}.{field}"
    lua_children, my_children = lua.get("modules") or [], mine.get("modules") or []
    assert len(my_children) == len(lua_children), path
    for i, (m, l) in enumerate(zip(my_children, lua_children), start=1):
        assert_same_tree(m, l, f"{path}:get({i})")


@pytest.mark.parametrize("case,module", [("resnet_cifar10_d20_A", resnet), ("preresnet_cifar10_d20", preresnet)])
def test_to_lua_rebuilds_the_lua_tree(case, module, lua_nn):
    lua_model = t7.load(reference(case, "model.t7"))
    mine = build(module, dataset="cifar10", depth=20, shortcutType="A").to_lua()
    assert_same_tree(mine, lua_model)


@pytest.mark.parametrize("module,kw,shape", [
    (resnet, dict(dataset="cifar10", depth=20, shortcutType="A"), (2, 3, 32, 32)),
    (resnet, dict(dataset="cifar10", depth=20, shortcutType="B"), (2, 3, 32, 32)),
    (preresnet, dict(dataset="cifar100", depth=20, shortcutType="C"), (2, 3, 32, 32)),
    (preresnet, dict(depth=18, shortcutType="A"), (1, 3, 224, 224)),
])
def test_from_lua_of_to_lua_computes_the_same(module, kw, shape, tmp_path, lua_nn):
    torch.manual_seed(1)
    model = build(module, **kw)
    for m in model.modules():  # non-trivial BN statistics and affine terms
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.3, 0.3)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "model.t7"
    t7.save(path, lua_nn.to_lua(model))
    back = lua_nn.from_lua(t7.load(path))
    x = torch.randn(*shape)
    model.eval(), back.eval()
    with torch.no_grad():
        assert torch.allclose(back(x), model(x), rtol=1e-5, atol=1e-5)
