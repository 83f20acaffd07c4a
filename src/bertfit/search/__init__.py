"""Hyperparameter search for the finetune stage with optuna, scored on validation.

Each trial is a real finetune run (training.finetune.finetune, the same code the pipeline runs)
on a seeded subset of the target's train split, with the trial's values in place of params.yaml's
finetune ones; its value is the validation metric finetune selects on. Test data is never read.
The space is the one of the method finetune trains on the search's train rows (params.yaml's
finetune.method, or finetune.few_labels_method on few rows per class: the pipeline's own
choice), and of the model's family, when search.yaml gives the family its own:

    bertfit search                          # or: python -m bertfit.search
    bertfit search --workers 2              # two processes on this machine, one study
    bertfit search --storage postgresql://me@db/search   # workers on several machines

The study is stored as it runs (a journal file in --out, or --storage's database): rerunning the
same command resumes it, keeping every finished trial; a trial its process died in is failed and
its values run again. Each validation inside a trial goes to optuna's pruner (search.pruner), so
a hopeless trial stops early. A trial that fails is recorded with its error and the search goes
on, until search.max_failures_in_a_row fail one after another. Every trial logs one line and
rewrites trials.csv and best_params.yaml; the end draws history.png and importances.png into a
short report.md and logs the `dvc exp run -S ...` command of the best trial (--queue-best K
queues the best K as DVC experiments on the full data).

The space is its own file, search.yaml, not a section of params.yaml: no stage reads it, and
`dvc exp show` lists every key of params.yaml as a column.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
from pathlib import Path

import optuna
import pandas as pd

from bertfit.cli import configure_logging, positive_int
from bertfit.data.tasks import Task, read_task
from bertfit.models.family import family_for
from bertfit.params import (
    FinetuneParams,
    SearchParams,
    parse_section,
    parse_target,
    parse_tasks,
    read_params_file,
)
from bertfit.search import results
from bertfit.search import study as studies
from bertfit.search.space import check_space, chosen_space
from bertfit.search.trials import (
    Job,
    stop_on_sigterm,
    threads_per_worker,
    work,
    worker_main,
)
from bertfit.training.finetune import drawn, method_choice
from bertfit.training.selection import selection_metric

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`bertfit search`'s options (and `python -m bertfit.search`'s)."""
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="the target, model and finetune settings the trials start from (default: params.yaml)",
    )
    parser.add_argument(
        "--space",
        type=Path,
        default=Path("search.yaml"),
        help="the file whose `search` section gives trials and spaces (default: search.yaml)",
    )
    parser.add_argument(
        "--trials",
        type=positive_int,
        metavar="N",
        help="completed or pruned trials to reach (default: search.n_trials); the same command "
        "with a higher N extends the study",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        help="collect's output: the target's splits under DATA_DIR/tasks (default: data)",
    )
    parser.add_argument(
        "--base-model-dir",
        type=Path,
        default=Path("models/multitask"),
        help="the model finetune starts from (run `dvc repro multitask` first)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports/search"),
        help="the study's journal, trials.csv, best_params.yaml and report.md "
        "(default: reports/search)",
    )
    parser.add_argument(
        "--storage",
        help="a database URL the study lives in (sqlite:///FILE, postgresql://USER@HOST/DB, "
        "mysql://...), for workers on several machines; default: a journal file in --out",
    )
    parser.add_argument(
        "--study-name", help="default: the target, method, family and a digest of the space"
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="processes on this machine sharing the study, each with its share of the cores",
    )
    parser.add_argument(
        "--queue-best",
        type=positive_int,
        metavar="K",
        help="at the end, queue the best K trials as DVC experiments on the full data "
        "(`dvc exp run --queue`; run them with `dvc queue start`)",
    )


def prepare(args: argparse.Namespace) -> Job:
    """Everything the workers share, from the params, search.yaml and the data; the study
    created (or found)."""
    data = read_params_file(args.params)
    target = parse_target(data, parse_tasks(data, str(args.params)), str(args.params))
    model = parse_section(data, "model", str(args.params))
    params: FinetuneParams = parse_section(data, "finetune", str(args.params))
    search: SearchParams = parse_section(read_params_file(args.space), "search", str(args.space))
    if not (args.base_model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{args.base_model_dir}: no model; run `dvc repro multitask` first, or point "
            "--base-model-dir at a model directory"
        )
    family = family_for(str(args.base_model_dir)).name
    task = read_task(args.data_dir / "tasks" / target)
    train = drawn(task.split("train"), task, "train", search.max_train_samples, search.seed)
    params, switched = trial_method(params, str(args.base_model_dir), task, train)
    where, space = chosen_space(search, family, params.method, switched)
    values = check_space(space, where, params)
    metric = selection_metric(params.metric_for_best_model, task)
    identity = {"space": space.model_dump(), "train": search.max_train_samples, "seed": search.seed}
    job = Job(
        model_dir=str(args.base_model_dir),
        task=task,
        train=train,
        validation=task.split("validation"),
        params=params,
        space=values,
        max_seq_length=model.max_seq_length,
        metric=metric,
        direction="minimize" if metric == "loss" else "maximize",
        n_trials=args.trials or search.n_trials,
        seed=search.seed,
        pruner=search.pruner,
        max_failures_in_a_row=search.max_failures_in_a_row,
        storage=args.storage,
        study_name=args.study_name or studies.study_name(target, params.method, family, identity),
        out_dir=args.out,
        workers=args.workers,
    )
    optuna.create_study(
        study_name=job.study_name,
        storage=studies.open_storage(job.storage, job.out_dir),
        direction=job.direction,
        load_if_exists=True,
    )
    log.info(
        "search %s (%s): %d trials of %s on %s (%d train rows, %d validation), validation %s "
        "(%s), pruner %s; stored in %s: rerun the same command to resume",
        job.study_name,
        where,
        job.n_trials,
        ", ".join(values),
        target,
        len(job.train),
        min(len(job.validation), params.max_validation_samples or len(job.validation)),
        metric,
        job.direction,
        job.pruner,
        job.storage or job.out_dir / studies.JOURNAL_FILE,
    )
    return job


