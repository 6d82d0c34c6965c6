"""``confkd_benchmark`` (study/benchmark.py, runs.py, runner.py, records.py, report.py, presets.py): the runner end to
end on a small synthetic dataset with the ``smoke`` preset, resumability, pre-flight errors, portable recorded commands,
the flags, and the report's arithmetic on constructed records."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import nnunet_env
from nnunetv2_confkd_conversion.synthetic import SyntheticSpec, make_synthetic_dataset

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.study.benchmark import main as benchmark_main
from nnunetv2_confkd.study.benchmark import parse_args, recorded_command
from nnunetv2_confkd.study.presets import PRESETS, ensure_configuration, reduced_configuration
from nnunetv2_confkd.study.records import aggregate, inference_ratio, preset_check, run_provenance
from nnunetv2_confkd.study.runner import Runner
from nnunetv2_confkd.study.runs import Run, plan_runs, resolve_dataset

DATASET = "Dataset991_ConfKDSynthetic"
TRAINERS = ("nnUNetTrainerStrongOnly", "nnUNetTrainerConfKD", "nnUNetTrainer")


def benchmark(env: dict, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = ["confkd_benchmark", "-d", "991", "-tr", *TRAINERS, "--seeds", "0", "--preset", "smoke", "-device", "cpu",
           "-o", str(out), "-np", "1", "--nsd-tolerance", "3", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    env = nnunet_env(root)
    make_synthetic_dataset(Path(env["nnUNet_raw"]), 991, SyntheticSpec(n_full=3, n_weak=6, n_unlabeled=2, n_test=3),
                           Path(env["nnUNet_preprocessed"]))
    out = root / "out"
    proc = benchmark(env, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env, out, proc


def records(out: Path) -> dict[tuple[str, str], dict]:
    return {(p.parent.parent.name, p.stem): json.loads(p.read_text()) for p in (out / "runs" / DATASET).rglob("*.json")}


@pytest.mark.slow
def test_study_plans_the_reduced_configuration_and_preprocesses_it(study):
    env, out, _ = study
    plans = json.loads((Path(env["nnUNet_preprocessed"]) / DATASET / "nnUNetPlans.json").read_text())
    reduced = plans["configurations"]["2d_smoke"]
    assert reduced["inherits_from"] == "2d"
    assert reduced["spacing"] == [2 * s for s in plans["configurations"]["2d"]["spacing"]]
    assert reduced["batch_size"] == 2
    assert len(list((Path(env["nnUNet_preprocessed"]) / DATASET / "nnUNetPlans_2d_smoke").glob("*.pkl"))) == 11
    # models live in the study folder, one results root per seed, never in the user's nnUNet_results
    assert (out / "nnUNet_results" / "seed_0" / DATASET / "nnUNetTrainerConfKD_smoke__nnUNetPlans__2d_smoke" /
            "fold_all" / "checkpoint_final.pth").is_file()  # the default fold: nnU-Net's all
    assert not Path(env["nnUNet_results"]).exists()


@pytest.mark.slow
def test_every_run_is_evaluated_with_each_of_its_heads(study):
    _, out, _ = study
    recs = records(out)
    assert set(recs) == {("nnUNetTrainerStrongOnly_smoke", "nnunet"), ("nnUNetTrainer_confkdSmoke", "nnunet"),
                         ("nnUNetTrainerConfKD_smoke", "student"), ("nnUNetTrainerConfKD_smoke", "teacher")}
    for rec in recs.values():
        assert rec["n_test_cases"] == 3 and rec["preset"] == "smoke" and rec["configuration"] == "2d_smoke"
        assert rec["training"] == "from scratch" and rec["train_seconds"] > 0
        assert len(rec["metrics"]) == 3 * 3  # volumes x classes
    for head in ("student", "teacher"):
        assert len(list((out / "predictions" / DATASET / "nnUNetTrainerConfKD_smoke" / "seed_0" / head)
                        .glob("*.nii.gz"))) == 3


def _dice_by_hand(reference: np.ndarray, prediction: np.ndarray, label: int) -> tuple[float, int, int]:
    """Dice 2|A∩B| / (|A| + |B|) of one label (1 when both masks are empty), with the two voxel counts."""
    ref, pred = reference == label, prediction == label
    n_ref, n_pred = int(np.count_nonzero(ref)), int(np.count_nonzero(pred))
    overlap = int(np.count_nonzero(ref & pred))
    return (1.0 if n_ref + n_pred == 0 else 2.0 * overlap / (n_ref + n_pred)), n_ref, n_pred


@pytest.mark.slow
def test_every_recorded_dice_equals_the_dice_of_the_written_prediction(study):
    """Each record's Dice and voxel counts, per volume and class, recomputed from its prediction and label files."""
    env, out, _ = study
    labels_ts = Path(env["nnUNet_raw"]) / DATASET / "labelsTs"
    checked = 0
    for (trainer, head), rec in records(out).items():
        pred_dir = out / "predictions" / DATASET / trainer / "seed_0" / head
        for m in rec["metrics"]:
            file = f"{m['case']}.nii.gz"
            reference = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_ts / file)))
            prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_dir / file)))
            dice, n_ref, n_pred = _dice_by_hand(reference, prediction, m["label"])
            assert m["dice"] == pytest.approx(dice, abs=1e-12), (trainer, head, m["case"], m["label"])
            assert (m["n_ref"], m["n_pred"]) == (n_ref, n_pred)
            checked += 1
    assert checked == 4 * 3 * 3  # records x volumes x classes


