"""multitask: multi-task fine-tuning of the pretrained encoder, one head per task.

Reads params.yaml (tasks, model.max_seq_length, multitask), models/pretrain/ and
data/tasks/<task>/ for every task in multitask.tasks; writes models/multitask/ (a standard HF
encoder directory plus multitask_heads/; the pretrained model unchanged when disabled) and
reports/multitask/{metrics.json,validation.csv,loss.csv}.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bertfit.cli import configure_logging, stage_parser
from bertfit.data.collect import read_split, read_task_info
from bertfit.params import parse_section, parse_tasks, read_params_file
from bertfit.training.multitask import multitask

log = logging.getLogger("stages.multitask")


def read_tasks(data_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    frames = {}
    for name in names:
        task_dir = data_dir / "tasks" / name
        info = read_task_info(task_dir)
        frames[name] = {
            "problem": info["problem"],
            "labels": info["labels"],
            "train": read_split(task_dir, "train"),
            "validation": read_split(task_dir, "validation"),
        }
    return frames


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--base-model-dir", type=Path, default=Path("models/pretrain"))
    parser.add_argument("--model-dir", type=Path, default=Path("models/multitask"))
    parser.add_argument("--report-dir", type=Path, default=Path("reports/multitask"))
    args = parser.parse_args(argv)
    configure_logging()

    data = read_params_file(args.params)
    catalogue = parse_tasks(data, str(args.params))
    model = parse_section(data, "model", str(args.params))
    params = parse_section(data, "multitask", str(args.params))
    log.info("base model %s; %s", args.base_model_dir, params)
    unknown = sorted(set(params.tasks) - set(catalogue)) if params.enabled else []
    if unknown:
        raise ValueError(
            f"{args.params}: multitask.tasks: {unknown} not in the catalogue (tasks: "
            f"{', '.join(sorted(catalogue))})"
        )
    frames = read_tasks(args.data_dir, params.tasks) if params.enabled else {}
    multitask(
        args.base_model_dir,
        frames,
        params,
        model.max_seq_length,
        args.model_dir,
        args.report_dir,
    )


if __name__ == "__main__":
    main()
