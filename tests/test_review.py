"""The pull-request report (bertfit.review) on a throwaway git + DVC repository: real dvc diffs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bertfit.review import assemble, pr_report

DVC_YAML = """\
stages:
  train:
    cmd: echo train
    params:
      - train.learning_rate
    metrics:
      - reports/metrics.json:
          cache: false
    plots:
      - reports/loss.csv:
          cache: false
          x: step
          y: loss
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def write_run(repo: Path, learning_rate: float, accuracy: float) -> None:
    (repo / "params.yaml").write_text(f"train:\n  learning_rate: {learning_rate}\n")
    (repo / "reports").mkdir(exist_ok=True)
    (repo / "reports" / "metrics.json").write_text(json.dumps({"accuracy": accuracy}))
    (repo / "reports" / "loss.csv").write_text("step,loss\n1,0.9\n2,0.5\n")


@pytest.fixture
def branch_repo(tmp_path: Path) -> Path:
    """main with one run; the workspace (a branch) with another learning rate and accuracy."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    subprocess.run(["dvc", "init", "-q"], cwd=repo, check=True)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    write_run(repo, 5e-5, 0.80)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "main")
    git(repo, "checkout", "-qb", "branch")
    write_run(repo, 1e-4, 0.83)
    figures = repo / "reports" / "evaluate" / "figures"
    figures.mkdir(parents=True)
    (figures / "confusion.png").write_bytes(b"\x89PNG")
    return repo


def test_the_report_shows_params_metrics_pictures_and_plots(branch_repo: Path) -> None:
    text = pr_report(branch_repo, "main", Path("pr_report.md"), Path("dvc_plots/pr"))
    assert (branch_repo / "pr_report.md").read_text(encoding="utf-8") == text
    params = text[text.index("## Params") : text.index("## Metrics")]
    assert "train.learning_rate" in params and "5e-05" in params and "0.0001" in params
    metrics = text[text.index("## Metrics") : text.index("## Evaluation")]
    assert "reports/metrics.json" in metrics and "0.8" in metrics and "0.83" in metrics
    assert "![confusion](reports/evaluate/figures/confusion.png)" in text
    assert "`dvc_plots/pr/index.html`" in text
    page = (branch_repo / "dvc_plots" / "pr" / "index.html").read_text(encoding="utf-8")
    assert "vegaEmbed('#reports_loss_csv'" in page and "cdn.jsdelivr" not in page


def test_nothing_changed_and_a_failing_dvc_are_said(branch_repo: Path) -> None:
    git(branch_repo, "add", "-A")
    git(branch_repo, "commit", "-qm", "branch")
    text = pr_report(branch_repo, "branch", Path("out/report.md"), None)
    assert "No param changed against `branch`." in text
    assert "No metric changed against `branch`." in text
    assert "](../reports/evaluate/figures/confusion.png)" in text  # relative to the report
    assert "## Plots" not in text
    text = pr_report(branch_repo, "no-such-rev", Path("report.md"), None)
    assert "`dvc` failed:" in text


def test_assemble_orders_the_sections() -> None:
    table = "| a |\n|---|\n| 1 |"
    text = assemble("main", "abc1234", (table, None), ("| a |\n|---|\n", None), [], None)
    assert text.index("## Params") < text.index("## Metrics")
    assert table in text and "No metric changed against `main`." in text
    assert "`abc1234`" in text and "## Evaluation" not in text
