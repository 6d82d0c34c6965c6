"""Unit tests of :func:`nnunetv2_confkd.weak_labels.erosion_seeds` (method.md §5), against SciPy's binary erosion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.ndimage import binary_erosion

from nnunetv2_confkd.weak_labels import erosion_seeds

IGNORE = 4
FULL_3X3 = np.ones((3, 3), dtype=bool)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    # iterations < 1 would make SciPy erode until nothing changes
    assert iterations >= 1
    return binary_erosion(mask, structure=FULL_3X3, iterations=iterations, border_value=0)


def _reference_plane(plane: np.ndarray, ignore: int, iterations: int, include_background: bool) -> np.ndarray:
    """The paper's script for one 2D slice, written with SciPy: largest k <= iterations that leaves something."""
    out = np.full_like(plane, ignore)
    for c in np.unique(plane):
        if c == ignore or (c == 0 and not include_background):
            continue
        mask = plane == c
        seeds = mask  # kept when even one erosion empties the structure
        for k in range(iterations, 0, -1):
            eroded = _erode(mask, k)
            if eroded.any():
                seeds = eroded
                break
        out[seeds] = c
    return out


def _reference(labels: np.ndarray, ignore: int = IGNORE, iterations: int = 10,
               include_background: bool = False) -> np.ndarray:
    h, w = labels.shape[-2:]
    planes = labels.reshape(-1, h, w)
    return np.stack([_reference_plane(p, ignore, iterations, include_background) for p in planes]).reshape(labels.shape)


