"""datasets/: every CIFAR source format, the Lua cache layout both ways, ImageNet folder scanning,
and the error paths (missing folder, corrupt archive, no network, empty class, stray image)."""
from __future__ import annotations

import io
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
from conftest import data_file, reference
from datasets import cifar10_gen, cifar100_gen, imagenet, imagenet_gen
from fbresnet_port import opts, t7
from fbresnet_port.errors import UserError


def _opt(**kw):
    return opts.default_options(**kw)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setenv(cifar10_gen.NO_DOWNLOAD_ENV, "1")


@pytest.fixture(scope="module")
def small_archive() -> Path:
    return data_file("cifar-10-small-python.tar.gz")


def _official_batches(archive: Path) -> dict[str, dict]:
    """The archive's pickles read the way torchvision does (independent of datasets/)."""
    out = {}
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            if m.isfile() and ("data_batch" in m.name or "test_batch" in m.name):
                out[Path(m.name).name] = pickle.load(tar.extractfile(m), encoding="latin1")
    return out


def _check_lua_layout(info, n_train: int, n_val: int) -> None:
    assert set(info) == {"train", "val"}
    for split, n in (("train", n_train), ("val", n_val)):
        assert info[split]["data"].dtype == torch.uint8 and info[split]["data"].shape == (n, 3, 32, 32)
        assert info[split]["labels"].dtype == torch.uint8 and info[split]["labels"].shape == (n,)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 sources

def test_cifar10_from_packed_python_archive(tmp_path, small_archive):
    opt = _opt(dataset="cifar10", data=str(small_archive), gen=str(tmp_path / "gen"))
    train = datasets.create(opt, "train")
    assert train.size() == 1000 and datasets.create(opt, "val").size() == 200
    cache = t7.load(tmp_path / "gen" / "cifar10.t7")          # the Lua layout, read back
    _check_lua_layout(cache, 1000, 200)
    assert b"torch.ByteTensor" in (tmp_path / "gen" / "cifar10.t7").read_bytes()
    batches = _official_batches(small_archive)
    b1 = batches["data_batch_1"]
    assert torch.equal(cache["train"]["data"][:200].reshape(200, -1), torch.from_numpy(b1["data"]))
    assert cache["train"]["labels"][:200].tolist() == [lab + 1 for lab in b1["labels"]]   # 1-based
    b5, tb = batches["data_batch_5"], batches["test_batch"]
    assert torch.equal(cache["train"]["data"][800:].reshape(200, -1), torch.from_numpy(b5["data"]))
    assert cache["val"]["labels"].tolist() == [lab + 1 for lab in tb["labels"]]
    sample = train.get(0)
    assert sample["input"].dtype == torch.float32 and sample["target"] == b1["labels"][0] + 1


def test_cifar10_from_extracted_folder_equals_packed(tmp_path, small_archive):
    with tarfile.open(small_archive) as tar:
        tar.extractall(tmp_path / "src", filter="data")
    a = datasets.load_image_info(_opt(dataset="cifar10", data=str(tmp_path / "src"), gen=str(tmp_path / "g1")))
    b = datasets.load_image_info(_opt(dataset="cifar10", data=str(small_archive), gen=str(tmp_path / "g2")))
    c = datasets.load_image_info(_opt(dataset="cifar10", data=str(tmp_path / "src" / "cifar-10-batches-py"),
                                      gen=str(tmp_path / "g3")))
    for split in ("train", "val"):
        for key in ("data", "labels"):
            assert torch.equal(a[split][key], b[split][key]) and torch.equal(c[split][key], b[split][key])


def test_cifar10_from_lua_ascii_t7_batches(tmp_path):
    fixture = reference("t7-format", "ascii_cifar_batch.t7")
    batch = t7.load(fixture)                                    # data 3072 x 20, labels 1 x 20 (0-9)
    tgz = tmp_path / "cifar-10-torch.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name in [f"data_batch_{i}.t7" for i in range(1, 6)] + ["test_batch.t7"]:
            tar.add(fixture, arcname=f"cifar-10-batches-t7/{name}")
    info = datasets.load_image_info(_opt(dataset="cifar10", data=str(tgz), gen=str(tmp_path / "gen")))
    _check_lua_layout(info, 100, 20)
    one = batch["data"].t().contiguous().view(-1, 3, 32, 32)   # cifar10-gen.lua: data:t() ... view
    assert torch.equal(info["train"]["data"][40:60], one)
    assert torch.equal(info["val"]["labels"], (batch["labels"].view(-1) + 1).to(torch.uint8))


