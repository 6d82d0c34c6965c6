"""Do weak annotations survive nnU-Net's preprocessing?

Thin scribbles and one-voxel seeds can vanish or shrink when nnU-Net resamples labels to the target spacing. The
converters record, per weak case and class, the number of annotated voxels of the raw label
(``dataset.json["weak_label"]["annotated_voxels"]``). This module counts them again in the preprocessed labels and
flags a case when a class lost every annotated voxel, or when fewer than ``min_ratio`` of the voxels expected after
resampling remain (expected = raw count x the voxel-count ratio of resampling). The trainer runs the check at start-up
and writes the findings to its log; ``confkd_check_annotations -d ID -c CONFIG`` runs it by hand after
``nnUNetv2_plan_and_preprocess``.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunetv2_confkd.supervision import MANIFEST_KEY, WEAK_LABEL_KEY

MIN_RATIO = 0.5


@dataclass(frozen=True)
class AnnotationFinding:
    """A weak case whose annotation did not survive preprocessing well."""

    case: str
    label: int
    raw: int
    expected: float
    preprocessed: int

    @property
    def lost(self) -> bool:
        return self.preprocessed == 0

    def __str__(self) -> str:
        what = "lost every annotated voxel" if self.lost else "kept too few annotated voxels"
        return (f"case {self.case}, label {self.label}: {what} in preprocessing (raw {self.raw}, expected about "
                f"{self.expected:.0f} after resampling, found {self.preprocessed})")


def recorded_counts(dataset_json: Mapping) -> dict[str, dict[int, int]]:
    """Annotated voxels per weak case and class as recorded by the converter (empty if not recorded)."""
    counts = (dataset_json.get(WEAK_LABEL_KEY) or {}).get("annotated_voxels") or {}
    manifest = dataset_json.get(MANIFEST_KEY) or {}
    return {case: {int(k): int(v) for k, v in c.items()} for case, c in counts.items()
            if manifest.get(case) == "weak"}


def count_preprocessed(seg: np.ndarray, ignore_label: int) -> dict[int, int]:
    """Voxels per class of a preprocessed label (``-1`` marks voxels outside nnU-Net's crop)."""
    values, counts = np.unique(seg, return_counts=True)
    return {int(v): int(n) for v, n in zip(values, counts, strict=True) if v >= 0 and v != ignore_label}


def check_annotations(dataset_json: Mapping, load: Callable[[str], tuple[np.ndarray, Mapping]],
                      cases: Iterable[str] | None = None, min_ratio: float = MIN_RATIO) -> list[AnnotationFinding]:
    """Compare recorded and preprocessed annotation counts of weak cases.

    Args:
        dataset_json: the dataset.json dict (with the converter's ``"weak_label"`` record).
        load: ``case -> (preprocessed seg array (1, *spatial), properties)``, e.g. nnU-Net's ``dataset.load_case``.
        cases: cases to check (default: every recorded weak case).
        min_ratio: flag a class when fewer than this share of the expected voxels remain.
    """
    ignore = int(dataset_json["labels"]["ignore"])
    recorded = recorded_counts(dataset_json)
    findings = []
    for case in sorted(recorded if cases is None else set(cases) & recorded.keys()):
        seg, properties = load(case)
        before = np.prod(properties["shape_after_cropping_and_before_resampling"])
        factor = float(np.prod(seg.shape[1:]) / before)
        found = count_preprocessed(np.asarray(seg), ignore)
        for label, raw in recorded[case].items():
            expected = raw * factor
            kept = found.get(label, 0)
            if raw > 0 and (kept == 0 or kept < min_ratio * expected):
                findings.append(AnnotationFinding(case, label, raw, expected, kept))
    return findings


def per_slice_counts(seg: np.ndarray, label: int) -> np.ndarray:
    """Voxels of ``label`` in every slice (the first spatial axis) of a label map ``(1, Z, Y, X)`` or ``(Z, Y, X)``
    that holds any.

    Example:
        >>> per_slice_counts(np.array([[[1, 1], [0, 1]], [[0, 0], [0, 0]], [[1, 0], [0, 0]]]), 1).tolist()
        [3, 1]
    """
    seg = np.asarray(seg)
    seg = seg.reshape(-1, *seg.shape[-2:]) if seg.ndim >= 3 else seg[None]
    counts = (seg == label).sum(axis=(-2, -1))
    return counts[counts > 0]


def _summary(counts: list[np.ndarray]) -> dict:
    flat = np.concatenate(counts) if counts else np.zeros(0, int)
    return {"slices": int(flat.size), "median_per_slice": float(np.median(flat)) if flat.size else 0.0}


def seed_survival(dataset_json: Mapping, load_raw: Callable[[str], np.ndarray],
                  load_preprocessed: Callable[[str], tuple[np.ndarray, Mapping]], seed_iterations: int = 10) -> dict:
    """Per class, how many slices of the weak cases hold annotated voxels before and after preprocessing, with the
    median voxels per such slice; and the same for the seeds the trainer derives from the full cases' preprocessed
    dense labels (:func:`~nnunetv2_confkd.training.seeds.erosion_seeds`, ``seed_iterations``, on whole slices).

    Slices are counted, not matched by index: nnU-Net's crop may drop empty slices.
    """
    import torch

    from nnunetv2_confkd.training.seeds import erosion_seeds

    ignore = int(dataset_json["labels"]["ignore"])
    classes = sorted(v for k, v in dataset_json["labels"].items() if k != "ignore")
    manifest = dataset_json.get(MANIFEST_KEY) or {}
    raw, pre, derived = ({c: [] for c in classes} for _ in range(3))
    for case in sorted(manifest):
        if manifest[case] == "weak":
            raw_label, pre_label = load_raw(case), np.asarray(load_preprocessed(case)[0])
            for c in classes:
                raw[c].append(per_slice_counts(raw_label, c))
                pre[c].append(per_slice_counts(pre_label, c))
        elif manifest[case] == "full":
            dense = torch.from_numpy(np.asarray(load_preprocessed(case)[0]).astype(np.int64))
            dense = torch.where(dense < 0, torch.full_like(dense, ignore), dense)  # -1: outside nnU-Net's crop
            seeds = erosion_seeds(dense[None], ignore, seed_iterations).numpy()
            for c in classes:
                derived[c].append(per_slice_counts(seeds, c))
    return {str(c): {"weak_raw": _summary(raw[c]), "weak_preprocessed": _summary(pre[c]),
                     "derived_from_full": _summary(derived[c])} for c in classes}


def format_survival(survival: Mapping, names: Mapping[int, str]) -> str:
    """:func:`seed_survival` as a Markdown table."""
    lines = ["| class | weak slices raw -> preprocessed | kept | median voxels/slice raw -> preprocessed | "
             "derived seeds: slices, median voxels/slice |", "|---|---|---|---|---|"]
    for c, s in survival.items():
        raw, pre, der = s["weak_raw"], s["weak_preprocessed"], s["derived_from_full"]
        kept = f"{pre['slices'] / raw['slices']:.0%}" if raw["slices"] else "-"
        lines.append(f"| {names.get(int(c), c)} | {raw['slices']} -> {pre['slices']} | {kept} | "
                     f"{raw['median_per_slice']:g} -> {pre['median_per_slice']:g} | "
                     f"{der['slices']}, {der['median_per_slice']:g} |")
    return "\n".join(lines)


def _loader(preprocessed_dataset_dir: Path, data_identifier: str):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    folder = str(Path(preprocessed_dataset_dir) / data_identifier)
    dataset = infer_dataset_class(folder)(folder)

    def load(case: str):
        _, seg, _, properties = dataset.load_case(case)
        return np.asarray(seg[:]), properties

    return load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that weak annotations survived nnU-Net's preprocessing")
    parser.add_argument("-d", required=True, help="dataset id or name")
    parser.add_argument("-c", default="2d", help="configuration (default 2d)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    parser.add_argument("--min-ratio", type=float, default=MIN_RATIO)
    parser.add_argument("--per-slice", action="store_true",
                        help="also print, per class, how many annotated slices and voxels per slice survive "
                             "preprocessing, and the trainer's derived seeds on the full cases")
    parser.add_argument("--seed-iterations", type=int, default=10, help="erosions of the derived seeds (default 10)")
    args = parser.parse_args(argv)
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    folder = Path(str(nnUNet_preprocessed)) / maybe_convert_to_dataset_name(args.d)
    plans = json.loads((folder / f"{args.p}.json").read_text())
    identifier = plans["configurations"][args.c]["data_identifier"]
    dataset_json = json.loads((folder / "dataset.json").read_text())
    findings = check_annotations(dataset_json, _loader(folder, identifier), min_ratio=args.min_ratio)
    checked = len(recorded_counts(dataset_json))
    for finding in findings:
        warnings.warn(str(finding), stacklevel=1)
    print(f"{checked} weak case(s) checked in {folder / identifier}: {len(findings)} finding(s)")
    if args.per_slice:
        import SimpleITK as sitk
        from nnunetv2.paths import nnUNet_raw

        raw = Path(str(nnUNet_raw)) / folder.name / "labelsTr"

        def load_raw(case: str) -> np.ndarray:
            return sitk.GetArrayFromImage(sitk.ReadImage(str(raw / f"{case}{dataset_json['file_ending']}")))

        survival = seed_survival(dataset_json, load_raw, _loader(folder, identifier), args.seed_iterations)
        names = {v: k for k, v in dataset_json["labels"].items()}
        print(format_survival(survival, names))
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
