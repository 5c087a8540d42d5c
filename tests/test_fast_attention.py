"""How the packed row attends (``fast/attention.py``): one masked SDPA per layer against the per-segment calls
and the padded path.

- The mask: built by hand for a two-pair row; its float (additive) form has an aligned row stride.
- Exactness in float64 (tiny Llama with grouped-query attention, the same with tied embeddings and 3 query
  heads per key-value head, Qwen2): the one-call masked path's per-sequence log-probs and SimPO loss equal
  the padded path's and the per-segment path's within 1e-12; its gradients equal the per-segment path's
  within 1e-12 of each parameter's largest entry, and the padded path's within 1e-6 (the models' RMSNorm
  computes in float32 even in a float64 model, and the packed row sums the shared prompt's gradient before
  that float32 cast, the padded batch after it: float32 rounding, 5e-8 to 3e-7 measured).
- Calls: the profiler counts ``aten::scaled_dot_product_attention``: exactly one per layer per forward on the
  masked path, ``2 x pairs`` per layer on the per-segment path; the backward runs one SDPA backward per
  forward call.
- Isolation: changing the chosen response leaves the rejected response's log-probs (and every other pair's)
  bit-identical on the masked path.
- The choice: per segment on CPU (the default, its numbers unchanged), masked on CUDA,
  ``$SIMPLEPO_PACKED_ATTENTION`` overrides, ``fast.describe_layout`` says which.
"""

from __future__ import annotations

import collections

import pytest
import torch
from conftest import build_test_model
from test_packing import EXAMPLES, _perturbed, tiny_qwen2
from test_packing_tied import SMOLLM2_LIKE

from simplepo_helpers import fast
from simplepo_helpers.batching import PreferenceCollator
from simplepo_helpers.fast import attention
from simplepo_helpers.fast.attention import (
    ATTENTION_ENV,
    PackedRowMask,
    attention_mode,
    masked_attention,
    packed_row_mask,
)
from simplepo_helpers.fast.packing import pack_preference_batch, packed_sequence_logps
from simplepo_helpers.training import LossConfig, concatenated_forward, preference_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ATOL = 1e-12  # float64: log-probs and losses; gradients against the per-segment path (of the largest entry)
PADDED_GRAD_RTOL = 1e-6  # gradients against the padded path, of each parameter's largest entry (see above)
MODELS = {
    "llama_gqa": lambda vocab: build_test_model(vocab),  # 4 query heads over 2 key-value heads
    "llama_tied_gqa": lambda vocab: build_test_model(vocab, tie_word_embeddings=True, **SMOLLM2_LIKE),
    "qwen2": tiny_qwen2,
}
SIMPO = LossConfig("simpo", beta=2.5, gamma=0.5)


@pytest.fixture()
def batch(tokenizer):
    return PreferenceCollator(tokenizer)(EXAMPLES)


def test_the_mask_by_hand():
    # pair 0 at 0: prompt 0-1, chosen 2-3, rejected 4-6; pair 1 at 7: prompt 7, chosen 8, rejected 9
    pairs = ((0, 2, 2, 3), (7, 1, 1, 1))
    seen = {
        0: [0],
        1: [0, 1],
        2: [0, 1, 2],
        3: [0, 1, 2, 3],
        4: [0, 1, 4],  # rejected: the prompt and itself, never the chosen response
        5: [0, 1, 4, 5],
        6: [0, 1, 4, 5, 6],
        7: [7],  # a new pair: nothing of pair 0
        8: [7, 8],
        9: [7, 9],
    }
    mask = packed_row_mask(pairs, 10)
    assert mask.shape == (1, 1, 10, 10) and mask.dtype == torch.bool
    assert {i: mask[0, 0, i].nonzero().flatten().tolist() for i in range(10)} == seen
    additive = packed_row_mask(pairs, 10, dtype=torch.float32)
    assert torch.equal(additive == 0, mask) and torch.equal(additive == float("-inf"), ~mask)
    # rows allocated 16 keys wide, sliced to 10: the aligned stride CUDA's memory-efficient kernel wants
    assert additive.stride(-2) % attention.MASK_ALIGNMENT == 0 and additive.stride(-1) == 1


