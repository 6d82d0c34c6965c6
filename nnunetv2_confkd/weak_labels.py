"""Weak labels simulated from dense masks: the numpy simulators the dataset converters call (method.md §5).

Converters call them through :func:`simulate_weak_label` with a kind of :data:`WEAK_KINDS`. They are pure functions
of ``(dense, spacing, rng)``: ``dense`` is an integer label array of 2 or 3 axes in numpy order, ``spacing`` its voxel
size in mm in the same order, and ``rng`` the only source of randomness. They work per 2D slice over the last two axes
and return a new array of the same shape and dtype whose annotated voxels are a subset of ``dense`` with their true
class; every other voxel is ``ignore_label``.

- ``erosion``: the paper's seeds, computed by :func:`nnunetv2_confkd.seeds.erosion_seeds` (one implementation of the
  algorithm, in torch), so that converter and trainer agree voxel for voxel.
- ``points``: ``k`` voxels per slice and structure, drawn uniformly without replacement, optionally grown to discs of
  ``radius_mm`` clipped to the structure (the ``random_strat`` idea of the same script).
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

Provenance: the erosion strategy follows ``LIVIAETS/SizeLoss_WSS:gen_weak.py``; the scribbles follow the
skeleton-based simulation of WSL4MIS and ScribbleBench, re-implemented.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Container, Iterator, Sequence

import numpy as np
import torch
from scipy import ndimage
from skimage.morphology import skeletonize

from nnunetv2_confkd.seeds import erosion_seeds

WEAK_KINDS = ("erosion", "points", "scribble", "unlabeled")
BACKGROUND_BAND_VOXELS = 10
"""Background scribbles lie in the background voxels within this in-plane distance (voxels) of the foreground."""

_FULL_3X3 = np.ones((3, 3), dtype=bool)
_NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
Annotator = Callable[[np.ndarray], np.ndarray]
"""Maps the boolean mask of one region of one slice to the boolean mask of its annotated voxels (a subset)."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_length(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and math.isfinite(value) and value >= 0


def _check_inputs(dense: np.ndarray, spacing: Sequence[float], ignore_label: int) -> None:
    """Raise ``ValueError`` unless ``dense`` is a non-empty 2D/3D array of non-negative integer labels, free of
    ``ignore_label``, and ``spacing`` has one positive entry per axis."""
    _require(isinstance(dense, np.ndarray) and dense.ndim in (2, 3) and dense.size > 0,
             f"dense must be a non-empty numpy array with 2 or 3 axes, got {getattr(dense, 'shape', type(dense))}")
    _require(len(spacing) == dense.ndim and all(_is_length(s) and s > 0 for s in spacing),
             f"spacing needs {dense.ndim} positive entries, one per axis of dense {dense.shape}, got {tuple(spacing)}")
    _require(dense.dtype.kind in "iuf", f"dense must hold integer labels, got dtype {dense.dtype}")
    _require(dense.dtype.kind != "f" or bool(np.all(np.mod(dense, 1) == 0)),
             "dense must hold integer labels, got non-integer values")
    _require(dense.min() >= 0, f"dense labels must be non-negative, got {dense.min()}")
    _require(_is_int(ignore_label), f"ignore_label must be an integer, got {ignore_label!r}")
    if dense.dtype.kind in "iu":
        info = np.iinfo(dense.dtype)
        _require(info.min <= ignore_label <= info.max, f"ignore_label {ignore_label} does not fit dtype {dense.dtype}")
    _require(not (dense == ignore_label).any(),
             f"dense already contains the ignore label {ignore_label}: simulate weak labels from a dense mask")


def _class_set(component_classes: Sequence[int]) -> frozenset[int]:
    _require(all(_is_int(c) for c in component_classes),
             f"component_classes must be integers, got {tuple(component_classes)}")
    return frozenset(int(c) for c in component_classes)


