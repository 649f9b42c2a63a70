"""tds.Hash / tds.Vec / tds.AtomicCounter in .t7 files (torch/tds ``__write``/``__read`` layouts).

Ground truth: ``t7-format-tds`` files written by the real Lua torch + tds, and ``expected.json``
(what Lua's ``torch.load`` gives for each); the byte layouts below are assembled by hand from
tds's ``hash.lua`` / ``vec.lua`` / ``atomic.lua`` (a long count, then ``writeObject`` of each item).
"""
from __future__ import annotations

import json
import struct

import pytest
import torch

from conftest import REFERENCE_DIR, reference
from fbresnet_port import t7

TDS_DIR = REFERENCE_DIR / "t7-format-tds"


def _entries() -> list[dict]:
    path = TDS_DIR / "expected.json"
    return json.loads(path.read_text())["files"] if path.exists() else [{"file": "expected.json"}]


ENTRIES = {e["file"]: e for e in _entries()}


def _key(k):
    if isinstance(k, dict):
        return float(k["__num"])
    return k


def match(want, got, where="$"):
    """Compare an expected.json content node with the loaded Python value."""
    if want is None:
        assert got is None, where
    elif isinstance(want, bool):
        assert got is want, where
    elif isinstance(want, (int, str)):
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"
    elif "__num" in want:
        assert isinstance(got, float) and got == float(want["__num"]), f"{where}: {got!r} != {want['__num']}"
    elif "__table" in want:
        assert isinstance(got, t7.LuaTable), f"{where}: {type(got).__name__}"
        assert len(got) == len(want["__table"]), where
        for k, v in want["__table"]:
            match(v, got[_key(k)], f"{where}.{k}")
    elif want["__class"] == "tds.Hash":
        assert isinstance(got, t7.TdsHash) and got.typename == "tds.Hash", f"{where}: {type(got).__name__}"
        assert len(got) == want["n"] == len(want["items"]), where
        for k, v in want["items"]:
            match(v, got[_key(k)], f"{where}[{k!r}]")
    elif want["__class"] == "tds.Vec":
        assert isinstance(got, t7.TdsVec) and got.typename == "tds.Vec", f"{where}: {type(got).__name__}"
        assert len(got) == want["n"] == len(want["items"]), where
        for i, (w, g) in enumerate(zip(want["items"], got)):
            match(w, g, f"{where}[{i + 1}]")
    else:  # a tensor
        assert isinstance(got, torch.Tensor) and t7.typename_of(got) == want["__class"], where
        assert list(got.shape) == want["shape"], where
        data = [float(d["__num"]) if isinstance(d, dict) else d for d in want["data"]]
        assert got.reshape(-1).tolist() == data, where


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_tds_fixture_loads_as_lua_describes(name):
    entry = ENTRIES[name]
    obj = t7.load(reference("t7-format-tds", name))
    match(entry["content"], obj)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_tds_written_back_byte_for_byte(name):
    """Saving what was loaded gives Lua's own bytes (same layout, order and object indices)."""
    path = reference("t7-format-tds", name)
    assert t7.dumps(t7.load(path)) == path.read_bytes()


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_tds_ascii_and_long4_round_trip(name, tmp_path):
    obj = t7.load(reference("t7-format-tds", name))
    t7.save(tmp_path / "a.t7", obj, ascii=True)
    match(ENTRIES[name]["content"], t7.load(tmp_path / "a.t7"))
    t7.save(tmp_path / "b.t7", obj, long_size=4)
    match(ENTRIES[name]["content"], t7.load(tmp_path / "b.t7", long_size=4))


def _str(b: bytes) -> bytes:
    return struct.pack("<i", len(b)) + b


def test_vec_layout_by_hand():
    """vec.lua __write: writeLong(#self), then writeObject of every element (nil included)."""
    data = t7.dumps(t7.TdsVec([1.5, None, "a"]))
    expect = (struct.pack("<ii", 4, 1) + _str(b"V 0") + _str(b"tds.Vec") + struct.pack("<q", 3)
              + struct.pack("<id", 1, 1.5) + struct.pack("<i", 0) + struct.pack("<i", 2) + _str(b"a"))
    assert data == expect
    back = t7.load_bytes(data)
    assert isinstance(back, t7.TdsVec) and back == [1.5, None, "a"]


def test_hash_and_counter_layout_by_hand():
    """hash.lua __write: writeLong(#self), then key, value pairs; atomic.lua: writeLong(value)."""
    data = t7.dumps(t7.TdsHash({"k": t7.TdsAtomicCounter(7)}))
    expect = (struct.pack("<ii", 4, 1) + _str(b"V 0") + _str(b"tds.Hash") + struct.pack("<q", 1)
              + struct.pack("<i", 2) + _str(b"k")
              + struct.pack("<ii", 4, 2) + _str(b"V 0") + _str(b"tds.AtomicCounter") + struct.pack("<q", 7))
    assert data == expect
    back = t7.load_bytes(data)
    assert isinstance(back["k"], t7.TdsAtomicCounter) and back["k"].value == 7


def test_shared_and_cyclic_tds_objects_keep_identity():
    vec = t7.TdsVec(["x"])
    h = t7.TdsHash({"a": vec, "b": vec, 3: torch.arange(3.0)})
    h["self"] = h
    root = t7.LuaTable({"h": h, "again": h, "vec": vec})
    back = t7.load_bytes(t7.dumps(root))
    hb = back["h"]
    assert back["again"] is hb and hb["self"] is hb
    assert hb["a"] is hb["b"] is back["vec"] and hb["a"] == ["x"]
    assert torch.equal(hb[3], torch.arange(3.0))


def test_nested_fixture_objects_are_distinct_types():
    obj = t7.load(reference("t7-format-tds", "hash_nested.t7"))
    assert isinstance(obj["sub"], t7.TdsHash) and isinstance(obj["sub"][5], t7.TdsVec)
    assert obj["sub"][5] == ["x", "y"]


@pytest.mark.parametrize("bad, message", [
    (t7.TdsHash({"t": {"a": 1}}), "cannot hold a dict"),
    (t7.TdsVec([[1, 2]]), "cannot hold a list"),
    (t7.TdsHash({True: 1}), "must be a number or a string"),
    (t7.TdsHash({float("nan"): 1}), "NaN"),
])
def test_values_tds_cannot_hold_are_refused(bad, message):
    with pytest.raises(t7.T7WriteError, match=message):
        t7.dumps(bad)
