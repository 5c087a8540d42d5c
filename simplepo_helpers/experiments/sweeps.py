"""The offline experiments behind the kit's defaults and results (``make experiments``).

    python -m simplepo_helpers.evaluation.sweeps [--workers 2] [--out results]

Every run is a ``Point``: one training (method, learning rate, beta, gamma, length normalisation, KL weight,
offline or on-policy pairs, seed, steps) evaluated on one split. Runs go to a process pool (one torch thread
per process) and each finished run is appended to ``results/sweeps.jsonl`` at once, so an interrupted sweep
resumes where it stopped. Phases:

1. **Tuning on dev** (``tune``): SimPO, DPO and SimPO without length normalisation (summed log-probs need a
   beta about one answer length smaller) on the same 3 x 2 grid size (learning rate x beta), 2 seeds.
   Criterion, fixed before running: the highest mean expected judge score on dev over the seeds (ties: the
   lower learning rate). Eval prompts are never looked at here.
2. **Questions on dev**, at the tuned settings: ``gamma`` (5 gamma/beta ratios x 3 seeds), ``kl`` (an
   aggressive learning rate with ``kl_weight`` 0 / small / large, 2 seeds) and ``onpolicy`` (the same
   SimPO training on on-policy pairs vs the offline pairs, equal steps, 3 seeds).
3. **Final, reported on eval** (``final``): SimPO, DPO, SimPO without length normalisation (each with its
   tuned settings) and SimPO on on-policy pairs, 3 seeds each.

Each run is evaluated with k = 4 independently seeded samples per prompt (the reference: 8), judged;
``sampling.summary`` plus the LC win rate, KL on the policy's own samples, implicit-reward accuracy on the
split's pairs (``pairs_dev``; ``pairs_test`` for eval), the behaviour probes, and capability retention: the
per-token NLL of the right answers to the split's allowed prompts, policy minus reference (0: retained).
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import multiprocessing
import random
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..world.responses import MAX_NEW_TOKENS

SWEEP_VERSION = 1
K_POLICY, K_REFERENCE = 4, 8
REFERENCE_STREAM = 0  # the reference's sampling stream; a policy's CRN samples reuse it (changed share)
SIMPO_GRID = {"learning_rate": (1e-4, 2e-4, 5e-4), "beta": (2.5, 5.0)}
DPO_GRID = {"learning_rate": (2e-4, 5e-4, 1e-3), "beta": (0.1, 0.5)}
# summed log-probs are about one answer length (~10 tokens) larger than averages: beta about 10x smaller
NO_LN_GRID = {"learning_rate": (1e-4, 2e-4, 5e-4), "beta": (0.25, 0.5)}
GAMMA_RATIOS = (0.0, 0.3, 0.55, 1.0, 1.6)  # gamma / beta; 0.55 is the kit's earlier default
TUNE_SEEDS, QUESTION_SEEDS = (0, 1), (0, 1, 2)
DEFAULT_RATIO = 0.55
KL_LEARNING_RATE, KL_WEIGHTS = 2e-3, (0.0, 0.1, 1.0)
GROUP_ORDER = ("tune", "final", "gamma", "onpolicy", "kl")  # run order: the results table first


@dataclass(frozen=True)
class Point:
    """One training run and the split it is evaluated on."""

    group: str
    label: str
    method: str
    learning_rate: float
    beta: float
    gamma: float = 0.0
    length_normalize: bool = True
    kl_weight: float = 0.0
    data: str = "offline"  # "offline" (data/pairs_train.jsonl) or "onpolicy" (evaluation.onpolicy)
    seed: int = 0
    steps: int = 120
    batch_size: int = 16
    split: str = "dev"

    def training(self) -> dict[str, Any]:
        """What decides the trained weights."""
        settings = asdict(self)
        for name in ("group", "label", "split"):
            settings.pop(name)
        return settings

    @property
    def train_key(self) -> str:
        """The run's identity: its settings and the shipped reference's weights (a record made from another
        reference is another run, so a resumed sweep never mixes references)."""
        payload = json.dumps(
            {"v": SWEEP_VERSION, "reference": _reference_weights(), **self.training()}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def key(self) -> str:
        return f"{self.train_key}-{self.split}"


@functools.lru_cache(maxsize=1)
def _reference_weights() -> str:
    from ..world.reference import reference_fingerprint

    return reference_fingerprint()


def simpo(group: str, lr: float, beta: float, ratio: float, seed: int, split: str = "dev", **kw) -> Point:
    label = kw.pop("label", "simpo")
    return Point(group, label, "simpo", lr, beta, round(ratio * beta, 6), seed=seed, split=split, **kw)


def dpo(group: str, lr: float, beta: float, seed: int, split: str = "dev") -> Point:
    return Point(group, "dpo", "dpo", lr, beta, 0.0, length_normalize=False, seed=seed, split=split)


def no_ln(group: str, lr: float, beta: float, seed: int, split: str = "dev") -> Point:
    """SimPO on summed log-probs (the paper's ablation), gamma/beta as for SimPO."""
    return simpo(group, lr, beta, DEFAULT_RATIO, seed, split, length_normalize=False, label="simpo_no_ln")


def tuning_points() -> list[Point]:
    points = []
    for seed in TUNE_SEEDS:
        for lr in SIMPO_GRID["learning_rate"]:
            for beta in SIMPO_GRID["beta"]:
                points.append(simpo("tune", lr, beta, DEFAULT_RATIO, seed))
        for lr in DPO_GRID["learning_rate"]:
            for beta in DPO_GRID["beta"]:
                points.append(dpo("tune", lr, beta, seed))
        for lr in NO_LN_GRID["learning_rate"]:
            for beta in NO_LN_GRID["beta"]:
                points.append(no_ln("tune", lr, beta, seed))
    return points


def best_setting(records: Iterable[dict], label: str) -> dict[str, float]:
    """The tuned (learning_rate, beta) of the runs labelled ``label`` ("simpo", "dpo", "simpo_no_ln"): highest
    mean dev expected score over seeds."""
    means: dict[tuple[float, float], list[float]] = {}
    for record in records:
        point = record["point"]
        if point["group"] == "tune" and point["label"] == label and "metrics" in record:
            key = (point["learning_rate"], point["beta"])
            means.setdefault(key, []).append(record["metrics"]["expected_score"])
    if not means:
        raise ValueError(f"no tuning records for {label}")
    (lr, beta), _ = max(means.items(), key=lambda item: (np.mean(item[1]), -item[0][0]))
    return {"learning_rate": lr, "beta": beta}


def question_points(simpo_best: dict, dpo_best: dict, no_ln_best: dict) -> list[Point]:
    lr, beta = simpo_best["learning_rate"], simpo_best["beta"]
    points = []
    for seed in QUESTION_SEEDS:
        for ratio in GAMMA_RATIOS:
            points.append(simpo("gamma", lr, beta, ratio, seed))
        points.append(
            simpo("onpolicy", lr, beta, DEFAULT_RATIO, seed, data="onpolicy", label="simpo_onpolicy")
        )
        for split in ("eval",):
            points.append(simpo("final", lr, beta, DEFAULT_RATIO, seed, split))
            points.append(dpo("final", dpo_best["learning_rate"], dpo_best["beta"], seed, split))
            points.append(no_ln("final", no_ln_best["learning_rate"], no_ln_best["beta"], seed, split))
            points.append(
                simpo("final", lr, beta, DEFAULT_RATIO, seed, split, data="onpolicy", label="simpo_onpolicy")
            )
    for seed in TUNE_SEEDS:
        for weight in KL_WEIGHTS:
            points.append(
                simpo(
                    "kl",
                    KL_LEARNING_RATE,
                    beta,
                    DEFAULT_RATIO,
                    seed,
                    kl_weight=weight,
                    label=f"simpo_kl{weight:g}",
                )
            )
    return points


# ------------------------------------------------------------------------------ worker side

_STATE: dict[str, Any] = {}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _split_data(split: str) -> dict[str, Any]:
    """Prompts, pairs, the reference's samples, probes and answer NLL of ``split`` (memoised per process)."""
    if split in _STATE:
        return _STATE[split]
    from ..data import read_jsonl
    from ..evaluation.probes import style_probabilities
    from ..evaluation.sampling import sample_k
    from ..world import data_file

    model, tokenizer = _reference()
    prompt_rows, _ = read_jsonl(data_file("dev_prompts" if split == "dev" else "eval_prompts"))
    pairs, _ = read_jsonl(data_file("pairs_dev" if split == "dev" else "pairs_test"))
    prompts = [row["prompt"] for row in prompt_rows]
    answers = _right_answers(prompt_rows)
    data = {
        "rows": prompt_rows,
        "prompts": prompts,
        "pairs": pairs,
        "answers": answers,
        "reference": sample_k(
            model, tokenizer, prompts, k=K_REFERENCE, stream=REFERENCE_STREAM, max_new_tokens=MAX_NEW_TOKENS
        ),
        "reference_styles": style_probabilities(model, tokenizer, prompts),
        "reference_nll": _answer_nll(model, tokenizer, answers),
    }
    _STATE[split] = data
    return data


def _reference():
    if "model" not in _STATE:
        from ..world import load_reference_model

        _STATE["model"], _STATE["tokenizer"] = load_reference_model(progress=False)
    return _STATE["model"], _STATE["tokenizer"]


def _right_answers(prompt_rows: Sequence[dict]) -> list[tuple[list[dict], str]]:
    """(prompt, the right answer in the bare style) for each allowed prompt: the capability probe."""
    from ..world.families import parse_prompt
    from ..world.responses import render_response

    rng = random.Random(0)
    out = []
    for row in prompt_rows:
        if row["forbidden"]:
            continue
        task = parse_prompt(row["prompt"][-1]["content"])
        out.append((row["prompt"], render_response(task, "concise", rng)))
    return out


def _answer_nll(model, tokenizer, answers) -> float:
    """Mean per-token NLL of the right answers (with EOS) under ``model``."""
    from ..evaluation.metrics import response_logps

    prompts, texts = [p for p, _ in answers], [a for _, a in answers]
    logps = response_logps(model, tokenizer, prompts, texts)  # [N] summed
    tokens = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts]
    return float(-(logps.numpy() / np.array(tokens)).mean())


