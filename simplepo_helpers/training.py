"""SimPO / DPO training: one concatenated forward, the loss by name, the optimizer step, the loop.

Batches follow the kit's layout (``docs/architecture.md``): ``[2B, T]`` tensors, rows ``0..B-1`` chosen and
``B..2B-1`` rejected, labels ``-100`` outside the responses. Metric names match TRL's.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import SchedulerType, get_scheduler, set_seed

from .batching import IGNORE_INDEX, PreferenceCollator
from .checkpoint import checkpoint_path, find_latest_checkpoint, load_checkpoint, save_checkpoint
from .device import DevicePolicy, select_device
from .logps import sequence_logps
from .losses import dpo_loss, kl_penalty, sft_nll_loss, simpo_loss

LOSS_NAMES = ("simpo", "dpo")
_DEFAULT_BETA = {"simpo": 2.0, "dpo": 0.1}  # SimPO: paper's 2-10 range; DPO: TRL's default
_DEFAULT_GAMMA = {"simpo": 1.0, "dpo": 0.0}  # beta 2.0, gamma 1.0 = the paper's Llama-3-8B Base setting


class NonFiniteLossError(RuntimeError):
    """A loss or metric became NaN/inf; ``step`` and ``metric`` say where."""

    def __init__(self, step: int | None, metric: str, value: float) -> None:
        where = f"step {step}" if step is not None else "this step"
        super().__init__(
            f"non-finite {metric} ({value}) at {where}: lower the learning rate, check the data "
            "(empty responses?) or use float32"
        )
        self.step, self.metric, self.value = step, metric, value


@dataclass
class LossConfig:
    """Which preference loss, with its hyper-parameters.

    gamma is SimPO's target reward margin in the paper's absolute convention (TRL ``simpo_gamma``); the
    authors' ``gamma_beta_ratio`` is ``gamma / beta``. ``length_normalize`` defaults to True for SimPO
    (average log-prob) and False for DPO (summed); SimPO with False is the paper's ablation without length
    normalisation. ``sft_weight`` adds the token-weighted NLL of the chosen responses (CPO-SimPO,
    TRL ``cpo_alpha``); ``kl_weight`` adds a KL penalty towards a reference model. None means the
    per-loss default (beta 2.0 / 0.1, gamma 1.0 / 0.0), filled in at construction: build a new LossConfig
    to switch losses rather than ``dataclasses.replace(cfg, name=...)``, which keeps the filled-in values.
    """

    name: str = "simpo"
    beta: float | None = None
    gamma: float | None = None
    label_smoothing: float = 0.0
    loss_type: str = "sigmoid"
    length_normalize: bool | None = None
    sft_weight: float = 0.0
    kl_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in LOSS_NAMES:
            raise ValueError(f"LossConfig.name must be one of {LOSS_NAMES}, got {self.name!r}")
        self.beta = _DEFAULT_BETA[self.name] if self.beta is None else float(self.beta)
        self.gamma = _DEFAULT_GAMMA[self.name] if self.gamma is None else float(self.gamma)
        if self.length_normalize is None:
            self.length_normalize = self.name == "simpo"
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise ValueError(f"gamma (SimPO's absolute target margin) must be >= 0, got {self.gamma}")
        if self.name == "dpo" and self.gamma != 0:
            raise ValueError(
                f"gamma is SimPO's target margin and DPO has none; got gamma={self.gamma} with dpo"
            )
        for name in ("sft_weight", "kl_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0 (0 turns the term off), got {value}")
        self._check_with_loss_function()

    def _check_with_loss_function(self) -> None:
        """Let the loss function itself reject a bad beta, label_smoothing or loss_type (one dummy pair)."""
        zero = torch.zeros(1)
        try:
            self.pairwise_loss(zero, zero, zero, zero)
        except ValueError as exc:
            raise ValueError(f"LossConfig(name={self.name!r}): {exc}") from exc

    @property
    def needs_reference(self) -> bool:
        """DPO's reward and the KL term need reference log-probs."""
        return self.name == "dpo" or self.kl_weight > 0

    def pairwise_loss(
        self,
        chosen_logps: torch.Tensor,
        rejected_logps: torch.Tensor,
        ref_chosen_logps: torch.Tensor | None = None,
        ref_rejected_logps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(losses [B], chosen_rewards [B], rejected_rewards [B]) from ``losses.simpo_loss`` / ``dpo_loss``."""
        common = {"beta": self.beta, "label_smoothing": self.label_smoothing, "loss_type": self.loss_type}
        if self.name == "simpo":
            return simpo_loss(chosen_logps, rejected_logps, gamma=self.gamma, **common)
        return dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, **common)


def _check_batch(batch: Mapping[str, torch.Tensor]) -> int:
    """Validate the [2B, T] layout; return B."""
    for key in ("input_ids", "attention_mask", "labels"):
        if key not in batch:
            raise KeyError(f"batch has no {key!r} (keys: {sorted(batch)}); build it with PreferenceCollator")
    rows, length = batch["input_ids"].shape
    if rows == 0 or rows % 2:
        raise ValueError(
            f"a preference batch needs an even, positive number of rows (chosen + rejected), got {rows}"
        )
    for key in ("attention_mask", "labels"):
        if tuple(batch[key].shape) != (rows, length):
            raise ValueError(f"batch[{key!r}] has shape {tuple(batch[key].shape)}, expected {(rows, length)}")
    return rows // 2


def concatenated_forward(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], *, average: bool) -> dict:
    """One forward pass over the stacked chosen+rejected batch.

    Returns ``chosen_logps`` and ``rejected_logps`` [B] (average or summed over response tokens),
    ``logits`` [2B, T, V] and ``labels`` [2B, T] on the model's device.
    """
    num_pairs = _check_batch(batch)
    device = next(model.parameters()).device
    labels = batch["labels"].to(device)  # [2B, T]
    outputs = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        use_cache=False,
    )
    logits = outputs.logits  # [2B, T, V]; bf16/fp16 under autocast (sequence_logps scores in float32)
    logps = sequence_logps(logits, labels, average=average)  # [2B], float32
    return {
        "chosen_logps": logps[:num_pairs],
        "rejected_logps": logps[num_pairs:],
        "logits": logits,
        "labels": labels,
    }


@torch.no_grad()
def _reference_forward(
    ref_model: torch.nn.Module, batch: Mapping[str, torch.Tensor], *, average: bool
) -> dict:
    ref_model.eval()
    return concatenated_forward(ref_model, batch, average=average)


def _loss_terms(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    loss_config: LossConfig,
    ref_model: torch.nn.Module | None,
) -> dict[str, Any]:
    """Per-example preference losses, rewards, logps and the optional regularisers of one batch."""
    average = loss_config.length_normalize
    policy_out = concatenated_forward(model, batch, average=average)
    num_pairs = policy_out["chosen_logps"].shape[0]
    has_precomputed = "ref_chosen_logps" in batch and "ref_rejected_logps" in batch
    needs_live_ref = (loss_config.name == "dpo" and not has_precomputed) or loss_config.kl_weight > 0
    if needs_live_ref and ref_model is None:
        need = "the KL term (kl_weight > 0)" if loss_config.kl_weight > 0 else "DPO"
        raise ValueError(f"{need} needs a reference: pass ref_model (or, for DPO, precomputed ref logps)")
    ref_out = _reference_forward(ref_model, batch, average=average) if needs_live_ref else None

    ref_chosen = ref_rejected = None
    if loss_config.name == "dpo":
        if has_precomputed:
            device = policy_out["chosen_logps"].device
            ref_chosen = batch["ref_chosen_logps"].to(device, torch.float32)  # [B]
            ref_rejected = batch["ref_rejected_logps"].to(device, torch.float32)  # [B]
            if ref_chosen.shape != (num_pairs,) or ref_rejected.shape != (num_pairs,):
                raise ValueError(
                    f"precomputed ref logps have shapes {tuple(ref_chosen.shape)}/{tuple(ref_rejected.shape)}, "
                    f"expected ({num_pairs},)"
                )
        else:
            ref_chosen, ref_rejected = ref_out["chosen_logps"], ref_out["rejected_logps"]
    losses, chosen_rewards, rejected_rewards = loss_config.pairwise_loss(
        policy_out["chosen_logps"], policy_out["rejected_logps"], ref_chosen, ref_rejected
    )
    terms: dict[str, Any] = {
        "losses": losses,  # [B]
        "chosen_rewards": chosen_rewards.detach(),
        "rejected_rewards": rejected_rewards.detach(),
        "chosen_logps": policy_out["chosen_logps"].detach(),
        "rejected_logps": policy_out["rejected_logps"].detach(),
    }
    chosen_logits, chosen_labels = policy_out["logits"][:num_pairs], policy_out["labels"][:num_pairs]
    if loss_config.sft_weight > 0:
        terms["nll_loss"] = sft_nll_loss(chosen_logits, chosen_labels)
    if loss_config.kl_weight > 0:
        terms["kl"] = kl_penalty(policy_out["logits"], ref_out["logits"], policy_out["labels"])
    return terms


def _metrics_from_terms(terms: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Per-example metric tensors [B] under TRL's names."""
    chosen, rejected = terms["chosen_rewards"], terms["rejected_rewards"]
    return {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
        "rewards/accuracies": (chosen > rejected).float(),
        "logps/chosen": terms["chosen_logps"],
        "logps/rejected": terms["rejected_logps"],
    }


def _response_token_count(labels: torch.Tensor) -> int:
    """Tokens scored after the causal shift (the label at t+1 is predicted by the logits at t)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def _weighted_loss(
    terms: Mapping[str, Any], loss_config: LossConfig, *, total_pairs: int, nll_share: float, kl_share: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """This batch's part of the loss of a larger batch, and its part of the metrics.

    The preference loss is a mean over all ``total_pairs`` pairs; the NLL and KL terms are token-weighted,
    so this batch contributes its share of the response tokens (``nll_share``, ``kl_share``).
    """
    loss = terms["losses"].sum() / total_pairs
    metrics = {name: value.sum().item() / total_pairs for name, value in _metrics_from_terms(terms).items()}
    if "nll_loss" in terms:
        loss = loss + loss_config.sft_weight * nll_share * terms["nll_loss"]
        metrics["nll_loss"] = nll_share * terms["nll_loss"].item()
    if "kl" in terms:
        loss = loss + loss_config.kl_weight * kl_share * terms["kl"]
        metrics["kl"] = kl_share * terms["kl"].item()
    metrics["loss"] = loss.item()
    return loss, metrics


def preference_loss(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    loss_config: LossConfig,
    *,
    ref_model: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch (mean over pairs, plus the weighted regularisers) and its metrics as floats.

    DPO takes the reference log-probs from ``batch["ref_chosen_logps"]``/``["ref_rejected_logps"]`` when
    present, else from a no-grad forward of ``ref_model`` (put in eval mode).
    """
    terms = _loss_terms(model, batch, loss_config, ref_model)
    num_pairs = terms["losses"].shape[0]
    return _weighted_loss(terms, loss_config, total_pairs=num_pairs, nll_share=1.0, kl_share=1.0)


def training_step(
    model: torch.nn.Module,
    micro_batches: Sequence[Mapping[str, torch.Tensor]] | Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    loss_config: LossConfig,
    *,
    ref_model: torch.nn.Module | None = None,
    max_grad_norm: float | None = 1.0,
    policy: DevicePolicy | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
    step: int | None = None,
) -> dict[str, float]:
    """One optimizer step over ``micro_batches`` (gradient accumulation), returning the step's metrics.

    Each micro-batch's loss is weighted by its share of the effective batch (examples for the preference
    loss, response tokens for the token-weighted NLL / KL terms), so k micro-batches give the gradients and
    metrics of one batch holding all of them, whatever their sizes. Clips the gradient norm (``grad_norm``
    is the norm before clipping; ``max_grad_norm=None`` disables clipping), steps optimizer and scheduler,
    zeroes the gradients. Raises ``NonFiniteLossError`` (naming ``step``) before a NaN reaches the weights.
    ``policy`` gives autocast; with an fp16 policy pass ``grad_scaler=policy.make_grad_scaler()`` (kept
    across steps by the caller). A single batch dict is accepted as one micro-batch.
    """
    if isinstance(micro_batches, Mapping):
        micro_batches = [micro_batches]
    if not micro_batches:
        raise ValueError("training_step needs at least one micro-batch")
    if policy is not None and policy.use_grad_scaler and grad_scaler is None:
        raise ValueError(
            "this DevicePolicy uses fp16: pass grad_scaler=policy.make_grad_scaler() (keep it across steps)"
        )
    pairs = [_check_batch(batch) for batch in micro_batches]
    chosen_tokens = [
        _response_token_count(batch["labels"][:n]) for batch, n in zip(micro_batches, pairs, strict=True)
    ]
    all_tokens = [_response_token_count(batch["labels"]) for batch in micro_batches]
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    for index, batch in enumerate(micro_batches):
        with policy.autocast() if policy is not None else contextlib.nullcontext():
            terms = _loss_terms(model, batch, loss_config, ref_model)
        loss, metrics = _weighted_loss(
            terms,
            loss_config,
            total_pairs=sum(pairs),
            nll_share=chosen_tokens[index] / sum(chosen_tokens),
            kl_share=all_tokens[index] / sum(all_tokens),
        )
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + value
        if not math.isfinite(metrics["loss"]):
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(step, "loss", metrics["loss"])
        (grad_scaler.scale(loss) if grad_scaler is not None else loss).backward()

    for name, value in sums.items():
        if not math.isfinite(value):
            raise NonFiniteLossError(step, name, value)
    if grad_scaler is not None:
        grad_scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm else math.inf).item()
    learning_rate = optimizer.param_groups[0]["lr"]
    if grad_scaler is not None:
        # fp16: an inf/NaN gradient is expected now and then; the scaler skips that step and lowers its scale
        scale_before = grad_scaler.get_scale()
        grad_scaler.step(optimizer)
        grad_scaler.update()
        stepped = grad_scaler.get_scale() >= scale_before
    else:
        if not math.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(step, "grad_norm", grad_norm)
        optimizer.step()
        stepped = True
    if scheduler is not None and stepped:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {**sums, "grad_norm": grad_norm, "lr": learning_rate}


