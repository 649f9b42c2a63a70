"""Port of ``datasets/cifar10-gen.lua``: build the CIFAR cache ``<gen>/cifar10.t7``.

Cache layout (identical to Lua's, so both programs can share it)::

    {train = {data = ByteTensor[N,3,32,32], labels = ByteTensor[N] (1..10)},
     val   = {data = ByteTensor[M,3,32,32], labels = ByteTensor[M]}}

Sources, tried in this order (``-data`` names a file or a folder):

* a Lua-made cache (``cifar10.t7``): checked and copied to the cache path;
* the official python archive ``cifar-10-python.tar.gz`` (packed or extracted ``cifar-10-batches-py/``);
* the archive the Lua script downloads, ``cifar-10-torch.tar.gz`` (ASCII ``.t7`` batches in
  ``cifar-10-batches-t7/``, also what a Lua run leaves in ``gen/``);
* the binary archive ``cifar-10-binary.tar.gz`` (``cifar-10-batches-bin/``).

Without ``-data`` the ``-gen`` folder is searched for these, then the python archive is downloaded
from the official site into ``-gen`` (PARITY §9 #13: ``-gen`` is used for everything). When that
fails the error names the file to fetch and where to put it. The helpers here are shared with
``cifar100_gen``.
"""
from __future__ import annotations

import io
import os
import pickle
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fbresnet_port import t7
from fbresnet_port.errors import UserError

from .source import SAMPLE_WORD, data_path

NO_DOWNLOAD_ENV = "FBRESNET_NO_DOWNLOAD"
DOWNLOAD_TIMEOUT_S = 20.0

Downloader = Callable[[str, Path], None]


@dataclass(frozen=True)
class Layout:
    """One on-disk form of a CIFAR release: its folder name, batch files and record format."""
    kind: str                    # 'python' (pickles), 't7' (Lua ASCII batches), 'bin' (fixed records)
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str = "labels"    # python pickles: 'labels' (CIFAR-10) or 'fine_labels' (CIFAR-100)
    label_bytes: int = 1         # bin records: 1 (CIFAR-10) or 2 (coarse, fine: CIFAR-100)


@dataclass(frozen=True)
class CifarSpec:
    """What a CIFAR variant looks like: names, classes, download URL and known layouts."""
    title: str                   # 'CIFAR-10'
    dataset: str                 # 'cifar10' (cache file name)
    n_classes: int
    archive: str                 # the file to download: 'cifar-10-python.tar.gz'
    url: str
    layouts: tuple[Layout, ...]
    archives: tuple[str, ...] = field(default=())   # archive names looked for in folders


def _batches(prefix: str, ext: str = "") -> tuple[str, ...]:
    return tuple(f"{prefix}{i}{ext}" for i in range(1, 6))


CIFAR10 = CifarSpec(
    title="CIFAR-10", dataset="cifar10", n_classes=10,
    archive="cifar-10-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    layouts=(
        Layout("python", "cifar-10-batches-py", _batches("data_batch_"), ("test_batch",)),
        Layout("t7", "cifar-10-batches-t7", _batches("data_batch_", ".t7"), ("test_batch.t7",)),
        Layout("bin", "cifar-10-batches-bin", _batches("data_batch_", ".bin"), ("test_batch.bin",)),
    ),
    archives=("cifar-10-python.tar.gz", "cifar-10-torch.tar.gz", "cifar-10-binary.tar.gz"),
)
LUA_URL = "http://torch7.s3-website-us-east-1.amazonaws.com/data/cifar-10-torch.tar.gz"


# ---------------------------------------------------------------------------------------------
# Reading batch files

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR python batches: only numpy array reconstruction is allowed."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def _read_python_batch(raw: bytes, name: str, layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    d = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    if not isinstance(d, dict) or "data" not in d or layout.label_key not in d:
        raise ValueError(f"expected a dict with 'data' and '{layout.label_key}'")
    data = torch.from_numpy(np.ascontiguousarray(d["data"], dtype=np.uint8)).reshape(-1, 3072)
    labels = torch.as_tensor(np.asarray(d[layout.label_key], dtype=np.int64))
    return data, labels


