"""The markdown a pull request's reviewer reads: what the branch did to the headline, against a
baseline revision, and whether that is more than noise; then what else changed.

    python -m bertfit.review --baseline main --out pr_report.md --plots-dir dvc_plots/pr
    make pr-report BASELINE=origin/main        # the same; .github/workflows/pr-report.yml posts it

Sections, in the order a reviewer needs them:

1. **Headline**: the target's test metric with its 95 % interval and the run's wall time
   (reports/summary/headline.json, bertfit.summary) on both sides, the difference, and whether
   the difference is within the noise. The noise is the seed spread when an ablation of this
   target and variant ran (reports/ablation/ablation.json, `bertfit ablate`: two runs that
   differ only in their seed differ by up to 1.96·√2·σ, 95 % of the time), else the test-set
   bootstrap interval's half-width (the larger of the two sides'): a difference smaller than
   either is no evidence of a change. A baseline from before the headline existed shows its
   test metric without an interval.
2. **Params** that changed (`dvc params diff --md`).
3. **Other metrics** that changed, largest relative change first, collapsed (`<details>`):
   most are drift of a few 1e-4 that a reviewer need not read.
4. **Pictures** of both sides: evaluate's figures from the workspace and, extracted with
   `git show` (they are kept in git), from the baseline; and with --plots-dir, `dvc plots diff`
   as the offline HTML page (bertfit.plots_page), whose curves are in git on both sides.

The report is deterministic: the same revisions and workspace give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bertfit.phases import duration
from bertfit.plots_page import write_html_template
from bertfit.reporting import write_text

FIGURES_DIR = Path("reports/evaluate/figures")
HEADLINE_FILE = Path("reports/summary/headline.json")
EVALUATE_RECORD = Path("reports/evaluate/run.json")
EVALUATE_METRICS = Path("reports/evaluate/metrics.json")
ABLATION_FILE = Path("reports/ablation/ablation.json")
PARAMS_FILE = Path("params.yaml")
# where the baseline's pictures go (beside the plots page, with --plots-dir): gitignored
DEFAULT_PAGE_DIR = Path("dvc_plots/pr")
# the 95 % range of the difference of two runs whose seeds alone differ, in seed standard
# deviations: 1.96 standard deviations of a difference of two independent draws
SEED_SPREAD_FACTOR = 1.96 * math.sqrt(2)


def dvc_command() -> list[str]:
    """dvc from this Python's environment (the project's .venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return [str(beside)] if beside.is_file() else ["dvc"]


