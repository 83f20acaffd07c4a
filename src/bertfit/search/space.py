"""The searched finetune params: which space applies (the method's, or the family's own), whether
each of its ends is a valid finetune value, a trial's draw, and the finetune params it trains."""

from __future__ import annotations

from typing import Any

import optuna
from pydantic import ValidationError

from bertfit.params import (
    ContrastiveSpace,
    FinetuneParams,
    MethodSpaces,
    Range,
    SearchParams,
    TrainingSpace,
)

Space = TrainingSpace | ContrastiveSpace  # a method's searchable params

# how a progress line names each searched param (the rest by their own name)
SHORT_NAMES = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch",
    "warmup_ratio": "warm-up",
    "weight_decay": "weight decay",
    "layer_decay": "layer decay",
    "lora_r": "rank",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "num_virtual_tokens": "virtual tokens",
    "contrastive_learning_rate": "pair lr",
    "contrastive_iterations": "pairs per row",
    "contrastive_batch_size": "pair batch",
    "contrastive_max_pairs": "max pairs",
}


def chosen_space(
    search: SearchParams, family: str, method: str, switched: str | None = None
) -> tuple[str, Space]:
    """The space for a model of `family` tuned with `method`: the family's own when search.yaml
    gives one (family_spaces.<family>.<method>), else spaces.<method>; with its key.
    `switched`: why finetune trains `method` in place of finetune.method (the few-labels
    switch), for the error when search.yaml has no space for it."""
    own: MethodSpaces | None = getattr(search.family_spaces, family)
    if own is not None and getattr(own, method) is not None:
        return f"family_spaces.{family}.{method}", getattr(own, method)
    space = getattr(search.spaces, method)
    if space is None:
        which = f"finetune.method {method} (family {family})"
        if switched is not None:
            which = (
                f"method {method}, which finetune trains on these rows ({switched}; "
                f"family {family})"
            )
        raise ValueError(
            f"search.yaml: no space for {which}: add "
            f"search.spaces.{method} (or search.family_spaces.{family}.{method})"
        )
    return f"spaces.{method}", space


def searched(space: Space) -> dict[str, Range | list[Any]]:
    """The params the space searches, in the order it declares them."""
    return {name: values for name, values in space if values is not None}


def check_space(space: Space, where: str, params: FinetuneParams) -> dict[str, Range | list[Any]]:
    """Refuse, before any trial, a range end or a choice that finetune would refuse (a warm-up
    ratio of 1, a layer decay above 1): each is tried in params.yaml's finetune params."""
    values = searched(space)
    if not values:
        raise ValueError(f"search.yaml: search.{where} searches nothing; name a param in it")
    for name, spec in values.items():
        ends = [spec.low, spec.high] if isinstance(spec, Range) else spec
        for value in ends:
            try:
                trial_params(params, {name: value})
            except ValidationError as err:
                reason = "; ".join(e["msg"] for e in err.errors())
                raise ValueError(
                    f"search.yaml: search.{where}.{name}: {value!r} is not a valid "
                    f"finetune.{name} ({reason})"
                ) from None
    return values


def suggest(trial: optuna.Trial, values: dict[str, Range | list[Any]]) -> dict[str, Any]:
    """The trial's draw: a choice from each list, an int or float from each range."""
    drawn: dict[str, Any] = {}
    for name, spec in values.items():
        if not isinstance(spec, Range):
            drawn[name] = trial.suggest_categorical(name, spec)
        elif isinstance(spec.low, int) and isinstance(spec.high, int):
            drawn[name] = trial.suggest_int(name, spec.low, spec.high, log=spec.log)
        else:
            drawn[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    return drawn


def trial_params(params: FinetuneParams, values: dict[str, Any]) -> FinetuneParams:
    """params.yaml's finetune params with a trial's values, validated as params.yaml's are.

    A trial trains the epochs it draws (no data-sized length, no early stop) and its value is
    its best validation (no tolerance: trials compare peaks); the search draws its own train
    subset. A drawn warm-up ratio replaces a warm-up in steps."""
    fixed: dict[str, Any] = {
        "min_train_steps": None,
        "early_stopping_patience": None,
        "selection_tolerance": 0,
        "max_train_samples": None,
    }
    if "warmup_ratio" in values:
        fixed["warmup_steps"] = None
    if "num_train_epochs" in values:  # max_train_epochs only caps min_train_steps, off here
        fixed["max_train_epochs"] = max(values["num_train_epochs"], params.max_train_epochs)
    return FinetuneParams.model_validate(params.model_dump() | fixed | values)


def describe(values: dict[str, Any]) -> str:
    """`lr 3.1e-05, epochs 3, batch 32`: a trial's values in a progress line."""
    return ", ".join(f"{SHORT_NAMES.get(k, k)} {number(v)}" for k, v in values.items())


def number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2g}" if abs(value) < 0.01 else f"{value:.3g}"
    return str(value)