def _read_t7_batch(raw: bytes, name: str, layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    m = t7.load_bytes(raw, name=name)
    data, labels = m["data"], m["labels"]          # ByteTensor 3072 x N, 1 x N (as cifar10-gen.lua)
    return data.t().contiguous().reshape(-1, 3072), labels.reshape(-1).to(torch.int64)


def _read_bin_batch(raw: bytes, name: str, layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    rec = layout.label_bytes + 3072
    if len(raw) % rec != 0:
        raise ValueError(f"expecting numSamples to be an exact integer ({len(raw)} bytes is not a multiple of {rec})")
    arr = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(-1, rec)
    return arr[:, layout.label_bytes:].clone(), arr[:, layout.label_bytes - 1].to(torch.int64)


_READERS = {"python": _read_python_batch, "t7": _read_t7_batch, "bin": _read_bin_batch}


# ---------------------------------------------------------------------------------------------
# Sources: a tar archive or a folder, searched for one of the layouts

class _Source:
    """Files of a source by path relative to its root; ``find`` locates a layout's folder."""

    def __init__(self, path: Path):
        self.path = path

    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def find(self, layout: Layout) -> str | None:
        """Prefix (``''`` or ``'x/'``) under which all batch files of ``layout`` exist, or None."""
        names = set(self.names())
        wanted = layout.train + layout.test
        for prefix in sorted({n[: len(n) - len(b)] for n in names for b in wanted if n.endswith(b)}):
            if prefix and not prefix.endswith("/"):
                continue
            if all(prefix + b in names for b in wanted):
                return prefix
        return None


class _TarSource(_Source):
    def __init__(self, path: Path):
        super().__init__(path)
        try:
            self._tar = tarfile.open(path, "r:*")
            self._members = {m.name.lstrip("./"): m for m in self._tar.getmembers() if m.isfile()}
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UserError(f"cannot read the archive {path}: {e}. The file is corrupt or incomplete; "
                            f"download it again.") from None

    def names(self) -> list[str]:
        return list(self._members)

    def read(self, name: str) -> bytes:
        f = self._tar.extractfile(self._members[name])
        assert f is not None
        return f.read()


class _DirSource(_Source):
    def __init__(self, path: Path, depth: int = 2):
        super().__init__(path)
        self._names: list[str] = []
        for root, dirs, files in os.walk(path, followlinks=True):
            rel = Path(root).relative_to(path)
            if len(rel.parts) >= depth:
                dirs[:] = []
            self._names += [(rel / f).as_posix() for f in files]

    def names(self) -> list[str]:
        return self._names

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()


class _Progress:
    """One line that grows while the batch files are read (seconds for the full archives), in a log too:
    `` | reading 6 batch files: 1 2 3 4 5 6 (60,000 images, 9.1 s)``."""

    def __init__(self, n_files: int):
        self.started = time.perf_counter()
        self.done = 0
        self.images = 0
        print(f" | reading {n_files} batch files:", end="", flush=True)

    def step(self, n_images: int) -> None:
        self.done += 1
        self.images += n_images
        print(f" {self.done}", end="", flush=True)

    def end(self) -> None:
        print(f" ({self.images:,} images, {time.perf_counter() - self.started:.1f} s)", flush=True)


def _read_split(src: _Source, prefix: str, layout: Layout, files: tuple[str, ...],
                spec: CifarSpec, progress: _Progress) -> dict[str, torch.Tensor]:
    datas, labels = [], []
    for f in files:
        name = prefix + f
        where = f"{src.path}:{name}" if isinstance(src, _TarSource) else str(src.path / name)
        try:
            raw = src.read(name)
            d, lab = _READERS[layout.kind](raw, where, layout)
        except (tarfile.TarError, OSError, EOFError, ValueError, KeyError, TypeError,
                pickle.UnpicklingError, t7.T7FormatError) as e:
            raise UserError(f"cannot read {spec.title} batch {where}: {e}. The file is corrupt; "
                            f"download the dataset again.") from None
        if d.shape[0] != lab.numel():
            raise UserError(f"{spec.title} batch {where}: {d.shape[0]} images but {lab.numel()} labels")
        if lab.numel() and (lab.min() < 0 or lab.max() >= spec.n_classes):
            raise UserError(f"{spec.title} batch {where}: labels outside 0..{spec.n_classes - 1}")
        datas.append(d)
        labels.append(lab)
        progress.step(lab.numel())
    data = torch.cat(datas).reshape(-1, 3, 32, 32).contiguous()
    # Lua: labels 0..K-1 from the files, +1 for CrossEntropyCriterion (ByteTensor)
    return {"data": data, "labels": (torch.cat(labels) + 1).to(torch.uint8)}


def convert(src: _Source, spec: CifarSpec) -> dict | None:
    """The cache content from the first layout found in ``src``, or None if none is there."""
    for layout in spec.layouts:
        prefix = src.find(layout)
        if prefix is not None:
            print(" | combining dataset into a single file")
            progress = _Progress(len(layout.train) + len(layout.test))
            try:
                info = {"train": _read_split(src, prefix, layout, layout.train, spec, progress),
                        "val": _read_split(src, prefix, layout, layout.test, spec, progress)}
            except BaseException:
                print(flush=True)  # end the progress line before the error
                raise
            progress.end()
            return info
    return None


# ---------------------------------------------------------------------------------------------
# Cache files

def check_cache(info: object, spec: CifarSpec, path: Path | str) -> dict:
    """Check that ``info`` has the Lua CIFAR cache layout; raise UserError naming what is wrong."""
    def bad(what: str) -> UserError:
        return UserError(f"{path} is not a {spec.title} cache ({what}); delete it to regenerate it")
    if not isinstance(info, dict):
        raise bad("not a table")
    for split in ("train", "val"):
        part = info.get(split)
        if not isinstance(part, dict) or not isinstance(part.get("data"), torch.Tensor) \
                or not isinstance(part.get("labels"), torch.Tensor):
            raise bad(f"missing {split}.data / {split}.labels tensors")
        data, labels = part["data"], part["labels"]
        if data.dim() != 4 or tuple(data.shape[1:]) != (3, 32, 32):
            raise bad(f"{split}.data has shape {tuple(data.shape)}, expected N x 3 x 32 x 32")
        if labels.numel() != data.shape[0]:
            raise bad(f"{split}.labels has {labels.numel()} entries for {data.shape[0]} images")
    return info


def _write(info: dict, cache_path: Path, spec: CifarSpec) -> None:
    print(f" | saving {spec.title} dataset to {cache_path}")
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    t7.save(cache_path, {split: {"data": info[split]["data"], "labels": info[split]["labels"]}
                         for split in ("train", "val")})


# ---------------------------------------------------------------------------------------------
# Download

def download_file(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch ``url`` into ``dest`` (through a temporary file, renamed when complete)."""
    tmp = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _download(spec: CifarSpec, gen_dir: Path, url: str, downloader: Downloader | None) -> Path:
    dest = gen_dir / spec.archive
    manual = (f"Download {spec.archive} from {spec.url} (on a machine with internet access) and put it at "
              f"{dest}, or pass -data <path of the archive or of its extracted folder>"
              + (f" (or -data {SAMPLE_WORD} for the small CIFAR-10 sample shipped with this project)."
                 if spec.dataset == "cifar10" else "."))
    if os.environ.get(NO_DOWNLOAD_ENV):
        raise UserError(f"{spec.title} not found and downloads are disabled (${NO_DOWNLOAD_ENV}). {manual}")
    print(f"=> Downloading {spec.title} dataset from {url}")
    try:
        gen_dir.mkdir(parents=True, exist_ok=True)
        (downloader or download_file)(url, dest)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"could not download {spec.title} from {url}: {reason}. {manual}") from None
    return dest


# ---------------------------------------------------------------------------------------------
# Entry point

def _open(path: Path) -> _Source:
    return _DirSource(path) if path.is_dir() else _TarSource(path)


def _candidates(folder: Path, spec: CifarSpec) -> list[Path]:
    """Archives, extracted folders and Lua caches of ``spec`` directly inside ``folder``."""
    names = [spec.dataset + ".t7", *spec.archives] + [lay.folder for lay in spec.layouts]
    return [folder / n for n in names if (folder / n).exists()]


def _from_path(path: Path, spec: CifarSpec, cache_path: Path) -> bool:
    """Build the cache from ``path`` (file or folder). False if nothing usable is there."""
    if path.is_file() and path.suffix == ".t7":
        try:
            info = t7.load(path)
        except (t7.T7FormatError, OSError) as e:
            raise UserError(f"cannot read the {spec.title} cache {path}: {e}") from None
        check_cache(info, spec, path)
        if path.resolve() != cache_path.resolve():
            print(f" | copying {spec.title} cache {path} to {cache_path}")
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, cache_path)
        return True
    if path.is_dir():
        for c in _candidates(path, spec):
            if _from_path(c, spec, cache_path):
                return True
    print(f"=> Reading {spec.title} dataset from {path}")
    info = convert(_open(path), spec)
    if info is None:
        return False
    _write(info, cache_path, spec)
    return True


def generate(spec: CifarSpec, opt, cache_path: str | os.PathLike, *, url: str | None = None,
             downloader: Downloader | None = None) -> Path:
    """Build ``cache_path`` for ``spec`` from ``opt.data``, the ``-gen`` folder or a download.

    Returns the file or folder the cache was built from."""
    cache_path = Path(cache_path)
    data = data_path(opt)
    gen_dir = Path(getattr(opt, "gen", "gen") or "gen")
    if data:
        path = Path(data)
        if not path.exists():
            raise UserError(f"-data {data}: no such file or folder (expected the {spec.title} archive "
                            f"{spec.archive}, its extracted folder, or a {spec.dataset}.t7 cache)")
        if not _from_path(path, spec, cache_path):
            looked = ", ".join(lay.folder for lay in spec.layouts)
            raise UserError(f"-data {data}: no {spec.title} data found (looked for {spec.dataset}.t7, "
                            f"{', '.join(spec.archives)} and the folders {looked})")
        return path
    for c in _candidates(gen_dir, spec) if gen_dir.is_dir() else []:
        if c.resolve() != cache_path.resolve() and _from_path(c, spec, cache_path):
            return c
    archive = _download(spec, gen_dir, url or spec.url, downloader)
    if not _from_path(archive, spec, cache_path):
        raise UserError(f"the downloaded file {archive} holds no {spec.title} data; delete it and retry")
    return archive


def exec(opt, cache_path: str | os.PathLike, *, url: str | None = None,
         downloader: Downloader | None = None) -> Path:
    """Port of ``cifar10-gen.lua`` ``M.exec(opt, cacheFile)``; returns the source (see :func:`generate`)."""
    return generate(CIFAR10, opt, cache_path, url=url, downloader=downloader)


if __name__ == "__main__":  # pragma: no cover - manual use: python -m datasets.cifar10_gen DATA GEN
    from types import SimpleNamespace
    exec(SimpleNamespace(data=sys.argv[1], gen=sys.argv[2]), Path(sys.argv[2]) / "cifar10.t7")
