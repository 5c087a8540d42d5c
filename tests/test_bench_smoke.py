"""Smoke tests of the benchmark: every row trains one step on a micro model and counts its tokens right.

No timing is asserted anywhere; the numbers come from ``make bench``.
"""

from __future__ import annotations

import random
import statistics

import pytest
import torch
from transformers import LlamaConfig

from benchmarks.bench_logps import naive_sequence_logps
from benchmarks.bench_step import ROWS, Settings, check_counts, prepare_row, run_rows
from benchmarks.measure import PeakMemory, train_step_flops
from benchmarks.run import (
    _check_same_work,
    evaluate_targets,
    format_table,
    shape_rows,
    summarise_shape,
    timing_groups,
)
from benchmarks.workloads import (
    DEFAULT_SIZES,
    WARMUP_TOKENS,
    DataSize,
    draw_length,
    expected_counts,
    synthetic_workload,
    world_workload,
)
from simplepo_helpers.logps import sequence_logps

MICRO_CONFIG = dict(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    tie_word_embeddings=True,
    max_position_embeddings=64,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
SIMPO_DPO = "property of the methods (not a target)"
MICRO_SIZE = DataSize(pairs_per_step=2, num_batches=2, prompt_tokens=(3, 5), response_tokens=(2, 6))


@pytest.fixture(scope="module")
def micro():
    return synthetic_workload("micro", LlamaConfig(**MICRO_CONFIG), MICRO_SIZE, seed=0)


def test_expected_counts_by_hand():
    rows = [
        {"prompt_ids": [1, 5, 6], "chosen_ids": [7, 2], "rejected_ids": [8, 9, 10, 2]},
        {"prompt_ids": [1, 4], "chosen_ids": [2], "rejected_ids": [3, 2]},
    ]
    # (3+2) + (3+4) + (2+1) + (2+2) tokens in the four sequences; responses 2+4+1+2
    assert expected_counts(rows) == {"tokens": 19, "response_tokens": 9}


def test_synthetic_rows_follow_the_size(micro):
    assert len(micro.batches) == 2 and all(len(batch) == 2 for batch in micro.batches)
    for row in (row for batch in micro.batches for row in batch):
        assert row["prompt_ids"][0] == micro.tokenizer.bos_token_id and 3 <= len(row["prompt_ids"]) <= 5
        for side in ("chosen_ids", "rejected_ids"):
            assert row[side][-1] == micro.tokenizer.eos_token_id and 2 <= len(row[side]) <= 6
            assert all(3 <= token < MICRO_CONFIG["vocab_size"] for token in row[side][:-1])
    # the synthetic tokenizer's words are the ids themselves
    text = micro.tokenizer.decode(micro.batches[0][0]["chosen_ids"][:2])
    assert (
        micro.tokenizer(text, add_special_tokens=False)["input_ids"] == micro.batches[0][0]["chosen_ids"][:2]
    )


@pytest.mark.parametrize("name", ROWS)
def test_each_row_trains_one_step_on_exactly_the_expected_tokens(name, micro, tmp_path):
    row = prepare_row(name, micro, Settings(threads=1, total_steps=4), str(tmp_path))
    before = [p.detach().clone() for p in row.model.parameters()]
    row.warm_up()
    warmed = [p.detach().clone() for p in row.model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, warmed, strict=True)), f"{name}: warm-up idle"
    row.step(0)
    changed = any(not torch.equal(a, b.detach()) for a, b in zip(warmed, row.model.parameters(), strict=True))
    assert changed, f"{name}: one step left every parameter unchanged"
    for step in range(2):
        assert check_counts(name, row, micro, step) == expected_counts(micro.batch_rows(step))
    other = synthetic_workload("micro", LlamaConfig(**MICRO_CONFIG), MICRO_SIZE, seed=1)
    with pytest.raises(AssertionError, match="holds"):
        check_counts(name, row, other, 0)  # a row fed different tokens is caught


