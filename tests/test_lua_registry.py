"""Converters of the user's own Lua classes (``lua_nn.register``), the one-error-for-everything report
of unsupported classes, checkpoint tables that hold modules, the ReLU export fields Lua's nn.ReLU
needs, and the generated table of supported classes.

Expected values are computed by hand from the Lua definitions (char-rnn's OneHot: row ``input[i]`` of
an identity matrix; nn.Linear: W x + b; nn.Threshold(0, 0): x > 0 and x or 0).
"""
from __future__ import annotations

import runpy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fbresnet_port
from fbresnet_port import t7
from fbresnet_port.lua_nn import (LuaModelError, from_lua, load_lua_model, lua_module, register,
                                  supported_classes_markdown, to_lua, unregister)
from fbresnet_port.lua_nn import _base
from models import preresnet, resnet


@pytest.fixture(autouse=True)
def clean_registry():
    """Each test's registrations are undone afterwards."""
    saved, shadowed = dict(_base.REGISTRY), {k: list(v) for k, v in _base._SHADOWED.items()}
    yield
    _base.REGISTRY.clear()
    _base.REGISTRY.update(saved)
    _base._SHADOWED.clear()
    _base._SHADOWED.update(shadowed)


def seq(*mods, **fields) -> t7.TorchObject:
    return lua_module("nn.Sequential", modules=t7.LuaList(mods), **fields)


def linear(w: torch.Tensor, b: torch.Tensor) -> t7.TorchObject:
    return lua_module("nn.Linear", weight=w, bias=b, gradWeight=torch.zeros_like(w), gradBias=torch.zeros_like(b))


class OneHot(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x.long() - 1, self.n).float()  # Lua indices are 1-based


class Scale(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


# ------------------------------------------------------------------------------------------
# register()
# ------------------------------------------------------------------------------------------

def test_user_class_converts_inside_a_sequential():
    @register("OneHot")
    def one_hot(obj):
        assert obj.typename == "OneHot" and obj.get("missing", 5) == 5
        return OneHot(int(obj["outputSize"]))

    w = torch.arange(12.0).reshape(3, 4)
    b = torch.tensor([0.5, -1.0, 2.0])
    lua = seq(lua_module("OneHot", outputSize=4, _eye=torch.eye(4)), linear(w, b))
    model = from_lua(lua)
    out = model(torch.tensor([1, 3, 4]))
    expected = torch.stack([w[:, 0] + b, w[:, 2] + b, w[:, 3] + b])  # row input[i] of eye(4), then W x + b
    assert torch.equal(out, expected)
    assert isinstance(model[0], OneHot) and model[0].lua_typename == "OneHot"


def test_user_module_parameters_join_the_model_in_lua_order():
    @register("Scale")
    def scale(obj):
        return Scale(obj["weight"])

    w1, b1 = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 1.0]]), torch.tensor([0.5, 0.0])
    s = torch.tensor([2.0, -3.0])
    w2, b2 = torch.tensor([[1.0, 4.0]]), torch.tensor([0.25])
    model = from_lua(seq(linear(w1, b1), lua_module("Scale", weight=s), linear(w2, b2)))
    params = list(model.parameters())
    assert [p.shape for p in params] == [(2, 3), (2,), (2,), (1, 2), (1,)]
    assert params[2] is model[1].weight and torch.equal(params[2], s)

    x = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, -1.0]])
    out = model(x)
    h = x @ w1.T + b1  # [[3.5, 0], [2.5, -1]]
    assert torch.equal(out, (h * s) @ w2.T + b2)
    out.sum().backward()
    assert torch.equal(model[1].weight.grad, (h * w2[0]).sum(0))  # d/ds of sum(w2 . (h * s))


def test_train_flag_applies_to_user_modules():
    register("Drop")(lambda obj: nn.Sequential(nn.Dropout(0.5)))
    model = from_lua(seq(lua_module("Drop", train=False), train=False))
    assert not model.training and not model[0].training and not model[0][0].training
    x = torch.ones(4, 5)
    assert torch.equal(model(x), x)  # evaluate mode: Dropout is the identity


def test_register_overrides_an_existing_class_until_unregistered():
    builtin = type(from_lua(lua_module("nn.Identity")))

    @register("nn.Identity")
    def double(obj):
        return Scale(torch.tensor(2.0))

    assert torch.equal(from_lua(lua_module("nn.Identity"))(torch.ones(2)), torch.full((2,), 2.0))
    unregister("nn.Identity")
    assert type(from_lua(lua_module("nn.Identity"))) is builtin
    with pytest.raises(KeyError):
        unregister("nn.Identity")  # built-in converters cannot be unregistered