def _eroded(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` eroded by the largest ``k <= steps`` full 3x3 erosions that leaves something, else ``mask`` itself."""
    kept = current = mask
    for _ in range(steps):
        current = ndimage.binary_erosion(current, structure=_FULL_3X3, border_value=0)
        if not current.any():
            break
        kept = current
    return kept


def _grown(seeds: np.ndarray, distance_mm: float, plane_spacing: tuple[float, float]) -> np.ndarray:
    """Voxels whose centre lies within ``distance_mm`` (in-plane, in mm) of a seed; the seeds if the distance is 0."""
    if distance_mm <= 0:
        return seeds
    return ndimage.distance_transform_edt(~seeds, sampling=plane_spacing) <= distance_mm


def _background_band(plane: np.ndarray) -> np.ndarray:
    """Background voxels within :data:`BACKGROUND_BAND_VOXELS` of the slice's foreground (all if there is none)."""
    foreground = plane != 0
    if not foreground.any():
        return ~foreground
    return ~foreground & (ndimage.distance_transform_edt(~foreground) <= BACKGROUND_BAND_VOXELS)


def _regions(plane: np.ndarray, *, background: bool, component_classes: Container[int], band: bool = False,
             only_components: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """``(class, mask)`` of every region of one slice to annotate, in a fixed order (determinism under a seed).

    A region is a class (a structure) or, for ``component_classes``, one 8-connected component of it; class 0 is a
    region only with ``background``, restricted to :func:`_background_band` with ``band``.
    """
    for value in np.unique(plane):
        c = int(value)
        if (c == 0 and not background) or (only_components and c not in component_classes):
            continue
        mask = _background_band(plane) if c == 0 and band else plane == value
        if c not in component_classes:
            yield c, mask
            continue
        components, n = ndimage.label(mask, structure=_FULL_3X3)
        yield from ((c, components == i) for i in range(1, n + 1))


def _box(mask: np.ndarray) -> tuple[slice, slice]:
    """Bounding box of a non-empty mask with a one-voxel margin: annotators see a crop, not the whole slice."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2)


def _simulate(dense: np.ndarray, ignore_label: int, annotate: Annotator, *, out: np.ndarray | None = None,
              **region_options: object) -> np.ndarray:
    """Write ``annotate(region)`` with the region's class, for every region of every slice, into ``out``.

    ``out`` (a new all-ignore array by default) must be C-contiguous so that its slices are views. Regions of one
    slice are disjoint and each annotation is a subset of its region, so writes never overlap. The crop to the
    region's box is exact (every annotator's output is clipped to its region) and keeps the row-major order of the
    voxels, hence the random draws, of the whole slice.
    """
    out = np.full(dense.shape, ignore_label, dtype=dense.dtype) if out is None else out
    height, width = dense.shape[-2:]
    for plane, target in zip(dense.reshape(-1, height, width), out.reshape(-1, height, width), strict=True):
        for c, mask in _regions(plane, **region_options):
            box = _box(mask)
            target[box][annotate(mask[box])] = c
    return out


def _points_in(mask: np.ndarray, rng: np.random.Generator, k: int, radius_mm: float,
               plane_spacing: tuple[float, float]) -> np.ndarray:
    """``k`` voxels of ``mask`` drawn uniformly without replacement (all if fewer), grown to discs clipped to it."""
    flat = np.flatnonzero(mask)
    chosen = np.zeros(mask.shape, dtype=bool)
    chosen.flat[rng.choice(flat, size=min(k, flat.size), replace=False)] = True
    return _grown(chosen, radius_mm, plane_spacing) & mask


def _bfs_piece(skeleton: np.ndarray, start: tuple[int, int], length: int) -> np.ndarray:
    """The first ``length`` skeleton pixels reached by a breadth-first walk (8-connectivity) from ``start``.

    Every pixel joins next to one already taken, so the piece is connected; it stops early at the end of the
    start's skeleton component.
    """
    height, width = skeleton.shape
    piece = np.zeros_like(skeleton)
    piece[start] = True
    queue, size = deque([start]), 1
    while queue and size < length:
        y, x = queue.popleft()
        for ny, nx in ((y + dy, x + dx) for dy, dx in _NEIGHBOURS):
            if size < length and 0 <= ny < height and 0 <= nx < width and skeleton[ny, nx] and not piece[ny, nx]:
                piece[ny, nx] = True
                size += 1
                queue.append((ny, nx))
    return piece


def _skeleton_piece(skeleton: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """A random connected piece of a non-empty skeleton: from a uniformly drawn pixel, ``fraction`` of the length
    (pixel count) of the skeleton component that pixel lies on, at least one pixel."""
    coords = np.argwhere(skeleton)
    start = tuple(int(v) for v in coords[rng.integers(len(coords))])
    components, _ = ndimage.label(skeleton, structure=_FULL_3X3)
    component_length = int((components == components[start]).sum())
    return _bfs_piece(skeleton, start, max(1, round(fraction * component_length)))


def _scribble_in(mask: np.ndarray, rng: np.random.Generator, fraction: float, width_mm: float, erode: int,
                 plane_spacing: tuple[float, float]) -> np.ndarray:
    """A scribble of one region: a piece of the skeleton of the lightly eroded region, thickened, clipped to it."""
    skeleton = skeletonize(_eroded(mask, erode))
    if skeleton.any():
        piece = _skeleton_piece(skeleton, rng, fraction)
    else:  # nothing to draw along: keep the most interior voxel so that the structure is not lost
        piece = np.zeros_like(mask)
        piece[np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask)), mask.shape)] = True
    return _grown(piece, width_mm / 2, plane_spacing) & mask


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
    _check_inputs(dense, spacing, ignore_label)
    _require(_is_int(iterations) and iterations >= 0, f"iterations must be an integer >= 0, got {iterations!r}")
    components = _class_set(component_classes)
    per_class = dense.astype(np.int64)  # a copy; component classes become ignore here and are seeded below
    per_class[np.isin(per_class, list(components))] = ignore_label
    seeds = erosion_seeds(torch.from_numpy(per_class)[None, None], ignore_label, int(iterations), background)
    out = np.ascontiguousarray(seeds[0, 0].numpy().astype(dense.dtype))
    if components:
        _simulate(dense, ignore_label, lambda mask: _eroded(mask, int(iterations)), out=out, background=background,
                  component_classes=components, only_components=True)
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
    _check_inputs(dense, spacing, ignore_label)
    _require(_is_int(k) and k >= 1, f"k must be an integer >= 1, got {k!r}")
    _require(_is_length(radius_mm), f"radius_mm must be a finite number >= 0, got {radius_mm!r}")
    plane_spacing = (float(spacing[-2]), float(spacing[-1]))
    return _simulate(dense, ignore_label, lambda mask: _points_in(mask, rng, int(k), float(radius_mm), plane_spacing),
                     background=background, component_classes=_class_set(component_classes))


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
    _check_inputs(dense, spacing, ignore_label)
    _require(isinstance(fraction, int | float) and 0 < fraction <= 1, f"fraction must be in (0, 1], got {fraction!r}")
    _require(_is_length(width_mm), f"width_mm must be a finite number >= 0, got {width_mm!r}")
    _require(_is_int(erode) and erode >= 0, f"erode must be an integer >= 0, got {erode!r}")
    plane_spacing = (float(spacing[-2]), float(spacing[-1]))
    return _simulate(
        dense, ignore_label,
        lambda mask: _scribble_in(mask, rng, float(fraction), float(width_mm), int(erode), plane_spacing),
        background=background, component_classes=_class_set(component_classes), band=True,
    )


def unlabeled(dense: np.ndarray, spacing: Sequence[float], rng: np.random.Generator, ignore_label: int,
              **_: object) -> np.ndarray:
    """No annotation at all (the semi-supervised setting): a new all-``ignore_label`` array like ``dense``.

    Example:
        >>> unlabeled(np.zeros((2, 3), dtype=np.uint8), (1.0, 1.0), np.random.default_rng(0), 255).tolist()
        [[255, 255, 255], [255, 255, 255]]
    """
    _check_inputs(dense, spacing, ignore_label)
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
    _require(kind in WEAK_KINDS, f"unknown weak-label kind {kind!r}; allowed kinds: {', '.join(WEAK_KINDS)}")
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
