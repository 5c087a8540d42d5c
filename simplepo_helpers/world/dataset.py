"""The world's data: SFT conversations, judge-labelled preference pairs and held-out evaluation prompts.

Every prompt belongs to exactly one split. First the *task* (the family and its operands, fact, word or
request, not the wording) is hashed: `HELDOUT_TASK_SHARE` percent of the tasks are **held-out tasks**, whose
prompts appear only in `heldout_prompts` (no SFT conversation, training pair or dev prompt asks them). Every
other prompt is split by a hash of its text (70% train, 15% held-out pairs, 15% eval); a second hash gives
half of the held-out-pairs range to the dev split (so 7.5% test, 7.5% dev). So `eval_prompts` measures new
wordings of tasks the model has seen, `heldout_prompts` tasks it has never seen. No prompt is shared between
splits however many rows are drawn. Dev is where hyperparameters are chosen; eval prompts are only reported.

A pair is either a *minimal pair* (share `minimal_pair_share` of the allowed requests: the same answer
sentence once with the right and once with a wrong answer, so only the answer differs) or two responses in
two different styles, never both wrong (such pairs teach nothing and binarised datasets drop them).

The simulated annotator labels a pair from the judge's scores:
- scores differ: it picks the better response, except that with probability `label_noise` (10%) it picks
  the worse one (the documented label noise);
- scores tie (both right, or two refusals): it picks the longer response (more characters) with probability
  `tie_longer_prob` (80%). This is where the length bias of the pairs comes from; the judge itself never
  rewards length.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from .families import FAMILY_WEIGHTS, Task, sample_task
from .judge import judge
from .responses import WRONG_STYLES, render_response, styles_for

SPLIT_SHARES = (("train", 70), ("test", 15), ("eval", 15))  # percent of the prompt-hash range
DEV_SHARE_OF_TEST = 50  # percent of the "test" range that a second hash gives to "dev"
HELDOUT_TASK_SHARE = 12  # percent of the task-hash range: tasks asked only in heldout_prompts
_WORDING_SLOTS = ("article",)  # slots that change the wording, not the task


@dataclass(frozen=True)
class WorldConfig:
    """Sizes, seed and annotator settings of the generated data."""

    seed: int = 0
    n_sft: int = 4000
    n_train_pairs: int = 2500
    n_test_pairs: int = 500
    n_eval_prompts: int = 300
    n_dev_pairs: int = 300
    n_dev_prompts: int = 300  # a quota per family as for eval; the dev pools are smaller, so fewer result
    n_heldout_prompts: int = 300  # a quota per family; the held-out task pools are small, so fewer result
    label_noise: float = 0.10
    minimal_pair_share: float = 0.4
    tie_longer_prob: float = 0.8
    # Style mix of the SFT answers: 40% are wrong or refuse, so the reference model is mediocre on purpose.
    # Its wrong answers are all `wrong_confident` (for a forbidden request: eager compliance), so a wrong
    # answer is announced by its first words: preference training can learn to avoid it even where the
    # model cannot compute the answer. Plain `wrong` answers appear only in the pairs.
    sft_styles: tuple[tuple[str, float], ...] = (
        ("concise", 0.36),
        ("verbose", 0.24),
        ("wrong", 0.0),
        ("wrong_confident", 0.28),
        ("refusal", 0.12),
    )


def task_identity(task: Task) -> str:
    """The task without its wording: family and slot values, less the template and wording-only slots."""
    slots = {k: v for k, v in sorted(task.slots.items()) if k not in _WORDING_SLOTS}
    return json.dumps([task.family, slots], sort_keys=True)


def is_heldout_task(task: Task) -> bool:
    """Whether `task` is one of the held-out tasks (a fixed function of its identity)."""
    digest = hashlib.sha256(f"task:{task_identity(task)}".encode()).hexdigest()
    return int(digest[:8], 16) % 100 < HELDOUT_TASK_SHARE


def split_of(prompt: str) -> str:
    """ "train", "test", "dev", "eval" or "heldout": a fixed function of the prompt text (module docstring)."""
    from .families import parse_prompt

    try:
        task = parse_prompt(prompt)
    except ValueError:  # not a prompt of this world: split by its text alone
        task = None
    if task is not None and is_heldout_task(task):
        return "heldout"
    return _wording_split(prompt)


def _wording_split(prompt: str) -> str:
    bucket = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) % 100
    for name, share in SPLIT_SHARES:
        if bucket < share:
            if name == "test" and _dev_bucket(prompt) < DEV_SHARE_OF_TEST:
                return "dev"
            return name
        bucket -= share
    raise AssertionError("split shares must add up to 100")


def _dev_bucket(prompt: str) -> int:
    """0-99 from a second hash (independent of the split hash): below DEV_SHARE_OF_TEST means dev."""
    return int(hashlib.sha256(f"dev:{prompt}".encode()).hexdigest()[:8], 16) % 100


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _task_in(split: str, rng: random.Random, family: str | None = None) -> Task:
    while True:
        task = sample_task(rng, family)
        if ("heldout" if is_heldout_task(task) else _wording_split(task.prompt)) == split:
            return task


def _sft_style(task: Task, rng: random.Random, config: WorldConfig) -> str:
    weights, allowed = dict(config.sft_styles), styles_for(task)
    return rng.choices(allowed, weights=[weights[s] for s in allowed])[0]


def sft_rows(config: WorldConfig) -> list[dict]:
    """Single-turn conversations (`messages`) on training prompts, answers in the SFT style mix."""
    rng = random.Random(f"{config.seed}-sft")
    rows = []
    for _ in range(config.n_sft):
        task = _task_in("train", rng)
        style = _sft_style(task, rng, config)
        response = render_response(task, style, rng)
        rows.append(
            {"messages": _user(task.prompt) + _assistant(response), "family": task.family, "style": style}
        )
    return rows


def annotate(
    first: tuple[str, float], second: tuple[str, float], rng: random.Random, config: WorldConfig
) -> tuple[int, int]:
    """(chosen index, rejected index) among two (text, judge score) candidates (module docstring)."""
    (text_a, score_a), (text_b, score_b) = first, second
    if score_a != score_b:
        better = 0 if score_a > score_b else 1
        chosen = 1 - better if rng.random() < config.label_noise else better
    else:
        if len(text_a) == len(text_b):
            longer = rng.randrange(2)
        else:
            longer = 0 if len(text_a) > len(text_b) else 1
        chosen = longer if rng.random() < config.tie_longer_prob else 1 - longer
    return chosen, 1 - chosen


def pair_rows(split: str, n: int, config: WorldConfig) -> list[dict]:
    """`n` preference pairs on prompts of `split`: a minimal pair or two styles, judged, then annotated."""
    rng = random.Random(f"{config.seed}-pairs-{split}")
    rows = []
    for _ in range(n):
        task = _task_in(split, rng)
        minimal = not task.forbidden and rng.random() < config.minimal_pair_share
        if minimal:
            styles, form = ["concise", "wrong"], rng.randrange(100)
            texts = [render_response(task, style, rng, form=form) for style in styles]
        else:
            styles = rng.sample(styles_for(task), 2)
            while set(styles) == set(WRONG_STYLES):  # both wrong: no signal, dropped as binarised sets do
                styles = rng.sample(styles_for(task), 2)
            texts = [render_response(task, style, rng) for style in styles]
        scores = [judge(task.prompt, text).score for text in texts]
        chosen, rejected = annotate((texts[0], scores[0]), (texts[1], scores[1]), rng, config)
        rows.append(
            {
                "prompt": _user(task.prompt),
                "chosen": _assistant(texts[chosen]),
                "rejected": _assistant(texts[rejected]),
                "family": task.family,
                "forbidden": task.forbidden,
                "minimal": minimal,
                "chosen_style": styles[chosen],
                "rejected_style": styles[rejected],
                "chosen_score": scores[chosen],
                "rejected_score": scores[rejected],
            }
        )
    return rows


def prompt_rows(split: str, n: int, config: WorldConfig) -> list[dict]:
    """Distinct prompts of `split`, about FAMILY_WEIGHTS * n per family (fewer if a family's pool is small)."""
    rng = random.Random(f"{config.seed}-{split}")
    rows: list[dict] = []
    for family, weight in FAMILY_WEIGHTS.items():
        seen: set[str] = set()
        quota = round(weight * n)
        for _ in range(50 * quota):  # bounded: a small pool ends the search early
            if len(seen) == quota:
                break
            task = _task_in(split, rng, family)
            if task.prompt not in seen:
                seen.add(task.prompt)
                rows.append(
                    {
                        "prompt": _user(task.prompt),
                        "family": family,
                        "forbidden": task.forbidden,
                        "answer": task.answer,
                    }
                )
    return rows


def build_world(config: WorldConfig | None = None) -> dict[str, list[dict]]:
    """All generated rows by file stem: sft_train, pairs_train, pairs_test, eval_prompts, pairs_dev,
    dev_prompts, heldout_prompts."""
    config = config or WorldConfig()
    return {
        "sft_train": sft_rows(config),
        "pairs_train": pair_rows("train", config.n_train_pairs, config),
        "pairs_test": pair_rows("test", config.n_test_pairs, config),
        "eval_prompts": prompt_rows("eval", config.n_eval_prompts, config),
        "pairs_dev": pair_rows("dev", config.n_dev_pairs, config),
        "dev_prompts": prompt_rows("dev", config.n_dev_prompts, config),
        "heldout_prompts": prompt_rows("heldout", config.n_heldout_prompts, config),
    }


def to_jsonl(rows: list[dict]) -> bytes:
    """Rows as JSON Lines bytes, one compact object a line (stable: same rows, same bytes)."""
    return "".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n" for row in rows).encode()


def checkout_data_dir() -> Path:
    """The checkout's data/ folder, where `make data` writes the files (absent in an installed package)."""
    return Path(__file__).resolve().parents[2] / "data"


def data_dir() -> Path:
    """Where the world's data files are: the checkout's data/, or, for a package installed without its
    checkout (a wheel, ``pip install git+...``), a cache folder they are generated into on first use. The two
    hold the same bytes: the world is built from code and fixed seeds (tests/test_world_data.py)."""
    checkout = checkout_data_dir()
    if (checkout / "pairs_train.jsonl").is_file():
        return checkout
    return generated_data_dir()


def generated_data_dir(config: WorldConfig | None = None) -> Path:
    """The world's data files generated into the cache (keyed on the world's code), built once."""
    from ..runtime.fingerprint import code_fingerprint
    from .cache import cache_dir

    folder = cache_dir() / f"world-data-{code_fingerprint('world')}"
    if (folder / "complete").is_file():
        return folder
    staging = folder.with_name(f".{folder.name}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, rows in build_world(config or WorldConfig()).items():
        (staging / f"{name}.jsonl").write_bytes(to_jsonl(rows))
    (staging / "complete").write_text("written last: the folder is whole\n")
    shutil.rmtree(folder, ignore_errors=True)  # an incomplete folder left by a killed process
    try:
        os.replace(staging, folder)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def data_file(stem: str) -> Path:
    """Path of a data file by stem ("pairs_train", "pairs_test", "eval_prompts", "sft_train", "pairs_dev",
    "dev_prompts", "heldout_prompts")."""
    path = data_dir() / f"{stem}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make data` in the repository")
    return path
