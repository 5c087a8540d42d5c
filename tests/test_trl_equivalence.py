"""The kit's SimPO / DPO / NLL terms equal TRL 1.16's on the same tiny model and the same collated batch.

TRL builds the batch and computes its loss with its own code; the kit reads the same ``input_ids`` with
labels = input_ids on the completion and -100 elsewhere (CPO: TRL's ``*_labels``; DPO: ``completion_mask``).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from conftest import build_test_model, build_test_tokenizer
from datasets import Dataset

from simplepo_helpers import dpo_loss, sequence_logps, sft_nll_loss, simpo_loss

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

IGNORE = -100
TOLERANCE = {"rtol": 0.0, "atol": 1e-5}
SIMPO_BETA, SIMPO_GAMMA = 2.5, 1.375  # the authors' beta=2.5, gamma_beta_ratio=0.55
DPO_BETA = 0.1


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


PREFERENCE_ROWS = [
    {
        "prompt": user("What is two plus three?"),
        "chosen": assistant("Two plus three is five."),
        "rejected": assistant("Blue."),
    },
    {
        "prompt": user("Name a colour."),
        "chosen": assistant("Blue is a colour, and so is red."),
        "rejected": assistant("I cannot help with that request, sorry."),
    },
    {
        "prompt": user("Please count the letters in the word banana."),
        "chosen": assistant("It has six letters."),
        "rejected": assistant("The quick brown fox jumps over the lazy dog."),
    },
]


def common_args(tmp_path) -> dict:
    return {
        "output_dir": str(tmp_path),
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": [],
        "per_device_train_batch_size": len(PREFERENCE_ROWS),
    }


def pad_right(tensor: torch.Tensor, length: int, value: int) -> torch.Tensor:
    return F.pad(tensor, (0, length - tensor.shape[1]), value=value)


def stack_chosen_rejected(batch: dict[str, torch.Tensor], pad_id: int) -> tuple[torch.Tensor, ...]:
    """TRL CPO's separate chosen/rejected tensors -> the kit's [2B, T] input_ids, attention_mask, labels."""
    length = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    stacked = []
    for key, pad_value in [("input_ids", pad_id), ("attention_mask", 0), ("labels", IGNORE)]:
        chosen = pad_right(batch[f"chosen_{key}"], length, pad_value)
        rejected = pad_right(batch[f"rejected_{key}"], length, pad_value)
        stacked.append(torch.cat([chosen, rejected]))
    return tuple(stacked)


@pytest.mark.parametrize("cpo_alpha", [0.0, 1.0])
def test_simpo_matches_trl_cpo_trainer(tmp_path, cpo_alpha):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    tokenizer = build_test_tokenizer()  # own instance: TRL may set attributes on it
    model = build_test_model(len(tokenizer))
    args = CPOConfig(
        loss_type="simpo",
        cpo_alpha=cpo_alpha,
        beta=SIMPO_BETA,
        simpo_gamma=SIMPO_GAMMA,
        max_length=128,
        **common_args(tmp_path),
    )
    trainer = CPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(PREFERENCE_ROWS), processing_class=tokenizer
    )
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss, trl_metrics = trainer.get_batch_loss_metrics(trainer.model, batch)

    input_ids, attention_mask, labels = stack_chosen_rejected(batch, tokenizer.pad_token_id)
    num_pairs = len(PREFERENCE_ROWS)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # [2B, T, V]
    average_logps = sequence_logps(logits, labels, length_normalize=True)  # [2B]
    losses, chosen_rewards, rejected_rewards = simpo_loss(
        average_logps[:num_pairs], average_logps[num_pairs:], beta=SIMPO_BETA, gamma=SIMPO_GAMMA
    )
    nll = sft_nll_loss(logits[:num_pairs], labels[:num_pairs])
    kit_loss = losses.mean() + cpo_alpha * nll

    torch.testing.assert_close(kit_loss, trl_loss, **TOLERANCE)
    if cpo_alpha:  # TRL skips (reports 0 for) the NLL term when cpo_alpha == 0
        assert nll.item() == pytest.approx(trl_metrics["nll_loss"], abs=1e-5)
    assert chosen_rewards.mean().item() == pytest.approx(trl_metrics["rewards/chosen"], abs=1e-5)
    assert rejected_rewards.mean().item() == pytest.approx(trl_metrics["rewards/rejected"], abs=1e-5)
    assert average_logps[:num_pairs].mean().item() == pytest.approx(trl_metrics["logps/chosen"], abs=1e-5)
    assert trl_loss.item() > 0.1  # a real, non-degenerate loss was compared


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_dpo_matches_trl_dpo_trainer(tmp_path, loss_type):
    from trl import DPOConfig, DPOTrainer

    tokenizer = build_test_tokenizer()
    policy = build_test_model(len(tokenizer), seed=1)
    reference = build_test_model(len(tokenizer), seed=2)  # a different model, so the log-ratios are not zero
    args = DPOConfig(loss_type=[loss_type], beta=DPO_BETA, **common_args(tmp_path))
    trainer = DPOTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=Dataset.from_list(PREFERENCE_ROWS),
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(trainer.model, batch)

    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE)  # [2B, T]
    model_inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    # TRL 1.16's IPO divides each log-ratio by its completion length: the kit passes average log-probs for it
    average = loss_type == "ipo"
    policy_logps = sequence_logps(policy(**model_inputs).logits, labels, length_normalize=average)  # [2B]
    with torch.no_grad():
        ref_logps = sequence_logps(reference(**model_inputs).logits, labels, length_normalize=average)  # [2B]
    num_pairs = len(PREFERENCE_ROWS)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_logps[:num_pairs],
        policy_logps[num_pairs:],
        ref_logps[:num_pairs],
        ref_logps[num_pairs:],
        beta=DPO_BETA,
        loss_type=loss_type,
    )

    torch.testing.assert_close(losses.mean(), trl_loss, **TOLERANCE)
    assert (policy_logps - ref_logps).abs().min() > 1e-3  # non-trivial log-ratios were compared
    if not average:
        metrics = trainer._metrics["eval"]  # the models are in eval mode, so TRL logs under "eval"
        assert chosen_rewards.mean().item() == pytest.approx(metrics["rewards/chosen"][-1], abs=1e-5)
        assert rejected_rewards.mean().item() == pytest.approx(metrics["rewards/rejected"][-1], abs=1e-5)
