from __future__ import annotations

import bz2
import gzip
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from bertfit.data.collect import read_and_prepare
from bertfit.data.sources import (
    RawTask,
    load_files,
    load_hub,
    load_task,
    project_root,
    read_line_files,
    read_table,
    table_format,
)
from bertfit.data.splits import PreparedTask, prepare_task
from bertfit.params import (
    CollectParams,
    FilesSource,
    HubSource,
    PackageSource,
    SplitSpec,
    TaskSpec,
    parse_tasks,
    read_params_file,
)
from tests.conftest import PROJECT_ROOT, read_jsonl_gz


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


# --- bad input files: each a ValueError naming the file, the line where known, and the fix ------


def files_task(tmp_path: Path, train: str, **options: object) -> RawTask:
    return load_files("toy", FilesSource(kind="files", train=train, **options), tmp_path)


@pytest.mark.parametrize("name", ["t.csv", "t.tsv", "t.jsonl", "t.jsonl.gz", "t.parquet"])
def test_an_empty_file_says_so(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match=rf"{name}: the file is empty \(0 bytes\)"):
        read_table(tmp_path / name)


def test_a_file_without_rows_says_so(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("text,label\n")
    pd.DataFrame({"text": pd.Series([], dtype=str)}).to_parquet(tmp_path / "t.parquet")
    (tmp_path / "t.jsonl.gz").write_bytes(gzip.compress(b"\n"))
    (tmp_path / "blank.csv").write_text("\n\n")
    with pytest.raises(ValueError, match=r"t.csv: no rows \(columns: \['text', 'label'\]\)"):
        read_table(tmp_path / "t.csv")
    with pytest.raises(ValueError, match=r"t.parquet: no rows \(columns: \['text'\]\)"):
        read_table(tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"t.jsonl.gz: no rows"):
        read_table(tmp_path / "t.jsonl.gz")
    with pytest.raises(ValueError, match=r"blank.csv: no header line"):
        read_table(tmp_path / "blank.csv")


def test_a_semicolon_file_read_as_csv_names_the_delimiter(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("text;label\nfine;pos\n")
    with pytest.raises(
        ValueError,
        match=r"t.csv: missing column\(s\) \['text', 'label'\]; columns present: "
        r"\['text;label'\].* looks ';'-separated, while .csv is read comma-separated",
    ):
        files_task(tmp_path, "t.csv")


def test_a_ragged_row_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("text,label\nfine,pos\nfine, really,pos\n")
    with pytest.raises(
        ValueError,
        match=r"t.csv line 3: expected 2 fields \(text, label\), saw 3; check the delimiter "
        r"\(.csv is comma-separated, .tsv tab\) or quote the field",
    ):
        read_table(tmp_path / "t.csv")


def test_bytes_not_in_the_encoding_name_the_line_and_the_encoding_option(tmp_path: Path) -> None:
    # past pandas' first chunk, where its own error's position stops being the file's
    content = b"text,label\n" + b"fine,pos\n" * 20_000 + b"caf\xe9,pos\n"
    (tmp_path / "t.csv").write_bytes(content)
    with pytest.raises(
        ValueError,
        match=rf"t.csv: not valid utf-8 at byte {len(content) - 6} \(line 20002: "
        r"b'\\xe9,po'...\); set tasks.toy.source.encoding in the task catalogue "
        r"\(tasks.yaml\)",
    ):
        files_task(tmp_path, "t.csv")
    task = files_task(tmp_path, "t.csv", encoding="latin-1")
    assert task.splits["train"]["text"].iloc[-1] == "café"


def test_a_broken_json_line_is_named(tmp_path: Path) -> None:
    lines = ['{"text": "a", "label": "x"}', "", '{"text": "b", "label": }', "[1, 2]"]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"t.jsonl line 3: not valid JSON \(Expecting value"):
        read_table(tmp_path / "t.jsonl")
    (tmp_path / "t.jsonl").write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    with pytest.raises(ValueError, match=r"t.jsonl line 3: a JSON list, not an object"):
        read_table(tmp_path / "t.jsonl")


def test_a_truncated_gzip_file_is_named(tmp_path: Path) -> None:
    data = gzip.compress(b'{"text": "a", "label": "x"}\n' * 100)
    (tmp_path / "t.jsonl.gz").write_bytes(data[:-12])
    (tmp_path / "plain.csv.gz").write_text("text,label\na,x\n")
    with pytest.raises(ValueError, match=r"t.jsonl.gz: the compressed data is truncated"):
        read_table(tmp_path / "t.jsonl.gz")
    with pytest.raises(ValueError, match=r"plain.csv.gz: .*not compressed at all"):
        read_table(tmp_path / "plain.csv.gz")


def test_a_binary_file_named_csv_says_what_it_is(tmp_path: Path) -> None:
    (tmp_path / "noise.csv").write_bytes(bytes(range(256)) * 4)
    with zipfile.ZipFile(tmp_path / "zipped.csv", "w") as z:
        z.writestr("train.csv", "text,label\na,x\n")
    with pytest.raises(
        ValueError, match=r"noise.csv: this is binary data \(a NUL byte at offset 0"
    ):
        read_table(tmp_path / "noise.csv")
    with pytest.raises(ValueError, match=r"zipped.csv: this is a zip archive.*not CSV / TSV text"):
        read_table(tmp_path / "zipped.csv")


def test_text_that_is_not_strings_names_the_column_and_dtype(tmp_path: Path) -> None:
    pd.DataFrame({"text": [1, 2], "label": ["x", "y"]}).to_parquet(tmp_path / "t.parquet")
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": 5, "label": "y"}\n')
    (tmp_path / "t.csv").write_text("text,label\n007,x\n1.5,y\n")
    with pytest.raises(
        ValueError, match=r"t.parquet: column 'text' must hold text, but holds integer values"
    ):
        files_task(tmp_path, "t.parquet")
    with pytest.raises(ValueError, match=r"t.jsonl: column 'text' .*\(dtype object; data row 2: 5"):
        files_task(tmp_path, "t.jsonl")
    # CSV cells are text: numbers stay as written; a categorical column of strings is text too
    assert files_task(tmp_path, "t.csv").splits["train"]["text"].tolist() == ["007", "1.5"]
    df = pd.DataFrame({"text": pd.Categorical(["a", None]), "label": ["x", "y"]})
    df.to_parquet(tmp_path / "t.parquet")
    assert files_task(tmp_path, "t.parquet").splits["train"]["text"].tolist()[0] == "a"


def test_missing_texts_are_counted(tmp_path: Path) -> None:
    df = pd.DataFrame({"text": [f"t{i}" for i in range(9)] + [None], "label": ["x", "y"] * 5})
    df.to_parquet(tmp_path / "t.parquet")
    df.to_parquet(tmp_path / "more.parquet")
    raw = files_task(tmp_path, "t.parquet", unlabeled="more.parquet")
    assert raw.notes == {"unlabeled_missing_text": 1} and len(raw.unlabeled) == 9
    task = prepare_task(raw, SplitSpec(validation_ratio=0.2, test_ratio=0.2), 0, 0.1)
    assert task.counts["empty_removed_train"] == 1


def test_blank_labels_are_missing_and_fail_with_rows(tmp_path: Path) -> None:
    rows = [("a", ""), ("b", "  ")]
    rows += [(f"t{i}", "xy"[i % 2]) for i in range(18)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "t.csv", index=False)
    raw = files_task(tmp_path, "t.csv")
    split = SplitSpec(validation_ratio=0.2, test_ratio=0.2)
    with pytest.raises(
        ValueError,
        match=rf"tasks.toy \[train\] {tmp_path / 't.csv'}: 2 of 20 rows have no label \(10.0%; "
        r"rows 1, 2, 1 = the first data row\), above collect.max_missing_label_ratio=0.0",
    ):
        prepare_task(raw, split, 0, 0.0)
    task = prepare_task(raw, split, 0, 0.0, max_missing_label_ratio=0.2)
    assert task.labels == ["x", "y"]
    assert task.counts["missing_label_removed_train"] == 2


def collected(tmp_path: Path, train: str, ratio: float) -> PreparedTask:
    """The file `train` as collect reads and prepares it (validation and test: `ratio` each)."""
    source = FilesSource(kind="files", train=train)
    spec = TaskSpec(domain="test", source=source, split=SplitSpec(validation_ratio=ratio,
                                                                  test_ratio=ratio))  # fmt: skip
    params = CollectParams(seed=0, max_empty_ratio=0.1, max_missing_label_ratio=0.0,
                           corpus_heldout_ratio=0.1, warn_unknown_token_share=0.1)  # fmt: skip
    return read_and_prepare("toy", spec, params, tmp_path)


def test_a_class_named_none_stays_a_class_with_a_warning(
    tmp_path: Path, trec_sample: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """A class may be called None, null or NaN: CSV cells are text, so these are labels."""
    texts = [r["text"] for r in trec_sample["train"][:60]]
    labels = ["None", "NaN", "ok"] * 20
    pd.DataFrame({"text": texts, "label": labels}).to_csv(tmp_path / "t.csv", index=False)
    with caplog.at_level("WARNING"):
        task = collected(tmp_path, "t.csv", 0.2)
    assert task.labels == ["NaN", "None", "ok"]
    assert task.counts["missing_label_removed_train"] == 0
    assert "labels ['NaN', 'None'] (rows: {'None': 20, 'NaN': 20}) read like a missing value; " \
        "they are kept as classes" in caplog.text  # fmt: skip


@pytest.mark.parametrize(
    ("name", "write", "spellings"),
    [
        ("t.jsonl", lambda df, p: df.to_json(p, orient="records", lines=True), ["1", "1.0"]),
        ("t.csv", lambda df, p: df.to_csv(p, index=False), ["01", "1", "1.0"]),
    ],
)
def test_one_number_spelled_several_ways_is_warned(
    tmp_path: Path, trec_sample: dict, caplog: pytest.LogCaptureFixture, name, write, spellings
) -> None:
    texts = [r["text"] for r in trec_sample["train"][:60]]
    # JSON: the numbers 1 and 1.0 and the string "1"; a spreadsheet's CSV: 1, 1.0 and 01
    ones = [1, 1.0, "1"] if name.endswith("jsonl") else ["1", "1.0", "01"]
    labels = [ones[i % 3] if i % 2 else 0 for i in range(60)]
    write(pd.DataFrame({"text": texts, "label": pd.Series(labels, dtype=object)}), tmp_path / name)
    with caplog.at_level("WARNING"):
        task = collected(tmp_path, name, 0.2)
    assert f"labels {spellings} all spell the number 1 " in caplog.text
    assert task.counts["labels_spelling_one_number"] == len(spellings)


def test_texts_under_two_labels_are_counted_and_warned(
    tmp_path: Path, trec_sample: dict, caplog: pytest.LogCaptureFixture
) -> None:
    rows = trec_sample["train"][:200]
    texts = [r["text"] for r in rows]
    labels = [r["label"] for r in rows]
    flipped = [("DESC" if label != "DESC" else "HUM") for label in labels[:40]]
    df = pd.DataFrame({"text": texts + texts[:40], "label": labels + flipped})
    df.to_csv(tmp_path / "t.csv", index=False)
    with caplog.at_level("WARNING"):
        task = collected(tmp_path, "t.csv", 0.1)
    assert task.counts["texts_with_conflicting_labels"] == 40
    assert "toy: 40 texts occur with different labels (80 rows)" in caplog.text


@pytest.mark.parametrize("sep", [",", "\t"])
def test_an_unclosed_quote_names_its_line_instead_of_eating_rows(
    tmp_path: Path, shared_datasets: Path, sep: str
) -> None:
    rows = read_jsonl_gz(shared_datasets / "sst2" / "train.jsonl.gz", 120)
    lines = ["text" + sep + "label"]
    for i, r in enumerate(rows):
        text = r["text"].replace(sep, " ").replace('"', "")
        # rows 5 and 20 open a quote they never close, as reviews and tweets do
        lines.append(('"' if i in (4, 19) else "") + text + sep + r["label"])
    name = "t.tsv" if sep == "\t" else "t.csv"
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{name} line 6: a field opens with a quote that is "
                       r"never closed, so the next \d+ row\(s\)"):  # fmt: skip
        files_task(tmp_path, name)


def test_a_utf16_file_suggests_its_encoding(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes("text,label\nbonjour,fr\nhello,en\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"this looks like UTF-16 text .*set "
                       r"tasks.toy.source.encoding: utf-16"):  # fmt: skip
        files_task(tmp_path, "t.csv")
    raw = files_task(tmp_path, "t.csv", encoding="utf-16")
    assert raw.splits["train"]["label"].tolist() == ["fr", "en"]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_null_labels_in_jsonl_and_parquet_are_missing(tmp_path: Path, suffix: str) -> None:
    df = pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": [1.0, 0.0] * 4 + [None] * 2})
    path = tmp_path / f"t{suffix}"
    df.to_parquet(path) if suffix == ".parquet" else df.to_json(path, orient="records", lines=True)
    with pytest.raises(ValueError, match=r"2 of 10 rows have no label \(20.0%; rows 9, 10,"):
        prepare_task(files_task(tmp_path, path.name), None, 0, 0.0)


def test_the_format_comes_from_the_name_or_from_the_caller(tmp_path: Path) -> None:
    names = ["a.csv", "a.TSV", "a.tsv.bz2", "a.json", "a.jsonl.gz", "a.parquet", "a.parquet.gz"]
    assert [table_format(Path(n)) for n in names] == [
        "csv",
        "tsv",
        "tsv",
        "jsonl",
        "jsonl",
        "parquet",
        None,
    ]
    assert table_format(Path("a.txt")) is None
    rows = "text\tlabel\n007\tx\n"
    (tmp_path / "t.tsv.bz2").write_bytes(bz2.compress(rows.encode()))
    (tmp_path / "t.txt").write_text(rows)
    assert read_table(tmp_path / "t.tsv.bz2")["text"].tolist() == ["007"]
    assert read_table(tmp_path / "t.txt", fmt="tsv")["text"].tolist() == ["007"]


def test_a_file_outside_the_catalogue_is_not_pointed_at_it(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes(b"text\ncaf\xe9\n")
    with pytest.raises(ValueError, match=r"t.csv: not valid utf-8 at byte 8") as err:
        read_table(tmp_path / "t.csv", task=None)
    assert str(err.value).endswith("; save the file as UTF-8") and "tasks" not in str(err.value)
