"""The training entry point and its config: validation messages, overrides, 1-process runs, resume, LoRA export.

The runs use a tiny world: the world's data generator and tokenizer at a small size, and a 2-layer random
Llama saved as a local model folder (nothing is downloaded). ``test_multiprocess.py`` reuses it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import build_test_model
from transformers import AutoModelForCausalLM

from simplepo_helpers import LossConfig, TrainConfig, train
from simplepo_helpers.data import read_jsonl
from simplepo_helpers.runtime.checkpoint import load_checkpoint
from simplepo_helpers.runtime.device import select_device
from simplepo_helpers.scale.cli import load_rows, main
from simplepo_helpers.scale.config import ConfigError, config_from_dict, config_to_dict, load_config
from simplepo_helpers.scale.hub import load_hub_model
from simplepo_helpers.scale.lora import apply_lora

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*is_gradient_checkpointing.*:FutureWarning"
)  # PEFT on transformers 5
TRL_METRICS = {
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
}


def build_tiny_world(root: Path) -> dict[str, Path]:
    """A small world (64 training pairs, 16 held out), its tokenizer and a random 2-layer Llama folder."""
    from simplepo_helpers.world import WorldConfig, build_world
    from simplepo_helpers.world.tokenizer import build_tokenizer, world_texts

    world = build_world(WorldConfig(n_sft=50, n_train_pairs=64, n_test_pairs=16, n_eval_prompts=4))
    tokenizer = build_tokenizer(world_texts(world))
    model = build_test_model(
        len(tokenizer),
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    paths = {"model": root / "model", "train": root / "pairs_train.jsonl", "eval": root / "pairs_test.jsonl"}
    model.save_pretrained(paths["model"])
    tokenizer.save_pretrained(paths["model"])
    for name, stem in (("train", "pairs_train"), ("eval", "pairs_test")):
        paths[name].write_text("".join(json.dumps(row) + "\n" for row in world[stem]))
    return paths


def base_config(world: dict[str, Path], output_dir: Path, **train: object) -> dict:
    """A config dict for a few fast steps on the tiny world."""
    return {
        "model": {"name_or_path": str(world["model"]), "precision": "fp32"},
        "data": {"train": str(world["train"])},
        "loss": {"name": "simpo", "beta": 2.5, "gamma": 1.375},
        "train": {
            "learning_rate": 1e-2,
            "max_steps": 4,
            "batch_size": 8,
            "warmup_ratio": 0.0,
            "max_length": 128,
            "max_prompt_length": 64,
            "seed": 0,
            "output_dir": str(output_dir),
            **train,
        },
    }


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def run_cli(config: dict, tmp_path: Path, *overrides: str) -> int:
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return main(["--config", str(path), "--quiet", *overrides])


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_world(tmp_path_factory.mktemp("tiny_world"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread is faster, and far faster on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- configuration

MINIMAL = {
    "model": {"name_or_path": "world"},
    "data": {"train": "world:pairs_train"},
    "train": {"output_dir": "o"},
}


@pytest.mark.parametrize("path", ["model.name_or_path", "data.train", "train.output_dir"])
def test_missing_required_field_is_named(path):
    section, key = path.split(".")
    raw = {name: dict(body) for name, body in MINIMAL.items()}
    del raw[section][key]
    with pytest.raises(ConfigError, match=rf"missing required field {path}"):
        config_from_dict(raw)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.learning_rate=fast", "train.learning_rate: expected float"),
        ("train.batch_size=2.5", "train.batch_size: expected int"),
        ("lora.enabled=3", "lora.enabled: expected bool"),
        ("train.learning_rate=-1", "train.learning_rate: learning_rate must be > 0"),
        ("train.lr_scheduler_type=cosin", "train.lr_scheduler_type: cosin is not a valid"),
        ("loss.beta=0", "loss.beta:"),
        ("loss.loss_type=ipo2", "loss.loss_type:"),
        ("model.precision=fp8", "model.precision: precision must be one of"),
        ("lora.r=0", "lora.r: r must be an integer >= 1"),
        ("data.n_train=0", "data.n_train:"),
        ("train.learnig_rate=1", r"unknown field train.learnig_rate \(did you mean train.learning_rate\?\)"),
        ("trian.max_steps=1", r"unknown field trian \(did you mean train\?\)"),
        ("train.loss=dpo", "unknown field train.loss"),
    ],
)
def test_wrong_field_is_named(override, named):
    with pytest.raises(ConfigError, match=named):
        load_config(None, ["model.name_or_path=world", "data.train=x.jsonl", "train.output_dir=o", override])


def test_dpo_with_a_simpo_margin_is_refused_naming_gamma():
    with pytest.raises(ConfigError, match=r"loss.gamma: gamma is SimPO's target margin"):
        config_from_dict({**MINIMAL, "loss": {"name": "dpo", "gamma": 0.5}})


def test_yaml_file_overrides_and_json_round_trip(tmp_path):
    # YAML 1.1 reads 5e-6 (no dot) as a string; float fields accept it
    (tmp_path / "run.yaml").write_text(
        "model: {name_or_path: world}\ndata: {train: 'world:pairs_train'}\n"
        "loss: {name: dpo, beta: 0.1}\ntrain: {output_dir: out, learning_rate: 5e-6, max_steps: 7}\n"
    )
    config = load_config(
        tmp_path / "run.yaml",
        ["train.max_steps=9", "lora.enabled=true", "lora.target_modules=[q_proj, v_proj]", "resume=latest"],
    )
    assert config.train.learning_rate == 5e-6 and isinstance(config.train.learning_rate, float)
    assert config.train.max_steps == 9  # the override wins over the file
    assert config.train.loss is config.loss and config.loss.name == "dpo" and config.loss.gamma == 0.0
    assert config.lora.enabled and config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.resume == "latest"
    (tmp_path / "run.json").write_text(json.dumps(config_to_dict(config)))
    assert load_config(tmp_path / "run.json") == config


def test_example_configs_validate():
    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert len(paths) >= 2
    configs = {path.stem: load_config(path) for path in paths}
    assert configs["tiny_world_cpu"].model.name_or_path == "world"
    assert any(config.lora.enabled for config in configs.values())


def test_config_error_exits_with_code_2_and_names_the_field(capsys):
    code = main(["model.name_or_path=world", "data.train=x.jsonl", "train.output_dir=o", "train.max_steps=0"])
    assert code == 2
    assert "config error: train.max_steps" in capsys.readouterr().err


def test_print_config_shows_resolved_defaults(capsys):
    assert (
        main(["model.name_or_path=world", "data.train=x.jsonl", "train.output_dir=o", "--print-config"]) == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["loss"] == {**printed["loss"], "name": "simpo", "beta": 2.0, "gamma": 1.0}


# ---------------------------------------------------------------- data sources


def test_implicit_prompt_dataset_folder_is_mapped_and_subset(tiny_world, tmp_path):
    """A dataset folder in UltraFeedback's layout (no prompt column) gives explicit-prompt rows."""
    rows, _ = read_jsonl(tiny_world["train"])
    folder = tmp_path / "ultrafeedback_like"
    folder.mkdir()
    implicit = [
        {"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"], "score": i}
        for i, r in enumerate(rows)
    ]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in implicit))
    _, tokenizer = load_hub_model(str(tiny_world["model"]), select_device("cpu", verbose=False))
    train_config = TrainConfig(max_length=128, max_prompt_length=64)
    loaded, report = load_rows(str(folder), "train", 10, tokenizer, train_config, 0, "data.train")
    assert len(loaded) == 10 and report.n_bad == 0
    for row in loaded:
        original = rows[row["score"]]
        assert (row["prompt"], row["chosen"], row["rejected"]) == (
            original["prompt"],
            original["chosen"],
            original["rejected"],
        )
    assert len({row["score"] for row in loaded}) == 10


