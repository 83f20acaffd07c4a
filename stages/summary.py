"""summary: the run's headline, first in `dvc exp show`, and every stage's record in git.

Reads reports/<stage>/run.json of pretrain, multitask, finetune and evaluate; writes
reports/summary/headline.json (the target's test metric, its 95 % interval and the run's wall
time: a DVC metric) and reports/summary/stages.json (every stage's record, kept in git).
Its last log line is the headline (bertfit.summary).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bertfit.cli import stage_main
from bertfit.phases import headline, stage_run
from bertfit.summary import summarize

log = logging.getLogger("stages.summary")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports-dir", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    # no transformers here: plain logging in the stages' format (cli.configure_logging's)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    with stage_run("summary"):
        headline(summarize(args.reports_dir, args.out_dir))


if __name__ == "__main__":
    stage_main(main, "summary")
