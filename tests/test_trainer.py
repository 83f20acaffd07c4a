"""The one Trainer wiring (training.trainer): no pickles saved, one log line per logging step."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
from transformers import DataCollatorWithPadding
from transformers.trainer import TRAINING_ARGS_NAME

from bertfit import cli, terminal
from bertfit.data.encoding import Encoder, Preprocessing
from bertfit.data.tasks import Task
from bertfit.models.dropout import ATTENTION, Dropout
from bertfit.models.heads import load_classifier
from bertfit.models.loading import load_tokenizer
from bertfit.models.manifest import Manifest
from bertfit.params import FinetuneParams
from bertfit.training.trainer import LogLines, pass_through, stage_trainer, training_arguments
from tests.conftest import TINY_FINETUNE


@pytest.mark.usefixtures("progress_bar_state")
def test_checkpoints_hold_no_pickle_and_each_logging_step_is_one_log_line(
    tmp_path: Path,
    tiny_model_dir: Path,
    trec_sample: dict,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "progress_bars", lambda: False)  # output to a log, not a terminal
    monkeypatch.setattr(terminal, "progress_bars", lambda: False)  # the Trainer's bar too
    cli.configure_logging()  # as a stage's main sets up
    rows = pd.DataFrame(trec_sample["train"][:32])[["text", "label"]]
    task = Task("trec", sorted(rows["label"].unique()))
    tokenizer = load_tokenizer(str(tiny_model_dir))
    train = Encoder(tokenizer, Preprocessing(32, "head_tail", 8)).labelled(rows, task, "train")
    params = FinetuneParams(**TINY_FINETUNE | {"logging_steps": 2})
    work = tmp_path / "checkpoints"
    args = training_arguments(params, work, max_steps=4, save_strategy="steps", save_steps=2)
    assert args.disable_tqdm
    model = load_classifier(str(tiny_model_dir), task.labels)
    trainer = stage_trainer(
        params, args, model, train, DataCollatorWithPadding(tokenizer), tokenizer
    )
    assert any(isinstance(c, LogLines) for c in trainer.callback_handler.callbacks)
    # on a CPU the cheaper dropout draws (models.dropout), saved as the stock model
    assert model.config._attn_implementation == ATTENTION
    assert any(isinstance(m, Dropout) for m in model.modules())
    capfd.readouterr()  # what tokenising wrote before
    with caplog.at_level(logging.INFO, logger="bertfit.training.trainer"):
        trainer.train()
        trainer.save_model(str(tmp_path / "saved"))

    checkpoints = sorted(work.glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-2", "checkpoint-4"]
    assert all((c / "model.safetensors").is_file() for c in checkpoints)
    assert not list(work.rglob(TRAINING_ARGS_NAME)) and not list(work.rglob("*.bin"))
    assert (tmp_path / "saved" / "model.safetensors").is_file()
    assert not list((tmp_path / "saved").glob("*.bin"))
    assert ATTENTION not in (tmp_path / "saved" / "config.json").read_text()

    trainer_notes = [r.getMessage() for r in caplog.records if r.name == "transformers.trainer"]
    assert not any("share your model" in m or "been ignored: length" in m for m in trainer_notes)
    # one line per logging step, n/N and numbers as numbers (issue 34)
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    logged = [m for m in steps if ": loss " in m]
    assert [m.split(" ")[1] for m in logged] == ["2/4", "4/4"], steps
    assert not any("'loss'" in m for m in steps)
    out = capfd.readouterr()
    assert "{'loss'" not in out.out  # not print()ed by the Trainer's PrinterCallback
    assert "\r" not in out.err and "it/s" not in out.err  # no bar redraws


def test_pass_through_leaves_a_pickled_training_args_behind(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    source = tmp_path / "source"
    shutil.copytree(tiny_model_dir, source)
    (source / TRAINING_ARGS_NAME).write_bytes(b"not read")  # only its name matters
    pass_through(str(source), tmp_path / "out", Manifest("encoder", "none", "pretrain"))
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert not (tmp_path / "out" / TRAINING_ARGS_NAME).exists()
