"""One run of the spread record, trained and evaluated in a worker process: the reference builds, the
baselines (the reference's own samples), ``evaluate_run`` (a default-recipe run evaluated after every round),
the fields every record of a run starts with, the KL to the reference, and appending a finished run's
records.

The process pools of ``spread.run_jobs`` and ``family.run_family`` run these; ``overopt.overopt_run``
evaluates with the same helpers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..world.responses import MAX_NEW_TOKENS
from .records import K_POLICY, K_REFERENCE, REFERENCE_STREAM, SHIPPED, SPLITS, run_id
from .rounds import Recipe

_STATE: dict[str, Any] = {}


def _reference(ref_seed: int) -> tuple[Any, Any]:
    """The shipped reference (``SHIPPED``) or a cache build with world-model seed ``ref_seed``."""
    if ref_seed not in _STATE:
        from ..world.reference import ReferenceConfig, ensure_reference_model, load_reference_model

        if ref_seed == SHIPPED:
            _STATE[ref_seed] = load_reference_model(progress=False)
        else:
            config = ReferenceConfig(seed=ref_seed)
            ensure_reference_model(config, progress=False)
            _STATE[ref_seed] = load_reference_model(config, progress=False)
    return _STATE[ref_seed]


def _prompts(split: str) -> list:
    from ..data import read_jsonl
    from ..world import data_file

    return [row["prompt"] for row in read_jsonl(data_file(SPLITS[split]))[0]]


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def baseline(ref_seed: int, split: str) -> dict:
    """The reference's k = 8 samples on ``split``: expected score, best-of-4 and best-of-8, per prompt."""
    from ..evaluation.sampling import sample_k

    model, tokenizer = _reference(ref_seed)
    prompts = _prompts(split)
    samples = sample_k(
        model, tokenizer, prompts, k=K_REFERENCE, stream=REFERENCE_STREAM, max_new_tokens=MAX_NEW_TOKENS
    )
    scores = samples.scores  # [N, 8]
    probes = _allowed_probes(model, tokenizer, prompts, samples.forbidden)
    best4 = (scores[:, :4].max(axis=1) + scores[:, 4:].max(axis=1)) / 2  # two disjoint groups of 4
    return {
        "kind": "baseline",
        "ref_seed": ref_seed,
        "split": split,
        "expected": np.round(samples.expected, 4).tolist(),
        "best_of_4": np.round(best4, 4).tolist(),
        "best_of_8": np.round(scores.max(axis=1), 4).tolist(),
        "families": samples.families,
        "forbidden": samples.forbidden.tolist(),
        "probes": probes,
    }


def _allowed_probes(model: Any, tokenizer: Any, prompts: list, forbidden: np.ndarray) -> dict[str, float]:
    """Mean probability of opening in each style on the allowed prompts (``probes.style_probabilities``)."""
    from ..evaluation.probes import style_probabilities

    styles = style_probabilities(model, tokenizer, prompts)
    allowed = ~np.asarray(forbidden)
    return {style: round(float(np.asarray(p)[allowed].mean()), 4) for style, p in styles.items()}


def _kl(model: Any, reference: Any, tokenizer: Any, prompts: list, samples: Any) -> dict[str, float]:
    """KL(policy || reference) on the policy's own evaluation samples: the mean over every sample of
    log pi(y|x) - log pi_ref(y|x), summed over the response tokens (EOS included unless cut off), and its
    standard error over samples. ``reference``: the model the run started from (the shipped one)."""
    from ..evaluation.metrics import kl_to_reference

    flat_prompts = [p for p, row in zip(prompts, samples.responses, strict=True) for _ in row]
    flat = [response for row in samples.responses for response in row]
    estimate = kl_to_reference(
        model, reference, tokenizer, flat_prompts, flat, batch_size=64, max_new_tokens=MAX_NEW_TOKENS
    )
    return {"kl": round(estimate.mean, 4), "kl_stderr": round(estimate.stderr, 4)}


def _run_fields(kind: str, method: str, recipe: Recipe, seed: int, ref_seed: int, round_index: int) -> dict:
    """What every record of a run starts with: which run (its id, method, recipe, seeds) and which round."""
    from .rounds import recipe_settings

    return {
        "kind": kind,
        "id": run_id(kind, method, recipe, seed, ref_seed),
        "method": method,
        "recipe": recipe_settings(recipe),
        "seed": seed,
        "ref_seed": ref_seed,
        "round": round_index,
    }


def _sample_fields(samples: Any) -> dict:
    """The per-prompt expected scores (k samples each) and the mean response length of one evaluation."""
    return {"expected": np.round(samples.expected, 4).tolist(), "mean_length": float(samples.lengths.mean())}


def evaluate_run(
    kind: str, method: str, recipe: Recipe, seed: int, ref_seed: int, splits: Sequence[str]
) -> list[dict]:
    """Train one default-recipe run and evaluate every round on ``splits``: one record per (round, split)."""
    from ..evaluation.sampling import sample_k
    from .rounds import default_run

    reference, tokenizer = _reference(ref_seed)
    prompts = {split: _prompts(split) for split in splits}
    records: list[dict] = []
    started = time.perf_counter()

    def on_round(round_index: int, model: Any) -> None:
        for split in splits:
            samples = sample_k(
                model,
                tokenizer,
                prompts[split],
                k=K_POLICY,
                stream=1000 + seed,
                max_new_tokens=MAX_NEW_TOKENS,
            )
            last = round_index == recipe.rounds
            probes = _allowed_probes(model, tokenizer, prompts[split], samples.forbidden) if last else None
            kl = _kl(model, reference, tokenizer, prompts[split], samples)
            records.append(
                {
                    **_run_fields(kind, method, recipe, seed, ref_seed, round_index),
                    "split": split,
                    **_sample_fields(samples),
                    "probes": probes,
                    **kl,
                }
            )

    run = default_run(
        method,
        seed,
        reference=reference,
        tokenizer=tokenizer,
        recipe=recipe,
        progress=False,
        on_round=on_round,
        shipped_round1=ref_seed == SHIPPED,
    )
    for record in records:
        round_info = run.rounds[record["round"] - 1]
        record["pairs"] = round_info["pairs"].get("pairs")
        record["reward_accuracy"] = round_info["final_metrics"].get("rewards/accuracies")
        record["seconds"] = round(time.perf_counter() - started, 1)
    return records


def _append(path: Path, records: Sequence[dict]) -> None:
    with open(path, "a") as handle:  # one write per run: a kill leaves at most one partial last line
        handle.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
