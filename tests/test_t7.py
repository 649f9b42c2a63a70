"""The .t7 reader and writer against files written by Lua's own torch.save (t7-format fixtures).

``expected.json`` (made with the real Lua ``torch.load``) describes what each file holds; the
matcher below walks that description and the loaded Python object side by side.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import fbresnet_port
from conftest import MODEL_CASES, REFERENCE_DIR, reference
from fbresnet_port import t7

FORMAT_DIR = REFERENCE_DIR / "t7-format"


def _expected() -> dict:
    path = FORMAT_DIR / "expected.json"
    return json.loads(path.read_text())["files"] if path.exists() else {}


EXPECTED = _expected()
GOOD_FILES = sorted(k for k, v in EXPECTED.items() if not v["must_fail"])
BAD_FILES = sorted(k for k, v in EXPECTED.items() if v["must_fail"])
if not EXPECTED:  # fixtures missing: one test that reports it (fails under CI)
    GOOD_FILES = BAD_FILES = ["expected.json"]

DTYPES = {"uint8": torch.uint8, "int8": torch.int8, "int16": torch.int16, "int32": torch.int32,
          "int64": torch.int64, "float32": torch.float32, "float64": torch.float64, "float16": torch.float16}


# ------------------------------------------------------------------------------------------
# A matcher: expected.json node  <->  loaded Python object
# ------------------------------------------------------------------------------------------
class Matcher:
    def __init__(self):
        self.ids: dict[int, object] = {}

    def number(self, want, got, where):
        assert isinstance(got, (int, float)) and not isinstance(got, bool), f"{where}: {got!r} is no number"
        if want == "nan":
            assert math.isnan(got), where
        elif want in ("inf", "-inf"):
            assert got == float(want), where
        elif want == "-0.0":
            assert got == 0 and math.copysign(1.0, got) < 0, f"{where}: -0.0 lost its sign"
        else:
            assert got == want, f"{where}: {got!r} != {want!r}"

    def values(self, want, got: torch.Tensor, where):
        flat_want = np.array(_flatten(want), dtype=object)
        flat_got = got.reshape(-1).tolist() if got.numel() else []
        assert len(flat_got) == len(flat_want), where
        for i, (w, g) in enumerate(zip(flat_want, flat_got)):
            self.number(w, float(g) if isinstance(w, str) else g, f"{where}[{i}]")

    def storage_key(self, t: torch.Tensor):
        return ("storage", t.untyped_storage().data_ptr())

    def match(self, node, got, where="$"):
        kind = node["t"]
        if kind == "ref":
            target = self.ids[node["id"]]
            if isinstance(target, tuple):  # a storage: compare the memory
                key = self.storage_key(got.tensor if isinstance(got, t7.Storage) else got)
                assert key == target, f"{where}: storage not shared"
            else:
                assert got is target, f"{where}: not the same object as #{node['id']}"
            return
        if kind == "nil":
            assert got is None, where
        elif kind == "boolean":
            assert got is node["v"], where
        elif kind == "number":
            self.number(node["v"], got, where)
        elif kind == "string":
            raw = got.encode("utf-8") if isinstance(got, str) else got
            assert isinstance(raw, bytes) and raw.hex() == node["hex"], f"{where}: {got!r}"
            if "utf8" not in node:
                assert isinstance(got, bytes), f"{where}: invalid UTF-8 must stay bytes"
        elif kind == "table":
            if "id" in node:
                self.ids[node["id"]] = got
            self.table(node, got, where)
        elif kind == "tensor":
            self.ids[node["id"]] = got
            assert isinstance(got, torch.Tensor), f"{where}: {type(got)}"
            assert t7.typename_of(got) == node["class"], where
            assert got.dtype == DTYPES[node["dtype"]], where
            shape = node["shape"] if node["ndim"] else [0]
            assert list(got.shape) == shape, f"{where}: shape {list(got.shape)} != {shape}"
            if node["ndim"] and got.numel():
                assert list(got.stride()) == node["stride"], where
                assert got.storage_offset() == node["storage_offset"], where
            self.values(node["values"], got, where)
            if node["storage"] is not None:
                st = node["storage"]
                if st["t"] == "ref":
                    self.match(st, got, where + ":storage")
                else:
                    self.ids[st["id"]] = self.storage_key(got)
                    assert got.untyped_storage().nbytes() == st["size"] * got.element_size(), where
        elif kind == "storage":
            assert isinstance(got, t7.Storage), f"{where}: {type(got)}"
            self.ids[node["id"]] = self.storage_key(got.tensor)
            assert got.typename == node["class"] and len(got) == node["size"], where
            assert got.tensor.dtype == DTYPES[node["dtype"]]
            if node.get("values") is not None:
                self.values(node["values"], got.tensor, where)
        elif kind == "object":
            self.ids[node["id"]] = got
            assert isinstance(got, t7.TorchObject), f"{where}: {type(got)}"
            assert got.typename == node["class"] and got.version == node["version"], where
            self.match(node["fields"], got.fields, where + ".fields")
        elif kind == "function":
            self.ids[node["id"]] = got
            assert isinstance(got, t7.LuaFunction), where
            assert got.bytecode.hex() == node["bytecode_hex"], where
            ups = got.upvalues if node["upvalues"] else (got.upvalues or [])
            assert len(ups) == len(node["upvalues"]), where
            for i, (w, g) in enumerate(zip(node["upvalues"], ups)):
                assert g["name"] == w["name"] and g["id"] == w["upvalue_id"], where
                if w["value"]["t"] != "nil":
                    self.match(w["value"], g["value"], f"{where}:upvalue.{w['name']}")
                else:
                    assert g.get("value") is None
        else:
            raise AssertionError(f"unknown node kind {kind}")

    def table(self, node, got, where):
        if node.get("array_like", False) and node["size"] > 0:
            assert isinstance(got, t7.LuaList), f"{where}: a list-like table must load as LuaList"
            assert len(got) == node["size"], where
            for k, v in node["entries"]:
                self.match(v, got[k["v"] - 1], f"{where}[{k['v']}]")
            return
        assert isinstance(got, t7.LuaTable), f"{where}: {type(got)}"
        assert len(got) == node["size"], f"{where}: {len(got)} entries, expected {node['size']}"
        for k, v in node["entries"]:
            key = self.key(k, got, where)
            self.match(v, got[key], f"{where}.{key!r}")

    def key(self, k, table, where):
        kind = k["t"]
        if kind == "number":
            v = k["v"]
            key = float(v) if isinstance(v, str) else v
        elif kind == "string":
            raw = bytes.fromhex(k["hex"])
            key = raw.decode() if "utf8" in k else raw
        elif kind == "boolean":
            key = t7.BoolKey(k["v"])
        else:  # a table/object as a key: find it by identity or structure
            for cand in table:
                if isinstance(cand, t7.IdKey):
                    saved = dict(self.ids)
                    try:
                        self.match(k, cand.obj, where + "<key>")
                        return cand
                    except (AssertionError, KeyError):
                        self.ids = saved
            raise AssertionError(f"{where}: no table key matching {k}")
        assert key in table, f"{where}: key {key!r} missing"
        return key


def _flatten(v):
    if isinstance(v, list):
        return [x for item in v for x in _flatten(item)]
    return [v]


# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GOOD_FILES)
def test_load_matches_lua_description(name):
    path = reference("t7-format", name)
    entry = EXPECTED[name]
    obj = t7.load(path)
    Matcher().match(entry["root"], obj)


@pytest.mark.parametrize("name", GOOD_FILES)
def test_save_then_load_round_trip(name, tmp_path):
    path = reference("t7-format", name)
    obj = t7.load(path)
    out = tmp_path / "copy.t7"
    t7.save(out, obj)
    Matcher().match(EXPECTED[name]["root"], t7.load(out))


@pytest.mark.parametrize("name", GOOD_FILES)
def test_writer_reproduces_lua_bytes(name):
    """Writing back what was read gives the bytes Lua's torch.save wrote (binary, 4-byte longs, ASCII)."""
    path = reference("t7-format", name)
    entry = EXPECTED[name]
    data = t7.dumps(t7.load(path), long_size=entry.get("long_size", 8), ascii=entry["mode"] == "ascii")
    assert data == path.read_bytes()


