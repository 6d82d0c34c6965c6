"""The shared conversion machinery, tested once here: writing a dataset (``writer``, ``splits``, ``case_writer``:
levels, splits, the ``verify`` hook, overwrite; ``dense_twin``) and what a converter is asked for (``amounts``,
``budget``, ``holdout``, ``component_policy``, ``options``, ``reporting``: parsing, held-out draw, names, simulator
parameters, the component check, the command-line helpers). Sources are tiny in-memory cases; everything is written
under tmp_path."""

from __future__ import annotations

import argparse
import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2_confkd_conversion.amounts import parse_full, parse_holdout, parse_unlabeled
from nnunetv2_confkd_conversion.budget import Budget, default_name, effective_params, make_budget
from nnunetv2_confkd_conversion.cases import TEST, CaseData, DatasetSpec, SourceCase, read_case
from nnunetv2_confkd_conversion.component_policy import component_check, lost_components
from nnunetv2_confkd_conversion.dense_twin import twin_folder, write_with_dense_twin
from nnunetv2_confkd_conversion.holdout import HOLDOUT_SEED, choose_holdout, split_holdout
from nnunetv2_confkd_conversion.options import (
    add_budget_arguments,
    add_dense_twin_argument,
    add_holdout_arguments,
    run_converter,
    weak_params_from,
)
from nnunetv2_confkd_conversion.reporting import report
from nnunetv2_confkd_conversion.writer import check_output, write_mixed_dataset
from test_splits import assert_cv_folds

from nnunetv2_confkd.checks import ConfKDInputError

SHAPE = (3, 16, 16)  # numpy (z, y, x)
SPACING = (1.0, 1.0, 2.0)  # SimpleITK (x, y, z)
LABELS = {"background": 0, "organ": 1, "lesion": 2}
IGNORE = 3
PATIENTS = [f"p{i}" for i in range(6)]


# ---------------------------------------------------------------------------------------------------------------------
# in-memory sources
# ---------------------------------------------------------------------------------------------------------------------


def dense_label(index: int) -> np.ndarray:
    """An organ block (1) with two small lesions (2) in one slice: two 2D components of class 2."""
    label = np.zeros(SHAPE, np.uint8)
    label[:, 3:13, 2:14] = 1
    label[1, 5:7, 4 + index % 2:6 + index % 2] = 2
    label[1, 9:11, 10:12] = 2
    return label


def _read(index: int) -> CaseData:
    label = sitk.GetImageFromArray(dense_label(index))
    image = sitk.GetImageFromArray((dense_label(index) * 50 + index).astype(np.float32))
    for img in (image, label):
        img.SetSpacing(SPACING)
    return CaseData([image], label)


def source(patients=PATIENTS, frames: int = 2) -> list[SourceCase]:
    """``frames`` cases per patient, ``<patient>_f<frame>``."""
    return [SourceCase(f"{p}_f{f}", p, lambda i=i * frames + f: _read(i))
            for i, p in enumerate(patients) for f in range(frames)]


def spec(dataset_id: int = 7, name: str = "Toy", channel: str = "MR") -> DatasetSpec:
    return DatasetSpec(dataset_id, name, LABELS, {0: channel})


def write(tmp: Path, budget: Budget | None = None, train=None, test=(), **kwargs) -> Path:
    budget = budget or make_budget(2, "points", weak_params={"k": 1})
    return write_mixed_dataset(source() if train is None else train, list(test), kwargs.pop("spec", spec()), budget,
                               tmp / "raw", **kwargs)


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def dataset_json(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def drop_lesions(case, dense, label, level) -> None:
    """A broken simulator, seen through the hook: the weak label lost every lesion voxel."""
    label[label == 2] = IGNORE


# ---------------------------------------------------------------------------------------------------------------------
# amounts, held-out draw, names
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("parse", "value", "expected"), [
    (parse_full, "3", 3.0), (parse_full, "0.25", 0.25), (parse_unlabeled, "0", 0.0), (parse_unlabeled, "2", 2.0),
    (parse_holdout, "0", 0.0), (parse_holdout, 0.2, 0.2),
])
def test_amounts(parse, value, expected):
    assert parse(value) == expected


@pytest.mark.parametrize(("parse", "value"), [
    (parse_full, "0"), (parse_full, "1.5"), (parse_full, "-1"), (parse_full, "inf"), (parse_unlabeled, "x"),
    (parse_unlabeled, "-0.5"), (parse_holdout, "2.5"), (parse_holdout, "nan"),
])
def test_bad_amounts_name_the_flag(parse, value):
    flag = "--" + parse.__name__.removeprefix("parse_")
    with pytest.raises(ConfKDInputError, match=f"{flag} must be .*got '{value}'"):
        parse(value)


