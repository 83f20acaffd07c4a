"""The model-family seam: everything that depends on what kind of model bertfit trains.

A family loads a model for a task, builds its inputs, collates them and `score`s a batch into one
score per class, shape [batch, num_labels]. Evaluation, model selection, search and prediction
call `score` and nothing family-specific, so a text-to-text family can later answer with
summed label-word log-likelihoods without touching them (lm-evaluation-harness's "score each
choice, take the argmax"). The family is chosen from the model's own config, never its name.

Implemented: `encoder` (BERT-style): the stock sequence-classification head on the pooled [CLS],
models.pooling's features and hierarchical chunk pooling, or models.heads' multitask heads;
its score is the classifier's logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from bertfit.data.encoding import Encoder, Preprocessing
from bertfit.data.tasks import Task
from bertfit.models.heads import MultiTaskModel
from bertfit.models.loading import LOAD_KWARGS, load_classifier, load_config, load_tokenizer
from bertfit.models.manifest import Manifest, read_manifest
from bertfit.models.pooling import ChunkCollator, HeadSpec, PooledClassifier, pooled_classifier

Batch = dict[str, torch.Tensor]


class EncoderFamily:
    """BERT-style encoders with a classification head; a batch's scores are its logits."""

    name = "encoder"

    def classifier(self, model_name: str, task: Task, head: HeadSpec | None) -> nn.Module:
        """A classifier for `task` on the encoder `model_name`: stock head, or a pooled one."""
        if head is None:
            return load_classifier(model_name, task.labels, task.problem)
        return pooled_classifier(model_name, task.labels, head, task.problem)

    def encoder(
        self, tokenizer: PreTrainedTokenizerBase, prep: Preprocessing, section: str = "finetune"
    ) -> Encoder:
        return Encoder(tokenizer, prep, section)

    def collator(
        self, tokenizer: PreTrainedTokenizerBase, prep: Preprocessing
    ) -> DataCollatorWithPadding | ChunkCollator:
        """Dynamic padding (to a multiple of 8 on a GPU); every piece a row when hierarchical."""
        pad_to = 8 if torch.cuda.is_available() else None
        collate = ChunkCollator if prep.truncation == "hierarchical" else DataCollatorWithPadding
        return collate(tokenizer, pad_to_multiple_of=pad_to)

    def score(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """[batch, num_labels]: class logits, or the one regression output."""
        return model(**batch).logits

    def save(self, model: nn.Module, model_dir: Path) -> None:
        """Weights in the standard files: save_pretrained, plus the head files of its kind."""
        model.save_pretrained(model_dir)

    def load(self, model_dir: Path, manifest: Manifest) -> nn.Module:
        if manifest.head == "stock":
            return AutoModelForSequenceClassification.from_pretrained(model_dir, **LOAD_KWARGS)
        if manifest.head == "pooled":
            return PooledClassifier.from_pretrained(model_dir, HeadSpec(**manifest.head_config))
        if manifest.head == "multitask":
            return MultiTaskModel.from_pretrained(model_dir)
        raise ValueError(
            f"{model_dir}: a bare encoder (head {manifest.head!r}, from the {manifest.stage} "
            "stage) has no classifier to score with; use models/finetune"
        )


FAMILIES = {"encoder": EncoderFamily()}


def family_of(config: PretrainedConfig, name: str = "the model") -> EncoderFamily:
    """The family a model belongs to, from its config."""
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"{name} is an encoder-decoder ({config.model_type}); bertfit trains BERT-style "
            "encoders so far (the text-to-text family is not implemented yet)"
        )
    return FAMILIES["encoder"]


def family_for(model_name: str) -> EncoderFamily:
    return family_of(load_config(model_name), repr(model_name))


@dataclass
class Trained:
    """A model directory bertfit wrote, loaded: the model, its tokenizer, manifest and family."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    manifest: Manifest
    family: EncoderFamily

    @property
    def task(self) -> Task:
        if self.manifest.task is None:
            raise ValueError(f"a {self.manifest.head} model classifies no single task")
        return self.manifest.task

    def encoder(self) -> Encoder:
        if self.manifest.preprocessing is None:
            raise ValueError(f"the {self.manifest.stage} model records no preprocessing")
        return self.family.encoder(self.tokenizer, self.manifest.preprocessing)

    def collator(self) -> Any:
        return self.family.collator(self.tokenizer, self.manifest.preprocessing)


def load_trained(model_dir: Path) -> Trained:
    """Any model directory bertfit wrote, rebuilt from its manifest (models.manifest)."""
    manifest = read_manifest(model_dir)
    if manifest.family not in FAMILIES:
        raise ValueError(
            f"{model_dir}: model family {manifest.family!r} is not known; known: {list(FAMILIES)}"
        )
    family = FAMILIES[manifest.family]
    model = family.load(Path(model_dir), manifest)
    return Trained(model, load_tokenizer(str(model_dir)), manifest, family)
