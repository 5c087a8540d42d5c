"""The spread record's summaries and the README block (``python -m simplepo_helpers.experiments.spread
report [--readme README.md]``): the gains against the best-of-4 headroom, the spread over seeds and reference
builds, the dev search table, the computed findings, LoRA against full fine-tuning, and the markdown of the
search, the spread, the baselines, the loss family and the over-optimisation curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .family import family_losses, family_table, kl_reruns_reproduce, label_noise_summary
from .overopt import OVEROPT_EVERY, OVEROPT_STEPS, overopt_summary
from .records import SHIPPED, _final_expected, _round_records, baselines


def headroom_share(gain: float, baseline_record: dict) -> float:
    """``gain`` as a share of the best-of-4 headroom: (best-of-4 - reference) on the same prompts."""
    headroom = np.mean(baseline_record["best_of_4"]) - np.mean(baseline_record["expected"])
    return float(gain / headroom)


def run_gains(records: Sequence[dict], *, kind: str, method: str, split: str, round_index: int | None = None):
    """Per run at its last round (or ``round_index``): [(record, per-seed score_gain Interval)]."""
    from ..evaluation.sampling import score_gain

    base = baselines(records)
    chosen = _round_records(records, kind, method, split, round_index)
    return [(r, score_gain(r["expected"], base[(r["ref_seed"], split)]["expected"])) for r in chosen]


def spread_summary(
    records: Sequence[dict], method: str, split: str, round_index: int | None = None
) -> dict[str, Any]:
    """The spread of ``method``'s default runs on ``split`` after their last round (or ``round_index``): per run
    the gain and its per-seed interval; the two-way (seeds x prompts) interval per reference build; the worst
    run; the share of intervals above 0."""
    from ..evaluation.sampling import seed_prompt_gain

    runs = run_gains(records, kind="spread", method=method, split=split, round_index=round_index)
    if not runs:
        raise ValueError(f"no spread records of {method} on {split}")
    base = baselines(records)
    by_reference: dict[int, list] = {}
    for record, gain in runs:
        by_reference.setdefault(record["ref_seed"], []).append((record, gain))
    pooled = {}
    for ref_seed, group in sorted(by_reference.items()):
        expected = np.array([r["expected"] for r, _ in group])  # [S, N]
        reference = np.array(base[(ref_seed, split)]["expected"])
        pooled[ref_seed] = {
            "seeds": len(group),
            "gain": seed_prompt_gain(expected, reference).as_dict() if len(group) > 1 else None,
            "headroom_share": headroom_share(
                float(expected.mean() - reference.mean()), base[(ref_seed, split)]
            ),
            "reference_score": float(reference.mean()),
            "best_of_4": float(np.mean(base[(ref_seed, split)]["best_of_4"])),
            "best_of_8": float(np.mean(base[(ref_seed, split)]["best_of_8"])),
        }
    gains = [gain for _, gain in runs]
    return {
        "method": method,
        "split": split,
        "runs": [
            {"seed": r["seed"], "ref_seed": r["ref_seed"], "gain": g.as_dict(), "probes": r.get("probes")}
            for r, g in runs
        ],
        "by_reference": pooled,
        "mean_gain": float(np.mean([g.mean for g in gains])),
        "min_gain": float(min(g.mean for g in gains)),
        "min_low": float(min(g.low for g in gains)),
        "share_excluding_zero": float(np.mean([g.low > 0 for g in gains])),
    }


def search_table(records: Sequence[dict]) -> list[dict]:
    """The dev search: per setting and round, the mean dev score gain over the seeds and its headroom share."""
    base = baselines(records)
    cells: dict[tuple, list[float]] = {}
    for r in records:
        if r.get("kind") != "search" or r["split"] != "dev":  # the family's search runs also record eval
            continue
        recipe = r["recipe"]
        key = (r["method"], recipe["learning_rate"], recipe["steps_per_round"], recipe["loss"]["sft_weight"])
        reference = np.mean(base[(r["ref_seed"], r["split"])]["expected"])
        cells.setdefault(key + (r["round"],), []).append(float(np.mean(r["expected"]) - reference))
    rows = []
    for key in sorted({k[:4] for k in cells}):
        gains = {k[4]: float(np.mean(v)) for k, v in cells.items() if k[:4] == key}
        best = max(gains, key=gains.get)
        rows.append(
            {
                "method": key[0],
                "learning_rate": key[1],
                "steps_per_round": key[2],
                "sft_weight": key[3],
                "gain_by_round": [round(gains[r], 4) for r in sorted(gains)],
                "best_round": best,
                "best_share": headroom_share(gains[best], base[(SHIPPED, "dev")]),
                "seeds": len(next(v for k, v in cells.items() if k[:4] == key)),
            }
        )
    return rows


def _interval(d: dict | None) -> str:
    return "–" if d is None else f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def findings(records: Sequence[dict]) -> list[str]:
    """The spread record's claims, as computed sentences (the README quotes these, not hand-typed numbers)."""
    from ..evaluation.sampling import method_difference

    def resolved(interval) -> str:
        return (
            "resolved" if interval.low > 0 or interval.high < 0 else "not resolved (the interval includes 0)"
        )

    lines = []
    ev, ho = spread_summary(records, "simpo", "eval"), spread_summary(records, "simpo", "heldout")
    shipped = ev["by_reference"][SHIPPED]
    worst = min(ev["runs"], key=lambda r: r["gain"]["mean"])
    worst_build = "shipped reference" if worst["ref_seed"] == SHIPPED else f"rebuild {worst['ref_seed']}"
    rebuilt = ", ".join(
        f"{v['reference_score']:.3f} -> {np.mean([r['gain']['mean'] for r in ev['runs'] if r['ref_seed'] == k]):+.3f}"
        for k, v in ev["by_reference"].items()
        if k != SHIPPED
    )
    target = ev["mean_gain"] >= 0.20 and ev["share_excluding_zero"] == 1.0
    lines.append(
        (
            "- **The default run shows its effect on every recorded seed and reference build.** "
            if ev["share_excluding_zero"] == 1.0
            else "- **The default run does not show its effect on every run.** "
        )
        + f"Eval score gain "
        f"{_interval(shipped['gain'])} over {shipped['seeds']} seeds from the shipped reference (seeds and "
        f"prompts resampled), {shipped['headroom_share']:.0%} of the best-of-4 headroom; "
        f"{ev['share_excluding_zero']:.0%} of the {len(ev['runs'])} runs have a per-seed interval above 0; the "
        f"worst run gains {worst['gain']['mean']:+.3f} (seed {worst['seed']}, "
        f"{worst_build}); from the "
        f"rebuilt references (reference score -> mean gain): {rebuilt}. The kit's target for its default run, a "
        f"mean gain of at least +0.20 with every per-seed interval above 0, is "
        + (
            "met."
            if target
            else f"{'not met: the mean over all runs is ' + format(ev['mean_gain'], '+.3f')}."
        )
    )
    held = ho["by_reference"][SHIPPED]["gain"]
    lines.append(
        f"- **Tasks never seen**: the gain on the held-out tasks is {_interval(held)} (worst run "
        f"{ho['min_gain']:+.3f}), "
        + (
            "less than on new wordings of seen tasks."
            if held["mean"] < shipped["gain"]["mean"]
            else "as large as on eval."
        )
        + " A fact the model never read cannot be recalled there; what can carry over is behaviour (notebook 05's "
        "probes and family tables)."
    )
    default = _final_expected(records, "simpo", "eval")
    for method, name in (
        ("sft", "SFT on the chosen answers of the same rounds (the baseline)"),
        ("simpo_offline", "SimPO on the offline pairs"),
        ("dpo", "DPO on the same rounds"),
        ("dpo_plain", "DPO on the same rounds without the SFT term"),
        ("dpo_offline", "DPO on the offline pairs"),
    ):
        other = _final_expected(records, method, "eval")
        if len(other) < 2:
            continue
        summary = spread_summary(records, method, "eval")
        diff = method_difference(default, other)
        lines.append(
            f"- **{name}**: eval gain {_interval(summary['by_reference'][SHIPPED]['gain'])}, "
            f"{summary['share_excluding_zero']:.0%} of its {len(summary['runs'])} per-seed intervals above 0; "
            f"default SimPO minus it: {diff} (each method's seeds and the prompts resampled): {resolved(diff)}."
        )
    lora, full = (
        _final_expected(records, "simpo_offline_lora", "eval"),
        _final_expected(records, "simpo_offline", "eval"),
    )
    if len(lora) >= 2 and len(full) >= 2:
        per_seed = lora_minus_full(records)
        diff = method_difference(lora, full)
        lines.append(
            f"- **LoRA against full fine-tuning** (offline SimPO, notebook 06's adapters): LoRA minus full "
            f"{diff}, {resolved(diff)}; per seed (the same training seed, prompts resampled) "
            f"{sum(g.excludes(0.0) for g in per_seed)} of {len(per_seed)} intervals exclude 0."
        )
    return lines


