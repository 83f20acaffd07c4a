"""What a search writes: a progress line per trial, trials.csv and best_params.yaml after every
trial (rewritten from the study, so any worker may write them), and at the end the pictures
(optimisation history, parameter importances), report.md and the `dvc exp run` command of the
best trials."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from matplotlib.figure import Figure
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import FrozenTrial, TrialState

from bertfit.figures import STYLE, save_png
from bertfit.phases import duration
from bertfit.reporting import write_csv, write_text
from bertfit.search.space import describe, number
from bertfit.search.study import ERROR_ATTR, STEPS_ATTR

log = logging.getLogger(__name__)

TRIALS_FILE = "trials.csv"
BEST_FILE = "best_params.yaml"
HISTORY_PNG = "history.png"
IMPORTANCES_PNG = "importances.png"
REPORT_FILE = "report.md"
COLOURS = {"COMPLETE": "#4c72b0", "PRUNED": "#dd8452", "FAIL": "#c44e52"}


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best completed trial (optuna's best_trial raises when there is none)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    return study.best_trial


def progress_line(
    study: optuna.Study,
    trial: FrozenTrial,
    n_trials: int,
    metric: str,
    durations: list[float],
    workers: int,
) -> str:
    """`trial 7/20 (#6): lr 3.1e-05, epochs 3 -> validation accuracy 0.812 (best 0.824 at trial
    #3); 2m10s, ~18m left`. n/N counts completed and pruned trials (failed ones are drawn
    again); #6 is optuna's trial number, trials.csv's `trial`. The time left is this worker's
    mean trial time over the trials to go, shared among the workers."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    if trial.state == TrialState.COMPLETE:
        outcome = f"validation {metric} {trial.value:.4f}"
    elif trial.state == TrialState.PRUNED:
        steps = trial.intermediate_values
        last = steps[max(steps)] if steps else math.nan
        outcome = f"pruned after {len(steps)} validations ({metric} {last:.4f})"
    else:
        outcome = f"failed: {trial.user_attrs.get(ERROR_ATTR, 'no message')}"
    best = best_trial(study)
    so_far = f" (best {best.value:.4f} at trial #{best.number})" if best is not None else ""
    mean = sum(durations) / len(durations) if durations else 0.0
    left = max(0, n_trials - done) * mean / workers
    again = retried_from(trial)
    values = describe(trial.params) + (f" (#{again}'s values again)" if again is not None else "")
    to_go = f"~{duration(left)} left" if done < n_trials else "the last"
    return (
        f"trial {done}/{n_trials} (#{trial.number}): {values} -> {outcome}"
        f"{so_far}; {duration(durations[-1] if durations else 0.0)}, {to_go}"
    )


def retried_from(trial: FrozenTrial) -> int | None:
    """The failed trial whose values this one runs again (study.retry_once), or None."""
    with warnings.catch_warnings():  # experimental in optuna 5, as the callback that sets it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryFailedTrialCallback.retried_trial_number(trial)


