"""Folds of a study (``study/folds.py``, ``Run``'s record paths, the report's pooling): the split a fold number refers
to, and records of the converters' earlier split (fold 0 trained on every case, folds 1..K cross-validated) read and
reported as before, never mixed with folds of today's split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.study.folds import check_fold, cv_folds, fold_label, record_split, split_format
from nnunetv2_confkd.study.presets import PRESETS
from nnunetv2_confkd.study.records import aggregate, record_location
from nnunetv2_confkd.study.runs import Run, plan_runs

MANIFEST = {"a": "full", "b": "full", "c": "full", "w": "weak"}
V1_SPLIT = [{"train": ["a", "b", "c", "w"], "val": ["a", "b", "c"]},  # the converters' earlier fold 0
            {"train": ["b", "c", "w"], "val": ["a"]}, {"train": ["a", "c", "w"], "val": ["b"]},
            {"train": ["a", "b", "w"], "val": ["c"]}]
V2_SPLIT = V1_SPLIT[1:]
MIXED = {"full": 3, "weak": 1, "unlabeled": 0}


def test_the_format_of_a_split_and_its_cross_validation_folds():
    assert (split_format(V1_SPLIT), cv_folds(V1_SPLIT)) == ("v1", ["1", "2", "3"])
    assert (split_format(V2_SPLIT), cv_folds(V2_SPLIT)) == ("v2", ["0", "1", "2"])
    assert (split_format([]), cv_folds([])) == ("v2", [])
    assert (split_format(None), cv_folds(None)) == ("v2", ["0", "1", "2", "3", "4"])  # nnU-Net draws its own


@pytest.mark.parametrize(("splits", "fold", "cv", "message"), [
    (V1_SPLIT, "0", True, "trains on its validation cases.*earlier format.*folds are 1 2 3"),
    (V2_SPLIT, "3", False, "fold 3 is not in .* folds 0..2"),
    ([], "0", True, "no fold .*use -f all"),
    (V2_SPLIT, "all", True, "--cv needs numbered folds"),
    (V2_SPLIT, "x", False, "give 'all' or a fold number"),
])
def test_a_fold_the_split_cannot_serve_is_refused_before_training(tmp_path, splits, fold, cv, message):
    with pytest.raises(ConfKDInputError, match=message):
        check_fold(splits, tmp_path / "splits_final.json", "D", fold, cv)


def test_folds_the_split_serves_pass():
    for splits, fold, cv in ((V2_SPLIT, "0", True), (V1_SPLIT, "1", True), (V1_SPLIT, "0", False), ([], "all", False),
                             (None, "4", True)):
        check_fold(splits, None, "D", fold, cv)


def test_record_paths_keep_old_records_where_they_are_and_new_folds_apart():
    run = Run("D", "m", "T", 0)
    assert run.fold == "all" and run.key == "D/T/seed_0" and run.model_key == "D/T/seed_0/fold_all"
    # fold 0 of the earlier split trained on every case: the same records as fold all (found finished, not retrained)
    assert Run("D", "m", "T", 0, "0", split="v1").key == "D/T/seed_0" == Run("D", "m", "T", 0, "0").key
    assert Run("D", "m", "T", 0, "1", True, "v1").key == "D/T/seed_0/cv_fold_1"
    assert Run("D", "m", "T", 0, "1", True, "v2").key == "D/T/seed_0/v2_cv_fold_1"
    assert Run("D", "m", "T", 0, "0", False, "v2").key == "D/T/seed_0/v2_fold_0"
    # a test run and a cross-validation run of one fold train one model
    assert Run("D", "m", "T", 0, "1", True, "v2").model_key == Run("D", "m", "T", 0, "1", False, "v2").model_key \
        == "D/T/seed_0/v2_fold_1"
    assert Run("D", "m", "T", 0, "1", True, "v1").model_key == "D/T/seed_0/fold_1"


def test_plan_runs_with_folds_per_dataset_in_numeric_order():
    runs = plan_runs(["A", "B"], ["m"], [], [0], PRESETS["gpu"], {"A": ("1", "2"), "B": ("0", "1")}, True,
                     {"A": "v1", "B": "v2"})
    assert [r.key for r in runs] == ["B/m/seed_0/v2_cv_fold_0", "A/m/seed_0/cv_fold_1", "B/m/seed_0/v2_cv_fold_1",
                                     "A/m/seed_0/cv_fold_2"]


def _record(fold: str, evaluation: str = "test", split: str | None = None, dice: float = 0.5, seed: int = 0) -> dict:
    record = {"dataset": "D", "evaluation": evaluation, "fold": fold, "method": "nnUNetTrainerStrongOnly",
              "trainer": "nnUNetTrainerStrongOnly", "head": "nnunet", "seed": seed, "supervision": MIXED,
              "n_test_cases": 1, "label_names": {"1": "LV"}, "train_seconds": 1.0, "predict_seconds": 1.0,
              "metrics": [{"case": "c0", "label": 1, "dice": dice, "hd95": 1.0, "assd": 1.0, "nsd": dice,
                           "n_ref": 5, "n_pred": 5}]}
    return record if split is None else {**record, "split": split}


def test_old_and_new_models_trained_on_every_case_are_pooled_in_one_test_row():
    (row,) = aggregate([_record("0", dice=0.4), _record("all", split=None, dice=0.6, seed=1)])
    assert row["folds"] == ["0", "all"] and row["mean"]["dice"]["mean"] == pytest.approx(0.5)
    assert row["label"] == "strong-only" and "split" not in row


def test_cross_validation_folds_of_the_two_formats_are_never_pooled():
    old = [_record("1", "cv", dice=0.4), _record("2", "cv", dice=0.6)]  # records without "split": v1
    new = [_record(str(k), "cv", "v2", dice=0.8) for k in range(3)]
    assert [record_split(r) for r in old + new[:1]] == ["v1", "v1", "v2"]
    assert [fold_label(r) for r in old + new[:1]] == ["1", "2", "v2/0"]
    (only_old,) = aggregate(old)
    assert only_old["folds"] == ["1", "2"] and only_old["label"] == "strong-only"  # reported as before
    rows = {r["split"]: r for r in aggregate(old + new)}
    assert rows["v1"]["folds"] == ["1", "2"] and rows["v1"]["mean"]["dice"]["mean"] == pytest.approx(0.5)
    assert rows["v2"]["folds"] == ["v2/0", "v2/1", "v2/2"] and rows["v2"]["mean"]["dice"]["mean"] == pytest.approx(0.8)
    assert (rows["v1"]["label"], rows["v2"]["label"]) == ("strong-only [split v1]", "strong-only [split v2]")


def test_every_committed_record_is_where_its_run_looks_for_it():
    """The committed study's records (test runs on fold all or the earlier fold 0, cross-validation folds 1 and 2 of
    the earlier split) are found finished, so a study that holds them never retrains them; a test run on fold all
    finds the earlier fold 0's records. Records of a batch composition their class no longer has lie apart
    (record_location)."""
    root = Path(__file__).resolve().parents[1] / "docs" / "acdc_study" / "runs"
    paths = sorted(root.rglob("*.json"))
    assert paths
    for path in paths:
        record = json.loads(path.read_text())
        run = Run(record["dataset"], record["method"], record["trainer"], record["seed"], str(record["fold"]),
                  record.get("evaluation") == "cv", record_split(record))
        assert root / record_location(record) == path
        if "batch_composition" in record:  # made by today's runner, which writes to the run's own key
            assert root / run.key / f"{record['head']}.json" == path
        if not run.cv:  # a test run: on the earlier fold 0 or on fold all, found under the key of a fold-all run
            assert record["fold"] in ("0", "all") and Run(run.dataset, run.method, run.trainer, run.seed).key == run.key
