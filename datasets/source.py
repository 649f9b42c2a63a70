"""Where a dataset cache came from: the ``-data`` source recorded next to the cache, and ``-data sample``.

Lua's ``datasets/init.lua`` only regenerates a cache whose ``basedir`` differs from ``-data`` (ImageNet);
CIFAR caches have no ``basedir``, so a run given another archive silently trained on the old cache. This
port records the source of every CIFAR cache it builds in a sidecar file ``<cache>.source.json`` (Lua
never reads it, and the cache itself keeps the exact Lua layout) holding

* ``data``: ``-data`` as given, and ``source``: a fingerprint of what it named (resolved path, size and
  modification time of the file, or of every file of a folder up to two levels down);
* ``cache``: size and modification time of the cache file the record describes, so a cache replaced by
  other means (a Lua run, a copy) counts as one of unknown source.

``-data sample`` names the CIFAR-10 sample shipped in ``datasets/sample/`` (1000 training and 200 test
images in the official python-archive layout), so a first run needs no download and no path.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

SAMPLE_WORD = "sample"
SAMPLE_ARCHIVE = Path(__file__).resolve().parent / "sample" / "cifar-10-sample.tar.gz"
SIDECAR_SUFFIX = ".source.json"
_FOLDER_DEPTH = 2  # as cifar10_gen's folder search


def data_path(opt: Any) -> str:
    """``-data`` with the word ``sample`` replaced by the path of the shipped CIFAR-10 sample ('' if unset)."""
    data = str(getattr(opt, "data", "") or "")
    return str(SAMPLE_ARCHIVE) if data == SAMPLE_WORD else data


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Resolved path plus size/mtime of ``path`` (a file) or a digest of the names, sizes and mtimes of the
    files of a folder (two levels down): changes when the data is replaced or rewritten."""
    p = Path(path).resolve()
    if not p.is_dir():
        return {"path": str(p), **_stamp(p)}
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(p, followlinks=True):
        rel = Path(root).relative_to(p)
        dirs.sort()
        if len(rel.parts) >= _FOLDER_DEPTH:
            dirs[:] = []
        for name in sorted(files):
            try:
                st = (Path(root) / name).stat()
            except OSError:
                continue
            digest.update(f"{(rel / name).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"path": str(p), "files": digest.hexdigest()}


def sidecar(cache: Path) -> Path:
    """The record of ``cache``'s source: ``<cache>.source.json``."""
    return cache.with_name(cache.name + SIDECAR_SUFFIX)


def record(cache: Path, data: str, source: str | os.PathLike | None) -> None:
    """Write the source record of a freshly built ``cache`` (``source`` None: built without -data)."""
    entry = {"data": data, "source": fingerprint(source) if source is not None else None,
             "cache": _stamp(cache)}
    tmp = sidecar(cache).with_name(sidecar(cache).name + ".part")
    tmp.write_text(json.dumps(entry, indent=1) + "\n")
    os.replace(tmp, sidecar(cache))


def _recorded(cache: Path) -> dict[str, Any] | None:
    """The record of ``cache``, or None when there is none or it describes another file."""
    try:
        entry = json.loads(sidecar(cache).read_text())
        return entry if entry.get("cache") == _stamp(cache) else None
    except (OSError, ValueError, AttributeError):
        return None


def stale_reason(cache: Path, data: str) -> str | None:
    """Why ``cache`` may not hold the data of ``data`` (a path); None when it was built from it unchanged."""
    entry = _recorded(cache)
    if entry is None:
        return f"the cache {cache} does not record which data it was built from"
    built_from = entry.get("source")
    if built_from is None:
        return f"the cache {cache} was built without -data"
    try:
        now = fingerprint(data)
    except OSError:
        now = None
    if now != built_from:
        was = built_from.get("path", "?")
        if now is not None and now.get("path") == was:
            return f"{was} changed since the cache {cache} was built from it"
        return f"the cache {cache} was built from {was}"
    return None
