"""The notebook-03 profiles, offline: the gpu profile's loading code runs on a tiny Llama and a tokenizer saved
in Hugging Face format and on local rows in UltraFeedback's schema, so a mistake there fails without a network.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import build_test_model
from trl import extract_prompt

from simplepo_helpers import LossConfig, PreferenceCollator, preference_loss
from simplepo_helpers.lessons import profiles
from simplepo_helpers.lessons.profiles import load_gpu_profile, load_profile, resolve_profile
from simplepo_helpers.runtime.device import DevicePolicy
from simplepo_helpers.scale.hub import HubConfig, ultrafeedback_to_preference

CPU = DevicePolicy(torch.device("cpu"), torch.float32, None, False, "tests")


def uf_row(question: str, good: str, bad: str, **extra) -> dict:
    """A row in UltraFeedback's schema: two whole conversations, the prompt only implicit."""
    user = {"content": question, "role": "user"}  # key order as stored in the Hub's parquet files
    return {
        "chosen": [user, {"content": good, "role": "assistant"}],
        "rejected": [user, {"content": bad, "role": "assistant"}],
        "score_chosen": 8.0,
        "score_rejected": 4.5,
        **extra,
    }


TRAIN_ROWS = [
    uf_row("What is two plus three?", "Two plus three is five.", "It is six."),
    uf_row("Name a colour.", "Blue is a colour.", "The dog."),
    uf_row("Count the letters in banana.", "It has six letters.", "Sorry, I cannot help."),
    uf_row("Say hello.", "hello world", "the quick brown fox jumps over the lazy dog " * 12),  # too long
    uf_row("What is 2 + 3?", "5", "The answer is 6."),
    uf_row("Name a fruit.", "A banana.", "Blue."),
]
TEST_ROWS = [
    uf_row("What is 1 + 1?", "Two.", "Three."),
    uf_row("Name a colour, please.", "Red is a colour.", "Count to ten."),
]
SMALL = {"n_train": 4, "n_eval": 2, "max_length": 48, "max_prompt_length": 24}


@pytest.fixture(scope="module")
def hub_dirs(tmp_path_factory, tokenizer):
    """A model folder (save_pretrained: safetensors, config, tokenizer) and a dataset folder with two splits."""
    root = tmp_path_factory.mktemp("hub")
    model_dir, data_dir = root / "tiny-llama", root / "uf"
    build_test_model(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data_dir.mkdir()
    for name, rows in (("train", TRAIN_ROWS), ("test", TEST_ROWS)):
        (data_dir / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return model_dir, data_dir


# ------------------------------------------------------------------------------------ schema mapping


@pytest.mark.parametrize("row", TRAIN_ROWS[:3])
def test_ultrafeedback_mapping_matches_trl_extract_prompt(row):
    mine = ultrafeedback_to_preference(row, 0)
    theirs = extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]})
    assert {k: mine[k] for k in ("prompt", "chosen", "rejected")} == theirs
    assert mine["prompt"][-1]["role"] == "user" and mine["chosen"][0]["role"] == "assistant"
    assert (mine["score_chosen"], mine["score_rejected"]) == (8.0, 4.5)  # extra columns kept


def test_ultrafeedback_mapping_keeps_a_system_message_in_the_prompt():
    system = {"role": "system", "content": "Be brief."}
    row = uf_row("Hi?", "Hello.", "Go away.")
    row["chosen"].insert(0, system)
    row["rejected"].insert(0, system)
    assert ultrafeedback_to_preference(row, 0)["prompt"] == [system, {"role": "user", "content": "Hi?"}]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: r["rejected"].__setitem__(0, {"role": "user", "content": "Another question?"}),
            "row 7: chosen and rejected do not share the same prompt",
        ),
        (lambda r: r["chosen"].pop(), "row 7: chosen must be a prompt followed by one assistant reply"),
        (lambda r: r["rejected"][1].__setitem__("role", "user"), "row 7: rejected must be a prompt followed"),
        (lambda r: r.pop("rejected"), "row 7: no 'rejected' column"),
        (lambda r: r.__setitem__("chosen", "a plain string"), "row 7: chosen must be a list of messages"),
        (lambda r: r["chosen"][0].pop("content"), "row 7: chosen: a message lacks the key 'content'"),
    ],
)
def test_ultrafeedback_mapping_names_the_row_and_the_reason(change, message):
    row = uf_row("What is 2 + 2?", "Four.", "Five.")
    change(row)
    with pytest.raises(ValueError, match=message):
        ultrafeedback_to_preference(row, 7)