@pytest.mark.slow
def test_dice_of_the_records_equals_nnunets_evaluation(study):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    env, out, _ = study
    raw = Path(env["nnUNet_raw"]) / DATASET
    pred = out / "predictions" / DATASET / "nnUNetTrainerConfKD_smoke" / "seed_0" / "teacher"
    teacher = records(out)[("nnUNetTrainerConfKD_smoke", "teacher")]["metrics"]
    ours = {(m["case"], m["label"]): m["dice"] for m in teacher}
    compared = 0
    for ref in sorted((raw / "labelsTs").glob("*.nii.gz")):
        nnunet = compute_metrics(str(ref), str(pred / ref.name), SimpleITKIO(), [1, 2, 3])["metrics"]
        for label, values in nnunet.items():
            if not math.isnan(values["Dice"]):
                assert ours[(ref.name[: -len(".nii.gz")], label)] == pytest.approx(values["Dice"], abs=1e-6)
                compared += 1
    assert compared >= 6


@pytest.mark.slow
def test_report_files_hold_every_row(study):
    _, out, proc = study
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 3 * 3
    assert {r["head"] for r in rows} == {"nnunet", "student", "teacher"}
    report = json.loads((out / "results.json").read_text())
    meta = report["metadata"]
    assert meta["git_commit"] and meta["cpu_model"] and meta["versions"]["nnunetv2"]
    assert meta["command"].startswith("confkd_benchmark -d 991") and meta["presets"] == ["smoke"]
    # the study folder is recorded as ".", and no folder of this machine appears in what the study wrote
    assert " -o . " in meta["command"]
    for written in [out / "results.json", out / "results.md", *(out / "runs").rglob("*.json")]:
        assert str(out.parent) not in written.read_text(), written
    # every record says which command, commit and machine made it
    (made_by,) = meta["run_provenance"]
    assert made_by["command"] == meta["command"] and made_by["records"] == 4
    assert made_by["git_commit"] == meta["git_commit"] and made_by["cpu_model"] == meta["cpu_model"]
    assert report["inference_time"]["n_pairs"] == 1
    labels = {(r["label"], r["head"]) for r in report["rows"]}
    assert labels == {("strong-only", "nnunet"), ("nnU-Net + ignore label", "nnunet"),
                      ("ConfKD (KL+Ent)", "student"), ("ConfKD (KL+Ent)", "teacher")}
    md = (out / "results.md").read_text()
    assert md in proc.stdout
    for label, head in labels:
        assert f"| {label} | {head} |" in md
    for metric in ("dice", "hd95"):
        png = out / f"{metric}_{DATASET}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_a_second_call_skips_finished_runs(study):
    env, out, _ = study
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json")}
    proc = benchmark(env, out, "--time-inference", "2")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert proc.stdout.count("skipped (finished)") == 3
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json")} == before
    # the inference timing: stock nnU-Net and the ConfKD student predicted twice each, interleaved
    timing = json.loads((out / "inference_time.json").read_text())
    (pair,) = timing["pairs"]
    assert pair["stock"] == "nnUNetTrainer_confkdSmoke" and pair["confkd"] == "nnUNetTrainerConfKD_smoke"
    assert all(len(v) == 2 and min(v) > 0 for v in pair["seconds"].values())
    report = json.loads((out / "results.json").read_text())
    assert "--time-inference 2" in report["inference_time"]["source"]
    # the report's command is this call's; the records still name the call that made them
    assert "--time-inference" in report["metadata"]["command"]
    assert all("--time-inference" not in p["command"] for p in report["metadata"]["run_provenance"])
    assert not any((out / ".timing").iterdir())