def test_run_rows_alternates_rows_on_the_same_batches(micro):
    result = run_rows(
        ["kit_simpo", "trl_cpo_simpo"],
        micro,
        Settings(threads=1, total_steps=4),
        warmup=1,
        rounds=2,
        memory=PeakMemory(torch.device("cpu")),
    )
    for name in ("kit_simpo", "trl_cpo_simpo"):
        record = result["rows"][name]
        assert record["step"] == [1, 2] and record["pairs"] == [2, 2]
        assert len(record["step_seconds"]) == len(record["peak_mem_mb"]) == len(record["flops"]) == 2
        assert record["tokens"] == [expected_counts(micro.batch_rows(k))["tokens"] for k in (1, 2)]
        assert "fused" in record["optimizer"]
    assert result["rows"]["kit_simpo"]["layout"].startswith("packed")  # the micro model is a Llama
    assert result["rows"]["trl_cpo_simpo"]["layout"].startswith("padded")


def test_warmup_rows_are_the_first_batch_cut_short():
    long = DataSize(pairs_per_step=2, num_batches=2, prompt_tokens=(20, 30), response_tokens=(17, 40))
    workload = synthetic_workload("micro", LlamaConfig(**MICRO_CONFIG), long, seed=0)
    assert len(workload.warmup_rows) == 2
    for short, full in zip(workload.warmup_rows, workload.batches[0], strict=True):
        for key, ids in full.items():
            assert len(ids) > WARMUP_TOKENS and short[key] == ids[:WARMUP_TOKENS]


def test_world_workload_is_the_kits_tokenisation():
    world = world_workload(DataSize(pairs_per_step=2, num_batches=1))
    eos = world.tokenizer.eos_token_id
    assert world.model_config.vocab_size == len(world.tokenizer)
    for row in world.batches[0]:
        assert row["chosen_ids"].count(eos) == 1 and row["chosen_ids"][-1] == eos  # ChatML's "\n" dropped
        assert row["prompt_ids"].count(world.tokenizer.bos_token_id) == 1


def test_train_step_flops_by_hand():
    # 6 * 10 params * 5 tokens + 12 * 1 layer * 4 hidden * (2^2 + 3^2)
    assert train_step_flops(10, [2, 3], 1, 4) == 300 + 624
    assert train_step_flops(10, [2, 3], 1, 4, reference_forwards=1) == pytest.approx(924 * 4 / 3)


def test_peak_memory_sees_a_new_allocation():
    memory = PeakMemory(torch.device("cpu"))
    if not memory.method.startswith("VmHWM"):
        pytest.skip("the peak resident set cannot be reset on this system")
    memory.reset()
    before = memory.peak_mb()
    block = torch.ones(16 * 2**20)  # 64 MiB, written so it is resident
    assert memory.peak_mb() - before >= 60
    del block


def test_naive_logps_matches_the_kit():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 7), generator=generator)
    labels[:, :3] = -100
    for average in (True, False):
        torch.testing.assert_close(
            naive_sequence_logps(logits, labels, average=average),
            sequence_logps(logits, labels, length_normalize=average).to(torch.float32),
        )


def _record(seconds, peak, tokens=(10, 12)):
    return {
        "step": [1, 2],
        "step_seconds": list(seconds),
        "pairs": [2, 2],
        "layout": "packed (prefix-shared)",
        "tokens": list(tokens),
        "response_tokens": [4, 5],
        "peak_mem_mb": list(peak),
        "flops": [1e9, 1e9],
        "optimizer": "x",
    }


def _worker(**records):
    return {"rows": records, "resident_before_step_mb": 1.0, "num_params": 1, "mem_method": "m", "threads": 1}


