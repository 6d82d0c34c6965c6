"""Tests of the evaluation module: closed forms, empty-mask conventions, nnU-Net Dice and a medpy cross-check."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
from scipy.ndimage import gaussian_filter

from nnunetv2_confkd.study.evaluation import CaseMetrics, case_metrics, evaluate_folder, summarize

medpy_binary = pytest.importorskip("medpy.metric.binary")
# medpy's directed surface distances (a module-level helper; its leading underscores are not name-mangled)
medpy_surface_distances = getattr(medpy_binary, "__surface_distances")


def _one(reference, prediction, spacing, tol=1.0) -> CaseMetrics:
    return case_metrics(reference.astype(np.uint8), prediction.astype(np.uint8), spacing, [1], tol)[0]


def _square(shape=(20, 20), start=(5, 5), side=6, shift=(0, 0)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    r, c = start[0] + shift[0], start[1] + shift[1]
    mask[r : r + side, c : c + side] = True
    return mask


def _blob(rng: np.random.Generator, shape, sigma=2.0, quantile=0.7) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal(shape), sigma)
    return field > np.quantile(field, quantile)


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 3.0)])
def test_identical_masks(spacing):
    mask = _square()
    m = _one(mask, mask, spacing)
    assert (m.dice, m.hd95, m.assd, m.nsd) == (1.0, 0.0, 0.0, 1.0)
    assert m.n_ref == m.n_pred == 36


@pytest.mark.parametrize("k, spacing", [(1, (1.0, 1.0)), (2, (1.0, 1.0)), (3, (0.7, 1.9)), (2, (2.5, 0.4))])
def test_shifted_line_distances(k, spacing):
    """A 1-voxel-thick segment shifted by k voxels across its axis: every surface distance is k * spacing."""
    ref = np.zeros((16, 16), dtype=bool)
    ref[4, 3:12] = True
    pred = np.roll(ref, k, axis=0)
    expected = k * spacing[0]
    m = _one(ref, pred, spacing, tol=expected)
    assert m.hd95 == pytest.approx(expected, rel=1e-6)
    assert m.assd == pytest.approx(expected, rel=1e-6)
    assert m.nsd == 1.0  # all distances equal the tolerance (inclusive)
    assert _one(ref, pred, spacing, tol=0.99 * expected).nsd == 0.0
    assert m.dice == 0.0
    # the same shift along axis 1 of a vertical segment scales with the other spacing
    m_t = _one(ref.T, pred.T, spacing, tol=1.0)
    assert m_t.hd95 == pytest.approx(k * spacing[1], rel=1e-6)
    assert m_t.assd == pytest.approx(k * spacing[1], rel=1e-6)


def test_shifted_filled_square_isotropic():
    """Square of side L shifted by 1 along axis 0: half of the 4(L-1) surface voxels at distance s0, half at 0."""
    side, s0 = 6, 1.5
    ref, pred = _square(side=side), _square(side=side, shift=(1, 0))
    m = _one(ref, pred, (s0, s0), tol=1.0)
    assert m.hd95 == pytest.approx(s0)
    assert m.assd == pytest.approx(s0 / 2)
    assert m.nsd == pytest.approx(0.5)  # the zero-distance half is within 1 mm, the s0 half is not
    assert m.dice == pytest.approx(2 * side * (side - 1) / (2 * side * side))
    assert _one(ref, pred, (s0, s0), tol=s0).nsd == 1.0


def test_shifted_filled_square_anisotropic():
    """With s1 < s0 the bottom-row voxels next to the sides reach the other square's side columns sooner."""
    ref, pred = _square(side=6), _square(side=6, shift=(1, 0))
    # directed distances of the 20 surface voxels: top row 6 x 2.0, sides 10 x 0, bottom interior 0.5, 1, 1, 0.5
    m = _one(ref, pred, (2.0, 0.5), tol=1.0)
    assert m.assd == pytest.approx(15.0 / 20.0, rel=1e-6)
    assert m.hd95 == pytest.approx(2.0, rel=1e-6)
    assert m.nsd == pytest.approx(14.0 / 20.0)
    # swapping the spacing (s1 > s0) gives the isotropic pattern again: half at s0, half at 0
    m_swapped = _one(ref, pred, (0.5, 2.0), tol=0.1)
    assert m_swapped.assd == pytest.approx(0.25, rel=1e-6)
    assert m_swapped.hd95 == pytest.approx(0.5, rel=1e-6)


