"""collect: load the target task from the catalogue, split, deduplicate, describe.

Reads params.yaml (target, tasks, model, collect, pretrain.corpus, multitask.enabled/tasks) and
the sources; writes data/tasks/<task>/{train,validation,test,unlabeled}.parquet and labels.json for
the target, the tasks its corpus needs and the multitask set, data/corpus/{train,heldout}.parquet,
data/scratch/ (the model built for a `scratch:` model.name) and reports/collect/stats.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bertfit.cli import configure_logging, stage_main, stage_parser
from bertfit.collection import collect
from bertfit.data.sources import project_root
from bertfit.params import parse_section, parse_target, parse_tasks, read_params_file
from bertfit.phases import stage_run

log = logging.getLogger("stages.collect")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("."),
        help="directory that relative file paths in the catalogue start from",
    )
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--stats-file", type=Path, required=True)
    parser.add_argument(
        "--scratch-dir",
        type=Path,
        required=True,
        help="where a model.name 'scratch:<config.json>' is built (else a note only)",
    )
    args = parser.parse_args(argv)
    configure_logging()

    data = read_params_file(args.params)
    tasks = parse_tasks(data, str(args.params))
    target = parse_target(data, tasks, str(args.params))
    model = parse_section(data, "model", str(args.params))
    params = parse_section(data, "collect", str(args.params))
    corpus = parse_section(data, "pretrain", str(args.params)).corpus
    multitask = parse_section(data, "multitask", str(args.params))
    multitask_tasks = multitask.trained_tasks(target)  # none when multitask passes through
    log.info(
        "target %s; corpus %s; multitask tasks %s; model %s; %s",
        target,
        corpus,
        multitask_tasks,
        model.name,
        params,
    )

    with stage_run("collect"):
        collect(
            tasks,
            target,
            corpus,
            params,
            model.name,
            model.max_seq_length,
            project_root(args.root),
            args.data_dir,
            args.stats_file,
            args.scratch_dir,
            multitask_tasks,
        )


if __name__ == "__main__":
    stage_main(main, "collect")
