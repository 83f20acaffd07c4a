"""Further pretraining of the base model on the collected corpus (Sun et al. 2019, 5.4).

The stage body only decides: the objective for the model's family (training.objectives: masked
LM for encoders, T5's span corruption for seq2seq models), its data and held-out scores, then
one call of the training core (training.trainer). Checkpoints go to a persistent directory, so
a killed stage resumes from the last one when run again with the same settings
(training.checkpoints). `corpus: none` passes the base model through unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import TrainerCallback, TrainingArguments, set_seed

from bertfit.models.family import Family, family_for
from bertfit.models.loading import base_model_info, load_tokenizer, resolve_model_name
from bertfit.models.manifest import Manifest, recipe_of
from bertfit.params import PretrainParams
from bertfit.phases import headline, phase
from bertfit.reporting import check_writable
from bertfit.training import trainer as core
from bertfit.training.checkpoints import (
    BatchSeeded,
    clear_checkpoints,
    stage_resume,
)
from bertfit.training.live import LIVE_DIR, TRAINING_KEYS, LiveLog
from bertfit.training.objectives.mlm import MaskedLM
from bertfit.training.objectives.span_corruption import SpanCorruption

log = logging.getLogger(__name__)

CORPUS_FILES = ("train.parquet", "heldout.parquet")
# by name: a model family names its objective (models.family's `objective`)
OBJECTIVES = {objective.name: objective for objective in (MaskedLM, SpanCorruption)}
CURVE_SCORES = ("loss", "accuracy")  # of the held-out scores, those drawn as curves
# metrics.json, what a reviewer compares (`dvc exp show` columns): did further pretraining lower
# the held-out loss; everything else is in run.json
METRIC_KEYS = ("heldout_before.loss", "heldout_after.loss")


def read_corpus(corpus_dir: Path) -> tuple[list[str], list[str]]:
    frames = []
    for name in CORPUS_FILES:
        path = corpus_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run the collect stage first")
        frames.append(pd.read_parquet(path)["text"].tolist())
    return frames[0], frames[1]


def pretrain_arguments(
    params: PretrainParams, checkpoint_dir: Path, objective: MaskedLM | SpanCorruption
) -> TrainingArguments:
    """The stage's TrainingArguments: max_steps, a resumable checkpoint every save_steps."""
    # the last checkpoint only: it is what a killed run resumes from
    checkpoints = {"save_strategy": "steps", "save_steps": params.save_steps, "save_total_limit": 1}
    stage = {"max_steps": params.max_steps, **checkpoints, **objective.trainer_arguments}
    return core.training_arguments(params, checkpoint_dir, **stage)


@dataclass
class PretrainRun:
    """What pretrain's set-up prepared for its run: the objective for the model's family, its
    model (on the GPU when there is one), the corpus's train and held-out blocks, the collator,
    the held-out batches scored before and after training, and the blocks' sizes for the plan
    (mean tokens of a train block, held-out tokens scored)."""

    model_name: str
    params: PretrainParams
    family: Family
    corpus_dir: Path
    objective: MaskedLM | SpanCorruption
    tokenizer: Any
    model: Any
    train_ds: Any
    heldout_ds: Any
    collator: Any
    heldout: list[dict[str, torch.Tensor]]
    tokens_per_block: float
    scored: int


@dataclass
class Pretrained:
    """What pretrain's run did: its trainer, arguments and output, the step it resumed from,
    the held-out scores before, after the head's warm-up (empty without one) and after, and
    its DVCLive log."""

    trainer: Any
    args: TrainingArguments
    output: Any
    resumed_step: int
    before: dict[str, float]
    warmup: dict[str, Any]
    after: dict[str, float]
    live: LiveLog


