"""Columns Arrow can store: a Dataset with the union of all rows' columns, and the rows whose value in a column
cannot share one Arrow column with the others' (``1`` in one row, ``"a"`` in another), found before
``Dataset.from_list`` raises ``ArrowInvalid``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .report import BadRow, where

if TYPE_CHECKING:
    from datasets import Dataset


def _arrow_error(values: list[Any]) -> Exception | None:
    """The error pyarrow raises when making one column of these values (as ``Dataset.from_list`` does), or None."""
    import pyarrow as pa

    try:
        pa.array(values)
    except pa.ArrowException as error:
        return error
    return None


def mixed_type_rows(rows: dict[int, Mapping[str, Any]], lines: Sequence[int] | None) -> list[BadRow]:
    """Rows whose value in a column cannot share one Arrow column with the first non-null value's."""
    bad: dict[int, BadRow] = {}
    for column in dict.fromkeys(key for row in rows.values() for key in row):
        indices = [i for i, row in rows.items() if row.get(column) is not None and i not in bad]
        while indices and (error := _arrow_error(values := [rows[i][column] for i in indices])) is not None:
            # the first value if it cannot be stored at all, else those that cannot sit beside it; if each can
            # but not all together, the end of the longest prefix that builds (values[:low] do, [:high] not)
            pairs = (k for k in range(1, len(values)) if _arrow_error([values[0], values[k]]))
            odd = [0] if _arrow_error(values[:1]) else list(pairs)
            low, high = 0, len(values)
            while not odd and high - low > 1:
                mid = (low + high) // 2
                low, high = (mid, high) if _arrow_error(values[:mid]) is None else (low, mid)
            for k in odd or [high - 1]:
                kind, reason = type(values[k]).__name__, _arrow_error(values[:1] + values[k : k + 1]) or error
                beside = f" beside {where(indices[0], lines)}'s {type(values[0]).__name__}" if k else ""
                message = f"column {column!r}: Arrow cannot store this row's {kind}{beside} ({reason})"
                line = None if lines is None else lines[indices[k]]
                bad[indices[k]] = BadRow(indices[k], "mixed_type_column", message, line)
            indices = [i for i in indices if i not in bad]
    return list(bad.values())


def dataset_from_rows(rows: Sequence[Mapping[str, Any]]) -> Dataset:
    """A Dataset with the union of all rows' columns (Dataset.from_list alone keeps the first row's keys)."""
    from datasets import Dataset

    columns = list(dict.fromkeys(key for row in rows for key in row))
    return Dataset.from_list([{column: row.get(column) for column in columns} for row in rows])