@pytest.mark.parametrize("name", GOOD_FILES)
def test_save_ascii_then_load_round_trip(name, tmp_path):
    obj = t7.load(reference("t7-format", name))
    out = tmp_path / "copy.t7"
    fbresnet_port.save(out, obj, ascii=True)
    assert out.read_bytes()[:2] in (b"3\n", b"4\n")  # a table or a torch object, in ASCII
    Matcher().match(EXPECTED[name]["root"], t7.load(out))


@pytest.mark.parametrize("name", BAD_FILES)
def test_corrupt_file_rejected_clearly(name):
    path = reference("t7-format", name)
    with pytest.raises(t7.T7FormatError) as err:
        t7.load(path)
    msg = str(err.value)
    assert str(path) in msg and "byte " in msg, msg


def test_ascii_and_binary_agree():
    a = t7.load(reference("t7-format", "types_ascii.t7"))
    b = t7.load(reference("t7-format", "types_binary.t7"))
    assert set(a) == set(b)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key].nan_to_num(), b[key].nan_to_num()), key


def test_long4_file_reads_like_long8():
    a = t7.load(reference("t7-format", "long4_binary.t7"))
    b = t7.load(reference("t7-format", "long4_as_long8_binary.t7"))
    Matcher().match(EXPECTED["long4_as_long8_binary.t7"]["root"], a)
    assert set(a) == set(b)
    # explicit long size works too, and writing 4-byte longs is read back by Lua's 'b32' layout
    assert set(t7.load(reference("t7-format", "long4_binary.t7"), long_size=4)) == set(a)


