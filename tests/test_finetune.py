from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import Adafactor, DataCollatorWithPadding, get_scheduler
from transformers.optimization import AdafactorSchedule

from bertfit import hardware
from bertfit.data.encoding import Encoder, Preprocessing
from bertfit.data.tasks import Task
from bertfit.hardware import use_bf16
from bertfit.inference import predict_scores
from bertfit.metrics import classification_metrics, per_class_metrics
from bertfit.models.family import EncoderFamily, load_trained
from bertfit.models.heads import load_classifier
from bertfit.models.loading import load_tokenizer
from bertfit.params import FinetuneParams, parse_section
from bertfit.training.finetune import finetune, finetune_arguments
from bertfit.training.live import LiveLog
from bertfit.training.trainer import BertfitTrainer, training_arguments
from tests.conftest import TINY_FINETUNE, live_curve, live_training, read_json


@pytest.mark.parametrize("mixed_precision", ["no", "auto"])
def test_loss_falls_when_overfitting_one_batch(
    tmp_path: Path,
    tiny_model_dir: Path,
    trec_sample: dict,
    mixed_precision: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # auto runs bf16 autocast here whatever the CPU: on one without bf16 arithmetic it is
    # emulated (slow, fine for a tiny model), so this case never repeats the fp32 one
    monkeypatch.setattr(hardware, "bf16_available", lambda: True)
    rows = pd.DataFrame(trec_sample["train"][:16])[["text", "label"]]
    params = FinetuneParams(
        **(
            TINY_FINETUNE
            | {
                "num_train_epochs": 30,
                "per_device_train_batch_size": 16,
                "logging_steps": 1,
                "warmup_ratio": 0.0,
                "learning_rate": 1e-2,
                "layer_decay": 1.0,
                "mixed_precision": mixed_precision,
            }
        )
    )
    task = Task("trec", sorted(rows["label"].unique()))
    with caplog.at_level(logging.INFO, logger="bertfit.training.finetune"):
        finetune(
            str(tiny_model_dir),
            task,
            rows,
            rows,
            params,
            32,
            tmp_path / "model",
            tmp_path / "reports",
        )
    bf16 = mixed_precision == "auto"
    assert use_bf16(mixed_precision) == bf16
    assert any(r.getMessage().endswith(f"bf16 {bf16}") for r in caplog.records)
    loss = live_curve(tmp_path / "reports", "finetune", "loss")["loss"].to_numpy()
    assert len(loss) == 30
    assert loss[-1] < 0.75 * loss[0]  # a random-init 2-layer BERT learns slowly
    manifest = json.loads((tmp_path / "model" / "bertfit_model.json").read_text())
    assert (manifest["family"], manifest["head"], manifest["stage"]) == (
        "encoder",
        "stock",
        "finetune",
    )
    assert manifest["task"]["labels"] == task.labels
    assert manifest["preprocessing"] == {
        "head_tokens": 8,
        "max_seq_length": 32,
        "truncation": "head_tail",
        "chunk_stride": None,
        "max_chunks": None,
    }
    assert not list((tmp_path / "model").glob("*.bin"))  # no pickles (training_args.bin)


def test_saved_model_is_the_selected_epoch(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    """The saved model scores on validation what the selected row says, and that row is the best."""
    rows = tiny_rows(trec_sample, 48)
    validation = pd.DataFrame(trec_sample["validation"])[["text", "label"]]
    validation = validation[validation["label"].isin(set(rows["label"]))]
    task = Task("trec", sorted(set(rows["label"])))
    params = FinetuneParams(**(TINY_FINETUNE | {"num_train_epochs": 4, "learning_rate": 3e-3}))
    metrics = finetune(str(tiny_model_dir), task, rows, validation, params, 32,
                       tmp_path / "model", tmp_path / "reports")  # fmt: skip
    reports = tmp_path / "reports"
    curve = live_curve(reports, "finetune", "validation/accuracy")  # a row per epoch
    steps = curve["step"].tolist()
    assert steps == [steps[0] * e for e in (1, 2, 3, 4)] and steps[-1] == metrics["train_steps"]
    best = curve.loc[curve["accuracy"].idxmax()]  # idxmax: the first of equal maxima
    assert (metrics["best_step"], metrics["selected_on"]) == (best["step"], "accuracy")
    validation_loss = live_curve(reports, "finetune", "validation/loss")
    assert validation_loss["step"].tolist() == steps
    assert {
        k: len(live_curve(reports, "finetune", f"validation/{k}")) for k in metrics["validation"]
    } == dict.fromkeys(metrics["validation"], 4)
    # DVCLive's summary: the step and the latest training values; validation only as curves
    training = live_training(reports, "finetune").iloc[-1]
    assert read_json(reports / "live" / "metrics.json") == {
        "finetune": {"learning_rate": training["learning_rate"], "loss": training["loss"]},
        "step": metrics["train_steps"],
    }
    trained = load_trained(tmp_path / "model")
    ds = trained.encoder().labelled(validation, task, "validation")
    scores = predict_scores(trained.model, ds, 16, trained.collator(), trained.family.score)
    accuracy = float((scores.argmax(-1) == np.asarray(ds["labels"])).mean())
    assert (
        accuracy
        == pytest.approx(best["accuracy"])
        == pytest.approx(metrics["validation"]["accuracy"])
    )


def test_live_log_names_training_and_validation_values_by_stage(tmp_path: Path) -> None:
    """Training logs give loss and learning rate (each task's loss for multitask), validation
    logs their scores (multitask: per task); the Trainer's closing summary and epochs none."""
    single = LiveLog(tmp_path, "finetune")
    assert single.names(
        {"loss": 1.0, "learning_rate": 1e-5, "grad_norm": 2.0, "epoch": 0.5, "step": 5}
    ) == {"finetune/loss": 1.0, "finetune/learning_rate": 1e-5}
    assert single.names({"eval_loss": 0.9, "eval_accuracy": 0.6, "eval_epoch": 1.0}) == {
        "finetune/validation/loss": 0.9,
        "finetune/validation/accuracy": 0.6,
    }
    assert single.names({"train_runtime": 3.0, "train_loss": 0.8, "epoch": 1.0}) == {}
    multi = LiveLog(tmp_path, "multitask", ["sst2", "sst2_2000"])
    assert multi.names({"loss": 1.0, "loss_sst2_2000": 0.9, "learning_rate": 1e-5}) == {
        "multitask/loss": 1.0,
        "multitask/task_loss/sst2_2000": 0.9,
        "multitask/learning_rate": 1e-5,
    }
    assert multi.names(
        {"eval_mean_main": 0.7, "eval_sst2_2000_mcc": 0.4, "eval_sst2_loss": 0.6}
    ) == {
        "multitask/validation_mean_main": 0.7,
        "multitask/validation/sst2_2000/mcc": 0.4,
        "multitask/validation/sst2/loss": 0.6,
    }


def test_classification_metrics() -> None:
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 2])
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["error_rate"] == pytest.approx(0.2)
    # F1 per class: 2/3, 0.8, 1.0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)
    per = per_class_metrics(y, p, ["a", "b", "c"])
    assert per["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert per["b"]["precision"] == pytest.approx(2 / 3)


def tiny_rows(trec_sample: dict, n: int = 32) -> pd.DataFrame:
    return pd.DataFrame(trec_sample["train"][:n])[["text", "label"]]


def train_on_rows(
    tmp_path: Path, model_dir: Path, rows: pd.DataFrame, overrides: dict
) -> tuple[FinetuneParams, pd.DataFrame]:
    """finetune on `rows` (also the validation set); the params used and the logged loss rows."""
    params = FinetuneParams(**(TINY_FINETUNE | overrides))
    finetune(str(model_dir), Task("trec", sorted(set(rows["label"]))), rows, rows, params, 32,
             tmp_path / "model", tmp_path / "reports")  # fmt: skip
    return params, live_training(tmp_path / "reports", "finetune")


@pytest.mark.parametrize(
    "schedule",
    ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"],
)
def test_every_schedule_is_the_one_transformers_defines(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict, schedule: str
) -> None:
    rows = tiny_rows(trec_sample)
    overrides = {
        "lr_scheduler_type": schedule,
        "warmup_ratio": None,
        "warmup_steps": 2,
        "per_device_train_batch_size": 8,
        "logging_steps": 1,
        "layer_decay": 1.0,
    }
    params, history = train_on_rows(tmp_path, tiny_model_dir, rows, overrides)
    logged = history["learning_rate"].tolist()

    steps = 8  # 32 rows, batch 8, 2 epochs
    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=params.learning_rate)
    reference = get_scheduler(schedule, dummy, num_warmup_steps=2, num_training_steps=steps)
    expected = []
    for _ in range(steps):
        dummy.step()
        expected.append(reference.get_last_lr()[0])  # the rate logged after each step
        reference.step()
    assert logged == pytest.approx(expected, rel=1e-5, abs=1e-12)


