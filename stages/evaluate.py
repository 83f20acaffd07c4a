"""evaluate: the fine-tuned model on the target's test split.

Reads params.yaml (target, evaluate), models/finetune/, data/tasks/<target>/ and finetune's
validation history (reports/finetune/, for the report's curve); writes
reports/evaluate/{metrics.json,per_class.json,confusion.csv,report.md}, the report's pictures in
reports/evaluate/figures/ and data/predictions/test.parquet.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bertfit.cli import configure_logging, stage_main, stage_parser
from bertfit.data.tasks import read_task, write_parquet
from bertfit.evaluation import evaluate
from bertfit.params import parse_section, parse_target, parse_tasks, read_params_file
from bertfit.phases import stage_run
from bertfit.reporting import check_writable

log = logging.getLogger("stages.evaluate")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--report-dir", type=Path, required=True)
    parser.add_argument("--predictions-file", type=Path, required=True)
    # finetune's reports, for the validation curve in report.md (without it, the report says so)
    parser.add_argument("--finetune-report-dir", type=Path)
    args = parser.parse_args(argv)
    configure_logging()

    data = read_params_file(args.params)
    target = parse_target(data, parse_tasks(data, str(args.params)), str(args.params))
    params = parse_section(data, "evaluate", str(args.params))
    log.info("target %s; params in %s", target, args.report_dir / "run.json")
    with stage_run("evaluate"):
        task = read_task(args.data_dir / "tasks" / target)
        check_writable(args.predictions_file.parent)
        _, predictions = evaluate(
            args.model_dir, task, params, args.report_dir, args.finetune_report_dir
        )
        write_parquet(predictions, args.predictions_file)


if __name__ == "__main__":
    stage_main(main, "evaluate")
