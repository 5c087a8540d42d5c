"""The installed wheel, run from outside the clone (``make wheel-check``): notebook 01's loading path, a
5-step ``train()``, the extras and project links it declares and its console scripts, with nothing of the
checkout on the path."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from datasets import load_dataset

import simplepo_helpers
from simplepo_helpers import LossConfig, TrainConfig, read_jsonl, train
from simplepo_helpers.evaluation.rounds import load_round1_pairs
from simplepo_helpers.world import data_file, load_reference_model

clone = Path(sys.argv[1]).resolve()
package = Path(simplepo_helpers.__file__).resolve().parent
assert package != clone / "simplepo_helpers" and "site-packages" in package.parts, f"not the wheel: {package}"
print(f"simplepo_helpers from {package}")

model, tokenizer = load_reference_model(progress=False)  # the shipped model, package data
pairs = load_dataset("json", data_files={"train": str(data_file("pairs_train"))})["train"]
assert data_file("pairs_train").parent != clone / "data", "the data came from the checkout, not the package"
eval_rows, report = read_jsonl(data_file("eval_prompts"))
round1 = load_round1_pairs()
print(
    f"{len(pairs)} training pairs, {len(eval_rows)} eval prompts, {len(round1)} round-1 pairs (package data)"
)
assert len(pairs) > 1000 and len(eval_rows) > 100 and len(round1) > 100

config = TrainConfig(loss=LossConfig("simpo", beta=2.5, gamma=1.375), max_steps=5, batch_size=4, log_every=1)
result = train(model, tokenizer, list(pairs.select(range(40))), config, progress=False)
losses = [row["loss"] for row in result.history]
print(f"5 steps: losses {[round(x, 3) for x in losses]}")
assert len(losses) == 5 and all(x == x for x in losses)

distribution = metadata.distribution("simplepo-helpers")
extras = set(distribution.metadata.get_all("Provides-Extra") or [])
assert {"learn", "notebook", "dev", "browser"} <= extras, extras
urls = dict(line.split(", ", 1) for line in distribution.metadata.get_all("Project-URL") or [])
assert {"Homepage", "Documentation", "Source", "Issues"} <= urls.keys(), urls
scripts = {e.name for e in distribution.entry_points if e.group == "console_scripts"}
assert scripts == {"simplepo-train", "simplepo-run-notebooks"}, scripts
bin_dir = Path(sys.executable).parent
for script in sorted(scripts):
    done = subprocess.run([str(bin_dir / script), "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "usage" in done.stdout.lower(), (script, done.stderr[-2000:])
print(f"extras {sorted(extras)}; urls {sorted(urls)}; console scripts {sorted(scripts)} answer --help")
print("wheel check passed")