def test_converter_with_convert_callback_converts_children():
    @fbresnet_port.register("Wrapper", "OtherWrapper")  # also exported at the package top
    def wrapper(obj, convert):
        return nn.Sequential(convert(obj["inner"], "inner"))

    w, b = torch.tensor([[2.0]]), torch.tensor([1.0])
    model = from_lua(seq(lua_module("Wrapper", inner=linear(w, b)), lua_module("OtherWrapper", inner=linear(w, b))))
    assert torch.equal(model(torch.tensor([3.0])), torch.tensor([15.0]))  # 2 (2 * 3 + 1) + 1
    with pytest.raises(LuaModelError, match=r"nn\.Nope at model\.modules\[1\]\.inner"):
        from_lua(seq(lua_module("Wrapper", inner=lua_module("nn.Nope"))))


def test_converter_must_return_a_module():
    @register("Bad")
    def bad(obj):
        return 42

    with pytest.raises(LuaModelError, match=r"Bad at model\.modules\[1\].*bad.*returned int, not a torch\.nn\.Module"):
        from_lua(seq(lua_module("Bad")))


def test_register_misuse():
    with pytest.raises(TypeError):
        register()
    with pytest.raises(TypeError):
        register("X")(None)


# ------------------------------------------------------------------------------------------
# Every unsupported class in one error
# ------------------------------------------------------------------------------------------

def test_every_unsupported_class_listed_once_with_counts():
    tree = seq(
        lua_module("nn.Foo"),
        lua_module("nn.ConcatTable", output=t7.LuaTable(), modules=t7.LuaList([lua_module("nn.Foo"), lua_module("nn.Bar")])),
        linear(torch.ones(1, 1), torch.zeros(1)),
        seq(lua_module("nn.Foo"), lua_module("my.Baz"), lua_module("nn.Foo"), lua_module("nn.Foo")),
    )
    with pytest.raises(LuaModelError) as err:
        from_lua(tree)
    e = err.value
    assert e.unsupported == {
        "nn.Foo": ["model.modules[1]", "model.modules[2].modules[1]", "model.modules[4].modules[1]",
                   "model.modules[4].modules[3]", "model.modules[4].modules[4]"],
        "nn.Bar": ["model.modules[2].modules[2]"],
        "my.Baz": ["model.modules[4].modules[2]"],
    }
    msg = str(e)
    assert "7 modules of 3 classes" in msg
    assert ("nn.Foo: 5 modules, at model.modules[1], model.modules[2].modules[1], "
            "model.modules[4].modules[1], ...") in msg
    assert "nn.Bar: 1 module, at model.modules[2].modules[2]" in msg
    assert "my.Baz: 1 module, at model.modules[4].modules[2]" in msg
    assert "@register('nn.Foo')" in msg and e.problems == []


def test_unsupported_classes_and_field_errors_reported_together():
    tree = seq(lua_module("nn.Foo"), lua_module("nn.Linear"))  # the Linear has no weight
    with pytest.raises(LuaModelError) as err:
        from_lua(tree)
    msg = str(err.value)
    assert "unsupported Lua module nn.Foo at model.modules[1]" in msg
    assert "nn.Linear at model.modules[2]: missing tensor field 'weight'" in msg


def test_registering_the_reported_class_fixes_the_model():
    tree = seq(lua_module("nn.Foo"), lua_module("nn.Foo"))
    with pytest.raises(LuaModelError):
        from_lua(tree)
    register("nn.Foo")(lambda obj: nn.Identity())
    assert torch.equal(from_lua(tree)(torch.ones(3)), torch.ones(3))


# ------------------------------------------------------------------------------------------
# Checkpoint tables that hold modules
# ------------------------------------------------------------------------------------------

def char_rnn_checkpoint() -> t7.LuaTable:
    rnn = seq(linear(torch.tensor([[1.0, 2.0]]), torch.tensor([0.5])))
    crit = lua_module("nn.ClassNLLCriterion", sizeAverage=True, weights=None)
    return t7.LuaTable({"protos": t7.LuaTable({"rnn": rnn, "criterion": crit}),
                        "opt": t7.LuaTable({"rnn_size": 128}), "vocab": t7.LuaTable({"a": 1, "b": 2}),
                        "val_losses": t7.LuaList([1.5, 1.25])})


