"""Shared fixtures: offline mode, real data samples, a tiny BERT built locally."""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tests.postgres import postgres_url  # noqa: F401 (a fixture, for the tests that ask for it)

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# `make test` runs the suite in one pytest-xdist worker per core: each worker, and the stage
# processes it starts, computes on one thread, so the workers do not fight over the cores
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# finetune params for the tiny model: a high rate so two epochs learn something
TINY_PRETRAIN = {
    "corpus": "within_task",
    "seed": 0,
    "max_seq_length": 32,
    "packing": True,
    "mlm_probability": 0.15,
    "noise_density": 0.15,
    "mean_noise_span_length": 3.0,
    "whole_word_mask": False,
    "optimizer": "adamw",
    "adafactor_relative_step": False,
    "learning_rate": 3e-3,
    "layer_decay": 1.0,
    "weight_decay": 0.0,
    "max_steps": 20,
    "warmup_ratio": 0.0,
    "warmup_steps": None,
    "lr_scheduler_type": "linear",
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 16,
    "heldout_max_blocks": None,
    "gradient_accumulation_steps": 1,
    "save_steps": 10,
    "head_warmup_steps": 0,
    "head_warmup_learning_rate": 1e-3,
    "eval_steps": None,
    "logging_steps": 5,
    "mixed_precision": "no",
}

TINY_FINETUNE = {
    "seed": 1,
    "optimizer": "adamw",
    "adafactor_relative_step": False,
    "learning_rate": 1e-3,
    "layer_decay": 0.95,
    "weight_decay": 0.01,
    "num_train_epochs": 2,
    # the data-sized training length and long-text length off (training.budget): the tests of
    # other behaviour count epochs and tokens; tests/test_budget.py turns them on
    "min_train_steps": None,
    "max_train_epochs": 100,
    "min_train_batch_size": None,
    "min_validations": 1,
    "early_stopping_patience": None,
    "selection_tolerance": 0.0,  # the strict best: tests of selection count on its step
    "long_text_max_seq_length": None,
    "long_text_share": 0.5,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 32,
    "gradient_accumulation_steps": 1,
    "warmup_ratio": 0.1,
    "warmup_steps": None,
    "lr_scheduler_type": "linear",
    "train_sampling_strategy": "group_by_length",
    "truncation": "head_tail",
    "head_tokens": 8,
    "chunk_stride": None,
    "max_chunks": 4,
    "chunk_pooling": "mean",
    "feature": "cls",
    "feature_layers": 2,
    "metric_for_best_model": "task",
    "max_train_samples": None,
    "max_validation_samples": None,
    "logging_steps": 5,
    "init_head_from_multitask": True,
    "label_scoring": "sum",
    "method": "full",
    "num_virtual_tokens": 4,
    "prompt_init": "text",
    "prompt_init_text": None,
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "lora_target_modules": None,
    "mixed_precision": "no",
    # the few-label switch off: the tests of other behaviour train with `method` on a few rows
    "few_labels_method": None,
    "few_labels_per_class": 64,
    "contrastive_iterations": 2,
    "contrastive_max_pairs": None,
    "contrastive_batch_size": 8,
    "contrastive_learning_rate": 1e-3,
}

