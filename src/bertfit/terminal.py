"""What bertfit shows on a terminal that it leaves out of a log: progress bars.

Below the CLI, so that the trainer, bertfit's own scoring loop (inference) and the command-line
set-up (cli.configure_logging) ask the same question without the lower ones importing cli.
"""

from __future__ import annotations

import sys


def progress_bars() -> bool:
    """The one decision whether progress bars are drawn: only when stderr is a terminal.

    In a log (`dvc repro > log`, CI) every redraw of a bar is a line of its own, and the
    redraws would bury the lines a person reads. cli.configure_logging applies it to
    datasets, transformers and huggingface_hub; training.trainer to the Trainer's bar
    (TrainingArguments.disable_tqdm); inference.predict_scores to bertfit's own.
    """
    return sys.stderr.isatty()
