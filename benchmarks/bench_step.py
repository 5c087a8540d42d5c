"""One benchmark row: build the model, the optimizer and the collated batches, then time training steps.

Run as a worker: ``python -m benchmarks.bench_step --shape smollm2 --rows kit_simpo,trl_cpo_simpo`` builds the
rows in one process, then runs rounds over the workload's fixed set of timing batches (every row on every
batch, in the same order, the rows' order alternating) and prints one JSON line. ``benchmarks.run`` uses a
process holding one row for its peak memory, and processes holding the rows compared with each other for
the times (steps seconds apart, so a busy shared CPU slows both sides alike).

What is timed, on both sides, is one optimizer step on an already-collated batch: forward, loss, backward,
gradient clipping (max norm 1.0), AdamW step, scheduler step and zeroing the gradients.
- kit rows: ``simplepo_helpers.training.training_step`` with the kit's own optimizer (fused AdamW), in the
  batch layout ``train()`` picks (packed and prefix-shared for this Llama shape, see ``packing.py``).
- TRL rows: the trainer is built once (its dataset preparation is not timed), its model and optimizer are
  set up by ``Trainer._prepare_for_training`` (accelerate + HF's default fused AdamW), and a step is the body
  of ``Trainer``'s inner loop: ``trainer.training_step(model, batch)``, ``trainer._clip_grad_norm(model)``,
  ``optimizer.step()``, ``lr_scheduler.step()``, ``model.zero_grad()``.
Batches come from each side's own collator (the kit's ``PreferenceCollator``; TRL's
``DPODataCollatorWithPadding`` for CPO, ``DataCollatorForPreference`` for DPO) fed the same token ids, and
each worker asserts that the batch it trains on holds exactly the expected tokens.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .measure import PeakMemory, return_freed_memory_promptly, split_parameters, step_flops, timed
from .workloads import SHAPES, DataSize, Workload, build_workload, expected_counts

KIT_ROWS = ("kit_simpo", "kit_dpo", "kit_dpo_precomputed_ref")
TRL_ROWS = ("trl_cpo_simpo", "trl_dpo", "trl_dpo_precomputed_ref")
ROWS = KIT_ROWS + TRL_ROWS
TRL_COUNTERPART = dict(zip(KIT_ROWS, TRL_ROWS, strict=True))
REFERENCE_FORWARDS = {"kit_dpo": 1, "trl_dpo": 1}  # rows that run a live no-grad reference forward per step
MIN_ROUNDS = (
    2  # a timing process always runs this many rounds over its batches (fewer only if asked for fewer)
)

# the same hyper-parameters on both sides (their values do not change the cost of a step)
LEARNING_RATE = 1e-6
MAX_GRAD_NORM = 1.0
SIMPO_BETA, SIMPO_GAMMA, DPO_BETA = 2.0, 1.0, 0.1


@dataclass
class Settings:
    device: str = "cpu"
    dtype: str = "fp32"  # "fp32" or "bf16" (bf16 autocast, float32 weights, on both sides)
    threads: int = 1
    total_steps: int = 100  # length of the linear learning-rate schedule on both sides


@dataclass
class PreparedRow:
    """A ready-to-time row: ``step(k)`` runs one optimizer step on batch k; ``counts(k)`` are its tokens;
    ``executed(k)`` the positions and attention products its layout computes on batch k
    (:func:`packed_work`, :func:`padded_work`); ``warm_up()`` runs one step on the workload's short warm-up batch."""

    step: Callable[[int], None]
    counts: Callable[[int], dict[str, int]]
    warm_up: Callable[[], None]
    optimizer: str
    model: torch.nn.Module
    layout: str = "padded [2B, T]"
    executed: Callable[[int], dict[str, int]] | None = None


def packed_work(rows: list[dict[str, list[int]]]) -> dict[str, int]:
    """What the kit's packed, prefix-shared layout computes for these token rows (``fast/packing.py``): every
    pair's prompt, chosen and rejected tokens once through the transformer; the LM head at the response
    positions only; attention as one causal call on [prompt; chosen] and one on [prompt; rejected] (whose
    prompt queries are computed and dropped), each counted as queries x keys."""
    body = head = attention = 0
    for row in rows:
        p, c, r = (len(row[key]) for key in ("prompt_ids", "chosen_ids", "rejected_ids"))
        body, head, attention = body + p + c + r, head + c + r, attention + (p + c) ** 2 + (p + r) ** 2
    return {"body_positions": body, "head_positions": head, "attention_products": attention}