# -------------------------------------------------------------------------------------- gpu profile


def test_gpu_profile_loads_model_tokenizer_and_subsets_offline(hub_dirs, tokenizer):
    model_dir, data_dir = hub_dirs
    config = HubConfig(model_id=str(model_dir), dataset_id=str(data_dir), **SMALL)
    setup = load_gpu_profile(config, device_policy=CPU)
    assert setup.name == "gpu" and setup.device_policy is CPU
    assert setup.model.dtype == torch.float32 and setup.model.device.type == "cpu"
    text = "What is two plus three? Two plus three is five."
    assert (
        setup.tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    )  # the saved tokenizer, not another
    messages = [{"role": "user", "content": "Hi"}]
    assert setup.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    ) == tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # the too-long row is reported, not silently dropped, and the subset is filled from the other rows
    assert len(setup.train_rows) == 4 and len(setup.eval_rows) == 2
    too_long = [bad for bad in setup.reports["train"].bad_rows if bad.reason == "too_long"]
    assert len(too_long) == 1
    kept_questions = {row["prompt"][-1]["content"] for row in setup.train_rows}
    assert "Say hello." not in kept_questions and kept_questions <= {
        r["chosen"][0]["content"] for r in TRAIN_ROWS
    }
    assert setup.eval_prompts == list(setup.eval_rows["prompt"])
    assert all(prompt[-1]["role"] == "user" for prompt in setup.eval_prompts)
    assert setup.defaults == profiles.PROFILE_DEFAULTS["gpu"]


def test_gpu_profile_subset_is_seeded(hub_dirs):
    model_dir, data_dir = hub_dirs
    orders = []
    for seed in (0, 0, 1):
        config = HubConfig(model_id=str(model_dir), dataset_id=str(data_dir), seed=seed, **SMALL)
        setup = load_gpu_profile(config, device_policy=CPU)
        orders.append([row["prompt"][-1]["content"] for row in setup.train_rows])
    assert orders[0] == orders[1]
    assert orders[0] != orders[2]  # another seed, another sample


def test_gpu_profile_batches_train_with_the_kit(hub_dirs):
    model_dir, data_dir = hub_dirs
    setup = load_gpu_profile(
        HubConfig(model_id=str(model_dir), dataset_id=str(data_dir), **SMALL), device_policy=CPU
    )
    collator = PreferenceCollator(
        setup.tokenizer, max_length=setup.max_length, max_prompt_length=setup.max_prompt_length
    )
    batch = collator(list(setup.train_rows))
    assert batch["input_ids"].shape[0] == 2 * len(setup.train_rows)
    assert batch["input_ids"].shape[1] <= setup.max_length
    loss, metrics = preference_loss(setup.model, batch, LossConfig(name="simpo", beta=2.5, gamma=1.375))
    assert math.isfinite(loss.item()) and 0.0 <= metrics["rewards/accuracies"] <= 1.0


def test_gpu_profile_rejects_a_model_without_chat_template(tmp_path, tokenizer, hub_dirs):
    _, data_dir = hub_dirs
    plain = tokenizer.__class__.from_pretrained(hub_dirs[0])
    plain.chat_template = None
    build_test_model(len(tokenizer)).save_pretrained(tmp_path)
    plain.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="no chat template"):
        load_gpu_profile(
            HubConfig(model_id=str(tmp_path), dataset_id=str(data_dir), **SMALL), device_policy=CPU
        )