def trial_rows(study: optuna.Study) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per trial (its number, value, state, values, time, validations, steps trained,
    the failed trial it runs again, a failed trial's error) and the columns, the space's params
    in the order the trials drew them."""
    trials = study.get_trials(deepcopy=False)
    names = list(dict.fromkeys(name for t in trials for name in t.params))
    rows = [
        {
            "trial": t.number,
            "value": t.value,
            "state": t.state.name,
            **t.params,
            "duration_s": round(t.duration.total_seconds(), 1) if t.duration else None,
            "validations": len(t.intermediate_values),
            "steps": t.user_attrs.get(STEPS_ATTR),
            "retry_of": retried_from(t),
            # a retry inherits the failed trial's user attrs: its error is not this trial's
            "error": t.user_attrs.get(ERROR_ATTR) if t.state == TrialState.FAIL else None,
        }
        for t in trials
    ]
    columns = ["trial", "value", "state", *names, "duration_s", "validations", "steps", "retry_of"]
    return rows, [*columns, "error"]


def override(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's values as finetune params; a drawn warm-up ratio clears warmup_steps (the
    pipeline's params give one of the two)."""
    values = dict(trial.params)
    if "warmup_ratio" in values:
        values["warmup_steps"] = None
    return values


def set_values(values: dict[str, Any]) -> list[str]:
    """`finetune.learning_rate=3.1e-05`, ...: a trial's values as `dvc exp run -S` arguments."""
    return [f"finetune.{k}={'null' if v is None else v}" for k, v in sorted(values.items())]


def exp_run_command(values: dict[str, Any]) -> str:
    """`dvc exp run -S finetune.learning_rate=3.1e-05 ...`: the trial's values in the pipeline."""
    return "dvc exp run " + " ".join(f"-S {s}" for s in set_values(values))


def write_results(study: optuna.Study, out_dir: Path, metric: str) -> None:
    """trials.csv, and best_params.yaml once a trial has completed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, columns = trial_rows(study)
    write_csv(out_dir / TRIALS_FILE, rows, columns)
    best = best_trial(study)
    if best is None:
        return
    values = override(best)
    counted = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    header = (
        f"# best of {counted} trials: validation {metric} {best.value:.4f} (trial #{best.number})\n"
        f"# {exp_run_command(values)}\n"
    )
    text = header + yaml.safe_dump({"finetune": values}, sort_keys=True)
    write_text(out_dir / BEST_FILE, text)


def history_png(path: Path, study: optuna.Study, metric: str) -> Path:
    """Each trial's validation value (pruned trials at their last validation) and the best so
    far: optuna's optimisation history, drawn in the report figures' style."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
    with _style():
        fig = Figure(figsize=(6, 3.2))
        ax = fig.subplots()
        for state in ("COMPLETE", "PRUNED"):
            points = [(t.number, last_value(t)) for t in trials if t.state.name == state]
            if points:
                ax.scatter(*zip(*points, strict=True), s=16, c=COLOURS[state], label=state.lower())
        best, xs, ys = None, [], []
        for t in trials:
            if t.state == TrialState.COMPLETE and (best is None or sign * t.value > sign * best):
                best = t.value
            if best is not None:
                xs.append(t.number)
                ys.append(best)
        ax.step(xs, ys, where="post", color="#55a868", label="best so far")
        ax.set(xlabel="trial", ylabel=f"validation {metric}", title="search: optimisation history")
        ax.legend(frameon=False, fontsize=8)
        fig.tight_layout()
        return save_png(fig, path)


def last_value(trial: FrozenTrial) -> float:
    if trial.value is not None:
        return trial.value
    steps = trial.intermediate_values
    return steps[max(steps)] if steps else math.nan


def importances_png(path: Path, importances: dict[str, float], metric: str) -> Path:
    """How much of the validation's spread each param explains (optuna's fANOVA importances)."""
    names = list(importances)[::-1]
    with _style():
        fig = Figure(figsize=(6, 0.4 * len(names) + 1.2))
        ax = fig.subplots()
        ax.barh(names, [importances[n] for n in names], color=COLOURS["COMPLETE"])
        ax.set(xlabel=f"importance for validation {metric}", title="search: parameter importances")
        fig.tight_layout()
        return save_png(fig, path)


def _style() -> Any:
    import matplotlib

    return matplotlib.rc_context(STYLE)


def importances(study: optuna.Study) -> dict[str, float] | None:
    """optuna's parameter importances, or None when there is nothing to explain: fewer than two
    distinct completed values, or a space of one param."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len({t.value for t in complete}) < 2 or len(study.best_params) < 2:
        return None
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return optuna.importance.get_param_importances(study, evaluator=evaluator)


def report(study: optuna.Study, out_dir: Path, metric: str) -> str | None:
    """The pictures and report.md (the best trials, the pictures, the command); the command of
    the best trial, or None when no trial completed."""
    best = best_trial(study)
    if best is None:
        return None
    history_png(out_dir / HISTORY_PNG, study, metric)
    weights = importances(study)
    if weights is not None:
        importances_png(out_dir / IMPORTANCES_PNG, weights, metric)
    command = exp_run_command(override(best))
    write_text(out_dir / REPORT_FILE, report_text(study, metric, command, weights is not None))
    return command


def report_text(study: optuna.Study, metric: str, command: str, with_importances: bool) -> str:
    rows, _ = trial_rows(study)
    complete = sorted(
        (r for r in rows if r["state"] == "COMPLETE"),
        key=lambda r: r["value"],
        reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE,
    )
    states = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")}
    names = list(study.best_params)
    lines = [
        f"# Search {study.study_name}",
        "",
        f"{states['COMPLETE']} trials completed, {states['PRUNED']} pruned, {states['FAIL']} "
        f"failed; validation {metric}, the best first ({TRIALS_FILE} has every trial).",
        "",
        "| trial | " + " | ".join([f"validation {metric}", *names]) + " |",
        "|" + "---|" * (len(names) + 2),
        *(
            f"| {r['trial']} | {r['value']:.4f} | "
            + " | ".join(number(r.get(n)) for n in names)
            + " |"
            for r in complete[:10]
        ),
        "",
        f"The best trial in the pipeline, on the full data: `{command}`",
        "",
        f"![optimisation history]({HISTORY_PNG})",
    ]
    if with_importances:
        lines += ["", f"![parameter importances]({IMPORTANCES_PNG})"]
    return "\n".join(lines) + "\n"


def best_overrides(study: optuna.Study, k: int) -> list[dict[str, Any]]:
    """The values of the best k completed trials, the best first (for --queue-best)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    ranked = sorted(complete, key=lambda t: (sign * t.value, t.number))[:k]
    return [override(t) | {"_trial": t.number} for t in ranked]
