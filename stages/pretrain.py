"""pretrain: further masked-LM pretraining of the base model on the collected corpus.

Reads params.yaml (model, pretrain), data/corpus/{train,heldout}.parquet and, for a model built
from scratch, data/scratch/; writes models/pretrain/ (a standard HF directory with tokenizer: an
encoder, or a seq2seq model; the base model unchanged for `corpus: none`),
reports/pretrain/{metrics.json,run.json} and DVCLive's log reports/pretrain/live/
(training.live), and resumable checkpoints in checkpoints/pretrain/.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bertfit.cli import configure_logging, stage_main, stage_parser
from bertfit.models.scratch import scratch_model_dir
from bertfit.params import parse_section, read_params_file
from bertfit.phases import stage_run
from bertfit.training.pretrain import pretrain

log = logging.getLogger("stages.pretrain")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--corpus-dir", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--report-dir", type=Path, required=True)
    parser.add_argument("--checkpoint-dir", type=Path, required=True)
    parser.add_argument(
        "--scratch-dir",
        type=Path,
        required=True,
        help="collect's scratch output: the start for a model.name 'scratch:<config.json>'",
    )
    args = parser.parse_args(argv)
    configure_logging()

    data = read_params_file(args.params)
    model = parse_section(data, "model", str(args.params))
    params = parse_section(data, "pretrain", str(args.params))
    log.info("model %s; params in %s", model.name, args.report_dir / "run.json")
    start = scratch_model_dir(model.name, args.scratch_dir)
    with stage_run("pretrain"):
        pretrain(
            start,
            args.corpus_dir,
            params,
            args.model_dir,
            args.report_dir,
            args.checkpoint_dir,
            base_model=model.name,
        )


if __name__ == "__main__":
    stage_main(main, "pretrain")
