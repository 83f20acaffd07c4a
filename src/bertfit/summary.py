"""The run's headline and its record in git: what the summary stage writes.

The headline is the target's test metric (the task's own) with its 95 % interval, a bootstrap
over the test rows (bertfit.evaluation), and the run's wall time, the stages' own times summed
(each stage's `wall_s`, from its start to its record: the interpreter's start-up and imports,
a few seconds a stage, are not in it; a stage DVC restored from its run-cache counts the time
it took when it ran). It is

- `reports/summary/headline.json`, the first metrics file of dvc.yaml (its stage is listed
  first, since `dvc exp show` orders its metric columns by the stages' order there), so that the
  experiment table leads with `test_<metric>`, `test_<metric>_lower`, `test_<metric>_upper`
  and `wall_min`;
- the summary stage's last log line, and what `python -m bertfit.summary` prints (`make repro`
  runs it after `dvc repro`, whose own last line is DVC's);
- the first table of the pull-request report (bertfit.review).

`reports/summary/stages.json` holds every stage's run.json but its params (params.yaml has
them): every number the stages recorded, in git, so that `git diff` shows what a change moved
beyond the few numbers DVC declares as metrics. The training stages' own run.json files are
cached outputs, as an uncached one would turn off their run-cache; this stage is cheap and has
none to lose.

    python -m bertfit.summary                      # the headline of the reports in ./reports
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bertfit.phases import duration
from bertfit.reporting import write_json

STAGES = ("pretrain", "multitask", "finetune", "evaluate")  # the stages with a run.json
RECORD_FILE = "run.json"
HEADLINE_FILE = "headline.json"
STAGES_FILE = "stages.json"


def read_records(reports_dir: Path) -> dict[str, dict[str, Any]]:
    """Each stage's run.json that exists; evaluate's must (the headline is its result)."""
    records = {}
    for stage in STAGES:
        path = reports_dir / stage / RECORD_FILE
        if path.is_file():
            records[stage] = json.loads(path.read_text(encoding="utf-8"))
    if "evaluate" not in records:
        raise FileNotFoundError(
            f"{reports_dir / 'evaluate' / RECORD_FILE}: no evaluate record, so no test result to "
            "report; run the pipeline first (dvc repro)"
        )
    return records


def headline_metrics(records: dict[str, dict[str, Any]]) -> dict[str, float]:
    """headline.json: the test metric, its interval's ends, the wall time in minutes.

    Keys named after the metric (`test_accuracy`, `test_mcc`), so that two runs on different
    metrics never share a column, and so that sorted (metrics JSON is written sorted) they read
    value, lower, upper, wall."""
    evaluate = records["evaluate"]
    metric, interval = evaluate["metric"], evaluate["interval"]
    return {
        f"test_{metric}": evaluate[metric],
        f"test_{metric}_lower": interval["lower"],
        f"test_{metric}_upper": interval["upper"],
        "wall_min": wall_seconds(records) / 60,
    }


def wall_seconds(records: dict[str, dict[str, Any]]) -> float:
    return sum(float(r.get("wall_s") or 0.0) for r in records.values())


def headline_line(records: dict[str, dict[str, Any]], report: Path) -> str:
    """`mr test accuracy 0.816 [0.795, 0.837]; wall time 7m41s (pretrain 2m31s, ...); report:
    reports/evaluate/report.md`."""
    evaluate = records["evaluate"]
    metric, interval = evaluate["metric"], evaluate["interval"]
    times = ", ".join(
        f"{stage} {duration(r['wall_s'])}" for stage, r in records.items() if r.get("wall_s")
    )
    return (
        f"{evaluate['task']} test {metric} {evaluate[metric]:.3f} "
        f"[{interval['lower']:.3f}, {interval['upper']:.3f}]; "
        f"wall time {duration(wall_seconds(records))} ({times}); report: {report}"
    )


def summarize(reports_dir: Path, out_dir: Path) -> str:
    """Write headline.json and stages.json into out_dir; return the headline line."""
    records = read_records(reports_dir)
    write_json(out_dir / HEADLINE_FILE, headline_metrics(records))
    kept = {stage: {k: v for k, v in r.items() if k != "params"} for stage, r in records.items()}
    write_json(out_dir / STAGES_FILE, kept)
    return headline_line(records, reports_dir / "evaluate" / "report.md")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    records = read_records(args.reports_dir)
    print(headline_line(records, args.reports_dir / "evaluate" / "report.md"))


if __name__ == "__main__":
    main()