def test_cifar10_binary_records(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    expected = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, 3, dtype=np.uint8)
        pixels = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels[:, None], pixels], 1).tobytes())
        expected[name] = (labels, pixels)
    info = datasets.load_image_info(_opt(dataset="cifar10", data=str(tmp_path), gen=str(tmp_path / "gen")))
    labels, pixels = expected["test_batch.bin"]
    assert info["val"]["labels"].tolist() == (labels + 1).tolist()
    assert torch.equal(info["val"]["data"].reshape(3, -1), torch.from_numpy(pixels))


def test_existing_lua_cache_is_used_and_copied(tmp_path):
    data = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([1, 10, 3, 4, 5, 6], dtype=torch.uint8)
    lua_cache = {"train": {"data": data, "labels": labels}, "val": {"data": data[:2], "labels": labels[:2]}}
    gen = tmp_path / "gen"
    gen.mkdir()
    t7.save(gen / "cifar10.t7", lua_cache)
    ds = datasets.create(_opt(dataset="cifar10", gen=str(gen)), "train")      # no -data, no network
    assert torch.equal(ds.data, data) and torch.equal(ds.labels, labels)
    # -data naming a cache somewhere else: checked and copied into -gen
    other = tmp_path / "other"
    info = datasets.load_image_info(_opt(dataset="cifar10", data=str(gen / "cifar10.t7"), gen=str(other)))
    assert (other / "cifar10.t7").read_bytes() == (gen / "cifar10.t7").read_bytes()
    assert torch.equal(info["val"]["data"], data[:2])


def test_cache_round_trip_keeps_lua_types(tmp_path, small_archive):
    opt = _opt(dataset="cifar10", data=str(small_archive), gen=str(tmp_path / "gen"))
    first = datasets.load_image_info(opt)
    t7.save(tmp_path / "copy.t7", first)
    again = t7.load(tmp_path / "copy.t7")
    for split in ("train", "val"):
        for key in ("data", "labels"):
            assert again[split][key].dtype == torch.uint8
            assert torch.equal(again[split][key], first[split][key])
    assert int(again["train"]["labels"].min()) == 1 and int(again["train"]["labels"].max()) == 10


