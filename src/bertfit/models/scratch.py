"""Models built from scratch: a config plus a tokenizer trained on the collected text.

The offline route for the text-to-text family (no pretrained T5 ships in any wheel) and for
domains or languages an existing vocabulary reads badly. `model.name: scratch:<config.json>`
names a Hugging Face config file (model_type and sizes, e.g. t5 with d_model 64); collect trains
a tokenizer on the text the pipeline collected and writes the initialised model to its scratch
directory, which pretrain starts from instead of a downloaded checkpoint.

Tokenizers: for T5-family configs (model_type t5, mt5, umt5) a sentencepiece unigram model as T5
uses (pad 0, eos 1, unk 2, no bos) plus 100 `<extra_id_k>` sentinels for span corruption; for
BERT-style encoders a WordPiece vocabulary with [PAD] [UNK] [CLS] [SEP] [MASK], trained by the
`tokenizers` library through `train_new_from_iterator`. sentencepiece trains the unigram model;
transformers has no trainer for it, and its T5Tokenizer is built from the trained pieces.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSeq2SeqLM,
    BertTokenizerFast,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    T5Tokenizer,
)

from bertfit.params import SCRATCH_PREFIX
from bertfit.reporting import make_readable, write_json

log = logging.getLogger(__name__)


SCRATCH_FILE = "bertfit_scratch.json"  # what collect wrote to the scratch directory
SENTINELS = 100  # T5's <extra_id_0> ... <extra_id_99>
UNIGRAM_TYPES = ("t5", "mt5", "umt5")
WORDPIECE_TYPES = ("bert",)


def is_scratch(name: str) -> bool:
    return name.startswith(SCRATCH_PREFIX)


def read_scratch_config(name: str, root: Path = Path(".")) -> dict[str, Any]:
    """The config file a `scratch:` model name points to, read and checked."""
    path = root / name.removeprefix(SCRATCH_PREFIX)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.name {name!r}: {path} not found; `scratch:` names a JSON config file "
            "(model_type and sizes) to build a model from"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    kind = data.get("model_type")
    if kind not in UNIGRAM_TYPES + WORDPIECE_TYPES:
        raise ValueError(
            f"{path}: model_type must be one of {list(UNIGRAM_TYPES + WORDPIECE_TYPES)} to build "
            f"from scratch, got {kind!r}"
        )
    if not isinstance(data.get("vocab_size"), int) or data["vocab_size"] < 200:
        raise ValueError(
            f"{path}: vocab_size (the tokenizer's size, sentinels included) must be an integer "
            f">= 200, got {data.get('vocab_size')!r}"
        )
    return data


def train_unigram_tokenizer(texts: list[str], vocab_size: int) -> T5Tokenizer:
    """A T5 tokenizer: sentencepiece unigram over `texts`, pad 0, eos 1, unk 2, 100 sentinels.

    `vocab_size` counts the sentinels; a small corpus may yield fewer pieces (no hard limit).
    """
    if not texts:
        raise ValueError("no text to train a tokenizer on; collect found no train text")
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=proto,
        vocab_size=vocab_size - SENTINELS,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        character_coverage=1.0,  # every character of the corpus, prefixes' colons included
        num_threads=1,  # deterministic
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    return T5Tokenizer(vocab=pieces, extra_ids=SENTINELS)


def train_wordpiece_tokenizer(texts: list[str], vocab_size: int) -> BertTokenizerFast:
    """A lower-casing BERT WordPiece tokenizer over `texts` (tokenizers' trainer)."""
    if not texts:
        raise ValueError("no text to train a tokenizer on; collect found no train text")
    specials = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    template = BertTokenizerFast(vocab=specials, do_lower_case=True)
    return template.train_new_from_iterator(iter(texts), vocab_size)


def scratch_config(data: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The HF config with the trained tokenizer's size and special ids."""
    fields = {k: v for k, v in data.items() if k != "model_type"}
    fields["vocab_size"] = len(tokenizer)
    fields["pad_token_id"] = tokenizer.pad_token_id
    if data["model_type"] in UNIGRAM_TYPES:
        # T5 starts decoding from pad; a config built by hand must say so (REFERENCE.md)
        fields |= {"eos_token_id": tokenizer.eos_token_id, "decoder_start_token_id": 0}
    return AutoConfig.for_model(data["model_type"], **fields)


def build_scratch_model(
    data: dict[str, Any], texts: list[str], output_dir: Path, seed: int, max_seq_length: int
) -> Path:
    """Train the tokenizer, initialise the model with `seed`, save both as a HF directory."""
    if data["model_type"] in UNIGRAM_TYPES:
        tokenizer: PreTrainedTokenizerBase = train_unigram_tokenizer(texts, data["vocab_size"])
    else:
        tokenizer = train_wordpiece_tokenizer(texts, data["vocab_size"])
    tokenizer.model_max_length = max_seq_length
    config = scratch_config(data, tokenizer)
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModel
    model = auto.from_config(config)
    if config.is_encoder_decoder:
        model.generation_config.decoder_start_token_id = 0
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    make_readable(output_dir)
    log.info(
        "built %s from scratch: %d parameters, tokenizer of %d tokens trained on %d texts",
        config.model_type,
        model.num_parameters(),
        len(tokenizer),
        len(texts),
    )
    return output_dir


def write_scratch_dir(
    name: str, texts: list[str], scratch_dir: Path, seed: int, max_seq_length: int, root: Path
) -> dict[str, Any]:
    """collect's scratch output: the built model for a `scratch:` name, else only a note."""
    scratch_dir.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"model_name": name, "built": is_scratch(name)}
    if is_scratch(name):
        data = read_scratch_config(name, root)
        build_scratch_model(data, texts, scratch_dir, seed, max_seq_length)
        info |= {"model_type": data["model_type"], "tokenizer_texts": len(texts)}
    write_json(scratch_dir / SCRATCH_FILE, info)
    return info


def scratch_model_dir(name: str, scratch_dir: Path) -> str:
    """What pretrain starts from: the directory collect built for a `scratch:` name, else name."""
    if not is_scratch(name):
        return name
    info_file = scratch_dir / SCRATCH_FILE
    if not (scratch_dir / "config.json").is_file() or not info_file.is_file():
        raise FileNotFoundError(
            f"model.name {name!r}: {scratch_dir} holds no model built from scratch; run the "
            "collect stage first (dvc repro)"
        )
    built = json.loads(info_file.read_text(encoding="utf-8"))
    if built.get("model_name") != name:
        raise ValueError(
            f"{scratch_dir} was built for model.name {built.get('model_name')!r}, not {name!r}; "
            "re-run collect"
        )
    return str(scratch_dir)
