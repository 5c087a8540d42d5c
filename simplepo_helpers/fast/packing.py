"""The packed, prefix-shared layout of a preference batch, and the attention that keeps its sequences apart.

A padded ``[2B, T]`` batch computes every prompt twice (once before the chosen, once before the rejected
response), every padding position, and the LM head on positions whose logits are thrown away. The packed
layout puts all pairs of a micro-batch in **one row** without padding, each pair as

    [prompt (P) | chosen (C) | rejected (R)]      position ids 0..P-1 | P..P+C-1 | P..P+R-1

so each prompt is computed once. Attention is confined by :func:`segment_attention`, registered with
transformers as ``"simplepo_segments"``: per pair, one causal call on ``[prompt; chosen]`` and one on
``[prompt; rejected]`` that reuses the prompt's keys and values (its prompt-query outputs are dropped), so
no token sees another pair, and the rejected response never sees the chosen one. The first token of each
response is scored from the prompt's last position. No dense mask is built.

Only architectures whose attention is tested against the padded path use it (``PACKED_ARCHITECTURES``);
everything else keeps the padded layout (:func:`packed_support` says why).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from ..batching import IGNORE_INDEX
from .fused import can_fuse_head, chunked_token_logps, head_token_logps

__all__ = [
    "ATTENTION_NAME",
    "PACKED_ARCHITECTURES",
    "PackedBatch",
    "causal_lm",
    "choose_layout",
    "describe_layout",
    "pack_preference_batch",
    "packed_forward",
    "packed_sequence_logps",
    "packed_support",
    "packing_problem",
    "segment_attention",
    "segment_attention_on",
]

ATTENTION_NAME = "simplepo_segments"
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


def causal_lm(model: torch.nn.Module) -> Any:
    """The transformers causal LM inside DDP and PEFT wrappers (the model itself otherwise).

    Also unwraps a module that forwards to a ``policy`` it holds outside its module tree (LoRA's
    adapter-disabled reference, ``scale.lora``).
    """
    lm: Any = model  # a transformers PreTrainedModel in the end
    if not list(lm.children()) and isinstance(getattr(lm, "policy", None), torch.nn.Module):
        lm = lm.policy
    if isinstance(lm, torch.nn.parallel.DistributedDataParallel):
        lm = lm.module
    if hasattr(lm, "get_base_model"):  # peft.PeftModel
        lm = lm.get_base_model()
    return lm


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
    if reason is None:
        return "packed (prefix-shared, padding-free, LM head at response positions only)"
    return f"padded [2B, T] ({reason})"


def segment_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    simplepo_pairs: tuple[tuple[int, int, int, int], ...] | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Causal SDPA confined to each pair of a packed row (query [1, H, S, D], key/value [1, Hkv, S, D]).

    Per pair ``(start, P, C, R)``: queries of [prompt; chosen] attend causally within it; queries of the
    rejected response attend to the prompt and causally to the rejected tokens (one causal call over
    [prompt; rejected], whose prompt-query outputs are dropped). Returns ``([1, S, H, D], None)`` as
    transformers' attention functions do.
    """
    if simplepo_pairs is None or attention_mask is not None or query.shape[0] != 1:
        raise ValueError(
            f"the {ATTENTION_NAME!r} attention runs only on a packed row from fast.packed_sequence_logps "
            "(it needs the pairs' layout and no attention mask)"
        )
    gqa = {"enable_gqa": True} if key.shape[1] != query.shape[1] else {}
    common: dict[str, Any] = {"dropout_p": dropout, "scale": scaling, "is_causal": True, **gqa}
    outputs = []
    for start, p, c, r in simplepo_pairs:
        first = slice(start, start + p + c)  # [prompt; chosen]
        outputs.append(
            F.scaled_dot_product_attention(query[:, :, first], key[:, :, first], value[:, :, first], **common)
        )
        prompt, rejected = slice(start, start + p), slice(start + p + c, start + p + c + r)
        q, k, v = (torch.cat([t[:, :, prompt], t[:, :, rejected]], dim=2) for t in (query, key, value))
        outputs.append(F.scaled_dot_product_attention(q, k, v, **common)[:, :, p:])  # [1, H, R, D]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None  # [1, S, H, D]


AttentionInterface.register(ATTENTION_NAME, segment_attention)


@contextlib.contextmanager
def segment_attention_on(model: torch.nn.Module):
    """Run ``model``'s attention through :func:`segment_attention` inside the block (restored after)."""
    config = causal_lm(model).config
    before = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = before


def packed_forward(
    model: torch.nn.Module, packed: PackedBatch, *, logits_to_keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on the packed row: (logits [1, K, V] at the K row positions ``logits_to_keep``, final
    hidden states [1, S, d]).

    Calls the model itself, so DDP, PEFT and forward hooks see the forward; ``logits_to_keep`` empty applies
    the LM head to no position. The hidden states are caught from the decoder's output.
    """
    caught = []
    hook = causal_lm(model).model.register_forward_hook(
        lambda module, args, output: caught.append(output.last_hidden_state)
    )
    try:
        with segment_attention_on(model):
            logits = model(
                input_ids=packed.input_ids,
                position_ids=packed.position_ids,
                use_cache=False,
                logits_to_keep=logits_to_keep,
                simplepo_pairs=packed.pairs,
            ).logits
    finally:
        hook.remove()
    return logits, caught[0]


def packed_sequence_logps(
    model: torch.nn.Module, packed: PackedBatch, *, keep_logits: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(summed response log-probs [2B], response token counts [2B], logits, labels) of a packed batch
    (:func:`pack_preference_batch`).

    The LM head runs on the N scored positions only, fused with the log-softmax (no logits kept) unless
    ``keep_logits`` or the head cannot be fused; then logits [1, N + 1, V] and labels [1, N + 1] hold just the
    scored positions (label t + 1 is scored at position t, as everywhere in the kit), else both are None.
    """
    packed = packed.to(next(model.parameters()).device)
    num_sequences = 2 * packed.num_pairs
    head = causal_lm(model).get_output_embeddings()
    logits = labels = None
    if keep_logits or not can_fuse_head(head):  # the model's head on the N scored positions
        # the positions' logits plus one more row, so that label t + 1 is scored at position t
        keep = torch.cat([packed.positions, packed.positions[-1:]])  # [N + 1]
        logits, _ = packed_forward(model, packed, logits_to_keep=keep)  # [1, N + 1, V]
        labels = torch.cat([packed.targets.new_full((1,), IGNORE_INDEX), packed.targets])[None]  # [1, N + 1]
        per_token = chunked_token_logps(logits, labels)[0][0]  # [N]
    else:  # the head fused with the log-softmax: no logits kept
        _, hidden = packed_forward(model, packed, logits_to_keep=packed.positions[:0])  # [1, S, d]
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
