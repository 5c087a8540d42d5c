"""Checkpoints: safetensors weights, weights-only state files, and a resumed run equal to an uninterrupted one."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from conftest import build_test_model
from transformers import LlamaForCausalLM

from simplepo_helpers import LossConfig, TrainConfig, train
from simplepo_helpers.runtime.checkpoint import (
    find_latest_checkpoint,
    load_checkpoint,
    read_history,
    save_checkpoint,
)
from simplepo_helpers.runtime.device import DevicePolicy

CPU = DevicePolicy(torch.device("cpu"), torch.float32, None, False, "tests")
EXAMPLES = [
    {"prompt": "What is two plus three?", "chosen": " Two plus three is five.", "rejected": " Six."},
    {"prompt": "Name a colour.", "chosen": " Blue is a colour.", "rejected": " The lazy dog."},
    {
        "prompt": [{"role": "user", "content": "Count the letters in banana."}],
        "chosen": [{"role": "assistant", "content": "It has six letters."}],
        "rejected": [{"role": "assistant", "content": "Sorry, I cannot help."}],
    },
    {"prompt": "Say hello.", "chosen": " hello world", "rejected": " dog"},
    {"prompt": "Please answer.", "chosen": " Happy to help!", "rejected": " no"},
]
RESUME_CONFIG = dict(
    loss=LossConfig("simpo", beta=2.0, gamma=1.0, sft_weight=0.3),
    learning_rate=5e-3,
    max_steps=6,
    batch_size=2,
    grad_accum_steps=2,  # 4 pairs per step out of 5: batches straddle epochs
    warmup_ratio=0.2,
    weight_decay=0.01,
    seed=7,
)


def without_timing(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_resumed_run_equals_uninterrupted_run(tokenizer, tmp_path):
    uninterrupted_model = build_test_model(len(tokenizer))
    uninterrupted = train(
        uninterrupted_model,
        tokenizer,
        EXAMPLES,
        TrainConfig(**RESUME_CONFIG),
        device_policy=CPU,
        progress=False,
    )

    crashing_model = build_test_model(len(tokenizer))
    forward_calls = []

    def crash_in_step_five(module, args, output):  # 2 micro-batches per step: call 9 is in step 5
        forward_calls.append(1)
        if len(forward_calls) == 9:
            raise KeyboardInterrupt("simulated interruption")

    crashing_model.register_forward_hook(crash_in_step_five)
    config = TrainConfig(**RESUME_CONFIG, output_dir=tmp_path, save_every=3)
    with pytest.raises(KeyboardInterrupt):
        train(crashing_model, tokenizer, EXAMPLES, config, device_policy=CPU, progress=False)
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoint-3"

    resumed_model = build_test_model(len(tokenizer), seed=123)  # different weights until the checkpoint loads
    torch.manual_seed(999)  # and a different RNG state: the checkpoint restores it
    resumed = train(
        resumed_model, tokenizer, EXAMPLES, config, device_policy=CPU, progress=False, resume_from=tmp_path
    )

    assert without_timing(resumed.history) == without_timing(uninterrupted.history)
    assert [row["step"] for row in resumed.history] == list(range(1, 7))
    for (name, expected), actual in zip(
        uninterrupted_model.state_dict().items(), resumed_model.state_dict().values(), strict=True
    ):
        assert torch.equal(actual, expected), name
    assert resumed.checkpoints == [str(tmp_path / "checkpoint-6")]


def test_resume_refuses_a_changed_batch_order(tokenizer, tmp_path):
    config = TrainConfig(max_steps=2, batch_size=2, output_dir=tmp_path)
    train(build_test_model(len(tokenizer)), tokenizer, EXAMPLES, config, device_policy=CPU, progress=False)
    changed = TrainConfig(max_steps=3, batch_size=2, seed=1, output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"the config differs in seed \(saved 42, now 1\)\. Resume with"):
        train(
            build_test_model(len(tokenizer)),
            tokenizer,
            EXAMPLES,
            changed,
            device_policy=CPU,
            progress=False,
            resume_from=tmp_path,
        )


def test_checkpoint_files_are_safetensors_and_weights_only(tokenizer, tmp_path):
    config = TrainConfig(max_steps=2, batch_size=2, output_dir=tmp_path, save_every=1)
    result = train(
        build_test_model(len(tokenizer)), tokenizer, EXAMPLES, config, device_policy=CPU, progress=False
    )
    assert result.checkpoints == [str(tmp_path / "checkpoint-1"), str(tmp_path / "checkpoint-2")]
    folder = tmp_path / "checkpoint-2"
    names = {path.name for path in folder.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pt",
        "simplepo_state.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    } <= names
    assert "trainer_state.json" not in names  # that name is HF Trainer's TrainerState
    assert not any(name.endswith((".bin", ".pth", ".pkl")) for name in names)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pt"):
        torch.load(folder / name, weights_only=True)  # would raise on any pickled object
    summary = json.loads((folder / "simplepo_state.json").read_text())
    assert summary["step"] == 2 and len(summary["history"]) == 2
    assert summary["config"]["loss"]["name"] == "simpo" and summary["config"]["output_dir"] == str(tmp_path)
    assert TrainConfig(**summary["config"]).loss == config.loss  # the JSON config rebuilds the run's config
    reloaded = LlamaForCausalLM.from_pretrained(folder)  # a checkpoint is also a loadable model
    assert reloaded.config.num_hidden_layers == 2


def test_round_trip_restores_weights_optimizer_scheduler_and_rngs(tokenizer, tmp_path):
    model = build_test_model(len(tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    model(input_ids=torch.tensor([[1, 5, 7]])).logits.sum().backward()
    optimizer.step()
    scheduler.step()
    save_checkpoint(
        tmp_path / "ckpt", model=model, optimizer=optimizer, scheduler=scheduler, step=1, extra={"note": "x"}
    )
    draws = (random.random(), np.random.rand(), torch.rand(3))

    fresh = build_test_model(len(tokenizer), seed=9)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    fresh_scheduler = torch.optim.lr_scheduler.LambdaLR(fresh_optimizer, lambda step: 1.0 / (step + 1))
    state = load_checkpoint(
        tmp_path / "ckpt", model=fresh, optimizer=fresh_optimizer, scheduler=fresh_scheduler
    )
    assert (state["step"], state["extra"]) == (1, {"note": "x"})
    for (name, expected), actual in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(actual, expected), name
    for expected, actual in zip(optimizer.state.values(), fresh_optimizer.state.values(), strict=True):
        assert all(torch.equal(actual[key], expected[key]) for key in expected)
    assert fresh_scheduler.last_epoch == 1 and fresh_optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)
    assert (random.random(), np.random.rand()) == draws[:2]
    assert torch.equal(torch.rand(3), draws[2])


def test_tied_weights_round_trip(tokenizer, tmp_path):
    sizes = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "tie_word_embeddings": True,
    }
    model = build_test_model(len(tokenizer), seed=0, **sizes)
    save_checkpoint(tmp_path / "tied", model=model, step=0)
    fresh = build_test_model(len(tokenizer), seed=1, **sizes)
    load_checkpoint(tmp_path / "tied", model=fresh)
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)


def test_plain_module_round_trip_and_mismatch_error(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    save_checkpoint(tmp_path / "plain", model=module, step=5)
    assert (tmp_path / "plain" / "model.safetensors").is_file()
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    assert load_checkpoint(tmp_path / "plain", model=fresh)["step"] == 5
    assert all(torch.equal(a, b) for a, b in zip(module.parameters(), fresh.parameters(), strict=True))
    smaller = torch.nn.Sequential(torch.nn.Linear(3, 4))
    with pytest.raises(RuntimeError, match="weights the model does not have"):
        load_checkpoint(tmp_path / "plain", model=smaller)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers' deprecation notice inside peft
def test_peft_adapter_round_trip(tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(build_test_model(len(tokenizer)), lora)
    save_checkpoint(tmp_path / "lora", model=model, step=3)
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    torch.manual_seed(5)
    fresh = get_peft_model(build_test_model(len(tokenizer)), lora)
    load_checkpoint(tmp_path / "lora", model=fresh)
    for (name, expected), actual in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(actual, expected), name


def test_refuses_to_overwrite_a_folder_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a checkpoint folder"):
        save_checkpoint(tmp_path, model=torch.nn.Linear(2, 2), step=0)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        load_checkpoint(tmp_path, model=torch.nn.Linear(2, 2))


def test_checkpoint_loads_and_generates_with_plain_transformers(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = build_test_model(len(tokenizer))
    config = TrainConfig(max_steps=2, batch_size=2, output_dir=tmp_path)
    result = train(model, tokenizer, EXAMPLES, config, device_policy=CPU, progress=False)
    folder = tmp_path / "checkpoint-2"

    loaded_tokenizer = AutoTokenizer.from_pretrained(folder)
    loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    messages = [{"role": "user", "content": "Name a colour."}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    loaded_ids = loaded_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert loaded_ids["input_ids"].shape[1] > 5  # not an empty encoding from a wrongly chosen class
    assert torch.equal(loaded_ids["input_ids"], ids["input_ids"])
    assert loaded_tokenizer.eos_token_id == tokenizer.eos_token_id
    with torch.no_grad():
        assert torch.equal(loaded(**loaded_ids).logits, model(**ids).logits)  # the trained weights
        kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        generated = loaded.generate(**loaded_ids, **kwargs)
        assert torch.equal(generated, model.generate(**ids, **kwargs))
    assert generated.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(loaded_tokenizer.decode(generated[0, ids["input_ids"].shape[1] :]), str)

    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n") and "- simpo\n" in card
    final = result.history[-1]
    assert f"| loss | {final['loss']:.6g} |" in card
    assert '"max_steps": 2' in card and '"beta": 2.0' in card  # the config, as JSON


def test_hf_trainer_state_is_not_taken_for_a_checkpoint(tmp_path):
    # an HF Trainer output folder: its trainer_state.json is TrainerState's, not the kit's summary
    folder = tmp_path / "checkpoint-5"
    folder.mkdir()
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 5, "log_history": []}))
    assert find_latest_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        load_checkpoint(folder, model=torch.nn.Linear(2, 2))


def test_checkpoints_written_before_the_rename_still_resume(tokenizer, tmp_path):
    import shutil

    config = TrainConfig(**RESUME_CONFIG, output_dir=tmp_path, save_every=3)
    full = train(
        build_test_model(len(tokenizer)), tokenizer, EXAMPLES, config, device_policy=CPU, progress=False
    )
    shutil.rmtree(tmp_path / "checkpoint-6")
    folder = tmp_path / "checkpoint-3"
    (folder / "simplepo_state.json").rename(folder / "trainer_state.json")  # the layout before the rename
    (folder / "simplepo_complete.json").unlink()  # which had no completion marker either
    assert find_latest_checkpoint(tmp_path) == folder
    assert read_history(folder)[-1]["step"] == 3
    resumed = train(
        build_test_model(len(tokenizer), seed=4), tokenizer, EXAMPLES, config, device_policy=CPU, progress=False,
        resume_from=tmp_path,
    )  # fmt: skip
    assert without_timing(resumed.history) == without_timing(full.history)