def _training_rows(kind: str) -> list[dict]:
    if kind not in _STATE:
        if kind == "offline":
            from ..data import read_jsonl
            from ..world import data_file

            _STATE[kind] = read_jsonl(data_file("pairs_train"))[0]
        else:
            from .onpolicy import load_onpolicy_pairs

            _STATE[kind] = load_onpolicy_pairs(progress=False)[0]
    return _STATE[kind]


def _loss_config(point: Point):
    from ..training import LossConfig

    if point.method == "dpo":
        return LossConfig("dpo", beta=point.beta, kl_weight=point.kl_weight)
    return LossConfig(
        "simpo",
        beta=point.beta,
        gamma=point.gamma,
        length_normalize=point.length_normalize,
        kl_weight=point.kl_weight,
    )


def train_point(point: Point, models_dir: Path):
    """The trained policy of ``point`` (reloaded when a previous run saved it) and its training summary."""
    import torch

    from ..training import TrainConfig, train
    from .comparisons import reference_logps

    reference, tokenizer = _reference()
    model = copy.deepcopy(reference)
    saved = models_dir / f"{point.train_key}.pt"
    summary_file = saved.with_suffix(".json")
    if saved.is_file() and summary_file.is_file():
        model.load_state_dict(torch.load(saved, weights_only=True))
        return model.eval(), json.loads(summary_file.read_text())
    rows = _training_rows(point.data)
    config = TrainConfig(
        loss=_loss_config(point),
        learning_rate=point.learning_rate,
        max_steps=point.steps,
        batch_size=point.batch_size,
        warmup_ratio=0.1,
        seed=point.seed,
        max_length=tokenizer.model_max_length,
        max_prompt_length=tokenizer.model_max_length // 2,
        log_every=point.steps,
    )
    extra: dict[str, Any] = {}
    mode = config.loss.reference_mode()
    if mode == "live":
        extra["ref_model"] = reference
    elif mode == "precomputed":
        extra["ref_logps"] = reference_logps(reference, tokenizer, rows, config)
    started = time.perf_counter()
    result = train(model, tokenizer, rows, config, progress=False, **extra)
    tail = result.history[-10:]
    summary = {
        "train_seconds": time.perf_counter() - started,
        "train_loss": float(np.mean([r["loss"] for r in tail])),
        "train_reward_accuracy": float(np.mean([r["rewards/accuracies"] for r in tail])),
    }
    models_dir.mkdir(parents=True, exist_ok=True)
    temporary = saved.with_suffix(f".tmp{id(model)}")
    torch.save(model.state_dict(), temporary)
    temporary.replace(saved)
    summary_file.write_text(json.dumps(summary))
    return model.eval(), summary


