"""The folds the converters write into ``splits_final.json`` (``splits.make_splits``): patient-level cross-validation
over the full patients only, checked as properties over many datasets."""

from __future__ import annotations

import logging

from hypothesis import given, settings
from hypothesis import strategies as st
from nnunetv2_confkd_conversion.splits import make_splits


def assert_cv_folds(splits: list[dict], manifest: dict[str, str], patient_of) -> None:
    """``splits`` are the converters' folds for ``manifest`` (``patient_of``: case -> patient): K = min(5, full
    patients) folds (none below two), each validating on full cases only and training on every other case (weak and
    unlabeled ones always), the cases of a patient on one side, every full patient validated exactly once."""
    full_patients = {patient_of(c) for c, level in manifest.items() if level == "full"}
    k = min(5, len(full_patients))
    assert len(splits) == (k if k >= 2 else 0)
    validated = []
    for fold in splits:
        train, val = set(fold["train"]), set(fold["val"])
        assert val and all(manifest[c] == "full" for c in val)
        assert not train & val and train | val == set(manifest)
        assert len(train) == len(fold["train"]) and len(val) == len(fold["val"])  # no case listed twice
        assert {c for c in manifest if manifest[c] != "full"} <= train
        val_patients = {patient_of(c) for c in val}
        assert not val_patients & {patient_of(c) for c in train}  # every case of a patient on one side
        validated += sorted(val_patients)
    if splits:
        assert sorted(validated) == sorted(full_patients)  # each full patient exactly once


LEVEL = st.sampled_from(["full", "weak", "unlabeled"])


@st.composite
def datasets(draw):
    """A manifest of 0..12 patients with one or two frames each (both frames share the patient's level)."""
    levels = draw(st.lists(LEVEL, max_size=12))
    frames = draw(st.lists(st.integers(1, 2), min_size=len(levels), max_size=len(levels)))
    manifest, patient = {}, {}
    for i, (level, n) in enumerate(zip(levels, frames, strict=True)):
        for f in range(n):
            case = f"patient{i:03d}_frame{f:02d}"
            manifest[case], patient[case] = level, f"patient{i:03d}"
    return manifest, patient


@settings(max_examples=300, deadline=None)
@given(datasets())
def test_folds_are_a_patient_level_cross_validation_over_the_full_patients(dataset):
    manifest, patient = dataset
    assert_cv_folds(make_splits(manifest, patient), manifest, patient.get)


def test_fold_count_for_each_number_of_full_patients():
    for n_full in range(8):
        manifest = {f"f{i}_{t}": "full" for i in range(n_full) for t in "ab"}
        manifest.update({f"w{i}_a": "weak" for i in range(3)}, u0_a="unlabeled")
        patient = {c: c.split("_")[0] for c in manifest}
        splits = make_splits(manifest, patient)
        assert len(splits) == {0: 0, 1: 0}.get(n_full, min(5, n_full))
        assert_cv_folds(splits, manifest, patient.get)


def test_the_folds_do_not_depend_on_the_order_of_the_manifest():
    manifest = {f"p{i}": level for i, level in enumerate(["full", "weak"] * 4 + ["full", "unlabeled"])}
    patient = {c: c for c in manifest}
    assert make_splits(dict(reversed(manifest.items())), patient) == make_splits(manifest, patient)


def test_fewer_than_two_full_patients_write_no_fold_and_say_so(caplog):
    with caplog.at_level(logging.WARNING):
        assert make_splits({"a_1": "full", "a_2": "full", "b": "weak"}, {"a_1": "a", "a_2": "a", "b": "b"}) == []
    assert "no cross-validation fold" in caplog.text and "'all'" in caplog.text
