"""Weak labels simulated from dense masks: the numpy simulators the dataset converters call.

Converters call them through :func:`simulate_weak_label` with a kind of :data:`WEAK_KINDS`. They are pure functions
of ``(dense, spacing, rng)``: ``dense`` is an integer label array of 2 or 3 axes in numpy order, ``spacing`` its voxel
size in mm in the same order, and ``rng`` the only source of randomness. They work per 2D slice over the last two axes
and return a new array of the same shape and dtype whose annotated voxels are a subset of ``dense`` with their true
class; every other voxel is ``ignore_label``.

- ``erosion``: the paper's seeds, computed by :func:`~nnunetv2_confkd.training.seeds.erosion_seeds` (one
  implementation of the algorithm, in torch), so that converter and trainer agree voxel for voxel.
- ``points``: ``k`` voxels per slice and structure, drawn uniformly without replacement, optionally grown to discs of
  ``radius_mm`` clipped to the structure (the ``random_strat`` idea of the erosion script named under Provenance).
- ``scribble``: skeleton-based, as in WSL4MIS and ScribbleBench (re-implemented here, not copied): a light erosion,
  the skeleton (``skimage.morphology.skeletonize``), one random connected piece of it, optionally thickened to
  ``width_mm``, because one-pixel strokes can vanish when nnU-Net resamples.
- ``unlabeled``: everything ``ignore_label`` (the semi-supervised setting).

Structures are the non-zero classes of a slice. Background (class 0) is annotated only with ``background=True``, by
the same kind of annotation restricted to background voxels. For scribbles the background region is further
restricted to the band of background voxels within :data:`BACKGROUND_BAND_VOXELS` voxels (Euclidean, in-plane) of the
slice's foreground (the whole background if the slice has none): the skeleton of the whole background runs halfway to
the image border, where background is trivial, whereas a band gives a stroke around the structures, as expert
scribbles do. Classes listed in ``component_classes`` are handled per 8-connected component of a slice instead of per
class, so that no component (a small tumor next to a large one) silently loses all its annotation.

The regions of a slice are listed by :mod:`~.slice_regions`, annotated by :mod:`~.region_annotators`, and the inputs
checked by :mod:`~.simulator_inputs`.

Provenance: the erosion strategy follows ``LIVIAETS/SizeLoss_WSS:gen_weak.py``; the scribbles follow the
skeleton-based simulation of WSL4MIS and ScribbleBench, re-implemented.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from nnunetv2_confkd_conversion.region_annotators import eroded, points_in, scribble_in
from nnunetv2_confkd_conversion.simulator_inputs import check_inputs, class_set, is_int, is_length, require
from nnunetv2_confkd_conversion.slice_regions import BACKGROUND_BAND_VOXELS, simulate_regions

from nnunetv2_confkd.training.seeds import erosion_seeds

__all__ = ["BACKGROUND_BAND_VOXELS", "WEAK_KINDS", "annotated_voxels_per_class", "erosion", "points", "scribble",
           "simulate_weak_label", "unlabeled"]

WEAK_KINDS = ("erosion", "points", "scribble", "unlabeled")


def erosion(dense: np.ndarray, spacing: Sequence[float], rng: np.random.Generator, ignore_label: int, *,
            iterations: int = 10, background: bool = False, component_classes: Sequence[int] = ()) -> np.ndarray:
    """The paper's seeds: per slice and structure, the largest non-empty erosion by up to ``iterations`` 3x3 steps.

    The per-class seeds come from :func:`erosion_seeds`, so they equal the trainer's on-the-fly seeds of the same
    array; ``component_classes`` are eroded per 8-connected component with SciPy (same erosion, per-component
    fallback), so a component too small for the class's erosion depth keeps its own seeds.

    Args:
        dense: integer label array of 2 or 3 axes (numpy order); not modified.
        spacing: voxel size in mm, one entry per axis of ``dense`` (checked; erosion counts voxels).
        rng: unused (the erosion is deterministic); kept for the common simulator signature.
        ignore_label: value of every unannotated voxel; must not occur in ``dense``.
        iterations: maximal number of 3x3 erosions (10 in the paper, on 256x256 slices).
        background: also seed class 0 with its eroded mask (off in the paper setting).
        component_classes: classes seeded per connected component.

    Returns:
        A new array of the shape and dtype of ``dense``: seeds with their class, ``ignore_label`` elsewhere.

    Example:
        >>> dense = np.zeros((7, 9), dtype=np.uint8)
        >>> dense[1:6, 1:8] = 1  # 5 x 7: two erosions leave 1 x 3
        >>> annotated_voxels_per_class(erosion(dense, (1.0, 1.0), np.random.default_rng(0), 255), 255)
        {1: 3}
    """
    check_inputs(dense, spacing, ignore_label)
    require(is_int(iterations) and iterations >= 0, f"iterations must be an integer >= 0, got {iterations!r}")
    components = class_set(component_classes)
    per_class = dense.astype(np.int64)  # a copy; component classes become ignore here and are seeded below
    per_class[np.isin(per_class, list(components))] = ignore_label
    seeds = erosion_seeds(torch.from_numpy(per_class)[None, None], ignore_label, int(iterations), background)
    out = np.ascontiguousarray(seeds[0, 0].numpy().astype(dense.dtype))
    if components:
        simulate_regions(dense, ignore_label, lambda mask: eroded(mask, int(iterations)), out=out,
                         background=background, component_classes=components, only_components=True)
    return out


def points(dense: np.ndarray, spacing: Sequence[float], rng: np.random.Generator, ignore_label: int, *,
           k: int = 3, radius_mm: float = 0.0, background: bool = False,
           component_classes: Sequence[int] = ()) -> np.ndarray:
    """Random points: per slice and structure (or component), ``k`` voxels drawn uniformly without replacement.

    Args:
        dense: integer label array of 2 or 3 axes (numpy order); not modified.
        spacing: voxel size in mm, one entry per axis; the last two set the disc shape.
        rng: the only source of randomness.
        ignore_label: value of every unannotated voxel; must not occur in ``dense``.
        k: points per structure and slice (all its voxels if it has fewer).
        radius_mm: with ``radius_mm > 0``, each point grows to the voxels within ``radius_mm`` of it in the slice,
            clipped to the structure (or component).
        background: also draw ``k`` points in the background of every slice.
        component_classes: classes drawn per connected component (``k`` points each).

    Returns:
        A new array of the shape and dtype of ``dense``: points with their class, ``ignore_label`` elsewhere.

    Example:
        >>> dense = np.zeros((6, 8), dtype=np.uint8)
        >>> dense[1:5, 2:7] = 2
        >>> annotated_voxels_per_class(points(dense, (1.0, 1.0), np.random.default_rng(0), 255, k=3), 255)
        {2: 3}
    """
    check_inputs(dense, spacing, ignore_label)
    require(is_int(k) and k >= 1, f"k must be an integer >= 1, got {k!r}")
    require(is_length(radius_mm), f"radius_mm must be a finite number >= 0, got {radius_mm!r}")
    plane_spacing = (float(spacing[-2]), float(spacing[-1]))
    return simulate_regions(dense, ignore_label,
                            lambda mask: points_in(mask, rng, int(k), float(radius_mm), plane_spacing),
                            background=background, component_classes=class_set(component_classes))


def scribble(dense: np.ndarray, spacing: Sequence[float], rng: np.random.Generator, ignore_label: int, *,
             fraction: float = 0.5, width_mm: float = 0.0, erode: int = 1, background: bool = False,
             component_classes: Sequence[int] = ()) -> np.ndarray:
    """Skeleton scribbles: per slice and structure (or component), a random connected piece of its skeleton.

    The structure is eroded by up to ``erode`` 3x3 steps (fewer if it would vanish) and skeletonised; a uniformly
    drawn skeleton pixel grows breadth-first along the skeleton to ``fraction`` of the length of the skeleton
    component it lies on. A structure with an empty skeleton keeps its most interior voxel. The background region,
    with ``background``, is the band of :data:`BACKGROUND_BAND_VOXELS` around the foreground (module docstring).
    As with any skeleton-based simulation, round convex structures have a very short skeleton (a disc's is a few
    voxels at its centre), so their scribbles are short; elongated structures and rings get long strokes.

    Args:
        dense: integer label array of 2 or 3 axes (numpy order); not modified.
        spacing: voxel size in mm, one entry per axis; the last two set the stroke width.
        rng: the only source of randomness.
        ignore_label: value of every unannotated voxel; must not occur in ``dense``.
        fraction: length of the piece relative to its skeleton component, in ``(0, 1]``.
        width_mm: with ``width_mm > 0``, the stroke becomes the voxels within ``width_mm / 2`` of the piece in the
            slice, clipped to the structure; 0 keeps the one-voxel (8-connected) stroke.
        erode: erosion steps before skeletonising (keeps strokes off the boundary).
        background: also scribble in the background band of every slice.
        component_classes: classes scribbled per connected component (one scribble each).

    Returns:
        A new array of the shape and dtype of ``dense``: scribbles with their class, ``ignore_label`` elsewhere.

    Example:
        >>> dense = np.zeros((9, 30), dtype=np.uint8)
        >>> dense[2:7, 2:28] = 1
        >>> weak = scribble(dense, (1.0, 1.0), np.random.default_rng(0), 255, fraction=1.0, erode=2)
        >>> annotated_voxels_per_class(weak, 255)  # the skeleton of the eroded band: row 4, columns 4 to 25
        {1: 22}
    """
    check_inputs(dense, spacing, ignore_label)
    require(isinstance(fraction, int | float) and 0 < fraction <= 1, f"fraction must be in (0, 1], got {fraction!r}")
    require(is_length(width_mm), f"width_mm must be a finite number >= 0, got {width_mm!r}")
    require(is_int(erode) and erode >= 0, f"erode must be an integer >= 0, got {erode!r}")
    plane_spacing = (float(spacing[-2]), float(spacing[-1]))
    return simulate_regions(
        dense, ignore_label,
        lambda mask: scribble_in(mask, rng, float(fraction), float(width_mm), int(erode), plane_spacing),
        background=background, component_classes=class_set(component_classes), band=True,
    )


def unlabeled(dense: np.ndarray, spacing: Sequence[float], rng: np.random.Generator, ignore_label: int,
              **_: object) -> np.ndarray:
    """No annotation at all (the semi-supervised setting): a new all-``ignore_label`` array like ``dense``.

    Example:
        >>> unlabeled(np.zeros((2, 3), dtype=np.uint8), (1.0, 1.0), np.random.default_rng(0), 255).tolist()
        [[255, 255, 255], [255, 255, 255]]
    """
    check_inputs(dense, spacing, ignore_label)
    return np.full(dense.shape, ignore_label, dtype=dense.dtype)


_SIMULATORS: dict[str, Callable[..., np.ndarray]] = {
    "erosion": erosion, "points": points, "scribble": scribble, "unlabeled": unlabeled,
}


def simulate_weak_label(kind: str, dense: np.ndarray, spacing: Sequence[float], rng: np.random.Generator,
                        ignore_label: int, *, background: bool = False, component_classes: Sequence[int] = (),
                        **params: object) -> np.ndarray:
    """Dispatch to the simulator ``kind`` of :data:`WEAK_KINDS`, passing ``params`` (e.g. ``k``) through.

    Raises:
        ValueError: for an unknown ``kind`` (the message names the allowed kinds), or invalid inputs.

    Example:
        >>> dense = np.zeros((6, 8), dtype=np.uint8)
        >>> dense[1:5, 2:7] = 2
        >>> weak = simulate_weak_label("points", dense, (1.0, 1.0), np.random.default_rng(0), 255, k=2)
        >>> annotated_voxels_per_class(weak, 255)
        {2: 2}
    """
    require(kind in WEAK_KINDS, f"unknown weak-label kind {kind!r}; allowed kinds: {', '.join(WEAK_KINDS)}")
    return _SIMULATORS[kind](dense, spacing, rng, ignore_label, background=background,
                             component_classes=component_classes, **params)


def annotated_voxels_per_class(label: np.ndarray, ignore_label: int) -> dict[int, int]:
    """Number of voxels of every non-ignore class value present in ``label``, in increasing class order.

    Example:
        >>> annotated_voxels_per_class(np.array([[0, 1, 1], [4, 4, 2]]), 4)
        {0: 1, 1: 2, 2: 1}
    """
    values, counts = np.unique(np.asarray(label), return_counts=True)
    return {int(v): int(n) for v, n in zip(values, counts, strict=True) if v != ignore_label}