def test_write_long4_round_trip(tmp_path):
    obj = {"x": torch.arange(6, dtype=torch.int64).view(2, 3), "n": 3}
    t7.save(tmp_path / "a.t7", obj, long_size=4)
    back = t7.load(tmp_path / "a.t7", long_size=4)
    assert torch.equal(back["x"], obj["x"]) and back["n"] == 3


def test_views_share_memory_after_loading():
    obj = t7.load(reference("t7-format", "types_binary.t7"))
    a, b, st = obj["shared_a"], obj["shared_b"], obj["shared_storage"]
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() == st.tensor.data_ptr()
    st.tensor.fill_(-7)  # writing through the storage is seen through both views
    assert (a == -7).all() and (b == -7).all()


def test_same_tensor_loaded_once():
    obj = t7.load(reference("t7-format", "types_binary.t7"))
    assert obj["same_1"] is obj["same_2"] is obj["seq"][1]


def test_cycles_and_identity_preserved():
    obj = t7.load(reference("t7-format", "lua_values_binary.t7"))
    assert obj["self_ref"]["self"] is obj["self_ref"]
    loop = obj["loop"]  # a list whose element points back at the list
    assert isinstance(loop, t7.LuaList) and loop[0]["up"] is loop
    back = t7.load_bytes(t7.dumps(obj))  # writing a cyclic graph terminates; identity survives
    assert back["self_ref"]["self"] is back["self_ref"] and back["loop"][0]["up"] is back["loop"]


def test_writer_shares_storages_and_objects(tmp_path):
    base = torch.arange(12, dtype=torch.float32)
    view = base.view(3, 4).t()
    nested = t7.LuaTable({"a": 1})
    obj = {"base": base, "view": view, "again": base, "n1": nested, "n2": nested,
           "lst": [1, 2, 3], "empty": {}, "flag": True, "s": b"\xff\x00"}
    t7.save(tmp_path / "x.t7", obj)
    back = t7.load(tmp_path / "x.t7")
    assert back["base"] is back["again"]
    assert back["view"].untyped_storage().data_ptr() == back["base"].untyped_storage().data_ptr()
    assert torch.equal(back["view"], view) and back["view"].stride() == (1, 4)
    assert back["n1"] is back["n2"]
    assert back["lst"] == [1, 2, 3] and isinstance(back["lst"], t7.LuaList)
    assert isinstance(back["empty"], t7.LuaTable) and len(back["empty"]) == 0
    assert back["flag"] is True and back["s"] == b"\xff\x00"


def test_binary_layout_of_a_number_is_lua_layout():
    # hand-assembled: type code 1 (number) followed by the float64 value, little-endian
    assert t7.dumps(2.5) == struct.pack("<id", 1, 2.5)
    # a string: type code 2, int32 length, raw bytes
    assert t7.dumps("ab") == struct.pack("<ii", 2, 2) + b"ab"
    # a FloatTensor of 2 elements (object index 1, "V 1", class name, ndim, size, stride, offset+1,
    # then its storage object, index 2)
    data = t7.dumps(torch.tensor([1.0, 2.0]))
    expect = (struct.pack("<ii", 4, 1) + struct.pack("<i", 3) + b"V 1" + struct.pack("<i", 17)
              + b"torch.FloatTensor" + struct.pack("<iqqq", 1, 2, 1, 1)
              + struct.pack("<ii", 4, 2) + struct.pack("<i", 3) + b"V 1" + struct.pack("<i", 18)
              + b"torch.FloatStorage" + struct.pack("<q", 2) + struct.pack("<ff", 1.0, 2.0))
    assert data == expect


def test_cuda_class_names_load_as_cpu_and_round_trip(tmp_path):
    obj = t7.load(reference("t7-format", "cuda_types.t7"))
    names = set()

    def walk(x, seen=set()):
        if id(x) in seen:
            return
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            names.add(t7.typename_of(x))
            assert x.device.type == "cpu"
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, t7.TorchObject):
            walk(x.fields)

    walk(obj)
    assert "torch.CudaTensor" in names
    t7.save(tmp_path / "c.t7", obj)
    Matcher().match(EXPECTED["cuda_types.t7"]["root"], t7.load(tmp_path / "c.t7"))


