"""Which examples each optimizer step sees: a seeded, resumable order, collated into micro-batches.

Position p of the example stream is a pure function of (seed, p), so a resumed run, or the same run on N
processes, sees exactly the same examples at every step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch


class ShuffledStream:
    """An endless stream of example indices: epoch e is a permutation seeded by (seed, e)."""

    def __init__(self, num_examples: int, seed: int) -> None:
        self.num_examples, self.seed = num_examples, seed
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def take(self, start: int, count: int) -> list[int]:
        out = []
        for position in range(start, start + count):
            epoch, offset = divmod(position, self.num_examples)
            if epoch != self._epoch:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._epoch, self._order = epoch, torch.randperm(self.num_examples, generator=generator)
            out.append(int(self._order[offset]))
        return out


def collate_examples(
    collator: Callable[[list], dict[str, torch.Tensor]],
    examples: Sequence[Mapping[str, Any]],
    indices: list[int],
    *,
    context: str,
) -> dict[str, torch.Tensor]:
    """``collator`` over ``examples[indices]``; a failure names the step (``context``) and the examples."""
    try:
        return collator([examples[i] for i in indices])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{context}: could not collate examples {indices} (row k = examples[{indices}][k]): {exc}"
        ) from exc


class MicroBatches(Protocol):
    """What ``train`` draws its batches from (:class:`PreferenceBatches` by default)."""

    def micro_batches(self, step: int) -> list[dict[str, torch.Tensor]]: ...


class PreferenceBatches:
    """The micro-batches of each optimizer step (``train``'s default batch source).

    Step s (from 1), micro-batch m covers stream positions ``[(s-1)*E + m*B, ... + B)``, E = B *
    ``grad_accum_steps`` examples per step. Process ``rank`` of ``world`` collates its contiguous share
    ``rank*B/world .. (rank+1)*B/world`` of each micro-batch. ``ref_logps`` (per-example tensors, e.g.
    precomputed DPO reference log-probs) are attached to each batch under their own keys.
    """

    def __init__(
        self,
        examples: Sequence[Mapping[str, Any]],
        collator: Callable[[list], dict[str, torch.Tensor]],
        *,
        batch_size: int,
        grad_accum_steps: int,
        seed: int,
        ref_logps: Mapping[str, torch.Tensor] | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if batch_size % world:
            raise ValueError(
                f"batch_size={batch_size} (pairs per micro-batch, all processes together) must be divisible "
                f"by the number of processes ({world})"
            )
        self.examples, self.collator = examples, collator
        self.ref_logps = None if ref_logps is None else check_per_example(ref_logps, len(examples))
        self.batch_size, self.grad_accum_steps = batch_size, grad_accum_steps
        self.rank, self.share = rank, batch_size // world
        self.stream = ShuffledStream(len(examples), seed)

    def micro_batches(self, step: int) -> list[dict[str, torch.Tensor]]:
        first = (step - 1) * self.batch_size * self.grad_accum_steps
        where = f"step {step}" + (f", process {self.rank}" if self.share != self.batch_size else "")
        batches = []
        for micro in range(self.grad_accum_steps):
            indices = self.stream.take(first + micro * self.batch_size, self.batch_size)
            mine = indices[self.rank * self.share : (self.rank + 1) * self.share]
            batch = collate_examples(self.collator, self.examples, mine, context=where)
            if self.ref_logps is not None:
                batch.update({key: values[mine] for key, values in self.ref_logps.items()})
            batches.append(batch)
        return batches


REF_LOGPS_KEYS = ("ref_chosen_logps", "ref_rejected_logps")


def check_per_example(ref_logps: Mapping[str, Any], num_examples: int) -> dict[str, torch.Tensor]:
    """The per-example reference log-probs ([N] float32 each), checked: both keys, N values, all finite."""
    checked = {}
    for key in REF_LOGPS_KEYS:
        if key not in ref_logps:
            raise KeyError(f"ref_logps lacks {key!r}; build it with precompute_reference_logps")
        values = torch.as_tensor(ref_logps[key], dtype=torch.float32).flatten()
        if values.numel() != num_examples:
            raise ValueError(f"ref_logps[{key!r}] has {values.numel()} values for {num_examples} examples")
        bad = (~torch.isfinite(values)).nonzero().flatten()
        if bad.numel():
            raise ValueError(f"ref_logps[{key!r}] is not finite at example {int(bad[0])}")
        checked[key] = values
    return checked
