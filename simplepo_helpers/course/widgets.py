"""Notebook widgets with plain logic: the pair browser, the beta/gamma explorer and the generation browser.

The widgets keep their state in attributes and recompute it in ordinary methods, so tests drive them
without a browser (``button.click()``, ``slider.value = ...``) and check the state; the display code only
renders that state.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..evaluation.metrics import Generations
from .display import draw_simpo_curves, pair_panels_html, simpo_curves

ALL_FAMILIES = "(all)"


class PairBrowser:
    """Step through preference pairs of one task family: a family dropdown, prev/next buttons, side by side.

    ``browser.indices`` are the row numbers in the selected family, ``browser.row`` the pair on show.
    Display ``browser.widget`` in a notebook.
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        family_key: str = "family",
        score_keys: tuple[str, str] = ("chosen_score", "rejected_score"),
    ) -> None:
        import ipywidgets as widgets

        if len(rows) == 0:
            raise ValueError("PairBrowser needs at least one row")
        self.rows = rows
        self.family_key = family_key
        self.score_keys = score_keys
        families = sorted({str(row[family_key]) for row in rows})
        self.family = widgets.Dropdown(
            options=[ALL_FAMILIES, *families], value=ALL_FAMILIES, description="family"
        )
        self.prev_button = widgets.Button(description="< prev")
        self.next_button = widgets.Button(description="next >")
        self.status = widgets.Label()
        self.prompt_html, self.chosen_html, self.rejected_html = (widgets.HTML() for _ in range(3))
        self.family.observe(lambda _change: self.select_family(), names="value")
        self.prev_button.on_click(lambda _button: self.step(-1))
        self.next_button.on_click(lambda _button: self.step(+1))
        columns = widgets.HBox(
            [self.chosen_html, self.rejected_html],
            layout=widgets.Layout(grid_gap="16px", align_items="flex-start"),
        )
        controls = widgets.HBox([self.family, self.prev_button, self.next_button, self.status])
        self.widget = widgets.VBox([controls, self.prompt_html, columns])
        self.select_family()

    def select_family(self) -> None:
        """Recompute the rows of the selected family and show the first one."""
        chosen_family = self.family.value
        self.indices = [
            i
            for i, row in enumerate(self.rows)
            if chosen_family == ALL_FAMILIES or str(row[self.family_key]) == chosen_family
        ]
        self.position = 0
        self.render()

    def step(self, delta: int) -> None:
        """Move ``delta`` pairs forward (negative: back), wrapping around within the family."""
        self.position = (self.position + delta) % len(self.indices)
        self.render()

    @property
    def row(self) -> Mapping[str, Any]:
        return self.rows[self.indices[self.position]]

    def render(self) -> None:
        self.prompt_html.value, self.chosen_html.value, self.rejected_html.value = pair_panels_html(
            self.row, score_keys=self.score_keys
        )
        self.status.value = (
            f"pair {self.position + 1} of {len(self.indices)} (row {self.indices[self.position]})"
        )


class LossExplorer:
    """Sliders for beta and gamma (starting at ``LossConfig("simpo")``'s unless given); each change
    recomputes ``self.curves`` and redraws the two panels."""

    def __init__(
        self,
        logp_margins: Sequence[float] | np.ndarray | None = None,
        *,
        beta: float | None = None,
        gamma: float | None = None,
    ) -> None:
        import ipywidgets as widgets

        from ..training import LossConfig

        library = LossConfig("simpo")  # the library's defaults, stated once in training.py
        beta = library.beta if beta is None else beta
        gamma = library.gamma if gamma is None else gamma

        if logp_margins is None:
            logp_margins = np.linspace(-1.5, 1.5, 241)
        self.logp_margins = np.asarray(logp_margins, dtype=np.float64)
        self.beta = widgets.FloatSlider(value=beta, min=0.1, max=10.0, step=0.1, description="beta")
        self.gamma = widgets.FloatSlider(value=gamma, min=0.0, max=5.0, step=0.025, description="gamma")
        self.output = widgets.Output()
        self.beta.observe(lambda _change: self.update(), names="value")
        self.gamma.observe(lambda _change: self.update(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.beta, self.gamma]), self.output])
        self.update()

    def update(self) -> None:
        """Recompute the curves for the current slider values, then redraw."""
        self.curves = simpo_curves(self.logp_margins, beta=self.beta.value, gamma=self.gamma.value)
        self._redraw()

    def _redraw(self) -> None:
        import matplotlib.pyplot as plt
        from IPython import get_ipython
        from IPython.display import clear_output, display

        if get_ipython() is None:  # plain Python (tests): the curves are the state, nothing to show
            return
        figure, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        draw_simpo_curves(axes, self.curves, beta=self.beta.value, gamma=self.gamma.value)
        figure.tight_layout()
        with self.output:
            clear_output(wait=True)
            display(figure)
        plt.close(figure)


# --------------------------------------------------------------------------- side-by-side browser


def generation_panels_html(prompt: Any, columns: Mapping[str, tuple[str, Any]]) -> tuple[str, list[str]]:
    """HTML for one prompt and each model's (response, verdict): text escaped, score and reason shown."""

    from ..world.judge import prompt_text

    def panel(title: str, response: str, verdict: Any) -> str:
        body = html.escape(response).replace("\n", "<br>") or "<i>(empty)</i>"
        return (
            f"<div style='min-width: 200px'><b>{html.escape(title)}</b><br><b>score:</b> {verdict.score:g}"
            f"<br><small>{html.escape(str(verdict.reason))}</small><pre style='white-space: pre-wrap'>{body}</pre></div>"
        )

    prompt_html = f"<b>prompt:</b> {html.escape(prompt_text(prompt))}"
    return prompt_html, [panel(title, response, verdict) for title, (response, verdict) in columns.items()]


def browser_rows(generations: Mapping[str, Generations]) -> list[dict[str, Any]]:
    """One row per prompt: its family (from the first model's verdicts) and every model's response and verdict."""
    first = next(iter(generations.values()))
    for label, gen in generations.items():
        if gen.prompts != first.prompts:
            raise ValueError(f"{label!r} answered different prompts than {next(iter(generations))!r}")
    return [
        {
            "prompt": prompt,
            "family": first.verdicts[i].family,
            "columns": {label: (gen.responses[i], gen.verdicts[i]) for label, gen in generations.items()},
        }
        for i, prompt in enumerate(first.prompts)
    ]


class GenerationBrowser(PairBrowser):
    """Side-by-side generations with the judge's verdicts: a family dropdown and prev/next (as ``PairBrowser``).

    ``browser.row`` is the prompt on show (see ``browser_rows``); display ``browser.widget`` in a notebook.
    """

    def __init__(self, generations: Mapping[str, Generations]) -> None:
        import ipywidgets as widgets

        rows = browser_rows(generations)
        self.panels = [widgets.HTML() for _ in generations]  # before PairBrowser's first render
        super().__init__(rows, family_key="family")
        controls = self.widget.children[0]
        self.widget.children = (controls, self.prompt_html, widgets.HBox(self.panels))

    def render(self) -> None:
        self.prompt_html.value, panels = generation_panels_html(self.row["prompt"], self.row["columns"])
        for widget, value in zip(self.panels, panels, strict=True):
            widget.value = value
        self.status.value = (
            f"prompt {self.position + 1} of {len(self.indices)} (row {self.indices[self.position]})"
        )
