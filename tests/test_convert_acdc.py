"""The ACDC converter (dataset_conversion/acdc.py, acdc_layouts.py) on fabricated official-layout and HDF5 trees, and
on the real WSL4MIS copy when it is present. Everything is written under tmp_path. What every converter shares (budget
checks, names, overwrite, determinism, error exit of main) is tested once in test_conversion.py."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
from test_splits import assert_cv_folds

from nnunetv2_confkd.checks import ConfKDInputError

try:
    from nnunetv2_confkd_conversion import acdc
except ImportError:  # not installed editable: the repository root is on the path (pytest pythonpath)
    from dataset_conversion import acdc

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "acdc_wsl4mis"
SHAPE = (4, 24, 20)  # numpy (z, y, x)
SPACING_XYZ = (1.5, 1.5, 10.0)
ORIGIN = (-12.0, 30.5, 7.25)
DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
PATIENTS = [f"patient{i:03d}" for i in range(1, 7)]
GROUPS = ["DCM", "DCM", "HCM", "HCM", "NOR", "NOR"]
IGNORE = 4


# ---------------------------------------------------------------------------------------------------------------------
# fabricated sources
# ---------------------------------------------------------------------------------------------------------------------


def _dense(rng: np.random.Generator, shape=SHAPE) -> np.ndarray:
    """RV (1), MYO ring (2) around LV (3) on every slice but the last."""
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    cy, cx = shape[1] // 2 + rng.integers(-2, 3), 8 + rng.integers(-1, 2)
    r = np.hypot(yy - cy, xx - cx)
    label = np.zeros(shape, np.uint8)
    for z in range(shape[0] - 1):
        label[z][r < 6] = 2
        label[z][r < 3.5] = 3
        label[z][np.hypot(yy - cy, xx - cx - 9) < 3] = 1
    return label


def _nifti(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    sitk.WriteImage(image, str(path), useCompression=True)


def make_official(root: Path, patients=PATIENTS, info: bool = True) -> Path:
    """``root/training/patientXXX/`` with ED frame 01 and ES frame 10+i, ``_gt`` labels, ``Info.cfg`` and a 4D file
    that the converter must skip."""
    for i, patient in enumerate(patients):
        folder = root / "training" / patient
        folder.mkdir(parents=True)
        rng = np.random.default_rng(i)
        for frame in (1, 10 + i):
            dense = _dense(rng)
            image = (dense * 100 + rng.integers(0, 50, SHAPE)).astype(np.int16)
            _nifti(image, folder / f"{patient}_frame{frame:02d}.nii.gz")
            _nifti(dense, folder / f"{patient}_frame{frame:02d}_gt.nii.gz")
        (folder / f"{patient}_4d.nii.gz").write_bytes(b"not read")
        if info:
            (folder / "Info.cfg").write_text(f"ED: 1\nES: {10 + i}\nGroup: {GROUPS[i % len(GROUPS)]}\n"
                                             "Height: 170.0\nNbFrame: 30\nWeight: 70.0\n")
    return root


def make_hdf5(root: Path, train=("patient001", "patient002", "patient003"), val=("patient004",)) -> Path:
    """A WSL4MIS-like copy: scribbles are the dense labels of row 12 (4 = not annotated elsewhere)."""
    (root / "volumes").mkdir(parents=True)
    for i, patient in enumerate((*train, *val)):
        rng = np.random.default_rng(100 + i)
        for frame in (1, 12):
            dense = _dense(rng)
            scribble = np.full(SHAPE, 4, np.uint16)
            scribble[:, 12, :] = dense[:, 12, :]
            with h5py.File(root / "volumes" / f"{patient}_frame{frame:02d}.h5", "w") as h5:
                h5["image"] = rng.random(SHAPE, dtype=np.float32)
                h5["label"] = dense
                h5["scribble"] = scribble
    (root / "split.json").write_text(json.dumps({"train": list(train), "val": list(val)}))
    return root


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> Path:
    return make_official(tmp_path_factory.mktemp("acdc_official"))


@pytest.fixture(scope="module")
def erosion_dataset(official, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("erosion")
    folder = acdc.convert_acdc(official, root / "raw", 11, 2, "erosion", holdout=2,
                               preprocessed_root=root / "preprocessed")
    return folder, root / "preprocessed"


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def source_label(source: Path, case: str) -> np.ndarray:
    patient = case.split("_")[0]
    return read(source / "training" / patient / f"{case}_gt.nii.gz")


def dataset_json(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def assert_no_output(raw_root: Path) -> None:
    """No dataset and no temporary folder was left behind."""
    assert not raw_root.exists() or not any(raw_root.iterdir()), sorted(raw_root.iterdir())


# ---------------------------------------------------------------------------------------------------------------------
# official layout
# ---------------------------------------------------------------------------------------------------------------------


def test_official_dataset_json_and_manifest(erosion_dataset):
    folder, _ = erosion_dataset
    dj = dataset_json(folder)
    assert folder.name == "Dataset011_ACDC_2full_erosion_s0"
    assert dj["labels"] == {"background": 0, "RV": 1, "MYO": 2, "LV": 3, "ignore": 4}
    assert dj["channel_names"] == {"0": "cineMRI"}
    train_cases = {p.name[: -len("_0000.nii.gz")] for p in (folder / "imagesTr").iterdir()}
    assert set(dj["supervision"]) == train_cases == {p.name[:-7] for p in (folder / "labelsTr").iterdir()}
    assert dj["numTraining"] == len(train_cases) == 8
    assert dj["weak_label"]["kind"] == "erosion" and dj["weak_label"]["params"] == {"iterations": 10}
    assert dj["weak_label"]["background_annotated"] is False  # the paper's seeds are foreground only
    full_patients = {c.split("_")[0] for c, lvl in dj["supervision"].items() if lvl == "full"}
    assert len(full_patients) == 2
    for case, level in dj["supervision"].items():  # both frames of a full patient are full, all others weak
        assert level == ("full" if case.split("_")[0] in full_patients else "weak")


def test_official_labels(erosion_dataset, official):
    folder, _ = erosion_dataset
    for case, level in dataset_json(folder)["supervision"].items():
        written, dense = read(folder / "labelsTr" / f"{case}.nii.gz"), source_label(official, case)
        if level == "full":
            np.testing.assert_array_equal(written, dense)
        else:
            annotated = written != IGNORE
            assert annotated.any() and annotated.sum() < (dense > 0).sum()
            np.testing.assert_array_equal(written[annotated], dense[annotated])
            assert set(np.unique(written[annotated])) == {1, 2, 3}  # background is not annotated by default
        image = read(folder / "imagesTr" / f"{case}_0000.nii.gz")
        np.testing.assert_array_equal(image, read(official / "training" / case.split("_")[0] / f"{case}.nii.gz"))


def test_official_holdout_is_dense_test_part(erosion_dataset, official):
    folder, _ = erosion_dataset
    test_cases = sorted(p.name[:-7] for p in (folder / "labelsTs").iterdir())
    assert len(test_cases) == 4 and len({c.split("_")[0] for c in test_cases}) == 2
    assert sorted(p.name[: -len("_0000.nii.gz")] for p in (folder / "imagesTs").iterdir()) == test_cases
    assert not set(test_cases) & set(dataset_json(folder)["supervision"])
    for case in test_cases:
        np.testing.assert_array_equal(read(folder / "labelsTs" / f"{case}.nii.gz"), source_label(official, case))
    # stratified over the Info.cfg groups and independent of --seed
    assert {GROUPS[PATIENTS.index(c.split("_")[0])] for c in test_cases} == {"DCM", "HCM"}


def test_official_geometry_preserved(erosion_dataset):
    folder, _ = erosion_dataset
    for path in [*(folder / "imagesTr").iterdir(), *(folder / "labelsTr").iterdir(), *(folder / "labelsTs").iterdir()]:
        image = sitk.ReadImage(str(path))
        assert image.GetSize() == SHAPE[::-1]
        np.testing.assert_allclose(image.GetSpacing(), SPACING_XYZ, rtol=1e-6)
        np.testing.assert_allclose(image.GetOrigin(), ORIGIN, atol=1e-4)
        np.testing.assert_allclose(image.GetDirection(), DIRECTION, atol=1e-6)


def test_official_splits(erosion_dataset):
    folder, preprocessed = erosion_dataset
    splits = json.loads((folder / "splits_final.json").read_text())
    assert json.loads((preprocessed / folder.name / "splits_final.json").read_text()) == splits
    manifest = dataset_json(folder)["supervision"]
    assert len(splits) == 2  # one cross-validation fold per full patient, numbered from 0
    assert_cv_folds(splits, manifest, lambda case: case.split("_")[0])  # patient level: both frames on one side


@pytest.mark.parametrize("weak", ["points", "scribble", "unlabeled"])
def test_official_other_kinds(official, tmp_path, weak):
    params = {"points": {"k": 2}, "scribble": {"width_mm": 3.0}, "unlabeled": {}}[weak]
    folder = acdc.convert_acdc(official, tmp_path, 12, 2, weak, holdout=2, weak_params=params)
    dj = dataset_json(folder)
    assert dj["weak_label"]["kind"] == weak
    assert all(dj["weak_label"]["params"][k] == v for k, v in params.items())
    levels = set(dj["supervision"].values())
    assert levels == {"full", "unlabeled" if weak == "unlabeled" else "weak"}
    for case, level in dj["supervision"].items():
        written, dense = read(folder / "labelsTr" / f"{case}.nii.gz"), source_label(official, case)
        if level == "full":
            np.testing.assert_array_equal(written, dense)
        elif level == "unlabeled":
            assert (written == IGNORE).all()
        else:
            annotated = written != IGNORE
            assert annotated.any()
            np.testing.assert_array_equal(written[annotated], dense[annotated])


def test_official_mixed_weak_and_unlabeled(official, tmp_path):
    folder = acdc.convert_acdc(official, tmp_path, 10, 1, "erosion", holdout=2, unlabeled=2)
    assert folder.name == "Dataset010_ACDC_1full_erosion_2unl_s0"
    manifest = dataset_json(folder)["supervision"]
    for level, patients in (("full", 1), ("unlabeled", 2), ("weak", 1)):
        assert len({c.split("_")[0] for c, lvl in manifest.items() if lvl == level}) == patients
    for case, level in manifest.items():
        if level == "unlabeled":
            assert (read(folder / "labelsTr" / f"{case}.nii.gz") == IGNORE).all()


def test_official_background_annotation(official, tmp_path):
    folder = acdc.convert_acdc(official, tmp_path, 13, 1, "points", holdout=2, background=True)
    dj = dataset_json(folder)
    weak = [c for c, lvl in dj["supervision"].items() if lvl == "weak"]
    assert dj["weak_label"]["background"] is True and dj["weak_label"]["background_annotated"] is True
    assert all((read(folder / "labelsTr" / f"{c}.nii.gz") == 0).any() for c in weak)


def test_seeds_simulated_on_a_coarser_grid_are_recorded_and_stay_a_subset(official, tmp_path):
    folder = acdc.convert_acdc(official, tmp_path, 14, 1, "erosion", holdout=2, simulation_spacing=(3.0, 3.0))
    dj = dataset_json(folder)
    assert dj["weak_label"]["simulation_spacing"] == [3.0, 3.0]
    weak = [c for c, lvl in dj["supervision"].items() if lvl == "weak"]
    assert weak
    for case in weak:
        label = read(folder / "labelsTr" / f"{case}.nii.gz")
        assert (label != 4).any() and set(np.unique(label).tolist()) <= {1, 2, 3, 4}
    with pytest.raises(ConfKDInputError, match="simulated kinds"):
        acdc.convert_acdc(official, tmp_path, 15, 1, "unlabeled", holdout=2, simulation_spacing=(3.0, 3.0))


def test_source_nesting(tmp_path):
    make_official(tmp_path / "download" / "database", patients=PATIENTS[:3])
    expected = acdc.list_cases(tmp_path / "download" / "database", "erosion", holdout=1)
    for source in (tmp_path / "download", tmp_path / "download" / "database" / "training"):
        got = acdc.list_cases(source, "erosion", holdout=1)
        assert [[c.case_id for c in part] for part in got[:2]] == [[c.case_id for c in part] for part in expected[:2]]
    assert expected[2] == "official" and len(expected[0]) == 4 and len(expected[1]) == 2
    folder = acdc.convert_acdc(tmp_path / "download", tmp_path / "raw", 16, 1, "erosion", holdout=1)
    assert len(dataset_json(folder)["supervision"]) == 4


def test_info_cfg_optional(tmp_path):
    make_official(tmp_path, patients=PATIENTS[:3], info=False)
    train, test, layout = acdc.list_cases(tmp_path, "erosion", holdout=1)
    assert layout == "official" and len(train) == 4 and len(test) == 2


def test_testing_folder_as_holdout(tmp_path):
    make_official(tmp_path / "src", patients=PATIENTS[:3])
    make_official(tmp_path / "tst", patients=["patient101"], info=False)
    shutil.move(tmp_path / "tst" / "training", tmp_path / "src" / "testing")
    train, test, _ = acdc.list_cases(tmp_path / "src", "erosion", holdout="testing")
    assert {c.patient for c in train} == set(PATIENTS[:3]) and {c.patient for c in test} == {"patient101"}


def test_lv_only(official, tmp_path):
    folder = acdc.convert_acdc(official, tmp_path, 17, 2, "erosion", classes="lv", holdout=2)
    dj = dataset_json(folder)
    assert folder.name.endswith("_LV_s0")
    assert dj["labels"] == {"background": 0, "LV": 1, "ignore": 2}
    for case, level in dj["supervision"].items():
        written, dense = read(folder / "labelsTr" / f"{case}.nii.gz"), source_label(official, case) == 3
        if level == "full":
            np.testing.assert_array_equal(written, dense)
        else:
            assert set(np.unique(written)) == {1, 2}
            np.testing.assert_array_equal(written[written != 2], dense[written != 2])
    for path in (folder / "labelsTs").iterdir():
        np.testing.assert_array_equal(read(path), source_label(official, path.name[:-7]) == 3)


def test_main_prints_summary(official, tmp_path, capsys):
    acdc.main(["-i", str(official), "-o", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "pre"),
               "-d", "18", "--full", "0.5", "--weak", "points", "--points", "4", "--holdout", "2"])
    out = capsys.readouterr().out
    assert out.startswith("Dataset018_ACDC_0p5full_points_s0: full 4, weak 4, unlabeled 0 cases")
    assert "weak cases, annotated share of each class" in out
    assert (tmp_path / "pre" / "Dataset018_ACDC_0p5full_points_s0" / "splits_final.json").is_file()
    assert dataset_json(tmp_path / "raw" / "Dataset018_ACDC_0p5full_points_s0")["weak_label"]["params"]["k"] == 4


@pytest.mark.parametrize(("value", "expected"), [("testing", "testing"), ("0.25", 0.25), ("3", 3.0)])
def test_holdout_flag(value, expected):
    args = acdc.build_parser().parse_args(["--source", "x", "--id", "1", "--full", "1", "--weak", "expert",
                                           "--holdout", value])
    assert args.holdout == expected and acdc.build_parser().parse_args(args=[
        "--source", "x", "--id", "1", "--full", "1", "--weak", "expert"]).holdout is None
    assert (args.source, args.id) == (Path("x"), 1)  # the long forms of -i and -d


def test_verify_dataset_integrity_fabricated(erosion_dataset):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(erosion_dataset[0]), num_processes=1)


# ---------------------------------------------------------------------------------------------------------------------
# bad input: a ConfKDInputError naming the file or flag, and nothing left in the output root
# ---------------------------------------------------------------------------------------------------------------------


def _drop_gt(src: Path) -> str:
    path = src / "training" / "patient002" / "patient002_frame11.nii.gz"
    (src / "training" / "patient002" / "patient002_frame11_gt.nii.gz").unlink()
    return str(path)


def _bad_info(src: Path) -> str:
    path = src / "training" / "patient003" / "Info.cfg"
    path.write_text("ED: 1\nES: 14\nGroup: HCM\n")
    return str(path)


def _empty_patient(src: Path) -> str:
    (src / "training" / "patient009").mkdir()
    return str(src / "training" / "patient009")


OFFICIAL_ERRORS = {
    "frame without gt": (_drop_gt, {}),
    "Info.cfg frame missing": (_bad_info, {}),
    "patient folder without frames": (_empty_patient, {}),
    "expert on official": (lambda src: "--weak expert", {"weak": "expert"}),
    "spacing on official": (lambda src: "--spacing", {"spacing": (10, 1.5, 1.5)}),
    "default holdout too large": (lambda src: "--holdout 20", {"holdout": None}),
    "unknown patient": (lambda src: "patient042", {"patients": ["patient001", "patient042"]}),
}


@pytest.mark.parametrize("case", sorted(OFFICIAL_ERRORS))
def test_official_errors(tmp_path, case):
    src = make_official(tmp_path / "src", patients=PATIENTS[:4])
    make, kwargs = OFFICIAL_ERRORS[case]
    named = make(src)
    args = {"full": 1, "weak": "erosion", "holdout": 1, "dataset_id": 20, **kwargs}
    with pytest.raises(ConfKDInputError) as error:
        acdc.convert_acdc(src, tmp_path / "raw", preprocessed_root=tmp_path / "pre", **args)
    assert named in str(error.value)
    assert_no_output(tmp_path / "raw")
    assert_no_output(tmp_path / "pre")


def test_layout_errors(tmp_path):
    with pytest.raises(ConfKDInputError, match="is not a folder") as error:
        acdc.convert_acdc(tmp_path / "nowhere", tmp_path / "raw", 21, 1, "erosion")
    assert str(tmp_path / "nowhere") in str(error.value)
    (tmp_path / "other" / "training").mkdir(parents=True)
    (tmp_path / "other" / "image.nii.gz").write_bytes(b"")
    with pytest.raises(ConfKDInputError, match="unknown layout") as error:
        acdc.convert_acdc(tmp_path / "other", tmp_path / "raw", 21, 1, "erosion")
    assert "official ACDC layout" in str(error.value) and "WSL4MIS HDF5" in str(error.value)
    assert str(tmp_path / "other") in str(error.value)
    assert_no_output(tmp_path / "raw")


# ---------------------------------------------------------------------------------------------------------------------
# HDF5 layout (fabricated)
# ---------------------------------------------------------------------------------------------------------------------


def _h5(source: Path, case: str, key: str) -> np.ndarray:
    with h5py.File(source / "volumes" / f"{case}.h5", "r") as h5:
        return h5[key][()]


def check_hdf5_conversion(folder: Path, source: Path, lv: bool = False) -> None:
    """Images equal ``image``, full and test labels ``label``, weak labels ``scribble`` (4 -> ignore)."""
    ignore = 2 if lv else 4
    dense_of = (lambda a: (a == 3).astype(np.uint8)) if lv else (lambda a: a)
    for case, level in dataset_json(folder)["supervision"].items():
        image = sitk.ReadImage(str(folder / "imagesTr" / f"{case}_0000.nii.gz"))
        assert image.GetPixelID() == sitk.sitkFloat32
        np.testing.assert_allclose(image.GetSpacing(), (1.5, 1.5, 10.0))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), _h5(source, case, "image"))
        written = read(folder / "labelsTr" / f"{case}.nii.gz")
        if level == "full":
            np.testing.assert_array_equal(written, dense_of(_h5(source, case, "label")))
        else:
            scribble = _h5(source, case, "scribble")
            expected = np.where(scribble == 4, ignore, dense_of(scribble))
            np.testing.assert_array_equal(written, expected)
    for path in (folder / "labelsTs").iterdir():
        np.testing.assert_array_equal(read(path), dense_of(_h5(source, path.name[:-7], "label")))
        np.testing.assert_array_equal(read(folder / "imagesTs" / f"{path.name[:-7]}_0000.nii.gz"),
                                      _h5(source, path.name[:-7], "image"))


@pytest.mark.parametrize("classes", ["all", "lv"])
def test_hdf5_expert(tmp_path, classes):
    source = make_hdf5(tmp_path / "h5")
    folder = acdc.convert_acdc(source, tmp_path / "raw", 22, 1, "expert", classes=classes, spacing=(10, 1.5, 1.5))
    dj = dataset_json(folder)
    assert len(dj["supervision"]) == 6 and sorted(p.name for p in (folder / "labelsTs").iterdir()) == [
        "patient004_frame01.nii.gz", "patient004_frame12.nii.gz"]
    assert dj["weak_label"]["spacing_setting"] == [10, 1.5, 1.5] and dj["weak_label"]["kind"] == "expert"
    check_hdf5_conversion(folder, source, lv=classes == "lv")


def test_hdf5_simulated_kind(tmp_path):
    source = make_hdf5(tmp_path / "h5")
    folder = acdc.convert_acdc(source, tmp_path / "raw", 23, 1, "erosion", spacing=(10, 1.5, 1.5))
    for case, level in dataset_json(folder)["supervision"].items():
        written, dense = read(folder / "labelsTr" / f"{case}.nii.gz"), _h5(source, case, "label")
        annotated = written != IGNORE
        assert annotated.all() if level == "full" else annotated.any() and not annotated.all()
        np.testing.assert_array_equal(written[annotated], dense[annotated])


@pytest.mark.parametrize("kwargs, named", [
    ({}, "--spacing"),
    ({"spacing": (10, 0, 1.5)}, "--spacing"),
    ({"spacing": (10, 1.5, 1.5), "holdout": 2}, "--holdout"),
    ({"spacing": (10, 1.5, 1.5), "full": 4}, "--full 4"),
])
def test_hdf5_errors(tmp_path, kwargs, named):
    source = make_hdf5(tmp_path / "h5")
    with pytest.raises(ConfKDInputError) as error:
        acdc.convert_acdc(source, tmp_path / "raw", 24, **{"full": 1, "weak": "expert", **kwargs})
    assert named in str(error.value)
    assert_no_output(tmp_path / "raw")


def test_hdf5_split_naming_missing_volume(tmp_path):
    source = make_hdf5(tmp_path / "h5")
    (source / "split.json").write_text(json.dumps({"train": ["patient001", "patient077"], "val": ["patient004"]}))
    with pytest.raises(ConfKDInputError, match="patient077") as error:
        acdc.convert_acdc(source, tmp_path / "raw", 25, 1, "expert", spacing=(10, 1.5, 1.5))
    assert str(source / "split.json") in str(error.value)
    assert_no_output(tmp_path / "raw")


# ---------------------------------------------------------------------------------------------------------------------
# the real WSL4MIS copy (read in place, never copied into the repository)
# ---------------------------------------------------------------------------------------------------------------------

real_data = pytest.mark.skipif(not (REAL / "split.json").is_file(),
                               reason=f"the WSL4MIS ACDC copy is not at {REAL} (project data, not redistributable)")


@pytest.fixture(scope="module")
def real_patients() -> list[str]:
    split = json.loads((REAL / "split.json").read_text())
    return sorted(split["train"])[:4] + sorted(split["val"])[:2]


@real_data
@pytest.mark.parametrize("classes", ["all", "lv"])
def test_real_expert_conversion(tmp_path, real_patients, classes):
    folder = acdc.convert_acdc(REAL, tmp_path / "raw", 26, 1, "expert", classes=classes, spacing=(10, 1.5, 1.5),
                               patients=real_patients, preprocessed_root=tmp_path / "pre")
    manifest = dataset_json(folder)["supervision"]
    assert {c.split("_")[0] for c in manifest} == set(real_patients[:4])
    assert sorted(manifest.values()).count("full") == 2
    assert {p.name.split("_")[0] for p in (folder / "labelsTs").iterdir()} == set(real_patients[4:])
    check_hdf5_conversion(folder, REAL, lv=classes == "lv")
    if classes == "all":
        from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

        verify_dataset_integrity(str(folder), num_processes=1)


def test_a_missing_h5py_is_named_with_the_extra_to_install(tmp_path, monkeypatch):
    source = make_hdf5(tmp_path / "h5")
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` fail
    with pytest.raises(ConfKDInputError, match=r'pip install "nnunetv2-confkd\[acdc\]"'):
        acdc.convert_acdc(source, tmp_path / "raw", 23, 1, "expert", spacing=(10, 1.5, 1.5))
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())
