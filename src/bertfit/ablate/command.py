"""bertfit ablate: the paper's variants × seeds as DVC experiments, and their test error table.

    bertfit ablate --variants FiT ITPT-FiT MFiT-FiT --seeds 3
    bertfit ablate --variants FiT ITPT-FiT --seeds 3 --curve-variants FiT ITPT-FiT \\
        --train-samples 100 500 1000 all
    bertfit ablate --table-only            # rebuild the table and the PNG from the experiments

Queues one DVC experiment per variant and seed (`dvc exp run --queue -n NAME -S ...`), and, for
the learning curve, one per curve variant, seed and number of labelled examples
(finetune.max_train_samples); runs the queue (`dvc queue start`) and waits for it, logging each
experiment as it finishes. The variants are params (docs/experiments.md): FiT = no further
pretraining and no multi-task step; ITPT / IDPT / CDPT = pretrain.corpus within_task / in_domain /
cross_domain; MFiT = multitask.enabled.

The table is then read back from `dvc exp show --json` alone: every experiment of the current
commit whose name starts with `<--name>-`, grouped by the params it ran with (target, the
variant its pretrain.corpus and multitask.enabled make, finetune.max_train_samples), never by
its name; its test error is evaluate's error_rate (1 - accuracy where that is missing). Per group:
n, mean ± sample std, and the 95 % t-interval of the mean (REFERENCE.md: report mean ± std over
seeds before claiming an effect). Writes <out-dir>/ablation.md, ablation.json (every experiment
and every group) and learning_curve.png.

Seeds: only finetune.seed varies by default (`--seed-params`), so DVC's run-cache reuses each
variant's collect, pretrain and multitask results across its seeds: 3 seeds cost 3 finetunes,
not 3 pretrainings. The interval then covers the fine-tuning's randomness (initialisation of the
head, batch order, dropout, and the subset drawn for max_train_samples), not that of pretraining
or multi-task training; `--seed-params finetune.seed pretrain.seed multitask.seed` samples those
too, at the cost of running every stage for every seed.

An experiment that failed is listed with its name and the command that shows its log
(`dvc queue logs TASK`); the table is written from the others and the command exits with 1.
Rerunning the same command skips the experiments that already succeeded and queues the failed
and missing ones again.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

from bertfit.ablate import AblateError
from bertfit.ablate.experiments import DEFAULT_METRICS_FILE, exp_show
from bertfit.ablate.plan import (
    SAMPLES_PARAM,
    VARIANTS,
    Planned,
    default_samples,
    estimate_line,
    parse_samples,
    parse_set,
    plan,
    resolve_variant,
)
from bertfit.ablate.queue import queue_and_run
from bertfit.ablate.report import write_report
from bertfit.cli import positive_int

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """bertfit ablate's options, in three sections of --help: the experiments, the table, and
    how the queue runs."""
    add_experiment_arguments(parser)
    add_table_arguments(parser)
    add_run_arguments(parser)


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    """What is queued: the variants, their seeds, the learning curve, params for every run."""
    group = parser.add_argument_group("experiments")
    group.add_argument(
        "--variants",
        nargs="*",
        default=["FiT", "ITPT-FiT", "MFiT-FiT"],
        help=f"variants to compare at finetune.max_train_samples ({', '.join(VARIANTS)}; "
        "default: FiT ITPT-FiT MFiT-FiT; none, with --curve-variants: the curve alone)",
    )
    group.add_argument(
        "--seeds", type=positive_int, default=3, help="seeds per variant (default: 3)"
    )
    group.add_argument(
        "--first-seed",
        type=int,
        default=42,
        help="the seeds are first-seed, first-seed + 1, ... (default: 42, params.yaml's)",
    )
    group.add_argument(
        "--seed-params",
        nargs="+",
        default=["finetune.seed"],
        help="params set to the seed (default: finetune.seed, so pretrain and multitask are "
        "reused from the run-cache across seeds; add pretrain.seed multitask.seed to vary them)",
    )
    group.add_argument(
        "--curve-variants",
        nargs="*",
        default=[],
        help="variants (two, say) to run at each --train-samples for the learning curve",
    )
    group.add_argument(
        "--train-samples",
        nargs="+",
        default=["100", "500", "1000", "all"],
        help="labelled examples for the curve (finetune.max_train_samples; default: 100 500 "
        "1000 all)",
    )
    group.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a param for every experiment, as dvc exp run -S takes it (repeatable)",
    )


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """Which experiments the table reads, and where it goes."""
    group = parser.add_argument_group("the table")
    group.add_argument(
        "--name", default="ablate", help="experiment name prefix; the table reads <name>-*"
    )
    group.add_argument(
        "--out-dir",
        type=Path,
        default=Path("reports/ablation"),
        help="where ablation.md, ablation.json and learning_curve.png go",
    )
    group.add_argument(
        "--metrics-file",
        default=DEFAULT_METRICS_FILE,
        help=f"the metrics file with error_rate or accuracy (default: {DEFAULT_METRICS_FILE})",
    )
    group.add_argument(
        "--table-only",
        action="store_true",
        help="run nothing: rebuild the table and the PNG from dvc exp show --json",
    )
    group.add_argument(
        "--rev",
        nargs="+",
        default=None,
        help="with --table-only: the commit(s) the experiments ran from (default: HEAD)",
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and how the queue runs."""
    group = parser.add_argument_group("running")
    group.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="queue workers (default: 1; on 2 CPU cores more only slows each run down)",
    )
    group.add_argument("--repo", type=Path, default=Path("."), help="the DVC project (default: .)")
    group.add_argument(
        "--no-estimate",
        action="store_true",
        help="queue without first estimating the wall time (bertfit plan: it times a few "
        "training steps, about half a minute on 2 CPU cores)",
    )