def test_the_mask_is_built_once_per_row_and_shared_by_the_layers(tokenizer, batch, monkeypatch):
    built = []
    real = attention.packed_row_mask
    monkeypatch.setattr(
        attention, "packed_row_mask", lambda *a, **k: built.append(real(*a, **k)) or built[-1]
    )
    model = build_test_model(len(tokenizer))
    assert model.config.num_hidden_layers == 2
    packed_sequence_logps(model, pack_preference_batch(batch), attention="masked")
    assert len(built) == 1


def _logps(model, batch):
    out = concatenated_forward(model, batch, length_normalize=False, layout="auto")
    return out["token_sums"], out["layout"]


def _loss_and_gradients(model, batch, layout):
    model.zero_grad(set_to_none=True)
    loss, _ = preference_loss(model, batch, SIMPO, layout=layout)
    loss.backward()
    return loss.detach(), [None if p.grad is None else p.grad.clone() for p in model.parameters()]


def _assert_gradients_equal(got, expected, names, rtol):
    for name, g, e in zip(names, got, expected, strict=True):
        if e is None:
            assert g is None, name
            continue
        error = (g - e).abs().max()
        assert error <= rtol * e.abs().max() + 1e-15, f"{name}: {error} vs {e.abs().max()}"


@pytest.mark.parametrize("name", list(MODELS))
def test_masked_path_equals_the_padded_and_per_segment_paths_in_float64(name, tokenizer, batch, monkeypatch):
    model = MODELS[name](len(tokenizer)).double().train()
    names = [n for n, _ in model.named_parameters()]
    results = {}
    for mode in ("padded", "segments", "masked"):
        if mode != "padded":
            monkeypatch.setenv(ATTENTION_ENV, mode)
        layout = "padded" if mode == "padded" else "packed"
        with torch.no_grad():
            sums = concatenated_forward(model, batch, length_normalize=False, layout=layout)["token_sums"]
        loss, grads = _loss_and_gradients(model, batch, layout)
        results[mode] = (sums, loss, grads)
    assert results["padded"][0].dtype == torch.float64
    for mode in ("segments", "masked"):
        sums, loss, grads = results[mode]
        for other in ("padded", "segments"):
            if other == mode:
                continue
            torch.testing.assert_close(sums, results[other][0], atol=ATOL, rtol=0)
            torch.testing.assert_close(loss, results[other][1], atol=ATOL, rtol=0)
            rtol = PADDED_GRAD_RTOL if other == "padded" else ATOL
            _assert_gradients_equal(grads, results[other][2], names, rtol)


def _sdpa_calls(run) -> collections.Counter:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        run()
    return collections.Counter(
        event.name
        for event in profile.events()
        if "scaled_dot_product" in event.name and "backward" not in event.name
    ) + collections.Counter(
        "backward"
        for event in profile.events()
        if "scaled_dot_product" in event.name and "backward" in event.name
    )


@pytest.mark.parametrize("mode", ["masked", "segments"])
def test_the_profiler_counts_the_attention_calls_per_layer(mode, tokenizer, batch, monkeypatch):
    monkeypatch.setenv(ATTENTION_ENV, mode)
    model = build_test_model(len(tokenizer)).train()
    layers, pairs = model.config.num_hidden_layers, batch["input_ids"].shape[0] // 2
    per_forward = layers if mode == "masked" else 2 * pairs * layers
    with torch.no_grad():
        forward = _sdpa_calls(
            lambda: concatenated_forward(model, batch, length_normalize=True, layout="packed")
        )
    assert forward["aten::scaled_dot_product_attention"] == per_forward
    assert forward["backward"] == 0

    def step():
        loss, _ = preference_loss(model, batch, SIMPO, layout="packed")
        loss.backward()

    training = _sdpa_calls(step)
    assert training["aten::scaled_dot_product_attention"] == per_forward
    assert training["backward"] == per_forward  # one SDPA backward per forward call


