"""``confkd_demo``'s pieces that need no training: the demo's synthetic data (the weak cases show variation that the
full cases lack), the progress lines read from nnU-Net's training log, the prediction figure, the flags."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2_confkd_conversion import synthetic
from nnunetv2_confkd_conversion.synthetic import DEMO_SPEC, SyntheticSpec, synthetic_cases, training_levels

from nnunetv2_confkd.study import demo
from nnunetv2_confkd.study.demo_report import (
    EpochMonitor,
    EpochReport,
    format_epoch,
    parse_epochs,
    seconds_left,
    write_prediction_figure,
)

# ---------------------------------------------------------------------------------------------------------- the data


def _contrast_and_size(image: np.ndarray, label: np.ndarray) -> tuple[float, int]:
    """Mean cavity intensity minus mean wall intensity (/1000), and voxels of wall + cavity."""
    return float(image[label == 2].mean() - image[label == 1].mean()) / 1000, int(np.isin(label, (1, 2)).sum())


@pytest.fixture(scope="module")
def demo_cases():
    return training_levels(DEMO_SPEC), synthetic_cases(DEMO_SPEC)


def test_demo_levels(demo_cases):
    levels, cases = demo_cases
    assert sorted(c for c, level in levels.items() if level == "full") == ["case_005", "case_010", "case_012",
                                                                             "case_016"]
    assert [sum(v == level for v in levels.values()) for level in ("full", "weak", "unlabeled")] == [4, 14, 4]
    assert list(cases)[-8:] == [f"test_{i:03d}" for i in range(8)]


def test_weak_cases_show_what_full_cases_lack(demo_cases):
    """Every full case has a bright cavity and a mid-sized ring; weak and held-out cases also have dark cavities and
    rings outside the full cases' size range."""
    levels, cases = demo_cases
    stats = {case: _contrast_and_size(*arrays) for case, arrays in cases.items()}
    full = [stats[c] for c, level in levels.items() if level == "full"]
    weak = [stats[c] for c, level in levels.items() if level == "weak"]
    test = [stats[c] for c in cases if c.startswith("test_")]
    assert min(contrast for contrast, _ in full) > 0.3
    lo, hi = min(size for _, size in full), max(size for _, size in full)
    assert (lo, hi) == (2056, 2342)
    assert sum(contrast < 0 for contrast, _ in weak) == 4
    assert sum(contrast < 0 for contrast, _ in test) == 4
    assert sum(not lo <= size <= hi for _, size in weak) == 9
    assert sum(not lo <= size <= hi for _, size in test) == 8
    assert min(size for _, size in weak) == 1140 and max(size for _, size in weak) == 3384


def test_shared_population_is_unchanged():
    """The default population (the tests' dataset) draws exactly what it always drew."""
    image, label = synthetic_cases(SyntheticSpec())["case_000"]
    assert np.bincount(label.ravel()).tolist() == [22246, 1272, 486, 572]
    assert float(image.sum()) == pytest.approx(5563680.5, rel=1e-6)


def test_unknown_variation_is_refused():
    with pytest.raises(ValueError, match="variation"):
        SyntheticSpec(variation="wide")


def test_written_manifest_matches_the_levels(tmp_path):
    out = tmp_path / "raw"
    synthetic.main(["-o", str(out), "-d", "7", "--variation", "narrow-full"])
    dataset_json = json.loads((out / "Dataset007_ConfKDSynthetic" / "dataset.json").read_text())
    assert dataset_json["supervision"] == training_levels(DEMO_SPEC)
    assert dataset_json["description"] == synthetic.description(DEMO_SPEC)
    assert len(list((out / "Dataset007_ConfKDSynthetic" / "labelsTs").glob("*.nii.gz"))) == 8


# ------------------------------------------------------------------------------------------------------ progress

# as nnU-Net writes it: every line ends with a space
SAMPLE_LOG = "\n" + "".join(line + " \n" for line in (
    '#######################################################################',
    '2026-12-07 07:11:26.257875: Using splits from existing split file: splits_final.json',
    " {'data_identifier': 'nnUNetPlans_2d', 'batch_size': 7}",
    '2026-12-07 07:11:26.905283: Epoch 1',
    '2026-12-07 07:11:26.905393: Current learning rate: 0.00694',
    '2026-12-07 07:11:29.092699: loss terms: sup 1.1428, weak 0.4602, kd 0.2936, ent 1.2340',
    '2026-12-07 07:11:29.223650: train_loss 2.02',
    '2026-12-07 07:11:29.223828: val_loss 1.4785',
    '2026-12-07 07:11:29.223871: Pseudo dice [np.float32(0.3268), np.float32(0.1135), np.float32(0.0782)]',
    '2026-12-07 07:11:29.223921: Epoch time: 2.32 s',
    '2026-12-07 07:11:29.296650: Yayy! New best EMA pseudo Dice: 0.1776999980211258',
    '2026-12-07 07:11:29.954923:',
    '2026-12-07 07:11:29.955105: Epoch 2',
    '2026-12-07 07:11:31.239784: train_loss -0.5',
    '2026-12-07 07:11:31.240204: Pseudo dice [0.5, nan, 0.25]',
    '2026-12-07 07:11:32.905283: Epoch time: 2.95 s',
    '2026-12-07 07:11:33.000000: Epoch 3',
    '2026-12-07 07:11:34.000000: train_loss 0.1',
    '',
))


