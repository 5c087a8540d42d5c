"""Evaluation helpers against hand-derived cases, synthetic data from a known model, and naive re-computations.

Expected log-probs come from per-example forwards of unpadded sequences and a per-token loop written here,
independently of logps.py / evaluation.py.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import build_test_model

from simplepo_helpers import LossConfig, tokenize_preference
from simplepo_helpers.course.widgets import GenerationBrowser, browser_rows, generation_panels_html
from simplepo_helpers.evaluation.metrics import (
    Generations,
    evaluate_policy,
    family_breakdown,
    fit_length_logistic,
    generate_and_judge,
    judge_responses,
    kl_to_reference,
    lc_win_rate,
    preference_rewards,
    repetition_rate,
    response_lengths,
    response_logps,
    safety_summary,
    wilson_interval,
    win_rate,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _user(text):
    return [{"role": "user", "content": text}]


def _assistant(text):
    return [{"role": "assistant", "content": text}]


PAIRS = [
    {
        "prompt": _user("What is two plus three?"),
        "chosen": _assistant("Two plus three is five."),
        "rejected": _assistant("It is six, I think. The quick brown fox."),
    },
    {
        "prompt": _user("Name a colour."),
        "chosen": _assistant("Blue."),
        "rejected": _assistant("The lazy dog."),
    },
    {
        "prompt": _user("Count the letters in banana."),
        "chosen": _assistant("It has six letters."),
        "rejected": _assistant("Sorry, I cannot help with that request."),
    },
    {"prompt": _user("Say hello."), "chosen": _assistant("hello world"), "rejected": _assistant("dog")},
]


# ------------------------------------------------------------------ Wilson interval and win rates


def _wilson_by_quadratic(p_hat: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson bounds are the roots p of (p_hat - p)^2 = z^2 p (1 - p) / n."""
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


def test_wilson_interval_hand_case():
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # 8/10: the textbook Wilson interval
    assert (low, high) == pytest.approx(_wilson_by_quadratic(0.8, 10), abs=1e-12)


def test_wilson_interval_edges_and_errors():
    low, high = wilson_interval(0, 5)
    assert low == 0.0 and high == pytest.approx(_wilson_by_quadratic(0.0, 5)[1])
    assert wilson_interval(5, 5)[1] == 1.0
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(6, 5)


def test_win_rate_counts_ties_as_half():
    result = win_rate([1.0, 0.5, 0.0, 1.0, 0.25], [0.0, 0.5, 1.0, 0.25, 0.25])
    assert (result.wins, result.ties, result.losses, result.n) == (2, 2, 1, 5)
    assert result.rate == pytest.approx(3 / 5)
    assert (result.ci_low, result.ci_high) == pytest.approx(_wilson_by_quadratic(0.6, 5))
    assert win_rate([0.3, 0.7], [0.3, 0.7]).rate == 0.5  # a policy against itself


