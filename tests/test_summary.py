"""The run's headline (bertfit.summary, the summary stage): headline.json, stages.json, its line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bertfit.summary import main, read_records, summarize
from stages import summary as summary_stage
from tests.conftest import read_json


def write_records(reports: Path) -> None:
    records = {
        "pretrain": {"corpus": "within_task", "steps": 16, "wall_s": 151.0, "params": {"seed": 1}},
        "multitask": {"validation_mean_main": 0.6, "wall_s": 130.2},
        "finetune": {"best_step": 428, "wall_s": 160.0, "params": {"seed": 42}},
        "evaluate": {
            "task": "mr",
            "metric": "mcc",
            "mcc": 0.622,
            "accuracy": 0.816,
            "interval": {"lower": 0.58, "upper": 0.66, "confidence": 0.95},
            "wall_s": 20.0,
        },
    }
    for stage, record in records.items():
        (reports / stage).mkdir(parents=True)
        (reports / stage / "run.json").write_text(json.dumps(record))


def test_the_headline_is_the_test_metric_its_interval_and_the_wall_time(tmp_path: Path) -> None:
    write_records(tmp_path / "reports")
    line = summarize(tmp_path / "reports", tmp_path / "out")
    headline = read_json(tmp_path / "out" / "headline.json")
    # named after the metric; sorted, the columns read value, lower, upper, wall time
    assert list(headline) == ["test_mcc", "test_mcc_lower", "test_mcc_upper", "wall_min"]
    assert headline["test_mcc"] == 0.622 and headline["test_mcc_upper"] == 0.66
    assert headline["wall_min"] == pytest.approx((151.0 + 130.2 + 160.0 + 20.0) / 60)
    assert line == (
        "mr test mcc 0.622 [0.580, 0.660]; wall time 7m41s (pretrain 2m31s, multitask 2m10s, "
        f"finetune 2m40s, evaluate 20s); report: {tmp_path / 'reports/evaluate/report.md'}"
    )
    stages = read_json(tmp_path / "out" / "stages.json")
    assert stages["pretrain"] == {"corpus": "within_task", "steps": 16, "wall_s": 151.0}
    assert "params" not in stages["finetune"]  # params.yaml has them


def test_the_stage_logs_the_headline_last_and_the_command_prints_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    write_records(tmp_path / "reports")
    reports, out = str(tmp_path / "reports"), str(tmp_path / "out")
    with caplog.at_level(logging.INFO):
        summary_stage.main(["--reports-dir", reports, "--out-dir", out])
    last = caplog.records[-1].getMessage()
    assert last.startswith("summary done in ") and ": mr test mcc 0.622 [0.580, 0.660]" in last
    main(["--reports-dir", reports])
    assert capsys.readouterr().out.startswith("mr test mcc 0.622 [0.580, 0.660]; wall time 7m41s")


def test_without_evaluate_there_is_no_headline(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"evaluate/run.json: no evaluate record.*dvc"):
        read_records(tmp_path)
