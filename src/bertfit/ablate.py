"""bertfit ablate: the paper's variants × seeds as DVC experiments, and their test error table.

    bertfit ablate --variants FiT ITPT-FiT MFiT-FiT --seeds 3
    bertfit ablate --variants FiT ITPT-FiT --seeds 3 --curve-variants FiT ITPT-FiT \\
        --train-samples 100 500 1000 all
    bertfit ablate --table-only            # rebuild the table and the PNG from the experiments

Queues one DVC experiment per variant and seed (`dvc exp run --queue -n NAME -S ...`), and, for
the learning curve, one per curve variant, seed and number of labelled examples
(finetune.max_train_samples); runs the queue (`dvc queue start`) and waits for it, logging each
experiment as it finishes. The variants are params (docs/experiments.md): FiT = no further
pretraining and no multi-task step; ITPT / IDPT / CDPT = pretrain.corpus within_task / in_domain /
cross_domain; MFiT = multitask.enabled.

The table is then read back from `dvc exp show --json` alone: every experiment of the current
commit whose name starts with `<--name>-`, grouped by the params it ran with (target, the
variant its pretrain.corpus and multitask.enabled make, finetune.max_train_samples), never by
its name; its test error is evaluate's error_rate (1 - accuracy where that is missing). Per group:
n, mean ± sample std, and the 95 % t-interval of the mean (REFERENCE.md: report mean ± std over
seeds before claiming an effect). Writes <out-dir>/ablation.md, ablation.json (every experiment
and every group) and learning_curve.png.

Seeds: only finetune.seed varies by default (`--seed-params`), so DVC's run-cache reuses each
variant's collect, pretrain and multitask results across its seeds: 3 seeds cost 3 finetunes,
not 3 pretrainings. The interval then covers the fine-tuning's randomness (initialisation of the
head, batch order, dropout, and the subset drawn for max_train_samples), not that of pretraining
or multi-task training; `--seed-params finetune.seed pretrain.seed multitask.seed` samples those
too, at the cost of running every stage for every seed.

An experiment that failed is listed with its name and the command that shows its log
(`dvc queue logs TASK`); the table is written from the others and the command exits with 1.
Rerunning the same command skips the experiments that already succeeded and queues the failed
and missing ones again.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from bertfit.cli import positive_int
from bertfit.reporting import atomic_file, write_json, write_text

log = logging.getLogger(__name__)

# The paper's variant names (Sun et al., Table 4-6; docs/experiments.md) -> the params that make
# them. Dict order is the table's row order.
VARIANTS: dict[str, dict[str, Any]] = {
    "FiT": {"pretrain.corpus": "none", "multitask.enabled": False},
    "ITPT-FiT": {"pretrain.corpus": "within_task", "multitask.enabled": False},
    "IDPT-FiT": {"pretrain.corpus": "in_domain", "multitask.enabled": False},
    "CDPT-FiT": {"pretrain.corpus": "cross_domain", "multitask.enabled": False},
    "MFiT-FiT": {"pretrain.corpus": "none", "multitask.enabled": True},
    "ITPT-MFiT-FiT": {"pretrain.corpus": "within_task", "multitask.enabled": True},
}
DEFAULT_METRICS_FILE = "reports/evaluate/metrics.json"
# where finetune says how many train rows it used: the learning curve's x (null samples = all)
TRAIN_EXAMPLES_FILE = "reports/finetune/metrics.json"
SAMPLES_PARAM = "finetune.max_train_samples"
CONFIDENCE = 0.95
POLL_S = 10.0
RESTORE_S = 5.0  # a stage restored from DVC's run-cache: its check and checkout
DOWNSTREAM = ("finetune.", "evaluate.")  # params of the stages an ablation's seeds rerun
FINISHED = ("success", "failed")
# ours running and no queue worker alive at STALE_POLLS checks, one every WORKER_EVERY polls:
# then they count as dead (3 minutes at the default poll)
WORKER_EVERY = 6
STALE_POLLS = 3


class AblateError(ValueError):
    """Bad arguments, a DVC command that failed, or experiments that cannot be tabulated."""


# --- variants and the plan ---------------------------------------------------------------------


def resolve_variant(name: str) -> str:
    """The paper's name for `name`: case does not matter and the trailing -FiT may be left out
    (the issue's list says ITPT, MFiT, ITPT-MFiT for ITPT-FiT, MFiT-FiT, ITPT-MFiT-FiT)."""
    wanted = name.strip().lower()
    for variant in VARIANTS:
        if wanted in (variant.lower(), variant.lower().removesuffix("-fit")):
            return variant
    raise AblateError(f"unknown variant {name!r}; valid variants: {', '.join(VARIANTS)}")


def variant_of(corpus: Any, multitask: Any) -> str:
    """The variant a pair of params values makes; others are named by their values."""
    for variant, params in VARIANTS.items():
        if params == {"pretrain.corpus": corpus, "multitask.enabled": multitask}:
            return variant
    return f"pretrain.corpus={corpus}, multitask.enabled={multitask}"


def parse_samples(value: str) -> int | None:
    """A number of labelled examples for the curve; `all` (None) is the whole train split."""
    if value.lower() in ("all", "null", "none"):
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise AblateError(f"--train-samples: {value!r} is neither a positive number nor 'all'")
    return number


def samples_label(samples: int | None) -> str:
    return "all" if samples is None else str(samples)


def parse_set(items: Sequence[str], controlled: Iterable[str]) -> dict[str, str]:
    """`--set key=value` overrides, kept as text for `dvc exp run -S`; a key the ablation sets
    itself (a variant's params, the seed params) is refused: it would contradict the rows."""
    overrides: dict[str, str] = {}
    controlled = set(controlled)
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise AblateError(
                f"--set {item!r}: expected key=value, e.g. finetune.learning_rate=3e-5"
            )
        if key in controlled:
            raise AblateError(
                f"--set {key}: ablate sets this itself (variants: pretrain.corpus and "
                "multitask.enabled; seeds: --seed-params; examples: --train-samples)"
            )
        overrides[key] = value
    return overrides


@dataclass(frozen=True)
class Planned:
    """One experiment to queue: its name and the `-S` overrides that make it."""

    name: str
    variant: str
    seed: int
    samples: int | None
    overrides: tuple[str, ...]


def experiment_name(prefix: str, variant: str, samples: int | None, seed: int) -> str:
    """`<prefix>-<variant>-n<examples|all>-s<seed>`, lowercase: a valid git ref name, and one a
    person can read in `dvc exp show`; the table never parses it (it reads the params)."""
    return f"{prefix}-{variant.lower()}-n{samples_label(samples)}-s{seed}"


def yaml_value(value: Any) -> str:
    """A params value as `dvc exp run -S` reads it (YAML): false, null, within_task, 100."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def plan(
    variants: Sequence[str],
    seeds: Sequence[int],
    seed_params: Sequence[str],
    curve_variants: Sequence[str],
    train_samples: Sequence[int | None],
    default_samples: int | None,
    sets: dict[str, str],
    prefix: str,
) -> list[Planned]:
    """Every experiment: each variant at the default number of examples (params.yaml's
    finetune.max_train_samples, or --set's), then each curve variant at each --train-samples;
    a run both lists is planned once."""
    wanted = [(v, default_samples) for v in variants]
    wanted += [(v, n) for v in curve_variants for n in train_samples]
    planned: dict[str, Planned] = {}
    for variant, samples in wanted:
        for seed in seeds:
            name = experiment_name(prefix, variant, samples, seed)
            overrides = {k: yaml_value(v) for k, v in VARIANTS[variant].items()}
            overrides |= {key: str(seed) for key in seed_params}
            overrides |= sets
            if samples != default_samples or SAMPLES_PARAM in sets:
                overrides[SAMPLES_PARAM] = yaml_value(samples)
            planned.setdefault(
                name,
                Planned(
                    name, variant, seed, samples, tuple(f"{k}={v}" for k, v in overrides.items())
                ),
            )
    return list(planned.values())


# --- reading `dvc exp show --json` -------------------------------------------------------------


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


def dotted(data: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def file_data(data: dict[str, Any], kind: str, path: str) -> dict[str, Any] | None:
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


# --- the arithmetic ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof 1) and the t-interval of the mean of n values;
    std and interval are None for n < 2 (one run says nothing about the spread)."""

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Student's t-interval (n - 1 degrees of freedom): with 3 seeds the normal 1.96 would be
    less than half the right width (t = 4.30)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise AblateError("no values to summarise")
    mean = math.fsum(values) / n
    if n < 2:
        return Summary(n, mean, None, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Group:
    target: str | None
    variant: str
    samples: int | None
    summary: Summary | None
    seeds: tuple[int | None, ...]
    train_examples: int | None
    # (name, state) of the group's experiments not in its numbers: failed, queued, running, or
    # a success without the metric
    not_finished: tuple[tuple[str, str], ...]


def variant_rank(variant: str) -> int:
    return list(VARIANTS).index(variant) if variant in VARIANTS else len(VARIANTS)


def group(results: Iterable[Result]) -> list[Group]:
    """Results grouped by (target, variant, number of examples), in the paper's variant order,
    fewest examples first and `all` last."""
    buckets: dict[tuple[str | None, str, int | None], list[Result]] = {}
    for result in results:
        key = (result.target, result.variant or "unknown", result.samples)
        buckets.setdefault(key, []).append(result)
    groups = []
    for (target, variant, samples), members in buckets.items():
        done = [r for r in members if r.state == "success" and r.error_rate is not None]
        examples = {r.train_examples for r in done if r.train_examples is not None}
        groups.append(
            Group(
                target,
                variant,
                samples,
                summarize([r.error_rate for r in done]) if done else None,  # type: ignore[misc]
                tuple(sorted((r.seed for r in done), key=lambda s: (s is None, s or 0))),
                max(examples) if examples else None,
                tuple((r.name, r.state) for r in members if r not in done),
            )
        )
    return sorted(
        groups,
        key=lambda g: (
            str(g.target),
            variant_rank(g.variant),
            g.variant,
            g.samples is None,
            g.samples or 0,
        ),
    )


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def table_rows(groups: Sequence[Group]) -> list[list[str]]:
    rows = []
    for g in groups:
        s = g.summary
        if s is None:
            cells = ["0", "–", "–"]
        elif s.std is None:
            cells = [str(s.n), f"{percent(s.mean)} ± –", "– (n = 1: no interval)"]
        else:
            cells = [
                str(s.n),
                f"{percent(s.mean)} ± {percent(s.std)}",
                f"[{percent(s.low)}, {percent(s.high)}]",  # type: ignore[arg-type]
            ]
        seeds = ", ".join(str(seed) for seed in g.seeds) or "–"
        if g.not_finished:
            counts: dict[str, int] = {}
            for _, state in g.not_finished:
                counts[state] = counts.get(state, 0) + 1
            seeds += " (" + ", ".join(f"{n} {state}" for state, n in counts.items()) + ")"
        examples = samples_label(g.samples)
        if g.train_examples is not None:
            examples += f" ({g.train_examples:,})" if g.samples is None else ""
        rows.append([str(g.target), g.variant, examples, *cells, seeds])
    return rows


def markdown(
    groups: Sequence[Group],
    results: Sequence[Result],
    prefix: str,
    metrics_file: str,
    wall_s: float | None,
    plot_file: str | None,
    baselines: Sequence[str] = (),
) -> str:
    """The report: the table, the experiments that did not finish, where the numbers come
    from, and the run's wall time."""
    header = [
        "target",
        "variant",
        "labelled examples",
        "n",
        "test error % (mean ± std)",
        "95 % interval of the mean",
        "seeds",
    ]
    lines = [
        f"# Ablation `{prefix}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in table_rows(groups)),
        "",
        f"Test error from `{metrics_file}` (error_rate) of each experiment named `{prefix}-*` "
        "in `dvc exp show --json`; std is the sample standard deviation (n - 1), the interval "
        "Student's t over the seeds. Rebuild: `bertfit ablate --table-only "
        f"--name {prefix}"
        + (f" --rev {' '.join(rev[:12] for rev in baselines)}`" if baselines else "`")
        + " (the experiments' commits).",
    ]
    unfinished = [r for r in results if r.state != "success" or r.error_rate is None]
    if unfinished:
        lines += ["", "Not in the table:", ""]
        for r in unfinished:
            why = r.state if r.state != "success" else f"no error_rate in {metrics_file}"
            lines.append(f"- `{r.name}`: {why}; log: `{r.log_command}`")
    if plot_file:
        lines += ["", f"![learning curve]({plot_file})"]
    if wall_s is not None:
        lines += ["", f"Wall time of the run: {wall_s:.0f} s ({wall_s / 60:.1f} min)."]
    return "\n".join(lines) + "\n"


def plot_curve(groups: Sequence[Group], curve_variants: Sequence[str] | None, path: Path) -> bool:
    """Test error against labelled examples (log scale), mean with the t-interval as error
    bars, one line per curve variant (None: every variant run at two or more numbers, so a
    rebuild from the experiments alone draws what was run); False (nothing drawn) when no
    variant has two points. `all` sits at finetune's train_examples, else at twice the largest
    number given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = {}
    numbers = [g.samples for g in groups if g.samples is not None]
    if curve_variants is None:
        curve_variants = list(dict.fromkeys(g.variant for g in groups))
    for variant in curve_variants:
        points = [g for g in groups if g.variant == variant and g.summary is not None]
        if len({g.samples for g in points}) >= 2:
            lines[variant] = points
    if not lines:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, points in lines.items():
        xs, ys, lows, highs = [], [], [], []
        for g in points:
            x = g.samples
            if x is None:
                x = g.train_examples or 2 * max(numbers, default=1)
            s = g.summary
            xs.append(x)
            ys.append(100 * s.mean)  # type: ignore[union-attr]
            half_low = 0.0 if s.low is None else 100 * (s.mean - s.low)  # type: ignore[union-attr]
            half_high = 0.0 if s.high is None else 100 * (s.high - s.mean)  # type: ignore[union-attr]
            lows.append(half_low)
            highs.append(half_high)
        order = sorted(range(len(xs)), key=xs.__getitem__)
        ax.errorbar(
            [xs[i] for i in order],
            [ys[i] for i in order],
            yerr=[[lows[i] for i in order], [highs[i] for i in order]],
            marker="o",
            capsize=3,
            label=variant,
        )
    ax.set_xscale("log")
    ax.set_xlabel("labelled training examples (finetune.max_train_samples)")
    ax.set_ylabel("test error % (mean, 95 % interval)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_file(path) as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return True


def write_report(
    show: list[dict[str, Any]],
    out_dir: Path,
    prefix: str,
    curve_variants: Sequence[str] | None,
    metrics_file: str,
    seed_param: str,
    wall_s: float | None,
) -> tuple[list[Result], str]:
    """Table, JSON and PNG from one `dvc exp show --json` output; returns the results read and
    the markdown."""
    results = read_experiments(show, prefix, metrics_file=metrics_file, seed_param=seed_param)
    if not results:
        raise AblateError(
            f"no experiment named {prefix}-* at this commit in `dvc exp show --json`; run "
            "`bertfit ablate` without --table-only first, or give the --name it ran with, or "
            "the commit it ran from with --rev (ablation.md's last line names it)"
        )
    groups = group(results)
    plot_file = out_dir / "learning_curve.png"
    drawn = plot_curve(groups, curve_variants, plot_file)
    if not drawn:
        plot_file.unlink(missing_ok=True)
    text = markdown(
        groups,
        results,
        prefix,
        metrics_file,
        wall_s,
        plot_file.name if drawn else None,
        baseline_revs(show),
    )
    write_text(out_dir / "ablation.md", text)
    write_json(
        out_dir / "ablation.json",
        {
            "name": prefix,
            "metrics_file": metrics_file,
            "wall_s": wall_s,
            "experiments": [asdict(r) for r in results],
            "groups": [asdict(g) for g in groups],
        },
    )
    return results, text


# --- running DVC -------------------------------------------------------------------------------


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


def default_samples(repo_dir: Path, sets: dict[str, str]) -> int | None:
    """finetune.max_train_samples as the experiments will see it: --set's, else params.yaml's."""
    if SAMPLES_PARAM in sets:
        return yaml.safe_load(sets[SAMPLES_PARAM])
    params = yaml.safe_load((repo_dir / "params.yaml").read_text(encoding="utf-8")) or {}
    return dotted(params, SAMPLES_PARAM)


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


# --- the command -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--variants",
        nargs="*",
        default=["FiT", "ITPT-FiT", "MFiT-FiT"],
        help=f"variants to compare at finetune.max_train_samples ({', '.join(VARIANTS)}; "
        "default: FiT ITPT-FiT MFiT-FiT; none, with --curve-variants: the curve alone)",
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=3, help="seeds per variant (default: 3)"
    )
    parser.add_argument(
        "--first-seed",
        type=int,
        default=42,
        help="the seeds are first-seed, first-seed + 1, ... (default: 42, params.yaml's)",
    )
    parser.add_argument(
        "--seed-params",
        nargs="+",
        default=["finetune.seed"],
        help="params set to the seed (default: finetune.seed, so pretrain and multitask are "
        "reused from the run-cache across seeds; add pretrain.seed multitask.seed to vary them)",
    )
    parser.add_argument(
        "--curve-variants",
        nargs="*",
        default=[],
        help="variants (two, say) to run at each --train-samples for the learning curve",
    )
    parser.add_argument(
        "--train-samples",
        nargs="+",
        default=["100", "500", "1000", "all"],
        help="labelled examples for the curve (finetune.max_train_samples; default: 100 500 "
        "1000 all)",
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a param for every experiment, as dvc exp run -S takes it (repeatable)",
    )
    parser.add_argument(
        "--name", default="ablate", help="experiment name prefix; the table reads <name>-*"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path("reports/ablation"),
        help="where ablation.md, ablation.json and learning_curve.png go",
    )
    parser.add_argument(
        "--metrics-file",
        default=DEFAULT_METRICS_FILE,
        help=f"the metrics file with error_rate or accuracy (default: {DEFAULT_METRICS_FILE})",
    )
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="run nothing: rebuild the table and the PNG from dvc exp show --json",
    )
    parser.add_argument(
        "--rev",
        nargs="+",
        default=None,
        help="with --table-only: the commit(s) the experiments ran from (default: HEAD)",
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="queue workers (default: 1; on 2 CPU cores more only slows each run down)",
    )
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC project (default: .)")
    parser.add_argument(
        "--no-estimate",
        action="store_true",
        help="queue without first estimating the wall time (bertfit plan: it times a few "
        "training steps, about half a minute on 2 CPU cores)",
    )


def estimate_line(planned: Sequence[Planned], params_file: Path) -> str:
    """The ablation's estimated wall time on this machine (bertfit.plan: steps measured once,
    each experiment's stages added up). Experiments that differ only in finetune's params share
    collect, pretrain and multitask through DVC's run-cache: those run once per group."""
    from bertfit.plan import duration, make_plan

    def overrides(p: Planned) -> dict[str, Any]:
        pairs = (o.split("=", 1) for o in p.overrides)
        return {k: yaml.safe_load(v) for k, v in pairs}

    pretraining = any(overrides(p).get("pretrain.corpus", "none") != "none" for p in planned)
    measuring = {"pretrain.corpus": "within_task"} if pretraining else None  # a masked-LM step
    measured = make_plan(params_file, overrides=measuring)
    costs, prepared = measured.costs, {}
    total, upstream_done = 0.0, set()
    for p in planned:
        each = overrides(p)
        upstream = tuple(
            sorted((k, str(v)) for k, v in each.items() if not k.startswith(DOWNSTREAM))
        )
        stages = make_plan(params_file, prepared=prepared, overrides=each, costs=costs).stages
        for stage in stages:
            cached = upstream in upstream_done and stage.name not in ("finetune", "evaluate")
            total += RESTORE_S if cached else stage.seconds or 0.0
        upstream_done.add(upstream)
    groups = len(upstream_done)
    return (
        f"estimated wall time on this machine: about {duration(total)} for {len(planned)} "
        f"experiments, one at a time ({groups} run collect, pretrain and multitask; the others "
        "restore them from DVC's run-cache); measured: "
        + "; ".join(f"{k} {v}" for k, v in costs.shapes.items())
    )


def ablate(args: argparse.Namespace) -> int:
    """Plan, run and tabulate; returns the exit status (1 when an experiment failed)."""
    variants = [resolve_variant(v) for v in args.variants]
    curve_variants = [resolve_variant(v) for v in args.curve_variants]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.]*", args.name):
        raise AblateError(f"--name {args.name!r}: letters, digits, '_' and '.' only")
    seed_param = args.seed_params[0]
    wall_s = None
    failed: list[str] = []
    if args.rev and not args.table_only:
        raise AblateError("--rev rebuilds a table (--table-only); experiments run from HEAD")
    if not (variants or curve_variants or args.table_only):
        raise AblateError("nothing to run: name --variants, --curve-variants or both")
    if not args.table_only:
        samples = [parse_samples(v) for v in args.train_samples]
        controlled = {*VARIANTS["FiT"], *args.seed_params}
        if curve_variants:
            controlled.add(SAMPLES_PARAM)
        sets = parse_set(args.sets, controlled)
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        planned = plan(
            variants,
            seeds,
            args.seed_params,
            curve_variants,
            samples,
            default_samples(args.repo, sets),
            sets,
            args.name,
        )
        log.info(
            "ablation %s: %d experiments (%s × seeds %s%s)",
            args.name,
            len(planned),
            ", ".join(variants) or "no variant beside the curve",
            ", ".join(map(str, seeds)),
            f"; curve {', '.join(curve_variants)} at {' '.join(args.train_samples)}"
            if curve_variants
            else "",
        )
        if not args.no_estimate:
            try:
                log.info(estimate_line(planned, args.repo / "params.yaml"))
            except (ValueError, FileNotFoundError) as err:  # advice only: the runs say the rest
                log.warning("no wall-time estimate: %s", err)
        start = time.monotonic()
        failed, queued_from = queue_and_run(planned, args.repo, args.name, args.jobs, seed_param)
        wall_s = time.monotonic() - start
        args.rev = [queued_from]
    results, text = write_report(
        exp_show(args.repo, args.rev or ()),
        args.out_dir,
        args.name,
        curve_variants or None,
        args.metrics_file,
        seed_param,
        wall_s,
    )
    print(text)
    log.info("wrote %s", args.out_dir / "ablation.md")
    for r in results:
        if r.state == "failed":
            log.error("experiment %s failed; its log: %s", r.name, r.log_command)
    # a rebuild only reports; a run fails when one of its own experiments did
    return 1 if failed else 0


def run(args: argparse.Namespace) -> None:
    """The subcommand: INFO logging with times; user errors as one line, exit 1."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        status = ablate(args)
    except AblateError as err:
        raise SystemExit(f"bertfit ablate: error: {err}") from None
    if status:
        raise SystemExit(status)


def main(argv: list[str] | None = None) -> None:
    """`bertfit ablate ARGS` (`python -m bertfit.ablate`)."""
    from bertfit import cli

    cli.main(["ablate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
