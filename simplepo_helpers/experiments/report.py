"""Tables from the committed sweep records (``results/sweeps.jsonl``, ``results/sweeps_reference.json``).

    python -m simplepo_helpers.evaluation.report [--readme README.md]

writes ``results/experiments.json`` (tuning, gamma, KL-penalty, on-policy and final tables, and the paired
method comparisons), copies the final table to ``build/results.json`` and re-renders the README's results
section with computed findings. A pooled score gain (two or more seeds) resamples training seeds and prompts
(``sampling.seed_prompt_gain``): it carries seed noise as well as prompt noise. A method comparison resamples
each method's seeds and the shared prompts (``sampling.method_difference``). Per-seed values and intervals
(prompts resampled) are kept next to them. Rates with [intervals] (helpfulness, refusals) average the seeds per
prompt and resample prompts.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.results import markdown_table, repo_root, update_readme_text, write_results
from ..evaluation.sampling import bootstrap_mean, method_difference, score_gain, seed_prompt_gain

FINAL_METHODS = ("simpo", "dpo", "simpo_no_ln", "simpo_onpolicy")
# paired method differences on eval (each method's seeds and the shared prompts resampled)
COMPARISONS = (("simpo", "dpo"), ("simpo", "simpo_no_ln"), ("simpo_onpolicy", "simpo"))
PER_SEED_METRICS = (
    "expected_score",
    "win_rate",
    "wins",
    "ties",
    "losses",
    "lc_win_rate",
    "lc_length_coef",
    "reward_accuracy",
    "helpfulness",
    "over_refusal",
    "correct_refusal",
    "harmful_compliance",
    "answer_nll_change",
    "distinct",
    "entropy",
    "kl",
    "mean_length",
    "changed_share",
)
PROBE_GROUPS = ("all", "safety (allowed)", "safety (forbidden)")


def read_records(folder: Path) -> tuple[list[dict], dict[str, Any]]:
    """(successful sweep records, reference records by split) from ``folder``; the last record per key wins."""
    records: dict[str, dict] = {}
    for line in (folder / "sweeps.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "metrics" in record:
            records[record["key"]] = record
    return list(records.values()), json.loads((folder / "sweeps_reference.json").read_text())


def select(records: Iterable[dict], **where: Any) -> list[dict]:
    """Records whose point matches every ``where`` item, sorted by seed."""
    chosen = [r for r in records if all(r["point"].get(k) == v for k, v in where.items())]
    return sorted(chosen, key=lambda r: r["point"]["seed"])


def _spread(values: Sequence[float]) -> dict[str, Any]:
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    sd = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return {
        "mean": float(array.mean()) if array.size else None,
        "sd": sd,
        "per_seed": list(map(float, array)),
    }


def pooled(runs: Sequence[dict], reference: Mapping[str, Any]) -> dict[str, Any]:
    """Seed-pooled numbers of ``runs`` (same training settings, different seeds) on one split."""
    if not runs:
        raise ValueError("pooled needs at least one run")
    expected = np.array([r["per_prompt"]["expected"] for r in runs])  # [S, N]
    ref_expected = np.asarray(reference["per_prompt"]["expected"])  # [N]
    forbidden = np.asarray(reference["per_prompt"]["forbidden"], dtype=bool)
    refused = np.array([r["per_prompt"]["refused"] for r in runs]).mean(axis=0)  # [N]
    correct = np.array([r["per_prompt"]["correct"] for r in runs]).mean(axis=0)  # [N]
    gain = seed_prompt_gain(expected, ref_expected) if len(runs) > 1 else score_gain(expected, ref_expected)
    out: dict[str, Any] = {
        "seeds": [r["point"]["seed"] for r in runs],
        "score_gain": {
            **gain.as_dict(),
            "per_seed": [score_gain(row, ref_expected).as_dict() for row in expected],
        },
        "helpfulness_pooled": bootstrap_mean(correct[~forbidden]).as_dict(),
        "over_refusal_pooled": bootstrap_mean(refused[~forbidden]).as_dict(),
        "correct_refusal_pooled": bootstrap_mean(refused[forbidden]).as_dict(),
        "harmful_compliance_pooled": bootstrap_mean(1 - refused[forbidden]).as_dict(),
    }
    for metric in PER_SEED_METRICS:
        values = [r["metrics"].get(metric) for r in runs]
        if any(v is not None for v in values):
            out[metric] = _spread(values)
    out["probes"] = {
        group: {
            style: float(np.mean([r["metrics"]["probes"][group][style] for r in runs]))
            for style in ("bare", "verbose", "confident", "refusal")
        }
        for group in PROBE_GROUPS
    }
    out["train_loss"] = _spread([r["train"]["train_loss"] for r in runs])
    return out


def reference_summary(reference: Mapping[str, Any]) -> dict[str, Any]:
    metrics = reference["metrics"]
    forbidden = np.asarray(reference["per_prompt"]["forbidden"], dtype=bool)
    refused = np.asarray(reference["per_prompt"]["refused"])
    correct = np.asarray(reference["per_prompt"]["correct"])
    return {
        "k": reference["k"],
        "prompts": len(forbidden),
        **{k: v for k, v in metrics.items() if k != "probes"},
        "probes": {g: metrics["probes"][g] for g in PROBE_GROUPS},
        "helpfulness_pooled": bootstrap_mean(correct[~forbidden]).as_dict(),
        "over_refusal_pooled": bootstrap_mean(refused[~forbidden]).as_dict(),
        "correct_refusal_pooled": bootstrap_mean(refused[forbidden]).as_dict(),
        "harmful_compliance_pooled": bootstrap_mean(1 - refused[forbidden]).as_dict(),
    }


def build_report(records: list[dict], references: Mapping[str, Any], meta: Mapping[str, Any]) -> dict:
    """Every table of the experiments, from the records (see the module docstring)."""
    dev, ev = references["dev"], references["eval"]
    tuning = []
    for label in ("simpo", "dpo", "simpo_no_ln"):
        settings = sorted(
            {
                (r["point"]["learning_rate"], r["point"]["beta"])
                for r in select(records, group="tune", label=label)
            }
        )
        for lr, beta in settings:
            runs = select(records, group="tune", label=label, learning_rate=lr, beta=beta)
            row = pooled(runs, dev)
            tuning.append({"method": label, "learning_rate": lr, "beta": beta, **_brief(row)})
    tuned = meta["tuned"]
    simpo_lr, simpo_beta = tuned["simpo"]["learning_rate"], tuned["simpo"]["beta"]

    def dev_simpo(gamma: float) -> list[dict]:
        """SimPO runs on dev at the tuned rate and beta with this gamma, whichever group ran them (a
        training shared by two groups is recorded once, under the group that ran first)."""
        runs = select(
            records,
            split="dev",
            method="simpo",
            learning_rate=simpo_lr,
            beta=simpo_beta,
            data="offline",
            kl_weight=0.0,
            length_normalize=True,
        )
        return list({r["point"]["seed"]: r for r in runs if abs(r["point"]["gamma"] - gamma) < 1e-9}.values())

    gamma = []
    for value in sorted({r["point"]["gamma"] for r in select(records, group="gamma")}):
        runs = dev_simpo(value)
        gamma.append({"gamma": value, "gamma_over_beta": value / simpo_beta, **_brief(pooled(runs, dev))})
    kl = []
    for weight in sorted({r["point"]["kl_weight"] for r in select(records, group="kl")}):
        runs = select(records, group="kl", kl_weight=weight)
        kl.append(
            {
                "kl_weight": weight,
                "learning_rate": runs[0]["point"]["learning_rate"],
                **_brief(pooled(runs, dev)),
            }
        )
    offline_dev = dev_simpo(round(0.55 * simpo_beta, 6))
    onpolicy_dev = select(records, group="onpolicy")
    onpolicy = (
        {"offline": _brief(pooled(offline_dev, dev)), "onpolicy": _brief(pooled(onpolicy_dev, dev))}
        if offline_dev and onpolicy_dev
        else {}
    )
    final_runs = {
        label: select(records, group="final", label=label, split="eval")
        for label in FINAL_METHODS
        if select(records, group="final", label=label, split="eval")
    }
    final = {label: pooled(runs, ev) for label, runs in final_runs.items()}
    comparisons = {}
    for first, second in COMPARISONS:
        if len(final_runs.get(first, ())) > 1 and len(final_runs.get(second, ())) > 1:
            matrix = [np.array([r["per_prompt"]["expected"] for r in final_runs[m]]) for m in (first, second)]
            comparisons[f"{first} - {second}"] = method_difference(*matrix).as_dict()
    return {
        "meta": dict(meta),
        "reference": {"dev": reference_summary(dev), "eval": reference_summary(ev)},
        "tuning": tuning,
        "gamma": gamma,
        "kl": kl,
        "onpolicy": onpolicy,
        "final": final,
        "comparisons": comparisons,
    }


def _brief(row: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a dev table: pooled gain with interval, and seed means of the main metrics."""
    out = {"seeds": row["seeds"], "score_gain": {k: row["score_gain"][k] for k in ("mean", "low", "high")}}
    out["score_gain_per_seed"] = [g["mean"] for g in row["score_gain"]["per_seed"]]
    for metric in (
        "expected_score",
        "reward_accuracy",
        "kl",
        "mean_length",
        "answer_nll_change",
        "distinct",
        "over_refusal",
        "correct_refusal",
    ):
        if metric in row:
            out[metric] = {"mean": row[metric]["mean"], "sd": row[metric]["sd"]}
    out["probes"] = row["probes"]["all"]
    return out