def padded_work(sequences: int, length: int, *, head_length: int | None = None) -> dict[str, int]:
    """What a padded ``[sequences, length]`` batch computes: every position (padding and prompts included)
    through the transformer and, by default, through the LM head (``head_length`` per sequence where the head
    skips a position), attention over the whole ``length x length`` square per sequence."""
    head = length if head_length is None else head_length
    return {
        "body_positions": sequences * length,
        "head_positions": sequences * head,
        "attention_products": sequences * length**2,
    }


def _count(mask: torch.Tensor) -> int:
    return int(mask.sum())


def _kit_row(name: str, workload: Workload, settings: Settings) -> PreparedRow:
    from simplepo_helpers.batching import IGNORE_INDEX, PreferenceCollator
    from simplepo_helpers.fast import describe_layout
    from simplepo_helpers.precompute import precompute_reference_logps
    from simplepo_helpers.runtime.device import DevicePolicy
    from simplepo_helpers.runtime.optim import (
        Optimization,  # train()'s optimizer (fused AdamW where torch has it)
    )
    from simplepo_helpers.training import LossConfig, TrainConfig, training_step

    device = torch.device(settings.device)
    autocast = torch.bfloat16 if settings.dtype == "bf16" else None
    policy = DevicePolicy(device, torch.float32, autocast, False, f"benchmark {settings.dtype}")
    loss = (
        LossConfig("simpo", beta=SIMPO_BETA, gamma=SIMPO_GAMMA)
        if name == "kit_simpo"
        else LossConfig("dpo", beta=DPO_BETA)
    )
    model = workload.build_model().to(device)
    collator = PreferenceCollator(workload.tokenizer)
    token_rows = [*workload.batches, workload.warmup_rows]  # the warm-up batch last
    batches = [collator(rows) for rows in token_rows]
    ref_model = copy.deepcopy(model).eval() if name == "kit_dpo" else None
    if name == "kit_dpo_precomputed_ref":  # reference = the initial policy; no second model is kept
        for rows, batch in zip(token_rows, batches, strict=True):
            ref = precompute_reference_logps(model, rows, collator, len(rows), device_policy=policy)
            batch.update(
                ref_chosen_logps=ref["ref_chosen_logps"], ref_rejected_logps=ref["ref_rejected_logps"]
            )
    config = TrainConfig(
        loss=loss,
        learning_rate=LEARNING_RATE,
        max_steps=settings.total_steps,
        max_grad_norm=MAX_GRAD_NORM,
        lr_scheduler_type="linear",
        warmup_ratio=0.0,
    )
    optimization = Optimization.build(model, config, policy)
    model.train()

    *batches, warmup_batch = batches

    def step(k: int, batch: dict | None = None) -> None:
        training_step(
            model,
            batches[k % len(batches)] if batch is None else batch,
            optimization.optimizer,
            optimization.scheduler,
            config.loss,
            ref_model=ref_model,
            max_grad_norm=config.max_grad_norm,
            device_policy=policy,
            step=k,
            layout="auto",  # as train() runs it
        )

    def counts(k: int) -> dict[str, int]:
        batch = batches[k % len(batches)]
        return {
            "tokens": _count(batch["attention_mask"]),
            "response_tokens": _count(batch["labels"] != IGNORE_INDEX),
        }

    layout = describe_layout(model)

    def executed(k: int) -> dict[str, int]:
        if layout.startswith("packed"):
            return packed_work(workload.batch_rows(k))
        return padded_work(*batches[k % len(batches)]["input_ids"].shape)  # [2B, T], the head everywhere

    return PreparedRow(
        step,
        counts,
        lambda: step(-1, warmup_batch),
        f"torch AdamW {optimization.impl}",
        model,
        layout,
        executed,
    )


def _trl_args(config_class, settings: Settings, workload: Workload, output_dir: str, **extra):
    return config_class(
        output_dir=output_dir,
        per_device_train_batch_size=len(workload.batches[0]),
        learning_rate=LEARNING_RATE,
        max_grad_norm=MAX_GRAD_NORM,
        max_steps=settings.total_steps,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        gradient_checkpointing=False,
        bf16=settings.dtype == "bf16",
        use_cpu=settings.device == "cpu",
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        seed=0,
        dataloader_num_workers=0,
        disable_dropout=True,
        **extra,
    )


def trl_head_compacts(device: str) -> bool:
    """Whether TRL's fused DPO head scores only the labelled positions on ``device`` (Triton there) rather
    than every position of the padded batch (CPU)."""
    try:
        from trl.kernels.chunked_logprob import _use_triton
    except ImportError:  # another TRL layout: assume the CPU behaviour measured with TRL 1.16
        return False
    return bool(_use_triton(torch.device(device)))


