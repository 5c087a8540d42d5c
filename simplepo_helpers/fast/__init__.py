"""The fast path: every speed trick of the kit, behind one door.

The core computes a preference step the plain way: the padded ``[2B, T]`` batch through the model, then
``log_softmax`` and ``gather`` (``logps.py``). This subpackage computes the same numbers faster and is
proven equal to the plain path by ``tests/test_fast.py`` and ``tests/test_packing.py``:

- ``packing``: the packed, prefix-shared row and its log-probs: all pairs in one row, each prompt once, no
  padding; the LM head run at the scored positions only and fused with a log-softmax chunked over positions
  with a hand-written backward (``chunked_token_logps``, ``head_token_logps``);
- ``attention``: how the packed row attends, its sequences kept apart: causal SDPA per segment (the CPU
  default) or one SDPA per layer with the row's mask (the CUDA default; ``$SIMPLEPO_PACKED_ATTENTION``
  overrides), registered with transformers' ``AttentionInterface``.

``fast.fused`` (where the log-softmax and the fused head lived) is an old name of ``fast.packing`` and still
imports (the package's moved-module table).

The door is ``training.concatenated_forward(..., layout="auto" | "packed")``: ``train()`` passes
``"auto"``, which takes the packed layout where :func:`packed_support` says the model is tested with it
(Llama, Qwen2) and the padded one everywhere else. Nothing else in the core imports this subpackage.
"""

from .attention import attention_mode
from .packing import (
    PackedBatch,
    choose_layout,
    chunked_token_logps,
    describe_layout,
    head_token_logps,
    pack_preference_batch,
    packed_sequence_logps,
    packed_support,
)

__all__ = [
    "PackedBatch",
    "attention_mode",
    "choose_layout",
    "chunked_token_logps",
    "describe_layout",
    "head_token_logps",
    "pack_preference_batch",
    "packed_sequence_logps",
    "packed_support",
]
