"""The exercise self-checks: the worked solutions pass, deliberately wrong answers fail with the matching hint,
placeholders report "not attempted" without raising, and the notebooks carry every registered exercise.

The solutions are not copied here: they are executed from the cells tagged "solution" in
notebooks/solutions/*.ipynb, so this test and nbval check the same code.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from simplepo_helpers import check, sequence_logps, sft_nll_loss, simpo_loss
from simplepo_helpers.course.check import EXERCISES, FAILED, NOT_ATTEMPTED, PASSED, TIERS, exercises
from simplepo_helpers.evaluation.experiments import RunSpec, comparison_specs
from simplepo_helpers.lessons.profiles import PROFILE_DEFAULTS

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOLUTIONS = NOTEBOOKS / "solutions"
LESSONS = ("01", "02", "03", "04", "05", "06", "07")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _fake_specs() -> dict[str, list[RunSpec]]:
    """Notebook 04's specs at seed 0, built from the cpu profile's defaults without loading the world."""
    setup = SimpleNamespace(
        defaults={**PROFILE_DEFAULTS["cpu"], "max_new_tokens": 48}, max_length=128, max_prompt_length=64
    )
    return comparison_specs(setup, seeds=[0])


@cache
def _solutions() -> dict[str, object]:
    """Exercise id -> the answer defined by its solution cell (cells executed in one namespace per notebook)."""
    answers = {}
    for path in sorted(SOLUTIONS.glob("0*_solutions.ipynb")):
        namespace = {
            "math": math,
            "np": np,
            "torch": torch,
            "replace": replace,
            "RunSpec": RunSpec,
            "specs": _fake_specs(),
            "sequence_logps": sequence_logps,
            "simpo_loss": simpo_loss,
            "sft_nll_loss": sft_nll_loss,
        }
        for cell in _cells(path):
            if "solution" in _tags(cell):
                (exercise_id,) = [tag for tag in _tags(cell) if tag.startswith("ex")]
                before = set(namespace)
                exec(compile(_source(cell), f"{path.name}:{exercise_id}", "exec"), namespace)  # noqa: S102
                defined = [name for name in namespace if name not in before and not name.startswith("_")]
                answers[exercise_id] = namespace[defined[-1]]  # the answer is the last name the cell defines
    return answers


def _context(exercise_id: str) -> dict:
    return {"baseline": _fake_specs()["simpo"][0]} if exercise_id == "ex4.3" else {}


# ------------------------------------------------------------------------------- the solutions pass


def test_every_exercise_has_a_solution() -> None:
    assert sorted(_solutions()) == sorted(EXERCISES)


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_solution_passes(exercise_id: str, capsys) -> None:
    result = check(exercise_id, _solutions()[exercise_id], **_context(exercise_id))
    assert result.status == PASSED, result.message
    assert bool(result) and "PASS" in capsys.readouterr().out


# ------------------------------------------------------------------ wrong answers fail, with the hint


def _wrong_build_row(pad_labels: bool = False, raise_on_overflow: bool = True):
    def build_row(prompt_ids, response_ids, length, pad_id):
        used = len(prompt_ids) + len(response_ids)
        if raise_on_overflow and used > length:
            raise ValueError("too long")
        pad = max(length - used, 0)
        label_pad = pad_id if pad_labels else -100
        return {
            "input_ids": (prompt_ids + response_ids + [pad_id] * pad)[:length],
            "attention_mask": ([1] * used + [0] * pad)[:length],
            "labels": ([-100] * len(prompt_ids) + response_ids + [label_pad] * pad)[:length],
        }

    return build_row


def _first_problem_no_strip(row):
    chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
    if row["prompt"][-1]["role"] != "user":
        return "wrong_roles"
    if not chosen or not rejected:  # misses whitespace-only responses
        return "empty_response"
    return "identical_responses" if chosen == rejected else None


def _logps_no_shift(logits, labels, *, average):
    mask = labels != -100
    picked = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    return picked.sum(-1) / mask.sum(-1) if average else picked.sum(-1)


def _logps_divide_by_length(logits, labels, *, average):
    summed = sequence_logps(logits, labels, length_normalize=False)
    return summed / (labels.shape[1] - 1) if average else summed


def _batch_loss(model, batch, *, beta, gamma, swap=False, average=True, no_grad=False):
    context = torch.no_grad() if no_grad else torch.enable_grad()
    with context:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logps = sequence_logps(logits, batch["labels"], length_normalize=average)
    n = logps.shape[0] // 2
    chosen, rejected = (logps[n:], logps[:n]) if swap else (logps[:n], logps[n:])
    return simpo_loss(chosen, rejected, beta=beta, gamma=gamma)[0].mean()


def _sft_loss_per_row(model, batch, *, beta, gamma, sft_weight):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    averages = sequence_logps(logits, batch["labels"], length_normalize=True)
    n = averages.shape[0] // 2
    return (
        simpo_loss(averages[:n], averages[n:], beta=beta, gamma=gamma)[0].mean()
        - sft_weight * averages[:n].mean()
    )


def _plateau_unsorted(gammas, accuracies, tol=0.01):
    for i, accuracy in enumerate(accuracies):
        if all(later <= accuracy + tol for later in accuracies[i + 1 :]):
            return gammas[i]
    return gammas[-1]


def _plateau_first_drop(gammas, accuracies, tol=0.01):
    points = sorted(zip(gammas, accuracies, strict=True))
    for (gamma, accuracy), (_, following) in zip(points, points[1:], strict=False):
        if following <= accuracy + tol:
            return gamma
    return points[-1][0]


def _wald(successes, n, z=1.96):
    p = successes / n
    half = z * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


def _simpo_spec_changed(**loss_changes):
    base = _fake_specs()["simpo"][0]
    return RunSpec(
        "simpo_sft",
        replace(base.train, loss=replace(base.train.loss, **loss_changes)),
        base.length_checkpoints,
    )


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


WRONG_ANSWERS = [  # (exercise, wrong answer, a phrase its hint must contain)
    ("ex1.1", lambda labels: (labels != -100).sum(-1), "position 0"),
    ("ex1.1", lambda labels: (labels[:, 1:] != -100).sum(), "one count per row"),
    ("ex1.2", _wrong_build_row(pad_labels=True), "padding positions must hold -100"),
    ("ex1.2", _wrong_build_row(raise_on_overflow=False), "must raise ValueError"),
    ("ex1.3", _first_problem_no_strip, "only spaces"),
    ("ex2.1", _softplus(-(2.5 * 0.8 - 1.375 / 2.5)), "gamma / beta"),
    ("ex2.1", _softplus(2.5 * 0.8 - 1.375), "sign"),
    ("ex2.1", 0.5, "compute z"),
    ("ex2.2", _logps_no_shift, "causal shift"),
    ("ex2.2", _logps_divide_by_length, "number of response tokens"),
    (
        "ex2.2",
        lambda logits, labels, *, average: sequence_logps(logits, labels, length_normalize=False),
        "average=True divides",
    ),
    ("ex2.3", lambda w, lose, beta, gamma: beta * torch.sigmoid(gamma - beta * (w - lose)), "sign"),
    ("ex2.3", lambda w, lose, beta, gamma: -torch.sigmoid(gamma - beta * (w - lose)), "chain rule"),
    (
        "ex2.3",
        lambda w, lose, beta, gamma: -beta * torch.sigmoid(beta * (w - lose) - gamma),
        "sigma(z) or sigma(-z)",
    ),
    (
        "ex2.4",
        lambda beta, ratio: {
            "loss_type": "simpo",
            "beta": beta,
            "simpo_gamma": beta * ratio,
            "cpo_alpha": 1.0,
        },
        "cpo_alpha",
    ),
    (
        "ex2.4",
        lambda beta, ratio: {"loss_type": "simpo", "beta": beta, "simpo_gamma": ratio, "cpo_alpha": 0.0},
        "absolute",
    ),
    ("ex2.4", lambda beta, ratio: {"loss_type": "simpo", "beta": beta}, "also set"),
    ("ex3.1", lambda beta, gamma: math.log(2), "DPO"),
    ("ex3.1", lambda beta, gamma: _softplus(gamma / beta), "no division by beta"),
    ("ex3.2", lambda m, b, *, beta, gamma: _batch_loss(m, b, beta=beta, gamma=gamma, swap=True), "swapped"),
    (
        "ex3.2",
        lambda m, b, *, beta, gamma: _batch_loss(m, b, beta=beta, gamma=gamma, average=False),
        "not the sum",
    ),
    (
        "ex3.2",
        lambda m, b, *, beta, gamma: _batch_loss(m, b, beta=beta, gamma=gamma, no_grad=True),
        "no gradient",
    ),
    (
        "ex3.2",
        lambda m, b, *, beta, gamma: _batch_loss(m, b, beta=beta, gamma=gamma).item(),
        "one-element tensor",
    ),
    ("ex3.3", _sft_loss_per_row, "token-weighted"),
    (
        "ex3.3",
        lambda m, b, *, beta, gamma, sft_weight: _batch_loss(m, b, beta=beta, gamma=gamma),
        "SFT term is missing",
    ),
    ("ex4.1", lambda policy, ref: float((ref - policy).mean()), "sign"),
    ("ex4.1", lambda policy, ref: float((policy - ref).sum()), "do not sum"),
    ("ex4.2", _plateau_unsorted, "out of order"),
    ("ex4.2", _plateau_first_drop, "dip"),
    ("ex4.3", _simpo_spec_changed(sft_weight=1.0, gamma=0.5), "change only"),
    ("ex4.3", _simpo_spec_changed(), "positive sft_weight"),
    ("ex4.3", replace(_simpo_spec_changed(sft_weight=1.0), length_checkpoints=0), "same checkpoints"),
    (
        "ex5.1",
        lambda s, b: sum(x > y for x, y in zip(s, b, strict=True)) / len(s),
        "half a win, not as a loss",
    ),
    ("ex5.2", _wald, "Wald"),
    (
        "ex5.3",
        lambda s, b, length, base_length: float(np.mean(0.5 * (np.sign(np.subtract(s, b)) + 1))),
        "raw win rate",
    ),
    ("ex6.1", lambda shapes, r: sum(r * i * o for o, i in shapes), "add them"),
    ("ex6.1", lambda shapes, r: sum(r * i for _, i in shapes), "A only"),
    ("ex6.2", lambda w, a, b, alpha, r: w + b @ a, "alpha / r"),
    ("ex6.2", lambda w, a, b, alpha, r: (alpha / r) * b @ a, "keeps the frozen W"),
    (
        "ex7.1",
        lambda verdicts: sum(v == "policy" for v in verdicts) / len(verdicts),
        "half a win, not as a loss",
    ),
    ("ex7.2", lambda half_width, z=1.96: math.ceil((z / (2 * half_width)) ** 2), "normal approximation"),
]


@pytest.mark.parametrize(
    ("exercise_id", "answer", "phrase"),
    WRONG_ANSWERS,
    ids=[f"{e}-{i}" for i, (e, _, _) in enumerate(WRONG_ANSWERS)],
)
def test_wrong_answer_fails_with_hint(exercise_id: str, answer, phrase: str, capsys) -> None:
    result = check(exercise_id, answer, **_context(exercise_id))
    assert result.status == FAILED and not result
    assert phrase in result.message, result.message
    assert "TRY AGAIN" in capsys.readouterr().out


def test_every_exercise_has_a_wrong_answer() -> None:
    assert {e for e, _, _ in WRONG_ANSWERS} == set(EXERCISES)


# --------------------------------------------------------------------------- placeholders and misuse


def _unimplemented(*args, **kwargs):
    raise NotImplementedError


VALUE_EXERCISES = {"ex2.1", "ex4.3"}  # answered with a value; the others with a function
PLACEHOLDERS = [
    (exercise_id, placeholder)
    for exercise_id in sorted(EXERCISES)
    for placeholder in (None, ..., _unimplemented)
    if not (exercise_id in VALUE_EXERCISES and placeholder is _unimplemented)
]


@pytest.mark.parametrize(
    ("exercise_id", "placeholder"),
    PLACEHOLDERS,
    ids=[f"{e}-{getattr(p, '__name__', repr(p))}" for e, p in PLACEHOLDERS],
)
def test_placeholder_is_not_attempted(exercise_id: str, placeholder, capsys) -> None:
    result = check(exercise_id, placeholder, **_context(exercise_id))
    assert result.status == NOT_ATTEMPTED and not result
    assert "not attempted" in capsys.readouterr().out


def test_learner_exception_is_feedback_not_a_crash() -> None:
    def broken(labels):
        return labels.gather(-1, labels)  # -100 is not an index

    result = check("ex1.1", broken)
    assert result.status == FAILED and "raised RuntimeError" in result.message


def test_value_where_a_function_is_expected() -> None:
    result = check("ex1.1", 3)
    assert result.status == FAILED and "expected a function" in result.message


def test_unknown_exercise_and_missing_context_raise() -> None:
    with pytest.raises(ValueError, match="unknown exercise 'ex9.9'"):
        check("ex9.9", 1)
    with pytest.raises(ValueError, match="baseline="):
        check("ex4.3", _simpo_spec_changed(sft_weight=1.0))


def test_check_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    check("ex3.2", _solutions()["ex3.2"])  # builds a random model inside
    assert torch.equal(torch.random.get_rng_state(), state)


def test_untouched_exercise_cells_run_without_error(capsys) -> None:
    """The lesson's Exercises section, executed as shipped (placeholders), prints only 'not attempted'."""
    for number in LESSONS:
        (path,) = NOTEBOOKS.glob(f"{number}_*.ipynb")
        namespace = {"specs": _fake_specs()}
        code = [_source(c) for c in _cells(path) if c["cell_type"] == "code" and "exercise" in _tags(c)]
        for source in code:
            exec(compile(source, path.name, "exec"), namespace)  # noqa: S102
        out = capsys.readouterr().out
        ids = [ex.id for ex in exercises(number)]
        assert out.count("not attempted") == len(ids) and "TRY AGAIN" not in out and "PASS" not in out, (
            path.name,
            out,
        )


