"""The experiments as DVC shows them: `dvc` run from this interpreter, and the ablation's
experiments read back from `dvc exp show --json` by the params they ran with (never by their
names), with their state and test error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertfit.ablate import AblateError
from bertfit.ablate.plan import SAMPLES_PARAM, dotted, variant_of

DEFAULT_METRICS_FILE = "reports/evaluate/metrics.json"
# where finetune says how many train rows it used: the learning curve's x (null samples = all)
TRAIN_EXAMPLES_FILE = "reports/finetune/metrics.json"


@dataclass(frozen=True)
class Result:
    """One experiment as `dvc exp show --json` lists it."""

    name: str
    state: str  # success | failed | queued | running
    variant: str | None
    target: str | None
    seed: int | None
    samples: int | None
    train_examples: int | None
    error_rate: float | None
    task_id: str | None  # the queue's task, for `dvc queue logs`

    @property
    def log_command(self) -> str:
        return f"dvc queue logs {self.task_id[:7] if self.task_id else self.name}"


def file_data(data: dict[str, Any], kind: str, path: str) -> dict[str, Any] | None:
    """The contents of one params or metrics file (`kind`) of a revision, or None."""
    entry = (data.get(kind) or {}).get(path)
    return entry.get("data") if isinstance(entry, dict) else None


def error_of(metrics: dict[str, Any] | None) -> float | None:
    """Test error: evaluate's error_rate, else 1 - accuracy."""
    if not metrics:
        return None
    if isinstance(metrics.get("error_rate"), int | float):
        return float(metrics["error_rate"])
    if isinstance(metrics.get("accuracy"), int | float):
        return 1.0 - float(metrics["accuracy"])
    return None


def experiment_result(
    entry: dict[str, Any], params_file: str, metrics_file: str, seed_param: str
) -> Result:
    """One `experiments` entry of the JSON: its executor's state, and, for a success, the
    params and the test error of its (single) revision. A failed run lists the baseline's
    metrics under its name (dvc 3.67), so only a success's metrics are read."""
    revs = entry.get("revs") or [{}]
    rev = revs[-1]
    executor = entry.get("executor") or {}
    state = executor.get("state") or ("failed" if rev.get("error") else "success")
    if rev.get("error") and state == "success":
        state = "failed"
    data = rev.get("data") or {}
    params = file_data(data, "params", params_file) or {}
    success = state == "success"
    error = error_of(file_data(data, "metrics", metrics_file)) if success else None
    train = file_data(data, "metrics", TRAIN_EXAMPLES_FILE) if success else None
    samples = dotted(params, SAMPLES_PARAM)
    return Result(
        name=entry.get("name") or rev.get("name") or str(rev.get("rev", "?"))[:7],
        state=state,
        variant=variant_of(dotted(params, "pretrain.corpus"), dotted(params, "multitask.enabled"))
        if params
        else None,
        target=dotted(params, "target"),
        seed=dotted(params, seed_param),
        samples=samples if isinstance(samples, int) else None,
        train_examples=(train or {}).get("train_examples"),
        error_rate=error,
        task_id=(executor.get("local") or {}).get("task_id"),
    )


# the order in which repeated names count: a rerun's success over an earlier failure
STATE_RANK = {"success": 0, "running": 1, "queued": 2, "failed": 3}


def read_experiments(
    show: list[dict[str, Any]],
    prefix: str,
    params_file: str = "params.yaml",
    metrics_file: str = DEFAULT_METRICS_FILE,
    seed_param: str = "finetune.seed",
) -> list[Result]:
    """The experiments named `<prefix>-...` under the baselines (the non-workspace entries) of
    `dvc exp show --json`; one per name, a success before a running, queued or failed attempt
    of the same name (and, between two successes, the one of the commit listed first)."""
    baselines = [b for b in show if b.get("rev") != "workspace"]
    found: dict[str, Result] = {}
    for baseline in baselines:
        for entry in baseline.get("experiments") or []:
            result = experiment_result(entry, params_file, metrics_file, seed_param)
            if not result.name.startswith(f"{prefix}-"):
                continue
            kept = found.get(result.name)
            if kept is None or STATE_RANK.get(result.state, 9) < STATE_RANK.get(kept.state, 9):
                found[result.name] = result
    return sorted(found.values(), key=lambda r: r.name)


def dvc(args: Sequence[str], repo_dir: Path) -> str:
    """Run a dvc command; its stdout, or an AblateError with the command and its last lines.

    This interpreter's folder goes first on PATH: the queue's workers inherit the environment,
    and the stages' `python stages/...` must be the one bertfit is installed in, also when
    `.venv/bin/bertfit` was called without activating the virtual environment."""
    command = [sys.executable, "-m", "dvc", *args]
    env = os.environ | {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    }
    # output into files, not pipes: `dvc queue start` leaves a worker running that inherits them,
    # and reading a pipe to its end would wait for that worker, i.e. for the whole queue
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        done = subprocess.run(
            command, cwd=repo_dir, stdout=out, stderr=err, text=True, check=False, env=env
        )
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if done.returncode != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-5:])
        raise AblateError(f"`dvc {' '.join(args)}` exited with {done.returncode}: {tail}")
    return stdout


def exp_show(repo_dir: Path, revs: Sequence[str] = ()) -> list[dict[str, Any]]:
    """`dvc exp show --json` of HEAD's experiments, or of the commits `revs`: experiments
    belong to the commit they ran from, so a table is rebuilt after later commits with --rev
    (several, when a study's experiments ran from more than one commit)."""
    rev_args = [arg for rev in revs for arg in ("--rev", rev)]
    return json.loads(dvc(["exp", "show", "--json", *rev_args], repo_dir))


def baseline_revs(show: list[dict[str, Any]]) -> list[str]:
    """The commits the experiments of a `dvc exp show --json` output ran from."""
    return [b["rev"] for b in show if b.get("rev") not in (None, "workspace")]
