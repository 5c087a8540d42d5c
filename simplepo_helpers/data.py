"""Loading a preference dataset (a Dataset, a list of dicts or a JSONL file) and checking it row by row.

Every bad row is reported with its index (and, for JSONL, its line number) and one reason; good rows are
kept in order, extra columns included. Reasons, checked in this order (the first one found is reported):

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

Rows in TRL's implicit-prompt format (no ``prompt``: ``chosen`` and ``rejected`` carry the whole text or
conversation) are made explicit first, the shared prefix becoming the prompt as TRL's ``maybe_extract_prompt``
does (``rows.split_implicit_prompt``); the report counts them.

JSONL files are read as bytes and decoded and parsed line by line here (not with ``datasets.load_dataset("json")``) so that a broken line
is reported with its number and rows of mixed types never reach Arrow's schema inference; blank lines are
skipped. The good rows then become a ``datasets.Dataset``.
"""

from __future__ import annotations

import html
import json
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batching import tokenize_preference, truncate_preference
from .rows import BrokenLine, check_limits, is_implicit_prompt, row_format, row_problem, split_implicit_prompt

if TYPE_CHECKING:  # heavy imports, only needed by the loader
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

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


@dataclass
class _Checker:
    """Holds what the row checks need across rows (the dataset format, the tokenizer settings)."""

    tokenizer: PreTrainedTokenizerBase | None = None
    max_length: int | None = None
    max_prompt_length: int | None = None
    format: str | None = None
    format_row: int | None = None
    n_prompt_truncated: int = 0
    n_prompt_extracted: int = 0
    explicit: dict[int, dict[str, Any]] = field(
        default_factory=dict
    )  # index -> row with its prompt extracted
    bad: list[BadRow] = field(default_factory=list)


def _check_row(checker: _Checker, index: int, row: Any) -> tuple[str, str] | None:
    """All checks of one row, structural first, then format consistency, then tokenisation and length."""
    if isinstance(row, Mapping) and is_implicit_prompt(row):
        row, problem = split_implicit_prompt(row)
        if problem is not None:
            return problem
        checker.explicit[index] = row
    problem = row_problem(row)
    if problem is not None:
        return problem
    fmt = row_format(row)
    if checker.format is None:
        checker.format, checker.format_row = fmt, index
    elif fmt != checker.format:
        return "mixed_formats", f"the row is {fmt} but row {checker.format_row} is {checker.format}"
    if checker.tokenizer is None:
        return None
    try:
        tokens = tokenize_preference(row, checker.tokenizer)
    except ValueError as error:
        return "untokenisable", str(error)
    except (
        Exception
    ) as error:  # a chat template's raise_exception (jinja2's TemplateError), or any jinja2 error
        if not type(error).__module__.startswith("jinja2"):
            raise
        return "untokenisable", f"the chat template raised {type(error).__name__}: {error}"
    if checker.max_length is None and checker.max_prompt_length is None:
        return None
    try:
        cut = truncate_preference(
            tokens,
            max_length=checker.max_length,
            max_prompt_length=checker.max_prompt_length,
            bos_token_id=checker.tokenizer.bos_token_id,
        )
    except ValueError as error:
        return "too_long", str(error)
    for name in ("chosen_ids", "rejected_ids"):
        if len(cut[name]) < len(tokens[name]):
            return "too_long", (
                f"{name[:-4]} needs {len(tokens[name])} tokens but only {len(cut[name])} fit in "
                f"max_length={checker.max_length} with the prompt cut to {len(cut['prompt_ids'])} tokens"
            )
    checker.n_prompt_truncated += len(cut["prompt_ids"]) < len(tokens["prompt_ids"])
    return None


def _where(index: int, lines: Sequence[int] | None) -> str:
    return f"row {index}" + ("" if lines is None else f" (line {lines[index]})")


def _arrow_error(values: list[Any]) -> Exception | None:
    """The error pyarrow raises when making one column of these values (as ``Dataset.from_list`` does), or None."""
    import pyarrow as pa

    try:
        pa.array(values)
    except pa.ArrowException as error:
        return error
    return None


def _mixed_type_rows(rows: dict[int, Mapping[str, Any]], lines: Sequence[int] | None) -> list[BadRow]:
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
                beside = f" beside {_where(indices[0], lines)}'s {type(values[0]).__name__}" if k else ""
                message = f"column {column!r}: Arrow cannot store this row's {kind}{beside} ({reason})"
                line = None if lines is None else lines[indices[k]]
                bad[indices[k]] = BadRow(indices[k], "mixed_type_column", message, line)
            indices = [i for i in indices if i not in bad]
    return list(bad.values())


