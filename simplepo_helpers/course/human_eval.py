"""Blind A/B human evaluation: a learner judges the reference's and the policy's answers without knowing which is
which, then compares their verdicts with the judge's.

Each item shows one prompt and two answers labelled A and B; a seeded coin decides which side holds the
policy's answer. The learner clicks *A is better*, *tie* or *B is better*. At the end the widget reports

- the learner's **win rate for the policy** (a tie counts half, Wilson 95% interval, as the kit's judge
  win rate does), and
- the learner's **agreement with the judge**: Cohen's kappa over the three verdicts *policy*, *reference*,
  *tie*, where the judge's verdict compares its two scores. Kappa is 1 for perfect agreement and 0 for the
  agreement two raters reach by chance with the same label frequencies (Cohen 1960).

Labels are written to a JSON Lines file after every click, one line per item (the prompt, both answers, which
side was the policy, the learner's choice and the judge's verdict), so a session can be analysed later or
pooled over a class. The file is replaced whole (an atomic rename), and a widget built on an existing file
restores its labels first, so a restarted kernel continues where the learner stopped. The default file,
`default_labels_path`, lies in ``labels/`` under the working folder (``$SIMPLEPO_LABELS`` to move it), not in
the cache, which ``make clean-cache`` deletes. The logic lives in plain methods (``choose``, ``summary``); the buttons only call them,
so tests drive the widget without a browser.
"""

from __future__ import annotations

import html
import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..evaluation.metrics import wilson_interval
from ..runtime.files import write_text_atomic

CHOICES = ("A", "B", "tie")
VERDICTS = ("policy", "reference", "tie")
LABELS_ENV = "SIMPLEPO_LABELS"  # a folder for the labels files instead of ./labels


def default_labels_path(seed: int) -> Path:
    """Where notebook 07 keeps a learner's labels: ``labels/labels-seed<seed>.jsonl`` in the working folder
    (or under ``$SIMPLEPO_LABELS``); outside the cache, so ``make clean-cache`` keeps them."""
    folder = os.environ.get(LABELS_ENV) or Path.cwd() / "labels"
    return Path(folder) / f"labels-seed{seed}.jsonl"


@dataclass(frozen=True)
class BlindItem:
    """One prompt with its two answers in display order; ``policy_side`` ("A" or "B") is hidden from the learner."""

    prompt: str
    answer_a: str
    answer_b: str
    policy_side: str
    judge_verdict: str | None = None  # "policy", "reference" or "tie" (None: no judge scores given)


def verdict_of(choice: str, policy_side: str) -> str:
    """The learner's click ("A", "B", "tie") as a verdict about the models ("policy", "reference", "tie")."""
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
    if policy_side not in ("A", "B"):
        raise ValueError(f"policy_side must be 'A' or 'B', got {policy_side!r}")
    if choice == "tie":
        return "tie"
    return "policy" if choice == policy_side else "reference"


def judge_verdict(policy_score: float, reference_score: float) -> str:
    """The judge's verdict from its two scores: the higher score wins, equal scores tie."""
    if policy_score > reference_score:
        return "policy"
    return "reference" if policy_score < reference_score else "tie"


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """Cohen's kappa of two raters' labels on the same items: (p_o - p_e) / (1 - p_e).

    p_o is the share of items both label alike; p_e the agreement expected by chance from each rater's own
    label frequencies. Raises ValueError when the lists differ in length, are empty, or when p_e = 1 (both
    raters gave every item one and the same label: kappa is undefined, 0/0).
    """
    if len(first) != len(second):
        raise ValueError(f"the raters labelled different numbers of items: {len(first)} vs {len(second)}")
    if len(first) == 0:
        raise ValueError("cohen_kappa needs at least one labelled item")
    n = len(first)
    labels = sorted(set(first) | set(second))
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    expected = sum((list(first).count(label) / n) * (list(second).count(label) / n) for label in labels)
    if expected == 1.0:
        raise ValueError(
            f"kappa is undefined: both raters gave every item the label {labels[0]!r} (chance agreement is 1)"
        )
    return (observed - expected) / (1.0 - expected)


