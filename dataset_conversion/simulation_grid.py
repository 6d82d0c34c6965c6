"""Weak labels simulated on the grid the network trains on.

A simulator that runs on the native grid makes seeds a few voxels wide; nnU-Net then resamples the label to the
plan's spacing, and at a coarser in-plane spacing a seed of one or two native voxels thins out or vanishes. With
:func:`simulate_on_grid` the simulator runs on the dense label resampled (nearest neighbour) to the training grid's
in-plane spacing, and each annotated voxel of that grid is written back to every native voxel it covers, where the
dense label has the same class. A seed of one training-grid voxel is then a block of native voxels that resamples
back onto the training grid. Slices (the first of three axes) are never resampled, as in nnU-Net's 2D
configurations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def _grid_indices(n_native: int, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Index maps between a native axis of ``n_native`` voxels and a grid ``ratio`` times coarser: for every grid
    voxel the native voxel at its centre, and for every native voxel the grid voxel it lies in.

    Example:
        >>> [a.tolist() for a in _grid_indices(6, 2.0)]
        [[1, 3, 5], [0, 0, 1, 1, 2, 2]]
    """
    n_grid = max(1, int(round(n_native / ratio)))
    down = np.minimum(((np.arange(n_grid) + 0.5) * ratio).astype(int), n_native - 1)
    up = np.minimum(((np.arange(n_native) + 0.5) / ratio).astype(int), n_grid - 1)
    return down, up


def simulate_on_grid(simulate: Callable[[np.ndarray, tuple[float, ...]], np.ndarray], dense: np.ndarray,
                     spacing: Sequence[float], grid_spacing: Sequence[float], ignore_label: int) -> np.ndarray:
    """Run ``simulate(label, spacing)`` on ``dense`` resampled in-plane to ``grid_spacing`` and map its annotations
    back to the native grid.

    Args:
        simulate: a weak-label simulator with its other arguments bound; returns a label map with ``ignore_label``
            where nothing is annotated.
        dense: the dense label map, 2D ``(Y, X)`` or 3D ``(Z, Y, X)``.
        spacing: the native spacing in ``dense``'s axis order (mm).
        grid_spacing: the in-plane ``(Y, X)`` spacing of the training grid (mm).
        ignore_label: the value of unannotated voxels.

    Returns:
        A label map of ``dense``'s shape whose annotated voxels are a subset of ``dense`` with the same class.

    Example:
        >>> dense = np.zeros((8, 8), np.uint8); dense[2:6, 2:6] = 1
        >>> keep_centre = lambda d, s: np.where(d == 1, 1, 9).astype(np.uint8)  # annotates all of class 1
        >>> int((simulate_on_grid(keep_centre, dense, (1.0, 1.0), (2.0, 2.0), 9) == 1).sum())
        16
    """
    if len(grid_spacing) != 2 or min(grid_spacing) <= 0:
        raise ValueError(f"the simulation grid needs two positive in-plane spacings (mm), got {list(grid_spacing)}")
    (down_y, up_y), (down_x, up_x) = (_grid_indices(dense.shape[axis], grid_spacing[i] / spacing[axis])
                                      for i, axis in enumerate((-2, -1)))
    coarse = dense[..., down_y, :][..., down_x]
    weak = simulate(np.ascontiguousarray(coarse), (*spacing[:-2], *grid_spacing))[..., up_y, :][..., up_x]
    weak = np.array(weak, dtype=dense.dtype)
    weak[(weak != ignore_label) & (weak != dense)] = ignore_label  # never a voxel of another class
    return weak
