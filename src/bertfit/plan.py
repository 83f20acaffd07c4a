"""bertfit plan: what `dvc repro` will do with the current params, and how long it will take here.

    bertfit plan                     # the project's params.yaml
    bertfit plan --params other.yaml
    bertfit plan --no-measure        # the plan without the time estimate (no model is loaded)

Reads the target (and every task collect would load) through collect's own readers and checks,
so a file collect would refuse is refused here with the same message; counts tokens with the
base model's tokenizer; applies finetune's data-sized rules (training.budget: epochs, batch,
input length) and each stage's params. Then it measures, on this machine, a few training steps of
the base model at the shapes the run will use (a finetune step, a masked-LM step) and a scoring
pass, and adds up every stage's steps, validation and scoring passes and start-up into an
estimated wall time. Early stopping can end finetune sooner: the estimate is for the full run.
A finetune the few-labels switch sends to contrastive (training.budget.tuning_method) is
estimated from its own loop's work: both texts of every pair, a step's texts padded to the
longest of them, then the head's pass over the train rows and the validation.

Warnings say when a split is too small for its purpose: a test set whose 95 % interval on
accuracy is wider than ±5 points (two runs closer than that cannot be told apart), a validation
set wider than ±10 points (selection picks noise), a class with fewer than 10 train examples.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# a split whose 95 % interval on accuracy (at 50 %, the widest) is wider than this is too small
TEST_HALF_WIDTH = 0.05
VALIDATION_HALF_WIDTH = 0.10
MIN_CLASS_EXAMPLES = 10
# steps timed after WARMUP_STEPS untimed ones (the first steps allocate and pick kernels)
WARMUP_STEPS = 2
TIMED_STEPS = 3
# what a stage costs beyond its own work: DVC's checks and hashing of its outputs before and
# after (measured: docs/performance.md, what bertfit plan's estimate assumes)
DVC_SECONDS_PER_STAGE = 3.0
# a head warm-up step (encoder frozen, no backward below the head) as a share of a whole-model
# masked-LM step (measured: the same section)
HEAD_WARMUP_SHARE = 0.6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """bertfit plan's options, which bertfit add-task takes too."""
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file (default: params.yaml)",
    )
    parser.add_argument(
        "--no-measure",
        action="store_true",
        help="skip the time estimate (it loads the model and times a few training steps: "
        "about half a minute on 2 CPU cores)",
    )


def run(args: argparse.Namespace) -> None:
    from bertfit.cli import configure_logging

    os.environ.setdefault("BERTFIT_LOG_LEVEL", "WARNING")  # the plan is the output
    configure_logging()
    plan = make_plan(args.params, measure=not args.no_measure)
    print(plan.text())


def half_width(n: int, p: float = 0.5) -> float:
    """The 95 % normal-approximation half-width of a proportion measured on n examples."""
    return 1.96 * math.sqrt(p * (1 - p) / max(n, 1))


