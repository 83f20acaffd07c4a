"""Phase timing: exclusive nested phases, the log line, the JSON file for the benchmarks."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest
import yaml

from bertfit.phases import TIMINGS_DIR_ENV, duration, elapsed_s, headline, phase, stage_run
from bertfit.training.trainer import log_line
from tests.conftest import PROJECT_ROOT


def test_nested_phases_are_exclusive_and_written_when_asked(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(TIMINGS_DIR_ENV, str(tmp_path))
    with caplog.at_level(logging.INFO, logger="bertfit.phases"), stage_run("demo"):
        with phase("training"):
            time.sleep(0.05)
            with phase("validation"):  # pauses training
                time.sleep(0.2)
            time.sleep(0.05)
        with phase("validation"):
            time.sleep(0.1)
    written = json.loads((tmp_path / "demo.json").read_text())
    phases = written["phases_s"]
    assert phases["validation"] == pytest.approx(0.3, abs=0.08)
    assert phases["training"] == pytest.approx(0.1, abs=0.08)  # not the 0.3 s nested in it
    assert written["counts"] == {"validation": 2, "training": 1, "other": 1}
    assert sum(phases.values()) == pytest.approx(written["total_s"], abs=0.01)
    assert phases["other"] < 0.05
    assert "demo took" in caplog.text and "validation" in caplog.text and "(x2)" in caplog.text


def test_phases_outside_a_stage_run_do_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(TIMINGS_DIR_ENV, str(tmp_path))
    with phase("training"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_failing_stage_still_reports_its_phases(tmp_path, monkeypatch):
    monkeypatch.setenv(TIMINGS_DIR_ENV, str(tmp_path))
    with pytest.raises(RuntimeError), stage_run("broken"), phase("tokenising"):
        raise RuntimeError("boom")
    assert "tokenising" in json.loads((tmp_path / "broken.json").read_text())["phases_s"]


def test_the_pipeline_benchmark_writes_nothing_into_the_project(tmp_path, monkeypatch):
    """benchmarks/pipeline_phases.py runs dvc.yaml's own commands with every output path (and
    the params file) moved under its scratch folder, so the project's outputs stay as they are."""
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    import pipeline_phases

    outputs = ("data", "models", "reports", "checkpoints")
    scratch, params = tmp_path / "scratch", tmp_path / "scratch/params.yaml"
    commands = pipeline_phases.stage_commands(PROJECT_ROOT / "dvc.yaml")
    # in the order DVC runs them: summary is listed first in dvc.yaml but needs every record
    assert list(commands)[:2] == ["inputs", "collect"] and "evaluate" in commands
    assert list(commands)[-1] == "summary"
    for name, command in commands.items():
        moved = pipeline_phases.redirected(command, scratch, params)
        assert "params.yaml" not in moved, name
        assert str(params) in moved or "--params" not in command, name
        for arg in moved:
            assert not (arg in outputs or arg.startswith(tuple(f"{o}/" for o in outputs))), arg
        assert any(arg.startswith(str(scratch)) for arg in moved), name

    variant = tmp_path / "variant.yaml"
    pipeline_phases.precision_params(
        PROJECT_ROOT / "params.yaml", "no", variant, ["finetune.num_train_epochs=3"]
    )
    data = yaml.safe_load(variant.read_text())
    assert data["finetune"]["num_train_epochs"] == 3
    assert data["tasks"]["mr"]["domain"] == "sentiment"  # inline: no tasks.yaml in its folder
    assert {data[s]["mixed_precision"] for s in pipeline_phases.PRECISION_SECTIONS} == {"no"}
    with pytest.raises(SystemExit, match=r"finetune\.epochs"):
        pipeline_phases.precision_params(
            PROJECT_ROOT / "params.yaml", "no", variant, ["finetune.epochs=3"]
        )


