"""The ablation's arithmetic: experiments grouped by the params they ran with (target, variant,
number of labelled examples), and per group the mean test error, its sample standard deviation
and the t-interval of the mean (REFERENCE.md: report mean ± std over seeds before claiming an
effect)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bertfit.ablate import AblateError
from bertfit.ablate.experiments import Result
from bertfit.ablate.plan import VARIANTS

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof 1) and the t-interval of the mean of n values;
    std and interval are None for n < 2 (one run says nothing about the spread)."""

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Student's t-interval (n - 1 degrees of freedom): with 3 seeds the normal 1.96 would be
    less than half the right width (t = 4.30)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise AblateError("no values to summarise")
    mean = math.fsum(values) / n
    if n < 2:
        return Summary(n, mean, None, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Group:
    """One row of the table: the experiments of one target, variant and number of labelled
    examples, and the summary of those that finished with a test error."""

    target: str | None
    variant: str
    samples: int | None
    summary: Summary | None
    seeds: tuple[int | None, ...]
    train_examples: int | None
    # (name, state) of the group's experiments not in its numbers: failed, queued, running, or
    # a success without the metric
    not_finished: tuple[tuple[str, str], ...]


def variant_rank(variant: str) -> int:
    return list(VARIANTS).index(variant) if variant in VARIANTS else len(VARIANTS)


def group(results: Iterable[Result]) -> list[Group]:
    """Results grouped by (target, variant, number of examples), in the paper's variant order,
    fewest examples first and `all` last."""
    buckets: dict[tuple[str | None, str, int | None], list[Result]] = {}
    for result in results:
        key = (result.target, result.variant or "unknown", result.samples)
        buckets.setdefault(key, []).append(result)
    groups = []
    for (target, variant, samples), members in buckets.items():
        done = [r for r in members if r.state == "success" and r.error_rate is not None]
        examples = {r.train_examples for r in done if r.train_examples is not None}
        groups.append(
            Group(
                target,
                variant,
                samples,
                summarize([r.error_rate for r in done]) if done else None,  # type: ignore[misc]
                tuple(sorted((r.seed for r in done), key=lambda s: (s is None, s or 0))),
                max(examples) if examples else None,
                tuple((r.name, r.state) for r in members if r not in done),
            )
        )
    return sorted(
        groups,
        key=lambda g: (
            str(g.target),
            variant_rank(g.variant),
            g.variant,
            g.samples is None,
            g.samples or 0,
        ),
    )
