"""token_logps / sequence_logps against a naive loop, hand values, invariances, errors and memory bounds."""

from __future__ import annotations

import math
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import simplepo_helpers.logps as logps_module
from simplepo_helpers import sequence_logps, token_logps

IGNORE = -100


def naive_sequence_logps(logits: torch.Tensor, labels: torch.Tensor, *, average: bool) -> torch.Tensor:
    """Reference: a Python loop, one full log_softmax per position (position t-1 scores label t)."""
    results = []
    for row in range(labels.shape[0]):
        total, count = 0.0, 0
        for t in range(1, labels.shape[1]):
            label = int(labels[row, t])
            if label != IGNORE:
                total += float(torch.log_softmax(logits[row, t - 1].double(), dim=-1)[label])
                count += 1
        results.append(total / count if average else total)
    return torch.tensor(results, dtype=torch.float64)


def make_batch(
    *, batch: int = 3, length: int = 9, vocab: int = 11, seed: int = 0, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits and labels with a prompt of varying length, a response and right padding per row."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=generator, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, vocab, (batch, length), generator=generator)
    for row in range(batch):
        prompt_len = 1 + row % 3
        response_end = length - row  # rows after the first are right-padded
        labels[row, :prompt_len] = IGNORE
        labels[row, response_end:] = IGNORE
    return logits, labels


@pytest.mark.parametrize("average", [False, True])
def test_matches_naive_loop(average):
    logits, labels = make_batch()
    expected = naive_sequence_logps(logits, labels, average=average)
    torch.testing.assert_close(
        sequence_logps(logits, labels, average=average), expected, rtol=1e-12, atol=1e-12
    )


def test_token_logps_values_and_mask():
    logits, labels = make_batch(seed=1)
    per_token, mask = token_logps(logits, labels)
    assert per_token.shape == mask.shape == (3, 8)
    assert mask.dtype == torch.bool
    torch.testing.assert_close(mask, labels[:, 1:] != IGNORE)
    for row, t in [(0, 0), (0, 4), (1, 3), (2, 5)]:
        label = int(labels[row, t + 1])
        expected = torch.log_softmax(logits[row, t], dim=-1)[label] if label != IGNORE else torch.tensor(0.0)
        torch.testing.assert_close(per_token[row, t], expected.double())
    assert torch.all(per_token[~mask] == 0)


def test_hand_computed_uniform_logits():
    # equal logits over V tokens -> each response token has log-prob -ln V
    vocab = 4
    logits = torch.zeros(2, 5, vocab, dtype=torch.float64)
    labels = torch.tensor([[IGNORE, IGNORE, 1, 2, 3], [IGNORE, 0, IGNORE, IGNORE, IGNORE]])
    summed = sequence_logps(logits, labels, average=False)
    torch.testing.assert_close(summed, torch.tensor([-3 * math.log(4), -math.log(4)], dtype=torch.float64))
    averaged = sequence_logps(logits, labels, average=True)
    torch.testing.assert_close(averaged, torch.full((2,), -math.log(4), dtype=torch.float64))


def test_causal_shift_uses_previous_position():
    # only position 0 predicts label 1; make it certain of token 2, every other position uniform
    logits = torch.zeros(1, 3, 3, dtype=torch.float64)
    logits[0, 0, 2] = 50.0
    labels = torch.tensor([[IGNORE, 2, IGNORE]])
    assert abs(float(sequence_logps(logits, labels, average=False)[0])) < 1e-20
    labels_unshifted_reading = torch.tensor([[IGNORE, IGNORE, 2]])  # scored by the uniform position 1
    torch.testing.assert_close(
        sequence_logps(logits, labels_unshifted_reading, average=False),
        torch.tensor([-math.log(3)], dtype=torch.float64),
    )


@pytest.mark.parametrize("average", [False, True])
def test_extra_right_padding_changes_nothing(average):
    logits, labels = make_batch(seed=2)
    generator = torch.Generator().manual_seed(3)
    extra = torch.randn(3, 4, logits.shape[-1], generator=generator, dtype=torch.float64)
    padded_logits = torch.cat([logits, extra], dim=1)
    padded_labels = torch.cat([labels, torch.full((3, 4), IGNORE)], dim=1)
    torch.testing.assert_close(
        sequence_logps(padded_logits, padded_labels, average=average),
        sequence_logps(logits, labels, average=average),
        rtol=1e-14,
        atol=1e-14,
    )


@pytest.mark.parametrize("average", [False, True])
def test_prompt_and_padding_positions_get_zero_gradient(average):
    logits, labels = make_batch(seed=4)
    logits.requires_grad_(True)
    sequence_logps(logits, labels, average=average).sum().backward()
    scored = torch.zeros(labels.shape, dtype=torch.bool)
    scored[:, :-1] = labels[:, 1:] != IGNORE  # position t is scored iff label t+1 is a response token
    assert torch.all(logits.grad[~scored] == 0)
    assert torch.all(logits.grad[scored].abs().sum(-1) > 0)


def test_permuting_the_batch_permutes_the_output():
    logits, labels = make_batch(batch=4, seed=5)
    permutation = torch.tensor([2, 0, 3, 1])
    original = sequence_logps(logits, labels, average=True)
    permuted = sequence_logps(logits[permutation], labels[permutation], average=True)
    torch.testing.assert_close(permuted, original[permutation], rtol=0, atol=0)


def test_empty_response_raises_naming_the_row():
    logits, labels = make_batch(seed=6)
    labels[1] = IGNORE
    with pytest.raises(ValueError, match=r"row\(s\) \[1\]"):
        sequence_logps(logits, labels, average=True)


def test_label_only_at_first_position_counts_as_empty():
    # labels[:, 0] is never predicted, so a row whose only label sits there has no scored token
    logits, labels = make_batch(seed=7)
    labels[2] = IGNORE
    labels[2, 0] = 5
    with pytest.raises(ValueError, match=r"\[2\]"):
        sequence_logps(logits, labels, average=False)


def test_label_outside_vocabulary_raises_naming_the_row():
    logits, labels = make_batch(seed=8)
    labels[2, 6] = logits.shape[-1]  # one past the last id
    with pytest.raises(ValueError, match="row 2"):
        sequence_logps(logits, labels, average=False)
    labels[2, 6] = -1  # negative but not ignore_index
    with pytest.raises(ValueError, match="row 2"):
        sequence_logps(logits, labels, average=False)


def test_shape_mismatch_raises():
    logits, labels = make_batch()
    with pytest.raises(ValueError, match="does not match"):
        sequence_logps(logits, labels[:, :-1], average=True)
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        sequence_logps(logits[0], labels[0], average=True)


def test_custom_ignore_index():
    logits, labels = make_batch(seed=9)
    relabelled = labels.masked_fill(labels == IGNORE, -1)
    torch.testing.assert_close(
        sequence_logps(logits, relabelled, average=True, ignore_index=-1),
        sequence_logps(logits, labels, average=True),
    )


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_logits_give_float32_close_to_float32_computation(half):
    logits, labels = make_batch(batch=4, length=12, vocab=50, seed=10, dtype=half)
    result = sequence_logps(logits, labels, average=True)
    assert result.dtype == torch.float32
    # the upcast is exact, so the float32 computation on the same values must agree to float32 precision
    expected = sequence_logps(logits.float(), labels, average=True)
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("chunk_tokens", [1, 5, 7, 1000])
def test_chunking_does_not_change_the_result(chunk_tokens):
    logits, labels = make_batch(batch=3, length=10, vocab=20, seed=11, dtype=torch.bfloat16)
    logits.requires_grad_(True)
    result = sequence_logps(logits, labels, average=False, chunk_tokens=chunk_tokens)
    (grad,) = torch.autograd.grad(result.sum(), logits)
    reference = logits.detach().float().requires_grad_(True)
    expected = sequence_logps(reference, labels, average=False)
    (expected_grad,) = torch.autograd.grad(expected.sum(), reference)
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(grad.float(), expected_grad, rtol=1e-2, atol=1e-2)  # bf16 gradient


def test_output_dtype_follows_float64_logits():
    logits, labels = make_batch(dtype=torch.float64)
    assert sequence_logps(logits, labels, average=True).dtype == torch.float64


class _AllocationRecorder(TorchDispatchMode):
    """Records every float32 tensor an op allocates, and the peak of those alive at once.

    An output whose storage is one of the op's inputs' (a view or an in-place result) is not an allocation. A
    storage's Python object lives exactly as long as the storage, so a finalizer on it marks the free.
    """

    def __init__(self):
        super().__init__()
        self.float32_sizes: list[tuple[str, int]] = []
        self.live_bytes = self.peak_live_bytes = 0

    def _freed(self, nbytes: int) -> None:
        self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {
            leaf.untyped_storage().data_ptr()
            for leaf in tree_flatten((args, kwargs))[0]
            if isinstance(leaf, torch.Tensor)
        }
        out = func(*args, **kwargs)
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32:
                continue
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in inputs:  # a new allocation
                self.float32_sizes.append((str(func), tensor.numel()))
                self.live_bytes += storage.nbytes()
                self.peak_live_bytes = max(self.peak_live_bytes, self.live_bytes)
                weakref.finalize(storage, self._freed, storage.nbytes())
        return out


def _grad_through_sequence_logps(logits: torch.Tensor, labels: torch.Tensor, **kwargs) -> None:
    """Forward and backward of the SimPO-style average, the way a training step uses it."""
    sequence_logps(logits, labels, average=True, **kwargs).sum().backward()


@pytest.mark.parametrize("explicit_chunk", [True, False])
def test_bf16_float32_upcast_is_bounded_by_the_chunk(explicit_chunk, monkeypatch):
    batch, length, vocab, chunk = 4, 64, 512, 16
    logits, labels = make_batch(batch=batch, length=length, vocab=vocab, dtype=torch.bfloat16)
    logits.requires_grad_(True)
    # without an explicit chunk_tokens, the chunk holds CHUNK_ELEMENTS values
    monkeypatch.setattr(logps_module, "CHUNK_ELEMENTS", chunk * vocab)
    with _AllocationRecorder() as recorder:
        _grad_through_sequence_logps(logits, labels, chunk_tokens=chunk if explicit_chunk else None)
    largest = max(size for _, size in recorder.float32_sizes)
    assert largest == chunk * vocab  # the upcast chunk, forward and backward; nothing of size B*T*V
    assert any("_to_copy" in op for op, size in recorder.float32_sizes if size == chunk * vocab)
    assert logits.grad.dtype == torch.bfloat16 and logits.grad.shape == logits.shape


def test_float32_forward_and_backward_hold_only_the_gradient_at_full_size():
    # no log_softmax copy and no [B, T, V] temporary: at the peak, the logits' gradient plus a few chunks
    batch, length, vocab, chunk = 4, 64, 512, 16
    full_bytes, chunk_bytes = batch * length * vocab * 4, chunk * vocab * 4
    logits, labels = make_batch(batch=batch, length=length, vocab=vocab, dtype=torch.float32)
    logits.requires_grad_(True)
    with _AllocationRecorder() as recorder:
        sequence_logps(logits, labels, average=True, chunk_tokens=chunk)  # forward alone
    forward_op, forward_largest = max(recorder.float32_sizes, key=lambda item: item[1])
    assert forward_largest <= max(batch * length, chunk), f"{forward_op} allocated {forward_largest} floats"
    with _AllocationRecorder() as recorder:
        _grad_through_sequence_logps(logits, labels, chunk_tokens=chunk)
    assert full_bytes <= recorder.peak_live_bytes <= full_bytes + 2 * chunk_bytes, recorder.float32_sizes


@pytest.mark.parametrize("chunk_tokens", [1, 4, 1000])
def test_gradient_passes_gradcheck(chunk_tokens):
    logits, labels = make_batch(batch=2, length=6, vocab=7, seed=12, dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: sequence_logps(x, labels, average=True, chunk_tokens=chunk_tokens), (logits,)
    )


def test_float32_gradient_matches_log_softmax_autograd():
    # the hand-written backward (onehot - softmax) against autograd through a full log_softmax
    logits, labels = make_batch(batch=3, length=10, vocab=30, seed=13, dtype=torch.float32)
    weights = torch.tensor([0.5, -2.0, 1.5])  # a non-uniform upstream gradient per row
    kit_logits = logits.clone().requires_grad_(True)
    (sequence_logps(kit_logits, labels, average=True, chunk_tokens=4) * weights).sum().backward()
    naive_logits = logits.clone().requires_grad_(True)
    targets, mask = labels[:, 1:], labels[:, 1:] != IGNORE
    picked = torch.log_softmax(naive_logits[:, :-1], -1).gather(-1, targets.clamp(min=0).unsqueeze(-1))
    ((picked.squeeze(-1) * mask).sum(-1) / mask.sum(-1) * weights).sum().backward()
    torch.testing.assert_close(kit_logits.grad, naive_logits.grad)


def test_logits_without_grad_build_no_graph():
    logits, labels = make_batch(dtype=torch.float32)
    assert not sequence_logps(logits, labels, average=True).requires_grad


def test_chunk_size_follows_the_vocabulary(monkeypatch):
    monkeypatch.setattr(logps_module, "CHUNK_ELEMENTS", 1000)
    assert logps_module.default_chunk_tokens(100) == 10
    assert logps_module.default_chunk_tokens(5000) == 1  # never zero positions


# ---------- head_token_logps: the LM head fused with the log-softmax, only at scored positions ----------


def _head_case(n: int = 9, d: int = 5, vocab: int = 13, seed: int = 20, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=generator, dtype=dtype)
    head = torch.nn.Linear(d, vocab, bias=False).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, d, generator=generator, dtype=dtype))
    targets = torch.randint(0, vocab, (n,), generator=generator)
    return hidden, head, targets


