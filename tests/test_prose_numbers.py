"""Every number the lessons write in a markdown cell, or type into the text a code cell prints (print,
Markdown, HTML; the fixed parts of an f-string, never its formatted values), is produced or checked, or exempt
by a stated rule.

A number in a lesson's markdown (notebooks/0*.ipynb) passes when it is
- **a value the notebook uses**: a numeric literal in one of its code cells (a parameter, a constant it asserts);
- **a profile default**: a value of ``PROFILE_DEFAULTS`` (any profile);
- **a fact of the world**: a field of ``WorldConfig`` (label noise, the length-biased tie rate, data sizes; a
  percentage is compared as a share), or a judge score level;
- **a setting of the kit**: a field of a recipe in ``RECIPES`` (rounds, steps, learning rate, ...), or the
  bootstrap's default number of resamples;
- **a committed result** of ``results/rounds.jsonl``: a spread summary (each method's lowest, highest and mean
  gain per split, seed counts) or a cell of the dev search table (mean gain per setting and round), compared at
  the precision the prose writes it with, and only for numbers written with two decimals or more (coarser
  numbers would match some result by chance).

Exempt, and only these (the rule is in ``_exempt_spans`` and ``_exempt_number``):
1. text inside LaTeX math (``$...$``, ``$$...$$``): equation constants;
2. inline code, link targets, URLs and arXiv identifiers: names, not claims;
3. references: a number after "notebook(s)", "section(s)", "exercise", "step(s)", "edit", "Eq.", "Figure",
   "Table", "round(s)", a heading's own number, a list item's number, exercise numbers such as "2.1", and the
   two-digit notebook numbers 01-07;
4. years (1950-2030) and the hardware and runtime line (``**Runtime:**``): a measurement of the notebook itself;
5. the paper's hyperparameters quoted as such: a value from the SimPO paper's released settings (``PAPER``) in a
   sentence that names the paper, the authors or a model family they trained;
6. the definitional constants 0, 1, 2 and 0.5 (a tie counts half, temperature 1, ln 2, chance 0.5) and the
   95% of a 95% interval;
7. thresholds quoted from a cited source, listed in ``QUOTED`` with the source.
"""

from __future__ import annotations

import ast
import json
import math
import re
from functools import cache
from pathlib import Path

import pytest

from simplepo_helpers.lessons.profiles import PROFILE_DEFAULTS
from simplepo_helpers.world.dataset import WorldConfig

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("0*.ipynb"))

MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$", re.S)
CODE = re.compile(r"`[^`\n]*`")
LINKS = re.compile(r"\]\([^)]*\)|https?://\S+|arXiv:\d{4}\.\d{4,5}")
RUNTIME = re.compile(r"\*\*Runtime:\*\*.*?(?:\n\n|$)", re.S)
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?%?(?![\w]|\.\d)")
_REFERENCE = (
    r"(?:notebooks?|sections?|exercises?|steps?|edits?|eqs?\.|equation|figure|table|rounds?|cells?|sessions?)"
)
# "section 7", "Section 2.2", and the second number of "sections 1-5", "steps 1 and 2", "notebooks 04 and 05"
REFERENCE_WORD = re.compile(_REFERENCE + r"\s*(?:\d+(?:\.\d+)?\s*(?:-|,|and|or|to)\s*)*$", re.I)
PAPER_CONTEXT = re.compile(r"paper|authors|published|released|Llama|Mistral|Gemma|7B|8B|9B|recipe", re.I)
# the SimPO paper's released settings (beta, gamma/beta, learning rates, batch, model sizes, the DPO baselines')
PAPER = {
    2.0,
    2.5,
    10.0,
    0.8,
    0.1,
    0.5,
    0.55,
    0.3,
    1.375,
    3e-7,
    5e-7,
    6e-7,
    1e-6,
    8e-7,
    1e-5,
    0.01,
    128,
    7,
    8,
    9,
}
DEFINITIONAL = {0.0, 1.0, 2.0, 0.5, 95.0}
QUOTED = {  # notebook: {value: source}
    "07": {
        0.41: "Landis & Koch 1977",
        0.60: "Landis & Koch 1977",
        0.61: "Landis & Koch 1977",
        0.80: "Landis & Koch 1977",
    },
}


def _value(text: str) -> float:
    text = text.replace(",", "").rstrip("%")
    return float(text)


def _decimals(text: str) -> int:
    body = text.replace(",", "").rstrip("%").split("e")[0]
    return len(body.split(".")[1]) if "." in body else 0


def _numbers_in(obj) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, int | float):
        return [float(obj)] if math.isfinite(obj) else []
    if isinstance(obj, dict):
        return [v for item in obj.values() for v in _numbers_in(item)]
    if isinstance(obj, list | tuple):
        return [v for item in obj for v in _numbers_in(item)]
    return []


