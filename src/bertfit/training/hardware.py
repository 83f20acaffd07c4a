"""What the machine offers, decided once for every training stage."""

from __future__ import annotations

import os

import torch


def bf16_available() -> bool:
    """bf16 arithmetic in hardware: a CUDA GPU with it, or a CPU with AVX512-BF16 or AMX.

    torch has no public query for the CPU case; these private helpers are what torch's own
    CPU autocast tests use.
    """
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def ddp_backend() -> str | None:
    """gloo when torchrun / accelerate launched several CPU processes; else the Trainer's choice.

    Transformers sets up DDP on CPUs only when told the backend, and fails when told it in a
    single process, so this looks at the launcher's WORLD_SIZE.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return "gloo" if launched and not torch.cuda.is_available() else None
