"""The markdown a pull request's reviewer reads: what changed in params and metrics against a
baseline revision, and the pictures, written after `dvc repro` on the branch.

    python -m bertfit.review --baseline main --out pr_report.md --plots-dir dvc_plots/pr
    make pr-report BASELINE=origin/main        # the same; .github/workflows/pr-report.yml posts it

Sections: `dvc params diff --md` and `dvc metrics diff --md` against the baseline (metrics are
kept in git, so the baseline's need no DVC remote), evaluate's pictures from the workspace
(reports/evaluate/figures/, linked relative to the report, which is where `cml comment create
--publish` finds them to upload), and, with --plots-dir, `dvc plots diff` as the offline HTML page
(bertfit.plots_page). The baseline's training curves are cached outputs: without a DVC remote
that holds them, that page shows the workspace's only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bertfit.plots_page import write_html_template
from bertfit.reporting import write_text

FIGURES_DIR = Path("reports/evaluate/figures")


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


def diff_section(title: str, table: str, error: str | None, baseline: str, empty: str) -> str:
    """One `## title` section: dvc's table, or that nothing changed, or why dvc failed."""
    if error is not None:
        body = f"`dvc` failed: {error}"
    elif len(table.strip().splitlines()) > 2:  # more than a header and its rule
        body = table.strip()
    else:
        body = f"{empty} against `{baseline}`."
    return f"## {title}\n\n{body}\n"


def assemble(
    baseline: str,
    head: str,
    params: tuple[str, str | None],
    metrics: tuple[str, str | None],
    figures: list[str],
    plots_page: str | None,
) -> str:
    """The report from its parts: figures are paths relative to the report file."""
    parts = [
        f"# bertfit: this branch against `{baseline}`\n",
        f"Workspace at `{head}` after `dvc repro`, compared with `{baseline}`.\n",
        diff_section("Params", *params, baseline, "No param changed"),
        diff_section("Metrics", *metrics, baseline, "No metric changed"),
    ]
    if figures:
        pictures = "\n".join(f"![{Path(f).stem.replace('_', ' ')}]({f})" for f in figures)
        parts.append(f"## Evaluation (this branch)\n\n{pictures}\n")
    if plots_page:
        parts.append(
            "## Plots\n\n"
            f"`dvc plots diff {baseline}` as an offline HTML page: `{plots_page}` (CI keeps it "
            "as an artifact). The baseline's training curves are cached outputs, shown only "
            "where a DVC remote holds them.\n"
        )
    return "\n".join(parts)


def pr_report(repo_dir: Path, baseline: str, out_file: Path, plots_dir: Path | None) -> str:
    """Run the diffs in repo_dir, write out_file, return its text."""
    dvc = dvc_command()
    head, _ = run(["git", "rev-parse", "--short", "HEAD"], repo_dir)
    params = run([*dvc, "params", "diff", baseline, "--md"], repo_dir)
    metrics = run([*dvc, "metrics", "diff", baseline, "--md"], repo_dir)
    out_path = repo_dir / out_file  # an absolute out_file stays itself
    figures = [
        Path(os.path.relpath(png, out_path.parent)).as_posix()
        for png in sorted((repo_dir / FIGURES_DIR).glob("*.png"))
    ]
    page = None
    if plots_dir is not None:
        plots_dir = repo_dir / plots_dir
        shutil.rmtree(plots_dir, ignore_errors=True)
        template = write_html_template(plots_dir / "template.html")
        _, error = run(
            [*dvc, "plots", "diff", baseline, "--html-template", template, "-o", plots_dir],
            repo_dir,
        )
        page = (
            Path(os.path.relpath(plots_dir / "index.html", repo_dir)).as_posix()
            if error is None
            else None
        )
    text = assemble(baseline, head.strip() or "?", params, metrics, figures, page)
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
