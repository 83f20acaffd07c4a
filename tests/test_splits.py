from __future__ import annotations

import pandas as pd
import pytest

from bertfit.data.sources import RawTask
from bertfit.data.splits import (
    clean_split,
    drop_missing_labels,
    prepare_task,
    subsample,
    text_key,
)
from bertfit.params import SplitSpec

SPLIT = SplitSpec(validation_ratio=0.1, test_ratio=0.1)


def frame_from(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)[["text", "label"]]


@pytest.fixture()
def trec_train(trec_sample: dict[str, list[dict]]) -> pd.DataFrame:
    return frame_from(trec_sample["train"] + trec_sample["validation"] + trec_sample["test"])


def test_carved_splits_are_deterministic_stratified_and_disjoint(trec_train: pd.DataFrame) -> None:
    raw = RawTask("trec", {"train": trec_train})
    a = prepare_task(raw, SPLIT, seed=0, max_empty_ratio=0.0)
    b = prepare_task(raw, SPLIT, seed=0, max_empty_ratio=0.0)
    c = prepare_task(raw, SPLIT, seed=1, max_empty_ratio=0.0)
    for s in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(a.splits[s], b.splits[s])
    assert not a.splits["test"].equals(c.splits["test"])
    assert sum(len(df) for df in a.splits.values()) == len(trec_train)
    assert len(a.splits["test"]) == pytest.approx(0.1 * len(trec_train), abs=3)
    assert len(a.splits["validation"]) == pytest.approx(0.1 * len(trec_train), abs=3)
    # stratified: each split's label shares are close to the whole's
    whole = trec_train["label"].value_counts(normalize=True)
    test_share = a.splits["test"]["label"].value_counts(normalize=True)
    assert (test_share.reindex(whole.index, fill_value=0) - whole).abs().max() < 0.06
    keys = {s: set(text_key(df)) for s, df in a.splits.items()}
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]


def test_duplicates_stay_in_one_carved_split(trec_train: pd.DataFrame) -> None:
    dup = pd.concat([trec_train, trec_train.iloc[:50]], ignore_index=True)
    task = prepare_task(RawTask("t", {"train": dup}), SPLIT, seed=0, max_empty_ratio=0.0)
    assert task.counts["duplicates_removed_from_train"] == 0
    assert sum(len(df) for df in task.splits.values()) == len(dup)
    keys = {s: set(text_key(df)) for s, df in task.splits.items()}
    assert not keys["train"] & (keys["validation"] | keys["test"])


def test_given_splits_lose_train_rows_that_are_held_out() -> None:
    train = frame_from(
        [{"text": f"question {i}", "label": "A" if i % 2 else "B"} for i in range(20)]
    )
    test = frame_from([{"text": "question 3", "label": "A"}, {"text": "question 4", "label": "B"}])
    validation = frame_from([{"text": "question 5", "label": "A"}, {"text": "other", "label": "B"}])
    raw = RawTask(
        "t",
        {"train": train, "validation": validation, "test": test},
        unlabeled=["question 4", "free text"],
    )
    task = prepare_task(raw, None, seed=0, max_empty_ratio=0.0)
    assert task.counts["duplicates_removed_from_train"] == 3
    assert len(task.splits["train"]) == 17
    assert not {"question 3", "question 4", "question 5"} & set(task.splits["train"]["text"])
    # unlabelled text that is a held-out example never reaches a corpus
    assert task.unlabeled == ["free text"]
    assert task.counts["unlabeled_removed_as_heldout"] == 1


def test_missing_split_without_split_spec_says_how_to_fix(trec_train: pd.DataFrame) -> None:
    with pytest.raises(
        ValueError,
        match=r"tasks.t: the source has no validation or test split; "
        r"add `split: \{validation_ratio",
    ):
        prepare_task(RawTask("t", {"train": trec_train}), None, seed=0, max_empty_ratio=0.0)


def test_empty_texts_dropped_below_threshold_and_fail_above() -> None:
    df = frame_from(
        [{"text": "x" * (i + 1), "label": "a"} for i in range(98)]
        + [{"text": "  ", "label": "a"}, {"text": None, "label": "b"}]
    )
    cleaned, n = clean_split(df, "tasks.t [train]", max_empty_ratio=0.05)
    assert n == 2 and len(cleaned) == 98
    with pytest.raises(
        ValueError,
        match=r"tasks.t \[train\]: 2 of 100 texts are empty \(2.0%\), "
        r"above collect.max_empty_ratio=0.01",
    ):
        clean_split(df, "tasks.t [train]", max_empty_ratio=0.01)


