"""How a packed row attends: its sequences kept apart, per segment or with one masked call per layer.

A packed row (``packing.py``) holds each pair as ``[prompt (P) | chosen (C) | rejected (R)]``. Whatever the
call, a query may see only its own sequence: the positions of ``[prompt; chosen]`` attend causally inside
it; the rejected response attends to its pair's prompt and causally to itself; nothing crosses pairs.
Two attention functions, registered with transformers' ``AttentionInterface``, compute exactly that:

- ``"simplepo_segments"`` (:func:`segment_attention`): per pair, one causal SDPA on ``[prompt; chosen]``
  and one on ``[prompt; rejected]`` that reuses the prompt's keys and values (its prompt-query outputs are
  dropped): ``2 x pairs`` calls per layer, no mask at all. The CPU default: on CPU a masked SDPA is
  1.3-1.7x slower than a causal one.
- ``"simplepo_masked"`` (:func:`masked_attention`): one SDPA per layer over the whole row with the row's
  mask (:func:`packed_row_mask`, built once per row and shared by the layers). The CUDA default: CUDA's
  memory-efficient kernel takes the mask, and one call per layer replaces ``2 x pairs`` small launches.

:func:`attention_mode` says which one runs (``SIMPLEPO_PACKED_ATTENTION`` = ``segments`` | ``masked``
overrides the device's default); :func:`packed_attention_on` switches a model to it for one forward.
Both are tested equal to the padded path (``tests/test_packing.py``, ``tests/test_fast_attention.py``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

__all__ = [
    "ATTENTION_ENV",
    "ATTENTION_MODES",
    "ATTENTION_NAME",
    "MASKED_ATTENTION_NAME",
    "PackedRowMask",
    "attention_mode",
    "causal_lm",
    "masked_attention",
    "packed_attention_on",
    "packed_row_mask",
    "segment_attention",
    "segment_attention_on",
]

ATTENTION_NAME = "simplepo_segments"  # per segment: 2 causal calls per pair per layer
MASKED_ATTENTION_NAME = "simplepo_masked"  # one masked call per layer
ATTENTION_MODES = {"segments": ATTENTION_NAME, "masked": MASKED_ATTENTION_NAME}
ATTENTION_ENV = "SIMPLEPO_PACKED_ATTENTION"  # "segments" | "masked"; unset or "auto": the device's default
MASK_ALIGNMENT = 16  # the mask's rows are allocated this many keys wide (CUDA's memory-efficient kernel)

Pairs = tuple[tuple[int, int, int, int], ...]


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


def attention_mode(device: torch.device | str) -> str:
    """``"masked"`` (one masked SDPA per layer) or ``"segments"`` (causal SDPA per segment) for a packed row on
    ``device``: ``$SIMPLEPO_PACKED_ATTENTION`` when set, else ``"masked"`` on CUDA and ``"segments"``
    elsewhere (on CPU a masked SDPA is slower than the causal calls it replaces)."""
    chosen = os.environ.get(ATTENTION_ENV, "auto").strip().lower() or "auto"
    if chosen == "auto":
        return "masked" if torch.device(device).type == "cuda" else "segments"
    if chosen not in ATTENTION_MODES:
        raise ValueError(f"{ATTENTION_ENV}={chosen!r}: expected one of {sorted(ATTENTION_MODES)} or 'auto'")
    return chosen


def _refuse(name: str) -> ValueError:
    return ValueError(
        f"the {name!r} attention runs only on a packed row from fast.packed_sequence_logps "
        "(it needs the pairs' layout and no attention mask)"
    )


def segment_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    simplepo_pairs: Pairs | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Causal SDPA confined to each pair of a packed row (query [1, H, S, D], key/value [1, Hkv, S, D]).

    Per pair ``(start, P, C, R)``: queries of [prompt; chosen] attend causally within it; queries of the
    rejected response attend to the prompt and causally to the rejected tokens (one causal call over
    [prompt; rejected], whose prompt-query outputs are dropped). Returns ``([1, S, H, D], None)`` as
    transformers' attention functions do.
    """
    if simplepo_pairs is None or attention_mask is not None or query.shape[0] != 1:
        raise _refuse(ATTENTION_NAME)
    key, value, gqa = _grouped_keys(query, key, value, repeat=False)
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


