"""Classification heads on an encoder: a fresh one for a single task (load_classifier), and the
multi-task heads (Sun et al. 2019, 5.2): one shared encoder, one classification head per task.

Each task's head is its architecture's own sequence-classification head (BERT: pooler, dropout,
linear), built with AutoModelForSequenceClassification and re-pointed at one shared encoder
module, so classification (cross-entropy) and regression (num_labels 1, MSE) come from
transformers, and finetune can load the target's head into the same class.

On disk: the encoder as a standard HF directory, plus `multitask_heads/<task>.safetensors` with
each head's own weights (everything of the task's classifier but the encoder); the manifest
(models.manifest) lists every head with its task, class and file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoModelForSequenceClassification, PreTrainedModel

from bertfit.data.tasks import Task
from bertfit.models.last_layer import first_token_only
from bertfit.models.loading import LOAD_KWARGS, classifier_config, load_with_fresh_head
from bertfit.models.manifest import MANIFEST_FILE, read_manifest
from bertfit.models.methods import method_in

log = logging.getLogger(__name__)

HEADS_DIR = "multitask_heads"


def load_classifier(
    name: str, labels: list[str], problem: str = "classification"
) -> PreTrainedModel:
    """The encoder with a fresh head for `labels` (id order = list order), or for regression;
    its last layer computes the [CLS] position only (models.last_layer).

    transformers' report that the head is newly initialised is held back (load_with_fresh_head):
    finetune says where the head starts from (fresh, or the target's multitask head)."""
    model, fresh = load_with_fresh_head(
        AutoModelForSequenceClassification, name, config=classifier_config(name, labels, problem)
    )
    log.debug("%s: a new %s head (%s)", name, problem, ", ".join(fresh))
    first_token_only(model.base_model)
    return model


class MultiTaskModel(nn.Module):
    """A shared encoder and one sequence-classification model per task built around it."""

    accepts_loss_kwargs = False  # the heads' losses are per-batch means (Trainer scales for GA)
    routes_tasks = True  # forward takes the batch's `task` (training.trainer passes it on)

    def __init__(self, encoder: PreTrainedModel, heads: dict[str, PreTrainedModel]) -> None:
        super().__init__()
        first_token_only(encoder)  # every head reads the [CLS] position (models.last_layer)
        self.encoder = encoder
        self.config = encoder.config  # encoder depth, for layer-wise decay
        for head in heads.values():
            setattr(head, head.base_model_prefix, encoder)  # drop its own encoder, share this one
        self.heads = nn.ModuleDict(heads)

    @classmethod
    def build(cls, model_name: str, tasks: list[Task]) -> MultiTaskModel:
        encoder = AutoModel.from_pretrained(model_name, **LOAD_KWARGS)
        return cls(encoder, {task.name: new_head(model_name, task) for task in tasks})

    def forward(self, task: str, **inputs: torch.Tensor) -> Any:
        return self.heads[task](**inputs)

    def head_state(self, task: str) -> dict[str, torch.Tensor]:
        """The task head's own weights: everything but the shared encoder."""
        head = self.heads[task]
        prefix = f"{head.base_model_prefix}."
        return {k: v for k, v in head.state_dict().items() if not k.startswith(prefix)}

    def save_heads(self, model_dir: Path, tasks: list[Task]) -> dict[str, dict[str, Any]]:
        """Each head's weights in multitask_heads/; returns the manifest's `heads` entries."""
        heads_dir = Path(model_dir) / HEADS_DIR
        heads_dir.mkdir(parents=True)
        entries = {}
        for task in tasks:
            state = {k: v.detach().contiguous() for k, v in self.head_state(task.name).items()}
            file = f"{HEADS_DIR}/{task.name}.safetensors"
            save_file(state, Path(model_dir) / file, metadata={"format": "pt"})
            architecture = type(self.heads[task.name]).__name__
            entries[task.name] = {"task": task, "architecture": architecture, "file": file}
        return entries

    @classmethod
    def from_pretrained(cls, model_dir: Path) -> MultiTaskModel:
        """What the multitask stage saved, every head loaded on the one encoder."""
        heads = read_manifest(model_dir).heads
        model = cls.build(str(model_dir), [h["task"] for h in heads.values()])
        for name, entry in heads.items():
            load_head_state(model.heads[name], Path(model_dir) / entry["file"], name)
        return model


def new_head(model_name: str, task: Task) -> PreTrainedModel:
    """`task`'s sequence-classification model, freshly initialised, for a shared encoder to be
    put in (from_config builds a throw-away encoder too; the caller replaces it)."""
    return AutoModelForSequenceClassification.from_config(
        classifier_config(model_name, task.labels, task.problem)
    )


def head_on(encoder: PreTrainedModel, model_name: str, task: Task) -> PreTrainedModel:
    """`task`'s classifier built around `encoder`, which it shares with other tasks' heads."""
    head = new_head(model_name, task)
    setattr(head, head.base_model_prefix, encoder)
    return head


def load_head_state(model: nn.Module, weights_file: Path, task: str) -> list[str]:
    """Load a saved head into a classifier; every saved tensor must find its place."""
    state = load_file(weights_file)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(k in state for k in missing):
        raise RuntimeError(f"multitask head of {task} does not fit: {missing}, {unexpected}")
    return sorted(state)


def load_task_head(model: PreTrainedModel, model_dir: Path, task: Task) -> bool:
    """Start `task`'s classifier from its multitask head, when multitask trained one for it."""
    if not (Path(model_dir) / MANIFEST_FILE).is_file():
        log.info("%s has no manifest: the %s head starts fresh", model_dir, task.name)
        return False
    manifest = read_manifest(model_dir)
    entry = manifest.heads.get(task.name)
    if entry is None:
        log.info("no multitask head for %s in %s: the head starts fresh", task.name, model_dir)
        return False
    if method_in(manifest, model_dir).adapter:  # each head is saved with its task's adapter
        log.info(
            "multitask tuned a prompt with each head (method %s): the %s head comes with its "
            "prompt under finetune.method prompt_tuning, and starts fresh otherwise",
            manifest.method,
            task.name,
        )
        return False
    saved: Task = entry["task"]
    if (saved.problem, saved.labels) != (task.problem, task.labels):
        log.warning(
            "the multitask head of %s has %s labels %s, the task now %s %s: the head starts fresh",
            task.name,
            saved.problem,
            saved.labels,
            task.problem,
            task.labels,
        )
        return False
    if entry["architecture"] != type(model).__name__:
        raise ValueError(
            f"the multitask head of {task.name} belongs to {entry['architecture']}, the model is "
            f"{type(model).__name__}; run multitask and finetune on the same base model"
        )
    loaded = load_head_state(model, Path(model_dir) / entry["file"], task.name)
    log.info("the %s head starts from its multitask head (%s)", task.name, ", ".join(loaded))
    return True