# ------------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("number", LESSONS)
def test_lessons_have_tiered_exercises_and_solutions(number: str) -> None:
    listed = exercises(number)
    assert 2 <= len(listed) <= 4
    assert [ex.tier for ex in listed] == sorted((ex.tier for ex in listed), key=TIERS.index)
    assert {listed[0].tier, listed[-1].tier} == {"warm-up", "stretch"}
    (lesson,) = NOTEBOOKS.glob(f"{number}_*.ipynb")
    cells = _cells(lesson)
    first = next(i for i, c in enumerate(cells) if "exercise" in _tags(c))
    assert all("exercise" in _tags(c) for c in cells[first:]), "the Exercises section is the notebook's end"
    text = "".join(_source(c) for c in cells[first:])
    assert all(f'check("{ex.id}"' in text for ex in listed)
    solution = SOLUTIONS / f"{lesson.stem}_solutions.ipynb"
    solution_cells = _cells(solution)
    assert all(f'assert check("{ex.id}"' in "".join(map(_source, solution_cells)) for ex in listed)
    for cell in cells + solution_cells:  # committed without outputs
        assert cell.get("outputs", []) == [] and cell.get("execution_count") is None


def test_a_check_result_is_shown_once_in_a_notebook() -> None:
    """check() prints; IPython then calls _ipython_display_ instead of echoing the result's repr a second time."""
    result = check("ex2.1", None)
    assert hasattr(result, "_ipython_display_") and result._ipython_display_() is None
