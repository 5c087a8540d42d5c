"""Loading a preference dataset (a Dataset, a list of dicts or a JSONL file) and checking it row by row.

Each bad row is reported with its index, line and one reason (``inputs/report.py``); good rows are kept in
order, extra columns included, and with a tokenizer keep their token ids, so the collator does not tokenise
them again. Implicit prompts are made explicit first (``inputs/implicit.py``); repeated rows are noted.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batching import PreferenceCollator, tokenize_preference
from .inputs.columns import dataset_from_rows, mixed_type_rows
from .inputs.implicit import is_implicit_prompt, split_implicit_prompt
from .inputs.jsonl import read_jsonl
from .inputs.report import REASONS as REASONS  # re-exported: its old import path
from .inputs.report import BadRow, PreferenceDataError, ValidationReport, duplicate_notes
from .rows import row_format, row_problem

if TYPE_CHECKING:  # heavy imports, only needed by the loader
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase


@dataclass
class _Checker:
    """What the row checks carry across rows: the format, tokenizer and limits, what the kept rows gave."""

    tokenizer: PreTrainedTokenizerBase | None = None
    max_length: int | None = None
    max_prompt_length: int | None = None
    format: str | None = None
    format_row: int | None = None
    n_prompt_truncated: int = 0
    explicit: dict[int, dict[str, Any]] = field(default_factory=dict)  # index -> row, prompt extracted
    tokens: dict[int, dict[str, list[int]]] = field(default_factory=dict)  # index -> token ids, uncut
    bad: list[BadRow] = field(default_factory=list)
    collator: PreferenceCollator | None = None  # applies (and checked) the limits

    def __post_init__(self) -> None:
        limits = {"max_length": self.max_length, "max_prompt_length": self.max_prompt_length}
        if self.tokenizer is None and limits != {"max_length": None, "max_prompt_length": None}:
            raise ValueError("max_length and max_prompt_length are checked in tokens: pass a tokenizer too")
        if self.tokenizer is not None:
            self.collator = PreferenceCollator(self.tokenizer, **limits)


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
    if checker.tokenizer is None or checker.collator is None:
        return None
    try:
        tokens = tokenize_preference(row, checker.tokenizer)
    except ValueError as error:
        return "untokenisable", str(error)
    except Exception as error:  # a chat template's raise_exception (jinja2's TemplateError), any jinja2 error
        if not type(error).__module__.startswith("jinja2"):
            raise
        return "untokenisable", f"the chat template raised {type(error).__name__}: {error}"
    try:
        cut = checker.collator.truncate(tokens)
    except ValueError as error:
        return "too_long", str(error)
    for name in ("chosen_ids", "rejected_ids"):
        if len(cut[name]) < len(tokens[name]):
            return "too_long", (
                f"{name[:-4]} needs {len(tokens[name])} tokens but only {len(cut[name])} fit in "
                f"max_length={checker.max_length} with the prompt cut to {len(cut['prompt_ids'])} tokens"
            )
    checker.n_prompt_truncated += len(cut["prompt_ids"]) < len(tokens["prompt_ids"])
    checker.tokens[index] = tokens
    return None


def _validate(
    rows: Iterable[Any],
    lines: Sequence[int] | None,
    checker: _Checker,
    strict: bool,
    source: str = "the input",
) -> ValidationReport:
    kept: dict[int, Any] = {}  # index -> the good row (its prompt made explicit)
    n_total = 0
    for index, row in enumerate(rows):
        n_total += 1
        problem = _check_row(checker, index, row)
        if problem is None:
            kept[index] = checker.explicit.get(index) or row
        else:
            checker.bad.append(BadRow(index, *problem, None if lines is None else lines[index]))
    notes = duplicate_notes(kept, lines)  # kept, each copy weighs in training
    if isinstance(rows, list):  # a Dataset's columns are typed already
        mixed = mixed_type_rows(kept, lines)
        dropped = {bad.index for bad in mixed}
        kept, notes = (
            {i: r for i, r in kept.items() if i not in dropped},
            [n for n in notes if n.index not in dropped],
        )
        checker.bad = sorted(checker.bad + mixed, key=lambda bad: bad.index)
    n_extracted = sum(index in checker.explicit for index in kept)
    report = ValidationReport(
        n_total, list(kept), checker.bad, checker.format, checker.n_prompt_truncated, n_extracted, notes
    )
    if n_total == 0:
        if strict:
            raise PreferenceDataError(report, f"no preference rows: {source} is empty")
        warnings.warn(f"no preference rows: {source} is empty", stacklevel=3)
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


def load_preference_dataset(
    source: Dataset | Sequence[Mapping[str, Any]] | str | os.PathLike,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    strict: bool = False,
) -> tuple[Dataset, ValidationReport]:
    """Load preference rows from a Dataset, a list of dicts or a JSONL path; return (good rows, report). With
    a tokenizer the good rows keep their token ids, uncut: ``PreferenceCollator`` does not tokenise again."""
    from datasets import Dataset

    checker = _Checker(tokenizer, max_length, max_prompt_length)
    if isinstance(source, (str, os.PathLike)):
        rows, lines = read_jsonl(source)
    elif isinstance(source, (Dataset, Sequence)):
        rows, lines = (source if isinstance(source, Dataset) else list(source)), None
    else:
        raise TypeError(
            f"source must be a Dataset, a list of dicts or a JSONL path, got {type(source).__name__}"
        )
    name = Path(source).name if isinstance(source, (str, os.PathLike)) else "the input"
    report = _validate(rows, lines, checker, strict, name)
    if isinstance(source, Dataset) and not checker.explicit and not checker.tokens:
        return source.select(report.kept_indices), report
    kept = [
        {**(checker.explicit.get(i) or rows[i]), **checker.tokens.get(i, {})} for i in report.kept_indices
    ]
    return dataset_from_rows(kept), report