def test_summary_ratios_are_taken_round_by_round():
    rows = ["kit_simpo", "kit_dpo", "trl_cpo_simpo"]
    memory = {
        "kit_simpo": _worker(kit_simpo=_record([9, 9], [90, 100])),
        "kit_dpo": _worker(kit_dpo=_record([9, 9], [200, 200])),
        "trl_cpo_simpo": _worker(trl_cpo_simpo=_record([9, 9], [150, 150])),
    }
    timing = _worker(
        kit_simpo=_record([1, 3], [0, 0]),
        trl_cpo_simpo=_record([2, 3], [0, 0]),
        kit_dpo=_record([2, 4], [0, 0]),
    )
    summaries = summarise_shape("micro", rows, {"memory": memory, "groups": [timing]}, peak_tflops=1.0)
    simpo = summaries[0]
    assert simpo["vs_trl"]["speed_ratio"] == {"median": 1.5, "min": 1.0, "max": 2.0}  # 2/1 and 3/3
    assert simpo["vs_trl"]["peak_mem_ratio"] == pytest.approx(100 / 150)  # peaks from the one-row processes
    assert simpo["vs_kit_dpo"]["time_ratio"] == {"median": 0.625, "min": 0.5, "max": 0.75}  # 1/2 and 3/4
    # per-step tokens/s 10/1 and 12/3: their median is 7; pairs/s 2/1 and 2/3: median 4/3
    assert simpo["tokens_per_s"] == pytest.approx(7.0)
    assert simpo["pairs_per_s"] == pytest.approx(4 / 3) and simpo["layout"].startswith("packed")
    targets = evaluate_targets(summaries, None)
    assert targets == {"micro/simpo_vs_dpo_time": {"target": SIMPO_DPO, "value": 0.625, "holds": None}}
    assert format_table(summaries).count("\n") == 2 + len(rows) - 1


def test_targets_by_shape_hold_or_miss_by_their_bounds():
    rows = ["kit_simpo", "trl_cpo_simpo"]

    def summaries(shape, kit_seconds, kit_peak):
        memory = {
            "kit_simpo": _worker(kit_simpo=_record([9, 9], [kit_peak, kit_peak])),
            "trl_cpo_simpo": _worker(trl_cpo_simpo=_record([9, 9], [100, 100])),
        }
        timing = _worker(kit_simpo=_record(kit_seconds, [0, 0]), trl_cpo_simpo=_record([2, 2], [0, 0]))
        return summarise_shape(shape, rows, {"memory": memory, "groups": [timing]}, peak_tflops=1.0)

    # uf8: 2 / 0.9 = 2.22 >= 2.0 holds, memory 0.7 > 0.6 misses; uf2: 2 / 1.5 = 1.33 < 1.5 misses
    targets = evaluate_targets(summaries("uf8", [0.9, 0.9], 70) + summaries("uf2", [1.5, 1.5], 70), None)
    assert targets["uf8/simpo_vs_trl_speed"] == {"target": ">= 2.0", "value": 2.222, "holds": True}
    assert targets["uf8/simpo_vs_trl_peak_mem"] == {"target": "<= 0.6", "value": 0.7, "holds": False}
    assert targets["uf2/simpo_vs_trl_speed"]["holds"] is False
    assert targets["uf2/simpo_vs_trl_peak_mem"]["holds"] is True  # 0.7 <= 0.75
    assert "uf2/dpo_vs_trl_speed" not in targets  # not measured: not reported


def test_rows_that_saw_different_tokens_are_refused():
    runs = [
        _worker(kit_simpo=_record([1, 1], [1, 1])),
        _worker(trl_cpo_simpo=_record([1, 1], [1, 1], (10, 11))),
    ]
    with pytest.raises(AssertionError, match="at step 2 trl_cpo_simpo processed 11 tokens"):
        _check_same_work("micro", runs)


