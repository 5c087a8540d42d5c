"""How a packed row attends: its sequences kept apart.

A packed row (``packing.py``) holds each pair as ``[prompt (P) | chosen (C) | rejected (R)]``. A query may
see only its own sequence: the positions of ``[prompt; chosen]`` attend causally inside it; the rejected
response attends to its pair's prompt and causally to itself; nothing crosses pairs.
:func:`segment_attention`, registered with transformers' ``AttentionInterface`` as ``"simplepo_segments"``,
computes exactly that: per pair, one causal SDPA on ``[prompt; chosen]`` and one on ``[prompt; rejected]``
that reuses the prompt's keys and values (its prompt-query outputs are dropped). No dense mask is built.
:func:`segment_attention_on` switches a model to it for one forward.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

__all__ = ["ATTENTION_NAME", "causal_lm", "segment_attention", "segment_attention_on"]

ATTENTION_NAME = "simplepo_segments"

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
