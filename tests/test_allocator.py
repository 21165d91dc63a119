"""keep_freed_memory: large buffers freed and allocated again stop page-faulting (glibc, Linux)."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# allocate (malloc) and free a 64 MB buffer 20 times, touching every page; print the loop's minor page faults
LOOP = """
import ctypes, resource, sys
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: 4 kB pages, so the count does not depend on THP
sys.path.insert(0, {repo!r})
from utils.allocator import keep_freed_memory
kept = keep_freed_memory() if {keep} else False
import numpy as np
np.ones(16 * 2**20, dtype=np.float32)  # warm-up: the first allocation faults in either case
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    np.ones(16 * 2**20, dtype=np.float32)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(keep: bool) -> tuple[bool, int]:
    code = LOOP.format(repo=str(REPO), keep=keep)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    kept, count = out.stdout.split()
    return kept == "True", int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_buffers_are_reused_without_page_faults():
    _, default = faults(keep=False)
    kept, after = faults(keep=True)
    assert kept
    assert default > 20 * 10_000  # glibc maps each 64 MB buffer afresh and faults its 16k pages in again
    assert after < default / 10
