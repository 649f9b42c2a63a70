"""What ``t7.load`` says about files that are not (whole) Torch7 files, and the writer's Lua-compatibility
rules: empty tensors, NaN keys, 4-byte longs, the ASCII format.

Truncation: every prefix of several Lua-written fixtures must raise (never load as another object,
e.g. through the 4-byte-long fallback). File formats: real files made by torch / numpy / gzip / tarfile /
zipfile, or the documented signatures (HDF5, Git LFS pointer spec).
"""
from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import tarfile
import warnings
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

import fbresnet_port
from conftest import reference
from fbresnet_port import t7
from fbresnet_port.errors import UserError


# ------------------------------------------------------------------------------------------
# Files of other formats
# ------------------------------------------------------------------------------------------

def _torch_zip(path):
    torch.save({"w": torch.ones(2)}, path)


def _torch_legacy(path):
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)


def _torchscript(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        torch.jit.script(nn.Linear(2, 2)).save(str(path))


def _pickle(path):
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4))


def _npy(path):
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))


def _npz(path):
    with open(path, "wb") as f:
        np.savez(f, a=np.zeros(3), b=np.ones(2))


def _hdf5(path):  # the HDF5 format signature (HDF5 spec, superblock), then a version-0 superblock start
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(56))


def _lfs(path):  # https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md
    path.write_text("version https://git-lfs.github.com/spec/v1\n"
                    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")


def _gzip(path):
    path.write_bytes(gzip.compress(t7.dumps({"a": torch.ones(2)})))


def _tar(path):
    with tarfile.open(path, "w") as tar:
        data = t7.dumps({"a": 1})
        info = tarfile.TarInfo("model.t7")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model.t7", t7.dumps({"a": 1}))


def _html(path):
    path.write_text("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n")


def _text(path):
    path.write_text("require 'nn'\nlocal model = nn.Sequential()\n")


def _csv(path):  # starts with a digit, like ASCII .t7 files, but is no type code line
    path.write_text("12,3,4\n5,6,7\n")


def _empty(path):
    path.write_bytes(b"")


FORMATS = [
    (_torch_zip, "PyTorch checkpoint (zip format"), (_torch_legacy, "legacy (pre-1.6) format"),
    (_torchscript, "torch.jit.load"), (_pickle, "Python pickle"), (_npy, "NumPy .npy"),
    (_npz, "NumPy .npz"), (_hdf5, "HDF5"), (_lfs, "git lfs pull"), (_gzip, "gzip"), (_tar, "tar archive"),
    (_zip, "ZIP archive (1 members: model.t7)"), (_html, "HTML page"), (_text, "text file (starting \"require 'nn'\")"),
    (_csv, "text file"), (_empty, "empty (0 bytes)"),
]


@pytest.mark.parametrize("make, says", FORMATS, ids=[m.__name__.strip("_") for m, _ in FORMATS])
def test_other_formats_are_named(make, says, tmp_path):
    path = tmp_path / "model.t7"
    make(path)
    with pytest.raises(t7.NotT7FileError) as err:
        t7.load(path)
    msg = str(err.value)
    assert says in msg and str(path) in msg, msg
    assert isinstance(err.value, t7.T7FormatError) and isinstance(err.value, UserError)
    with pytest.raises(t7.NotT7FileError):  # the same from memory
        t7.load_bytes(path.read_bytes())


def test_torch_checkpoints_say_use_torch_load(tmp_path):
    for make in (_torch_zip, _torch_legacy):
        make(tmp_path / "x.pt")
        with pytest.raises(t7.NotT7FileError, match=r"torch\.load\(path\)"):
            fbresnet_port.load(tmp_path / "x.pt")


def test_t7_files_are_not_mistaken_for_other_formats():
    assert t7.load(reference("t7-format", "types_ascii.t7"))  # ASCII: "3\n1\n..."
    assert t7.load_bytes(t7.dumps(None)) is None  # binary: type code 0 (nil)
    assert t7.load_bytes(t7.dumps(8.0)) == 8
    assert t7.load_bytes(t7.dumps("x", ascii=True)) == "x"  # ASCII: "2\n1\nx\n"


# ------------------------------------------------------------------------------------------
# Truncated files
# ------------------------------------------------------------------------------------------

def _assert_every_prefix_fails(data: bytes, long_size=None, points=None) -> None:
    for n in (range(len(data)) if points is None else points):
        try:
            got = t7.load_bytes(data[:n], name=f"<{n} bytes>", long_size=long_size)
        except t7.T7FormatError as e:
            assert n == 0 or isinstance(e, t7.T7TruncatedError), f"cut at {n}: {e}"
        else:
            pytest.fail(f"the first {n} of {len(data)} bytes loaded as {got!r:.80}")


@pytest.mark.parametrize("parts, long_size", [
    (("t7-format", "custom_class.t7"), None),
    (("t7-format", "nn_model_input.t7"), None),
    (("t7-format", "long4_binary.t7"), None),
    (("t7-format", "long4_binary.t7"), 4),
    (("t7-format-tds", "hash_nested.t7"), None),
    (("t7-format-tds", "table_with_tds.t7"), None),
    (("t7-format-tds", "hash_num_str_keys.t7"), None),
    (("t7-format-tds", "vec_mixed.t7"), None),
], ids=lambda p: "-".join(p) if isinstance(p, tuple) else str(p))
def test_every_truncation_point_of_lua_files_raises(parts, long_size):
    _assert_every_prefix_fails(reference(*parts).read_bytes(), long_size)


def test_truncated_ascii_never_reads_a_shorter_number():
    """ASCII: a number cut at the end of the data ("44" -> "4") is truncation, not another value."""
    data = reference("t7-format", "types_ascii.t7").read_bytes()
    cut_in_index = data.index(b"cube\n4\n44\n") + len(b"cube\n4\n4")  # object index 44 cut to 4: a back-reference
    points = list(range(700)) + list(range(cut_in_index - 10, cut_in_index + 10)) + list(range(len(data) - 40, len(data)))
    _assert_every_prefix_fails(data, points=points)
    # an ASCII file written here from a Lua object, every cut
    _assert_every_prefix_fails(t7.dumps(t7.load(reference("t7-format", "custom_class.t7")), ascii=True))


def test_truncated_tensor_does_not_load_with_4_byte_longs():
    """A 2x3 tensor cut after its sizes used to load as an empty 2x0 tensor read with 4-byte longs."""
    data = t7.dumps(torch.zeros(2, 3))
    _assert_every_prefix_fails(data)
    with pytest.raises(t7.T7TruncatedError, match="long_size=4"):
        t7.load_bytes(data[:64])  # 64 bytes parse completely with 4-byte longs: the user decides


def test_real_4_byte_long_file_still_loads_by_default():
    a = t7.load(reference("t7-format", "long4_binary.t7"))
    b = t7.load(reference("t7-format", "long4_as_long8_binary.t7"))
    assert set(a) == set(b) and torch.equal(a["matrix"], b["matrix"])


# ------------------------------------------------------------------------------------------
# Writer: empty tensors, NaN keys, 4-byte longs
# ------------------------------------------------------------------------------------------

def _str(b: bytes) -> bytes:
    return struct.pack("<i", len(b)) + b


def _empty_tensor_bytes(index: int, typename: bytes) -> bytes:
    """Lua's torch.Tensor() as torch.save writes it (Tensor.c write): nDimension 0, no sizes or strides,
    storageOffset + 1 = 1, and a nil storage."""
    return struct.pack("<ii", 4, index) + _str(b"V 1") + _str(typename) + struct.pack("<iqi", 0, 1, 0)


@pytest.mark.parametrize("empty", [torch.empty(0), torch.zeros(0, 3), torch.ones(4, 0, 2), torch.tensor([])])
def test_empty_tensor_written_as_lua_writes_it(empty):
    assert t7.dumps(empty) == _empty_tensor_bytes(1, b"torch.FloatTensor")


def test_distinct_empty_tensors_stay_distinct():
    """Empty tensors of different types in one file: each its own object, none sharing a storage."""
    obj = t7.LuaList([torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64), torch.empty(2, 0, dtype=torch.float64),
                      torch.empty(0, dtype=torch.uint8)])
    data = t7.dumps(obj)
    expect = struct.pack("<iii", 3, 1, 4) + b"".join(
        struct.pack("<id", 1, i + 1) + _empty_tensor_bytes(i + 2, name) for i, name in enumerate(
            [b"torch.FloatTensor", b"torch.LongTensor", b"torch.DoubleTensor", b"torch.ByteTensor"]))
    assert data == expect
    back = t7.load_bytes(data)
    assert [t.dtype for t in back] == [torch.float32, torch.int64, torch.float64, torch.uint8]