def test_holdout_draw_is_fixed_and_patient_level():
    patients = [f"patient{i:03d}" for i in range(10)]
    held = choose_holdout(patients, 3)
    assert len(held) == 3 and held == choose_holdout(list(reversed(patients)), "3", HOLDOUT_SEED)
    assert choose_holdout(patients, 0.2) == choose_holdout(patients, 2)  # a fraction of the patients: the same draw
    assert choose_holdout(patients, 0) == []
    assert choose_holdout(patients, 0.01) != []  # a positive fraction holds out at least one patient
    train, test = split_holdout(source(PATIENTS), 2)
    assert {c.patient for c in train}.isdisjoint({c.patient for c in test}) and len(test) == 4


def test_holdout_groups_stratify_round_robin():
    groups = {f"p{i}": "ABC"[i % 3] for i in range(9)}
    assert sorted(groups[p] for p in choose_holdout(groups, 3, groups=groups)) == ["A", "B", "C"]
    one_group = {p: "X" for p in groups}
    assert choose_holdout(groups, 4, groups=one_group) == choose_holdout(groups, 4)


@pytest.mark.parametrize("holdout", [6, 0.999, "2.5", -1])
def test_holdout_errors(holdout):
    with pytest.raises(ConfKDInputError, match="--holdout"):
        choose_holdout(PATIENTS, holdout)


@pytest.mark.parametrize(("args", "expected"), [
    (("LiTS", 5, "erosion"), "LiTS_5full_erosion_s0"),
    (("ACDC", 0.1, "points", 2, 0.5), "ACDC_0p1full_points_0p5unl_s2"),
    (("ACDC", 3.0, "expert", 1, 0, "LV"), "ACDC_3full_expert_LV_s1"),
])
def test_default_name(args, expected):
    assert default_name(*args) == expected


# ---------------------------------------------------------------------------------------------------------------------
# simulator parameters and the budget
# ---------------------------------------------------------------------------------------------------------------------


def test_effective_params_fill_in_defaults():
    assert effective_params("erosion", None) == {"iterations": 10}
    assert effective_params("scribble", {"width_mm": 2.0}) == {"fraction": 0.5, "width_mm": 2.0, "erode": 1}
    assert effective_params("unlabeled", {}) == {} and effective_params("expert", None) == {}


@pytest.mark.parametrize(("weak", "given", "message"), [
    ("erosion", {"k": 3}, "--points applies to --weak points, not to --weak erosion"),
    ("points", {"iterations": 2, "width_mm": 1}, "--iterations applies .*; --scribble-width-mm applies"),
    ("erosion", {"iterations": -1}, "--weak erosion with --iterations -1"),
    ("unlabeled", {"foo": 1}, "--weak unlabeled takes no simulator parameters"),
])
def test_effective_params_errors_name_the_flag(weak, given, message):
    with pytest.raises(ConfKDInputError, match=message):
        effective_params(weak, given)


def test_make_budget():
    budget = make_budget("0.5", "points", 3, {"k": 2}, True, [2], unlabeled="1")
    assert budget == Budget(full=0.5, weak="points", unlabeled=1.0, seed=3, params={"k": 2, "radius_mm": 0.0},
                            background=True, component_classes=(2,))
    with pytest.raises(ConfKDInputError, match="--weak must be one of"):
        make_budget(1, "expert")
    assert make_budget(1, "expert", kinds=("erosion", "expert")).params == {}


# ---------------------------------------------------------------------------------------------------------------------
# the writer: request checks, levels, splits, determinism
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dataset_id", "name", "message"), [
    (7, "bad name", "--name 'bad name'"), (7, "_x", "--name"), (1000, "Toy", r"--id\) must lie in 1..999"),
    (5, "Other", "--id 5 is already used"), (6, "Toy", "exists; pass --overwrite"),
])
def test_check_output(tmp_path, dataset_id, name, message):
    (tmp_path / "Dataset005_Toy").mkdir()
    (tmp_path / "Dataset006_Toy").mkdir()
    with pytest.raises(ConfKDInputError, match=message):
        check_output(tmp_path, dataset_id, name, overwrite=False)
    assert check_output(tmp_path, 6, "Toy", overwrite=True) == tmp_path / "Dataset006_Toy"