def _cpo_features(row: dict[str, list[int]]) -> dict[str, list[int]]:
    """A kit token row in the layout of ``CPOTrainer.tokenize_row`` (prompt, then each response with labels)."""
    prompt = row["prompt_ids"]
    features = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for side in ("chosen", "rejected"):
        response = row[f"{side}_ids"]
        features[f"{side}_input_ids"] = prompt + response
        features[f"{side}_attention_mask"] = [1] * (len(prompt) + len(response))
        features[f"{side}_labels"] = [-100] * len(prompt) + response
    return features


def _trl_row(name: str, workload: Workload, settings: Settings, output_dir: str) -> PreparedRow:
    from datasets import Dataset

    model = workload.build_model()
    dummy = Dataset.from_list(workload.dummy_texts)  # only for the trainer's constructor; never trained on
    if name == "trl_cpo_simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        args = _trl_args(
            CPOConfig,
            settings,
            workload,
            output_dir,
            loss_type="simpo",
            cpo_alpha=0.0,
            beta=SIMPO_BETA,
            simpo_gamma=SIMPO_GAMMA,
            max_length=4096,
            remove_unused_columns=False,
        )
        trainer = CPOTrainer(model=model, args=args, train_dataset=dummy, processing_class=workload.tokenizer)
        batches = [
            trainer.data_collator([_cpo_features(row) for row in rows])
            for rows in [*workload.batches, workload.warmup_rows]
        ]

        def counts(k: int) -> dict[str, int]:
            batch = batches[k % len(batches)]
            return {
                "tokens": sum(_count(batch[f"{side}_attention_mask"]) for side in ("chosen", "rejected")),
                "response_tokens": sum(
                    _count(batch[f"{side}_labels"] != -100) for side in ("chosen", "rejected")
                ),
            }

        def executed(k: int) -> dict[str, int]:
            # CPOTrainer.concatenated_inputs pads chosen and rejected to one length; the full logits are computed
            batch = batches[k % len(batches)]
            length = max(batch[f"{side}_input_ids"].shape[1] for side in ("chosen", "rejected"))
            return padded_work(2 * batch["chosen_input_ids"].shape[0], length)
    else:
        from trl import DPOConfig, DPOTrainer

        precompute = name == "trl_dpo_precomputed_ref"
        args = _trl_args(
            DPOConfig,
            settings,
            workload,
            output_dir,
            beta=DPO_BETA,
            max_length=None,
            precompute_ref_log_probs=precompute,
        )
        ref_model = None if precompute else copy.deepcopy(model)
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=dummy,
            processing_class=workload.tokenizer,
        )
        batches = [trainer.data_collator(rows) for rows in [*workload.batches, workload.warmup_rows]]
        if precompute:  # TRL's own reference pass, on the initial policy (TRL's default without a ref_model)
            for batch in batches:
                inputs = trainer._prepare_inputs(batch)
                ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, inputs)
                batch.update(
                    ref_chosen_logps=ref_chosen.detach().cpu(), ref_rejected_logps=ref_rejected.detach().cpu()
                )

        def counts(k: int) -> dict[str, int]:
            batch = batches[k % len(batches)]
            return {
                "tokens": _count(batch["attention_mask"]),
                "response_tokens": _count(batch["completion_mask"]),
            }

        def executed(k: int) -> dict[str, int]:
            # TRL's fused LM head (trainer/utils.py, add_fused_lm_head) compacts to the labelled positions only
            # where Triton runs (CUDA, XPU); on CPU it scores every position but the last of the [2B, T] batch
            batch = batches[k % len(batches)]
            rows, length = batch["input_ids"].shape
            work = padded_work(rows, length, head_length=length - 1)
            if trl_head_compacts(settings.device):
                work["head_positions"] = _count(batch["completion_mask"][:, 1:])
            return work

    *batches, warmup_batch = batches  # the warm-up batch was collated last
    prepared, _ = trainer._prepare_for_training(settings.total_steps, trainer.get_train_dataloader(), None)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer._run_epoch in a real run

    def step(k: int, batch: dict | None = None) -> None:  # the body of Trainer's inner loop (no accumulation)
        trainer.training_step(prepared, batches[k % len(batches)] if batch is None else batch, None)
        trainer._clip_grad_norm(prepared)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        prepared.zero_grad()

    optimizer = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    fused = optimizer.defaults.get("fused")
    impl = f"{type(optimizer).__name__} {'fused' if fused else 'foreach/default'} ({args.optim})"
    return PreparedRow(
        step,
        counts,
        lambda: step(-1, warmup_batch),
        impl,
        trainer.model,
        "padded [2B, T] (TRL's collator)",
        executed,
    )


