"""bertfit ablate: the table's arithmetic on fixed inputs, reading a real `dvc exp show --json`
(tests/data/ablate_exp_show.json, from tests/ablate_project.py), the variant -> params mapping,
bad inputs, and (slow) the queue mechanics on a throwaway DVC project."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bertfit import cli
from bertfit.ablate import AblateError, command, experiments, plan, queue, report, statistics
from tests.ablate_project import build

FIXTURE = Path(__file__).parent / "data" / "ablate_exp_show.json"
# Student's t quantiles from a printed table (two-sided 95 %): df 1 and 2
T_DF1, T_DF2 = 12.706, 4.303


def show() -> list[dict]:
    return json.loads(FIXTURE.read_text())


# --- arithmetic ---------------------------------------------------------------------------------


def test_mean_std_and_interval_of_three_values_by_hand() -> None:
    s = statistics.summarize([0.20, 0.22, 0.21])
    # mean 0.63 / 3; deviations -0.01, 0.01, 0: variance 0.0002 / 2; half-width t * s / sqrt(3)
    assert s.n == 3
    assert s.mean == pytest.approx(0.21, abs=1e-12)
    assert s.std == pytest.approx(0.01, abs=1e-12)
    half = T_DF2 * 0.01 / math.sqrt(3)  # 0.02484
    assert s.low == pytest.approx(0.21 - half, abs=1e-5)
    assert s.high == pytest.approx(0.21 + half, abs=1e-5)


def test_two_values_use_one_degree_of_freedom() -> None:
    s = statistics.summarize([0.19, 0.20])
    assert s.mean == pytest.approx(0.195)
    assert s.std == pytest.approx(math.sqrt(0.00005))  # (0.005² + 0.005²) / 1
    assert s.high - s.mean == pytest.approx(T_DF1 * math.sqrt(0.00005) / math.sqrt(2), abs=1e-5)


def test_one_value_has_no_spread_and_the_table_says_so() -> None:
    s = statistics.summarize([0.3])
    assert (s.n, s.mean, s.std, s.low, s.high) == (1, 0.3, None, None, None)
    group = statistics.Group("mr", "FiT", None, s, (42,), None, ())
    row = report.table_rows([group])[0]
    assert row[3:6] == ["1", "30.00 ± –", "– (n = 1: no interval)"]
    with pytest.raises(AblateError):
        statistics.summarize([])


# --- reading dvc exp show --json ---------------------------------------------------------------


def test_the_fixture_is_read_by_params_not_names() -> None:
    results = experiments.read_experiments(show(), "ablate")
    assert len(results) == 15
    failed = [r for r in results if r.state == "failed"]
    assert [r.name for r in failed] == ["ablate-mfit-fit-nall-s44"]
    # dvc lists the baseline's metrics (0.15) under a failed run: never read
    assert failed[0].error_rate is None
    assert failed[0].log_command.startswith("dvc queue logs ")
    assert failed[0].task_id and failed[0].log_command.endswith(failed[0].task_id[:7])
    itpt = {(r.samples, r.seed): r for r in results if r.variant == "ITPT-FiT"}
    assert itpt[(100, 43)].error_rate == pytest.approx(0.33)
    assert itpt[(None, 44)].train_examples == 1000
    assert experiments.read_experiments(show(), "other") == []


def test_the_fixture_table_matches_hand_computed_values() -> None:
    groups = statistics.group(experiments.read_experiments(show(), "ablate"))
    rows = {(row[1], row[2]): row for row in report.table_rows(groups)}
    assert list(rows) == [
        ("FiT", "100"),
        ("FiT", "all (1,000)"),
        ("ITPT-FiT", "100"),
        ("ITPT-FiT", "all (1,000)"),
        ("MFiT-FiT", "all (1,000)"),
    ]
    # 0.21 ± 0.01, t(2) = 4.303: 21 ± 2.484
    assert rows["FiT", "all (1,000)"][3:] == ["3", "21.00 ± 1.00", "[18.52, 23.48]", "42, 43, 44"]
    # 0.30, 0.33, 0.36: std 0.03, 33 ± 7.452
    assert rows["ITPT-FiT", "100"][3:6] == ["3", "33.00 ± 3.00", "[25.55, 40.45]"]
    # 0.19, 0.20 and a failed seed: t(1) = 12.706, 19.5 ± 6.353
    assert rows["MFiT-FiT", "all (1,000)"][3:] == [
        "2",
        "19.50 ± 0.71",
        "[13.15, 25.85]",
        "42, 43 (1 failed)",
    ]


def test_a_rerun_success_outranks_the_earlier_failure() -> None:
    data = show()
    entries = data[1]["experiments"]
    failed = next(e for e in entries if e["name"] == "ablate-mfit-fit-nall-s44")
    success = next(e for e in entries if e["name"] == "ablate-mfit-fit-nall-s43")
    retry = json.loads(json.dumps(success))
    retry["name"] = retry["revs"][0]["name"] = failed["name"]
    data[1]["experiments"] = [failed, retry, *entries]
    result = {r.name: r for r in experiments.read_experiments(data, "ablate")}
    assert result["ablate-mfit-fit-nall-s44"].state == "success"


def test_report_files_and_the_curve(tmp_path: Path) -> None:
    results, text = report.write_report(
        show(), tmp_path, "ablate", None, experiments.DEFAULT_METRICS_FILE, "finetune.seed", 12.0
    )
    assert (tmp_path / "ablation.md").read_text() == text
    assert "`ablate-mfit-fit-nall-s44`: failed; log: `dvc queue logs " in text
    assert "Wall time of the run: 12 s" in text
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert len(saved["experiments"]) == len(results) == 15
    assert len(saved["groups"]) == 5
    # only variants run at one number of examples: no curve to draw
    groups = [g for g in statistics.group(results) if g.variant == "MFiT-FiT"]
    assert not report.plot_curve(groups, None, tmp_path / "none.png")


# --- variants, plan, arguments -----------------------------------------------------------------


def test_variants_map_to_the_papers_params() -> None:
    assert plan.VARIANTS["FiT"] == {"pretrain.corpus": "none", "multitask.enabled": False}
    assert plan.VARIANTS["ITPT-MFiT-FiT"] == {
        "pretrain.corpus": "within_task",
        "multitask.enabled": True,
    }
    for name in ("itpt", "ITPT-FiT", "mfit", "ITPT-MFiT", "cdpt-fit"):
        variant = plan.resolve_variant(name)
        assert plan.variant_of(*plan.VARIANTS[variant].values()) == variant
    assert plan.variant_of("none", "yes") == "pretrain.corpus=none, multitask.enabled=yes"


def test_unknown_variant_lists_the_valid_ones() -> None:
    with pytest.raises(AblateError, match="valid variants: FiT, ITPT-FiT, IDPT-FiT"):
        plan.resolve_variant("DAPT")


def test_plan_sets_variant_seed_and_examples_once_per_run() -> None:
    planned = plan.plan(
        ["FiT", "ITPT-FiT"],
        [42, 43],
        ["finetune.seed", "pretrain.seed"],
        ["FiT"],
        [100, None],
        None,
        {"finetune.learning_rate": "3e-5"},
        "abl",
    )
    names = [p.name for p in planned]
    assert names == [
        "abl-fit-nall-s42",
        "abl-fit-nall-s43",
        "abl-itpt-fit-nall-s42",
        "abl-itpt-fit-nall-s43",
        "abl-fit-n100-s42",
        "abl-fit-n100-s43",
    ]
    assert planned[0].overrides == (
        "pretrain.corpus=none",
        "multitask.enabled=false",
        "finetune.seed=42",
        "pretrain.seed=42",
        "finetune.learning_rate=3e-5",
    )
    assert planned[-1].overrides[-1] == "finetune.max_train_samples=100"


def test_bad_overrides_and_sample_numbers_are_refused() -> None:
    with pytest.raises(AblateError, match="ablate sets this itself"):
        plan.parse_set(["pretrain.corpus=none"], plan.VARIANTS["FiT"])
    with pytest.raises(AblateError, match="expected key=value"):
        plan.parse_set(["finetune.seed"], [])
    assert plan.parse_samples("ALL") is None
    with pytest.raises(AblateError, match="neither a positive number nor 'all'"):
        plan.parse_samples("-5")


def test_the_command_prints_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"^bertfit ablate: error: unknown variant 'nope'"):
        cli.main(["ablate", "--variants", "nope", "--table-only", "--repo", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"^bertfit ablate: error: `dvc exp show --json` exited"):
        cli.main(["ablate", "--table-only", "--repo", str(tmp_path)])  # no DVC project there
    with pytest.raises(SystemExit, match=r"^bertfit ablate: error: nothing to run"):
        cli.main(["ablate", "--variants", "--repo", str(tmp_path)])


def test_table_only_rebuilds_from_dvc_exp_show_and_reports_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked = []
    monkeypatch.setattr(command, "exp_show", lambda repo_dir, revs=(): asked.append(revs) or show())
    cli.main(["ablate", "--table-only", "--out-dir", str(tmp_path)])  # a rebuild: exit 0
    out = capsys.readouterr().out
    assert "| mr | FiT | all (1,000) | 3 | 21.00 ± 1.00 |" in out
    assert (tmp_path / "learning_curve.png").is_file()
    # the experiments' commit, for a rebuild after later commits
    (baseline,) = experiments.baseline_revs(show())
    assert f"--table-only --name ablate --rev {baseline[:12]}`" in out
    cli.main(["ablate", "--table-only", "--rev", baseline[:12], "--out-dir", str(tmp_path)])
    cli.main(["ablate", "--table-only", "--rev", "a1", "b2", "--out-dir", str(tmp_path)])
    assert asked == [(), [baseline[:12]], ["a1", "b2"]]
    with pytest.raises(SystemExit, match=r"^bertfit ablate: error: --rev rebuilds a table"):
        cli.main(["ablate", "--rev", "HEAD~1", "--out-dir", str(tmp_path)])


# --- the queue, for real -----------------------------------------------------------------------


@pytest.mark.slow
def test_queue_runs_reports_a_failure_and_retries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The tiny project lists no error for MFiT-FiT seed 44, so that run fails; after the
    table lists it, an edited errors.json and the same command queue only it again."""
    repo = build(tmp_path / "repo")
    monkeypatch.setattr(queue, "POLL_S", 1.0)
    caplog.set_level(logging.INFO, logger="bertfit.ablate")
    args = ["--repo", str(repo), "--out-dir", str(repo / "out"), "--name", "t"]
    args += ["--variants", "FiT", "MFiT", "--seeds", "1", "--first-seed", "44", "--no-estimate"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ablate", *args])
    assert exit_info.value.code == 1
    text = (repo / "out" / "ablation.md").read_text()
    assert "| mr | FiT | all (1,000) | 1 | 21.00 ± – | – (n = 1: no interval) | 44 |" in text
    assert "| mr | MFiT-FiT | all | 0 | – | – | – (1 failed) |" in text
    assert "`t-mfit-fit-nall-s44`: failed; log: `dvc queue logs " in text
    assert "queued 2/2: t-mfit-fit-nall-s44" in caplog.text
    assert "FAILED" in caplog.text and "t-mfit-fit-nall-s44; its log: dvc queue logs" in caplog.text

    errors = json.loads((repo / "errors.json").read_text())
    (repo / "errors.json").write_text(json.dumps(errors | {"none|True|None|44": 0.21}))
    caplog.clear()
    cli.main(["ablate", *args])  # exit 0: nothing raised
    assert "1 succeeded before (kept), 1 to run" in caplog.text
    assert "queued 1/1: t-mfit-fit-nall-s44 (failed before)" in caplog.text
    text = (repo / "out" / "ablation.md").read_text()
    assert "| mr | MFiT-FiT | all (1,000) | 1 | 21.00 ± – |" in text
    assert "Not in the table" not in text


def queue_workers(repo: Path) -> list[int]:
    """The pids of DVC's queue workers (`dvc exp queue-worker`) started for `repo`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(proc / "cwd"))
        except (OSError, ValueError):
            continue
        if b"queue-worker" in command and cwd == repo:
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker through /proc")
def test_a_killed_queue_worker_is_reported_and_its_run_queued_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A queue worker killed mid-run leaves its experiment "running" for good: the driver says
    so, marks it failed instead of waiting forever, and the same command then runs it."""
    repo = build(tmp_path / "repo")
    errors = json.loads((repo / "errors.json").read_text())
    (repo / "errors.json").write_text(json.dumps(errors | {"none|False|None|42": "hang"}))
    subprocess.run(["git", "commit", "-qam", "a hanging run"], cwd=repo, check=True)
    monkeypatch.setattr(queue, "POLL_S", 1.0)
    monkeypatch.setattr(queue, "WORKER_EVERY", 1)
    monkeypatch.setattr(queue, "STALE_POLLS", 2)
    caplog.set_level(logging.INFO, logger="bertfit.ablate")
    args = ["--repo", str(repo), "--out-dir", str(repo / "out"), "--name", "k"]
    args += ["--variants", "FiT", "--seeds", "1", "--first-seed", "42", "--no-estimate"]

    def kill_the_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "running: k-fit-nall-s42" not in caplog.text:
            time.sleep(0.5)
        for pid in queue_workers(repo):
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ablate", *args])
    killer.join()
    assert exit_info.value.code == 1
    assert "k-fit-nall-s42 shows as running, but no DVC queue worker has answered" in caplog.text
    assert "run the same bertfit ablate command again to queue it anew" in caplog.text

    (repo / "errors.json").write_text(json.dumps(errors | {"none|False|None|42": 0.25}))
    caplog.clear()
    cli.main(["ablate", *args])  # exit 0: nothing raised
    text = (repo / "out" / "ablation.md").read_text()
    assert "| mr | FiT | all (1,000) | 1 | 25.00 ± – |" in text