def test_standard_format_jsonl_keeps_the_first_n_valid_rows(tiny_world, tmp_path):
    rows = [
        {"prompt": "What is 3 + 4?", "chosen": "3 + 4 = 7.", "rejected": "3 + 4 = 8."},
        {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "4"},  # identical: reported, left out
        {"prompt": "What is 1 + 5?", "chosen": "1 + 5 = 6.", "rejected": "It is 7."},
        {"prompt": "What is 9 + 0?", "chosen": "9.", "rejected": "90."},
    ]
    path = tmp_path / "standard.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, tokenizer = load_hub_model(str(tiny_world["model"]), select_device("cpu", verbose=False))
    loaded, report = load_rows(str(path), "train", 2, tokenizer, TrainConfig(), 0, "data.train")
    assert [row["prompt"] for row in loaded] == ["What is 3 + 4?", "What is 1 + 5?"]
    assert [(bad.index, bad.reason) for bad in report.bad_rows] == [(1, "identical_responses")]


# ---------------------------------------------------------------- runs


def test_cli_run_matches_train_and_logs_trl_metrics(tiny_world, tmp_path):
    """One process through the entry point == the notebook's ``train`` on the same data and settings."""
    config = base_config(tiny_world, tmp_path / "cli", grad_accum_steps=2)
    assert run_cli(config, tmp_path) == 0
    logged = read_metrics(tmp_path / "cli")
    assert [row["step"] for row in logged] == [1, 2, 3, 4]
    assert TRL_METRICS | {"grad_norm", "lr", "epoch", "tokens"} <= set(logged[0])

    policy = select_device("cpu", verbose=False)
    model, tokenizer = load_hub_model(str(tiny_world["model"]), policy)
    rows, _ = read_jsonl(tiny_world["train"])
    settings = {key: value for key, value in config["train"].items() if key != "output_dir"}
    train_config = TrainConfig(loss=LossConfig(name="simpo", beta=2.5, gamma=1.375), **settings)
    result = train(model, tokenizer, rows, train_config, device_policy=policy, progress=False)
    for cli_row, train_row in zip(logged, result.history, strict=True):
        for name in [*TRL_METRICS, "grad_norm", "lr"]:
            assert cli_row[name] == pytest.approx(train_row[name], rel=1e-6, abs=1e-7), name


