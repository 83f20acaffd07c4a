"""Resumable training checkpoints: a killed stage resumes from its last one, and only its own.

The checkpoint directory is a `persist: true` DVC output, so it survives a failed or killed
`dvc repro`. A fingerprint of the run (model name, params, corpus bytes) is stamped into it; a
run with other settings or another corpus clears it and starts over instead of resuming a
checkpoint that belongs to a different run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from bertfit.params import Strict

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"


def fingerprint(model_name: str, params: Strict, data_files: list[Path]) -> str:
    h = hashlib.sha256(json.dumps([model_name, params.model_dump()], sort_keys=True).encode())
    for path in data_files:
        h.update(path.read_bytes())
    return h.hexdigest()


def resumable_checkpoint(checkpoint_dir: Path, key: str) -> str | None:
    """The last checkpoint in checkpoint_dir, if the directory holds this very run's."""
    stamp = checkpoint_dir / FINGERPRINT_FILE
    if stamp.is_file() and json.loads(stamp.read_text())["key"] == key:
        return get_last_checkpoint(str(checkpoint_dir))
    return None


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
    return resume, int(Path(resume).name.split("-")[1]) if resume else 0


def clear_checkpoints(checkpoint_dir: Path) -> None:
    """The run finished: nothing is left to resume."""
    for done in checkpoint_dir.glob("checkpoint-*"):
        shutil.rmtree(done)
