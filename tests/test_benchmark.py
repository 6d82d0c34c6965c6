"""``confkd_benchmark_cost`` (study/benchmark_cost.py, cost_workers.py, cost_report.py): the JSON schema of a tiny CPU
run on the synthetic default dataset, the flags, the ratios and the Markdown tables of a fixed report. No time
threshold is asserted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.study import benchmark_cost
from nnunetv2_confkd.study.cost_profile import COLUMNS, PARTS
from nnunetv2_confkd.study.cost_report import compute_ratios, format_table, ratio_lines
from nnunetv2_confkd.study.cost_workers import (
    cases_per_step,
    interleaved_order,
    same_rows_baselines,
    split_spec,
    worker_command,
)
from nnunetv2_confkd.study.provenance import busy_warning

TRAINERS = ["nnUNetTrainer", "nnUNetTrainerConfKD"]
METADATA_KEYS = {
    "date_utc", "git_commit", "python", "torch", "nnunetv2", "device", "device_name", "cpu_model", "cuda", "cudnn",
    "torch_threads", "plans_patch_size", "plans_batch_size", "patch_size", "batch_size", "trainers", "steps",
    "repeats", "warmup", "command", "scheme", "load_average_before", "load_average_after", "dataset", "dataset_id",
    "synthetic", "plans", "config", "profile_steps",
}
RESULT_KEYS = {"trainer", "median_step_s", "iqr_step_s", "repeat_medians_s", "step_times_s", "peak_memory_mb",
               "peak_memory_mb_per_repeat", "memory_measure", "absolute_peak_rss_mb", "cases_per_step",
               "full_per_step", "composition", "iterations_per_epoch", "profile"}
RATIO_KEYS = {"time", "epoch", "per_case", "memory", "vs_strong_only", "same_rows_baseline", "same_rows",
              "memory_same_rows", "epoch_met", "memory_met"}


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def check_profile(profile: dict, confkd: bool, repeats: int, profile_steps: int = 1) -> None:
    """The profile of one trainer: median ms of every column and part, ``None`` exactly where the trainer has no such
    part."""
    assert set(profile) == {"median_ms", "profiled_batches", "loaded_batches"}
    assert profile["profiled_batches"] == repeats * profile_steps
    ms = profile["median_ms"]
    assert set(ms) == set(COLUMNS) | set(PARTS)
    absent = set() if confkd else {"teacher_decoder", "seeds", "weak", "kd", "ent"}
    assert {k for k, v in ms.items() if v is None} == absent
    assert all(_positive(ms[k]) for k in set(PARTS) - absent) and _positive(ms["load"]) and _positive(ms["step"])
    assert isinstance(ms["other"], float)


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


@pytest.mark.parametrize(("epoch", "memory", "met"), [(1.30, 1.30, (True, True)), (1.31, 1.31, (False, False))])
def test_ratios_against_targets(epoch, memory, met):
    results = [{"trainer": "nnUNetTrainer", "median_step_s": 2.0, "peak_memory_mb": 100.0},
               {"trainer": "X", "median_step_s": 2.0 * epoch, "peak_memory_mb": 100.0 * memory}]
    ratios = compute_ratios(results)
    assert ratios["baseline"] == "nnUNetTrainer" and ratios["targets"] == {"epoch": 1.30, "memory": 1.30}
    assert ratios["nnUNetTrainer"]["time"] == ratios["nnUNetTrainer"]["memory"] == 1.0
    assert ratios["X"]["epoch"] == pytest.approx(epoch) and ratios["X"]["memory"] == pytest.approx(memory)
    assert (ratios["X"]["epoch_met"], ratios["X"]["memory_met"]) == met
    assert ratios["X"]["vs_strong_only"] is None


def test_epoch_and_per_case_ratios_count_iterations_and_cases():
    results = [{"trainer": "nnUNetTrainer", "median_step_s": 1.0, "peak_memory_mb": 1.0, "cases_per_step": 8,
                "iterations_per_epoch": 250},
               {"trainer": "nnUNetTrainerStrongOnly", "median_step_s": 0.8, "peak_memory_mb": 1.0,
                "cases_per_step": 8, "iterations_per_epoch": 250},
               {"trainer": "add", "median_step_s": 1.6, "peak_memory_mb": 1.0, "cases_per_step": 16,
                "iterations_per_epoch": 250},
               {"trainer": "short", "median_step_s": 1.2, "peak_memory_mb": 1.0, "cases_per_step": 8,
                "iterations_per_epoch": 125}]
    ratios = compute_ratios(results)
    assert set(ratios["add"]) == RATIO_KEYS
    assert ratios["add"]["time"] == ratios["add"]["epoch"] == pytest.approx(1.6)
    assert ratios["add"]["per_case"] == pytest.approx(0.8) and ratios["add"]["vs_strong_only"] == pytest.approx(2.0)
    assert ratios["short"]["time"] == pytest.approx(1.2) and ratios["short"]["epoch"] == pytest.approx(0.6)
    # no stock run on 16 cases per step: the add composition is judged against the plan's batch
    assert ratios["add"]["same_rows_baseline"] is None and ratios["add"]["same_rows"] is None
    assert (ratios["add"]["epoch_met"], ratios["short"]["epoch_met"]) == (False, True)


def test_same_rows_ratios_compare_with_stock_nnunet_on_as_many_cases_per_step():
    results = [{"trainer": "nnUNetTrainer", "median_step_s": 1.0, "peak_memory_mb": 100.0, "cases_per_step": 8},
               {"trainer": "add", "median_step_s": 2.5, "peak_memory_mb": 250.0, "cases_per_step": 16},
               {"trainer": "replace", "median_step_s": 1.31, "peak_memory_mb": 120.0, "cases_per_step": 8},
               {"trainer": "nnUNetTrainer@16", "median_step_s": 2.0, "peak_memory_mb": 180.0, "cases_per_step": 16}]
    ratios = compute_ratios(results)
    assert ratios["add"]["same_rows_baseline"] == "nnUNetTrainer@16"
    assert ratios["add"]["same_rows"] == pytest.approx(1.25) and ratios["add"]["epoch"] == pytest.approx(2.5)
    assert ratios["add"]["memory_same_rows"] == pytest.approx(250 / 180)
    assert (ratios["add"]["epoch_met"], ratios["add"]["memory_met"]) == (True, False)
    assert ratios["replace"]["same_rows_baseline"] == "nnUNetTrainer"
    assert ratios["replace"]["same_rows"] == pytest.approx(1.31) and ratios["replace"]["epoch_met"] is False


def test_same_rows_baselines_follow_each_composition():
    trainers = ["nnUNetTrainer", "nnUNetTrainerStrongOnly", "nnUNetTrainerConfKD", "nnUNetTrainerConfKD_replaceHalf"]
    assert cases_per_step("nnUNetTrainerConfKD", 8) == 16 and cases_per_step("nnUNetTrainerConfKD_replaceHalf", 8) == 8
    assert cases_per_step("nnUNetTrainer@12", 8) == 12 and cases_per_step("nnUNetTrainerConfKD@4", 8) == 8
    assert same_rows_baselines(trainers, 8, "nnUNetTrainer") == ["nnUNetTrainer@16"]
    assert same_rows_baselines([*trainers, "nnUNetTrainer@16"], 8, "nnUNetTrainer") == []
    assert same_rows_baselines(trainers[1:2], 8, "nnUNetTrainer") == []


@pytest.mark.parametrize("spec", ["nnUNetTrainer@", "nnUNetTrainer@0", "nnUNetTrainer@x"])
def test_a_bad_batch_size_in_a_trainer_name_is_refused(spec):
    with pytest.raises(ConfKDInputError, match="positive integer"):
        split_spec(spec)


def test_worker_command_takes_the_batch_size_of_the_trainer_name():
    args = benchmark_cost.parse_args(["-device", "cpu", "--batch-size", "8"])
    command = worker_command(args, "nnUNetTrainer@16", Path("pre"), Path("out.json"))
    assert command[command.index("--worker-trainer") + 1] == "nnUNetTrainer"
    assert command[command.index("--batch-size") + 1] == "16"
    command = worker_command(args, "nnUNetTrainerConfKD", Path("pre"), Path("out.json"))
    assert command[command.index("--batch-size") + 1] == "8"


FIXED_REPORT = {
    "metadata": {"device_name": "AMD EPYC", "device": "cpu", "dataset": "Dataset502_ACDC", "config": "2d_cpu",
                 "batch_size": 8, "patch_size": [128, 112], "repeats": 3, "steps": 5, "warmup": 2},
    "results": [
        {"trainer": "nnUNetTrainer", "cases_per_step": 8, "full_per_step": None, "composition": "stock",
         "iterations_per_epoch": 250, "median_step_s": 1.0, "iqr_step_s": 0.05, "peak_memory_mb": 400.0,
         "memory_measure": "cpu_peak_rss_increase"},
        {"trainer": "nnUNetTrainerStrongOnly", "cases_per_step": 8, "full_per_step": 8, "composition": "replace 1",
         "iterations_per_epoch": 250, "median_step_s": 1.02, "iqr_step_s": 0.04, "peak_memory_mb": 404.0,
         "memory_measure": "cpu_peak_rss_increase"},
        {"trainer": "nnUNetTrainerConfKD", "cases_per_step": 16, "full_per_step": 8, "composition": "add 1",
         "iterations_per_epoch": 250, "median_step_s": 2.55, "iqr_step_s": 0.1, "peak_memory_mb": 900.0,
         "memory_measure": "cpu_peak_rss_increase"},
        {"trainer": "nnUNetTrainerConfKD_replaceHalf", "cases_per_step": 8, "full_per_step": 4,
         "composition": "replace 0.5", "iterations_per_epoch": 250, "median_step_s": 1.3, "iqr_step_s": 0.06,
         "peak_memory_mb": 500.0, "memory_measure": "cpu_peak_rss_increase"},
        {"trainer": "nnUNetTrainer@16", "cases_per_step": 16, "full_per_step": None, "composition": "stock",
         "iterations_per_epoch": 250, "median_step_s": 1.9, "iqr_step_s": 0.05, "peak_memory_mb": 780.0,
         "memory_measure": "cpu_peak_rss_increase"}]}


def test_markdown_table_and_ratio_lines_of_a_fixed_report():
    report = {**FIXED_REPORT, "ratios": compute_ratios(FIXED_REPORT["results"])}
    assert format_table(report).splitlines() == [
        "| trainer | cases/step (full) | median step (s) | IQR (s) | peak memory (MB) | step ratio | epoch ratio | "
        "same rows | epoch ratio, same rows (<= 1.3) | met | memory ratio, same rows (<= 1.3) | met |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---|",
        "| nnUNetTrainer | 8 | 1.0000 | 0.0500 | 400.0 | 1.000 | 1.000 | nnUNetTrainer | 1.000 | yes | 1.000 | yes |",
        "| nnUNetTrainerStrongOnly | 8 (8) | 1.0200 | 0.0400 | 404.0 | 1.020 | 1.020 | nnUNetTrainer | 1.020 | yes | "
        "1.010 | yes |",
        "| nnUNetTrainerConfKD | 16 (8) | 2.5500 | 0.1000 | 900.0 | 2.550 | 2.550 | nnUNetTrainer@16 | 1.342 | **no** "
        "| 1.154 | yes |",
        "| nnUNetTrainerConfKD_replaceHalf | 8 (4) | 1.3000 | 0.0600 | 500.0 | 1.300 | 1.300 | nnUNetTrainer | 1.300 | "
        "yes | 1.250 | yes |",
        "| nnUNetTrainer@16 | 16 | 1.9000 | 0.0500 | 780.0 | 1.900 | 1.900 | nnUNetTrainer@16 | 1.000 | yes | 1.000 "
        "| yes |",
        "",
        "baseline nnUNetTrainer; Dataset502_ACDC 2d_cpu, plans batch 8, patch [128, 112]; AMD EPYC (cpu), 3 x 5 "
        "steps (+2 warm-up); memory: cpu_peak_rss_increase"]
    assert ratio_lines(report).splitlines() == [
        "nnUNetTrainerStrongOnly (replace 1, 8 cases/step): epoch 1.020 x nnUNetTrainer: meets the 1.3 target",
        "nnUNetTrainerConfKD (add 1, 16 cases/step): epoch 2.550 x nnUNetTrainer, 2.500 x nnUNetTrainerStrongOnly; "
        "same rows 1.342 x nnUNetTrainer@16: misses the 1.3 target",
        "nnUNetTrainerConfKD_replaceHalf (replace 0.5, 8 cases/step): epoch 1.300 x nnUNetTrainer, 1.275 x "
        "nnUNetTrainerStrongOnly: meets the 1.3 target"]


@pytest.mark.slow
def test_cpu_smoke_json_schema(tmp_path, capsys):
    out = tmp_path / "cost.json"
    benchmark_cost.main(["-o", str(tmp_path / "work"), "-device", "cpu", "--steps", "2", "--repeats", "2",
                         "--warmup", "1", "--batch-size", "2", "--patch-size", "32", "32", "--json", str(out),
                         # one thread: on a CPU shared with other jobs, oversubscribed OpenMP threads slow steps
                         # many-fold
                         "--threads", "1", "--profile-steps", "1"])
    report = json.loads(out.read_text())
    assert set(report) == {"metadata", "results", "ratios"}
    meta = report["metadata"]
    assert METADATA_KEYS <= set(meta)
    # stock nnU-Net on the 4 cases of an "add" step of a batch-2 plan is added as the same-rows reference
    assert meta["trainers"] == [*TRAINERS, "nnUNetTrainer@4"] and meta["device"] == "cpu"
    assert (meta["batch_size"], meta["patch_size"]) == (2, [32, 32])
    assert (meta["steps"], meta["repeats"], meta["warmup"]) == (2, 2, 1)
    assert isinstance(meta["device_name"], str) and meta["device_name"]
    assert meta["torch_threads"] == 1
    # the command names the report's folder as "." and the work folder relative to it
    assert meta["command"] == ("confkd_benchmark_cost -o work -device cpu --steps 2 --repeats 2 --warmup 1 "
                               "--batch-size 2 --patch-size 32 32 --json cost.json --threads 1 --profile-steps 1")
    assert (meta["dataset"], meta["synthetic"], meta["plans"], meta["config"]) == (
        "Dataset991_ConfKDSynthetic", True, "nnUNetPlans", "2d")
    assert str(tmp_path) not in out.read_text()
    assert [r["trainer"] for r in report["results"]] == [*TRAINERS, "nnUNetTrainer@4"]
    for r in report["results"]:
        assert RESULT_KEYS <= set(r)
        assert _positive(r["median_step_s"]) and _positive(r["peak_memory_mb"])
        assert isinstance(r["iqr_step_s"], float) and r["iqr_step_s"] >= 0
        assert len(r["repeat_medians_s"]) == 2 and all(_positive(x) for x in r["repeat_medians_s"])
        assert [len(s) for s in r["step_times_s"]] == [2, 2]
        assert r["memory_measure"] in ("cpu_peak_rss_increase", "cpu_ru_maxrss_increase")
        assert r["iterations_per_epoch"] == 250
        check_profile(r["profile"], confkd=r["trainer"] == "nnUNetTrainerConfKD", repeats=2)
    # each trainer is timed on its own loader's batches: ConfKD's "add" composition doubles the plan's batch
    assert [(r["cases_per_step"], r["full_per_step"], r["composition"]) for r in report["results"]] == [
        (2, None, "stock"), (4, 2, "add 1"), (4, None, "stock")]
    ratios = report["ratios"]
    assert ratios["baseline"] == "nnUNetTrainer"
    assert ratios["nnUNetTrainer"]["time"] == 1.0 and ratios["nnUNetTrainer"]["memory"] == 1.0
    assert _positive(ratios["nnUNetTrainerConfKD"]["time"]) and _positive(ratios["nnUNetTrainerConfKD"]["memory"])
    assert isinstance(ratios["nnUNetTrainerConfKD"]["epoch_met"], bool)
    assert ratios["nnUNetTrainerConfKD"]["same_rows_baseline"] == "nnUNetTrainer@4"
    assert _positive(ratios["nnUNetTrainerConfKD"]["same_rows"])
    printed = capsys.readouterr().out
    assert "| nnUNetTrainerConfKD | 4 (2) |" in printed
    assert "nnUNetTrainerConfKD (add 1, 4 cases/step): epoch " in printed and "same rows" in printed
    assert "| trainer | cases/step | load | step | encoder | decoder | teacher decoder |" in printed


def test_flags_follow_nnunet_with_the_long_forms_as_aliases(monkeypatch):
    short = benchmark_cost.parse_args(["-d", "992", "-c", "3d_fullres", "-p", "P", "-tr", "A", "B", "A", "-device",
                                       "cpu", "-o", "work", "-np", "4"])
    long = benchmark_cost.parse_args(["--dataset-id", "992", "--config", "3d_fullres", "--plans", "P", "--trainers",
                                      "A", "B", "--device", "cpu", "--out", "work", "-np", "4"])
    older = benchmark_cost.parse_args(["--dataset", "992", "-c", "3d_fullres", "-p", "P", "-tr", "A", "B",
                                       "-device", "cpu", "--workdir", "work", "-np", "4"])
    for args in (short, long, older):
        assert (args.dataset, args.config, args.plans, args.trainers, args.device, args.workdir, args.np) == (
            "992", "3d_fullres", "P", ["A", "B"], "cpu", Path("work"), 4)
        assert args.json is None and not args.synthetic
    import torch

    for available, device in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda available=available: available)
        assert benchmark_cost.parse_args([]).device == device


def test_worker_command_is_parsed_back_by_the_worker():
    args = benchmark_cost.parse_args(["-c", "2d", "-p", "P", "-device", "cpu", "--steps", "3", "--warmup", "1",
                                      "--batch-size", "2", "--patch-size", "32", "48", "--threads", "1",
                                      "--profile-steps", "4"])
    cmd = worker_command(args, "nnUNetTrainerConfKD", Path("/pre/D"), Path("/w/r.json"))
    assert cmd[1:3] == ["-m", "nnunetv2_confkd.study.benchmark_cost"]
    worker = benchmark_cost.parse_args(cmd[3:])
    assert (worker.worker_trainer, worker.worker_preprocessed, worker.worker_out) == (
        "nnUNetTrainerConfKD", "/pre/D", "/w/r.json")
    assert (worker.config, worker.device, worker.steps, worker.warmup, worker.seed) == ("2d", "cpu", 3, 1, args.seed)
    assert (worker.batch_size, worker.patch_size, worker.threads) == (2, [32, 48], 1)
    assert (worker.plans, worker.profile_steps) == ("P", 4)
