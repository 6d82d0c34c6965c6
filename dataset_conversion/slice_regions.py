"""The regions of a 2D slice that the weak-label simulators annotate, and the loop that annotates them
(:func:`simulate_regions`).

A region is a class of a slice (a structure) or, for ``component_classes``, one 8-connected component of it.
Background (class 0) is a region only with ``background``; for scribbles (``band``) it is restricted to the background
voxels within :data:`BACKGROUND_BAND_VOXELS` voxels (Euclidean, in-plane) of the slice's foreground
(:func:`background_band`).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator

import numpy as np
from scipy import ndimage

BACKGROUND_BAND_VOXELS = 10
"""Background scribbles lie in the background voxels within this in-plane distance (voxels) of the foreground."""

FULL_3X3 = np.ones((3, 3), dtype=bool)
Annotator = Callable[[np.ndarray], np.ndarray]
"""Maps the boolean mask of one region of one slice to the boolean mask of its annotated voxels (a subset)."""


def background_band(plane: np.ndarray) -> np.ndarray:
    """Background voxels within :data:`BACKGROUND_BAND_VOXELS` of the slice's foreground (all if there is none)."""
    foreground = plane != 0
    if not foreground.any():
        return ~foreground
    return ~foreground & (ndimage.distance_transform_edt(~foreground) <= BACKGROUND_BAND_VOXELS)


def regions(plane: np.ndarray, *, background: bool, component_classes: Container[int], band: bool = False,
            only_components: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """``(class, mask)`` of every region of one slice to annotate, in a fixed order (determinism under a seed).

    A region is a class (a structure) or, for ``component_classes``, one 8-connected component of it; class 0 is a
    region only with ``background``, restricted to :func:`background_band` with ``band``. With ``only_components``
    only the regions of ``component_classes`` are listed.

    Example:
        >>> plane = np.array([[1, 0, 1], [0, 0, 0]])
        >>> [(c, int(m.sum())) for c, m in regions(plane, background=False, component_classes={1})]
        [(1, 1), (1, 1)]
    """
    for value in np.unique(plane):
        c = int(value)
        if (c == 0 and not background) or (only_components and c not in component_classes):
            continue
        mask = background_band(plane) if c == 0 and band else plane == value
        if c not in component_classes:
            yield c, mask
            continue
        components, n = ndimage.label(mask, structure=FULL_3X3)
        yield from ((c, components == i) for i in range(1, n + 1))


def box(mask: np.ndarray) -> tuple[slice, slice]:
    """Bounding box of a non-empty mask with a one-voxel margin: annotators see a crop, not the whole slice."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2)


def simulate_regions(dense: np.ndarray, ignore_label: int, annotate: Annotator, *, out: np.ndarray | None = None,
                     **region_options: object) -> np.ndarray:
    """Write ``annotate(region)`` with the region's class, for every region of every slice, into ``out``.

    ``out`` (a new all-ignore array by default) must be C-contiguous so that its slices are views. Regions of one
    slice are disjoint and each annotation is a subset of its region, so writes never overlap. The crop to the
    region's box is exact (every annotator's output is clipped to its region) and keeps the row-major order of the
    voxels, hence the random draws, of the whole slice. ``region_options`` are the keywords of :func:`regions`.
    """
    out = np.full(dense.shape, ignore_label, dtype=dense.dtype) if out is None else out
    height, width = dense.shape[-2:]
    for plane, target in zip(dense.reshape(-1, height, width), out.reshape(-1, height, width), strict=True):
        for c, mask in regions(plane, **region_options):
            crop = box(mask)
            target[crop][annotate(mask[crop])] = c
    return out
