"""fbresnet_port/cpu_memory.py: glibc keeps freed memory in the process for CPU training."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import ctypes, sys
from fbresnet_port.cpu_memory import retain_freed_memory
ok = retain_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
before = rss()
p = libc.malloc(256 << 20)
ctypes.memset(p, 1, 256 << 20)
libc.free(p)
print(ok, (rss() - before) >> 20)
"""


def _probe(env_value: str | None) -> tuple[bool, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("FBRESNET_RETAIN_MEMORY", None)
    if env_value is not None:
        env["FBRESNET_RETAIN_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    ok, kept_mb = out.stdout.split()
    return ok == "True", int(kept_mb)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_freed_block_stays_in_the_process_and_env_var_opts_out():
    ok, kept_mb = _probe(None)
    assert ok and kept_mb >= 250  # the freed 256 MiB block was kept for reuse, not unmapped
    ok, kept_mb = _probe("0")
    assert not ok and kept_mb < 16  # glibc default: a 256 MiB block is unmapped when freed