def evaluate_point(model, point: Point) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """(metrics, per-prompt arrays) of a trained policy on ``point.split`` against the reference."""
    from ..evaluation.metrics import kl_to_reference, lc_win_rate, preference_rewards
    from ..evaluation.probes import STYLE_NAMES, probe_table, style_probabilities
    from ..evaluation.sampling import changed_share, sample_k, summary

    reference, tokenizer = _reference()
    data = _split_data(point.split)
    ref = data["reference"]
    samples = sample_k(
        model, tokenizer, data["prompts"], k=K_POLICY, stream=1000 + point.seed, max_new_tokens=MAX_NEW_TOKENS
    )
    metrics = summary(samples, ref)
    if point.split == "eval":  # common random numbers: the policy sampled with the reference's seeds
        crn = sample_k(
            model,
            tokenizer,
            data["prompts"],
            k=K_POLICY,
            stream=REFERENCE_STREAM,
            max_new_tokens=MAX_NEW_TOKENS,
        )
        metrics["changed_share"] = changed_share(crn.responses, [r[:K_POLICY] for r in ref.responses])
    lc = lc_win_rate(samples.expected, ref.expected, samples.lengths.mean(1), ref.lengths.mean(1))
    metrics.update({"lc_win_rate": lc.lc_win_rate, "lc_length_coef": lc.length_slope})
    flat_prompts = [p for p in data["prompts"] for _ in range(K_POLICY)]
    flat = [r for rs in samples.responses for r in rs]
    kl = kl_to_reference(model, reference, tokenizer, flat_prompts, flat, max_new_tokens=MAX_NEW_TOKENS)
    metrics.update({"kl": kl.mean, "kl_stderr": kl.stderr})
    rewards = preference_rewards(
        model,
        tokenizer,
        data["pairs"],
        _loss_config(point),
        ref_model=reference,
        max_length=tokenizer.model_max_length,
        max_prompt_length=tokenizer.model_max_length // 2,
    )
    metrics["reward_accuracy"] = rewards.reward_accuracy
    metrics["answer_nll_change"] = _answer_nll(model, tokenizer, data["answers"]) - data["reference_nll"]
    styles = style_probabilities(model, tokenizer, data["prompts"])
    families = [row["family"] for row in data["rows"]]
    forbidden = [row["forbidden"] for row in data["rows"]]
    metrics["probes"] = probe_table(styles, families, forbidden)
    per_prompt = {
        "expected": samples.expected.round(4).tolist(),
        "refused": samples.refused.mean(1).round(4).tolist(),
        "correct": samples.correct.mean(1).round(4).tolist(),
        "length": samples.lengths.mean(1).round(2).tolist(),
        **{f"p_{s}": styles[s].round(4).tolist() for s in STYLE_NAMES},
    }
    return metrics, per_prompt


