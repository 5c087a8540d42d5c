"""The packed, prefix-shared row of a preference batch, and its log-probs.

A padded ``[2B, T]`` batch computes every prompt twice (once before the chosen, once before the rejected
response), every padding position, and the LM head on positions whose logits are thrown away. The packed
layout puts all pairs of a micro-batch in **one row** without padding, each pair as

    [prompt (P) | chosen (C) | rejected (R)]      position ids 0..P-1 | P..P+C-1 | P..P+R-1

so each prompt is computed once, and the first token of each response is scored from the prompt's last
position. How the row attends (its sequences kept apart, per segment or with one masked call per layer) is
``attention.py``'s. Only architectures whose attention is tested against the padded path use the packed
layout (``PACKED_ARCHITECTURES``); everything else keeps the padded one (:func:`packed_support` says why).

The log-probs are computed without the full logits, and proven equal to the core's
:func:`simplepo_helpers.logps.token_logps` (a plain ``gather - logsumexp``) by ``tests/test_fast.py``:

- :func:`chunked_token_logps`: ``logit[label] - logsumexp(logits)`` over chunks of ``chunk_tokens`` positions
  (default: about ``CHUNK_ELEMENTS`` float32 values, e.g. 85 positions at vocabulary 49152), forward *and*
  backward. A custom autograd function writes the gradient ``onehot(label) - softmax(logits)`` chunk by
  chunk straight into the logits' gradient, so the only vocabulary-sized tensor it adds is that gradient.
  bf16/fp16 logits are upcast to float32 one chunk at a time.
- :func:`head_token_logps`: log-probs straight from the final hidden states at the scored positions, the LM
  head and the log-softmax fused, so not even those positions' logits are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..batching import IGNORE_INDEX
from ..logps import compute_dtype_for, resolve_chunk_tokens, shifted_targets
from .attention import (
    ATTENTION_ENV,
    ATTENTION_MODES,
    ATTENTION_NAME,
    MASKED_ATTENTION_NAME,
    PackedRowMask,
    attention_mode,
    causal_lm,
    packed_attention_on,
    segment_attention,
    segment_attention_on,
)

__all__ = [
    "ATTENTION_NAME",
    "MASKED_ATTENTION_NAME",
    "PACKED_ARCHITECTURES",
    "PackedBatch",
    "can_fuse_head",
    "causal_lm",
    "choose_layout",
    "chunked_token_logps",
    "describe_layout",
    "head_token_logps",
    "pack_preference_batch",
    "packed_forward",
    "packed_sequence_logps",
    "packed_support",
    "packing_problem",
    "segment_attention",
    "segment_attention_on",
]

# causal-LM classes whose decoder passes extra forward kwargs to the attention function, tested for exactness
PACKED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")


@dataclass(frozen=True)
class PackedBatch:
    """One packed row and where each sequence's scored tokens are.

    ``pairs``: per pair ``(start, P, C, R)`` in the row. ``positions`` [N]: the row positions whose hidden
    states predict ``targets`` [N]; ``sequence`` [N]: which of the 2B sequences (chosen 0..B-1, rejected
    B..2B-1, the padded batch's row order) each scored token belongs to.
    """

    input_ids: torch.Tensor  # [1, S]
    position_ids: torch.Tensor  # [1, S]
    pairs: tuple[tuple[int, int, int, int], ...]
    positions: torch.Tensor  # [N]
    targets: torch.Tensor  # [N]
    sequence: torch.Tensor  # [N]

    @property
    def num_pairs(self) -> int:
        return len(self.pairs)

    def to(self, device: torch.device) -> PackedBatch:
        move = {name: getattr(self, name).to(device) for name in ("input_ids", "position_ids")}
        scored = {name: getattr(self, name).to(device) for name in ("positions", "targets", "sequence")}
        return PackedBatch(pairs=self.pairs, **move, **scored)


def _row_parts(ids: list[int], mask: list[int], labels: list[int], row: int) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one padded row, or ValueError when it is not prompt, response, padding."""
    length = sum(mask)
    if mask[:length] != [1] * length:
        raise ValueError(f"row {row}: attention_mask is not ones followed by padding")
    scored = [t for t, label in enumerate(labels) if label != IGNORE_INDEX]
    if not scored:
        raise ValueError(f"row {row} has no response tokens (every label is {IGNORE_INDEX})")
    start = scored[0]
    if start == 0 or scored != list(range(start, length)):
        raise ValueError(
            f"row {row}: the labelled tokens are not one block from after the prompt to the end of the row"
        )
    if labels[start:length] != ids[start:length]:
        raise ValueError(f"row {row}: labels differ from input_ids on the response")
    return ids[:start], ids[start:length]


def _pair_parts(batch: Mapping[str, torch.Tensor]) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt, chosen, rejected) token ids of each pair: the id lists a ``PreferenceCollator`` batch was padded
    from (``batch.rows``), or, for a batch built or copied by hand, its rows un-padded; ValueError, naming the
    row, when such a pair cannot pack."""
    token_rows = getattr(batch, "rows", None)
    if token_rows is not None:  # the collator's own lists: each pair shares its prompt by construction
        return [(row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) for row in token_rows]
    rows = batch["input_ids"].shape[0]
    if rows == 0 or rows % 2:
        raise ValueError(f"a preference batch needs an even, positive number of rows, got {rows}")
    ids, masks, labels = (batch[key].tolist() for key in ("input_ids", "attention_mask", "labels"))
    num_pairs = rows // 2
    parts = []
    for pair in range(num_pairs):
        other_row = pair + num_pairs
        prompt, chosen = _row_parts(ids[pair], masks[pair], labels[pair], pair)
        other, rejected = _row_parts(ids[other_row], masks[other_row], labels[other_row], other_row)
        if other != prompt:
            raise ValueError(f"rows {pair} and {other_row} (chosen, rejected) start with different prompts")
        parts.append((prompt, chosen, rejected))
    return parts


def packing_problem(batch: Mapping[str, torch.Tensor]) -> str | None:
    """None when :func:`pack_preference_batch` can pack ``batch``; otherwise why not (the padded layout
    still scores it: any labelled tokens, any prompts)."""
    try:
        _pair_parts(batch)
    except ValueError as error:
        return str(error)
    return None


def pack_preference_batch(batch: Mapping[str, torch.Tensor]) -> PackedBatch:
    """A ``[2B, T]`` batch (``batching.PreferenceCollator``'s layout) as one prefix-shared row, built from the
    token id lists the collator padded (``batch.rows``); a batch without them is un-padded first.

    Raises ValueError, naming the row, when a row is not [prompt | response | padding] with the response
    labelled, or when a pair's chosen and rejected rows do not start with the same prompt.
    """
    parts = _pair_parts(batch)
    num_pairs = len(parts)
    tokens: list[int] = []
    positions_ids: list[int] = []
    pairs: list[tuple[int, int, int, int]] = []
    scored_at, targets, sequence = [], [], []
    for pair, (prompt, chosen, rejected) in enumerate(parts):
        start, p, c, r = len(tokens), len(prompt), len(chosen), len(rejected)
        pairs.append((start, p, c, r))
        tokens += prompt + chosen + rejected
        positions_ids += list(range(p + c)) + list(range(p, p + r))
        # chosen token j is predicted at row position start+p-1+j; rejected token 0 at the prompt's last
        # position, rejected token j >= 1 at the previous rejected token
        scored_at += list(range(start + p - 1, start + p - 1 + c))
        scored_at += [start + p - 1] + list(range(start + p + c, start + p + c + r - 1))
        targets += chosen + rejected
        sequence += [pair] * c + [pair + num_pairs] * r
    as_long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
    return PackedBatch(
        input_ids=as_long(tokens).unsqueeze(0),
        position_ids=as_long(positions_ids).unsqueeze(0),
        pairs=tuple(pairs),
        positions=as_long(scored_at),
        targets=as_long(targets),
        sequence=as_long(sequence),
    )


def packed_support(model: torch.nn.Module) -> str | None:
    """None when ``model`` can run the packed layout; otherwise the reason it keeps the padded one."""
    lm = causal_lm(model)
    name = type(lm).__name__
    if name not in PACKED_ARCHITECTURES:
        return f"{name} is not one of the architectures tested with the packed layout {PACKED_ARCHITECTURES}"
    config = lm.config
    if getattr(config, "use_sliding_window", False) or any(
        kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()
    ):
        return f"{name} uses sliding-window attention"
    if lm.get_output_embeddings() is None or not hasattr(lm, "model"):
        return f"{name} has no separate decoder and LM head"
    return None


def describe_layout(model: torch.nn.Module) -> str:
    """One line saying which layout ``train()`` uses for ``model`` and why."""
    reason = packed_support(model)
    if reason is not None:
        return f"padded [2B, T] ({reason})"
    device = next(causal_lm(model).parameters()).device
    attention = {
        "segments": "causal SDPA per segment, 2 calls per pair per layer",
        "masked": "one masked SDPA per layer",
    }[attention_mode(device)]
    return (
        "packed (prefix-shared, padding-free, LM head at response positions only; "
        f"attention on {device.type}: {attention}, ${ATTENTION_ENV} = segments | masked overrides)"
    )


def packed_forward(
    model: torch.nn.Module, packed: PackedBatch, *, logits_to_keep: torch.Tensor, attention: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on the packed row: (logits [1, K, V] at the K row positions ``logits_to_keep``, final
    hidden states [1, S, d]).

    Calls the model itself, so DDP, PEFT and forward hooks see the forward; ``logits_to_keep`` empty applies
    the LM head to no position. The hidden states are caught from the decoder's output. ``attention``:
    ``"segments"`` or ``"masked"`` (``attention.py``); None: :func:`attention.attention_mode` of the
    model's device (one masked call per layer on CUDA, per segment elsewhere).
    """
    mode = attention or attention_mode(next(causal_lm(model).parameters()).device)
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {sorted(ATTENTION_MODES)} or None, got {mode!r}")
    # masked: the row's mask is built once (on first use, in the query's dtype) and shared by the layers
    row: dict[str, Any] = (
        {"simplepo_mask": PackedRowMask(packed.pairs, packed.input_ids.shape[1])}
        if mode == "masked"
        else {"simplepo_pairs": packed.pairs}
    )
    caught = []
    hook = causal_lm(model).model.register_forward_hook(
        lambda module, args, output: caught.append(output.last_hidden_state)
    )
    try:
        with packed_attention_on(model, mode):
            logits = model(
                input_ids=packed.input_ids,
                position_ids=packed.position_ids,
                use_cache=False,
                logits_to_keep=logits_to_keep,
                **row,
            ).logits
    finally:
        hook.remove()
    return logits, caught[0]


def packed_sequence_logps(
    model: torch.nn.Module, packed: PackedBatch, *, keep_logits: bool = False, attention: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(summed response log-probs [2B], response token counts [2B], logits, labels) of a packed batch
    (:func:`pack_preference_batch`).

    The LM head runs on the N scored positions only, fused with the log-softmax (no logits kept) unless
    ``keep_logits`` or the head cannot be fused; then logits [1, N + 1, V] and labels [1, N + 1] hold just the
    scored positions (label t + 1 is scored at position t, as everywhere in the kit), else both are None.
    ``attention``: how the row attends (:func:`packed_forward`).
    """
    packed = packed.to(next(model.parameters()).device)
    num_sequences = 2 * packed.num_pairs
    head = causal_lm(model).get_output_embeddings()
    logits = labels = None
    if keep_logits or not can_fuse_head(head):  # the model's head on the N scored positions
        # the positions' logits plus one more row, so that label t + 1 is scored at position t
        keep = torch.cat([packed.positions, packed.positions[-1:]])  # [N + 1]
        logits, _ = packed_forward(model, packed, logits_to_keep=keep, attention=attention)  # [1, N + 1, V]
        labels = torch.cat([packed.targets.new_full((1,), IGNORE_INDEX), packed.targets])[None]  # [1, N + 1]
        per_token = chunked_token_logps(logits, labels)[0][0]  # [N]
    else:  # the head fused with the log-softmax: no logits kept
        _, hidden = packed_forward(
            model, packed, logits_to_keep=packed.positions[:0], attention=attention
        )  # [1, S, d]
        per_token = head_token_logps(hidden[0].index_select(0, packed.positions), head, packed.targets)  # [N]
    sums = per_token.new_zeros(num_sequences).index_add(0, packed.sequence, per_token)  # [2B]
    counts = torch.bincount(packed.sequence, minlength=num_sequences)  # [2B]
    return sums, counts, logits, labels


def choose_layout(*models: torch.nn.Module, batch: Mapping[str, torch.Tensor] | None = None) -> str:
    """``"packed"`` when every model given can run the packed layout (and ``batch``, when given, packs: each
    pair's rows share their prompt), else ``"padded"``."""
    if not all(packed_support(model) is None for model in models):
        return "padded"
    return "packed" if batch is None or packing_problem(batch) is None else "padded"


# The log-probs of the scored positions: the chunked log-softmax, and the LM head fused with it.


class _LabelLogps(torch.autograd.Function):
    """log p(target) for N positions, chunk by chunk: logits [N, V], targets [N] -> [N] in ``dtype``.

    Backward: d log p(y) / d logits = onehot(y) - softmax(logits), written one chunk at a time into the
    gradient buffer, so no [N, V] temporary besides the gradient itself is allocated.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, chunk_tokens: int, dtype: torch.dtype):
        out = logits.new_empty(logits.shape[0], dtype=dtype)  # [N]
        lse = logits.new_empty(logits.shape[0], dtype=dtype)  # [N]: logsumexp per position, kept for backward
        for start in range(0, logits.shape[0], chunk_tokens):
            rows = slice(start, start + chunk_tokens)
            chunk = logits[rows].to(dtype)  # [n, V]; a copy only when upcasting bf16/fp16
            lse[rows] = torch.logsumexp(chunk, dim=-1)
            out[rows] = chunk.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1) - lse[rows]
        ctx.save_for_backward(logits, targets, lse)
        ctx.chunk_tokens, ctx.dtype = chunk_tokens, dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        grad_out = grad_out.to(ctx.dtype)  # [N]
        grad_logits = torch.empty_like(logits)  # [N, V], the logits' dtype
        in_place = logits.dtype == ctx.dtype  # float32/64: compute straight into the gradient buffer
        for start in range(0, logits.shape[0], ctx.chunk_tokens):
            rows = slice(start, start + ctx.chunk_tokens)
            scale = grad_out[rows].unsqueeze(-1)  # [n, 1]
            # -g * softmax(x) = -g * exp(x - lse), then + g at the label
            chunk = grad_logits[rows] if in_place else None
            chunk = torch.sub(logits[rows].to(ctx.dtype), lse[rows].unsqueeze(-1), out=chunk)  # [n, V]
            chunk.exp_().mul_(-scale).scatter_add_(-1, targets[rows].unsqueeze(-1), scale)
            if not in_place:
                grad_logits[rows] = chunk  # downcast to the logits' dtype
        return grad_logits, None, None, None


def chunked_token_logps(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    chunk_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`simplepo_helpers.logps.token_logps`, chunked over positions with a hand-written backward.

    Args:
        logits: ``[B, T, V]``; position t predicts ``labels[:, t + 1]``.
        labels: ``[B, T]`` token ids, ``ignore_index`` on prompt and padding.
        chunk_tokens: positions scored at once; default ``logps.default_chunk_tokens`` of the vocabulary.

    Returns:
        ``(logps [B, T-1] with 0 where masked, mask [B, T-1] bool)``, logps in at least float32.
    """
    targets, mask = shifted_targets(logits, labels, ignore_index=ignore_index)
    batch, length, vocab = logits.shape
    dtype = compute_dtype_for(logits)
    chunk_tokens = resolve_chunk_tokens(chunk_tokens, vocab)
    if batch * length == 0:  # empty batch or T == 0
        return logits.new_zeros((batch, max(length - 1, 0)), dtype=dtype), mask
    # Score all B*T positions of the flat (view, no copy) logits; the last position of each row gets a dummy
    # target 0 and is dropped below. This keeps the chunks plain views of the logits.
    flat_logits = logits.reshape(batch * length, vocab)  # [B*T, V]
    flat_targets = F.pad(targets.masked_fill(~mask, 0), (0, 1)).reshape(-1)  # [B*T]
    per_token = _LabelLogps.apply(flat_logits, flat_targets, chunk_tokens, dtype).view(batch, length)[:, :-1]
    return per_token.masked_fill(~mask, 0.0), mask  # [B, T-1] x2


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype active for ``device``'s type, or None."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


class _HeadLabelLogps(torch.autograd.Function):
    """log p(target) straight from hidden states: hidden [N, d], head weight [V, d], targets [N] -> [N].

    The LM head and the log-softmax are fused, chunk by chunk: no logits tensor beyond a ``[n, V]`` chunk is
    built. For backward, the gradient direction ``onehot - softmax`` at the N positions is kept ([N, V], the
    size of those positions' logits) when ``keep``, or else the chunk's logits are recomputed (no [N, V]
    tensor at all, a third more head FLOPs). Backward: with ``D = onehot - softmax`` and the upstream ``g``,
    ``grad_hidden = g * (D @ W)`` and ``grad_W = D^T @ (g * hidden)`` (two whole matmuls), or the same chunk by
    chunk from recomputed logits. Under autocast the head's matmuls run in
    the autocast dtype, as the model's own head would.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_tokens: int, dtype: torch.dtype, keep: bool):
        matmul_dtype = _autocast_dtype(hidden.device) or torch.promote_types(hidden.dtype, weight.dtype)
        out = hidden.new_empty(hidden.shape[0], dtype=dtype)  # [N]
        lse = hidden.new_empty(hidden.shape[0], dtype=dtype)  # [N]
        direction: Any = hidden.new_empty((hidden.shape[0], weight.shape[0]), dtype=dtype) if keep else None
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(matmul_dtype)  # [V, d]
            whole = keep and matmul_dtype == dtype  # all logits in one matmul, written into the kept buffer
            if whole:
                torch.mm(hidden.to(matmul_dtype), w.T, out=direction)  # [N, V]
            for start in range(0, hidden.shape[0], chunk_tokens):
                rows = slice(start, start + chunk_tokens)
                logits = (
                    direction[rows] if whole else (hidden[rows].to(matmul_dtype) @ w.T).to(dtype)
                )  # [n, V]
                lse[rows] = torch.logsumexp(logits, dim=-1)
                out[rows] = logits.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1) - lse[rows]
                if keep:  # onehot - softmax, in place in the kept buffer
                    chunk = torch.sub(logits, lse[rows].unsqueeze(-1), out=direction[rows]).exp_().neg_()
                    chunk.scatter_add_(-1, targets[rows].unsqueeze(-1), torch.ones_like(chunk[:, :1]))
        ctx.save_for_backward(hidden, weight, targets, lse, direction)
        ctx.chunk_tokens, ctx.dtype, ctx.matmul_dtype = chunk_tokens, dtype, matmul_dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        hidden, weight, targets, lse, direction = ctx.saved_tensors
        grad_out = grad_out.to(ctx.dtype)  # [N]
        grad_hidden = grad_weight = None
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(ctx.matmul_dtype)  # [V, d]
            if direction is not None:  # g * (onehot - softmax) = diag(g) D: two whole matmuls, no [N, V] copy
                d = direction.to(ctx.matmul_dtype)  # [N, V]
                if ctx.needs_input_grad[0]:
                    grad_hidden = ((d @ w).to(ctx.dtype) * grad_out.unsqueeze(-1)).to(hidden.dtype)  # [N, d]
                if ctx.needs_input_grad[1]:
                    scaled_hidden = (hidden.to(ctx.dtype) * grad_out.unsqueeze(-1)).to(
                        ctx.matmul_dtype
                    )  # [N, d]
                    grad_weight = (d.T @ scaled_hidden).to(weight.dtype)  # [V, d]
                return grad_hidden, grad_weight, None, None, None, None
            grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None  # [N, d]
            grad_weight = (
                torch.zeros_like(weight, dtype=ctx.dtype) if ctx.needs_input_grad[1] else None
            )  # [V, d]
            for start in range(
                0, hidden.shape[0], ctx.chunk_tokens
            ):  # recompute: -g * softmax, + g at the label
                rows = slice(start, start + ctx.chunk_tokens)
                h = hidden[rows].to(ctx.matmul_dtype)  # [n, d]
                scale = grad_out[rows].unsqueeze(-1)  # [n, 1]
                grad_logits = (h @ w.T).to(ctx.dtype).sub_(lse[rows].unsqueeze(-1)).exp_()  # [n, V]
                grad_logits.mul_(-scale).scatter_add_(-1, targets[rows].unsqueeze(-1), scale)
                grad_logits = grad_logits.to(ctx.matmul_dtype)
                if grad_hidden is not None:
                    grad_hidden[rows] = grad_logits @ w  # [n, d]
                if grad_weight is not None:
                    grad_weight.addmm_(grad_logits.T.to(ctx.dtype), h.to(ctx.dtype))  # [V, d]
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None


def can_fuse_head(head: torch.nn.Module) -> bool:
    """A plain ``nn.Linear`` without bias or forward hooks (hooks must see the head's output)."""
    hooked = bool(head._forward_hooks or head._forward_pre_hooks)
    return type(head) is torch.nn.Linear and head.bias is None and not hooked


def head_token_logps(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    targets: torch.Tensor,
    *,
    chunk_tokens: int | None = None,
    recompute: bool = False,
) -> torch.Tensor:
    """log p(target) at the positions whose final hidden states are ``hidden`` [N, d]: [N], at least float32.

    Logits only where scored: the LM head ``head`` runs on these N positions alone. A head that
    :func:`can_fuse_head` (Llama's and Qwen2's, tied or not) is fused with the log-softmax
    (:class:`_HeadLabelLogps`), so not even the N positions' logits are kept; any other head (a LoRA-wrapped
    one, one with hooks) is applied to the N positions and scored by ``_LabelLogps``.
    ``recompute``: recompute the logits in backward instead of keeping an [N, V] gradient direction.
    """
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(
            f"hidden must be [N, d] and targets [N], got {tuple(hidden.shape)}, {tuple(targets.shape)}"
        )
    weight: Any = head.weight  # [V, d]
    vocab = weight.shape[0]
    bad = (targets < 0) | (targets >= vocab)
    if bad.any():
        index = int(bad.nonzero()[0])
        raise ValueError(
            f"target {int(targets[index])} at scored position {index} is not a token id in [0, {vocab})"
        )
    dtype = torch.promote_types(_autocast_dtype(hidden.device) or hidden.dtype, torch.float32)
    chunk_tokens = resolve_chunk_tokens(chunk_tokens, vocab)
    if can_fuse_head(head):
        keep = (
            torch.is_grad_enabled() and (hidden.requires_grad or head.weight.requires_grad) and not recompute
        )
        return _HeadLabelLogps.apply(hidden, head.weight, targets, chunk_tokens, dtype, keep)
    logits = head(hidden)  # [N, V]
    return _LabelLogps.apply(logits, targets, chunk_tokens, compute_dtype_for(logits))
