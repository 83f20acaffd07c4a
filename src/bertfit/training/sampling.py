"""Which task each multi-task batch comes from, and which of its examples.

Every batch holds examples of one task. The task of batch b is drawn with probability
p_t ∝ n_t^α, n_t the task's train size:

- proportional: α = 1 (the paper's sampler, which the reference code drew with replacement);
- uniform: α = 0;
- temperature: α = 1/T (T > 1 flattens towards uniform, as in multilingual T5 pretraining);
- annealed: α falls linearly from 1 at the first batch to 1/T at the last, so training starts
  proportional and moves towards uniform (Stickland & Murray 2019 anneal per epoch, 1 → 0.2).

With `mixing_limit` K, a task counts as min(n_t, K) examples before the exponent applies: T5's
examples-proportional mixing (proportional) and temperature-scaled mixing (temperature), whose
cap keeps one huge task from crowding out the rest (Raffel et al. 2020, 3.5.2).

Within a task, examples are drawn without replacement: a pass is a fresh permutation, taken in
batches; the last batch of a pass is short rather than mixing two passes. Torch and transformers
offer no task-homogeneous batch sampler, hence this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

SCHEMES = ("proportional", "uniform", "temperature", "annealed")


def sampling_exponent(scheme: str, temperature: float, progress: float) -> float:
    """α of p_t ∝ n_t^α at `progress` in [0, 1] of training."""
    if scheme not in SCHEMES:
        raise ValueError(f"multitask.sampling must be one of {list(SCHEMES)}, got {scheme!r}")
    if temperature <= 0:
        raise ValueError(f"multitask.temperature must be > 0, got {temperature}")
    if scheme == "proportional":
        return 1.0
    if scheme == "uniform":
        return 0.0
    if scheme == "temperature":
        return 1.0 / temperature
    return 1.0 - progress * (1.0 - 1.0 / temperature)


def task_probabilities(
    sizes: Sequence[int],
    scheme: str,
    temperature: float,
    progress: float = 0.0,
    mixing_limit: int | None = None,
) -> np.ndarray:
    """The probability of each task for a batch at `progress` in [0, 1] of training."""
    n = np.asarray(sizes, dtype=np.float64)
    if n.size == 0 or (n <= 0).any():
        raise ValueError(f"every task needs train examples, got sizes {list(sizes)}")
    if mixing_limit is not None:
        if mixing_limit <= 0:
            raise ValueError(f"multitask.mixing_limit must be > 0 or null, got {mixing_limit}")
        n = np.minimum(n, mixing_limit)
    weights = n ** sampling_exponent(scheme, temperature, progress)
    return weights / weights.sum()


class TaskBatchSampler(Sampler[list[int]]):
    """Batches of indices into the concatenation of the tasks' train sets, one task per batch.

    `num_batches` batches in all, the same ones every time it is iterated (seeded), so every
    process of a distributed run sees the same list and accelerate hands each its share.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        num_batches: int,
        scheme: str,
        temperature: float,
        seed: int,
        mixing_limit: int | None = None,
    ) -> None:
        if batch_size <= 0 or num_batches <= 0:
            raise ValueError(f"batch_size and num_batches must be > 0: {batch_size}, {num_batches}")
        self.sizes = [int(n) for n in sizes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.seed = seed
        rng = np.random.default_rng(seed)
        last = max(num_batches - 1, 1)
        self.schedule = np.array(
            [
                rng.choice(
                    len(self.sizes),
                    p=task_probabilities(sizes, scheme, temperature, b / last, mixing_limit),
                )
                for b in range(num_batches)
            ]
        )

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, 1])
        order = [np.empty(0, dtype=int) for _ in self.sizes]
        cursor = [0] * len(self.sizes)
        for task in self.schedule:
            if cursor[task] >= len(order[task]):  # a new pass over this task
                order[task] = rng.permutation(self.sizes[task])
                cursor[task] = 0
            picked = order[task][cursor[task] : cursor[task] + self.batch_size]
            cursor[task] += len(picked)
            yield (picked + self.offsets[task]).tolist()

    def task_counts(self) -> list[int]:
        """Batches per task in the schedule."""
        return np.bincount(self.schedule, minlength=len(self.sizes)).tolist()
