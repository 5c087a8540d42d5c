"""docs/next_steps.md, run: the kit's own data file trained with TRL's CPOTrainer (pure SimPO) for two steps.

Offline: the world's tokenizer and a tiny random Llama (conftest's build_test_model) saved as a local folder,
data/pairs_train.jsonl loaded with ``datasets`` exactly as the doc shows. The first logged loss is checked
against the kit's SimPO loss on the same pairs and the same starting weights (one batch holds all of them, so
TRL's shuffling cannot change the mean), the one token difference between TRL's and the kit's tokenisation,
and the gamma convention against the kit's config file.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import pytest
import torch
from conftest import build_test_model
from test_trl_equivalence import stack_chosen_rejected

from simplepo_helpers import LossConfig, PreferenceCollator, preference_loss, sequence_logps, simpo_loss

REPO = Path(__file__).resolve().parents[1]
N_PAIRS = 8
pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:You are importing from 'trl.experimental'"),  # CPO lives there in 1.16
    pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning"),  # TRL's config
]


def doc_config() -> dict[str, float]:
    """beta, simpo_gamma, cpo_alpha and gamma_beta_ratio as docs/next_steps.md writes them."""
    text = (REPO / "docs" / "next_steps.md").read_text()
    values = {}
    for name in ("beta", "simpo_gamma", "cpo_alpha", "gamma_beta_ratio"):
        found = {float(v) for v in re.findall(rf"\b{name}[=:]\s*([0-9.]+)", text)}
        assert len(found) == 1, f"docs/next_steps.md gives {name} as {found or 'nothing'}"
        values[name] = found.pop()
    return values


def save_tiny_world_model(folder: Path) -> Path:
    """A tiny random Llama with the world's tokenizer, saved as a local model folder (a stand-in Hub id)."""
    from simplepo_helpers.world.tokenizer import world_tokenizer

    tokenizer = world_tokenizer()
    build_test_model(
        len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_doc_gamma_conventions_are_consistent():
    """The doc's example is the authors' Llama-3-8B-Instruct setting: beta 2.5, gamma/beta 0.55."""
    values = doc_config()
    assert values["cpo_alpha"] == 0.0  # pure SimPO: TRL's default 1.0 adds an NLL term (CPO-SimPO)
    assert (values["beta"], values["gamma_beta_ratio"]) == (2.5, 0.55)
    assert values["simpo_gamma"] == pytest.approx(values["beta"] * values["gamma_beta_ratio"])  # absolute
    # the kit's gamma is absolute too: LossConfig(gamma=simpo_gamma) is TRL's loss (checked in the next test)


def test_trl_cpo_trainer_trains_two_steps_on_the_kits_data_file(tmp_path):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    values = doc_config()
    folder = save_tiny_world_model(tmp_path / "tiny-model")

    # as in docs/next_steps.md, with a local model instead of a Hub id
    train = load_dataset("json", data_files=str(REPO / "data" / "pairs_train.jsonl"), split="train")
    train = train.select_columns(["prompt", "chosen", "rejected"]).select(range(N_PAIRS))
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    start = copy.deepcopy(model)
    args = CPOConfig(
        output_dir=str(tmp_path / "trl-simpo"),
        loss_type="simpo",
        cpo_alpha=values["cpo_alpha"],
        beta=values["beta"],
        simpo_gamma=values["simpo_gamma"],
        learning_rate=1e-3,
        per_device_train_batch_size=N_PAIRS,
        max_steps=2,
        max_length=256,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,  # CPU settings of the doc's "on a laptop" note
        bf16=False,
        gradient_checkpointing=False,
        seed=0,
    )
    trainer = CPOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    trainer.train()

    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert trainer.state.global_step == 2 and [row["step"] for row in logged] == [1, 2]
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in logged)
    assert {"rewards/chosen", "rewards/margins", "logps/chosen"} <= set(logged[0])

    # TRL's first step is the kit's SimPO loss on TRL's tokens, from the same weights (one batch holds all pairs)
    trl_batch = next(iter(trainer.get_train_dataloader()))
    input_ids, attention_mask, labels = stack_chosen_rejected(trl_batch, tokenizer.pad_token_id)
    with torch.no_grad():
        logps = sequence_logps(
            start(input_ids=input_ids, attention_mask=attention_mask).logits, labels, length_normalize=True
        )
    losses, chosen_rewards, rejected_rewards = simpo_loss(
        logps[:N_PAIRS], logps[N_PAIRS:], beta=values["beta"], gamma=values["simpo_gamma"]
    )
    assert logged[0]["loss"] == pytest.approx(losses.mean().item(), rel=1e-5)
    margins = (chosen_rewards - rejected_rewards).mean().item()
    assert logged[0]["rewards/margins"] == pytest.approx(margins, rel=1e-4, abs=1e-5)
    assert logged[1]["loss"] != pytest.approx(logged[0]["loss"], rel=1e-6)  # the weights moved

    # The one difference from the kit's own tokens (docs/next_steps.md): on conversational rows TRL 1.16's
    # CPOTrainer scores the chat template's end of turn and then appends another EOS, so each response it
    # scores is the kit's response plus two tokens ("\n" and EOS); the losses then differ slightly.
    kit_batch = PreferenceCollator(tokenizer, max_length=256)(list(train))
    end_of_turn = tokenizer("\n", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    for k, row in enumerate(trainer.train_dataset):
        kit_ids = kit_batch["input_ids"][k][kit_batch["attention_mask"][k].bool()].tolist()
        assert row["chosen_input_ids"] == kit_ids + end_of_turn
    with torch.no_grad():
        kit_loss, _ = preference_loss(
            start, kit_batch, LossConfig("simpo", beta=values["beta"], gamma=values["simpo_gamma"])
        )
    assert kit_loss.item() != pytest.approx(logged[0]["loss"], rel=1e-5)
    assert kit_loss.item() == pytest.approx(logged[0]["loss"], rel=0.01)


def doc_code_blocks() -> list[str]:
    """The ```python blocks of docs/next_steps.md, verbatim."""
    text = (REPO / "docs" / "next_steps.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_docs_code_block_runs_as_written(tmp_path, monkeypatch):
    """The block itself, executed: only the Hub id (a local tiny model), the step count and the laptop settings
    the doc names are changed, so a renamed or removed argument (e.g. ``warmup_ratio`` in transformers 5) fails
    here as it would for a reader."""
    import trl.experimental.cpo as cpo

    (block,) = doc_code_blocks()
    assert 'MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"' in block
    folder = save_tiny_world_model(tmp_path / "tiny-model")
    (tmp_path / "data").mkdir()
    os.symlink(REPO / "data" / "pairs_train.jsonl", tmp_path / "data" / "pairs_train.jsonl")
    monkeypatch.chdir(tmp_path)  # the block's relative paths (data/, runs/) resolve here

    real_config = cpo.CPOConfig

    def laptop_config(**kwargs):  # the doc's arguments as written, plus the laptop note and 2 steps
        return real_config(
            **kwargs,
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            max_steps=2,
            save_strategy="no",
        )

    monkeypatch.setattr(cpo, "CPOConfig", laptop_config)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {}
    exec(
        compile(
            block.replace('"HuggingFaceTB/SmolLM2-135M-Instruct"', repr(str(folder))), "next_steps.md", "exec"
        ),
        namespace,
    )
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 2
    assert (tmp_path / "runs" / "trl-simpo" / "final" / "model.safetensors").is_file()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in trainer.state.log_history if "loss" in r)
