"""The stage scripts' shared set-up (bertfit.cli): progress bars only on a terminal."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datasets.utils import are_progress_bars_disabled, enable_progress_bars
from huggingface_hub.utils import are_progress_bars_disabled as hub_bars_disabled
from huggingface_hub.utils import enable_progress_bars as enable_hub_bars
from transformers.utils import logging as hf_logging

import bertfit
from bertfit import cli
from tests.conftest import PROJECT_ROOT


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


# --- `bertfit` itself: quick answers, user errors as one message ---------------------------------

PROBE = """
import sys
from bertfit import cli
try:
    cli.main({argv!r})
except SystemExit:
    pass
print("heavy:", sorted(m for m in ("torch", "transformers", "pandas") if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--version"], ["--help"], []])
def test_help_and_version_import_nothing_heavy(argv: list[str]) -> None:
    """`bertfit --help` / `--version` answer at once: no subcommand module (which import torch)
    is loaded for them."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True
    )
    assert done.stdout.strip().splitlines()[-1] == "heavy: []", done.stderr
    if argv == ["--version"]:
        assert done.stdout.startswith(f"bertfit {bertfit.__version__}")
    if argv == ["--help"]:
        for name in cli.COMMANDS:
            assert name in done.stdout


def stage_run(params_file: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """collect through dvc.yaml's launcher (stages/python), as DVC runs it."""
    command = [str(PROJECT_ROOT / "stages" / "python"), str(PROJECT_ROOT / "stages" / "collect.py")]
    command += ["--params", str(params_file), "--data-dir", str(tmp_path / "data")]
    command += ["--stats-file", str(tmp_path / "s.json"), "--scratch-dir", str(tmp_path / "sc")]
    environment = {k: v for k, v in os.environ.items() if k != cli.DEBUG_ENV} | env
    environment["BERTFIT_PYTHON"] = sys.executable
    return subprocess.run(command, capture_output=True, text=True, env=environment, cwd=tmp_path)


def test_a_stage_reports_bad_input_in_one_message(tmp_path: Path) -> None:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["tasks"] = str(PROJECT_ROOT / "tasks.yaml")
    params["finetun"] = params.pop("finetune")  # a typo in a section name
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    done = stage_run(params_file, tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"bertfit collect: error: {params_file}: unknown top-level key 'finetun'"
    )
    assert "did you mean 'finetune'?" in last


def test_debug_keeps_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from bertfit.params import parse_section

    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ValueError, match=r"finetune\.nope: unknown key"), cli.user_errors("x"):
        parse_section({"finetune": {"nope": 1}}, "finetune")
    monkeypatch.delenv(cli.DEBUG_ENV)
    unknown = r"finetune\.nope: unknown key"
    with pytest.raises(ValueError, match=unknown), cli.user_errors("x", debug=True):
        parse_section({"finetune": {"nope": 1}}, "finetune")


def test_only_bertfits_own_checks_count_as_user_errors() -> None:
    """A ValueError raised by bertfit's code is the input's fault; one raised elsewhere (here: a
    test's own code, as it would be in a library) and any other exception keep the traceback."""
    from bertfit.params import parse_section

    with pytest.raises(SystemExit), cli.user_errors("bertfit x"):
        parse_section({"finetune": {"nope": 1}}, "finetune")
    with pytest.raises(ValueError, match="not bertfit's"), cli.user_errors("bertfit x"):
        raise ValueError("not bertfit's")
    with pytest.raises(RuntimeError), cli.user_errors("bertfit x"):
        raise RuntimeError("a bug")