def test_ultrafeedback_lengths_follow_the_stated_distribution():
    size = DEFAULT_SIZES["uf8"]
    rng = random.Random(0)
    prompts = [draw_length(rng, size, "prompt") for _ in range(4000)]
    responses = [draw_length(rng, size, "response") for _ in range(4000)]
    # medians: a quarter of UltraFeedback's 121 and 288; every length within the stated cut
    assert statistics.median(prompts) == pytest.approx(0.25 * 121, rel=0.06)
    assert statistics.median(responses) == pytest.approx(0.25 * 288, rel=0.06)
    assert min(prompts) >= 4 and max(prompts) <= 96 and max(responses) <= 160
    workload = synthetic_workload("uf8", LlamaConfig(**MICRO_CONFIG), size, seed=0)
    assert [len(batch) for batch in workload.batches] == [8, 8]


def test_timing_groups_keep_each_comparison_in_one_process():
    groups = timing_groups(["kit_simpo", "kit_dpo", "trl_cpo_simpo", "trl_dpo", "kit_dpo_precomputed_ref"])
    assert ["kit_simpo", "trl_cpo_simpo"] in groups and ["kit_simpo", "kit_dpo"] in groups
    assert ["kit_dpo", "trl_dpo"] in groups and ["kit_dpo_precomputed_ref"] in groups
    # a comparison whose other side was not asked for is not run again for one row alone
    assert timing_groups(["kit_simpo", "trl_cpo_simpo"]) == [["kit_simpo", "trl_cpo_simpo"]]
    assert shape_rows("uf8", ["kit_simpo", "kit_dpo", "trl_cpo_simpo"]) == ["kit_simpo", "trl_cpo_simpo"]
    # the SimPO / DPO time (not a target) is timed on world and uf2, not again on smollm2
    everything = ["kit_simpo", "kit_dpo", "trl_cpo_simpo", "trl_dpo"]
    assert ["kit_simpo", "kit_dpo"] in timing_groups(everything, "uf2")
    assert timing_groups(everything, "smollm2") == [["kit_simpo", "trl_cpo_simpo"], ["kit_dpo", "trl_dpo"]]


def _report(speed, memory, wall):
    row = {
        "shape": "uf2",
        "row": "kit_simpo",
        "layout": "packed (prefix-shared)",
        "timed_steps": 2,
        "pairs_per_s": 0.5,
        "peak_mem_mb": 100.0 * memory,
        "vs_trl": {"speed_ratio": {"median": speed}, "peak_mem_ratio": memory},
    }
    targets = {
        "uf2/simpo_vs_trl_speed": {"target": ">= 1.5", "value": speed, "holds": speed >= 1.5},
        "uf2/simpo_vs_trl_peak_mem": {"target": "<= 0.75", "value": memory, "holds": memory <= 0.75},
    }
    return {"rows": [row], "targets": targets, "wall_seconds": wall}


def test_runs_compared_by_their_median():
    from benchmarks.compare_runs import compare_rows, compare_targets, format_comparison

    # speed 1.4 (missed alone), 1.6, 1.7: median 1.6 holds; memory 0.7 (held alone), 0.8, 0.9: median 0.8 misses
    reports = [_report(1.4, 0.8, 800), _report(1.7, 0.7, 820), _report(1.6, 0.9, 810)]
    targets = compare_targets(reports)
    assert targets["uf2/simpo_vs_trl_speed"]["values"] == [1.4, 1.7, 1.6]
    assert targets["uf2/simpo_vs_trl_speed"]["median"] == 1.6 and targets["uf2/simpo_vs_trl_speed"]["holds"]
    assert targets["uf2/simpo_vs_trl_peak_mem"]["median"] == 0.8
    assert targets["uf2/simpo_vs_trl_peak_mem"]["holds"] is False
    assert compare_rows(reports)[0]["peak_mem_mb"] == [80.0, 70.0, 90.0]
    del reports[1]["targets"]["uf2/simpo_vs_trl_peak_mem"]  # not measured in every run: not compared
    assert list(compare_targets(reports)) == ["uf2/simpo_vs_trl_speed"]
    text = format_comparison(reports)
    assert "| 1.40 / 1.70 / 1.60 (1.60) |" in text and "800 / 820 / 810 s" in text