@pytest.mark.parametrize("chunk_tokens", [1, 4, None])
def test_head_token_logps_is_log_softmax_of_the_head(chunk_tokens):
    hidden, head, targets = _head_case()
    expected = torch.log_softmax(hidden @ head.weight.T, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    got = logps_module.head_token_logps(hidden, head, targets, chunk_tokens=chunk_tokens)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("chunk_tokens", [1, 4, 1000])
def test_fused_head_passes_gradcheck(chunk_tokens, recompute):
    hidden, head, targets = _head_case(n=6, d=3, vocab=7)
    weight = head.weight.detach().clone().requires_grad_(True)
    hidden.requires_grad_(True)

    def fused(h, w):
        return logps_module._HeadLabelLogps.apply(h, w, targets, chunk_tokens, torch.float64, not recompute)

    assert torch.autograd.gradcheck(fused, (hidden, weight))


@pytest.mark.parametrize("recompute", [False, True])
def test_fused_head_gradients_match_autograd_in_float32(recompute):
    hidden, head, targets = _head_case(n=11, d=8, vocab=40, dtype=torch.float32)
    upstream = torch.linspace(-2.0, 1.5, 11)  # a different upstream gradient per position
    fused_hidden = hidden.clone().requires_grad_(True)
    fused = logps_module.head_token_logps(fused_hidden, head, targets, chunk_tokens=3, recompute=recompute)
    (fused * upstream).sum().backward()
    fused_weight_grad = head.weight.grad.clone()
    head.weight.grad = None
    naive_hidden = hidden.clone().requires_grad_(True)
    naive = torch.log_softmax(head(naive_hidden), dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    (naive * upstream).sum().backward()
    torch.testing.assert_close(fused_hidden.grad, naive_hidden.grad)
    torch.testing.assert_close(fused_weight_grad, head.weight.grad)


@pytest.mark.parametrize("recompute", [False, True])
def test_fused_head_holds_at_most_the_scored_positions_logits(recompute):
    n, d, vocab, chunk = 64, 8, 512, 16
    hidden, head, targets = _head_case(n=n, d=d, vocab=vocab, dtype=torch.float32)
    hidden.requires_grad_(True)
    with _AllocationRecorder() as recorder:
        logps = logps_module.head_token_logps(hidden, head, targets, chunk_tokens=chunk, recompute=recompute)
        logps.sum().backward()
    largest = max(size for _, size in recorder.float32_sizes)
    # kept: the [N, V] gradient direction of the N scored positions; recomputed: a chunk's logits, or the
    # head's gradient. Never more: with the padded layout these would be [2B, T, V]
    assert largest == (max(chunk * vocab, vocab * d) if recompute else n * vocab)
    with torch.no_grad(), _AllocationRecorder() as recorder:  # a reference forward keeps nothing
        logps_module.head_token_logps(hidden, head, targets, chunk_tokens=chunk)
    assert max(size for _, size in recorder.float32_sizes) == chunk * vocab


def test_unfusable_heads_are_called_as_modules():
    hidden, head, targets = _head_case()
    calls = []
    head.register_forward_hook(lambda module, args, output: calls.append(output.shape))
    assert not logps_module.can_fuse_head(head)
    expected = torch.log_softmax(hidden @ head.weight.T, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(logps_module.head_token_logps(hidden, head, targets), expected)
    assert calls == [(hidden.shape[0], head.out_features)]  # the hook saw the scored positions' logits
    biased = torch.nn.Linear(5, 13).double()
    assert not logps_module.can_fuse_head(biased)
    expected = torch.log_softmax(biased(hidden), dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(logps_module.head_token_logps(hidden, biased, targets), expected)


def test_head_target_outside_the_vocabulary_is_named():
    hidden, head, targets = _head_case()
    targets[4] = 13
    with pytest.raises(ValueError, match="target 13 at scored position 4"):
        logps_module.head_token_logps(hidden, head, targets)
