"""Fingerprints that key every cache entry, so no entry outlives the code, data or weights it came from.

A cache key is a hash of what decides the entry: its settings, the fingerprint of its input data and model
weights (``experiments.comparisons.fingerprint_rows`` / ``fingerprint_model``, ``world.reference``), and
``code_fingerprint()``: a hash of the kit's own source. Any edit to the package's code therefore starts
fresh entries; no version number has to be bumped by hand.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # simplepo_helpers/


@functools.lru_cache(maxsize=16)
def code_fingerprint(*parts: str) -> str:
    """sha256 (16 hex digits) of the package's ``.py`` files (relative path and bytes, sorted): all of them,
    or those under ``parts`` (subpackage names such as ``"world"``, relative to the package)."""
    roots = [PACKAGE_ROOT / part for part in parts] or [PACKAGE_ROOT]
    digest = hashlib.sha256()
    for path in sorted(p for root in roots for p in root.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    """sha256 (16 hex digits) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