def duration(seconds: float) -> str:
    """`45 s`, `3.2 min`, `1 h 05 min`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class StagePlan:
    name: str
    summary: str
    seconds: float | None = None  # the estimate, when measured


@dataclass
class Costs:
    """What one process measured on this machine (seconds)."""

    startup: float  # a stage's imports: this process's, up to the measurement
    load: float  # loading the base model
    train_token: float  # one token of a finetune step (forward, backward, optimiser)
    mlm_step: float | None  # one masked-LM (or span-corruption) step at pretrain's batch
    score_token: float  # one token of a scoring pass (forward only)
    shapes: dict[str, str] = field(default_factory=dict)
    bf16: bool = False

    def stage(self) -> float:
        return self.startup + self.load + DVC_SECONDS_PER_STAGE


@dataclass
class Plan:
    params_file: Path
    target: str
    data: list[str]
    stages: list[StagePlan]
    warnings: list[str]
    costs: Costs | None = None

    @property
    def seconds(self) -> float | None:
        known = [s.seconds for s in self.stages]
        return None if any(s is None for s in known) else sum(known)  # type: ignore[misc]

    def estimate_line(self) -> str:
        if self.seconds is None or self.costs is None:
            return "estimated wall time: not measured (--no-measure)"
        parts = ", ".join(f"{s.name} {duration(s.seconds or 0)}" for s in self.stages)
        return f"estimated wall time on this machine: about {duration(self.seconds)} ({parts})"

    def text(self) -> str:
        lines = [f"bertfit plan ({self.params_file}): target {self.target}", ""]
        lines += [f"  {line}" for line in self.data]
        lines += [""]
        width = max(len(s.name) for s in self.stages)
        for stage in self.stages:
            lines.append(f"  {stage.name:<{width}}  {stage.summary}")
        lines += ["", self.estimate_line()]
        if self.costs is not None:
            c = self.costs
            shapes = "; ".join(f"{k} {v}" for k, v in c.shapes.items())
            lines.append(
                f"  measured here ({'bf16' if c.bf16 else 'fp32'}, {os.cpu_count()} CPU cores): "
                f"{shapes}; start-up {c.startup + c.load:.0f} s a stage"
            )
            lines.append(
                "  (early stopping may end finetune sooner; other work on the machine "
                "slows it down)"
            )
        if self.warnings:
            lines += ["", "warnings:"]
            lines += [f"  - {w}" for w in self.warnings]
        lines += ["", "next: make repro"]
        return "\n".join(lines)


# --- reading what collect would read -------------------------------------------------------------


@dataclass
class Inputs:
    """The params and the prepared tasks, as collect would make them."""

    params: dict[str, Any]
    tasks: dict[str, Any]  # name -> TaskSpec
    target: str
    prepared: dict[str, Any]  # name -> PreparedTask
    corpus_names: list[str]
    multitask_tasks: list[str]
    read_seconds: float


def with_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The params mapping with `section.key` values replaced, as `dvc exp run -S` sets them."""
    import copy

    data = copy.deepcopy(data)
    for key, value in overrides.items():
        *sections, last = key.split(".")
        node = data
        for part in sections:
            node = node.setdefault(part, {})
        node[last] = value
    return data


