"""The collect stage: load the tasks the pipeline needs, split, deduplicate, write, describe.

Output per task: `<data_dir>/tasks/<task>/{train,validation,test}.parquet` (text[, text_pair],
label), `unlabeled.parquet` (text; may be empty) and `labels.json`; the MLM corpus
`<data_dir>/corpus/{train,heldout}.parquet` (empty for `corpus: none`); one stats file for all;
and the scratch directory: for `model.name: scratch:<config.json>` the model built from scratch
with a tokenizer trained on the collected train text (models.scratch), else only a note.

collect is the first stage to read `model.name`, so it refuses a model the later stages could not
use (models.loading.check_model) before it reads any task. What it does to each task is data
work (data.collect); this module ties that to the model: the check, the scratch model, and the
tokenizer the token statistics count with.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bertfit.data.collect import (
    describe,
    read_and_prepare,
    tokenizer_texts,
    warn_unknown_tokens,
    write_prepared,
)
from bertfit.data.corpus import build_corpus, collected_tasks, corpus_tasks
from bertfit.data.sources import SPLITS
from bertfit.data.tasks import STATS_FILE, write_parquet
from bertfit.models.loading import check_model, load_tokenizer
from bertfit.models.scratch import is_scratch, write_scratch_dir
from bertfit.params import CollectParams, TaskSpec
from bertfit.phases import phase
from bertfit.reporting import write_json

log = logging.getLogger(__name__)


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