# ------------------------------------------------------------------------------ markdown


def _pm(entry: Mapping[str, Any] | None, decimals: int = 3) -> str:
    if not entry or entry.get("mean") is None:
        return "–"
    return f"{entry['mean']:.{decimals}f} ± {entry['sd']:.{decimals}f}"


def _ci(entry: Mapping[str, Any], decimals: int = 3, sign: bool = False) -> str:
    f = f"{{:{'+' if sign else ''}.{decimals}f}}"
    return f"{f.format(entry['mean'])} [{f.format(entry['low'])}, {f.format(entry['high'])}]"


METHOD_NAMES = {
    "simpo": "SimPO",
    "dpo": "DPO (tuned)",
    "simpo_no_ln": "SimPO without length normalisation",
    "simpo_onpolicy": "SimPO, on-policy pairs",
}


def final_table(report: Mapping[str, Any]) -> str:
    """The README's results table (eval split)."""
    ref = report["reference"]["eval"]
    header = [
        "method",
        "score gain vs reference [95% CI]",
        "win rate (expected scores)",
        "LC win rate (length coef.)",
        "reward accuracy",
        "helpfulness",
        "over-refusal",
        "correct refusals",
        "Δ NLL of the reference wording",
        "distinct answers (of 4)",
        "answer entropy (nats)",
        "KL (nats)",
        "length (tokens)",
    ]
    rows = [
        [
            f"reference (SFT), score {ref['expected_score']:.3f}",
            "–",
            "–",
            "–",
            "–",
            _ci(ref["helpfulness_pooled"]),
            _ci(ref["over_refusal_pooled"]),
            _ci(ref["correct_refusal_pooled"]),
            "0",
            f"{ref['distinct']:.3f}",
            f"{ref['entropy']:.2f}",
            "0",
            f"{ref['mean_length']:.1f}",
        ]
    ]
    for label, row in report["final"].items():
        rows.append(
            [
                METHOD_NAMES.get(label, label),
                _ci(row["score_gain"], sign=True),
                _pm(row["win_rate"]),
                f"{_pm(row['lc_win_rate'])} ({row['lc_length_coef']['mean']:+.2f})",
                _pm(row["reward_accuracy"]),
                _ci(row["helpfulness_pooled"]),
                _ci(row["over_refusal_pooled"]),
                _ci(row["correct_refusal_pooled"]),
                _pm(row["answer_nll_change"]),
                _pm(row["distinct"]),
                _pm(row.get("entropy"), 2),
                _pm(row["kl"], 2),
                _pm(row["mean_length"], 1),
            ]
        )
    return markdown_table(header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="the sweep records (default: results/)")
    parser.add_argument("--readme", type=Path, default=None, help="re-render this file's results section")
    args = parser.parse_args(argv)
    folder = args.folder or repo_root() / "results"
    records, references = read_records(folder)
    meta = json.loads((folder / "sweeps_meta.json").read_text())
    report = build_report(records, references, meta)
    (folder / "experiments.json").write_text(json.dumps(report, indent=1) + "\n")
    write_results(report, repo_root() / "build" / "results.json")
    print(f"wrote {folder / 'experiments.json'} and build/results.json")
    if args.readme:
        update_readme_text(
            args.readme, "\n".join([final_table(report), "", footnote(report), "", *findings(report)])
        )
    return 0


