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
from benchmarks.bench_step import (
    ROWS,
    Settings,
    check_counts,
    packed_work,
    padded_work,
    prepare_row,
    round_order,
    round_starts,
    run_rows,
    trl_head_compacts,
)
from benchmarks.measure import PeakMemory, split_parameters, step_flops, train_step_flops
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


def test_run_rows_runs_every_batch_in_every_round(micro):
    result = run_rows(
        ["kit_simpo", "trl_cpo_simpo"],
        micro,
        Settings(threads=1, total_steps=8),
        warmup=1,
        rounds=2,
        memory=PeakMemory(torch.device("cpu")),
    )
    assert result["timing_batches"] == [0, 1] and result["min_rounds"] == 2
    for name in ("kit_simpo", "trl_cpo_simpo"):
        record = result["rows"][name]
        # two rounds, each one step on each of the two timing batches, in the same order
        assert record["round"] == [0, 0, 1, 1] and record["batch"] == [0, 1, 0, 1]
        assert record["pairs"] == [2, 2, 2, 2]
        assert len(record["step_seconds"]) == len(record["peak_mem_mb"]) == len(record["flops_executed"]) == 4
        assert record["tokens"] == [expected_counts(micro.batch_rows(k))["tokens"] for k in (0, 1, 0, 1)]
        assert "fused" in record["optimizer"]
    kit, trl = result["rows"]["kit_simpo"], result["rows"]["trl_cpo_simpo"]
    assert kit["flops"] == trl["flops"]  # the unshared layout's FLOPs: the same for both rows
    # the packed row computes each prompt once and the head at responses only; the padded one computes padding
    assert all(e < f for e, f in zip(kit["flops_executed"], kit["flops"], strict=True))
    assert all(e >= f for e, f in zip(trl["flops_executed"], trl["flops"], strict=True))
    assert kit["layout"].startswith("packed")  # the micro model is a Llama
    assert trl["layout"].startswith("padded")
    one = run_rows(
        ["kit_simpo"],
        micro,
        Settings(threads=1, total_steps=8),
        warmup=1,
        rounds=3,
        memory=PeakMemory(torch.device("cpu")),
        deadline=0.0,  # long past: only the rounds every process runs
    )
    assert one["rows"]["kit_simpo"]["round"] == [0, 0, 1, 1]


def test_round_order_rotates_by_round_and_batch():
    names = ["a", "b"]
    assert [round_order(names, 0, batch) for batch in range(3)] == [["a", "b"], ["b", "a"], ["a", "b"]]
    assert [round_order(names, 1, batch) for batch in range(3)] == [["b", "a"], ["a", "b"], ["b", "a"]]
    # over two rounds every row goes first on every batch once
    for batch in range(3):
        assert {round_order(names, r, batch)[0] for r in range(2)} == {"a", "b"}
    assert round_order(["a"], 5, 3) == ["a"]


def test_round_starts_always_runs_the_minimum():
    late = 1e9  # time.time() long past the deadline
    assert round_starts(0, 0.0, late, 0.0, 2) and round_starts(1, 50.0, late, 0.0, 2)
    assert not round_starts(2, 50.0, late, 0.0, 2)
    # at 25 s a round so far, a third round started at t=100 ends at 125
    assert round_starts(2, 50.0, 100.0, 125.0, 2) and not round_starts(2, 50.0, 100.0, 124.0, 2)
    assert round_starts(7, 50.0, late, None, 2)  # no deadline: every round asked for


def test_executed_work_by_hand(micro):
    rows = [{"prompt_ids": [1, 5, 6], "chosen_ids": [7, 2], "rejected_ids": [8, 9, 10, 2]}]
    # body: 3 + 2 + 4 positions; head: the 6 response positions; attention (3+2)^2 + (3+4)^2
    assert packed_work(rows) == {"body_positions": 9, "head_positions": 6, "attention_products": 74}
    assert padded_work(4, 5) == {"body_positions": 20, "head_positions": 20, "attention_products": 100}
    assert padded_work(4, 5, head_length=4)["head_positions"] == 16
    assert trl_head_compacts("cpu") is False  # TRL's fused DPO head scores every position on CPU


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
    # 6 * 7 body params * 5 positions + 6 * 3 head params * 2 positions + 12 * 1 * 4 * 9 products
    assert step_flops(7, 3, 1, 4, body_positions=5, head_positions=2, attention_products=9) == 210 + 36 + 432
    # a tied embedding is the head; an untied input embedding (a lookup) is in neither part
    assert split_parameters(100, 4, 5, tied=True) == (80, 20)
    assert split_parameters(100, 4, 5, tied=False) == (60, 20)


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
    assert [len(batch) for batch in workload.batches] == [8]  # one timing batch of 8 pairs
