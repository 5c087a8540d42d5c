"""SimplePO helpers: the tested code behind the SimPO / DPO notebooks.

The top level is the core a learner reads, in this order: ``rows`` (the two row formats and their checks),
``data`` (loading and validation), ``batching`` (token ids, labels and the ``[2B, T]`` batch), ``logps``
(log-softmax and gather), ``losses`` and ``training`` (the one training loop; ``reference`` precomputes DPO's
reference log-probs). Every speed trick (the packed, prefix-shared layout train() uses where tested, the
fused LM head) lives behind one door in ``fast``, proven equal to the plain path by the tests.
The rest lives in subpackages named for their job: ``inputs`` (JSONL reading, TRL's implicit prompt, the
validation report), ``runtime`` (device, checkpoints, optimizer, batch order, memory), ``world`` (the self-made preference world), ``evaluation`` (measuring; it never trains),
``lessons`` (the cpu/gpu profiles every notebook loads first, with their tuned values), ``experiments`` (the
runs that train and record: sweeps, the spread, the default run), ``scale`` (entry point, configs, LoRA, Hub
models) and ``course`` (exercise checks, widgets, the notebook runner).
``docs/architecture.md`` states which may import which; ``tests/test_architecture.py`` enforces it.

Names are imported lazily (``from simplepo_helpers import simpo_loss`` loads only the module that defines
it), so light modules such as the data world do not pay for heavy imports they do not use; the
``TYPE_CHECKING`` block below lets editors and type checkers jump to each definition.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # row formats and checks, loading
    "row_problem": "rows",
    "row_format": "rows",
    "load_preference_dataset": "data",
    "validate_preferences": "data",
    "ValidationReport": "inputs.report",
    "PreferenceDataError": "inputs.report",
    "read_jsonl": "inputs.jsonl",
    # tokenisation and batching
    "tokenize_preference": "batching",
    "PreferenceCollator": "batching",
    "decode_masked": "course.tokens",
    "explain_tokens": "course.tokens",
    # log-probabilities
    "sequence_logps": "logps",
    "token_logps": "logps",
    # the fast path (packed, prefix-shared layout; fused head), behind one door
    "pack_preference_batch": "fast",
    "describe_layout": "fast",
    # losses and regularisers
    "simpo_loss": "losses",
    "dpo_loss": "losses",
    "sft_nll_loss": "losses",
    "kl_penalty": "losses",
    # training: the one loop
    "LossConfig": "training",
    "TrainConfig": "training",
    "concatenated_forward": "training",
    "preference_loss": "training",
    "training_step": "training",
    "train": "training",
    "precompute_reference_logps": "precompute",
    # runtime plumbing
    "TrainResult": "runtime.train_result",
    "PreferenceBatches": "runtime.batch_order",
    # the self-made preference world
    "judge": "world.judge",
    "load_reference_model": "world.reference",
    # evaluation
    "generate_responses": "evaluation.generation",
    "win_rate": "evaluation.winrates",
    "wilson_interval": "evaluation.winrates",
    "lc_win_rate": "evaluation.winrates",
    "preference_rewards": "evaluation.rewards",
    "response_lengths": "evaluation.judging",
    "repetition_rate": "evaluation.judging",
    "judge_responses": "evaluation.judging",
    "family_breakdown": "evaluation.judging",
    "generate_and_judge": "evaluation.metrics",
    "evaluate_policy": "evaluation.metrics",
    "RunSpec": "experiments.comparisons",
    "comparison_specs": "experiments.comparisons",
    "variant": "experiments.comparisons",
    "train_all": "experiments.comparisons",
    "seed_band": "experiments.comparisons",
    "measure_step_cost": "experiments.comparisons",
    "reference_logps": "experiments.comparisons",
    "default_run": "experiments.rounds",
    "default_runs": "experiments.rounds",
    "Recipe": "experiments.rounds",
    "RECIPES": "experiments.rounds",
    "seed_prompt_gain": "evaluation.sampling",
    "summarize_seeds": "evaluation.results",
    "repo_root": "evaluation.results",
    "RewardModelJudge": "evaluation.reward_model",
    "sample_k": "evaluation.sampling",
    "score_gain": "evaluation.sampling",
    "style_probabilities": "evaluation.probes",
    "probe_table": "evaluation.probes",
    # scale-out and real models
    "load_profile": "lessons.profiles",
    "PROFILE_DEFAULTS": "lessons.profiles",
    "apply_lora": "scale.lora",
    "adapter_disabled_reference": "scale.lora",
    "LoraOptions": "scale.lora",
    # course tooling
    "cmp": "course.display",
    "simpo_curves": "course.display",
    "draw_simpo_curves": "course.display",
    "tokens_html": "course.display",
    "html_table": "course.display",
    "PairBrowser": "course.widgets",
    "LossExplorer": "course.widgets",
    "GenerationBrowser": "course.widgets",
    "BlindABEval": "course.human_eval",
    "cohen_kappa": "course.human_eval",
    "check": "course.check",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # generated from _EXPORTS; tests/test_packaging.py checks that they agree
    from .batching import PreferenceCollator, tokenize_preference
    from .course.check import check
    from .course.display import cmp, draw_simpo_curves, html_table, simpo_curves, tokens_html
    from .course.human_eval import BlindABEval, cohen_kappa
    from .course.tokens import decode_masked, explain_tokens
    from .course.widgets import GenerationBrowser, LossExplorer, PairBrowser
    from .data import load_preference_dataset, validate_preferences
    from .evaluation.generation import generate_responses
    from .evaluation.judging import family_breakdown, judge_responses, repetition_rate, response_lengths
    from .evaluation.metrics import evaluate_policy, generate_and_judge
    from .evaluation.probes import probe_table, style_probabilities
    from .evaluation.results import repo_root, summarize_seeds
    from .evaluation.reward_model import RewardModelJudge
    from .evaluation.rewards import preference_rewards
    from .evaluation.sampling import sample_k, score_gain, seed_prompt_gain
    from .evaluation.winrates import lc_win_rate, wilson_interval, win_rate
    from .experiments.comparisons import (
        RunSpec,
        comparison_specs,
        measure_step_cost,
        reference_logps,
        seed_band,
        train_all,
        variant,
    )
    from .experiments.rounds import RECIPES, Recipe, default_run, default_runs
    from .fast import describe_layout, pack_preference_batch
    from .inputs.jsonl import read_jsonl
    from .inputs.report import PreferenceDataError, ValidationReport
    from .lessons.profiles import PROFILE_DEFAULTS, load_profile
    from .logps import sequence_logps, token_logps
    from .losses import dpo_loss, kl_penalty, sft_nll_loss, simpo_loss
    from .precompute import precompute_reference_logps
    from .rows import row_format, row_problem
    from .runtime.batch_order import PreferenceBatches
    from .runtime.train_result import TrainResult
    from .scale.lora import LoraOptions, adapter_disabled_reference, apply_lora
    from .training import LossConfig, TrainConfig, concatenated_forward, preference_loss, train, training_step
    from .world.judge import judge
    from .world.reference import load_reference_model


# Modules that moved, old path -> new path: ``import simplepo_helpers.evaluation.spread`` (and
# ``python -m`` with the old path) gets the very module object of the new path.
_MOVED: dict[str, str] = {
    f"evaluation.{old}": f"experiments.{new}"
    for old, new in {
        "experiments": "comparisons",
        "onpolicy": "onpolicy",
        "readme": "readme",
        "report": "report",
        "rounds": "rounds",
        "spread": "spread",
        "sweeps": "sweeps",
    }.items()
} | {
    "scale.profiles": "lessons.profiles",
    "runtime.result": "runtime.train_result",  # beside evaluation.results and experiments.report: renamed
    "runtime.batches": "runtime.batch_order",  # beside the core's batching.py: renamed for what it holds
    "reference": "precompute",  # "reference" names the reference model only; this module precomputes log-probs
    "fast.fused": "fast.packing",  # the fused head and log-softmax: now with the packed row they score
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Finds a moved module under its old name and hands back the module of its new name."""

    @staticmethod
    def _new_name(fullname: str) -> str | None:
        moved = _MOVED.get(fullname.removeprefix(f"{__name__}."))
        return f"{__name__}.{moved}" if moved and fullname.startswith(f"{__name__}.") else None

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        new_name = self._new_name(fullname)
        if new_name is None:
            return None
        new_spec = importlib.util.find_spec(new_name)
        return importlib.util.spec_from_loader(fullname, self, origin=new_spec.origin if new_spec else None)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return importlib.import_module(str(self._new_name(spec.name)))

    def exec_module(self, module: types.ModuleType) -> None:
        pass  # the module of the new name has run already

    def get_source(self, fullname: str) -> str | None:  # python -m <old name>: runs the new module's code
        spec = importlib.util.find_spec(str(self._new_name(fullname)))
        assert spec is not None and isinstance(spec.loader, importlib.abc.InspectLoader)
        return spec.loader.get_source(spec.name)


sys.meta_path.append(_MovedModules())


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'simplepo_helpers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value  # cache: later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
