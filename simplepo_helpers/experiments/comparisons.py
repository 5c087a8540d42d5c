"""Train-or-reuse runs shared by notebooks 04 and 05, and the cost of one training step.

A run is one method at one seed: a label and a ``TrainConfig``. Its cache key hashes the training config, the
training rows, the reference model's weights, the kit's code (``runtime.fingerprint.code_fingerprint``) and
(when asked for) the prompts used to track response length, so a run is reused only when all of them match. Runs live under ``world.cache_dir() / "runs"``: each is
written into a temporary folder and renamed into place when complete, so an interrupted run never leaves a
half-written cache entry. Every notebook can therefore run alone: what is missing is trained.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..batching import PreferenceCollator
from ..evaluation.generation import generate_responses
from ..evaluation.metrics import response_lengths
from ..precompute import precompute_reference_logps
from ..runtime.checkpoint import load_checkpoint
from ..runtime.files import check_safe_name, publish_folder
from ..runtime.fingerprint import code_fingerprint
from ..runtime.memory import PeakMemory, parameter_bytes
from ..training import LossConfig, TrainConfig, train

RUN_INFO = "run.json"


@dataclass
class RunSpec:
    """One training run: ``label`` names it in plots and tables (e.g. "simpo", "dpo", "simpo_no_ln")."""

    label: str
    train: TrainConfig
    length_checkpoints: int = 0  # > 0: measure response length at this many evenly spaced steps

    def __post_init__(self) -> None:
        check_safe_name(self.label, "RunSpec.label")  # it names the run's folder under the cache


@dataclass
class Run:
    """A trained (or reloaded) run: the model in eval mode, its per-step history and what was measured."""

    spec: RunSpec
    key: str
    path: Path
    model: torch.nn.Module
    history: list[dict[str, float]]
    info: dict[str, Any] = field(default_factory=dict)
    reused: bool = False

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def seed(self) -> int:
        return self.spec.train.seed

    @property
    def seconds_per_step(self) -> float:
        """Median wall time of an optimizer step (the first step, which warms up, excluded)."""
        seconds = [row["seconds"] for row in self.history[1:]] or [row["seconds"] for row in self.history]
        return float(statistics.median(seconds))


def fingerprint_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of the rows as canonical JSON (a list of dicts or a ``datasets.Dataset``)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(dict(row), sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def fingerprint_model(model: torch.nn.Module) -> str:
    """sha256 of the weights: every state-dict entry's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _train_config_dict(config: TrainConfig) -> dict[str, Any]:
    """What decides the trained weights (output and logging settings left out)."""
    settings = asdict(config)
    for name in ("output_dir", "save_every", "log_every"):
        settings.pop(name)
    return settings


def run_key(
    spec: RunSpec,
    *,
    reference_fingerprint: str,
    data_fingerprint: str,
    length_probe: Mapping[str, Any] | None = None,
) -> str:
    """16 hex digits of a hash of everything that decides the run (``length_probe``: prompts and length limit)."""
    payload = {
        "code": code_fingerprint(),
        "train": _train_config_dict(spec.train),
        "length_checkpoints": spec.length_checkpoints,
        "reference": reference_fingerprint,
        "data": data_fingerprint,
        "length_probe": length_probe,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def runs_dir() -> Path:
    from ..world import cache_dir

    return cache_dir() / "runs"


_REFERENCE_LOGPS: dict[tuple, dict[str, Any]] = {}  # in-process memo: (reference, data, settings) -> logps


def reference_logps(
    reference: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    config: TrainConfig,
    *,
    batch_size: int = 64,
    device_policy: Any = None,
) -> dict[str, Any]:
    """DPO's reference log-probs of every training row, computed once per process (for ``train(ref_logps=)``)."""
    key = (
        fingerprint_model(reference),
        fingerprint_rows(rows),
        config.loss.length_normalize,
        config.max_length,
        config.max_prompt_length,
    )
    if key not in _REFERENCE_LOGPS:
        collator = PreferenceCollator(
            tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length
        )
        _REFERENCE_LOGPS[key] = precompute_reference_logps(
            reference,
            rows,
            collator,
            batch_size,
            length_normalize=config.loss.length_normalize,
            device_policy=device_policy,
        )
    return _REFERENCE_LOGPS[key]


def _mean_length(model, tokenizer, prompts, max_new_tokens: int) -> float:
    responses = generate_responses(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=0)
    lengths = response_lengths(tokenizer, responses)
    return sum(lengths) / len(lengths)


def _length_curve(
    reference, tokenizer, checkpoints: list[Path], prompts, max_new_tokens: int
) -> list[list[float]]:
    """[[step, mean response length]] at step 0 (the reference) and at each saved checkpoint."""
    curve = [[0, _mean_length(reference, tokenizer, prompts, max_new_tokens)]]
    probe = copy.deepcopy(reference)
    for checkpoint in checkpoints:
        state = load_checkpoint(checkpoint, model=probe, restore_rng=False)
        curve.append([state["step"], _mean_length(probe, tokenizer, prompts, max_new_tokens)])
    return curve


def _load_run(spec: RunSpec, key: str, path: Path, device_policy: Any) -> Run:
    from transformers import AutoModelForCausalLM

    info = json.loads((path / RUN_INFO).read_text())
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False)
    if device_policy is not None:
        model.to(device_policy.device)
    return Run(spec, key, path, model.eval(), info.pop("history"), info, reused=True)


