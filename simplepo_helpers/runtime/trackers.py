"""``report_to``: each step's metrics to TensorBoard, W&B, MLflow, ... through accelerate's trackers.

``MetricsReporter`` is a per-step callback (``train(..., report_to=...)`` builds one; the entry point sets
``log.report_to``). It names metrics as HF Trainer's integrations do, so kit and TRL runs share a dashboard:
``loss`` -> ``train/loss``, ``rewards/margins`` -> ``train/rewards/margins``, ``eval_loss`` -> ``eval/loss``,
with the optimizer step as the x-axis. Under ``accelerate launch`` only the main process writes (accelerate's
``on_main_process``). Trackers other than TensorBoard need their own package and login (``pip install
wandb``, ...); a tracker whose package is missing raises at the start, not silently.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .files import check_safe_name

NO_REPORT = ("none", "")


def tracker_names(report_to: str | Sequence[str] | None) -> list[str]:
    """``report_to`` as a list of accelerate tracker names (``"all"``: every installed one; None/"none": [])."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    names = [n.strip() for name in names for n in str(name).split(",") if n.strip() not in NO_REPORT]
    if not names:
        return []  # without importing accelerate
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    available = [str(t) for t in get_available_trackers()]
    if "all" in names:
        return available
    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise ValueError(
                f"report_to: unknown tracker {name!r}; choose from {sorted(LOGGER_TYPE_TO_CLASS)}"
            )
        if name not in available:
            raise ValueError(f"report_to={name!r} needs the {name} package: pip install {name}")
    return list(dict.fromkeys(names))


def rewrite_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """A history row as HF Trainer's integrations log it: ``train/<name>``, ``eval_<name>`` -> ``eval/<name>``."""
    out = {}
    for name, value in row.items():
        if name == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[f"eval/{name[5:]}" if name.startswith("eval_") else f"train/{name}"] = float(value)
    return out


def _flat_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"loss/beta": 2.5, ...}`` with only bool/int/float/str values (TensorBoard hparams)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    out: dict[str, Any] = {}
    for key, value in (config or {}).items():
        if isinstance(value, Mapping):
            out.update(_flat_config(value, f"{prefix}{key}/"))
        elif isinstance(value, (bool, int, float, str)):
            out[f"{prefix}{key}"] = value
        elif value is not None:
            out[f"{prefix}{key}"] = json.dumps(value, default=str)
    return out


class MetricsReporter:
    """Call with each step's history row; ``close()`` at the end. Does nothing when ``report_to`` is empty."""

    def __init__(
        self,
        report_to: str | Sequence[str] | None,
        logging_dir: str | Path,
        *,
        run_name: str = "simplepo",
        config: Any = None,
    ) -> None:
        check_safe_name(run_name, "run_name")  # TensorBoard joins it into a path under logging_dir
        self.names = tracker_names(report_to)
        self.logging_dir = Path(logging_dir)
        self.trackers = []
        for name in self.names:
            from accelerate.tracking import LOGGER_TYPE_TO_CLASS

            cls = LOGGER_TYPE_TO_CLASS[name]
            tracker = (
                cls(run_name, logging_dir=str(self.logging_dir))
                if cls.requires_logging_directory
                else cls(run_name)
            )
            tracker.start()
            if config is not None:
                tracker.store_init_configuration(_flat_config(config))
            self.trackers.append(tracker)

    def __call__(self, row: Mapping[str, Any]) -> None:
        values = rewrite_metrics(row)
        for tracker in self.trackers:
            tracker.log(values, step=int(row["step"]))

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []
