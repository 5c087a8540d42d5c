"""The reference model: the shipped model (loaded, never built), cache keying and atomic rebuilds (with a
fake trainer), and the shipped model's quality."""

from __future__ import annotations

import json
from statistics import mean

import pytest
import torch
from conftest import build_test_model, build_test_tokenizer
from transformers import AutoModelForCausalLM

from simplepo_helpers import generate_responses, judge, load_reference_model
from simplepo_helpers.world import ReferenceConfig, WorldConfig, build_world, data_dir, reference
from simplepo_helpers.world.reference import sft_example
from simplepo_helpers.world.tokenizer import world_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def fake_builds(monkeypatch, tmp_path):
    """Point the cache at tmp_path and replace the SFT run by an instant random model; count the builds."""
    monkeypatch.setenv("SIMPLEPO_CACHE", str(tmp_path))
    builds = []

    def fake_train(config, progress=True):
        builds.append(config)
        if getattr(fake_train, "fail", False):
            raise RuntimeError("killed mid-build")
        tokenizer = build_test_tokenizer()
        return build_test_model(len(tokenizer)), tokenizer

    monkeypatch.setattr(reference, "train_reference", fake_train)
    return builds, fake_train


def test_loading_the_shipped_model_never_builds(fake_builds, tmp_path):
    builds, _ = fake_builds
    model, tokenizer = load_reference_model(progress=False)
    assert builds == [] and [p for p in tmp_path.iterdir()] == []  # nothing built, nothing cached
    path = reference.reference_model_dir()
    assert path == reference.SHIPPED_DIR and path.is_relative_to(reference.Path(reference.__file__).parent)
    assert len(reference.reference_fingerprint()) == 16
    with pytest.raises(FileNotFoundError, match="make reference SEED=3"):  # a rebuild is never made silently
        load_reference_model(ReferenceConfig(seed=3), progress=False)
    assert builds == []


def test_a_rebuild_goes_to_the_cache_never_over_the_shipped_model(fake_builds, tmp_path):
    builds, _ = fake_builds
    shipped = reference.file_fingerprint(reference.SHIPPED_DIR / "model.safetensors")
    path = reference.ensure_reference_model(ReferenceConfig(seed=3), progress=False)
    assert path.parent == tmp_path and len(builds) == 1
    assert reference.file_fingerprint(reference.SHIPPED_DIR / "model.safetensors") == shipped
    model, _ = load_reference_model(ReferenceConfig(seed=3), progress=False)  # now it loads the build
    assert reference.reference_fingerprint(ReferenceConfig(seed=3)) != shipped
    assert "machine" in json.loads((path / "build_info.json").read_text())


def test_shipped_model_is_described_by_its_build_info():
    info = json.loads((reference.SHIPPED_DIR / "build_info.json").read_text())
    world = json.loads(json.dumps(reference.asdict(WorldConfig())))  # tuples as JSON lists
    assert info["config"]["seed"] == 0 and info["config"]["world"] == world
    # trained on today's SFT data: a change to the world's data must re-ship the model (make reference-ship)
    assert info["sft_data"] == reference.file_fingerprint(reference.Path(data_dir()) / "sft_train.jsonl")
    assert info["machine"]["cpu"]  # which CPU rounded it: a rebuild elsewhere is another model


def test_cache_builds_once_and_rebuilds_on_request(fake_builds, tmp_path):
    builds, _ = fake_builds
    path = reference.ensure_reference_model(progress=False)
    assert path.parent == tmp_path and path.name.startswith("reference-")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in path.iterdir()
    }
    assert reference.ensure_reference_model(progress=False) == path and len(builds) == 1
    reference.ensure_reference_model(rebuild=True, progress=False)
    assert len(builds) == 2
    info = json.loads((path / "build_info.json").read_text())
    assert info["parameters"] == sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(path).parameters()
    )