def test_empty_storage_objects_keep_their_identity():
    a, b = t7.Storage(torch.empty(0)), t7.Storage(torch.empty(0, dtype=torch.int64), "torch.LongStorage")
    back = t7.load_bytes(t7.dumps(t7.LuaList([a, b, a])))
    assert back[0] is back[2] and back[0] is not back[1]
    assert (back[0].typename, back[1].typename) == ("torch.FloatStorage", "torch.LongStorage")
    assert len(back[0]) == len(back[1]) == 0


def test_empty_view_of_a_storage_keeps_the_storage():
    """As Lua writes an empty tensor that still references a storage (types_binary 'empty_with_storage')."""
    base = torch.arange(3.0, dtype=torch.float64)
    back = t7.load_bytes(t7.dumps({"e": base[3:], "base": base}))
    assert back["e"].numel() == 0
    assert back["e"].untyped_storage().data_ptr() == back["base"].untyped_storage().data_ptr()


@pytest.mark.parametrize("key", [float("nan"), np.float32("nan")])
def test_nan_table_key_refused(key):
    with pytest.raises(t7.T7WriteError, match="NaN"):
        t7.dumps({key: 1})
    with pytest.raises(t7.T7WriteError):
        t7.dumps({"inner": t7.LuaTable({key: 1})})


