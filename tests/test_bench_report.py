"""The benchmark's bookkeeping, on made-up worker records: the budget split and the plan, ratios per round and
per batch, utilisation on executed FLOPs, the tables, the targets, and several runs compared.

No timing is measured or asserted here; the numbers come from ``make bench``.
"""

from __future__ import annotations

import pytest

from benchmarks.bench_step import MIN_ROUNDS, ROWS
from benchmarks.compare_runs import compare_rows, compare_targets, format_comparison, target_names
from benchmarks.run import (
    BUDGET_S,
    MULTI_THREAD_GROUPS,
    _check_same_work,
    _earlier_peaks,
    estimate_seconds,
    evaluate_targets,
    format_per_batch,
    format_table,
    group_deadline,
    parse_args,
    shape_rows,
    summarise_shape,
    target_holds,
    timing_groups,
    timing_plan,
)
from benchmarks.workloads import DEFAULT_SIZES, SHAPES

SIMPO_DPO = "property of the methods (not a target)"


def _record(rounds, executed=None, *, tokens=(10, 12), unshared=2e9, peak=(0.0, 0.0)):
    """A timing worker's record of one row: ``rounds`` = per round, the seconds of batch 0 and batch 1."""
    steps = [(r, b, seconds) for r, pair in enumerate(rounds) for b, seconds in enumerate(pair)]
    executed = executed or (unshared, unshared)
    return {
        "round": [r for r, _, _ in steps],
        "batch": [b for _, b, _ in steps],
        "step": [b for _, b, _ in steps],
        "step_seconds": [float(s) for _, _, s in steps],
        "cpu_seconds": [float(s) for _, _, s in steps],
        "pairs": [2] * len(steps),
        "tokens": [tokens[b] for _, b, _ in steps],
        "response_tokens": [4 + b for _, b, _ in steps],
        "peak_mem_mb": [peak[b] for _, b, _ in steps],
        "flops": [unshared] * len(steps),
        "flops_executed": [executed[b] for _, b, _ in steps],
        "layout": "packed (prefix-shared)",
        "optimizer": "x",
    }


def _worker(threads=1, **records):
    return {
        "rows": records,
        "threads": threads,
        "resident_before_step_mb": 1.0,
        "num_params": 1,
        "mem_method": "m",
    }


def _memory(**peaks):
    """One-row memory workers: each row's peak on batch 0 and batch 1."""
    return {row: _worker(**{row: _record([(9, 9)], peak=peak)}) for row, peak in peaks.items()}


def test_summary_ratios_per_round_and_per_batch():
    rows = ["kit_simpo", "kit_dpo", "trl_cpo_simpo"]
    memory = _memory(kit_simpo=(90, 100), kit_dpo=(200, 200), trl_cpo_simpo=(150, 150))
    timing = _worker(
        kit_simpo=_record([(1, 2), (1, 3)], executed=(1e9, 2e9)),
        trl_cpo_simpo=_record([(2, 4), (3, 3)], executed=(2e9, 5e9)),
        kit_dpo=_record([(2, 2), (2, 6)]),
    )
    summaries = summarise_shape("micro", rows, {"memory": memory, "groups": [timing]}, {1: 1.0})
    simpo = summaries[0]
    vs = simpo["vs_trl"]
    # each round's ratio over the same two batches: (2+4)/(1+2) = 2 and (3+3)/(1+3) = 1.5
    assert vs["speed_ratio"] == {"median": 1.75, "min": 1.5, "max": 2.0} and vs["rounds"] == 2
    assert vs["flop_ratio_executed"] == pytest.approx(7 / 3)  # TRL's executed FLOPs over the kit's
    first, second = vs["per_batch"]
    assert (
        first["speed_ratio"] == {"median": 2.5, "min": 2.0, "max": 3.0} and first["flop_ratio_executed"] == 2
    )
    assert second["speed_ratio"] == {"median": 1.5, "min": 1.0, "max": 2.0}
    assert second["flop_ratio_executed"] == 2.5 and second["kit_seconds"] == 2.5
    assert vs["peak_mem_ratio"] == pytest.approx(100 / 150)  # the largest peak over the batches, own process
    assert simpo["peak_mem_mb_per_batch"] == [90, 100]
    # SimPO / DPO round by round: 3/4 and 4/8
    assert simpo["vs_kit_dpo"]["time_ratio"] == {"median": 0.625, "min": 0.5, "max": 0.75}
    # pairs/s per round: 4 pairs in 3 s and in 4 s; pooled over the two groups that timed kit_simpo (one here)
    assert simpo["pairs_per_s"] == pytest.approx((4 / 3 + 1) / 2) and simpo["timed_rounds"] == 2
    assert simpo["timing_batches"] == [0, 1] and simpo["layout"].startswith("packed")
    targets = evaluate_targets(summaries, None)
    assert targets == {"micro/simpo_vs_dpo_time/1t": {"target": SIMPO_DPO, "value": 0.625, "holds": None}}
    table = format_table(summaries)
    assert table.count("\n") == 2 + len(rows) - 1 and "| 1.75 (1.75) | 2.33 | 0.67 |" in table
    per_batch = format_per_batch(summaries)
    assert per_batch.count("\n") == 2 + 2 - 1 and "| 2.50 (2.00-3.00) | 2.00 |" in per_batch


