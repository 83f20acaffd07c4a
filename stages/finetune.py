"""finetune: single-task fine-tuning of the target; best epoch chosen on validation.

Reads params.yaml (target, model.max_seq_length, finetune), models/multitask/ and
data/tasks/<target>/; writes models/finetune/
(a standard HF sequence-classification directory with id2label and tokenizer) and
reports/finetune/{metrics.json,run.json} and DVCLive's log reports/finetune/live/ (training.live).
"""

from __future__ import annotations

import logging
from pathlib import Path

from bertfit.cli import configure_logging, stage_main, stage_parser
from bertfit.data.tasks import read_task
from bertfit.params import parse_section, parse_target, parse_tasks, read_params_file
from bertfit.phases import stage_run
from bertfit.training.finetune import finetune

log = logging.getLogger("stages.finetune")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument(
        "--base-model-dir",
        type=Path,
        required=True,
        help="the model to fine-tune: what multitask wrote (the pretrained encoder when disabled)",
    )
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--report-dir", type=Path, required=True)
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        required=True,
        help="resumable checkpoints: a killed run resumes from its last one",
    )
    args = parser.parse_args(argv)
    configure_logging()

    data = read_params_file(args.params)
    target = parse_target(data, parse_tasks(data, str(args.params)), str(args.params))
    model = parse_section(data, "model", str(args.params))
    params = parse_section(data, "finetune", str(args.params))
    log.info(
        "target %s; base model %s; max_seq_length %d; params in %s",
        target,
        args.base_model_dir,
        model.max_seq_length,
        args.report_dir / "run.json",
    )

    task = read_task(args.data_dir / "tasks" / target)
    with stage_run("finetune"):
        finetune(
            str(args.base_model_dir),
            task,
            task.split("train"),
            task.split("validation"),
            params,
            model.max_seq_length,
            args.model_dir,
            args.report_dir,
            args.checkpoint_dir,
        )


if __name__ == "__main__":
    stage_main(main, "finetune")
