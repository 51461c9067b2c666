"""augkd.utils.keep_freed_memory: big blocks are reused instead of being page-faulted in on every step.

mallopt is process-wide and cannot be undone, so every probe runs in its own interpreter.
"""

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]

_PROBE = r"""
import resource, sys, torch
from augkd.utils import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
again = keep_freed_memory() if sys.argv[1] == "keep" else False
def step():  # two activations above glibc's largest mmap threshold (32 MB), touched, freed
    x = torch.empty(16 * 2**20).fill_(1.0)
    y = torch.empty(8 * 2**20).fill_(1.0)
    return float(x[-1] + y[-1])
for _ in range(10):  # warm-up: glibc's memalign walks the heap for a few steps before blocks are reused
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(int(applied), int(again), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[bool, bool, int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, env=env, cwd=_ROOT
    )
    applied, again, faults = out.stdout.split()
    return applied == "1", again == "1", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt: Linux only")
def test_keep_freed_memory_stops_page_faults_on_reused_blocks():
    applied, again, kept = _faults("keep")
    if not applied:
        pytest.skip("not glibc: keep_freed_memory() is a no-op here")
    assert again  # idempotent: a second call reports the same
    _, _, system = _faults("system")
    # 10 steps × 96 MB touched: one fault per page with glibc's defaults (fresh mmap each time)
    per_page = 10 * 96 * 2**20 // resource.getpagesize()
    if system < per_page // 2:
        pytest.skip(
            f"the default allocator does not fault per page here ({system} faults; huge pages or a preloaded allocator)"
        )
    assert kept < system / 20, (kept, system)