def run(args: list, repo_dir: Path) -> tuple[str, str | None]:
    """(stdout, None), or ("", the error's last line) when the command fails."""
    done = subprocess.run(args, cwd=repo_dir, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return "", lines[-1] if lines else f"exit status {done.returncode}"
    return done.stdout, None


def git_bytes(repo_dir: Path, revision: str, path: Path) -> bytes | None:
    """A file as committed at `revision`, or None when it is not there."""
    done = subprocess.run(
        ["git", "show", f"{revision}:{path.as_posix()}"], cwd=repo_dir, capture_output=True
    )
    return done.stdout if done.returncode == 0 else None


def git_json(repo_dir: Path, revision: str, path: Path) -> dict[str, Any] | None:
    data = git_bytes(repo_dir, revision, path)
    return json.loads(data) if data else None


def file_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class Side:
    """One side's headline: the task, its metric, the value, the interval and the wall time,
    from the summary stage's headline.json and evaluate's record (a baseline that predates the
    headline: evaluate's metrics.json value alone)."""

    def __init__(
        self,
        headline: dict[str, Any] | None,
        record: dict[str, Any] | None,
        metrics: dict[str, Any] | None,
    ) -> None:
        record = record or {}
        self.task: str | None = record.get("task")
        self.metric: str | None = record.get("metric")
        self.value = self.lower = self.upper = self.wall_min = None
        if self.metric and headline and f"test_{self.metric}" in headline:
            self.value = headline[f"test_{self.metric}"]
            self.lower = headline.get(f"test_{self.metric}_lower")
            self.upper = headline.get(f"test_{self.metric}_upper")
            self.wall_min = headline.get("wall_min")
        elif self.metric and metrics and self.metric in metrics:
            self.value = metrics[self.metric]

    @classmethod
    def at(cls, repo_dir: Path, revision: str | None) -> Side:
        """The workspace's side (revision None) or a committed revision's."""
        if revision is None:
            read = [file_json(repo_dir / p) for p in (HEADLINE_FILE, EVALUATE_RECORD)]
            return cls(*read, file_json(repo_dir / EVALUATE_METRICS))
        files = (HEADLINE_FILE, EVALUATE_RECORD, EVALUATE_METRICS)
        return cls(*(git_json(repo_dir, revision, p) for p in files))

    @property
    def half_width(self) -> float | None:
        if self.lower is None or self.upper is None:
            return None
        return (self.upper - self.lower) / 2

    def cell(self) -> str:
        if self.value is None:
            return "–"
        if self.lower is None or self.upper is None:
            return f"{self.value:.4f}"
        return f"{self.value:.4f} [{self.lower:.4f}, {self.upper:.4f}]"


def seed_spread(
    ablation: dict[str, Any] | None, task: str | None, metric: str | None, params: dict
) -> tuple[float, int] | None:
    """(σ of the test metric over seeds, seeds) from the ablation of this target in this
    variant (pretrain.corpus, multitask.enabled, finetune.max_train_samples), or None.

    The ablation tabulates the test error rate, whose spread is accuracy's: used for accuracy
    and the error rate only."""
    if not ablation or metric not in ("accuracy", "error_rate"):
        return None
    from bertfit.ablate.plan import VARIANTS  # the variants' params: one definition

    corpus = params.get("pretrain", {}).get("corpus")
    enabled = params.get("multitask", {}).get("enabled")
    samples = params.get("finetune", {}).get("max_train_samples")
    variant = next(
        (
            name
            for name, values in VARIANTS.items()
            if values == {"pretrain.corpus": corpus, "multitask.enabled": enabled}
        ),
        None,
    )
    for group in ablation.get("groups", []):
        summary = group.get("summary") or {}
        if (
            (group.get("target"), group.get("variant"), group.get("samples"))
            == (task, variant, samples)
            and summary.get("std") is not None
            and summary.get("n", 0) >= 2
        ):
            return float(summary["std"]), int(summary["n"])
    return None


def noise_verdict(base: Side, head: Side, spread: tuple[float, int] | None) -> tuple[str, str]:
    """(how big the noise is and where it comes from, whether the difference is within it)."""
    if base.value is None or head.value is None:
        return "–", "–"
    difference = abs(head.value - base.value)
    if spread is not None:
        sigma, seeds = spread
        noise = SEED_SPREAD_FACTOR * sigma
        source = f"±{noise:.4f}: seed spread (σ {sigma:.4f}, {seeds} seeds, bertfit ablate)"
    else:
        widths = [w for w in (base.half_width, head.half_width) if w is not None]
        if not widths:
            return "unknown: no interval on either side", "–"
        noise = max(widths)
        source = f"±{noise:.4f}: test-set bootstrap, 95 %"
    verdict = "within the noise" if difference <= noise else "**beyond the noise**"
    return source, verdict


def headline_section(
    baseline: str, base: Side, head: Side, spread: tuple[float, int] | None
) -> str:
    """The first table: the headline on both sides, the difference and the noise."""
    task, metric = head.task or base.task or "?", head.metric or base.metric or "?"
    if head.value is None:
        return (
            "## Headline\n\nNo headline in the workspace (reports/summary/headline.json): run "
            "`dvc repro` first.\n"
        )
    difference = f"{head.value - base.value:+.4f}" if base.value is not None else "–"
    noise, verdict = noise_verdict(base, head, spread)
    rows = [
        f"| {task} test {metric} | {base.cell()} | {head.cell()} | {difference} | {verdict} |",
    ]
    wall = [
        duration(60 * side.wall_min) if side.wall_min is not None else "–" for side in (base, head)
    ]
    wall_difference = (
        f"{60 * (head.wall_min - base.wall_min):+.0f} s"
        if head.wall_min is not None and base.wall_min is not None
        else "–"
    )
    rows.append(f"| wall time | {wall[0]} | {wall[1]} | {wall_difference} | (this machine) |")
    if base.value is not None and base.lower is None:
        note = f"`{baseline}` has no headline file: its value is evaluate's, without interval. "
    else:
        note = ""
    return (
        "## Headline\n\n"
        f"| | `{baseline}` | this branch | difference | |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\n{note}Noise: {noise}. Interval: 95 %, a bootstrap over the test rows.\n"
    )


def params_section(table: str, error: str | None, baseline: str) -> str:
    """`dvc params diff --md`'s table, or that nothing changed, or why dvc failed."""
    if error is not None:
        body = f"`dvc` failed: {error}"
    elif len(table.strip().splitlines()) > 2:  # more than a header and its rule
        body = table.strip()
    else:
        body = f"No param changed against `{baseline}`."
    return f"## Params\n\n{body}\n"


def relative_change(old: Any, new: Any) -> float | None:
    """|new - old| / |old| (None where either is missing or no number, inf from 0)."""
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new)):
        return None
    if old == 0:
        return 0.0 if new == 0 else math.inf
    return abs(new - old) / abs(old)