@pytest.mark.slow
def test_an_interrupted_run_is_redone_and_never_half_counted(study):
    env, out, _ = study
    run_dir = out / "runs" / DATASET / "nnUNetTrainerConfKD_smoke" / "seed_0"
    student_mtime = (run_dir / "student.json").stat().st_mtime_ns
    (run_dir / "teacher.json").unlink()  # killed while predicting the teacher head:
    stale = out / "predictions" / DATASET / "nnUNetTrainerConfKD_smoke" / "seed_0" / "teacher.tmp"
    stale.mkdir()
    (stale / "half_written.nii.gz").write_bytes(b"junk")
    # and a strong-only training killed after its last checkpoint_latest
    model = "nnUNetTrainerStrongOnly_smoke__nnUNetPlans__2d_smoke"
    fold = out / "nnUNet_results" / "seed_0" / DATASET / model / "fold_all"
    shutil.move(fold / "checkpoint_final.pth", fold / "checkpoint_latest.pth")
    for rec in (out / "runs" / DATASET / "nnUNetTrainerStrongOnly_smoke" / "seed_0").glob("*.json"):
        rec.unlink()
    proc = benchmark(env, out)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "resuming from checkpoint_latest.pth" in proc.stdout
    assert "-tr nnUNetTrainerStrongOnly_smoke -p nnUNetPlans -device cpu --c" in (out / "benchmark.log").read_text()
    assert (fold / "checkpoint_final.pth").is_file()
    assert (run_dir / "teacher.json").is_file() and not stale.exists()
    assert (run_dir / "student.json").stat().st_mtime_ns == student_mtime
    assert len(records(out)) == 4
    strong_dir = out / "runs" / DATASET / "nnUNetTrainerStrongOnly_smoke" / "seed_0"
    strong = json.loads((strong_dir / "nnunet.json").read_text())
    assert strong["training"] == "resumed from checkpoint_latest.pth"
    assert json.loads((run_dir / "teacher.json").read_text())["training"] == "found finished"


