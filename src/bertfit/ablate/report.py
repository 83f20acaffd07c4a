"""The ablation's report from one `dvc exp show --json` output: ablation.md (the table, the
experiments not in it, where the numbers come from), ablation.json (every experiment and every
group) and learning_curve.png."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bertfit.ablate import AblateError
from bertfit.ablate.experiments import Result, baseline_revs, read_experiments
from bertfit.ablate.plan import samples_label
from bertfit.ablate.statistics import Group, group
from bertfit.reporting import atomic_file, write_json, write_text


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