def test_levels_and_splits_are_patient_level(tmp_path):
    folder = write(tmp_path, make_budget(3, "erosion", unlabeled=1), test=source(["t0"]), preprocessed_root=tmp_path)
    dj = dataset_json(folder)
    levels = {}
    for case, level in dj["supervision"].items():
        levels.setdefault(case.split("_")[0], set()).add(level)
    assert sorted(v.pop() for v in levels.values() if len(v) == 1) == ["full"] * 3 + ["unlabeled"] + ["weak"] * 2
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == ["t0_f0.nii.gz", "t0_f1.nii.gz"]
    splits = json.loads((folder / "splits_final.json").read_text())
    assert json.loads((tmp_path / folder.name / "splits_final.json").read_text()) == splits
    assert len(splits) == 3  # one cross-validation fold per full patient, numbered from 0
    assert_cv_folds(splits, dj["supervision"], lambda case: case.split("_")[0])


def test_bad_requests_write_nothing(tmp_path):
    cases = source()
    for train, test, message in ((cases, cases[:1], "occur twice"), (cases[1:], cases[:1], "both in training"),
                                 ([], cases, "no training case"), (cases, (), "--full 7 asks for more")):
        budget = make_budget(7 if message.startswith("--full") else 1, "points")
        with pytest.raises(ConfKDInputError, match=message):
            write(tmp_path, budget, train, test)
        assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []


def _image(array: np.ndarray, spacing=SPACING) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


@pytest.mark.parametrize(("image", "label", "message"), [
    (np.zeros((3, 16, 15)), dense_label(0), r"case.nii: channel 0 has size \(15, 16, 3\) but the label has"),
    (np.zeros(SHAPE), dense_label(0), "case.nii: channel 0 has spacing"),
    (np.zeros(SHAPE), dense_label(0) * 2, r"case.nii: label values \[4\] are not among the declared labels"),
    (np.zeros(SHAPE), dense_label(0) + 0.5, "case.nii: label image holds non-integer values"),
])
def test_bad_case_files_name_the_origin(tmp_path, image, label, message):
    spacing = (1.0, 1.0, 3.0) if "spacing" in message else SPACING
    case = CaseData([_image(image.astype(np.float32), spacing)], _image(label))
    cases = [SourceCase("a", "a", lambda: case, "case.nii"), *source(PATIENTS[:2])]
    with pytest.raises(ConfKDInputError, match=message):
        write(tmp_path, make_budget(1, "points"), cases)
    assert list((tmp_path / "raw").iterdir()) == []


def test_read_case(tmp_path):
    sitk.WriteImage(_image(dense_label(0)), str(tmp_path / "label.nii.gz"))
    sitk.WriteImage(_image(dense_label(1).astype(np.float32)), str(tmp_path / "image.nii.gz"))
    case = read_case([tmp_path / "image.nii.gz"], tmp_path / "label.nii.gz")
    assert len(case.images) == 1 and case.expert is None
    np.testing.assert_array_equal(sitk.GetArrayFromImage(case.label), dense_label(0))
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(ConfKDInputError, match=f"{tmp_path / 'broken.nii.gz'}: SimpleITK cannot read it"):
        read_case([tmp_path / "image.nii.gz", tmp_path / "broken.nii.gz"], tmp_path / "label.nii.gz")


def test_same_request_same_bytes_whatever_the_case_order(tmp_path):
    cases = source()
    shuffled = random.Random(0).sample(cases, len(cases))
    first = write(tmp_path / "a", make_budget(2, "scribble", seed=3), cases, preprocessed_root=tmp_path / "a")
    second = write(tmp_path / "b", make_budget(2, "scribble", seed=3), shuffled, preprocessed_root=tmp_path / "b")
    assert files(first) == files(second)
    other = write(tmp_path / "c", make_budget(2, "scribble", seed=4), cases)
    assert files(other) != files(first)


def test_overwrite_replaces_the_dataset(tmp_path):
    folder = write(tmp_path)
    (folder / "marker.txt").write_text("x")
    assert write(tmp_path, make_budget(1, "unlabeled"), overwrite=True) == folder
    assert not (folder / "marker.txt").exists()
    assert set(dataset_json(folder)["supervision"].values()) == {"full", "unlabeled"}
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [folder.name]


# ---------------------------------------------------------------------------------------------------------------------
# the verify hook and the component check
# ---------------------------------------------------------------------------------------------------------------------


