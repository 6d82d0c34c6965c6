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
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