def test_validation_label_missing_from_train_is_an_error() -> None:
    train = frame_from([{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(10)])
    validation = frame_from([{"text": "v", "label": "c"}])
    test = frame_from([{"text": "x", "label": "a"}])
    raw = RawTask("t", {"train": train, "validation": validation, "test": test})
    with pytest.raises(
        ValueError,
        match=r"tasks.t \[validation\]: labels \['c'\] do not occur "
        r"in train",
    ):
        prepare_task(raw, None, seed=0, max_empty_ratio=0.0)


def test_single_class_task_is_an_error() -> None:
    df = frame_from([{"text": f"t{i}", "label": "only"} for i in range(30)])
    with pytest.raises(ValueError, match=r"tasks.t: train has a single class \['only'\]"):
        prepare_task(RawTask("t", {"train": df}), SPLIT, seed=0, max_empty_ratio=0.0)


def test_too_rare_label_to_stratify_is_explained() -> None:
    df = frame_from([{"text": f"t{i}", "label": "a" if i else "b"} for i in range(30)])
    with pytest.raises(ValueError, match=r"cannot carve a stratified 10% split.*'b': 1"):
        prepare_task(RawTask("t", {"train": df}), SPLIT, seed=0, max_empty_ratio=0.0)


def test_missing_labels_are_an_error_above_the_threshold() -> None:
    df = pd.DataFrame({"text": list("abcde"), "label": ["x", None, "  ", "y", "nan"]})
    with pytest.raises(
        ValueError,
        match=r"tasks.t \[train\]: 2 of 5 rows have no label \(40.0%; rows 2, 3,",
    ):
        drop_missing_labels(df, "tasks.t [train]", 0.0)
    kept, n = drop_missing_labels(df, "tasks.t [train]", 0.5)
    assert n == 2 and kept["label"].tolist() == ["x", "y", "nan"]  # a class called nan stays


def test_pairs_are_keyed_on_both_texts() -> None:
    df = pd.DataFrame({"text": ["a", "a"], "text_pair": ["b", "c"], "label": ["x", "y"]})
    assert text_key(df).nunique() == 2


def test_subsample_is_stratified_seeded_and_readable_when_too_small(
    trec_train: pd.DataFrame,
) -> None:
    counts = trec_train["label"].value_counts()
    n = 60
    a = subsample(trec_train, n, seed=1, stratify=True, where="trec train")
    assert len(a) == n and set(a["text"]) <= set(trec_train["text"])
    # each label keeps its share to the row (largest remainder: within one of n × share)
    expected = counts / counts.sum() * n
    drawn = a["label"].value_counts().reindex(counts.index, fill_value=0)
    assert ((drawn - expected).abs() < 1).all()
    pd.testing.assert_frame_equal(a, subsample(trec_train, n, 1, True, "trec train"))
    assert set(a["text"]) != set(subsample(trec_train, n, 2, True, "trec train")["text"])
    assert subsample(trec_train, len(trec_train) + 5, 1, True, "x") is trec_train  # all rows
    with pytest.raises(ValueError, match=r"trec train: cannot draw a stratified sample of 3 rows"):
        subsample(trec_train, 3, 1, True, "trec train")  # fewer rows than its 6 labels
    scores = trec_train.assign(label=range(len(trec_train)))  # regression: a plain draw
    assert len(subsample(scores, 3, 1, False, "sts-b train")) == 3


def test_texts_of_invisible_characters_only_are_empty(trec_train: pd.DataFrame) -> None:
    invisible = ["\u200b\u200b", "\x00\x07", "\ufeff \u2060", "\u200e\t"]
    df = pd.concat([trec_train.head(36), pd.DataFrame({"text": invisible, "label": "DESC"})])
    kept, n_empty = clean_split(df.reset_index(drop=True), "tasks.t [train]", 0.5)
    assert n_empty == 4 and len(kept) == 36
    assert not set(invisible) & set(kept["text"])


def test_a_one_class_validation_split_is_warned(
    trec_train: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    validation = trec_train[trec_train["label"] == "HUM"].head(20)
    raw = RawTask("t", {"train": trec_train.head(300), "validation": validation})
    with caplog.at_level("WARNING"):
        prepare_task(raw, SplitSpec(validation_ratio=0.1, test_ratio=0.1), 0, 0.1)
    assert "tasks.t [validation]: every row is 'HUM': a model that always says 'HUM' scores " \
        "1.0 here, so model selection (finetune.metric_for_best_model) cannot tell models apart" \
        in caplog.text  # fmt: skip
