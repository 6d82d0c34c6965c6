"""Per-volume, per-class segmentation metrics: Dice, HD95, ASSD and NSD in millimetres.

All distances are computed by MONAI (``monai.metrics``) from the voxel spacing, on the voxel *surface* of each mask:
a voxel belongs to the surface when it is foreground and at least one of its face neighbours (connectivity 1) is
background or outside the image. Distances are Euclidean distances in mm between surface voxel centres.

Metric definitions:
    * **Dice** ``2|A∩B| / (|A| + |B|)``, identical to nnU-Net's ``2TP / (2TP + FP + FN)``
      (``nnunetv2.evaluation.evaluate_predictions.compute_metrics``) wherever nnU-Net's value is defined.
    * **HD95** (``monai.metrics.compute_hausdorff_distance(percentile=95)``): the larger of the two *directed* 95th
      percentiles (prediction surface -> reference surface and back). medpy's ``hd95`` instead takes the 95th
      percentile of the *pooled* distances of both directions. The surfaces and directed distances of both libraries
      are identical; only this aggregation differs. Both coincide when the 95th percentile falls in a run of equal
      distances (e.g. a box and its translate along one axis). Otherwise they differ: a pooled percentile never exceeds
      the larger of the directed ones, so MONAI's value is the larger up to the percentiles' linear interpolation.
    * **ASSD** (``compute_average_surface_distance(symmetric=True)``): the mean over the union of both directed
      distance sets, i.e. ``(n_p * ASD(p->r) + n_r * ASD(r->p)) / (n_p + n_r)`` with ``n_*`` surface voxel counts.
      This equals medpy 0.5.2's ``assd`` (to float32 precision); older medpy releases averaged the two directed
      means instead.
    * **NSD** (surface Dice, ``compute_surface_dice`` without sub-voxel areas): the fraction of surface voxels of
      both masks lying within ``nsd_tolerance_mm`` of the other mask's surface.

Conventions for empty masks (per class and volume), chosen explicitly instead of MONAI's warnings:
    * reference and prediction both empty: Dice 1, HD95 0, ASSD 0, NSD 1 (a perfect, if trivial, answer).
      nnU-Net's ``compute_metrics`` returns NaN for Dice here; ours differs on purpose, and comparisons with nnU-Net
      are only meaningful where at least one mask is non-empty.
    * exactly one of them empty: Dice 0, NSD 0, HD95 NaN, ASSD NaN. A distance to an empty set is undefined; NaN
      values are excluded from the means in :func:`summarize`, which reports how many volumes were affected
      (``n_nan`` per metric and ``n_ref_empty`` / ``n_pred_empty`` per class) so that they are never silently lost.

The ignore label is never evaluated: pass only the foreground labels to evaluate (reference files are dense, so no
voxel is masked out).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

logger = logging.getLogger(__name__)

METRIC_NAMES: tuple[str, ...] = ("dice", "hd95", "assd", "nsd")


@dataclass(frozen=True)
class CaseMetrics:
    """Metrics of one class in one volume.

    Attributes:
        case: Case identifier (file name without ending for :func:`evaluate_folder`).
        label: The evaluated label value.
        dice: Dice coefficient in [0, 1].
        hd95: 95th percentile Hausdorff distance in mm (NaN if exactly one mask is empty).
        assd: Average symmetric surface distance in mm (NaN if exactly one mask is empty).
        nsd: Normalised surface distance (surface Dice) at the tolerance, in [0, 1].
        n_ref: Number of reference voxels with this label.
        n_pred: Number of predicted voxels with this label.
    """

    case: str
    label: int
    dice: float
    hd95: float
    assd: float
    nsd: float
    n_ref: int
    n_pred: int


def dice_score(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Dice ``2|A∩B| / (|A| + |B|)`` of two boolean masks; 1.0 if both are empty.

    Args:
        reference: Boolean reference mask.
        prediction: Boolean prediction mask of the same shape.

    Returns:
        The Dice coefficient.
    """
    denominator = int(reference.sum()) + int(prediction.sum())
    if denominator == 0:
        return 1.0
    return 2.0 * int(np.logical_and(reference, prediction).sum()) / denominator


