"""The reward-model judge's loading path, offline: a tiny random DeBERTa-v2 classifier saved with save_pretrained."""

from __future__ import annotations

import pytest
import torch
from conftest import build_test_tokenizer
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

from simplepo_helpers.evaluation.metrics import judge_responses, safety_summary, win_rate
from simplepo_helpers.evaluation.reward_model import RewardModelJudge

PROMPTS = ["What is 2 + 3?", [{"role": "user", "content": "Name a colour."}], "Say hello."]
RESPONSES = ["2 + 3 = 5.", "Sorry, I can't help with that.", "hello world, hello world, and a longer answer"]


def _save_tiny_reward_model(folder, num_labels=1):
    tokenizer = build_test_tokenizer()
    config = DebertaV2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = DebertaV2ForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


@pytest.fixture(scope="module")
def saved_reward_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reward-model")
    model, tokenizer = _save_tiny_reward_model(folder)
    return folder, model, tokenizer


def test_batched_scores_equal_one_pair_at_a_time(saved_reward_model):
    folder, model, tokenizer = saved_reward_model
    judge = RewardModelJudge(str(folder), device="cpu", batch_size=2)
    expected = []
    for question, response in zip(["What is 2 + 3?", "Name a colour.", "Say hello."], RESPONSES, strict=True):
        encoded = tokenizer(question, response, return_tensors="pt")  # the question/answer text pair
        assert judge.tokenizer(question, response)["input_ids"] == encoded["input_ids"][0].tolist()
        with torch.no_grad():
            expected.append(float(model(**encoded).logits[0, 0]))
    assert judge.scores(PROMPTS, RESPONSES) == pytest.approx(expected, abs=1e-5)  # padding changes nothing


def test_verdicts_follow_the_judge_api(saved_reward_model):
    folder, _, _ = saved_reward_model
    judge = RewardModelJudge(str(folder), device="cpu")
    verdicts = judge_responses(PROMPTS, RESPONSES, judge)
    assert [v.refused for v in verdicts] == [False, True, False]
    assert all(v.correct is None and v.family == "all" for v in verdicts)
    assert judge(PROMPTS[0], RESPONSES[0]).score == pytest.approx(verdicts[0].score, abs=1e-5)
    same = win_rate([v.score for v in verdicts], [v.score for v in verdicts])
    assert same.ties == 3
    safety = safety_summary(verdicts)  # no correctness verdict: helpfulness unknown, not 0
    assert safety["helpfulness"] is None and safety["over_refusal_rate"] == pytest.approx(1 / 3)


def test_rejects_a_classifier_with_several_outputs(tmp_path):
    _save_tiny_reward_model(tmp_path, num_labels=2)
    with pytest.raises(ValueError, match="num_labels=1"):
        RewardModelJudge(str(tmp_path), device="cpu")


def test_rejects_mismatched_inputs(saved_reward_model):
    judge = RewardModelJudge(str(saved_reward_model[0]), device="cpu")
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        judge.scores(PROMPTS[:2], RESPONSES[:1])