def test_shifted_plate_3d_anisotropic():
    """A 1-voxel-thick 3D square plate shifted by k along axis 0: all distances k * s0 in mm."""
    ref = np.zeros((10, 12, 12), dtype=bool)
    ref[3, 2:9, 3:10] = True
    spacing = (3.0, 0.8, 1.2)
    m = _one(ref, np.roll(ref, 2, axis=0), spacing, tol=5.0)
    assert (m.hd95, m.assd, m.nsd) == (pytest.approx(6.0), pytest.approx(6.0), 0.0)


# ---------------------------------------------------------------- conventions


def test_both_empty_convention():
    empty = np.zeros((8, 8, 8), dtype=bool)
    m = _one(empty, empty, (1.0, 2.0, 3.0))
    assert (m.dice, m.hd95, m.assd, m.nsd, m.n_ref, m.n_pred) == (1.0, 0.0, 0.0, 1.0, 0, 0)


@pytest.mark.parametrize("empty_side", ["reference", "prediction"])
def test_one_empty_convention(empty_side):
    mask, empty = _square(), np.zeros((20, 20), dtype=bool)
    ref, pred = (empty, mask) if empty_side == "reference" else (mask, empty)
    m = _one(ref, pred, (1.0, 1.0))
    assert m.dice == 0.0 and m.nsd == 0.0
    assert math.isnan(m.hd95) and math.isnan(m.assd)


def test_dice_and_counts_of_partially_overlapping_labels():
    """Dice by hand: label 1, two 4x4 squares one row apart, overlap 3x4 -> 2*12/(16+16); label 2, a 3x3 square and
    its top 2x3 -> 2*6/(9+6); label 3 empty in both -> 1; label 4 only predicted -> 0."""
    ref, pred = np.zeros((12, 12), dtype=np.uint8), np.zeros((12, 12), dtype=np.uint8)
    ref[2:6, 2:6] = 1
    pred[3:7, 2:6] = 1
    ref[7:10, 7:10] = 2
    pred[7:9, 7:10] = 2
    pred[0, 0:2] = 4
    results = case_metrics(ref, pred, (1.0, 1.0), [1, 2, 3, 4], 1.0)
    assert [(r.label, r.dice, r.n_ref, r.n_pred) for r in results] == [
        (1, 24 / 32, 16, 16), (2, 12 / 15, 9, 6), (3, 1.0, 0, 0), (4, 0.0, 0, 2)]
    # swapping reference and prediction leaves Dice unchanged and swaps the counts
    swapped = case_metrics(pred, ref, (1.0, 1.0), [1, 2, 3, 4], 1.0)
    assert [(r.dice, r.n_ref, r.n_pred) for r in swapped] == [(r.dice, r.n_pred, r.n_ref) for r in results]


def test_multilabel_and_input_validation():
    ref = np.zeros((12, 12), dtype=np.uint8)
    ref[2:6, 2:6] = 1
    ref[7:10, 7:10] = 2
    results = case_metrics(ref, ref.copy(), (1.0, 1.0), [1, 2, 3], 1.0, case="c0")
    assert [(r.case, r.label, r.dice) for r in results] == [("c0", 1, 1.0), ("c0", 2, 1.0), ("c0", 3, 1.0)]
    with pytest.raises(ValueError, match="shape"):
        case_metrics(ref, ref[:-1], (1.0, 1.0), [1], 1.0)
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(ref, ref, (1.0, 1.0, 1.0), [1], 1.0)


# ---------------------------------------------------------------- nnU-Net Dice


def _write(array: np.ndarray, path: Path, spacing_xyz) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    sitk.WriteImage(image, str(path))


def test_dice_matches_nnunet(tmp_path):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    rng = np.random.default_rng(0)
    labels = [1, 2, 3]
    compared = 0
    for i in range(4):
        ref = _blob(rng, (12, 20, 18), quantile=0.6).astype(np.uint8) + _blob(rng, (12, 20, 18), quantile=0.8)
        pred = _blob(rng, (12, 20, 18), quantile=0.6).astype(np.uint8) * (1 + (rng.random((12, 20, 18)) > 0.7))
        if i == 3:
            pred[pred == 2] = 0  # label 2 empty in the prediction only; label 3 is empty everywhere
        _write(ref, tmp_path / f"ref{i}.nii.gz", (1.0, 0.8, 2.5))
        _write(pred, tmp_path / f"pred{i}.nii.gz", (1.0, 0.8, 2.5))
        nnunet = compute_metrics(str(tmp_path / f"ref{i}.nii.gz"), str(tmp_path / f"pred{i}.nii.gz"),
                                 SimpleITKIO(), labels, None)["metrics"]
        ours = case_metrics(ref, pred, (2.5, 0.8, 1.0), labels, 2.0)
        for m in ours:
            if np.isnan(nnunet[m.label]["Dice"]):  # nnU-Net: both empty -> NaN; ours: 1 by convention
                assert m.n_ref == m.n_pred == 0 and m.dice == 1.0
                continue
            compared += 1
            assert m.dice == pytest.approx(nnunet[m.label]["Dice"], abs=1e-12)
            assert (m.n_ref, m.n_pred) == (nnunet[m.label]["n_ref"], nnunet[m.label]["n_pred"])
    assert compared >= 8


