"""Weak labels simulated on the training grid survive nnU-Net's own resampling to that grid."""

from __future__ import annotations

import numpy as np
import pytest
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
from nnunetv2_confkd_conversion.budget import make_budget
from nnunetv2_confkd_conversion.simulation_grid import simulate_on_grid
from nnunetv2_confkd_conversion.weak_labels import simulate_weak_label

from nnunetv2_confkd.checks import ConfKDInputError

IGNORE = 2
NATIVE, GRID = (10.0, 1.5, 1.5), (3.0, 3.0)


def _disc(radius: int, cy: int, cx: int, n: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    dense = np.zeros((1, n, n), np.uint8)
    dense[0][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius] = 1
    return dense


def _erosion(label: np.ndarray, spacing) -> np.ndarray:
    return simulate_weak_label("erosion", label, spacing, np.random.default_rng(0), IGNORE)


def _after_nnunet_resampling(label: np.ndarray) -> np.ndarray:
    """nnU-Net's resampling of a segmentation from 1.5 mm to 3 mm in-plane (as its preprocessing does)."""
    return resample_data_or_seg_to_shape(label[None].astype(np.int16), (1, 48, 48), NATIVE, (10.0, *GRID),
                                         is_seg=True, order=1, order_z=0)[0]


def test_seeds_made_on_the_training_grid_survive_where_native_seeds_vanish():
    kept = {"native": 0, "grid": 0}
    cases = [(radius, 40 + offset, 45 + offset) for radius in range(6, 16) for offset in range(4)]
    for radius, cy, cx in cases:
        dense = _disc(radius, cy, cx)
        on_grid = simulate_on_grid(_erosion, dense, NATIVE, GRID, IGNORE)
        assert set(np.unique(on_grid)) <= {1, IGNORE} and np.all(dense[on_grid == 1] == 1)  # a subset, true class
        for name, weak in (("native", _erosion(dense, NATIVE)), ("grid", on_grid)):
            kept[name] += int(np.any(_after_nnunet_resampling(weak) == 1))
    assert kept["grid"] == len(cases)
    assert kept["native"] < len(cases)  # the problem this solves: small native seeds vanish at 3 mm


def test_a_grid_seed_is_the_block_of_native_voxels_it_covers():
    dense = np.zeros((8, 8), np.uint8)
    dense[2:6, 2:6] = 1

    def one_grid_voxel(label, spacing):
        assert label.shape == (4, 4) and tuple(spacing) == (2.0, 2.0)
        weak = np.full_like(label, IGNORE)
        weak[1, 1] = 1
        return weak

    weak = simulate_on_grid(one_grid_voxel, dense, (1.0, 1.0), (2.0, 2.0), IGNORE)
    assert np.argwhere(weak == 1).tolist() == [[2, 2], [2, 3], [3, 2], [3, 3]]


def test_the_simulation_spacing_is_refused_for_expert_labels_and_bad_values():
    with pytest.raises(ConfKDInputError, match="simulated kinds"):
        make_budget(3, "expert", kinds=("erosion", "expert"), simulation_spacing=(3.0, 3.0))
    with pytest.raises(ConfKDInputError, match="two positive"):
        make_budget(3, "erosion", simulation_spacing=(3.0, 0.0))
    assert make_budget(3, "erosion", simulation_spacing=[3, 3]).simulation_spacing == (3.0, 3.0)
