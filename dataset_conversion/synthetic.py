"""A small, deterministic mixed-label dataset made by the project itself (no downloads): the README demo and the tests.

Each case is a short stack of MRI-like slices (anisotropic spacing, like cine cardiac MRI) with three structures:
a ring ("wall", 1) around a disc ("cavity", 2), and a separate blob ("side", 3). Intensities differ per structure,
with noise and a smooth bias field. Training cases are full (dense labels), weak (the paper's erosion seeds, every
other voxel ignore) or unlabeled (all ignore), chosen at random with the seed; held-out cases go to
``imagesTs``/``labelsTs`` with dense labels. Writing goes through the converters' machinery (temporary folder and
rename, manifest, weak-label record, ``splits_final.json``).

Two populations (:attr:`SyntheticSpec.variation`):

- ``"shared"`` (default): every case is drawn alike (:func:`make_case`), so a few full cases already show all the
  variation of the dataset.
- ``"narrow-full"`` (the demo): the full cases come from one acquisition protocol with typical, centred anatomy; the
  weak, unlabeled and held-out cases come from the whole population (:func:`make_varied_case`): structures from small
  to large, anywhere in the field of view, and half of them from a second protocol in which the cavity is dark and the
  wall bright. Only the weak labels show the network that part of the population.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2_confkd_conversion.budget import Budget
from nnunetv2_confkd_conversion.cases import CaseData, DatasetSpec, SourceCase
from nnunetv2_confkd_conversion.splits import assign_levels
from nnunetv2_confkd_conversion.writer import write_mixed_dataset

LABELS = {"background": 0, "wall": 1, "cavity": 2, "side": 3, "ignore": 4}
SPACING = (5.0, 1.5, 1.5)  # (z, y, x) in mm
VARIATIONS = ("shared", "narrow-full")
# mean intensity of background, wall, cavity, side under the two acquisition protocols of make_varied_case
PROTOCOLS = {"bright": (0.2, 0.45, 0.85, 0.7), "dark": (0.15, 0.8, 0.3, 0.55)}


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes of the synthetic dataset and which population its cases come from (``variation``, see the module)."""

    n_full: int = 4
    n_weak: int = 14
    n_unlabeled: int = 4
    n_test: int = 6
    shape: tuple[int, int, int] = (6, 64, 64)
    seed: int = 0
    seed_iterations: int = 3
    variation: str = "shared"

    def __post_init__(self):
        if self.variation not in VARIATIONS:
            raise ValueError(f"variation {self.variation!r}: choose one of {VARIATIONS}")


DEMO_SPEC = SyntheticSpec(n_test=8, variation="narrow-full")
"""The demo's dataset: 4 full, 14 weak, 4 unlabeled training cases and 8 held-out cases, full cases narrow."""