@pytest.mark.parametrize("obj, what", [
    (torch.tensor([1, 2**31]), "2147483648"),
    (torch.tensor([-2**31 - 1]), "-2147483649"),
    (t7.Storage(torch.tensor([2**40]), "torch.LongStorage"), "1099511627776"),
    (torch.as_strided(torch.zeros(2), (1,), (2**32,)), "4294967296"),
])
def test_long_beyond_int32_refused_with_long_size_4(obj, what):
    with pytest.raises(t7.T7WriteError, match=what):
        t7.dumps(obj, long_size=4)
    t7.dumps(obj)  # fine with 8-byte longs


def test_int32_extremes_fit_long_size_4():
    x = torch.tensor([2**31 - 1, -2**31, 0])
    assert torch.equal(t7.load_bytes(t7.dumps(x, long_size=4), long_size=4), x)


@pytest.mark.parametrize("obj, value, where", [
    (2**53 + 1, "9007199254740993", "in the saved object"),
    ({"a": [1, {"b c": -(2**53 + 1)}]}, "-9007199254740993", "at .a[2]['b c'] of"),
    (t7.TorchObject("nn.Linear", {"n": np.int64(2**62 + 1)}), "4611686018427387905", "at .n of"),
    ({"x": 2**1100}, "135829852904... (332 digits)", "at .x of"),  # beyond the double range
    ({"t": {2**53 + 1: 1}}, "table key 9007199254740993", "at .t of"),
    (t7.TdsVec([1, 2**60 + 1]), "1152921504606846977", "at [2] of"),
])
def test_integer_a_double_cannot_hold_is_refused(obj, value, where):
    """Lua numbers are doubles: 2^53 + 1 would be read back as 2^53, so it is refused, naming value and path."""
    for ascii in (False, True):
        with pytest.raises(t7.T7WriteError) as err:
            t7.dumps(obj, ascii=ascii)
        assert value in str(err.value) and where in str(err.value) and "2^53" in str(err.value)


def test_integers_a_double_holds_exactly_are_written():
    values = {"max": 2**53, "min": -2**53, "pow": 2**60, "np": np.int64(-2**62), "small": 7}
    back = t7.load_bytes(t7.dumps(values))
    assert back == {k: int(v) for k, v in values.items()} and all(type(v) is int for v in back.values())


# ------------------------------------------------------------------------------------------
# ASCII writer
# ------------------------------------------------------------------------------------------

def test_ascii_layout_by_hand():
    """DiskFile ASCII: one line per write call; doubles %.17g, floats %.9g, strings raw + newline."""
    obj = t7.LuaList([0.1, torch.tensor([1.5, -0.25], dtype=torch.float32), "ab", True])
    expect = (b"3\n1\n4\n"
              b"1\n1\n1\n0.10000000000000001\n"
              b"1\n2\n4\n2\n3\nV 1\n17\ntorch.FloatTensor\n1\n2\n1\n1\n4\n3\n3\nV 1\n18\ntorch.FloatStorage\n2\n1.5 -0.25\n"
              b"1\n3\n2\n2\nab\n"
              b"1\n4\n5\n1\n")
    assert t7.dumps(obj, ascii=True) == expect


def test_ascii_special_numbers_round_trip(tmp_path):
    neg_nan = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000000))[0]
    values = torch.tensor([math.inf, -math.inf, 0.0, -0.0, 1e-310, 3.4028234663852886e38])
    obj = {"d": values.double(), "f": values.float(), "h": torch.tensor([65504.0, -0.0], dtype=torch.float16),
           "n": neg_nan, "big": 2.0**53, "neg0": -0.0, "i": torch.tensor([-7, 2**40]), "b": torch.tensor([0, 255],
                                                                                                   dtype=torch.uint8)}
    fbresnet_port.save(tmp_path / "a.t7", obj, ascii=True)
    text = (tmp_path / "a.t7").read_bytes()
    assert b"\n-nan\n" in text and b"\ninf -inf 0 -0 " in text
    back = t7.load(tmp_path / "a.t7")
    for k in ("d", "f", "h", "i", "b"):
        assert back[k].dtype == obj[k].dtype and torch.equal(back[k], obj[k]), k
    assert math.isnan(back["n"]) and math.copysign(1, back["n"]) < 0
    assert back["big"] == 2**53 and math.copysign(1, back["neg0"]) < 0