def test_parse_epochs():
    reports = parse_epochs(SAMPLE_LOG)
    assert [r.epoch for r in reports] == [1, 2]  # epoch 3 has not finished
    first, second = reports
    assert first.terms == {"sup": 1.1428, "weak": 0.4602, "kd": 0.2936, "ent": 1.234}
    assert first.values == {"train_loss": 2.02, "val_loss": 1.4785, "pseudo_dice": pytest.approx(0.17283333),
                            "epoch_time": 2.32}
    assert first.started == datetime(2026, 12, 7, 7, 11, 26, 905283)
    assert second.values == {"train_loss": -0.5, "pseudo_dice": 0.375, "epoch_time": 2.95}
    assert second.terms == {}
    assert second.ended == datetime(2026, 12, 7, 7, 11, 32, 905283)


def test_seconds_left_and_format():
    reports = parse_epochs(SAMPLE_LOG)
    assert seconds_left(reports, 12) == pytest.approx(9 * 3.0)  # 6.0 s for two epochs, epochs 4..12 to go
    assert seconds_left(reports, None) is None and seconds_left([], 12) is None
    assert format_epoch("nnUNetTrainerConfKD_demo", reports[0], 12, 100.4) == (
        "  nnUNetTrainerConfKD_demo  epoch 2/12  train_loss 2.020  val_loss 1.478  pseudo-Dice 0.173  "
        "terms: sup 1.143, weak 0.460, kd 0.294, ent 1.234  |  2.3 s/epoch, ~1:40 left")
    assert format_epoch("T", EpochReport(4), None, None) == "  T  epoch 5/?"


def test_epoch_monitor_prints_each_finished_epoch_once(tmp_path):
    lines = SAMPLE_LOG.splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if line.startswith("2026-12-07 07:11:29.954923"))
    (tmp_path / "debug.json").write_text(json.dumps({"num_epochs": "3"}))
    old = tmp_path / "training_log_2026_12_1_00_00_00.txt"  # an earlier run's log: not read
    old.write_text(SAMPLE_LOG)
    os.utime(old, (0, 0))
    log = tmp_path / "training_log_2026_12_7_07_11_26.txt"
    printed = []
    monitor = EpochMonitor("T", tmp_path, since=1000.0, printer=lambda text, flush: printed.append(text))
    monitor()
    assert printed == []
    log.write_text("".join(lines[:cut]) + "2026-12-07 07:11:31.0: Epoch time: 9")  # last line incomplete
    monitor()
    log.write_text("".join(lines))
    monitor()
    monitor()
    assert printed == [
        "  T  epoch 2/3  train_loss 2.020  val_loss 1.478  pseudo-Dice 0.173  terms: sup 1.143, weak 0.460, "
        "kd 0.294, ent 1.234  |  2.3 s/epoch, ~0:02 left",
        "  T  epoch 3/3  train_loss -0.500  pseudo-Dice 0.375  |  3.0 s/epoch, ~0:00 left"]


# -------------------------------------------------------------------------------------------------------- the figure


def test_prediction_figure_size(tmp_path):
    import matplotlib.image

    rng = np.random.default_rng(0)
    cases = [(f"c{i}", rng.normal(size=(8, 8)), rng.integers(0, 4, (8, 8))) for i in range(2)]
    predictions = {name: [rng.integers(0, 4, (8, 8)) for _ in cases] for name in ("a", "b", "c")}
    path = write_prediction_figure(tmp_path / "p.png", cases, predictions, ["wall", "cavity", "side"])
    assert path == tmp_path / "p.png" and sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path).shape == (350, 750, 4)  # 2 rows + legend strip, 5 columns of 1.5 in


def test_figure_cases_take_the_fullest_slice(tmp_path):
    def write(array, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path))

    label = np.zeros((3, 4, 4), np.uint8)
    label[1, :2] = 1
    label[2, 0, 0] = 2
    image = np.arange(48, dtype=np.float32).reshape(3, 4, 4)
    write(label, tmp_path / "raw" / "labelsTs" / "test_000.nii.gz")
    write(image, tmp_path / "raw" / "imagesTs" / "test_000_0000.nii.gz")
    write(label + 1, tmp_path / "pred" / "test_000.nii.gz")
    cases, columns = demo.figure_cases(tmp_path / "raw", {"m": tmp_path / "pred"})
    assert [c[0] for c in cases] == ["test_000"]
    np.testing.assert_array_equal(cases[0][1], image[1])
    np.testing.assert_array_equal(cases[0][2], label[1])
    np.testing.assert_array_equal(columns["m"][0], label[1] + 1)


# --------------------------------------------------------------------------------------------------- flags and notes


def test_demo_flags():
    args = demo.parse_args(["-o", "x", "-device", "cpu"])
    assert (args.out, args.device, args.trainers) == (Path("x"), "cpu", list(demo.DEFAULT_TRAINERS))
    for spelling in ("--out", "--workdir"):
        assert demo.parse_args([spelling, "y", "--device", "cuda"]).out == Path("y")
    assert demo.parse_args([]).device is None  # resolved later: cuda if available, else cpu


def test_table_note():
    assert demo.table_note(list(demo.DEFAULT_TRAINERS)) == (
        "Rows: nnUNetTrainerConfKD_demo = ConfKD, student and teacher decoders of one checkpoint (student: weak labels "
        "of all cases, distillation and entropy; teacher: full cases) | nnUNetTrainerStrongOnly_demo = strong-only, "
        "stock nnU-Net objective on the full cases only | nnUNetTrainer_confkdDemo = nnU-Net + ignore, stock nnU-Net "
        "on all cases with unannotated voxels ignored.")
    assert demo.table_note(["MyTrainer"]) == "Rows: MyTrainer = MyTrainer."