def _validate(
    rows: Iterable[Any],
    lines: Sequence[int] | None,
    checker: _Checker,
    strict: bool,
    source_name: str = "the input",
) -> ValidationReport:
    if checker.tokenizer is None and (
        checker.max_length is not None or checker.max_prompt_length is not None
    ):
        raise ValueError("max_length and max_prompt_length are checked in tokens: pass a tokenizer too")
    check_limits(max_length=checker.max_length, max_prompt_length=checker.max_prompt_length)
    kept: list[int] = []
    notes: list[BadRow] = []
    seen: dict[str, int] = {}  # the three fields as JSON -> index of the first kept row holding them
    n_total = 0
    for index, row in enumerate(rows):
        n_total += 1
        problem = _check_row(checker, index, row)
        line = None if lines is None else lines[index]
        if problem is not None:
            checker.bad.append(BadRow(index, problem[0], problem[1], line))
            continue
        kept.append(index)
        explicit = checker.explicit.get(index) or row
        first = seen.setdefault(
            json.dumps([explicit[name] for name in ("prompt", "chosen", "rejected")], sort_keys=True), index
        )
        if first != index:
            notes.append(BadRow(index, "duplicate_row", f"same pair as {_where(first, lines)}", line))
    if isinstance(rows, list):  # a Dataset's columns are typed already
        mixed = _mixed_type_rows({i: checker.explicit.get(i) or rows[i] for i in kept}, lines)
        dropped = {bad.index for bad in mixed}
        kept, notes = (
            [i for i in kept if i not in dropped],
            [note for note in notes if note.index not in dropped],
        )
        checker.bad = sorted(checker.bad + mixed, key=lambda bad: bad.index)
    checker.n_prompt_extracted = sum(index in checker.explicit for index in kept)
    report = ValidationReport(
        n_total, kept, checker.bad, checker.format, checker.n_prompt_truncated, checker.n_prompt_extracted
    )
    report.notes = notes
    if n_total == 0:
        if strict:
            raise PreferenceDataError(report, f"no preference rows: {source_name} is empty")
        warnings.warn(f"no preference rows: {source_name} is empty", stacklevel=3)
    if strict and report.bad_rows:
        raise PreferenceDataError(report)
    return report


def validate_preferences(
    rows: Iterable[Mapping[str, Any]],
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    strict: bool = False,
) -> ValidationReport:
    """Check every row (a Dataset or a list of dicts); ``strict=True`` raises PreferenceDataError on any bad row.

    With a tokenizer each row must also tokenise; with ``max_length`` its responses must fit whole.
    """
    checker = _Checker(tokenizer, max_length, max_prompt_length)
    return _validate(rows, None, checker, strict)


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
    problem (``invalid_encoding``) and the other lines still load.
    """
    rows: list[Any] = []
    lines: list[int] = []
    for line_number, raw in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue  # a blank line (or the file's final newline) holds no row
        rows.append(_parse_line(raw, line_number))
        lines.append(line_number)
    return rows, lines


def _dataset_from_rows(rows: list[Mapping[str, Any]]) -> Dataset:
    """A Dataset with the union of all rows' columns (Dataset.from_list alone keeps the first row's keys)."""
    from datasets import Dataset

    columns = list(dict.fromkeys(key for row in rows for key in row))
    return Dataset.from_list([{column: row.get(column) for column in columns} for row in rows])


def load_preference_dataset(
    source: Dataset | Sequence[Mapping[str, Any]] | str | os.PathLike,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    strict: bool = False,
) -> tuple[Dataset, ValidationReport]:
    """Load preference rows from a Dataset, a list of dicts or a JSONL path; return (good rows, report)."""
    from datasets import Dataset

    checker = _Checker(tokenizer, max_length, max_prompt_length)
    if isinstance(source, Dataset):
        report = _validate(source, None, checker, strict)
        if not checker.explicit:
            return source.select(report.kept_indices), report
        return _dataset_from_rows([checker.explicit.get(i) or source[i] for i in report.kept_indices]), report
    if isinstance(source, (str, os.PathLike)):
        rows, lines = read_jsonl(source)
    elif isinstance(source, Sequence):
        rows, lines = list(source), None
    else:
        raise TypeError(
            f"source must be a Dataset, a list of dicts or a JSONL path, got {type(source).__name__}"
        )
    name = Path(source).name if isinstance(source, (str, os.PathLike)) else "the input"
    report = _validate(rows, lines, checker, strict, name)
    return _dataset_from_rows([checker.explicit.get(i) or rows[i] for i in report.kept_indices]), report
