"""What a conversion prints at the end: cases per supervision level and the annotated share of each class
(:func:`summarize`), for the dataset and its dense twin, and for CT data how to plan on the twin
(:func:`ct_fingerprint_hint`)."""

from __future__ import annotations

import json
from pathlib import Path

from nnunetv2_confkd_conversion.dense_twin import twin_folder

from nnunetv2_confkd.supervision import MANIFEST_KEY, WEAK_LABEL_KEY


def summarize(dataset_folder: Path) -> str:
    """Cases per level and, over the weak cases, the fraction of each class's voxels that is annotated."""
    dj = json.loads((Path(dataset_folder) / "dataset.json").read_text())
    manifest, weak = dj[MANIFEST_KEY], dj.get(WEAK_LABEL_KEY, {})
    lines = [f"{Path(dataset_folder).name}: " + ", ".join(
        f"{lvl} {sum(v == lvl for v in manifest.values())}" for lvl in ("full", "weak", "unlabeled")) + " cases"]
    annotated: dict[str, int] = {}
    dense: dict[str, int] = {}
    for case, counts in weak.get("dense_voxels_of_weak_cases", {}).items():
        for cls, n in counts.items():
            dense[cls] = dense.get(cls, 0) + n
            annotated[cls] = annotated.get(cls, 0) + weak["annotated_voxels"][case].get(cls, 0)
    names = {str(v): k for k, v in dj["labels"].items()}
    if dense:
        lines.append("weak cases, annotated share of each class: " + ", ".join(
            f"{names.get(c, c)} {annotated[c] / n:.2%}" for c, n in sorted(dense.items()) if n))
    return "\n".join(lines)


def report(mixed: Path, twin_id: int | None = None) -> str:
    """What a conversion prints: :func:`summarize` of the dataset and of its dense twin, and for CT data the planning
    hint (:func:`ct_fingerprint_hint`)."""
    twin = twin_folder(mixed, twin_id)
    parts = [summarize(mixed)] + ([summarize(twin)] if twin is not None else [])
    channels = json.loads((mixed / "dataset.json").read_text())["channel_names"].values()
    if any(str(c).casefold() == "ct" for c in channels):
        parts.append(ct_fingerprint_hint(mixed, twin))
    return "\n".join(parts)


def ct_fingerprint_hint(mixed: Path, twin: Path | None, configuration: str = "3d_fullres") -> str:
    """How to plan a CT mixed dataset on its dense twin: nnU-Net's fingerprint counts ignore voxels as foreground, so
    CTNormalization's clipping and z-scoring would come from unannotated voxels.

    Example:
        >>> print(ct_fingerprint_hint(Path("Dataset501_LiTS"), Path("Dataset601_LiTSDense")).splitlines()[1])
          nnUNetv2_extract_fingerprint -d 601 && nnUNetv2_plan_experiment -d 601
    """
    m = mixed.name.split("_")[0].removeprefix("Dataset")
    t = twin.name.split("_")[0].removeprefix("Dataset") if twin is not None else "<DENSE_ID>"
    lines = [
        f"CT fingerprint trap: nnU-Net counts the ignore voxels of {mixed.name} as foreground in the CTNormalization "
        "statistics. Plan on the dense twin and move the plans:",
        *([] if twin is not None else ["  (no twin written: re-run with --dense-twin-id N to write one)"]),
        f"  nnUNetv2_extract_fingerprint -d {t} && nnUNetv2_plan_experiment -d {t}",
        f"  nnUNetv2_extract_fingerprint -d {m}",
        f"  nnUNetv2_move_plans_between_datasets -s {t} -t {m} -sp nnUNetPlans -tp nnUNetPlansDense",
        f"  cp $nnUNet_raw/{mixed.name}/dataset.json $nnUNet_preprocessed/{mixed.name}/",
        f"  nnUNetv2_preprocess -d {m} -plans_name nnUNetPlansDense -c {configuration}",
        "  and train with -p nnUNetPlansDense",
    ]
    return "\n".join(lines)
