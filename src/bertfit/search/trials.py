"""A search worker: draws trials from the shared study and runs each as a real finetune until the
study has its n_trials, reporting each validation to optuna's pruner and recording failures.

Every worker (the command's own process, or one of --workers processes) runs `work` on the same
Job; the study's storage is all they share.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch
from transformers import TrainerCallback, TrainingArguments

from bertfit.data.tasks import Task
from bertfit.params import FinetuneParams, Range
from bertfit.search import study as studies
from bertfit.search.results import progress_line, write_results
from bertfit.search.space import suggest, trial_params
from bertfit.training.finetune import finetune

log = logging.getLogger(__name__)

WAIT_S = 5  # how often a worker whose remaining trials run elsewhere looks again


@dataclass(frozen=True)
class Job:
    """What each worker needs: the model, data and params of every trial, and the study."""

    model_dir: str
    task: Task
    train: pd.DataFrame
    validation: pd.DataFrame
    params: FinetuneParams
    space: dict[str, Range | list[Any]]
    max_seq_length: int
    metric: str
    direction: str
    n_trials: int
    seed: int
    pruner: str
    max_failures_in_a_row: int
    storage: str | None
    study_name: str
    out_dir: Path
    workers: int


class ReportValidation(TrainerCallback):
    """Each validation of a trial's finetune reported to optuna (step: the validation's count,
    so trials compare like validations), with the steps trained so far, and the trial stopped
    when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial = trial
        self.key = f"eval_{metric}"
        self.validations = 0

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: Any,
        control: Any,
        metrics: dict[str, float] | None = None,
        **_: Any,
    ) -> None:
        if metrics is None or self.key not in metrics:
            return
        self.validations += 1
        value = float(metrics[self.key])
        self.trial.report(value, self.validations)
        # the optimisation steps trained so far: what a pruned trial cost (trials.csv `steps`)
        self.trial.set_user_attr(studies.STEPS_ATTR, state.global_step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at validation {self.validations} ({self.key[5:]} {value:.4f})"
            )


def objective(job: Job, running: dict[str, int]) -> Any:
    """The trial function: draw, finetune in a scratch folder, return the kept validation."""

    def run_trial(trial: optuna.Trial) -> float:
        running["number"] = trial.number
        trial.set_user_attr(studies.WORKER_ATTR, studies.this_process())
        values = suggest(trial, job.space)
        try:
            params = trial_params(job.params, values)
            with tempfile.TemporaryDirectory(prefix="bertfit-search-") as scratch:
                metrics = finetune(
                    job.model_dir,
                    job.task,
                    job.train,
                    job.validation,
                    params,
                    job.max_seq_length,
                    Path(scratch) / "model",
                    Path(scratch) / "reports",
                    extra_callbacks=[ReportValidation(trial, job.metric)],
                )
        except optuna.TrialPruned:
            raise
        except (Exception, KeyboardInterrupt) as err:  # recorded, then optuna fails the trial
            message = str(err).strip().splitlines()[0] if str(err).strip() else ""
            trial.set_user_attr(studies.ERROR_ATTR, f"{type(err).__name__}: {message}".strip())
            raise
        return metrics["validation"][job.metric]

    return run_trial


class TrialsFailing(ValueError):
    """max_failures_in_a_row trials failed one after another: the space (or the setup) is wrong,
    not one unlucky draw. A ValueError, so the command says it in one line (cli.user_errors)."""


def sampler(job: Job, finished: int, worker: int) -> optuna.samplers.BaseSampler:
    """TPE seeded by search.seed, the trials already run and the worker: a resumed search or a
    second worker must not redraw the first trials' random start. constant_liar keeps parallel
    workers from proposing what a running trial already tries. With --storage, processes started
    separately (on other machines, or by hand) are each worker 0 and can load the empty study at
    the same moment, so their host and pid join the seed too: otherwise they drew the same
    random start (a shared search is not reproducible by its seed anyway: workers interleave)."""
    if job.storage is None and finished == worker == 0:
        return optuna.samplers.TPESampler(seed=job.seed, constant_liar=True)
    entropy = [job.seed, finished, worker]
    if job.storage is not None:
        entropy += [zlib.crc32(socket.gethostname().encode()), os.getpid()]
    seed = np.random.SeedSequence(entropy).generate_state(1)[0]
    return optuna.samplers.TPESampler(seed=int(seed), constant_liar=True)


def load_study(job: Job, worker: int = 0) -> optuna.Study:
    storage = studies.open_storage(job.storage, job.out_dir)
    existing = optuna.load_study(study_name=job.study_name, storage=storage)
    return optuna.load_study(
        study_name=job.study_name,
        storage=storage,
        sampler=sampler(job, len(existing.trials), worker),
        pruner=studies.make_pruner(job.pruner),
    )


def work(job: Job, worker: int = 0) -> None:
    """Run trials until the study counts n_trials completed or pruned ones; failed trials do not
    count, so their budget is drawn again."""
    study = load_study(job, worker)
    running: dict[str, int] = {}
    run_trial = objective(job, running)
    failures_in_a_row, durations = 0, list[float]()
    while True:
        for number in studies.fail_dead_trials(study):
            log.warning("trial #%d was running when its process ended: failed, run again", number)
        done, now_running = studies.counts(study)
        if done >= job.n_trials:
            return
        if done + now_running >= job.n_trials:  # the last trials run in other workers
            time.sleep(WAIT_S)
            continue
        running.pop("number", None)
        with studies.retried_on_interrupt(study, running):
            study.optimize(run_trial, n_trials=1, catch=(Exception,))
        trial = study.get_trials(deepcopy=False)[running["number"]]
        durations.append(trial.duration.total_seconds() if trial.duration else 0.0)
        write_results(study, job.out_dir, job.metric)
        log.info(progress_line(study, trial, job.n_trials, job.metric, durations, job.workers))
        failed = trial.state == optuna.trial.TrialState.FAIL
        failures_in_a_row = failures_in_a_row + 1 if failed else 0
        if failures_in_a_row >= job.max_failures_in_a_row:
            raise TrialsFailing(
                f"search: {failures_in_a_row} trials failed in a row (search.yaml: "
                f"max_failures_in_a_row), the last with: {trial.user_attrs.get('error')}. Every "
                f"trial's error is in {job.out_dir / 'trials.csv'}; narrow the space in "
                "search.yaml (a lower learning rate, a smaller batch) or fix the setup, then "
                "rerun the same command to resume"
            )


def threads_per_worker(workers: int) -> int:
    """torch threads for each of `workers` processes, so that together they use each core once."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // workers)


def worker_main(job: Job, worker: int, threads: int) -> None:
    """A --workers process: its own logging and thread count, then `work`."""
    from bertfit.cli import configure_logging

    configure_logging()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(threads)
    with stop_on_sigterm():
        try:
            work(job, worker)
        except KeyboardInterrupt:
            log.info("worker %d stopped", worker)


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (a `kill`, a pre-empted VM) interrupts as Ctrl-C does, so the running trial is
    recorded as failed and queued again, and the scratch folder is removed."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
