"""Checks of the weak-label simulators' inputs (:mod:`~.weak_labels`): each failure raises ``ValueError`` with a
message that names the argument."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition``."""
    if not condition:
        raise ValueError(message)


def is_int(value: object) -> bool:
    """An integer (Python or numpy), not a bool.

    Example:
        >>> is_int(3), is_int(np.int64(3)), is_int(True), is_int(3.0)
        (True, True, False, False)
    """
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_length(value: object) -> bool:
    """A finite real number >= 0 (a length in mm or voxels)."""
    return isinstance(value, int | float | np.integer | np.floating) and math.isfinite(value) and value >= 0


def check_inputs(dense: np.ndarray, spacing: Sequence[float], ignore_label: int) -> None:
    """Raise ``ValueError`` unless ``dense`` is a non-empty 2D/3D array of non-negative integer labels, free of
    ``ignore_label``, and ``spacing`` has one positive entry per axis."""
    require(isinstance(dense, np.ndarray) and dense.ndim in (2, 3) and dense.size > 0,
            f"dense must be a non-empty numpy array with 2 or 3 axes, got {getattr(dense, 'shape', type(dense))}")
    require(len(spacing) == dense.ndim and all(is_length(s) and s > 0 for s in spacing),
            f"spacing needs {dense.ndim} positive entries, one per axis of dense {dense.shape}, got {tuple(spacing)}")
    require(dense.dtype.kind in "iuf", f"dense must hold integer labels, got dtype {dense.dtype}")
    require(dense.dtype.kind != "f" or bool(np.all(np.mod(dense, 1) == 0)),
            "dense must hold integer labels, got non-integer values")
    require(dense.min() >= 0, f"dense labels must be non-negative, got {dense.min()}")
    require(is_int(ignore_label), f"ignore_label must be an integer, got {ignore_label!r}")
    if dense.dtype.kind in "iu":
        info = np.iinfo(dense.dtype)
        require(info.min <= ignore_label <= info.max, f"ignore_label {ignore_label} does not fit dtype {dense.dtype}")
    require(not (dense == ignore_label).any(),
            f"dense already contains the ignore label {ignore_label}: simulate weak labels from a dense mask")


def class_set(component_classes: Sequence[int]) -> frozenset[int]:
    """``component_classes`` as a set of ints (``ValueError`` for a non-integer)."""
    require(all(is_int(c) for c in component_classes),
            f"component_classes must be integers, got {tuple(component_classes)}")
    return frozenset(int(c) for c in component_classes)