def metrics_section(
    diff: dict[str, Any] | None, error: str | None, baseline: str, metric: str | None = None
) -> str:
    """Every changed metric but the headline's (headline.json, and evaluate's `metric` which
    it repeats), largest relative change first (added and removed ones last), in <details>."""
    if error is not None:
        return f"## Other metrics\n\n`dvc` failed: {error}\n"
    rows = []
    for path, changes in sorted((diff or {}).items()):
        if Path(path) == HEADLINE_FILE:
            continue
        for key, change in sorted(changes.items()):
            if Path(path) == EVALUATE_METRICS and key == metric:
                continue
            old, new = change.get("old"), change.get("new")
            rows.append((relative_change(old, new), f"{path}:{key}", old, new))
    if not rows:
        return f"## Other metrics\n\nNo other metric changed against `{baseline}`.\n"
    rows.sort(key=lambda r: (r[0] is None, -(r[0] or 0.0), r[1]))

    def cell(value: Any) -> str:
        if value is None:
            return "–"
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    lines = [
        f"| metric | `{baseline}` | this branch | change | relative |",
        "|---|---|---|---|---|",
    ]
    for relative, name, old, new in rows:
        change = cell(new - old) if relative is not None else ("new" if old is None else "gone")
        shown = "–" if relative is None else ("∞" if relative == math.inf else f"{relative:.2%}")
        lines.append(f"| {name} | {cell(old)} | {cell(new)} | {change} | {shown} |")
    big = sum(1 for r in rows if r[0] is not None and r[0] >= 0.01)
    summary = f"{len(rows)} metrics changed ({big} by 1 % or more), largest relative change first"
    return (
        "## Other metrics\n\n<details><summary>"
        + summary
        + "</summary>\n\n"
        + "\n".join(lines)
        + "\n\n</details>\n"
    )


def pictures_section(baseline: str, pairs: list[tuple[str, str | None, str | None]]) -> str:
    """evaluate's pictures, the baseline's beside the branch's (paths relative to the report)."""
    if not pairs:
        return ""
    lines = [f"| | `{baseline}` | this branch |", "|---|---|---|"]
    for name, old, new in pairs:
        shown = [
            f"![{name} ({side})]({path})" if path else "–"
            for side, path in (
                (baseline, old),
                ("this branch", new),
            )
        ]
        lines.append(f"| {name} | {shown[0]} | {shown[1]} |")
    return "## Evaluation pictures\n\n" + "\n".join(lines) + "\n"


