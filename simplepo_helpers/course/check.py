"""Self-checks for the notebooks' exercises: ``check("ex2.2", my_function)`` prints immediate feedback.

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

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
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


# ------------------------------------------------------------------------- notebook 01: the data


@_exercise("ex1.1", "01", "warm-up", "tokens the loss averages over")
def _grade_loss_token_counts(answer: Any) -> str | None:
    labels = _toy_labels()
    value = _array(_call(answer, labels.clone()), "the counts")
    return _diagnose(
        value,
        [7, 3, 2, 4],  # counted by hand from _toy_labels, position 0 excluded
        [
            (
                (labels != IGNORE_INDEX).sum(-1),
                "row 3 is off by one: the label at position 0 is never scored "
                "(the logits at position t predict the label at t + 1).",
            ),
            ((labels[:, 1:] != IGNORE_INDEX).sum(), "return one count per row, not the batch total."),
        ],
        "count, per row, the labels that are not -100 among the positions a logit predicts.",
    )


@_exercise("ex1.2", "01", "core", "one padded row with its labels")
def _grade_build_row(answer: Any) -> str | None:
    cases = [  # (prompt_ids, response_ids incl. EOS, length, pad_id) -> hand-written expectations
        (
            ([1, 5, 6], [7, 8, 3], 8, 0),
            {
                "input_ids": [1, 5, 6, 7, 8, 3, 0, 0],
                "attention_mask": [1, 1, 1, 1, 1, 1, 0, 0],
                "labels": [-100, -100, -100, 7, 8, 3, -100, -100],
            },
        ),
        (
            ([1, 9], [4, 3], 4, 2),
            {"input_ids": [1, 9, 4, 3], "attention_mask": [1, 1, 1, 1], "labels": [-100, -100, 4, 3]},
        ),
    ]
    for args, expected in cases:
        row = _call(answer, list(args[0]), list(args[1]), args[2], args[3])
        if not isinstance(row, Mapping) or set(expected) - set(row):
            return f"return a dict with the keys {sorted(expected)}"
        got = {key: _array(row[key], key).tolist() for key in expected}
        if got["input_ids"] != expected["input_ids"]:
            return "input_ids: the prompt, then the response, then pad_id up to `length` (right padding)."
        if got["attention_mask"] != expected["attention_mask"]:
            return "attention_mask is 1 on real tokens (prompt and response) and 0 on padding."
        labels, want = got["labels"], expected["labels"]
        if labels != want:
            n_prompt = len(args[0])
            if labels[n_prompt:] != want[n_prompt:] and args[3] in labels[n_prompt + len(args[1]) :]:
                return "padding positions must hold -100 in labels, or the loss scores the padding."
            if labels[:n_prompt] != want[:n_prompt]:
                return "prompt positions must hold -100 in labels: SimPO averages over the response only."
            return "labels are not shifted in this kit: they equal input_ids on the response tokens."
    try:
        answer([1, 2, 3], [4, 5, 3], 5, 0)
    except ValueError:
        return None
    except Exception as error:  # noqa: BLE001  (feedback on the learner's own exception type)
        return f"a row that does not fit should raise ValueError, yours raised {type(error).__name__}"
    return (
        "a prompt + response longer than `length` must raise ValueError: cutting the response silently can "
        "leave it empty (0 tokens, a 0/0 average)."
    )


def _problem_rows() -> list[dict[str, Any]]:
    def row(prompt: list[tuple[str, str]], chosen: str, rejected: str) -> dict[str, Any]:
        return {
            "prompt": [{"role": r, "content": c} for r, c in prompt],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }

    user = [("user", "What is 2 + 3?")]
    return [
        row(user, "2 + 3 = 5.", "2 + 3 = 6."),
        row(user, "2 + 3 = 5.", "2 + 3 = 5."),
        row(user, "   ", "2 + 3 = 6."),
        row(user, "2 + 3 = 5.", ""),
        row([("user", "What is 2 + 3?"), ("assistant", "Let me think.")], "5.", "6."),
        row([("system", "Be brief."), ("user", "What is 2 + 3?")], "5.", "6."),
        row(user, "Five.", "five."),
    ]


@_exercise("ex1.3", "01", "stretch", "first problem of a preference row")
def _grade_first_problem(answer: Any) -> str | None:
    from ..data import validate_preferences

    rows = _problem_rows()
    report = validate_preferences(rows)  # the kit's validator is the reference
    expected = {bad.index: bad.reason for bad in report.bad_rows}
    descriptions = [
        "a clean pair",
        "chosen == rejected",
        "a chosen response of only spaces",
        "an empty rejected response",
        "a prompt that ends with an assistant turn",
        "a pair with a system message",
        "answers differing in case",
    ]
    import copy

    for index, row in enumerate(rows):
        got = _call(answer, copy.deepcopy(row))
        want = expected.get(index)
        if got != want:
            return f"for {descriptions[index]} you returned {got!r}; expected {'None' if want is None else 'a reason code'}."
    return None


# ------------------------------------------------------------------------------ notebook 02: the loss


@_exercise("ex2.1", "02", "warm-up", "a SimPO loss by hand")
def _grade_simpo_by_hand(answer: Any) -> str | None:
    avg_w, avg_l, beta, gamma = -0.7, -1.5, 2.5, 1.375  # the numbers in the exercise text
    z = beta * (avg_w - avg_l) - gamma

    def softplus(x: float) -> float:
        return math.log1p(math.exp(x))

    return _diagnose(
        _array(answer, "the loss"),
        softplus(-z),
        [
            (
                softplus(-(beta * (avg_w - avg_l) - gamma / beta)),
                "you used gamma / beta as the margin: gamma is absolute here.",
            ),
            (softplus(z), "sign: the loss is -log sigma(z), so it falls as the chosen reward grows."),
            (softplus(-(beta * (avg_w - avg_l))), "you left out the target margin gamma."),
            (math.log(2), "ln 2 is the loss at z = 0; compute z first."),
        ],
        "compute z = beta * (avg_w - avg_l) - gamma, then -log sigma(z).",
        rtol=1e-4,
        atol=1e-6,
    )


@_exercise("ex2.2", "02", "core", "sequence log-probs with the mask")
def _grade_sequence_logps(answer: Any) -> str | None:
    from ..logps import sequence_logps

    labels = _toy_labels()
    logits = _toy_logits(labels)  # [N, T, V]
    log_probs = torch.log_softmax(logits, -1)  # [N, T, V]
    unshifted = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # no causal shift
    mask = labels != IGNORE_INDEX
    for average in (False, True):
        value = _array(_call(answer, logits.clone(), labels.clone(), average=average), f"average={average}")
        expected = sequence_logps(logits, labels, average=average)
        shifted_sum = sequence_logps(logits, labels, average=False)
        no_shift = (unshifted * mask).sum(-1)
        mistakes = [
            (
                (no_shift / mask.sum(-1)) if average else no_shift,
                "the causal shift is missing: the logits at t score the label at t + 1.",
            ),
            (shifted_sum / (labels.shape[1] - 1), "divide by the number of response tokens, not by T - 1."),
            (shifted_sum / labels.shape[1], "divide by the number of response tokens, not by T."),
            (
                sequence_logps(logits, labels, average=not average),
                "average=True divides each row's sum by its response token count; average=False returns the sum.",
            ),
        ]
        hint = _diagnose(
            value, expected, mistakes, f"average={average}: compare one row with a loop over its tokens."
        )
        if hint:
            return hint
    return None


@_exercise("ex2.3", "02", "core", "SimPO's gradient weight")
def _grade_grad_weight(answer: Any) -> str | None:
    from ..losses import simpo_loss

    generator = torch.Generator().manual_seed(1)
    avg_w = -torch.rand(6, generator=generator, dtype=torch.float64) * 2  # [B]
    avg_l = -torch.rand(6, generator=generator, dtype=torch.float64) * 2  # [B]
    for beta, gamma in ((2.5, 1.375), (10.0, 3.0)):
        leaf = avg_w.clone().requires_grad_()
        losses, _, _ = simpo_loss(leaf, avg_l, beta=beta, gamma=gamma)
        (autograd,) = torch.autograd.grad(losses.sum(), leaf)  # dL_i / d avg_w_i
        z = beta * (avg_w - avg_l) - gamma
        value = _array(_call(answer, avg_w.clone(), avg_l.clone(), beta, gamma), "the gradient")
        hint = _diagnose(
            value,
            autograd,
            [
                (-autograd, "sign: raising the chosen average lowers the loss, so dL/d avg_w is negative."),
                (autograd / beta, "chain rule: dz / d avg_w = beta, so beta multiplies the weight."),
                (
                    -beta * torch.sigmoid(z),
                    "sigma(z) or sigma(-z)? The weight should be large for a pair ranked wrongly.",
                ),
            ],
            f"beta={beta}, gamma={gamma}: differentiate softplus(-z) with z = beta * (avg_w - avg_l) - gamma.",
        )
        if hint:
            return hint
    return None


@_exercise("ex2.4", "02", "stretch", "the authors' setting as TRL CPOConfig arguments")
def _grade_trl_settings(answer: Any) -> str | None:
    for beta, ratio in ((2.5, 0.55), (10.0, 0.3)):
        settings = _call(answer, beta, ratio)
        if not isinstance(settings, Mapping):
            return "return a dict of CPOConfig keyword arguments"
        missing = {"loss_type", "beta", "simpo_gamma", "cpo_alpha"} - set(settings)
        if missing:
            return f"also set {sorted(missing)}: TRL's defaults are not SimPO's."
        if settings["loss_type"] != "simpo":
            return "which loss_type makes CPOTrainer compute SimPO?"
        if settings["cpo_alpha"] != 0:
            return "cpo_alpha adds an NLL term (that is CPO-SimPO); pure SimPO has none."
        if not _close(settings["beta"], beta):
            return "beta is the same number in both conventions."
        if _close(settings["simpo_gamma"], ratio):
            return "TRL's simpo_gamma is the absolute margin, not gamma_beta_ratio."
        if not _close(settings["simpo_gamma"], beta * ratio):
            return "convert gamma_beta_ratio to the absolute margin TRL expects."
    return None


# ------------------------------------------------------------------------- notebook 03: training


@_exercise("ex3.1", "03", "warm-up", "the SimPO loss before training")
def _grade_expected_first_loss(answer: Any) -> str | None:
    for beta, gamma in ((2.5, 1.375), (10.0, 3.0), (2.0, 0.0)):
        value = _array(_call(answer, beta, gamma), "the loss")
        hint = _diagnose(
            value,
            math.log1p(math.exp(gamma)),
            [
                (math.log(2), "ln 2 is DPO's loss at initialisation; SimPO's depends on its target margin."),
                (math.log1p(math.exp(gamma / beta)), "gamma is the absolute margin: no division by beta."),
                (
                    math.log1p(math.exp(-gamma)),
                    "sign: with equal averages z = -gamma, and the loss is -log sigma(z).",
                ),
            ],
            f"beta={beta}, gamma={gamma}: with equal averages, what is z?",
            rtol=1e-5,
        )
        if hint:
            return hint
    return None


def _grade_batch_loss(answer: Any, sft_weight: float) -> str | None:
    from ..training import LossConfig, preference_loss

    model, batch = _tiny_model_and_batch()
    beta, gamma = 2.5, 1.375
    config = LossConfig(name="simpo", beta=beta, gamma=gamma, sft_weight=sft_weight)

    def kit_loss(batch: Mapping[str, torch.Tensor], config: LossConfig) -> float:
        with torch.no_grad():
            return float(preference_loss(model, batch, config)[0])

    expected = kit_loss(batch, config)
    kwargs = {"beta": beta, "gamma": gamma} | ({"sft_weight": sft_weight} if sft_weight else {})
    loss = _call(answer, model, _clone(batch), **kwargs)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        return "return the batch loss as a one-element tensor (it is what .backward() is called on)."
    if not loss.requires_grad:
        return "the loss has no gradient: compute it without torch.no_grad() and without .item() / .detach()."
    value = _array(loss.reshape(()), "the loss")
    swapped = {**batch, **{k: torch.cat([batch[k][2:], batch[k][:2]]) for k in batch}}
    mistakes = [
        (kit_loss(swapped, config), "chosen and rejected are swapped: rows 0..B-1 are the chosen responses."),
        (
            kit_loss(
                batch,
                LossConfig("simpo", beta=beta, gamma=gamma, length_normalize=False, sft_weight=sft_weight),
            ),
            "SimPO uses the average log-prob per response token, not the sum.",
        ),
    ]
    if sft_weight:
        with torch.no_grad():
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits.double()
        simpo_only = kit_loss(batch, LossConfig("simpo", beta=beta, gamma=gamma))
        chosen_avgs = _avg_token_logps(logits[:2], batch["labels"][:2])
        all_tokens = _avg_token_logps(logits, batch["labels"], token_weighted=True)
        mistakes += [
            (simpo_only, "the SFT term is missing (or multiplied by 0)."),
            (
                simpo_only - sft_weight * float(chosen_avgs.mean()),
                "average the NLL over all chosen response tokens of the batch (token-weighted), not per row.",
            ),
            (simpo_only - sft_weight * float(all_tokens), "the SFT term uses the chosen responses only."),
            (2 * simpo_only - expected, "sign: the SFT term adds the negative log-likelihood."),
        ]
    return _diagnose(
        value,
        expected,
        mistakes,
        "compare each step with notebook 02: log-probs, averages, loss, mean.",
        rtol=1e-4,
        atol=1e-6,
    )


def _avg_token_logps(
    logits: torch.Tensor, labels: torch.Tensor, token_weighted: bool = False
) -> torch.Tensor:
    """Per-row average log-prob [N] of the response tokens, or one token-weighted average."""
    targets = labels[:, 1:]  # [N, T-1]
    mask = targets != IGNORE_INDEX
    logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    logps = logps * mask
    return logps.sum() / mask.sum() if token_weighted else logps.sum(-1) / mask.sum(-1)


@_exercise("ex3.2", "03", "core", "the SimPO loss of a collated batch")
def _grade_simpo_batch_loss(answer: Any) -> str | None:
    return _grade_batch_loss(answer, sft_weight=0.0)


@_exercise("ex3.3", "03", "stretch", "SimPO plus an SFT term (CPO-SimPO)")
def _grade_simpo_sft_loss(answer: Any) -> str | None:
    return _grade_batch_loss(answer, sft_weight=0.5)


# ---------------------------------------------------------------------- notebook 04: the comparison


@_exercise("ex4.1", "04", "warm-up", "a Monte-Carlo KL estimate")
def _grade_mc_kl(answer: Any) -> str | None:
    policy = [-12.0, -8.5, -20.0, -3.0]  # log pi(y_i | x_i) of 4 samples from the policy
    ref = [-14.0, -9.0, -19.0, -4.5]  # log pi_ref of the same samples
    value = _array(_call(answer, torch.tensor(policy), torch.tensor(ref)), "the KL")
    return _diagnose(
        value.reshape(()) if value.size == 1 else value,
        0.75,  # (2 + 0.5 - 1 + 1.5) / 4 by hand
        [
            (-0.75, "sign: KL(pi || pi_ref) averages log pi - log pi_ref over samples from pi."),
            (3.0, "average over the samples, do not sum."),
        ],
        "one number: the mean over samples of the log-ratio of the whole responses.",
    )


@_exercise("ex4.2", "04", "core", "the gamma where held-out reward accuracy stops rising")
def _grade_plateau_gamma(answer: Any) -> str | None:
    cases = [  # (gammas, accuracies, tol) -> expected gamma, worked out by hand
        (([0.0, 0.5, 1.0, 2.0, 3.0], [0.60, 0.66, 0.70, 0.705, 0.70], 0.01), 1.0, "a rise that flattens out"),
        (([0.0, 1.0, 2.0, 3.0], [0.60, 0.58, 0.66, 0.665], 0.01), 2.0, "a dip before a further rise"),
        (([3.0, 0.0, 2.0, 1.0], [0.695, 0.55, 0.69, 0.65], 0.01), 2.0, "gammas given out of order"),
        (([0.0, 1.0, 2.0], [0.7, 0.6, 0.5], 0.01), 0.0, "accuracy that only falls"),
        (([0.0, 1.0, 2.0], [0.5, 0.6, 0.7], 0.01), 2.0, "accuracy that never stops rising"),
    ]
    for (gammas, accuracies, tol), want, description in cases:
        got = _call(answer, list(gammas), list(accuracies), tol=tol)
        if not _close(_array(got, "the gamma"), want):
            return (
                f"for {description} you returned {got!r}. Sort by gamma; the plateau starts at the first gamma "
                "that no later gamma beats by more than tol."
            )
    return None


@_exercise("ex4.3", "04", "stretch", "a controlled SFT-term experiment")
def _grade_sft_spec(answer: Any, *, baseline: Any = None) -> str | None:
    if baseline is None:
        raise ValueError(
            'ex4.3 compares your spec with the SimPO run: check("ex4.3", sft_spec, baseline=specs["simpo"][0])'
        )
    if not hasattr(answer, "train") or not hasattr(answer.train, "loss"):
        return f"expected a RunSpec (like specs['simpo'][0]), got {type(answer).__name__}"
    loss, base_loss = answer.train.loss, baseline.train.loss
    if not loss.sft_weight > 0:
        return "the SFT term is switched on by a positive sft_weight in the loss config."
    changed = [
        f.name
        for f in fields(base_loss)
        if f.name != "sft_weight" and getattr(loss, f.name) != getattr(base_loss, f.name)
    ]
    changed += [
        f.name
        for f in fields(baseline.train)
        if f.name not in ("loss", "output_dir")
        and getattr(answer.train, f.name) != getattr(baseline.train, f.name)
    ]
    if changed:
        return f"change only the SFT weight, or the length difference has more than one cause; you also changed {changed}."
    if answer.label == baseline.label:
        return "give the run its own label, so plots and tables tell the two apart."
    if getattr(answer, "length_checkpoints", 0) != baseline.length_checkpoints:
        return "track length at the same checkpoints as the baseline (variant() turns length tracking off)."
    return None


# ------------------------------------------------------------------------ notebook 05: evaluation


@_exercise("ex5.1", "05", "warm-up", "a win rate with ties")
def _grade_win_rate(answer: Any) -> str | None:
    scores = [1.0, 0.5, 0.0, 1.0, 0.25, 1.0]
    baseline = [0.0, 0.5, 1.0, 0.25, 0.25, 1.0]  # wins 2, ties 3, losses 1 (by hand)
    value = _array(_call(answer, list(scores), list(baseline)), "the win rate")
    return _diagnose(
        value,
        3.5 / 6,
        [
            (2 / 6, "a tie counts as half a win, not as a loss."),
            (5 / 6, "a tie counts as half a win, not a full one."),
            (2 / 3, "divide by all prompts, ties included."),
        ],
        "score each prompt 1, 1/2 or 0, then average.",
    )


@_exercise("ex5.2", "05", "core", "the Wilson score interval")
def _grade_wilson(answer: Any) -> str | None:
    from ..evaluation.metrics import wilson_interval

    z = 1.959963984540054
    for successes, n in ((7.5, 10), (0, 10), (10, 10), (50, 100), (3, 7)):
        got = _call(answer, successes, n, z=z)
        value = _array(got, "the interval")
        p = successes / n
        half = z * math.sqrt(p * (1 - p) / n)
        hint = _diagnose(
            value,
            wilson_interval(successes, n, z),
            [
                (
                    (p - half, p + half),
                    "that is the normal (Wald) interval; Wilson solves (p_hat - p)^2 = z^2 p(1-p)/n for p.",
                ),
                (wilson_interval(successes, n, z)[::-1], "return (low, high)."),
            ],
            f"successes={successes}, n={n}: solve the quadratic in p for its two roots.",
            rtol=1e-6,
        )
        if hint:
            return hint
    return None


@_exercise("ex5.3", "05", "stretch", "a length-controlled win rate")
def _grade_lc_win(answer: Any) -> str | None:
    from ..evaluation.metrics import lc_win_rate

    rng = np.random.default_rng(5)
    n = 400
    baseline_lengths = rng.integers(10, 60, n).astype(float)
    lengths = baseline_lengths + rng.normal(8.0, 12.0, n).round()  # the policy writes longer answers
    feature = np.tanh((lengths - baseline_lengths) / np.std(lengths - baseline_lengths))
    p_win = 1 / (1 + np.exp(-(-0.4 + 1.5 * feature)))  # the policy is worse at equal length
    draws = rng.random(n)
    scores = np.where(draws < p_win, 1.0, 0.0)
    scores[rng.random(n) < 0.1] = 0.5  # some ties
    baseline_scores = np.full(n, 0.5)
    expected = lc_win_rate(scores, baseline_scores, lengths, baseline_lengths)
    value = _array(
        _call(answer, scores.tolist(), baseline_scores.tolist(), lengths.tolist(), baseline_lengths.tolist()),
        "the LC win rate",
    )
    return _diagnose(
        value.reshape(()) if value.size == 1 else value,
        expected.lc_win_rate,
        [
            (
                expected.raw_win_rate,
                "that is the raw win rate: report the fitted win probability at equal length.",
            )
        ],
        "fit P(win) = sigma(theta + phi * tanh(delta / sd(delta))) by maximum likelihood and report sigma(theta).",
        rtol=0.0,
        atol=0.01,
    )
