"""Wall time per phase of a stage run: log lines at its end, and a JSON file for benchmarks.

A stage script runs its body under `stage_run(name)`; the code inside marks its phases with
`phase("tokenising")` and so on. Phases nest and are exclusive: a validation pass inside the
training loop pauses "training", so "training" holds the optimisation steps alone, and what no
phase claims is reported as "other" (imports aside, which come before the run starts: the
benchmark times the whole process from outside). The training core marks the phases of the
Trainer's loop (training, validation, checkpoints) itself.

A stage's last log line is its headline: what the stage's code set with
`headline("...")` (finetune: the kept validation score; evaluate: the test metric with its
interval) after its wall time, e.g. `finetune done in 3m05s: mr validation accuracy 0.813 ...`.
`elapsed_s()` is that wall time so far, which the stages also record in run.json.

Nothing here changes a stage's outputs. With BERTFIT_TIMINGS_DIR set (benchmarks/
pipeline_phases.py sets it), each stage also writes `<dir>/<stage>.json`. Profilers (py-spy,
torch.profiler) say where a step's time goes; this says which phase of the pipeline to look at.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bertfit.reporting import write_json

log = logging.getLogger(__name__)

TIMINGS_DIR_ENV = "BERTFIT_TIMINGS_DIR"


class _Clock:
    """Exclusive seconds per phase name: entering a phase pauses the one it is nested in."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.stack: list[list[Any]] = []  # [name, started]
        self.headline: str | None = None

    def _charge(self, now: float) -> None:
        if self.stack:
            name, started = self.stack[-1]
            self.seconds[name] = self.seconds.get(name, 0.0) + now - started

    def enter(self, name: str) -> None:
        now = time.perf_counter()
        self._charge(now)
        self.stack.append([name, now])
        self.counts[name] = self.counts.get(name, 0) + 1

    def leave(self) -> None:
        now = time.perf_counter()
        self._charge(now)
        self.stack.pop()
        if self.stack:
            self.stack[-1][1] = now


_clock: _Clock | None = None


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as phase `name` (a no-op outside `stage_run`)."""
    clock = _clock
    if clock is None:
        yield
        return
    clock.enter(name)
    try:
        yield
    finally:
        clock.leave()


def elapsed_s() -> float | None:
    """Seconds since the running stage_run began (None outside one)."""
    clock = _clock
    return None if clock is None else time.perf_counter() - clock.started


def headline(text: str) -> None:
    """The stage's result in one line, logged as the stage's last line (a no-op outside
    `stage_run`)."""
    if _clock is not None:
        _clock.headline = text


def duration(seconds: float) -> str:
    """`3m10s`, `1h02m`, `45s`, `0.8s`: a wall time as a person reads it in a log line."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@contextmanager
def stage_run(stage: str) -> Iterator[None]:
    """Time a stage's body; at its end log the phases and, when asked, write them as JSON, then
    the stage's headline as its last line (when the body finished)."""
    global _clock
    clock = _clock = _Clock()
    clock.enter("other")
    finished = False
    try:
        yield
        finished = True
    finally:
        clock.leave()
        _clock = None
        total = time.perf_counter() - clock.started
        report(stage, total, clock)
        if finished:
            ending = f": {clock.headline}" if clock.headline else ""
            log.info("%s done in %s%s", stage, duration(total), ending)


def report(stage: str, total: float, clock: _Clock) -> dict[str, Any]:
    order = sorted(clock.seconds, key=lambda k: (k == "other", -clock.seconds[k]))
    phases = {k: round(clock.seconds[k], 3) for k in order}
    log.info(
        "%s took %.1f s: %s",
        stage,
        total,
        ", ".join(f"{k} {v:.1f} s" + times(clock.counts[k]) for k, v in phases.items()),
    )
    result = {"stage": stage, "total_s": round(total, 3), "phases_s": phases}
    result["counts"] = {k: clock.counts[k] for k in order}
    folder = os.environ.get(TIMINGS_DIR_ENV)
    if folder:
        write_json(Path(folder) / f"{stage}.json", result)
    return result


def times(count: int) -> str:
    return f" (x{count})" if count > 1 else ""
