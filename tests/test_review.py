"""The pull-request report (bertfit.review) on a throwaway git + DVC repository: real dvc diffs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bertfit.review import Side, metrics_section, noise_verdict, pr_report, relative_change

DVC_YAML = """\
stages:
  summary:
    cmd: echo summary
    metrics:
      - reports/summary/headline.json:
          cache: false
  train:
    cmd: echo train
    params:
      - train.learning_rate
    metrics:
      - reports/train/metrics.json:
          cache: false
    plots:
      - reports/loss.csv:
          cache: false
          x: step
          y: loss
  evaluate:
    cmd: echo evaluate
    metrics:
      - reports/evaluate/metrics.json:
          cache: false
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def write_run(
    repo: Path,
    learning_rate: float,
    accuracy: float,
    interval: tuple[float, float] | None,
    train: dict,
    figure: bytes,
) -> None:
    """One run's files: params, evaluate's metrics and record, the headline (None: a baseline
    from before the headline), another stage's metrics, a plot and a picture."""
    (repo / "params.yaml").write_text(
        f"train:\n  learning_rate: {learning_rate}\npretrain:\n  corpus: none\n"
        "multitask:\n  enabled: false\nfinetune:\n  max_train_samples: null\n"
    )
    write_json(repo / "reports/evaluate/metrics.json", {"accuracy": accuracy})
    record = {"task": "mr", "metric": "accuracy", "accuracy": accuracy}
    if interval is not None:
        record["interval"] = {"lower": interval[0], "upper": interval[1]}
        headline = {
            "test_accuracy": accuracy,
            "test_accuracy_lower": interval[0],
            "test_accuracy_upper": interval[1],
            "wall_min": 7.5,
        }
        write_json(repo / "reports/summary/headline.json", headline)
    write_json(repo / "reports/evaluate/run.json", record)
    write_json(repo / "reports/train/metrics.json", train)
    (repo / "reports" / "loss.csv").write_text("step,loss\n1,0.9\n2,0.5\n")
    figures = repo / "reports" / "evaluate" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    (figures / "confusion.png").write_bytes(figure)


@pytest.fixture
def branch_repo(tmp_path: Path) -> Path:
    """main with a run from before the headline; the workspace (a branch) with another
    learning rate, its headline, and three other metrics that moved by 0.1 %, 20 % and 2 %."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    train = {"drift": 1.0, "jump": 10.0, "moved": 100.0, "same": 5.0}
    write_run(repo, 5e-5, 0.80, None, train, b"\x89PNG main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "main")
    git(repo, "checkout", "-qb", "branch")
    train = {"drift": 1.001, "jump": 12.0, "moved": 102.0, "same": 5.0}
    write_run(repo, 1e-4, 0.83, (0.81, 0.85), train, b"\x89PNG branch")
    return repo


def test_the_report_leads_with_the_headline_then_params_metrics_pictures(
    branch_repo: Path,
) -> None:
    text = pr_report(branch_repo, "main", Path("pr_report.md"), Path("dvc_plots/pr"))
    assert (branch_repo / "pr_report.md").read_text(encoding="utf-8") == text
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == [
        "## Headline",
        "## Params",
        "## Other metrics",
        "## Evaluation pictures",
        "## Plots",
    ]
    headline = text[text.index("## Headline") : text.index("## Params")]
    # main has no headline file: its value is evaluate's, without an interval
    assert "| mr test accuracy | 0.8000 | 0.8300 [0.8100, 0.8500] | +0.0300 |" in headline
    assert "**beyond the noise**" in headline and "±0.0200: test-set bootstrap" in headline
    assert "| wall time | – | 7m30s |" in headline
    params = text[text.index("## Params") : text.index("## Other metrics")]
    assert "train.learning_rate" in params and "5e-05" in params and "0.0001" in params
    metrics = text[text.index("## Other metrics") : text.index("## Evaluation pictures")]
    assert "<details>" in metrics and "3 metrics changed (2 by 1 % or more)" in metrics
    ranked = [name for name in ("jump", "moved", "drift") if f"metrics.json:{name}" in metrics]
    assert ranked == ["jump", "moved", "drift"]
    assert metrics.index(":jump") < metrics.index(":moved") < metrics.index(":drift")
    assert ":same" not in metrics and "headline.json" not in metrics
    assert "evaluate/metrics.json:accuracy" not in metrics  # the headline's, said there
    # the pictures of both sides: the baseline's taken from git
    pictures = text[text.index("## Evaluation pictures") : text.index("## Plots")]
    assert "(reports/evaluate/figures/confusion.png)" in pictures
    assert "(dvc_plots/pr/baseline_figures/confusion.png)" in pictures
    baseline_png = branch_repo / "dvc_plots/pr/baseline_figures/confusion.png"
    assert baseline_png.read_bytes() == b"\x89PNG main"
    assert "`dvc_plots/pr/index.html`" in text
    page = (branch_repo / "dvc_plots" / "pr" / "index.html").read_text(encoding="utf-8")
    assert "vegaEmbed('#reports_loss_csv'" in page and "cdn.jsdelivr" not in page


def test_the_report_is_deterministic(branch_repo: Path) -> None:
    first = pr_report(branch_repo, "main", Path("a.md"), Path("dvc_plots/pr"))
    again = pr_report(branch_repo, "main", Path("a.md"), Path("dvc_plots/pr"))
    assert first == again


def test_a_seed_spread_from_an_ablation_is_the_noise(branch_repo: Path) -> None:
    """FiT (pretrain.corpus none, multitask off) with 3 seeds of σ 0.02: a difference of 0.03
    is within 1.96·√2·σ = 0.055, though beyond the bootstrap's 0.02."""
    group = {"target": "mr", "variant": "FiT", "samples": None, "summary": {"std": 0.02, "n": 3}}
    other = group | {"variant": "ITPT-FiT", "summary": {"std": 0.0001, "n": 3}}
    write_json(branch_repo / "reports/ablation/ablation.json", {"groups": [other, group]})
    text = pr_report(branch_repo, "main", Path("pr_report.md"), None)
    headline = text[text.index("## Headline") : text.index("## Params")]
    assert "within the noise" in headline and "seed spread (σ 0.0200, 3 seeds" in headline
    assert "±0.0554" in headline


