"""Model cards: licence and pipeline tag in the front matter, ``base_model`` only as a Hub id, no local paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import build_test_model

from simplepo_helpers import LossConfig, TrainConfig
from simplepo_helpers.runtime.checkpoint import describe_base, model_card, save_checkpoint

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def front_matter(card: str) -> dict:
    head, sep, _ = card.removeprefix("---\n").partition("\n---\n")
    assert sep, card[:200]
    return yaml.safe_load(head)


def test_a_hub_model_is_named_by_its_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert describe_base(HUB_ID) == (HUB_ID, f"[{HUB_ID}](https://huggingface.co/{HUB_ID})")
    meta = front_matter(model_card(TrainConfig(), [], 3, HUB_ID))
    assert meta["base_model"] == HUB_ID and meta["pipeline_tag"] == "text-generation"
    assert meta["license"] == "other" and meta["license_link"] == f"https://huggingface.co/{HUB_ID}"


@pytest.mark.parametrize("where", ["absolute", "home"])
def test_a_local_model_is_described_without_its_path(tmp_path, monkeypatch, where):
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / "me" / "models" / "mine"
    folder.mkdir(parents=True)
    name = str(folder) if where == "absolute" else "~/me/models/mine"
    hub_id, text = describe_base(name, "llama")
    assert hub_id is None and text == "a local llama model"
    config = TrainConfig(loss=LossConfig("simpo"), output_dir=tmp_path / "out")
    card = model_card(config, [{"step": 1, "loss": 0.5}], 1, name, model_type="llama")
    meta = front_matter(card)
    assert (
        "base_model" not in meta and meta["pipeline_tag"] == "text-generation" and meta["license"] == "other"
    )
    assert str(tmp_path) not in card and str(Path.home()) not in card and "/me/" not in card
    assert '"output_dir": ".../out"' in card


def test_the_world_reference_model_gets_the_kits_licence():
    from simplepo_helpers.world.reference import SHIPPED_DIR

    for name in ("world", str(SHIPPED_DIR)):
        assert describe_base(name) == (None, "the SimplePO kit's tiny world reference model")
    card = model_card(TrainConfig(), [], 2, str(SHIPPED_DIR))
    assert front_matter(card)["license"] == "apache-2.0" and str(SHIPPED_DIR) not in card


def test_a_checkpoint_card_hides_where_the_model_was_loaded_from(tokenizer, tmp_path):
    model = build_test_model(len(tokenizer))
    model.config._name_or_path = str(tmp_path / "home" / "someone" / "model")
    config = TrainConfig(loss=LossConfig("dpo", beta=0.1), max_steps=1, output_dir=tmp_path / "out")
    folder = save_checkpoint(tmp_path / "checkpoint-1", model=model, step=1, config=config)
    card = (folder / "README.md").read_text()
    assert str(tmp_path) not in card and "someone" not in card
    assert "Trained from a local llama model" in card
    model.config._name_or_path = HUB_ID
    folder = save_checkpoint(tmp_path / "checkpoint-2", model=model, step=2, config=config)
    assert front_matter((folder / "README.md").read_text())["base_model"] == HUB_ID
    torch.testing.assert_close(model.lm_head.weight, model.lm_head.weight)  # the model is untouched


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers' deprecation notice inside peft
def test_a_lora_adapter_checkpoint_is_carded_as_peft(tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(build_test_model(len(tokenizer)), LoraConfig(r=2, target_modules=["q_proj"]))
    folder = save_checkpoint(tmp_path / "lora", model=model, step=3)
    meta = front_matter((folder / "README.md").read_text())
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation"


def test_a_folder_is_the_world_model_only_with_the_worlds_build_info(tmp_path):
    (tmp_path / "build_info.json").write_text('{"note": "some other build"}')
    assert describe_base(str(tmp_path), "llama") == (None, "a local llama model")
    (tmp_path / "build_info.json").write_text(
        '{"sft_data": "0123456789abcdef"}'
    )  # what world.reference writes
    assert describe_base(str(tmp_path)) == (None, "the SimplePO kit's tiny world reference model")
