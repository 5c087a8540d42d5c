"""Training entry point: the kit's SimPO/DPO training step, driven by a config file, on 1 or N processes.

    python -m simplepo_helpers.scale.cli --config configs/tiny_world_cpu.yaml train.max_steps=50 loss.name=dpo
    accelerate launch --multi_gpu --num_processes 4 -m simplepo_helpers.scale.cli --config configs/smollm2_gpu.yaml

accelerate sets up the processes (DDP: each process holds the whole model and takes ``batch_size / N``
pairs of every micro-batch; gradients are averaged across processes in ``backward``). Each optimizer step
is ``training.training_step`` on the process's share, so with the same config and seed an N-process run
follows the 1-process run up to float rounding (the preference loss is a mean over pairs, so the average of
the per-process means is the global mean; the token-weighted ``sft_weight``/``kl_weight`` terms are
weighted per process, as HF Trainer does). The data order is `train`'s seeded stream, so checkpoints
resume on any number of processes. Logs: ``<output_dir>/metrics.jsonl``, one line per step with TRL's
metric names (``eval_``-prefixed on evaluation steps), and ``log.report_to``'s trackers (TensorBoard, ...).

FSDP (``accelerate launch --config_file configs/accelerate/fsdp.yaml``): the model is sharded with PyTorch's
``fully_shard`` (``fsdp.py``), on GPUs or CPU processes; DPO then needs the precomputed reference, and LoRA
is not supported with it (use DDP).

DPO's reference (``model.reference``): by default the reference log-probs of every pair are computed once
with the starting model, each process scoring its share, then gathered, so no process holds a second copy
of the model; ``live`` keeps the frozen copy (or, under LoRA, the adapter-free base).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..batching import PreferenceCollator
from ..precompute import precompute_reference_logps
from ..runtime.batch_order import PreferenceBatches, collate_examples
from ..runtime.checkpoint import (
    MODEL_CARD_NAME,
    STATE_NAME,
    CheckpointError,
    check_resume_config,
    find_latest_checkpoint,
    list_checkpoints,
    model_card,
    read_history,
    read_summary,
    state_file,
)
from ..runtime.device import DevicePolicy, select_device
from ..runtime.trackers import MetricsReporter
from ..runtime.train_result import TrainResult
from ..training import TrainConfig, preference_loss, train
from .config import (
    WORLD_DATA_PREFIX,
    WORLD_MODEL,
    ConfigError,
    DataOptions,
    ModelOptions,
    RunConfig,
    config_to_dict,
    load_config,
)
from .fsdp import fsdp_requested, shard_model
from .lora import adapter_disabled_reference, apply_lora

METRICS_FILE = "metrics.jsonl"
FINAL_DIR = "final"
CANDIDATE_FACTOR = 2  # Hub subsets: validate up to 2 x n shuffled rows to find n that fit max_length
# not averaged over processes: the same everywhere (grad_norm and lr come after the all-reduce), or summed
_NOT_AVERAGED = ("step", "epoch", "grad_norm", "lr", "tokens", "seconds")


def resolve_policy(precision: str, device: torch.device) -> DevicePolicy:
    """`select_device`'s device policy for ``device``, with ``model.precision`` forcing fp32, bf16 or fp16."""
    device_policy = select_device(device, verbose=False)
    if precision == "auto":
        return device_policy
    if precision == "fp32":
        return dataclasses.replace(
            device_policy, autocast_dtype=None, use_grad_scaler=False, reason="model.precision=fp32"
        )
    if device.type != "cuda":
        raise ConfigError(f"model.precision={precision} needs a CUDA GPU, this process runs on {device}")
    if precision == "bf16":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            raise ConfigError(
                f"model.precision=bf16: compute capability {major}.{minor} < 8 only emulates bf16; use fp16 or auto"
            )
        return dataclasses.replace(
            device_policy, autocast_dtype=torch.bfloat16, use_grad_scaler=False, reason="model.precision=bf16"
        )
    return dataclasses.replace(
        device_policy,
        autocast_dtype=torch.float16,
        use_grad_scaler=True,
        reason="model.precision=fp16 (GradScaler)",
    )


