"""finetune's own loop for the contrastive method (models.methods.contrastive): SetFit's recipe.

1. Pairs (`sample_pairs`): two rows of one class (target cosine 1) and two rows of different
   classes (0), `contrastive_iterations` x rows pairs of each kind (SetFit's num_iterations
   count), at most `contrastive_max_pairs` in all (the budget that keeps a run short on a CPU);
   within a kind, SetFit 1.2's unique pairs, each once before any twice; shuffled with the seed.
2. The pair loss (`train_pairs`): sentence-transformers' CosineSimilarityLoss, the squared error
   between the two rows' cosine and the target, on the classifier's sentence embedding; AdamW,
   10 % warm-up then linear decay (SetFit's body training); both sides of a step go through the
   encoder as one dynamically padded batch, at the input length training.budget chose.
3. The head (`fit_head`): scikit-learn's LogisticRegression (SetFit's default head) on the tuned
   embeddings of the train rows, its coefficients copied into the classifier's Linear: the
   saved directory holds torch weights only, never a pickled estimator.

The loop is written here on bertfit's own model rather than through setfit's or
sentence-transformers' trainers: those train a SentenceTransformer and save its head with joblib,
while here the model is the pooled classifier that predict, evaluate, serve and export load.
There is no model selection: the validation split is scored once, for the record and the
calibration temperature.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup, set_seed

from bertfit import terminal
from bertfit.data.tasks import Task
from bertfit.hardware import use_bf16
from bertfit.inference import NOT_INPUTS, predict_scores
from bertfit.model_card import model_card
from bertfit.models.adapters import trainable_report
from bertfit.models.family import family_for
from bertfit.models.loading import check_max_seq_length, load_tokenizer, resolve_model_name
from bertfit.models.manifest import recipe_of
from bertfit.models.methods import METHODS
from bertfit.params import FinetuneParams
from bertfit.phases import headline, phase
from bertfit.reporting import check_writable, json_values
from bertfit.training import trainer as core
from bertfit.training.budget import input_length
from bertfit.training.finetune import (
    METRIC_KEYS,
    finetune_headline,
    finetune_manifest,
    head_spec,
    labelled_sets,
    preprocessing,
    recipe_entry,
    save,
    validation_calibration,
    validation_selection,
)
from bertfit.training.live import LIVE_DIR, TRAINING_KEYS, empty_log

log = logging.getLogger(__name__)

WARMUP_RATIO = 0.1  # SetFit's (sentence-transformers' fit): 10 % of the steps
MAX_GRAD_NORM = 1.0  # SetFit's body trains through transformers' Trainer, which clips at 1.0


def sample_pairs(
    labels: np.ndarray, iterations: int, max_pairs: int | None, seed: int
) -> np.ndarray:
    """[pairs, 3] rows (left index, right index, target 1 same class / 0 another class).

    `iterations` x rows pairs of each kind (SetFit's num_iterations count), at most `max_pairs`
    in all, half of each kind. Within a kind the pairs are SetFit 1.2's unique pairs, drawn
    without replacement: every unique pair once before any pair twice, in fresh shuffled passes
    when the count exceeds them (SetFit's oversampling cycles the rarer kind the same way).
    Drawing partners at random instead repeats some pairs and misses others: with trec's 6
    classes at 8 rows each, 36 to 39 % of the 960 other-class pairs were never drawn (seeds 0-4).

    A same-class pair is two different rows of the class: a self-pair embeds the same text
    twice and says nothing about the class. A class of one row has only its self-pair, kept so
    that every class is on both sides of the loss (the two passes still differ by dropout,
    SimCSE's positive)."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError(
            f"contrastive fine-tuning needs train rows of at least two classes, got {classes}"
        )
    total = 2 * iterations * len(labels)
    if max_pairs is not None:
        total = min(total, max_pairs)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == c) for c in classes]
    same = NumberedPairs([(rows, None) for rows in members]).draw(rng, total - total // 2)
    other = NumberedPairs(
        [(members[a], members[b]) for a, b in itertools.combinations(range(len(members)), 2)]
    ).draw(rng, total // 2)
    pairs = np.concatenate(
        [
            np.column_stack([same, np.ones(len(same), np.int64)]),
            np.column_stack([other, np.zeros(len(other), np.int64)]),
        ]
    )
    return pairs[rng.permutation(len(pairs))]


def triangle(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The k-th pair (i < j) of 0, 1, 2, ... ordered by j: (0,1), (0,2), (1,2), (0,3), ..."""
    j = np.floor((1 + np.sqrt(1 + 8 * k.astype(np.float64))) / 2).astype(np.int64)
    j -= j * (j - 1) // 2 > k  # the square root's rounding, either way
    j += (j + 1) * j // 2 <= k
    return k - j * (j - 1) // 2, j


class NumberedPairs:
    """The unique pairs of some blocks, numbered block by block rather than listed, so a large
    train set (which only the pair budget limits) costs the pairs drawn, not all of them. A
    block (left, right) pairs each row of `left` with each of `right`; (rows, None) pairs two
    different rows of `rows` (a block of one row: its self-pair)."""

    def __init__(self, blocks: list[tuple[np.ndarray, np.ndarray | None]]) -> None:
        self.blocks = blocks
        sizes = [
            len(left) * len(right) if right is not None else max(1, math.comb(len(left), 2))
            for left, right in blocks
        ]
        self.starts = np.cumsum([0, *sizes])
        self.size = int(self.starts[-1])

    def draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` [left, right] pairs: whole shuffled passes over the pairs, then a sample
        without replacement."""
        passes, rest = divmod(count, self.size)
        numbers = [rng.permutation(self.size) for _ in range(passes)]
        numbers.append(rng.choice(self.size, size=rest, replace=False))
        return self.pairs(np.concatenate(numbers))

    def pairs(self, numbers: np.ndarray) -> np.ndarray:
        out = np.empty((len(numbers), 2), np.int64)
        block = np.searchsorted(self.starts, numbers, side="right") - 1
        for n, (left, right) in enumerate(self.blocks):
            at = block == n
            k = numbers[at] - self.starts[n]
            if right is not None:
                i, j = np.divmod(k, len(right))
                out[at, 0], out[at, 1] = left[i], right[j]
            elif len(left) == 1:
                out[at] = left[0]
            else:
                i, j = triangle(k)
                out[at, 0], out[at, 1] = left[i], left[j]
        return out


def embed_batch(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sentence embeddings of a collated batch (its non-input columns left out)."""
    return model.features(**{k: v for k, v in batch.items() if k not in NOT_INPUTS})


def train_pairs(
    model: nn.Module,
    train_ds: Any,
    pairs: np.ndarray,
    collator: Any,
    params: FinetuneParams,
    bf16: bool,
) -> list[dict[str, float]]:
    """The pair loss on the encoder (step 2 of the module docstring); the loss every step."""
    device = next(model.parameters()).device
    encoder = model.encoder
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=params.contrastive_learning_rate)
    steps = math.ceil(len(pairs) / params.contrastive_batch_size)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(WARMUP_RATIO * steps), steps)
    rows = [{k: v for k, v in r.items() if k not in NOT_INPUTS} for r in train_ds]
    model.train()
    curve = []
    bar = tqdm(range(steps), desc="contrastive pairs", disable=not terminal.progress_bars())
    for step in bar:
        chunk = pairs[
            step * params.contrastive_batch_size : (step + 1) * params.contrastive_batch_size
        ]
        batch = collator([rows[i] for i in chunk[:, 0]] + [rows[j] for j in chunk[:, 1]])
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            embeddings = embed_batch(model, batch).float()
        left, right = embeddings.split(len(chunk))
        target = torch.as_tensor(chunk[:, 2], dtype=torch.float32, device=device)
        loss = nn.functional.mse_loss(nn.functional.cosine_similarity(left, right), target)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(encoder.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        curve.append(
            {
                "step": step + 1,
                "loss": loss.item(),
                "grad_norm": grad_norm.item(),
                "learning_rate": schedule.get_last_lr()[0],
            }
        )
        if (step + 1) % params.logging_steps == 0 or step + 1 == steps:
            log.info("contrastive step %d/%d: loss %.4f", step + 1, steps, loss.item())
    return curve


def fit_head(
    model: nn.Module, train_ds: Any, collator: Any, params: FinetuneParams, bf16: bool
) -> None:
    """Logistic regression on the train rows' tuned embeddings, copied into the classifier."""
    features = predict_scores(
        model, train_ds, params.per_device_eval_batch_size, collator, embed_batch, bf16
    )
    labels = np.asarray(train_ds["labels"])
    num_labels = model.classifier.out_features
    missing = sorted(set(range(num_labels)) - set(labels.tolist()))
    if missing:
        names = [model.config.id2label[i] for i in missing]
        raise ValueError(
            f"contrastive fine-tuning fits its head on the train rows, which have no row of the "
            f"classes {names}: every class needs at least one labelled train row"
        )
    head = LogisticRegression(max_iter=1000, random_state=params.seed).fit(features, labels)
    coef = torch.as_tensor(head.coef_, dtype=model.classifier.weight.dtype)
    intercept = torch.as_tensor(head.intercept_, dtype=model.classifier.bias.dtype)
    with torch.no_grad():
        if num_labels == 2:  # one logit z for class 1: logits (0, z) give the same softmax
            model.classifier.weight.zero_()
            model.classifier.bias.zero_()
            model.classifier.weight[1] = coef[0]
            model.classifier.bias[1] = intercept[0]
        else:
            model.classifier.weight.copy_(coef)
            model.classifier.bias.copy_(intercept)


def contrastive_metrics(
    params: FinetuneParams,
    selection: Any,
    trainable: dict[str, Any],
    curve: list[dict[str, float]],
    examples: int,
    inputs: Any,
    runtime: float,
) -> dict[str, Any]:
    """finetune's record, with the keys the Trainer path writes (one validation, at the end)."""
    steps = len(curve)
    best = selection.best
    return {
        "validation": {k: v for k, v in best.items() if k not in ("step", "epoch")},
        "best_epoch": 1.0,
        "best_step": steps,
        "selected_on": selection.key,
        "peak_step": steps,
        "peak_value": best[selection.key],
        "selection_margin": 0.0,
        "head_from_multitask": False,
        "prompt_from_multitask": False,
        "method": params.method,
        **trainable,
        "train_examples": examples,
        "train_steps": steps,
        "train_epochs": 1.0,
        "planned_epochs": 1.0,
        "stopped_early": False,
        "learning_rate": params.contrastive_learning_rate,
        "final_pair_loss": curve[-1]["loss"] if curve else None,
        "max_seq_length": inputs.max_seq_length,
        "head_tokens": inputs.head_tokens,
        "train_share_over_model_max_seq_length": round(inputs.share_over_configured, 4),
        "train_share_truncated": round(inputs.share_truncated, 4),
        "world_size": 1,
        "train_runtime_s": runtime,
        "train_examples_per_s": examples / runtime if runtime else 0.0,
    }


def finetune_contrastive(
    model_name: str,
    task: Task,
    train_df: pd.DataFrame,
    validation_df: pd.DataFrame,
    params: FinetuneParams,
    max_seq_length: int,
    output_dir: Path,
    report_dir: Path,
) -> dict[str, Any]:
    """training.finetune's stage body for the contrastive method: pairs, head, the validation
    score and calibration, the directory and the reports as the Trainer path writes them."""
    check_writable(output_dir.parent, report_dir)
    set_seed(params.seed)
    family = family_for(model_name)
    head = METHODS[params.method].head(family, task, head_spec(params))
    tokenizer = load_tokenizer(model_name)
    model = family.classifier(model_name, task, head)
    check_max_seq_length(model.config, max_seq_length, model_name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    bf16 = use_bf16(params.mixed_precision)
    with phase("tokenising"):
        inputs = input_length(params, tokenizer, train_df, max_seq_length, model.config, task.name)
        prep = preprocessing(params, inputs.max_seq_length, inputs.head_tokens)
        config, train_ds, validation = labelled_sets(
            family,
            family.encoder(tokenizer, prep),
            tokenizer,
            task,
            train_df,
            validation_df,
            params,
        )
    collator = family.collator(tokenizer, prep)
    pairs = sample_pairs(
        np.asarray(train_ds["labels"]),
        params.contrastive_iterations,
        params.contrastive_max_pairs,
        params.seed,
    )
    log.info(
        contrastive_plan(
            model_name, task, params, len(train_ds), len(validation.dataset), pairs, inputs
        )
    )
    started = time.perf_counter()
    curve = train_pairs(model, train_ds, pairs, collator, params, bf16)
    with phase("fitting the head"):
        fit_head(model, train_ds, collator, params, bf16)
    runtime = time.perf_counter() - started
    selection = validation_selection(family, tokenizer, config, validation, collator, params)
    selection.record(model, {"step": len(curve), "epoch": 1.0} | selection.scores(model, bf16))
    model.cpu()
    trained = trainable_report(model, None)
    metrics = contrastive_metrics(params, selection, trained, curve, len(train_ds), inputs, runtime)
    metrics["train_pairs"] = len(pairs)
    metrics["validation_examples"] = len(validation.dataset)
    with phase("calibration"):
        metrics["calibration"] = validation_calibration(selection, model, False)
    tokenizer.model_max_length = inputs.max_seq_length
    manifest = contrastive_manifest(model_name, task, params, family, prep, head, config, inputs)
    manifest = replace(manifest, temperature=metrics["calibration"]["temperature"])
    card = model_card(manifest, task, json_values(metrics))
    with phase("saving"):
        core.write_model_dir(
            output_dir,
            lambda staged: save(model, family, tokenizer, manifest, Path(), staged, card),
        )
    empty_log(report_dir / LIVE_DIR, "finetune", TRAINING_KEYS)
    core.write_reports(report_dir, metrics, (f"validation.{selection.key}", *METRIC_KEYS), params)
    headline(finetune_headline(task, selection, metrics))
    return metrics


def contrastive_manifest(
    model_name: str,
    task: Task,
    params: FinetuneParams,
    family: Any,
    prep: Any,
    head: Any,
    config: dict[str, Any],
    inputs: Any,
) -> Any:
    """finetune's manifest for the saved directory, its recipe entry saying what the pair loop
    ran (a batch of pairs, AdamW, warm-up then linear decay, no layer-wise decay)."""
    batch = SimpleNamespace(
        per_device_train_batch_size=params.contrastive_batch_size,
        gradient_accumulation_steps=1,
        world_size=1,
    )
    earlier = recipe_of(Path(resolve_model_name(model_name)))
    entry = recipe_entry(model_name, task, params, batch, family, inputs, earlier)
    entry |= {  # what the pair loop ran (the card's sentence), not the Trainer's params
        "optimizer": "adamw",
        "learning_rate": params.contrastive_learning_rate,
        "lr_scheduler_type": "linear",
        "warmup_ratio": WARMUP_RATIO,
        "warmup_steps": None,
        "layer_decay": 1.0,
    }
    manifest = finetune_manifest(family, prep, task, head, config, params.method, None)
    return replace(manifest, recipe=[*earlier, entry])


def contrastive_plan(
    model_name: str,
    task: Task,
    params: FinetuneParams,
    examples: int,
    validation_examples: int,
    pairs: np.ndarray,
    inputs: Any,
) -> str:
    """The training-plan log line of a contrastive run."""
    steps = math.ceil(len(pairs) / params.contrastive_batch_size)
    budget = params.contrastive_max_pairs
    return (
        f"finetune {model_name} on {task.name}, method contrastive: {examples} train / "
        f"{validation_examples} validation examples; {len(pairs)} pairs "
        f"(every unique pair once before any twice, {params.contrastive_iterations} of each "
        "kind per row"
        + (f", at most {budget}" if budget is not None else "")
        + f"), {steps} steps of {params.contrastive_batch_size} pairs at learning rate "
        f"{params.contrastive_learning_rate:g}; a logistic head on the sentence embedding; "
        f"inputs of at most {inputs.max_seq_length} tokens, dynamic padding"
    )
