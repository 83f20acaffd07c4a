"""multitask: multi-task fine-tuning of the pretrained encoder, one head per task.

Reads params.yaml (target, tasks, model.max_seq_length, multitask), models/pretrain/ and
data/tasks/<task>/ for every task in multitask.tasks; writes models/multitask/ (a standard HF
encoder directory plus multitask_heads/; the pretrained model unchanged when disabled or when
the target is not in multitask.tasks) and reports/multitask/{metrics.json,run.json}
and DVCLive's log reports/multitask/live/ (training.live).
"""

from __future__ import annotations

import logging
from pathlib import Path

from bertfit.cli import configure_logging, stage_main, stage_parser
from bertfit.data.tasks import read_task
from bertfit.params import parse_section, parse_target, parse_tasks, read_params_file
from bertfit.phases import stage_run
from bertfit.training.multitask import multitask

log = logging.getLogger("stages.multitask")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--base-model-dir", type=Path, required=True)
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
    params = parse_section(data, "multitask", str(args.params))
    log.info(
        "target %s; base model %s; params in %s",
        target,
        args.base_model_dir,
        args.report_dir / "run.json",
    )
    # collect refuses tasks missing from the catalogue, so each has its directory
    tasks = [read_task(args.data_dir / "tasks" / t) for t in params.trained_tasks(target)]
    with stage_run("multitask"):
        multitask(
            args.base_model_dir,
            tasks,
            params,
            model.max_seq_length,
            args.model_dir,
            args.report_dir,
            args.checkpoint_dir,
            target,
        )


if __name__ == "__main__":
    stage_main(main, "multitask")