def load_model(options: ModelOptions, device_policy: DevicePolicy, *, progress: bool = True):
    """(model, tokenizer): the world's reference model for ``world``, else `hub.load_hub_model`."""
    if options.name_or_path == WORLD_MODEL:
        from ..world import load_reference_model

        model, tokenizer = load_reference_model(progress=progress)
        model = model.to(device=device_policy.device, dtype=device_policy.param_dtype)
    else:
        from .hub import load_hub_model

        model, tokenizer = load_hub_model(options.name_or_path, device_policy)
    if options.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tokenizer


def load_rows(source: str, split: str, n: int | None, tokenizer, train: TrainConfig, seed: int, where: str):
    """Valid preference rows (a ``datasets.Dataset``) and the validation report of one data source."""
    from ..data import load_preference_dataset

    limits = {
        "tokenizer": tokenizer,
        "max_length": train.max_length,
        "max_prompt_length": train.max_prompt_length,
    }
    if source.startswith(WORLD_DATA_PREFIX):
        from ..world import data_file

        rows, report = load_preference_dataset(data_file(source.removeprefix(WORLD_DATA_PREFIX)), **limits)
    elif source.endswith(".jsonl"):
        if not Path(source).is_file():
            raise ConfigError(f"{where}: {source} not found")
        rows, report = load_preference_dataset(source, **limits)
    else:
        from datasets import load_dataset

        from .hub import hub_access, ultrafeedback_to_preference

        with hub_access("dataset", source):
            table = load_dataset(source, split=split)
        if n is not None:
            table = table.shuffle(seed=seed).select(range(min(len(table), CANDIDATE_FACTOR * n)))
        if "prompt" not in table.column_names:  # implicit prompt (UltraFeedback): make it explicit
            table = [ultrafeedback_to_preference(row, index) for index, row in enumerate(table)]
        rows, report = load_preference_dataset(table, **limits)
    if len(rows) == 0:
        found = "; ".join(report.summary(max_rows=0).splitlines())
        raise ValueError(f"{where}: no valid preference row in {source} ({found}); check the file's rows")
    if n is not None and len(rows) > n:
        rows = rows.select(range(n))
    return rows, report


def _load_data(data: DataOptions, tokenizer, train: TrainConfig, say) -> dict[str, Any]:
    """``{"train": rows}`` plus ``"eval"`` when ``data.eval`` is set; each validation report is printed."""
    sources = {"train": (data.train, data.train_split, data.n_train)}
    if data.eval is not None:
        sources["eval"] = (data.eval, data.eval_split, data.n_eval)
    rows = {}
    for what, (source, split, n) in sources.items():
        rows[what], report = load_rows(source, split, n, tokenizer, train, data.seed, f"data.{what}")
        say(f"[simplepo] data.{what} ({source}): {report.summary(max_rows=5)}; using {len(rows[what])} rows")
    return rows


def _reduce(accelerator, values: Mapping[str, float], reduction: str) -> dict[str, float]:
    """``values`` summed or averaged over all processes (same keys on every process)."""
    if accelerator.num_processes == 1:
        return dict(values)
    names = sorted(values)
    tensor = torch.tensor([values[name] for name in names], dtype=torch.float64, device=accelerator.device)
    reduced = accelerator.reduce(tensor, reduction=reduction).tolist()
    return dict(zip(names, reduced, strict=True))


