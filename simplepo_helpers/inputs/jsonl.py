"""JSONL files read as bytes and parsed line by line (not with ``datasets.load_dataset("json")``), so a
broken line is reported with its number and rows of mixed types never reach Arrow's schema inference."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BrokenLine:
    """Stands in for a JSONL line that is not a JSON object (or not valid UTF-8): the reason and a message."""

    error: str
    reason: str = "invalid_json"


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s object hook: a dict, refusing a key given twice (json keeps the last one silently)."""
    row = dict(pairs)
    if len(row) < len(pairs):
        raise _DuplicateKey(next(key for i, (key, _) in enumerate(pairs) if key in dict(pairs[:i])))
    return row


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
        row = json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as error:
        return BrokenLine(f"line {line_number} is not valid JSON ({error.msg}, column {error.colno})")
    except _DuplicateKey as error:
        return BrokenLine(f"line {line_number} gives the key {error.args[0]!r} twice", "duplicate_key")
    except RecursionError:
        return BrokenLine(
            f"line {line_number} nests brackets deeper than the JSON parser can follow", "too_deeply_nested"
        )
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


def encodable(value: Any) -> bool:
    """False when a string (or a message's content) cannot be written as UTF-8: a lone surrogate, as JSON's
    ``"\\ud800"`` gives."""
    texts = [value] if isinstance(value, str) else [m.get("content") for m in value if isinstance(m, Mapping)]
    try:
        for text in texts:
            if isinstance(text, str):
                text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