# ---------------------------------------------------------------- medpy cross-check


def _onehot(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask)[None, None]


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy.*:FutureWarning")  # raised inside MONAI
@pytest.mark.parametrize(
    "shape, spacing, seed",
    [((48, 40), (0.7, 1.9), 1), ((48, 40), (2.0, 0.5), 2), ((20, 24, 18), (2.5, 0.8, 1.1), 3),
     ((20, 24, 18), (0.6, 1.0, 3.0), 4)],
)
def test_cross_check_medpy_random_blobs(shape, spacing, seed):
    """Surfaces and directed distances agree exactly; HD95/ASSD differ only by the documented aggregation."""
    rng = np.random.default_rng(seed)
    ref, pred = _blob(rng, shape), _blob(rng, shape)
    tol = 1.5
    # maximum Hausdorff distance and directed average distance: same definition in both libraries
    hd_monai = compute_hausdorff_distance(_onehot(pred), _onehot(ref), include_background=True, spacing=spacing)
    assert hd_monai.item() == pytest.approx(medpy_binary.hd(pred, ref, voxelspacing=spacing), rel=1e-6)
    asd_monai = compute_average_surface_distance(_onehot(pred), _onehot(ref), include_background=True,
                                                 symmetric=False, spacing=spacing)
    assert asd_monai.item() == pytest.approx(medpy_binary.asd(pred, ref, voxelspacing=spacing), rel=1e-6)
    # our HD95 / ASSD / NSD rebuilt from medpy's directed surface distances
    d_pr = medpy_surface_distances(pred, ref, voxelspacing=spacing)
    d_rp = medpy_surface_distances(ref, pred, voxelspacing=spacing)
    m = _one(ref, pred, spacing, tol=tol)
    assert m.hd95 == pytest.approx(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)), rel=1e-5)
    assert m.assd == pytest.approx(np.concatenate([d_pr, d_rp]).mean(), rel=1e-5)
    assert m.nsd == pytest.approx(((d_pr <= tol).sum() + (d_rp <= tol).sum()) / (d_pr.size + d_rp.size), rel=1e-6)
    # ASSD: medpy >= 0.5 pools both directions as MONAI does -> identical
    assert m.assd == pytest.approx(medpy_binary.assd(pred, ref, voxelspacing=spacing), rel=1e-6)
    # HD95: medpy takes the percentile of the pooled distances (documented difference; MONAI's is max of directed)
    medpy_hd95 = medpy_binary.hd95(pred, ref, voxelspacing=spacing)
    assert medpy_hd95 == pytest.approx(np.percentile(np.concatenate([d_pr, d_rp]), 95))
    assert m.hd95 >= 0.99 * medpy_hd95


@pytest.mark.parametrize(
    "shape, box, shift, spacing",
    [((40, 40), (7, 11), (3, 0), (0.7, 1.9)), ((40, 40), (5, 9), (0, 4), (2.0, 0.5)),
     ((24, 24, 20), (6, 9, 5), (2, 0, 0), (2.5, 0.8, 1.1)), ((24, 24, 20), (8, 4, 7), (0, 0, 3), (0.6, 1.0, 3.0))],
)
def test_cross_check_medpy_translated_boxes(shape, box, shift, spacing):
    """Box vs its translate along one axis: the 95th percentile lies in a run of equal distances in both the directed
    and the pooled distance lists, so MONAI's and medpy's HD95 coincide (and ASSD always does)."""
    ref = np.zeros(shape, dtype=bool)
    ref[tuple(slice(4, 4 + b) for b in box)] = True
    pred = np.roll(ref, shift, axis=tuple(range(len(shape))))
    m = _one(ref, pred, spacing)
    assert m.hd95 == pytest.approx(medpy_binary.hd95(pred, ref, voxelspacing=spacing), rel=1e-6)
    assert m.assd == pytest.approx(medpy_binary.assd(pred, ref, voxelspacing=spacing), rel=1e-6)
    assert m.dice == pytest.approx(medpy_binary.dc(pred, ref), abs=1e-12)