@pytest.mark.slow
def test_bad_inputs_stop_before_any_training(study, tmp_path):
    env, _, _ = study
    raw = Path(env["nnUNet_raw"])
    with pytest.raises(ConfKDInputError, match="no matching"):
        resolve_dataset(raw, "123")
    proc = subprocess.run(["confkd_benchmark", "-d", "991", "-tr", "nnUNetTrainerNoSuchThing", "--preset", "smoke",
                           "-device", "cpu", "--out", str(tmp_path / "o")], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "nnUNetTrainerNoSuchThing_smoke" in proc.stderr
    assert not (tmp_path / "o" / "runs").exists()
    no_test = raw / "Dataset992_NoTest"
    shutil.copytree(raw / DATASET, no_test, ignore=shutil.ignore_patterns("labelsTs"))
    with pytest.raises(ConfKDInputError, match="labelsTs"):
        resolve_dataset(raw, "992")


@pytest.mark.slow
def test_a_differing_configuration_of_the_same_name_is_refused(study, tmp_path):
    env, _, _ = study
    plans = tmp_path / "nnUNetPlans.json"
    shutil.copy(Path(env["nnUNet_preprocessed"]) / DATASET / "nnUNetPlans.json", plans)
    assert ensure_configuration(plans, "2d", PRESETS["smoke"]) == "2d_smoke"  # identical entry: kept
    content = json.loads(plans.read_text())
    content["configurations"]["2d_smoke"]["batch_size"] = 5
    plans.write_text(json.dumps(content))
    with pytest.raises(ConfKDInputError, match="differs"):
        ensure_configuration(plans, "2d", PRESETS["smoke"])
    assert json.loads(plans.read_text())["configurations"]["2d_smoke"]["batch_size"] == 5


def test_cpu_preset_reduces_acdc_2d_to_3mm_and_patch_128x112():
    base = {"spacing": [1.5, 1.5], "patch_size": [256, 224], "median_image_size_in_voxels": [256.0, 216.0],
            "batch_size": 56, "architecture": {"network_class_name": "PlainConvUNet", "arch_kwargs": {
                "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 512, 512], "n_conv_per_stage": [2] * 6,
                "n_conv_per_stage_decoder": [2] * 5, "kernel_sizes": [[3, 3]] * 6, "strides": [[1, 1]] + [[2, 2]] * 5}}}
    cfg = reduced_configuration(base, "2d", PRESETS["cpu"])
    kw = cfg["architecture"]["arch_kwargs"]
    assert cfg["spacing"] == [3.0, 3.0] and cfg["patch_size"] == [128, 112] and cfg["batch_size"] == 8
    assert kw["features_per_stage"] == [16, 32, 64, 128, 128] and kw["n_stages"] == 5
    assert len(kw["strides"]) == len(kw["kernel_sizes"]) == 5 and len(kw["n_conv_per_stage_decoder"]) == 4
    assert PRESETS["cpu"].trainer("nnUNetTrainerConfKD_noKD") == "nnUNetTrainerConfKD_noKD_cpu"
    assert PRESETS["cpu"].trainer("nnUNetTrainer") == "nnUNetTrainer_confkdCPU"
    assert PRESETS["gpu"].trainer("nnUNetTrainerConfKD") == "nnUNetTrainerConfKD"
    assert PRESETS["gpu"].configuration("2d") == "2d"


def test_runs_are_ordered_seed_major_without_duplicates():
    runs = plan_runs(["A", "B"], ["m1", "m2"], [("F", "m1"), ("A", "m1")], [0, 1], PRESETS["gpu"])
    assert [r.key for r in runs[:5]] == ["A/m1/seed_0", "A/m2/seed_0", "B/m1/seed_0", "B/m2/seed_0", "F/m1/seed_0"]
    assert len(runs) == 10 and runs[5] == Run("A", "m1", "m1", 1)


def _record(method: str, seed: int, dice: list[float], supervision: dict, head: str = "nnunet",
            seconds: float = 1.0) -> dict:
    """A record of one run with one volume per entry of ``dice`` (label 1 only) and HD95 = 10 * (1 - Dice)."""
    return {"dataset": "D", "evaluation": "test", "fold": "0", "method": method, "trainer": method, "head": head,
            "seed": seed,
            "supervision": supervision, "n_test_cases": len(dice), "label_names": {"1": "LV"},
            "train_seconds": 1.0, "predict_seconds": seconds,
            "metrics": [{"case": f"c{i}", "label": 1, "dice": d, "hd95": 10 * (1 - d), "assd": 1.0, "nsd": d,
                         "n_ref": 5, "n_pred": 5} for i, d in enumerate(dice)]}


FULL = {"full": 10, "weak": 0, "unlabeled": 0}
MIXED = {"full": 2, "weak": 8, "unlabeled": 0}


def test_aggregate_takes_volume_means_then_statistics_over_seeds():
    add = {"batch_composition": "add 1"}
    rows = aggregate([{**_record("nnUNetTrainerConfKD", 0, [0.6, 0.8], MIXED, "student"), **add},
                      {**_record("nnUNetTrainerConfKD", 1, [0.8, 1.0], MIXED, "student"), **add}])
    (row,) = rows
    dice = row["mean"]["dice"]
    assert dice["seeds"] == pytest.approx([0.7, 0.9]) and dice["mean"] == pytest.approx(0.8)
    assert dice["std"] == pytest.approx(0.1)
    assert row["volume_dice_std"] == pytest.approx(np.std([0.6, 0.8, 0.8, 1.0]))
    assert row["per_class"]["1"]["hd95"]["mean"] == pytest.approx(2.0)
    assert row["label"] == "ConfKD (KL+Ent)"


def test_runs_of_another_batch_composition_are_never_pooled_with_todays():
    today = {**_record("nnUNetTrainerConfKD", 0, [0.8], MIXED, "student"), "batch_composition": "add 1"}
    older = _record("nnUNetTrainerConfKD", 0, [0.6], MIXED, "student")  # records without the field: "replace 0.5"
    replace = {**_record("nnUNetTrainerConfKD_replaceHalf", 0, [0.7], MIXED, "student"),
               "batch_composition": "replace 0.5"}
    strong = _record("nnUNetTrainerStrongOnly", 0, [0.5], MIXED)  # its composition never changed
    rows = {r["method"]: r for r in aggregate([today, older, replace, strong])}
    assert set(rows) == {"nnUNetTrainerConfKD", "nnUNetTrainerConfKD [replace 0.5]", "nnUNetTrainerConfKD_replaceHalf",
                         "nnUNetTrainerStrongOnly"}
    assert rows["nnUNetTrainerConfKD [replace 0.5]"]["label"] == "ConfKD (KL+Ent) [replace 0.5]"
    assert rows["nnUNetTrainerConfKD [replace 0.5]"]["mean"]["dice"]["mean"] == pytest.approx(0.6)
    assert rows["nnUNetTrainerConfKD"]["mean"]["dice"]["mean"] == pytest.approx(0.8)
    assert rows["nnUNetTrainerStrongOnly"]["label"] == "strong-only"


def test_csv_rows_name_the_method_they_count_for_and_the_split_of_their_fold(tmp_path):
    """Two compositions of one trainer class stay apart in ``results.csv`` as in the tables, and a cross-validation
    row says which split format its fold number refers to."""
    from nnunetv2_confkd.study.report import write_csv

    today = {**_record("nnUNetTrainerConfKD", 0, [0.8], MIXED, "student"), "batch_composition": "add 1"}
    older = _record("nnUNetTrainerConfKD", 0, [0.6], MIXED, "student")
    cv_old = {**_record("nnUNetTrainerStrongOnly", 0, [0.5], MIXED), "evaluation": "cv", "fold": "1"}
    cv_new = {**cv_old, "split": "v2", "fold": "0"}
    write_csv([today, older, cv_old, cv_new], tmp_path / "results.csv")
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["evaluation"], r["split"], r["fold"], float(r["dice"])) for r in rows] == [
        ("nnUNetTrainerConfKD", "test", "", "0", 0.8), ("nnUNetTrainerConfKD [replace 0.5]", "test", "", "0", 0.6),
        ("nnUNetTrainerStrongOnly", "cv", "v1", "1", 0.5), ("nnUNetTrainerStrongOnly", "cv", "v2", "0", 0.5)]
    assert not list(tmp_path.glob(".*"))  # written through a temporary name


