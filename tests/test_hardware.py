"""training.hardware.keep_freed_memory: freed tensors' memory is reused, not faulted in anew."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertfit.training.hardware import on_glibc

# In a fresh interpreter (this one may have the setting already): "steps" that each allocate
# and touch tensors of 16, 24 and 48 MiB (one computed from another) and free them all, as a
# training step does with its activations; then count the minor page faults of one more step.
SCRIPT = """
import json, resource, sys
import torch
from bertfit.training.hardware import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def step():
    a = torch.ones(4 * 2**20)
    b = torch.ones(6 * 2**20)
    c = torch.ones(12 * 2**20)
    d = a * 2
    return float(d.sum() + b.sum() + c.sum())
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
total = step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"kept": kept, "faults": faults, "sum": total}))
"""

LARGEST = 48 * 2**20 // 4096  # the step's 48 MiB tensor in 4 KiB pages, over glibc's mmap cap
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# what would change the allocator under test: glibc's own settings, another malloc, torch's THP
ALLOCATOR_ENV = ("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD", "THP_MEM_ALLOC_ENABLE")


def last_step(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ALLOCATOR_ENV)}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], check=True, capture_output=True, text=True, env=env
    )
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.skipif(
    not on_glibc(),
    reason="the setting is glibc's; elsewhere keep_freed_memory changes nothing",
)
@pytest.mark.skipif(
    THP.is_file() and "[always]" in THP.read_text(),
    reason="with transparent huge pages always on, a fresh 48 MiB block faults in 2 MiB pages",
)
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    default = last_step("default")
    kept = last_step("keep")
    assert kept["kept"] is True
    assert default["sum"] == kept["sum"] == (8 + 6 + 12) * 2**20
    # glibc's default: the 48 MiB block (over the 32 MiB cap of its mmap threshold) goes back
    # to the kernel on free, and the next step faults all its pages in again
    assert default["faults"] > LARGEST // 2
    assert kept["faults"] < LARGEST // 50