@torch.no_grad()
def precompute_reference_logps(
    ref_model: torch.nn.Module,
    examples: Sequence[Mapping[str, Any]],
    collator: PreferenceCollator,
    batch_size: int,
    *,
    average: bool = False,
    policy: DevicePolicy | None = None,
) -> dict[str, Any]:
    """Reference log-probs of every example, in order, for DPO without a live reference model.

    Returns ``{"ref_chosen_logps": [N], "ref_rejected_logps": [N], "average": average}`` (float32, CPU);
    ``average`` must match the loss's ``length_normalize`` (``train`` checks it).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chosen, rejected = [], []
    for start in range(0, len(examples), batch_size):
        indices = list(range(start, min(start + batch_size, len(examples))))
        batch = collate_examples(collator, examples, indices, context="reference log-probs")
        with policy.autocast() if policy is not None else contextlib.nullcontext():
            out = _reference_forward(ref_model, batch, average=average)
        chosen.append(out["chosen_logps"].float().cpu())
        rejected.append(out["rejected_logps"].float().cpu())
    if not chosen:
        raise ValueError("precompute_reference_logps got no examples")
    return {
        "ref_chosen_logps": torch.cat(chosen),
        "ref_rejected_logps": torch.cat(rejected),
        "average": average,
    }


@dataclass
class TrainConfig:
    """Everything ``train`` needs besides the model, tokenizer and data.

    ``max_steps`` counts optimizer steps; each takes ``grad_accum_steps`` micro-batches of ``batch_size``
    pairs. The learning-rate schedule comes from ``transformers.get_scheduler`` with
    ``ceil(warmup_ratio * max_steps)`` warm-up steps. Weight decay applies to matrices only (not to norms
    or biases). ``output_dir=None`` saves nothing; otherwise checkpoints go to
    ``output_dir/checkpoint-<step>`` every ``save_every`` steps and at the end.
    """

    loss: LossConfig = field(default_factory=LossConfig)
    learning_rate: float = 1e-5
    max_steps: int = 100
    batch_size: int = 4
    grad_accum_steps: int = 1
    max_grad_norm: float | None = 1.0
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    seed: int = 42
    max_length: int | None = None
    max_prompt_length: int | None = None
    log_every: int = 10
    save_every: int | None = None
    output_dir: str | Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.loss, Mapping):  # e.g. a config read back from trainer_state.json
            self.loss = LossConfig(**self.loss)
        for name in ("max_steps", "batch_size", "grad_accum_steps", "log_every"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.save_every is not None and not (isinstance(self.save_every, int) and self.save_every >= 1):
            raise ValueError(f"save_every must be None or an integer >= 1, got {self.save_every!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None (no clipping), got {self.max_grad_norm}")
        SchedulerType(self.lr_scheduler_type)  # raises ValueError listing the valid names
        if self.lr_scheduler_type == "reduce_lr_on_plateau":
            raise ValueError("reduce_lr_on_plateau needs an evaluation metric; train() has none")

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.grad_accum_steps


@dataclass
class TrainResult:
    """Per-step history (dicts with step, epoch, lr, seconds, tokens and the metrics) and the final metrics."""

    history: list[dict[str, float]]
    final_metrics: dict[str, float]
    optimizer_impl: str
    device: str
    checkpoints: list[str] = field(default_factory=list)

    def to_dataframe(self):
        """The history as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("TrainResult.to_dataframe needs pandas: pip install pandas") from exc
        return pd.DataFrame(self.history)

    def plot(self, title: str | None = None):
        """A matplotlib Figure: loss, reward accuracy, reward margin, chosen/rejected log-probs per step."""
        from matplotlib.figure import Figure

        steps = [row["step"] for row in self.history]
        figure = Figure(figsize=(12, 3))
        axes = figure.subplots(1, 4)
        panels = [
            ("loss", ["loss"]),
            ("reward accuracy", ["rewards/accuracies"]),
            ("reward margin", ["rewards/margins"]),
            ("log-probs", ["logps/chosen", "logps/rejected"]),
        ]
        for axis, (label, names) in zip(axes, panels, strict=True):
            for name in names:
                axis.plot(steps, [row[name] for row in self.history], label=name)
            axis.set_title(label)
            axis.set_xlabel("step")
            if len(names) > 1:
                axis.legend()
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        return figure


class ShuffledStream:
    """An endless stream of example indices: epoch e is a permutation seeded by (seed, e).

    Position p of the stream is a pure function of p, so a resumed run sees exactly the same batches.
    """

    def __init__(self, num_examples: int, seed: int) -> None:
        self.num_examples, self.seed = num_examples, seed
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def take(self, start: int, count: int) -> list[int]:
        out = []
        for position in range(start, start + count):
            epoch, offset = divmod(position, self.num_examples)
            if epoch != self._epoch:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._epoch, self._order = epoch, torch.randperm(self.num_examples, generator=generator)
            out.append(int(self._order[offset]))
        return out


def collate_examples(
    collator: PreferenceCollator, examples: Sequence[Mapping[str, Any]], indices: list[int], *, context: str
) -> dict[str, torch.Tensor]:
    try:
        return collator([examples[i] for i in indices])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{context}: could not collate examples {indices} (row k = examples[{indices}][k]): {exc}"
        ) from exc


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> tuple[torch.optim.AdamW, str]:
    """AdamW (fused where torch supports it for these parameters), weight decay on matrices only."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad is False everywhere)")
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        fused_devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # older torch: fused AdamW existed for CUDA
        fused_devices = {"cuda"}
    fusable = all(p.device.type in fused_devices and p.is_floating_point() for p in params)
    if fusable:
        return torch.optim.AdamW(groups, lr=config.learning_rate, fused=True), "fused"
    return torch.optim.AdamW(groups, lr=config.learning_rate), "default (foreach where available)"


@dataclass
class Optimization:
    """The optimizer, learning-rate schedule and fp16 grad scaler of one run, built and stepped together."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    grad_scaler: torch.amp.GradScaler | None
    impl: str  # the AdamW implementation, for the run's records

    @classmethod
    def build(cls, model: torch.nn.Module, config: TrainConfig, policy: DevicePolicy) -> Optimization:
        """``build_optimizer`` + ``config``'s transformers schedule + the policy's grad scaler (fp16 only)."""
        optimizer, impl = build_optimizer(model, config)
        scheduler = get_scheduler(
            config.lr_scheduler_type,
            optimizer,
            num_warmup_steps=math.ceil(config.warmup_ratio * config.max_steps),
            num_training_steps=config.max_steps,
        )
        return cls(optimizer, scheduler, policy.make_grad_scaler(), impl)

    def state_objects(self, model: torch.nn.Module) -> dict[str, Any]:
        """What a checkpoint saves and a resume loads (keyword arguments of ``save_checkpoint``)."""
        return {
            "model": model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "grad_scaler": self.grad_scaler,
        }

    def step(
        self,
        model: torch.nn.Module,
        micro_batches: Sequence[Mapping[str, torch.Tensor]],
        config: TrainConfig,
        *,
        ref_model: torch.nn.Module | None,
        policy: DevicePolicy,
        step: int,
    ) -> dict[str, float]:
        """:func:`training_step` with this run's optimizer, schedule, scaler and ``config``'s loss and clipping."""
        return training_step(
            model,
            micro_batches,
            self.optimizer,
            self.scheduler,
            config.loss,
            ref_model=ref_model,
            max_grad_norm=config.max_grad_norm,
            policy=policy,
            grad_scaler=self.grad_scaler,
            step=step,
        )