def test_as_typename_writes_cuda_tensor(tmp_path):
    t7.save(tmp_path / "d.t7", {"dfdx": t7.as_typename(torch.ones(3), "torch.CudaTensor")})
    back = t7.load(tmp_path / "d.t7")
    assert t7.typename_of(back["dfdx"]) == "torch.CudaTensor"
    with pytest.raises(ValueError):
        t7.as_typename(torch.ones(3, dtype=torch.float64), "torch.CudaTensor")


def test_random_corruptions_never_crash(tmp_path):
    """Flip bytes of a real file: the reader either loads something or raises T7FormatError."""
    data = bytearray(reference("t7-format", "types_binary.t7").read_bytes())
    rng = np.random.default_rng(0)
    for i in range(150):
        bad = bytearray(data)
        for pos in rng.integers(0, len(bad), size=3):
            bad[pos] = int(rng.integers(0, 256))
        cut = bad[: int(rng.integers(1, len(bad)))] if i % 3 == 0 else bad
        try:
            t7.load_bytes(bytes(cut))
        except t7.T7FormatError:
            pass


def test_missing_file_error_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.t7"):
        t7.load(tmp_path / "nope.t7")


def test_save_is_atomic(tmp_path):
    target = tmp_path / "latest.t7"
    t7.save(target, {"epoch": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        t7.save(target, {"epoch": 2, "bad": Boom()})
    assert t7.load(target) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["latest.t7"]


@pytest.mark.parametrize("name", [n for n in GOOD_FILES if EXPECTED.get(n, {}).get("mode") == "binary"
                                  and EXPECTED[n].get("long_size", 8) == 8])
def test_cross_check_with_torchfile(name):
    """Every binary file torchfile can read gives the same tensors and class names as ours."""
    torchfile = pytest.importorskip("torchfile")
    path = reference("t7-format", name)
    try:
        theirs = torchfile.load(str(path), utf8_decode_strings=True)
    except Exception as e:  # torchfile's known gaps (Half, CudaHalf/Long, list heuristics)
        pytest.skip(f"torchfile cannot read {name}: {type(e).__name__}")
    ours = t7.load(path)
    _compare_torchfile(ours, theirs, "$", set())


def _compare_torchfile(ours, theirs, where, seen):
    if id(ours) in seen:
        return
    seen.add(id(ours))
    if isinstance(ours, torch.Tensor):
        arr = np.asarray(theirs)
        assert list(ours.shape) == list(arr.shape) or (ours.numel() == 0 and arr.size == 0), where
        if ours.numel():
            np.testing.assert_array_equal(ours.numpy(), arr, err_msg=where)
    elif isinstance(ours, t7.TorchObject):
        assert ours.typename == theirs._typename.decode() if isinstance(theirs._typename, bytes) \
            else ours.typename == theirs._typename, where
        _compare_torchfile(ours.fields, theirs._obj, where, seen)
    elif isinstance(ours, dict):
        for k, v in ours.items():
            if isinstance(k, (t7.BoolKey, t7.IdKey)):
                continue
            tk = k
            if tk not in theirs and isinstance(k, str) and k.encode() in theirs:
                tk = k.encode()
            if tk in theirs:
                _compare_torchfile(v, theirs[tk], f"{where}.{k}", seen)
    elif isinstance(ours, list):
        items = list(theirs.values()) if isinstance(theirs, dict) else list(theirs)
        assert len(items) == len(ours), where
        for i, (a, b) in enumerate(zip(ours, items)):
            _compare_torchfile(a, b, f"{where}[{i}]", seen)
    elif isinstance(ours, float) and math.isnan(ours):
        assert math.isnan(theirs), where
    elif isinstance(ours, (int, float)) and not isinstance(ours, bool):
        assert float(ours) == float(theirs), where


@pytest.mark.parametrize("case", [c for c in MODEL_CASES if "d121" not in c])
def test_cross_check_models_with_torchfile(case):
    """The Lua model fixtures: every tensor and class name agrees with torchfile's reading."""
    torchfile = pytest.importorskip("torchfile")
    path = reference(case, "model.t7")
    _compare_torchfile(t7.load(path), torchfile.load(str(path), utf8_decode_strings=True), "$", set())


def test_model_fixtures_load():
    """Every Lua model fixture (a DenseNet checkpoint among them) loads as an nn tree."""
    model = t7.load(reference("densenet_cifar10_d100_k12_bc_om4", "model.t7"))
    assert model.typename == "nn.Sequential"
    custom = [m for m in model.modules if m.typename == "nn.DenseConnectLayerCustom"]
    assert custom, "optMemory 4 model has custom dense layers"
    assert isinstance(custom[0].opt, t7.LuaTable) and custom[0].opt["optMemory"] == 4
