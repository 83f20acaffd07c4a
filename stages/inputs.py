"""inputs: fingerprint what collect and pretrain read from outside the pipeline.

Reads params.yaml (target, tasks, model.name, pretrain.corpus, multitask) and writes
data/inputs/collect.json (every source file of the tasks collect loads, and the model) and
data/inputs/model.json (the model only, for pretrain). dvc.yaml runs it on every repro.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bertfit.cli import stage_main, stage_parser
from bertfit.data.inputs import write_inputs
from bertfit.data.sources import project_root

log = logging.getLogger("stages.inputs")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--root", type=Path, default=Path("."), help="as collect's --root")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    inputs = write_inputs(args.params, project_root(args.root), args.out_dir)
    for task, files in inputs["collect"]["tasks"].items():
        log.info("%s: %s", task, ", ".join(files))
    log.info("model: %s", ", ".join(inputs["model"]["model"]))


if __name__ == "__main__":
    stage_main(main, "inputs")