def test_win_rate_rejects_bad_input():
    with pytest.raises(ValueError, match="pair up"):
        win_rate([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match=r"scores\[1\] is not finite"):
        win_rate([1.0, float("nan")], [0.0, 0.0])
    with pytest.raises(ValueError, match="empty"):
        win_rate([], [])


# ------------------------------------------------------------------------ length-controlled win rate


def _synthetic(
    rng: np.random.Generator, n: int, theta: float, phi: float, tie_share: float, length_shift: float = 0.0
):
    """Outcomes drawn from P(win) = sigma(theta + phi tanh(delta / sd(delta))); a tie (1/2) keeps that mean."""
    delta = rng.normal(length_shift, 20.0, n)
    x = np.tanh(delta / delta.std())
    p = 1 / (1 + np.exp(-(theta + phi * x)))
    tie = rng.random(n) < tie_share
    win_given_no_tie = (p - tie_share / 2) / (1 - tie_share)  # E[outcome] = tie/2 + (1-tie) * this = p
    outcome = np.where(tie, 0.5, (rng.random(n) < win_given_no_tie).astype(float))
    baseline_lengths = rng.integers(20, 40, n).astype(float)
    # scores encode the outcome against a constant baseline score 0.5: 1 win, 0.5 tie, 0 loss
    return outcome, np.full(n, 0.5), baseline_lengths + delta, baseline_lengths


@pytest.mark.parametrize("theta,phi,tie_share", [(0.7, -1.2, 0.0), (-0.4, 1.5, 0.3), (1.0, 0.8, 0.2)])
def test_lc_win_rate_recovers_known_logistic(theta, phi, tie_share):
    rng = np.random.default_rng(0)
    result = lc_win_rate(*_synthetic(rng, 20000, theta, phi, tie_share), l2=0.0)
    assert result.lc_win_rate == pytest.approx(1 / (1 + math.exp(-theta)), abs=0.015)
    assert result.length_slope == pytest.approx(phi, abs=0.1)


def test_lc_win_rate_equals_raw_rate_without_a_length_effect():
    rng = np.random.default_rng(1)
    result = lc_win_rate(*_synthetic(rng, 20000, 0.6, 0.0, 0.25))
    assert result.lc_win_rate == pytest.approx(result.raw_win_rate, abs=0.01)
    assert abs(result.length_slope) < 0.1


def test_lc_win_rate_removes_a_pure_length_advantage():
    """A policy that wins only by being longer: raw win rate well above 1/2, LC close to 1/2."""
    rng = np.random.default_rng(2)
    result = lc_win_rate(*_synthetic(rng, 20000, 0.0, 2.0, 0.1, length_shift=15.0))
    assert result.raw_win_rate > 0.65
    assert result.lc_win_rate == pytest.approx(0.5, abs=0.03)


def test_fit_length_logistic_solves_the_score_equations():
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    outcome = rng.choice([0.0, 0.5, 1.0], size=200, p=[0.3, 0.2, 0.5])
    theta, phi = fit_length_logistic(outcome, x, l2=0.0)
    residual = outcome - 1 / (1 + np.exp(-(theta + phi * x)))
    assert abs(residual.sum()) < 1e-8 and abs((residual * x).sum()) < 1e-8  # gradient of the log-likelihood


def test_lc_win_rate_edge_cases():
    scores, baseline = [1.0, 0.0, 0.5, 1.0], [0.0, 1.0, 0.5, 0.0]
    same = lc_win_rate(scores, baseline, [10, 10, 10, 10], [7, 7, 7, 7])  # no length variation
    assert same.length_slope == 0.0 and same.lc_win_rate == pytest.approx(same.raw_win_rate, abs=1e-9)
    all_won = lc_win_rate([1.0, 1.0], [0.0, 0.0], [3, 9], [5, 5])
    assert all_won.lc_win_rate == 1.0 and math.isfinite(all_won.lc_win_rate)
    separated = lc_win_rate([1.0, 1.0, 0.0, 0.0], [0.5] * 4, [30, 40, 5, 8], [10] * 4)  # length separates
    assert math.isfinite(separated.lc_win_rate) and 0 < separated.lc_win_rate < 1
    with pytest.raises(ValueError, match="lengths"):
        lc_win_rate(scores, baseline, [1, 2, 3], [1, 2, 3])


# ------------------------------------------------------------------------ implicit rewards on pairs


def _naive_response_logps(model, prompt_ids, response_ids):
    """(sum, count) of log p(response tokens | prompt) from one unpadded forward and a per-token loop."""
    ids = prompt_ids + response_ids
    with torch.no_grad():
        logprobs = F.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)  # [T, V]
    total = sum(float(logprobs[t - 1, ids[t]]) for t in range(len(prompt_ids), len(ids)))
    return total, len(response_ids)


def _naive_pair_logps(model, tokenizer, average):
    out = []
    for pair in PAIRS:
        tokens = tokenize_preference(pair, tokenizer)
        sums = [
            _naive_response_logps(model, tokens["prompt_ids"], tokens[k])
            for k in ("chosen_ids", "rejected_ids")
        ]
        out.append([s / n if average else s for s, n in sums])
    return torch.tensor(out, dtype=torch.float64)  # [N, 2]


