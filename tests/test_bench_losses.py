"""The benchmark compares like with like: on the benchmark's own batches, the kit's loss equals TRL's.

The batches are built as ``benchmarks/bench_step.py`` builds them: the workload's token rows (UltraFeedback-like
lengths, ``DEFAULT_SIZES["uf2"]`` and ``["uf8"]``) through each side's own collator (the kit's
``PreferenceCollator``; TRL CPO's collator fed ``_cpo_features``; TRL DPO's collator fed the rows), with the
benchmark's hyper-parameters (``SIMPO_BETA``, ``SIMPO_GAMMA``, ``DPO_BETA``, ``cpo_alpha=0``). The kit runs as
the benchmark's kit rows run (``layout="auto"``: packed and prefix-shared on this Llama), TRL on its padded
batches. The model is the benchmark's SmolLM2 pattern shrunk (Llama, tied embeddings, 3 query heads per
key-value head) so the test takes seconds; the same seed gives both sides the same weights.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from transformers import LlamaConfig

from benchmarks.bench_step import DPO_BETA, SIMPO_BETA, SIMPO_GAMMA, Settings, _cpo_features, _trl_args
from benchmarks.workloads import DEFAULT_SIZES, DataSize, Workload, synthetic_workload
from simplepo_helpers.batching import PreferenceCollator
from simplepo_helpers.fast import choose_layout
from simplepo_helpers.training import LossConfig, concatenated_forward, preference_loss

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
TINY_SMOLLM2 = dict(  # SmolLM2-135M's pattern (tied, 9 heads over 3 KV heads) at toy size
    vocab_size=256,
    hidden_size=36,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=9,
    num_key_value_heads=3,
    tie_word_embeddings=True,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def workload(shape: str) -> Workload:
    size = DEFAULT_SIZES[shape]
    size = DataSize(**{**size.__dict__, "num_batches": 2})  # two of the benchmark's batches per shape
    return synthetic_workload(shape, LlamaConfig(**TINY_SMOLLM2), size, seed=0)


def kit_batches(work: Workload) -> list[dict]:
    collator = PreferenceCollator(work.tokenizer)  # as bench_step._kit_row collates
    return [collator(rows) for rows in work.batches]


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of ``model`` with every weight moved a little: a policy whose log-ratios to ``model`` are not 0."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return other


@pytest.mark.parametrize("shape", ["uf2", "uf8"])
def test_simpo_equals_trl_cpo_simpo_on_the_benchmark_batches(shape, tmp_path):
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    work = workload(shape)
    model = work.build_model()
    args = _trl_args(
        CPOConfig,
        Settings(),
        work,
        str(tmp_path),
        loss_type="simpo",
        cpo_alpha=0.0,
        beta=SIMPO_BETA,
        simpo_gamma=SIMPO_GAMMA,
        max_length=4096,
        remove_unused_columns=False,
    )
    trainer = CPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(work.dummy_texts),
        processing_class=work.tokenizer,
    )
    kit_model = work.build_model()  # the same seed: the same weights as TRL's model
    config = LossConfig("simpo", beta=SIMPO_BETA, gamma=SIMPO_GAMMA)
    for rows, batch in zip(work.batches, kit_batches(work), strict=True):
        trl_batch = trainer.data_collator([_cpo_features(row) for row in rows])
        trl_loss, trl_metrics = trainer.get_batch_loss_metrics(trainer.model, trl_batch)
        assert choose_layout(kit_model, batch=batch) == "packed"  # what the benchmark's kit row runs
        kit_loss, kit_metrics = preference_loss(kit_model, batch, config, layout="auto")
        torch.testing.assert_close(kit_loss, trl_loss, **TOLERANCE)
        assert kit_metrics["logps/chosen"] == pytest.approx(trl_metrics["logps/chosen"], abs=1e-5)
        assert kit_metrics["logps/rejected"] == pytest.approx(trl_metrics["logps/rejected"], abs=1e-5)
        assert trl_loss.item() > 0.1  # a real loss was compared


@pytest.mark.parametrize("precompute", [False, True])
def test_dpo_equals_trl_dpo_on_the_benchmark_batches(precompute, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    work = workload("uf2")  # the benchmark times DPO on uf2 (and smollm2), not on uf8
    reference = work.build_model()
    policy = perturbed(reference, seed=1)
    args = _trl_args(
        DPOConfig,
        Settings(),
        work,
        str(tmp_path),
        beta=DPO_BETA,
        max_length=None,
        precompute_ref_log_probs=precompute,
    )
    trainer = DPOTrainer(
        model=copy.deepcopy(policy),
        ref_model=None if precompute else copy.deepcopy(reference),
        args=args,
        train_dataset=Dataset.from_list(work.dummy_texts),
        processing_class=work.tokenizer,
    )
    config = LossConfig("dpo", beta=DPO_BETA)
    for rows, batch in zip(work.batches, kit_batches(work), strict=True):
        trl_batch = trainer.data_collator(rows)
        if precompute:  # as the benchmark's precomputed rows: each side's own reference pass
            # TRL's reference pass runs on the trainer's model: give it the reference's weights for it
            trainer.model.load_state_dict(reference.state_dict())
            ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, trl_batch)
            trainer.model.load_state_dict(policy.state_dict())
            trl_batch.update(ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected)
            with torch.no_grad():
                ref = concatenated_forward(reference, batch, length_normalize=False)
            batch = {
                **batch,
                "ref_chosen_logps": ref["chosen_logps"],
                "ref_rejected_logps": ref["rejected_logps"],
            }
        trl_loss = trainer.compute_loss(trainer.model, trl_batch)
        assert choose_layout(policy, reference, batch=batch) == "packed"
        kit_loss, _ = preference_loss(
            policy, batch, config, ref_model=None if precompute else reference, layout="auto"
        )
        torch.testing.assert_close(kit_loss, trl_loss, **TOLERANCE)
        assert abs(trl_loss.item() - 0.6931) > 1e-3  # the log-ratios were not all 0