def test_hub_config_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_train must be a positive integer"):
        HubConfig(n_train=0)


# ---------------------------------------------------------------------------------- profile choice


def test_resolve_profile():
    assert resolve_profile("cpu", cuda_available=True) == ("cpu", "profile 'cpu' requested")
    assert (
        resolve_profile("gpu", cuda_available=False)[0] == "gpu"
    )  # an explicit choice is kept (and may fail)
    name, reason = resolve_profile("auto", cuda_available=False)
    assert name == "cpu" and "no CUDA" in reason
    assert resolve_profile("auto", cuda_available=True)[0] == "gpu"
    with pytest.raises(ValueError, match=r"profile must be one of \('auto', 'cpu', 'gpu'\), got 'tpu'"):
        resolve_profile("tpu")


@pytest.fixture()
def fake_cuda(monkeypatch):
    """CUDA 'available', the policy pinned to the CPU, and the cpu profile replaced by a stub recording its reason."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(profiles, "select_device", lambda *args, **kwargs: CPU)
    monkeypatch.setattr(profiles, "load_cpu_profile", lambda *, reason: calls.append(reason) or "cpu-setup")
    return calls


def test_auto_uses_the_gpu_profile_when_it_loads(fake_cuda, hub_dirs):
    model_dir, data_dir = hub_dirs
    setup = load_profile("auto", config=HubConfig(model_id=str(model_dir), dataset_id=str(data_dir), **SMALL))
    assert setup.name == "gpu" and "CUDA is available" in setup.reason and not fake_cuda


def test_auto_falls_back_to_cpu_and_says_why(fake_cuda, hub_dirs, tmp_path):
    _, data_dir = hub_dirs
    config = HubConfig(model_id=str(tmp_path / "no-such-model"), dataset_id=str(data_dir), **SMALL)
    assert load_profile("auto", config=config) == "cpu-setup"
    (reason,) = fake_cuda
    assert "gpu profile could not load" in reason and "no-such-model" in reason
    with pytest.raises(OSError):  # asked for explicitly, the gpu profile fails loudly
        load_profile("gpu", config=config)


# -------------------------------------------------------------------------------------- cpu profile


def test_cpu_profile_reads_the_world_data(monkeypatch, tokenizer):
    """The cpu profile wires the world's files; the reference model is stubbed (its build has its own test)."""
    from simplepo_helpers import world
    from simplepo_helpers.world.tokenizer import world_tokenizer as build_world_tokenizer

    world_tokenizer = build_world_tokenizer()
    stub_model = build_test_model(len(world_tokenizer))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(world, "load_reference_model", lambda: (stub_model, world_tokenizer))
    setup = load_profile("auto")
    assert setup.name == "cpu" and "no CUDA" in setup.reason
    assert (
        setup.model is stub_model
        and setup.device_policy.device.type == "cpu"
        and setup.device_policy.autocast_dtype is None
    )
    lines = {
        stem: sum(1 for _ in world.data_file(stem).open())
        for stem in ("pairs_train", "pairs_test", "eval_prompts")
    }
    assert (
        setup.reports["train"].n_total == lines["pairs_train"]
        and setup.reports["eval"].n_total == lines["pairs_test"]
    )
    assert len(setup.train_rows) == setup.reports["train"].n_kept > 0.95 * lines["pairs_train"]
    assert len(setup.eval_prompts) == lines["eval_prompts"]
    assert all(prompt[-1]["role"] == "user" for prompt in setup.eval_prompts)
    train_prompts = {row["prompt"][-1]["content"] for row in setup.train_rows}
    assert not train_prompts & {prompt[-1]["content"] for prompt in setup.eval_prompts}  # held out for real
    assert setup.max_length <= world_tokenizer.model_max_length
    from simplepo_helpers.world.reference import MAX_NEW_TOKENS

    assert setup.defaults == {**profiles.PROFILE_DEFAULTS["cpu"], "max_new_tokens": MAX_NEW_TOKENS}
