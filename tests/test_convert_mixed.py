"""The generic converter: a small fully labeled nnU-Net raw dataset into mixed-supervision ones (CPU, seconds). What
every converter shares (budget checks, overwrite, the component check, the dense twin) is tested once in
test_conversion.py; here: the source dataset, patient grouping, its test part and the command line's wiring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from nnunetv2_confkd_conversion import mixed
from test_splits import assert_cv_folds

from nnunetv2_confkd.checks import ConfKDInputError

SHAPE = (4, 24, 20)
SPACING = (1.2, 1.2, 3.0)
LABELS = {"background": 0, "organ": 1, "lesion": 2}
IGNORE = 3
GROUPS = r"^(patient\d+)_"


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def _case(rng: np.random.Generator, channels: int) -> tuple[list[np.ndarray], np.ndarray]:
    label = np.zeros(SHAPE, np.uint8)
    label[:, 4:20, 3:17] = 1
    for _ in range(2):  # two lesions, often in one slice: components matter
        y, x = rng.integers(6, 16), rng.integers(5, 13)
        label[1:3, y:y + rng.integers(1, 4), x:x + rng.integers(1, 4)] = 2
    images = [(label * (30 + 10 * c) + rng.normal(0, 5, SHAPE)).astype(np.float32) for c in range(channels)]
    return images, label


def make_source(raw: Path, dataset_id: int = 10, patients: int = 5, frames: int = 2, channels: int = 1,
                labeled_test: int = 0, unlabeled_test: int = 0, **json_extra) -> tuple[Path, dict]:
    """``DatasetNNN_Toy`` with cases ``patientPPP_frameFF`` (``frames`` per patient); returns it and the arrays."""
    folder = raw / f"Dataset{dataset_id:03d}_Toy"
    rng = np.random.default_rng(dataset_id)
    data = {}
    cases = [(f"patient{p:03d}_frame{f:02d}", "Tr") for p in range(1, patients + 1) for f in range(1, frames + 1)]
    cases += [(f"test{i:03d}", "Ts") for i in range(labeled_test + unlabeled_test)]
    for index, (case, part) in enumerate(cases):
        data[case] = _case(rng, channels)
        for c, image in enumerate(data[case][0]):
            _write(image, folder / f"images{part}" / f"{case}_{c:04d}.nii.gz")
        if part == "Tr" or index - patients * frames < labeled_test:
            _write(data[case][1], folder / f"labels{part}" / f"{case}.nii.gz")
    generate_dataset_json(str(folder), {c: f"MR{c}" for c in range(channels)}, json_extra.pop("labels", LABELS),
                          patients * frames, ".nii.gz", dataset_name=folder.name, **json_extra)
    return folder, data


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def check_dataset(folder: Path, data: dict, patient_of) -> dict:
    """Labels, manifest, dense full/test labels, weak subsets and patient-level splits; returns dataset.json."""
    dj = json.loads((folder / "dataset.json").read_text())
    assert dj["labels"] == {**LABELS, "ignore": IGNORE}
    manifest = dj["supervision"]
    train = sorted(p.name[:-len(".nii.gz")] for p in (folder / "labelsTr").iterdir())
    assert sorted(manifest) == train and dj["numTraining"] == len(train)
    for case in train:
        label, dense = read(folder / "labelsTr" / f"{case}.nii.gz"), data[case][1]
        annotated = label != IGNORE
        if manifest[case] == "full":
            np.testing.assert_array_equal(label, dense)
        else:
            assert annotated.any() and np.array_equal(label[annotated], dense[annotated])
        for c, image in enumerate(data[case][0]):
            np.testing.assert_array_equal(read(folder / "imagesTr" / f"{case}_{c:04d}.nii.gz"), image)
    for path in (folder / "labelsTs").iterdir():
        np.testing.assert_array_equal(read(path), data[path.name[:-len(".nii.gz")]][1])
    levels = {}
    for case in train:
        levels.setdefault(patient_of(case), set()).add(manifest[case])
    assert all(len(v) == 1 for v in levels.values())  # one level per patient
    test_patients = {patient_of(p.name[:-len(".nii.gz")]) for p in (folder / "labelsTs").iterdir()}
    assert not test_patients & set(levels)
    assert_cv_folds(json.loads((folder / "splits_final.json").read_text()), manifest, patient_of)
    return dj


def test_groups_regex_keeps_patients_together(tmp_path):
    source, data = make_source(tmp_path / "src", patients=6)
    folder = mixed.make_mixed_dataset(source, tmp_path / "raw", 20, 2, "points", groups=GROUPS, holdout=1,
                                      component_classes=[2], weak_params={"k": 1},
                                      preprocessed_root=tmp_path / "pre")
    assert folder.name == "Dataset020_Toy_2full_points_s0"
    dj = check_dataset(folder, data, lambda case: case.split("_")[0])
    assert list(dj["supervision"].values()).count("full") == 4 and len(dj["supervision"]) == 10
    assert len(list((folder / "imagesTs").iterdir())) == 2
    assert json.loads((tmp_path / "pre" / folder.name / "splits_final.json").read_text()) == \
        json.loads((folder / "splits_final.json").read_text())
    assert dj["weak_label"]["component_classes"] == [2]


def test_default_grouping_with_two_channels(tmp_path):
    source, data = make_source(tmp_path / "src", patients=3, channels=2)
    folder = mixed.make_mixed_dataset(source, tmp_path / "raw", 21, 3, "scribble", component_classes=[1, 2])
    dj = check_dataset(folder, data, lambda case: case)
    assert dj["channel_names"] == {"0": "MR0", "1": "MR1"}
    assert list(dj["supervision"].values()).count("full") == 3  # each frame its own patient
    assert len(list((folder / "imagesTr").iterdir())) == 12
    assert list((folder / "imagesTs").iterdir()) == []


def test_groups_file_and_source_test_part(tmp_path):
    source, data = make_source(tmp_path / "src", patients=4, labeled_test=2, unlabeled_test=1)
    groups = {case: "A" if case.startswith(("patient001", "patient002")) else "B" for case in data
              if case.startswith("patient")}
    (tmp_path / "groups.json").write_text(json.dumps(groups))
    with pytest.warns(UserWarning, match="1 test case"):
        folder = mixed.make_mixed_dataset(source, tmp_path / "raw", 22, 1, "erosion",
                                          groups_file=tmp_path / "groups.json", weak_params={"iterations": 2})
    dj = check_dataset(folder, data, lambda case: groups.get(case, case))
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == ["test000.nii.gz", "test001.nii.gz"]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["test000_0000.nii.gz", "test001_0000.nii.gz"]
    assert sorted(dj["supervision"].values()) == ["full"] * 4 + ["weak"] * 4


def test_unlabeled_with_holdout_fraction(tmp_path):
    source, data = make_source(tmp_path / "src", patients=5)
    folder = mixed.make_mixed_dataset(source, tmp_path / "raw", 23, 0.5, "unlabeled", groups=GROUPS, holdout=0.2)
    dj = json.loads((folder / "dataset.json").read_text())
    assert sorted(dj["supervision"].values()) == ["full"] * 4 + ["unlabeled"] * 4
    for case, level in dj["supervision"].items():
        if level == "unlabeled":
            assert (read(folder / "labelsTr" / f"{case}.nii.gz") == IGNORE).all()
    assert len(list((folder / "labelsTs").iterdir())) == 2


def test_main_resolves_the_source_id_and_overwrite(tmp_path, monkeypatch, capsys):
    raw = tmp_path / "raw"
    make_source(raw, dataset_id=10)
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    argv = ["-s", "10", "-d", "30", "--full", "2", "--weak", "points", "--groups", GROUPS]
    mixed.main(argv)
    assert "full 4, weak 6, unlabeled 0 cases" in capsys.readouterr().out
    mixed.main([*argv, "--overwrite", "--seed", "1", "--name", "Toy_2full_points_s0", "--points", "2"])
    weak_label = json.loads((raw / "Dataset030_Toy_2full_points_s0" / "dataset.json").read_text())["weak_label"]
    assert weak_label["seed"] == 1 and weak_label["params"]["k"] == 2


def test_main_takes_the_source_folder_and_the_long_flags(tmp_path, monkeypatch, capsys):
    source, _ = make_source(tmp_path / "src", dataset_id=10, patients=3)
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    mixed.main(["--source", str(source), "--id", "31", "--out", str(tmp_path / "raw"), "--full", "1",
                "--weak", "points"])
    assert capsys.readouterr().out.startswith("Dataset031_Toy_1full_points_s0: full 1, weak 5, unlabeled 0 cases")
    with pytest.raises(SystemExit) as exit_info:  # a dataset id to look up, but no nnUNet_raw to look it up in
        mixed.main(["-s", "10", "-d", "32", "-o", str(tmp_path / "raw"), "--full", "1", "--weak", "points"])
    assert exit_info.value.code == 2 and "-s 10: not a folder; set nnUNet_raw" in capsys.readouterr().err


def test_d_is_the_new_dataset_id_not_the_source(capsys):
    with pytest.raises(SystemExit) as exit_info:
        mixed.build_parser().parse_args(["-d", "10", "--full", "1", "--weak", "points"])
    assert exit_info.value.code == 2 and "-s/--source" in capsys.readouterr().err
    args = mixed.build_parser().parse_args(["-s", "4", "-d", "10", "--full", "1", "--weak", "points"])
    assert (args.source, args.id) == ("4", 10)


def _unmatched(source: Path) -> dict:
    _write(np.zeros(SHAPE, np.float32), source / "imagesTr" / "odd_0000.nii.gz")
    _write(np.zeros(SHAPE, np.uint8), source / "labelsTr" / "odd.nii.gz")
    dj = json.loads((source / "dataset.json").read_text())
    (source / "dataset.json").write_text(json.dumps({**dj, "numTraining": dj["numTraining"] + 1}))
    return {"groups": GROUPS, "expected": r"--groups .* does not match case\(s\) \['odd'\]"}


def _set_json(source: Path, expected: str, **changes) -> dict:
    dj = json.loads((source / "dataset.json").read_text())
    (source / "dataset.json").write_text(json.dumps({**dj, **changes}))
    return {"expected": expected}


def _missing_label(source: Path) -> dict:
    (source / "labelsTr" / "patient002_frame01.nii.gz").unlink()
    return {"expected": r"labelsTr/patient002_frame01.nii.gz: missing label file"}


def _missing_patient(source: Path) -> dict:
    (source.parent / "groups.json").write_text(json.dumps({"patient001_frame01": "a"}))
    return {"groups_file": source.parent / "groups.json",
            "expected": r"--groups-file .*no patient for .*patient001_frame02"}


SOURCE_PROBLEMS = {
    "unmatched regex": _unmatched,
    "ignore already": lambda s: _set_json(s, 'already declares an "ignore"', labels={**LABELS, "ignore": 3}),
    "region-based": lambda s: _set_json(s, "region-based", labels={"background": 0, "whole": [1, 2], "core": 2},
                                        regions_class_order=[1, 2]),
    "png": lambda s: _set_json(s, r"'.png' is not supported yet", file_ending=".png"),
    "missing label": _missing_label,
    "groups file": _missing_patient,
    "component class": lambda s: {"component_classes": [5], "expected": r"--component-classes \[5\]"},
}


@pytest.mark.parametrize("problem", sorted(SOURCE_PROBLEMS))
def test_bad_input_names_the_culprit(tmp_path, problem):
    source, _ = make_source(tmp_path / "src", patients=3)
    kwargs = SOURCE_PROBLEMS[problem](source)
    expected = kwargs.pop("expected")
    with pytest.raises(ConfKDInputError, match=expected):
        mixed.make_mixed_dataset(source, tmp_path / "raw", 40, 1, "points", **kwargs)
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []


def test_the_source_itself_is_protected(tmp_path):
    raw = tmp_path / "raw"
    source, _ = make_source(raw, dataset_id=10, patients=3)
    with pytest.raises(ConfKDInputError, match="--id 10 and --name Toy name the source"):
        mixed.make_mixed_dataset(source, raw, 10, 1, "points", name="Toy", overwrite=True)
    with pytest.raises(ConfKDInputError, match="--id 10 is already used"):
        mixed.make_mixed_dataset(source, raw, 10, 1, "points", overwrite=True)
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset010_Toy"]