def test_verify_sees_every_case_before_it_is_written(tmp_path):
    seen = []

    def verify(case, dense, label, level):
        part = "Ts" if level == TEST else "Tr"
        assert not (tmp_path / "raw" / spec().folder_name).exists()
        assert not list((tmp_path / "raw").glob(f".*/labels{part}/{case.case_id}.nii.gz"))
        np.testing.assert_array_equal(dense, dense_label(int(case.case_id[1]) * 2 + int(case.case_id[-1])))
        assert ((label == dense) | (label == IGNORE)).all()
        seen.append((case.case_id, level))

    folder = write(tmp_path, train=source(PATIENTS[:4]), test=source(PATIENTS[4:5]), verify=verify)
    manifest = dataset_json(folder)["supervision"]
    assert sorted(seen) == sorted([*manifest.items(), ("p4_f0", TEST), ("p4_f1", TEST)])


def test_failing_verify_on_overwrite_keeps_the_previous_dataset(tmp_path):
    folder = write(tmp_path, make_budget(2, "points", weak_params={"k": 1}, component_classes=[2]),
                   preprocessed_root=tmp_path / "pre")
    before, splits = files(folder), files(tmp_path / "pre")
    with pytest.raises(RuntimeError, match=r"p\d_f\d: class 2 2/2 components.*nothing was written"):
        write(tmp_path, make_budget(1, "points", seed=5), overwrite=True, preprocessed_root=tmp_path / "pre",
              verify=lambda *a: (drop_lesions(*a), component_check([2])(*a)))
    assert files(folder) == before and files(tmp_path / "pre") == splits
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [folder.name]  # no temporary folder left


def test_component_check_policy():
    dense = dense_label(0)
    case = SourceCase("c", "c", lambda: None)
    weak = np.where(dense == 2, IGNORE, dense)
    for level in ("full", "unlabeled", TEST):  # only weak labels are checked
        component_check([2])(case, dense, weak, level)
    component_check([1])(case, dense, weak, "weak")
    with pytest.raises(RuntimeError, match=r"\(c: class 2 2/2 components\)"):
        component_check([2])(case, dense, weak, "weak")
    with pytest.warns(UserWarning, match=r"lost every annotated voxel of some components \(c: class 2 2/2"):
        component_check([1, 2], strict=False)(case, dense, weak, "weak")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        component_check([2], strict=False)(case, dense, np.where(dense == 2, 2, IGNORE), "weak")


def test_lost_components_are_per_slice():
    dense = np.zeros((2, 4, 4), np.uint8)
    dense[:, 1:3, 1:3] = 2  # one 3D blob, two 2D components
    dense[0, 0, 3] = 2  # diagonal neighbour: the same 8-connected component
    weak = np.full_like(dense, IGNORE)
    weak[0, 0, 3] = 2
    assert lost_components(dense, weak, [2, 1]) == {2: (1, 2), 1: (0, 0)}


def test_simulated_component_classes_keep_every_component(tmp_path):
    budget = make_budget(1, "erosion", component_classes=[2])
    write(tmp_path, budget, verify=component_check([2]))  # raises if the simulator lost a lesion


# ---------------------------------------------------------------------------------------------------------------------
# the dense twin
# ---------------------------------------------------------------------------------------------------------------------


def test_dense_twin(tmp_path):
    cases, test = source(PATIENTS[:5]), source(PATIENTS[5:])
    mixed, twin = write_with_dense_twin(cases, test, spec(), make_budget(1, "points"), tmp_path / "raw",
                                        tmp_path / "pre", twin_id=8)
    assert twin == twin_folder(mixed, 8) == tmp_path / "raw" / "Dataset008_ToyDense"
    dj_mixed, dj_twin = dataset_json(mixed), dataset_json(twin)
    assert dj_twin["labels"] == dj_mixed["labels"] and set(dj_twin["supervision"].values()) == {"full"}
    assert sorted(dj_twin["supervision"]) == sorted(dj_mixed["supervision"])
    splits = (mixed / "splits_final.json").read_text()
    assert (twin / "splits_final.json").read_text() == splits == (tmp_path / "pre" / twin.name /
                                                                  "splits_final.json").read_text()
    for part in ("labelsTr", "labelsTs"):
        for path in (twin / part).iterdir():
            index = PATIENTS.index(path.name[:2]) * 2 + int(path.name[4])
            np.testing.assert_array_equal(read(path), dense_label(index))
    names = [sorted(p.name for p in (folder / "labelsTs").iterdir()) for folder in (mixed, twin)]
    assert names[0] == names[1] == ["p5_f0.nii.gz", "p5_f1.nii.gz"]


