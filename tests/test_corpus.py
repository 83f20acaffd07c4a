from __future__ import annotations

import pandas as pd
import pytest

from bertfit.data.corpus import build_corpus, corpus_tasks, normalise
from bertfit.data.splits import PreparedTask
from bertfit.params import parse_tasks, read_params_file
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def catalogue() -> dict:
    return parse_tasks(read_params_file(PROJECT_ROOT / "params.yaml"))


def test_corpus_task_selection(catalogue: dict) -> None:
    assert corpus_tasks("none", "mr", catalogue) == []
    assert corpus_tasks("within_task", "mr", catalogue) == ["mr"]
    in_domain = corpus_tasks("in_domain", "mr", catalogue)
    assert in_domain[0] == "mr"
    assert set(in_domain) == {n for n, t in catalogue.items() if t.domain == "sentiment"}
    offline = {n for n, t in catalogue.items() if t.in_corpora}
    assert set(corpus_tasks("cross_domain", "mr", catalogue)) == offline
    assert {"cola", "stsb", "mnli"} <= set(catalogue) - offline  # GLUE: hub only, never in corpora
    with pytest.raises(ValueError, match=r"pretrain.corpus must be one of .*got 'everything'"):
        corpus_tasks("everything", "mr", catalogue)


def task(
    name: str, train: list[str], validation: list[str], test: list[str], unlabeled: list[str] = ()
) -> PreparedTask:
    def frame(texts: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"text": texts, "label": ["a"] * len(texts)})

    return PreparedTask(
        name,
        {"train": frame(train), "validation": frame(validation), "test": frame(test)},
        ["a"],
        list(unlabeled),
    )


def test_validation_and_test_text_never_enter_the_corpus() -> None:
    target = task(
        "mr",
        ["a fine film .", "dull"],
        ["a moving story"],
        ["It's a gem!"],
        unlabeled=["plot synopsis", "a moving story"],
    )
    # another task's *train* holds the target's test sentence, tokenised differently (sst2 vs mr)
    other = task("sst2", ["it 's a gem !", "great", "dull"], ["so-so"], ["meh"])
    train, held, counts = build_corpus(
        ["mr", "sst2"], {"mr": target, "sst2": other}, heldout_ratio=0.25, seed=0
    )
    corpus = set(train["text"]) | set(held["text"])
    assert corpus == {"a fine film .", "dull", "plot synopsis", "great"}
    assert counts["removed_as_heldout"] == 2  # "a moving story" (unlabelled), "it 's a gem !"
    assert counts["duplicates"] == 1  # "dull" twice
    assert len(held) == 1 and counts["texts_from_mr"] == 3
    forbidden = {normalise(t) for t in ["a moving story", "It's a gem!", "so-so", "meh"]}
    assert not {normalise(t) for t in corpus} & forbidden


def test_heldout_split_is_seeded() -> None:
    t = task("x", [f"text {i}" for i in range(100)], ["v"], ["t"])
    a = build_corpus(["x"], {"x": t}, 0.1, seed=3)
    b = build_corpus(["x"], {"x": t}, 0.1, seed=3)
    c = build_corpus(["x"], {"x": t}, 0.1, seed=4)
    assert a[1]["text"].tolist() == b[1]["text"].tolist() != c[1]["text"].tolist()
    assert len(a[1]) == 10 and len(a[0]) == 90
