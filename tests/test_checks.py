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


# --- dataset.json structure ---------------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nnunetv2_confkd.checks import check_dataset_json  # noqa: E402

VALID_DJ = {"labels": {"background": 0, "a": 1, "ignore": 2}, "channel_names": {"0": "MRI"}, "file_ending": ".nii.gz",
            "numTraining": 4}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda dj: dj.pop("labels"), "needs \"labels\""),
        (lambda dj: dj.update(labels=[0, 1]), "needs \"labels\""),
        (lambda dj: dj.update(labels={"background": 0, "liver": [1, 2]}), "must map names to integers"),
        (lambda dj: dj.update(labels={"background": 0, "ignore": 1, "a": 2}), "must be the highest"),
        (lambda dj: dj.update(labels={"background": 0, "a": 1, "ignore": 3}), "right after the last class \\(2\\)"),
        (lambda dj: dj.pop("channel_names"), "needs \"channel_names\""),
        (lambda dj: dj.pop("file_ending"), "needs \"file_ending\""),
    ],
)
def test_broken_dataset_json_is_named(change, match):
    dj = {k: (dict(v) if isinstance(v, dict) else v) for k, v in VALID_DJ.items()}
    change(dj)
    with pytest.raises(ConfKDInputError, match=match):
        check_dataset_json(dj)


def test_valid_dataset_json_passes():
    check_dataset_json(VALID_DJ)
    check_dataset_json({k: v for k, v in VALID_DJ.items() if k != "channel_names"} | {"modality": {"0": "CT"}})


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.text(max_size=8),
                       st.sampled_from(["full", "weak", "unlabeled", "a", "b", "c", "d"]))
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6),
                                                                                            inner, max_size=4),
                     max_leaves=12)
_manifest = st.one_of(
    _json,
    st.dictionaries(st.sampled_from(CASES + ["zz", "e"]), st.one_of(st.sampled_from(["full", "weak", "unlabeled"]),
                                                                    _json_leaf), max_size=6),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dataset_json=st.fixed_dictionaries({}, optional={"labels": st.one_of(_json, st.just(VALID_DJ["labels"])),
                                                        "channel_names": _json, "file_ending": _json,
                                                        "supervision": _manifest}),
       ignore=st.sampled_from([None, 2]),
       split=st.tuples(st.lists(st.sampled_from(CASES), max_size=4), st.lists(st.sampled_from(CASES), max_size=3)))
def test_any_broken_dataset_json_gives_a_clear_error_or_passes(dataset_json, ignore, split):
    """Property: on arbitrary JSON the checks either accept it or raise ConfKDInputError naming the file to fix,
    never anything else."""
    try:
        check_dataset_json(dataset_json)
        manifest = check_manifest(dataset_json, CASES)
        check_ignore_label(manifest, ignore)
        check_split(manifest, *split)
    except ConfKDInputError as e:
        assert "dataset.json" in str(e) or "splits_final.json" in str(e), str(e)
    else:
        assert set(manifest) == set(CASES) and set(manifest.values()) <= {"full", "weak", "unlabeled"}


def test_undeclared_label_values_are_named():
    from nnunetv2_confkd.checks import check_label_values

    labels = {"background": 0, "a": 1, "ignore": 2}
    check_label_values("c1", np.array([[-1, 0], [1, 2]]), labels)  # -1 marks nnU-Net's crop
    with pytest.raises(ConfKDInputError, match=r"case c1: label values \[5, 7\] are not declared"):
        check_label_values("c1", np.array([[0, 5], [7, 1]]), labels)
