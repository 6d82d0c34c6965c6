"""``confkd_benchmark_cost`` (study/benchmark_cost.py, cost_workers.py, cost_report.py): the JSON schema of a tiny CPU
run, the flags, and the pure helpers. No time threshold is asserted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nnunetv2_confkd.study import benchmark_cost
from nnunetv2_confkd.study.cost_report import compute_ratios
from nnunetv2_confkd.study.cost_workers import interleaved_order, worker_command
from nnunetv2_confkd.study.provenance import busy_warning

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
    assert interleaved_order(["A", "B"], 3) == [(0, "A"), (0, "B"), (1, "B"), (1, "A"), (2, "A"), (2, "B")]


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
    ratios = compute_ratios(results)
    assert ratios["baseline"] == "nnUNetTrainer"
    assert ratios["nnUNetTrainer"]["time"] == ratios["nnUNetTrainer"]["memory"] == 1.0
    assert ratios["X"]["time"] == pytest.approx(time) and ratios["X"]["memory"] == pytest.approx(memory)
    assert (ratios["X"]["time_met"], ratios["X"]["memory_met"]) == met


@pytest.mark.slow
def test_cpu_smoke_json_schema(tmp_path, capsys):
    out = tmp_path / "cost.json"
    benchmark_cost.main(["--workdir", str(tmp_path / "work"), "-device", "cpu", "--steps", "2", "--repeats", "2",
                         "--warmup", "1", "--batch-size", "2", "--patch-size", "32", "32", "-o", str(out),
                         # one thread: on a CPU shared with other jobs, oversubscribed OpenMP threads slow steps
                         # many-fold
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
    # the command names the report's folder as "." and the work folder relative to it
    assert meta["command"] == ("confkd_benchmark_cost --workdir work -device cpu --steps 2 --repeats 2 --warmup 1 "
                               "--batch-size 2 --patch-size 32 32 -o cost.json --threads 1")
    assert str(tmp_path) not in out.read_text()
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


def test_flags_follow_nnunet_with_the_long_forms_as_aliases(monkeypatch):
    short = benchmark_cost.parse_args(["-d", "992", "-c", "3d_fullres", "-tr", "A", "B", "A", "-device", "cpu",
                                       "-o", "r.json", "-np", "4"])
    long = benchmark_cost.parse_args(["--dataset-id", "992", "--config", "3d_fullres", "--trainers", "A", "B",
                                      "--device", "cpu", "--out", "r.json", "-np", "4"])
    for args in (short, long):
        assert (args.dataset_id, args.config, args.trainers, args.device, args.out, args.np) == (
            992, "3d_fullres", ["A", "B"], "cpu", Path("r.json"), 4)
    import torch

    for available, device in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda available=available: available)
        assert benchmark_cost.parse_args([]).device == device


def test_worker_command_is_parsed_back_by_the_worker():
    args = benchmark_cost.parse_args(["-c", "2d", "-device", "cpu", "--steps", "3", "--warmup", "1",
                                      "--batch-size", "2", "--patch-size", "32", "48", "--threads", "1"])
    cmd = worker_command(args, "nnUNetTrainerConfKD", Path("/pre/D"), Path("/w/r.json"))
    assert cmd[1:3] == ["-m", "nnunetv2_confkd.study.benchmark_cost"]
    worker = benchmark_cost.parse_args(cmd[3:])
    assert (worker.worker_trainer, worker.worker_preprocessed, worker.worker_out) == (
        "nnUNetTrainerConfKD", "/pre/D", "/w/r.json")
    assert (worker.config, worker.device, worker.steps, worker.warmup, worker.seed) == ("2d", "cpu", 3, 1, args.seed)
    assert (worker.batch_size, worker.patch_size, worker.threads) == (2, [32, 48], 1)
