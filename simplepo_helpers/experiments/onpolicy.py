"""On-policy preference pairs, the recipe behind SimPO's Instruct models: sample several answers per training
prompt from the reference (SFT) model, judge them, and pair the best against the worst.

The paper samples 5 answers per prompt and scores them with a reward model (PairRM; ArmoRM in v0.2); here
the world's exact judge plays the reward model. What happens to the awkward cases:

- **ties**: the judge's scores are discrete, so several samples often share the best (or worst) score; the
  chosen (rejected) sample is drawn uniformly at random among them (seeded), so no length preference
  creeps in (the offline annotator breaks ties by length, `world.dataset`). A prompt whose samples all
  score the same carries no preference and is **dropped** (counted in the build report);
- **empty samples** (nothing but the end token) cannot be scored as a response by the loss and are dropped
  before pairing; **malformed** samples (cut off, a repeated sentence) stay: the judge halves their score,
  so they end up rejected, which is the point;
- **label noise**: the judge is exact, so these pairs have none, unlike the offline pairs (10%); a
  comparison of the two therefore changes both where the answers come from and how clean the labels are.

The pairs are a pure function of the model sampled from, the training prompts, the settings and the kit's
code, and are cached under ``world.cache_dir()`` on first use (``load_onpolicy_pairs``), keyed on all four.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..runtime.files import write_text_atomic
from ..world.responses import CONFIDENT_OPENERS, MAX_NEW_TOKENS, OPENERS


@dataclass(frozen=True)
class OnPolicyConfig:
    """How many answers per prompt, the sampling seed and the generation limit."""

    samples_per_prompt: int = 4
    seed: int = 0
    max_new_tokens: int = MAX_NEW_TOKENS
    batch_size: int = 256


def opening_style(text: str) -> str:
    """The style a response opens in (as the behaviour probes count it): verbose, confident, refusal, bare."""
    if text.startswith(OPENERS):
        return "verbose"
    if text.startswith(CONFIDENT_OPENERS):
        return "confident"
    if text.startswith(("Sorry", "I'm sorry")):
        return "refusal"
    return "bare"


def pair_best_worst(
    prompt: list[dict], samples: Sequence[str], scores: Sequence[float], rng: random.Random
) -> tuple[dict | None, str]:
    """(pair row, outcome) for one prompt's judged samples; outcome is "paired", "all tied" or "too few"."""
    kept = [(text, score) for text, score in zip(samples, scores, strict=True) if text.strip()]
    if len(kept) < 2:
        return None, "too few"
    best, worst = max(s for _, s in kept), min(s for _, s in kept)
    if best == worst:
        return None, "all tied"
    chosen = rng.choice([t for t, s in kept if s == best])
    rejected = rng.choice([t for t, s in kept if s == worst])
    row = {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "chosen_score": best,
        "rejected_score": worst,
        "chosen_style": opening_style(chosen),
        "rejected_style": opening_style(rejected),
    }
    return row, "paired"


def build_onpolicy_pairs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[dict]],
    config: OnPolicyConfig = OnPolicyConfig(),
    *,
    progress: bool | None = None,
) -> tuple[list[dict], dict[str, Any]]:
    """(pairs, report): ``config.samples_per_prompt`` samples per distinct prompt, judged, best vs worst.
    ``progress``: a bar per sampling pass (None: on for long work, as ``generate_responses`` decides)."""
    from ..evaluation.generation import generate_responses
    from ..evaluation.sampling import sample_seeds
    from ..world.judge import judge

    columns = [
        generate_responses(
            model,
            tokenizer,
            prompts,
            max_new_tokens=config.max_new_tokens,
            seed=seed,
            batch_size=config.batch_size,
            progress=progress,
        )
        for seed in sample_seeds(10_000 + config.seed, config.samples_per_prompt)
    ]  # [k][N]
    rng = random.Random(f"onpolicy-{config.seed}")
    pairs, outcomes, empty = [], Counter(), 0
    for index, prompt in enumerate(prompts):
        samples = [column[index] for column in columns]
        empty += sum(not s.strip() for s in samples)
        verdicts = [judge(prompt, s) for s in samples]
        row, outcome = pair_best_worst(prompt, samples, [v.score for v in verdicts], rng)
        outcomes[outcome] += 1
        if row is not None:
            row = {**row, "family": verdicts[0].family, "forbidden": verdicts[0].forbidden}
            pairs.append(row)
    report = {
        "prompts": len(prompts),
        "samples": len(prompts) * config.samples_per_prompt,
        "empty_samples": empty,
        "pairs": len(pairs),
        "dropped_all_tied": outcomes["all tied"],
        "dropped_too_few": outcomes["too few"],
        "chosen_styles": dict(Counter(p["chosen_style"] for p in pairs)),
        "rejected_styles": dict(Counter(p["rejected_style"] for p in pairs)),
        "chosen_longer": sum(len(p["chosen"][0]["content"]) > len(p["rejected"][0]["content"]) for p in pairs)
        / max(1, len(pairs)),
        "config": asdict(config),
    }
    return pairs, report


def training_prompts(rows: Sequence[dict]) -> list[list[dict]]:
    """The distinct prompts of preference rows, in first-seen order."""
    seen: dict[str, list[dict]] = {}
    for row in rows:
        seen.setdefault(json.dumps(row["prompt"], sort_keys=True), list(row["prompt"]))
    return list(seen.values())


def onpolicy_path(config: OnPolicyConfig = OnPolicyConfig()) -> Path:
    """The cache file of the shipped reference's pairs: keyed on its weights, the prompts and the code."""
    import hashlib

    from ..runtime.fingerprint import code_fingerprint, file_fingerprint
    from ..world import cache_dir, data_file
    from ..world.reference import reference_fingerprint

    payload = [
        reference_fingerprint(),
        file_fingerprint(data_file("pairs_train")),
        code_fingerprint(),
        asdict(config),
    ]
    tag = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"onpolicy-{tag}.jsonl"


def sample_training_pairs(
    model: Any, tokenizer: Any, config: OnPolicyConfig = OnPolicyConfig(), *, progress: bool | None = None
) -> tuple[list[dict], dict[str, Any]]:
    """``build_onpolicy_pairs`` on the distinct prompts of ``data/pairs_train.jsonl``, one torch thread (the
    tiny model's matrices gain nothing from more)."""
    import torch

    from ..data import read_jsonl
    from ..world import data_file

    train_rows, _ = read_jsonl(data_file("pairs_train"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_onpolicy_pairs(model, tokenizer, training_prompts(train_rows), config, progress=progress)
    finally:
        torch.set_num_threads(threads)


def load_onpolicy_pairs(
    config: OnPolicyConfig = OnPolicyConfig(), *, progress: bool = True
) -> tuple[list[dict], dict[str, Any]]:
    """(pairs, report) on the prompts of ``data/pairs_train.jsonl``, from the cache or built and cached."""
    path = onpolicy_path(config)
    report_path = path.with_suffix(".report.json")
    if path.is_file() and report_path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return rows, json.loads(report_path.read_text())
    from ..world import load_reference_model

    model, tokenizer = load_reference_model(progress=progress)
    pairs, report = sample_training_pairs(model, tokenizer, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(p, separators=(",", ":")) + "\n" for p in pairs))
    write_text_atomic(report_path, json.dumps(report, indent=1))
    if progress:
        print(f"on-policy pairs: {report['pairs']} from {report['prompts']} prompts -> {path}")
    return pairs, report
