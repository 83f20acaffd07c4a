from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from bertfit.data.inputs import stage_inputs
from bertfit.params import (
    SECTIONS,
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
    """params.yaml names the catalogue file (one `tasks` column in `dvc exp show`, issue 13);
    read_params_file puts the file's mapping in its place."""
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert raw["tasks"] == "tasks.yaml"
    catalogue = yaml.safe_load((PROJECT_ROOT / "tasks.yaml").read_text(encoding="utf-8"))
    assert project_params["tasks"] == catalogue
    tasks = parse_tasks(project_params)
    assert {"mr", "airline", "trec", "bbc", "imdb", "sst2", "trec6", "ag_news"} <= set(tasks)
    assert parse_target(project_params, tasks) == "mr"
    stages = [section for section in SECTIONS if section != "search"]
    parsed = {section: parse_section(project_params, section) for section in stages}
    assert set(project_params) == {"target", "tasks", *parsed}
    # the search space is its own file: no stage reads it, so no `dvc exp show` columns
    space = read_params_file(PROJECT_ROOT / "search.yaml")
    assert set(space) == {"search"}
    rate = space["search"]["spaces"]["full"]["learning_rate"]
    assert parse_section(space, "search").spaces.full.learning_rate.low == rate["low"]


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


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("finetun", r"'finetun' \(did you mean 'finetune'\?\)"),
        ("learning_rate", r"'learning_rate'"),
    ],
)
def test_an_unknown_top_level_key_is_an_error(
    tmp_path: Path, project_params: dict, key: str, hint: str
) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(project_params | {key: {"learning_rate": 0.5}}))
    with pytest.raises(ValueError, match=rf"unknown top-level key {hint}; valid top-level keys: "):
        read_params_file(path)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("per_device_train_batch_size", True, "valid integer"),
        ("num_train_epochs", "2", "valid number"),
        ("init_head_from_multitask", "no", "valid boolean"),
        ("learning_rate", "2e-5", "valid number"),
        ("seed", 1.0, "valid integer"),
    ],
)
def test_types_are_strict(project_params: dict, key: str, value: object, expected: str) -> None:
    data = copy.deepcopy(project_params)
    data["finetune"][key] = value
    with pytest.raises(ValueError, match=rf"finetune.{key}: Input should be a {expected}"):
        parse_section(data, "finetune")


def test_an_int_is_a_valid_float(project_params: dict) -> None:
    data = copy.deepcopy(project_params)
    data["finetune"]["num_train_epochs"] = 3
    assert parse_section(data, "finetune").num_train_epochs == 3.0


def test_search_ranges_keep_strict_items() -> None:
    data = read_params_file(PROJECT_ROOT / "search.yaml")
    data["search"]["spaces"]["full"]["num_train_epochs"] = {"low": 1, "high": "4"}
    with pytest.raises(ValueError, match=r"num_train_epochs.range.high.int: Input should be a va"):
        parse_section(data, "search")


def test_a_yaml_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("target: mr\nfinetune:\n  seed: 1\n   learning_rate: 0.5\n")
    with pytest.raises(ValueError, match=r"params.yaml: not valid YAML at line 4, column \d+: "):
        read_params_file(path)


def test_a_number_without_a_dot_is_a_float(tmp_path: Path, project_params: dict) -> None:
    """`dvc exp run -S finetune.learning_rate=3e-5` writes 3e-5, a string to YAML 1.1."""
    path = tmp_path / "params.yaml"
    params = copy.deepcopy(project_params)  # the fixture is shared by the module
    params["finetune"]["learning_rate"] = 0.123  # a marker that only it carries
    text = yaml.safe_dump(params).replace("learning_rate: 0.123", "learning_rate: 3e-5")
    assert text.count("learning_rate: 3e-5") == 1
    path.write_text(text)
    assert load(path, "finetune")[0].learning_rate == 3e-5


@pytest.mark.parametrize("section", ["finetune", "evaluate"])
def test_unquoted_no_means_fp32(project_params: dict, section: str) -> None:
    """`mixed_precision: no` in params.yaml, or `-S finetune.mixed_precision=no`, is YAML's
    false: it means "no" (fp32), not a type error; true stays an error."""
    data = copy.deepcopy(project_params)
    data[section]["mixed_precision"] = yaml.safe_load("no")
    assert parse_section(data, section).mixed_precision == "no"
    data[section]["mixed_precision"] = True
    with pytest.raises(ValueError, match=rf"{section}.mixed_precision"):
        parse_section(data, section)


# --- the catalogue in its own file ----------------------------------------------------------------


def params_with_catalogue(folder: Path, project_params: dict, tasks: object) -> Path:
    """The project's params in `folder` with `tasks: <tasks>` (a file name, or inline)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(project_params | {"tasks": tasks}), encoding="utf-8")
    return path


def test_the_catalogue_file_is_relative_to_the_params_file(
    tmp_path: Path, project_params: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found from the params file's folder wherever the process runs; the data paths inside
    stay as written (collect resolves them from the project root, as before)."""
    folder = tmp_path / "conf"
    params_file = params_with_catalogue(folder, project_params, "catalogue/tasks.yaml")
    (folder / "catalogue").mkdir()
    (folder / "catalogue" / "tasks.yaml").write_text(
        "# my tasks\n"
        "mr:  # comments are fine\n"
        "  domain: support\n"
        "  source: {kind: files, train: data_raw/train.csv}\n"
        "  split: {validation_ratio: 0.1, test_ratio: 0.1}\n"
    )
    monkeypatch.chdir(tmp_path)
    data = read_params_file(params_file)
    tasks = parse_tasks(data, str(params_file))
    assert list(tasks) == ["mr"] and tasks["mr"].domain == "support"
    assert tasks["mr"].source.train == "data_raw/train.csv"
    assert parse_target(data, tasks) == "mr"
    # the read mapping can be written back inline, as tests and benchmarks do
    inline = params_with_catalogue(tmp_path / "elsewhere", data, data["tasks"])
    assert read_params_file(inline)["tasks"] == data["tasks"]