@cache
def _settings() -> tuple[float, ...]:
    """The profile defaults, the world's config and judge levels, the recipes and the bootstrap's default."""
    import inspect
    from dataclasses import asdict

    from simplepo_helpers.evaluation.rounds import RECIPES
    from simplepo_helpers.evaluation.sampling import score_gain

    values = _numbers_in(PROFILE_DEFAULTS)
    config = WorldConfig()
    values += [v for name in config.__dataclass_fields__ for v in _numbers_in(getattr(config, name))]
    values += [0.0, 0.125, 0.25, 0.5, 1.0]  # the world judge's score levels
    values += [v for recipe in RECIPES.values() for v in _numbers_in(asdict(recipe))]
    values += [float(inspect.signature(score_gain).parameters["n_boot"].default)]
    return tuple(values)


@cache
def _results() -> tuple[float, ...]:
    """The spread summaries and the dev search table of results/rounds.jsonl."""
    from simplepo_helpers.evaluation.spread import read_records, search_table, spread_summary

    records = read_records(ROOT / "results" / "rounds.jsonl")
    values = [v for row in search_table(records) for v in row["gain_by_round"]]
    for method in (
        "simpo",
        "dpo",
        "dpo_plain",
        "sft",
        "simpo_offline",
        "dpo_offline",
        "simpo_offline_lora",
        "simpo_offline_prev",
        "dpo_offline_prev",
    ):
        for split in ("eval", "heldout"):
            try:
                summary = spread_summary(records, method, split)
            except ValueError:
                continue
            gains = [run["gain"]["mean"] for run in summary["runs"]]
            shipped = [run["gain"]["mean"] for run in summary["runs"] if run["ref_seed"] == -1]
            values += [min(gains), max(gains), summary["mean_gain"]]
            values += [min(shipped), max(shipped)] if shipped else []
    for rounds in (1, 2, 3):  # notebook 05 trains the default recipe's first rounds live
        for split in ("eval", "heldout"):
            summary = spread_summary(records, "simpo", split, round_index=rounds)
            shipped = [run["gain"]["mean"] for run in summary["runs"] if run["ref_seed"] == -1]
            values += [summary["min_gain"], summary["mean_gain"], min(shipped), max(shipped)]
    return tuple(values)


def _code_literals(cells: list[dict]) -> set[float]:
    literals = set()
    for cell in cells:
        if cell["cell_type"] == "code":
            for match in re.finditer(
                r"(?<![\w.])\d[\d_]*(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])", "".join(cell["source"])
            ):
                literals.add(float(match.group().replace("_", "")))
    return literals


def _exempt_spans(text: str) -> str:
    """Rules 1, 2 and 4 (runtime line): blank out math, code, links and the runtime paragraph."""
    for pattern in (MATH, CODE, LINKS, RUNTIME):
        text = pattern.sub(lambda m: " " * len(m.group()), text)
    return text


def _exempt_number(text: str, match: re.Match) -> bool:
    """Rules 3-6 for one number."""
    number = match.group()
    before = text[max(0, match.start() - 30) : match.start()]
    after = text[match.end() : match.end() + 12]
    line_start = text.rfind("\n", 0, match.start()) + 1
    value = _value(number)
    if REFERENCE_WORD.search(before) or re.fullmatch(r"0[1-7]", number):
        return True  # rule 3: notebook, section, step ... numbers
    if re.fullmatch(r"\d\.\d", number) and re.match(r"\s*(?:\(?(?:warm-up|core|stretch))", after):
        return True  # rule 3: exercise numbers "2.1 warm-up"
    if (
        re.match(r"\s*#+\s*$", text[line_start : match.start()])
        or re.match(r"\s*(?:[-*]\s*)?$", text[line_start : match.start()])
        and after.startswith(".")
    ):
        return True  # rule 3: a heading's number or a list item's
    if re.fullmatch(r"(?:19[5-9]\d|20[0-2]\d|2030)", number):
        return True  # rule 4: years
    sentence_start = max(text.rfind(". ", 0, match.start()), text.rfind("\n\n", 0, match.start()))
    sentence = text[
        sentence_start : text.find(". ", match.end()) if ". " in text[match.end() :] else len(text)
    ]
    if value in PAPER and PAPER_CONTEXT.search(sentence):
        return True  # rule 5
    return value in DEFINITIONAL  # rule 6


