"""What ``train`` returns (the per-step history, the final metrics and a plot of the run), or the error it raises
when a number stops being finite."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainResult:
    """Per-step history (dicts with step, epoch, lr, seconds, tokens and the metrics) and the final metrics."""

    history: list[dict[str, float]]
    final_metrics: dict[str, float]
    optimizer_impl: str
    device: str
    checkpoints: list[str] = field(default_factory=list)

    def to_dataframe(self):
        """The history as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("TrainResult.to_dataframe needs pandas: pip install pandas") from exc
        return pd.DataFrame(self.history)

    def plot(self, title: str | None = None):
        """A matplotlib Figure: loss, reward accuracy, reward margin, chosen/rejected log-probs per step."""
        from matplotlib.figure import Figure

        steps = [row["step"] for row in self.history]
        figure = Figure(figsize=(12, 3))
        axes = figure.subplots(1, 4)
        panels = [  # (title, metrics, y-axis label)
            ("loss", ["loss"], "loss (nats)"),
            ("reward accuracy", ["rewards/accuracies"], "share of pairs ranked right"),
            ("reward margin", ["rewards/margins"], "chosen - rejected reward"),
            ("log-probs", ["logps/chosen", "logps/rejected"], "log-prob (SimPO: per token)"),
        ]
        for axis, (label, names, ylabel) in zip(axes, panels, strict=True):
            for name in names:
                axis.plot(steps, [row[name] for row in self.history], label=name)
            axis.set_title(label)
            axis.set_xlabel("step")
            axis.set_ylabel(ylabel)
            if len(names) > 1:
                axis.legend()
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        return figure


class NonFiniteLossError(RuntimeError):
    """A loss, metric or gradient norm became NaN/inf; ``step`` and ``metric`` say where."""

    def __init__(self, step: int | None, metric: str, value: float) -> None:
        where = f"step {step}" if step is not None else "this step"
        super().__init__(
            f"non-finite {metric} ({value}) at {where}: lower the learning rate, check the data "
            "(empty responses?) or use float32"
        )
        self.step, self.metric, self.value = step, metric, value