def _check_ref_logps(ref_logps: Mapping[str, Any], num_examples: int, loss_config: LossConfig) -> dict:
    if "average" in ref_logps and bool(ref_logps["average"]) != loss_config.length_normalize:
        raise ValueError(
            f"ref_logps were computed with average={ref_logps['average']} but the loss uses "
            f"length_normalize={loss_config.length_normalize}"
        )
    checked = {}
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        if key not in ref_logps:
            raise KeyError(f"ref_logps lacks {key!r}; build it with precompute_reference_logps")
        values = torch.as_tensor(ref_logps[key], dtype=torch.float32).flatten()
        if values.numel() != num_examples:
            raise ValueError(f"ref_logps[{key!r}] has {values.numel()} values for {num_examples} examples")
        bad = (~torch.isfinite(values)).nonzero().flatten()
        if bad.numel():
            raise ValueError(f"ref_logps[{key!r}] is not finite at example {int(bad[0])}")
        checked[key] = values
    return checked


class _BatchSource:
    """The micro-batches of each optimizer step, from a seeded stream over the examples."""

    def __init__(self, examples, collator, config: TrainConfig, ref_logps: dict | None) -> None:
        self.examples, self.collator, self.config, self.ref_logps = examples, collator, config, ref_logps
        self.stream = ShuffledStream(len(examples), config.seed)

    def micro_batches(self, step: int) -> list[dict[str, torch.Tensor]]:
        size = self.config.batch_size
        first = (step - 1) * self.config.examples_per_step  # steps count from 1
        batches = []
        for micro in range(self.config.grad_accum_steps):
            indices = self.stream.take(first + micro * size, size)
            batch = collate_examples(self.collator, self.examples, indices, context=f"step {step}")
            if self.ref_logps is not None:
                batch.update({key: values[indices] for key, values in self.ref_logps.items()})
            batches.append(batch)
        return batches


