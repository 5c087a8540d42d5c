"""JSONL files read as bytes and parsed line by line (not with ``datasets.load_dataset("json")``), so a
broken line is reported with its number and rows of mixed types never reach Arrow's schema inference."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BrokenLine:
    """Stands in for a JSONL line that is not a JSON object (or not valid UTF-8): the reason and a message."""

    error: str
    reason: str = "invalid_json"


def _parse_line(raw: bytes, line_number: int) -> Any:
    """One JSONL line (bytes) as a dict, or a BrokenLine saying why not (encoding first, then JSON)."""
    try:
        text = raw.decode("utf-8-sig" if line_number == 1 else "utf-8")  # a BOM may open the file
    except UnicodeDecodeError as error:
        return BrokenLine(
            f"line {line_number} is not valid UTF-8 (byte {raw[error.start]:#04x} at offset {error.start})",
            "invalid_encoding",
        )
    try:
        row = json.loads(text)
    except json.JSONDecodeError as error:
        return BrokenLine(f"line {line_number} is not valid JSON ({error.msg}, column {error.colno})")
    if not isinstance(row, dict):
        return BrokenLine(f"line {line_number} is a JSON {type(row).__name__}, not an object")
    return row


def read_jsonl(path: str | os.PathLike) -> tuple[list[Any], list[int]]:
    """Rows of a JSONL file and their 1-based line numbers; a broken line becomes a placeholder reported later.

    The file is read as bytes and each line decoded on its own, so one line that is not UTF-8 is that row's
    problem (``invalid_encoding``) and the other lines still load. Blank lines are skipped.
    """
    rows: list[Any] = []
    lines: list[int] = []
    for line_number, raw in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue  # a blank line (or the file's final newline) holds no row
        rows.append(_parse_line(raw, line_number))
        lines.append(line_number)
    return rows, lines