def run_location(
    spec: RunSpec,
    reference: torch.nn.Module,
    rows: Sequence[Mapping[str, Any]],
    *,
    length_prompts: Sequence[Any] | None = None,
    max_new_tokens: int = 64,
) -> tuple[str, Path]:
    """(key, cache folder) of the run ``spec`` from ``reference`` on ``rows`` (``train_or_load``'s cache)."""
    track = spec.length_checkpoints > 0 and length_prompts is not None
    probe = (
        {"prompts": fingerprint_rows([{"p": p} for p in length_prompts]), "max_new_tokens": max_new_tokens}
        if track
        else None
    )
    key = run_key(
        spec,
        reference_fingerprint=fingerprint_model(reference),
        data_fingerprint=fingerprint_rows(rows),
        length_probe=probe,
    )
    return key, runs_dir() / f"{spec.label}-seed{spec.train.seed}-{key}"


def _train_in_worker(
    spec: RunSpec, reference, tokenizer, rows, length_prompts, max_new_tokens, device_policy
) -> None:
    """Process-pool worker of ``train_all``: train and cache one run (one torch thread)."""
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    train_or_load(
        spec,
        reference,
        tokenizer,
        rows,
        length_prompts=length_prompts,
        max_new_tokens=max_new_tokens,
        device_policy=device_policy,
        progress=False,
    )