def test_the_inputs_stage_reads_data_paths_of_a_catalogue_file_from_the_root(
    tmp_path: Path, project_params: dict
) -> None:
    """inputs fingerprints what collect reads: a files source's relative path is from the
    project root (--root), not from the catalogue's folder, as when it was inline."""
    conf = tmp_path / "conf"
    data = copy.deepcopy(project_params)
    data["target"] = "mine"
    data["model"]["name"] = "someone/model"  # a hub id: recorded by name, nothing to hash
    data["pretrain"]["corpus"] = "none"
    params_file = params_with_catalogue(conf, data, "tasks.yaml")
    (conf / "tasks.yaml").write_text(
        "mine:\n  domain: x\n  source: {kind: files, train: data_raw/train.csv}\n"
    )
    train = tmp_path / "data_raw" / "train.csv"
    train.parent.mkdir()
    train.write_text("text,label\ngood,pos\nbad,neg\n")
    inputs = stage_inputs(params_file, tmp_path)["collect"]["tasks"]
    assert list(inputs) == ["mine"] and list(inputs["mine"]) == ["data_raw/train.csv"]
    assert inputs["mine"]["data_raw/train.csv"]["size"] == train.stat().st_size


def test_an_inline_catalogue_still_works(tmp_path: Path, project_params: dict) -> None:
    params_file = params_with_catalogue(tmp_path, project_params, project_params["tasks"])
    assert not (tmp_path / "tasks.yaml").exists()
    data = read_params_file(params_file)
    assert data["tasks"] == project_params["tasks"]
    assert set(parse_tasks(data)) == set(parse_tasks(project_params))


def test_a_missing_catalogue_file_names_both_files(tmp_path: Path, project_params: dict) -> None:
    params_file = params_with_catalogue(tmp_path, project_params, "taks.yaml")
    with pytest.raises(
        FileNotFoundError,
        match=r"params.yaml: tasks: 'taks.yaml' names the task catalogue file, but "
        + re.escape(f"{tmp_path / 'taks.yaml'} does not exist (the path is relative to the params"),
    ):
        read_params_file(params_file)


@pytest.mark.parametrize(
    ("text", "got"),
    [
        ("- mr\n- trec\n", r"got list \['mr', 'trec'\]"),
        ("# nothing yet\n", "got an empty file"),
        ("{}\n", r"got dict \{\}"),
        ("tasks.yaml\n", "got str 'tasks.yaml'"),
    ],
)
def test_a_catalogue_that_is_not_a_mapping_names_the_file(
    tmp_path: Path, project_params: dict, text: str, got: str
) -> None:
    params_file = params_with_catalogue(tmp_path, project_params, "tasks.yaml")
    (tmp_path / "tasks.yaml").write_text(text)
    with pytest.raises(
        ValueError,
        match=rf"tasks.yaml: expected the task catalogue, a non-empty mapping of task name to "
        rf"spec .*, {got}",
    ):
        read_params_file(params_file)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("  domain: sentiment", "  domian: sentiment"),
            r"tasks.yaml: invalid task\n  mr.domain: missing key .*\n"
            r"  mr.domian: unknown key; valid keys here: .*domain",
        ),
        (
            ("kind: package", "kind: ftp"),
            r"tasks.yaml: invalid task\n  mr.source.kind: must be one of package, files, hub; "
            r"got 'ftp'",
        ),
        (("test_ratio: 0.1", "test_ratio: 1.5"), r"invalid task\n  mr.split.test_ratio: .*1.5"),
        (("mr:", "Mr:"), r"tasks.yaml: task name 'Mr' must be a lowercase identifier"),
    ],
)
def test_an_invalid_task_in_the_file_names_the_file_and_the_key(
    tmp_path: Path, project_params: dict, edit: tuple[str, str], message: str
) -> None:
    """The project's own tasks.yaml with one mistake in its first task (mr)."""
    text = (PROJECT_ROOT / "tasks.yaml").read_text(encoding="utf-8")
    params_file = params_with_catalogue(tmp_path, project_params, "tasks.yaml")
    (tmp_path / "tasks.yaml").write_text(text.replace(*edit, 1), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as caught:
        read_params_file(params_file)
    assert str(caught.value).startswith(str(tmp_path / "tasks.yaml"))


def test_a_task_given_twice_or_broken_yaml_in_the_file_names_it(
    tmp_path: Path, project_params: dict
) -> None:
    params_file = params_with_catalogue(tmp_path, project_params, "tasks.yaml")
    spec = "  domain: x\n  source: {kind: files, train: a.csv}\n"
    (tmp_path / "tasks.yaml").write_text(f"mr:\n{spec}trec:\n{spec}mr:\n{spec}")
    with pytest.raises(ValueError, match=r"tasks.yaml: key 'mr' is given twice \(lines 1 and 7\)"):
        read_params_file(params_file)
    (tmp_path / "tasks.yaml").write_text(f"mr:\n{spec} trec: [\n")
    with pytest.raises(ValueError, match=r"tasks.yaml: not valid YAML at line \d+, column \d+"):
        read_params_file(params_file)


def test_parse_tasks_refuses_an_unread_catalogue_file_name(project_params: dict) -> None:
    """A mapping that did not go through read_params_file still holds the file name."""
    with pytest.raises(ValueError, match=r"tasks 'tasks.yaml' names a catalogue file; read"):
        parse_tasks(project_params | {"tasks": "tasks.yaml"})
