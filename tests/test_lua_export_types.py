"""Exports Lua can type-convert: every field ``to_lua`` writes has a type kind (tensor, table, number, ...)
that Lua itself gave that field, as recorded in the Lua-made fixtures (../shared/reference).

Lua's ``model:double()``, ``:float()`` and ``:clearState()`` call methods on buffer fields (nn.MaskedSelect's
``type`` calls ``self.gradInput:type(...)``), so a field that Lua holds as a tensor must not be exported as a
table, and the other way round. A field may have several kinds in the fixtures (``output`` of nn.Identity is a
table after a forward of a table); the export must have one of them.
"""
from __future__ import annotations

import collections
import json
from typing import Any, Iterator

import pytest
import torch

from conftest import MODEL_CASES, REFERENCE_DIR, ZOO_CASES, require
from fbresnet_port import opts, t7
from fbresnet_port.lua_nn import REGISTRY, from_lua, to_lua

ZOO_GROUPS = ["zoo_graph", "zoo_legacy", "zoo_rnn", "zoo_text"]


def kind(value: Any) -> str:
    """The Lua type of a loaded value, as Lua's ``:type()`` sees it."""
    if isinstance(value, torch.Tensor):
        return "tensor"
    if isinstance(value, t7.Storage):
        return "storage"
    if isinstance(value, t7.TorchObject):
        return "object"
    if isinstance(value, (dict, list)):
        return "table"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, (str, bytes)) else type(value).__name__


def fixture_files() -> list[str]:
    """Every Lua-written fixture file holding nn modules or criterions (paths under the reference folder)."""
    files = [f"{case}/model.t7" for case in MODEL_CASES + ZOO_CASES]
    for group in ZOO_GROUPS:
        manifest = json.loads(require(REFERENCE_DIR / group / "manifest.json").read_text())
        files += [f"{group}/{c['name']}/model.t7" for c in manifest["cases"]]
    manifest = json.loads(require(REFERENCE_DIR / "zoo_criterions" / "manifest.json").read_text())
    files += [f"zoo_criterions/{c['name']}_criterion.t7" for c in manifest["criterions"]]
    return files


def objects(value: Any, seen: set[int]) -> Iterator[t7.TorchObject]:
    """Every torch object in a loaded tree, once each."""
    if id(value) in seen:
        return
    if isinstance(value, t7.TorchObject):
        seen.add(id(value))
        yield value
        value = value.fields
    if isinstance(value, dict):
        seen.add(id(value))
        for v in value.values():
            yield from objects(v, seen)
    elif isinstance(value, list):
        seen.add(id(value))
        for v in value:
            yield from objects(v, seen)


def size(obj: t7.TorchObject) -> int:
    """How many torch objects ``obj`` holds (itself included)."""
    return sum(1 for _ in objects(obj, set()))


@pytest.fixture(scope="module")
def lua_classes() -> tuple[dict[str, dict[str, set[str]]], dict[str, t7.TorchObject]]:
    """Per class with a converter: the kinds Lua gave each field in any fixture, and its smallest instance."""
    kinds: dict[str, dict[str, set[str]]] = collections.defaultdict(lambda: collections.defaultdict(set))
    smallest: dict[str, tuple[int, t7.TorchObject]] = {}
    for name in fixture_files():
        for obj in objects(t7.load(REFERENCE_DIR / name), set()):
            if obj.typename not in REGISTRY:
                continue  # nngraph's graph.Node / graph.Edge are parts of a gModule, not modules
            for key, value in obj.fields.items():
                kinds[obj.typename][key].add(kind(value))
            n = size(obj)
            if obj.typename not in smallest or n < smallest[obj.typename][0]:
                smallest[obj.typename] = (n, obj)
    return kinds, {name: obj for name, (_, obj) in smallest.items()}


def test_exported_fields_have_a_kind_lua_gave_them(lua_classes):
    kinds, instances = lua_classes
    assert len(instances) >= 100  # the fixtures hold this many classes that have a converter
    assert {"nn.MaskedSelect", "nn.SeqLSTM", "nn.Index", "nn.gModule", "nn.ClassNLLCriterion"} <= set(instances)
    wrong = []
    for typename, obj in sorted(instances.items()):
        exported = to_lua(from_lua(obj))
        assert exported.typename == typename
        for key, value in exported.fields.items():
            lua_kinds = kinds[typename].get(key)
            if lua_kinds is not None and kind(value) not in lua_kinds:
                wrong.append(f"{typename}.{key}: exported as a {kind(value)}, Lua has a {' or '.join(sorted(lua_kinds))}")
    assert not wrong, "\n".join(wrong)


def test_masked_select_and_seqlstm_export_the_constructor_layout(lua_classes):
    """The two fields that were wrong: MaskedSelect's gradInput (a tensor in Lua: ``:double()`` failed with
    'attempt to call method type') and SeqLSTM's gradInput ({grad_c0, grad_h0, grad_x} of its __init)."""
    _, instances = lua_classes
    masked = to_lua(from_lua(instances["nn.MaskedSelect"]))
    assert isinstance(masked.gradInput, torch.Tensor)
    assert masked._maskIndices.dtype == torch.int64 and masked._gradMask.dtype == torch.uint8
    lstm = to_lua(from_lua(instances["nn.SeqLSTM"]))
    assert isinstance(lstm.gradInput, t7.LuaList)
    assert [id(t) for t in lstm.gradInput] == [id(lstm.grad_c0), id(lstm.grad_h0), id(lstm.grad_x)]


@pytest.mark.parametrize("case", ["resnet_cifar10_d20_A", "preresnet_cifar10_d20", "densenet_cifar10_d40_k12_nobc_om2",
                                  "densenet_cifar10_d100_k12_bc_om4"])
def test_natively_built_models_export_fields_lua_gave(case, lua_classes):
    """The models this port builds itself (models/*.py, torch.nn layers) export through their own to_lua and the
    torch.nn exporters: every object of the tree, checked the same way."""
    import models
    kinds, _ = lua_classes
    manifest = json.loads(require(REFERENCE_DIR / case / "manifest.json").read_text())
    flags = manifest.get("flags") or manifest["command_line"].split()
    model = models.create(opts.parse([str(f) for f in flags], check_dirs=False))
    wrong, checked = [], 0
    for obj in objects(to_lua(model), set()):
        for key, value in obj.fields.items():
            lua_kinds = kinds.get(obj.typename, {}).get(key)
            if lua_kinds is not None:
                checked += 1
                if kind(value) not in lua_kinds:
                    wrong.append(f"{obj.typename}.{key}: exported as a {kind(value)}, Lua has a "
                                 f"{' or '.join(sorted(lua_kinds))}")
    assert checked > 100 and not wrong, "\n".join(wrong)