TINY_MULTITASK = {
    "enabled": True,
    "tasks": ["trec"],
    "seed": 2,
    "sampling": "proportional",
    "temperature": 2.0,
    "mixing_limit": None,
    "label_scoring": "sum",
    "optimizer": "adamw",
    "adafactor_relative_step": False,
    "learning_rate": 1e-3,
    "layer_decay": 1.0,
    "weight_decay": 0.0,
    "max_steps": 30,
    "warmup_ratio": 0.0,
    "warmup_steps": None,
    "lr_scheduler_type": "linear",
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 32,
    "gradient_accumulation_steps": 1,
    "eval_steps": 10,
    "logging_steps": 5,
    "truncation": "head_tail",
    "head_tokens": 8,
    "mixed_precision": "no",
    "method": "full",
    "num_virtual_tokens": 4,
    "prompt_init": "text",
    "prompt_init_text": None,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def live_curve(report_dir: Path, stage: str, name: str) -> pd.DataFrame:
    """One curve of a stage's DVCLive log (training.live): `step` and the value, named by the
    file (`loss`, `validation/accuracy`, `validation/trec/mcc`)."""
    path = report_dir / "live" / "plots" / "metrics" / stage / f"{name}.tsv"
    return pd.read_csv(path, sep="\t", float_precision="round_trip")


def live_training(report_dir: Path, stage: str) -> pd.DataFrame:
    """A stage's training curves from its DVCLive log: a row per logging step with `step`,
    `loss` and `learning_rate`."""
    loss = live_curve(report_dir, stage, "loss")
    return loss.merge(live_curve(report_dir, stage, "learning_rate"), on="step", how="outer")


def live_validation(report_dir: Path, metrics: list[str]) -> pd.DataFrame:
    """finetune's validation curves of `metrics` from its DVCLive log, a row per validation."""
    curves = [live_curve(report_dir, "finetune", f"validation/{m}") for m in metrics]
    table = curves[0]
    for curve in curves[1:]:
        table = table.merge(curve, on="step")
    return table


def live_files(report_dir: Path) -> dict[str, str]:
    """Every file of a stage's DVCLive log, by its path in the log, with its text."""
    live = report_dir / "live"
    return {str(f.relative_to(live)): f.read_text() for f in sorted(live.rglob("*")) if f.is_file()}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# run.json's values that measure the machine or the run's history, not its result
MACHINE_KEYS = (
    "head_warmup_runtime_s",
    "resumed_from_step",
    "tokens_per_s",
    "train_examples_per_s",
    "train_runtime_s",
    "wall_s",
)


def stage_record(report_dir: Path) -> dict:
    """A stage's whole record (run.json) less the machine's times and speeds."""
    record = read_json(report_dir / "run.json")
    return {k: v for k, v in record.items() if k not in MACHINE_KEYS}


def curve_files(report_dir: Path) -> dict[str, str]:
    """The stage's curve tables (training.live's curves/), by name, with their text."""
    return {f.name: f.read_text() for f in sorted((report_dir / "curves").glob("*.json"))}


def read_jsonl_gz(path: Path, n: int | None = None) -> list[dict]:
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if n is not None and len(rows) == n:
                break
    return rows


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not (SHARED_DATASETS / "manifest.json").is_file():
        pytest.fail(f"{SHARED_DATASETS} is missing: the tests read real samples from it")
    return SHARED_DATASETS


def build_tiny_bert(
    model_dir: Path, texts: list[str], vocab_size: int = 600, max_position_embeddings: int = 128
) -> Path:
    """A 2-layer BERT (hidden 32) and a WordPiece vocabulary of the texts' commonest words."""
    from transformers import BertConfig, BertModel, BertTokenizer

    model_dir.mkdir(parents=True, exist_ok=True)
    words = Counter(w for t in texts for w in re.findall(r"[a-z0-9]+", t.lower()))
    chars = sorted({c for w in words for c in w})
    vocab = SPECIAL_TOKENS + chars + [f"##{c}" for c in chars]
    vocab += [w for w, _ in words.most_common() if w not in vocab][: vocab_size - len(vocab)]
    vocab_file = model_dir.parent / f"{model_dir.name}-vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(vocab_file))
    tokenizer.model_max_length = max_position_embeddings
    tokenizer.save_pretrained(model_dir)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=max_position_embeddings,
    )
    BertModel(config).save_pretrained(model_dir)
    return model_dir


# a 2-layer T5 (d_model 32): the scratch config of the tests' tiny T5 models
TINY_T5 = {
    "model_type": "t5",
    "vocab_size": 400,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "dropout_rate": 0.0,
}


def build_tiny_t5(model_dir: Path, texts: list[str]) -> Path:
    """TINY_T5 with a sentencepiece unigram tokenizer trained on `texts`."""
    from bertfit.models.scratch import build_scratch_model

    return build_scratch_model(TINY_T5, texts, model_dir, seed=0, max_seq_length=128)


@pytest.fixture(scope="session")
def trec_sample(shared_datasets: Path) -> dict[str, list[dict]]:
    """The first rows of the real TREC splits (6 labels, short questions)."""
    return {
        s: read_jsonl_gz(shared_datasets / "trec" / f"{s}.jsonl.gz", n)
        for s, n in (("train", 240), ("validation", 60), ("test", 60))
    }


@pytest.fixture(scope="session")
def tiny_model_dir(
    tmp_path_factory: pytest.TempPathFactory, trec_sample: dict[str, list[dict]]
) -> Path:
    texts = [r["text"] for rows in trec_sample.values() for r in rows]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert", texts)


@pytest.fixture(scope="session")
def tiny_t5_dir(
    tmp_path_factory: pytest.TempPathFactory, trec_sample: dict[str, list[dict]]
) -> Path:
    texts = [r["text"] for rows in trec_sample.values() for r in rows]
    prefixes = ["trec: ", "mrpc sentence1: ", "sentence2: ", "toy: ", "q: ", "yes", "no"]
    return build_tiny_t5(tmp_path_factory.mktemp("tiny") / "t5", texts + prefixes)


@pytest.fixture()
def trec_files(tmp_path: Path, trec_sample: dict[str, list[dict]]) -> dict:
    """A files-source task made of real TREC rows (the catalogue entry; files in tmp_path)."""
    import pandas as pd

    for split, rows in trec_sample.items():
        pd.DataFrame(rows).to_json(tmp_path / f"{split}.jsonl", orient="records", lines=True)
    return {
        "trec": {
            "domain": "question",
            "source": {
                "kind": "files",
                "train": "train.jsonl",
                "validation": "validation.jsonl",
                "test": "test.jsonl",
            },
        }
    }


@pytest.fixture()
def progress_bar_state():
    """Puts the global progress-bar switches of datasets, transformers and huggingface_hub back
    as they were after a test that flips them (cli.configure_logging does, off a terminal)."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars
    from datasets.utils import enable_progress_bars as enable_datasets_bars
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    before = (
        are_progress_bars_disabled(),
        hf_logging.is_progress_bar_enabled(),
        hub_utils.are_progress_bars_disabled(),
    )
    yield
    (disable_progress_bars if before[0] else enable_datasets_bars)()
    (hf_logging.enable_progress_bar if before[1] else hf_logging.disable_progress_bar)()
    (hub_utils.disable_progress_bars if before[2] else hub_utils.enable_progress_bars)()
