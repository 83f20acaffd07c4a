"""Phase timing: exclusive nested phases, the log line, the JSON file for the benchmarks."""

from __future__ import annotations

import json
import logging
import time

import pytest
import yaml

from bertfit.phases import TIMINGS_DIR_ENV, phase, stage_run
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
    assert list(commands)[:2] == ["inputs", "collect"] and "evaluate" in commands
    for name, command in commands.items():
        moved = pipeline_phases.redirected(command, scratch, params)
        assert str(params) in moved and "params.yaml" not in moved, name
        for arg in moved:
            assert not (arg in outputs or arg.startswith(tuple(f"{o}/" for o in outputs))), arg
        assert any(arg.startswith(str(scratch)) for arg in moved), name

    variant = tmp_path / "variant.yaml"
    pipeline_phases.precision_params(
        PROJECT_ROOT / "params.yaml", "no", variant, ["finetune.num_train_epochs=3"]
    )
    data = yaml.safe_load(variant.read_text())
    assert data["finetune"]["num_train_epochs"] == 3
    assert {data[s]["mixed_precision"] for s in pipeline_phases.PRECISION_SECTIONS} == {"no"}
    with pytest.raises(SystemExit, match=r"finetune\.epochs"):
        pipeline_phases.precision_params(
            PROJECT_ROOT / "params.yaml", "no", variant, ["finetune.epochs=3"]
        )
