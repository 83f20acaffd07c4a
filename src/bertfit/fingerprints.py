"""md5 fingerprints of files and directories: what the inputs stage records and what a resumable
checkpoint's identity includes (the model directory's files). md5, as DVC uses for files (a
file's md5 here equals its dvc.lock entry; directories are summed differently)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: Path) -> dict[str, Any]:
    """md5 and size of a file; of a directory, the md5 of its files' relative paths and md5s."""
    if path.is_file():
        return {"md5": file_md5(path), "size": path.stat().st_size}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        h = hashlib.md5()
        for file in files:
            h.update(f"{file.relative_to(path).as_posix()}\0{file_md5(file)}\n".encode())
        return {
            "md5": h.hexdigest(),
            "files": len(files),
            "size": sum(f.stat().st_size for f in files),
        }
    return {"missing": True}  # collect raises the readable error for it