def test_checkpoint_table_names_the_module_paths(tmp_path):
    ckpt = char_rnn_checkpoint()
    with pytest.raises(LuaModelError) as err:
        load_lua_model(ckpt)
    msg = str(err.value)
    assert "keys: protos, opt, vocab, val_losses" in msg
    assert "protos.rnn (nn.Sequential), protos.criterion (nn.ClassNLLCriterion)" in msg
    assert "load_lua_model(path, key='protos.rnn')" in msg
    t7.save(tmp_path / "lm.t7", ckpt)
    model = fbresnet_port.load_lua_model(tmp_path / "lm.t7", key="protos.rnn")
    assert torch.equal(model(torch.tensor([3.0, -1.0])), torch.tensor([1.5]))  # 1*3 + 2*(-1) + 0.5


def test_checkpoint_list_paths_and_missing_keys():
    a, b = lua_module("nn.Identity"), lua_module("nn.Tanh")
    ckpt = t7.LuaTable({"models": t7.LuaList([a, b]), "epoch": 3})
    with pytest.raises(LuaModelError, match=r"models\[1\] \(nn\.Identity\), models\[2\] \(nn\.Tanh\)"):
        from_lua(ckpt)
    assert torch.equal(load_lua_model(ckpt, key="models[2]")(torch.zeros(2)), torch.zeros(2))
    with pytest.raises(LuaModelError, match=r"no 'model' in the object.*its keys: models, epoch"):
        load_lua_model(ckpt, key="model")
    with pytest.raises(LuaModelError, match="holds no nn module"):
        from_lua(t7.LuaTable({"epoch": 3}))


# ------------------------------------------------------------------------------------------
# ReLU export: the fields of Lua's nn.ReLU (nn.Threshold(0, 0))
# ------------------------------------------------------------------------------------------

def lua_threshold(x: torch.Tensor, obj: t7.TorchObject) -> torch.Tensor:
    """nn.Threshold's updateOutput with the object's fields: x > threshold and x or val."""
    return torch.where(x > obj["threshold"], x, torch.full_like(x, float(obj["val"])))


@pytest.mark.parametrize("module, inplace", [(nn.ReLU(), False), (nn.ReLU(inplace=True), True)])
def test_torch_relu_exports_threshold_fields(module, inplace):
    obj = to_lua(module)
    assert obj.typename == "cudnn.ReLU"
    assert (obj["threshold"], obj["val"], obj["inplace"]) == (0, 0, inplace)
    x = torch.linspace(-2, 2, 9)
    assert torch.equal(lua_threshold(x, obj), F.relu(x))


@pytest.mark.parametrize("typename", ["cudnn.ReLU", "nn.ReLU"])
def test_converted_relu_exports_threshold_fields(typename):
    obj = to_lua(from_lua(lua_module(typename, inplace=True)))
    assert (obj.typename, obj["threshold"], obj["val"], obj["inplace"]) == (typename, 0, 0, True)


@pytest.mark.parametrize("build", [resnet.create_model, preresnet.create_model], ids=["resnet", "preresnet"])
def test_native_resnets_export_relu_fields(build, tmp_path):
    from types import SimpleNamespace
    model = build(SimpleNamespace(dataset="cifar10", depth=20, shortcutType="A"))
    tree = to_lua(model)
    t7.save(tmp_path / "m.t7", tree)
    relus = []

    def walk(obj):
        if obj.typename.endswith("ReLU"):
            relus.append(obj)
        for child in obj.get("modules") or []:
            walk(child)

    walk(t7.load(tmp_path / "m.t7"))
    assert len(relus) == sum(isinstance(m, nn.ReLU) for m in model.modules()) > 0
    assert all((r["threshold"], r["val"], r["inplace"]) == (0, 0, True) for r in relus)


# ------------------------------------------------------------------------------------------
# The README table
# ------------------------------------------------------------------------------------------

def test_supported_classes_markdown_lists_every_class_once(capsys):
    register("OneHot")(lambda obj: OneHot(int(obj["outputSize"])))
    table = supported_classes_markdown()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| Family")]
    cells = [c for row in rows for c in row.split(" | ")[1].split(", ")]
    assert sorted(c.strip("`") for c in cells) == sorted(_base.REGISTRY)
    assert "| nn.Linear |" in next(r for r in rows if "`nn.Linear`" in r)
    assert next(r for r in rows if "`OneHot`" in r).startswith("| registered |")
    runpy.run_module("fbresnet_port.lua_nn", run_name="__main__")
    assert capsys.readouterr().out.strip() == table
