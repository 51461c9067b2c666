"""augkd.utils.keep_freed_memory: big blocks are reused instead of being page-faulted in on every step."""

import subprocess
import sys

import pytest

_PROBE = r"""
import resource, sys, torch
from augkd.utils import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def step():  # two activations above glibc's largest mmap threshold (32 MB), touched, freed
    x = torch.empty(16 * 2**20).fill_(1.0)
    y = torch.empty(8 * 2**20).fill_(1.0)
    return float(x[-1] + y[-1])
for _ in range(10):  # warm-up: glibc's memalign walks the heap for a few steps before blocks are reused
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "1", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt: Linux only")
def test_keep_freed_memory_stops_page_faults_on_reused_blocks():
    applied, kept = _faults("keep")
    if not applied:
        pytest.skip("not glibc: keep_freed_memory() is a no-op here")
    _, system = _faults("system")
    # 10 × 96 MB touched: ~245 k page faults with glibc's defaults (fresh mmap each time), ~0 when reused
    assert system > 10 * 12000, system
    assert kept < system / 20, (kept, system)


def test_keep_freed_memory_is_idempotent():
    from augkd.utils import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first
