"""Writers for the small files DVC tracks: metrics JSON, plot CSVs, markdown reports.

Every writer creates parent folders and writes atomically (a temp file renamed into place), so an
interrupted stage never leaves a half-written metrics file for `dvc metrics diff` to read.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these are ordinary project files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    a 200-column terminal fits a handful (issue 34). run.json is the whole record: every
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


def markdown_table(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
