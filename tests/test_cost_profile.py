"""Where a step's time goes (study/cost_profile.py): the summary of the workers' part timings, the Markdown table of a
fixed report, and the profile of a smoke-sized run on a real preprocessed dataset (the planned synthetic dataset 990,
through ``-d``) with both ConfKD batch compositions beside stock nnU-Net and the strong-only baseline."""

from __future__ import annotations

import json

import pytest

from nnunetv2_confkd.study import benchmark_cost
from nnunetv2_confkd.study.cost_profile import COLUMNS, PARTS, format_profile_table, summarize_profile

STOCK_ABSENT = {"teacher_decoder", "seeds", "weak", "kd", "ent"}


def _worker(step_s: list[float], load_s: list[float], part_s: dict) -> dict:
    return {"step_times_s": step_s, "load_times_s": load_s, "profile_s": part_s}


def test_the_summary_pools_every_profiled_batch_of_every_repeat():
    parts = {p: None for p in PARTS}
    first = {**parts, "prepare": [0.001, 0.003], "encoder": [0.010, 0.030], "decoder": [0.020, 0.020],
             "sup": [0.002, 0.004], "optimizer": [0.005, 0.005]}
    second = {**parts, "prepare": [0.002, 0.002], "encoder": [0.020, 0.020], "decoder": [0.010, 0.030],
              "sup": [0.003, 0.003], "optimizer": [0.007, 0.003]}
    summary = summarize_profile([_worker([0.05, 0.07], [0.2, 0.4, 0.3], first),
                                 _worker([0.06, 0.08], [0.1, 0.5, 0.6], second)])
    assert (summary["profiled_batches"], summary["loaded_batches"]) == (4, 6)
    ms = summary["median_ms"]
    assert {k for k, v in ms.items() if v is None} == STOCK_ABSENT
    expected = {"load": 350.0, "step": 65.0, "prepare": 2.0, "encoder": 20.0, "decoder": 20.0, "sup": 3.0,
                "optimizer": 5.0, "other": 15.0}
    assert {k: v for k, v in ms.items() if v is not None} == pytest.approx(expected)


def test_markdown_table_of_a_fixed_report():
    stock = {"load": 310.25, "step": 1000.0, "prepare": 3.0, "encoder": 400.0, "decoder": 450.0,
             "teacher_decoder": None, "seeds": None, "sup": 20.0, "weak": None, "kd": None, "ent": None,
             "optimizer": 60.0, "other": 67.0}
    confkd = {"load": 640.0, "step": 2550.0, "prepare": 6.5, "encoder": 800.0, "decoder": 900.0,
              "teacher_decoder": 450.0, "seeds": 12.34, "sup": 20.0, "weak": 10.0, "kd": 8.0, "ent": 7.0,
              "optimizer": 100.0, "other": 236.16}
    report = {"results": [{"trainer": "nnUNetTrainer", "cases_per_step": 8, "profile": {"median_ms": stock}},
                          {"trainer": "nnUNetTrainerConfKD", "cases_per_step": 16, "profile": {"median_ms": confkd}},
                          {"trainer": "unprofiled", "cases_per_step": 8, "profile": None}]}
    assert format_profile_table(report).splitlines() == [
        "| trainer | cases/step | load | step | encoder | decoder | teacher decoder | seeds | sup | weak | kd | ent "
        "| optimizer | other |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| nnUNetTrainer | 8 | 310.2 | 1000.0 | 400.0 | 450.0 | – | – | 20.0 | – | – | – | 60.0 | 67.0 |",
        "| nnUNetTrainerConfKD | 16 | 640.0 | 2550.0 | 800.0 | 900.0 | 450.0 | 12.3 | 20.0 | 10.0 | 8.0 | 7.0 "
        "| 100.0 | 236.2 |"]


@pytest.mark.slow
def test_profile_json_of_a_smoke_run_on_a_preprocessed_dataset(planned_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_preprocessed", str(planned_dataset.preprocessed.parent))
    trainers = ["nnUNetTrainer", "nnUNetTrainerStrongOnly", "nnUNetTrainerConfKD", "nnUNetTrainerConfKD_replaceHalf"]
    before = sorted(p.name for p in planned_dataset.preprocessed.iterdir())
    benchmark_cost.main(["-d", "990", "-c", "2d", "-tr", *trainers, "-device", "cpu", "-o", str(tmp_path / "w"),
                         "--steps", "1", "--repeats", "1", "--warmup", "0", "--profile-steps", "2",
                         "--batch-size", "2", "--patch-size", "32", "32", "--threads", "1", "--no-same-rows"])
    report = json.loads((tmp_path / "w" / "cost.json").read_text())
    meta = report["metadata"]
    assert (meta["dataset"], meta["synthetic"], meta["config"], meta["profile_steps"]) == (
        "Dataset990_ConfKDSynthetic", False, "2d", 2)
    assert [(r["trainer"], r["cases_per_step"], r["composition"]) for r in report["results"]] == [
        ("nnUNetTrainer", 2, "stock"), ("nnUNetTrainerStrongOnly", 2, "replace 1"),
        ("nnUNetTrainerConfKD", 4, "add 1"), ("nnUNetTrainerConfKD_replaceHalf", 2, "replace 0.5")]
    for r in report["results"]:
        profile = r["profile"]
        assert (profile["profiled_batches"], profile["loaded_batches"]) == (2, 3)
        ms = profile["median_ms"]
        assert set(ms) == set(COLUMNS) | set(PARTS)
        absent = set() if "ConfKD" in r["trainer"] else STOCK_ABSENT
        assert {k for k, v in ms.items() if v is None} == absent
        assert all(isinstance(v, float) and v > 0 for k, v in ms.items() if k != "other" and v is not None)
        assert ms["other"] == pytest.approx(ms["step"] - sum(ms[p] for p in PARTS if ms[p] is not None))
    assert sorted(p.name for p in planned_dataset.preprocessed.iterdir()) == before  # only read
    printed = capsys.readouterr().out
    assert "| nnUNetTrainerConfKD_replaceHalf | 2 |" in printed and "teacher decoder" in printed