def test_nothing_changed_and_a_failing_dvc_are_said(branch_repo: Path) -> None:
    git(branch_repo, "add", "-A")
    git(branch_repo, "commit", "-qm", "branch")
    text = pr_report(branch_repo, "branch", Path("out/report.md"), None)
    assert "No param changed against `branch`." in text
    assert "No other metric changed against `branch`." in text
    assert "| +0.0000 | within the noise |" in text  # both sides' headline, equal
    assert "](../reports/evaluate/figures/confusion.png)" in text  # relative to the report
    assert "## Plots" not in text
    text = pr_report(branch_repo, "no-such-rev", Path("report.md"), None)
    assert "`dvc` failed:" in text


def test_noise_is_the_wider_interval_and_unknown_without_one() -> None:
    base = Side(
        {"test_mcc": 0.5, "test_mcc_lower": 0.4, "test_mcc_upper": 0.6}, {"metric": "mcc"}, None
    )
    head = Side(
        {"test_mcc": 0.55, "test_mcc_lower": 0.5, "test_mcc_upper": 0.6}, {"metric": "mcc"}, None
    )
    assert noise_verdict(base, head, None) == (
        "±0.1000: test-set bootstrap, 95 %",
        "within the noise",
    )
    bare = Side(None, {"metric": "mcc"}, {"mcc": 0.5})
    assert bare.value == 0.5 and bare.half_width is None
    assert noise_verdict(bare, bare, None)[0].startswith("unknown")


def test_metrics_are_ranked_by_relative_change() -> None:
    assert relative_change(2.0, 3.0) == 0.5 and relative_change(0, 0) == 0.0
    assert relative_change(0, 1) == float("inf") and relative_change(None, 1) is None
    diff = {
        "a.json": {"x": {"old": 100, "new": 101}, "y": {"old": None, "new": 1}},
        "b.json": {"z": {"old": 1.0, "new": 2.0}},
    }
    text = metrics_section(diff, None, "main")
    assert text.index("b.json:z") < text.index("a.json:x") < text.index("a.json:y")
    assert "| a.json:y | – | 1 | new | – |" in text