def test_utilisation_is_on_executed_flops():
    rows = ["kit_simpo", "trl_cpo_simpo"]
    memory = _memory(kit_simpo=(1, 1), trl_cpo_simpo=(1, 1))
    # the packed row executes 1.0 and 2.0 GFLOP of the unshared layout's 2 GFLOP per batch: 3 GFLOP a round
    timing = _worker(
        kit_simpo=_record([(1, 2), (1, 3)], executed=(1e9, 2e9)),
        trl_cpo_simpo=_record([(2, 4), (3, 3)], executed=(2.5e9, 2.5e9)),
    )
    peak = 1e-3  # TFLOP/s: 1 GFLOP/s, as fast as the kit's rounds run (3 GFLOP in 3 s, then in 4 s)
    kit, trl = summarise_shape("micro", rows, {"memory": memory, "groups": [timing]}, {1: peak})
    assert kit["achieved_tflops"] == pytest.approx((1.0 + 0.75) / 2 * 1e-3)
    assert kit["utilisation"] == pytest.approx(0.875) and kit["utilisation"] <= 1
    # the padded-equivalent figure divides FLOPs the packed layout never ran: above 100%
    assert kit["utilisation_unshared_equivalent"] == pytest.approx((4 / 3 + 1) / 2)
    assert kit["utilisation_unshared_equivalent"] > 1
    assert trl["utilisation"] == pytest.approx((5 / 6 + 5 / 6) / 2)
    assert kit["flops_executed_per_round"] == 3e9 and kit["flops_unshared_per_round"] == 4e9


def test_thread_counts_are_summarised_apart_and_memory_once():
    rows = ["kit_simpo", "trl_cpo_simpo"]
    memory = _memory(kit_simpo=(70, 70), trl_cpo_simpo=(100, 100))
    one = _worker(1, kit_simpo=_record([(1, 1), (1, 1)]), trl_cpo_simpo=_record([(2, 2), (2, 2)]))
    two = _worker(2, kit_simpo=_record([(1, 1), (1, 1)]), trl_cpo_simpo=_record([(1, 1), (1, 1)]))
    summaries = summarise_shape("uf8", rows, {"memory": memory, "groups": [one, two]}, {1: 1.0, 2: 1.8})
    assert [(s["row"], s["threads"]) for s in summaries] == [
        ("kit_simpo", 1),
        ("trl_cpo_simpo", 1),
        ("kit_simpo", 2),
        ("trl_cpo_simpo", 2),
    ]
    assert summaries[2]["matmul_peak_tflops"] == 1.8
    assert "peak_mem_ratio" in summaries[0]["vs_trl"] and "peak_mem_ratio" not in summaries[2]["vs_trl"]
    targets = evaluate_targets(summaries, None)
    assert targets["uf8/simpo_vs_trl_speed/1t"] == {"target": ">= 2.0", "value": 2.0, "holds": True}
    assert targets["uf8/simpo_vs_trl_speed/2t"]["holds"] is False  # 1.0
    assert targets["uf8/simpo_vs_trl_peak_mem"] == {"target": "<= 0.55", "value": 0.7, "holds": False}
    assert "uf8/simpo_vs_trl_peak_mem/2t" not in targets


def test_targets_by_shape_hold_or_miss_by_their_bounds():
    rows = ["kit_simpo", "trl_cpo_simpo"]

    def summaries(shape, kit_seconds, kit_peak):
        memory = _memory(kit_simpo=(kit_peak, kit_peak), trl_cpo_simpo=(100, 100))
        timing = _worker(kit_simpo=_record([kit_seconds] * 2), trl_cpo_simpo=_record([(2, 2)] * 2))
        return summarise_shape(shape, rows, {"memory": memory, "groups": [timing]}, {1: 1.0})

    # uf8: 4 / 1.8 = 2.22 >= 2.0 holds, memory 0.7 > 0.55 misses; uf2: 4 / 2.2 = 1.82 < 2.0 misses, 0.8 holds
    targets = evaluate_targets(summaries("uf8", (0.9, 0.9), 70) + summaries("uf2", (1.1, 1.1), 80), None)
    assert targets["uf8/simpo_vs_trl_speed/1t"] == {"target": ">= 2.0", "value": 2.222, "holds": True}
    assert targets["uf8/simpo_vs_trl_peak_mem"] == {"target": "<= 0.55", "value": 0.7, "holds": False}
    assert targets["uf2/simpo_vs_trl_speed/1t"]["holds"] is False
    assert targets["uf2/simpo_vs_trl_peak_mem"]["holds"] is True  # 0.8 <= 0.85
    assert "uf2/dpo_vs_trl_speed/1t" not in targets  # not measured: not reported
    # a name with or without its thread count is judged by the same bound
    assert target_holds("uf2/dpo_vs_trl_speed/2t", 1.5) and target_holds("uf2/dpo_vs_trl_speed", 1.5)
    assert target_holds("world/simpo_vs_dpo_time/1t", 0.7) is None


