"""The self-training conversion: pseudo-labels from predicted probabilities, and the dataset it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2_confkd_conversion.pseudo_label import pseudo_label, summary, write_pseudo_labeled_dataset

from nnunetv2_confkd.checks import ConfKDInputError

IGNORE = 3


def _write(array: np.ndarray, path, spacing=(2.0, 1.0, 1.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def source(tmp_path):
    """A raw dataset with one full, one weak and two unlabeled cases, and a prediction folder for the unlabeled."""
    ds = tmp_path / "raw" / "Dataset100_Toy"
    manifest = {"c0": "full", "c1": "weak", "c2": "unlabeled", "c3": "unlabeled"}
    for case in manifest:
        _write(np.zeros((1, 2, 3), np.float32), ds / "imagesTr" / f"{case}_0000.nii.gz")
        _write(np.full((1, 2, 3), IGNORE if manifest[case] == "unlabeled" else 1, np.uint8),
               ds / "labelsTr" / f"{case}.nii.gz")
    (ds / "dataset.json").write_text(json.dumps({
        "labels": {"background": 0, "a": 1, "b": 2, "ignore": IGNORE}, "channel_names": {"0": "MRI"},
        "file_ending": ".nii.gz", "numTraining": 4, "name": "Toy", "supervision": manifest,
        "weak_label": {"kind": "expert"}}))
    predictions = tmp_path / "predictions"
    confident = np.zeros((3, 1, 2, 3), np.float32)
    confident[:, 0, 0] = [[0.95, 0.2, 0.1], [0.05, 0.8, 0.0], [0.0, 0.0, 0.9]]  # classes 0, (1 at 0.8), 2
    confident[:, 0, 1] = 1 / 3
    unsure = np.full((3, 1, 2, 3), 1 / 3, np.float32)
    for case, probabilities in (("c2", confident), ("c3", unsure)):
        predictions.mkdir(exist_ok=True)
        np.savez(predictions / f"{case}.npz", probabilities=probabilities)
        _write(np.argmax(probabilities, 0).astype(np.uint8), predictions / f"{case}.nii.gz")
    return ds, predictions


def test_pseudo_label_keeps_only_confident_voxels():
    probabilities = np.array([[[0.9, 0.5]], [[0.1, 0.5]]])
    assert pseudo_label(probabilities, 0.6, 7).tolist() == [[0, 7]]
    assert pseudo_label(probabilities, 0.0, 7).tolist() == [[0, 0]]
    with pytest.raises(ValueError, match="threshold"):
        pseudo_label(probabilities, 1.5, 7)


def test_unlabeled_cases_become_weak_with_confident_labels_only(source, tmp_path):
    ds, predictions = source
    target = tmp_path / "raw" / "Dataset101_ToyPseudo"
    write_pseudo_labeled_dataset(ds, target, predictions, 0.85, {"model": "m", "head": None})
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(target / "labelsTr" / "c2.nii.gz")))
    assert label.tolist() == [[[0, IGNORE, 2], [IGNORE, IGNORE, IGNORE]]]
    assert sitk.ReadImage(str(target / "labelsTr" / "c2.nii.gz")).GetSpacing() == (2.0, 1.0, 1.0)
    dataset_json = json.loads((target / "dataset.json").read_text())
    assert dataset_json["supervision"] == {"c0": "full", "c1": "weak", "c2": "weak", "c3": "unlabeled"}
    weak = dataset_json["weak_label"]
    assert (weak["kind"], weak["threshold"], weak["annotated_voxels"]) == ("pseudo", 0.85, {"c2": 2, "c3": 0})
    # per class, over the 12 voxels of the two pseudo-labeled cases: one background and one "b" voxel kept
    assert weak["pseudo_labeled_voxels"] == {"background": 1, "a": 0, "b": 1} and weak["pseudo_label_case_voxels"] == 12
    assert summary(weak) == ("threshold 0.85: 16.7 % of the voxels of 2 cases labeled (background 8.3 %, a 0.0 %, "
                             "b 8.3 %); 1 case(s) left unlabeled")
    assert weak["source_weak_label"] == {"kind": "expert"} and dataset_json["name"] == "ToyPseudo"
    for case in ("c0", "c1"):  # full and weak labels are copied unchanged
        assert np.all(sitk.GetArrayFromImage(sitk.ReadImage(str(target / "labelsTr" / f"{case}.nii.gz"))) == 1)
    source_label = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "labelsTr" / "c2.nii.gz")))
    assert np.all(source_label == IGNORE)  # the source dataset is untouched


def test_an_existing_dataset_is_kept_without_overwrite(source, tmp_path):
    ds, predictions = source
    target = tmp_path / "raw" / "Dataset101_ToyPseudo"
    write_pseudo_labeled_dataset(ds, target, predictions, 0.85, {})
    (target / "marker").write_text("mine")
    with pytest.raises(ConfKDInputError, match="--overwrite"):
        write_pseudo_labeled_dataset(ds, target, predictions, 0.5, {})
    assert (target / "marker").read_text() == "mine"
    write_pseudo_labeled_dataset(ds, target, predictions, 0.5, {}, overwrite=True)
    assert not (target / "marker").exists()
    assert not list(target.parent.glob(".Dataset101_ToyPseudo*"))  # no temporary folder left behind


def test_a_dataset_without_unlabeled_cases_is_refused(source, tmp_path):
    ds, predictions = source
    dataset_json = json.loads((ds / "dataset.json").read_text())
    dataset_json["supervision"] = {c: "full" for c in dataset_json["supervision"]}
    (ds / "dataset.json").write_text(json.dumps(dataset_json))
    with pytest.raises(ConfKDInputError, match="nothing to pseudo-label"):
        write_pseudo_labeled_dataset(ds, tmp_path / "raw" / "Dataset102_X", predictions, 0.5, {})