def blind_items(
    prompts: Sequence[Any],
    reference_answers: Sequence[str],
    policy_answers: Sequence[str],
    *,
    reference_scores: Sequence[float] | None = None,
    policy_scores: Sequence[float] | None = None,
    seed: int = 0,
) -> list[BlindItem]:
    """Items in the given order; a seeded coin per item puts the policy's answer on side A or B."""
    n = len(prompts)
    if not (len(reference_answers) == len(policy_answers) == n):
        raise ValueError(
            f"{n} prompts, {len(reference_answers)} reference answers and {len(policy_answers)} policy "
            "answers: they must pair up one to one"
        )
    if (reference_scores is None) != (policy_scores is None):
        raise ValueError("give both reference_scores and policy_scores, or neither")
    if reference_scores is not None and not (len(reference_scores) == len(policy_scores) == n):
        raise ValueError(f"{n} items but {len(reference_scores)} / {len(policy_scores)} judge scores")
    if n == 0:
        raise ValueError("blind_items needs at least one prompt")
    coin = random.Random(seed)
    items = []
    for i in range(n):
        for name, answer in (("reference", reference_answers[i]), ("policy", policy_answers[i])):
            if not isinstance(answer, str):
                raise ValueError(f"item {i}: the {name} answer must be a string, got {type(answer).__name__}")
        policy_side = "A" if coin.random() < 0.5 else "B"
        a, b = (
            (policy_answers[i], reference_answers[i])
            if policy_side == "A"
            else (reference_answers[i], policy_answers[i])
        )
        verdict = None if policy_scores is None else judge_verdict(policy_scores[i], reference_scores[i])
        items.append(BlindItem(_prompt_text(prompts[i]), a, b, policy_side, verdict))
    return items


def _prompt_text(prompt: Any) -> str:
    """A prompt given as text or as chat messages, as the text of its last user turn."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
    if not users:
        raise ValueError(f"prompt {prompt!r} has no user message")
    return users[-1]


@dataclass(frozen=True)
class HumanEvalSummary:
    """The learner's verdicts so far: win rate for the policy and agreement with the judge."""

    n_labelled: int
    n_items: int
    wins: int
    ties: int
    losses: int
    win_rate: float | None  # (wins + ties / 2) / n_labelled; None before the first label
    ci_low: float | None
    ci_high: float | None
    judge_win_rate: float | None  # the judge's win rate for the policy on the same labelled items
    kappa: float | None  # Cohen's kappa, learner vs judge; None when there is no judge or it is undefined
    agreement: float | None  # raw share of items where learner and judge agree

    def __str__(self) -> str:
        if not self.n_labelled:
            return f"0 of {self.n_items} items labelled"
        text = (
            f"{self.n_labelled} of {self.n_items} labelled: your win rate for the policy "
            f"{self.win_rate:.2f} [{self.ci_low:.2f}, {self.ci_high:.2f}] "
            f"({self.wins} wins, {self.ties} ties, {self.losses} losses)"
        )
        if self.judge_win_rate is not None:
            text += (
                f"; the judge's {self.judge_win_rate:.2f}; you agree with the judge on {self.agreement:.0%}"
            )
            text += (
                f", Cohen's kappa {self.kappa:.2f}"
                if self.kappa is not None
                else ", Cohen's kappa undefined (one label only)"
            )
        return text