def test_preset_check_needs_two_seeds_each_won_by_a_clear_margin():
    strong = [_record("nnUNetTrainerStrongOnly", s, [0.6], MIXED) for s in (0, 1)]
    good = [_record("nnUNetTrainer", s, [0.8], FULL) for s in (0, 1)]
    check = preset_check(strong + good)
    assert check["valid"] and check["mean_margin"] == pytest.approx(0.2)
    assert not preset_check(strong[:1] + good[:1])["valid"]  # one seed
    close = [_record("nnUNetTrainer", 0, [0.62], FULL), _record("nnUNetTrainer", 1, [0.63], FULL)]
    assert not preset_check(strong + close)["valid"]  # margin below 0.05
    # the stock trainer on a mixed dataset is nnU-Net + ignore, not the full upper bound
    assert preset_check(strong + [_record("nnUNetTrainer", s, [0.9], MIXED) for s in (0, 1)]) is None


def test_preset_check_pairs_full_with_the_comparable_strong_only_budget_closest_to_full():
    def on(record: dict, dataset: str, labels: dict | None = None) -> dict:
        return {**record, "dataset": dataset, **({"label_names": labels} if labels else {})}

    full = [on(_record("nnUNetTrainer", s, [0.8], FULL), "D500") for s in (0, 1)]
    seven = [on(_record("nnUNetTrainerStrongOnly", s, [0.7], {"full": 7, "weak": 63, "unlabeled": 0}), "D501")
             for s in (0, 1)]
    three = [on(_record("nnUNetTrainerStrongOnly", s, [0.5], {"full": 3, "weak": 0, "unlabeled": 67}), "D502")
             for s in (0, 1)]
    other_classes = [on(_record("nnUNetTrainerStrongOnly", s, [0.1], {"full": 9, "weak": 61, "unlabeled": 0}), "D503",
                        {"0": "background", "1": "RV", "2": "ignore"}) for s in (0, 1)]
    for order in (seven + three + other_classes, other_classes + three + seven):
        check = preset_check(full + order)
        assert (check["full_dataset"], check["strong_only_dataset"]) == ("D500", "D501")
        assert check["strong_only"] == pytest.approx([0.7, 0.7]) and check["mean_margin"] == pytest.approx(0.1)
    assert preset_check(full + other_classes) is None