def test_cache_key_follows_config_and_data():
    base = reference.cache_key(ReferenceConfig())
    assert reference.cache_key(ReferenceConfig()) == base
    assert reference.cache_key(ReferenceConfig(epochs=1)) != base
    assert reference.cache_key(ReferenceConfig(world=WorldConfig(n_sft=3999))) != base  # other SFT data
    assert reference.cache_key(ReferenceConfig(world=WorldConfig(label_noise=0.2))) == base  # pairs only
    assert reference.cache_key(ReferenceConfig(seed=1)) != base


def test_cache_key_follows_the_code(monkeypatch):
    base = reference.cache_key(ReferenceConfig())
    reference.cache_key.cache_clear()
    monkeypatch.setattr(reference, "code_fingerprint", lambda *parts: "edited")
    try:
        assert (
            reference.cache_key(ReferenceConfig()) != base
        )  # edited code: a new entry, no hand-bumped version
    finally:
        reference.cache_key.cache_clear()


def test_failed_build_leaves_nothing_behind_and_keeps_the_old_model(fake_builds, tmp_path):
    _, fake_train = fake_builds
    fake_train.fail = True
    with pytest.raises(RuntimeError, match="killed"):
        reference.ensure_reference_model(progress=False)
    assert [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    fake_train.fail = False
    path = reference.ensure_reference_model(progress=False)
    fake_train.fail = True
    with pytest.raises(RuntimeError, match="killed"):
        reference.ensure_reference_model(rebuild=True, progress=False)
    assert [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == [path]
    assert (path / "model.safetensors").exists()


def test_sft_labels_cover_only_the_reply_and_its_eos():
    tokenizer = world_tokenizer(WorldConfig(n_sft=50))
    messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5."}]
    ids, labels = sft_example(tokenizer, messages, 0)
    reply = [i for i, label in zip(ids, labels, strict=True) if label != -100]
    assert tokenizer.decode(reply) == "5.<|im_end|>"
    assert reply == labels[-len(reply) :] and ids[-1] == tokenizer.eos_token_id


def test_reference_model_is_mediocre_on_held_out_prompts():
    """The shipped model: size, loading, and the judged correct rate."""
    model, tokenizer = load_reference_model()
    assert 500_000 <= sum(p.numel() for p in model.parameters()) <= 3_000_000
    assert (
        type(tokenizer).__name__
        in json.loads((reference.reference_model_dir() / "tokenizer_config.json").read_text())[
            "tokenizer_class"
        ]
    )
    assert model.dtype == torch.float32 and not model.training
    prompts = [row["prompt"] for row in build_world()["eval_prompts"]]
    responses = generate_responses(model, tokenizer, prompts, max_new_tokens=48, seed=0)
    verdicts = [judge(p, r) for p, r in zip(prompts, responses, strict=True)]
    correct = mean(v.correct for v in verdicts)
    assert 0.2 <= correct <= 0.7, correct
    malformed = mean(
        ("cut off" in v.reason) or ("repeats" in v.reason) or v.reason == "empty response" for v in verdicts
    )
    assert malformed < 0.1, malformed


def test_rebuilds_are_models_of_the_shipped_ones_quality():
    """A rebuild (another seed, standing in for another CPU) is another model of the same quality: from the spread
    record's baselines, its expected judge score and oracle best-of-4 on eval and on the held-out tasks lie within
    0.03 and 0.05 of the shipped model's (stated tolerances; measured: 0.008 and 0.021 apart at most)."""
    from simplepo_helpers.evaluation.results import repo_root
    from simplepo_helpers.evaluation.spread import SHIPPED, baselines, read_records

    base = baselines(read_records(repo_root() / "results" / "rounds.jsonl"))
    rebuilds = {ref for ref, _ in base if ref != SHIPPED}
    assert len(rebuilds) >= 2
    for split in ("eval", "heldout"):
        shipped = base[(SHIPPED, split)]
        for ref in rebuilds:
            other = base[(ref, split)]
            assert abs(mean(other["expected"]) - mean(shipped["expected"])) <= 0.03, (ref, split)
            assert abs(mean(other["best_of_4"]) - mean(shipped["best_of_4"])) <= 0.05, (ref, split)
