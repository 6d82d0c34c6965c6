"""What a weak-label simulator annotates inside one region of one slice (a boolean mask): the largest non-empty
erosion (:func:`eroded`), random points grown to discs (:func:`points_in`), or a random connected piece of the
skeleton, thickened (:func:`scribble_in`). Every result is a subset of the region."""

from __future__ import annotations

from collections import deque

import numpy as np
from nnunetv2_confkd_conversion.slice_regions import FULL_3X3
from scipy import ndimage
from skimage.morphology import skeletonize

NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)


def eroded(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` eroded by the largest ``k <= steps`` full 3x3 erosions that leaves something, else ``mask`` itself.

    Example:
        >>> mask = np.zeros((7, 7), dtype=bool)
        >>> mask[1:6, 1:6] = True  # 5 x 5: two erosions leave the centre voxel, a third would empty it
        >>> int(eroded(mask, 10).sum()), int(eroded(mask, 1).sum())
        (1, 9)
    """
    kept = current = mask
    for _ in range(steps):
        current = ndimage.binary_erosion(current, structure=FULL_3X3, border_value=0)
        if not current.any():
            break
        kept = current
    return kept


def grown(seeds: np.ndarray, distance_mm: float, plane_spacing: tuple[float, float]) -> np.ndarray:
    """Voxels whose centre lies within ``distance_mm`` (in-plane, in mm) of a seed; the seeds if the distance is 0."""
    if distance_mm <= 0:
        return seeds
    return ndimage.distance_transform_edt(~seeds, sampling=plane_spacing) <= distance_mm


def points_in(mask: np.ndarray, rng: np.random.Generator, k: int, radius_mm: float,
              plane_spacing: tuple[float, float]) -> np.ndarray:
    """``k`` voxels of ``mask`` drawn uniformly without replacement (all if fewer), grown to discs clipped to it."""
    flat = np.flatnonzero(mask)
    chosen = np.zeros(mask.shape, dtype=bool)
    chosen.flat[rng.choice(flat, size=min(k, flat.size), replace=False)] = True
    return grown(chosen, radius_mm, plane_spacing) & mask


def bfs_piece(skeleton: np.ndarray, start: tuple[int, int], length: int) -> np.ndarray:
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
        for ny, nx in ((y + dy, x + dx) for dy, dx in NEIGHBOURS):
            if size < length and 0 <= ny < height and 0 <= nx < width and skeleton[ny, nx] and not piece[ny, nx]:
                piece[ny, nx] = True
                size += 1
                queue.append((ny, nx))
    return piece


def skeleton_piece(skeleton: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """A random connected piece of a non-empty skeleton: from a uniformly drawn pixel, ``fraction`` of the length
    (pixel count) of the skeleton component that pixel lies on, at least one pixel."""
    coords = np.argwhere(skeleton)
    start = tuple(int(v) for v in coords[rng.integers(len(coords))])
    components, _ = ndimage.label(skeleton, structure=FULL_3X3)
    component_length = int((components == components[start]).sum())
    return bfs_piece(skeleton, start, max(1, round(fraction * component_length)))


def scribble_in(mask: np.ndarray, rng: np.random.Generator, fraction: float, width_mm: float, erode: int,
                plane_spacing: tuple[float, float]) -> np.ndarray:
    """A scribble of one region: a piece of the skeleton of the lightly eroded region, thickened, clipped to it."""
    skeleton = skeletonize(eroded(mask, erode))
    if skeleton.any():
        piece = skeleton_piece(skeleton, rng, fraction)
    else:  # nothing to draw along: keep the most interior voxel so that the structure is not lost
        piece = np.zeros_like(mask)
        piece[np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask)), mask.shape)] = True
    return grown(piece, width_mm / 2, plane_spacing) & mask