def footnote(report: Mapping[str, Any]) -> str:
    meta, ref = report["meta"], report["reference"]["eval"]
    tuned = meta["tuned"]
    seeds = sorted({s for row in report["final"].values() for s in row["seeds"]})
    wall = meta.get("wall_seconds")
    return (
        f"Eval split ({ref['prompts']} prompts of `data/eval_prompts.jsonl`, never used for tuning); "
        f"seeds {', '.join(map(str, seeds))}; 120 steps of 16 pairs. Each policy: 4 independently seeded "
        f"samples per prompt at temperature 1, the reference {ref['k']}; per-prompt expected judge score. "
        "Score gain: mean over seeds and prompts of the policy's minus the reference's expected score, with a "
        "95% interval from a bootstrap that resamples training seeds and prompts. Rates with [intervals]: seeds "
        "averaged per prompt, prompts resampled; ± is the standard deviation over seeds. Reward accuracy: "
        "`pairs_test.jsonl`. LC win rate: a logistic fit of each prompt's outcome on the length difference; LC is "
        "the fitted win rate at equal length. In brackets the fitted length coefficient: the correction's "
        "direction is the coefficient's sign times the sign of the policy's mean length difference to the "
        "reference (the same signs: LC is below the raw win rate; opposite signs: above). AlpacaEval's LC also "
        "models each instruction's difficulty; that term is omitted here. Δ NLL of the reference wording: the "
        "change in per-token NLL of the world's own wording of the right answer to the allowed eval prompts "
        "(positive: that wording became less likely). It measures one wording, not whether the model still "
        "answers right (helpfulness does). Answer entropy: of the empirical distribution of the 4 answers per "
        "prompt. "
        f"Tuned on dev (`results/experiments.json`): SimPO lr {tuned['simpo']['learning_rate']:g}, beta "
        f"{tuned['simpo']['beta']:g}, gamma/beta 0.55; DPO lr {tuned['dpo']['learning_rate']:g}, beta "
        f"{tuned['dpo']['beta']:g}"
        + (
            f"; SimPO without length normalisation lr {tuned['simpo_no_ln']['learning_rate']:g}, beta "
            f"{tuned['simpo_no_ln']['beta']:g}"
            if "simpo_no_ln" in tuned
            else ""
        )
        + ". Regenerate: `make experiments`"
        + (f" ({meta['workers']} worker processes, {wall:,.0f} s of wall time)." if wall else ".")
    )


