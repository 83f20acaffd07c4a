"""Unlabelled corpora for further MLM pretraining (Sun et al. 2019, section 5.4).

within_task: the target's train text plus the unlabelled text its source declares; in_domain: the
same for every catalogue task of the target's domain; cross_domain: for every catalogue task.

Validation and test text never enters a corpus: not the target's, and not any collected task's.
Tasks can share text across sources (SST-2 and mr both come from Rotten Tomatoes, one tokenised,
one not), so texts are compared after normalisation (lower case, letters and digits only). The
reference code's example corpus contained the test text (REFERENCE.md, protocol faults).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bertfit.params import TaskSpec

if TYPE_CHECKING:  # splits imports scikit-learn; the inputs stage needs only corpus_tasks
    from bertfit.data.splits import PreparedTask

log = logging.getLogger(__name__)

CORPORA = ("none", "within_task", "in_domain", "cross_domain")
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def normalise(text: str) -> str:
    return _NOT_ALNUM.sub("", text.lower())


def corpus_tasks(corpus: str, target: str, tasks: dict[str, TaskSpec]) -> list[str]:
    """The catalogue tasks whose text a corpus is built from, target first."""
    if corpus not in CORPORA:
        raise ValueError(
            f"params.yaml: pretrain.corpus must be one of {list(CORPORA)}, got {corpus!r}"
        )
    if corpus == "none":
        return []
    if corpus == "within_task":
        return [target]
    domain = tasks[target].domain
    others = sorted(
        n
        for n, spec in tasks.items()
        if n != target and spec.in_corpora and (corpus == "cross_domain" or spec.domain == domain)
    )
    return [target, *others]


def collected_tasks(
    corpus: str, target: str, tasks: dict[str, TaskSpec], multitask_tasks: list[str]
) -> list[str]:
    """What collect loads, each once: the target, its corpus's tasks, the multitask set."""
    return list(dict.fromkeys([target, *corpus_tasks(corpus, target, tasks), *multitask_tasks]))


def task_texts(task: PreparedTask) -> Iterable[str]:
    train = task.splits["train"]
    yield from train["text"]
    if "text_pair" in train.columns:
        yield from train["text_pair"]
    yield from task.unlabeled


def held_out_keys(tasks: Iterable[PreparedTask]) -> set[str]:
    keys = set()
    for task in tasks:
        for split in ("validation", "test"):
            df = task.splits[split]
            for col in ("text", "text_pair"):
                if col in df.columns:
                    keys.update(normalise(t) for t in df[col])
    return keys


def build_corpus(
    names: list[str], prepared: dict[str, PreparedTask], heldout_ratio: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """(train texts, held-out texts for MLM metrics, counts) from the named tasks.

    `prepared` holds every collected task; all their validation and test texts are excluded.
    Exact duplicates are kept once. The held-out slice is a seeded random share of the texts.
    """
    forbidden = held_out_keys(prepared.values())
    texts, seen = [], set()
    counts = {"removed_as_heldout": 0, "duplicates": 0}
    for name in names:
        n_before = len(texts)
        for text in task_texts(prepared[name]):
            key = normalise(text)
            if not key:
                continue
            if key in forbidden:
                counts["removed_as_heldout"] += 1
            elif text in seen:
                counts["duplicates"] += 1
            else:
                seen.add(text)
                texts.append(text)
        counts[f"texts_from_{name}"] = len(texts) - n_before
    order = np.random.default_rng(seed).permutation(len(texts))
    n_held = round(heldout_ratio * len(texts))
    held = [texts[i] for i in order[:n_held]]
    train = [texts[i] for i in sorted(order[n_held:])]
    counts |= {"train_texts": len(train), "heldout_texts": len(held)}
    log.info(
        "corpus from %s: %d train / %d held-out texts; %d removed as validation/test text, "
        "%d duplicates",
        names,
        len(train),
        len(held),
        counts["removed_as_heldout"],
        counts["duplicates"],
    )
    return pd.DataFrame({"text": train}, dtype=str), pd.DataFrame({"text": held}, dtype=str), counts