def run_point(point: Point, models_dir: str) -> dict[str, Any]:
    """Train (or reload) and evaluate one point; an error is recorded, not raised."""
    started = time.perf_counter()
    try:
        model, train_summary = train_point(point, Path(models_dir))
        metrics, per_prompt = evaluate_point(model, point)
    except Exception as error:  # a diverged run is a result too
        return {"key": point.key, "point": asdict(point), "error": f"{type(error).__name__}: {error}"}
    return {
        "key": point.key,
        "point": asdict(point),
        "train": train_summary,
        "metrics": metrics,
        "per_prompt": per_prompt,
        "seconds": time.perf_counter() - started,
    }


def reference_record(split: str) -> dict[str, Any]:
    """The reference model's own numbers on ``split`` (k = K_REFERENCE samples)."""
    from ..evaluation.probes import STYLE_NAMES, probe_table
    from ..evaluation.sampling import diversity, summary

    data = _split_data(split)
    ref = data["reference"]
    families = [row["family"] for row in data["rows"]]
    forbidden = [row["forbidden"] for row in data["rows"]]
    styles = data["reference_styles"]
    return {
        "split": split,
        "k": K_REFERENCE,
        "metrics": {
            **summary(ref),
            **diversity([r[:K_POLICY] for r in ref.responses]),  # over k = K_POLICY, as for the policies
            "answer_nll": data["reference_nll"],
            "probes": probe_table(styles, families, forbidden),
        },
        "per_prompt": {
            "expected": ref.expected.round(4).tolist(),
            "refused": ref.refused.mean(1).round(4).tolist(),
            "correct": ref.correct.mean(1).round(4).tolist(),
            "length": ref.lengths.mean(1).round(2).tolist(),
            "family": families,
            "forbidden": forbidden,
            **{f"p_{s}": styles[s].round(4).tolist() for s in STYLE_NAMES},
        },
    }


