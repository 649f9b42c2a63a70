"""fbresnet_port/dataloader.py: batch counts, shuffling, seeding, the batched CIFAR augmentation,
ten-crop layout, unreadable-image skipping and the option errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import datasets
from conftest import data_file
from datasets import cifar10, imagenet
from fbresnet_port import opts
from fbresnet_port.dataloader import DataLoader
from fbresnet_port.errors import UserError


@pytest.fixture(scope="module")
def cifar_gen(tmp_path_factory) -> Path:
    """A CIFAR-10 cache built once from the small archive (1000 train / 200 val)."""
    gen = tmp_path_factory.mktemp("gen")
    datasets.load_image_info(opts.default_options(dataset="cifar10", gen=str(gen),
                                                  data=str(data_file("cifar-10-small-python.tar.gz"))))
    return gen


def _cifar(gen: Path, **kw):
    base = dict(dataset="cifar10", gen=str(gen), batchSize=64, nThreads=0, manualSeed=1)
    base.update(kw)
    return opts.default_options(**base)


def _normalized(data: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([125.3, 123.0, 113.9]).view(1, 3, 1, 1)
    std = torch.tensor([63.0, 62.1, 66.7]).view(1, 3, 1, 1)
    return (data.float() - mean) / std


def test_batch_counts_and_partial_last_batch(cifar_gen):
    train, val = DataLoader.create(_cifar(cifar_gen))
    assert len(train) == 16 and len(val) == 4               # ceil(1000/64), ceil(200/64)
    batches = list(train)
    assert len(batches) == 16
    assert [len(b) for b in batches[:-1]] == [64] * 15 and len(batches[-1]) == 40
    assert batches[-1].input.shape == (40, 3, 32, 32)
    assert [len(b) for b in val] == [64, 64, 64, 8]
    targets = torch.cat([b.target for b in batches])
    assert targets.dtype == torch.int64 and int(targets.min()) == 0 and int(targets.max()) == 9
    labels = train.dataset.labels.to(torch.int64) - 1        # every sample once per pass, 0-based
    assert torch.equal(torch.bincount(targets, minlength=10), torch.bincount(labels, minlength=10))
    n, first = next(iter(train.run()))
    inp, tgt = first
    assert n == 1 and first["input"] is inp and first["target"] is tgt


def test_val_batches_follow_main_rng_permutation(cifar_gen):
    _, val = DataLoader.create(_cifar(cifar_gen, batchSize=50))
    torch.manual_seed(7)
    b = next(iter(val))
    torch.manual_seed(7)
    perm = torch.randperm(200)[:50]
    assert torch.equal(b.target, val.dataset.labels[perm].to(torch.int64) - 1)
    assert torch.equal(b.input, _normalized(val.dataset.data[perm]))


def test_shuffle_differs_between_epochs_and_seeding_reproduces(cifar_gen):
    runs = []
    for _ in range(2):
        train, _ = DataLoader.create(_cifar(cifar_gen, manualSeed=3))
        torch.manual_seed(0)
        runs.append([list(train), list(train)])
    (e1, e2), (r1, r2) = runs
    assert not torch.equal(e1[0].target, e2[0].target)       # a new permutation every pass
    for a, b in zip(e1 + e2, r1 + r2):
        assert torch.equal(a.input, b.input) and torch.equal(a.target, b.target)
    other, _ = DataLoader.create(_cifar(cifar_gen, manualSeed=4))
    torch.manual_seed(0)
    o1 = list(other)
    assert torch.equal(o1[0].target, e1[0].target)           # same permutation (main RNG) ...
    assert not torch.equal(o1[0].input, e1[0].input)         # ... other augmentation (worker seed)


def test_train_samples_are_flip_and_pad4_crops(cifar_gen):
    train, _ = DataLoader.create(_cifar(cifar_gen, batchSize=16))
    torch.manual_seed(1)
    batch = next(iter(train))
    torch.manual_seed(1)
    idx = torch.randperm(1000)[:16]
    padded = F.pad(_normalized(train.dataset.data[idx]), (4, 4, 4, 4))
    for b in range(16):
        views = [img[:, y:y + 32, x:x + 32] for img in (padded[b], padded[b].flip(-1))
                 for y in range(9) for x in range(9)]
        assert any(torch.equal(batch.input[b], v) for v in views)


def test_augment_batch_equals_per_image_transforms():
    x = torch.randn(3, 3, 6, 5)
    flip = torch.tensor([True, False, True])
    x1, y1 = torch.tensor([0, 3, 8]), torch.tensor([8, 1, 0])
    out = cifar10.augment_batch(x, flip, x1, y1, pad=4)
    for b in range(3):
        img = x[b].flip(-1) if flip[b] else x[b]
        exp = F.pad(img, (4, 4, 4, 4))[:, y1[b]:y1[b] + 6, x1[b]:x1[b] + 5]
        assert torch.equal(out[b], exp)


def test_worker_processes_match_in_process_streams(cifar_gen):
    loaders = [DataLoader.create(_cifar(cifar_gen, nThreads=n, manualSeed=9))[0] for n in (0, 2)]
    out = []
    for loader in loaders:
        torch.manual_seed(5)
        out.append(list(loader))
    single, multi = out
    assert len(multi) == 16 and len(multi[-1]) == 40
    assert all(torch.equal(a.target, b.target) for a, b in zip(single, multi))
    # batch 1 goes to worker 1 (seed manualSeed + 1), the first draws of both streams
    assert torch.equal(single[0].input, multi[0].input)


def test_precision_sets_input_dtype(cifar_gen):
    _, val = DataLoader.create(_cifar(cifar_gen, precision="double"))
    assert next(iter(val)).input.dtype == torch.float64


def test_ten_crop_option_errors(cifar_gen):
    opt = _cifar(cifar_gen)
    opt.tenCrop = True                      # set after opts' own validation, to reach the loader's check
    with pytest.raises(UserError, match="only supported for ImageNet"):
        DataLoader.create(opt)


# ---------------------------------------------------------------------------------------------
# ImageNet through the loader (small images, monkeypatched crop sizes)

@pytest.fixture
def tiny_imagenet(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(imagenet, "CROP", 12)
    monkeypatch.setattr(imagenet, "SCALE", 16)
    root = tmp_path / "data"
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in range(3):
            for i in range(4):
                d = root / split / f"class{c}"
                d.mkdir(parents=True, exist_ok=True)
                arr = torch.randint(0, 256, (30, 40, 3), dtype=torch.uint8, generator=g).numpy()
                Image.fromarray(arr).save(d / f"im{i}.{'png' if i % 2 else 'jpg'}")
    return root


def _imagenet(root: Path, tmp: Path, **kw):
    base = dict(dataset="imagenet", data=str(root), gen=str(tmp / "gen"), batchSize=5, nThreads=0, manualSeed=2)
    base.update(kw)
    return opts.default_options(**base)


def test_imagenet_batches_and_ten_crop_layout(tiny_imagenet, tmp_path):
    train, val = DataLoader.create(_imagenet(tiny_imagenet, tmp_path))
    sizes = [tuple(b.input.shape) for b in train]
    assert sizes == [(5, 3, 12, 12), (5, 3, 12, 12), (2, 3, 12, 12)]
    _, ten = DataLoader.create(_imagenet(tiny_imagenet, tmp_path, tenCrop=True, batchSize=20))
    assert len(ten) == 6                                       # floor(20/10) = 2 images per batch
    torch.manual_seed(3)
    b = next(iter(ten))
    torch.manual_seed(3)
    perm = torch.randperm(12)[:2]
    assert b.input.shape == (20, 3, 12, 12) and b.target.tolist() == [
        int(ten.dataset.image_class[i]) - 1 for i in perm]
    for k, i in enumerate(perm.tolist()):                      # sample-major: 10 crops of sample k
        crops = ten.dataset.preprocess()(ten.dataset.get(i)["input"])
        assert torch.equal(b.input[10 * k:10 * k + 10], crops)
    opt = _imagenet(tiny_imagenet, tmp_path, tenCrop=True, batchSize=10)
    opt.batchSize = 9                       # past opts' own validation, to reach the loader's check
    with pytest.raises(UserError, match="batches of 0 images"):
        DataLoader.create(opt)


def test_unreadable_images_are_skipped_and_counted(tiny_imagenet, tmp_path, capsys):
    bad = tiny_imagenet / "train" / "class1" / "im0.jpg"
    train, _ = DataLoader.create(_imagenet(tiny_imagenet, tmp_path, nThreads=2))
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")                # corrupted after the cache was built
    (tiny_imagenet / "train" / "class2" / "im1.png").unlink()  # and one file gone
    got = [b for b in train]
    assert sum(len(b) for b in got) == 10 and train.skipped == 2
    assert "skipped 2 unreadable image(s)" in capsys.readouterr().err
