"""Over-optimisation (issue 21; notebook 08): offline SimPO, DPO and SimPO + SFT term trained
``OVEROPT_STEPS`` steps, evaluated on dev every ``OVEROPT_EVERY`` (kind ``"overopt"`` in
``results/rounds.jsonl``, one record per evaluated step), one point of it re-run live (``overopt_point``),
the curve's summary, and the band a live re-run must fall in (``overopt_band``, ``seed_band``, ``dev_gain``).

    python -m simplepo_helpers.experiments.spread overopt
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..world.responses import MAX_NEW_TOKENS
from .records import K_POLICY, SHIPPED, baselines
from .rounds import RECIPES, Recipe
from .spread_runs import _kl, _prompts, _reference, _run_fields, _sample_fields

# Offline runs (data/pairs_train.jsonl, the offline recipes) trained OVEROPT_STEPS steps with one cosine
# schedule, evaluated on dev every OVEROPT_EVERY steps: the judge's expected score (k = 4), the reward accuracy
# on the held-out offline pairs (data/pairs_dev.jsonl, a tie counts half) and on the training batches, KL to
# the reference on the policy's samples. SimPO, DPO and SimPO with the SFT term (weight 1).
OVEROPT_STEPS = 480
OVEROPT_EVERY = 60
OVEROPT_SEEDS = (0, 1)


def overopt_recipes() -> dict[str, Recipe]:
    simpo, dpo = RECIPES["simpo_offline"], RECIPES["dpo_offline"]
    return {
        "simpo": replace(simpo, steps_per_round=OVEROPT_STEPS),
        "dpo": replace(dpo, steps_per_round=OVEROPT_STEPS),
        "simpo_sft": replace(simpo, loss=replace(simpo.loss, sft_weight=1.0), steps_per_round=OVEROPT_STEPS),
    }


def overopt_jobs() -> list[tuple]:
    return [
        ("overopt", method, recipe, seed, SHIPPED, ("dev",))
        for seed in OVEROPT_SEEDS
        for method, recipe in overopt_recipes().items()
    ]


class _Stop(Exception):
    """Raised from the step hook to end a run early (``overopt_point``)."""


def overopt_run(
    kind: str,
    method: str,
    recipe: Recipe,
    seed: int,
    ref_seed: int,
    splits: Sequence[str] = ("dev",),
    stop_at: int | None = None,
) -> list[dict]:
    """Train one offline run and evaluate it on dev every OVEROPT_EVERY steps (and at ``stop_at``, where the
    run then stops: the same schedule, so the same model as the full run's at that step). The evaluation
    saves and restores the RNG states and the model's mode: training goes on as if it had not been evaluated."""
    import random

    import torch

    from ..batching import PreferenceCollator
    from ..data import read_jsonl
    from ..evaluation.metrics import preference_rewards
    from ..evaluation.sampling import sample_k
    from ..precompute import precompute_reference_logps
    from ..world import data_file
    from .rounds import default_run

    if list(splits) != ["dev"]:
        raise ValueError("the over-optimisation runs are evaluated on dev only")
    reference, tokenizer = _reference(ref_seed)
    prompts = _prompts("dev")
    pairs, _ = read_jsonl(data_file("pairs_dev"))
    loss = recipe.loss
    ref_logps = None
    if loss.needs_reference:
        ref_logps = precompute_reference_logps(
            reference, pairs, PreferenceCollator(tokenizer), 64, length_normalize=loss.length_normalize
        )
    records: list[dict] = []
    train_accuracy: list[float] = []
    started = time.perf_counter()

    def on_step(round_index: int, row: dict, model: Any) -> None:
        step = row["step"]
        train_accuracy.append(float(row["rewards/accuracies"]))
        if step % OVEROPT_EVERY and step != stop_at:
            return
        states = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
        was_training = model.training
        model.eval()
        try:
            samples = sample_k(
                model, tokenizer, prompts, k=K_POLICY, stream=1000 + seed, max_new_tokens=MAX_NEW_TOKENS
            )
            rewards = preference_rewards(model, tokenizer, pairs, loss, ref_logps=ref_logps, batch_size=64)
            records.append(
                {
                    **_run_fields(kind, method, recipe, seed, ref_seed, round_index),
                    "step": step,
                    "split": "dev",
                    **_sample_fields(samples),
                    **_kl(model, reference, tokenizer, prompts, samples),
                    "pairs_dev_reward_accuracy": round(rewards.reward_accuracy, 4),
                    "train_reward_accuracy": round(float(np.mean(train_accuracy[-OVEROPT_EVERY:])), 4),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
        finally:
            model.train(was_training)
            torch.random.set_rng_state(states[0])
            np.random.set_state(states[1])
            random.setstate(states[2])
        if step == stop_at:
            raise _Stop

    try:
        default_run(
            method,
            seed,
            reference=reference,
            tokenizer=tokenizer,
            recipe=recipe,
            progress=False,
            on_step=on_step,
        )
    except _Stop:
        pass
    return records


def overopt_point(method: str = "simpo", seed: int = 0, step: int = OVEROPT_EVERY) -> dict:
    """Re-run one point of the over-optimisation record live: ``method``'s run (``overopt_recipes``) with
    training seed ``seed`` up to ``step`` (the full run's schedule), evaluated as the record is."""
    recipe = overopt_recipes()[method]
    return overopt_run("overopt", method, recipe, seed, SHIPPED, ("dev",), stop_at=step)[-1]


# ------------------------------------------------------------------------------------------ summaries


def overopt_summary(records: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """Per over-optimisation method: per evaluated step the mean over seeds of the dev score gain, the reward
    accuracy on the held-out pairs and on the training batches, the KL and the length; the step with the
    highest mean gain; and the last step minus that one, per prompt and seed (an interval that resamples
    seeds and prompts, or the prompts alone for one seed; the best step is picked on the same data, so the
    drop is if anything overstated)."""
    from ..evaluation.sampling import score_gain, seed_prompt_gain

    base = baselines(records)
    out: dict[str, dict[str, Any]] = {}
    chosen = [r for r in records if r.get("kind") == "overopt"]
    for method in dict.fromkeys(r["method"] for r in chosen):
        runs: dict[int, dict[int, dict]] = {}
        for r in chosen:
            if r["method"] == method:
                runs.setdefault(r["seed"], {})[r["step"]] = r
        steps = sorted(set.intersection(*(set(v) for v in runs.values())))
        if not steps:
            continue
        reference = np.array(base[(SHIPPED, "dev")]["expected"])
        seeds = sorted(runs)

        def mean(field: str, step: int, runs: dict = runs, seeds: list = seeds) -> float:
            return float(np.mean([runs[s][step][field] for s in seeds]))

        gains = [float(np.mean([runs[s][t]["expected"] for s in seeds]) - reference.mean()) for t in steps]
        best = steps[int(np.argmax(gains))]
        drop = None
        if best != steps[-1]:
            last = np.array([runs[s][steps[-1]]["expected"] for s in seeds])
            top = np.array([runs[s][best]["expected"] for s in seeds])
            if len(seeds) >= 2:
                drop = seed_prompt_gain(last - top, np.zeros(last.shape[1])).as_dict()
            else:  # one seed: the prompts alone are resampled
                drop = score_gain(last[0], top[0]).as_dict()
        out[method] = {
            "seeds": seeds,
            "steps": steps,
            "gain": gains,
            "gain_by_seed": {
                s: [float(np.mean(runs[s][t]["expected"]) - reference.mean()) for t in steps] for s in seeds
            },
            "pairs_dev_reward_accuracy": [mean("pairs_dev_reward_accuracy", t) for t in steps],
            "train_reward_accuracy": [mean("train_reward_accuracy", t) for t in steps],
            "kl": [mean("kl", t) for t in steps],
            "mean_length": [mean("mean_length", t) for t in steps],
            "best_step": best,
            "last_minus_best": drop,
        }
    return out


def overopt_band(
    records: Sequence[dict], method: str = "simpo", step: int = OVEROPT_EVERY, *, seeds=None, z: float = 3.0
) -> tuple[float, float]:
    """Where a live re-run of one over-optimisation point (``overopt_point``) should land: the recorded
    seeds' dev gains at ``step`` (``seeds``: a subset), widened on each side by ``z`` standard errors of one
    run's mean over the dev prompts (the largest of the recorded runs'). Another CPU or GPU trains another
    trajectory, as another seed would; tests/test_family.py checks that a band built without one seed holds it."""
    base = np.array(baselines(records)[(SHIPPED, "dev")]["expected"])
    chosen = [
        r
        for r in records
        if r.get("kind") == "overopt"
        and r["method"] == method
        and r["step"] == step
        and (seeds is None or r["seed"] in seeds)
    ]
    if not chosen:
        raise ValueError(f"no over-optimisation record of {method} at step {step}")
    return seed_band([np.asarray(r["expected"]) - base for r in chosen], z=z)


def seed_band(differences: Sequence[np.ndarray], *, z: float = 3.0) -> tuple[float, float]:
    """The range of the recorded runs' mean gains (``differences``: per run, per-prompt policy minus
    reference), widened on each side by ``z`` standard errors of one run's mean over the prompts (the largest)."""
    gains = [float(np.mean(d)) for d in differences]
    se = max(float(np.std(d, ddof=1) / np.sqrt(len(d))) for d in differences)
    return min(gains) - z * se, max(gains) + z * se


def dev_gain(record: dict, records: Sequence[dict]) -> float:
    """A dev record's mean expected score minus the shipped reference's on dev (its k = 8 baseline)."""
    base = baselines(records)[(record["ref_seed"], record["split"])]
    return float(np.mean(record["expected"]) - np.mean(base["expected"]))
