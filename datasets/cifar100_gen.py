"""Port of ``datasets/cifar100-gen.lua``: build the CIFAR-100 cache ``<gen>/cifar100.t7``.

Same cache layout as CIFAR-10 (labels are the **fine** labels + 1, 1..100; coarse labels are
dropped). Sources: a Lua-made ``cifar100.t7``, the official python archive ``cifar-100-python.tar.gz``
(``cifar-100-python/train``, ``test``; the one downloaded when nothing is found), or the binary
archive the Lua script downloads, ``cifar-100-binary.tar.gz`` (``cifar-100-binary/train.bin``,
``test.bin``: records of coarse byte, fine byte, 3072 pixel bytes). See :mod:`datasets.cifar10_gen`.
"""
from __future__ import annotations

import os
from pathlib import Path

from .cifar10_gen import CifarSpec, Downloader, Layout, generate

CIFAR100 = CifarSpec(
    title="CIFAR-100", dataset="cifar100", n_classes=100,
    archive="cifar-100-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    layouts=(
        Layout("python", "cifar-100-python", ("train",), ("test",), label_key="fine_labels"),
        Layout("bin", "cifar-100-binary", ("train.bin",), ("test.bin",), label_bytes=2),
    ),
    archives=("cifar-100-python.tar.gz", "cifar-100-binary.tar.gz"),
)
LUA_URL = "http://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"


def exec(opt, cache_path: str | os.PathLike, *, url: str | None = None,
         downloader: Downloader | None = None) -> Path:
    """Port of ``cifar100-gen.lua`` ``M.exec(opt, cacheFile)``; returns the source the cache was built from."""
    return generate(CIFAR100, opt, cache_path, url=url, downloader=downloader)