def _checked(number: str, literals: set[float], notebook: str) -> bool:
    value = _value(number)
    share = value / 100 if number.endswith("%") else None
    candidates = [value] + ([share] if share is not None else [])
    if any(c in literals or any(math.isclose(c, known) for known in _settings()) for c in candidates):
        return True
    if value in QUOTED.get(notebook, {}):
        return True  # rule 7
    places = _decimals(number)
    if places < 2:
        return False  # integers and one-decimal numbers match some result by chance: not checked against results/
    return any(round(known, places) == value for known in _results())


def unchecked_numbers(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    literals = _code_literals(cells)
    found = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        text = _exempt_spans("".join(cell["source"]))
        for match in NUMBER.finditer(text):
            if _exempt_number(text, match) or _checked(match.group(), literals, path.name[:2]):
                continue
            context = text[max(0, match.start() - 40) : match.end() + 20].replace("\n", " ")
            found.append(f"{path.name} cell {index}: {match.group()!r} in ...{' '.join(context.split())}...")
    return found


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_prose_number_is_produced_checked_or_exempt(path: Path) -> None:
    unchecked = unchecked_numbers(path)
    assert not unchecked, "numbers neither checked nor exempt:\n" + "\n".join(unchecked)


def test_the_rule_catches_a_typed_number(tmp_path: Path) -> None:
    """A made-up result in prose fails; the same number in math, or a section number, does not."""
    notebook = {
        "cells": [
            {"cell_type": "code", "source": ["k = 4\n"]},
            {
                "cell_type": "markdown",
                "source": [
                    "SimPO won 0.734 of the comparisons (section 7, $\\gamma = 0.734$), with k = 4 samples."
                ],
            },
        ]
    }
    path = tmp_path / "09_fake.ipynb"
    path.write_text(json.dumps(notebook))
    (only,) = unchecked_numbers(path)
    assert "'0.734'" in only and "won" in only


def test_teaching_guide_expected_numbers_match_the_spread_record() -> None:
    """docs/teaching.md's table of numbers to expect quotes the spread record (rule: the same as for lessons)."""
    text = (ROOT / "docs" / "teaching.md").read_text(encoding="utf-8")
    table = text[text.index("## The numbers to expect") : text.index("## A 90-minute plan")]
    gains = re.findall(r"[-+]\d\.\d{3}", table)
    assert len(gains) >= 10
    missing = [g for g in gains if not any(round(known, 3) == float(g) for known in _results())]
    assert not missing, f"numbers in docs/teaching.md's table not in the spread record: {missing}"


# ------------------------------------------------------------------- prose that code cells print

PRINTERS = {"print", "Markdown", "HTML"}


def _printed_prose(source: str) -> list[str]:
    """The literal text of the strings a cell passes to print / Markdown / HTML (f-strings' fixed parts only:
    a formatted value is produced by the notebook, so it is not prose)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # an IPython magic: such a cell prints no prose of its own
        return []
    texts: list[str] = []

    def collect(node: ast.AST) -> None:
        if isinstance(node, ast.FormattedValue):
            return  # a value the notebook formats (and its format spec): produced, not typed
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append(node.value)
        for child in ast.iter_child_nodes(node):
            collect(child)

    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) in PRINTERS:
            for argument in [*call.args, *(k.value for k in call.keywords)]:
                collect(argument)
    return texts


def _numeric_literals(cells: list[dict]) -> set[float]:
    """The numbers the code computes with (numeric constants), not the ones its strings spell out."""
    values = set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse("".join(cell["source"]))
        except SyntaxError:
            continue
        values |= {
            float(n.value)
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant)
            and isinstance(n.value, (int, float))
            and not isinstance(n.value, bool)
        }
    return values


def unchecked_printed_numbers(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    literals = _numeric_literals(cells)
    found = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        for raw in _printed_prose("".join(cell["source"])):
            text = _exempt_spans(raw)
            for match in NUMBER.finditer(text):
                if _exempt_number(text, match) or _checked(match.group(), literals, path.name[:2]):
                    continue
                found.append(
                    f"{path.name} cell {index}: {match.group()!r} in printed text {raw.strip()[:80]!r}"
                )
    return found


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_number_a_code_cell_prints_as_prose_is_checked_or_exempt(path: Path) -> None:
    unchecked = unchecked_printed_numbers(path)
    assert not unchecked, "numbers typed into printed prose, neither checked nor exempt:\n" + "\n".join(
        unchecked
    )


def test_the_printed_prose_rule_catches_a_typed_number(tmp_path: Path) -> None:
    """A result typed into a printed f-string fails; the formatted value beside it does not."""
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "source": ["gain = 0.5 * 0.4\n", 'print(f"gain {gain:+.3f}, as good as DPO\'s 0.734")\n'],
            }
        ]
    }
    path = tmp_path / "09_fake.ipynb"
    path.write_text(json.dumps(notebook))
    (only,) = unchecked_printed_numbers(path)
    assert "'0.734'" in only