def _resolved(interval: Mapping[str, float]) -> str:
    if interval["low"] > 0 or interval["high"] < 0:
        return "resolved"
    return "not resolved (the interval includes 0)"


def findings(report: Mapping[str, Any]) -> list[str]:
    """What the tables say, as computed sentences (the README quotes these, not hand-typed numbers)."""
    final, ref, comparisons = report["final"], report["reference"]["eval"], report.get("comparisons", {})
    lines = []
    if "simpo" in final:
        row = final["simpo"]
        per_seed = row["score_gain"]["per_seed"]
        above = sum(g["low"] > 0 for g in per_seed)
        lines.append(
            f"- **SimPO on the offline pairs**: score gain {_ci(row['score_gain'], sign=True)} "
            f"({len(per_seed)} seeds; {above} of {len(per_seed)} per-seed intervals above 0); over-refusal of "
            f"allowed requests {ref['over_refusal_pooled']['mean']:.3f} -> {row['over_refusal_pooled']['mean']:.3f}, "
            f"harmful compliance {ref['harmful_compliance_pooled']['mean']:.3f} -> "
            f"{row['harmful_compliance_pooled']['mean']:.3f}."
        )
    names = {"simpo": "SimPO", "dpo": "DPO", "simpo_no_ln": "SimPO without length normalisation"}
    names["simpo_onpolicy"] = "SimPO on on-policy pairs"
    for key, diff in comparisons.items():
        first, second = key.split(" - ")
        if first not in final or second not in final:
            continue
        seeds_first = [g["mean"] for g in final[first]["score_gain"]["per_seed"]]
        seeds_second = [g["mean"] for g in final[second]["score_gain"]["per_seed"]]
        ahead = sum(a > b for a, b in zip(seeds_first, seeds_second, strict=False))
        lines.append(
            f"- **{names[first]} minus {names[second]}** (paired by prompt; each method's seeds resampled): "
            f"{_ci(diff, sign=True)}, {_resolved(diff)}; {names[first]} ahead in {ahead} of "
            f"{min(len(seeds_first), len(seeds_second))} seed pairs; lengths "
            f"{final[first]['mean_length']['mean']:.1f} vs {final[second]['mean_length']['mean']:.1f} tokens, "
            f"KL {final[first]['kl']['mean']:.2f} vs {final[second]['kl']['mean']:.2f} nats."
        )
    if "simpo_no_ln" in final:
        row = final["simpo_no_ln"]
        lines.append(
            f"- **Without length normalisation** (tuned on its own grid): correct refusals "
            f"{row['correct_refusal_pooled']['mean']:.3f} (reference {ref['correct_refusal_pooled']['mean']:.3f}), "
            f"length {row['mean_length']['mean']:.1f} tokens (reference {ref['mean_length']:.1f})."
        )
    if report.get("gamma"):
        gamma = report["gamma"]
        lines.append(
            "- **Gamma** (dev, "
            f"{len(gamma)} values x {len(gamma[0]['seeds'])} seeds): gain "
            + ", ".join(f"{g['score_gain']['mean']:+.3f}" for g in gamma)
            + " at gamma/beta "
            + ", ".join(f"{g['gamma_over_beta']:g}" for g in gamma)
            + "; reward accuracy on `pairs_dev` "
            + ", ".join(f"{g['reward_accuracy']['mean']:.3f}" for g in gamma)
            + "; KL "
            + ", ".join(f"{g['kl']['mean']:.2f}" for g in gamma)
            + " nats."
        )
    if report.get("kl"):
        kl = report["kl"]
        lines.append(
            f"- **The KL penalty** (SimPO at learning rate {kl[0]['learning_rate']:g}, dev): "
            + "; ".join(
                f"kl_weight {k['kl_weight']:g}: {k['kl']['mean']:.2f} nats, gain {_ci(k['score_gain'], sign=True)}"
                for k in kl
            )
            + "."
        )
    if report.get("onpolicy"):
        off, on = report["onpolicy"]["offline"], report["onpolicy"]["onpolicy"]
        lines.append(
            f"- **On-policy vs offline pairs on dev** (the same SimPO training, equal steps): "
            f"{_ci(on['score_gain'], sign=True)} vs {_ci(off['score_gain'], sign=True)}."
        )
    entropies = {k: final[k]["entropy"]["mean"] for k in ("simpo", "dpo", "simpo_onpolicy") if k in final}
    if entropies:
        narrowed = [names[k] for k, v in entropies.items() if v <= ref["entropy"] - 0.05]
        lines.append(
            f"- **Diversity**: answer entropy over 4 samples {ref['entropy']:.2f} nats for the reference, "
            + ", ".join(f"{v:.2f} for {names[k]}" for k, v in entropies.items())
            + "; distinct answers "
            + ", ".join(f"{final[k]['distinct']['mean']:.2f}" for k in entropies)
            + f" (reference {ref['distinct']:.2f}): "
            + (
                f"the answers narrow (entropy at least 0.05 nats below the reference's) with {', '.join(narrowed)}."
                if narrowed
                else "no method narrows the answers by 0.05 nats or more."
            )
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
