"""Self-checks for the notebooks' exercises: ``check("ex2.2", my_function)`` prints immediate feedback.

The framework lives in ``course/checks/base.py`` and each notebook's graders in ``course/checks/nbNN.py``; this
module is the door the notebooks and tests import from.
"""

from __future__ import annotations

from . import checks  # noqa: F401  (registers every notebook's graders)
from .checks.base import (
    EXERCISES,
    FAILED,
    NOT_ATTEMPTED,
    PASSED,
    TIERS,
    CheckResult,
    Exercise,
    check,
    exercises,
)

__all__ = [
    "EXERCISES",
    "FAILED",
    "NOT_ATTEMPTED",
    "PASSED",
    "TIERS",
    "CheckResult",
    "Exercise",
    "check",
    "exercises",
]
