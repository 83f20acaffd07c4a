"""The collect stage: load the tasks the pipeline needs, split, deduplicate, write, describe.

Output per task: `<data_dir>/tasks/<task>/{train,validation,test}.parquet` (text[, text_pair],
label), `unlabeled.parquet` (text; may be empty) and `labels.json`; the MLM corpus
`<data_dir>/corpus/{train,heldout}.parquet` (empty for `corpus: none`); one stats file for all;
and the scratch directory: for `model.name: scratch:<config.json>` the model built from scratch
with a tokenizer trained on the collected train text (models.scratch), else only a note.

collect is the first stage to read `model.name`, so it refuses a model the later stages could not
use (models.loading.check_model) before it reads any task.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

from bertfit.data.corpus import build_corpus, collected_tasks, corpus_tasks
from bertfit.data.sources import SPLITS, load_task
from bertfit.data.splits import PreparedTask, conflicting_texts, label_spellings, prepare_task
from bertfit.data.tasks import STATS_FILE, Task, write_parquet, write_task
from bertfit.models.loading import check_model, load_tokenizer
from bertfit.models.scratch import is_scratch, write_scratch_dir
from bertfit.params import CollectParams, TaskSpec
from bertfit.phases import phase
from bertfit.reporting import write_json

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


def collect(
    tasks: dict[str, TaskSpec],
    target: str,
    corpus: str,
    params: CollectParams,
    model_name: str,
    max_seq_length: int,
    root: Path,
    data_dir: Path,
    stats_file: Path,
    scratch_dir: Path,
    multitask_tasks: list[str] | None = None,
) -> dict[str, Any]:
    """Collect the tasks the pipeline needs (the target, the corpus's, the multitask set); write
    them, the corpus, the scratch model (if asked for) and stats."""
    if target not in tasks:
        raise ValueError(f"target {target!r} is not in the catalogue; known: {sorted(tasks)}")
    unknown = sorted(set(multitask_tasks or []) - set(tasks))
    if unknown:
        raise ValueError(
            f"multitask.tasks: {unknown} not in the catalogue (the catalogue has: "
            f"{', '.join(sorted(tasks))})"
        )
    if not is_scratch(model_name):  # a scratch model is checked once collect has built it
        check_model(model_name, max_seq_length)
    corpus_names = corpus_tasks(corpus, target, tasks)
    names = collected_tasks(corpus, target, tasks, multitask_tasks or [])
    prepared, metas, all_stats = {}, {}, {}
    for name in names:
        spec = tasks[name]
        log.info("collecting %s (%s source, domain %s)", name, spec.source.kind, spec.domain)
        task = read_and_prepare(name, spec, params, root)
        with phase("writing"):
            metas[name] = write_prepared(task, spec, data_dir / "tasks" / name)
        prepared[name] = task
        log.info(
            "%s: train %d / validation %d / test %d rows, %d labels, %d unlabelled texts, "
            "%d train duplicates of held-out text removed",
            name,
            *(len(task.splits[s]) for s in SPLITS),
            len(task.labels),
            len(task.unlabeled),
            task.counts["duplicates_removed_from_train"],
        )
    train, heldout, counts = build_corpus(
        corpus_names, prepared, params.corpus_heldout_ratio, params.seed
    )
    write_parquet(train, data_dir / "corpus" / "train.parquet")
    write_parquet(heldout, data_dir / "corpus" / "heldout.parquet")
    texts = tokenizer_texts(prepared, heldout, metas) if is_scratch(model_name) else []
    write_scratch_dir(model_name, texts, scratch_dir, params.seed, max_seq_length, root)
    model_dir = model_name
    if is_scratch(model_name):
        model_dir = str(scratch_dir)
        check_model(model_dir, max_seq_length)
    # stats count tokens as the model will see them
    tokenizer = load_tokenizer(model_dir)
    for name, task in prepared.items():
        with phase("token statistics"):
            all_stats[name] = describe(task, tokenizer, max_seq_length)
        source = tasks[name].source.model_dump(mode="json")
        write_json(data_dir / "tasks" / name / STATS_FILE, {"source": source} | all_stats[name])
        share = all_stats[name]["unknown_token_share"]
        log.info("%s: %.2f%% of tokens are the unknown token", name, 100 * share)
        warn_unknown_tokens(name, share, params.warn_unknown_token_share, model_name)
    all_stats["corpus"] = {"kind": corpus, "tasks": corpus_names} | counts
    write_json(stats_file, all_stats)
    return all_stats