def packed_row_mask(
    pairs: Pairs, length: int, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bool
) -> torch.Tensor:
    """The packed row's attention mask [1, 1, S, S] (``S = length``): entry (i, j) allows query i to see key j.

    With ``pair(t)`` the pair holding position t and ``kind(t)`` its part (prompt, chosen or rejected):

        allowed(i, j) = pair(i) == pair(j)  and  j <= i  and  not (kind(i) == rejected and kind(j) == chosen)

    so [prompt; chosen] is causal inside itself, the rejected response sees its prompt and itself causally
    (it follows the chosen response in the row, so ``j <= i`` is causal on it), and nothing crosses pairs.
    ``dtype`` bool: True where allowed; a float dtype: the additive mask, 0 where allowed and -inf elsewhere.
    The rows are allocated ``MASK_ALIGNMENT`` keys wide and sliced to S (CUDA's memory-efficient kernel
    wants the mask's row stride aligned; it would otherwise copy the mask into an aligned one per call).
    """
    pair = torch.full((length,), -1, dtype=torch.long, device=device)  # [S]; -1: no pair (not in the row)
    rejected = torch.zeros(length, dtype=torch.bool, device=device)  # [S]
    chosen = torch.zeros(length, dtype=torch.bool, device=device)  # [S]
    for index, (start, p, c, r) in enumerate(pairs):
        pair[start : start + p + c + r] = index
        chosen[start + p : start + p + c] = True
        rejected[start + p + c : start + p + c + r] = True
    position = torch.arange(length, device=device)  # [S]
    allowed = (
        (pair[:, None] == pair[None, :])
        & (position[None, :] <= position[:, None])
        & ~(rejected[:, None] & chosen[None, :])
    )  # [S, S]: query i (rows) may see key j (columns)
    width = -(-max(length, 1) // MASK_ALIGNMENT) * MASK_ALIGNMENT
    blocked = False if dtype == torch.bool else float("-inf")
    mask = torch.full((length, width), blocked, dtype=dtype, device=device)  # [S, S_aligned]
    if dtype == torch.bool:
        mask[:, :length] = allowed
    else:
        mask[:, :length].masked_fill_(allowed, 0.0)  # additive: 0 where allowed, -inf elsewhere
    return mask[None, None, :, :length]  # [1, 1, S, S], a view with an aligned row stride


class PackedRowMask:
    """The mask of one packed row, built on first use and shared by every layer of the forward (and by a
    gradient-checkpointing recompute): additive in the query's dtype on CUDA (the memory-efficient kernel
    wants the mask's dtype to match), boolean elsewhere."""

    def __init__(self, pairs: Pairs, length: int) -> None:
        self.pairs, self.length = pairs, length
        self._built: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def for_query(self, query: torch.Tensor) -> torch.Tensor:
        """The mask [1, 1, S, S] to pass with ``query`` [1, H, S, D]."""
        dtype = query.dtype if query.device.type == "cuda" else torch.bool
        built = self._built.get((query.device, dtype))
        if built is None:
            built = packed_row_mask(self.pairs, self.length, device=query.device, dtype=dtype)
            self._built[(query.device, dtype)] = built
        return built


def masked_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    simplepo_mask: PackedRowMask | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """One SDPA over the whole packed row with the row's mask (query [1, H, S, D], key/value [1, Hkv, S, D]).

    The same attention as :func:`segment_attention` (:func:`packed_row_mask` allows exactly the keys its
    causal calls see), in one call per layer. Grouped-query attention: ``enable_gqa`` on CPU; on CUDA the
    keys and values are repeated to the query's heads (head h reads key head ``h // (H / Hkv)``), since the
    memory-efficient kernel, the one that takes a mask, wants them equal. Returns ``([1, S, H, D], None)``.
    """
    if simplepo_mask is None or attention_mask is not None or query.shape[0] != 1:
        raise _refuse(MASKED_ATTENTION_NAME)
    mask = simplepo_mask.for_query(query)  # [1, 1, S, S]
    key, value, gqa = _grouped_keys(query, key, value, repeat=query.device.type == "cuda")
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling, **gqa
    )  # [1, H, S, D]
    return out.transpose(1, 2).contiguous(), None  # [1, S, H, D]


def _grouped_keys(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *, repeat: bool
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(key, value, SDPA's GQA keyword) for H query heads over Hkv key-value heads: with ``repeat`` the keys
    and values repeated to [1, H, S, D] (query head h reads key-value head ``h // (H / Hkv)``, as
    ``enable_gqa`` does), else unchanged with ``enable_gqa=True``; unchanged and no keyword when H == Hkv."""
    if key.shape[1] == query.shape[1]:
        return key, value, {}
    if not repeat:
        return key, value, {"enable_gqa": True}
    repeats = query.shape[1] // key.shape[1]
    return key.repeat_interleave(repeats, dim=1), value.repeat_interleave(repeats, dim=1), {}


AttentionInterface.register(ATTENTION_NAME, segment_attention)
AttentionInterface.register(MASKED_ATTENTION_NAME, masked_attention)


@contextlib.contextmanager
def packed_attention_on(model: torch.nn.Module, mode: str = "segments"):
    """Run ``model``'s attention through the packed row's attention ``mode`` (``"segments"``: :func:`segment_attention`,
    ``"masked"``: :func:`masked_attention`) inside the block (restored after)."""
    config = causal_lm(model).config
    before = config._attn_implementation
    config._attn_implementation = ATTENTION_MODES[mode]
    try:
        yield
    finally:
        config._attn_implementation = before


def segment_attention_on(model: torch.nn.Module):
    """Run ``model``'s attention through :func:`segment_attention` inside the block (restored after)."""
    return packed_attention_on(model, "segments")
