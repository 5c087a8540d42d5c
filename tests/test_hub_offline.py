"""An explicit Hub model or dataset with the Hub out of reach: one clear message saying what to do."""

from __future__ import annotations

import pytest
import torch

from simplepo_helpers.runtime.device import DevicePolicy
from simplepo_helpers.scale.hub import HubConfig, HubUnavailableError, load_hub_model, load_hub_preferences

CPU = DevicePolicy(torch.device("cpu"), torch.float32, None, False, "tests")
NOT_CACHED = "simplepo-tests/not-in-any-cache"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Offline mode and an empty cache, whatever the caller's environment."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_model_not_cached_offline_says_what_to_do():
    with pytest.raises(HubUnavailableError) as caught:
        load_hub_model(NOT_CACHED, CPU)
    message = str(caught.value)
    assert f"The model '{NOT_CACHED}' is not in the local Hugging Face cache" in message
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in message
    assert f"hf download {NOT_CACHED}`" in message and "profile='cpu'" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # one message, no chain
    assert isinstance(caught.value, OSError)  # callers catching OSError (profile "auto") still catch it


def test_dataset_not_cached_offline_says_what_to_do(tokenizer):
    config = HubConfig(dataset_id=NOT_CACHED)
    with pytest.raises(HubUnavailableError, match=r"The dataset .* --repo-type dataset"):
        load_hub_preferences(config, tokenizer)


def test_a_missing_local_folder_keeps_its_own_error(tmp_path):
    with pytest.raises(OSError) as caught:
        load_hub_model(str(tmp_path / "no-such-model"), CPU)
    assert not isinstance(caught.value, HubUnavailableError)


def test_errors_that_are_not_about_reaching_the_hub_pass_through():
    from simplepo_helpers.scale.hub import hub_access

    with pytest.raises(ValueError, match="no chat template"):
        with hub_access("model", NOT_CACHED):
            raise ValueError("no chat template")


def test_the_reward_model_judge_says_what_to_do():
    from simplepo_helpers.evaluation.reward_model import RewardModelJudge

    with pytest.raises(
        HubUnavailableError, match=r"^The reward model '.*' is not in the local .* profile='cpu'"
    ) as caught:
        RewardModelJudge(NOT_CACHED, device="cpu")
    assert f"hf download {NOT_CACHED}`" in str(caught.value)