def _draw_stack(rng: np.random.Generator, shape: tuple[int, int, int], ring: tuple[float, float, float, float],
                blob: tuple[float, float, float], means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image and label of a ring ``(cy, cx, outer, inner)`` and a blob ``(by, bx, radius)`` with class ``means``."""
    nz, ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    cy, cx, outer, inner = ring
    by, bx, br = blob
    label = np.zeros(shape, np.uint8)
    for z in range(nz):
        shrink = 1.0 - 0.5 * abs(z - (nz - 1) / 2) / nz  # structures narrow towards the ends of the stack
        r = np.hypot(yy - cy, xx - cx)
        label[z][r < outer * shrink] = 1
        label[z][r < inner * shrink] = 2
        label[z][np.hypot(yy - by, (xx - bx) * 0.8) < br * shrink] = 3
    bias = 1.0 + 0.2 * np.sin(xx / nx * np.pi * rng.uniform(0.5, 1.5) + rng.uniform(0, np.pi))[None]
    image = means.astype(np.float32)[label] * bias + rng.normal(0, 0.08, shape).astype(np.float32)
    return (image * 1000).astype(np.float32), label


def make_case(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic ``(image float32, dense label uint8)`` pair of ``shape`` (z, y, x), population ``"shared"``."""
    _, ny, nx = shape
    cy, cx = rng.uniform(0.4, 0.6) * ny, rng.uniform(0.35, 0.5) * nx
    outer, inner = rng.uniform(0.17, 0.22) * ny, rng.uniform(0.09, 0.12) * ny
    by, bx = cy + rng.uniform(-0.08, 0.08) * ny, cx + outer + rng.uniform(0.12, 0.18) * nx
    br = rng.uniform(0.07, 0.1) * ny
    return _draw_stack(rng, shape, (cy, cx, outer, inner), (by, bx, br), np.array(PROTOCOLS["bright"]))


def make_varied_case(rng: np.random.Generator, shape: tuple[int, int, int],
                     typical: bool) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image, dense label)`` pair of population ``"narrow-full"``.

    Every parameter is drawn from its whole range, or with ``typical`` from a narrow central part of it: ring radius
    0.10-0.26 of the height (typical 0.17-0.20), cavity radius 0.40-0.65 of the ring's (0.50-0.58), blob radius and
    ring-to-blob gap, and the position of the ring and blob anywhere they fit (typical: the middle tenth of that
    interval). The protocol is ``"dark"`` with probability 1/2, except for typical cases, which are all ``"bright"``.
    Per-class means vary by +-8 % around the protocol's. The random draws are the same in number either way.
    """
    _, ny, nx = shape

    def draw(whole: tuple[float, float], central: tuple[float, float]) -> float:
        value = rng.uniform(*whole)  # drawn in both cases, so that ``typical`` does not shift later draws
        return rng.uniform(*central) if typical else value

    outer = draw((0.10, 0.26), (0.17, 0.20)) * ny
    inner = outer * draw((0.40, 0.65), (0.50, 0.58))
    br = draw((0.05, 0.10), (0.07, 0.09)) * ny
    gap = draw((0.08, 0.16), (0.11, 0.13)) * nx  # from the ring's edge to the blob's centre
    margin = 2.0
    cx_lo, cx_hi = outer + margin, nx - margin - (outer + gap + br / 0.8)  # the blob is an ellipse, wider in x
    cy_lo, cy_hi = outer + margin, ny - margin - outer
    cx = cx_lo + draw((0.0, 1.0), (0.45, 0.55)) * (cx_hi - cx_lo)
    cy = cy_lo + draw((0.0, 1.0), (0.45, 0.55)) * (cy_hi - cy_lo)
    by = float(np.clip(cy + rng.uniform(-0.08, 0.08) * ny, br + 1, ny - br - 1))
    dark = rng.random() < 0.5 and not typical
    means = np.array(PROTOCOLS["dark" if dark else "bright"]) * rng.uniform(0.92, 1.08, 4)
    return _draw_stack(rng, shape, (cy, cx, outer, inner), (by, cx + outer + gap, br), means)


def _budget(spec: SyntheticSpec) -> Budget:
    return Budget(full=spec.n_full, weak="erosion", unlabeled=spec.n_unlabeled, seed=spec.seed,
                  params={"iterations": spec.seed_iterations})


def case_ids(spec: SyntheticSpec) -> tuple[list[str], list[str]]:
    """Identifiers of the training cases (``case_000``...) and of the held-out cases (``test_000``...)."""
    n_train = spec.n_full + spec.n_weak + spec.n_unlabeled
    return [f"case_{i:03d}" for i in range(n_train)], [f"test_{i:03d}" for i in range(spec.n_test)]


def training_levels(spec: SyntheticSpec) -> dict[str, str]:
    """Supervision level (``full``, ``weak``, ``unlabeled``) of every training case, drawn as the writer draws it."""
    def unread() -> CaseData:
        raise RuntimeError("placeholder case")

    train, _ = case_ids(spec)
    return assign_levels([SourceCase(c, c, unread) for c in train], _budget(spec))


def synthetic_cases(spec: SyntheticSpec) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{case id: (image, dense label)}`` of every training and held-out case of ``spec``, in that order."""
    rng = np.random.default_rng(spec.seed)
    train, test = case_ids(spec)
    if spec.variation == "shared":
        arrays = [make_case(rng, spec.shape) for _ in train + test]
    else:
        levels = training_levels(spec)
        arrays = [make_varied_case(rng, spec.shape, levels.get(c) == "full") for c in train + test]
    return dict(zip(train + test, arrays, strict=True))