_RESUME_KEYS = ("seed", "batch_size", "grad_accum_steps", "num_examples")


def resume_state(
    resume_from: str | Path, run_info: dict, config: TrainConfig, **state_objects
) -> tuple[int, list]:
    """Load the checkpoint (or an output_dir's latest) into the run; return (step, history)."""
    checkpoint = find_latest_checkpoint(resume_from) or Path(resume_from)
    state = load_checkpoint(checkpoint, **state_objects)
    saved = {**(state["config"] or {}), **state["extra"]}
    current = {**vars(config), **run_info}
    mismatched = [key for key in _RESUME_KEYS if key in saved and saved[key] != current[key]]
    if mismatched:
        raise ValueError(
            f"cannot resume from {checkpoint}: {mismatched} differ, so the batch order would change"
        )
    return state["step"], state["history"]


def _check_reference(
    loss_config: LossConfig, model, ref_model, ref_logps, num_examples: int, policy: DevicePolicy
) -> dict | None:
    if loss_config.name == "dpo" and ref_model is None and ref_logps is None:
        raise ValueError(
            "DPO needs a reference: pass ref_model=... or ref_logps=precompute_reference_logps(...)"
        )
    if loss_config.kl_weight > 0 and ref_model is None:
        raise ValueError("kl_weight > 0 needs ref_model (the KL term compares full next-token distributions)")
    if policy.use_grad_scaler and any(
        p.dtype == torch.float16 for p in model.parameters() if p.requires_grad
    ):
        raise ValueError("fp16 autocast needs float32 parameters (GradScaler cannot unscale fp16 gradients)")
    return _check_ref_logps(ref_logps, num_examples, loss_config) if ref_logps is not None else None


