"""Throughput of the ported training input pipelines against torchvision's standard ones.

Rows (images/s, one timed pass after a warm-up pass, same worker count and batch size for both):

* CIFAR train: ours = ``fbresnet_port.dataloader.DataLoader`` over ``datasets.cifar10`` (batched
  ColorNormalize + flip + pad-4 random crop); baseline = torchvision ``RandomCrop(32, padding=4)`` +
  ``RandomHorizontalFlip`` + ``ToTensor`` + ``Normalize`` per image, ``torch.utils.data.DataLoader``.
* ImageNet train: ours = Pillow decode + RandomSizedCrop(224, torch-image bicubic) + ColorJitter +
  Lighting + ColorNormalize + HorizontalFlip; baseline = torchvision v2 ``RandomResizedCrop(224)`` +
  ``ColorJitter(0.4, 0.4, 0.4)`` + ``RandomHorizontalFlip`` + ``Normalize`` on PIL images
  (``ImageFolder``). The JPEGs (smooth random 400x300 images) are generated in a temporary folder.
* ImageNet val: ours = Scale(256) + ColorNormalize + CenterCrop(224); baseline = v2 ``Resize(256)`` +
  ``CenterCrop(224)`` + ``Normalize``.

Usage: ``python benchmarks/dataloader.py [--workers 2] [--cifar-n 20000] [--images 200]``
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.utils.data as tud

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets import imagenet_gen  # noqa: E402
from datasets.cifar10 import MEANSTD as CIFAR_MEANSTD, CifarDataset  # noqa: E402
from datasets.imagenet import MEANSTD as IMAGENET_MEANSTD, ImagenetDataset  # noqa: E402
from fbresnet_port.dataloader import DataLoader  # noqa: E402


def _opt(**kw) -> SimpleNamespace:
    base = dict(dataset="cifar10", data="", gen="gen", batchSize=128, nThreads=2, manualSeed=1,
                tenCrop=False, precision="single")
    base.update(kw)
    return SimpleNamespace(**base)


def _rate(loader, n_images: int) -> float:
    """Images per second of one full pass, after one warm-up pass (starts the workers)."""
    for _ in loader:
        pass
    t0 = time.perf_counter()
    count = 0
    for batch in loader:
        count += len(batch[1]) if isinstance(batch, (list, tuple)) else len(batch)
    dt = time.perf_counter() - t0
    assert count == n_images, (count, n_images)
    return count / dt


class _TorchvisionCifar(tud.Dataset):
    """CIFAR-style dataset over H x W x C uint8 arrays, as torchvision.datasets.CIFAR10 does it."""

    def __init__(self, data: np.ndarray, labels: np.ndarray, transform):
        from PIL import Image
        self.data, self.labels, self.transform, self._image = data, labels, transform, Image

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.transform(self._image.fromarray(self.data[i])), int(self.labels[i])


def bench_cifar(n: int, workers: int, batch: int) -> tuple[float, float]:
    from torchvision import transforms as T
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(1, 11, (n,), dtype=torch.uint8, generator=g)
    opt = _opt(batchSize=batch, nThreads=workers)
    ours = DataLoader(CifarDataset({"train": {"data": data, "labels": labels}}, opt, "train"), opt, "train")
    mean = [m / 255 for m in CIFAR_MEANSTD["mean"]]
    std = [s / 255 for s in CIFAR_MEANSTD["std"]]
    tv_t = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    tv_ds = _TorchvisionCifar(data.permute(0, 2, 3, 1).numpy(), labels.numpy() - 1, tv_t)
    tv = tud.DataLoader(tv_ds, batch_size=batch, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0)
    return _rate(ours, n), _rate(tv, n)


def make_jpegs(root: Path, n: int, classes: int = 4, size: tuple[int, int] = (400, 300)) -> None:
    """``n`` smooth random JPEGs per split under ``root/{train,val}/<class>/``."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(n):
            d = root / split / f"n{i % classes:08d}"
            d.mkdir(parents=True, exist_ok=True)
            small = rng.integers(0, 256, (size[1] // 10, size[0] // 10, 3), dtype=np.uint8)
            im = Image.fromarray(small).resize(size, Image.BILINEAR)
            noisy = np.clip(np.asarray(im, dtype=np.int16) + rng.integers(-8, 9, (size[1], size[0], 3)), 0, 255)
            Image.fromarray(noisy.astype(np.uint8)).save(d / f"img{i:05d}.JPEG", quality=90)


def bench_imagenet(n: int, workers: int, batch: int) -> dict[str, tuple[float, float]]:
    import torchvision
    from torchvision.transforms import v2
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "imagenet"
        make_jpegs(root, n)
        opt = _opt(dataset="imagenet", data=str(root), gen=str(Path(tmp) / "gen"), batchSize=batch, nThreads=workers)
        info = imagenet_gen.exec(opt, Path(opt.gen) / "imagenet.t7")
        norm = v2.Normalize(list(IMAGENET_MEANSTD["mean"]), list(IMAGENET_MEANSTD["std"]))
        tv_tf = {
            "train": v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.ColorJitter(0.4, 0.4, 0.4),
                                 v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), norm,
                                 v2.RandomHorizontalFlip()]),
            "val": v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), v2.PILToTensor(),
                               v2.ToDtype(torch.float32, scale=True), norm]),
        }
        for split in ("train", "val"):
            ours = DataLoader(ImagenetDataset(info, opt, split), opt, split)
            tv_ds = torchvision.datasets.ImageFolder(str(root / split), transform=tv_tf[split])
            tv = tud.DataLoader(tv_ds, batch_size=batch, shuffle=True, num_workers=workers,
                                persistent_workers=workers > 0)
            out[split] = (_rate(ours, n), _rate(tv, n))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cifar-n", type=int, default=20000)
    p.add_argument("--cifar-batch", type=int, default=128)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--imagenet-batch", type=int, default=32)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    rows = [("CIFAR train (pad-4 crop + flip)", *bench_cifar(a.cifar_n, a.workers, a.cifar_batch))]
    im = bench_imagenet(a.images, a.workers, a.imagenet_batch)
    rows.append(("ImageNet train (400x300 JPEG -> 224)", *im["train"]))
    rows.append(("ImageNet val (Scale 256 + CenterCrop 224)", *im["val"]))
    print(f"\nworkers={a.workers}  torch threads={torch.get_num_threads()}  CIFAR N={a.cifar_n} batch {a.cifar_batch}"
          f"  ImageNet {a.images} JPEGs batch {a.imagenet_batch}")
    print(f"| {'pipeline':<42} | {'ours img/s':>11} | {'torchvision img/s':>17} | {'ours / tv':>9} |")
    print(f"|{'-' * 44}|{'-' * 13}|{'-' * 19}|{'-' * 11}|")
    for name, ours, tv in rows:
        print(f"| {name:<42} | {ours:>11.0f} | {tv:>17.0f} | {ours / tv:>9.2f} |")


if __name__ == "__main__":
    main()
