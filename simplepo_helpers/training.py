"""SimPO / DPO training, in reading order: the loss settings, the run settings, one forward over chosen and
rejected, the loss of a batch, one optimizer step, and ``train``, the kit's only training loop. Batches are
``[2B, T]`` (rows ``0..B-1`` chosen, ``B..2B-1`` rejected, labels -100 off the responses); metrics use TRL's names.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm
from transformers import SchedulerType, set_seed

from . import fast  # the door to the fast path: concatenated_forward(layout="packed" / "auto") only
from .batching import PreferenceCollator, check_preference_batch, response_token_count
from .logps import require_response_tokens, token_logps
from .losses import dpo_loss, kl_penalty, orpo_odds_ratio_loss, rdpo_loss, simpo_loss, token_weighted_nll
from .runtime.batch_order import MicroBatches, PreferenceBatches
from .runtime.checkpoint import checkpoint_path, resume_state, save_checkpoint
from .runtime.device import DevicePolicy, select_device
from .runtime.fields import check_field_types
from .runtime.optim import Optimization
from .runtime.trackers import MetricsReporter
from .runtime.train_result import NonFiniteLossError, TrainResult

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

# The library's defaults, stated once. SimPO: the paper's Llama-3-8B Base setting; DPO, R-DPO: TRL's DPO default;
# ORPO: its lambda, TRL's ORPOConfig default; "sft" (no preference term, a baseline) has no beta and no gamma.
DEFAULT_BETA = {"simpo": 2.0, "dpo": 0.1, "sft": 1.0, "orpo": 0.1, "rdpo": 0.1}
DEFAULT_GAMMA = {"simpo": 1.0, "dpo": 0.0, "sft": 0.0, "orpo": 0.0, "rdpo": 0.0}
REFERENCE_LOSSES = ("dpo", "rdpo")  # their reward is a log-ratio to the reference (they read its log-probs)


@dataclass
class LossConfig:
    """Which preference loss, with its hyper-parameters (None: the per-loss default, filled in here).

    ``gamma``: SimPO's absolute target margin (TRL ``simpo_gamma``; the authors' ``gamma_beta_ratio`` is
    gamma / beta). ``length_normalize``: average log-probs (SimPO) or sums (DPO). ``sft_weight``: the chosen
    responses' NLL (CPO-SimPO, TRL ``cpo_alpha``); ``kl_weight``: a KL penalty towards the reference.
    ``"sft"``: that NLL alone (a baseline; its "rewards" are the average log-probs). The family: cDPO
    (``label_smoothing``), IPO (``loss_type="ipo"``), R-DPO (``"rdpo"``, length term ``alpha``), ORPO
    (``"orpo"``: odds-ratio term, ``beta`` its lambda, plus the NLL; no reference).
    """

    name: str = "simpo"
    beta: float | None = None
    gamma: float | None = None
    label_smoothing: float = 0.0
    loss_type: str = "sigmoid"
    length_normalize: bool | None = None
    sft_weight: float = 0.0
    kl_weight: float = 0.0
    alpha: float = 0.0  # R-DPO's length penalty, per token of length difference

    def __post_init__(self) -> None:
        if self.name not in DEFAULT_BETA:
            raise ValueError(f"LossConfig.name must be one of {tuple(DEFAULT_BETA)}, got {self.name!r}")
        self.beta = DEFAULT_BETA[self.name] if self.beta is None else float(self.beta)
        self.gamma = DEFAULT_GAMMA[self.name] if self.gamma is None else float(self.gamma)
        if self.length_normalize is None:
            self.length_normalize = self.name not in REFERENCE_LOSSES
        if self.name in ("sft", "orpo") and self.sft_weight == 0:
            self.sft_weight = 1.0  # SFT is the NLL term alone; ORPO's loss is NLL + lambda * odds-ratio term
        if self.name == "orpo" and not self.length_normalize:
            raise ValueError("ORPO's odds are those of the average log-prob: length_normalize must be True")
        if self.alpha and self.name != "rdpo":
            raise ValueError(f"alpha is R-DPO's length penalty; {self.name} has none, got alpha={self.alpha}")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise ValueError(f"gamma (SimPO's absolute target margin) must be >= 0, got {self.gamma}")
        if self.name != "simpo" and self.gamma != 0:
            raise ValueError(
                f"gamma is SimPO's target margin and {self.name} has none; got gamma={self.gamma} with {self.name}"
            )
        for name in ("sft_weight", "kl_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be >= 0 (0 turns the term off), got {getattr(self, name)}")
        try:  # let the loss function itself reject a bad beta, label_smoothing or loss_type
            zero, minus_one = torch.zeros(1), -torch.ones(1)
            self.pairwise_loss(minus_one, minus_one, zero, zero, zero, zero)
        except ValueError as exc:
            raise ValueError(f"LossConfig(name={self.name!r}): {exc}") from exc

    # The one place that decides what a run needs from its reference model.
    @property
    def needs_reference(self) -> bool:
        """DPO's reward and the KL term compare the policy with a reference."""
        return self.name in REFERENCE_LOSSES or self.kl_weight > 0

    @property
    def needs_reference_model(self) -> bool:
        """The KL term compares whole next-token distributions: precomputed log-probs cannot stand in."""
        return self.kl_weight > 0

    def check_reference(self, ref_model: torch.nn.Module | None, has_ref_logps: bool) -> None:
        """Raise when this loss needs a reference that was not given."""
        if self.needs_reference_model and ref_model is None:
            raise ValueError("kl_weight > 0 needs ref_model (the KL term compares whole distributions)")
        if self.needs_reference and ref_model is None and not has_ref_logps:
            raise ValueError(
                "DPO needs a reference: pass ref_model=... or ref_logps=precompute_reference_logps(...)"
            )

    def reference_mode(self, prefer: str = "precomputed") -> str:
        """How a run gets its reference: ``"none"`` (SimPO), ``"precomputed"`` (DPO's log-probs scored once
        before training) or ``"live"`` (a no-grad reference forward in every step; always for the KL term).
        ``prefer="live"`` keeps a live reference where precomputed log-probs would do."""
        if prefer not in ("precomputed", "live"):
            raise ValueError(f"prefer must be 'precomputed' or 'live', got {prefer!r}")
        if not self.needs_reference:
            return "none"
        return "live" if self.needs_reference_model or prefer == "live" else "precomputed"

    def reference_forward(self, ref_model: torch.nn.Module | None, has_ref_logps: bool) -> bool:
        """Whether a step runs the reference model (live) rather than reading precomputed log-probs; raises
        when this loss needs a reference that was not given."""
        self.check_reference(ref_model, has_ref_logps)
        return self.needs_reference_model or (self.needs_reference and not has_ref_logps)

    def pairwise_loss(
        self,
        chosen_logps,
        rejected_logps,
        ref_chosen_logps=None,
        ref_rejected_logps=None,
        chosen_lengths=None,
        rejected_lengths=None,
    ):
        """(losses [B], chosen_rewards [B], rejected_rewards [B]) from ``simpo_loss``, ``dpo_loss``,
        ``rdpo_loss`` (which also needs the response token counts [B]) or ``orpo_odds_ratio_loss``."""
        common = {"beta": self.beta, "label_smoothing": self.label_smoothing, "loss_type": self.loss_type}
        refs, lengths = (ref_chosen_logps, ref_rejected_logps), (chosen_lengths, rejected_lengths)
        if self.name == "simpo":
            return simpo_loss(chosen_logps, rejected_logps, gamma=self.gamma, **common)
        if self.name == "sft":  # no preference term; the model's own ranking stands in for rewards
            return torch.zeros_like(chosen_logps), chosen_logps.detach(), rejected_logps.detach()
        if self.name in ("orpo", "rdpo") and (self.label_smoothing or self.loss_type != "sigmoid"):
            raise ValueError(f"{self.name} has one form: label_smoothing 0 and loss_type 'sigmoid'")
        if self.name == "orpo":
            return orpo_odds_ratio_loss(chosen_logps, rejected_logps, beta=self.beta)
        if self.name == "rdpo":
            if chosen_lengths is None or rejected_lengths is None:
                raise ValueError("R-DPO needs the response lengths: pass chosen_lengths and rejected_lengths")
            return rdpo_loss(chosen_logps, rejected_logps, *refs, *lengths, beta=self.beta, alpha=self.alpha)
        return dpo_loss(chosen_logps, rejected_logps, *refs, **common)


