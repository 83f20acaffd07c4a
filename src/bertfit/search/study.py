"""The search's optuna study: where it is stored, its name, its pruner, and the bookkeeping that
lets a killed search resume and several processes share one study.

A trial records the process that runs it (host and pid). A trial still RUNNING whose process on
this host has ended was killed with it (SIGKILL, a closed laptop): it is marked failed and its
values queued again, once. Across hosts an RDB storage's heartbeat does the same after its grace
period (optuna's fail_stale_trials), and a journal file is for the processes of one machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

JOURNAL_FILE = "study.journal"  # the default storage, in the search's output folder
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
# an RDB trial whose heartbeat is older than the grace period was lost with its process
HEARTBEAT_S = 30
GRACE_S = 120
WORKER_ATTR = "worker"  # a trial's user attr: the host and pid running it
ERROR_ATTR = "error"  # a failed trial's user attr: the exception, as one line
STEPS_ATTR = "steps"  # a trial's user attr: the optimisation steps trained by its last validation
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)  # the states n_trials counts


def retry_once() -> RetryHeartbeatStaleTrialCallback:
    """A killed trial's values queued again, once (a trial that kills its process twice, say by
    running out of memory, is not tried a third time)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=1)


def open_storage(url: str | None, out_dir: Path) -> optuna.storages.BaseStorage:
    """A journal file in out_dir by default; an RDB (`sqlite:///search.db`,
    `postgresql://user@host/db`, `mysql://...`) for workers on several machines."""
    if url is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(out_dir / JOURNAL_FILE)))
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in RDB_SCHEMES:
        raise ValueError(
            f"--storage {url!r}: not a database URL; give sqlite:///FILE, "
            "postgresql://USER@HOST/DB or mysql://USER@HOST/DB (without --storage the study is "
            f"a journal file, {JOURNAL_FILE} in --out)"
        )
    return rdb_storage(url)


def rdb_storage(url: str, attempts: int = 3) -> RDBStorage:
    """The database's storage, its tables created on first use. Workers started together on a
    new database race to create them (a duplicate alembic_version row, a locked SQLite file):
    the loser tries again, and then finds them."""
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=retry_once(),
                )
        except SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def study_name(target: str, method: str, family: str, identity: dict[str, Any]) -> str:
    """`trec-full-encoder-1a2b3c4d`: the target, the method, the family and a digest of what
    makes the trials comparable (the space, the train subset, the seed), so the same command
    finds its study again and a changed space starts a new one."""
    text = json.dumps(identity, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{target}-{method}-{family}-{digest}"


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """search.pruner: none, median (a trial below the median of earlier trials at the same
    validation stops, after 5 trials ran out), successive_halving or hyperband (their resource
    is the validation count)."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def this_process() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another account's process
        return True
    return True


def fail_trial(study: optuna.Study, trial: FrozenTrial, message: str) -> bool:
    """Mark a RUNNING trial failed with `message` and queue its values again (retry_once);
    False when another process finished it first. optuna has no public call to fail another
    process's trial: this is what its own fail_stale_trials does."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, ERROR_ATTR, message)
        if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    retry_once()(study, storage.get_trial(trial._trial_id))
    return True


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose process on this host has ended, and, with an RDB storage,
    those whose heartbeat stopped; the numbers of the trials failed here."""
    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR) or {}
        if worker.get("host") != host or process_alive(worker["pid"]):
            continue
        message = f"its process (pid {worker['pid']}) ended while it ran"
        if fail_trial(study, trial, message):
            failed.append(trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a no-op but for an RDB with heartbeats
    return failed


def counts(study: optuna.Study) -> tuple[int, int]:
    """(trials counted towards n_trials, trials running now)."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return sum(s in COUNTED for s in states), states.count(TrialState.RUNNING)


@contextmanager
def retried_on_interrupt(study: optuna.Study, running: dict[str, int]) -> Iterator[None]:
    """On Ctrl-C or SIGTERM (stop_on_sigterm) the trial that ran is already failed (optuna);
    its values are queued again, as a killed trial's are."""
    try:
        yield
    except KeyboardInterrupt:
        number = running.get("number")
        if number is not None:
            trial = study.get_trials(deepcopy=False)[number]
            if trial.state == TrialState.FAIL:
                retry_once()(study, trial)
        raise
