"""The fast path's log-probs (``fast/packing.py``, formerly ``fast/fused.py``) against the plain ones (``logps.py``).

``chunked_token_logps`` is the core's ``token_logps`` chunked over positions with a hand-written backward:
bit for bit the same forward, the same gradients up to float rounding, and less memory. ``head_token_logps``
fuses the LM head with the log-softmax.
"""

from __future__ import annotations

import weakref

import pytest
import torch
from test_logps import IGNORE, make_batch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import simplepo_helpers.logps as logps_module
from simplepo_helpers.fast import packing as fused_module
from simplepo_helpers.logps import token_logps


def sequence_logps(logits, labels, *, average, chunk_tokens=None):
    """The fast path's ``sequence_logps``: sum or mean of ``chunked_token_logps``."""
    per_token, mask = fused_module.chunked_token_logps(logits, labels, chunk_tokens=chunk_tokens)
    counts = logps_module.require_response_tokens(mask)
    return per_token.sum(-1) / counts if average else per_token.sum(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("chunk_tokens", [None, 1, 3])
def test_chunked_forward_equals_the_plain_path_bit_for_bit(dtype, chunk_tokens):
    logits, labels = make_batch(batch=4, length=17, vocab=301, seed=3, dtype=dtype)
    plain, plain_mask = token_logps(logits, labels)
    chunked, chunked_mask = fused_module.chunked_token_logps(logits, labels, chunk_tokens=chunk_tokens)
    assert torch.equal(chunked, plain) and torch.equal(chunked_mask, plain_mask)


def test_chunked_gradient_equals_the_plain_path():
    logits, labels = make_batch(batch=3, length=10, vocab=30, seed=13, dtype=torch.float32)
    plain = logits.clone().requires_grad_(True)
    (token_logps(plain, labels)[0].sum(-1) * torch.tensor([0.5, -2.0, 1.5])).sum().backward()
    chunked = logits.clone().requires_grad_(True)
    (
        fused_module.chunked_token_logps(chunked, labels, chunk_tokens=4)[0].sum(-1)
        * torch.tensor([0.5, -2.0, 1.5])
    ).sum().backward()
    torch.testing.assert_close(chunked.grad, plain.grad)


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
    got = fused_module.head_token_logps(hidden, head, targets, chunk_tokens=chunk_tokens)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("chunk_tokens", [1, 4, 1000])
def test_fused_head_passes_gradcheck(chunk_tokens, recompute):
    hidden, head, targets = _head_case(n=6, d=3, vocab=7)
    weight = head.weight.detach().clone().requires_grad_(True)
    hidden.requires_grad_(True)

    def fused(h, w):
        return fused_module._HeadLabelLogps.apply(h, w, targets, chunk_tokens, torch.float64, not recompute)

    assert torch.autograd.gradcheck(fused, (hidden, weight))


@pytest.mark.parametrize("recompute", [False, True])
def test_fused_head_gradients_match_autograd_in_float32(recompute):
    hidden, head, targets = _head_case(n=11, d=8, vocab=40, dtype=torch.float32)
    upstream = torch.linspace(-2.0, 1.5, 11)  # a different upstream gradient per position
    fused_hidden = hidden.clone().requires_grad_(True)
    fused = fused_module.head_token_logps(fused_hidden, head, targets, chunk_tokens=3, recompute=recompute)
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
        logps = fused_module.head_token_logps(hidden, head, targets, chunk_tokens=chunk, recompute=recompute)
        logps.sum().backward()
    largest = max(size for _, size in recorder.float32_sizes)
    # kept: the [N, V] gradient direction of the N scored positions; recomputed: a chunk's logits, or the
    # head's gradient. Never more: with the padded layout these would be [2B, T, V]
    assert largest == (max(chunk * vocab, vocab * d) if recompute else n * vocab)
    with torch.no_grad(), _AllocationRecorder() as recorder:  # a reference forward keeps nothing
        fused_module.head_token_logps(hidden, head, targets, chunk_tokens=chunk)
    assert max(size for _, size in recorder.float32_sizes) == chunk * vocab


def test_unfusable_heads_are_called_as_modules():
    hidden, head, targets = _head_case()
    calls = []
    head.register_forward_hook(lambda module, args, output: calls.append(output.shape))
    assert not fused_module.can_fuse_head(head)
    expected = torch.log_softmax(hidden @ head.weight.T, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(fused_module.head_token_logps(hidden, head, targets), expected)
    assert calls == [(hidden.shape[0], head.out_features)]  # the hook saw the scored positions' logits
    biased = torch.nn.Linear(5, 13).double()
    assert not fused_module.can_fuse_head(biased)
    expected = torch.log_softmax(biased(hidden), dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(fused_module.head_token_logps(hidden, biased, targets), expected)


def test_head_target_outside_the_vocabulary_is_named():
    hidden, head, targets = _head_case()
    targets[4] = 13
    with pytest.raises(ValueError, match="target 13 at scored position 4"):
        fused_module.head_token_logps(hidden, head, targets)
