"""What every stage script shares (logging set-up, the params-file argument, user errors as one
message), and the `bertfit` console command (pyproject's [project.scripts])."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bertfit.terminal import progress_bars

# `bertfit <command>`: each module has add_arguments(parser) and run(args), and its docstring is
# the command's description. Only the chosen command's module is imported (they import torch):
# `bertfit --help` and `--version` answer at once from the one-line helps here.
COMMANDS = {
    "add-task": (
        "bertfit.add_task",
        "register a CSV/TSV/JSONL/Parquet file as the target task, then print the plan",
    ),
    "plan": (
        "bertfit.plan",
        "what `dvc repro` will do with the current params, and how long it takes here",
    ),
    "predict": ("bertfit.predict", "label the texts of a file with a trained model"),
    "serve": ("bertfit.serve", "serve a trained model over HTTP (POST /predict, batched)"),
    "export": ("bertfit.export", "export a trained model to ONNX (int8 optional) for ONNX Runtime"),
    "search": (
        "bertfit.search",
        "optuna search over finetune's hyperparameters: resumable, pruned, parallel workers",
    ),
    "ablate": (
        "bertfit.ablate.command",
        "the paper's variants x seeds as DVC experiments, and their table",
    ),
}
EPILOG = """\
The pipeline runs with DVC: `.venv/bin/dvc repro` (its stages find the project's .venv
themselves), `.venv/bin/dvc exp run -S finetune.learning_rate=3e-5`, `.venv/bin/dvc exp show`.
An error in your input prints one message and exits 1; --debug (or BERTFIT_DEBUG=1, which the
pipeline's stages read too) shows the traceback."""
DEBUG_ENV = "BERTFIT_DEBUG"
# the exceptions bertfit raises for bad input (STYLE.md: ValueError / FileNotFoundError with the
# file or key, the value and the fix); raised from bertfit's own code they are the user's to fix
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
)
PACKAGE_DIR = Path(__file__).resolve().parent


def positive_int(value: str) -> int:
    """argparse type of the subcommands' counts (--seeds, --batch-size, ...)."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


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


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def raised_by_bertfit(err: BaseException) -> bool:
    """Whether the innermost frame of err's traceback is bertfit's own code (the package or a
    stage script): a check of the input, not a failure inside a library."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    where = Path(tb.tb_frame.f_code.co_filename).resolve()
    return where.is_relative_to(PACKAGE_DIR) or where.parent.name == "stages"


def is_user_error(err: BaseException) -> bool:
    return isinstance(err, USER_ERRORS) and raised_by_bertfit(err)


@contextmanager
def user_errors(what: str, debug: bool = False) -> Iterator[None]:
    """Bad input ends `what` with one message on stderr and exit status 1, no traceback (issue
    33: a wrong column name printed 7 frames before the message). Anything else is a bug and
    keeps its traceback, as does every error with --debug or BERTFIT_DEBUG=1."""
    try:
        yield
    except Exception as err:
        if debug or debugging() or not is_user_error(err):
            raise
        message = str(err) or err.__class__.__name__
        if isinstance(err, FileNotFoundError) and err.filename and not err.args[1:]:
            message = f"{err.filename}: not found"
        sys.stderr.write(f"{what}: error: {message}\n")
        sys.stderr.flush()
        raise SystemExit(1) from None


def stage_main(main: Callable[[], None], stage: str) -> None:
    """A stage script's entry (`if __name__ == "__main__"`): main(), user errors as one message."""
    with user_errors(f"bertfit {stage}"):
        main()


def command_named(argv: list[str]) -> str | None:
    """The subcommand in argv (the first word that is one), without parsing the rest."""
    return next((a for a in argv if a in COMMANDS), None)


def main(argv: list[str] | None = None) -> None:
    """`bertfit COMMAND ...`: one subcommand per module in COMMANDS."""
    from bertfit import __version__

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="bertfit",
        description="bertfit's commands beside the DVC pipeline",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bertfit {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help=f"show the traceback of any error ({DEBUG_ENV}=1)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = command_named(argv)
    for name, (module_name, summary) in COMMANDS.items():
        if name != chosen:  # listed in --help, never parsed
            commands.add_parser(name, help=summary)
            continue
        module = importlib.import_module(module_name)
        sub = commands.add_parser(
            name,
            help=summary,
            description=module.__doc__ or summary,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    with user_errors(f"bertfit {args.command}", args.debug):
        args.run(args)


def add_mixed_precision(parser: argparse.ArgumentParser) -> None:
    """The --mixed-precision option of the commands that score with a model."""
    parser.add_argument(
        "--mixed-precision",
        choices=("auto", "no"),
        default="auto",
        help="auto: bf16 autocast where the GPU or CPU has bf16 arithmetic; no: fp32",
    )