def test_masked_path_keeps_the_rejected_response_from_the_chosen_one_bit_for_bit(
    tokenizer, batch, monkeypatch
):
    monkeypatch.setenv(ATTENTION_ENV, "masked")
    model = MODELS["llama_tied_gqa"](len(tokenizer))
    pairs = batch["input_ids"].shape[0] // 2
    before, layout = _logps(model, batch)
    assert layout == "packed"
    for pair in range(pairs):
        response = (batch["labels"][pair] != -100).nonzero().flatten()
        changed = _perturbed(batch, pair, int(response[0]), int(response[-1]) + 1)  # the chosen response
        after, _ = _logps(model, changed)
        # only the chosen sequence itself moves: its rejected response and every other pair are bit-identical
        assert (after != before).nonzero().flatten().tolist() == [pair]
    # the sanity check: the prompt of pair 0 (both of its rows) reaches both of its responses, and only those
    prompt_end = int((batch["labels"][0] != -100).nonzero()[0])
    after, _ = _logps(model, _perturbed(_perturbed(batch, 0, 1, prompt_end), pairs, 1, prompt_end))
    assert (after != before).nonzero().flatten().tolist() == [0, pairs]


def test_repeated_keys_give_the_grouped_query_attention_of_enable_gqa():
    """CUDA's branch (keys and values repeated to the query's heads for the memory-efficient kernel) against
    the CPU's (``enable_gqa``), both run here on CPU."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, 6, 10, 8, generator=generator, dtype=torch.float64)
    key, value = (torch.randn(1, 2, 10, 8, generator=generator, dtype=torch.float64) for _ in range(2))
    mask = packed_row_mask(((0, 2, 2, 3), (7, 1, 1, 1)), 10)
    outputs = []
    for repeat in (False, True):
        k, v, gqa = attention._grouped_keys(query, key, value, repeat=repeat)
        assert k.shape[1] == (6 if repeat else 2) and gqa == ({} if repeat else {"enable_gqa": True})
        outputs.append(torch.nn.functional.scaled_dot_product_attention(query, k, v, attn_mask=mask, **gqa))
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-12, rtol=0)


def test_the_choice_per_device_its_override_and_what_describe_layout_says(tokenizer, batch, monkeypatch):
    monkeypatch.delenv(ATTENTION_ENV, raising=False)
    assert attention_mode("cpu") == "segments" and attention_mode("cuda") == "masked"
    model = build_test_model(len(tokenizer))
    assert "causal SDPA per segment" in fast.describe_layout(model)
    assert fast.describe_layout(model).startswith("packed (")
    monkeypatch.setenv(ATTENTION_ENV, "masked")
    assert attention_mode("cpu") == "masked" and "one masked SDPA per layer" in fast.describe_layout(model)
    monkeypatch.setenv(ATTENTION_ENV, "segments")
    assert attention_mode("cuda") == "segments"
    monkeypatch.setenv(ATTENTION_ENV, "flex")
    with pytest.raises(ValueError, match=ATTENTION_ENV):
        attention_mode("cpu")
    with pytest.raises(ValueError, match="attention must be one of"):
        packed_sequence_logps(model, pack_preference_batch(batch), attention="flex")


def test_masked_attention_refuses_a_call_without_the_row_mask():
    query = torch.zeros(1, 2, 3, 4)
    with pytest.raises(ValueError, match=attention.MASKED_ATTENTION_NAME):
        masked_attention(torch.nn.Module(), query, query, query, None)
    with pytest.raises(ValueError, match=attention.MASKED_ATTENTION_NAME):  # a mask from transformers too
        masked_attention(
            torch.nn.Module(), query, query, query, torch.ones(1, 1, 3, 3), simplepo_mask=PackedRowMask((), 3)
        )


def test_the_default_on_cpu_is_the_per_segment_path_bit_for_bit(tokenizer, batch, monkeypatch):
    """Numbers on CPU do not move: with no override, the packed path is the per-segment one, bit for bit."""
    monkeypatch.delenv(ATTENTION_ENV, raising=False)
    model = build_test_model(len(tokenizer))
    packed = pack_preference_batch(batch)
    default = packed_sequence_logps(model, packed)[0]
    assert torch.equal(default, packed_sequence_logps(model, packed, attention="segments")[0])


def test_the_attention_benchmark_runs_both_paths():
    """``benchmarks/bench_attention.py``'s attention case, once (its numbers are reported, not checked)."""
    from benchmarks.bench_attention import attention_case

    row = attention_case("uf2", repeats=1)
    assert row["pairs"] == 2 and row["segments_s"] > 0 and row["masked_s"] > 0
    assert row["masked_over_segments"] == pytest.approx(row["masked_s"] / row["segments_s"], rel=1e-2)
