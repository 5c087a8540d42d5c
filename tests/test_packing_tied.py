"""The packed layout with SmolLM2's kind of model (tied embeddings, grouped-query attention), and which
sequence can see which inside a pair.

- Gradient exactness: a tiny Llama with ``tie_word_embeddings=True`` and 6 query heads sharing 2 key-value
  heads (SmolLM2-135M ties its embeddings and has 9 heads over 3). The tied matrix gets its gradient from the
  embedding lookup *and* the fused LM head, so this is the case ``tests/test_packing.py``'s gradient test
  (untied Llama, Qwen2) does not cover. Tolerances as there: log-probs and losses within 1e-5, gradients
  within 1e-4 of each parameter's largest entry.
- Isolation inside a pair: the packed row holds ``[prompt | chosen | rejected]``, so the only leak that a
  wrong mask could make inside a pair is the rejected response attending to the chosen one. Changing the
  chosen response's tokens must leave the rejected response's log-probs bit-identical (and every other
  pair's); changing the prompt must change both responses of that pair (the sanity check that the
  perturbation reaches the attention at all).
"""

from __future__ import annotations

import pytest
import torch
from conftest import build_test_model

from simplepo_helpers.batching import PreferenceCollator
from simplepo_helpers.fast.packing import packed_support
from simplepo_helpers.training import LossConfig, concatenated_forward, preference_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LOGPS_ATOL = 1e-5
GRAD_RTOL = 1e-4
EXAMPLES = [
    {"prompt": "What is two plus three?", "chosen": " Two plus three is five.", "rejected": " Six."},
    {"prompt": "Name a colour.", "chosen": " Blue.", "rejected": " The quick brown fox jumps over the dog."},
    {
        "prompt": [{"role": "user", "content": "Count the letters in the word banana, please."}],
        "chosen": [{"role": "assistant", "content": "It has six letters."}],
        "rejected": [{"role": "assistant", "content": "Sorry, I cannot help with that request."}],
    },
]
# SmolLM2's pattern at toy size: tied embeddings, 3 query heads per key-value head
SMOLLM2_LIKE = {"hidden_size": 48, "num_attention_heads": 6, "num_key_value_heads": 2}


def tied_model(vocab_size: int, seed: int = 0):
    return build_test_model(vocab_size, seed, tie_word_embeddings=True, **SMOLLM2_LIKE)


@pytest.fixture()
def batch(tokenizer):
    return PreferenceCollator(tokenizer)(EXAMPLES)


def test_the_model_is_tied_with_grouped_query_attention(tokenizer):
    model = tied_model(len(tokenizer))
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.config.num_attention_heads == 3 * model.config.num_key_value_heads
    assert packed_support(model) is None  # the packed layout is what train() runs on it


def _loss_and_gradients(model, batch, config, layout, **kwargs):
    model.zero_grad(set_to_none=True)
    loss, metrics = preference_loss(model, batch, config, layout=layout, **kwargs)
    loss.backward()
    return loss.detach(), metrics, {name: p.grad.clone() for name, p in model.named_parameters()}


LOSSES = {
    "simpo": (LossConfig("simpo", beta=2.5, gamma=0.5), False),
    "simpo_sft": (LossConfig("simpo", sft_weight=0.7), False),
    "simpo_sum": (LossConfig("simpo", beta=0.25, gamma=0.1, length_normalize=False), False),
    "dpo_live_reference": (LossConfig("dpo", beta=0.3), True),
    "dpo_kl": (LossConfig("dpo", beta=0.3, kl_weight=0.5), True),
}


@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_tied_loss_and_gradients_equal_the_padded_path(loss_name, tokenizer, batch):
    config, needs_ref = LOSSES[loss_name]
    model = tied_model(len(tokenizer)).train()
    ref_model = tied_model(len(tokenizer), seed=1) if needs_ref else None
    padded_loss, padded_metrics, padded_grads = _loss_and_gradients(
        model, batch, config, "padded", ref_model=ref_model
    )
    loss, metrics, grads = _loss_and_gradients(model, batch, config, "packed", ref_model=ref_model)
    torch.testing.assert_close(loss, padded_loss, atol=LOGPS_ATOL, rtol=1e-6)
    for key, value in padded_metrics.items():
        assert metrics[key] == pytest.approx(value, abs=LOGPS_ATOL, rel=1e-6), key
    assert grads.keys() == padded_grads.keys()
    tied = "model.embed_tokens.weight"
    assert "lm_head.weight" not in grads and tied in grads  # one tensor, counted once
    for name, expected in padded_grads.items():
        error = (grads[name] - expected).abs().max()
        assert error <= GRAD_RTOL * expected.abs().max() + 1e-8, f"{name}: {error} vs {expected.abs().max()}"
    # the tied matrix's gradient has its head part: rows of tokens never in the batch still get gradient
    # (every vocabulary row enters the softmax), which the lookup alone could not give them
    unused = torch.ones(len(tokenizer), dtype=torch.bool)
    unused[batch["input_ids"].unique()] = False
    assert unused.any() and grads[tied][unused].abs().sum() > 0