def lora_minus_full(records: Sequence[dict], split: str = "eval") -> list:
    """Per training seed recorded for both: LoRA's minus full fine-tuning's expected score on the same prompts
    (offline SimPO), an Interval over prompts (what notebook 06 computes for its one seed)."""
    from ..evaluation.sampling import score_gain

    def by_seed(method: str) -> dict[int, list[float]]:
        runs = _round_records(records, "spread", method, split, None)
        return {r["seed"]: r["expected"] for r in runs if r["ref_seed"] == SHIPPED}

    lora, full = by_seed("simpo_offline_lora"), by_seed("simpo_offline")
    return [score_gain(lora[seed], full[seed]) for seed in sorted(set(lora) & set(full))]


def report_markdown(records: Sequence[dict]) -> str:
    """The README block: the dev search, the spread on eval and held-out tasks, and the baselines."""
    lines = [
        "**Search on dev** (mean dev score gain over the seeds after each round, 8 samples per "
        "training prompt per round, best vs worst; SimPO, DPO and SFT 2 seeds per setting, the loss family 1):",
        "",
        "| method | lr | steps/round | SFT term | seeds | gain after rounds 1, 2, 3, 4 | best: share of best-of-4 headroom |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in search_table(records):
        lines.append(
            f"| {row['method']} | {row['learning_rate']:g} | {row['steps_per_round']} | {row['sft_weight']:g} | "
            f"{row['seeds']} | "
            + ", ".join(f"{g:+.3f}" for g in row["gain_by_round"])
            + f" | round {row['best_round']}: {row['best_share']:.0%} |"
        )
    lines += [
        "",
        "**Spread record** (eval: new wordings of seen tasks; held-out: tasks never seen). Gains are "
        "paired against each reference build's own 8 samples per prompt; [CI] resamples training seeds "
        "and prompts (shipped reference); min is the worst single run over every seed and reference "
        "build; share: of the best-of-4 headroom.",
        "",
        "| method | runs (reference builds) | eval gain [CI] | eval min | per-seed CI above 0 | share | held-out gain [CI] | held-out min |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = {
        "simpo": "SimPO, on-policy rounds (default)",
        "dpo": "DPO, on-policy rounds",
        "dpo_plain": "DPO, on-policy rounds, no SFT term (lr 5e-4)",
        "sft": "SFT on the chosen answers, on-policy rounds (baseline)",
        "simpo_offline": "SimPO, offline pairs",
        "dpo_offline": "DPO, offline pairs",
        "simpo_offline_lora": "SimPO, offline pairs, LoRA (notebook 06)",
    }
    for method, name in names.items():
        try:
            ev, ho = spread_summary(records, method, "eval"), spread_summary(records, method, "heldout")
        except ValueError:
            continue
        refs = ", ".join(
            f"{'shipped' if k == SHIPPED else f'rebuild {k}'} x {v['seeds']}"
            for k, v in ev["by_reference"].items()
        )
        shipped = ev["by_reference"][SHIPPED]
        lines.append(
            f"| {name} | {refs} | {_interval(shipped['gain'])} | {ev['min_gain']:+.3f} | "
            f"{ev['share_excluding_zero']:.0%} | {shipped['headroom_share']:.0%} | "
            f"{_interval(ho['by_reference'][SHIPPED]['gain'])} | {ho['min_gain']:+.3f} |"
        )
    lines += [
        "",
        "**Baselines** (expected judge score; best-of-n: the judge keeps the best of n reference samples):",
        "",
        "| reference build | split | reference | best-of-4 | best-of-8 |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for (ref_seed, split), b in sorted(baselines(records).items()):
        lines.append(
            f"| {'shipped' if ref_seed == SHIPPED else f'rebuild, seed {ref_seed}'} | {split} | "
            f"{np.mean(b['expected']):.3f} | {np.mean(b['best_of_4']):.3f} | {np.mean(b['best_of_8']):.3f} |"
        )
    try:
        lines += ["", "What the record says (computed by `spread.findings`):", "", *findings(records)]
    except ValueError:  # the spread is not recorded yet (a search-only record)
        pass
    lines += family_markdown(records)
    return "\n".join(lines) + "\n"


def _cell(d: dict | None) -> str:
    return "–" if d is None else _interval(d)


def family_markdown(records: Sequence[dict]) -> list[str]:
    """The loss family's rows (notebook 08) and the over-optimisation curve, from the records."""
    lines: list[str] = []
    rows = family_table(records)
    if any(r["method"] in family_losses() for r in rows):
        lines += [
            "",
            "**The loss family** (notebook 08; on-policy rounds from the shipped reference, each member's "
            "learning rate, steps per round and rounds searched on dev on the grid above with ONE seed, its "
            "own hyper-parameter fixed beforehand, `spread.family_losses`; eval, last round). [CI] resamples "
            "training seeds and prompts; the differences resample each method's seeds and pair the prompts; "
            "KL: log pi(y|x) - log pi_ref(y|x) summed over response tokens, mean over the policy's own samples "
            "(SimPO's and DPO's from reruns of their recorded seeds, `spread.kl_jobs`; – : not measured).",
            "",
            "| method | seeds | lr, steps/round, rounds | eval gain [CI] | minus SimPO [CI] | minus DPO [CI] | length (tokens) | KL (nats) |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            kl = "–" if r["kl"] is None else f"{r['kl']:.2f}"
            lines.append(
                f"| {r['name']} | {r['seeds']} | {r['learning_rate']:g}, {r['steps_per_round']}, {r['rounds']} | "
                f"{_interval(r['gain'])} | {_cell(r['minus_simpo'])} | {_cell(r['minus_dpo'])} | "
                f"{r['mean_length']:.1f} | {kl} |"
            )
        noise = {split: label_noise_summary(records, split) for split in ("eval", "heldout")}
        if noise["eval"] is not None and noise["heldout"] is not None:
            lines += [
                "",
                f"cDPO where labels are noisy (`spread.label_noise_jobs`: the offline DPO recipe with label smoothing "
                f"0.1 on the offline annotator's pairs, {noise['eval']['seeds']['cdpo_offline']} seeds): cDPO minus "
                f"offline DPO {_interval(noise['eval']['cdpo_minus_dpo'])} on eval, "
                f"{_interval(noise['heldout']['cdpo_minus_dpo'])} on the held-out tasks.",
            ]
        rerun = kl_reruns_reproduce(records)
        if rerun["compared"]:
            lines += [
                "",
                f"The KL reruns reproduce the recorded scores of the same seeds: over {rerun['compared']} "
                "evaluations the largest per-prompt difference in expected score is "
                f"{rerun['max_abs_difference']:.4f}.",
            ]
    curves = overopt_summary(records)
    if curves:
        lines += [
            "",
            "**Over-optimisation** (notebook 08; offline pairs, one cosine schedule of "
            f"{OVEROPT_STEPS} steps evaluated on dev every {OVEROPT_EVERY}; mean over the seeds; accuracy: "
            "the implicit reward's on the held-out offline pairs, a tie counts half):",
            "",
            "| method | seeds | step | dev gain | held-out pair accuracy | training accuracy | KL (nats) | length |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for method, c in curves.items():
            for i, step in enumerate(c["steps"]):
                mark = " (best)" if step == c["best_step"] else ""
                lines.append(
                    f"| {method} | {len(c['seeds'])} | {step}{mark} | {c['gain'][i]:+.3f} | "
                    f"{c['pairs_dev_reward_accuracy'][i]:.3f} | {c['train_reward_accuracy'][i]:.3f} | "
                    f"{c['kl'][i]:.2f} | {c['mean_length'][i]:.1f} |"
                )
        for method, c in curves.items():
            drop = c["last_minus_best"]
            lines.append(
                f"\n- {method}: the dev gain peaks at step {c['best_step']}; "
                + (
                    "it is highest at the last step recorded (no over-optimisation within the run)."
                    if drop is None and c["best_step"] == c["steps"][-1]
                    else "the last step minus the peak: "
                    + _interval(drop)
                    + (
                        " (seeds and prompts resampled)."
                        if len(c["seeds"]) > 1
                        else " (one seed: prompts resampled)."
                    )
                )
            )
    return lines
