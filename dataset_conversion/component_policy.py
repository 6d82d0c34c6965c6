"""The component policy: every 2D connected component of the protected classes (``component_classes``) of a weak case
keeps an annotated voxel. :func:`component_check` is the ``verify`` hook of :func:`~.writer.write_mixed_dataset` that
checks it; it runs before a case is written, so a failure never touches an existing dataset."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from nnunetv2_confkd_conversion.cases import SourceCase, Verify
from scipy import ndimage


def lost_components(dense: np.ndarray, weak: np.ndarray, classes: Sequence[int]) -> dict[int, tuple[int, int]]:
    """``{class: (components without an annotated voxel, components)}`` over the 2D 8-connected components of every
    slice (the last two axes), the unit that ``component_classes`` protects.

    Example:
        >>> dense = np.array([[[2, 0, 2], [2, 0, 0]]])
        >>> lost_components(dense, np.array([[[2, 3, 3], [3, 3, 3]]]), [2])
        {2: (1, 2)}
    """
    structure = np.zeros((3,) * dense.ndim, bool)
    structure[(1,) * (dense.ndim - 2)] = True  # 8-connected within a slice, never across slices
    result = {}
    for c in classes:
        components, n = ndimage.label(dense == c, structure=structure)
        hit = np.unique(components[(weak == c) & (components > 0)])
        result[int(c)] = (int(n - hit.size), int(n))
    return result


def component_check(classes: Sequence[int], strict: bool = True) -> Verify:
    """A ``verify`` hook of :func:`~.writer.write_mixed_dataset`: every 2D connected component
    (:func:`lost_components`) of ``classes`` in a weak case keeps an annotated voxel.

    Args:
        classes: the classes to check (the budget's ``component_classes``).
        strict: raise ``RuntimeError`` when a component lost its annotation (the conversion stops, nothing is
            written or replaced: the policy is broken, a bug of the simulator); otherwise warn.
    """
    classes = tuple(int(c) for c in classes)

    def verify(case: SourceCase, dense: np.ndarray, label: np.ndarray, level: str) -> None:
        if level != "weak":
            return
        lost = {c: v for c, v in lost_components(dense, label, classes).items() if v[0]}
        if not lost:
            return
        listing = ", ".join(f"class {c} {n}/{t} components" for c, (n, t) in lost.items())
        message = f"a weak case lost every annotated voxel of some components ({case.case_id}: {listing})"
        if strict:
            raise RuntimeError(f"{message}; this breaks the component policy, so the conversion stopped and nothing "
                               "was written. Please report it as a bug of nnunetv2_confkd_conversion.weak_labels.")
        warnings.warn(message, stacklevel=2)

    return verify