def _as_batch(plane: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(plane).long()[None, None]


def _assert_subset(labels: torch.Tensor, seeds: torch.Tensor, ignore: int = IGNORE) -> None:
    annotated = seeds != ignore
    assert seeds.shape == labels.shape and seeds.dtype == labels.dtype
    assert torch.equal(seeds[annotated], labels[annotated])


def _blobs(batch: int, shape: tuple[int, ...]) -> torch.Tensor:
    labels = torch.zeros(batch, 1, *shape, dtype=torch.long)
    h, w = shape[-2:]
    for b in range(batch):
        for c in (1, 2, 3):
            dh, dw = int(torch.randint(1, h // 2, ())), int(torch.randint(1, w // 2, ()))
            y, x = int(torch.randint(0, h - dh + 1, ())), int(torch.randint(0, w - dw + 1, ()))
            labels[b, 0, ..., y:y + dh, x:x + dw] = c
    return labels


# --- basic contract --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 28), (3, 40, 28)])
@pytest.mark.parametrize("include_background", [False, True])
def test_seeds_are_a_subset_of_the_mask_with_the_true_class(shape, include_background):
    labels = _blobs(3, shape)
    seeds = erosion_seeds(labels, IGNORE, include_background=include_background)
    _assert_subset(labels, seeds)
    assert (seeds != IGNORE).any()
    assert (seeds != IGNORE).sum() < labels.numel()


@pytest.mark.parametrize("shape", [(40, 28), (3, 40, 28)])
def test_seeds_match_the_scipy_reference(shape):
    labels = _blobs(2, shape)
    seeds = erosion_seeds(labels, IGNORE)
    np.testing.assert_array_equal(seeds.numpy(), _reference(labels.numpy()))


def test_seeds_are_deterministic_and_leave_the_input_untouched():
    labels = _blobs(2, (2, 32, 24))
    original = labels.clone()
    first, second = erosion_seeds(labels, IGNORE), erosion_seeds(labels, IGNORE)
    assert torch.equal(first, second)
    assert torch.equal(labels, original)
    assert first.data_ptr() != labels.data_ptr()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int64, torch.float32])
def test_shape_and_dtype_are_kept(dtype):
    labels = _blobs(2, (24, 20)).to(dtype)
    seeds = erosion_seeds(labels, IGNORE)
    assert seeds.dtype == dtype and seeds.shape == labels.shape
    np.testing.assert_array_equal(seeds.long().numpy(), _reference(labels.long().numpy()))


@pytest.mark.parametrize("shape", [(24, 20), (1, 24, 20), (1, 1, 2, 3, 24, 20)])
def test_rejects_inputs_without_two_or_three_spatial_axes(shape):
    with pytest.raises(ValueError, match="spatial axes"):
        erosion_seeds(torch.zeros(shape, dtype=torch.long), IGNORE)


# --- erosion depth and fallback --------------------------------------------------------------------------------------


def test_big_square_is_eroded_by_exactly_ten_iterations():
    plane = np.zeros((50, 60), dtype=np.int64)
    plane[8:38, 12:42] = 1  # 30 x 30
    seeds = erosion_seeds(_as_batch(plane), IGNORE)[0, 0].numpy()
    expected = _erode(plane == 1, 10)
    np.testing.assert_array_equal(seeds == 1, expected)
    assert expected.sum() == 10 * 10 and expected[18:28, 22:32].all()
    assert set(np.unique(seeds)) == {1, IGNORE}


def test_square_touching_the_border_is_eroded_from_the_border_too():
    """Outside the slice counts as empty (SciPy ``border_value=0``)."""
    plane = np.zeros((40, 40), dtype=np.int64)
    plane[:30, :30] = 1
    seeds = erosion_seeds(_as_batch(plane), IGNORE)[0, 0].numpy()
    np.testing.assert_array_equal(seeds == 1, _erode(plane == 1, 10))
    assert (seeds == 1).sum() == 10 * 10 and (seeds[10:20, 10:20] == 1).all()


@pytest.mark.parametrize("iterations", [1, 3, 7])
def test_iterations_sets_the_erosion_depth(iterations):
    plane = np.zeros((50, 50), dtype=np.int64)
    plane[10:40, 10:40] = 2
    seeds = erosion_seeds(_as_batch(plane), IGNORE, iterations=iterations)[0, 0].numpy()
    np.testing.assert_array_equal(seeds == 2, _erode(plane == 2, iterations))
    assert (seeds == 2).sum() == (30 - 2 * iterations) ** 2


def test_thin_band_falls_back_to_the_largest_non_empty_erosion():
    plane = np.zeros((30, 40), dtype=np.int64)
    plane[10:15, :] = 1  # 5 pixels wide: 2 erosions leave one row, 3 leave nothing
    assert not _erode(plane == 1, 3).any() and _erode(plane == 1, 2).any()
    seeds = erosion_seeds(_as_batch(plane), IGNORE)[0, 0].numpy()
    np.testing.assert_array_equal(seeds == 1, _erode(plane == 1, 2))
    assert (seeds == 1).sum() == 40 - 2 * 2 and (seeds[12, 2:38] == 1).all()


@pytest.mark.parametrize("orientation", ["row", "column", "diagonal"])
def test_one_pixel_line_keeps_its_original_mask(orientation):
    plane = np.zeros((20, 24), dtype=np.int64)
    if orientation == "row":
        plane[7, 3:20] = 3
    elif orientation == "column":
        plane[2:18, 9] = 3
    else:
        np.fill_diagonal(plane, 3)
    seeds = erosion_seeds(_as_batch(plane), IGNORE)[0, 0].numpy()
    np.testing.assert_array_equal(seeds == 3, plane == 3)


def test_fallback_is_per_structure_within_a_slice():
    plane = np.zeros((60, 60), dtype=np.int64)
    plane[5:35, 5:35] = 1  # eroded 10 times
    plane[45:50, 5:55] = 2  # 5 wide: eroded twice
    plane[55, 10:30] = 3  # 1 wide: kept
    seeds = erosion_seeds(_as_batch(plane), IGNORE)[0, 0].numpy()
    np.testing.assert_array_equal(seeds == 1, _erode(plane == 1, 10))
    np.testing.assert_array_equal(seeds == 2, _erode(plane == 2, 2))
    np.testing.assert_array_equal(seeds == 3, plane == 3)


def test_fallback_is_per_slice_within_a_batch():
    square, band = np.zeros((30, 30), dtype=np.int64), np.zeros((30, 30), dtype=np.int64)
    square[0:30, 0:30] = 1
    band[10:15, 0:30] = 1
    labels = torch.from_numpy(np.stack([square, band])).long()[:, None]
    seeds = erosion_seeds(labels, IGNORE).numpy()
    np.testing.assert_array_equal(seeds[0, 0] == 1, _erode(square == 1, 10))
    np.testing.assert_array_equal(seeds[1, 0] == 1, _erode(band == 1, 2))


# --- slices, background, 3D, ignore ----------------------------------------------------------------------------------


def test_slices_without_the_structure_get_no_seeds():
    volume = np.zeros((3, 30, 30), dtype=np.int64)
    volume[0, 5:25, 5:25] = 1
    volume[2, 5:25, 5:25] = 2
    seeds = erosion_seeds(torch.from_numpy(volume)[None, None], IGNORE)[0, 0].numpy()
    assert (seeds[1] == IGNORE).all()  # background only: nothing seeded
    assert set(np.unique(seeds[0])) == {1, IGNORE}
    assert set(np.unique(seeds[2])) == {2, IGNORE}


def test_background_is_not_seeded_by_default():
    labels = _blobs(2, (30, 26))
    assert (labels == 0).any()
    seeds = erosion_seeds(labels, IGNORE)
    assert not (seeds == 0).any()


def test_background_is_seeded_on_request():
    plane = np.zeros((40, 40), dtype=np.int64)
    plane[5:15, 5:35] = 1
    seeds = erosion_seeds(_as_batch(plane), IGNORE, include_background=True)[0, 0].numpy()
    background = plane == 0
    expected = _erode(background, 10)
    assert expected.any()
    np.testing.assert_array_equal(seeds == 0, expected)
    np.testing.assert_array_equal(seeds == 1, _erode(plane == 1, 4))  # 10 wide: 4 erosions leave 2 rows


def test_3d_seeds_are_computed_per_slice_along_the_last_two_axes():
    labels = _blobs(2, (4, 32, 24))
    seeds = erosion_seeds(labels, IGNORE)
    for b in range(labels.shape[0]):
        for z in range(labels.shape[2]):
            torch.testing.assert_close(seeds[b, :, z], erosion_seeds(labels[b:b + 1, :, z], IGNORE)[0])
    np.testing.assert_array_equal(seeds.numpy(), _reference(labels.numpy()))


def test_3d_erosion_is_in_plane_only():
    """A structure one slice thick: a 3D erosion would remove it, the per-slice erosion keeps its core."""
    volume = np.zeros((3, 30, 30), dtype=np.int64)
    volume[1, 3:27, 3:27] = 1
    assert not binary_erosion(volume == 1, structure=np.ones((3, 3, 3), dtype=bool), border_value=0).any()
    seeds = erosion_seeds(torch.from_numpy(volume)[None, None], IGNORE)[0, 0].numpy()
    np.testing.assert_array_equal(seeds[1] == 1, _erode(volume[1] == 1, 10))
    assert (seeds[1] == 1).sum() == 4 * 4
    assert (seeds[[0, 2]] == IGNORE).all()


def test_ignore_voxels_are_never_seeded_and_do_not_count_as_the_structure():
    plane = np.zeros((40, 40), dtype=np.int64)
    plane[5:35, 5:35] = 1
    plane[18:22, 18:22] = IGNORE  # e.g. padding inside the patch
    plane[0:3, :] = IGNORE
    seeds = erosion_seeds(_as_batch(plane), IGNORE, include_background=True)[0, 0].numpy()
    assert (seeds[plane == IGNORE] == IGNORE).all()
    # the hole is not class 1: erosion eats around it, so the square falls back to 6 iterations (7 empty it)
    assert not _erode(plane == 1, 7).any()
    np.testing.assert_array_equal(seeds == 1, _erode(plane == 1, 6))
    np.testing.assert_array_equal(seeds, _reference_plane(plane, IGNORE, 10, True))


def test_an_ignore_label_below_the_classes_is_respected():
    plane = np.full((30, 30), 2, dtype=np.int64)
    plane[:, :15] = 1
    plane[0, 0] = 0  # here 0 is the ignore label, not the background
    seeds = erosion_seeds(_as_batch(plane), 0, include_background=True)[0, 0].numpy()
    np.testing.assert_array_equal(seeds, _reference_plane(plane, 0, 10, True))
    assert seeds[0, 0] == 0


# --- property --------------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, database=None)
@given(
    labels=st.integers(1, 2).flatmap(lambda batch: st.tuples(st.integers(1, 2), st.integers(3, 14), st.integers(3, 14))
                                      .flatmap(lambda s: arrays(np.int64, (batch, 1, *s), elements=st.integers(0, 4)))),
    iterations=st.integers(1, 4),
    include_background=st.booleans(),
)
def test_property_seeds_are_a_subset_with_the_true_class(labels, iterations, include_background):
    tensor = torch.from_numpy(labels)
    seeds = erosion_seeds(tensor, IGNORE, iterations=iterations, include_background=include_background)
    _assert_subset(tensor, seeds)
    assert torch.equal(seeds[tensor == IGNORE], tensor[tensor == IGNORE])
    if not include_background:
        assert not (seeds == 0).any()
    planes_in, planes_out = tensor.reshape(-1, *tensor.shape[-2:]), seeds.reshape(-1, *seeds.shape[-2:])
    for c in range(0 if include_background else 1, 4):
        for plane_in, plane_out in zip(planes_in, planes_out, strict=True):
            # every structure present in a slice keeps at least one seed there
            assert bool((plane_in == c).any()) == bool((plane_out == c).any())
    np.testing.assert_array_equal(seeds.numpy(), _reference(labels, IGNORE, iterations, include_background))
