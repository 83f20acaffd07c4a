"""The contrastive method (models.methods.contrastive, training.contrastive) and the few-labels
switch (training.budget.tuning_method): it trains on a few real rows, saves torch weights only,
loads and predicts like any finetune directory, and refuses what it cannot use."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from bertfit.data.tasks import Task
from bertfit.models.family import EncoderFamily, family_for, load_trained
from bertfit.models.methods import METHODS
from bertfit.models.pooling import HeadSpec
from bertfit.params import FinetuneParams
from bertfit.predict import predict_frame
from bertfit.training.budget import tuning_method
from bertfit.training.contrastive import sample_pairs, triangle
from bertfit.training.finetune import finetune
from tests.conftest import TINY_FINETUNE
from tests.test_stages import write_params

FEW_LABELS = {"few_labels_method": "contrastive", "few_labels_per_class": 64}


def trec_rows(trec_sample: dict, n: int) -> pd.DataFrame:
    return pd.DataFrame(trec_sample["train"][:n])[["text", "label"]]


def test_contrastive_trains_saves_without_pickles_and_predicts(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    rows = trec_rows(trec_sample, 24)
    task = Task("trec", sorted(rows["label"].unique()))
    params = FinetuneParams(**(TINY_FINETUNE | {"method": "contrastive"}))
    metrics = finetune(
        str(tiny_model_dir), task, rows, rows, params, 32, tmp_path / "model", tmp_path / "reports"
    )
    assert metrics["method"] == "contrastive"
    assert metrics["train_pairs"] == 2 * 2 * len(rows)  # 2 rounds, a pair of each kind per row
    assert np.isfinite(metrics["validation"]["accuracy"])
    model_dir = tmp_path / "model"
    assert {p.suffix for p in model_dir.iterdir() if p.is_file()} <= {
        ".json",
        ".safetensors",
        ".md",
        ".txt",
    }
    manifest = json.loads((model_dir / "bertfit_model.json").read_text())
    assert (manifest["head"], manifest["method"]) == ("pooled", "contrastive")
    assert manifest["head_config"]["feature"] == "sentence"
    trained = load_trained(model_dir)
    df = rows.drop(columns="label").head(6)
    out = predict_frame(trained, df, batch_size=4)
    assert list(out.columns) == ["text", "prediction", *[f"prob_{lab}" for lab in task.labels]]
    assert set(out["prediction"]) <= set(task.labels)
    probs = out[[f"prob_{lab}" for lab in task.labels]].to_numpy()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    run = json.loads((tmp_path / "reports" / "run.json").read_text())
    assert run["method"] == "contrastive"
    card = (model_dir / "README.md").read_text()
    assert "tuned on sentence pairs" in card and "method contrastive" in card


def test_the_head_reproduces_the_logistic_regression(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    """The saved head's class choice on the train rows is the fitted estimator's."""
    from sklearn.linear_model import LogisticRegression

    from bertfit.training.contrastive import embed_batch

    rows = trec_rows(trec_sample, 16)
    task = Task("trec", sorted(rows["label"].unique()))
    params = FinetuneParams(**(TINY_FINETUNE | {"method": "contrastive"}))
    finetune(str(tiny_model_dir), task, rows, rows, params, 32, tmp_path / "m", tmp_path / "r")
    trained = load_trained(tmp_path / "m")
    batch = trained.tokenizer(list(rows["text"]), padding=True, return_tensors="pt")
    trained.model.eval()
    features = embed_batch(trained.model, dict(batch)).detach().numpy()
    labels = rows["label"].map(task.labels.index).to_numpy()
    expected = LogisticRegression(max_iter=1000, random_state=params.seed).fit(features, labels)
    logits = trained.model(**batch).logits.detach().numpy()
    assert (logits.argmax(1) == expected.predict(features)).mean() >= 0.9


def test_pairs_follow_the_budget_and_the_classes() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    pairs = sample_pairs(labels, iterations=20, max_pairs=None, seed=0)
    assert len(pairs) == 2 * 20 * len(labels)
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    assert np.array_equal(same, pairs[:, 2] == 1)
    assert (pairs[:, 2] == 1).sum() == (pairs[:, 2] == 0).sum()
    capped = sample_pairs(labels, iterations=20, max_pairs=50, seed=0)
    assert len(capped) == 50
    assert np.array_equal(capped, sample_pairs(labels, iterations=20, max_pairs=50, seed=0))
    assert 10 < (capped[:, 2] == 1).sum() < 40  # both kinds, shuffled together
    with pytest.raises(ValueError, match="at least two classes"):
        sample_pairs(np.zeros(4, dtype=int), 2, None, 0)


def test_a_row_is_never_its_own_same_class_pair_unless_alone() -> None:
    """A self-pair embeds one text twice: no information about its class. Only a class of
    one row (3 here) pairs its row with itself."""
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 3, 0, 1])
    pairs = sample_pairs(labels, iterations=50, max_pairs=None, seed=0)
    same = pairs[pairs[:, 2] == 1]
    selfs = same[same[:, 0] == same[:, 1]]
    assert set(selfs[:, 0].tolist()) == {7}  # the lone row of class 3, in each of its pairs
    assert len(selfs) > 0
    assert np.array_equal(labels[same[:, 0]], labels[same[:, 1]])
    assert (pairs[:, 2] == 0).sum() == len(same) == 500
    partners = {
        i: set(same[same[:, 0] == i, 1].tolist()) | set(same[same[:, 1] == i, 0].tolist())
        for i in (0, 2)
    }
    assert partners == {0: {1, 8}, 2: {3, 4, 9}}  # every other member drawn, the row never


def test_every_unique_pair_is_drawn_before_any_twice() -> None:
    """trec's shape at 8 rows per class: 6 classes, 48 rows. 960 other-class pairs are drawn
    from the 960 unique ones, so each exactly once (random partners missed 36 to 39 %);
    the 168 same-class pairs are cycled, each 5 or 6 times of the 960."""
    labels = np.random.default_rng(3).permutation(np.repeat(np.arange(6), 8))
    pairs = sample_pairs(labels, iterations=20, max_pairs=2000, seed=0)
    assert len(pairs) == 1920

    def counts(kind: int) -> Counter:
        chosen = pairs[pairs[:, 2] == kind, :2]
        return Counter(tuple(sorted(p)) for p in chosen.tolist())

    other = counts(0)
    assert len(other) == 960 and set(other.values()) == {1}
    assert all(labels[i] != labels[j] for i, j in other)
    same = counts(1)
    assert len(same) == 6 * 28 and set(same.values()) == {5, 6}
    assert all(labels[i] == labels[j] and i != j for i, j in same)
    # a budget below the unique pairs: no pair twice
    few = sample_pairs(labels, iterations=20, max_pairs=300, seed=1)
    assert len(set(tuple(sorted(p)) for p in few[:, :2].tolist())) == 300


def test_the_pair_numbering_covers_a_large_class_exactly() -> None:
    """The pairs are numbered, not listed: the k-th pair of a class of m rows for every k is
    each unordered pair of two different rows once."""
    i, j = triangle(np.arange(3000 * 2999 // 2, dtype=np.int64))
    assert (i < j).all() and (i >= 0).all() and j.max() == 2999
    assert len(np.unique(i * 3000 + j)) == 3000 * 2999 // 2


def test_bad_combinations_are_readable_errors(tiny_model_dir: Path, tiny_t5_dir: Path) -> None:
    contrastive = METHODS["contrastive"]
    task = Task("trec", ["a", "b"])
    seq2seq = family_for(str(tiny_t5_dir))
    with pytest.raises(ValueError, match=r"contrastive cannot be used: .* seq2seq model has none"):
        contrastive.head(seq2seq, task, None)
    with pytest.raises(ValueError, match=r"not feature max.*set finetune.feature to cls"):
        contrastive.head(EncoderFamily(), task, HeadSpec("max", 2, None))
    regression = Task("stsb", [], problem="regression")
    with pytest.raises(ValueError, match="regression task"):
        contrastive.head(EncoderFamily(), regression, None)
    assert contrastive.head(EncoderFamily(), task, None).feature == "sentence"


def test_the_few_labels_switch_follows_rows_per_class(tiny_t5_dir: Path) -> None:
    params = FinetuneParams(
        **(TINY_FINETUNE | {"few_labels_method": "contrastive", "few_labels_per_class": 8})
    )
    task = Task("trec", ["a", "b", "c"])
    encoder = EncoderFamily()
    assert tuning_method(params, encoder, task, None, 24)[0] == "contrastive"
    method, why = tuning_method(params, encoder, task, None, 25)
    assert method == "full" and "> few_labels_per_class 8" in why
    method, why = tuning_method(params, family_for(str(tiny_t5_dir)), task, None, 24)
    assert method == "full" and "does not fit" in why
    off = params.model_copy(update={"few_labels_method": None})
    assert tuning_method(off, encoder, task, None, 3)[0] == "full"
    # a multitask head of the target saw the whole train split: the labels are not few
    method, why = tuning_method(params, encoder, task, None, 24, multitask_head=True)
    assert method == "full" and "multitask head for the target" in why


def test_params_validation() -> None:
    with pytest.raises(ValidationError, match="few_labels_method"):
        FinetuneParams(**(TINY_FINETUNE | {"few_labels_method": "setfit"}))
    with pytest.raises(ValidationError, match="contrastive_max_pairs"):
        FinetuneParams(**(TINY_FINETUNE | {"contrastive_max_pairs": 0}))
    with pytest.raises(ValidationError, match="few_labels_per_class"):
        FinetuneParams(**(TINY_FINETUNE | {"few_labels_per_class": 0}))


def test_the_plan_line_names_the_method_and_counts_its_pairs() -> None:
    from types import SimpleNamespace

    from bertfit import plan

    overrides = {"contrastive_iterations": 20, "contrastive_max_pairs": 1000}
    params = FinetuneParams(**(TINY_FINETUNE | overrides))
    inp = SimpleNamespace(max_seq_length=128, head_tokens=32, share_truncated=0.0)
    why = "16 train rows per class <= few_labels_per_class 64"
    line = plan.finetune_plan(params, 32, 8, inp, None, ("contrastive", why)).summary
    assert line.startswith(f"32 examples, method contrastive ({why}): 1,000 sentence pairs")
    assert "= 125 steps of 8, then a logistic head" in line


def planned(tmp_path: Path, model_dir: Path, tasks: dict, costs: object, **finetune: object):
    """bertfit plan's stages for the trec target (240 train rows, 40 a class) with `finetune`
    overrides, estimated from `costs` (None: measured here)."""
    from bertfit import plan

    params_file = write_params(
        tmp_path / "params.yaml",
        str(model_dir),
        tasks,
        "trec",
        pretrain={"corpus": "none"},
        finetune=finetune,
    )
    return plan.make_plan(params_file, costs=costs)


def test_the_plan_estimates_a_contrastive_runs_pairs_head_and_scoring(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict
) -> None:
    """The switch sends trec's 40 rows a class to contrastive: its estimate is its pairs' texts
    (2 a pair, padded to the longest of a step's randomly drawn texts), the head's pass over
    the train rows and the validation's two passes, not the Trainer run of finetune.method."""
    from bertfit import plan
    from bertfit.data.encoding import token_lengths
    from bertfit.models.loading import load_tokenizer

    training = plan.Costs(startup=0.0, load=0.0, train_token=1.0, mlm_step=None, score_token=0.0)
    scoring = plan.Costs(startup=0.0, load=0.0, train_token=0.0, mlm_step=None, score_token=1.0)

    def finetune_seconds(costs: plan.Costs, **finetune: object) -> float:
        made = planned(tmp_path, tiny_model_dir, trec_files, costs, **finetune)
        return made.stages[3].seconds - plan.DVC_SECONDS_PER_STAGE

    pairs = {"contrastive_iterations": 2, "contrastive_batch_size": 4}
    trained = finetune_seconds(training, **FEW_LABELS, **pairs)
    twice = finetune_seconds(training, **FEW_LABELS, **pairs | {"contrastive_iterations": 4})
    assert twice == pytest.approx(2 * trained)  # the work follows the pairs
    wider = finetune_seconds(training, **FEW_LABELS, **pairs | {"contrastive_batch_size": 16})
    assert wider > trained  # 32 random texts a step are padded to a longer longest one

    tokenizer = load_tokenizer(str(tiny_model_dir))
    train = pd.read_json(tmp_path / "train.jsonl", lines=True)
    lengths = np.minimum(token_lengths(tokenizer, train), 32)
    texts = 2 * 2 * 2 * len(train)  # 2 rounds of 2 pairs a row, 2 texts a pair
    assert trained == pytest.approx(texts * plan.expected_longest(lengths, 8))
    assert trained > texts * lengths.mean()
    trainer = finetune_seconds(training)  # the switch off: 30 steps of 16, length-grouped
    assert trainer == pytest.approx(30 * 16 * lengths.mean())

    # scoring: the head's features of every train row, on top of the same two validation
    # passes as the Trainer run's two epochs
    head = finetune_seconds(scoring, **FEW_LABELS, **pairs) - finetune_seconds(scoring)
    assert head == pytest.approx(len(train) * lengths.mean())


def test_the_plan_times_a_step_of_both_texts_of_the_contrastive_batch(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict
) -> None:
    made = planned(
        tmp_path, tiny_model_dir, trec_files, None, **FEW_LABELS, contrastive_batch_size=4
    )
    assert made.costs is not None and made.costs.shapes["finetune step"].startswith("8 x ")
    assert made.stages[3].seconds > 0


def test_the_plans_pair_count_is_the_sampled_one() -> None:
    from types import SimpleNamespace

    from bertfit import plan

    labels = np.array([0, 1, 2] * 7)
    for iterations, max_pairs in ((3, None), (3, 50), (20, 100), (1, 10_000)):
        finetune = SimpleNamespace(
            contrastive_iterations=iterations, contrastive_max_pairs=max_pairs
        )
        drawn = sample_pairs(labels, iterations, max_pairs, seed=0)
        assert plan.contrastive_pairs(finetune, len(labels)) == len(drawn)


def test_the_expected_longest_of_a_random_batch() -> None:
    from bertfit import plan

    lengths = np.array([3, 5, 5, 8, 13, 40])
    assert plan.expected_longest(lengths, 1) == pytest.approx(lengths.mean())
    assert plan.expected_longest(np.full(9, 7), 16) == pytest.approx(7)
    draws = np.random.default_rng(0).choice(lengths, size=(200_000, 4)).max(1)
    assert plan.expected_longest(lengths, 4) == pytest.approx(draws.mean(), rel=0.01)


def test_predict_and_serve_answer_as_the_contrastive_model_does_in_process(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    """A directory finetune trained with the contrastive method: `bertfit predict` and a real
    `bertfit serve` process give each text the label and probabilities of the model itself,
    scored here one unpadded text at a time (softmax of its logits over the saved temperature)."""
    import torch

    from bertfit import predict
    from tests.test_serve import call, serving

    rows = trec_rows(trec_sample, 24)
    task = Task("trec", sorted(rows["label"].unique()))
    params = FinetuneParams(**(TINY_FINETUNE | {"method": "contrastive"}))
    model_dir = tmp_path / "model"
    finetune(str(tiny_model_dir), task, rows, rows, params, 32, model_dir, tmp_path / "reports")
    trained = load_trained(model_dir)
    texts = [r["text"] for r in trec_sample["test"]]
    texts = [t for t in texts if len(trained.tokenizer(t)["input_ids"]) < 32][:7]  # none cut
    trained.model.eval()
    with torch.no_grad():
        logits = torch.cat(
            [trained.model(**trained.tokenizer(t, return_tensors="pt")).logits for t in texts]
        )
    expected = torch.softmax(logits / trained.manifest.temperature, -1).numpy()
    labels = [task.labels[i] for i in expected.argmax(1)]

    pd.DataFrame({"text": texts}).to_csv(tmp_path / "new.csv", index=False)
    predict.main([str(model_dir), str(tmp_path / "new.csv"), "--batch-size", "4",
                  "--mixed-precision", "no"])  # fmt: skip
    out = pd.read_csv(tmp_path / "new.predictions.csv")
    assert out["prediction"].tolist() == labels
    probs = out[[f"prob_{label}" for label in task.labels]].to_numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)

    with serving(model_dir) as url:
        status, meta = call(f"{url}/metadata")
        assert status == 200 and (meta["method"], meta["head"]) == ("contrastive", "pooled")
        assert meta["labels"] == task.labels
        status, answer = call(f"{url}/predict", {"text": texts})
    assert status == 200, answer
    assert [p["label"] for p in answer["predictions"]] == labels
    served = [[p["probabilities"][label] for label in task.labels] for p in answer["predictions"]]
    np.testing.assert_allclose(served, expected, atol=1e-5)
