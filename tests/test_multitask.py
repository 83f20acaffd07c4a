from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from bertfit.data.encoding import Preprocessing
from bertfit.data.tasks import Task, read_task, write_task
from bertfit.inference import predict_scores
from bertfit.metrics import task_metrics
from bertfit.models.family import load_trained
from bertfit.models.heads import HEADS_DIR, MultiTaskModel, load_classifier, load_task_head
from bertfit.params import MultitaskParams, parse_section
from bertfit.training.multitask import multitask
from bertfit.training.sampling import TaskBatchSampler, task_probabilities
from tests.conftest import TINY_MULTITASK, live_curve, read_json

SIZES = [1200, 300, 60]


def frequencies(schedule: np.ndarray) -> np.ndarray:
    return np.bincount(schedule, minlength=len(SIZES)) / len(schedule)


@pytest.mark.parametrize(
    ("scheme", "temperature", "expected"),
    [
        ("proportional", 2.0, np.array(SIZES) / sum(SIZES)),
        ("uniform", 2.0, np.full(3, 1 / 3)),
        ("temperature", 2.0, np.sqrt(SIZES) / np.sqrt(SIZES).sum()),
        ("temperature", 4.0, np.power(SIZES, 0.25) / np.power(SIZES, 0.25).sum()),
    ],
)
def test_task_frequencies_follow_the_scheme(
    scheme: str, temperature: float, expected: np.ndarray
) -> None:
    assert task_probabilities(SIZES, scheme, temperature) == pytest.approx(expected)
    sampler = TaskBatchSampler(SIZES, 8, 20_000, scheme, temperature, seed=0)
    # 20k draws: a binomial standard error below 0.0036, so 0.015 is over 4 of them
    assert frequencies(sampler.schedule) == pytest.approx(expected, abs=0.015)


def test_annealed_moves_from_proportional_towards_uniform() -> None:
    n, temperature = 30_000, 5.0
    sampler = TaskBatchSampler(SIZES, 8, n, "annealed", temperature, seed=1)
    start = task_probabilities(SIZES, "annealed", temperature, progress=0.0)
    end = task_probabilities(SIZES, "annealed", temperature, progress=1.0)
    assert start == pytest.approx(task_probabilities(SIZES, "proportional", temperature))
    assert end == pytest.approx(task_probabilities(SIZES, "temperature", temperature))
    window = n // 10
    for part, first in (("start", 0), ("end", n - window)):
        steps = np.arange(first, first + window)
        expected = np.mean(
            [task_probabilities(SIZES, "annealed", temperature, s / (n - 1)) for s in steps],
            axis=0,
        )
        observed = frequencies(sampler.schedule[first : first + window])
        assert observed == pytest.approx(expected, abs=0.02), part
    # the smallest task gets far more of the late batches than of the early ones
    assert (
        frequencies(sampler.schedule[-window:])[2] > 3 * frequencies(sampler.schedule[:window])[2]
    )


