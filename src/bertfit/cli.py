"""What every stage script shares (logging set-up, the params-file argument), and the `bertfit`
console command (pyproject's [project.scripts])."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from pathlib import Path

# `bertfit <command>`: each module has add_arguments(parser) and run(args), and its docstring is
# the command's help; imported by main() only, so the stage scripts that import cli never load them
COMMANDS = {"predict": "bertfit.predict", "ablate": "bertfit.ablate"}


def positive_int(value: str) -> int:
    """argparse type of the subcommands' counts (--seeds, --batch-size, ...)."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def progress_bars() -> bool:
    """The one decision whether progress bars are drawn: only when stderr is a terminal.

    In a log (`dvc repro > log`, CI) every redraw of a bar is a line of its own: 77 % of a
    default run's log lines were bar redraws (issue 13). configure_logging applies it to
    datasets, transformers and huggingface_hub; training.trainer to the Trainer's bar
    (TrainingArguments.disable_tqdm); inference.predict_scores to bertfit's own.
    """
    return sys.stderr.isatty()


# bertfit's own column in every tokenised set (length-sorted scoring, group_by_length), which
# the Trainer drops from the model's inputs and says so at INFO on every run
BERTFIT_COLUMNS = {"length"}
IGNORED_COLUMNS = re.compile(r"don't have a corresponding argument .* been ignored: (.*?)\. If ")


def expected_trainer_note(record: logging.LogRecord) -> bool:
    """False for the Trainer's INFO notes that every bertfit run gets: `length` ignored (any
    other column it drops is still said), and its request to share the model on the Hub."""
    message = record.getMessage()
    if "Do not forget to share your model on huggingface.co" in message:
        return False
    ignored = IGNORED_COLUMNS.search(message)
    return not (ignored and set(ignored.group(1).split(", ")) <= BERTFIT_COLUMNS)


def configure_logging() -> None:
    """A stage's (or command's) logging: INFO lines with time and logger name on stderr,
    transformers' records through the same handler, no progress bars off a terminal."""
    logging.basicConfig(
        level=os.environ.get("BERTFIT_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    import huggingface_hub.utils
    import transformers

    transformers.logging.set_verbosity_warning()
    transformers.logging.disable_default_handler()
    transformers.logging.enable_propagation()
    # the Trainer logs its training summary (examples, epochs, batch size, steps) at INFO
    trainer_log = logging.getLogger("transformers.trainer")
    trainer_log.setLevel(logging.INFO)
    if expected_trainer_note not in trainer_log.filters:
        trainer_log.addFilter(expected_trainer_note)
    if not progress_bars():
        transformers.logging.disable_progress_bar()  # loading weights
        huggingface_hub.utils.disable_progress_bars()
        if "datasets" in sys.modules:  # Dataset.map's bars; imported by the training stages
            from datasets.utils import disable_progress_bars

            disable_progress_bars()
        else:  # read when datasets is imported (the inputs stage never imports it: ~1 s saved)
            os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def stage_parser(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file (default: params.yaml)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """`bertfit COMMAND ...`: one subcommand per module in COMMANDS."""
    parser = argparse.ArgumentParser(
        prog="bertfit", description="bertfit's commands beside the DVC pipeline"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        doc = module.__doc__ or ""
        sub = commands.add_parser(
            name,
            help=doc.split("\n", 1)[0].split(": ", 1)[-1],
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    args.run(args)