@dataclass
class TrainConfig:
    """Everything ``train`` needs besides the model, tokenizer and data; the library's defaults, stated once.

    ``max_steps`` optimizer steps of ``grad_accum_steps`` micro-batches of ``batch_size`` pairs; the schedule
    ``lr_scheduler_type`` with ``ceil(warmup_ratio * max_steps)`` warm-up steps; weight decay on matrices
    only. With ``output_dir``: checkpoints every ``save_every`` steps and at the end.
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
        if isinstance(self.loss, Mapping):  # e.g. a config read back from a checkpoint
            self.loss = LossConfig(**self.loss)
        if isinstance(self.loss, str):
            raise TypeError(
                f"TrainConfig.loss must be a LossConfig, got {self.loss!r}: use LossConfig({self.loss!r})"
            )
        # a wrong type fails by name, e.g. learning_rate="1e-5" (no string is a number)
        check_field_types(self)
        for name in ("max_steps", "batch_size", "grad_accum_steps", "log_every", "save_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:  # None: save at the end only
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
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


def concatenated_forward(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    *,
    length_normalize: bool,
    layout: str = "padded",
    keep_logits: bool = False,
) -> dict[str, Any]:
    """One forward pass over the chosen and rejected responses of a batch.

    ``layout="padded"``: the ``[2B, T]`` batch as it is, then ``logps.token_logps``. ``"packed"`` (or
    ``"auto"``, where ``fast.packed_support`` says the model is tested with it) is the door to the fast path:
    one prefix-shared row built from the collator's token ids, the LM head only at the scored positions.
    Returns ``chosen_logps``, ``rejected_logps`` [B], ``token_sums``, ``token_counts`` [2B], ``layout`` (the
    one used) and ``logits`` / ``labels`` (padded ``[2B, T, V]`` / ``[2B, T]``; packed with ``keep_logits``
    ``[1, N + 1, V]`` / ``[1, N + 1]`` at the N scored positions; else None).
    """
    num_pairs = check_preference_batch(batch)
    packed = _packed_row(layout, batch, model)
    options = {"length_normalize": length_normalize, "keep_logits": keep_logits}
    return _forward(model, batch, num_pairs, packed, **options)


def _packed_row(
    layout: str, batch: Mapping[str, torch.Tensor], *models: torch.nn.Module
) -> fast.PackedBatch | None:
    """The batch's packed row when ``layout`` takes the fast path, else None."""
    if layout not in ("padded", "packed", "auto"):
        raise ValueError(f"layout must be 'padded', 'packed' or 'auto', got {layout!r}")
    if layout == "padded" or (layout == "auto" and fast.choose_layout(*models, batch=batch) == "padded"):
        return None
    return fast.pack_preference_batch(batch)  # the door to the fast path, packed once per batch