def test_each_pass_over_a_task_draws_every_example_once() -> None:
    sizes, batch = [50, 23], 8
    sampler = TaskBatchSampler(sizes, batch, 200, "uniform", 1.0, seed=3)
    drawn: dict[int, list[int]] = {0: [], 1: []}
    for indices in sampler:
        task = int(indices[0] >= sizes[0])
        assert all((i >= sizes[0]) == bool(task) for i in indices)  # one task per batch
        assert len(indices) <= batch
        drawn[task] += [i - task * sizes[0] for i in indices]
    for task, size in enumerate(sizes):
        passes = len(drawn[task]) // size
        assert passes >= 2
        for p in range(passes):
            assert sorted(drawn[task][p * size : (p + 1) * size]) == list(range(size))
    assert list(sampler) == list(sampler)  # the same batches each time it is iterated


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"sampling": "round_robin"}, r"multitask.sampling: Input should be 'proportional'"),
        ({"temperature": 0}, r"multitask.temperature: Input should be greater than 0"),
        ({"temperature": -1.5}, r"multitask.temperature: .*got -1.5"),
        ({"tasks": []}, r"multitask.tasks: List should have at least 1 item"),
        ({"tasks": ["trec", "trec"]}, r"tasks must be distinct, repeated: \['trec'\]"),
        ({"method": "lora"}, r"multitask.method: Input should be 'full' or 'prompt_tuning'"),
        (
            {"method": "prompt_tuning", "layer_decay": 0.9},
            r"prompt_tuning freezes every layer.*set layer_decay to 1.0 \(got 0.9\)",
        ),
    ],
)
def test_bad_multitask_params_are_named(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_section({"multitask": TINY_MULTITASK | override}, "multitask")


def trec_tasks(tmp_path: Path, trec_sample: dict, trec_metric: str = "accuracy") -> list[Task]:
    """Two real tasks from the TREC rows, as collect writes them: the question class (judged by
    `trec_metric`), and the word count (regression)."""
    train = pd.DataFrame(trec_sample["train"])
    validation = pd.DataFrame(trec_sample["validation"])

    def words(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(label=df["text"].str.split().str.len().astype(float))

    tasks = [
        (Task("trec", sorted(set(train["label"])), metric=trec_metric), train, validation),
        (Task("qlen", [], problem="regression", metric="pearson"), words(train), words(validation)),
    ]
    for task, t, v in tasks:
        write_task(task, {"train": t, "validation": v}, [], tmp_path / "tasks" / task.name)
    return [read_task(tmp_path / "tasks" / task.name) for task, _, _ in tasks]


def run(tmp_path: Path, model_dir: Path, tasks: list[Task], **overrides: object) -> dict:
    params = MultitaskParams(**(TINY_MULTITASK | {"tasks": ["trec", "qlen"]} | overrides))
    return multitask(model_dir, tasks, params, 32, tmp_path / "out", tmp_path / "reports")


def test_multitask_trains_shared_encoder_and_heads_and_keeps_the_best(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    tasks = trec_tasks(tmp_path, trec_sample, trec_metric="mcc")
    metrics = run(tmp_path, tiny_model_dir, tasks, max_steps=40, eval_steps=10)

    reports = tmp_path / "reports"
    # DVCLive: per validation the mean and every task's scores, a curve each
    mean = live_curve(reports, "multitask", "validation_mean_main")
    trec_mcc = live_curve(reports, "multitask", "validation/trec/mcc")
    qlen_pearson = live_curve(reports, "multitask", "validation/qlen/pearson")
    assert mean["step"].tolist() == trec_mcc["step"].tolist() == [10, 20, 30, 40]
    # selection reads each task's own metric: MCC for trec here, Pearson for qlen
    means = (trec_mcc["mcc"] + qlen_pearson["pearson"]) / 2
    assert mean["validation_mean_main"].tolist() == pytest.approx(means.tolist())
    assert metrics["selected_on"] == {"trec": "mcc", "qlen": "pearson"}
    best = mean["validation_mean_main"].idxmax()
    assert metrics["best_step"] == mean["step"][best]
    assert metrics["validation"]["trec"]["mcc"] == trec_mcc["mcc"][best]
    assert sum(metrics["task_batches"].values()) == 40 and min(metrics["task_batches"].values())
    run_record = read_json(reports / "run.json")
    assert run_record["selected_on"] == metrics["selected_on"] and run_record["sampling"]
    assert read_json(reports / "metrics.json") == {
        "validation_mean_main": metrics["validation_mean_main"]
    }

    # each task's training loss, on the logging steps where it had batches
    trec_loss = live_curve(reports, "multitask", "task_loss/trec")
    qlen_loss = live_curve(reports, "multitask", "task_loss/qlen")
    assert len(trec_loss) and qlen_loss["qlen"].iloc[-1] < qlen_loss["qlen"].iloc[0]
    assert set(trec_loss["step"]) <= set(live_curve(reports, "multitask", "loss")["step"])

    # the saved encoder and heads are the best step's: they reproduce its validation scores
    out = tmp_path / "out"
    encoder = AutoModel.from_pretrained(out)
    base = AutoModel.from_pretrained(tiny_model_dir)
    assert not torch.equal(encoder.embeddings.word_embeddings.weight,
                           base.embeddings.word_embeddings.weight)  # fmt: skip
    trained = load_trained(out)
    assert isinstance(trained.model, MultiTaskModel) and trained.manifest.head == "multitask"
    encode = trained.family.encoder(trained.tokenizer, Preprocessing(32, "head_tail", 8))
    collator = trained.family.collator(trained.tokenizer, Preprocessing(32, "head_tail", 8))
    for task in tasks:
        ds = encode.labelled(task.split("validation"), task, "validation")
        head = trained.model.heads[task.name]
        logits = predict_scores(head, ds, 32, collator, trained.family.score)
        scores = task_metrics(task.problem, np.asarray(ds["labels"]), logits)
        for key, value in metrics["validation"][task.name].items():
            if key != "loss":
                assert scores[key] == pytest.approx(value, abs=1e-5), (task.name, key)


def test_finetune_head_starts_from_the_multitask_head_when_labels_match(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    tasks = trec_tasks(tmp_path, trec_sample)
    run(tmp_path, tiny_model_dir, tasks, max_steps=6, eval_steps=6)
    out = tmp_path / "out"
    saved = load_file(out / HEADS_DIR / "trec.safetensors")
    assert set(saved) == {"classifier.weight", "classifier.bias"}

    trec = tasks[0]
    model = load_classifier(str(out), trec.labels)
    assert not torch.equal(model.classifier.weight, saved["classifier.weight"])  # fresh
    assert load_task_head(model, out, trec)
    assert torch.equal(model.classifier.weight, saved["classifier.weight"])

    fewer = Task("trec", trec.labels[:-1])  # a different label set: fresh head
    assert not load_task_head(load_classifier(str(out), fewer.labels), out, fewer)
    assert not load_task_head(model, out, Task("mr", trec.labels))


def test_disabled_multitask_passes_the_encoder_through(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    metrics = run(tmp_path, tiny_model_dir, [], enabled=False)
    assert metrics == {"enabled": False}
    out = tmp_path / "out"
    assert (out / "model.safetensors").read_bytes() == (
        tiny_model_dir / "model.safetensors"
    ).read_bytes()
    assert not (out / HEADS_DIR).exists()


def test_task_without_train_rows_is_an_error(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    tasks = trec_tasks(tmp_path, trec_sample)
    empty = tasks[1].split("train").iloc[:0]
    empty.to_parquet(tmp_path / "tasks" / "qlen" / "train.parquet")
    with pytest.raises(ValueError, match=r"multitask.tasks: qlen has no train rows"):
        run(tmp_path, tiny_model_dir, tasks)