def test_warmup_is_a_ratio_or_steps_not_both() -> None:
    with pytest.raises(ValueError, match=r"exactly one of warmup_ratio and warmup_steps"):
        FinetuneParams(**(TINY_FINETUNE | {"warmup_ratio": 0.1, "warmup_steps": 10}))
    with pytest.raises(ValueError, match=r"exactly one of warmup_ratio and warmup_steps"):
        FinetuneParams(**(TINY_FINETUNE | {"warmup_ratio": None, "warmup_steps": None}))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lr_scheduler_type": "one_cycle"}, r"lr_scheduler_type: Input should be 'linear'"),
        ({"optimizer": "lamb"}, r"finetune.optimizer: Input should be 'adamw' or 'adafactor'"),
        ({"adafactor_relative_step": True}, r"adafactor_relative_step needs optimizer: adafactor"),
        ({"optimizer": "adafactor", "adafactor_relative_step": True, "layer_decay": 0.95},
         r"layer-wise decay cannot apply: set layer_decay to 1.0"),
    ],
)  # fmt: skip
def test_bad_schedule_or_optimiser_is_named(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_section({"finetune": TINY_FINETUNE | override}, "finetune")


def optimiser_of(tmp_path: Path, model_dir: Path, **overrides: object) -> BertfitTrainer:
    params = FinetuneParams(**(TINY_FINETUNE | overrides))
    trainer = BertfitTrainer(
        model=load_classifier(str(model_dir), ["a", "b"]),
        args=training_arguments(params, tmp_path / "work"),
        eval_dataset=[],  # finetune always has one; only the optimiser is looked at here
        layer_decay=params.layer_decay,
        adafactor_relative_step=params.adafactor_relative_step,
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    return trainer


def test_adafactor_in_both_modes(tmp_path: Path, tiny_model_dir: Path) -> None:
    fixed = optimiser_of(tmp_path, tiny_model_dir, optimizer="adafactor", learning_rate=1e-3,
                         layer_decay=0.5)  # fmt: skip
    assert isinstance(fixed.optimizer, Adafactor)
    assert not fixed.optimizer.defaults["relative_step"]
    assert not fixed.optimizer.defaults["scale_parameter"]
    assert not fixed.optimizer.defaults["warmup_init"]
    # layer-wise decay still applies: 2 layers at ξ 0.5 -> embeddings get a quarter of the rate
    rates = {g["depth"]: g["initial_lr"] for g in fixed.optimizer.param_groups}  # before warm-up
    assert rates[3] == pytest.approx(1e-3) and rates[0] == pytest.approx(2.5e-4)

    relative = optimiser_of(tmp_path, tiny_model_dir, optimizer="adafactor",
                            adafactor_relative_step=True, layer_decay=1.0)  # fmt: skip
    defaults = relative.optimizer.defaults
    assert defaults["lr"] is None and defaults["relative_step"] and defaults["warmup_init"]
    assert defaults["scale_parameter"]
    assert isinstance(relative.lr_scheduler, AdafactorSchedule)

    adamw = optimiser_of(tmp_path, tiny_model_dir)
    assert isinstance(adamw.optimizer, torch.optim.AdamW)


def test_adafactor_relative_step_trains(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    rows = tiny_rows(trec_sample, 16)
    overrides = {
        "optimizer": "adafactor",
        "adafactor_relative_step": True,
        "layer_decay": 1.0,
        "num_train_epochs": 30,
        "per_device_train_batch_size": 16,
        "logging_steps": 1,
    }
    _, history = train_on_rows(tmp_path, tiny_model_dir, rows, overrides)
    assert len(history) == 30 and history["loss"].notna().all()
    # warmup_init: the relative step grows as 1e-6 × step (times the parameters' RMS scale)
    # (AdafactorSchedule reports the size of the step before; none before the first)
    rates = history["learning_rate"].to_numpy()[1:]
    assert rates / rates[0] == pytest.approx(np.arange(1, 30), rel=0.05)
    assert 1e-9 <= rates[0] <= 1e-6


def padding_share(trainer: BertfitTrainer) -> float:
    """Share of pad positions over one pass of the trainer's own training batches."""
    pad = total = 0
    for batch in trainer.get_train_dataloader():
        mask = batch["attention_mask"]
        pad += int((mask == 0).sum())
        total += mask.numel()
    return pad / total


def test_length_grouped_batches_pad_less_than_random_ones(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    """finetune's arguments group training batches by length (with dynamic padding)."""
    rows = pd.DataFrame(trec_sample["train"])[["text", "label"]]
    labels = sorted(rows["label"].unique())
    tokenizer = load_tokenizer(str(tiny_model_dir))
    ds = Encoder(tokenizer, Preprocessing(64, "head_tail", 8)).labelled(
        rows, Task("trec", labels), "train"
    )
    shares = {}
    for strategy in ("group_by_length", "random"):
        # batch 4: transformers sorts within mega-batches of min(50, n / (4 batch)) batches
        params = FinetuneParams(
            **(
                TINY_FINETUNE
                | {"train_sampling_strategy": strategy, "per_device_train_batch_size": 4}
            )
        )
        trainer = BertfitTrainer(
            model=load_classifier(str(tiny_model_dir), labels),
            args=finetune_arguments(params, tmp_path / strategy),
            train_dataset=ds,
            eval_dataset=ds,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            layer_decay=params.layer_decay,
        )
        shares[strategy] = padding_share(trainer)
    assert shares["random"] > 0.2  # TREC questions vary in length
    assert shares["group_by_length"] < 0.25 * shares["random"], shares


def predict(model, tokenizer, ds, batch_size: int, bf16: bool = False) -> np.ndarray:
    """The encoder family's scores (logits) of a stock classifier."""
    family = EncoderFamily()
    collator = family.collator(tokenizer, Preprocessing(64, "head_tail", 8))
    return predict_scores(model, ds, batch_size, collator, family.score, bf16)


@pytest.fixture()
def untrained_on_questions(tiny_model_dir: Path, trec_sample: dict) -> tuple:
    """An untrained 3-label tiny classifier, its tokenizer and TREC validation questions."""
    rows = pd.DataFrame(trec_sample["validation"])[["text"]]
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_classifier(str(tiny_model_dir), ["a", "b", "c"])
    return model, tokenizer, Encoder(tokenizer, Preprocessing(64, "head_tail", 8)).dataset(rows)


def test_sorted_prediction_batches_return_rows_in_dataset_order(
    untrained_on_questions: tuple,
) -> None:
    """predict_scores batches by length but gives each row its own scores, as one by one."""
    model, tokenizer, ds = untrained_on_questions
    assert len(set(ds["length"])) > 5 and ds["length"] != sorted(ds["length"])
    batched = predict(model, tokenizer, ds, 16)
    one_by_one = np.concatenate(
        [predict(model, tokenizer, ds.select([i]), 1) for i in range(len(ds))]
    )
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-5)


def test_bf16_prediction_is_autocast_and_close_to_fp32(untrained_on_questions: tuple) -> None:
    model, tokenizer, ds = untrained_on_questions
    fp32 = predict(model, tokenizer, ds, 16)
    bf16 = predict(model, tokenizer, ds, 16, bf16=True)
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    difference = np.abs(bf16 - fp32).max()
    assert 0 < difference < 0.05  # rounded to bf16 inside, yet the same logits to 2 decimals
    assert next(model.parameters()).dtype == torch.float32  # autocast leaves the weights alone