# ---------------------------------------------------------------- evaluate_folder


def test_evaluate_folder_spacing_order_and_errors(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    ref = np.zeros((10, 12, 12), dtype=np.uint8)  # numpy (z, y, x)
    ref[3, 2:9, 3:10] = 1
    spacing_xyz = (0.8, 1.2, 3.0)  # sitk (x, y, z): z spacing 3.0 applies to numpy axis 0
    _write(ref, ref_dir / "case_a.nii.gz", spacing_xyz)
    _write(np.roll(ref, 2, axis=0), pred_dir / "case_a.nii.gz", spacing_xyz)
    results = evaluate_folder(ref_dir, pred_dir, [1, 2], nsd_tolerance_mm=6.0)
    assert [(r.case, r.label) for r in results] == [("case_a", 1), ("case_a", 2)]
    assert results[0].hd95 == pytest.approx(6.0) and results[0].assd == pytest.approx(6.0)
    assert results[0].nsd == 1.0 and results[1].dice == 1.0
    # the 7x7 plate and its shifted copy do not overlap: Dice 0, 49 voxels each; label 2 is empty in both
    assert (results[0].dice, results[0].n_ref, results[0].n_pred) == (0.0, 49, 49)
    assert (results[1].n_ref, results[1].n_pred) == (0, 0)

    _write(ref, ref_dir / "case_b.nii.gz", spacing_xyz)
    with pytest.raises(FileNotFoundError, match="case_b.nii.gz"):
        evaluate_folder(ref_dir, pred_dir, [1], 1.0)
    _write(ref[:, :-1], pred_dir / "case_b.nii.gz", spacing_xyz)
    with pytest.raises(ValueError, match=r"case_b\.nii\.gz: shape"):
        evaluate_folder(ref_dir, pred_dir, [1], 1.0)
    _write(ref, pred_dir / "case_b.nii.gz", (0.8, 1.2, 2.0))
    with pytest.raises(ValueError, match=r"case_b\.nii\.gz: spacing"):
        evaluate_folder(ref_dir, pred_dir, [1], 1.0)
    with pytest.raises(FileNotFoundError, match="no"):
        evaluate_folder(tmp_path / "pred", ref_dir, [1], 1.0, file_ending=".mha")


# ---------------------------------------------------------------- summarize


def test_summarize_means_std_and_counts():
    nan = math.nan
    metrics = [
        CaseMetrics("a", 1, 0.8, 2.0, 1.0, 0.9, 10, 12),
        CaseMetrics("b", 1, 0.6, 4.0, 3.0, 0.7, 10, 8),
        CaseMetrics("c", 1, 0.0, nan, nan, 0.0, 10, 0),  # prediction empty
        CaseMetrics("a", 2, 1.0, 0.0, 0.0, 1.0, 0, 0),  # both empty
        CaseMetrics("b", 2, 0.0, nan, nan, 0.0, 0, 5),  # reference empty
    ]
    s = summarize(metrics)
    c1 = s["per_class"][1]
    assert c1["dice"]["mean"] == pytest.approx((0.8 + 0.6) / 3)
    assert c1["dice"]["std"] == pytest.approx(np.std([0.8, 0.6, 0.0]))
    assert c1["hd95"] == {"mean": 3.0, "std": 1.0, "n": 2, "n_nan": 1, "n_inf": 0}
    assert (c1["n_volumes"], c1["n_both_empty"], c1["n_ref_empty"], c1["n_pred_empty"]) == (3, 0, 0, 1)
    c2 = s["per_class"][2]
    assert c2["assd"] == {"mean": 0.0, "std": 0.0, "n": 1, "n_nan": 1, "n_inf": 0}
    assert (c2["n_both_empty"], c2["n_ref_empty"], c2["n_pred_empty"]) == (1, 1, 0)
    overall = s["overall"]
    assert overall["n_volumes"] == 5 and overall["hd95"]["n_nan"] == 2
    assert overall["hd95"]["mean"] == pytest.approx(2.0)
    assert overall["nsd"]["mean"] == pytest.approx(np.mean([0.9, 0.7, 0.0, 1.0, 0.0]))
    assert overall["class_mean"]["dice"] == pytest.approx(((0.8 + 0.6) / 3 + 0.5) / 2)
    inf_summary = summarize([CaseMetrics("x", 1, 0.5, math.inf, 1.0, 0.5, 1, 1)])
    assert inf_summary["overall"]["hd95"]["n_inf"] == 1 and math.isnan(inf_summary["overall"]["hd95"]["mean"])
