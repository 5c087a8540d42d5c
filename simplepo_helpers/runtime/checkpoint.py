"""Save and resume training without pickle: safetensors weights, weights-only state dicts, a JSON summary.

A checkpoint folder holds
- the weights: ``model.save_pretrained`` (``model.safetensors`` + ``config.json``; for a PEFT model only the
  adapter, ``adapter_model.safetensors``) or, for a plain ``nn.Module``, ``safetensors.torch.save_model``;
- ``optimizer.pt``, ``scheduler.pt``, ``scaler.pt`` (when used) and ``rng_state.pt`` written by ``torch.save``
  and read back with ``torch.load(weights_only=True)`` (the numpy RNG state is stored as a tensor);
- ``simplepo_state.json``: step, config, metric history and any extra JSON-able state (not HF's
  ``trainer_state.json``, which ``transformers.TrainerState`` would try to read; folders written before the
  rename, with the kit's own ``trainer_state.json``, still load and resume);
- the tokenizer (``tokenizer.save_pretrained``) when one is given, and ``README.md``, a model card with the
  training config and the latest metrics, so the folder loads and reads as a plain transformers model:
  ``AutoModelForCausalLM.from_pretrained(folder)`` and ``AutoTokenizer.from_pretrained(folder)``.
- ``simplepo_complete.json``, written last: the size of every other file. A folder is used only when it is
  complete: every listed file present with its size (a folder without the marker, written by an older kit, when
  its state file parses and every weights and ``.pt`` file loads). `find_latest_checkpoint` skips an incomplete
  one with a one-line message and falls back to the previous complete one.

Loading checks names and shapes before any tensor is copied, and `resume_state` compares the saved config with
the run's in full (loss and data included) before any state is loaded: a difference is refused, naming the
fields, unless ``allow_config_change=True`` (the entry point's ``--allow-config-change``).

A model sharded with FSDP2 (DTensor parameters) is gathered first, by every process together: the folder
holds the full weights, and the optimizer state in ``torch.distributed.checkpoint``'s full, name-keyed
layout (``"sharded": true`` in the summary), which loads back into a sharded or a plain model.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import random
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_model

from .files import publish_folder

STATE_NAME = "simplepo_state.json"
LEGACY_STATE_NAME = "trainer_state.json"  # the kit's name before it collided with HF Trainer's file
MODEL_CARD_NAME = "README.md"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
SCALER_NAME = "scaler.pt"
RNG_NAME = "rng_state.pt"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
ADAPTER_NAME = "adapter_model.safetensors"
COMPLETE_NAME = "simplepo_complete.json"  # written last: every other file's size
_CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    """The folder a run saves step ``step`` to: ``output_dir/checkpoint-<step>`` (as HF Trainer names it)."""
    return Path(output_dir) / f"checkpoint-{step}"


class CheckpointError(RuntimeError):
    """A checkpoint folder that is incomplete or damaged, or does not fit the model it is loaded into."""


class ResumeConfigError(ValueError):
    """The run's config differs from the checkpoint's; the message names the fields."""


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Every ``checkpoint-<step>`` folder under ``output_dir``, complete or not, highest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CHECKPOINT_PATTERN.match(p.name))]
    return [path for _, path in sorted(found, reverse=True) if path.is_dir()]


def find_latest_checkpoint(
    output_dir: str | Path, *, report: Callable[[str], None] | None = _warn
) -> Path | None:
    """The complete ``checkpoint-<step>`` folder with the highest step under ``output_dir``, or None.

    An incomplete or damaged folder above it is skipped with a one-line message to ``report`` (stderr).
    """
    skipped: list[tuple[str, str]] = []
    for path in list_checkpoints(output_dir):
        if state_file(path) is None and not (path / COMPLETE_NAME).is_file():
            continue  # not the kit's checkpoint (e.g. HF Trainer's)
        problem = checkpoint_problem(path)
        if problem is None:
            if report is not None:
                for name, why in skipped:
                    report(f"[simplepo] skipping {name}: {why}; using {path.name}")
            return path
        skipped.append((path.name, problem))
    if report is not None:
        for name, why in skipped:
            report(f"[simplepo] skipping {name}: {why}; no earlier complete checkpoint")
    return None


def state_file(directory: str | Path) -> Path | None:
    """The checkpoint's JSON summary (``simplepo_state.json``, or an older kit's ``trainer_state.json``)."""
    directory = Path(directory)
    if (directory / STATE_NAME).is_file():
        return directory / STATE_NAME
    legacy = directory / LEGACY_STATE_NAME
    if legacy.is_file():
        try:
            keys = json.loads(legacy.read_text()).keys()
        except (ValueError, AttributeError):
            return None
        if {"step", "history"} <= keys:
            return legacy  # the kit's summary, not HF Trainer's TrainerState (which has no "history")
    return None


def checkpoint_problem(directory: str | Path) -> str | None:
    """None when ``directory`` is a complete checkpoint, else what is wrong, in a few words."""
    directory = Path(directory)
    summary = state_file(directory)
    if summary is None:
        return f"no {STATE_NAME}"
    marker = directory / COMPLETE_NAME
    if marker.is_file():
        problem = _size_problem(directory, marker)
    else:  # an older kit's folder: accepted when every file loads
        problem = _load_problem(directory)
    if problem is None:
        try:
            json.loads(summary.read_text())
        except ValueError:
            problem = f"{summary.name} is not valid JSON (truncated?)"
    return problem


def _size_problem(directory: Path, marker: Path) -> str | None:
    try:
        sizes = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"{COMPLETE_NAME} is unreadable"
    for name, size in sizes.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written (truncated?)"
    return None


def _load_problem(directory: Path) -> str | None:
    from safetensors import safe_open

    for path in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except Exception as error:  # safetensors' SafetensorError
            return f"{path.name} does not load ({str(error).splitlines()[0]})"
    for path in sorted(directory.glob("*.pt")):
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:
            return f"{path.name} does not load ({type(error).__name__})"
    if not any(directory.glob("*.safetensors")):
        return "no .safetensors weights"
    return None


def _write_marker(staging: Path) -> None:
    """Record every file's size in ``simplepo_complete.json``, the last file written."""
    sizes = {
        str(path.relative_to(staging)): path.stat().st_size
        for path in sorted(staging.rglob("*"))
        if path.is_file()
    }
    (staging / COMPLETE_NAME).write_text(json.dumps({"files": sizes}, indent=1))


