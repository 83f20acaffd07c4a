"""The ablation's plan: the paper's variants as params, one experiment per variant, seed and
number of labelled examples (its name and its `dvc exp run -S` overrides), and the plan's
estimated wall time on this machine (bertfit.plan)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bertfit.ablate import AblateError

# The paper's variant names (Sun et al., Table 4-6; docs/experiments.md) -> the params that make
# them. Dict order is the table's row order.
VARIANTS: dict[str, dict[str, Any]] = {
    "FiT": {"pretrain.corpus": "none", "multitask.enabled": False},
    "ITPT-FiT": {"pretrain.corpus": "within_task", "multitask.enabled": False},
    "IDPT-FiT": {"pretrain.corpus": "in_domain", "multitask.enabled": False},
    "CDPT-FiT": {"pretrain.corpus": "cross_domain", "multitask.enabled": False},
    "MFiT-FiT": {"pretrain.corpus": "none", "multitask.enabled": True},
    "ITPT-MFiT-FiT": {"pretrain.corpus": "within_task", "multitask.enabled": True},
}
SAMPLES_PARAM = "finetune.max_train_samples"
RESTORE_S = 5.0  # a stage restored from DVC's run-cache: its check and checkout
DOWNSTREAM = ("finetune.", "evaluate.")  # params of the stages an ablation's seeds rerun


def resolve_variant(name: str) -> str:
    """The paper's name for `name`: case does not matter and the trailing -FiT may be left out
    (ITPT, MFiT and ITPT-MFiT name ITPT-FiT, MFiT-FiT and ITPT-MFiT-FiT)."""
    wanted = name.strip().lower()
    for variant in VARIANTS:
        if wanted in (variant.lower(), variant.lower().removesuffix("-fit")):
            return variant
    raise AblateError(f"unknown variant {name!r}; valid variants: {', '.join(VARIANTS)}")


def variant_of(corpus: Any, multitask: Any) -> str:
    """The variant a pair of params values makes; others are named by their values."""
    for variant, params in VARIANTS.items():
        if params == {"pretrain.corpus": corpus, "multitask.enabled": multitask}:
            return variant
    return f"pretrain.corpus={corpus}, multitask.enabled={multitask}"


def parse_samples(value: str) -> int | None:
    """A number of labelled examples for the curve; `all` (None) is the whole train split."""
    if value.lower() in ("all", "null", "none"):
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise AblateError(f"--train-samples: {value!r} is neither a positive number nor 'all'")
    return number


def samples_label(samples: int | None) -> str:
    return "all" if samples is None else str(samples)


def parse_set(items: Sequence[str], controlled: Iterable[str]) -> dict[str, str]:
    """`--set key=value` overrides, kept as text for `dvc exp run -S`; a key the ablation sets
    itself (a variant's params, the seed params) is refused: it would contradict the rows."""
    overrides: dict[str, str] = {}
    controlled = set(controlled)
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise AblateError(
                f"--set {item!r}: expected key=value, e.g. finetune.learning_rate=3e-5"
            )
        if key in controlled:
            raise AblateError(
                f"--set {key}: ablate sets this itself (variants: pretrain.corpus and "
                "multitask.enabled; seeds: --seed-params; examples: --train-samples)"
            )
        overrides[key] = value
    return overrides


def dotted(data: dict[str, Any], key: str) -> Any:
    """The value at a dotted params key (`finetune.seed`), or None where a part is missing."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def default_samples(repo_dir: Path, sets: dict[str, str]) -> int | None:
    """finetune.max_train_samples as the experiments will see it: --set's, else params.yaml's."""
    if SAMPLES_PARAM in sets:
        return yaml.safe_load(sets[SAMPLES_PARAM])
    params = yaml.safe_load((repo_dir / "params.yaml").read_text(encoding="utf-8")) or {}
    return dotted(params, SAMPLES_PARAM)


@dataclass(frozen=True)
class Planned:
    """One experiment to queue: its name and the `-S` overrides that make it."""

    name: str
    variant: str
    seed: int
    samples: int | None
    overrides: tuple[str, ...]


def experiment_name(prefix: str, variant: str, samples: int | None, seed: int) -> str:
    """`<prefix>-<variant>-n<examples|all>-s<seed>`, lowercase: a valid git ref name, and one a
    person can read in `dvc exp show`; the table never parses it (it reads the params)."""
    return f"{prefix}-{variant.lower()}-n{samples_label(samples)}-s{seed}"


def yaml_value(value: Any) -> str:
    """A params value as `dvc exp run -S` reads it (YAML): false, null, within_task, 100."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def plan(
    variants: Sequence[str],
    seeds: Sequence[int],
    seed_params: Sequence[str],
    curve_variants: Sequence[str],
    train_samples: Sequence[int | None],
    default_samples: int | None,
    sets: dict[str, str],
    prefix: str,
) -> list[Planned]:
    """Every experiment: each variant at the default number of examples (params.yaml's
    finetune.max_train_samples, or --set's), then each curve variant at each --train-samples;
    a run both lists is planned once."""
    wanted = [(v, default_samples) for v in variants]
    wanted += [(v, n) for v in curve_variants for n in train_samples]
    planned: dict[str, Planned] = {}
    for variant, samples in wanted:
        for seed in seeds:
            name = experiment_name(prefix, variant, samples, seed)
            overrides = {k: yaml_value(v) for k, v in VARIANTS[variant].items()}
            overrides |= {key: str(seed) for key in seed_params}
            overrides |= sets
            if samples != default_samples or SAMPLES_PARAM in sets:
                overrides[SAMPLES_PARAM] = yaml_value(samples)
            planned.setdefault(
                name,
                Planned(
                    name, variant, seed, samples, tuple(f"{k}={v}" for k, v in overrides.items())
                ),
            )
    return list(planned.values())


def estimate_line(planned: Sequence[Planned], params_file: Path) -> str:
    """The ablation's estimated wall time on this machine (bertfit.plan: steps measured once,
    each experiment's stages added up). Experiments that differ only in finetune's params share
    collect, pretrain and multitask through DVC's run-cache: those run once per group."""
    from bertfit.plan import duration, make_plan

    def overrides(p: Planned) -> dict[str, Any]:
        pairs = (o.split("=", 1) for o in p.overrides)
        return {k: yaml.safe_load(v) for k, v in pairs}

    pretraining = any(overrides(p).get("pretrain.corpus", "none") != "none" for p in planned)
    measuring = {"pretrain.corpus": "within_task"} if pretraining else None  # a masked-LM step
    measured = make_plan(params_file, overrides=measuring)
    costs, prepared = measured.costs, {}
    total, upstream_done = 0.0, set()
    for p in planned:
        each = overrides(p)
        upstream = tuple(
            sorted((k, str(v)) for k, v in each.items() if not k.startswith(DOWNSTREAM))
        )
        stages = make_plan(params_file, prepared=prepared, overrides=each, costs=costs).stages
        for stage in stages:
            cached = upstream in upstream_done and stage.name not in ("finetune", "evaluate")
            total += RESTORE_S if cached else stage.seconds or 0.0
        upstream_done.add(upstream)
    groups = len(upstream_done)
    return (
        f"estimated wall time on this machine: about {duration(total)} for {len(planned)} "
        f"experiments, one at a time ({groups} run collect, pretrain and multitask; the others "
        "restore them from DVC's run-cache); measured: "
        + "; ".join(f"{k} {v}" for k, v in costs.shapes.items())
    )