def test_older_outputs_still_summarise():
    """Records from before the fixed timing set (one step a round, no executed FLOPs) read as rounds of one
    step; utilisation on executed FLOPs is then unknown, not made up."""
    old = {
        "step": [1, 2],
        "step_seconds": [1.0, 3.0],
        "cpu_seconds": [1.0, 3.0],
        "pairs": [2, 2],
        "tokens": [10, 12],
        "response_tokens": [4, 5],
        "peak_mem_mb": [90.0, 100.0],
        "flops": [1e9, 1e9],
        "layout": "packed (prefix-shared)",
        "optimizer": "x",
    }
    trl = {**old, "step_seconds": [2.0, 3.0], "cpu_seconds": [2.0, 3.0], "peak_mem_mb": [150.0, 150.0]}
    memory = {"kit_simpo": _worker(kit_simpo=old), "trl_cpo_simpo": _worker(trl_cpo_simpo=trl)}
    timing = _worker(kit_simpo=old, trl_cpo_simpo=trl)
    rows = ["kit_simpo", "trl_cpo_simpo"]
    kit = summarise_shape("uf2", rows, {"memory": memory, "groups": [timing]}, {1: 1.0})[0]
    assert kit["vs_trl"]["speed_ratio"] == {"median": 1.5, "min": 1.0, "max": 2.0}  # 2/1 and 3/3
    assert kit["timed_rounds"] == 2 and kit["utilisation"] is None
    assert _earlier_peaks({"matmul_peaks": [0.1, 0.12], "machine": {"threads": 1}}) == {1: [0.1, 0.12]}
    assert _earlier_peaks({"matmul_peaks": {"1": [0.1], "2": [0.2]}}) == {1: [0.1], 2: [0.2]}


def test_rows_that_saw_different_tokens_are_refused():
    runs = [
        _worker(kit_simpo=_record([(1, 1)])),
        _worker(trl_cpo_simpo=_record([(1, 1)], tokens=(10, 11))),
    ]
    with pytest.raises(AssertionError, match="on batch 1 trl_cpo_simpo processed 11 tokens"):
        _check_same_work("micro", runs)


def test_group_deadline_shares_the_budget_by_round_cost():
    # 100 s left, 20 s of set-up; the 80 s beyond it in proportion 10 : 30
    assert group_deadline(0.0, 100.0, [(10.0, 10.0), (10.0, 30.0)]) == pytest.approx(10 + 20)
    assert group_deadline(30.0, 100.0, [(10.0, 30.0)]) == pytest.approx(100.0)  # the last takes what is left
    assert (
        group_deadline(120.0, 100.0, [(10.0, 30.0)]) == 130.0
    )  # overrun: set-up only (the minimum rounds run)


def test_the_default_plan_fits_25_minutes_with_margin():
    """Every group runs at least MIN_ROUNDS rounds however the budget falls, so the least a default run does
    must fit 25 minutes on the quiet 2-core machine of run.STEP_SECONDS, with a margin for estimate errors."""
    estimate = estimate_seconds(list(SHAPES), list(ROWS), [1, 2], DEFAULT_SIZES)
    assert MIN_ROUNDS >= 2
    assert estimate["total_min_s"] * 1.1 < 25 * 60 and BUDGET_S < 25 * 60 - 60
    assert estimate["total_min_s"] < BUDGET_S  # the budget adds rounds beyond the minimum


def test_timing_plan_by_thread_count():
    rows = list(ROWS)
    plan = timing_plan(["uf2", "uf8"], rows, [1, 2])
    at_two = [(shape, group) for shape, threads, group in plan if threads == 2]
    assert at_two == [
        (shape, list(group)) for shape in ("uf2", "uf8") for group in MULTI_THREAD_GROUPS[shape]
    ]
    assert (("uf2", 1, ["kit_dpo", "trl_dpo"])) in plan and ("uf2", 1, ["kit_simpo", "kit_dpo"]) not in plan
    # one thread count asked for: every group at it
    assert [g for _, t, g in timing_plan(["uf2"], rows, [2])] == timing_groups(shape_rows("uf2", rows), "uf2")


