"""Classifiers over other features than BERT's pooled [CLS] (Sun et al. 2019, 5.3.1 and 5.3.2).

- feature: the last layer's [CLS] (`cls`), or the mean, max or concatenation of the [CLS] hidden
  states of the last `feature_layers` layers (the paper's Table 3), or `sentence`: the
  L2-normalised mean of the last layer's token states over the attention mask, the embedding a
  mean-pooling sentence-transformer (the embedded all-MiniLM-L6-v2) is trained to give, which
  the contrastive method (models.methods.contrastive) tunes;
- hierarchical pooling of long texts: each piece of a text (data.encoding, `hierarchical`) is
  encoded on its own, and the pieces' features are pooled by mean, max or learned self-attention
  (a score per piece from a small tanh layer, softmax over the text's pieces) before the classifier.

Transformers has neither, hence this module. The default finetune (pooled [CLS] of whole, truncated
texts) stays a stock AutoModelForSequenceClassification; a PooledClassifier is saved as the
encoder's standard HF directory (config with id2label) plus `bertfit_head.safetensors`, its spec
in the directory's manifest (models.manifest), and loads back through models.family.load_trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    AutoModel,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from bertfit.models.last_layer import first_token_only
from bertfit.models.loading import LOAD_KWARGS, classifier_config, resolve_model_name

HEAD_WEIGHTS = "bertfit_head.safetensors"
FEATURES = ("cls", "mean", "max", "concat", "sentence")
CHUNK_POOLING = ("mean", "max", "attention")


@dataclass(frozen=True)
class HeadSpec:
    feature: str  # cls | mean | max | concat | sentence
    feature_layers: int  # the last k layers' [CLS] for mean / max / concat
    chunk_pooling: str | None  # mean | max | attention for hierarchical inputs, else None

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise ValueError(
                f"finetune.feature must be one of {list(FEATURES)}, got {self.feature!r}"
            )
        if self.chunk_pooling is not None and self.chunk_pooling not in CHUNK_POOLING:
            raise ValueError(
                f"finetune.chunk_pooling must be one of {list(CHUNK_POOLING)}, "
                f"got {self.chunk_pooling!r}"
            )


class PooledClassifier(nn.Module):
    """An encoder, a feature from its [CLS] states, optional pooling over pieces, a classifier."""

    def __init__(self, encoder: PreTrainedModel, spec: HeadSpec) -> None:
        super().__init__()
        config = encoder.config
        layers = config.num_hidden_layers
        if spec.feature in ("mean", "max", "concat") and not 1 <= spec.feature_layers <= layers:
            raise ValueError(
                f"finetune.feature_layers must be in [1, {layers}] (the encoder's layers), "
                f"got {spec.feature_layers}"
            )
        if spec.feature != "sentence":  # the others are [CLS] states (models.last_layer)
            first_token_only(encoder)
        self.encoder = encoder
        self.config = config  # num_labels / id2label, and the depth for layer-wise decay
        self.spec = spec
        width = config.hidden_size * (spec.feature_layers if spec.feature == "concat" else 1)
        if spec.chunk_pooling == "attention":
            self.attention = nn.Sequential(
                nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1, bias=False)
            )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(width, config.num_labels)
        for module in self.head_modules():
            module.apply(encoder._init_weights)  # the encoder's own initialisation

    def head_modules(self) -> list[nn.Module]:
        return [m for m in (getattr(self, "attention", None), self.classifier) if m is not None]

    def features(self, **inputs: torch.Tensor) -> torch.Tensor:
        if self.spec.feature == "sentence":
            return sentence_embedding(self.encoder(**inputs).last_hidden_state, inputs)
        deep = self.spec.feature != "cls"
        out = self.encoder(**inputs, output_hidden_states=deep)
        if not deep:
            return out.last_hidden_state[:, 0]
        cls = torch.stack([h[:, 0] for h in out.hidden_states[-self.spec.feature_layers :]], 1)
        if self.spec.feature == "mean":
            return cls.mean(1)
        if self.spec.feature == "max":
            return cls.max(1).values
        return cls.flatten(1)

    def pool(self, pieces: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """[pieces, width] features, `counts` pieces per text in order -> [texts, width]."""
        per_text = pad_sequence(list(pieces.split(counts.tolist())), batch_first=True)
        mask = torch.arange(per_text.size(1), device=counts.device)[None, :] < counts[:, None]
        if self.spec.chunk_pooling == "mean":
            return (per_text * mask[..., None]).sum(1) / counts[:, None].to(per_text.dtype)
        if self.spec.chunk_pooling == "max":
            return per_text.masked_fill(~mask[..., None], torch.finfo(per_text.dtype).min).max(1)[0]
        scores = self.attention(per_text).squeeze(-1).masked_fill(~mask, float("-inf"))
        return (scores.softmax(-1)[..., None] * per_text).sum(1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        chunk_counts: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        features = self.features(**inputs)
        if self.spec.chunk_pooling is not None:
            if chunk_counts is None:
                raise ValueError("a hierarchical classifier needs chunk_counts (ChunkCollator)")
            features = self.pool(features, chunk_counts)
        logits = self.classifier(self.dropout(features))
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, model_dir: Path) -> None:
        """The encoder's HF directory and the head's own weights (its spec: the manifest)."""
        self.encoder.save_pretrained(model_dir)
        head = {
            k: v.contiguous() for k, v in self.state_dict().items() if not k.startswith("encoder.")
        }
        save_file(head, Path(model_dir) / HEAD_WEIGHTS, metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, model_dir: Path, spec: HeadSpec) -> PooledClassifier:
        model = cls(AutoModel.from_pretrained(model_dir, **LOAD_KWARGS), spec)
        missing, unexpected = model.load_state_dict(
            load_file(Path(model_dir) / HEAD_WEIGHTS), strict=False
        )
        if unexpected or any(not k.startswith("encoder.") for k in missing):
            raise RuntimeError(f"{model_dir}: head weights do not fit ({missing}, {unexpected})")
        return model


def sentence_embedding(states: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The L2-normalised mean of the token states over the attention mask (sentence-transformers'
    Pooling(mean) then Normalize)."""
    mask = inputs.get("attention_mask")
    if mask is None:
        mean = states.mean(1)
    else:
        weights = mask[..., None].to(states.dtype)
        mean = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return nn.functional.normalize(mean, dim=-1)


def pooled_classifier(
    model_name: str, labels: list[str], spec: HeadSpec, problem: str = "classification"
) -> PooledClassifier:
    """A fresh PooledClassifier on the encoder `model_name`, for `labels` (id order)."""
    config = classifier_config(model_name, labels, problem)
    encoder = AutoModel.from_pretrained(
        resolve_model_name(model_name), config=config, **LOAD_KWARGS
    )
    return PooledClassifier(encoder, spec)


class ChunkCollator:
    """Batches of texts given as lists of pieces: every piece a row, plus pieces per text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None):
        self.pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in rows[0]]
        pieces = [
            {k: row[k][i] for k in keys} for row in rows for i in range(len(row["input_ids"]))
        ]
        batch = dict(self.pad(pieces))
        batch["chunk_counts"] = torch.tensor([len(row["input_ids"]) for row in rows])
        if "labels" in rows[0]:
            batch["labels"] = torch.tensor([row["labels"] for row in rows])
        return batch
