"""Multitask heads on disk: `multitask_heads/` beside the shared encoder's HF directory.

One safetensors file per task with the head's own weights (everything of the task's
sequence-classification model but the encoder) and `tasks.json` with each task's problem type,
labels and model class, so finetune can start the target's head from its multitask head.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from bertfit.reporting import write_json

log = logging.getLogger(__name__)

HEADS_DIR = "multitask_heads"
HEADS_FILE = "tasks.json"


@dataclass
class TaskHead:
    problem: str  # classification | regression
    labels: list[str]  # class names in id order; empty for regression
    architecture: str  # the sequence-classification class the weights belong to
    state: dict[str, torch.Tensor]


def save_heads(model_dir: Path, heads: dict[str, TaskHead]) -> None:
    heads_dir = model_dir / HEADS_DIR
    heads_dir.mkdir(parents=True)
    meta = {}
    for task, head in heads.items():
        state = {k: v.detach().contiguous() for k, v in head.state.items()}
        save_file(state, heads_dir / f"{task}.safetensors", metadata={"format": "pt"})
        meta[task] = {
            "problem": head.problem,
            "labels": head.labels,
            "architecture": head.architecture,
            "file": f"{task}.safetensors",
        }
    write_json(heads_dir / HEADS_FILE, {"tasks": meta})


def load_task_head(
    model: PreTrainedModel,
    model_dir: Path,
    task: str,
    labels: list[str],
    problem: str = "classification",
) -> bool:
    """Load `task`'s multitask head into a sequence classifier when the label sets match."""
    meta_file = Path(model_dir) / HEADS_DIR / HEADS_FILE
    if not meta_file.is_file():
        log.info("%s has no multitask heads: the %s head starts fresh", model_dir, task)
        return False
    meta = json.loads(meta_file.read_text(encoding="utf-8"))["tasks"].get(task)
    if meta is None:
        log.info("no multitask head for %s in %s: the head starts fresh", task, model_dir)
        return False
    if meta["problem"] != problem or meta["labels"] != labels:
        log.warning(
            "the multitask head of %s has %s labels %s, the task now %s %s: the head starts fresh",
            task,
            meta["problem"],
            meta["labels"],
            problem,
            labels,
        )
        return False
    if meta["architecture"] != type(model).__name__:
        raise ValueError(
            f"the multitask head of {task} belongs to {meta['architecture']}, the model is "
            f"{type(model).__name__}; run multitask and finetune on the same base model"
        )
    state = load_file(Path(model_dir) / HEADS_DIR / meta["file"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(k in state for k in missing):
        raise RuntimeError(f"multitask head of {task} does not fit: {missing}, {unexpected}")
    log.info("the %s head starts from its multitask head (%s)", task, ", ".join(sorted(state)))
    return True
