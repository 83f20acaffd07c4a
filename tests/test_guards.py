"""What stops a run that would otherwise end silently wrong (issue 38): a diverged training, a
warm-up longer than the run, out-of-range seeds, LoRA targets the model lacks, a checkpoint that
cannot be loaded, user strings in markdown."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from peft import LoraConfig
from safetensors.torch import save_file
from transformers.trainer import TRAINER_STATE_NAME

from bertfit.data.tasks import Task, read_task, write_task
from bertfit.evaluation import evaluate
from bertfit.models.adapters import adapt
from bertfit.models.heads import load_classifier
from bertfit.params import EvaluateParams, FinetuneParams, parse_section
from bertfit.training.checkpoints import last_complete_checkpoint
from bertfit.training.finetune import finetune
from bertfit.training.trainer import TrainingDiverged, plan_line, training_arguments
from tests.conftest import TINY_FINETUNE

EVAL = EvaluateParams(per_device_eval_batch_size=8, prediction="rank", mixed_precision="no")


def questions(trec_sample: dict, labels: dict[str, str] | None = None, n: int = 48) -> pd.DataFrame:
    rows = pd.DataFrame(trec_sample["train"][:n])[["text", "label"]]
    return rows.replace({"label": labels}) if labels else rows


def train(tmp_path: Path, model_dir: Path, rows: pd.DataFrame, **overrides: object) -> Task:
    task = Task("trec", sorted(set(rows["label"])))
    params = FinetuneParams(**(TINY_FINETUNE | {"num_train_epochs": 1} | overrides))
    finetune(str(model_dir), task, rows, rows, params, 32, tmp_path / "model",
             tmp_path / "reports")  # fmt: skip
    return task


def test_a_learning_rate_typo_is_refused_by_key() -> None:
    with pytest.raises(ValueError, match=r"finetune.learning_rate: Value error, 500000 is above "
                       r"1, where training only diverges"):  # fmt: skip
        parse_section({"finetune": TINY_FINETUNE | {"learning_rate": 5.0e5}}, "finetune")


def test_a_non_finite_loss_stops_the_stage_naming_the_rate_and_saves_nothing(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loss turns NaN from the third step on (as a too-high rate or an overflow makes it)."""
    from bertfit.training import trainer as trainer_module

    original = trainer_module.BertfitTrainer.compute_loss

    def diverging(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = original(self, model, inputs, False, num_items_in_batch)
        return loss * float("nan") if self.state.global_step >= 2 else loss

    monkeypatch.setattr(trainer_module.BertfitTrainer, "compute_loss", diverging)
    with pytest.raises(TrainingDiverged, match=r"finetune: the training loss is nan at step 3/"
                       r"\d+: training diverged, and nothing was saved or reported. Lower "
                       r"finetune.learning_rate \(now 0.001"):  # fmt: skip
        train(tmp_path, tiny_model_dir, questions(trec_sample), logging_steps=1,
              mixed_precision="no", per_device_train_batch_size=8)  # fmt: skip
    assert not (tmp_path / "model").exists()
    assert not (tmp_path / "reports" / "metrics.json").exists()


def test_non_finite_weights_are_never_saved(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights that went non-finite while the logged loss still read finite (it is a mean over
    the logging window, logged before the step that broke them) stop the stage too."""
    from bertfit.training import trainer as trainer_module

    original = trainer_module.BertfitTrainer.check_weights

    def broken(self: trainer_module.BertfitTrainer) -> None:
        with torch.no_grad():
            next(self.model.parameters()).fill_(float("inf"))
        original(self)

    monkeypatch.setattr(trainer_module.BertfitTrainer, "check_weights", broken)
    with pytest.raises(TrainingDiverged, match=r"the weight \S+ holds non-finite values"):
        train(tmp_path, tiny_model_dir, questions(trec_sample), mixed_precision="no")
    assert not (tmp_path / "model").exists()


def test_a_warm_up_longer_than_the_run_is_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    params = FinetuneParams(**(TINY_FINETUNE | {"warmup_ratio": None, "warmup_steps": 100000}))
    args = training_arguments(params, tmp_path, num_train_epochs=1)
    with caplog.at_level(logging.WARNING):
        plan_line("finetune", args, 48, "48 rows")
    steps = -(-48 // params.per_device_train_batch_size)
    assert (
        f"finetune: warm-up of 100000 steps is as long as the run ({steps} steps): the learning "
        "rate never reaches finetune.learning_rate" in caplog.text
    )
    caplog.clear()
    params = FinetuneParams(**(TINY_FINETUNE | {"warmup_ratio": 0.5, "warmup_steps": None}))
    with caplog.at_level(logging.WARNING):
        plan_line("finetune", training_arguments(params, tmp_path), 48, "48 rows")
    assert "warm-up" not in caplog.text


@pytest.mark.parametrize(
    ("seed", "bound"),
    [(-1, "greater than or equal to 0"), (2**32, "less than or equal to 4294967295")],
)
def test_a_seed_numpy_cannot_take_is_refused_by_key(seed: int, bound: str) -> None:
    with pytest.raises(ValueError, match=rf"finetune.seed: Input should be {bound}"):
        parse_section({"finetune": TINY_FINETUNE | {"seed": seed}}, "finetune")


def test_lora_targets_the_model_lacks_are_named_with_the_models_layers(
    tiny_model_dir: Path,
) -> None:
    model = load_classifier(str(tiny_model_dir), ["a", "b"])
    config = LoraConfig(task_type="SEQ_CLS", target_modules=["no_such_module", "query"])
    with pytest.raises(ValueError, match=r"finetune.lora_target_modules: \['no_such_module'\] "
                       r"name no module of the model; its linear layers are named \[.*'query'.*"
                       r"'value'"):  # fmt: skip
        adapt(model, config)


def checkpoint(folder: Path, step: int, optimizer: bytes | None = None) -> Path:
    """A complete Trainer checkpoint: weights, trainer_state.json, an optimiser state."""
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.ones(2)}, path / "model.safetensors")
    (path / TRAINER_STATE_NAME).write_text(json.dumps({"global_step": step}))
    if optimizer is None:
        torch.save({"state": {}, "param_groups": []}, path / "optimizer.pt")
    else:
        (path / "optimizer.pt").write_bytes(optimizer)
    return path


def test_an_unloadable_checkpoint_is_set_aside_and_the_one_before_resumed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    earlier = checkpoint(tmp_path, 10)
    damaged = checkpoint(tmp_path, 20, optimizer=b"not a tensor file, e.g. cut short on a disk")
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(tmp_path) == str(earlier)
    assert not damaged.exists() and (tmp_path / "unloadable-checkpoint-20").is_dir()
    assert "optimizer.pt (UnpicklingError) cannot be loaded; set aside" in caplog.text
    assert "weights_only" not in caplog.text
    # the only one damaged too: training starts over
    (earlier / "model.safetensors").write_bytes(b"\x00" * 5)
    assert last_complete_checkpoint(tmp_path) is None


def test_labels_with_markdown_characters_keep_the_report_and_card_intact(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    odd = {"DESC": "desc|ription", "HUM": "<script>alert(1)</script>", "ENTY": "two\nlines"}
    rows = questions(trec_sample, odd, 60)
    task = train(tmp_path, tiny_model_dir, rows, mixed_precision="no")
    write_task(task, {"test": rows}, [], tmp_path / task.name)
    evaluate(tmp_path / "model", read_task(tmp_path / task.name), EVAL, tmp_path / "ev")
    for path in (tmp_path / "ev" / "report.md", tmp_path / "model" / "README.md"):
        text = path.read_text(encoding="utf-8")
        assert "<script>" not in text.replace("`<script>alert(1)</script>`", "")
        assert "\nlines" not in text  # no label broke a line
        width, previous = 0, ""
        for line in text.splitlines():  # every table row has as many cells as its header
            if line.startswith("|"):
                cells = len(re.split(r"(?<!\\)\|", line.strip())) - 2
                width = cells if not previous.startswith("|") else width
                assert cells == width, line
            previous = line
    per_class = (tmp_path / "ev" / "report.md").read_text(encoding="utf-8")
    assert "desc\\|ription" in per_class and "&lt;script&gt;" in per_class


def test_collects_tables_are_never_written_through_a_planted_symlink(tmp_path: Path) -> None:
    from bertfit.data.tasks import write_parquet

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".train.parquet.tmp").symlink_to(victim)  # the fixed name of before
    df = pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]})
    write_parquet(df, tmp_path / "train.parquet")
    assert victim.read_text() == "precious"
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "train.parquet"), df)
