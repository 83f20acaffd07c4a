"""What the collect stage does to each task: read it from its source, split, deduplicate, check
its labels, write it in the one on-disk task format, and describe it in tokens.

The stage itself (bertfit.collection) runs these for every task it needs and ties them to the
model; here nothing loads a model: `describe` counts with the tokenizer it is handed. `bertfit
plan` and `bertfit add-task` read tasks through read_and_prepare too, so they refuse what
collect refuses.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

from bertfit.data.sources import load_task
from bertfit.data.splits import PreparedTask, conflicting_texts, label_spellings, prepare_task
from bertfit.data.tasks import Task, write_task
from bertfit.params import CollectParams, TaskSpec
from bertfit.phases import phase

log = logging.getLogger(__name__)

PERCENTILES = (50, 90, 95, 99)


def task_meta(task: PreparedTask, spec: TaskSpec) -> Task:
    """What a prepared task is (labels, metric, label words), as labels.json records it."""
    return Task(
        name=task.name,
        labels=task.labels,
        problem=task.problem,
        metric=spec.metric,
        positive_label=spec.positive_label,
        domain=spec.domain,
        label_words=spec.label_words,
        prefix=spec.prefix,
        sentence_pair=any("text_pair" in df.columns for df in task.splits.values()),
    )


def write_prepared(task: PreparedTask, spec: TaskSpec, task_dir: Path) -> Task:
    """A prepared task in the one on-disk task format (data.tasks)."""
    meta = task_meta(task, spec)
    write_task(meta, task.splits, task.unlabeled, task_dir)
    return meta


def token_counts(
    df: pd.DataFrame, tokenizer: PreTrainedTokenizerBase
) -> tuple[np.ndarray, int, int]:
    """Untruncated token counts with special tokens, as the model would see the input; and,
    over the text's own tokens (special tokens left out), how many are the unknown token."""
    texts = df["text"].tolist()
    pairs = df["text_pair"].tolist() if "text_pair" in df.columns else None
    if not texts:
        return np.zeros(0, dtype=int), 0, 0
    enc = tokenizer(texts, pairs, add_special_tokens=True, verbose=False)
    lengths = np.array([len(x) for x in enc["input_ids"]])
    unk = tokenizer.unk_token_id
    unknown = 0 if unk is None else sum(ids.count(unk) for ids in enc["input_ids"])
    own = int(lengths.sum()) - len(texts) * tokenizer.num_special_tokens_to_add(pairs is not None)
    return lengths, unknown, own


def describe(
    task: PreparedTask, tokenizer: PreTrainedTokenizerBase, max_seq_length: int
) -> dict[str, Any]:
    stats: dict[str, Any] = dict(task.counts)
    stats["unlabeled_rows"] = len(task.unlabeled)
    unknown = tokens = 0
    for split, df in task.splits.items():
        lengths, split_unknown, split_tokens = token_counts(df, tokenizer)
        unknown, tokens = unknown + split_unknown, tokens + split_tokens
        counts = df["label"].value_counts()
        stats[split] = {
            "rows": len(df),
            "label_counts": {label: int(counts.get(label, 0)) for label in task.labels}
            if task.labels
            else {"mean": float(df["label"].mean()), "std": float(df["label"].std())},
            "tokens": {f"p{p}": float(np.percentile(lengths, p)) for p in PERCENTILES}
            | {"max": int(lengths.max())},
            "share_over_max_seq_length": float((lengths > max_seq_length).mean()),
        }
    # over the labelled rows' own tokens; a tokenizer with no unknown token (byte-level) has 0
    stats["unknown_token_share"] = unknown / tokens if tokens else 0.0
    return stats


def warn_unknown_tokens(name: str, share: float, threshold: float, model_name: str) -> None:
    """Say loudly when the model's tokenizer cannot read a task's text (e.g. Chinese through
    an English vocabulary): training would go on, and hand back a silently poor model."""
    if share <= threshold:
        return
    log.warning(
        "%s: %.1f%% of its tokens are the unknown token of %s's tokenizer (above "
        "collect.warn_unknown_token_share = %g): the model cannot read much of this text. Use "
        "a base model whose vocabulary covers the language (e.g. bert-base-chinese or "
        "google/mt5-small for Chinese), or `model.name: scratch:<config>` to train a tokenizer "
        "on the collected text",
        name,
        100 * share,
        model_name,
        threshold,
    )


