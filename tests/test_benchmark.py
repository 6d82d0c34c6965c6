"""``confkd_benchmark_cost``: the JSON schema of a tiny CPU run, and the pure helpers. No time threshold is asserted."""

from __future__ import annotations

import json
import math

import pytest

from nnunetv2_confkd import benchmark
from nnunetv2_confkd.provenance import busy_warning

TRAINERS = ["nnUNetTrainer", "nnUNetTrainerConfKD"]
METADATA_KEYS = {
    "date_utc", "git_commit", "python", "torch", "nnunetv2", "device", "device_name", "cpu_model", "cuda", "cudnn",
    "torch_threads", "plans_patch_size", "plans_batch_size", "patch_size", "batch_size", "trainers", "steps",
    "repeats", "warmup", "command", "scheme", "load_average_before", "load_average_after",
}
RESULT_KEYS = {"trainer", "median_step_s", "iqr_step_s", "repeat_medians_s", "step_times_s", "peak_memory_mb",
               "peak_memory_mb_per_repeat", "memory_measure", "absolute_peak_rss_mb"}


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_interleaved_order_alternates():
    assert benchmark.interleaved_order(["A", "B"], 3) == [(0, "A"), (0, "B"), (1, "B"), (1, "A"), (2, "A"), (2, "B")]


@pytest.mark.parametrize(("load", "cores", "busy"), [([1.1, 0.5, 0.2], 2, True), ([1.0, 3.0, 3.0], 2, False),
                                                    ([0.0, 0.0, 0.0], 16, False), (None, 2, False),
                                                    ([9.0], None, False)])
def test_busy_machine_is_warned_about_before_timing(load, cores, busy):
    warning = busy_warning(load, cores)
    assert (warning is not None) == busy
    if busy:
        assert f"{load[0]:.1f}" in warning and f"{cores} cores" in warning


@pytest.mark.parametrize(("time", "memory", "met"), [(1.25, 1.30, (True, True)), (1.26, 1.31, (False, False))])
def test_ratios_against_targets(time, memory, met):
    results = [{"trainer": "nnUNetTrainer", "median_step_s": 2.0, "peak_memory_mb": 100.0},
               {"trainer": "X", "median_step_s": 2.0 * time, "peak_memory_mb": 100.0 * memory}]
    ratios = benchmark.compute_ratios(results)
    assert ratios["baseline"] == "nnUNetTrainer"
    assert ratios["nnUNetTrainer"]["time"] == ratios["nnUNetTrainer"]["memory"] == 1.0
    assert ratios["X"]["time"] == pytest.approx(time) and ratios["X"]["memory"] == pytest.approx(memory)
    assert (ratios["X"]["time_met"], ratios["X"]["memory_met"]) == met


def test_cpu_smoke_json_schema(tmp_path, capsys):
    out = tmp_path / "cost.json"
    benchmark.main(["--workdir", str(tmp_path / "work"), "--device", "cpu", "--steps", "2", "--repeats", "2",
                    "--warmup", "1", "--batch-size", "2", "--patch-size", "32", "32", "--out", str(out),
                    # one thread: on a CPU shared with other jobs, oversubscribed OpenMP threads slow steps many-fold
                    "--threads", "1"])
    report = json.loads(out.read_text())
    assert set(report) == {"metadata", "results", "ratios"}
    meta = report["metadata"]
    assert METADATA_KEYS <= set(meta)
    assert meta["trainers"] == TRAINERS and meta["device"] == "cpu"
    assert (meta["batch_size"], meta["patch_size"]) == (2, [32, 32])
    assert (meta["steps"], meta["repeats"], meta["warmup"]) == (2, 2, 1)
    assert isinstance(meta["device_name"], str) and meta["device_name"]
    assert meta["torch_threads"] == 1
    assert [r["trainer"] for r in report["results"]] == TRAINERS
    for r in report["results"]:
        assert RESULT_KEYS <= set(r)
        assert _positive(r["median_step_s"]) and _positive(r["peak_memory_mb"])
        assert isinstance(r["iqr_step_s"], float) and r["iqr_step_s"] >= 0
        assert len(r["repeat_medians_s"]) == 2 and all(_positive(x) for x in r["repeat_medians_s"])
        assert [len(s) for s in r["step_times_s"]] == [2, 2]
        assert r["memory_measure"] in ("cpu_peak_rss_increase", "cpu_ru_maxrss_increase")
    ratios = report["ratios"]
    assert ratios["baseline"] == "nnUNetTrainer"
    assert ratios["nnUNetTrainer"]["time"] == 1.0 and ratios["nnUNetTrainer"]["memory"] == 1.0
    assert _positive(ratios["nnUNetTrainerConfKD"]["time"]) and _positive(ratios["nnUNetTrainerConfKD"]["memory"])
    assert isinstance(ratios["nnUNetTrainerConfKD"]["time_met"], bool)
    assert "| nnUNetTrainerConfKD |" in capsys.readouterr().out
