"""generate_responses: left padding, one BOS, only new tokens decoded, stop at EOS, seeded, pure sampling."""

from __future__ import annotations

import pytest
import torch

from simplepo_helpers import generate_responses

PROMPTS = ["What is two plus three?", [{"role": "user", "content": "Name a colour."}], "Count the letters."]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _force(model, schedule):
    """Hook the LM head: at decoding step k (prefill = 0) add a large logit to token schedule(k)."""
    calls = []

    def hook(_module, _inputs, logits):  # logits [B, T, V]
        token = schedule(len(calls))
        calls.append(logits.shape)
        if token is not None:
            logits = logits.clone()
            logits[:, -1, token] += 1e4
        return logits

    handle = model.lm_head.register_forward_hook(hook)
    return calls, handle


def test_same_seed_same_text_other_seed_other_text(tiny_model, tokenizer):
    first = generate_responses(tiny_model, tokenizer, PROMPTS, max_new_tokens=12, seed=3)
    assert first == generate_responses(tiny_model, tokenizer, PROMPTS, max_new_tokens=12, seed=3)
    assert first != generate_responses(tiny_model, tokenizer, PROMPTS, max_new_tokens=12, seed=4)
    state = torch.random.get_rng_state()
    generate_responses(tiny_model, tokenizer, PROMPTS, max_new_tokens=4, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone


def test_left_padding_single_bos_and_generation_prompt(tiny_model, tokenizer):
    seen = {}
    original = tiny_model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    tiny_model.generate = spy
    generate_responses(tiny_model, tokenizer, PROMPTS, max_new_tokens=2, seed=0)
    ids, mask = seen["input_ids"], seen["attention_mask"]  # [3, T]
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for row in range(len(PROMPTS)):
        assert ids[row, -len(header) :].tolist() == header  # every row ends where generation starts
        real = ids[row][mask[row].bool()].tolist()
        assert real.count(tokenizer.bos_token_id) == 1 and real[0] == tokenizer.bos_token_id
        assert mask[row].tolist() == sorted(mask[row].tolist())  # zeros (padding) only on the left
    assert mask.min() == 0  # the prompts differ in length, so something was padded


def test_decodes_only_new_tokens_and_stops_at_eos(tiny_model, tokenizer):
    word = tokenizer("hello", add_special_tokens=False)["input_ids"][0]
    calls, handle = _force(tiny_model, lambda step: word if step < 3 else tokenizer.eos_token_id)
    try:
        out = generate_responses(tiny_model, tokenizer, PROMPTS, max_new_tokens=10, seed=0)
    finally:
        handle.remove()
    assert out == [tokenizer.decode([word] * 3)] * len(PROMPTS)
    assert len(calls) == 4  # three tokens, then EOS ends the batch: no further decoding steps


def test_sampling_is_not_top_k_limited(tiny_model, tokenizer):
    favoured = list(range(10, 60))  # 50 tokens slightly favoured: top-k=50 would sample only these
    bump = torch.zeros(len(tokenizer))
    bump[favoured] = 0.5

    def flat(_module, _inputs, logits):  # [B, T, V]: a near-uniform distribution
        return torch.zeros_like(logits) + bump

    handle = tiny_model.lm_head.register_forward_hook(flat)
    try:
        out = generate_responses(tiny_model, tokenizer, ["hi"] * 64, max_new_tokens=1, seed=0)
    finally:
        handle.remove()
    favoured_text = {tokenizer.decode([t]) for t in favoured}
    assert sum(text not in favoured_text for text in out) > 20


def test_greedy_is_batch_independent_and_training_mode_restored(tiny_model, tokenizer):
    tiny_model.train()
    together = generate_responses(tiny_model, tokenizer, PROMPTS, max_new_tokens=6, do_sample=False)
    alone = [
        generate_responses(tiny_model, tokenizer, [p], max_new_tokens=6, do_sample=False)[0] for p in PROMPTS
    ]
    assert together == alone
    assert tiny_model.training


@pytest.mark.parametrize("bad", [[[{"role": "assistant", "content": "hi"}]], [[]]])
def test_bad_prompt_names_its_index(tiny_model, tokenizer, bad):
    with pytest.raises(ValueError, match="prompt 1"):
        generate_responses(tiny_model, tokenizer, ["fine", *bad], max_new_tokens=2)