def pretrain(
    model_name: str,
    corpus_dir: Path,
    params: PretrainParams,
    output_dir: Path,
    report_dir: Path,
    checkpoint_dir: Path,
    base_model: str | None = None,
) -> dict[str, Any]:
    """Further-pretrain model_name on the corpus and save a standard HF directory; return the
    stage's record (metrics.json's and run.json's values, reporting.split_record).

    `base_model`: the `model.name` the run starts from, for the recipe (model_name is the
    directory collect built for a scratch model; by default model_name itself)."""
    check_writable(output_dir.parent, report_dir, checkpoint_dir.parent)
    family = family_for(model_name)
    recipe = recipe_of(Path(resolve_model_name(model_name)))
    entry = {"stage": "pretrain", "base_model": base_model_info(base_model or model_name)}
    manifest = Manifest(family=family.name, head="none", stage="pretrain")
    if params.corpus == "none":
        entry |= {"ran": False, "reason": "pretrain.corpus is none"}
        manifest = replace(manifest, recipe=[*recipe, entry])
        record = ({"corpus": "none"}, METRIC_KEYS, params)
        curves = [*TRAINING_KEYS, *(f"validation/{k}" for k in CURVE_SCORES)]
        why = "pretrain.corpus is none"
        return core.skip_stage(model_name, output_dir, manifest, report_dir, record, curves, why)

    run = prepare_pretrain(model_name, corpus_dir, params, family)
    trained = train_pretrain(run, checkpoint_dir, report_dir)
    if not trained.trainer.is_world_process_zero():
        return {}
    entry |= ran_entry(
        params,
        trained.args,
        run.objective.name,
        len(run.train_ds),
        trained.output,
        trained.before,
        trained.after,
    )
    manifest = replace(manifest, recipe=[*recipe, entry])
    return save_pretrain(run, trained, manifest, output_dir, report_dir, checkpoint_dir)


def prepare_pretrain(
    model_name: str, corpus_dir: Path, params: PretrainParams, family: Family
) -> PretrainRun:
    """The set-up: the family's objective and its model, the corpus tokenised for it."""
    set_seed(params.seed)
    tokenizer = load_tokenizer(model_name)
    objective = OBJECTIVES[family.objective](params, model_name)
    model = objective.load_model()
    train_ds, heldout_ds, collator, heldout = tokenised_corpus(objective, tokenizer, corpus_dir)
    if torch.cuda.is_available():
        model.to("cuda")
    tokens_per_block = float(np.mean([len(x) for x in train_ds["input_ids"]]))
    scored = sum(len(b["input_ids"]) for b in heldout)
    return PretrainRun(
        model_name,
        params,
        family,
        corpus_dir,
        objective,
        tokenizer,
        model,
        train_ds,
        heldout_ds,
        collator,
        heldout,
        tokens_per_block,
        scored,
    )


def train_pretrain(run: PretrainRun, checkpoint_dir: Path, report_dir: Path) -> Pretrained:
    """The run: score the held-out blocks, warm the fresh head up (when asked and not resumed),
    train from the last checkpoint if any, score the held-out blocks again."""
    objective, model, params, heldout = run.objective, run.model, run.params, run.heldout
    with phase("held-out scoring"):
        before = objective.score(model, heldout)
    log.info("held-out %s before: %s", objective.name, scores_text(before))

    objective.for_training(model)
    args = pretrain_arguments(params, checkpoint_dir, objective)
    corpus = [run.corpus_dir / f for f in CORPUS_FILES]
    resume, resumed_step = stage_resume(args, checkpoint_dir, run.model_name, params, corpus)
    blocks = (len(run.train_ds), run.tokens_per_block, run.scored)
    log.info(plan(run.model_name, run.family, objective.name, params, args, blocks))
    warmup: dict[str, Any] = {}
    if skipped := skip_head_warmup(objective, resumed_step):
        if params.head_warmup_steps:
            log.info("no head warm-up: %s", skipped)
    else:
        data = (run.train_ds, run.collator, run.tokenizer)
        warmup = warm_up_head(objective, model, data, heldout, checkpoint_dir)
    first_batch = resumed_step * args.gradient_accumulation_steps
    seeded = BatchSeeded(run.collator, params.seed, args.process_index, first_batch)
    live = LiveLog(report_dir / LIVE_DIR, "pretrain")
    start = warmup["heldout"] if warmup else before  # where the whole model starts from
    curve = HeldoutCurve(lambda m: objective.score(m, heldout), params.eval_steps, live, start)
    trainer = core.stage_trainer(
        params, args, model, run.train_ds, seeded, run.tokenizer, callbacks=[live, curve]
    )
    output = core.fit(trainer, resume)
    objective.after_training(model)
    with phase("held-out scoring"):
        after = curve.final(model, output.global_step)
    log.info("held-out %s after: %s", objective.name, scores_text(after))
    trainer.accelerator.wait_for_everyone()
    return Pretrained(trainer, args, output, resumed_step, before, warmup, after, live)