def test_resume_continues_exactly_and_refuses_to_mix_runs(tiny_world, tmp_path, capsys):
    config = base_config(tiny_world, tmp_path / "out", save_every=2)
    config["data"]["eval"] = str(tiny_world["eval"])
    config["data"]["eval_every"] = 2
    assert run_cli(config, tmp_path) == 0
    full = read_metrics(tmp_path / "out")
    assert {"eval_loss", "eval_rewards/accuracies"} <= set(full[1]) and "eval_loss" not in full[0]

    assert run_cli(config, tmp_path) == 2  # same output_dir, no resume: refused
    assert "set resume=latest" in capsys.readouterr().err

    assert run_cli(config, tmp_path, f"resume={tmp_path / 'out' / 'checkpoint-2'}") == 0
    resumed = read_metrics(tmp_path / "out")
    assert [row["step"] for row in resumed] == [1, 2, 3, 4]  # the log is rewritten from the checkpoint
    for before, after in zip(full, resumed, strict=True):
        for name in [*TRL_METRICS, "grad_norm", "eval_loss"]:
            if name in before:
                assert after[name] == pytest.approx(before[name], rel=1e-6, abs=1e-7), (before["step"], name)


def test_dpo_with_lora_uses_the_adapter_free_base_and_exports_a_merged_model(tiny_world, tmp_path):
    config = base_config(tiny_world, tmp_path / "lora", max_steps=3)
    config["loss"] = {"name": "dpo", "beta": 0.1}
    config["lora"] = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "merge_at_end": True}
    assert run_cli(config, tmp_path) == 0
    logged = read_metrics(tmp_path / "lora")
    # step 1 starts from B = 0: policy == reference, so DPO's loss is ln 2 and the margin 0 (vector D2)
    assert logged[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert logged[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert logged[-1]["loss"] != pytest.approx(math.log(2), abs=1e-4)

    checkpoint = tmp_path / "lora" / "checkpoint-3"
    assert (checkpoint / "adapter_model.safetensors").is_file()
    assert not (checkpoint / "model.safetensors").exists()  # adapters only: the base is not copied

    policy = select_device("cpu", verbose=False)
    base, _ = load_hub_model(str(tiny_world["model"]), policy)
    adapted = apply_lora(base, r=4, alpha=8, dropout=0.0)
    load_checkpoint(checkpoint, model=adapted, restore_rng=False)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "lora" / "final").eval()
    original = AutoModelForCausalLM.from_pretrained(tiny_world["model"]).eval()
    input_ids = torch.randint(
        5, merged.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        expected = adapted.eval()(input_ids=input_ids).logits
        got = merged(input_ids=input_ids).logits
        untrained = original(input_ids=input_ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - untrained).abs().max() > 1e-3  # the merged weights carry the trained adapters


def test_dpo_precomputed_reference_matches_the_live_reference(tiny_world, tmp_path):
    """model.reference=auto precomputes DPO's reference log-probs once (no reference copy); same curve as live."""
    config = base_config(tiny_world, tmp_path / "pre", max_steps=3)
    config["loss"] = {"name": "dpo", "beta": 0.1}
    config["data"].update(eval=str(tiny_world["eval"]), eval_every=3)
    assert run_cli(config, tmp_path) == 0
    assert run_cli(config, tmp_path, f"train.output_dir={tmp_path / 'live'}", "model.reference=live") == 0
    precomputed, live = read_metrics(tmp_path / "pre"), read_metrics(tmp_path / "live")
    assert precomputed[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference at step 1
    for a, b in zip(precomputed, live, strict=True):
        for name in [*TRL_METRICS, "grad_norm", "eval_loss", "eval_rewards/margins"]:
            if name == "rewards/accuracies" and a["step"] == 1:
                continue  # margins are float rounding (~1e-8) at step 1: their sign is a coin flip
            if name in a or name in b:
                assert a[name] == pytest.approx(b[name], rel=1e-5, abs=1e-6), (a["step"], name)
    state = json.loads((tmp_path / "pre" / "checkpoint-3" / "simplepo_state.json").read_text())
    assert state["extra"]["reference"] == "precomputed"


def test_precomputed_reference_is_refused_with_the_kl_term():
    raw = {**MINIMAL, "loss": {"name": "dpo", "beta": 0.1, "kl_weight": 0.1}, "model": {"name_or_path": "w"}}
    from simplepo_helpers.scale.cli import reference_mode

    assert reference_mode(config_from_dict(raw)) == "live"
    raw["model"]["reference"] = "precomputed"
    with pytest.raises(ConfigError, match="kl_weight > 0 needs the live reference"):
        reference_mode(config_from_dict(raw))
    with pytest.raises(ConfigError, match="model.reference"):
        config_from_dict({**raw, "model": {"name_or_path": "w", "reference": "cached"}})


def test_report_to_tensorboard_from_the_entry_point(tiny_world, tmp_path):
    from test_trackers import read_scalars

    config = base_config(tiny_world, tmp_path / "tb", max_steps=2)
    config["log"] = {"report_to": "tensorboard", "run_name": "tiny"}
    assert run_cli(config, tmp_path) == 0
    logged = read_metrics(tmp_path / "tb")
    scalars = read_scalars(tmp_path / "tb" / "runs" / "tiny")
    assert [step for step, _ in scalars["train/loss"]] == [1, 2]
    assert [value for _, value in scalars["train/loss"]] == pytest.approx(
        [row["loss"] for row in logged], rel=1e-6
    )


def test_unknown_tracker_is_a_config_error(capsys):
    code = main(
        ["model.name_or_path=world", "data.train=x.jsonl", "train.output_dir=o", "log.report_to=tensorbored"]
    )
    assert code == 2
    assert "config error: log.report_to: report_to: unknown tracker 'tensorbored'" in capsys.readouterr().err