def planned_experiments(
    args: argparse.Namespace, variants: list[str], curve_variants: list[str]
) -> list[Planned]:
    """The experiments the arguments ask for (bertfit.ablate.plan), logged in one line."""
    samples = [parse_samples(v) for v in args.train_samples]
    controlled = {*VARIANTS["FiT"], *args.seed_params}
    if curve_variants:
        controlled.add(SAMPLES_PARAM)
    sets = parse_set(args.sets, controlled)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    planned = plan(
        variants,
        seeds,
        args.seed_params,
        curve_variants,
        samples,
        default_samples(args.repo, sets),
        sets,
        args.name,
    )
    log.info(
        "ablation %s: %d experiments (%s × seeds %s%s)",
        args.name,
        len(planned),
        ", ".join(variants) or "no variant beside the curve",
        ", ".join(map(str, seeds)),
        f"; curve {', '.join(curve_variants)} at {' '.join(args.train_samples)}"
        if curve_variants
        else "",
    )
    return planned


def ablate(args: argparse.Namespace) -> int:
    """Plan, run and tabulate; returns the exit status (1 when an experiment failed)."""
    variants = [resolve_variant(v) for v in args.variants]
    curve_variants = [resolve_variant(v) for v in args.curve_variants]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.]*", args.name):
        raise AblateError(f"--name {args.name!r}: letters, digits, '_' and '.' only")
    seed_param = args.seed_params[0]
    wall_s = None
    failed: list[str] = []
    if args.rev and not args.table_only:
        raise AblateError("--rev rebuilds a table (--table-only); experiments run from HEAD")
    if not (variants or curve_variants or args.table_only):
        raise AblateError("nothing to run: name --variants, --curve-variants or both")
    if not args.table_only:
        planned = planned_experiments(args, variants, curve_variants)
        if not args.no_estimate:
            try:
                log.info(estimate_line(planned, args.repo / "params.yaml"))
            except (ValueError, FileNotFoundError) as err:  # advice only: the runs say the rest
                log.warning("no wall-time estimate: %s", err)
        start = time.monotonic()
        failed, queued_from = queue_and_run(planned, args.repo, args.name, args.jobs, seed_param)
        wall_s = time.monotonic() - start
        args.rev = [queued_from]
    results, text = write_report(
        exp_show(args.repo, args.rev or ()),
        args.out_dir,
        args.name,
        curve_variants or None,
        args.metrics_file,
        seed_param,
        wall_s,
    )
    print(text)
    log.info("wrote %s", args.out_dir / "ablation.md")
    for r in results:
        if r.state == "failed":
            log.error("experiment %s failed; its log: %s", r.name, r.log_command)
    # a rebuild only reports; a run fails when one of its own experiments did
    return 1 if failed else 0


def run(args: argparse.Namespace) -> None:
    """The subcommand: INFO logging with times; user errors as one line, exit 1."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        status = ablate(args)
    except AblateError as err:
        raise SystemExit(f"bertfit ablate: error: {err}") from None
    if status:
        raise SystemExit(status)


def main(argv: list[str] | None = None) -> None:
    """`bertfit ablate ARGS` (`python -m bertfit.ablate`)."""
    from bertfit import cli

    cli.main(["ablate", *(sys.argv[1:] if argv is None else argv)])
