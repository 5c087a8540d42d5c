"""Files that survive a killed process: atomic writes (a temporary file beside it, then a rename) and append-only
JSON-lines records read back with a partial last line skipped."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a killed write leaves the old file, or none, never a partial one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_records(path: Path) -> list[dict]:
    """Every complete JSON line of ``path`` (a partial last line, left by a killed write, is skipped)."""
    if not path.is_file():
        return []
    records, lines = [], path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number != len(lines):
                raise ValueError(
                    f"{path}, line {number}: not valid JSON (only the last line may be partial)"
                ) from error
    return records