def surface_metrics(
    reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float], nsd_tolerance_mm: float
) -> tuple[float, float, float]:
    """HD95, ASSD (mm) and NSD of two non-empty boolean masks, computed by MONAI.

    Args:
        reference: Non-empty boolean reference mask (2D or 3D).
        prediction: Non-empty boolean prediction mask of the same shape.
        spacing: Voxel spacing in mm, one value per array axis.
        nsd_tolerance_mm: NSD tolerance in mm.

    Returns:
        ``(hd95, assd, nsd)``.
    """
    # one-hot with batch and channel axes: (1, 1, *spatial); include_background=True keeps our single channel
    y_pred = torch.from_numpy(np.ascontiguousarray(prediction, dtype=bool))[None, None]
    y = torch.from_numpy(np.ascontiguousarray(reference, dtype=bool))[None, None]
    sp = [float(s) for s in spacing]
    with warnings.catch_warnings():
        # MONAI passes its own deprecated get_mask_edges argument internally; nothing for callers to act on
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=sp)
        assd = compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True, spacing=sp)
        nsd = compute_surface_dice(
            y_pred, y, class_thresholds=[float(nsd_tolerance_mm)], include_background=True, spacing=sp
        )
    return float(hd95.item()), float(assd.item()), float(nsd.item())


def case_metrics(
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float],
    labels: Sequence[int],
    nsd_tolerance_mm: float,
    case: str = "",
) -> list[CaseMetrics]:
    """Dice, HD95, ASSD and NSD of each label in one volume (see the module docstring for conventions).

    Args:
        reference: Dense reference label map (2D or 3D integer array).
        prediction: Predicted label map of the same shape.
        spacing: Voxel spacing in mm in numpy axis order.
        labels: Labels to evaluate (foreground labels; never the ignore label).
        nsd_tolerance_mm: NSD tolerance in mm.
        case: Case identifier stored in the results.

    Returns:
        One :class:`CaseMetrics` per label, in the order of ``labels``.

    Raises:
        ValueError: If shapes differ, the spacing does not match the dimensionality, or the tolerance is negative.
    """
    if reference.shape != prediction.shape:
        raise ValueError(f"case {case!r}: reference shape {reference.shape} != prediction shape {prediction.shape}")
    if len(spacing) != reference.ndim:
        raise ValueError(f"case {case!r}: spacing {tuple(spacing)} does not match a {reference.ndim}D image")
    if nsd_tolerance_mm < 0:
        raise ValueError(f"nsd_tolerance_mm must be >= 0, got {nsd_tolerance_mm}")
    results = []
    for label in labels:
        ref, pred = reference == label, prediction == label
        n_ref, n_pred = int(ref.sum()), int(pred.sum())
        if n_ref == 0 and n_pred == 0:
            hd95, assd, nsd = 0.0, 0.0, 1.0
        elif n_ref == 0 or n_pred == 0:
            logger.debug("case %r label %d: %s empty, HD95/ASSD set to NaN", case, label,
                         "reference" if n_ref == 0 else "prediction")
            hd95, assd, nsd = math.nan, math.nan, 0.0
        else:
            hd95, assd, nsd = surface_metrics(ref, pred, spacing, nsd_tolerance_mm)
        results.append(CaseMetrics(case, int(label), dice_score(ref, pred), hd95, assd, nsd, n_ref, n_pred))
    return results