def save_pretrain(
    run: PretrainRun,
    trained: Pretrained,
    manifest: Manifest,
    output_dir: Path,
    report_dir: Path,
    checkpoint_dir: Path,
) -> dict[str, Any]:
    """The save: the model as a standard HF directory with the tokenizer and `manifest`, the
    checkpoints cleared, the reports written. Returns the stage's record."""
    objective, params, args, output = run.objective, run.params, trained.args, trained.output

    def save(staged: Path) -> None:
        objective.export(run.model).save_pretrained(staged)
        run.tokenizer.save_pretrained(staged)
        manifest.save(staged)

    with phase("saving"):
        core.write_model_dir(output_dir, save)
        clear_checkpoints(checkpoint_dir)
    sizes = {"train": len(run.train_ds), "scored": run.scored, "available": len(run.heldout_ds)}
    scores = (trained.before, trained.warmup, trained.after)
    metrics = run_record(params, args, output, scores, sizes, trained.resumed_step)
    metrics |= speed(args, output, trained.resumed_step, run.tokens_per_block)
    core.write_reports(report_dir, metrics, METRIC_KEYS, params, trained.live)
    before, after = trained.before, trained.after
    headline(
        f"held-out {objective.name} loss {before['loss']:.4g} -> {after['loss']:.4g}, "
        f"accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f} "
        f"after {output.global_step} steps"
    )
    return metrics


def run_record(
    params: PretrainParams,
    args: Any,
    output: Any,
    scores: tuple[dict[str, float], dict[str, Any], dict[str, float]],
    sizes: dict[str, int],
    resumed_step: int,
) -> dict[str, Any]:
    """The stage's record: held-out scores before, after the head's warm-up (if any) and after,
    the corpus's sizes and the run's steps (reporting.split_record splits it)."""
    before, warmup, after = scores
    record = {
        "corpus": params.corpus,
        "heldout_before": before,
        **({"heldout_after_head_warmup": warmup["heldout"]} if warmup else {}),
        "heldout_after": after,
        "train_blocks": sizes["train"],
        "heldout_blocks": {"scored": sizes["scored"], "available": sizes["available"]},
        "world_size": args.world_size,
        "steps": output.global_step,
        "resumed_from_step": resumed_step,
    }
    if warmup:
        record["head_warmup_runtime_s"] = warmup["runtime_s"]
    return record


def scores_text(scores: dict[str, float]) -> str:
    """`loss 7.182, perplexity 1315, accuracy 0.05666 (2259 masked tokens)` for a log line."""
    shown = ", ".join(f"{k} {v:.4g}" for k, v in scores.items() if k != "masked_tokens")
    count = scores.get("masked_tokens")
    return shown + (f" ({count} masked tokens)" if count is not None else "")


def skip_head_warmup(objective: MaskedLM, resumed_step: int) -> str | None:
    """Why this run has no head warm-up (None: it has one): not asked for, no fresh head, or
    a resumed run, whose checkpoint holds the warmed-up head."""
    if not objective.params.head_warmup_steps:
        return "pretrain.head_warmup_steps is 0"
    if not objective.fresh_head:
        return f"the model's {objective.name} head was loaded with it"
    if resumed_step:
        return f"resumed at step {resumed_step}, the warm-up is in the checkpoint"
    return None


def warm_up_head(
    objective: MaskedLM,
    model: Any,
    data: tuple[Any, Any, Any],
    heldout: list[dict[str, torch.Tensor]],
    checkpoint_dir: Path,
) -> dict[str, Any]:
    """Train the fresh masked-LM head alone for pretrain.head_warmup_steps, the encoder frozen.

    A checkpoint without MLM-head weights (the embedded MiniLM) starts with a random transform
    under the decoder tied to the input embeddings; trained together from there, the first
    steps send that random head's gradients into the encoder and, through the tied decoder,
    into every input embedding. Here only the head learns (at head_warmup_learning_rate, the
    stage's schedule); gradients stop at the head, so a step skips the encoder's backward pass
    (measured on 2 CPU cores in bf16: 1.0 s a step against 1.6 s for a whole-model step). Its
    batches draw masks of their own (seed + 1), not those of the main run's first
    batches. `data`: the train blocks, the collator and the tokenizer. Returns the held-out
    scores after it and its run time.
    """
    params = objective.params
    train_ds, collator, tokenizer = data
    trainable = {id(p) for p in objective.head_parameters(model)}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for param in model.parameters():
        param.requires_grad = id(param) in trainable
    args = core.training_arguments(
        params,
        checkpoint_dir / "head-warmup",
        max_steps=params.head_warmup_steps,
        learning_rate=params.head_warmup_learning_rate,
        save_strategy="no",
        **objective.trainer_arguments,
    )
    seeded = BatchSeeded(collator, params.seed + 1, args.process_index, 0)
    log.info(
        "head warm-up: %d steps of the masked-LM head alone (%d weights), the encoder frozen, "
        "learning rate %g",
        params.head_warmup_steps,
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        params.head_warmup_learning_rate,
    )
    trainer = core.stage_trainer(params, args, model, train_ds, seeded, tokenizer)
    try:
        with phase("head warm-up"):
            output = trainer.train()
    finally:
        for name, param in model.named_parameters():
            param.requires_grad = flags[name]
    with phase("held-out scoring"):
        scores = objective.score(model, heldout)
    log.info("held-out %s after the head's warm-up: %s", objective.name, scores_text(scores))
    return {"heldout": scores, "runtime_s": output.metrics["train_runtime"]}