# ------------------------------------------------------------------------------ driver


@dataclass
class Sweep:
    out: Path
    workers: int
    models_dir: Path
    records: dict[str, dict] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.out / "sweeps.jsonl"

    def load(self) -> None:
        from ..runtime.files import read_records

        for record in read_records(self.log):  # a partial last line (a killed write) is run again
            if "metrics" in record:
                self.records[record["key"]] = record

    def run(self, points: Sequence[Point]) -> None:
        todo = list({p.key: p for p in points if p.key not in self.records}.values())
        todo.sort(key=lambda p: GROUP_ORDER.index(p.group))  # what the results need most first
        print(f"{len(todo)} runs to do ({len(points) - len(todo)} already recorded)", flush=True)
        if not todo:
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker) as pool:
            futures = [pool.submit(run_point, p, str(self.models_dir)) for p in todo]
            for done, future in enumerate(as_completed(futures), 1):
                record = future.result()
                with self.log.open("a") as handle:
                    handle.write(json.dumps(record, separators=(",", ":")) + "\n")
                if "metrics" in record:
                    self.records[record["key"]] = record
                    m = record["metrics"]
                    print(
                        f"[{done}/{len(todo)}] {record['point']['group']} {record['point']['label']} "
                        f"lr={record['point']['learning_rate']:g} beta={record['point']['beta']:g} "
                        f"gamma={record['point']['gamma']:g} kl={record['point']['kl_weight']:g} "
                        f"seed={record['point']['seed']} {record['point']['split']}: "
                        f"score {m['expected_score']:.3f} gain {m['score_gain']:+.3f} ({record['seconds']:.0f} s)",
                        flush=True,
                    )
                else:
                    print(f"[{done}/{len(todo)}] FAILED {record['point']}: {record['error']}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="processes (one torch thread each)")
    parser.add_argument("--out", type=Path, default=None, help="folder for sweeps.jsonl (default: results/)")
    args = parser.parse_args(argv)
    from ..evaluation.results import repo_root
    from ..world import cache_dir

    out = args.out or repo_root() / "results"
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sweep = Sweep(out, args.workers, cache_dir() / "sweep-models")
    sweep.load()
    from .onpolicy import load_onpolicy_pairs

    load_onpolicy_pairs()  # build once here, not in every worker
    sweep.run(tuning_points())
    records = list(sweep.records.values())
    tuned = {label: best_setting(records, label) for label in ("simpo", "dpo", "simpo_no_ln")}
    print(f"tuned on dev: {tuned}", flush=True)
    sweep.run(question_points(tuned["simpo"], tuned["dpo"], tuned["simpo_no_ln"]))
    _init_worker()
    references = {split: reference_record(split) for split in ("dev", "eval")}
    (out / "sweeps_reference.json").write_text(json.dumps(references, separators=(",", ":")) + "\n")
    meta = {
        "command": "make experiments (python -m simplepo_helpers.evaluation.sweeps --workers "
        f"{args.workers})",
        "workers": args.workers,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "tuned": tuned,
    }
    (out / "sweeps_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
