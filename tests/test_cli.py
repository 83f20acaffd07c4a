"""The stage scripts' shared set-up (bertfit.cli): progress bars only on a terminal."""

from __future__ import annotations

import logging
import sys

import pytest
from datasets.utils import are_progress_bars_disabled, enable_progress_bars
from huggingface_hub.utils import are_progress_bars_disabled as hub_bars_disabled
from huggingface_hub.utils import enable_progress_bars as enable_hub_bars
from transformers.utils import logging as hf_logging

from bertfit import cli


class Terminal:
    """A stand-in for sys.stderr that says whether it is a terminal."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty", [True, False])
@pytest.mark.usefixtures("progress_bar_state")
def test_progress_bars_follow_whether_stderr_is_a_terminal(
    tty: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_progress_bars()
    enable_hub_bars()
    hf_logging.enable_progress_bar()
    monkeypatch.setattr(sys, "stderr", Terminal(tty))
    assert cli.progress_bars() is tty
    cli.configure_logging()
    assert are_progress_bars_disabled() is not tty  # datasets' Dataset.map bars
    assert hf_logging.is_progress_bar_enabled() is tty  # transformers' loading / saving bars
    assert hub_bars_disabled() is not tty


def trainer_record(message: str) -> logging.LogRecord:
    return logging.LogRecord("transformers.trainer", logging.INFO, __file__, 0, message, None, None)


def test_the_trainers_expected_notes_are_dropped_and_others_kept() -> None:
    ignored = (
        "The following columns in the Training set don't have a corresponding argument in "
        "`BertForSequenceClassification.forward` and have been ignored: {0}. If {0} are not "
        "expected by `BertForSequenceClassification.forward`,  you can safely ignore this message."
    )
    assert not cli.expected_trainer_note(trainer_record(ignored.format("length")))
    assert cli.expected_trainer_note(trainer_record(ignored.format("length, idx")))  # a surprise
    shared = "\n\nTraining completed. Do not forget to share your model on huggingface.co/models =)"
    assert not cli.expected_trainer_note(trainer_record(shared))
    assert cli.expected_trainer_note(trainer_record("***** Running training *****"))