_TITLES = {"simpo": "SimPO", "dpo": "DPO"}
_PAPERS = {
    "simpo": " (SimPO, Meng, Xia & Chen 2024, [arXiv:2405.14734](https://arxiv.org/abs/2405.14734))",
    "dpo": " (DPO, Rafailov et al. 2023, [arXiv:2305.18290](https://arxiv.org/abs/2305.18290))",
}


KIT_LICENSE = "apache-2.0"  # the kit's own licence, for models trained from its world reference model
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def describe_base(name_or_path: str | None, model_type: str | None = None) -> tuple[str | None, str]:
    """(Hub id or None, a description without local paths) of the model a run started from."""
    if not name_or_path:
        return None, "a model built in memory"
    if _is_world_model(name_or_path):
        return None, "the SimplePO kit's tiny world reference model"
    path = Path(name_or_path).expanduser()
    if _HUB_ID.match(name_or_path) and not path.exists():
        return name_or_path, f"[{name_or_path}](https://huggingface.co/{name_or_path})"
    return None, f"a local {model_type or 'transformers'} model"


def _is_world_model(name_or_path: str) -> bool:
    """The kit's world reference model (shipped or rebuilt): its folder holds the ``build_info.json`` that
    ``world.reference`` writes beside the weights (read here, so runtime never imports world)."""
    if name_or_path == "world":
        return True
    try:
        info = json.loads((Path(name_or_path).expanduser() / "build_info.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "sft_data" in info


def model_card(
    config: Any,
    history: list[dict[str, Any]],
    step: int,
    base: str | None = None,
    *,
    model_type: str | None = None,
    library_name: str = "transformers",
) -> str:
    """A model card (README.md): YAML metadata (licence, pipeline tag, ``base_model`` when it is a Hub id),
    what trained the model, the latest metrics and the config. ``base``: the starting model's Hub id or folder
    (a folder is described, never written out)."""
    config = _to_jsonable(config) or {}
    loss = (config.get("loss") or {}).get("name", "preference")
    metrics = {k: v for k, v in (history[-1] if history else {}).items() if k != "seconds"}
    hub_id, described = describe_base(base, model_type)
    kit_model = hub_id is None and described.startswith("the SimplePO")
    head = [
        "---",
        f"library_name: {library_name}",  # peft for a LoRA adapter folder
        "pipeline_tag: text-generation",
        f"license: {KIT_LICENSE if kit_model else 'other'}",
        *([f"license_link: https://huggingface.co/{hub_id}"] if hub_id else []),
        "tags:",
        "- simplepo",
        f"- {loss}",
        "- preference-optimization",
    ]
    head += [f"base_model: {hub_id}"] if hub_id else []
    paper = _PAPERS.get(loss, "")
    licence = (
        "Licence: Apache-2.0, as the kit."
        if kit_model
        else "Licence: the base model's (check it before you publish)."
    )
    lines = [*head, "---", "", f"# {_TITLES.get(loss, loss)} checkpoint, step {step}", ""]
    lines += [
        f"Trained from {described} with the SimplePO kit's `{loss}` loss{paper} for {step} optimizer steps.",
        "Load it with `AutoModelForCausalLM.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)`;",
        "`simplepo_state.json` (in checkpoints) holds the full metric history, and the `.pt` files the",
        f"optimizer, schedule and RNG state for resuming. {licence}",
        "",
        "## Results (last logged step)",
        "",
        "| metric | value |",
        "| --- | ---: |",
        *[
            f"| {name} | {value:.6g} |" if isinstance(value, float) else f"| {name} | {value} |"
            for name, value in metrics.items()
        ],  # fmt: skip
        "",
        "## Training config",
        "",
        "```json",
        json.dumps(_without_paths(config), indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def _without_paths(value: Any) -> Any:
    """``value`` with absolute paths and home-folder paths cut to their last part (``.../name``)."""
    if isinstance(value, dict):
        return {key: _without_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_paths(item) for item in value]
    if isinstance(value, str) and (value.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", value)):
        return f".../{Path(value).name}"
    return value


def is_sharded(model: torch.nn.Module) -> bool:
    """True when ``model``'s parameters are FSDP2 shards (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _gather_full_state(model, optimizer) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Full model (and optimizer) state of an FSDP2 model on process 0; every process must call this."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    optim = get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else None
    return weights, optim


def _is_peft_model(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _save_weights(model: torch.nn.Module, directory: Path, state_dict=None) -> None:
    if hasattr(model, "save_pretrained"):
        save_pretrained: Any = model.save_pretrained  # transformers' or PEFT's
        kwargs: dict[str, Any] = {} if state_dict is None else {"state_dict": state_dict}
        # transformers 5 may rename keys back to a legacy layout on save; keep the in-memory names so the
        # checkpoint loads back into the same module exactly
        if (
            not _is_peft_model(model)
            and "save_original_format" in inspect.signature(save_pretrained).parameters
        ):
            kwargs["save_original_format"] = False
        save_pretrained(directory, **kwargs)
    elif state_dict is not None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(directory / WEIGHTS_NAME))
    else:
        save_model(model, str(directory / WEIGHTS_NAME))
    if not any(directory.glob("*.safetensors")):
        raise RuntimeError(f"saving {type(model).__name__} wrote no .safetensors file to {directory}")


def _fit_problem(
    current: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: Path
) -> str | None:
    """What keeps ``state`` from loading into a module whose state dict is ``current`` (names, shapes, untied
    missing tensors), or None."""
    unexpected = [name for name in state if name not in current]
    if unexpected:
        return f"{source} holds weights the model does not have: {unexpected[:5]}"
    shapes = [
        f"{name} {tuple(state[name].shape)} vs {tuple(current[name].shape)}"
        for name in state
        if state[name].shape != current[name].shape
    ]
    if shapes:
        return f"{source} has weights of other shapes (checkpoint vs model): {shapes[:3]}"
    loaded_storage = {current[name].data_ptr() for name in state}
    untied_missing = [n for n in current if n not in state and current[n].data_ptr() not in loaded_storage]
    if untied_missing:
        return f"{source} lacks weights the model needs: {untied_missing[:5]}"
    return None


def _load_checked(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """``load_state_dict`` after checking names and shapes, so a refused load changes no tensor; only missing
    keys whose tensors are tied to loaded ones are tolerated."""
    problem = _fit_problem(model.state_dict(), state, source)
    if problem is not None:
        raise CheckpointError(problem)
    model.load_state_dict(state, strict=False)


def _load_weights(model: torch.nn.Module, directory: Path) -> None:
    if _is_peft_model(model):
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        adapter_file = directory / ADAPTER_NAME
        if not adapter_file.is_file():
            raise FileNotFoundError(f"{adapter_file} not found: the checkpoint has no PEFT adapter weights")
        adapter = load_file(str(adapter_file))
        problem = _fit_problem(get_peft_model_state_dict(model), adapter, adapter_file)  # saved-format names
        if problem is not None:
            raise CheckpointError(problem)
        result: Any = set_peft_model_state_dict(model, adapter)
        if result.unexpected_keys:
            raise RuntimeError(
                f"{adapter_file} holds adapter weights the model lacks: {result.unexpected_keys[:5]}"
            )
        return
    index_file = directory / WEIGHTS_INDEX_NAME
    if index_file.is_file():
        shard_names = sorted(set(json.loads(index_file.read_text())["weight_map"].values()))
    else:
        shard_names = [WEIGHTS_NAME]
    state: dict[str, torch.Tensor] = {}
    for name in shard_names:
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found: the checkpoint has no model weights")
        state.update(load_file(str(directory / name)))
    _load_checked(model, state, directory)


def _load_sharded_weights(model: torch.nn.Module, directory: Path) -> None:
    """Full weights from ``directory`` into an FSDP2 model; each process keeps its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    index_file = directory / WEIGHTS_INDEX_NAME
    names = (
        sorted(set(json.loads(index_file.read_text())["weight_map"].values()))
        if index_file.is_file()
        else [WEIGHTS_NAME]
    )
    state: dict[str, Any] = {}
    for name in names:
        state.update(load_file(str(directory / name)))
    result = set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))
    if result.unexpected_keys:
        raise RuntimeError(f"{directory} holds weights the model does not have: {result.unexpected_keys[:5]}")


def _rng_state() -> dict[str, Any]:
    numpy_state: Any = np.random.get_state(legacy=True)  # the legacy tuple
    bit_generator, keys, position, has_gauss, cached_gaussian = numpy_state
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": bit_generator,
            "keys": torch.from_numpy(keys.astype(np.int64)),  # a tensor, so weights_only can read it
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["bit_generator"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_jsonable(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    return json.loads(json.dumps(config, default=str))  # Paths, dtypes -> strings


def save_checkpoint(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    step: int,
    config: Any = None,
    history: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
    tokenizer: Any = None,
) -> Path:
    """Write a resumable checkpoint to ``directory`` (written to a temporary folder, then renamed).

    ``config`` may be a dataclass or a JSON-able dict; ``history`` the list of per-step metric dicts;
    ``extra`` any JSON-able dict. The RNG states (python, numpy, torch CPU and CUDA) are saved too, and
    the tokenizer (when given) and a model card. In a process group (DDP) every process calls this:
    process 0 writes, the others wait for it.
    """
    final = Path(directory)
    parts: tuple[Any, ...] = (
        model,
        optimizer,
        scheduler,
        step,
        config,
        history,
        extra,
        grad_scaler,
        tokenizer,
    )
    if _in_process_group():
        gathered = _gather_full_state(model, optimizer) if is_sharded(model) else None  # all processes
        parts = (*parts, gathered)
        torch.distributed.barrier()
        if torch.distributed.get_rank() == 0:
            _write_checkpoint(final, *parts)
        torch.distributed.barrier()
        return final
    return _write_checkpoint(final, *parts)


def _in_process_group() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _write_checkpoint(
    final: Path,
    model,
    optimizer,
    scheduler,
    step,
    config,
    history,
    extra,
    grad_scaler,
    tokenizer,
    gathered=None,
) -> Path:
    if final.exists() and not _is_kit_folder(final) and any(final.iterdir()):
        raise FileExistsError(f"{final} exists and is not a checkpoint folder; refusing to overwrite it")
    staging = final.with_name(final.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _save_weights(model, staging, None if gathered is None else gathered[0])
    if tokenizer is not None:
        tokenizer.save_pretrained(staging)
    if optimizer is not None:
        torch.save(optimizer.state_dict() if gathered is None else gathered[1], staging / OPTIMIZER_NAME)
    if scheduler is not None:
        torch.save(scheduler.state_dict(), staging / SCHEDULER_NAME)
    if grad_scaler is not None:
        torch.save(grad_scaler.state_dict(), staging / SCALER_NAME)
    torch.save(_rng_state(), staging / RNG_NAME)
    summary = {
        "step": int(step),
        "config": _to_jsonable(config),
        "history": _to_jsonable(history or []),
        "extra": _to_jsonable(extra or {}),
        "sharded": gathered is not None,
    }
    (staging / STATE_NAME).write_text(json.dumps(summary, indent=1))
    model_config = getattr(model, "config", None)
    base = getattr(model_config, "_name_or_path", None) or None
    card = model_card(
        config,
        history or [],
        int(step),
        base,
        model_type=getattr(model_config, "model_type", None),
        library_name="peft" if _is_peft_model(model) else "transformers",
    )
    (staging / MODEL_CARD_NAME).write_text(card)  # over PEFT's
    _write_marker(staging)
    publish_folder(staging, final)  # an earlier checkpoint of this step goes only once this one is whole
    return final


def _is_kit_folder(path: Path) -> bool:
    return state_file(path) is not None or (path / COMPLETE_NAME).is_file()


def _load_state_file(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the checkpoint has no {what} state")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint in place into ``model`` (and optimizer, scheduler, scaler when given).

    Returns the JSON summary: ``{"step", "config", "history", "extra"}``. Restores the RNG states unless
    ``restore_rng=False``. Nothing is unpickled: state files load with ``weights_only=True``.
    """
    directory = Path(directory)
    summary = read_summary(directory)
    sharded = is_sharded(model)
    if sharded:
        _load_sharded_weights(model, directory)
    else:
        _load_weights(model, directory)
    if optimizer is not None:
        state = _load_state_file(directory / OPTIMIZER_NAME, "optimizer")
        if summary.get("sharded"):  # the full, name-keyed layout of torch.distributed.checkpoint
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        elif sharded:
            raise ValueError(f"{directory} was saved by an unsharded run: resume it without FSDP")
        else:
            optimizer.load_state_dict(state)
    if scheduler is not None:
        scheduler.load_state_dict(_load_state_file(directory / SCHEDULER_NAME, "scheduler"))
    if grad_scaler is not None:
        grad_scaler.load_state_dict(_load_state_file(directory / SCALER_NAME, "GradScaler"))
    if restore_rng:
        _set_rng_state(_load_state_file(directory / RNG_NAME, "RNG"))
    return summary


def read_summary(directory: str | Path) -> dict[str, Any]:
    """A complete checkpoint's JSON summary (nothing else loaded); CheckpointError when it is incomplete."""
    directory = Path(directory)
    summary_file = state_file(directory)
    if summary_file is None and not (directory / COMPLETE_NAME).is_file():
        raise FileNotFoundError(f"{directory / STATE_NAME} not found: {directory} is not a checkpoint folder")
    problem = checkpoint_problem(directory)
    if problem is not None or summary_file is None:
        raise CheckpointError(
            f"checkpoint {directory} is incomplete or damaged: {problem}; resume from an earlier checkpoint "
            "or delete this folder"
        )
    return json.loads(summary_file.read_text())


RESUME_KEYS = ("num_examples",)  # run facts (in ``extra``) that decide the batch order besides the config
# what may change on resume: the length of the run and where and how often it logs and saves
FREE_FIELDS = frozenset({"max_steps", "output_dir", "log_every", "save_every"})
FREE_RUN_FIELDS = frozenset(
    {"resume", "data.eval_every", "log.report_to", "log.run_name"} | {f"train.{n}" for n in FREE_FIELDS}
)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix.rstrip("."): value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(_flatten(item, f"{prefix}{key}."))
    return out


def config_differences(summary: dict[str, Any], config: Any, run_info: dict[str, Any]) -> list[str]:
    """``field (saved X, now Y)`` for each setting that differs between a checkpoint and this run.

    The entry point's whole config (``run_info["run_config"]``: model, data, loss, train, lora) when both have
    it, else the ``TrainConfig`` (loss included); plus ``num_examples``. Fields one side lacks (a kit version
    apart) and `FREE_FIELDS` are not compared.
    """
    extra = summary.get("extra") or {}
    if "run_config" in extra and "run_config" in run_info:
        saved, now, free = extra["run_config"], _to_jsonable(run_info["run_config"]), FREE_RUN_FIELDS
    else:
        saved, now, free = summary.get("config") or {}, _to_jsonable(config) or {}, FREE_FIELDS
    saved_flat, now_flat = _flatten(saved), _flatten(now)
    saved_flat.update({key: extra[key] for key in RESUME_KEYS if key in extra})
    now_flat.update({key: run_info[key] for key in RESUME_KEYS if key in run_info})
    return [
        f"{key} (saved {saved_flat[key]!r}, now {now_flat[key]!r})"
        for key in saved_flat
        if key in now_flat and key not in free and saved_flat[key] != now_flat[key]
    ]


def check_resume_config(
    checkpoint: Path, summary: dict[str, Any], config: Any, run_info: dict[str, Any], *, allow: bool
) -> None:
    """ResumeConfigError naming every differing field, or (``allow``) a one-line warning."""
    differences = config_differences(summary, config, run_info)
    if not differences:
        return
    if allow:
        _warn(f"[simplepo] resuming {checkpoint} with a changed config: {'; '.join(differences)}")
        return
    raise ResumeConfigError(
        f"cannot resume from {checkpoint}: the config differs in {'; '.join(differences)}. Resume with the "
        "saved values, or pass allow_config_change=True (entry point: --allow-config-change) to continue anyway"
    )


def resume_state(
    resume_from: str | Path,
    run_info: dict[str, Any],
    config: Any,
    *,
    allow_config_change: bool = False,
    **state_objects: Any,
) -> tuple[int, list[dict[str, Any]]]:
    """Load a checkpoint (or an output_dir's latest complete one) into the run's objects; return (step, history).

    The saved config is compared with ``config`` and ``run_info`` first, before any weight, optimizer or RNG
    state is loaded; a difference raises `ResumeConfigError` unless ``allow_config_change`` (or
    ``run_info["allow_config_change"]``, as the entry point passes it) is true.
    """
    checkpoint = find_latest_checkpoint(resume_from) or Path(resume_from)
    if checkpoint == Path(resume_from) and list_checkpoints(resume_from):
        raise CheckpointError(f"{resume_from} holds no complete checkpoint-<step> folder to resume from")
    summary = read_summary(checkpoint)
    allow = allow_config_change or bool(run_info.get("allow_config_change"))
    check_resume_config(checkpoint, summary, config, run_info, allow=allow)
    state = load_checkpoint(checkpoint, **state_objects)
    return state["step"], state["history"]


def read_history(checkpoint: str | Path) -> list[dict[str, Any]]:
    """The metric history saved in a checkpoint folder (no weights loaded)."""
    summary_file = state_file(checkpoint)
    if summary_file is None:
        raise FileNotFoundError(f"{Path(checkpoint) / STATE_NAME} not found: not a checkpoint folder")
    return json.loads(summary_file.read_text())["history"]
