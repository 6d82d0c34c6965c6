"""Per-case supervision levels (the manifest in ``dataset.json``) and batch composition.

The manifest is data: ``dataset.json["supervision"]`` maps every training case identifier to ``"full"``, ``"weak"`` or
``"unlabeled"``; an optional ``dataset.json["weak_label"]`` records how weak labels were made. Converters write it,
trainers only read it and look cases up through ``batch["keys"]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

MANIFEST_KEY = "supervision"
WEAK_LABEL_KEY = "weak_label"
LEVELS = ("full", "weak", "unlabeled")


def full_mask(keys: Iterable, manifest: Mapping[str, str]) -> np.ndarray:
    """``(B,)`` bool array, True where ``batch["keys"]`` names a fully labeled case."""
    return np.array([manifest[str(k)] == "full" for k in keys], dtype=bool)


def strong_count(global_batch_size: int, world_size: int, strong_fraction: float) -> int:
    """Number of fully labeled cases in every per-rank batch: ``strong_fraction`` of it, rounded down, at least one.

    nnU-Net splits the global batch over ranks (5 on 2 ranks gives 3 + 2). The count is computed from the smallest
    per-rank batch, so that every rank holds the same number of strong cases: the teacher's Dice with ``batch_dice``
    all-gathers per-case sums and needs equal shapes on every rank.

    Example:
        >>> strong_count(16, 1, 0.5), strong_count(7, 1, 0.5), strong_count(5, 2, 0.5), strong_count(2, 1, 0.1)
        (8, 3, 1, 1)
    """
    if not 0.0 < strong_fraction <= 1.0:
        raise ValueError(f"strong_fraction must lie in (0, 1], got {strong_fraction}")
    smallest = global_batch_size // world_size
    if smallest < 1:
        raise ValueError(f"batch size {global_batch_size} is smaller than the number of ranks {world_size}")
    # rounded down: "half" of an odd batch of 7 is 3, which keeps the teacher's extra cost at or below half a decoder
    return min(smallest, max(1, int(strong_fraction * smallest + 1e-9)))


COMPOSITIONS = ("add", "replace")


def batch_counts(global_batch_size: int, world_size: int, composition: str, strong_fraction: float,
                 weak_ratio: float) -> tuple[int, int]:
    """Fully labeled and other cases in every per-rank batch.

    ``"replace"``: the plan's per-rank batch, of which :func:`strong_count` cases are strong and the rest other (the
    teacher sees ``strong_fraction`` of the plan's dense patches). ``"add"`` (the authors' script: 8 strong + 8 weak):
    the plan's whole per-rank batch of strong cases, plus ``weak_ratio`` times as many other cases, so the teacher
    sees as many dense patches as stock nnU-Net does. Strong counts are taken from the smallest per-rank batch, so
    they are equal on every rank; in ``"replace"`` the other count is that of the smallest rank.

    Example:
        >>> batch_counts(8, 1, "add", 0.5, 1.0), batch_counts(8, 1, "replace", 0.5, 1.0)
        ((8, 8), (4, 4))
        >>> batch_counts(5, 2, "add", 1.0, 0.5)
        (2, 1)
    """
    if composition not in COMPOSITIONS:
        raise ValueError(f"batch composition must be one of {COMPOSITIONS}, got {composition!r}")
    if composition == "replace":
        n_strong = strong_count(global_batch_size, world_size, strong_fraction)
        return n_strong, global_batch_size // world_size - n_strong
    if not weak_ratio >= 0:
        raise ValueError(f"weak_ratio must be >= 0, got {weak_ratio}")
    n_strong = strong_count(global_batch_size, world_size, 1.0)
    return n_strong, int(round(weak_ratio * n_strong))


def compose_batch(strong_keys: Sequence[str], other_keys: Sequence[str], batch_size: int, n_strong: int,
                  rng: np.random.Generator | np.random.RandomState) -> np.ndarray:
    """Draw ``n_strong`` fully labeled and ``batch_size - n_strong`` other cases (with replacement), then shuffle.

    The shuffle matters: nnU-Net's loader oversamples foreground on the last third of batch *positions*. Without other
    cases (a strong-only baseline, or a dataset that is all full) the whole batch comes from ``strong_keys``.
    """
    if len(strong_keys) == 0:
        raise ValueError("cannot compose a batch without fully labeled cases")
    n_strong = batch_size if len(other_keys) == 0 else n_strong
    keys = list(rng.choice(np.asarray(strong_keys), n_strong, replace=True))
    if batch_size > n_strong:
        keys += list(rng.choice(np.asarray(other_keys), batch_size - n_strong, replace=True))
    order = rng.permutation(batch_size)
    return np.asarray(keys)[order]