def _forward(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    num_pairs: int,
    packed: fast.PackedBatch | None,
    *,
    length_normalize: bool,
    keep_logits: bool,
) -> dict[str, Any]:
    """:func:`concatenated_forward` of a checked batch: padded, or packed when ``packed`` is given."""
    logits: torch.Tensor | None
    labels: torch.Tensor | None
    if packed is None:
        device = next(model.parameters()).device
        labels = batch["labels"].to(device)  # [2B, T]
        logits = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            use_cache=False,
        ).logits  # [2B, T, V]; bf16/fp16 under autocast
        per_token, mask = token_logps(logits, labels)  # [2B, T-1] x2, float32
        counts = require_response_tokens(mask)  # [2B]
        sums = per_token.sum(dim=-1)  # [2B]
    else:  # the fast path: one prefix-shared row, the head at scored positions
        sums, counts, logits, labels = fast.packed_sequence_logps(model, packed, keep_logits=keep_logits)
    logps = sums / counts if length_normalize else sums  # [2B]
    return {
        "chosen_logps": logps[:num_pairs],
        "rejected_logps": logps[num_pairs:],
        "token_sums": sums,
        "token_counts": counts,
        "logits": logits,
        "labels": labels,
        "layout": "padded" if packed is None else "packed",
    }