def case_variants(task: PreparedTask) -> dict[str, dict[str, int]]:
    """Labels that differ only in case (`POS` among `pos`), by their lowercase form, with row
    counts over all splits; regression targets have none."""
    if not task.labels:
        return {}
    counts = pd.concat([df["label"] for df in task.splits.values()]).value_counts()
    groups: dict[str, dict[str, int]] = {}
    for label, n in counts.items():
        groups.setdefault(label.lower(), {})[label] = int(n)
    return {key: spellings for key, spellings in groups.items() if len(spellings) > 1}


def report_case_variants(name: str, task: PreparedTask) -> int:
    """Warn about labels that differ only in case and return how many labels those are. They
    stay separate classes: whether `POS` is `pos` is the data owner's call, not collect's."""
    variants = case_variants(task)
    for spellings in variants.values():
        log.warning(
            "%s: labels %s differ only in case (rows: %s) and are separate classes; if they "
            "mean one class, write them one way in the data",
            name,
            sorted(spellings),
            spellings,
        )
    return sum(len(spellings) for spellings in variants.values())


def report_label_doubts(name: str, task: PreparedTask) -> dict[str, int]:
    """Warn, with counts, where labels are legal but likely wrong: one class spelled several
    ways (`1`, `1.0`, `01`), a label that reads like a missing value, the same text under
    different labels. The data stays as it is: which is right is the data owner's call."""
    spellings = label_spellings(task)
    for what, found in spellings.items():
        if what == "missing-like":
            log.warning(
                "%s: labels %s (rows: %s) read like a missing value; they are kept as classes. "
                "If they mark a missing label, leave the cell empty (or null in JSON)",
                name,
                sorted(found),
                found,
            )
        else:
            log.warning(
                "%s: labels %s all spell %s (rows: %s) and are separate classes; if they mean "
                "one class, write it one way in the data",
                name,
                sorted(found),
                what,
                found,
            )
    texts, rows, examples = conflicting_texts(task)
    if texts:
        shown = "; ".join(
            f"{key[:60]!r} as {sorted(labels)}" for key, labels in examples.itertuples(index=False)
        )
        log.warning(
            "%s: %d texts occur with different labels (%d rows), e.g. %s. They are kept (each "
            "in one split: identical texts are never split apart); fix or drop the wrong labels",
            name,
            texts,
            rows,
            shown,
        )
    numeric = sum(len(v) for k, v in spellings.items() if k != "missing-like")
    return {"labels_spelling_one_number": numeric, "texts_with_conflicting_labels": texts}


def tokenizer_texts(
    prepared: dict[str, PreparedTask], heldout: pd.DataFrame, metas: dict[str, Task]
) -> list[str]:
    """What a tokenizer built from scratch learns from: every collected task's train and
    unlabelled text, without the corpus's held-out slice (validation and test never), and
    each task's text-to-text prefix and label words, so it can write them."""
    held = set(heldout["text"])
    texts: dict[str, None] = {}
    for meta in metas.values():
        texts |= dict.fromkeys([meta.input_prefix(), meta.input_prefix(True), *meta.words()])
    for task in prepared.values():
        train = task.splits["train"]
        columns = [train["text"]] + ([train["text_pair"]] if "text_pair" in train.columns else [])
        for text in [*(t for c in columns for t in c), *task.unlabeled]:
            if text not in held:
                texts[text] = None
    return list(texts)


def read_and_prepare(
    name: str,
    spec: TaskSpec,
    params: CollectParams,
    root: Path,
    tables: dict[Path, pd.DataFrame] | None = None,
) -> PreparedTask:
    """One task as collect prepares it: read from its source (`tables`: files already read),
    cleaned, split and deduplicated with collect's checks; also what `bertfit plan` and
    `bertfit add-task` read, so they refuse what collect refuses."""
    with phase("reading sources"):
        source = load_task(name, spec, root, tables)
    with phase("splitting"):
        task = prepare_task(
            source,
            spec.split,
            params.seed,
            params.max_empty_ratio,
            spec.problem,
            params.max_missing_label_ratio,
        )
        task.counts["labels_differing_only_in_case"] = report_case_variants(name, task)
        task.counts |= report_label_doubts(name, task)
    return task
