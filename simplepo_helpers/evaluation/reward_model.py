"""The ``gpu`` profile's judge: a public reward model behind the world judge's API.

A judge is called as ``judge(prompt, response)`` and returns a verdict with ``score``, ``refused``,
``family``, ``forbidden``, ``correct`` and ``reason`` (like ``world.judge.JudgeResult``), so the evaluation
helpers take either. A reward model gives a real-valued score and no correctness verdict (``correct`` is
None); ``refused`` uses the world's refusal phrases, a heuristic outside the world. ``judge_many`` scores a
batch at once (``evaluation.judge_responses`` uses it).

Default model: ``OpenAssistant/reward-model-deberta-v3-large-v2`` (a DeBERTa-v3 sequence classifier with
one output, fed the question and the answer as a text pair). Loading never runs remote code; safetensors
weights are preferred, and transformers reads a ``.bin`` file with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..runtime.hub_access import hub_access
from ..world.judge import is_refusal, prompt_text

DEFAULT_REWARD_MODEL = "OpenAssistant/reward-model-deberta-v3-large-v2"


@dataclass(frozen=True)
class RewardVerdict:
    """A reward model's verdict: its scalar reward as ``score``; no correctness verdict."""

    score: float
    refused: bool
    family: str = "all"
    reason: str = "reward model score"
    correct: bool | None = None
    forbidden: bool = False


class RewardModelJudge:
    """Score (prompt, response) pairs with a one-output sequence-classification reward model."""

    def __init__(
        self,
        model_id: str = DEFAULT_REWARD_MODEL,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 16,
        max_length: int = 512,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if batch_size < 1 or max_length < 2:
            raise ValueError("batch_size must be >= 1 and max_length >= 2")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        with hub_access("reward model", model_id):  # offline or no network: one message saying what to do
            self.tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=False)
            self.model = AutoModelForSequenceClassification.from_pretrained(model_id, trust_remote_code=False)
        if self.model.config.num_labels != 1:
            raise ValueError(
                f"{model_id}: a reward model has one output (num_labels=1), this one has "
                f"{self.model.config.num_labels}"
            )
        self.model.to(self.device).eval()
        self.batch_size, self.max_length = batch_size, max_length

    @torch.no_grad()
    def scores(self, prompts: Sequence[Any], responses: Sequence[str]) -> list[float]:
        """The reward of each response to its prompt (the last user message is the question)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        questions = [prompt_text(prompt) for prompt in prompts]
        rewards: list[float] = []
        for start in range(0, len(questions), self.batch_size):
            batch = self.tokenizer(
                questions[start : start + self.batch_size],
                list(responses[start : start + self.batch_size]),
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            )
            logits = self.model(**batch.to(self.device)).logits  # [b, 1]
            rewards += logits[:, 0].float().cpu().tolist()
        return rewards

    def judge_many(self, prompts: Sequence[Any], responses: Sequence[str]) -> list[RewardVerdict]:
        return [
            RewardVerdict(score, is_refusal(response))
            for score, response in zip(self.scores(prompts, responses), responses, strict=True)
        ]

    def __call__(self, prompt: Any, response: str) -> RewardVerdict:
        return self.judge_many([prompt], [response])[0]
