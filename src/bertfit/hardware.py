"""What the machine offers, decided once for every stage and command that trains or scores."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
from typing import Any

import torch

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# the most free memory kept at the top of the heap before glibc gives it back (mallopt takes an int)
TRIM_THRESHOLD_BYTES = 2**31 - 1


def bf16_available() -> bool:
    """bf16 arithmetic in hardware: a CUDA GPU with it, or a CPU with AVX512-BF16 or AMX.

    torch has no public query for the CPU case; these private helpers are what torch's own
    CPU autocast tests use.
    """
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def use_bf16(mixed_precision: str) -> bool:
    """The one bf16 decision: `mixed_precision: auto` on hardware with bf16 arithmetic.

    bf16 autocast keeps fp32 master weights; on a CPU with AVX512-BF16 it is faster than fp32,
    on a CPU without it much slower (docs/performance.md).
    """
    return mixed_precision == "auto" and bf16_available()


def ddp_backend() -> str | None:
    """gloo when torchrun / accelerate launched several CPU processes; else the Trainer's choice.

    Transformers sets up DDP on CPUs only when told the backend, and fails when told it in a
    single process, so this looks at the launcher's WORLD_SIZE.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return "gloo" if launched and not torch.cuda.is_available() else None


def device_arguments(bf16: bool) -> dict[str, Any]:
    """The TrainingArguments every stage sets the same way for the machine it runs on.

    bf16 autocast (fp32 master weights) when asked for, TF32 matmuls alongside it on CUDA,
    pinned host memory only for a GPU, gloo DDP for several CPU processes, and no logging
    integrations (metrics go to reports/ as JSON and CSV).
    """
    cuda = torch.cuda.is_available()
    return {
        "use_cpu": not cuda,  # CPU autocast must be asked for explicitly
        "bf16": bf16,
        "tf32": True if bf16 and cuda else None,
        "dataloader_pin_memory": cuda,
        "ddp_backend": ddp_backend(),
        "report_to": "none",
    }


def on_glibc() -> bool:
    """Linux with GNU libc: where keep_freed_memory's settings exist."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep memory the process frees for its next allocations.

    By default glibc serves blocks over its mmap threshold (which rises with the blocks freed,
    up to 32 MiB) with a fresh mmap and unmaps them on free, and trims freed memory off the
    heap's top: so a training step's largest tensors (MiniLM's word-embedding gradient is 45
    MiB, the masked positions' vocabulary logits about 70 MiB) and whatever the trimming gave
    back arrive as new pages the kernel zeroes and faults in one by one. With mmap off and the
    trim threshold at 2 GiB they are reused instead, for a shorter step at about the same peak
    memory (benchmarks/pretrain_throughput.py's `_malloc` rows; figures in docs/performance.md).
    PyTorch has no caching allocator for CPU tensors and glibc reads its MALLOC_*
    variables only at start-up, hence mallopt here. Once per process, process-wide; False
    (nothing changed) where the C library is not glibc.
    """
    if not on_glibc():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    kept = (
        libc.mallopt(M_MMAP_MAX, 0) == 1
        and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    )
    if not kept:
        log.warning("glibc refused the malloc settings; large tensors keep their fresh pages")
    return kept