def _read_image(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read an image with SimpleITK; return the array and its spacing in numpy axis order."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), tuple(float(s) for s in reversed(image.GetSpacing()))


def evaluate_folder(
    reference_folder: Path,
    prediction_folder: Path,
    labels: Sequence[int],
    nsd_tolerance_mm: float,
    file_ending: str = ".nii.gz",
) -> list[CaseMetrics]:
    """Evaluate every reference file against the prediction file of the same name.

    The spacing is taken from the reference image (SimpleITK's spacing reversed into numpy axis order).

    Args:
        reference_folder: Folder of dense reference segmentations.
        prediction_folder: Folder of predicted segmentations with the same file names.
        labels: Labels to evaluate (foreground labels; never the ignore label).
        nsd_tolerance_mm: NSD tolerance in mm.
        file_ending: File ending of the segmentations.

    Returns:
        The metrics of all cases (sorted by file name) and labels.

    Raises:
        FileNotFoundError: If the reference folder has no such files or a prediction is missing (named).
        ValueError: If shapes or spacings of a reference/prediction pair differ (file named).
    """
    reference_files = sorted(Path(reference_folder).glob(f"*{file_ending}"))
    if not reference_files:
        raise FileNotFoundError(f"no '*{file_ending}' files in reference folder {reference_folder}")
    missing = [str(Path(prediction_folder) / f.name) for f in reference_files
               if not (Path(prediction_folder) / f.name).is_file()]
    if missing:
        raise FileNotFoundError(f"missing prediction file(s): {', '.join(missing)}")
    results: list[CaseMetrics] = []
    for ref_file in reference_files:
        pred_file = Path(prediction_folder) / ref_file.name
        reference, spacing = _read_image(ref_file)
        prediction, pred_spacing = _read_image(pred_file)
        if reference.shape != prediction.shape:
            raise ValueError(f"{pred_file}: shape {prediction.shape} != reference shape {reference.shape}")
        if not np.allclose(spacing, pred_spacing, rtol=1e-5, atol=1e-6):
            raise ValueError(f"{pred_file}: spacing {pred_spacing} != reference spacing {spacing}")
        case = ref_file.name[: -len(file_ending)]
        logger.info("evaluating %s (spacing %s)", case, spacing)
        results.extend(case_metrics(reference, prediction, spacing, labels, nsd_tolerance_mm, case=case))
    return results


def _metric_stats(values: Sequence[float]) -> dict:
    """Mean and population std over finite values, with counts of NaN and inf values."""
    arr = np.asarray(values, dtype=float)
    finite = arr[np.isfinite(arr)]
    return {
        "mean": float(finite.mean()) if finite.size else math.nan,
        "std": float(finite.std()) if finite.size else math.nan,
        "n": int(finite.size),
        "n_nan": int(np.isnan(arr).sum()),
        "n_inf": int(np.isinf(arr).sum()),
    }


def _group_summary(metrics: Sequence[CaseMetrics]) -> dict:
    """Statistics of each metric plus empty-mask convention counts for a group of results."""
    summary: dict = {name: _metric_stats([getattr(m, name) for m in metrics]) for name in METRIC_NAMES}
    summary["n_volumes"] = len(metrics)
    summary["n_both_empty"] = sum(m.n_ref == 0 and m.n_pred == 0 for m in metrics)
    summary["n_ref_empty"] = sum(m.n_ref == 0 and m.n_pred > 0 for m in metrics)
    summary["n_pred_empty"] = sum(m.n_ref > 0 and m.n_pred == 0 for m in metrics)
    return summary


def summarize(metrics: list[CaseMetrics]) -> dict:
    """Summarise per-case metrics per class and overall.

    For each metric: ``mean`` and ``std`` (population, ddof=0) over the volumes with a finite value, ``n`` (their
    number), ``n_nan`` and ``n_inf`` (volumes excluded). Each group also reports ``n_volumes``, ``n_both_empty``
    (Dice 1 / distances 0 / NSD 1 convention), ``n_ref_empty`` and ``n_pred_empty`` (Dice 0 / NSD 0 / distances
    NaN convention). ``overall`` pools all (volume, class) pairs; ``overall["class_mean"]`` is the unweighted mean
    of the per-class means (like nnU-Net's ``foreground_mean``).

    Args:
        metrics: Output of :func:`case_metrics` or :func:`evaluate_folder`.

    Returns:
        ``{"per_class": {label: group}, "overall": group}``.
    """
    labels = sorted({m.label for m in metrics})
    per_class = {label: _group_summary([m for m in metrics if m.label == label]) for label in labels}
    overall = _group_summary(metrics)
    overall["class_mean"] = {
        name: _metric_stats([per_class[label][name]["mean"] for label in labels])["mean"] for name in METRIC_NAMES
    }
    return {"per_class": per_class, "overall": overall}


def metrics_to_records(metrics: Sequence[CaseMetrics]) -> list[dict]:
    """Convert results to plain dicts (e.g. for JSON or CSV export)."""
    return [asdict(m) for m in metrics]