def prepare_row(name: str, workload: Workload, settings: Settings, output_dir: str) -> PreparedRow:
    if name in KIT_ROWS:
        return _kit_row(name, workload, settings)
    if name in TRL_ROWS:
        return _trl_row(name, workload, settings, output_dir)
    raise ValueError(f"row must be one of {ROWS}, got {name!r}")


def check_counts(name: str, row: PreparedRow, workload: Workload, step: int) -> dict[str, int]:
    """The tokens of batch ``step`` as this row's batch holds them; raise if they differ from the token rows."""
    got, expected = row.counts(step), expected_counts(workload.batch_rows(step))
    if got != expected:
        raise AssertionError(f"{name}: batch {step} holds {got}, the token rows hold {expected}")
    return got


def round_starts(
    round_index: int, elapsed: float, now: float, deadline: float | None, min_rounds: int
) -> bool:
    """Whether round ``round_index`` (0-based) starts: the first ``min_rounds`` always do; a later one only if,
    at the pace of the rounds so far (``elapsed`` seconds for ``round_index`` rounds), it ends by ``deadline``."""
    if round_index < min_rounds or deadline is None:
        return True
    return now + elapsed / round_index <= deadline


def round_order(names: list[str], round_index: int, batch: int) -> list[str]:
    """The rows' order on one batch of one round: rotated by round and by batch, so that over two rounds each
    row goes first on every batch once (and, for two rows, each follows the other equally often)."""
    shift = (round_index + batch) % len(names)
    return names[shift:] + names[:shift]


RECORD_KEYS = (
    "round",
    "batch",
    "step",
    "step_seconds",
    "cpu_seconds",
    "peak_mem_mb",
    "pairs",
    "tokens",
    "response_tokens",
    "flops",
    "flops_executed",
    "body_positions",
    "head_positions",
    "attention_products",
)


