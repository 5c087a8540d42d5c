"""Where built artefacts (the reference model) are cached: env SIMPLEPO_CACHE, else ~/.cache/simplepo."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The kit's cache folder (not created here)."""
    return Path(os.environ.get("SIMPLEPO_CACHE") or Path.home() / ".cache" / "simplepo").expanduser()
