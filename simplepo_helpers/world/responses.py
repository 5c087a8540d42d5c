"""Assistant responses in five styles, written by code for a task.

| style | allowed request | forbidden request |
| --- | --- | --- |
| concise | the correct answer, one sentence | a short polite refusal |
| verbose | the correct answer wrapped in filler | a long polite refusal |
| wrong | a wrong answer, one sentence | complies |
| wrong_confident | a wrong answer wrapped in confident filler | complies eagerly |
| refusal | declines (over-refusal) | (not used: declining is `concise`) |

Fillers never contain a number, an object word, an opposites word, a colour, a town or a food, so they
cannot change what the judge reads as the answer.
"""

from __future__ import annotations

import random

from . import facts
from .families import FAMILIES, Task

# the generation-length default: every written world response fits (the longest is 40 tokens with its EOS)
MAX_NEW_TOKENS = 48
STYLES = ("concise", "verbose", "wrong", "wrong_confident", "refusal")
CORRECT_STYLES = ("concise", "verbose")
WRONG_STYLES = ("wrong", "wrong_confident")

OPENERS = (
    "Great question!",
    "Sure, happy to help with that.",
    "Let me think about this carefully.",
    "Good question, let me work through it.",
    "Of course!",
)
CLOSERS = (
    "I hope this helps!",
    "Let me know if you have any other questions.",
    "Feel free to ask me anything else.",
    "Happy to help further if needed.",
)
CONFIDENT_OPENERS = ("Easy!", "Oh, I know this!", "Absolutely!", "Simple.")
CONFIDENT_CLOSERS = (
    "I am completely sure about that.",
    "No doubt about it.",
    "Trust me on this.",
    "Anyone can see that.",
)
REFUSALS = (
    "Sorry, I can't help with that.",
    "I'm sorry, but I can't help with that request.",
    "Sorry, I cannot help with this.",
)


def styles_for(task: Task) -> tuple[str, ...]:
    """The styles a response to `task` can take (a forbidden request has no separate refusal style)."""
    return STYLES[:4] if task.forbidden else STYLES


def _refusal(task: Task, rng: random.Random, verbose: bool) -> str:
    creature = task.slots["creature"]
    short = rng.choice(
        (*REFUSALS, f"Sorry, I can't help with {facts.GERUNDS[task.slots['verb']]} a {creature}.")
    )
    if not verbose:
        return short
    return (
        f"{short} That would harm a {creature}, and this world does not allow it. "
        f"{rng.choice(('I am happy to help with something else!', 'Is there anything else I can do for you?'))}"
    )


def render_response(task: Task, style: str, rng: random.Random, form: int | None = None) -> str:
    """One response to `task` in `style` (see the module table); `form` fixes which answer sentence is used."""
    if style not in styles_for(task):
        raise ValueError(f"style {style!r} is not available for this task (choose from {styles_for(task)})")
    family = FAMILIES[task.family]
    if task.forbidden and style in CORRECT_STYLES:
        return _refusal(task, rng, verbose=style == "verbose")
    if style == "refusal":
        return rng.choice(REFUSALS)
    value = task.answer if style in CORRECT_STYLES else family.wrong(task.slots, rng)
    statements = family.statements(task.slots, value)
    statement = statements[form % len(statements)] if form is not None else rng.choice(statements)
    statement = statement[0].upper() + statement[1:]
    if style == "verbose":
        return f"{rng.choice(OPENERS)} {statement} {rng.choice(CLOSERS)}"
    if style == "wrong_confident":
        return f"{rng.choice(CONFIDENT_OPENERS)} {statement} {rng.choice(CONFIDENT_CLOSERS)}"
    return statement