def trial_method(
    params: FinetuneParams, model_dir: str, task: Task, train: pd.DataFrame
) -> tuple[FinetuneParams, str | None]:
    """The finetune params the trials start from, with the method finetune trains on the
    search's train rows (training.finetune.method_choice: finetune.method, or the few-labels
    switch's), so the space searched is the one of the method the trials train; and why, when
    that is not finetune.method. Warns when the pipeline's own train rows get another method."""
    family = family_for(model_dir)
    name, why = method_choice(params, model_dir, family, task, len(train))
    rows = len(drawn(task.split("train"), task, "train", params.max_train_samples, params.seed))
    pipeline, pipeline_why = method_choice(params, model_dir, family, task, rows)
    if pipeline != name:
        log.warning(
            "search: the pipeline's finetune trains method %s on its %d train rows (%s), the "
            "trials %s on the search's %d: the best values found are %s's; set "
            "search.max_train_samples to %d or more (or null) to search what the pipeline trains",
            pipeline,
            rows,
            pipeline_why,
            name,
            len(train),
            name,
            rows,
        )
    if name == params.method:
        log.info("search: the trials train method %s (%s)", name, why)
        return params, None
    log.info(
        "search: the trials train method %s in place of finetune.method %s: %s",
        name,
        params.method,
        why,
    )
    return params.model_copy(update={"method": name}), why


def run_workers(job: Job) -> None:
    """`work` in this process, or in --workers processes with a share of the cores each."""
    if job.workers == 1:
        with stop_on_sigterm():
            work(job)
        return
    threads = threads_per_worker(job.workers)
    log.info("%d worker processes, %d torch threads each", job.workers, threads)
    context = multiprocessing.get_context("spawn")  # no forked torch threads or locks
    processes = [
        context.Process(target=worker_main, args=(job, i, threads), name=f"search-worker-{i}")
        for i in range(job.workers)
    ]
    for p in processes:
        p.start()
    try:
        with stop_on_sigterm():
            for p in processes:
                p.join()
    except KeyboardInterrupt:
        for p in processes:
            p.terminate()  # SIGTERM: each worker fails and requeues its running trial
        for p in processes:
            p.join()
        raise
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"search: {', '.join(failed)} exited with an error (its log above)")


def finish(job: Job, queue_best: int | None) -> optuna.Study:
    """The tables once more, the pictures and report, the best trial's command; the queue."""
    study = optuna.load_study(
        study_name=job.study_name, storage=studies.open_storage(job.storage, job.out_dir)
    )
    results.write_results(study, job.out_dir, job.metric)
    command = results.report(study, job.out_dir, job.metric)
    if command is None:
        log.warning("search: no trial completed, so there is no best trial")
        return study
    best = study.best_trial
    log.info("best trial #%d: validation %s %.4f", best.number, job.metric, best.value)
    log.info("report: %s; try it in the pipeline: %s", job.out_dir / results.REPORT_FILE, command)
    if queue_best:
        queue(study, queue_best, job)
    return study


def queue(study: optuna.Study, k: int, job: Job) -> None:
    """Queue the best k trials as DVC experiments (`search-<study>-<trial>`), on the full data:
    the pipeline's finetune with the trial's values and params.yaml's other finetune params."""
    from bertfit.ablate.experiments import dvc

    for values in results.best_overrides(study, k):
        number = values.pop("_trial")
        name = f"search-{job.study_name}-{number}"
        sets = results.set_values(values)
        dvc(["exp", "run", "--queue", "-n", name, *(a for s in sets for a in ("-S", s))], Path())
        log.info("queued %s: %s", name, " ".join(sets))
    log.info("run the queue with `dvc queue start`, follow it with `dvc exp show`")


def run(args: argparse.Namespace) -> optuna.Study:
    """`bertfit search`."""
    configure_logging()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's line is ours
    job = prepare(args)
    try:
        run_workers(job)
    except KeyboardInterrupt:
        log.warning("search interrupted: rerun the same command to resume")
        raise SystemExit(130) from None
    return finish(job, args.queue_best)


def main(argv: list[str] | None = None) -> optuna.Study:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(sys.argv[1:] if argv is None else argv))