def test_the_small_data_benchmark_summary_and_its_proxy_params(tmp_path, monkeypatch):
    """benchmarks/small_data.py: mean ± sample std over the seeds found, the difference in
    points, and the proxy's params (FiT, the seed, a --set variant, an unknown key refused)."""
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    import small_data

    runs = {"hf": [0.80, 0.82], "bertfit": [0.84, 0.86, 0.85]}
    machines = [{"cpu": "A", "bf16": False}, {"cpu": "B", "bf16": True}]
    for system, accuracies in runs.items():
        for seed, accuracy in enumerate(accuracies):
            row = {"accuracy": accuracy, "train_steps": 100 + seed, "max_seq_length": 128}
            row |= {"precision": "fp32", "machine": machines[seed == 2]}
            path = small_data.run_file(tmp_path, "trec_500", system, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(row | {"wall_s": 10.0 * (seed + 1)}))
    trec = small_data.summary(tmp_path)["proxies"]["trec_500"]
    assert trec["hf"]["accuracy_mean"] == pytest.approx(0.81)
    assert trec["hf"]["accuracy_std"] == pytest.approx(0.0141, abs=1e-4)  # ddof 1
    assert trec["bertfit"]["n"] == 3 and trec["bertfit"]["seeds"] == [0, 1, 2]
    assert trec["bertfit"]["wall_s"] == pytest.approx(20.0)
    assert trec["difference_points"] == pytest.approx(4.0)
    assert trec["bertfit"]["precision"] == ["fp32"]
    assert small_data.summary(tmp_path)["machines"] == machines  # each machine once, in order
    assert "imdb_1400" not in small_data.summary(tmp_path)["proxies"]

    params = tmp_path / "params.yaml"
    small_data.proxy_params("trec_500", tmp_path, 2, params, ["finetune.min_train_steps=null"])
    data = yaml.safe_load(params.read_text())
    assert data["target"] == "trec_500" and list(data["tasks"]) == ["trec_500"]
    assert data["pretrain"]["corpus"] == "none" and data["multitask"]["enabled"] is False
    assert data["finetune"]["seed"] == 2 and data["finetune"]["min_train_steps"] is None
    with pytest.raises(SystemExit, match=r"finetune\.min_steps"):
        small_data.proxy_params("trec_500", tmp_path, 2, params, ["finetune.min_steps=1"])


def test_a_stage_ends_with_its_headline_line(caplog):
    with caplog.at_level(logging.INFO, logger="bertfit.phases"), stage_run("demo"):
        assert elapsed_s() is not None and elapsed_s() >= 0
        headline("mr validation accuracy 0.813 at step 428 of 428")
    assert elapsed_s() is None  # outside a stage run
    last = caplog.records[-1].getMessage()
    assert re.fullmatch(
        r"demo done in \d\.\ds: mr validation accuracy 0\.813 at step 428 of 428", last
    )
    with pytest.raises(RuntimeError), stage_run("broken"):
        headline("never said")
        raise RuntimeError("boom")
    assert "never said" not in caplog.text  # a failed stage has no headline


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.84, "0.8s"), (9.94, "9.9s"), (45.2, "45s"), (190.4, "3m10s"), (3725, "1h02m")],
)
def test_durations_read_as_a_person_says_them(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def test_a_logging_step_is_one_line_of_numbers() -> None:
    logs = {"loss": 0.42617, "grad_norm": 2.1, "learning_rate": 2.1e-05, "epoch": 0.58}
    assert (
        log_line(250, 428, 0, 190.0, logs)
        == "step 250/428 (58 %), 3m10s elapsed, ~2m15s left: loss 0.4262, lr 2.1e-05"
    )
    tasks = {"loss": 0.8, "loss_mr": 0.6, "loss_bbc": 1.57, "learning_rate": 1e-4}
    assert log_line(24, 120, 0, 30.0, tasks).endswith("loss 0.8 (bbc 1.57, mr 0.6), lr 0.0001")
    scores = {"eval_accuracy": 0.81299, "eval_accuracy_se": 0.011, "eval_error_rate": 0.187}
    assert log_line(428, 428, 0, 301.0, scores | {"eval_loss": 0.407, "eval_epoch": 1.0}) == (
        "validation at step 428/428 (100 %), 5m01s elapsed: accuracy 0.813 ± 0.011, loss 0.407"
    )
    summary = {"train_runtime": 301.2, "train_loss": 0.45, "train_samples_per_second": 9.1}
    assert log_line(428, 428, 0, 302.0, summary) == (
        "training finished at step 428/428 (100 %) in 5m01s, mean loss 0.45"
    )
    assert log_line(5, 428, 0, 1.0, {"total_flos": 1.0}) == ""
