"""Progress bars for long work: on by default from ``LONG_WORK`` items, off for short work and under pytest."""

from __future__ import annotations

import os

from tqdm.auto import tqdm

LONG_WORK = 256  # items (prompts, samples, pairs) from which a progress bar is shown by default


def show_progress(progress: bool | None, items: int) -> bool:
    """``progress`` when given; by default (None) on for ``LONG_WORK`` items or more, off under pytest."""
    if progress is not None:
        return progress
    return items >= LONG_WORK and "PYTEST_CURRENT_TEST" not in os.environ


def progress_bar(total: int, progress: bool | None, desc: str) -> tqdm:
    """A tqdm bar (``tqdm.auto``: a widget in notebooks) that disappears when done, keeping outputs clean."""
    return tqdm(total=total, desc=desc, disable=not show_progress(progress, total), leave=False)