def test_run_provenance_groups_records_by_command_commit_and_machine():
    sup = {"full": 1, "weak": 1, "unlabeled": 0}
    made = {"command": "confkd_benchmark -d 1", "git_commit": "abc", "cpu_model": "cpu", "cpu_count": 2}
    records = [_record("nnUNetTrainer", 0, [0.5], sup), _record("nnUNetTrainer", 1, [0.5], sup),
               _record("nnUNetTrainer", 2, [0.5], sup)]
    records[0]["provenance"] = {**made, "date_utc": "2026-01-02T00:00:00+00:00"}
    records[1]["provenance"] = {**made, "date_utc": "2026-01-01T00:00:00+00:00"}
    found, older = run_provenance(records)
    assert found == {**made, "records": 2, "first_utc": "2026-01-01T00:00:00+00:00",
                     "last_utc": "2026-01-02T00:00:00+00:00"}
    assert older["command"] == "not recorded" and older["records"] == 1 and older["first_utc"] is None


def test_inference_ratio_pairs_the_student_with_stock_nnunet_of_the_same_seed():
    recs = [_record("nnUNetTrainer", 0, [0.5], MIXED, seconds=10.0),
            _record("nnUNetTrainerConfKD_cpu", 0, [0.5], MIXED, "student", seconds=11.0),
            _record("nnUNetTrainerConfKD_cpu", 0, [0.5], MIXED, "teacher", seconds=30.0)]
    ratio = inference_ratio(recs)
    assert ratio["n_pairs"] == 1 and ratio["median_ratio"] == pytest.approx(1.1)


