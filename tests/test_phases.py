"""Phase timing: exclusive nested phases, the log line, the JSON file for the benchmarks."""

from __future__ import annotations

import json
import logging
import time

import pytest

from bertfit.phases import TIMINGS_DIR_ENV, phase, stage_run


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