def preference_loss(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    loss_config: LossConfig,
    *,
    ref_model: torch.nn.Module | None = None,
    pair_total: int | None = None,
    nll_share: float = 1.0,
    kl_share: float = 1.0,
    layout: str = "padded",
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one batch and its metrics (floats, TRL's names).

    Mean over pairs of the SimPO/DPO loss, plus ``sft_weight`` x NLL and ``kl_weight`` x KL. As one micro-batch
    of a larger batch, pass that batch's ``pair_total`` and this batch's share of its chosen tokens
    (``nll_share``) and of all its response tokens (``kl_share``): the token-weighted terms then add up right.
    DPO reads precomputed reference log-probs from ``batch["ref_chosen_logps"]`` / ``["ref_rejected_logps"]``
    when present; otherwise, and always for the KL term, ``ref_model`` runs a no-grad forward. ``layout``: as in
    :func:`concatenated_forward` (``"auto"`` packs when the policy and a live reference are both tested with it).
    """
    num_pairs = check_preference_batch(batch)  # the one check of this batch
    has_ref_logps = "ref_chosen_logps" in batch and "ref_rejected_logps" in batch
    ref_forward = loss_config.reference_forward(ref_model, has_ref_logps)  # raises when one is missing
    live = [ref_model] if ref_forward and ref_model is not None else []
    packed = _packed_row(layout, batch, model, *live)  # one packed row for the policy and a live reference
    keep = loss_config.kl_weight > 0  # the KL term compares whole next-token distributions: keep the logits
    options = {"length_normalize": bool(loss_config.length_normalize), "keep_logits": keep}
    out = _forward(model, batch, num_pairs, packed, **options)
    ref = None
    if ref_forward and ref_model is not None:  # reference_forward is True only with a ref_model
        with torch.no_grad():
            ref = _forward(ref_model.eval(), batch, num_pairs, packed, **options)
    ref_chosen = ref_rejected = None
    if loss_config.name in REFERENCE_LOSSES and has_ref_logps:
        ref_chosen = batch["ref_chosen_logps"].to(out["chosen_logps"].device, torch.float32)  # [B]
        ref_rejected = batch["ref_rejected_logps"].to(out["chosen_logps"].device, torch.float32)  # [B]
        if ref_chosen.shape != (num_pairs,) or ref_rejected.shape != (num_pairs,):
            raise ValueError(
                f"precomputed ref logps have shapes {tuple(ref_chosen.shape)}/"
                f"{tuple(ref_rejected.shape)}, expected ({num_pairs},)"
            )
    elif loss_config.name in REFERENCE_LOSSES and ref is not None:
        ref_chosen, ref_rejected = ref["chosen_logps"], ref["rejected_logps"]
    counts = out["token_counts"]  # [2B] response tokens: R-DPO's lengths
    losses, chosen_rewards, rejected_rewards = loss_config.pairwise_loss(
        out["chosen_logps"],
        out["rejected_logps"],
        ref_chosen,
        ref_rejected,
        counts[:num_pairs],
        counts[num_pairs:],
    )  # each [B]

    pair_total = num_pairs if pair_total is None else pair_total
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    per_pair = {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        # a tie counts half, as held-out reward accuracy does (TRL counts it as 0: they differ on exact ties only)
        "rewards/accuracies": 0.5 * (torch.sign(chosen_rewards - rejected_rewards) + 1),
        "logps/chosen": out["chosen_logps"].detach(),
        "logps/rejected": out["rejected_logps"].detach(),
    }
    metrics = {name: value.sum().item() / pair_total for name, value in per_pair.items()}
    loss = losses.sum() / pair_total
    if loss_config.sft_weight > 0:
        # token-weighted NLL of the chosen responses (TRL's cpo_alpha term), from the same log-probs
        nll = token_weighted_nll(out["token_sums"][:num_pairs], out["token_counts"][:num_pairs])
        loss = loss + loss_config.sft_weight * nll_share * nll
        metrics["nll_loss"] = nll_share * nll.item()
    if loss_config.kl_weight > 0 and ref is not None:
        kl = kl_penalty(out["logits"], ref["logits"], out["labels"])
        loss = loss + loss_config.kl_weight * kl_share * kl
        metrics["kl"] = kl_share * kl.item()
    metrics["loss"] = loss.item()
    return loss, metrics


def training_step(
    model: torch.nn.Module,
    micro_batches: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    loss_config: LossConfig,
    *,
    ref_model: torch.nn.Module | None = None,
    max_grad_norm: float | None = TrainConfig.max_grad_norm,  # the default stated once, in TrainConfig
    device_policy: DevicePolicy | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
    step: int | None = None,
    layout: str = "padded",
) -> dict[str, float]:
    """One optimizer step over ``micro_batches`` (gradient accumulation); returns the step's metrics.

    Each micro-batch's loss is weighted by its share of the step (pairs; tokens for the NLL and KL terms), so
    k micro-batches give the gradients of one batch holding them all. Then clip the gradient norm (reported
    before clipping), step optimizer and scheduler. A NaN raises ``NonFiniteLossError`` before it reaches the
    weights. An fp16 ``device_policy`` needs ``grad_scaler=device_policy.make_grad_scaler()``, kept across steps.
    """
    batches = [micro_batches] if isinstance(micro_batches, Mapping) else list(micro_batches)
    if not batches:
        raise ValueError("training_step needs at least one micro-batch")
    if device_policy is not None and device_policy.use_grad_scaler and grad_scaler is None:
        raise ValueError(
            "this DevicePolicy uses fp16: pass grad_scaler=device_policy.make_grad_scaler() (keep it across steps)"
        )
    # each micro-batch's share of the step (preference_loss checks each batch's layout, once)
    pairs = [len(batch["labels"]) // 2 for batch in batches]
    chosen_tokens = [response_token_count(b["labels"][:n]) for b, n in zip(batches, pairs, strict=True)]
    all_tokens = [response_token_count(batch["labels"]) for batch in batches]
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    for index, batch in enumerate(batches):
        with device_policy.autocast() if device_policy is not None else contextlib.nullcontext():
            loss, metrics = preference_loss(
                model,
                batch,
                loss_config,
                ref_model=ref_model,
                pair_total=sum(pairs),
                nll_share=chosen_tokens[index] / sum(chosen_tokens),
                kl_share=all_tokens[index] / sum(all_tokens),
                layout=layout,
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
    stepped = True
    if grad_scaler is not None:  # fp16: the scaler skips a step with inf/NaN gradients and lowers its scale
        scale_before = grad_scaler.get_scale()
        grad_scaler.step(optimizer)
        grad_scaler.update()
        stepped = grad_scaler.get_scale() >= scale_before
    elif not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(step, "grad_norm", grad_norm)
    else:
        optimizer.step()
    if scheduler is not None and stepped:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {**sums, "grad_norm": grad_norm, "lr": learning_rate}


def train(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    train_examples: Sequence[Mapping[str, Any]] | Dataset,
    config: TrainConfig,
    *,
    ref_model: torch.nn.Module | None = None,
    ref_logps: Mapping[str, Any] | None = None,
    device_policy: DevicePolicy | None = None,
    resume_from: str | Path | None = None,
    progress: bool = True,
    batches: MicroBatches | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    run_info: Mapping[str, Any] | None = None,
    report_to: str | list[str] | None = None,
) -> TrainResult:
    """Train ``model`` on preference examples (a list of dicts or a ``datasets.Dataset``) for ``max_steps``.

    DPO needs ``ref_model`` or ``ref_logps`` (``precompute_reference_logps``); the KL term ``ref_model``.
    ``resume_from``: a checkpoint folder or an ``output_dir`` (its latest), continued exactly. The model is
    moved to ``device_policy``'s device and left in eval mode. For the entry point (``scale.cli``):
    ``batches`` (``micro_batches(step) -> list[batch]``; default ``PreferenceBatches``), ``on_step(row)``
    (may change each step's history row first) and ``run_info`` (facts saved in checkpoints). ``report_to``
    (``"tensorboard"``, ``"wandb"``, ... as in TRL) sends each row to those trackers (``runtime.trackers``).
    """
    if len(train_examples) == 0:
        raise ValueError("train_examples is empty")
    device_policy = device_policy if device_policy is not None else select_device(verbose=progress)
    config.loss.check_reference(ref_model, ref_logps is not None)
    if device_policy.use_grad_scaler and any(
        p.dtype == torch.float16 for p in model.parameters() if p.requires_grad
    ):
        raise ValueError("fp16 autocast needs float32 parameters (GradScaler cannot unscale fp16 gradients)")
    normalized = bool((ref_logps or {}).get("length_normalize", config.loss.length_normalize))
    if normalized != config.loss.length_normalize:
        raise ValueError(
            f"ref_logps were computed with length_normalize={normalized} but the loss uses the other"
        )
    model.to(device_policy.device)
    if ref_model is not None:
        ref_model.to(device_policy.device).eval()
    set_seed(config.seed)  # python, numpy and torch RNGs (dropout); the data order has its own generator
    if batches is None:
        collator = PreferenceCollator(
            tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length
        )
        batches = PreferenceBatches(
            train_examples,
            collator,
            batch_size=config.batch_size,
            seed=config.seed,
            grad_accum_steps=config.grad_accum_steps,
            ref_logps=ref_logps,
        )
    optimization = Optimization.build(model, config, device_policy)
    state = optimization.state_objects(model)
    run_info = {
        "num_examples": len(train_examples),
        "optimizer_impl": optimization.impl,
        "device": device_policy.describe(),
        "layout": fast.describe_layout(model),  # packed where tested (fast/), else the padded [2B, T] batch
        **(run_info or {}),
    }
    if progress:
        print(f"batch layout: {run_info['layout']}")
    start_step = 0
    history: list[dict[str, Any]] = []
    checkpoints: list[str] = []
    if resume_from is not None:
        start_step, history = resume_state(resume_from, run_info, config, **state)

    def save(step: int) -> None:
        path = checkpoint_path(config.output_dir or ".", step)  # called only with an output_dir
        save_checkpoint(
            path, step=step, config=config, history=history, extra=run_info, tokenizer=tokenizer, **state
        )
        checkpoints.append(str(path))

    reporter = MetricsReporter(report_to, Path(config.output_dir or ".") / "runs", config=config)
    model.train()
    bar = tqdm(
        total=config.max_steps, initial=start_step, disable=not progress, desc=f"{config.loss.name} training"
    )
    try:
        for step in range(start_step + 1, config.max_steps + 1):
            started = time.perf_counter()
            micro_batches = batches.micro_batches(step)
            metrics = training_step(
                model,
                micro_batches,
                optimization.optimizer,
                optimization.scheduler,
                config.loss,
                ref_model=ref_model,
                max_grad_norm=config.max_grad_norm,
                device_policy=device_policy,
                grad_scaler=optimization.grad_scaler,
                step=step,
                layout="auto",  # the fast path where the model is tested with it (fast/), else padded
            )
            row = {
                "step": step,
                "epoch": step * config.examples_per_step / len(train_examples),
                **metrics,
                "tokens": sum(int(batch["attention_mask"].sum()) for batch in micro_batches),
                "seconds": time.perf_counter() - started,
            }
            if on_step is not None:
                on_step(row)
            reporter(row)
            history.append(row)
            bar.update(1)
            if step % config.log_every == 0 or step == config.max_steps:
                recent = history[-config.log_every :]
                bar.set_postfix(
                    loss=f"{sum(r['loss'] for r in recent) / len(recent):.4f}",
                    acc=f"{sum(r['rewards/accuracies'] for r in recent) / len(recent):.2f}",
                )
            if config.output_dir is not None and config.save_every and step % config.save_every == 0:
                save(step)
    finally:
        bar.close()
        reporter.close()
    last_step = history[-1]["step"] if history else start_step
    if config.output_dir is not None and not (config.save_every and last_step % config.save_every == 0):
        save(last_step)
    model.eval()
    final = {k: v for k, v in history[-1].items() if k != "seconds"} if history else {}
    return TrainResult(history, final, optimization.impl, device_policy.describe(), checkpoints)
