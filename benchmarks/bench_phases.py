"""Where a kit step's time goes: policy forward + loss, backward, clip + AdamW, and a reference forward.

``python -m benchmarks.bench_phases --shape smollm2`` times each phase separately (same model, batches,
threads and optimizer as ``bench_step``'s kit rows) and prints one JSON line with the medians and the bound
they put on SimPO's time relative to live-reference DPO: ``(F + B + O) / (F + B + O + R)``, where R is the
no-grad reference forward DPO adds. With B = 2F and O = 0 that bound is exactly 0.75.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from .bench_step import LEARNING_RATE, SIMPO_BETA, SIMPO_GAMMA, _import_everything
from .measure import timed
from .workloads import SHAPES, DataSize, build_workload


def measure_phases(shape: str, *, reps: int, threads: int, size: DataSize | None = None) -> dict:
    from simplepo_helpers.batching import PreferenceCollator
    from simplepo_helpers.runtime.optim import build_optimizer
    from simplepo_helpers.training import LossConfig, concatenated_forward

    torch.set_num_threads(threads)
    workload = build_workload(shape, size)
    device = torch.device("cpu")
    model = workload.build_model()
    reference = workload.build_model().eval()
    loss_config = LossConfig("simpo", beta=SIMPO_BETA, gamma=SIMPO_GAMMA)
    optimizer, _ = build_optimizer(model, learning_rate=LEARNING_RATE, weight_decay=0.0)
    collator = PreferenceCollator(workload.tokenizer)
    batches = [collator(rows) for rows in workload.batches]
    phases: dict[str, list[float]] = {
        "forward_and_loss": [],
        "backward": [],
        "clip_and_adamw": [],
        "reference_forward": [],
    }
    model.train()
    for k in range(reps + 1):  # the first repetition is a warm-up
        batch = batches[k % len(batches)]

        def forward(batch=batch):
            out = concatenated_forward(model, batch, length_normalize=True)
            return loss_config.pairwise_loss(out["chosen_logps"], out["rejected_logps"])[0].mean()

        loss, forward_s = timed(forward, device)
        _, backward_s = timed(loss.backward, device)

        def update():
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        _, update_s = timed(update, device)
        with torch.no_grad():
            _, reference_s = timed(
                lambda batch=batch: concatenated_forward(reference, batch, length_normalize=False), device
            )
        if k:
            for name, seconds in zip(phases, (forward_s, backward_s, update_s, reference_s), strict=True):
                phases[name].append(seconds)
    medians = {name: statistics.median(values) for name, values in phases.items()}
    simpo = medians["forward_and_loss"] + medians["backward"] + medians["clip_and_adamw"]
    return {
        "shape": shape,
        "threads": threads,
        "reps": reps,
        "seconds": phases,
        "median_seconds": medians,
        "simpo_over_dpo_bound": simpo / (simpo + medians["reference_forward"]),
        "backward_over_forward": medians["backward"] / medians["forward_and_loss"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="smollm2")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    _import_everything()
    print("BENCH_RESULT " + json.dumps(measure_phases(args.shape, reps=args.reps, threads=args.threads)))


if __name__ == "__main__":
    main()
