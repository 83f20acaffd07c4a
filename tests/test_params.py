from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from bertfit.params import (
    FinetuneParams,
    load,
    parse_section,
    parse_target,
    parse_tasks,
    read_params_file,
)
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def project_params() -> dict:
    return read_params_file(PROJECT_ROOT / "params.yaml")


def test_project_params_parse(project_params: dict) -> None:
    tasks = parse_tasks(project_params)
    assert {"mr", "airline", "trec", "bbc", "imdb", "sst2", "trec6", "ag_news"} <= set(tasks)
    assert parse_target(project_params, tasks) == "mr"
    for section in ("model", "collect", "finetune", "evaluate"):
        parse_section(project_params, section)


def test_unknown_key_lists_valid_keys(project_params: dict) -> None:
    data = copy.deepcopy(project_params)
    data["finetune"]["learning_rat"] = 3e-5
    with pytest.raises(
        ValueError,
        match=r"finetune.learning_rat: unknown key; valid keys here: "
        r".*learning_rate",
    ):
        parse_section(data, "finetune")


def test_missing_key_is_an_error_not_a_default(project_params: dict) -> None:
    data = copy.deepcopy(project_params)
    del data["finetune"]["layer_decay"]
    with pytest.raises(ValueError, match=r"finetune.layer_decay: missing key"):
        parse_section(data, "finetune")


def test_out_of_range_value_names_key_and_value(project_params: dict) -> None:
    data = copy.deepcopy(project_params)
    data["finetune"]["layer_decay"] = 1.5
    with pytest.raises(ValueError, match=r"finetune.layer_decay: .*got 1.5"):
        parse_section(data, "finetune")


def test_unknown_key_inside_a_task_source(project_params: dict) -> None:
    data = copy.deepcopy(project_params)
    data["tasks"]["sst2"]["source"]["text_col"] = "sentence"
    with pytest.raises(
        ValueError,
        match=r"tasks.sst2.source.files.text_col: unknown key; "
        r"valid keys here: .*text_column",
    ):
        parse_tasks(data)


def test_unknown_or_missing_source_kind_lists_the_kinds(project_params: dict) -> None:
    data = copy.deepcopy(project_params)
    data["tasks"]["sst2"]["source"]["kind"] = "ftp"
    kinds = r"tasks.sst2.source.kind: must be one of package, files, hub"
    with pytest.raises(ValueError, match=rf"{kinds}; got 'ftp'"):
        parse_tasks(data)
    del data["tasks"]["sst2"]["source"]["kind"]
    with pytest.raises(ValueError, match=rf"{kinds}; the key is missing"):
        parse_tasks(data)


def test_unknown_encoding_of_a_files_source(project_params: dict) -> None:
    data = copy.deepcopy(project_params)
    data["tasks"]["sst2"]["source"]["encoding"] = "latin-11"
    with pytest.raises(
        ValueError, match=r"tasks.sst2.source.files.encoding: Value error, unknown encoding"
    ):
        parse_tasks(data)


def test_target_must_be_in_catalogue(project_params: dict) -> None:
    data = copy.deepcopy(project_params)
    data["target"] = "mrr"
    with pytest.raises(ValueError, match=r"target must name a task.*got 'mrr'.*mr"):
        parse_target(data, parse_tasks(data))


def test_missing_section_and_file(tmp_path: Path, project_params: dict) -> None:
    data = {k: v for k, v in project_params.items() if k != "evaluate"}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"missing section 'evaluate'"):
        load(path, "evaluate")
    with pytest.raises(FileNotFoundError, match=r"params file not found"):
        load(tmp_path / "nope.yaml", "model")


def test_params_are_frozen(project_params: dict) -> None:
    params = parse_section(project_params, "finetune")
    assert isinstance(params, FinetuneParams)
    with pytest.raises(ValidationError, match="frozen"):
        params.learning_rate = 1.0  # type: ignore[misc]


def test_a_key_given_twice_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("finetune:\n  learning_rate: 0.5\n  seed: 1\n  learning_rate: 2.0e-5\n")
    with pytest.raises(ValueError, match=r"key 'learning_rate' is given twice \(lines 2 and 4\)"):
        read_params_file(path)