def test_wrong_cache_is_rejected(tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    t7.save(gen / "cifar10.t7", {"train": {"data": torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
                                           "labels": torch.ones(2, dtype=torch.uint8)}})
    with pytest.raises(UserError, match="not a CIFAR-10 cache"):
        datasets.create(_opt(dataset="cifar10", gen=str(gen)), "train")


# ---------------------------------------------------------------------------------------------
# CIFAR-10 errors

def test_missing_data_path(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        datasets.create(_opt(dataset="cifar10", data=str(tmp_path / "nope"), gen=str(tmp_path)), "train")


def test_folder_without_cifar(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no CIFAR-10 data found"):
        datasets.create(_opt(dataset="cifar10", data=str(tmp_path / "empty"), gen=str(tmp_path / "g")), "train")


def test_corrupt_and_truncated_archives(tmp_path, small_archive):
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(b"this is not a tar file at all" * 10)
    with pytest.raises(UserError, match="corrupt"):
        datasets.create(_opt(dataset="cifar10", data=str(bad), gen=str(tmp_path / "g1")), "train")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(small_archive.read_bytes()[:1_000_000])
    with pytest.raises(UserError, match="corrupt"):
        datasets.create(_opt(dataset="cifar10", data=str(cut), gen=str(tmp_path / "g2")), "train")
    assert not (tmp_path / "g2" / "cifar10.t7").exists()


def test_malicious_pickle_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(UserError, match="refusing to load"):
        datasets.create(_opt(dataset="cifar10", data=str(folder), gen=str(tmp_path / "g")), "train")


def test_download_failure_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.delenv(cifar10_gen.NO_DOWNLOAD_ENV)
    gen = tmp_path / "gen"
    opt = _opt(dataset="cifar10", gen=str(gen))
    with pytest.raises(UserError) as e:
        cifar10_gen.exec(opt, gen / "cifar10.t7", url="http://127.0.0.1:9/cifar-10-python.tar.gz")
    msg = str(e.value)
    assert "http://127.0.0.1:9/cifar-10-python.tar.gz" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert str(gen / "cifar-10-python.tar.gz") in msg and "-data" in msg


def test_downloads_can_be_disabled(tmp_path):
    with pytest.raises(UserError, match="downloads are disabled"):
        datasets.create(_opt(dataset="cifar10", gen=str(tmp_path / "gen")), "train")


def test_injected_downloader_is_used(tmp_path, small_archive, monkeypatch):
    monkeypatch.delenv(cifar10_gen.NO_DOWNLOAD_ENV)
    calls = []

    def fake(url, dest):
        calls.append(url)
        shutil.copyfile(small_archive, dest)
    gen = tmp_path / "gen"
    cifar10_gen.exec(_opt(dataset="cifar10", gen=str(gen)), gen / "cifar10.t7", downloader=fake)
    assert calls == [cifar10_gen.CIFAR10.url]
    assert t7.load(gen / "cifar10.t7")["train"]["data"].shape == (1000, 3, 32, 32)


# ---------------------------------------------------------------------------------------------
# CIFAR-100

def _pickle_batch(data: np.ndarray, fine: list[int]) -> bytes:
    return pickle.dumps({"data": data, "fine_labels": fine, "coarse_labels": [0] * len(fine)}, protocol=2)


def test_cifar100_python_and_binary(tmp_path):
    rng = np.random.default_rng(1)
    tr, te = rng.integers(0, 256, (4, 3072), dtype=np.uint8), rng.integers(0, 256, (2, 3072), dtype=np.uint8)
    tgz = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, payload in (("train", _pickle_batch(tr, [0, 99, 5, 7])), ("test", _pickle_batch(te, [42, 1]))):
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    ds = datasets.create(_opt(dataset="cifar100", data=str(tgz), gen=str(tmp_path / "g1")), "train")
    assert ds.labels.tolist() == [1, 100, 6, 8] and torch.equal(ds.data.reshape(4, -1), torch.from_numpy(tr))
    assert ds.MEANSTD["mean"] == (129.3, 124.1, 112.4)
    # cifar-100-binary: coarse byte, fine byte, 3072 pixels; labels = fine + 1
    folder = tmp_path / "bin" / "cifar-100-binary"
    folder.mkdir(parents=True)
    for name, pix, fine in (("train.bin", tr, [3, 4, 5, 6]), ("test.bin", te, [0, 9])):
        rec = np.concatenate([np.full((len(fine), 1), 7, np.uint8), np.array(fine, np.uint8)[:, None], pix], 1)
        (folder / name).write_bytes(rec.tobytes())
    info = datasets.load_image_info(_opt(dataset="cifar100", data=str(tmp_path / "bin"), gen=str(tmp_path / "g2")))
    assert info["train"]["labels"].tolist() == [4, 5, 6, 7] and info["val"]["labels"].tolist() == [1, 10]
    (folder / "test.bin").write_bytes(b"x" * 3075)
    with pytest.raises(UserError, match="exact integer"):
        cifar100_gen.exec(_opt(dataset="cifar100", data=str(tmp_path / "bin")), tmp_path / "g3" / "c.t7")


def test_unknown_dataset():
    with pytest.raises(UserError, match="unknown dataset"):
        datasets.create(_opt(dataset="mnist"), "train")


# ---------------------------------------------------------------------------------------------
# ImageNet

def _img(path: Path, color=(10, 20, 30), mode="RGB", size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(path)


def _imagenet_tree(root: Path) -> Path:
    for split in ("train", "val"):
        for cls in ("b_cls", "a_cls", "B_cls"):
            _img(root / split / cls / "x2.JPEG")
            _img(root / split / cls / "x1.png", (200, 100, 50))
    _img(root / "train" / "a_cls" / "gray.PNG", (128,), mode="L")
    (root / "train" / ".DS_Store").write_bytes(b"")
    (root / "train" / "a_cls" / "notes.txt").write_text("not an image")
    return root


def test_imagenet_cache_layout(tmp_path):
    root = _imagenet_tree(tmp_path / "data")
    opt = _opt(dataset="imagenet", data=str(root), gen=str(tmp_path / "gen"))
    info = datasets.load_image_info(opt)
    assert info["basedir"] == str(root)
    assert list(info["classList"]) == ["B_cls", "a_cls", "b_cls"]           # byte order
    paths = [imagenet_gen.image_path(info["train"], i) for i in range(7)]
    assert paths == ["B_cls/x1.png", "B_cls/x2.JPEG", "a_cls/gray.PNG", "a_cls/x1.png", "a_cls/x2.JPEG",
                     "b_cls/x1.png", "b_cls/x2.JPEG"]
    assert info["train"]["imageClass"].dtype == torch.int64
    assert info["train"]["imageClass"].tolist() == [1, 1, 2, 2, 2, 3, 3]
    ip = info["train"]["imagePath"]
    assert ip.dtype == torch.int8 and ip.shape == (7, len("a_cls/gray.PNG") + 1)   # CharTensor, 0-padded
    assert ip[0, len("B_cls/x1.png"):].eq(0).all()
    assert info["val"]["imageClass"].shape == (6,)
    raw = (tmp_path / "gen" / "imagenet.t7").read_bytes()
    assert b"torch.CharTensor" in raw and b"torch.LongTensor" in raw


def test_imagenet_cache_regenerated_for_other_basedir(tmp_path, capsys):
    root = _imagenet_tree(tmp_path / "data")
    gen = str(tmp_path / "gen")
    datasets.load_image_info(_opt(dataset="imagenet", data=str(root), gen=gen))
    assert capsys.readouterr().err == ""
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    info = datasets.load_image_info(_opt(dataset="imagenet", data=str(moved), gen=gen))
    assert info["basedir"] == str(moved)
    assert capsys.readouterr().err.splitlines() == [
        f"note: -data {moved}: the cache {tmp_path / 'gen' / 'imagenet.t7'} lists the images of {root}; "
        f"rebuilding it"]


def test_imagenet_listing_shows_progress(tmp_path, capsys):
    """One line per tenth of the class folders (here 3: a line per folder), with the images so far:
    train B_cls 2, a_cls 3, b_cls 2 images; val 2 per class (folders in byte order)."""
    root = _imagenet_tree(tmp_path / "data")
    datasets.load_image_info(_opt(dataset="imagenet", data=str(root), gen=str(tmp_path / "gen")))
    progress = [line for line in capsys.readouterr().out.splitlines() if "% of the class folders" in line]
    assert progress == [
        " | val: 33% of the class folders (1/3), 2 images", " | val: 66% of the class folders (2/3), 4 images",
        " | val: 100% of the class folders (3/3), 6 images",
        " | train: 33% of the class folders (1/3), 2 images", " | train: 66% of the class folders (2/3), 5 images",
        " | train: 100% of the class folders (3/3), 7 images"]


def test_imagenet_get_and_preprocess(tmp_path):
    root = _imagenet_tree(tmp_path / "data")
    opt = _opt(dataset="imagenet", data=str(root), gen=str(tmp_path / "gen"))
    train = datasets.create(opt, "train")
    s = train.get(0)                                          # B_cls/x1.png: lossless (200, 100, 50)
    assert s["target"] == 1 and s["input"].shape == (3, 30, 40)
    f = torch.float32
    assert s["input"][:, 0, 0].tolist() == [(torch.tensor(v, dtype=f) * torch.tensor(1 / 255, dtype=f)).item()
                                            for v in (200, 100, 50)]
    gray = train.get(2)["input"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    out = train.preprocess(crop=16)(s["input"], torch.Generator().manual_seed(0))
    assert out.shape == (3, 16, 16)
    val = datasets.create(opt, "val")
    assert val.preprocess(crop=16, scale=20)(val.get(0)["input"]).shape == (3, 16, 16)
    ten = datasets.create(_opt(dataset="imagenet", data=str(root), gen=str(tmp_path / "gen"), tenCrop=True), "val")
    assert ten.preprocess(crop=16, scale=20)(val.get(0)["input"]).shape == (10, 3, 16, 16)


def test_unreadable_image_raises_oserror(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(OSError, match="Error reading"):
        imagenet.load_image(bad)


@pytest.mark.parametrize("missing, message", [("train", "train directory not found"),
                                              ("val", "val directory not found")])
def test_imagenet_missing_folders(tmp_path, missing, message):
    root = _imagenet_tree(tmp_path / "data")
    shutil.rmtree(root / missing)
    with pytest.raises(UserError, match=message):
        datasets.create(_opt(dataset="imagenet", data=str(root), gen=str(tmp_path / "gen")), "train")


def test_imagenet_empty_class(tmp_path):
    root = _imagenet_tree(tmp_path / "data")
    (root / "train" / "c_empty").mkdir()
    with pytest.raises(UserError, match="c_empty"):
        datasets.create(_opt(dataset="imagenet", data=str(root), gen=str(tmp_path / "gen")), "train")


def test_imagenet_image_outside_class(tmp_path):
    root = _imagenet_tree(tmp_path / "data")
    _img(root / "val" / "stray.jpg")
    with pytest.raises(UserError, match="class not found: val"):
        datasets.create(_opt(dataset="imagenet", data=str(root), gen=str(tmp_path / "gen")), "train")


# ---------------------------------------------------------------------------------------------
# Source record of a cache (datasets/source.py)

def test_source_record_of_an_extracted_folder(tmp_path):
    """A folder source is stale when a file inside it (two levels down) changes, not when it is untouched;
    a cache rewritten by other means (another size or time) has no valid record any more."""
    from datasets import source
    folder = tmp_path / "cifar"
    (folder / "cifar-10-batches-py").mkdir(parents=True)
    batch = folder / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(b"x" * 100)
    cache = tmp_path / "cifar10.t7"
    cache.write_bytes(b"cache")
    source.record(cache, str(folder), folder)
    assert source.stale_reason(cache, str(folder)) is None
    assert source.stale_reason(cache, str(tmp_path / "cifar" / ".")) is None  # same folder, other spelling
    batch.write_bytes(b"y" * 101)
    assert source.stale_reason(cache, str(folder)) == f"{folder} changed since the cache {cache} was built from it"
    source.record(cache, str(folder), folder)
    cache.write_bytes(b"other cache")
    assert source.stale_reason(cache, str(folder)) == f"the cache {cache} does not record which data it was built from"
