"""Notebooks 03, 04 and 05 under ``profile="gpu"``, end to end, offline, on the kit's stand-ins.

No GPU and no download: ``SIMPLEPO_STANDINS=1`` makes ``load_profile("gpu")`` load a randomly initialised model
of SmolLM2's architecture (tied embeddings, grouped-query attention) scaled down, a byte-level tokenizer, an
UltraFeedback-schema preference file and a random reward-model judge (``simplepo_helpers/world/standins.py``,
``docs/standins.md``) through the gpu profile's own loaders. Everything a Colab learner's gpu run does after
loading then runs: the device and precision policy (CPU float32 here), the hand-written loop against
``train()``, ``train_all`` in worker processes, generation, the reward-model judge, ``sample_k`` and the
results tables. The checks calibrated on real models (or on the cpu world) are skipped by the notebooks with
a printed note, which this test requires to be there: skipped, not silently.

Parameters are injected as papermill does: the ``parameters`` cell keeps its source and gets the overrides
appended (each overridden name must be a parameter of that notebook). Notebooks run from a copy in a temporary
folder, so checkpoints land there; 04 and 05 share one cache (05 reuses 04's runs, as on Colab).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {  # name, parameters injected, the notes printed where a calibrated check is skipped
    "03": (
        "03_simpo_training.ipynb",
        {"profile": "gpu", "steps": 4},
        ["the check that the loss went down is skipped", "reward accuracy is above chance is skipped"],
    ),
    "04": (
        "04_dpo_comparison.ipynb",
        {"profile": "gpu", "seeds": [0], "steps": 4, "timing_steps": 2},
        ["so the comparison with it is skipped"],
    ),
    "05": (
        "05_evaluation.ipynb",
        {"profile": "gpu", "seeds": [0], "steps": 4, "k": 2},
        [
            "the tie checks are calibrated on the world's judge",
            "calibrated for the cpu world",
            "skipped here",
            "the two are not comparable",
        ],
    ),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A checkout of links (the notebooks copied, so checkpoints land in its build/) and one cache for the three
    notebooks; ``repo_root()`` finds it from the notebooks' folder."""
    root = tmp_path_factory.mktemp("gpu_profile")
    for entry in ROOT.iterdir():
        if entry.name not in ("notebooks", "build", ".git", ".venv"):
            (root / entry.name).symlink_to(entry)
    shutil.copytree(ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns("solutions"))
    env = {
        "SIMPLEPO_STANDINS": "1",
        "SIMPLEPO_CACHE": str(root / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)  # the kernels (and train_all's worker processes) inherit them
    yield root
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def inject(notebook, overrides: dict) -> None:
    """Append ``name = value`` lines for ``overrides`` to the notebook's ``parameters`` cell."""
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    for name in overrides:
        assert re.search(rf"^{name} = ", cell.source, re.M), f"{name} is not a parameter of this notebook"
    lines = [f"{name} = {value!r}" for name, value in overrides.items()]
    cell.source += "\n# injected by tests/test_gpu_profile_offline.py\n" + "\n".join(lines) + "\n"


def outputs_text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(str(out.get("data", {}).get("text/plain", "")))
            parts.append(str(out.get("data", {}).get("text/markdown", "")))
    return "\n".join(parts)


def run(workspace: Path, key: str):
    name, overrides, _ = NOTEBOOKS[key]
    path = workspace / "notebooks" / name
    notebook = nbformat.read(path, as_version=4)
    inject(notebook, overrides)
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"notebook {name} under profile='gpu' on stand-ins failed:\n{str(error)[-3000:]}")
    return outputs_text(notebook)


@pytest.mark.parametrize("key", list(NOTEBOOKS))  # in order: 05 reuses 04's runs
def test_notebook_runs_the_gpu_profile_on_standins(workspace, key):
    text = run(workspace, key)
    assert "profile 'gpu' requested; on stand-ins" in text  # the gpu profile, on stand-ins, said so
    assert "device cpu | params float32 | autocast off" in text  # the device and precision policy ran
    for note in NOTEBOOKS[key][2]:
        assert note in text, f"notebook {key}: the note {note!r} was not printed"
    assert "checks passed" in text


def test_the_hook_reads_the_environment(monkeypatch):
    from simplepo_helpers.lessons.profiles import STANDINS_ENV, standins_requested

    for value, kind in [("", None), ("0", None), ("1", "tiny"), ("tiny", "tiny"), ("SmolLM2", "smollm2")]:
        monkeypatch.setenv(STANDINS_ENV, value)
        assert standins_requested() == kind
    monkeypatch.setenv(STANDINS_ENV, "big")
    with pytest.raises(ValueError, match="SIMPLEPO_STANDINS"):
        standins_requested()


def test_standins_have_smollm2s_architecture_and_ultrafeedbacks_schema(tmp_path, monkeypatch):
    import json

    from transformers import AutoConfig

    from simplepo_helpers.world.standins import ensure_standins

    monkeypatch.setenv("SIMPLEPO_CACHE", str(tmp_path))
    paths = ensure_standins("tiny")
    config = AutoConfig.from_pretrained(paths.model)
    assert config.model_type == "llama" and config.tie_word_embeddings
    assert config.num_attention_heads == 3 * config.num_key_value_heads  # SmolLM2's 9 over 3
    reward = AutoConfig.from_pretrained(paths.reward_model)
    assert reward.num_labels == 1
    row = json.loads((paths.data / "train.jsonl").read_text().splitlines()[0])
    assert set(row) == {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"}
    assert [m["role"] for m in row["chosen"]] == ["user", "assistant"] and row["chosen"][0]["content"] == row[
        "prompt"
    ]
    assert ensure_standins("tiny") == paths  # cached: built once
