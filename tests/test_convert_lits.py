"""The LiTS converter on fabricated official and MSD trees (tiny volumes, CPU, a few seconds per conversion). What
every converter shares (budget checks, overwrite, determinism, the dense twin's content, error exit of main) is tested
once in test_conversion.py; here: the layouts, the tumor policy and the command line's wiring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2_confkd_conversion import lits
from scipy import ndimage
from test_splits import assert_cv_folds

from nnunetv2_confkd.checks import ConfKDInputError

SHAPE = (6, 32, 28)  # numpy (z, y, x)
SPACING = (0.8, 0.8, 2.5)  # SimpleITK (x, y, z)
ORIGIN = (-10.0, 5.0, 30.0)
IGNORE = 3
N_VOLUMES = 8


def make_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like int16 volume and its label: a liver ellipsoid (1) holding 1-3 small tumor blobs (2)."""
    zz, yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1], 0:SHAPE[2]].astype(float)
    cz, cy, cx = 2.5, rng.uniform(14, 18), rng.uniform(12, 16)
    label = np.zeros(SHAPE, np.uint8)
    label[((zz - cz) / 3.2) ** 2 + ((yy - cy) / 11) ** 2 + ((xx - cx) / 10) ** 2 < 1] = 1
    for _ in range(rng.integers(1, 4)):
        ty, tx, r = cy + rng.uniform(-6, 6), cx + rng.uniform(-6, 6), rng.uniform(1.0, 2.6)
        tz = rng.integers(1, 5)
        blob = ((zz - tz) / 1.2) ** 2 + ((yy - ty) / r) ** 2 + ((xx - tx) / r) ** 2 < 1
        label[blob & (label == 1)] = 2
    image = np.where(label == 0, -200, np.where(label == 1, 80, 140)) + rng.normal(0, 15, SHAPE)
    return image.astype(np.int16), label


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def make_official(root: Path, n: int = N_VOLUMES, seed: int = 0) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``Training Batch 1`` (first half) and ``Training Batch 2`` with ``volume-N.nii``/``segmentation-N.nii``, plus
    macOS debris that must be skipped."""
    rng = np.random.default_rng(seed)
    data = {}
    for i in range(n):
        batch = root / f"Training Batch {1 if i < n // 2 else 2}"
        data[i] = make_volume(rng)
        _write(data[i][0], batch / f"volume-{i}.nii")
        _write(data[i][1], batch / f"segmentation-{i}.nii")
    (root / "Training Batch 1" / "._volume-0.nii").write_bytes(b"\x00\x05\x16\x07 not an image")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "volume-99.nii").write_bytes(b"junk")
    return data


def make_msd(root: Path, n: int = N_VOLUMES, seed: int = 0) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """MSD ``Task03_Liver`` with ``imagesTr/liver_N.nii.gz``, ``labelsTr``, unlabeled ``imagesTs`` and debris."""
    rng = np.random.default_rng(seed)
    data = {}
    for i in range(n):
        data[i] = make_volume(rng)
        _write(data[i][0], root / "imagesTr" / f"liver_{i}.nii.gz")
        _write(data[i][1], root / "labelsTr" / f"liver_{i}.nii.gz")
    _write(make_volume(rng)[0], root / "imagesTs" / "liver_200.nii.gz")
    (root / "imagesTr" / "._liver_0.nii.gz").write_bytes(b"junk")
    (root / "labelsTr" / "._liver_0.nii.gz").write_bytes(b"junk")
    return data


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def tumor_components(dense: np.ndarray, weak: np.ndarray) -> tuple[int, int]:
    """(tumor components of all slices, those with an annotated tumor voxel), 8-connected per 2D slice."""
    total = annotated = 0
    for d, w in zip(dense, weak, strict=True):
        components, n = ndimage.label(d == 2, structure=np.ones((3, 3)))
        total += n
        annotated += sum(bool(((components == i) & (w == 2)).any()) for i in range(1, n + 1))
    return total, annotated


def leftovers(raw: Path) -> list[str]:
    return sorted(p.name for p in raw.iterdir() if p.name.startswith(".")) if raw.exists() else []


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("lits_official")
    return root, make_official(root)


def convert(source: Path, tmp: Path, weak: str = "erosion", **kwargs) -> Path:
    kwargs = {"holdout": 2, "preprocessed_root": tmp / "pre", **kwargs}
    return lits.convert_lits(source, tmp / "raw", kwargs.pop("dataset_id", 501), kwargs.pop("full", 2), weak,
                             **kwargs)


@pytest.mark.parametrize("weak", ["erosion", "points", "scribble", "unlabeled"])
def test_official_layout_per_kind(official, tmp_path, weak):
    source, data = official
    params = {"points": {"k": 2}, "scribble": {"fraction": 0.5}}.get(weak, {})
    folder = convert(source, tmp_path, weak, weak_params=params)
    assert folder == tmp_path / "raw" / f"Dataset501_LiTS_2full_{weak}_s0"
    dj = json.loads((folder / "dataset.json").read_text())
    assert dj["labels"] == {"background": 0, "liver": 1, "tumor": 2, "ignore": IGNORE}
    assert dj["channel_names"] == {"0": "CT"} and dj["file_ending"] == ".nii.gz"
    manifest = dj["supervision"]
    train = sorted(p.name[:-len(".nii.gz")] for p in (folder / "labelsTr").iterdir())
    test = sorted(p.name[:-len(".nii.gz")] for p in (folder / "labelsTs").iterdir())
    assert sorted(manifest) == train and dj["numTraining"] == len(train) == N_VOLUMES - 2 and len(test) == 2
    assert not set(train) & set(test) and set(train) | set(test) == {f"lits_{i:03d}" for i in range(N_VOLUMES)}
    levels = sorted(manifest.values())
    assert levels.count("full") == 2 and set(levels) - {"full"} == {"unlabeled" if weak == "unlabeled" else "weak"}
    assert dj["weak_label"]["kind"] == weak and dj["weak_label"]["component_classes"] == [2]
    for case in train + test:
        image_file = folder / ("imagesTr" if case in train else "imagesTs") / f"{case}_0000.nii.gz"
        image, dense = data[int(case[-3:])]
        written_image = sitk.ReadImage(str(image_file))
        assert written_image.GetSpacing() == pytest.approx(SPACING) and written_image.GetOrigin() == ORIGIN
        np.testing.assert_array_equal(sitk.GetArrayFromImage(written_image), image)
        label_image = sitk.ReadImage(str(folder / ("labelsTr" if case in train else "labelsTs") / f"{case}.nii.gz"))
        assert label_image.GetSpacing() == written_image.GetSpacing() and label_image.GetOrigin() == ORIGIN
        label = sitk.GetArrayFromImage(label_image)
        if case in test or manifest[case] == "full":
            np.testing.assert_array_equal(label, dense)
        elif weak == "unlabeled":
            assert (label == IGNORE).all()
        else:
            annotated = label != IGNORE
            assert annotated.any() and np.array_equal(label[annotated], dense[annotated])
            assert (label[annotated] != 0).all()  # no background without --background
            total, hit = tumor_components(dense, label)
            assert total > 0 and hit == total
    splits = json.loads((folder / "splits_final.json").read_text())
    assert splits == json.loads((tmp_path / "pre" / folder.name / "splits_final.json").read_text())
    assert len(splits) == 2  # two full volumes: one cross-validation fold each
    assert_cv_folds(splits, manifest, lambda case: case)  # one patient per LiTS volume
    assert leftovers(tmp_path / "raw") == []


def test_msd_layout_and_nnunet_integrity(tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    data = make_msd(tmp_path / "Task03_Liver")
    folder = convert(tmp_path / "Task03_Liver", tmp_path, "scribble", full=0.5, holdout=0.25, name="LiverMSD",
                     weak_params={"width_mm": 1.6})
    dj = json.loads((folder / "dataset.json").read_text())
    assert folder.name == "Dataset501_LiverMSD"
    assert sorted(dj["supervision"]) == sorted(f"liver_{i:03d}" for i in range(N_VOLUMES) if
                                               f"liver_{i:03d}" not in
                                               {p.name[:9] for p in (folder / "imagesTs").iterdir()})
    assert len(list((folder / "imagesTs").iterdir())) == 2  # 0.25 of 8; MSD's unlabeled imagesTs is not read
    assert list(dj["supervision"].values()).count("full") == 3  # 0.5 of the 6 training volumes
    for case, level in dj["supervision"].items():
        label, dense = read(folder / "labelsTr" / f"{case}.nii.gz"), data[int(case[-3:])][1]
        if level == "weak":
            assert tumor_components(dense, label)[0] == tumor_components(dense, label)[1]
    verify_dataset_integrity(str(folder), num_processes=1)


def _drop_tumor(monkeypatch) -> None:
    import nnunetv2_confkd_conversion.case_writer as case_writer

    original = case_writer.simulate_weak_label

    def broken(kind, dense, spacing, rng, ignore_label, **kwargs):
        weak = original(kind, dense, spacing, rng, ignore_label, **kwargs)
        weak[weak == 2] = ignore_label
        return weak

    monkeypatch.setattr(case_writer, "simulate_weak_label", broken)


def test_tumor_check_raises_and_keeps_the_previous_dataset(official, tmp_path, monkeypatch):
    folder = convert(official[0], tmp_path, "erosion", name="LiTS_tumor")
    before = {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    _drop_tumor(monkeypatch)
    with pytest.raises(RuntimeError, match=r"lits_\d{3}: class 2"):
        convert(official[0], tmp_path, "points", name="LiTS_tumor", overwrite=True)
    assert {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} == before
    assert [p.name for p in (tmp_path / "raw").iterdir()] == [folder.name]


def test_tumor_check_warns_without_the_policy(official, tmp_path):
    # per class, the erosion of a slice with a large and a small tumor keeps only the large one's core
    with pytest.warns(UserWarning, match=r"lost every annotated voxel of some components \(lits_\d{3}: class 2"):
        folder = convert(official[0], tmp_path, "erosion", tumor_components=False, full=1)
    assert json.loads((folder / "dataset.json").read_text())["weak_label"]["component_classes"] == []


def _rewrite(path: Path, array: np.ndarray, spacing=SPACING) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def _break(root: Path, problem: str) -> str:
    """Damage a 4-volume official tree (volumes 0, 1 in batch 1; 2, 3 in batch 2); return the expected message."""
    batch1, batch2 = root / "Training Batch 1", root / "Training Batch 2"
    if problem == "missing segmentation":
        (batch2 / "segmentation-3.nii").unlink()
        return "volume-3.nii: no matching segmentation-3"
    if problem == "missing volume":
        (batch1 / "volume-1.nii").unlink()
        return "segmentation-1.nii: no matching volume-1"
    if problem == "label value":
        _rewrite(batch2 / "segmentation-2.nii", np.full(SHAPE, 4, np.uint8))
        return r"segmentation-2.nii .*label values \[4\]"
    if problem == "duplicate index":
        _rewrite(batch1 / "segmentation-2.nii.gz", np.zeros(SHAPE, np.uint8))
        return "segmentation-2.nii: index 2 also in .*segmentation-2.nii.gz"
    for path in root.rglob("*.nii"):
        path.unlink()
    return "unknown layout.*Expected the official LiTS layout"


PROBLEMS = ["missing segmentation", "missing volume", "label value", "duplicate index", "unknown layout"]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_bad_source_names_the_file(tmp_path, problem):
    source = tmp_path / "lits"
    make_official(source, n=4)
    expected = _break(source, problem)
    with pytest.raises(ConfKDInputError, match=expected):
        convert(source, tmp_path, "erosion", holdout=0, full=1)
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []
    assert not (tmp_path / "pre").exists()


def test_main_with_dense_twin(official, tmp_path, capsys):
    lits.main(["-i", str(official[0]), "-o", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "pre"),
               "-d", "502", "--full", "1", "--weak", "points", "--points", "1", "--holdout", "0.25",
               "--dense-twin-id", "503"])
    out = capsys.readouterr().out
    mixed = tmp_path / "raw" / "Dataset502_LiTS_1full_points_s0"
    twin = tmp_path / "raw" / "Dataset503_LiTS_1full_points_s0Dense"
    assert "full 1, weak 5, unlabeled 0 cases" in out and "full 6, weak 0, unlabeled 0 cases" in out
    assert "nnUNetv2_move_plans_between_datasets -s 503 -t 502" in out and "fingerprint" in out
    assert json.loads((mixed / "dataset.json").read_text())["weak_label"]["params"] == {"k": 1, "radius_mm": 0.0}
    assert (tmp_path / "pre" / twin.name / "splits_final.json").is_file()
    for path in (twin / "labelsTr").iterdir():
        case = path.name[:-len(".nii.gz")]
        index = int(case[-3:])
        dense = read(official[0] / f"Training Batch {1 if index < N_VOLUMES // 2 else 2}" / f"segmentation-{index}.nii")
        np.testing.assert_array_equal(read(path), dense)


@pytest.mark.parametrize("argv", [["-i", "src", "-d", "7", "-o", "raw"],
                                  ["--source", "src", "--id", "7", "--out", "raw"]])
def test_input_id_and_output_flags(argv):
    args = lits.build_parser().parse_args([*argv, "--full", "1", "--weak", "points"])
    assert (args.source, args.id, args.out) == (Path("src"), 7, Path("raw"))
