"""A small, deterministic mixed-label dataset made by the project itself (no downloads): the README demo and the tests.

Each case is a short stack of MRI-like slices (anisotropic spacing, like cine cardiac MRI) with three structures:
a ring ("wall", 1) around a disc ("cavity", 2), and a separate blob ("side", 3). Intensities differ per structure,
with noise and a smooth bias field. Training cases are full (dense labels), weak (the paper's erosion seeds, every
other voxel ignore) or unlabeled (all ignore); held-out cases go to ``imagesTs``/``labelsTs`` with dense labels.
The dataset is written to a temporary folder and renamed, and never overwrites an existing dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunetv2_confkd.supervision import MANIFEST_KEY, WEAK_LABEL_KEY
from nnunetv2_confkd.weak_labels import erosion_seeds

LABELS = {"background": 0, "wall": 1, "cavity": 2, "side": 3, "ignore": 4}
IGNORE = LABELS["ignore"]
SPACING = (5.0, 1.5, 1.5)  # (z, y, x) in mm


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes of the synthetic dataset."""

    n_full: int = 6
    n_weak: int = 14
    n_unlabeled: int = 4
    n_test: int = 6
    shape: tuple[int, int, int] = (6, 64, 64)
    seed: int = 0
    seed_iterations: int = 3


def make_case(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic ``(image float32, dense label uint8)`` pair of ``shape`` (z, y, x)."""
    nz, ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    label = np.zeros(shape, np.uint8)
    cy, cx = rng.uniform(0.4, 0.6) * ny, rng.uniform(0.35, 0.5) * nx
    outer, inner = rng.uniform(0.17, 0.22) * ny, rng.uniform(0.09, 0.12) * ny
    by, bx = cy + rng.uniform(-0.08, 0.08) * ny, cx + outer + rng.uniform(0.12, 0.18) * nx
    br = rng.uniform(0.07, 0.1) * ny
    for z in range(nz):
        shrink = 1.0 - 0.5 * abs(z - (nz - 1) / 2) / nz  # structures narrow towards the ends of the stack
        r = np.hypot(yy - cy, xx - cx)
        label[z][r < outer * shrink] = 1
        label[z][r < inner * shrink] = 2
        label[z][np.hypot(yy - by, (xx - bx) * 0.8) < br * shrink] = 3
    means = np.array([0.2, 0.45, 0.85, 0.7], np.float32)[label]
    bias = 1.0 + 0.2 * np.sin(xx / nx * np.pi * rng.uniform(0.5, 1.5) + rng.uniform(0, np.pi))[None]
    image = means * bias + rng.normal(0, 0.08, shape).astype(np.float32)
    return (image * 1000).astype(np.float32), label


def weak_from_dense(label: np.ndarray, iterations: int) -> np.ndarray:
    """Erosion seeds (per slice and structure, the paper's strategy) with every other voxel set to ignore."""
    seeds = erosion_seeds(torch.from_numpy(label.astype(np.int16))[None, None], IGNORE, iterations)
    return seeds[0, 0].numpy().astype(np.uint8)


def _write(array: np.ndarray, path: Path) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in SPACING[::-1]))  # SimpleITK spacing is (x, y, z)
    sitk.WriteImage(img, str(path), useCompression=True)


def write_splits(preprocessed_dataset_dir: Path, full_cases: list[str], other_cases: list[str], n_folds: int = 5,
                 n_val: int = 2) -> Path:
    """5 folds whose validation parts hold only full cases (``n_val`` each); everything else trains."""
    preprocessed_dataset_dir.mkdir(parents=True, exist_ok=True)
    splits = []
    for fold in range(n_folds):
        val = [full_cases[(fold * n_val + i) % len(full_cases)] for i in range(n_val)]
        train = [c for c in full_cases if c not in val] + list(other_cases)
        splits.append({"train": sorted(train), "val": sorted(val)})
    path = preprocessed_dataset_dir / "splits_final.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(splits, indent=2))
    os.replace(tmp, path)
    return path


def make_synthetic_dataset(raw_root: Path, dataset_id: int = 990, spec: SyntheticSpec = SyntheticSpec(),
                           preprocessed_root: Path | None = None, name: str = "ConfKDSynthetic") -> Path:
    """Write ``DatasetNNN_<name>`` under ``raw_root`` and, if given, its ``splits_final.json`` under
    ``preprocessed_root``. Returns the dataset folder. Refuses to overwrite an existing dataset folder."""
    out = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another dataset id")
    rng = np.random.default_rng(spec.seed)
    Path(raw_root).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=raw_root))
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        levels = ["full"] * spec.n_full + ["weak"] * spec.n_weak + ["unlabeled"] * spec.n_unlabeled
        manifest = {}
        for i, level in enumerate(levels):
            case = f"case_{i:03d}"
            image, dense = make_case(rng, spec.shape)
            label = dense if level == "full" else (
                weak_from_dense(dense, spec.seed_iterations) if level == "weak" else np.full_like(dense, IGNORE))
            _write(image, tmp / "imagesTr" / f"{case}_0000.nii.gz")
            _write(label, tmp / "labelsTr" / f"{case}.nii.gz")
            manifest[case] = level
        for i in range(spec.n_test):
            image, dense = make_case(rng, spec.shape)
            _write(image, tmp / "imagesTs" / f"test_{i:03d}_0000.nii.gz")
            _write(dense, tmp / "labelsTs" / f"test_{i:03d}.nii.gz")
        generate_dataset_json(
            str(tmp), {0: "MRI"}, LABELS, len(levels), ".nii.gz", dataset_name=out.name,
            description="Synthetic mixed-supervision dataset generated by nnunetv2_confkd.synthetic",
            license="CC0 (generated)", converted_by="nnunetv2_confkd",
            **{MANIFEST_KEY: manifest,
               WEAK_LABEL_KEY: {"kind": "erosion", "iterations": spec.seed_iterations, "seed": spec.seed,
                                "grid": list(spec.shape[1:]), "spacing": list(SPACING)}})
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if preprocessed_root is not None:
        full = [c for c, v in manifest.items() if v == "full"]
        write_splits(Path(preprocessed_root) / out.name, full, [c for c in manifest if c not in full])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, default=None, help="nnUNet_raw folder (default: $nnUNet_raw)")
    parser.add_argument("--preprocessed", type=Path, default=None,
                        help="nnUNet_preprocessed folder for splits_final.json (default: $nnUNet_preprocessed)")
    parser.add_argument("--id", type=int, default=990)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    raw = args.raw or (Path(os.environ["nnUNet_raw"]) if "nnUNet_raw" in os.environ else None)
    if raw is None:
        parser.error("give --raw or set nnUNet_raw")
    pre = args.preprocessed or (Path(os.environ["nnUNet_preprocessed"]) if "nnUNet_preprocessed" in os.environ
                                else None)
    path = make_synthetic_dataset(raw, args.id, SyntheticSpec(seed=args.seed), pre)
    print(path)


if __name__ == "__main__":
    main()
