"""One case of a conversion: read it, check image/label shape and spacing and the label values, make the label it
gets at its supervision level (dense, simulated or expert weak, or all ignore), run the converter's ``verify`` hook and
write its images and label (:func:`write_case`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2_confkd_conversion.budget import Budget
from nnunetv2_confkd_conversion.cases import EXPERT, TEST, CaseData, DatasetSpec, SourceCase, Verify
from nnunetv2_confkd_conversion.simulation_grid import simulate_on_grid
from nnunetv2_confkd_conversion.weak_labels import annotated_voxels_per_class, simulate_weak_label

from nnunetv2_confkd.checks import ConfKDInputError


def _array(image: sitk.Image, origin: str) -> np.ndarray:
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise ConfKDInputError(f"{origin}: label image holds non-integer values")
        array = rounded.astype(np.int16)
    return array


def _check_geometry(data: CaseData, origin: str) -> None:
    ref = data.label
    for i, image in enumerate(data.images + ([data.expert] if data.expert is not None else [])):
        what = f"channel {i}" if i < len(data.images) else "expert label"
        if image.GetSize() != ref.GetSize():
            raise ConfKDInputError(f"{origin}: {what} has size {image.GetSize()} but the label has {ref.GetSize()}")
        if not np.allclose(image.GetSpacing(), ref.GetSpacing(), rtol=1e-3, atol=1e-4):
            raise ConfKDInputError(f"{origin}: {what} has spacing {image.GetSpacing()} but the label has "
                                   f"{ref.GetSpacing()}")


def _dense_label(data: CaseData, spec: DatasetSpec, origin: str) -> np.ndarray:
    dense = _array(data.label, origin)
    if spec.label_map is not None:
        dense = spec.label_map(dense)
    allowed = set(spec.labels.values())
    found = set(np.unique(dense).tolist())
    if not found <= allowed:
        raise ConfKDInputError(f"{origin}: label values {sorted(found - allowed)} are not among the declared labels "
                               f"{spec.labels}")
    return dense.astype(np.uint8 if max(allowed) < 255 else np.int16)


def _weak_label(level: str, dense: np.ndarray, data: CaseData, spec: DatasetSpec, budget: Budget,
                rng: np.random.Generator, origin: str) -> np.ndarray:
    ignore = spec.ignore_label
    if level in ("full", TEST):
        return dense
    if level == "unlabeled":
        return np.full_like(dense, ignore)
    if budget.weak == EXPERT:
        if data.expert is None:
            raise ConfKDInputError(f"{origin}: --weak expert needs a source with expert weak labels")
        expert = _array(data.expert, origin + " (expert label)")
        annotated = expert != (ignore if data.expert_ignore is None else data.expert_ignore)
        mapped = np.full_like(dense, ignore)
        raw = expert if spec.label_map is None else spec.label_map(np.where(annotated, expert, 0))
        mapped[annotated] = raw[annotated]
        return mapped
    spacing = data.label.GetSpacing()[::-1]  # numpy axis order

    def simulate(label: np.ndarray, label_spacing) -> np.ndarray:
        return simulate_weak_label(budget.weak, label, label_spacing, rng, ignore, background=budget.background,
                                   component_classes=budget.component_classes, **budget.params)

    if budget.simulation_spacing is None:
        return simulate(dense, spacing)
    return simulate_on_grid(simulate, dense, spacing, budget.simulation_spacing, ignore)


def _to_image(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(like)
    return image


def write_case(case: SourceCase, level: str, spec: DatasetSpec, budget: Budget, folder: Path, index: int,
               verify: Verify | None) -> dict[str, dict[int, int]]:
    """Write one case into ``folder`` (``level`` :data:`~.cases.TEST`: a held-out case with its dense label, into
    ``imagesTs``/``labelsTs``) after ``verify``. ``index`` (the case's position in case-identifier order) seeds its
    weak-label simulation together with the budget's seed. Returns the voxels per class of the written label
    (``"annotated"``) and of the dense label (``"dense"``)."""
    origin = case.origin or case.case_id
    data = case.read()
    _check_geometry(data, origin)
    dense = _dense_label(data, spec, origin)
    rng = np.random.default_rng([budget.seed, index])  # per case: independent of reading order, idempotent
    label = _weak_label(level, dense, data, spec, budget, rng, origin)
    if verify is not None:
        verify(case, dense, label, level)
    part = "Ts" if level == TEST else "Tr"
    for channel, image in enumerate(data.images):
        sitk.WriteImage(image, str(folder / f"images{part}" / f"{case.case_id}_{channel:04d}{spec.file_ending}"),
                        useCompression=True)
    sitk.WriteImage(_to_image(label, data.label), str(folder / f"labels{part}" / f"{case.case_id}{spec.file_ending}"),
                    useCompression=True)
    return {"annotated": annotated_voxels_per_class(label, spec.ignore_label),
            "dense": annotated_voxels_per_class(dense, spec.ignore_label)}