def run_rows(
    names: list[str],
    workload: Workload,
    settings: Settings,
    *,
    warmup: int,
    rounds: int,
    memory: PeakMemory,
    deadline: float | None = None,
    min_rounds: int = MIN_ROUNDS,
) -> dict:
    """Build every row in this process, warm each up (``warmup`` steps on the short warm-up batch), then run
    at most ``rounds`` rounds. A round is one timed step of every row on every batch of the workload (its
    fixed set of timing batches), batch by batch in the same order, the rows' order rotating
    (:func:`round_order`): so every round of every row does the same work, and the steps compared with each
    other ran seconds apart on the same tokens. The first ``min(min_rounds, rounds)`` rounds always run; a
    later one only if it would end by ``deadline`` (``time.time()``). Peak memory per step is recorded; it is
    each row's own only when the process holds that row alone.

    Per step: ``flops`` = model FLOPs of the unpadded, unshared layout (every prompt once per response, no
    padding, the LM head at every position: the same for every row); ``flops_executed`` = the FLOPs of what
    the row's layout computes (``PreparedRow.executed``).
    """
    torch.set_num_threads(settings.threads)
    device, config = torch.device(settings.device), workload.model_config
    num_params = count_parameters(config)
    body_params, head_params = split_parameters(
        num_params, config.vocab_size, config.hidden_size, tied=bool(config.tie_word_embeddings)
    )
    layers, hidden = config.num_hidden_layers, config.hidden_size
    timing_batches = list(range(len(workload.batches)))
    records: dict[str, dict] = {name: {key: [] for key in RECORD_KEYS} for name in names}
    phase_started = time.monotonic()
    with tempfile.TemporaryDirectory() as output_dir:
        rows = {name: prepare_row(name, workload, settings, f"{output_dir}/{name}") for name in names}
        threads_after_build = torch.get_num_threads()
        torch.set_num_threads(settings.threads)  # in case a library changed it
        build_seconds = time.monotonic() - phase_started
        for row in rows.values():
            for _ in range(warmup):
                row.warm_up()  # the short warm-up batch (workloads.WARMUP_TOKENS)
        warmup_seconds = time.monotonic() - phase_started - build_seconds
        resident_before = memory.current_mb() - memory.baseline_mb
        started = time.monotonic()
        for round_index in range(rounds):
            now = time.monotonic()
            if not round_starts(round_index, now - started, time.time(), deadline, min(min_rounds, rounds)):
                break
            for k in timing_batches:
                token_rows = workload.batch_rows(k)
                lengths = [
                    len(r["prompt_ids"]) + len(r[f"{side}_ids"])
                    for side in ("chosen", "rejected")
                    for r in token_rows
                ]
                unshared = {
                    "body_positions": sum(lengths),
                    "head_positions": sum(lengths),
                    "attention_products": sum(length**2 for length in lengths),
                }
                for name in round_order(names, round_index, k):
                    record = records[name]
                    counts = check_counts(name, rows[name], workload, k)
                    executed_fn = rows[name].executed
                    executed = executed_fn(k) if executed_fn is not None else None
                    memory.reset()
                    cpu_started = (
                        time.process_time()
                    )  # this process's CPU time: what a busy host cannot inflate
                    record["step_seconds"].append(timed(lambda name=name, k=k: rows[name].step(k), device)[1])
                    record["cpu_seconds"].append(time.process_time() - cpu_started)
                    record["peak_mem_mb"].append(memory.peak_mb())
                    record["round"].append(round_index)
                    record["batch"].append(k)
                    record["step"].append(k)  # the batch (older outputs: the batch's step number)
                    record["pairs"].append(len(token_rows))
                    record["tokens"].append(counts["tokens"])
                    record["response_tokens"].append(counts["response_tokens"])
                    refs = REFERENCE_FORWARDS.get(name, 0)
                    record["flops"].append(
                        step_flops(
                            body_params, head_params, layers, hidden, **unshared, reference_forwards=refs
                        )
                    )
                    record["flops_executed"].append(
                        None
                        if executed is None
                        else step_flops(
                            body_params, head_params, layers, hidden, **executed, reference_forwards=refs
                        )
                    )
                    for key in ("body_positions", "head_positions", "attention_products"):
                        record[key].append(None if executed is None else executed[key])
        for name in names:
            records[name]["optimizer"] = rows[name].optimizer
            records[name]["layout"] = rows[name].layout
    return {
        "shape": workload.shape,
        "rows": records,
        "threads": settings.threads,
        "threads_after_build": threads_after_build,
        "timing_batches": timing_batches,
        "min_rounds": min(min_rounds, rounds),
        "mem_method": memory.method,
        "baseline_mb": memory.baseline_mb,
        "resident_before_step_mb": resident_before,
        "num_params": num_params,
        "body_params": body_params,
        "head_params": head_params,
        "build_seconds": build_seconds,  # models, optimizers, collated batches (and precomputed references)
        "warmup_seconds": warmup_seconds,
        "timed_seconds": time.monotonic() - started,
    }


def count_parameters(config) -> int:
    """Parameters of a model ``config``, a tied embedding counted once (built on the meta device: no memory)."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


def _import_everything() -> None:
    """Every worker imports the same libraries before the memory baseline, whichever row it runs."""
    import datasets  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401
    import trl.experimental.cpo  # noqa: F401
    from trl import DPOTrainer  # noqa: F401

    import simplepo_helpers.training  # noqa: F401


def work(argv: list[str]) -> dict:
    """Parse a worker's arguments, build the workload and rows, measure, and return the result."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_step", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--shape", choices=SHAPES, required=True)
    parser.add_argument("--rows", required=True, help=f"comma-separated, from {', '.join(ROWS)}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--deadline", type=float, default=None, help="time.time() after which no round starts"
    )
    parser.add_argument("--size", type=json.loads, default=None, help="DataSize fields as JSON")
    parser.add_argument(
        "--memory-run",
        action="store_true",
        help="measure peak memory: freed blocks go back to the OS at once (slower steps)",
    )
    args = parser.parse_args(argv)
    names = args.rows.split(",")
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {ROWS}")
    _import_everything()
    prompt_release = return_freed_memory_promptly() if args.memory_run else False
    torch.set_num_threads(args.threads)
    workload = build_workload(args.shape, DataSize(**args.size) if args.size else None)
    memory = PeakMemory(torch.device(args.device))  # baseline: libraries and token rows, no model yet
    settings = Settings(
        args.device,
        args.dtype,
        args.threads,
        total_steps=max(100, args.warmup + args.rounds * len(workload.batches)),
    )
    result = run_rows(
        names,
        workload,
        settings,
        warmup=args.warmup,
        rounds=args.rounds,
        memory=memory,
        deadline=args.deadline,
    )
    return {**result, "malloc_mmap_threshold_fixed": prompt_release}


def main(argv: list[str] | None = None) -> None:
    print("BENCH_RESULT " + json.dumps(work(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
