"""`bertfit ablate`, one module per job (the command's description is command.py's docstring).

- plan: the paper's variants, the experiments to queue (names and `-S` overrides), their
  estimated wall time;
- experiments: running dvc, and the experiments as `dvc exp show --json` lists them;
- statistics: experiments grouped by the params they ran with, mean ± std and t-interval;
- report: ablation.md, ablation.json and learning_curve.png;
- queue: queueing the experiments, running the queue and following it to the end;
- command: the arguments, and plan, run and tabulate in order (`python -m bertfit.ablate`).
"""

from __future__ import annotations


class AblateError(ValueError):
    """Bad arguments, a DVC command that failed, or experiments that cannot be tabulated."""
