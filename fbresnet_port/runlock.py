"""One training run per ``-save`` folder: a lock file that two runs cannot hold at once.

A run that writes checkpoints takes ``<-save>/.fbresnet.lock`` (``flock``, exclusive, not waiting)
and writes who holds it (``process PID on HOST since TIME``) into it. A second run into the same
folder gets one ``error:`` line naming the folder and that process, instead of two runs
overwriting each other's ``latest.t7`` (for example the workers that go on after their ``torchrun``
agent was killed, and the user's restart of the job). The operating system drops the lock when its
process ends however it ends, so a lock left by a killed run is simply taken over, with a
``note:`` line naming the dead process (none after a torchrun restart, which takes over the lock
of its own killed attempt). Data-loader workers forked by a run share its open files, so a run killed
while its workers still live leaves them holding the ``flock``: when the process the file names (on
this machine) is gone, the file is replaced by a new one and taken (the orphans keep the old one). A
clean exit removes the file.

``flock`` works between processes of one machine and, on Linux, on NFS (as POSIX locks); other
network file systems may not enforce it.
"""
from __future__ import annotations

import datetime
import fcntl
import os
import re
import socket
from pathlib import Path

from .errors import UserError, note

__all__ = ["LOCK_NAME", "SaveLock", "release_all"]

LOCK_NAME = ".fbresnet.lock"
_held: list["SaveLock"] = []


def _owner_text(fd: int) -> str:
    """What the lock file says about its holder ('' when empty or unreadable)."""
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _holder_gone(owner: str) -> bool:
    """Whether the lock file's ``process PID on HOST`` is a process of this machine that has ended (or is a
    zombie); False when unknown (another host, no PID)."""
    m = re.match(r"process (\d+) on (\S+) since", owner)
    if not m or m.group(2) != socket.gethostname():
        return False
    pid = int(m.group(1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return False


class SaveLock:
    """The lock of one ``-save`` folder, held by this process until :meth:`release`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @classmethod
    def acquire(cls, folder: str | os.PathLike, quiet_takeover: bool = False) -> "SaveLock":
        """Take the lock of ``folder`` (created if missing); :class:`UserError` if a live process
        holds it. Released by :meth:`release`, :func:`release_all` or the end of the process.
        ``quiet_takeover``: no note for a stale lock (a torchrun restart takes its own job's)."""
        lock = cls(folder)
        lock._take(quiet_takeover)
        _held.append(lock)
        return lock

    def _take(self, quiet_takeover: bool) -> None:
        replaced = ""  # the owner of a file replaced because its process is gone
        while True:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise UserError(f"-save {self.folder}: cannot write there ({e.strerror}); choose "
                                f"another -save") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # BlockingIOError: held by a live process, or by the forked workers of a dead one
                owner = _owner_text(fd) or "another process"
                os.close(fd)
                if _holder_gone(owner):
                    self.path.unlink(missing_ok=True)  # its orphaned workers keep the old file's lock
                    replaced = owner
                    continue
                raise UserError(f"-save {self.folder}: another run is writing into this folder "
                                f"({owner}); wait for it to end or stop it, or choose another "
                                f"-save") from None
            try:  # the holder may have removed the file between our open and our flock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _owner_text(fd) or replaced
        if previous and not quiet_takeover:
            note(f"-save {self.folder}: taking over the lock left by {previous}, which ended without "
                 f"releasing it")
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        text = f"process {os.getpid()} on {socket.gethostname()} since {started}\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (safe to call more than once)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: see _take's inode check
        finally:
            os.close(self._fd)
            self._fd = None
            if self in _held:
                _held.remove(self)


def release_all() -> None:
    """Release every lock this process took (``main()`` does at exit)."""
    for lock in list(_held):
        lock.release()
