"""What ``data.validate_preferences`` found: the reason codes, each bad row, and the report.

Reasons, checked in this order (the first one found is reported):

- ``invalid_encoding``: a JSONL line that is not valid UTF-8, or a field holding a lone surrogate
  (``"\\ud800"`` in JSON), which no tokenizer or Arrow table can take.
- ``invalid_json``: a JSONL line that does not parse, or is not a JSON object.
- ``duplicate_key``: a JSONL line whose object (or a nested one) names a key twice; JSON parsers keep the
  last value silently, so which one was meant is unknown.
- ``too_deeply_nested``: a JSONL line nesting brackets deeper than Python's parser can follow.
- ``missing_field``: ``prompt``, ``chosen`` or ``rejected`` is absent or null.
- ``wrong_type``: a field is neither a string nor a list of ``{"role": str, "content": str}`` messages.
- ``mixed_formats``: a row mixes strings and message lists, or its format differs from the first good row.
- ``wrong_roles``: roles outside system/user/assistant, a prompt that does not alternate user/assistant
  (after any leading system messages) from a user turn to a user turn, or a chosen/rejected that is not
  exactly one assistant message.
- ``empty_prompt`` / ``empty_response``: a prompt or response that is empty or only whitespace.
- ``identical_responses``: chosen equals rejected, or differs only in whitespace (nothing to prefer).
- ``untokenisable`` (tokenizer given): ``tokenize_preference`` refuses the row, e.g. the eos token inside a
  response, a chat template that renders the prompt differently when a response follows, or one that
  raises (``raise_exception``, or any jinja2 error).
- ``too_long`` (tokenizer and ``max_length`` given): the responses cannot be kept whole, even with the
  prompt cut to its minimum (the BOS and its last token). The collator would cut the response and its EOS,
  biasing the length-normalised SimPO reward, so the validator rejects such rows instead.
- ``mixed_type_column`` (rows given as a list or a JSONL file): a column, extra ones included, whose value
  in this row cannot share one Arrow column with the first row's value (``1`` in one row, ``"a"`` in
  another); checked over the rows that passed everything else, it replaces pyarrow's ``ArrowInvalid``.

Not errors: a row repeating an earlier row's prompt, chosen and rejected is kept (each copy weighs in
training) and listed in ``report.notes`` (``duplicate_row``); no rows at all is an error under ``strict``
and a warning otherwise.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

REASONS = (
    "invalid_encoding",
    "invalid_json",
    "duplicate_key",
    "too_deeply_nested",
    "missing_field",
    "wrong_type",
    "mixed_formats",
    "wrong_roles",
    "empty_prompt",
    "empty_response",
    "identical_responses",
    "untokenisable",
    "too_long",
    "mixed_type_column",
)


@dataclass(frozen=True)
class BadRow:
    """One rejected row: its 0-based index in the input, the reason code and a readable message."""

    index: int
    reason: str
    message: str
    line: int | None = None  # 1-based line number for JSONL input

    def __str__(self) -> str:
        where = f"row {self.index}" + (f" (line {self.line})" if self.line is not None else "")
        return f"{where}: {self.reason}: {self.message}"


@dataclass
class ValidationReport:
    """What ``validate_preferences`` found: kept row indices, bad rows and counts."""

    n_total: int
    kept_indices: list[int]
    bad_rows: list[BadRow]
    format: str | None = None  # "standard" or "conversational" (the first good row's), None if no good row
    n_prompt_truncated: int = 0  # kept rows whose prompt must be cut to fit max_length / max_prompt_length
    n_prompt_extracted: int = 0  # kept rows in TRL's implicit-prompt format, their shared prompt extracted
    notes: list[BadRow] = field(default_factory=list)  # kept rows worth a look: duplicate_row

    @property
    def n_kept(self) -> int:
        return len(self.kept_indices)

    @property
    def n_bad(self) -> int:
        return len(self.bad_rows)

    @property
    def reason_counts(self) -> dict[str, int]:
        """Number of bad rows per reason, most frequent first."""
        return dict(Counter(bad.reason for bad in self.bad_rows).most_common())

    def summary(self, max_rows: int = 10) -> str:
        lines = [
            f"{self.n_total} rows: {self.n_kept} kept, {self.n_bad} bad"
            + (f" ({self.format} format)" if self.format else "")
        ]
        if self.bad_rows:
            lines.append(
                "bad rows by reason: " + ", ".join(f"{r} {n}" for r, n in self.reason_counts.items())
            )
            lines += [f"  {bad}" for bad in self.bad_rows[:max_rows]]
            if self.n_bad > max_rows:
                lines.append(f"  ... and {self.n_bad - max_rows} more (see report.bad_rows)")
        if self.notes:
            lines.append(f"{len(self.notes)} kept rows repeat an earlier row (each copy counts in training):")
            lines += [f"  {note}" for note in self.notes[:max_rows]]
            if len(self.notes) > max_rows:
                lines.append(f"  ... and {len(self.notes) - max_rows} more (see report.notes)")
        if self.n_prompt_extracted:
            lines.append(f"{self.n_prompt_extracted} kept rows had an implicit prompt, extracted as TRL does")
        if self.n_prompt_truncated:
            lines.append(f"{self.n_prompt_truncated} kept rows have their prompt cut (left) to fit")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        head = html.escape(self.summary(max_rows=0))
        rows = "".join(
            f"<tr><td>{b.index}</td><td>{'' if b.line is None else b.line}</td>"
            f"<td>{html.escape(b.reason)}</td><td>{html.escape(b.message)}</td></tr>"
            for b in self.bad_rows[:50]
        )
        table = (
            f"<table><tr><th>row</th><th>line</th><th>reason</th><th>message</th></tr>{rows}</table>"
            if rows
            else ""
        )
        return f"<pre>{head}</pre>{table}"


class PreferenceDataError(ValueError):
    """Raised with ``strict=True`` when any row is bad; ``.report`` holds the full ValidationReport."""

    def __init__(self, report: ValidationReport, message: str | None = None):
        super().__init__(message or "bad preference rows:\n" + report.summary(max_rows=20))
        self.report = report


def where(index: int, lines: Sequence[int] | None) -> str:
    return f"row {index}" + ("" if lines is None else f" (line {lines[index]})")


def duplicate_notes(rows: Mapping[int, Mapping[str, Any]], lines: Sequence[int] | None) -> list[BadRow]:
    """A ``duplicate_row`` note for each row repeating an earlier row's prompt, chosen and rejected."""
    seen: dict[str, int] = {}  # the three fields as JSON -> index of the first row holding them
    notes = []
    for index, row in rows.items():
        fields = json.dumps([row[name] for name in ("prompt", "chosen", "rejected")], sort_keys=True)
        if (first := seen.setdefault(fields, index)) != index:
            line = None if lines is None else lines[index]
            notes.append(BadRow(index, "duplicate_row", f"same pair as {where(first, lines)}", line))
    return notes
