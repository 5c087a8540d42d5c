"""The self-made preference world: prompts with checkable answers, a judge, pairs, tokenizer, reference model.

    from simplepo_helpers.world import judge, load_reference_model, data_file
    model, tokenizer = load_reference_model()          # built once (about a minute on a CPU), then cached
    judge("What is 2 + 3?", "2 + 3 = 5.")               # JudgeResult(score=1.0, correct=True, ...)
    data_file("pairs_train")                            # data/pairs_train.jsonl (see data/README.md)

Modules: facts (the world's tables), families (prompt templates, truth, answer reading), responses (the
five styles), judge, dataset (splits, SFT rows, annotated pairs), card (data/README.md), tokenizer,
reference (the cached SFT model), build (`make data`). Light names import eagerly; the torch-backed
ones load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .cache import cache_dir
from .dataset import WorldConfig, build_world, data_dir, data_file, split_of
from .families import FAMILIES, Task, parse_prompt
from .judge import JudgeResult, judge
from .responses import STYLES, render_response

_LAZY = {  # name -> submodule (imports torch / transformers)
    "ReferenceConfig": "reference",
    "load_reference_model": "reference",
    "ensure_reference_model": "reference",
    "reference_model_dir": "reference",
    "build_tokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
}

__all__ = [
    "FAMILIES",
    "STYLES",
    "JudgeResult",
    "Task",
    "WorldConfig",
    "build_world",
    "cache_dir",
    "data_dir",
    "data_file",
    "judge",
    "parse_prompt",
    "render_response",
    "split_of",
    "ReferenceConfig",
    "build_tokenizer",
    "ensure_reference_model",
    "load_reference_model",
    "load_tokenizer",
    "reference_model_dir",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
