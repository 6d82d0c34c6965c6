"""Survival of weak annotations through preprocessing (annotations.py)."""

from __future__ import annotations

import numpy as np
import pytest

from nnunetv2_confkd.training.annotations import (
    AnnotationFinding,
    check_annotations,
    count_preprocessed,
    recorded_counts,
)

DATASET_JSON = {
    "labels": {"background": 0, "a": 1, "b": 2, "ignore": 3},
    "supervision": {"w1": "weak", "w2": "weak", "f1": "full"},
    "weak_label": {"annotated_voxels": {"w1": {"1": 40, "2": 8}, "w2": {"1": 10}, "f1": {"0": 100, "1": 50}}},
}


def _seg(shape, counts: dict[int, int], ignore=3):
    seg = np.full(shape, ignore, dtype=np.int16)
    flat = seg.reshape(-1)
    start = 0
    for label, n in counts.items():
        flat[start:start + n] = label
        start += n
    flat[-3:] = -1  # outside nnU-Net's crop: never counted
    return seg[None]


def _loader(segs, before_shape=(4, 16, 16)):
    return lambda case: (segs[case], {"shape_after_cropping_and_before_resampling": before_shape})


def test_recorded_counts_keep_weak_cases_only():
    assert recorded_counts(DATASET_JSON) == {"w1": {1: 40, 2: 8}, "w2": {1: 10}}
    assert recorded_counts({"labels": {}}) == {}


def test_count_preprocessed_skips_ignore_and_outside_crop():
    assert count_preprocessed(_seg((4, 16, 16), {1: 5, 2: 7})[0], 3) == {1: 5, 2: 7}


def test_surviving_annotations_give_no_finding():
    segs = {"w1": _seg((4, 16, 16), {1: 40, 2: 8}), "w2": _seg((4, 16, 16), {1: 9})}
    assert check_annotations(DATASET_JSON, _loader(segs)) == []


def test_lost_and_thinned_classes_are_named():
    # resampling halves the voxel count (4x16x16 -> 4x16x8): expected 20 and 4 for w1, 5 for w2
    segs = {"w1": _seg((4, 16, 8), {1: 19}), "w2": _seg((4, 16, 8), {1: 2})}
    findings = check_annotations(DATASET_JSON, _loader(segs))
    assert [(f.case, f.label, f.preprocessed) for f in findings] == [("w1", 2, 0), ("w2", 1, 2)]
    assert findings[0].lost and "lost every annotated voxel" in str(findings[0])
    assert not findings[1].lost and "kept too few" in str(findings[1])
    assert findings[1].expected == pytest.approx(5.0)


def test_cases_argument_restricts_the_check():
    segs = {"w1": _seg((4, 16, 16), {1: 40}), "w2": _seg((4, 16, 16), {1: 10})}
    assert [f.case for f in check_annotations(DATASET_JSON, _loader(segs), cases=["w1", "f1"])] == ["w1"]
    assert isinstance(check_annotations(DATASET_JSON, _loader(segs))[0], AnnotationFinding)


def test_seed_survival_counts_slices_and_voxels_per_slice_before_and_after():
    from nnunetv2_confkd.training.annotations import format_survival, seed_survival

    dataset_json = {"labels": {"background": 0, "LV": 1, "ignore": 2},
                    "supervision": {"w": "weak", "f": "full", "u": "unlabeled"}}
    raw = np.full((3, 4, 4), 2)
    raw[0, 1, 1:3] = 1  # two slices with seeds, 2 and 1 voxels
    raw[2, 0, 0] = 1
    pre = np.full((1, 3, 4, 4), 2)
    pre[0, 0, 1, 1] = 1  # one slice kept, with 1 voxel
    full = np.zeros((1, 1, 9, 9), np.int16)
    full[0, 0, 1:8, 1:8] = 1  # a 7x7 square: 10 erosions empty it, 3 leave the centre voxel
    arrays = {"w": pre, "f": full}
    survival = seed_survival(dataset_json, lambda case: raw, lambda case: (arrays[case], {}), seed_iterations=10)
    lv = survival["1"]
    assert lv["weak_raw"] == {"slices": 2, "median_per_slice": 1.5}
    assert lv["weak_preprocessed"] == {"slices": 1, "median_per_slice": 1.0}
    assert lv["derived_from_full"] == {"slices": 1, "median_per_slice": 1.0}
    table = format_survival(survival, {0: "background", 1: "LV"})
    assert "| LV | 2 -> 1 | 50% | 1.5 -> 1 | 1, 1 |" in table.splitlines()
