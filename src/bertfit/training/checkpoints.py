"""Resumable training checkpoints: a killed stage resumes from its last one, and only its own.

The checkpoint directory is no DVC output (dvc.yaml says why), so DVC never deletes it and it
survives a failed or killed `dvc repro`. A fingerprint of the run (model name, the model
directory's files, params, data) is stamped into it; a run with other settings, other data or a
model directory replaced in place clears it and starts over instead of resuming a checkpoint
that belongs to a different run. A checkpoint counts only when complete: the Trainer writes
`trainer_state.json` last, so a folder without a readable one (killed while saving) is removed,
with a warning, and the one before it is resumed. Checkpoints keep no pickled
`training_args.bin` (trainer.BertfitTrainer._save); the Trainer loads their optimiser,
scheduler and RNG states with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import safe_open
from transformers import TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_pt_utils import safe_globals
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from bertfit.fingerprints import fingerprint as path_fingerprint
from bertfit.models.loading import resolve_model_name
from bertfit.params import Strict

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"


def fingerprint(model_name: str, params: Strict, data: list[Path | bytes]) -> str:
    """The run's identity: model name and, for a local directory, its files; params; the data
    (files, or bytes such as frame_bytes' and other settings)."""
    model_dir = Path(resolve_model_name(model_name))
    model_files = path_fingerprint(model_dir) if model_dir.is_dir() else None
    identity = [model_name, model_files, params.model_dump()]
    h = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for item in data:
        h.update(item if isinstance(item, bytes) else item.read_bytes())
    return h.hexdigest()


def frame_bytes(*frames: pd.DataFrame) -> list[bytes]:
    """The frames' contents as bytes for a fingerprint (pandas' row hashes, index included)."""
    return [pd.util.hash_pandas_object(f, index=True).to_numpy().tobytes() for f in frames]


def saving(resumable: bool, **when: Any) -> dict[str, Any]:
    """TrainingArguments for a stage's resumable checkpoints (`when`: save_strategy and its
    interval), the last one kept; none at all when the stage runs without a checkpoint dir."""
    return {**when, "save_total_limit": 1} if resumable else {"save_strategy": "no"}


def stage_resume(
    args: TrainingArguments,
    checkpoint_dir: Path | None,
    model_name: str,
    params: Strict,
    data: list[Path | bytes],
) -> tuple[str | None, int]:
    """(checkpoint a training stage resumes from, its step), the directory prepared for this
    run (resume_point); (None, 0) without a checkpoint dir."""
    if checkpoint_dir is None:
        return None, 0
    return resume_point(args, checkpoint_dir, fingerprint(model_name, params, data))


def is_complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
    except (OSError, ValueError):
        return False
    return True


def checkpoint_folders(checkpoint_dir: Path) -> dict[Path, int]:
    """The Trainer's `checkpoint-<step>` folders in checkpoint_dir, with their steps."""
    folders = checkpoint_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
    steps = {p: p.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-") for p in folders if p.is_dir()}
    return {p: int(step) for p, step in steps.items() if step.isdigit()}


def unloadable_file(checkpoint: Path) -> str | None:
    """What in a complete checkpoint cannot be loaded (a file damaged on disk, or replaced),
    or None. Read as resuming reads it: safetensors' header, torch.load(weights_only=True)
    for the Trainer's optimiser, scheduler and RNG states, JSON."""
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        try:
            if path.suffix == ".safetensors":
                with safe_open(path, "pt"):
                    pass
            elif path.suffix in (".pt", ".pth", ".bin"):
                with safe_globals():  # numpy's RNG state, allowed as the Trainer allows it
                    torch.load(path, map_location="cpu", weights_only=True)
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except Exception as err:  # torch's message would suggest weights_only=False: not shown
            return f"{path.relative_to(checkpoint)} ({err.__class__.__name__})"
    return None


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest complete checkpoint whose files load; incomplete ones (a kill while saving)
    are removed, unloadable ones set aside (renamed `unloadable-checkpoint-<step>`, kept for
    a look), each with a warning, and the one before is tried, else training starts over."""
    steps = checkpoint_folders(checkpoint_dir)
    for folder in sorted(steps, key=steps.get, reverse=True):
        if not is_complete(folder):
            log.warning(
                "%s is incomplete (no readable %s: killed while saving?); removed",
                folder,
                TRAINER_STATE_NAME,
            )
            shutil.rmtree(folder)
            continue
        damaged = unloadable_file(folder)
        if damaged is None:
            return str(folder)
        aside = folder.with_name(f"unloadable-{folder.name}")
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)
        log.warning(
            "%s: %s cannot be loaded; set aside as %s, and the run goes on from the checkpoint "
            "before it, or starts over",
            folder,
            damaged,
            aside.name,
        )
    return None


def resumable_checkpoint(checkpoint_dir: Path, key: str) -> str | None:
    """The last complete checkpoint in checkpoint_dir, if the directory holds this very run's."""
    stamp = checkpoint_dir / FINGERPRINT_FILE
    if stamp.is_file() and json.loads(stamp.read_text())["key"] == key:
        return last_complete_checkpoint(checkpoint_dir)
    return None


class BatchSeeded:
    """A training collator whose random choices (MLM masks, T5 noise spans) for each batch come
    from a seed of the batch's own: the run's seed, the process and the batch's index.

    The Trainer restores the global RNG saved with a checkpoint, but accelerate collates one
    batch ahead of training, so masks drawn from the global RNG come out one batch off after a
    resume and the resumed run ends elsewhere than an uninterrupted one. Drawn inside
    `torch.random.fork_rng`, they leave the global RNG (dropout's) untouched, and a run resumed
    at step k, with `first_batch` k × accumulation, gives batch k the masks it always gets.
    """

    def __init__(
        self, collate: Callable[[list[dict]], Any], seed: int, process: int, first_batch: int
    ) -> None:
        self.collate = collate
        self.seed = seed
        self.process = process
        self.batch = first_batch

    def __call__(self, features: list[dict]) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, self.process, self.batch)) & (2**63 - 1))
            self.batch += 1
            return self.collate(features)


def prepare_checkpoints(checkpoint_dir: Path, key: str) -> None:
    """Keep the checkpoints of an interrupted run with the same settings; clear anything else."""
    if resumable_checkpoint(checkpoint_dir, key):
        return
    if checkpoint_dir.exists():
        log.info("%s holds no checkpoint of this run; starting over", checkpoint_dir)
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True)
    (checkpoint_dir / FINGERPRINT_FILE).write_text(json.dumps({"key": key}) + "\n")


def resume_point(args: TrainingArguments, checkpoint_dir: Path, key: str) -> tuple[str | None, int]:
    """(checkpoint to resume from or None, its step); the main process prepares the directory."""
    with args.main_process_first(desc="preparing checkpoints"):
        if args.process_index == 0:
            prepare_checkpoints(checkpoint_dir, key)
    resume = resumable_checkpoint(checkpoint_dir, key)  # the same answer on every process
    if resume:
        log.info("resuming from %s", resume)
    return resume, checkpoint_folders(checkpoint_dir)[Path(resume)] if resume else 0


def clear_checkpoints(checkpoint_dir: Path | None) -> None:
    """The run finished: nothing is left to resume (no-op for a stage run without them)."""
    for done in checkpoint_folders(checkpoint_dir) if checkpoint_dir else []:
        shutil.rmtree(done)