@pytest.mark.parametrize(("twin_id", "message"), [(7, "--dense-twin-id 7 must differ"), (9, "--id 9 is already used")])
def test_dense_twin_is_checked_before_writing(tmp_path, twin_id, message):
    (tmp_path / "raw" / "Dataset009_Other").mkdir(parents=True)
    with pytest.raises(ConfKDInputError, match=message):
        write_with_dense_twin(source(), [], spec(), make_budget(1, "points"), tmp_path / "raw", twin_id=twin_id)
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["Dataset009_Other"]


# ---------------------------------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="confkd_test")
    add_budget_arguments(result, "Toy_<full>full_<weak>_s<seed>")
    add_holdout_arguments(result, 0.2)
    add_dense_twin_argument(result)
    return result


def test_budget_arguments():
    args = parser().parse_args(["--id", "3", "--full", "0.5", "--weak", "scribble", "--scribble-width-mm", "2",
                                "--scribble-erode", "0"])
    assert (args.full, args.unlabeled, args.holdout, args.holdout_seed, args.dense_twin_id) == (0.5, 0, 0.2, 1234, None)
    assert weak_params_from(args) == {"width_mm": 2.0, "erode": 0}


@pytest.mark.parametrize("argv", [["-d", "3", "-o", "raw"], ["--id", "3", "--out", "raw"]])
def test_dataset_id_and_output_flags_follow_nnunet_and_keep_their_long_forms(argv):
    args = parser().parse_args([*argv, "--full", "1", "--weak", "points"])
    assert (args.id, args.out) == (3, Path("raw"))


@pytest.mark.parametrize(("argv", "message"), [
    (["--full", "1.5"], "argument --full: --full must be a positive integer"),
    (["--full", "1", "--holdout", "-2"], "argument --holdout: --holdout must be 0,"),
    (["--full", "1", "--weak", "expert"], "invalid choice: 'expert'"),
])
def test_budget_argument_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["--id", "3", "--weak", "points", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_run_converter(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    calls = []

    def convert(args, raw, preprocessed):
        calls.append((raw, preprocessed))
        budget = make_budget(args.full, args.weak, args.seed, weak_params_from(args))
        return write_with_dense_twin(source(), [], spec(args.id, channel="CT"), budget, raw, preprocessed,
                                     twin_id=args.dense_twin_id)[0]

    text = run_converter(parser(), ["--id", "7", "--full", "2", "--weak", "points", "--dense-twin-id", "8"], convert)
    assert calls == [(tmp_path / "raw", tmp_path / "pre")]
    assert text.startswith("Dataset007_Toy: full 4, weak 8, unlabeled 0 cases")
    assert "Dataset008_ToyDense: full 12, weak 0, unlabeled 0 cases" in text
    assert "nnUNetv2_move_plans_between_datasets -s 008 -t 007" in text
    with pytest.raises(SystemExit) as exit_info:  # bad input: status 2, the message, no traceback
        run_converter(parser(), ["--id", "7", "--full", "2", "--weak", "points"], convert)
    assert exit_info.value.code == 2 and "confkd_test: error: " in capsys.readouterr().err
    monkeypatch.delenv("nnUNet_raw")
    with pytest.raises(SystemExit):
        run_converter(parser(), ["--id", "9", "--full", "2", "--weak", "points"], convert)
    assert "give -o/--out or set nnUNet_raw" in capsys.readouterr().err and len(calls) == 2


def test_report_hints_ct_only(tmp_path):
    mr = write(tmp_path)
    ct = write(tmp_path, spec=spec(8, "ToyCT", "CT"))
    assert "fingerprint" not in report(mr) and "(no twin written" in report(ct)
    assert report(mr).splitlines()[0] == "Dataset007_Toy: full 4, weak 8, unlabeled 0 cases"


# ---------------------------------------------------------------------------------------------------------------------
# empty weak annotations
# ---------------------------------------------------------------------------------------------------------------------


def _empty_read() -> CaseData:
    label = sitk.GetImageFromArray(np.zeros(SHAPE, np.uint8))  # no structure at all
    image = sitk.GetImageFromArray(np.zeros(SHAPE, np.float32))
    for img in (image, label):
        img.SetSpacing(SPACING)
    return CaseData([image], label)


def test_a_weak_case_without_any_annotation_is_marked_unlabeled_with_a_warning(tmp_path):
    train = source() + [SourceCase("p9_f0", "p9", _empty_read)]
    budget = make_budget(1, "erosion", seed=3)
    with pytest.warns(UserWarning, match="case p9_f0: its simulated weak label has no annotated voxel"):
        out = write(tmp_path, budget=budget, train=train)
    assert dataset_json(out)["supervision"]["p9_f0"] == "unlabeled"
    assert np.all(read(out / "labelsTr" / "p9_f0.nii.gz") == IGNORE)
