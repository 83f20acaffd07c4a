"""One frozen base, many tasks: multitask prompt tuning, finetune from the target's multitask
prompt, and several tasks' adapters served from one loaded base (tiny BERT and tiny T5)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import bertfit.models.methods.base as method_module
from bertfit.data.tasks import Task, read_task, write_task
from bertfit.inference import predict_scores
from bertfit.metrics import task_metrics
from bertfit.models.family import load_task_adapters, load_trained
from bertfit.models.last_layer import FIRST, last_layer
from bertfit.models.loading import resolve_model_name
from bertfit.params import MultitaskParams
from bertfit.training.finetune import finetune
from bertfit.training.multitask import multitask
from tests.conftest import TINY_MULTITASK, build_tiny_bert, live_curve
from tests.test_adapters import EMBEDDED_MODEL, toy
from tests.test_adapters import params as finetune_params

# Lester et al.'s recipe for the prompts (Adafactor, lr 0.3); the encoder's heads train too
PROMPT_MULTITASK = {
    "method": "prompt_tuning",
    "tasks": ["trec", "toy"],
    "optimizer": "adafactor",
    "learning_rate": 0.3,
    "max_steps": 40,
    "eval_steps": 20,
    "per_device_train_batch_size": 8,
}


def two_tasks(tmp_path: Path, trec_sample: dict) -> list[Task]:
    """The real TREC rows (6 classes) and a two-class toy task, as collect writes them."""
    trec = (pd.DataFrame(trec_sample["train"]), pd.DataFrame(trec_sample["validation"]))
    tasks = [
        (Task("trec", sorted(set(trec[0]["label"]))), *trec),
        (Task("toy", ["no", "yes"]), toy(64), toy(24)),
    ]
    for task, train, validation in tasks:
        splits = {"train": train, "validation": validation}
        write_task(task, splits, [], tmp_path / "tasks" / task.name)
    return [read_task(tmp_path / "tasks" / task.name) for task, _, _ in tasks]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def shared_base(model: torch.nn.Module) -> torch.nn.Module:
    """The module a task's PeftModel wraps: an encoder head's encoder, or the seq2seq model."""
    base = model.get_base_model()
    return base if base.config.is_encoder_decoder else getattr(base, base.base_model_prefix)


@pytest.fixture(params=["encoder", "seq2seq"])
def base_dir(request: pytest.FixtureRequest, tiny_model_dir: Path, tiny_t5_dir: Path) -> Path:
    return {"encoder": tiny_model_dir, "seq2seq": tiny_t5_dir}[request.param]


# a prompt steers what a body already knows: the tiny random BERT has nothing to steer (its
# prompt-tuned loss stays at chance), so the encoder case prompts the embedded MiniLM
@pytest.fixture(params=[pytest.param("pretrained", marks=pytest.mark.slow), "seq2seq"])
def prompted_dir(request: pytest.FixtureRequest, tiny_t5_dir: Path) -> Path:
    if request.param == "seq2seq":
        return tiny_t5_dir
    return Path(resolve_model_name(EMBEDDED_MODEL))


def test_multitask_prompt_tuning_trains_a_prompt_per_task_on_one_frozen_base(
    tmp_path: Path, prompted_dir: Path, trec_sample: dict
) -> None:
    base_dir = prompted_dir
    tasks = two_tasks(tmp_path, trec_sample)
    out = tmp_path / "multitask"
    params = MultitaskParams(**(TINY_MULTITASK | PROMPT_MULTITASK))
    metrics = multitask(base_dir, tasks, params, 32, out, tmp_path / "reports")

    # the base is saved as it came: every weight equal to the input model's
    saved, original = weights(out), weights(base_dir)
    common = set(saved) & set(original)
    assert len(common) >= 0.9 * len(original)
    assert all(torch.equal(saved[k], original[k]) for k in common)
    # one prompt per task, each trained, in prompts/<task>/
    prompts = {
        t.name: load_file(out / "prompts" / t.name / "adapter_model.safetensors")[
            "prompt_embeddings"
        ]
        for t in tasks
    }
    assert prompts["trec"].shape == prompts["toy"].shape == (4, saved_width(out))
    assert not torch.equal(prompts["trec"], prompts["toy"])
    assert metrics["method"] == "prompt_tuning" and 0 < metrics["trainable_share"] < 0.5
    toy_loss = live_curve(tmp_path / "reports", "multitask", "task_loss/toy")["toy"].to_numpy()
    assert toy_loss[-1] < toy_loss[0]

    # one loaded base serves both tasks: each task's adapter reproduces its validation scores
    served = load_task_adapters([out])
    assert sorted(served.tasks) == ["toy", "trec"]
    bases = {id(shared_base(served.model.adapter(t))) for t in served.tasks}
    assert len(bases) == 1
    for task in tasks:
        rows = task.split("validation")
        scores = served.scores(task.name, rows["text"].tolist(), batch_size=16)
        labels = np.array([task.labels.index(y) for y in rows["label"]])
        accuracy = task_metrics(task.problem, labels, scores)["accuracy"]
        assert accuracy == pytest.approx(metrics["validation"][task.name]["accuracy"], abs=1e-6)
        predicted = served.predict(task.name, rows["text"].tolist())
        assert predicted == [task.labels[i] for i in scores.argmax(-1)]
    # load_trained gives the same TaskAdapters on the multitask directory
    assert sorted(load_trained(out).model.tasks) == ["toy", "trec"]


def saved_width(model_dir: Path) -> int:
    config = json.loads((model_dir / "config.json").read_text())
    return config.get("hidden_size") or config["d_model"]


def test_finetune_starts_the_targets_prompt_from_its_multitask_prompt(
    tmp_path: Path,
    tiny_t5_dir: Path,
    trec_sample: dict,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = two_tasks(tmp_path, trec_sample)
    out = tmp_path / "multitask"
    params = MultitaskParams(**(TINY_MULTITASK | PROMPT_MULTITASK | {"max_steps": 10}))
    multitask(tiny_t5_dir, tasks, params, 32, out, tmp_path / "reports")
    multitask_prompt = load_file(out / "prompts" / "toy" / "adapter_model.safetensors")

    started = {}
    original = method_module.resume_adapter

    def resume(model: torch.nn.Module, adapter_dir: Path) -> torch.nn.Module:
        resumed = original(model, adapter_dir)
        started["prompt"] = resumed.prompt_encoder["default"].embedding.weight.detach().clone()
        return resumed

    monkeypatch.setattr(method_module, "resume_adapter", resume)
    toy_task, rows = tasks[1], toy(32)
    fit = finetune_params(
        method="prompt_tuning",
        init_head_from_multitask=True,
        optimizer="adafactor",
        learning_rate=0.3,
        num_train_epochs=2,
    )
    metrics = finetune(str(out), toy_task, rows, rows, fit, 32, tmp_path / "ft", tmp_path / "r")
    assert metrics["prompt_from_multitask"] is True
    assert torch.equal(started["prompt"], multitask_prompt["prompt_embeddings"])
    trained = load_file(tmp_path / "ft" / "adapter_model.safetensors")["prompt_embeddings"]
    assert not torch.equal(trained, started["prompt"])  # and it trained on from there

    # a prompt of another length cannot be continued: it starts afresh, and says why
    with caplog.at_level(logging.WARNING):
        longer = fit.model_copy(update={"num_virtual_tokens": 6})
        again = finetune(
            str(out), toy_task, rows, rows, longer, 32, tmp_path / "ft2", tmp_path / "r2"
        )
    assert again["prompt_from_multitask"] is False
    assert "has 4 virtual tokens, finetune.num_virtual_tokens is 6" in caplog.text


@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_adapters_trained_apart_are_served_from_one_loaded_base(
    tmp_path: Path, base_dir: Path, trec_sample: dict, method: str
) -> None:
    tasks = two_tasks(tmp_path, trec_sample)
    extra = {"optimizer": "adafactor", "learning_rate": 0.3 if method == "prompt_tuning" else 1e-2}
    dirs = []
    for task in tasks:
        train, validation = task.split("train"), task.split("validation")
        fit = finetune_params(method=method, num_train_epochs=2, **extra)
        model_dir = tmp_path / task.name
        finetune(str(base_dir), task, train, validation, fit, 32, model_dir, tmp_path / "r")
        dirs.append(model_dir)

    served = load_task_adapters(dirs)
    bases = {id(shared_base(served.model.adapter(t))) for t in served.tasks}
    assert len(bases) == 1
    base = shared_base(served.model.adapter(tasks[0].name))
    if not base.config.is_encoder_decoder:  # the shared encoder's last layer runs at [CLS] only
        assert last_layer(base).query_positions == FIRST
    # alternating between the tasks, each gives exactly what its own model gives alone
    for task, model_dir in [*zip(tasks, dirs, strict=True), *zip(tasks, dirs, strict=True)]:
        alone = load_trained(model_dir)
        rows = task.split("validation")
        ds = alone.encoder().labelled(rows, task, "validation")
        expected = predict_scores(alone.model, ds, 16, alone.collator(), alone.scorer())
        got = served.scores(task.name, rows["text"].tolist(), batch_size=16)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_serving_refuses_adapters_of_other_bases_and_full_models(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    tasks = two_tasks(tmp_path, trec_sample)
    toy_task, rows = tasks[1], toy(16)
    lora = finetune_params(method="lora", num_train_epochs=1)
    finetune(str(tiny_model_dir), toy_task, rows, rows, lora, 32, tmp_path / "a", tmp_path / "r")
    full = finetune_params(num_train_epochs=1)
    finetune(str(tiny_model_dir), toy_task, rows, rows, full, 32, tmp_path / "full", tmp_path / "r")
    # trec's adapter on another BERT of the same shape (freshly initialised): another base
    texts = [r["text"] for r in trec_sample["train"]]
    other = build_tiny_bert(tmp_path / "other", texts)
    trec = tasks[0]
    finetune(str(other), trec, trec.split("train"), trec.split("validation"), lora,
             32, tmp_path / "b", tmp_path / "r")  # fmt: skip

    with pytest.raises(ValueError, match=r"not all trained on one base"):
        load_task_adapters([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match=r"method full.*has no adapter to switch to"):
        load_task_adapters([tmp_path / "a", tmp_path / "full"])
    with pytest.raises(ValueError, match=r"two adapters for task\(s\) \['toy'\]"):
        load_task_adapters([tmp_path / "a", tmp_path / "a"])
    served = load_task_adapters([tmp_path / "a"])
    with pytest.raises(KeyError, match=r"no adapter for task 'trec'; loaded: \['toy'\]"):
        served.predict("trec", ["what is it ?"])


def test_multitask_prompts_must_fit_the_positions(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    tasks = two_tasks(tmp_path, trec_sample)
    params = MultitaskParams(**(TINY_MULTITASK | PROMPT_MULTITASK | {"num_virtual_tokens": 100}))
    with pytest.raises(ValueError, match=r"\(32\) \+ multitask.num_virtual_tokens \(100\)"):
        multitask(tiny_model_dir, tasks, params, 32, tmp_path / "out", tmp_path / "reports")
