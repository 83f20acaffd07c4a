"""What every stage script shares (logging set-up, the params-file argument), and the `bertfit`
console command (pyproject's [project.scripts])."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
from pathlib import Path

# `bertfit <command>`: each module has add_arguments(parser) and run(args), and its docstring is
# the command's help; imported by main() only, so the stage scripts that import cli never load them
COMMANDS = {"predict": "bertfit.predict"}


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("BERTFIT_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    import transformers

    transformers.logging.set_verbosity_warning()
    transformers.logging.disable_default_handler()
    transformers.logging.enable_propagation()
    # the Trainer logs its training summary (examples, epochs, batch size, steps) at INFO
    logging.getLogger("transformers.trainer").setLevel(logging.INFO)


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