@torch.no_grad()
def evaluate(
    model,
    rows,
    collator,
    loss_config,
    *,
    ref_model,
    device_policy,
    batch_size: int,
    accelerator,
    ref_logps=None,
    progress: bool | None = False,
) -> dict:
    """Held-out metrics (TRL names with an ``eval_`` prefix), each a mean over all pairs of ``rows``.

    Process r scores rows r, r+N, r+2N, ... in batches of ``batch_size / N``. ``ref_logps``: DPO's
    precomputed reference log-probs of ``rows`` (instead of ``ref_model``). ``progress``: a bar over this
    process's pairs (None: only for long work).
    """
    from ..runtime.progress import progress_bar

    rank, world = accelerator.process_index, accelerator.num_processes
    if len(rows) < world:
        raise ConfigError(f"data.eval has {len(rows)} rows, fewer than the {world} processes")
    mine = list(range(rank, len(rows), world))
    share = max(1, batch_size // world)
    # a sharded model's forward is collective: every process runs as many batches as the busiest one
    most = -(-len(rows) // world)
    starts = range(0, most if fsdp_requested() else len(mine), share)
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    bar = progress_bar(len(mine), progress, "evaluating")
    try:
        for start in starts:
            indices = mine[start : start + share]
            weight = len(indices)
            indices = indices or mine[:1] or [0]  # an idle process repeats a row, counted with weight 0
            batch = collate_examples(collator, rows, indices, context=f"evaluation, process {rank}")
            if ref_logps is not None:
                batch.update({key: ref_logps[key][indices] for key in REF_KEYS})
            with device_policy.autocast():
                _, metrics = preference_loss(model, batch, loss_config, ref_model=ref_model, layout="auto")
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0.0) + value * weight
            bar.update(weight)
    finally:
        bar.close()
        model.train(was_training)
    totals = _reduce(accelerator, {**sums, "_pairs": float(len(mine))}, "sum")
    pairs = totals.pop("_pairs")
    return {f"eval_{name}": value / pairs for name, value in totals.items()}


REF_KEYS = ("ref_chosen_logps", "ref_rejected_logps")
REF_CHUNK_BATCHES = 8  # reference batches per progress-bar update


def reference_mode(config: RunConfig) -> str:
    """``none`` (SimPO), ``precomputed`` (DPO's log-probs once) or ``live`` (a reference forward every step)."""
    if config.model.reference == "precomputed" and config.loss.needs_reference_model:
        raise ConfigError("model.reference=precomputed: loss.kl_weight > 0 needs the live reference model")
    return config.loss.reference_mode("live" if config.model.reference == "live" else "precomputed")


def _reference(config: RunConfig, model):
    """The live reference (DPO, the KL term): the adapter-disabled base under LoRA, else a frozen copy."""
    if reference_mode(config) != "live":
        return None
    if config.lora.enabled:
        return adapter_disabled_reference(model)
    return copy.deepcopy(model).eval().requires_grad_(False)


def shared_reference_logps(
    model,
    rows,
    collator,
    loss_config,
    device_policy,
    batch_size: int,
    accelerator,
    *,
    progress: bool | None = False,
) -> dict:
    """Reference log-probs of all ``rows`` from ``model`` as it is now: process r scores rows r, r+N, ...
    (``precompute_reference_logps``, in chunks of whole batches under a progress bar), then every process
    gets the whole ``[len(rows)]`` tensors."""
    from accelerate.utils import gather_object

    from ..runtime.progress import progress_bar

    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(rank, len(rows), world))
    share = max(1, batch_size // world)
    chunk = share * REF_CHUNK_BATCHES  # whole batches: the same batches as in one call
    scored = {key: torch.empty(0) for key in REF_KEYS}
    pieces = []
    with progress_bar(len(mine), progress, "reference log-probs") as bar:
        for start in range(0, len(mine), chunk):
            part = mine[start : start + chunk]
            pieces.append(
                precompute_reference_logps(
                    model,
                    rows.select(part),
                    collator,
                    share,
                    length_normalize=loss_config.length_normalize,
                    device_policy=device_policy,
                )
            )
            bar.update(len(part))
    if pieces:
        scored = {key: torch.cat([piece[key] for piece in pieces]) for key in REF_KEYS}
    parts = [(mine, {key: scored[key].tolist() for key in REF_KEYS})]
    if world > 1:
        parts = gather_object(parts)
    out = {key: torch.full((len(rows),), float("nan")) for key in REF_KEYS}
    for indices, values in parts:
        for key in REF_KEYS:
            out[key][indices] = torch.tensor(values[key], dtype=torch.float32)
    return {**out, "length_normalize": loss_config.length_normalize}


def _accelerator():
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    launched = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch / torchrun
    # without cpu=True accelerate would run N independent single-process copies on a machine without CUDA
    cpu = launched > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision="no", cpu=cpu)  # precision comes from model.precision
    if launched > 1 and accelerator.num_processes != launched:
        raise RuntimeError(
            f"{launched} processes were launched but accelerate set up {accelerator.num_processes} "
            f"({accelerator.distributed_type.value}); refusing to run unsynchronised copies"
        )
    if accelerator.distributed_type in (
        DistributedType.DEEPSPEED,
        DistributedType.MEGATRON_LM,
        DistributedType.XLA,
    ):
        raise ConfigError(
            f"accelerate is set up for {accelerator.distributed_type.value}; this entry point runs DDP or FSDP "
            "(configs/accelerate/ddp.yaml or fsdp.yaml)"
        )
    if os.environ.get("ACCELERATE_MIXED_PRECISION", "no") != "no" and accelerator.is_main_process:
        print("[simplepo] accelerate's --mixed_precision is ignored: set model.precision in the config")
    return accelerator