def train_or_load(
    spec: RunSpec,
    reference: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    length_prompts: Sequence[Any] | None = None,
    max_new_tokens: int = 64,
    device_policy: Any = None,
    progress: bool = True,
) -> Run:
    """The run ``spec`` from the cache, or trained from a copy of ``reference`` on ``rows`` and cached.

    DPO runs use reference log-probs precomputed once (``reference_logps``): the same numbers as a live
    reference forward, without the second model in each step. With ``spec.length_checkpoints`` and
    ``length_prompts``, the mean response length is measured at evenly spaced checkpoints (``info["length_curve"]``).
    """
    track = spec.length_checkpoints > 0 and length_prompts is not None
    key, target = run_location(
        spec, reference, rows, length_prompts=length_prompts, max_new_tokens=max_new_tokens
    )
    if (target / RUN_INFO).is_file():
        return _load_run(spec, key, target, device_policy)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        config = replace(spec.train, output_dir=None, save_every=None)
        if track:
            config = replace(
                config,
                output_dir=staging / "checkpoints",
                save_every=max(1, config.max_steps // spec.length_checkpoints),
            )
        mode = config.loss.reference_mode()  # DPO: log-probs precomputed once; the KL term: a live reference
        ref_model = reference if mode == "live" else None
        ref_logps = (
            reference_logps(reference, tokenizer, rows, config, device_policy=device_policy)
            if mode == "precomputed"
            else None
        )
        model = copy.deepcopy(reference)
        started = time.perf_counter()
        result = train(
            model,
            tokenizer,
            rows,
            config,
            ref_model=ref_model,
            ref_logps=ref_logps,
            device_policy=device_policy,
            progress=progress,
        )
        info = {
            "label": spec.label,
            "seed": config.seed,
            "train": _train_config_dict(config),
            "seconds": time.perf_counter() - started,
            "device": result.device,
            "history": result.history,
        }
        if track:
            info["length_curve"] = _length_curve(
                reference, tokenizer, [Path(c) for c in result.checkpoints], length_prompts, max_new_tokens
            )
            shutil.rmtree(staging / "checkpoints")
        model.save_pretrained(staging, safe_serialization=True)
        (staging / RUN_INFO).write_text(json.dumps(info, default=str))
        if not publish_folder(staging, target, replace=False) and not (target / RUN_INFO).is_file():
            raise FileExistsError(
                f"{target} exists and holds no finished run"
            )  # else: another process's copy
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    info.pop("history")
    return Run(spec, key, target, model.eval(), result.history, info)


# ------------------------------------------------------------------ the comparison of notebooks 04-05


def comparison_specs(
    setup: Any,
    *,
    seeds: Sequence[int],
    steps: int | None = None,
    learning_rate: float | None = None,
    beta: float | None = None,
    gamma: float | None = None,
    dpo_beta: float | None = None,
    dpo_learning_rate: float | None = None,
    length_checkpoints: int = 4,
) -> dict[str, list[RunSpec]]:
    """SimPO, DPO and SimPO without length normalisation at each seed: same data, steps, batch and seeds.

    ``setup`` is a ``hub.ProfileSetup``; None takes its ``defaults`` (``PROFILE_DEFAULTS``, tuned on dev by
    ``make experiments``). DPO gets its own tuned learning rate and beta (``dpo_learning_rate``, ``dpo_beta``;
    without them in the defaults: SimPO's rate and ``LossConfig("dpo")``'s beta). SimPO without length
    normalisation sums instead of averaging, with its own tuned rate and beta (``no_ln_learning_rate``,
    ``no_ln_beta``: summed log-probs are about an answer length larger) and SimPO's gamma/beta ratio; without
    them, SimPO's.
    """
    defaults = setup.defaults
    beta = defaults["beta"] if beta is None else beta
    gamma = defaults["gamma"] if gamma is None else gamma
    dpo_beta = defaults.get("dpo_beta") if dpo_beta is None else dpo_beta  # None: LossConfig's default
    simpo_rate = defaults["learning_rate"] if learning_rate is None else learning_rate
    dpo_rate = (
        defaults.get("dpo_learning_rate", simpo_rate) if dpo_learning_rate is None else dpo_learning_rate
    )
    no_ln_beta = defaults.get("no_ln_beta", beta)
    no_ln_rate = defaults.get("no_ln_learning_rate", simpo_rate) if learning_rate is None else learning_rate
    losses = {
        "simpo": LossConfig("simpo", beta=beta, gamma=gamma),
        "dpo": LossConfig("dpo", beta=dpo_beta),
        "simpo_no_ln": LossConfig(
            "simpo", beta=no_ln_beta, gamma=gamma * no_ln_beta / beta, length_normalize=False
        ),
    }
    rates = {"simpo": simpo_rate, "dpo": dpo_rate, "simpo_no_ln": no_ln_rate}

    def spec(label: str, loss: LossConfig, seed: int) -> RunSpec:
        config = TrainConfig(
            loss=loss,
            learning_rate=rates[label],
            max_steps=defaults["steps"] if steps is None else steps,
            batch_size=defaults["batch_size"],
            grad_accum_steps=defaults["grad_accum_steps"],
            warmup_ratio=defaults["warmup_ratio"],
            seed=seed,
            max_length=setup.max_length,
            max_prompt_length=setup.max_prompt_length,
            log_every=10,
        )
        return RunSpec(label, config, length_checkpoints)

    return {label: [spec(label, loss, seed) for seed in seeds] for label, loss in losses.items()}


def variant(spec: RunSpec, label: str, **loss_changes: Any) -> RunSpec:
    """The same training with other loss settings (e.g. ``gamma=3.0`` or ``beta=10``), no length tracking."""
    return RunSpec(label, replace(spec.train, loss=replace(spec.train.loss, **loss_changes)), 0)


def train_all(
    setup: Any,
    specs: Sequence[RunSpec],
    *,
    n_length_prompts: int = 64,
    max_new_tokens: int = 64,
    progress: bool = True,
    workers: int = 1,
) -> list[Run]:
    """``train_or_load`` each spec on the profile's data; length is tracked on the first held-out prompts.

    ``workers`` > 1 (CPU only): the runs missing from the cache train first in a pool of that many processes
    (one torch thread each, the same numbers as training here), then every run is loaded from the cache."""
    from transformers.utils import logging as hf_logging

    length_prompts = setup.eval_prompts[:n_length_prompts]
    if workers > 1 and setup.device_policy.device.type == "cpu":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        missing = [
            spec
            for spec in specs
            if not (
                run_location(
                    spec,
                    setup.model,
                    setup.train_rows,
                    length_prompts=length_prompts,
                    max_new_tokens=max_new_tokens,
                )[1]
                / RUN_INFO
            ).is_file()
        ]
        if missing:
            started = time.perf_counter()
            context = multiprocessing.get_context("spawn")  # a fresh interpreter: safe from a notebook
            with ProcessPoolExecutor(min(workers, len(missing)), mp_context=context) as pool:
                jobs = [
                    pool.submit(
                        _train_in_worker,
                        spec,
                        setup.model,
                        setup.tokenizer,
                        setup.train_rows,
                        length_prompts,
                        max_new_tokens,
                        setup.device_policy,
                    )
                    for spec in missing
                ]
                for job in tqdm(
                    jobs, desc=f"training {len(missing)} runs, {workers} processes", disable=not progress
                ):
                    job.result()
            if progress:
                print(f"trained {len(missing)} runs in {time.perf_counter() - started:.0f} s")
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar for every checkpoint
    runs = []
    try:
        bar = tqdm(specs, desc="runs", unit="run", disable=not progress)
        for spec in bar:
            bar.set_postfix_str(f"{spec.label} seed {spec.train.seed}")
            run = train_or_load(
                spec,
                setup.model,
                setup.tokenizer,
                setup.train_rows,
                length_prompts=length_prompts,
                max_new_tokens=max_new_tokens,
                device_policy=setup.device_policy,
                progress=False,
            )
            if progress:
                how = "reused from the cache" if run.reused else f"trained in {run.info['seconds']:.0f} s"
                bar.write(
                    f"{run.label:>14} seed {run.seed}: {how} ({run.seconds_per_step * 1000:.0f} ms/step)"
                )
            runs.append(run)
    finally:
        if bars_were_enabled:
            hf_logging.enable_progress_bar()
    return runs


def seed_band(runs: Sequence[Run], metric: str, *, window: int = 1) -> tuple[list[float], Any, Any, Any]:
    """(steps, mean, min, max) over seeds of a logged metric, each seed's curve first averaged over a trailing
    ``window`` of steps (the arrays are numpy [steps])."""
    import numpy as np

    if not runs:
        raise ValueError("seed_band needs at least one run")
    steps = [row["step"] for row in runs[0].history]
    curves = np.array([[row[metric] for row in run.history] for run in runs], dtype=float)  # [seeds, steps]
    if window > 1:
        cumulative = np.cumsum(np.pad(curves, ((0, 0), (1, 0))), axis=1)  # [seeds, steps + 1]
        starts = np.maximum(np.arange(curves.shape[1]) + 1 - window, 0)
        curves = (cumulative[:, 1:] - cumulative[:, starts]) / (np.arange(curves.shape[1]) + 1 - starts)
    return steps, curves.mean(axis=0), curves.min(axis=0), curves.max(axis=0)


# ------------------------------------------------------------------------------- cost of a step


def measure_step_cost(
    reference: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    config: TrainConfig,
    *,
    live_reference: bool = False,
    steps: int = 8,
    device_policy: Any = None,
) -> dict[str, Any]:
    """Seconds per optimizer step and peak extra memory of ``steps`` steps of ``config`` (not cached).

    DPO takes its reference as a live no-grad forward (``live_reference=True``: the reference model stays in
    memory) or as log-probs precomputed before the clock starts (the precomputation time is reported apart).
    ``weights_held_mb``: parameters that must stay resident (policy, plus the reference when live).
    """
    config = replace(config, max_steps=steps, log_every=steps, output_dir=None, save_every=None)
    subset = [rows[i] for i in range(min(len(rows), steps * config.examples_per_step))]  # list or Dataset
    model = copy.deepcopy(reference)
    extra: dict[str, Any] = {}
    precompute_seconds = 0.0
    mode = config.loss.reference_mode("live" if live_reference else "precomputed")
    if mode == "live":
        extra["ref_model"] = reference
    elif mode == "precomputed":
        started = time.perf_counter()
        collator = PreferenceCollator(
            tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length
        )
        extra["ref_logps"] = precompute_reference_logps(
            reference,
            subset,
            collator,
            config.batch_size,
            length_normalize=config.loss.length_normalize,
            device_policy=device_policy,
        )
        precompute_seconds = time.perf_counter() - started
    device = device_policy.device if device_policy is not None else next(reference.parameters()).device
    with PeakMemory(device) as peak:
        result = train(model, tokenizer, subset, config, device_policy=device_policy, progress=False, **extra)
    seconds = [row["seconds"] for row in result.history[1:]] or [result.history[0]["seconds"]]
    held = parameter_bytes(model) + (parameter_bytes(reference) if "ref_model" in extra else 0)
    return {
        "seconds_per_step": float(statistics.median(seconds)),
        "peak_extra_mb": None if peak.peak_bytes is None else peak.peak_bytes / 2**20,
        "weights_held_mb": held / 2**20,
        "memory_method": peak.method,
        "precompute_seconds": precompute_seconds,
        "precompute_pairs": len(subset) if "ref_logps" in extra else 0,
    }
