"""The exercise framework: ``check``, the registry and the helpers the graders share (one grader module per
notebook registers its exercises here).

Self-checks for the notebooks' exercises: ``check("ex2.2", my_function)`` prints immediate feedback.

Each exercise has a grader that tests the learner's answer (a value, or a function the grader calls on its
own small inputs) against an independent expectation: the kit's tested helpers or hand-derived numbers. A
wrong answer prints a hint that names the likely mistake without giving the answer away. An untouched
exercise (answer ``None`` or ``...``, or a function that raises ``NotImplementedError``) prints
"not attempted". ``check`` never raises for a wrong or missing answer, so a notebook with open exercises
still runs top to bottom; it returns a `CheckResult`, truthy only when the answer passed
(``assert check(...)`` in the solutions notebooks). Graders run with the global RNG state saved and restored,
so a check does not change the notebook's random numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"
TIERS = ("warm-up", "core", "stretch")
IGNORE_INDEX = -100


class _NotAttempted(Exception):
    """Raised inside a grader when the learner's function raised NotImplementedError."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of `check`: ``status`` is "passed", "failed" or "not attempted"; ``message`` the feedback."""

    exercise: str
    status: str
    message: str

    def __bool__(self) -> bool:
        return self.status == PASSED

    def __str__(self) -> str:
        mark = {PASSED: "PASS", FAILED: "TRY AGAIN", NOT_ATTEMPTED: "not attempted"}[self.status]
        return f"[{self.exercise}] {mark}: {self.message}"

    def _ipython_display_(self) -> None:
        """``check`` has printed the result already: a cell ending in ``check(...)`` shows it once, not twice."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: where it lives, its tier, and its grader (None: correct; a string: the hint)."""

    id: str
    notebook: str
    tier: str
    title: str
    grade: Callable[..., str | None]


EXERCISES: dict[str, Exercise] = {}


def _exercise(exercise_id: str, notebook: str, tier: str, title: str):
    """Register a grader under ``exercise_id``."""
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")

    def register(grade: Callable[..., str | None]) -> Callable[..., str | None]:
        EXERCISES[exercise_id] = Exercise(exercise_id, notebook, tier, title, grade)
        return grade

    return register


def exercises(notebook: str | None = None) -> list[Exercise]:
    """The registered exercises, in order; ``notebook="02"`` keeps one lesson's."""
    return [ex for ex in EXERCISES.values() if notebook is None or ex.notebook == notebook]


def check(exercise_id: str, answer: Any, **context: Any) -> CheckResult:
    """Grade ``answer`` for ``exercise_id``, print the feedback and return it.

    ``context`` passes what a grader needs from the notebook (only exercise ex4.3 takes one: ``baseline``).
    Raises only for an unknown exercise id or missing context, which are mistakes in the calling cell.
    """
    if exercise_id not in EXERCISES:
        raise ValueError(f"unknown exercise {exercise_id!r}; known: {', '.join(EXERCISES)}")
    exercise = EXERCISES[exercise_id]
    if answer is None or answer is Ellipsis:
        result = CheckResult(
            exercise_id, NOT_ATTEMPTED, "replace the placeholder with your answer, then run the cell again"
        )
    else:
        result = _run_grader(exercise, answer, context)
    print(result)
    return result


def _run_grader(exercise: Exercise, answer: Any, context: Mapping[str, Any]) -> CheckResult:
    try:
        with torch.random.fork_rng(devices=[]):
            hint = exercise.grade(answer, **context)
    except _NotAttempted:
        return CheckResult(exercise.id, NOT_ATTEMPTED, "your function still raises NotImplementedError")
    except _LearnerError as error:
        return CheckResult(exercise.id, FAILED, str(error))
    if hint is None:
        return CheckResult(exercise.id, PASSED, f"{exercise.title}: correct")
    return CheckResult(exercise.id, FAILED, hint)


class _LearnerError(Exception):
    """The learner's function raised; the message names the exception."""


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the learner's function; map NotImplementedError to 'not attempted', other errors to feedback."""
    if not callable(function):
        raise _LearnerError(f"expected a function, got {type(function).__name__}")
    try:
        return function(*args, **kwargs)
    except NotImplementedError as error:
        raise _NotAttempted from error
    except Exception as error:  # the learner's bug is feedback, not a crash
        raise _LearnerError(f"your function raised {type(error).__name__}: {error}") from error


def _array(value: Any, what: str) -> np.ndarray:
    """The answer as a float64 array, or feedback naming what was expected."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise _LearnerError(
            f"{what} should be numbers (a tensor, array, list or float), got {type(value).__name__}"
        ) from error


def _close(value: Any, expected: Any, *, rtol: float = 1e-6, atol: float = 1e-8) -> bool:
    """Same shape and all close (NaN never is)."""
    value, expected = np.asarray(value, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return value.shape == expected.shape and bool(np.allclose(value, expected, rtol=rtol, atol=atol))


def _diagnose(
    value: np.ndarray, expected: Any, mistakes: Sequence[tuple[Any, str]], generic: str, **tolerance: float
) -> str | None:
    """None when ``value`` matches ``expected``; else the hint of the first known mistake it matches."""
    if _close(value, expected, **tolerance):
        return None
    for wrong, hint in mistakes:
        if _close(value, wrong, **tolerance):
            return hint
    expected_shape = np.shape(expected)
    if value.shape != expected_shape:
        return f"expected shape {expected_shape}, got {value.shape}. {generic}"
    if not np.all(np.isfinite(value)):
        return f"your answer has NaN or inf values. {generic}"
    return generic


# ----------------------------------------------------------------------------- shared test inputs


def _toy_labels() -> torch.Tensor:
    """[4, 10] unshifted labels: prompt and padding -100; row 3 (unusually) labels position 0."""
    labels = torch.full((4, 10), IGNORE_INDEX)
    labels[0, 3:10] = torch.tensor([5, 6, 7, 8, 9, 10, 2])  # 7 response tokens, no padding
    labels[1, 4:7] = torch.tensor([11, 12, 2])  # 3 response tokens, then padding
    labels[2, 2:4] = torch.tensor([13, 2])  # 2
    labels[3, 0:5] = torch.tensor([1, 14, 15, 16, 2])  # position 0 is labelled but never scored: 4
    return labels


def _toy_logits(labels: torch.Tensor, vocab: int = 17, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*labels.shape, vocab, generator=generator, dtype=torch.float64)  # [N, T, V]


def _tiny_model_and_batch(seed: int = 0) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A 1-layer random Llama (vocab 32) and a [2B=4, T=10] right-padded batch in the kit's layout."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)  # inside fork_rng: the caller's RNG state is restored afterwards
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config).eval()
    input_ids = torch.randint(3, 32, (4, 10))  # [2B, T]
    prompt_end = torch.tensor([3, 4, 3, 4])  # same prompts per pair; chosen rows 0-1, rejected rows 2-3
    response_end = torch.tensor([10, 7, 6, 9])
    positions = torch.arange(10)
    is_response = (positions >= prompt_end[:, None]) & (positions < response_end[:, None])  # [2B, T]
    attention_mask = (positions < response_end[:, None]).long()  # [2B, T]
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)  # pad id 0
    labels = torch.where(is_response, input_ids, IGNORE_INDEX)  # [2B, T]
    return model, {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _clone(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in batch.items()}
