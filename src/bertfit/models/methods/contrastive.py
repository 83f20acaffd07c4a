"""`contrastive`: SetFit's recipe (Tunstall et al. 2022) for a few labelled rows per class.

Pairs of train rows (same class: similar, cosine 1; different classes: cosine 0) tune the
encoder's sentence embedding (models.pooling's `sentence` feature: the normalised token mean a
sentence-transformer such as the embedded all-MiniLM-L6-v2 is trained to give), then a
logistic-regression head is fitted on the tuned embeddings. It trains in its own loop
(training.contrastive, the finetune stage's `loop`), not the Trainer's.

The result is an ordinary pooled classifier: every weight is the model's (the head's coefficients
copied into its torch Linear, saved as safetensors, no pickled estimator), so it saves and loads
as `full` does and predict, evaluate, the model card, serve and the ONNX export read it as any
pooled head. Only an encoder that classifies can use it: pairs need classes, and a seq2seq model
has no embedding head.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from bertfit.data.tasks import Task
from bertfit.models.methods.base import Family, Heads
from bertfit.models.methods.full import Full
from bertfit.models.pooling import HeadSpec
from bertfit.params import AdaptableParams

SENTENCE = HeadSpec("sentence", 1, None)


class Contrastive(Full):
    """Every encoder weight tunes on sentence pairs; a logistic head on the embedding."""

    name = "contrastive"
    loop = "contrastive"  # training.finetune's own-loop key: not the Trainer

    def card_tags(self) -> list[str]:
        return ["setfit", "contrastive"]

    def describe(self, family: Family, head: str) -> str:
        return (
            "an encoder tuned on sentence pairs (SetFit's recipe) with a logistic-regression head "
            "on its sentence embedding (`bertfit_head.safetensors`), which the stock pipeline "
            "does not load"
        )

    def unfit(self, family: Family, task: Task, head: HeadSpec | None) -> str | None:
        """Why this method cannot train `task` on `family` with `head`, or None when it can."""
        if family.name != "encoder":
            return f"it tunes an encoder's sentence embedding, and a {family.name} model has none"
        if task.problem != "classification":
            return f"its pairs need classes, and {task.name} is a {task.problem} task"
        if head is not None and head != SENTENCE:
            return (
                f"its head reads the sentence embedding, not feature {head.feature}"
                + (f" with {head.chunk_pooling} chunk pooling" if head.chunk_pooling else "")
                + ": set finetune.feature to cls (the default) or sentence and a truncation "
                "other than hierarchical"
            )
        return None

    def head(self, family: Family, task: Task, head: HeadSpec | None) -> HeadSpec:
        """The pooled `sentence` head, or a params error naming what does not fit."""
        reason = self.unfit(family, task, head)
        if reason is not None:
            raise ValueError(f"params.yaml: finetune.method contrastive cannot be used: {reason}")
        return SENTENCE

    def wrap_tasks(
        self,
        model: nn.Module,
        family: Family,
        tasks: list[Task],
        params: AdaptableParams,
        model_dir: Path,
        max_seq_length: int,
    ) -> nn.Module:
        raise ValueError("params.yaml: multitask.method cannot be contrastive (finetune only)")

    def save_tasks(
        self,
        model: nn.Module,
        family: Family,
        tasks: list[Task],
        configs: dict[str, dict],
        model_dir: Path,
    ) -> tuple[str, Heads, str | None]:
        raise ValueError("params.yaml: multitask.method cannot be contrastive (finetune only)")
