"""Input checks: each bad input raises ConfKDInputError naming the case or file."""

from __future__ import annotations

import numpy as np
import pytest

from nnunetv2_confkd.checks import (
    ConfKDInputError,
    check_full_cases_dense,
    check_ignore_label,
    check_manifest,
    check_split,
)

CASES = ["a", "b", "c", "d"]
GOOD = {"supervision": {"a": "full", "b": "full", "c": "weak", "d": "unlabeled"}}


def test_good_manifest_passes():
    assert check_manifest(GOOD, CASES) == GOOD["supervision"]


@pytest.mark.parametrize(
    ("dataset_json", "match"),
    [
        ({}, "no \"supervision\" key"),
        ({"supervision": ["a", "b"]}, "must map case identifiers"),
        ({"supervision": {"a": "full", "b": "full", "c": "weak"}}, "no level for case.*d"),
        ({"supervision": {**GOOD["supervision"], "zz_9": "weak"}}, "not in the dataset: zz_9"),
        ({"supervision": {**GOOD["supervision"], "c": "scribble"}}, "case c has level 'scribble'"),
    ],
)
def test_bad_manifest(dataset_json, match):
    with pytest.raises(ConfKDInputError, match=match):
        check_manifest(dataset_json, CASES)


def test_weak_cases_need_an_ignore_label():
    with pytest.raises(ConfKDInputError, match="no \"ignore\" label.*c, d"):
        check_ignore_label(GOOD["supervision"], None)
    check_ignore_label({"a": "full"}, None)  # all full: no ignore label needed
    check_ignore_label(GOOD["supervision"], 4)


def test_split_needs_a_full_training_case_and_full_validation_cases():
    manifest = GOOD["supervision"]
    check_split(manifest, ["a", "c", "d"], ["b"])
    with pytest.raises(ConfKDInputError, match="no fully labeled case"):
        check_split(manifest, ["c", "d"], ["a", "b"])
    with pytest.raises(ConfKDInputError, match="validation case.*c.*not fully labeled"):
        check_split(manifest, ["a", "b"], ["c"])


def test_full_case_with_ignore_voxels_is_named():
    segs = {"a": np.zeros((1, 4, 4)), "b": np.full((1, 4, 4), 4), "c": np.full((1, 4, 4), 4),
            "d": np.full((1, 4, 4), 4)}
    segs["b"][0, 0, 0] = 1
    with pytest.raises(ConfKDInputError, match="case b is marked \"full\" but its label has 15 ignore"):
        check_full_cases_dense(GOOD["supervision"], segs.__getitem__, 4)
    segs["b"][:] = 0
    check_full_cases_dense(GOOD["supervision"], segs.__getitem__, 4)  # weak/unlabeled cases may be all ignore