class HeldoutCurve(TrainerCallback):
    """The held-out scores as a curve (DVCLive `pretrain/validation/<score>`): the score the
    whole model starts from at step 0 (after the head's warm-up, if any), every
    pretrain.eval_steps steps, and after the last step.

    Each point also goes into the Trainer's log history, which a checkpoint keeps, so a resumed
    run replays the points before its checkpoint (LiveLog). `final` scores the trained model
    unless the last step was just scored."""

    def __init__(
        self,
        score: Callable[[Any], dict[str, float]],
        every: int | None,
        live: LiveLog,
        start: dict[str, float],
    ) -> None:
        self.score = score
        self.every = every
        self.live = live
        self.start = start
        self.last: tuple[int, dict[str, float]] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if state.global_step == 0:
            self.add(state, 0, self.start)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
        if self.every and state.global_step % self.every == 0:
            with phase("held-out scoring"):
                scores = self.score(model)
            model.train()
            self.add(state, state.global_step, scores)

    def final(self, model: Any, step: int) -> dict[str, float]:
        if self.last is not None and self.last[0] == step:
            return self.last[1]
        scores = self.score(model)
        self.add(None, step, scores)
        return scores

    def add(self, state: Any, step: int, scores: dict[str, float]) -> None:
        logs = {f"eval_{k}": v for k, v in scores.items() if k in CURVE_SCORES}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in scores.items() if k in CURVE_SCORES)
        log.info("held-out at step %d: %s", step, shown)
        if state is not None:
            state.log_history.append(logs | {"step": step})
        if self.live.live is not None:
            self.live.record(step, logs)
        self.last = (step, scores)


def tokenised_corpus(objective: Any, tokenizer: Any, corpus_dir: Path) -> tuple[Any, ...]:
    """The corpus's train and held-out blocks, the objective's collator, and the held-out
    batches scored before and after training (a seeded sample, pretrain.heldout_max_blocks)."""
    train_texts, heldout_texts = read_corpus(corpus_dir)
    with phase("tokenising"):
        train_ds = objective.tokenize(train_texts, tokenizer, "corpus train")
        heldout_ds = objective.tokenize(heldout_texts, tokenizer, "corpus held-out")
        collator = objective.collator(tokenizer)
        heldout = objective.heldout(heldout_ds, collator)
    return train_ds, heldout_ds, collator, heldout


def plan(
    model_name: str,
    family: Family,
    objective: str,
    params: PretrainParams,
    args: Any,
    blocks: tuple[int, float, int],
) -> str:
    """The training summary logged before training: `blocks` (train blocks, their mean tokens,
    held-out tokens scored), the objective's settings."""
    count, tokens_per_block, scored = blocks
    unit = "blocks" if params.packing else "texts"
    data = f"{count} {unit} of {tokens_per_block:.0f} tokens ({scored} held-out)"
    details = family.objective_details(params)
    name = f"pretrain {model_name} ({objective})"
    return core.plan_line(name, args, count, data, **details)


def ran_entry(
    params: PretrainParams,
    args: Any,
    objective: str,
    train_blocks: int,
    output: Any,
    before: dict[str, float],
    after: dict[str, float],
) -> dict[str, Any]:
    """The recipe's record of a pretraining run (bertfit_model.json, the model card)."""
    return {
        "ran": True,
        "objective": objective,
        "corpus": params.corpus,
        "train_blocks": train_blocks,
        "max_seq_length": params.max_seq_length,
        "head_warmup_steps": params.head_warmup_steps,
        "steps": output.global_step,
        "batch_size": core.effective_batch_size(args),
        "learning_rate": params.learning_rate,
        "seed": params.seed,
        "heldout_loss_before": before["loss"],
        "heldout_loss_after": after["loss"],
    }


def speed(args: Any, output: Any, resumed_step: int, tokens_per_block: float) -> dict[str, Any]:
    """The run's time and training tokens per second (the steps this run took, not resumed)."""
    runtime = output.metrics["train_runtime"]
    batch = core.effective_batch_size(args)
    tokens = (output.global_step - resumed_step) * batch * tokens_per_block
    return {"train_runtime_s": runtime, "tokens_per_s": tokens / runtime if runtime else None}
