"""Small file helpers for run outputs: the user's file mode, atomic writes, stale temp files.

Files written through a temp file (``tempfile.mkstemp``) would be created ``0600`` whatever the
umask; :func:`creation_mode` gives the mode an ordinary ``open(path, 'w')`` would have used
(``0644`` under the usual umask ``022``). :func:`atomic_write_bytes` applies it before the rename;
the checkpoint writer applies it to the files of :func:`fbresnet_port.t7.save`. Temp files are
named ``.<name>.<random>.tmp`` next to their target, so :func:`remove_stale_temp_files` can find
those a killed run left behind.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no read-only query elsewhere: set and restore at once
    os.umask(mask)
    return mask


def creation_mode() -> int:
    """Mode of a new regular file under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~current_umask()


def temp_name_pattern(names: Iterable[str]) -> re.Pattern[str]:
    """Regex matching the temp files of target names (each a regex, e.g. ``r'model_\\d+\\.t7'``)."""
    return re.compile(r"^\.(?:" + "|".join(names) + r")\..+\.tmp$")


def remove_stale_temp_files(folder: str | os.PathLike, pattern: re.Pattern[str]) -> list[Path]:
    """Delete the temp files in ``folder`` whose names match ``pattern``; returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        if pattern.match(path.name) and path.is_file():
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temp file next to ``path``, then fsync and rename it over ``path``, with
    :func:`creation_mode`: ``path`` is either its old content or the new one, whenever the process dies."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, creation_mode())  # the mode open() would give under the umask, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))
