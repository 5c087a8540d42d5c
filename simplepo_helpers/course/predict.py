"""Prediction exercises: the learner writes a prediction in a variable, the next cell measures and compares.

``compare_prediction("length", predicted, measured)`` prints one line: the prediction beside the measurement
and whether they agree (a number within ``tolerance``, or the same word), or, when the variable still holds
``None``, a reminder to predict first. It never raises for a wrong prediction: being wrong is the point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def compare_prediction(
    name: str,
    prediction: Any,
    measured: Any,
    *,
    tolerance: float | None = None,
    choices: Sequence[str] | None = None,
) -> bool | None:
    """Print the prediction next to the measurement; return whether they agree (None: no prediction).

    Numbers agree within ``tolerance`` (absolute; default 5% of the measured value's size, at least 0.01);
    words agree when equal, case and spaces ignored. ``choices`` lists the valid words, for the feedback.
    """
    if prediction is None or prediction is Ellipsis:
        print(
            f"[{name}] no prediction yet: write it in the variable above before you look. Measured: {_fmt(measured)}"
        )
        return None
    if isinstance(measured, str):
        wanted = str(prediction).strip().lower()
        if choices is not None and wanted not in [c.lower() for c in choices]:
            print(f"[{name}] predict one of {list(choices)}, got {prediction!r}. Measured: {measured}")
            return None
        agree = wanted == measured.strip().lower()
    else:
        value, truth = float(prediction), float(measured)
        tolerance = max(0.05 * abs(truth), 0.01) if tolerance is None else tolerance
        agree = math.isfinite(value) and abs(value - truth) <= tolerance
    verdict = (
        "your prediction holds" if agree else "not what you predicted: the text after this cell says why"
    )
    print(f"[{name}] predicted {_fmt(prediction)}, measured {_fmt(measured)}: {verdict}")
    return agree


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
