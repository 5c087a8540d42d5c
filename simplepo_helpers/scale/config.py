"""Run configuration of the training entry point: a YAML or JSON file plus ``section.field=value`` overrides.

Sections and where their fields are defined (one definition each, so defaults and checks are shared with
the notebooks):

- ``model``: `ModelOptions` (model id or folder, precision, gradient checkpointing, how DPO gets its
  reference);
- ``data``: `DataOptions` (training and held-out data, subset sizes);
- ``loss``: ``training.LossConfig`` (``name`` simpo or dpo, ``beta``, ``gamma`` absolute as in the paper and
  TRL's ``simpo_gamma``, ``label_smoothing``, ``sft_weight``, ``kl_weight``, ...);
- ``train``: ``training.TrainConfig`` without ``loss`` (learning rate and schedule, ``max_steps``,
  ``batch_size``, ``grad_accum_steps``, max lengths, seed, ``output_dir``, ``save_every``, ``log_every``);
- ``lora``: ``lora.LoraOptions``;
- ``log``: `LogOptions` (``report_to``: TensorBoard, W&B, ... as in TRL; the tracker run name);
- ``resume`` (top level): null, ``latest`` (the newest checkpoint in ``train.output_dir``) or a checkpoint folder.

``train.batch_size`` is the number of preference pairs per micro-batch summed over all processes (not per
device, unlike HF Trainer): the same file gives the same optimisation on 1 or N processes, each process
taking ``batch_size / N`` pairs. Every field is checked against its annotation; an unknown, missing or
mistyped field raises `ConfigError` naming it as ``section.field``. Numbers written like ``1e-5`` (which
YAML 1.1 reads as a string) are accepted for float fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..training import LossConfig, TrainConfig
from .lora import LoraOptions

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
REFERENCES = ("auto", "live", "precomputed")
WORLD_MODEL = "world"  # model.name_or_path that selects the kit's reference model
WORLD_DATA_PREFIX = (
    "world:"  # data.train / data.eval prefix for the world's data files, e.g. world:pairs_train
)


class ConfigError(ValueError):
    """A configuration problem; the message names the field as ``section.field``."""


@dataclass
class ModelOptions:
    """``name_or_path``: a Hub id, a local folder (safetensors, with a chat template) or ``world``.

    ``precision``: ``auto`` follows `select_device` (bf16 autocast on compute capability >= 8, fp16 with a
    GradScaler on older GPUs, fp32 on CPU/MPS); ``fp32``, ``bf16`` and ``fp16`` force one. Parameters stay
    float32 in every case. ``gradient_checkpointing`` trades compute for activation memory.

    ``reference`` (DPO): ``precomputed`` scores every pair with the starting model once, before training
    (each process its share, then shared), so no reference copy is held on any device; ``live`` keeps a
    frozen copy (the adapter-free base under LoRA) and runs it every step; ``auto`` precomputes unless the
    KL term (``loss.kl_weight``) needs the live reference's whole distributions.
    """

    name_or_path: str = ""
    precision: str = "auto"
    gradient_checkpointing: bool = False
    reference: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")


@dataclass
class DataOptions:
    """``train``/``eval``: ``world:<stem>`` (a world data file), a JSONL file, or a dataset id/folder for
    ``datasets.load_dataset`` (split ``train_split``/``eval_split``). Standard or conversational preference
    rows; rows without a ``prompt`` column (UltraFeedback's implicit prompt) are mapped to an explicit one.
    ``n_train``/``n_eval`` keep that many valid rows (a seeded shuffle first for Hub datasets; None keeps
    all). ``eval_every`` evaluates on ``eval`` every that many steps (and always at the end).
    """

    train: str = ""
    train_split: str = "train"
    eval: str | None = None
    eval_split: str = "test"
    n_train: int | None = None
    n_eval: int | None = None
    seed: int = 0
    eval_every: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_train", "n_eval", "eval_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be None or an integer >= 1, got {value}")


@dataclass
class LogOptions:
    """``report_to``: ``none``, ``tensorboard``, ``wandb``, ``mlflow``, ... or a list (accelerate's tracker
    names, as TRL's ``report_to``); logs go to ``<train.output_dir>/runs/<run_name>`` for TensorBoard.
    ``metrics.jsonl`` is written in every case."""

    report_to: str | list[str] = "none"
    run_name: str = "simplepo"

    def __post_init__(self) -> None:
        from ..runtime.files import check_safe_name
        from ..runtime.trackers import tracker_names

        check_safe_name(self.run_name, "run_name")  # it names a folder under <train.output_dir>/runs
        tracker_names(self.report_to)  # an unknown or uninstalled tracker fails here, before any work


@dataclass
class RunConfig:
    """Everything one training run needs; build it with `load_config` or `config_from_dict`."""

    model: ModelOptions
    data: DataOptions
    loss: LossConfig
    train: TrainConfig
    lora: LoraOptions = field(default_factory=LoraOptions)
    log: LogOptions = field(default_factory=LogOptions)
    resume: str | None = None


_SECTIONS: dict[str, type] = {
    "model": ModelOptions,
    "data": DataOptions,
    "loss": LossConfig,
    "train": TrainConfig,
    "lora": LoraOptions,
    "log": LogOptions,
}
_REQUIRED = ("model.name_or_path", "data.train", "train.output_dir")
_EXCLUDED = {"train.loss"}  # set from the loss section


def _section_fields(name: str) -> dict[str, Any]:
    """Field name -> resolved annotation of a section's dataclass."""
    cls = _SECTIONS[name]
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f"{name}.{f.name}" not in _EXCLUDED}


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if typing.get_origin(annotation) is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if annotation is type(None):
        return "null"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` converted to ``annotation`` (int -> float, numeric string -> float, Path -> str) or ConfigError."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError:
                pass
    elif origin is list:
        (item,) = typing.get_args(annotation)
        if isinstance(value, (list, tuple)) and value:
            return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation in (str, Path):
        if isinstance(value, (str, Path)):
            return str(value)
    raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {value!r} ({type(value).__name__})")


def _unknown(where: str, name: str, valid: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {where}{close[0]}?)" if close else ""
    return ConfigError(f"unknown field {where}{name}{hint}; valid: {', '.join(valid)}")


def _build_section(name: str, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{name}: expected a mapping of fields, got {raw!r} ({type(raw).__name__})")
    annotations = _section_fields(name)
    values = {}
    for key, value in raw.items():
        if key not in annotations:
            raise _unknown(f"{name}.", str(key), list(annotations))
        values[key] = _coerce(value, annotations[key], f"{name}.{key}")
    try:
        return _SECTIONS[name](**values)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{_blamed_field(name, annotations, values, str(error))}: {error}") from error


def _blamed_field(section: str, names: Sequence[str], values: Mapping[str, Any], message: str) -> str:
    """``section.field`` for a dataclass's own error message: the field it names first, else the field
    whose string value it repeats, else just the section."""
    body = re.sub(r"^\w+(\([^)]*\))?[:.]\s*", "", message)  # drop a "LossConfig(name='dpo'): " prefix
    named = [(m.start(), key) for key in names if (m := re.search(rf"\b{re.escape(key)}\b", body))]
    if named:
        return f"{section}.{min(named)[1]}"
    repeated = [
        (len(value), key)
        for key, value in values.items()
        if isinstance(value, str) and value and re.search(rf"(?<!\w){re.escape(value)}(?!\w)", message)
    ]
    return f"{section}.{max(repeated)[1]}" if repeated else section


def _check_required(raw: Mapping[str, Any]) -> None:
    for path in _REQUIRED:
        section, key = path.split(".")
        body = raw.get(section)
        value = body.get(key) if isinstance(body, Mapping) else None
        if value is None or value == "":
            raise ConfigError(f"missing required field {path}")


def config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a nested mapping (as read from a config file) and build the `RunConfig`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    valid = [*_SECTIONS, "resume"]
    for key in raw:
        if key not in valid:
            raise _unknown("", str(key), valid)
    _check_required(raw)
    sections = {name: _build_section(name, raw.get(name)) for name in _SECTIONS}
    train_values = {f.name: getattr(sections["train"], f.name) for f in dataclasses.fields(TrainConfig)}
    try:
        sections["train"] = TrainConfig(**{**train_values, "loss": sections["loss"]})
    except ValueError as error:
        raise ConfigError(f"train: {error}") from error
    resume = _coerce(raw.get("resume"), str | None, "resume")
    return RunConfig(resume=resume, **sections)


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """The config as a JSON-able nested dict (the inverse of `config_from_dict`)."""
    out: dict[str, Any] = {}
    for name in _SECTIONS:
        section = getattr(config, name)
        out[name] = {
            key: str(value) if isinstance(value, Path) else value
            for key, value in dataclasses.asdict(section).items()
            if f"{name}.{key}" not in _EXCLUDED
        }
    out["resume"] = config.resume
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file as a dict: ``.json`` with json, ``.yaml``/``.yml`` with PyYAML's safe loader."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raise ConfigError(f"config file {path}: use a .yaml, .yml or .json file")
    except (json.JSONDecodeError, ImportError) as error:
        raise ConfigError(f"config file {path} could not be read: {error}") from error
    except Exception as error:  # yaml.YAMLError without importing yaml at module level
        if type(error).__module__.startswith("yaml"):
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
        raise
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(raw).__name__}")
    return raw


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with ``section.field=value`` (or ``resume=value``) overrides applied.

    Values are parsed as YAML scalars/lists: ``train.max_steps=20``, ``loss.name=dpo``, ``data.n_eval=null``,
    ``lora.target_modules=[q_proj,v_proj]``.
    """
    import yaml

    out = {key: dict(value) if isinstance(value, Mapping) else value for key, value in raw.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError as error:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({error})") from error
        parts = key.split(".")
        if len(parts) == 1:
            out[key] = value
        elif len(parts) == 2:
            section = out.get(parts[0])
            if section is None:
                section = out[parts[0]] = {}
            if not isinstance(section, dict):
                raise ConfigError(f"override {item!r}: {parts[0]} is not a section")
            section[parts[1]] = value
        else:
            raise ConfigError(f"override {item!r}: use section.field=value (one dot)")
    return out


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read ``path`` (YAML or JSON; None starts from nothing), apply ``overrides``, validate."""
    raw = read_config_file(path) if path is not None else {}
    return config_from_dict(apply_overrides(raw, overrides))