def test_timing_groups_keep_each_comparison_in_one_process():
    groups = timing_groups(["kit_simpo", "kit_dpo", "trl_cpo_simpo", "trl_dpo", "kit_dpo_precomputed_ref"])
    assert ["kit_simpo", "trl_cpo_simpo"] in groups and ["kit_simpo", "kit_dpo"] in groups
    assert ["kit_dpo", "trl_dpo"] in groups and ["kit_dpo_precomputed_ref"] in groups
    # a comparison whose other side was not asked for is not run again for one row alone
    assert timing_groups(["kit_simpo", "trl_cpo_simpo"]) == [["kit_simpo", "trl_cpo_simpo"]]
    assert shape_rows("uf8", ["kit_simpo", "kit_dpo", "trl_cpo_simpo"]) == ["kit_simpo", "trl_cpo_simpo"]
    # the SimPO / DPO time (not a target) is timed on world only
    everything = ["kit_simpo", "kit_dpo", "trl_cpo_simpo", "trl_dpo"]
    assert ["kit_simpo", "kit_dpo"] in timing_groups(everything, "world")
    assert timing_groups(everything, "smollm2") == [["kit_simpo", "trl_cpo_simpo"], ["kit_dpo", "trl_dpo"]]
    assert timing_groups(everything, "uf2") == [["kit_simpo", "trl_cpo_simpo"], ["kit_dpo", "trl_dpo"]]
    assert timing_groups(everything, "world", first_threads=False) == []  # no targets at 2 threads there


def test_options():
    opts = parse_args([])
    assert opts.threads == [1, 2] and opts.budget_s == BUDGET_S and opts.schedule["uf2"][2] >= MIN_ROUNDS
    assert parse_args(["--batches", "uf2=2"]).sizes["uf2"].num_batches == 2
    for bad in (["--rounds", "1"], ["--threads", "1", "1"], ["--batches", "uf2=0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def _report(speed, memory, wall, *, threads=1, old=False):
    row = {
        "shape": "uf2",
        "row": "kit_simpo",
        "threads": threads,
        "layout": "packed (prefix-shared)",
        "timed_rounds": 2,
        "pairs_per_s": 0.5,
        "peak_mem_mb": 100.0 * memory,
        "utilisation": 0.5,
        "vs_trl": {"speed_ratio": {"median": speed}, "peak_mem_ratio": memory, "flop_ratio_executed": 1.7},
    }
    speed_name = "uf2/simpo_vs_trl_speed" + ("" if old else f"/{threads}t")
    targets = {
        speed_name: {"target": ">= 2.0", "value": speed, "holds": speed >= 2.0},
        "uf2/simpo_vs_trl_peak_mem": {"target": "<= 0.85", "value": memory, "holds": memory <= 0.85},
    }
    return {"rows": [row], "targets": targets, "wall_seconds": wall, "machine": {"threads": threads}}


def test_runs_compared_by_their_median():
    # speed 1.9 (missed alone), 2.2, 2.1: median 2.1 holds; memory 0.8 (held alone), 0.9, 0.95: median 0.9 misses
    reports = [_report(1.9, 0.9, 800), _report(2.2, 0.8, 820), _report(2.1, 0.95, 810)]
    targets = compare_targets(reports)
    assert targets["uf2/simpo_vs_trl_speed/1t"]["values"] == [1.9, 2.2, 2.1]
    assert targets["uf2/simpo_vs_trl_speed/1t"]["median"] == 2.1
    assert targets["uf2/simpo_vs_trl_speed/1t"]["holds"]
    assert targets["uf2/simpo_vs_trl_peak_mem"]["median"] == 0.9
    assert targets["uf2/simpo_vs_trl_peak_mem"]["holds"] is False
    assert compare_rows(reports)[0]["peak_mem_mb"] == [90.0, 80.0, 95.0]
    del reports[1]["targets"]["uf2/simpo_vs_trl_peak_mem"]  # not measured in every run: not compared
    assert list(compare_targets(reports)) == ["uf2/simpo_vs_trl_speed/1t"]
    text = format_comparison(reports)
    assert "| 1.90 / 2.20 / 2.10 (2.10) | 1.70 |" in text and "800 / 820 / 810 s" in text


def test_an_older_run_compares_with_a_new_one():
    """Older outputs named speed targets without a thread count; they ran one (machine.threads)."""
    old, new = _report(1.9, 0.84, 830, old=True), _report(2.3, 0.84, 1300)
    assert "uf2/simpo_vs_trl_speed/1t" in target_names(old)
    assert compare_targets([old, new])["uf2/simpo_vs_trl_speed/1t"]["values"] == [1.9, 2.3]
    # rows are matched by thread count too: a 2-thread row has no 1-thread partner
    assert compare_rows([_report(2.0, 0.8, 1, threads=2), new]) == []