def read_inputs(
    params_file: Path,
    known: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Inputs:
    """`known`: tasks already prepared (bertfit add-task's), by name; `overrides`: dotted params
    set over the file's (an experiment's -S)."""
    from bertfit.data.collect import read_and_prepare
    from bertfit.data.corpus import collected_tasks, corpus_tasks
    from bertfit.data.sources import project_root
    from bertfit.params import parse_section, parse_target, parse_tasks, read_params_file

    source = str(params_file)
    data = with_overrides(read_params_file(params_file), overrides or {})
    tasks = parse_tasks(data, source)
    target = parse_target(data, tasks, source)
    sections = {s: parse_section(data, s, source) for s in SECTIONS}
    multitask_tasks = sections["multitask"].trained_tasks(target)
    corpus = sections["pretrain"].corpus
    names = collected_tasks(corpus, target, tasks, multitask_tasks)
    root = project_root(params_file.resolve().parent)
    collect = sections["collect"]
    started = time.perf_counter()
    prepared = {}
    for name in names:
        if known and name in known:
            prepared[name] = known[name]
        else:
            prepared[name] = read_and_prepare(name, tasks[name], collect, root)
    return Inputs(
        sections,
        tasks,
        target,
        prepared,
        corpus_tasks(corpus, target, tasks),
        multitask_tasks,
        time.perf_counter() - started,
    )


SECTIONS = ("model", "collect", "pretrain", "multitask", "finetune", "evaluate")


def data_lines(name: str, task: Any, lengths: Any, max_seq_length: int) -> list[str]:
    rows = " / ".join(f"{s} {len(task.splits[s]):,}" for s in ("train", "validation", "test"))
    lines = [f"{name}: {rows} rows"]
    if task.problem == "classification":
        counts = task.splits["train"]["label"].value_counts()
        shown = ", ".join(f"{label} {counts.get(label, 0):,}" for label in task.labels[:12])
        more = f" and {len(task.labels) - 12} more" if len(task.labels) > 12 else ""
        lines.append(f"{len(task.labels)} labels (train rows): {shown}{more}")
    else:
        lines.append("regression (numeric labels)")
    over = float((lengths > max_seq_length).mean())
    lines.append(
        f"tokens per text: median {int(_percentile(lengths, 50))}, 90th percentile "
        f"{int(_percentile(lengths, 90))}, max {int(lengths.max())}; {100 * over:.0f} % are "
        f"longer than model.max_seq_length {max_seq_length}"
    )
    return lines


def _percentile(values: Any, q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def warmup_warnings(runs: list[tuple[str, Any, int]]) -> list[str]:
    """A warm-up in steps as long as the stage's run: its rate never reaches learning_rate."""
    from bertfit.training.trainer import warmup_outlasts_run

    return [
        f"{section}.warmup_steps {params.warmup_steps} is as long as the run ({steps} steps): "
        f"the learning rate never reaches {section}.learning_rate; set it below {steps}, or use "
        f"warmup_ratio"
        for section, params, steps in runs
        if warmup_outlasts_run(params.warmup_steps, steps)
    ]


def split_warnings(name: str, task: Any) -> list[str]:
    """Splits too small for their purpose (this module's docstring)."""
    warnings = []
    test, validation = len(task.splits["test"]), len(task.splits["validation"])
    if half_width(test) > TEST_HALF_WIDTH:
        warnings.append(
            f"{name}'s test split has {test} rows: a 95 % interval on its accuracy is up to "
            f"±{100 * half_width(test):.1f} points, so two runs closer than that cannot be told "
            f"apart; at least {math.ceil((1.96 * 0.5 / TEST_HALF_WIDTH) ** 2)} rows give ±5 "
            "(a larger test file, or the task's split.test_ratio)"
        )
    if half_width(validation) > VALIDATION_HALF_WIDTH:
        warnings.append(
            f"{name}'s validation split has {validation} rows (±{100 * half_width(validation):.0f}"
            " points): choosing the best epoch on it picks noise; give it at least "
            f"{math.ceil((1.96 * 0.5 / VALIDATION_HALF_WIDTH) ** 2)} rows"
        )
    if task.problem == "classification":
        counts = task.splits["train"]["label"].value_counts()
        rare = {str(k): int(v) for k, v in counts.items() if v < MIN_CLASS_EXAMPLES}
        if rare:
            warnings.append(
                f"{name}: classes with fewer than {MIN_CLASS_EXAMPLES} train examples: {rare}; "
                "the model will hardly learn them (label more, or merge them)"
            )
    return warnings


# --- the stages ----------------------------------------------------------------------------------


def finetune_length(params: Any, examples: int) -> Any:
    """finetune's data-sized training length (training.budget), as the stage computes it."""
    import tempfile

    from bertfit.training.budget import training_length
    from bertfit.training.finetune import finetune_arguments

    with tempfile.TemporaryDirectory() as work:
        args = finetune_arguments(params, Path(work))
        return training_length(params, args, examples)


def validations(length: Any) -> int:
    """How many validation passes finetune runs (each epoch or every eval_steps, and the end)."""
    if length.eval_steps is None:
        return math.ceil(length.epochs)
    return math.ceil(length.steps / length.eval_steps)


@dataclass
class Work:
    """What the stages will do, in the units the measured costs are in."""

    tokenise_s: float = 0.0  # collect's token statistics
    heldout_blocks: int = 0  # pretrain's held-out blocks, scored before and after
    mt_steps: int = 0
    mt_train_tokens: float = 0.0  # mean tokens of a multitask training example
    mt_scored_tokens: float = 0.0  # every multitask validation pass's tokens
    ft_tokens: float = 0.0  # mean tokens of a finetune training example
    ft_step_rows: int = 0  # the texts of a finetune step (its batch; a pair step's both sides)
    ft_trained_tokens: float = 0.0  # every finetune step's tokens
    ft_validation_tokens: float = 0.0  # every finetune validation pass's tokens
    ft_head_tokens: float = 0.0  # a contrastive run's pass over the train rows for its head
    test_tokens: float = 0.0


def pretrain_plan(pretrain: Any, inputs: Inputs, work: Work) -> StagePlan:
    if pretrain.corpus == "none":
        return StagePlan("pretrain", "passes the base model through (corpus: none)")
    texts = sum(
        len(inputs.prepared[n].splits["train"]) + len(inputs.prepared[n].unlabeled)
        for n in inputs.corpus_names
    )
    heldout = math.ceil(texts * inputs.params["collect"].corpus_heldout_ratio)
    work.heldout_blocks = min(pretrain.heldout_max_blocks or heldout, heldout)
    return StagePlan(
        "pretrain",
        f"{pretrain.corpus} corpus of about {texts:,} texts: up to "
        f"{pretrain.head_warmup_steps} head warm-up + {pretrain.max_steps} masked-LM steps "
        f"of {pretrain.per_device_train_batch_size} x {pretrain.max_seq_length} tokens; "
        f"up to {work.heldout_blocks} held-out blocks scored",
    )


def multitask_plan(multitask: Any, inputs: Inputs, tokenizer: Any, work: Work) -> StagePlan:
    if not inputs.multitask_tasks:
        why = multitask.skipped_because(inputs.target) or "disabled"
        return StagePlan("multitask", f"passes the model through: {why}")
    limit = inputs.params["model"].max_seq_length
    work.mt_steps = multitask.max_steps
    passes = math.ceil(work.mt_steps / multitask.eval_steps) if multitask.eval_steps else 1
    for name in inputs.multitask_tasks:
        val = inputs.prepared[name].splits["validation"]
        work.mt_scored_tokens += passes * len(val) * mean_tokens(tokenizer, val, limit)
    trains = [inputs.prepared[n].splits["train"].iloc[:200] for n in inputs.multitask_tasks]
    work.mt_train_tokens = sum(mean_tokens(tokenizer, t, limit) for t in trains) / len(trains)
    return StagePlan(
        "multitask",
        f"{', '.join(inputs.multitask_tasks)}: {work.mt_steps} steps of "
        f"{multitask.per_device_train_batch_size}, validation {passes}x",
    )


def finetune_plan(
    finetune: Any,
    train_rows: int,
    validation_rows: int,
    inp: Any,
    length: Any,
    method: tuple[str, str],
) -> StagePlan:
    """finetune's line: the method it trains with and why (training.budget.tuning_method), then
    its steps (the Trainer's, or a contrastive run's pairs), input length and validation."""
    from bertfit.models.methods import METHODS

    name, why = method
    truncation = finetune.truncation + (
        f" (head {inp.head_tokens})" if finetune.truncation == "head_tail" else ""
    )
    inputs = (
        f"{inp.max_seq_length} tokens, {truncation}, {100 * inp.share_truncated:.0f} % of texts cut"
    )
    if METHODS[name].loop is not None:  # its own loop: pairs, then a head (training.contrastive)
        pairs = contrastive_pairs(finetune, train_rows)
        steps = math.ceil(pairs / finetune.contrastive_batch_size)
        return StagePlan(
            "finetune",
            f"{train_rows:,} examples, method {name} ({why}): {pairs:,} sentence pairs = "
            f"{steps} steps of {finetune.contrastive_batch_size}, then a logistic head; "
            f"{inputs}; validation once on {validation_rows:,} rows",
        )
    return StagePlan(
        "finetune",
        f"{train_rows:,} examples, batch {length.batch_size}, {length.epochs:g} epochs of "
        f"{length.steps_per_epoch} steps = {length.steps} steps ({length.reason}); {inputs}; "
        f"validation {validations(length)}x on {validation_rows:,} rows; method {name} ({why})",
    )


def contrastive_pairs(finetune: Any, train_rows: int) -> int:
    """The pairs a contrastive run draws (training.contrastive.sample_pairs): two a train row
    a round, at most contrastive_max_pairs."""
    pairs = 2 * finetune.contrastive_iterations * train_rows
    if finetune.contrastive_max_pairs is not None:
        pairs = min(pairs, finetune.contrastive_max_pairs)
    return pairs


def expected_longest(lengths: Any, rows: int) -> float:
    """The mean length of the longest of `rows` texts drawn at random from `lengths`: the length
    a batch of randomly drawn rows is padded to (P(longest <= the k-th shortest) = (k/n)^rows)."""
    import numpy as np

    ordered = np.sort(np.asarray(lengths, dtype=float))
    below = (np.arange(len(ordered) + 1) / len(ordered)) ** rows
    return float(np.dot(ordered, np.diff(below)))


def finetune_method(inputs: Inputs, data: TargetData) -> tuple[str, str]:
    """The method finetune will train with for the target's train rows, and why."""
    from bertfit.models.family import family_for
    from bertfit.training.budget import tuning_method
    from bertfit.training.finetune import head_spec

    finetune = inputs.params["finetune"]
    family = family_for(inputs.params["model"].name)
    task = _task_of(inputs)
    multitask = bool(inputs.params["multitask"].trained_tasks(inputs.target))
    rows = len(data.train_df)
    return tuning_method(finetune, family, task, head_spec(finetune), rows, multitask)


@dataclass
class TargetData:
    """The target's splits as finetune and evaluate take them, its train texts' token lengths,
    and what finetune's data-sized rules (training.budget) choose for them."""

    task: Any  # PreparedTask
    train_df: Any
    validation_df: Any
    test_df: Any
    lengths: Any  # tokens per train text
    tokenise_row_s: float  # seconds it took to count one train text's tokens
    inp: Any  # the input length (training.budget.input_length)
    length: Any  # the training length (training.budget.training_length)


def base_model(params_file: Path, model: Any) -> tuple[Any, Any]:
    """The base model's config (checked against model.max_seq_length) and its tokenizer."""
    from bertfit.models.loading import check_model, load_tokenizer
    from bertfit.models.scratch import is_scratch

    if is_scratch(model.name):
        raise ValueError(
            f"{params_file}: model.name {model.name!r} is built from scratch by collect: run "
            "`.venv/bin/dvc repro collect` first; bertfit plan reads an existing model"
        )
    config = check_model(model.name, model.max_seq_length)
    return config, load_tokenizer(model.name)


def size_target(inputs: Inputs, tokenizer: Any, config: Any) -> TargetData:
    """The target's rows as finetune takes them (max_train_samples, max_validation_samples),
    its train texts' tokens counted, and finetune's input and training length for them."""
    from bertfit.data.encoding import token_lengths
    from bertfit.training.budget import input_length

    model, finetune = inputs.params["model"], inputs.params["finetune"]
    target = inputs.prepared[inputs.target]
    train_df = target.splits["train"]
    if finetune.max_train_samples is not None:
        train_df = train_df.iloc[: finetune.max_train_samples]
    started = time.perf_counter()
    lengths = token_lengths(tokenizer, train_df)
    per_row = (time.perf_counter() - started) / max(len(train_df), 1)
    inp = input_length(
        finetune, tokenizer, train_df, model.max_seq_length, config, inputs.target, lengths
    )
    length = finetune_length(finetune, len(train_df))
    validation_df = target.splits["validation"]
    if finetune.max_validation_samples is not None:
        validation_df = validation_df.iloc[: finetune.max_validation_samples]
    test_df = target.splits["test"]
    return TargetData(target, train_df, validation_df, test_df, lengths, per_row, inp, length)


def mean_tokens(tokenizer: Any, df: Any, limit: int) -> float:
    """Mean tokens of the texts of `df`, each cut at `limit`; 0 for no rows."""
    import numpy as np

    from bertfit.data.encoding import token_lengths

    return float(np.minimum(token_lengths(tokenizer, df), limit).mean()) if len(df) else 0.0


def target_work(inputs: Inputs, data: TargetData, tokenizer: Any, method: str) -> Work:
    """The work of collect's token statistics, and of finetune's (trained with `method`) and
    evaluate's passes over the target; pretrain_plan and multitask_plan add theirs."""
    import numpy as np

    from bertfit.models.methods import METHODS

    # collect counts every row's tokens, at the rate the target's train rows took here
    rows = sum(
        sum(len(df) for df in task.splits.values()) + len(task.unlabeled)
        for task in inputs.prepared.values()
    )
    work = Work(tokenise_s=rows * data.tokenise_row_s)
    limit = data.inp.max_seq_length
    work.ft_tokens = float(np.minimum(data.lengths, limit).mean())
    validation_tokens = mean_tokens(tokenizer, data.validation_df, limit)
    passes = validations(data.length)
    work.ft_step_rows = data.length.batch_size
    work.ft_trained_tokens = data.length.steps * data.length.batch_size * work.ft_tokens
    if METHODS[method].loop is not None:
        contrastive_work(inputs.params["finetune"], data, work)
        passes = 2  # the validation scored once for the record, once for the calibration
    work.ft_validation_tokens = passes * len(data.validation_df) * validation_tokens
    work.test_tokens = len(data.test_df) * mean_tokens(tokenizer, data.test_df, limit)
    return work


def contrastive_work(finetune: Any, data: TargetData, work: Work) -> None:
    """A contrastive run's work (training.contrastive): both texts of every pair through the
    encoder, 2 x contrastive_batch_size texts a step padded to the longest of them (the pairs
    are drawn at random, not grouped by length), then a pass over the train rows for the
    head's features (length-sorted batches: their mean length)."""
    import numpy as np

    pairs = contrastive_pairs(finetune, len(data.train_df))
    work.ft_step_rows = 2 * finetune.contrastive_batch_size
    lengths = np.minimum(data.lengths, data.inp.max_seq_length)
    work.ft_trained_tokens = 2 * pairs * expected_longest(lengths, work.ft_step_rows)
    work.ft_head_tokens = len(data.train_df) * work.ft_tokens


def stage_plans(
    inputs: Inputs, data: TargetData, work: Work, tokenizer: Any, method: tuple[str, str]
) -> list[StagePlan]:
    """One line per stage of dvc.yaml, in its order (finetune's trained with `method`, and
    why); fills in `work`."""
    pretrain, multitask, finetune = (
        inputs.params[s] for s in ("pretrain", "multitask", "finetune")
    )
    return [
        StagePlan("collect", ", ".join(inputs.prepared)),
        pretrain_plan(pretrain, inputs, work),
        multitask_plan(multitask, inputs, tokenizer, work),
        finetune_plan(
            finetune,
            len(data.train_df),
            len(data.validation_df),
            data.inp,
            data.length,
            method,
        ),
        StagePlan("evaluate", f"{len(data.test_df):,} test texts"),
    ]


def plan_warnings(inputs: Inputs, data: TargetData) -> list[str]:
    """The target's splits too small for their purpose, and warm-ups as long as their run."""
    pretrain, multitask, finetune = (
        inputs.params[s] for s in ("pretrain", "multitask", "finetune")
    )
    warnings = split_warnings(inputs.target, data.task)
    trained = [("finetune", finetune, data.length.steps)]
    if pretrain.corpus != "none":
        trained.append(("pretrain", pretrain, pretrain.max_steps))
    if multitask.enabled:
        trained.append(("multitask", multitask, multitask.max_steps))
    return warnings + warmup_warnings(trained)


def make_plan(
    params_file: Path,
    measure: bool = True,
    prepared: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    costs: Costs | None = None,
) -> Plan:
    """The plan of `dvc repro` with params_file (and dotted `overrides`); `prepared`: tasks
    already read and checked, by name (it gains the ones read here); `costs`: what an earlier
    plan measured (bertfit ablate plans every experiment from one measurement)."""
    # finetune's long-text warning is the plan's finetune line here
    logging.getLogger("bertfit.training.budget").setLevel(logging.ERROR)
    inputs = read_inputs(params_file, prepared, overrides)
    if prepared is not None:
        prepared.update(inputs.prepared)
    model = inputs.params["model"]
    config, tokenizer = base_model(params_file, model)
    data = size_target(inputs, tokenizer, config)
    method = finetune_method(inputs, data)
    work = target_work(inputs, data, tokenizer, method[0])
    stages = stage_plans(inputs, data, work, tokenizer, method)
    lines = data_lines(inputs.target, data.task, data.lengths, model.max_seq_length)
    plan = Plan(params_file, inputs.target, lines, stages, plan_warnings(inputs, data))
    if costs is None:
        if not measure:
            return plan
        costs = measure_costs(
            model.name,
            inputs,
            inputs.params["finetune"],
            inputs.params["pretrain"],
            work.ft_step_rows,
            round(work.ft_tokens),
            data.inp,
            data.train_df,
        )
    plan.costs = costs
    estimate(plan, costs, work, inputs)
    return plan


def estimate(plan: Plan, costs: Costs, work: Work, inputs: Inputs) -> None:
    """Each stage's seconds: its start-up, its steps at the measured step cost, its scoring
    passes at the measured scoring cost."""
    pretrain, multitask = inputs.params["pretrain"], inputs.params["multitask"]
    collect, pretrained, multitasked, finetuned, evaluated = plan.stages
    per_stage = costs.stage()
    passing = costs.startup + DVC_SECONDS_PER_STAGE  # a stage that passes its model through
    collect.seconds = passing + inputs.read_seconds + work.tokenise_s
    pretrained.seconds = passing
    if pretrain.corpus != "none":
        mlm_step = costs.mlm_step or 0.0
        scorings = 3 if pretrain.head_warmup_steps else 2  # before, after warm-up, after
        pretrained.seconds = (
            per_stage
            + pretrain.head_warmup_steps * HEAD_WARMUP_SHARE * mlm_step
            + pretrain.max_steps * mlm_step
            + scorings * work.heldout_blocks * pretrain.max_seq_length * costs.score_token
        )
    multitasked.seconds = passing
    if inputs.multitask_tasks:
        batch_tokens = multitask.per_device_train_batch_size * work.mt_train_tokens
        multitasked.seconds = (
            per_stage
            + work.mt_steps * batch_tokens * costs.train_token
            + work.mt_scored_tokens * costs.score_token
        )
    finetuned.seconds = (
        per_stage
        + work.ft_trained_tokens * costs.train_token
        + (work.ft_validation_tokens + work.ft_head_tokens) * costs.score_token
    )
    evaluated.seconds = per_stage + work.test_tokens * costs.score_token


def process_age() -> float:
    """Seconds since this process started (Linux /proc; else the time since bertfit's import)."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / ticks
        with open("/proc/uptime") as f:
            return float(f.read().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return 0.0


def measure_costs(
    model_name: str,
    inputs: Inputs,
    finetune: Any,
    pretrain: Any,
    batch_size: int,
    tokens: int,
    inp: Any,
    train_df: Any,
) -> Costs:
    """Time a few steps of the run's own model classes at the run's shapes, on this machine."""
    import torch
    from transformers import set_seed

    # a stage imports what this process has imported by now (torch, transformers, datasets)
    import bertfit.training.trainer  # noqa: F401
    from bertfit.hardware import keep_freed_memory, use_bf16
    from bertfit.models.family import family_for
    from bertfit.models.loading import load_tokenizer
    from bertfit.training.finetune import head_spec

    startup = process_age()
    keep_freed_memory()  # as the stages do (training.trainer, evaluation): fewer page faults
    set_seed(0)
    bf16 = use_bf16(finetune.mixed_precision)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    task = _task_of(inputs)
    family = family_for(model_name)
    started = time.perf_counter()
    tokenizer = load_tokenizer(model_name)
    model = family.classifier(model_name, task, head_spec(finetune))
    load = time.perf_counter() - started
    _on_device(model, device)
    batch_of = _batch_maker(family, tokenizer, task, finetune, inp, train_df, tokens, device)
    batch = batch_of(batch_size)
    model.train()
    train_s = _timed_training(model, batch, device, bf16)
    # scoring runs at the evaluation batch size, where a batch's fixed costs weigh less
    scored = batch_of(finetune.per_device_eval_batch_size)
    model.eval()
    score_s = _timed_scoring(model, scored, device, bf16)
    padded = batch["input_ids"].shape
    shapes = {
        "finetune step": f"{padded[0]} x {padded[1]} tokens {train_s:.2f} s",
        "scoring": f"{_tokens_in(scored) / score_s:,.0f} tokens/s",
    }
    mlm_s = None
    if pretrain.corpus != "none":
        bf16_mlm = use_bf16(pretrain.mixed_precision)
        mlm_s = _mlm_step(model_name, pretrain, inputs, device, bf16_mlm)
        shapes["masked-LM step"] = (
            f"{pretrain.per_device_train_batch_size} x {pretrain.max_seq_length} {mlm_s:.2f} s"
        )
    return Costs(
        startup=startup,
        load=load,
        train_token=train_s / _tokens_in(batch),
        mlm_step=mlm_s,
        score_token=score_s / _tokens_in(scored),
        shapes=shapes,
        bf16=bf16,
    )


def _on_device(model: Any, device: str) -> None:
    """The model on `device`, with the stages' cheaper dropout draws on a CPU."""
    from bertfit.models.dropout import use_fast_dropout

    if device == "cpu":
        use_fast_dropout(model)
    model.to(device)


def _batch_maker(
    family: Any,
    tokenizer: Any,
    task: Any,
    finetune: Any,
    inp: Any,
    train_df: Any,
    tokens: int,
    device: str,
) -> Callable[[int], dict[str, Any]]:
    """A maker of batches as finetune's collator builds them from the target's train rows
    (encoded, labelled, on `device`), of rows near the run's mean length of `tokens`."""
    from bertfit.training.finetune import preprocessing

    prep = preprocessing(finetune, inp.max_seq_length, inp.head_tokens)
    encoder = family.encoder(tokenizer, prep)
    collator = family.collator(tokenizer, prep)
    config = family.head_config(task, train_df.iloc[:64], finetune.label_scoring)

    def batch_of(size: int) -> dict[str, Any]:
        rows = _rows_near(train_df, tokenizer, tokens, size, inp.max_seq_length)
        examples = family.training_set(
            encoder.labelled(rows, task, "train"), task, tokenizer, config
        )
        batch = collator([examples[i] for i in range(len(examples))])
        batch.pop("length", None)
        return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}

    return batch_of


def _tokens_in(batch: dict[str, Any]) -> int:
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else 1


def _timed_scoring(model: Any, batch: dict[str, Any], device: str, bf16: bool) -> float:
    """Median seconds of a scoring pass over `batch`: forward only, bf16 where the run uses it."""
    import torch

    def score() -> None:
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            model(**batch)

    return _timed(score)


def _timed_training(model: Any, batch: dict[str, Any], device: str, bf16: bool) -> float:
    """Median seconds of a training step on `batch`: forward (bf16 autocast where the run
    uses it), backward, an AdamW step over the trainable weights."""
    import torch

    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return _timed(step)


def _timed(step: Any) -> float:
    """Median seconds of TIMED_STEPS calls after WARMUP_STEPS untimed ones."""
    import statistics

    for _ in range(WARMUP_STEPS):
        step()
    times = []
    for _ in range(TIMED_STEPS):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _task_of(inputs: Inputs) -> Any:
    """The target as finetune will see it (labels, label words), without writing it."""
    from bertfit.data.collect import task_meta

    return task_meta(inputs.prepared[inputs.target], inputs.tasks[inputs.target])


def _rows_near(df: Any, tokenizer: Any, tokens: int, batch_size: int, limit: int) -> Any:
    """`batch_size` train rows whose (truncated) lengths are closest to the run's mean: a batch
    of the length finetune's length-grouped batches have on average."""
    import numpy as np

    from bertfit.data.encoding import token_lengths

    sample = df.iloc[: max(batch_size * 20, 400)]
    lengths = np.minimum(token_lengths(tokenizer, sample), limit)
    order = np.argsort(np.abs(lengths - tokens), kind="stable")[:batch_size]
    rows = sample.iloc[order].reset_index(drop=True)
    if len(rows) < batch_size:  # a tiny set: repeat its rows to fill the batch
        rows = rows.sample(batch_size, replace=True, random_state=0).reset_index(drop=True)
    return rows


def _mlm_step(model_name: str, pretrain: Any, inputs: Inputs, device: str, bf16: bool) -> float:
    """Seconds of one whole-model pretraining step at pretrain's batch and block length."""

    from bertfit.models.dropout import use_fast_dropout
    from bertfit.models.family import family_for
    from bertfit.models.loading import load_tokenizer
    from bertfit.training.pretrain import OBJECTIVES

    family = family_for(model_name)
    tokenizer = load_tokenizer(model_name)
    objective = OBJECTIVES[family.objective](pretrain, model_name)
    model = objective.load_model()
    if device == "cpu":
        use_fast_dropout(model)
    model.to(device)
    texts: list[str] = []
    for name in inputs.corpus_names:
        texts += [str(t) for t in inputs.prepared[name].splits["train"]["text"].iloc[:400]]
    blocks = objective.tokenize(texts, tokenizer, "timing")
    size = min(pretrain.per_device_train_batch_size, len(blocks))
    collator = objective.collator(tokenizer)
    batch = collator([blocks[i] for i in range(size)])
    batch = {k: v.to(device) for k, v in batch.items() if hasattr(v, "to")}
    objective.for_training(model)
    model.train()
    seconds = _timed_training(model, batch, device, bf16)
    # a corpus shorter than a batch: scale to the full batch the run will take
    return seconds * pretrain.per_device_train_batch_size / max(size, 1)