def _resume_checkpoint(config: RunConfig) -> Path | None:
    output_dir = Path(config.train.output_dir)
    existing = list_checkpoints(output_dir)
    if config.resume is None:
        if existing:
            raise ConfigError(
                f"train.output_dir={output_dir} already holds {existing[0].name}: set resume=latest to continue "
                "that run, or choose a new output_dir"
            )
        return None
    if config.resume == "latest":
        latest = find_latest_checkpoint(output_dir)
        if latest is None and existing:
            raise CheckpointError(
                f"resume=latest but no checkpoint in {output_dir} is complete; delete the damaged folders "
                "to start over"
            )
        if latest is None:
            raise ConfigError(f"resume=latest but {output_dir} holds no checkpoint-<step> folder")
        return latest
    path = Path(config.resume)
    if state_file(path) is None:
        raise ConfigError(f"resume={config.resume}: not a checkpoint folder (no {STATE_NAME})")
    return path


class _MetricsLog:
    """``metrics.jsonl`` on the main process: rewritten from the checkpoint's history on resume."""

    def __init__(self, path: Path, history: list[dict], enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(row) + "\n" for row in history))

    def write(self, row: Mapping[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


def _print_step(row: Mapping[str, Any], max_steps: int) -> None:
    shown = ["loss", "rewards/accuracies", "rewards/margins", "eval_loss", "eval_rewards/accuracies"]
    parts = [f"{name} {row[name]:.4f}" for name in shown if name in row]
    print(f"step {row['step']}/{max_steps} | " + " | ".join(parts) + f" | lr {row['lr']:.2e}", flush=True)


def _setup(
    config: RunConfig, device_policy: DevicePolicy, accelerator, say, progress: bool
) -> tuple[Any, Any, dict]:
    """(model, with adapters when LoRA is on; tokenizer; ``{"train": rows, "eval": rows}``) on this process."""
    with accelerator.main_process_first():  # one process builds the world model / downloads, then the others
        model, tokenizer = load_model(config.model, device_policy, progress=progress)
        rows = _load_data(config.data, tokenizer, config.train, say)
    if config.lora.enabled:
        model = apply_lora(model, config.lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(f"[simplepo] trainable parameters: {trainable:,} of {sum(p.numel() for p in model.parameters()):,}")
    return model, tokenizer, rows


class _StepHook:
    """``train``'s per-step callback here: means over processes, held-out metrics, the log and a printed line."""

    def __init__(
        self, config: RunConfig, accelerator, evaluate_rows, log: _MetricsLog, progress: bool, reporter=None
    ) -> None:
        self.config, self.accelerator, self.evaluate_rows, self.log = config, accelerator, evaluate_rows, log
        self.reporter = reporter
        self.progress = progress and accelerator.is_main_process

    def __call__(self, row: dict[str, Any]) -> None:
        step, train_cfg, every = row["step"], self.config.train, self.config.data.eval_every
        local = {name: row[name] for name in row if name not in _NOT_AVERAGED}
        row.update(_reduce(self.accelerator, local, "mean"))
        row["tokens"] = int(_reduce(self.accelerator, {"tokens": row["tokens"]}, "sum")["tokens"])
        if self.evaluate_rows is not None and ((every and step % every == 0) or step == train_cfg.max_steps):
            row.update(self.evaluate_rows())
        self.log.write(row)
        if self.reporter is not None:
            self.reporter(row)
        if self.progress and (step % train_cfg.log_every == 0 or step == train_cfg.max_steps):
            _print_step(row, train_cfg.max_steps)


def _check_resume(config: RunConfig, checkpoint: Path | None, allow: bool) -> None:
    """Refuse a checkpoint whose config differs from ``config`` before any model is loaded (``train``
    checks again, with the data, before it loads any state)."""
    if checkpoint is not None and not allow:
        summary = read_summary(checkpoint)
        check_resume_config(
            checkpoint, summary, config.train, {"run_config": config_to_dict(config)}, allow=False
        )


def run_training(
    config: RunConfig, *, progress: bool = True, allow_config_change: bool = False
) -> TrainResult:
    """Run ``config`` on the processes accelerate started (one when launched with plain ``python``).

    Sets up what ``train`` does not (processes, model, data, reference, DDP wrapper), then calls ``train``
    with a per-process batch source and ``_StepHook``; saves the final model, tokenizer and model card.
    ``allow_config_change``: resume even when the checkpoint's config differs (a warning names the fields).
    """
    from transformers import set_seed

    accelerator = _accelerator()
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    say = print if (progress and main) else (lambda *args, **kwargs: None)
    train_cfg, loss_cfg = config.train, config.loss
    output_dir = Path(train_cfg.output_dir)
    resume_from = _resume_checkpoint(config)
    _check_resume(config, resume_from, allow_config_change)
    device_policy = resolve_policy(config.model.precision, accelerator.device)
    say(f"[simplepo] {world} process(es) | {device_policy.describe()}")
    if train_cfg.batch_size % world:
        raise ConfigError(
            f"train.batch_size={train_cfg.batch_size} (pairs per micro-batch, all processes together) must be "
            f"divisible by the number of processes ({world})"
        )

    set_seed(train_cfg.seed)  # the same on every process: LoRA init and dropout match the 1-process run
    model, tokenizer, rows = _setup(config, device_policy, accelerator, say, progress and main)
    ref_model = _reference(config, model)
    collator = PreferenceCollator(
        tokenizer, max_length=train_cfg.max_length, max_prompt_length=train_cfg.max_prompt_length
    )
    ref_logps = {}
    if reference_mode(config) == "precomputed":  # the starting model (LoRA: B = 0, the base) is the reference
        for what in rows:
            ref_logps[what] = shared_reference_logps(
                model,
                rows[what],
                collator,
                loss_cfg,
                device_policy,
                train_cfg.batch_size,
                accelerator,
                progress=None if (progress and main) else False,
            )
        say(f"[simplepo] reference log-probs precomputed for {', '.join(rows)} (no reference model kept)")
    batches = PreferenceBatches(
        rows["train"],
        collator,
        batch_size=train_cfg.batch_size,
        seed=train_cfg.seed,
        grad_accum_steps=train_cfg.grad_accum_steps,
        rank=rank,
        world=world,
        ref_logps=ref_logps.get("train"),
    )
    say(
        f"[simplepo] {train_cfg.batch_size} pairs per micro-batch ({batches.share} per process) x "
        f"{train_cfg.grad_accum_steps} accumulation = {train_cfg.examples_per_step} pairs per optimizer step"
    )
    history = []
    if resume_from is not None:
        history = read_history(resume_from)
        say(f"[simplepo] resuming from {resume_from} at step {history[-1]['step'] if history else 0}")
    log = _MetricsLog(output_dir / METRICS_FILE, history, enabled=main)

    unwrapped = model
    evaluate_rows = None
    if "eval" in rows:

        def evaluate_rows() -> dict[str, float]:
            return evaluate(
                unwrapped,
                rows["eval"],
                collator,
                loss_cfg,
                ref_model=ref_model,
                device_policy=device_policy,
                batch_size=train_cfg.batch_size,
                accelerator=accelerator,
                ref_logps=ref_logps.get("eval"),
                progress=None if (progress and main) else False,
            )

    if fsdp_requested() and world > 1:
        if config.lora.enabled or ref_model is not None:
            raise ConfigError(
                "FSDP here shards one model: use lora.enabled=false and, for DPO, model.reference=precomputed "
                "(or auto; the KL term needs a live reference), or launch with DDP"
            )
        model = shard_model(model)  # in place: `unwrapped` is the sharded model too
        say(f"[simplepo] FSDP: the model is sharded over {world} processes")
    else:
        model = accelerator.prepare_model(model)  # DDP when world > 1
    reporter = MetricsReporter(
        config.log.report_to if main else None,
        output_dir / "runs",
        run_name=config.log.run_name,
        config=config_to_dict(config),
    )
    try:
        result = train(
            model,
            tokenizer,
            rows["train"],
            train_cfg,
            ref_model=ref_model,
            ref_logps=ref_logps.get("train"),
            device_policy=device_policy,
            resume_from=resume_from,
            progress=False,
            batches=batches,
            on_step=_StepHook(config, accelerator, evaluate_rows, log, progress, reporter),
            run_info={
                "num_processes": world,
                "reference": reference_mode(config),
                "run_config": config_to_dict(config),
                **({"allow_config_change": True} if allow_config_change else {}),
            },
        )
    finally:
        reporter.close()
    _export(config, unwrapped, tokenizer, output_dir / FINAL_DIR, accelerator, result.history)
    say(
        f"[simplepo] done: checkpoints {result.checkpoints}, metrics {output_dir / METRICS_FILE}, "
        f"model {output_dir / FINAL_DIR}"
    )
    return result


def _export(config: RunConfig, model, tokenizer, directory: Path, accelerator, history: list[dict]) -> None:
    """Save the final model, tokenizer and model card (LoRA: the adapter, or a merged plain model with
    merge_at_end)."""
    state_dict = None
    if fsdp_requested() and accelerator.num_processes > 1:  # gather the shards: every process takes part
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state_dict = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    if accelerator.is_main_process:
        if config.lora.enabled and config.lora.merge_at_end:
            model = model.merge_and_unload()  # folds the adapters into the base weights, in place
        model.save_pretrained(directory, **({} if state_dict is None else {"state_dict": state_dict}))
        tokenizer.save_pretrained(directory)
        step = int(history[-1]["step"]) if history else 0
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        adapter = config.lora.enabled and not config.lora.merge_at_end
        card = model_card(
            config_to_dict(config),
            history,
            step,
            config.model.name_or_path,
            model_type=model_type,
            library_name="peft" if adapter else "transformers",
        )
        (directory / MODEL_CARD_NAME).write_text(card)  # over PEFT's
    accelerator.wait_for_everyone()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simplepo_helpers.scale.cli",
        description="Train with SimPO or DPO from a YAML/JSON config (also under `accelerate launch`).",
        epilog="example: python -m simplepo_helpers.scale.cli --config configs/tiny_world_cpu.yaml "
        "train.max_steps=20 loss.name=dpo loss.beta=0.1 resume=latest",
    )
    parser.add_argument("--config", help="a .yaml/.yml/.json config file (see configs/)")
    parser.add_argument(
        "overrides", nargs="*", metavar="section.field=value", help="overrides, parsed as YAML"
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress output (transformers' and datasets' bars too)"
    )
    parser.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume even when the checkpoint's config differs from this one (the fields are named)",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of a run-time error")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the training; 0 on success, 2 on a config error (``config error: ...`` on stderr),
    1 on a run-time error (one ``error: ...`` line; the traceback with ``--debug``)."""
    args = build_parser().parse_intermixed_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        if args.print_config:
            print(json.dumps(config_to_dict(config), indent=1))
            return 0
        with _quiet_libraries() if args.quiet else contextlib.nullcontext():
            run_training(config, progress=not args.quiet, allow_config_change=args.allow_config_change)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if args.debug:
            raise
        print(f"error: {error_line(error)}", file=sys.stderr)
        return 1
    finally:
        _end_processes()
    return 0


def error_line(error: BaseException) -> str:
    """An exception as one line: its message's first line (the type too when not the kit's own kind)."""
    lines = str(error).strip().splitlines() or [""]
    text = lines[0] + (" (more with --debug)" if len(lines) > 1 else "")
    if isinstance(error, (ValueError, RuntimeError, OSError)) and lines[0]:
        return text
    return f"{type(error).__name__}: {text}".rstrip(": ")


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """transformers', datasets' and the Hub client's progress bars, logging and warnings off, then restored."""
    import datasets
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as hf_logging

    saved = (
        hf_logging.get_verbosity(),
        hf_logging.is_progress_bar_enabled(),
        datasets.utils.logging.get_verbosity(),
        datasets.is_progress_bar_enabled(),
        hub_utils.are_progress_bars_disabled(),
    )
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    hub_utils.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(saved[0])
        if saved[1]:
            hf_logging.enable_progress_bar()
        datasets.utils.logging.set_verbosity(saved[2])
        if saved[3]:
            datasets.enable_progress_bars()
        if not saved[4]:
            hub_utils.enable_progress_bars()


def _end_processes() -> None:
    """Tear down the process group accelerate opened (a no-op in a single process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