class BlindABEval:
    """The blind A/B widget: one item at a time, three buttons, a summary at the end, labels saved to a file.

    ``labels[i]`` is the learner's choice for item i ("A", "B", "tie") or None; ``choose(choice)`` records it for
    the item on show and moves to the next unlabelled one. Display ``evaluation.widget`` in a notebook. When
    ``labels_path`` already holds labels for these items they are restored (ValueError if it holds other items',
    so they are never overwritten).
    """

    def __init__(self, items: Sequence[BlindItem], *, labels_path: str | Path | None = None) -> None:
        import ipywidgets as widgets

        if len(items) == 0:
            raise ValueError("BlindABEval needs at least one item")
        self.items = list(items)
        self.labels: list[str | None] = [None] * len(self.items)
        self.labels_path = Path(labels_path) if labels_path is not None else None
        if self.labels_path is not None and self.labels_path.is_file():
            self.restore(self.labels_path)
        pending = [i for i, label in enumerate(self.labels) if label is None]
        self.position = pending[0] if pending else 0
        self.progress = widgets.Label()
        self.prompt_html = widgets.HTML()
        self.answer_a_html, self.answer_b_html = widgets.HTML(), widgets.HTML()
        self.buttons = {
            "A": widgets.Button(description="A is better"),
            "tie": widgets.Button(description="tie"),
            "B": widgets.Button(description="B is better"),
        }
        for choice, button in self.buttons.items():
            button.on_click(lambda _button, choice=choice: self.choose(choice))
        self.back_button = widgets.Button(description="< back")
        self.back_button.on_click(lambda _button: self.go_to(self.position - 1))
        self.result_html = widgets.HTML()
        columns = widgets.HBox(
            [self.answer_a_html, self.answer_b_html],
            layout=widgets.Layout(grid_gap="16px", align_items="flex-start"),
        )
        controls = widgets.HBox([self.back_button, *self.buttons.values(), self.progress])
        self.widget = widgets.VBox([self.prompt_html, columns, controls, self.result_html])
        self.widget.add_class("simplepo-blind-ab")  # DOM classes the browser check looks for
        self.progress.add_class("simplepo-blind-ab-progress")
        self.render()

    def restore(self, path: Path) -> None:
        """Take the labels saved in ``path``; ValueError when a record is not one of this widget's items."""
        for record in load_labels(path):
            index = record["item"]
            if not (isinstance(index, int) and 0 <= index < len(self.items)) or not _same_item(
                record, self.items[index]
            ):
                raise ValueError(
                    f"{path} holds labels for other items (item {index} differs from this widget's): pass "
                    "another labels_path, or move that file away to start over"
                )
            if record["choice"] not in CHOICES:
                raise ValueError(
                    f"{path}: item {index} has the choice {record['choice']!r}, not one of {CHOICES}"
                )
            self.labels[index] = record["choice"]

    @property
    def item(self) -> BlindItem:
        return self.items[self.position]

    @property
    def done(self) -> bool:
        return all(label is not None for label in self.labels)

    def go_to(self, position: int) -> None:
        """Show item ``position`` (clamped to the list); its earlier label, if any, can be changed."""
        self.position = min(max(position, 0), len(self.items) - 1)
        self.render()

    def choose(self, choice: str) -> None:
        """Record ``choice`` for the item on show, save the labels, and show the next unlabelled item."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
        self.labels[self.position] = choice
        if self.labels_path is not None:
            self.save(self.labels_path)
        pending = [i for i, label in enumerate(self.labels) if label is None]
        later = [i for i in pending if i > self.position]
        if later or pending:
            self.position = (later or pending)[0]
        self.render()

    def learner_verdicts(self) -> list[tuple[int, str]]:
        """(item index, verdict about the models) for each labelled item."""
        return [
            (i, verdict_of(label, item.policy_side))
            for i, (item, label) in enumerate(zip(self.items, self.labels, strict=True))
            if label is not None
        ]

    def summary(self) -> HumanEvalSummary:
        """Win rate for the policy over the labelled items, and agreement with the judge where it scored them."""
        verdicts = self.learner_verdicts()
        n = len(verdicts)
        wins = sum(v == "policy" for _, v in verdicts)
        ties = sum(v == "tie" for _, v in verdicts)
        rate = low = high = judge_rate = kappa = agreement = None
        if n:
            rate = (wins + ties / 2) / n
            low, high = wilson_interval(wins + ties / 2, n)
            judged = [(self.items[i].judge_verdict, v) for i, v in verdicts]
            if all(j is not None for j, _ in judged):
                judge_labels, learner_labels = [j for j, _ in judged], [v for _, v in judged]
                judge_rate = sum({"policy": 1.0, "tie": 0.5}.get(j, 0.0) for j in judge_labels) / n
                agreement = sum(a == b for a, b in judged) / n
                try:
                    kappa = cohen_kappa(learner_labels, judge_labels)
                except ValueError:  # one label only on both sides: kappa is 0/0
                    kappa = None
        return HumanEvalSummary(
            n, len(self.items), wins, ties, n - wins - ties, rate, low, high, judge_rate, kappa, agreement
        )

    def records(self) -> list[dict[str, Any]]:
        """One JSON-able dict per labelled item: the item, the learner's choice and verdict."""
        return [
            {
                "item": i,
                **asdict(self.items[i]),
                "choice": self.labels[i],
                "learner_verdict": verdict,
            }
            for i, verdict in self.learner_verdicts()
        ]

    def save(self, path: str | Path) -> Path:
        """Write ``records()`` as JSON Lines to ``path`` (replaced as a whole, so a crash leaves no half line)."""
        path = Path(path)
        write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records()))
        return path

    def render(self) -> None:
        item = self.item
        self.prompt_html.value = f"<b>Prompt {self.position + 1}:</b> {html.escape(item.prompt)}"
        for side, target in (("A", self.answer_a_html), ("B", self.answer_b_html)):
            text = item.answer_a if side == "A" else item.answer_b
            chosen = self.labels[self.position] == side
            border = "2px solid #2a7" if chosen else "1px solid #bbb"
            target.value = (
                f"<div style='border:{border};padding:6px;min-width:280px;max-width:420px'>"
                f"<b>{side}</b><br>{html.escape(text) or '<i>(empty answer)</i>'}</div>"
            )
        labelled = sum(label is not None for label in self.labels)
        current = self.labels[self.position]
        self.progress.value = f"item {self.position + 1} of {len(self.items)}; {labelled} labelled" + (
            f"; your choice here: {current}" if current else ""
        )
        self.result_html.value = f"<b>Done.</b> {html.escape(str(self.summary()))}" if self.done else ""


def _same_item(record: Mapping[str, Any], item: BlindItem) -> bool:
    """True when a saved record shows the same prompt, answers and sides as ``item``."""
    fields = ("prompt", "answer_a", "answer_b", "policy_side")
    return all(record.get(name) == getattr(item, name) for name in fields)


def load_labels(path: str | Path) -> list[dict[str, Any]]:
    """The records saved by ``BlindABEval.save``; ValueError naming the line for a malformed one."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not JSON ({error})") from error
        missing = {"item", "policy_side", "choice", "learner_verdict"} - set(record)
        if missing:
            raise ValueError(f"{path}, line {number}: missing field(s) {sorted(missing)}")
        records.append(record)
    return records