def _source_case(case_id: str, image: np.ndarray, dense: np.ndarray) -> SourceCase:
    def read() -> CaseData:
        images = [sitk.GetImageFromArray(image)]
        label = sitk.GetImageFromArray(dense)
        for img in images + [label]:
            img.SetSpacing(tuple(float(s) for s in SPACING[::-1]))  # SimpleITK spacing is (x, y, z)
        return CaseData(images, label)

    return SourceCase(case_id, case_id, read, origin=f"synthetic case {case_id}")


def description(spec: SyntheticSpec) -> str:
    """The ``description`` written into dataset.json (names the population when it is not the default)."""
    text = "Synthetic mixed-supervision dataset generated by nnunetv2-confkd"
    return text if spec.variation == "shared" else f"{text} (variation {spec.variation})"


def make_synthetic_dataset(raw_root: Path, dataset_id: int = 990, spec: SyntheticSpec = SyntheticSpec(),
                           preprocessed_root: Path | None = None, name: str = "ConfKDSynthetic",
                           overwrite: bool = False) -> Path:
    """Write ``DatasetNNN_<name>`` under ``raw_root`` with the project's converter machinery
    (:func:`~.writer.write_mixed_dataset`: manifest, weak-label record, splits). Returns the dataset
    folder. Refuses to overwrite an existing dataset unless ``overwrite``."""
    train_ids, _ = case_ids(spec)
    cases = [_source_case(c, *arrays) for c, arrays in synthetic_cases(spec).items()]
    train, test = cases[:len(train_ids)], cases[len(train_ids):]
    dataset = DatasetSpec(dataset_id, name, {k: v for k, v in LABELS.items() if k != "ignore"}, {0: "MRI"},
                          description=description(spec), source="nnunetv2_confkd_conversion.synthetic",
                          spacing_setting=SPACING)
    return write_mixed_dataset(train, test, dataset, _budget(spec), raw_root, preprocessed_root, overwrite)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--raw", "--out", dest="raw", type=Path, default=None,
                        help="nnUNet_raw folder to write into (default: $nnUNet_raw)")
    parser.add_argument("--preprocessed", type=Path, default=None,
                        help="nnUNet_preprocessed folder for splits_final.json (default: $nnUNet_preprocessed)")
    parser.add_argument("-d", "--id", "--dataset-id", dest="id", type=int, default=990, help="dataset id (990)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variation", choices=VARIATIONS, default="shared",
                        help="shared: all cases drawn alike; narrow-full: the demo's data, in which the weak and "
                             "held-out cases vary more than the full ones (default: shared)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset of the same id")
    args = parser.parse_args(argv)
    raw = args.raw or (Path(os.environ["nnUNet_raw"]) if "nnUNet_raw" in os.environ else None)
    if raw is None:
        parser.error("give -o or set nnUNet_raw")
    pre = args.preprocessed or (Path(os.environ["nnUNet_preprocessed"]) if "nnUNet_preprocessed" in os.environ
                                else None)
    spec = replace(DEMO_SPEC if args.variation == "narrow-full" else SyntheticSpec(), seed=args.seed)
    path = make_synthetic_dataset(raw, args.id, spec, pre, overwrite=args.overwrite)
    print(path)


if __name__ == "__main__":
    main()
