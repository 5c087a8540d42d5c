"""Files that survive a killed process: atomic writes (a temporary file or folder beside the target, then a
rename) and append-only JSON-lines records read back with a partial last line skipped."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_safe_name(name: object, what: str) -> str:
    """``name`` when it is a safe file name (letters, digits, ``.``, ``_``, ``-``; a letter or digit first; at
    most 100 characters), else ValueError naming ``what``: such names are joined into paths unchecked."""
    if not isinstance(name, str) or not SAFE_NAME.match(name):
        raise ValueError(
            f"{what} {name!r} is not a safe file name: use only letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (at most 100 characters)"
        )
    return name


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


def publish_folder(staging: Path, target: Path, *, replace: bool = True) -> bool:
    """Put the filled folder ``staging`` (beside ``target``) at ``target`` by renames: a reader sees the old
    folder or the new one, never a half-written one. ``replace``: an existing ``target`` is moved aside, then
    removed; otherwise a ``target`` that another process published first is kept (returns False; the caller
    removes ``staging``). True when ``staging`` landed."""
    if replace and target.exists():
        aside = target.with_name(f".{target.name}-old-{os.getpid()}")
        os.replace(target, aside)
        os.replace(staging, target)
        shutil.rmtree(aside, ignore_errors=True)
        return True
    try:
        os.replace(staging, target)
    except OSError:
        if replace or not target.exists():
            raise
        return False
    return True


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