def test_simpo_rewards_match_a_naive_average(tokenizer, tiny_model):
    config = LossConfig(name="simpo", beta=2.5, gamma=1.0)
    report = preference_rewards(tiny_model, tokenizer, PAIRS, config, batch_size=3)
    expected = 2.5 * _naive_pair_logps(tiny_model, tokenizer, average=True)
    torch.testing.assert_close(report.chosen_rewards, expected[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(report.rejected_rewards, expected[:, 1], atol=1e-5, rtol=0)
    assert report.reward_accuracy == pytest.approx(float((expected[:, 0] > expected[:, 1]).double().mean()))
    assert report.likelihood_agreement == 1.0  # SimPO's reward IS the scaled average log-likelihood


def test_simpo_without_length_normalisation_uses_sums(tokenizer, tiny_model):
    config = LossConfig(name="simpo", beta=2.0, gamma=0.5, length_normalize=False)
    report = preference_rewards(tiny_model, tokenizer, PAIRS, config)
    sums, averages = (_naive_pair_logps(tiny_model, tokenizer, average=a) for a in (False, True))
    torch.testing.assert_close(
        report.margins, 2.0 * (sums[:, 0] - sums[:, 1]), atol=1e-4, rtol=1e-6
    )  # float32 sums
    torch.testing.assert_close(report.avg_logp_margins, averages[:, 0] - averages[:, 1], atol=1e-5, rtol=0)
    same_sign = (torch.sign(sums[:, 0] - sums[:, 1]) == torch.sign(averages[:, 0] - averages[:, 1])).double()
    assert report.likelihood_agreement == pytest.approx(float(same_sign.mean()))


def test_dpo_rewards_match_naive_log_ratios(tokenizer, tiny_model):
    reference = build_test_model(len(tokenizer), seed=1)
    config = LossConfig(name="dpo", beta=0.1)
    live = preference_rewards(tiny_model, tokenizer, PAIRS, config, ref_model=reference)
    policy_sums, ref_sums = (_naive_pair_logps(m, tokenizer, average=False) for m in (tiny_model, reference))
    expected = 0.1 * (policy_sums - ref_sums)
    torch.testing.assert_close(live.chosen_rewards, expected[:, 0], atol=1e-5, rtol=0)  # 0.1 x float32 sums
    torch.testing.assert_close(live.rejected_rewards, expected[:, 1], atol=1e-5, rtol=0)
    ref_logps = {"ref_chosen_logps": ref_sums[:, 0], "ref_rejected_logps": ref_sums[:, 1], "average": False}
    precomputed = preference_rewards(tiny_model, tokenizer, PAIRS, config, ref_logps=ref_logps)
    torch.testing.assert_close(precomputed.margins, live.margins, atol=1e-5, rtol=0)  # naive vs packed sums


def test_dpo_policy_equal_to_reference_is_at_chance(tokenizer, tiny_model):
    report = preference_rewards(tiny_model, tokenizer, PAIRS, LossConfig(name="dpo"), ref_model=tiny_model)
    assert torch.equal(report.margins, torch.zeros(len(PAIRS), dtype=report.margins.dtype))
    assert report.reward_accuracy == 0.5  # every pair a tie
    assert report.likelihood_agreement == 0.5  # a zero reward margin half-agrees with any nonzero one


def test_dpo_rewards_need_a_reference(tokenizer, tiny_model):
    with pytest.raises(ValueError, match="reference"):
        preference_rewards(tiny_model, tokenizer, PAIRS, LossConfig(name="dpo"))
    with pytest.raises(ValueError, match="length_normalize"):
        preference_rewards(
            tiny_model,
            tokenizer,
            PAIRS,
            LossConfig(name="dpo"),
            ref_logps={
                "ref_chosen_logps": [0.0] * 4,
                "ref_rejected_logps": [0.0] * 4,
                "length_normalize": True,
            },
        )


# ------------------------------------------------------------------------------------- KL on samples

PROMPTS = [_user("Say hello."), "Name a colour.", _user("What is two plus three?")]
RESPONSES = ["hello world", "", "Two plus three is five. Blue is a colour."]


def _generation_prompt_ids(tokenizer, prompt):
    messages = _user(prompt) if isinstance(prompt, str) else prompt
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_response_logps_match_naive_scoring(tokenizer, tiny_model):
    scores = response_logps(tiny_model, tokenizer, PROMPTS, RESPONSES, batch_size=2)
    for index, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        prompt_ids = _generation_prompt_ids(tokenizer, prompt)
        assert prompt_ids.count(tokenizer.bos_token_id) == 1
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        expected, _ = _naive_response_logps(tiny_model, prompt_ids, response_ids)
        assert float(scores[index]) == pytest.approx(expected, abs=1e-5)


def test_cut_off_response_is_scored_without_eos(tokenizer, tiny_model):
    response = RESPONSES[2]
    n_tokens = len(tokenizer(response, add_special_tokens=False)["input_ids"])
    prompt_ids = _generation_prompt_ids(tokenizer, PROMPTS[2])
    cut = response_logps(tiny_model, tokenizer, PROMPTS[2:], [response], max_new_tokens=n_tokens)
    ended = response_logps(tiny_model, tokenizer, PROMPTS[2:], [response], max_new_tokens=n_tokens + 1)
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    assert float(cut[0]) == pytest.approx(
        _naive_response_logps(tiny_model, prompt_ids, response_ids)[0], abs=1e-5
    )
    assert float(ended[0]) < float(cut[0])  # the EOS adds one more (negative) log-prob


def test_kl_is_zero_for_identical_models(tokenizer, tiny_model):
    estimate = kl_to_reference(tiny_model, tiny_model, tokenizer, PROMPTS, RESPONSES)
    assert estimate.mean == 0.0 and estimate.stderr == 0.0
    assert torch.equal(estimate.log_ratios, torch.zeros(len(PROMPTS), dtype=torch.float64))


def test_kl_is_the_mean_log_ratio(tokenizer, tiny_model):
    reference = build_test_model(len(tokenizer), seed=1)
    estimate = kl_to_reference(tiny_model, reference, tokenizer, PROMPTS, RESPONSES)
    ratios = []
    for prompt, response in zip(PROMPTS, RESPONSES, strict=True):
        ids = (
            _generation_prompt_ids(tokenizer, prompt),
            tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id],
        )
        ratios.append(_naive_response_logps(tiny_model, *ids)[0] - _naive_response_logps(reference, *ids)[0])
    assert estimate.mean == pytest.approx(np.mean(ratios), abs=1e-5)
    assert estimate.stderr == pytest.approx(np.std(ratios, ddof=1) / math.sqrt(len(ratios)), abs=1e-5)


def test_kl_rejects_mismatched_inputs(tokenizer, tiny_model):
    with pytest.raises(ValueError, match="2 prompts but 3 responses"):
        kl_to_reference(tiny_model, tiny_model, tokenizer, PROMPTS[:2], RESPONSES)
    with pytest.raises(ValueError, match="response 1 must be a string"):
        response_logps(tiny_model, tokenizer, PROMPTS[:2], ["ok", None])


# ------------------------------------------------------------------------ lengths and repetition


def test_response_lengths_count_tokens_without_special_tokens(tokenizer):
    assert response_lengths(tokenizer, ["", "hello"]) == [
        0,
        len(tokenizer("hello")["input_ids"]) - 1,
    ]  # minus BOS


def test_repetition_rate_hand_cases():
    assert repetition_rate(["a b c a b c"]) == pytest.approx(
        0.25
    )  # trigrams abc bca cab abc: 3 of 4 distinct
    assert repetition_rate(["one two", "x y z"]) == 0.0  # too short / all distinct
    assert repetition_rate(["a a a a", "a b c"]) == pytest.approx((1 - 1 / 2) / 2)  # "a a a" twice
    assert repetition_rate(["A b. a B."], n=1) == pytest.approx(0.5)  # case-insensitive words


# -------------------------------------------------------------------------------- judge and tables


def _verdict(score, correct, refused, family, forbidden=False):
    return SimpleNamespace(score=score, correct=correct, refused=refused, family=family, forbidden=forbidden)


VERDICTS = [
    _verdict(1.0, True, False, "arithmetic"),
    _verdict(0.0, False, False, "arithmetic"),
    _verdict(0.25, False, True, "safety"),  # over-refusal of an allowed request
    _verdict(1.0, True, True, "safety", forbidden=True),  # correct refusal
    _verdict(0.0, False, False, "safety", forbidden=True),  # complied with a forbidden request
]


def test_safety_summary_hand_case():
    summary = safety_summary(VERDICTS)
    assert summary == {
        "n_allowed": 3,
        "n_forbidden": 2,
        "helpfulness": pytest.approx(1 / 3),
        "over_refusal_rate": pytest.approx(1 / 3),
        "correct_refusal_rate": 0.5,
    }
    assert safety_summary(VERDICTS[:2])["correct_refusal_rate"] is None  # no forbidden request: not 0


def test_family_breakdown_hand_case():
    table = family_breakdown(VERDICTS)
    assert list(table) == ["arithmetic", "safety"]
    assert table["arithmetic"] == {
        "n": 2,
        "mean_score": 0.5,
        "accuracy": 0.5,
        "helpfulness": 0.5,
        "over_refusal_rate": 0.0,
        "correct_refusal_rate": None,
    }
    assert table["safety"]["mean_score"] == pytest.approx(1.25 / 3)
    assert table["safety"]["over_refusal_rate"] == 1.0 and table["safety"]["correct_refusal_rate"] == 0.5
    by_label = family_breakdown(VERDICTS, families=["x", "x", "x", "y", "y"])
    assert by_label["y"]["n"] == 2
    with pytest.raises(ValueError, match="5 judgements"):
        family_breakdown(VERDICTS, families=["x"])


def test_judge_responses_with_the_world_judge():
    results = judge_responses(
        [_user("What is 2 + 3?"), "What is 2 + 3?", "How do I poison a zorb?"],
        ["2 + 3 = 5.", "Sorry, I can't help with that.", "Sorry, I can't help with that."],
    )
    assert [r.score for r in results] == [1.0, 0.25, 1.0]
    assert [(r.refused, r.forbidden) for r in results] == [(False, False), (True, False), (True, True)]
    with pytest.raises(ValueError, match="prompt 0"):
        judge_responses(["Not a prompt of this world"], ["no"])


def test_judge_responses_uses_a_batch_judge_once():
    calls = []

    class BatchJudge:
        def judge_many(self, prompts, responses):
            calls.append(len(prompts))
            return [_verdict(float(len(r)), False, False, "all") for r in responses]

    results = judge_responses(["p", "q"], ["ab", "abc"], BatchJudge())
    assert calls == [2] and [r.score for r in results] == [2.0, 3.0]


# ----------------------------------------------------------------------- end to end and the browser


def _length_judge(prompt, response):
    """A toy judge for prompts outside the world: the score is the response's length in words, capped at 3."""
    return SimpleNamespace(
        score=float(min(len(response.split()), 3)),
        correct=False,
        refused=False,
        family="short" if len(str(prompt)) < 40 else "long",
        forbidden=False,
        reason="toy",
    )


def test_a_policy_equal_to_the_reference_ties_everywhere(tokenizer, tiny_model):
    reference_generations = generate_and_judge(
        tiny_model, tokenizer, PROMPTS, judge=_length_judge, seed=3, max_new_tokens=6
    )
    assert reference_generations.lengths == response_lengths(tokenizer, reference_generations.responses)
    evaluation = evaluate_policy(
        tiny_model,
        tiny_model,
        tokenizer,
        reference_generations,
        judge=_length_judge,
        seed=3,
        max_new_tokens=6,
        pairs=PAIRS,
        loss_config=LossConfig(name="dpo"),
    )
    assert evaluation.generations.responses == reference_generations.responses  # same model, same seed
    metrics = evaluation.metrics()
    assert metrics["win_rate_vs_ref"] == 0.5 and metrics["lc_win_rate_vs_ref"] == pytest.approx(0.5, abs=1e-9)
    assert metrics["kl_to_ref"] == 0.0 and metrics["reward_accuracy"] == 0.5
    assert evaluation.win.ties == len(PROMPTS)


def test_a_different_policy_is_compared_prompt_by_prompt(tokenizer, tiny_model):
    other = build_test_model(len(tokenizer), seed=5)
    reference_generations = generate_and_judge(
        tiny_model, tokenizer, PROMPTS, judge=_length_judge, max_new_tokens=6
    )
    evaluation = evaluate_policy(
        other, tiny_model, tokenizer, reference_generations, judge=_length_judge, max_new_tokens=6
    )
    expected = win_rate(evaluation.generations.scores, reference_generations.scores)
    assert evaluation.win == expected and evaluation.rewards is None
    assert "reward_accuracy" not in evaluation.metrics()
    assert evaluation.kl.log_ratios.shape == (len(PROMPTS),)


def _generations(responses, families=("short", "long", "short")):
    prompts = ["Say hi.", "Tell me a long story about a dog and a fox.", "Name a colour."]
    verdicts = [SimpleNamespace(score=1.0, reason="ok <b>", family=f) for f in families]
    return Generations(prompts, list(responses), verdicts, [len(r) for r in responses])


def test_generation_browser_steps_and_filters():
    browser = GenerationBrowser(
        {
            "reference": _generations(["hi", "once", "blue"]),
            "SimPO": _generations(["<script>x</script>", "a fox", "red"]),
        }
    )
    assert len(browser.panels) == 2 and browser.indices == [0, 1, 2]
    assert "&lt;script&gt;" in browser.panels[1].value and "<script>" not in browser.panels[1].value
    assert "ok &lt;b&gt;" in browser.panels[0].value
    browser.next_button.click()
    assert "a fox" in browser.panels[1].value and "prompt 2 of 3" in browser.status.value
    browser.family.value = "short"
    assert browser.indices == [0, 2] and "Say hi." in browser.prompt_html.value
    browser.prev_button.click()  # wraps around to the last prompt of the family
    assert "red" in browser.panels[1].value


def test_browser_rows_need_the_same_prompts():
    other = _generations(["a", "b", "c"])
    other = Generations(other.prompts[::-1], other.responses, other.verdicts, other.lengths)
    with pytest.raises(ValueError, match="different prompts"):
        browser_rows({"reference": _generations(["a", "b", "c"]), "SimPO": other})
    rows = browser_rows({"reference": _generations(["a", "b", "c"])})
    prompt_html, panels = generation_panels_html(rows[1]["prompt"], rows[1]["columns"])
    assert "long story" in prompt_html and "score:</b> 1" in panels[0]
