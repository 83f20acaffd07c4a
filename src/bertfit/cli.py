"""What every stage script shares: logging set-up and the params-file argument."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path


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