def baseline_figures(repo_dir: Path, baseline: str, target_dir: Path) -> dict[str, Path]:
    """evaluate's figures as committed at the baseline, written to target_dir: name -> file."""
    listed, error = run(
        ["git", "ls-tree", "--name-only", baseline, f"{FIGURES_DIR.as_posix()}/"], repo_dir
    )
    found = {}
    if error is not None:
        return found
    for entry in sorted(listed.split()):
        if not entry.endswith(".png"):
            continue
        data = git_bytes(repo_dir, baseline, Path(entry))
        if data:
            path = target_dir / Path(entry).name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            found[Path(entry).stem] = path
    return found


def assemble(
    baseline: str,
    head: str,
    headline: str,
    params: str,
    metrics: str,
    pictures: str,
    plots_page: str | None,
) -> str:
    """The report from its sections, in the order a reviewer reads them."""
    parts = [
        f"# bertfit: this branch against `{baseline}`\n",
        f"Workspace at `{head}` after `dvc repro`, compared with `{baseline}`.\n",
        headline,
        params,
        metrics,
    ]
    if pictures:
        parts.append(pictures)
    if plots_page:
        parts.append(
            "## Plots\n\n"
            f"`dvc plots diff {baseline}` as an offline HTML page: `{plots_page}` (CI keeps it "
            "as an artifact): the training curves of both sides, a chart per metric and a line "
            "per task, the baseline's dashed.\n"
        )
    return "\n".join(parts)


def pr_report(repo_dir: Path, baseline: str, out_file: Path, plots_dir: Path | None) -> str:
    """Run the diffs in repo_dir, write out_file, return its text."""
    dvc = dvc_command()
    head, _ = run(["git", "rev-parse", "--short", "HEAD"], repo_dir)
    out_path = repo_dir / out_file  # an absolute out_file stays itself

    base_side, head_side = Side.at(repo_dir, baseline), Side.at(repo_dir, None)
    params_path = repo_dir / PARAMS_FILE
    params = (
        yaml.safe_load(params_path.read_text(encoding="utf-8")) if params_path.is_file() else {}
    )
    spread = seed_spread(
        file_json(repo_dir / ABLATION_FILE), head_side.task, head_side.metric, params or {}
    )
    headline = headline_section(baseline, base_side, head_side, spread)
    params_table = params_section(
        *run([*dvc, "params", "diff", baseline, "--md"], repo_dir), baseline
    )
    diff_text, error = run([*dvc, "metrics", "diff", baseline, "--json"], repo_dir)
    diff = json.loads(diff_text) if diff_text.strip() else {}
    metrics = metrics_section(diff, error, baseline, head_side.metric)

    def relative(path: Path) -> str:
        return Path(os.path.relpath(path, out_path.parent)).as_posix()

    page_dir = repo_dir / (plots_dir or DEFAULT_PAGE_DIR)
    shutil.rmtree(page_dir, ignore_errors=True)
    old = baseline_figures(repo_dir, baseline, page_dir / "baseline_figures")
    new = {p.stem: p for p in sorted((repo_dir / FIGURES_DIR).glob("*.png"))}
    pairs = [
        (
            name.replace("_", " "),
            relative(old[name]) if name in old else None,
            relative(new[name]) if name in new else None,
        )
        for name in sorted(old.keys() | new.keys())
    ]
    page = None
    if plots_dir is not None:
        template = write_html_template(page_dir / "template.html")
        _, failed = run(
            [*dvc, "plots", "diff", baseline, "--html-template", template, "-o", page_dir],
            repo_dir,
        )
        if failed is None:
            page = Path(os.path.relpath(page_dir / "index.html", repo_dir)).as_posix()
    text = assemble(
        baseline,
        head.strip() or "?",
        headline,
        params_table,
        metrics,
        pictures_section(baseline, pairs),
        page,
    )
    write_text(out_path, text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
    parser.add_argument("--out", type=Path, default=Path("pr_report.md"))
    parser.add_argument("--plots-dir", type=Path, help="also write dvc plots diff's page here")
    parser.add_argument("--repo-dir", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    pr_report(args.repo_dir, args.baseline, args.out, args.plots_dir)
    print(args.out)


if __name__ == "__main__":
    main()
