"""Fault injection: a stage killed with SIGKILL (tests/faults.py), then run again, ends where an
uninterrupted run ends, and never leaves a half-written output that a later stage reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT, curve_files, live_files, stage_record
from tests.test_stages import Chain, trec_and_qlen_params, write_params

DRIVER = PROJECT_ROOT / "tests" / "faults.py"


def run_stage(chain: Chain, stage: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """The stage script in a fresh process, as dvc runs it; killed at `fault` when given."""
    script = f"stages/{stage}.py"
    cmd = [sys.executable, *([str(DRIVER), fault] if fault else []), script, *chain.argv(stage)]
    env = os.environ | {"OMP_NUM_THREADS": "1", "BERTFIT_LOG_LEVEL": "INFO"}
    return subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)


def killed(chain: Chain, stage: str, fault: str) -> str:
    done = run_stage(chain, stage, fault)
    assert done.returncode == -9, f"not killed at {fault}:\n{done.stderr[-3000:]}"
    return done.stderr


def completed(chain: Chain, stage: str) -> str:
    done = run_stage(chain, stage)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.fixture()
def collected(tmp_path: Path, tiny_model_dir: Path, trec_files: dict) -> Chain:
    """A tmp project with collect done: the tiny BERT, real TREC rows, an ITPT corpus."""
    params_file = write_params(tmp_path / "params.yaml", str(tiny_model_dir), trec_files, "trec")
    chain = Chain(tmp_path, params_file, tmp_path)
    chain.collect()
    return chain


def copy_project(chain: Chain, to: Path) -> Chain:
    shutil.copytree(chain.params[1].rpartition("/")[0], to)
    return Chain(to, to / "params.yaml", to)


def pretrain_result(chain: Chain) -> dict:
    metrics = json.loads((chain.pt_reports / "metrics.json").read_text())
    run = json.loads((chain.pt_reports / "run.json").read_text())
    weights = (chain.pretrained / "model.safetensors").read_bytes()
    return {
        "metrics": metrics,
        "run": run,
        "record": stage_record(chain.pt_reports),
        "weights": weights,
        "live": live_files(chain.pt_reports),
        "curves": curve_files(chain.pt_reports),
    }


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["after_save:10", "while_saving:20", "at_step:15"])
def test_killed_pretrain_resumes_to_the_uninterrupted_result(
    collected: Chain, tmp_path: Path, fault: str
) -> None:
    whole = copy_project(collected, tmp_path.parent / f"{tmp_path.name}-whole")
    completed(whole, "pretrain")
    expected = pretrain_result(whole)

    killed(collected, "pretrain", fault)
    checkpoints = sorted(p.name for p in collected.checkpoints.glob("checkpoint-*"))
    assert "checkpoint-10" in checkpoints
    assert not collected.pretrained.exists()  # nothing half-written for multitask to read
    assert not list(collected.checkpoints.rglob("training_args.bin"))  # no pickle kept
    log = completed(collected, "pretrain")

    if fault.startswith("while_saving"):
        assert "checkpoint-20 is incomplete" in log
    got = pretrain_result(collected)
    assert got["run"]["resumed_from_step"] == 10 and got["run"]["steps"] == 20
    assert got["metrics"] == expected["metrics"]
    assert got["record"] == expected["record"]
    assert got["live"] == expected["live"]  # DVCLive's curves and summary too
    assert got["curves"] == expected["curves"]  # and the tables the plots draw
    assert got["weights"] == expected["weights"]
    assert not list(collected.checkpoints.glob("checkpoint-*"))  # finished: nothing to resume


@pytest.mark.slow
def test_a_model_directory_replaced_in_place_is_not_resumed(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict
) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    params_file = write_params(tmp_path / "params.yaml", str(base), trec_files, "trec")
    chain = Chain(tmp_path, params_file, tmp_path)
    chain.collect()
    killed(chain, "pretrain", "after_save:10")
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))  # other weights, same name
    log = completed(chain, "pretrain")
    assert "holds no checkpoint of this run; starting over" in log
    assert json.loads((chain.pt_reports / "run.json").read_text())["resumed_from_step"] == 0


def stage_result(chain: Chain, stage: str) -> dict:
    reports = {"multitask": chain.mt_reports, "finetune": chain.ft_reports}[stage]
    model = {"multitask": chain.multitasked, "finetune": chain.model}[stage]
    metrics = json.loads((reports / "metrics.json").read_text())
    weights = {p.name: p.read_bytes() for p in sorted(model.rglob("*.safetensors"))}
    return {
        "metrics": metrics,
        "record": stage_record(reports),  # less the machine's times and speeds
        "weights": weights,
        "live": live_files(reports),
        "curves": curve_files(reports),
    }


@pytest.fixture()
def multitask_ready(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict, trec_sample: dict
) -> Chain:
    """collect and pretrain done, multitask on (trec and a regression task) with 30 steps."""
    params_file = trec_and_qlen_params(
        tmp_path,
        str(tiny_model_dir),
        trec_files,
        trec_sample,
        pretrain={"corpus": "none"},
        finetune={"num_train_epochs": 3},
    )
    chain = Chain(tmp_path, params_file, tmp_path)
    chain.collect()
    chain.pretrain()
    return chain


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "fault", "resumed_at"),
    [
        ("multitask", "after_save:10", 10),
        ("multitask", "at_step:25", 20),
        ("finetune", "at_step:20", 15),
    ],
)
def test_killed_multitask_and_finetune_resume_to_the_uninterrupted_result(
    multitask_ready: Chain, tmp_path: Path, stage: str, fault: str, resumed_at: int
) -> None:
    if stage == "finetune":
        multitask_ready.multitask()
    whole = copy_project(multitask_ready, tmp_path.parent / f"{tmp_path.name}-whole")
    completed(whole, stage)
    expected = stage_result(whole, stage)

    killed(multitask_ready, stage, fault)
    checkpoint_dir = multitask_ready.paths[stage]["--checkpoint-dir"]
    assert list(checkpoint_dir.glob("checkpoint-*"))
    log = completed(multitask_ready, stage)
    assert f"checkpoint-{resumed_at}" in log
    assert "resumed selection" in log
    assert stage_result(multitask_ready, stage) == expected
    assert not list(checkpoint_dir.glob("checkpoint-*"))


@pytest.mark.slow
def test_a_killed_evaluate_restarts_cleanly(multitask_ready: Chain, tmp_path: Path) -> None:
    """Killed between its report files (metrics.json new, the rest not), evaluate run again
    writes what an uninterrupted run writes."""
    multitask_ready.multitask()
    multitask_ready.finetune()
    whole = copy_project(multitask_ready, tmp_path.parent / f"{tmp_path.name}-whole")
    completed(whole, "evaluate")

    killed(multitask_ready, "evaluate", "call:bertfit.evaluation.write_json:1")  # per_class.json
    assert (multitask_ready.ev_reports / "metrics.json").is_file()
    assert not (multitask_ready.ev_reports / "per_class.json").exists()
    completed(multitask_ready, "evaluate")
    for name in ("metrics.json", "per_class.json", "confusion.csv", "report.md"):
        assert (multitask_ready.ev_reports / name).read_text() == (
            whole.ev_reports / name
        ).read_text().replace(str(whole.model), str(multitask_ready.model))
    expected = pd.read_parquet(whole.predictions)
    pd.testing.assert_frame_equal(pd.read_parquet(multitask_ready.predictions), expected)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["pretrain", "multitask", "finetune", "evaluate"])
def test_an_unwritable_output_folder_fails_before_any_work(
    multitask_ready: Chain, stage: str
) -> None:
    if stage in ("finetune", "evaluate"):
        multitask_ready.multitask()
    if stage == "evaluate":
        multitask_ready.finetune()
    report_dir = multitask_ready.paths[stage]["--report-dir"]
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.write_text("a file where the stage writes its reports")
    model = multitask_ready.paths[stage].get("--model-dir")
    before = sorted(p.name for p in model.iterdir()) if model and model.is_dir() else None
    with pytest.raises(PermissionError, match=rf"{report_dir}: cannot write there .*nothing was"):
        getattr(multitask_ready, stage)()
    if model is not None:
        after = sorted(p.name for p in model.iterdir()) if model.is_dir() else None
        assert after == before  # nothing trained, nothing replaced


def chain_reports(chain: Chain) -> dict:
    """Every stage's record (less the machine's times and speeds), DVCLive log and curves, and
    the predictions."""
    reports = {}
    for stage in ("pretrain", "multitask", "finetune", "evaluate"):
        report_dir = chain.paths[stage]["--report-dir"]
        reports[stage] = stage_record(report_dir)
        if stage != "evaluate":
            reports[f"{stage} live"] = live_files(report_dir)
            reports[f"{stage} curves"] = curve_files(report_dir)
    # the model's identity names the run's folders (its dir; its fingerprint covers the manifest,
    # whose recipe records the folder each stage started from); the weights are compared through
    # the predictions and every metric
    reports["evaluate"].pop("model")
    reports["predictions"] = pd.read_parquet(chain.predictions).to_dict("list")
    return reports


@pytest.mark.slow
def test_the_same_seed_twice_gives_the_same_results(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict, trec_sample: dict
) -> None:
    """The whole tiny chain (ITPT, multitask, finetune, evaluate), twice on one machine."""
    results = []
    for run in ("first", "second"):
        root = tmp_path / run
        root.mkdir()
        for split in ("train", "validation", "test"):
            shutil.copy(tmp_path / f"{split}.jsonl", root)
        params_file = trec_and_qlen_params(root, str(tiny_model_dir), trec_files, trec_sample)
        chain = Chain(root, params_file, root)
        chain.all()
        results.append(chain_reports(chain))
    assert results[0] == results[1]
    assert results[0]["pretrain"]["steps"] == 20 and results[0]["evaluate"]["test_examples"] > 0


@pytest.mark.slow
def test_a_kill_while_multitask_saves_leaves_nothing_behind(
    multitask_ready: Chain, tmp_path: Path
) -> None:
    """Killed as it writes models/multitask (training done): the staging folder is removed by
    the next run, which resumes from the final checkpoint and saves what an uninterrupted run
    saves, without training again."""
    whole = copy_project(multitask_ready, tmp_path.parent / f"{tmp_path.name}-whole")
    completed(whole, "multitask")

    killed(multitask_ready, "multitask", "call:bertfit.training.multitask.save:1")
    parent = multitask_ready.multitasked.parent
    assert list(parent.glob(".multitask-staging-*"))  # what a kill -9 leaves
    assert not multitask_ready.multitasked.exists()
    log = completed(multitask_ready, "multitask")
    assert "left by a run killed while saving" in log
    assert not list(parent.glob(".multitask-staging-*"))
    assert "checkpoint-30" in log  # resumed at the end: nothing trained twice
    assert stage_result(multitask_ready, "multitask") == stage_result(whole, "multitask")


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fill_the_model_is_an_error(collected: Chain) -> None:
    """The Trainer only warns of missing keys and trains on with fresh weights; a resume must
    fill every weight (tied ones through the tensor they share) or stop."""
    from safetensors.torch import load_file, save_file

    killed(collected, "pretrain", "after_save:10")
    weights = collected.checkpoints / "checkpoint-10" / "model.safetensors"
    tensors = load_file(weights)
    dropped = next(k for k in tensors if "attention.self.query.weight" in k)
    del tensors[dropped]
    save_file(tensors, weights, metadata={"format": "pt"})
    done = run_stage(collected, "pretrain")
    assert done.returncode == 1
    assert f"the checkpoint does not fit the model: missing ['{dropped}']" in done.stderr


@pytest.mark.slow
def test_a_killed_lora_finetune_resumes_to_the_uninterrupted_result(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict
) -> None:
    """A peft adapter's checkpoint (adapter_model.safetensors) goes through the Trainer's own
    adapter save and load."""
    params_file = write_params(
        tmp_path / "params.yaml",
        str(tiny_model_dir),
        trec_files,
        "trec",
        pretrain={"corpus": "none"},
        finetune={"num_train_epochs": 3, "method": "lora", "layer_decay": 1.0},
    )
    chain = Chain(tmp_path, params_file, tmp_path)
    chain.collect()
    chain.pretrain()
    chain.multitask()
    whole = copy_project(chain, tmp_path.parent / f"{tmp_path.name}-whole")
    completed(whole, "finetune")
    killed(chain, "finetune", "at_step:20")
    log = completed(chain, "finetune")
    assert "checkpoint-15" in log and "resumed selection" in log
    assert stage_result(chain, "finetune") == stage_result(whole, "finetune")
