"""The ablation's runs: queue the experiments that have not succeeded yet, start DVC's queue,
and follow it until each has finished, logging each as it starts and ends; an experiment left
"running" by a killed queue worker is marked failed instead of awaited forever."""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bertfit.ablate import AblateError
from bertfit.ablate.experiments import dvc, exp_show, read_experiments
from bertfit.ablate.plan import Planned

log = logging.getLogger(__name__)

POLL_S = 10.0
FINISHED = ("success", "failed")
# ours running and no queue worker alive at STALE_POLLS checks, one every WORKER_EVERY polls:
# then they count as dead (3 minutes at the default poll)
WORKER_EVERY = 6
STALE_POLLS = 3


def head_commit(repo_dir: Path) -> str:
    """The commit the experiments are queued from. Polling and the table ask for its
    experiments by this id, not by HEAD, so a commit made while the queue runs does not hide
    them (`dvc exp show` lists the experiments of the current HEAD only)."""
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise AblateError(f"git rev-parse HEAD failed in {repo_dir}: {done.stderr.strip()}")
    return done.stdout.strip()


WORKERS = re.compile(r"Worker status: (\d+) active, (\d+) idle")


def workers_alive(repo_dir: Path) -> int | None:
    """DVC queue workers that answer (`dvc queue status`), or None where it does not say."""
    found = WORKERS.search(dvc(["queue", "status"], repo_dir))
    return None if found is None else int(found[1]) + int(found[2])


def clear_stale(name: str, repo_dir: Path) -> None:
    """An experiment DVC shows as running though no worker runs it (its worker was killed):
    `dvc queue kill` marks it ended, then it is removed, so it can be queued anew."""
    for args in (["queue", "kill", name], ["queue", "remove", name]):
        try:
            dvc(args, repo_dir)
        except AblateError as err:  # already ended, or already gone
            log.info("%s", err)


def queue_and_run(
    planned: Sequence[Planned], repo_dir: Path, prefix: str, jobs: int, seed_param: str
) -> tuple[list[str], str]:
    """Queue what has not succeeded yet, run the queue and wait for it; the names that failed
    and the commit the experiments belong to."""
    rev = head_commit(repo_dir)
    todo = queue(planned, repo_dir, prefix, seed_param, rev)
    if not todo:
        return [], rev
    return run_queue([p.name for p in todo], repo_dir, prefix, jobs, seed_param, rev), rev


def queue(
    planned: Sequence[Planned], repo_dir: Path, prefix: str, seed_param: str, rev: str
) -> list[Planned]:
    """Queue the planned experiments that have not succeeded yet (a failed attempt is removed
    and queued again; one queued or running already is left as it is); returns them."""
    shown = exp_show(repo_dir, [rev])
    known = {r.name: r for r in read_experiments(shown, prefix, seed_param=seed_param)}
    states = {p.name: known[p.name].state if p.name in known else None for p in planned}
    todo = [p for p in planned if states[p.name] != "success"]
    log.info(
        "%d experiments planned, %d succeeded before (kept), %d to run",
        len(planned),
        len(planned) - len(todo),
        len(todo),
    )
    stale = "running" in states.values() and workers_alive(repo_dir) == 0
    for i, p in enumerate(todo, 1):
        state = states[p.name]
        if state == "failed":  # its failed queue entry would shadow the new one's log
            dvc(["queue", "remove", p.name], repo_dir)
        if state == "running" and stale:
            log.warning("%s shows as running, but no queue worker is alive: queued anew", p.name)
            clear_stale(p.name, repo_dir)
            state = "failed"
        if state in ("queued", "running"):
            log.info("queue %d/%d: %s is %s already", i, len(todo), p.name, state)
            continue
        args = ["exp", "run", "--queue", "-n", p.name]
        for override in p.overrides:
            args += ["-S", override]
        dvc(args, repo_dir)
        log.info("queued %d/%d: %s%s", i, len(todo), p.name, " (failed before)" if state else "")
    return todo


def fail_stale(
    names: Sequence[str],
    now: dict[str, Any],
    finished: set[str],
    failed: list[str],
    repo_dir: Path,
) -> None:
    """Ours still "running" with no queue worker alive: each is marked finished and failed
    (added to `finished` and `failed`) and cleared from the queue, with the fix logged."""
    for name in names:
        r = now.get(name)
        if name in finished or r is None or r.state != "running":
            continue
        finished.add(name)
        failed.append(name)
        clear_stale(name, repo_dir)
        log.error(
            "FAILED %d/%d: %s shows as running, but no DVC queue worker has answered for %.0f s "
            "(killed?); it is marked failed and cleared from the queue: run the same bertfit "
            "ablate command again to queue it anew",
            len(finished),
            len(names),
            name,
            STALE_POLLS * WORKER_EVERY * POLL_S,
        )


def run_queue(
    names: Sequence[str], repo_dir: Path, prefix: str, jobs: int, seed_param: str, rev: str
) -> list[str]:
    """Start the queue's workers and wait until the named experiments have finished, logging
    each as it starts and ends; returns the names of those that failed."""
    dvc(["queue", "start", "--jobs", str(jobs)], repo_dir)
    failed: list[str] = []
    finished: set[str] = set()
    running: set[str] = set()
    start = time.monotonic()
    idle_polls = stale_polls = polls = 0
    while len(finished) < len(names):
        time.sleep(POLL_S)
        try:
            shown = exp_show(repo_dir, [rev])
        except AblateError as err:  # e.g. a lock held for a moment by the worker: ask again
            log.warning("dvc exp show failed, trying again: %s", err)
            continue
        now = {r.name: r for r in read_experiments(shown, prefix, seed_param=seed_param)}
        # nothing of ours running while some wait: the workers may have stopped (killed, or
        # shut down on an empty queue just before we queued); starting them again is a no-op
        # for workers that are alive (dvc queue start only adds missing ones)
        idle = not any(now.get(n) and now[n].state == "running" for n in names)
        idle_polls = idle_polls + 1 if idle else 0
        if idle_polls >= 6:
            dvc(["queue", "start", "--jobs", str(jobs)], repo_dir)
            idle_polls = 0
        # ours running while no worker answers: a killed worker leaves its experiment
        # "running" for good, and this loop would wait for it forever. Asked every
        # WORKER_EVERY polls (`dvc queue status` costs a second or two of a core)
        polls += 1
        if idle:
            stale_polls = 0
        elif polls % WORKER_EVERY == 0:
            stale_polls = stale_polls + 1 if workers_alive(repo_dir) == 0 else 0
        if stale_polls >= STALE_POLLS:
            fail_stale(names, now, finished, failed, repo_dir)
            stale_polls = 0
        for name in names:
            r = now.get(name)
            if name in finished or r is None:
                continue
            if r.state in FINISHED:
                finished.add(name)
                elapsed = time.monotonic() - start
                if r.state == "success":
                    log.info(
                        "finished %d/%d: %s, test error %s (%.0f s since start)",
                        len(finished),
                        len(names),
                        name,
                        "?" if r.error_rate is None else f"{100 * r.error_rate:.2f} %",
                        elapsed,
                    )
                else:
                    failed.append(name)
                    log.error(
                        "FAILED %d/%d: %s; its log: %s",
                        len(finished),
                        len(names),
                        name,
                        r.log_command,
                    )
            elif r.state == "running" and name not in running:
                running.add(name)
                log.info("running: %s (%d of %d)", name, len(finished) + 1, len(names))
    return failed