@pytest.mark.slow
def test_cross_validation_evaluates_nnunets_validation_of_each_fold(study):
    env, out, _ = study
    proc = subprocess.run(["confkd_benchmark", "-d", "991", "-tr", "nnUNetTrainerConfKD", "-f", "1", "--cv",
                           "--preset", "smoke", "-device", "cpu", "-o", str(out), "-np", "1"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = out / "runs" / DATASET / "nnUNetTrainerConfKD_smoke" / "seed_0" / "v2_cv_fold_1"
    assert sorted(p.name for p in run_dir.iterdir()) == ["student.json", "teacher.json"]  # both heads, to choose one
    rec = json.loads((run_dir / "student.json").read_text())
    split = json.loads((Path(env["nnUNet_preprocessed"]) / DATASET / "splits_final.json").read_text())[1]
    assert rec["evaluation"] == "cv" and rec["fold"] == "1" and rec["split"] == "v2"
    assert rec["inference_head"] == "student"  # the head nnU-Net's validation ran
    assert sorted({m["case"] for m in rec["metrics"]}) == sorted(split["val"])
    assert not set(split["val"]) & set(split["train"])
    teacher = json.loads((run_dir / "teacher.json").read_text())
    assert (teacher["evaluation"], teacher["head"]) == ("cv", "teacher")
    assert [(m["case"], m["label"]) for m in teacher["metrics"]] == [(m["case"], m["label"]) for m in rec["metrics"]]
    assert not (out / ".cv").exists() or not any((out / ".cv").iterdir())  # its work folders are gone
    # the other head is predicted from the raw images with confkd_predict_head; the inference head predicted that
    # way scores what nnU-Net's own validation (the student record) scored
    model = out / "nnUNet_results" / "split_v2" / "seed_0" / DATASET
    model = model / "nnUNetTrainerConfKD_smoke__nnUNetPlans__2d_smoke"
    images, pred = out.parent / "cv_images", out.parent / "cv_student"
    images.mkdir()
    raw = Path(env["nnUNet_raw"]) / DATASET
    for case in split["val"]:
        os.symlink(raw / "imagesTr" / f"{case}_0000.nii.gz", images / f"{case}_0000.nii.gz")
    proc = subprocess.run(["confkd_predict_head", "-i", str(images), "-o", str(pred), "-m", str(model), "-f", "1",
                           "--head", "student", "-device", "cpu"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for m in rec["metrics"]:
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{m['case']}.nii.gz"))) == m["label"]
        ours = sitk.GetArrayFromImage(sitk.ReadImage(str(pred / f"{m['case']}.nii.gz"))) == m["label"]
        if ref.any() or ours.any():
            assert 2 * (ref & ours).sum() / (ref.sum() + ours.sum()) == pytest.approx(m["dice"], abs=1e-6)
    md = (out / "results.md").read_text()
    assert "cross-validation on the training set, folds v2/1" in md
    # the fold's model has the results root of its split format, apart from the models trained on every case
    assert (model / "fold_1" / "checkpoint_final.pth").is_file()
    # the test-set rows, the preset check input and the inference pairs are unchanged by the cv records
    report = json.loads((out / "results.json").read_text())
    assert sum(r["evaluation"] == "test" for r in report["rows"]) == 4
    assert (out / f"dice_{DATASET}_cv.png").is_file()


def test_flags_follow_nnunet_with_the_long_forms_as_aliases(monkeypatch):
    args = parse_args(["-d", "501", "-tr", "nnUNetTrainer", "-c", "3d_fullres", "-f", "1", "2", "-o", "study",
                       "-device", "cpu", "-np", "3"])
    assert (args.d, args.tr, args.c, args.f, args.out, args.device, args.np) == (
        ["501"], ["nnUNetTrainer"], "3d_fullres", ["1", "2"], Path("study"), "cpu", 3)
    assert parse_args(["--report-only", "--out", "s", "--device", "cpu"]).out == Path("s")
    # without -device: cuda where available, else cpu (the package-wide default)
    import torch

    for available, device in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda available=available: available)
        assert parse_args(["--report-only", "-o", "s"]).device == device


def test_recorded_command_names_no_folder_of_the_machine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    argv = ["-d", "501", "-tr", "nnUNetTrainer", "-o", "study", "--extra", "500:nnUNetTrainer"]
    assert recorded_command(argv, Path("study")) == \
        "confkd_benchmark -d 501 -tr nnUNetTrainer -o . --extra 500:nnUNetTrainer"
    assert recorded_command(["--report-only", "--out", str(tmp_path / "study")], tmp_path / "study") == \
        "confkd_benchmark --report-only --out ."


# ======================================================================================================================
# The grid on a cluster: --list-runs, --run-index, the run lock, -num_gpus (no training: the runner's steps recorded)
# ======================================================================================================================

GRID = ["-d", "501", "502", "-tr", "nnUNetTrainer", "nnUNetTrainerStrongOnly", "--seeds", "0", "1", "-device", "cpu"]


@pytest.fixture
def grid(tmp_path, monkeypatch):
    """Two raw datasets with held-out parts and converter splits (v2 and v1), nnU-Net's folders pointed at them, and
    the runner's preparing, training and evaluation recorded instead of run."""
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    for name, splits in (("Dataset501_A", [{"train": ["b", "w"], "val": ["a"]}, {"train": ["a", "w"], "val": ["b"]}]),
                         ("Dataset502_B", [{"train": ["a", "b", "w"], "val": ["a", "b"]},
                                           {"train": ["b", "w"], "val": ["a"]}, {"train": ["a", "w"], "val": ["b"]}])):
        for sub in ("imagesTs", "labelsTs"):
            (raw / name / sub).mkdir(parents=True)
        (raw / name / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz", "numTraining": 3}))
        (raw / name / "labelsTs" / "t.nii.gz").write_bytes(b"")
        (raw / name / "imagesTs" / "t_0000.nii.gz").write_bytes(b"")
        (raw / name / "splits_final.json").write_text(json.dumps(splits))
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    calls = []
    monkeypatch.setattr(Runner, "_prepare", lambda self, dataset: calls.append(("prepare", dataset)) or "2d")
    monkeypatch.setattr(Runner, "train", lambda self, run, config: calls.append(("train", run)) or (1.0, "done"))
    monkeypatch.setattr(Runner, "evaluate", lambda self, run, *a: calls.append(("evaluate", run)))
    return tmp_path / "study", calls


def test_list_runs_prints_the_grid_in_the_runners_order(grid, capsys):
    out, calls = grid
    benchmark_main([*GRID, "-o", str(out), "--list-runs"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and not calls and not out.exists()
    assert lines[0] == "0\tDataset501_A\tnnUNetTrainer\t0\tall\ttest\tto run"
    assert lines[3] == "3\tDataset502_B\tnnUNetTrainerStrongOnly\t0\tall\ttest\tto run"
    assert [line.split("\t")[3] for line in lines] == ["0"] * 4 + ["1"] * 4  # seed-major
    benchmark_main([*GRID, "-o", str(out), "--list-runs", "--cv"])  # every fold of each dataset's own split
    cv = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(c[1][7:10], c[4]) for c in cv[:8]] == [("501", "0")] * 2 + [("501", "1"), ("501", "1"), ("502", "1"),
                                                                         ("502", "1"), ("502", "2"), ("502", "2")]
    assert {c[5] for c in cv} == {"cv"} and len(cv) == 16


def test_run_index_runs_exactly_that_run_of_the_list(grid, capsys):
    out, calls = grid
    benchmark_main([*GRID, "-o", str(out), "--list-runs"])
    listed = capsys.readouterr().out.splitlines()
    benchmark_main([*GRID, "-o", str(out), "--run-index", "6"])
    assert calls[0] == ("prepare", "Dataset502_B") and [step for step, _ in calls[1:]] == ["train", "evaluate"]
    run = calls[1][1]
    assert listed[6] == f"6\t{run.dataset}\t{run.trainer}\t{run.seed}\t{run.fold}\ttest\tto run"
    assert run == Run("Dataset502_B", "nnUNetTrainer", "nnUNetTrainer", 1)
    printed = capsys.readouterr().out
    assert "--report-only" in printed and not (out / "results.md").exists()  # the report is left to --report-only
    assert not list((out / "locks").iterdir())  # released at the end
    for bad in ("8", "-1"):
        with pytest.raises(SystemExit, match=f"--run-index {bad} is out of range: the grid has 8 run"):
            benchmark_main([*GRID, "-o", str(out), "--run-index", bad])


def test_a_second_job_for_a_run_names_the_holder_and_touches_nothing(grid, capsys):
    from nnunetv2_confkd.study.locks import StudyLock, lock_path

    out, calls = grid
    run = Run("Dataset501_A", "nnUNetTrainer", "nnUNetTrainer", 0)
    with StudyLock(lock_path(out, f"run/{run.key}"), "the first job"):
        held = {p: p.read_bytes() for p in (out / "locks").iterdir()}
        with pytest.raises(SystemExit, match="1 run\\(s\\) not done"):
            benchmark_main([*GRID, "-o", str(out), "--run-index", "0"])
        assert {p: p.read_bytes() for p in (out / "locks").iterdir()} == held
    assert calls == [("prepare", "Dataset501_A")]  # prepared (under its own lock), never trained
    assert f"NOT RUN: locked by host {socket.gethostname()}, pid {os.getpid()}" in capsys.readouterr().out


def test_cv_on_fold_0_of_the_earlier_split_is_refused(grid):
    out, calls = grid
    with pytest.raises(SystemExit, match="Dataset502_B: fold 0 .* trains on its validation cases"):
        benchmark_main([*GRID, "-o", str(out), "--cv", "-f", "0", "--list-runs"])


def test_num_gpus_is_passed_to_the_training_command(grid):
    out, _ = grid
    runner = Runner(parse_args([*GRID, "-o", str(out), "-num_gpus", "2"]), "confkd_benchmark")
    cmd = runner.train_command(Run("Dataset501_A", "nnUNetTrainer", "nnUNetTrainer", 0), "2d", resume=True)
    assert cmd == ["confkd_train", "501", "2d", "all", "-tr", "nnUNetTrainer", "-p", "nnUNetPlans", "-device", "cpu",
                   "-num_gpus", "2", "--c"]
    single = Runner(parse_args([*GRID, "-o", str(out)]), "confkd_benchmark")
    assert "-num_gpus" not in single.train_command(Run("Dataset501_A", "nnUNetTrainer", "nnUNetTrainer", 0), "2d")


def test_sigterm_during_a_run_removes_its_locks(grid, monkeypatch):
    import signal

    out, calls = grid

    def killed(self, run, config):
        calls.append(("train", run))
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. the job's time limit

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(Runner, "train", killed)
    with pytest.raises(SystemExit) as stopped:
        benchmark_main([*GRID, "-o", str(out), "--run-index", "0"])
    assert stopped.value.code == 128 + signal.SIGTERM and [s for s, _ in calls] == ["prepare", "train"]
    assert not list((out / "locks").iterdir()) and signal.getsignal(signal.SIGTERM) == before


def test_a_model_trained_with_another_batch_composition_is_never_reused(tmp_path):
    from nnunetv2_confkd.study.runs import check_model_composition, write_model_composition

    fold = tmp_path / "fold_all"
    fold.mkdir()
    (fold / "checkpoint_final.pth").write_bytes(b"")
    with pytest.raises(ConfKDInputError, match="'replace 0.5'.*'add 1'"):  # no note: the earlier composition
        check_model_composition(fold, "nnUNetTrainerConfKD_cpu")
    check_model_composition(fold, "nnUNetTrainerStrongOnly_cpu")  # "replace 1" then and now
    check_model_composition(fold, "nnUNetTrainer_confkdCPU")  # stock nnU-Net composes no batches
    write_model_composition(fold, "nnUNetTrainerConfKD_cpu")
    check_model_composition(fold, "nnUNetTrainerConfKD_cpu")
    with pytest.raises(ConfKDInputError, match="'add 1'.*'replace 0.5'"):
        check_model_composition(fold, "nnUNetTrainerConfKD_replaceHalf_cpu")
