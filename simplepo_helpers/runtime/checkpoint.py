"""Save and resume training without pickle: safetensors weights, weights-only state dicts, a JSON summary.

A checkpoint folder holds
- the weights: ``model.save_pretrained`` (``model.safetensors`` + ``config.json``; for a PEFT model only the
  adapter, ``adapter_model.safetensors``) or, for a plain ``nn.Module``, ``safetensors.torch.save_model``;
- ``optimizer.pt``, ``scheduler.pt``, ``scaler.pt`` (when used) and ``rng_state.pt`` written by ``torch.save``
  and read back with ``torch.load(weights_only=True)`` (the numpy RNG state is stored as a tensor);
- ``trainer_state.json``: step, config, metric history and any extra JSON-able state.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_model

STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
SCALER_NAME = "scaler.pt"
RNG_NAME = "rng_state.pt"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
ADAPTER_NAME = "adapter_model.safetensors"
_CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    """The folder a run saves step ``step`` to: ``output_dir/checkpoint-<step>`` (as HF Trainer names it)."""
    return Path(output_dir) / f"checkpoint-{step}"


def find_latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step under ``output_dir``, or None."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = []
    for path in root.iterdir():
        match = _CHECKPOINT_PATTERN.match(path.name)
        if match and (path / STATE_NAME).is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def _is_peft_model(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _save_weights(model: torch.nn.Module, directory: Path) -> None:
    if hasattr(model, "save_pretrained"):
        kwargs = {}
        # transformers 5 may rename keys back to a legacy layout on save; keep the in-memory names so the
        # checkpoint loads back into the same module exactly
        if (
            not _is_peft_model(model)
            and "save_original_format" in inspect.signature(model.save_pretrained).parameters
        ):
            kwargs["save_original_format"] = False
        model.save_pretrained(directory, **kwargs)
    else:
        save_model(model, str(directory / WEIGHTS_NAME))
    if not any(directory.glob("*.safetensors")):
        raise RuntimeError(f"saving {type(model).__name__} wrote no .safetensors file to {directory}")


def _load_checked(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """``load_state_dict`` that tolerates only missing keys whose tensors are tied to loaded ones."""
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"{source} holds weights the model does not have: {result.unexpected_keys[:5]}")
    current = model.state_dict()
    loaded_storage = {current[name].data_ptr() for name in state}
    untied_missing = [name for name in result.missing_keys if current[name].data_ptr() not in loaded_storage]
    if untied_missing:
        raise RuntimeError(f"{source} lacks weights the model needs: {untied_missing[:5]}")


def _load_weights(model: torch.nn.Module, directory: Path) -> None:
    if _is_peft_model(model):
        from peft import set_peft_model_state_dict

        adapter_file = directory / ADAPTER_NAME
        if not adapter_file.is_file():
            raise FileNotFoundError(f"{adapter_file} not found: the checkpoint has no PEFT adapter weights")
        result = set_peft_model_state_dict(model, load_file(str(adapter_file)))
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


def _rng_state() -> dict[str, Any]:
    bit_generator, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
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
) -> Path:
    """Write a resumable checkpoint to ``directory`` (written to a temporary folder, then renamed).

    ``config`` may be a dataclass or a JSON-able dict; ``history`` the list of per-step metric dicts;
    ``extra`` any JSON-able dict. The RNG states (python, numpy, torch CPU and CUDA) are saved too.
    In a process group (DDP) every process calls this: process 0 writes, the others wait for it.
    """
    final = Path(directory)
    if _in_process_group():
        torch.distributed.barrier()
        if torch.distributed.get_rank() == 0:
            _write_checkpoint(final, model, optimizer, scheduler, step, config, history, extra, grad_scaler)
        torch.distributed.barrier()
        return final
    return _write_checkpoint(final, model, optimizer, scheduler, step, config, history, extra, grad_scaler)


def _in_process_group() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _write_checkpoint(
    final: Path, model, optimizer, scheduler, step, config, history, extra, grad_scaler
) -> Path:
    if final.exists() and not (final / STATE_NAME).is_file() and any(final.iterdir()):
        raise FileExistsError(f"{final} exists and is not a checkpoint folder; refusing to overwrite it")
    staging = final.with_name(final.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _save_weights(model, staging)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), staging / OPTIMIZER_NAME)
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
    }
    (staging / STATE_NAME).write_text(json.dumps(summary, indent=1))
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    return final


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
    state_file = directory / STATE_NAME
    if not state_file.is_file():
        raise FileNotFoundError(f"{state_file} not found: {directory} is not a checkpoint folder")
    summary = json.loads(state_file.read_text())
    _load_weights(model, directory)
    if optimizer is not None:
        optimizer.load_state_dict(_load_state_file(directory / OPTIMIZER_NAME, "optimizer"))
    if scheduler is not None:
        scheduler.load_state_dict(_load_state_file(directory / SCHEDULER_NAME, "scheduler"))
    if grad_scaler is not None:
        grad_scaler.load_state_dict(_load_state_file(directory / SCALER_NAME, "GradScaler"))
    if restore_rng:
        _set_rng_state(_load_state_file(directory / RNG_NAME, "RNG"))
    return summary


RESUME_KEYS = ("seed", "batch_size", "grad_accum_steps", "num_examples")  # what decides the batch order


def resume_state(
    resume_from: str | Path, run_info: dict[str, Any], config: Any, **state_objects: Any
) -> tuple[int, list[dict[str, Any]]]:
    """Load a checkpoint (or an output_dir's latest) into the run's objects; return (step, history).

    Refuses a checkpoint whose seed, batch size, accumulation or number of examples differ from ``config``
    and ``run_info``: the resumed run would see other batches than the interrupted one.
    """
    checkpoint = find_latest_checkpoint(resume_from) or Path(resume_from)
    state = load_checkpoint(checkpoint, **state_objects)
    saved = {**(state["config"] or {}), **state["extra"]}
    current = {**vars(config), **run_info}
    mismatched = [key for key in RESUME_KEYS if key in saved and saved[key] != current[key]]
    if mismatched:
        raise ValueError(
            f"cannot resume from {checkpoint}: {mismatched} differ, so the batch order would change"
        )
    return state["step"], state["history"]


def read_history(checkpoint: str | Path) -> list[dict[str, Any]]:
    """The metric history saved in a checkpoint folder (no weights loaded)."""
    return json.loads((Path(checkpoint) / STATE_NAME).read_text())["history"]
