"""A dataclass's fields checked against their annotations, so a config of the wrong type fails by name."""

from __future__ import annotations

import numbers
from typing import Any, get_args, get_type_hints


def check_field_types(config: Any) -> None:
    """TypeError naming the first field whose value is not of its annotated type, the value and the type
    expected. An int is a number; a bool is not; a string never is, not even "1e-5"."""
    for name, hint in get_type_hints(type(config)).items():
        value, allowed = getattr(config, name), get_args(hint) or (hint,)  # X | None -> (X, NoneType)
        if isinstance(value, tuple(numbers.Real if t is float else t for t in allowed)) and (
            bool in allowed or not isinstance(value, bool)
        ):
            continue
        names = [
            {float: "a number", type(None): "None"}.get(t, getattr(t, "__name__", str(t))) for t in allowed
        ]
        raise TypeError(
            f"{type(config).__name__}.{name} must be {' or '.join(names)}, got {value!r} ({type(value).__name__})"
        )
