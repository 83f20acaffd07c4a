"""Writers for the small files DVC tracks: metrics JSON, plot CSVs, markdown reports.

Every writer creates parent folders and writes atomically (a temp file renamed into place), so an
interrupted stage never leaves a half-written metrics file for `dvc metrics diff` to read.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# in a stage's report directory: the long tables dvc.yaml's plots draw (training.live writes
# them; evaluate reads finetune's validation curve from there)
CURVES_DIR = "curves"


def file_mode() -> int:
    """The mode a plain new file gets under the process's umask (0644 under the usual 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A new file at `path`, written through the yielded binary handle and renamed into place
    when the block ends; nothing at `path` if it fails.

    The temporary file is made by mkstemp beside `path`: an unpredictable name, created
    exclusively, so a symlink planted in a folder others can write is never written through;
    it gets the mode any new file gets (mkstemp makes it private: a model another account
    could not load)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))


def make_readable(folder: Path) -> None:
    """Files and folders under `folder` get the modes new ones get under the umask: libraries
    that save through a private temporary file (transformers 5 writes model.safetensors 0600)
    would otherwise leave a model other accounts cannot load."""
    mode = file_mode()
    for item in [folder, *folder.rglob("*")]:
        if item.is_symlink():
            continue
        item.chmod(mode | (mode & 0o444) >> 2 if item.is_dir() else mode)


def check_writable(*folders: Path) -> None:
    """Fail before any work when a folder a stage writes to cannot be written (read-only, or a
    file in its place): a stage that trained first would fail only at the end, after the
    time was spent and with some outputs already replaced."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise PermissionError(
                f"{folder}: cannot write there ({err.__class__.__name__}: {err.strerror or err}); "
                "fix its permissions or the path, then run the stage again (nothing was "
                "written)"
            ) from err


def _plain(value: Any) -> Any:
    """numpy scalars and containers -> plain JSON types; NaN/inf become null."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` as write_json writes it and json.load reads it back (plain floats, NaN as None)."""
    return json.loads(json.dumps(_plain(data)))


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text(path, json.dumps(_plain(data), indent=2, sort_keys=True) + "\n")


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], fieldnames: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(_plain(dict(row)))
    write_text(path, buf.getvalue())


def pick(record: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The values at `keys` (dotted paths into nested dicts, `validation.accuracy`), nested as in
    the record; a path the record does not have is left out."""
    picked: dict[str, Any] = {}
    for key in keys:
        *parents, leaf = key.split(".")
        source: Any = record
        for part in parents:
            source = source.get(part) if isinstance(source, Mapping) else None
        if not isinstance(source, Mapping) or leaf not in source:
            continue
        target = picked
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = source[leaf]
    return picked


def split_record(
    record: Mapping[str, Any], metric_keys: Iterable[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stage's record -> (metrics.json, run.json).

    metrics.json holds the few numbers a reviewer compares (`metric_keys`): DVC declares it a
    metric, so each of its values is a `dvc exp show` column and a `dvc metrics diff` row, and
    a 200-column terminal fits a handful. run.json is the whole record: every
    number, the strings (what ran: task, metric, corpus), the machine's times and throughput,
    and the stage's params; `git diff` shows it (evaluate's is in git, the training stages'
    are gathered into reports/summary/stages.json).
    """
    metrics = pick(record, metric_keys)
    strings = sorted(k for k, v in _leaves(metrics) if isinstance(v, str))
    if strings:
        raise RuntimeError(f"metrics {strings} are strings: metrics.json holds numbers only")
    return metrics, dict(record)


def _leaves(data: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def write_record(report_dir: Path, record: Mapping[str, Any], metric_keys: Iterable[str]) -> None:
    """A stage's metrics.json and run.json (split_record)."""
    metrics, run = split_record(record, metric_keys)
    write_json(report_dir / "metrics.json", metrics)
    write_json(report_dir / "run.json", run)


def md_cell(value: Any) -> str:
    """A value as one markdown table cell: a user's string (a label) may hold a line break, a
    `|` or HTML, which would end the row, split the cell or be rendered as markup."""
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    text = " ".join(text.splitlines())
    return html.escape(text, quote=False).replace("|", "\\|")


def md_code(value: Any) -> str:
    """A user's string as inline code on one line: a fence longer than any run of backticks
    inside it (CommonMark), line breaks as spaces; code is shown as written, never as HTML."""
    text = " ".join(str(value).splitlines())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_table(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    cell = md_cell
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
