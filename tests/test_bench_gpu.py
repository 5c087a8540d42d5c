"""``make bench-gpu``'s script (benchmarks/bench_gpu.py) in its CPU smoke mode: it runs and writes the JSON.

No GPU here: the smoke mode runs the same code (notebook 03's gpu profile on tiny stand-ins, then the rows) on
a tiny shape on the CPU. What a real GPU run measures is not checked here.
"""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import bench_gpu

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]
ROW_FIELDS = {
    "shape", "row", "layout", "timed_steps", "pairs_per_step", "median_step_s", "pairs_per_s", "peak_mem_mb",
    "model_tflops_per_s", "mfu",
}  # fmt: skip


def test_datasheet_peaks_by_device_name():
    assert bench_gpu.datasheet_peak("NVIDIA H100 80GB HBM3")[0] == 989.0  # SXM
    assert bench_gpu.datasheet_peak("NVIDIA H100 PCIe")[0] == 756.0
    assert bench_gpu.datasheet_peak("NVIDIA H200")[0] == 989.0
    assert bench_gpu.datasheet_peak("Tesla T4")[0] == 65.0
    peak, why = bench_gpu.datasheet_peak("Some Future GPU")
    assert peak is None and "no datasheet entry" in why


@pytest.mark.parametrize("with_trl", [True, False])
def test_smoke_run_writes_the_json(tmp_path, monkeypatch, with_trl):
    monkeypatch.setenv("SIMPLEPO_CACHE", str(tmp_path / "cache"))
    if not with_trl:  # a machine without TRL / datasets: those rows are skipped, saying why
        monkeypatch.setattr(bench_gpu, "trl_problem", lambda: "TRL rows skipped: ModuleNotFoundError: trl")
    out = tmp_path / "bench_gpu.json"
    bench_gpu.main(["--smoke", "--device", "cpu", "--out", str(out), "--shapes", "smollm2", "uf8_full"])
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["device"] == "cpu" and report["errors"] == []
    assert {
        "device_name",
        "dtype",
        "versions",
        "datasheet_peak_tflops",
        "peak_source",
        "matmul_peak_tflops",
    } <= set(report)
    assert report["versions"]["torch"] and report["matmul_peak_tflops"] > 0
    notebook = report["notebook03"]
    assert notebook["steps"] == 2 and len(notebook["losses"]) == 2 and notebook["parameters"] > 0
    rows = {(row["shape"], row["row"]): row for row in report["rows"]}
    for row in rows.values():
        # 2 steps asked for, rounded up to one pass over the smoke workload's 3 batches
        assert set(row) == ROW_FIELDS and row["pairs_per_s"] > 0 and row["timed_steps"] == 3
        assert row["mfu"] is None  # no datasheet peak on a CPU
    kit = {("smollm2", name) for name in bench_gpu.KIT_ROWS} | {("uf8_full", "kit_simpo")}
    trl = {("smollm2", name) for name in bench_gpu.TRL_ROWS} | {("uf8_full", "trl_cpo_simpo")}
    assert rows["smollm2", "kit_simpo"]["layout"].startswith("packed")
    if with_trl:
        assert set(rows) == kit | trl and report["skipped"] == []
        assert "smollm2/kit_simpo" in report["kit_vs_trl_pairs_per_s"]
    else:
        assert set(rows) == kit and report["kit_vs_trl_pairs_per_s"] == {}
        assert {s["row"] for s in report["skipped"]} == set(bench_gpu.TRL_ROWS)
        assert all("ModuleNotFoundError" in s["reason"] for s in report["skipped"])