def train(
    model: torch.nn.Module,
    tokenizer: Any,
    train_examples: Sequence[Mapping[str, Any]],
    config: TrainConfig,
    *,
    ref_model: torch.nn.Module | None = None,
    ref_logps: Mapping[str, Any] | None = None,
    policy: DevicePolicy | None = None,
    resume_from: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on preference examples (a list of dicts or a ``datasets.Dataset``) for ``max_steps``.

    DPO needs ``ref_model`` (live no-grad forward) or ``ref_logps`` from ``precompute_reference_logps``
    (used when both are given; the KL term always needs ``ref_model``).
    ``resume_from`` is a checkpoint folder or an ``output_dir`` (its latest checkpoint is used); the resumed
    run continues with the same batch order, optimizer, scheduler and RNG states. The model is moved to the
    policy's device, trained in train mode and left in eval mode.
    """
    num_examples = len(train_examples)
    if num_examples == 0:
        raise ValueError("train_examples is empty")
    loss_config = config.loss
    policy = policy if policy is not None else select_device(verbose=progress)
    checked_ref_logps = _check_reference(loss_config, model, ref_model, ref_logps, num_examples, policy)
    model.to(policy.device)
    if ref_model is not None:
        ref_model.to(policy.device).eval()
    set_seed(config.seed)  # python, numpy and torch RNGs (dropout); the data order has its own generator

    collator = PreferenceCollator(
        tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length
    )
    source = _BatchSource(train_examples, collator, config, checked_ref_logps)
    optimization = Optimization.build(model, config, policy)
    state_objects = optimization.state_objects(model)
    run_info = {"num_examples": num_examples, "optimizer_impl": optimization.impl, "device": policy.describe()}
    start_step, history = 0, []
    if resume_from is not None:
        start_step, history = resume_state(resume_from, run_info, config, **state_objects)
    checkpoints: list[str] = []

    def save(step: int) -> None:
        path = checkpoint_path(config.output_dir, step)
        save_checkpoint(path, step=step, config=config, history=history, extra=run_info, **state_objects)
        checkpoints.append(str(path))

    model.train()
    bar = tqdm(
        total=config.max_steps, initial=start_step, disable=not progress, desc=f"{loss_config.name} training"
    )
    try:
        for step in range(start_step + 1, config.max_steps + 1):
            started = time.perf_counter()
            micro_batches = source.micro_batches(step)
            metrics = optimization.step(model, micro_batches, config, ref_model=ref_model, policy=policy, step=step)
            history.append(
                {
                    "step": step,
                    "epoch": step * config.examples_per_step / num_examples,
                    **metrics,
                    "tokens": sum(int(batch["attention_mask"].sum()) for batch in micro_batches),
                    "seconds": time.perf_counter() - started,
                }
            )
            bar.update(1)
            if step % config.log_every == 0 or step == config.max_steps:
                recent = history[-config.log_every :]
                bar.set_postfix(
                    loss=f"{sum(row['loss'] for row in recent) / len(recent):.4f}",
                    acc=f"{sum(row['rewards/accuracies'] for row in recent) / len(recent):.2f}",
                )
            if config.output_dir is not None and config.save_every and step % config.save_every == 0:
                save(step)
    finally:
        bar.close()
    last_step = history[-1]["step"] if history else start_step
    if config.output_dir is not None and not (config.save_every and last_step % config.save_every == 0):
        save(last_step)
    model.eval()
    final = {k: v for k, v in history[-1].items() if k != "seconds"} if history else {}
    return TrainResult(history, final, optimization.impl, policy.describe(), checkpoints)