def _perturbed(batch, row, start, stop):
    """A copy of ``batch`` with the tokens of ``row`` in [start, stop) changed (lengths unchanged)."""
    changed = {key: value.clone() for key, value in batch.items()}
    for key in ("input_ids", "labels"):
        part = changed[key][row, start:stop]
        changed[key][row, start:stop] = torch.where(part == -100, part, (part + 7) % 300 + 4)
    assert not torch.equal(changed["input_ids"][row], batch["input_ids"][row])
    return changed


def _token_sums(model, batch):
    return concatenated_forward(model, batch, length_normalize=False, layout="packed")["token_sums"]  # [2B]


@pytest.mark.parametrize("pair", [0, 1, 2])
@pytest.mark.parametrize("tied", [True, False])
def test_a_changed_chosen_response_leaves_its_rejected_response_bit_identical(pair, tied, tokenizer, batch):
    model = tied_model(len(tokenizer)) if tied else build_test_model(len(tokenizer))
    pairs = batch["input_ids"].shape[0] // 2
    before = _token_sums(model, batch)
    response = (batch["labels"][pair] != -100).nonzero().flatten()  # the chosen response of ``pair``
    after = _token_sums(model, _perturbed(batch, pair, int(response[0]), int(response[-1]) + 1))
    # only the chosen response itself changed: its rejected response (row pair + B), which sits after it
    # in the packed row, did not see it, nor did any other pair
    assert (after != before).nonzero().flatten().tolist() == [pair]
    assert torch.equal(after[pair + pairs], before[pair + pairs])


@pytest.mark.parametrize("pair", [0, 2])
def test_a_changed_prompt_changes_both_of_its_responses(pair, tokenizer, batch):
    model = tied_model(len(tokenizer))
    pairs = batch["input_ids"].shape[0] // 2
    before = _token_sums(model, batch)
    prompt_end = int((batch["labels"][pair] != -100).nonzero()[0])
    # both rows of the pair hold the prompt; the BOS (position 0) is kept
    changed = _perturbed(_perturbed(batch, pair, 1, prompt_end), pair + pairs, 1, prompt_end)
    after = _token_sums(model, changed)
    assert (after != before).nonzero().flatten().tolist() == [pair, pair + pairs]


def test_the_isolation_check_catches_a_rejected_response_that_sees_the_chosen_one(tokenizer, batch):
    """Negative control: with an attention that lets each pair's whole ``[prompt | chosen | rejected]``
    segment attend causally (the leak the check above is for), the same perturbation changes the rejected
    response too."""
    import torch.nn.functional as F
    from transformers import AttentionInterface

    from simplepo_helpers.fast.packing import ATTENTION_NAME, segment_attention

    def leaky(module, query, key, value, attention_mask, dropout=0.0, scaling=None, simplepo_pairs=(), **_):
        gqa = {"enable_gqa": True} if key.shape[1] != query.shape[1] else {}
        outputs = []
        for start, p, c, r in simplepo_pairs:
            part = slice(start, start + p + c + r)
            q, k, v = (t[:, :, part] for t in (query, key, value))
            outputs.append(F.scaled_dot_product_attention(q, k, v, scale=scaling, is_causal=True, **gqa))
        return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None

    model = tied_model(len(tokenizer))
    pairs = batch["input_ids"].shape[0] // 2
    response = (batch["labels"][0] != -100).nonzero().flatten()
    changed = _perturbed(batch, 0, int(response[0]), int(response[-1]) + 1)
    AttentionInterface.register(ATTENTION_NAME, leaky)
    try:
        leaked = (_token_sums(model, changed) != _token_sums(model, batch)).nonzero().flatten().tolist()
    finally:
        AttentionInterface.register(ATTENTION_NAME, segment_attention)
    assert leaked == [0, pairs]
