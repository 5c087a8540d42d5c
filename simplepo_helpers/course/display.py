"""Notebook display helpers: Colab detection, the `cmp` printer, small HTML renderers and the SimPO curves.

Plain functions with no widget state; `course.widgets` builds the interactive views on them.
"""

from __future__ import annotations

import html
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def in_colab() -> bool:
    """Whether this process runs in Google Colab."""
    return "google.colab" in sys.modules


# --------------------------------------------------------------------------------------------- cmp


@dataclass(frozen=True)
class Comparison:
    """Outcome of `cmp`; truthy when the values are close (so ``assert cmp(...)`` reads naturally)."""

    name: str
    exact: bool
    close: bool
    max_diff: float

    def __bool__(self) -> bool:
        return self.close


def _as_float64(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(value, dtype=np.float64))


def cmp(name: str, mine: Any, reference: Any, *, rtol: float = 1e-5, atol: float = 1e-6) -> Comparison:
    """Print whether ``mine`` equals ``reference`` exactly, approximately, and their largest difference.

    Both sides may be tensors, arrays, lists or numbers; they are compared in float64 and must have the same
    shape. NaN never counts as close.
    """
    mine_t, ref_t = _as_float64(mine), _as_float64(reference)
    if mine_t.shape != ref_t.shape:
        raise ValueError(f"cmp {name!r}: shapes differ, {tuple(mine_t.shape)} vs {tuple(ref_t.shape)}")
    exact = bool(torch.equal(mine_t, ref_t))
    close = bool(torch.allclose(mine_t, ref_t, rtol=rtol, atol=atol))
    max_diff = (mine_t - ref_t).abs().max().item() if mine_t.numel() else 0.0
    print(f"{name:<44} exact: {exact!s:<5} | close: {close!s:<5} | max diff: {max_diff:.2e}")
    return Comparison(name, exact, close, max_diff)


def html_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """An HTML table of dicts (columns from the first row), every cell escaped; newlines kept as line breaks."""
    if not rows:
        return "<table></table>"
    columns = list(rows[0])

    def cell(value: Any) -> str:
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        return html.escape(text).replace("\n", "<br>")

    head = "".join(f"<th style='text-align:left'>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td style='text-align:left'>{cell(row.get(c, ''))}</td>" for c in columns)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


# ---------------------------------------------------------------------------------- token roles

ROLE_COLOURS = {
    "bos": "#d9d9d9",
    "template": "#ffd59e",
    "prompt": "#cfe2ff",
    "response": "#c7f0c2",
    "eos": "#7bd389",
    "padding": "#eeeeee",
}


def tokens_html(explained: Sequence[tuple[str, str]]) -> str:
    """``explain_tokens`` output as coloured spans, one per token, with a legend of the roles present."""
    unknown = sorted({role for _, role in explained} - set(ROLE_COLOURS))
    if unknown:
        raise ValueError(f"unknown token roles {unknown}; known: {sorted(ROLE_COLOURS)}")

    def span(text: str, role: str) -> str:
        shown = html.escape(text.replace("\n", "\\n"))  # a newline token shows as \n
        return (
            f"<span title='{role}' style='background:{ROLE_COLOURS[role]}; border:1px solid #999;"
            f" margin:1px; padding:0 2px; font-family:monospace; white-space:pre'>{shown}</span>"
        )

    spans = "".join(span(text, role) for text, role in explained)
    present = [role for role in ROLE_COLOURS if any(r == role for _, r in explained)]
    legend = " ".join(
        f"<span style='background:{ROLE_COLOURS[r]}; padding:0 4px'>{r}</span>" for r in present
    )
    return f"<div style='line-height:2'>{spans}</div><div>roles: {legend}</div>"


# ------------------------------------------------------------------------------ preference browser


def _message_text(value: Any) -> str:
    """The text of a response or prompt: a string, or the messages' contents (with roles for several)."""
    if isinstance(value, str):
        return value
    messages = list(value)
    if len(messages) == 1:
        return str(messages[0]["content"])
    return "\n".join(f"[{m['role']}] {m['content']}" for m in messages)


def pair_panels_html(
    row: Mapping[str, Any], *, score_keys: tuple[str, str] = ("chosen_score", "rejected_score")
) -> tuple[str, str, str]:
    """HTML for one preference pair: (prompt, chosen, rejected), text escaped, judge scores shown if present."""

    def panel(title: str, text: str, score: Any) -> str:
        score_line = "" if score is None else f"<br><b>judge score:</b> {score}"
        body = html.escape(text).replace("\n", "<br>")
        return f"<div><b>{title}</b>{score_line}<pre style='white-space: pre-wrap'>{body}</pre></div>"

    chosen_score, rejected_score = (row.get(key) for key in score_keys)
    return (
        panel("prompt", _message_text(row["prompt"]), None),
        panel("chosen", _message_text(row["chosen"]), chosen_score),
        panel("rejected", _message_text(row["rejected"]), rejected_score),
    )


# ------------------------------------------------------------------------------------ loss explorer


def simpo_curves(
    logp_margins: Sequence[float] | np.ndarray, *, beta: float, gamma: float
) -> dict[str, np.ndarray]:
    """SimPO loss and gradient weight against the average log-prob margin ``avg_w - avg_l``.

    Computed with the kit's `simpo_loss` and autograd: ``loss`` = -log sigma(beta * margin - gamma),
    ``grad_weight`` = |dL/d avg_w| = beta * sigma(gamma - beta * margin), and ``reward_margin`` =
    beta * margin (the `rewards/margins` metric). ``gamma`` is the paper's absolute margin.
    """
    from ..losses import simpo_loss

    margins = torch.tensor(np.asarray(logp_margins, dtype=np.float64), requires_grad=True)  # [N]
    losses, _, _ = simpo_loss(margins, torch.zeros_like(margins), beta=beta, gamma=gamma)  # [N]
    (grad,) = torch.autograd.grad(losses.sum(), margins)  # each loss depends only on its own margin
    return {
        "logp_margin": margins.detach().numpy(),
        "reward_margin": beta * margins.detach().numpy(),
        "loss": losses.detach().numpy(),
        "grad_weight": (-grad).numpy(),
    }


def draw_simpo_curves(
    axes: Sequence[Any], curves: Mapping[str, np.ndarray], *, beta: float, gamma: float
) -> None:
    """Draw `simpo_curves` output: loss on the first axis, gradient weight on the second.

    A dashed line marks the margin gamma / beta, where z = 0: the loss is ln 2 and the weight beta / 2.
    """
    loss_ax, weight_ax = axes
    x = curves["logp_margin"]
    label = f"beta={beta:g}, gamma={gamma:g}"
    (line,) = loss_ax.plot(x, curves["loss"], label=label)
    weight_ax.plot(x, curves["grad_weight"], color=line.get_color(), label=label)
    for ax in axes:
        ax.axvline(gamma / beta, color=line.get_color(), lw=0.8, ls="--")
        ax.set_xlabel("average log-prob margin  avg_w - avg_l")
    loss_ax.set(ylabel="loss", title="SimPO loss")
    weight_ax.set(ylabel="|dL / d avg_w|", title="gradient weight")
    loss_ax.legend(fontsize=8)
