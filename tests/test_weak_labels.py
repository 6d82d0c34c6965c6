"""Unit tests of the weak labels: the torch :func:`~.seeds.erosion_seeds` against SciPy's binary erosion, and the numpy
simulators of :mod:`nnunetv2_confkd_conversion.weak_labels` used by the converters (whose ``erosion`` kind is computed
by the torch seeds, so both are tested here against the same references, written independently in this file)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from nnunetv2_confkd_conversion import region_annotators
from nnunetv2_confkd_conversion.weak_labels import (
    BACKGROUND_BAND_VOXELS,
    WEAK_KINDS,
    annotated_voxels_per_class,
    erosion,
    points,
    scribble,
    simulate_weak_label,
    unlabeled,
)
from scipy import ndimage
from scipy.ndimage import binary_erosion

from nnunetv2_confkd.training.seeds import erosion_seeds

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


# ======================================================================================================================
# numpy simulators used by the converters
# ======================================================================================================================

SIMULATORS = {"erosion": erosion, "points": points, "scribble": scribble, "unlabeled": unlabeled}
ANNOTATING = ("erosion", "points", "scribble")
SPACING_3D = (2.5, 0.8, 1.2)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _spacing(dense: np.ndarray) -> tuple[float, ...]:
    return SPACING_3D[-dense.ndim:]


def _scene(shape: tuple[int, ...], dtype=np.int16) -> np.ndarray:
    """Non-square slices with a large rectangle (1), a disc (2) and a 2-voxel band (3); in 3D slice 1 lacks class 2."""
    dense = np.zeros(shape, dtype=dtype)
    h, w = shape[-2:]
    yy, xx = np.mgrid[:h, :w]
    dense[..., 2:h // 2, 2:w - 3] = 1
    dense[..., (yy - 3 * h // 4) ** 2 + (xx - w // 3) ** 2 <= (min(h, w) // 6) ** 2] = 2
    dense[..., h - 3:h - 1, w // 2:w - 2] = 3
    if dense.ndim == 3:
        dense[1][dense[1] == 2] = 0
    return dense


def _planes(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1, *array.shape[-2:])


def _assert_weak(dense: np.ndarray, weak: np.ndarray, ignore: int = IGNORE) -> None:
    """A new array of the same shape and dtype whose annotated voxels carry their true class."""
    assert weak.shape == dense.shape and weak.dtype == dense.dtype
    assert not np.shares_memory(weak, dense)
    annotated = weak != ignore
    np.testing.assert_array_equal(weak[annotated], dense[annotated])


def _fallback_erosion(mask: np.ndarray, iterations: int) -> np.ndarray:
    for k in range(iterations, 0, -1):
        eroded = _erode(mask, k)
        if eroded.any():
            return eroded
    return mask


def _n_components(mask: np.ndarray) -> int:
    return ndimage.label(mask, structure=FULL_3X3)[1]


def _regions(plane: np.ndarray, background: bool, components) -> list[tuple[int, np.ndarray]]:
    """``(class, mask)`` of every structure (or component, for ``components``) a simulator must annotate."""
    regions = []
    for c in np.unique(plane):
        if c == 0 and not background:
            continue
        if c in components:
            labeled, n = ndimage.label(plane == c, structure=FULL_3X3)
            regions += [(int(c), labeled == i) for i in range(1, n + 1)]
        else:
            regions.append((int(c), plane == c))
    return regions


# --- contract shared by every kind -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", WEAK_KINDS)
@pytest.mark.parametrize("shape", [(40, 28), (3, 40, 28)])
def test_simulators_return_a_true_class_subset_and_leave_dense_untouched(kind, shape):
    dense = _scene(shape)
    original = dense.copy()
    weak = simulate_weak_label(kind, dense, _spacing(dense), _rng(), IGNORE)
    _assert_weak(dense, weak)
    np.testing.assert_array_equal(dense, original)
    annotated = weak != IGNORE
    if kind == "unlabeled":
        assert not annotated.any()
    else:
        assert annotated.any() and annotated.sum() < (dense != 0).sum()
        assert not (weak == 0).any()


@pytest.mark.parametrize("kind", WEAK_KINDS)
@pytest.mark.parametrize("shape", [(40, 28), (3, 40, 28)])
def test_simulators_are_deterministic_under_a_seed_and_use_only_rng(kind, shape):
    dense = _scene(shape)
    np.random.seed(1)
    torch.manual_seed(1)
    first = simulate_weak_label(kind, dense, _spacing(dense), _rng(7), IGNORE, background=True)
    np.random.seed(2)
    torch.manual_seed(2)
    second = simulate_weak_label(kind, dense, _spacing(dense), _rng(7), IGNORE, background=True)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("kind", ["points", "scribble"])
@pytest.mark.parametrize("shape", [(40, 28), (3, 40, 28)])
def test_different_seeds_give_different_annotations(kind, shape):
    dense = _scene(shape)
    first = simulate_weak_label(kind, dense, _spacing(dense), _rng(0), IGNORE)
    second = simulate_weak_label(kind, dense, _spacing(dense), _rng(1), IGNORE)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("kind", WEAK_KINDS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_dtype_is_kept_and_integral_floats_are_accepted(kind, dtype):
    dense = _scene((2, 30, 22), dtype)
    weak = simulate_weak_label(kind, dense, _spacing(dense), _rng(3), IGNORE)
    _assert_weak(dense, weak)
    reference = simulate_weak_label(kind, dense.astype(np.int64), _spacing(dense), _rng(3), IGNORE)
    np.testing.assert_array_equal(weak, reference.astype(dtype))


@pytest.mark.parametrize("kind", WEAK_KINDS)
def test_non_contiguous_inputs_give_the_same_annotation(kind):
    dense = _scene((3, 40, 28))
    expected = simulate_weak_label(kind, dense, SPACING_3D, _rng(3), IGNORE)
    transposed_view = np.ascontiguousarray(dense.transpose(0, 2, 1)).transpose(0, 2, 1)
    for variant in (np.asfortranarray(dense), transposed_view):
        assert not variant.flags.c_contiguous
        np.testing.assert_array_equal(simulate_weak_label(kind, variant, SPACING_3D, _rng(3), IGNORE), expected)


@pytest.mark.parametrize("kind", WEAK_KINDS)
def test_3d_is_the_2d_simulation_slice_by_slice(kind):
    dense = _scene((3, 40, 28))
    volume = simulate_weak_label(kind, dense, SPACING_3D, _rng(5), IGNORE, background=True)
    rng = _rng(5)  # one generator consumed slice after slice, as the volume does
    slices = [simulate_weak_label(kind, plane, SPACING_3D[1:], rng, IGNORE, background=True) for plane in dense]
    np.testing.assert_array_equal(volume, np.stack(slices))


@pytest.mark.parametrize("kind", WEAK_KINDS)
def test_simulate_weak_label_dispatches_to_the_simulator(kind):
    dense = _scene((2, 30, 22))
    via_dispatch = simulate_weak_label(kind, dense, SPACING_3D, _rng(2), IGNORE, background=True)
    direct = SIMULATORS[kind](dense, SPACING_3D, _rng(2), IGNORE, background=True)
    np.testing.assert_array_equal(via_dispatch, direct)


@pytest.mark.parametrize("kind", ANNOTATING)
def test_background_is_annotated_only_on_request(kind):
    dense = _scene((3, 40, 28))
    assert not (simulate_weak_label(kind, dense, SPACING_3D, _rng(), IGNORE) == 0).any()
    weak = simulate_weak_label(kind, dense, SPACING_3D, _rng(), IGNORE, background=True)
    _assert_weak(dense, weak)
    assert all((out == 0).any() for out in _planes(weak))


# --- property --------------------------------------------------------------------------------------------------------


@st.composite
def _dense_cases(draw) -> tuple[np.ndarray, tuple[float, ...]]:
    """Random rectangles and discs of classes 1-3 on small 2D or 3D grids, with a random spacing."""
    depth = draw(st.sampled_from([None, 1, 3]))
    h, w = draw(st.integers(5, 20)), draw(st.integers(5, 20))
    shape = (h, w) if depth is None else (depth, h, w)
    dense = np.zeros(shape, dtype=draw(st.sampled_from([np.uint8, np.int16, np.int64])))
    yy, xx = np.mgrid[:h, :w]
    for _ in range(draw(st.integers(0, 6))):
        c, y, x = draw(st.integers(1, 3)), draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        if draw(st.booleans()):
            dy, dx = draw(st.integers(1, h)), draw(st.integers(1, w))
            shape_mask = (yy >= y) & (yy < y + dy) & (xx >= x) & (xx < x + dx)
        else:
            shape_mask = (yy - y) ** 2 + (xx - x) ** 2 <= draw(st.integers(0, 6)) ** 2
        target = dense if depth is None else dense[draw(st.integers(0, depth - 1))]
        target[shape_mask] = c
    return dense, tuple(draw(st.floats(0.3, 3.0)) for _ in shape)


@pytest.mark.parametrize("kind", WEAK_KINDS)
@settings(max_examples=40, deadline=None, database=None)
@given(case=_dense_cases(), seed=st.integers(0, 2**32 - 1), background=st.booleans(),
       components=st.sets(st.integers(1, 3), max_size=2), ignore=st.sampled_from([4, 100]), k=st.integers(1, 4),
       depth=st.integers(0, 4), fraction=st.floats(0.05, 1.0))
def test_property_simulators_annotate_every_structure_with_its_true_class(kind, case, seed, background, components,
                                                                            ignore, k, depth, fraction):
    dense, spacing = case
    params = {"erosion": {"iterations": depth}, "points": {"k": k}, "unlabeled": {},
              "scribble": {"erode": depth, "fraction": fraction}}[kind]
    weak = simulate_weak_label(kind, dense, spacing, _rng(seed), ignore, background=background,
                               component_classes=tuple(components), **params)
    _assert_weak(dense, weak, ignore)
    if not background:
        assert not (weak == 0).any()
    if kind == "erosion" and not components:
        np.testing.assert_array_equal(weak, _reference(dense, ignore, depth, background))
    for plane, out in zip(_planes(dense), _planes(weak), strict=True):
        for c, region in _regions(plane, background, components):
            got = (out == c) & region
            if kind == "unlabeled":
                assert not got.any()
                continue
            assert got.any()  # no structure, component or background of a slice loses all its annotation
            if kind == "erosion":
                np.testing.assert_array_equal(got, _fallback_erosion(region, depth))
            elif kind == "points":
                assert got.sum() == min(k, region.sum())
            elif c not in components:
                assert _n_components(got) == 1


# --- erosion ---------------------------------------------------------------------------------------------------------


def _small_plane() -> np.ndarray:
    """A 7 x 5 block of class 1 and a 3 x 3 block of class 2 on the right border of a 9 x 10 slice."""
    plane = np.zeros((9, 10), dtype=np.uint8)
    plane[1:8, 1:6] = 1  # one erosion leaves rows 2..6 x columns 2..4, two leave rows 3..5 x column 3, three nothing
    plane[2:5, 7:10] = 2  # the border counts as background: one erosion leaves (3, 8), two nothing
    return plane


@pytest.mark.parametrize(("iterations", "rows", "cols"), [(1, slice(2, 7), slice(2, 5)), (2, slice(3, 6), slice(3, 4)),
                                                          (10, slice(3, 6), slice(3, 4))])
def test_erosion_of_a_small_mask_is_the_hand_computed_seed(iterations, rows, cols):
    expected = np.full((9, 10), IGNORE, dtype=np.uint8)
    expected[rows, cols] = 1
    expected[3, 8] = 2
    weak = erosion(_small_plane(), (1.0, 1.0), _rng(), IGNORE, iterations=iterations)
    np.testing.assert_array_equal(weak, expected)
    # in 3D the erosion stays in-plane: the empty slice next to it neither erodes it nor gets seeds
    volume = np.stack([_small_plane(), np.zeros((9, 10), dtype=np.uint8)])
    weak = erosion(volume, (5.0, 1.0, 1.0), _rng(), IGNORE, iterations=iterations)
    np.testing.assert_array_equal(weak, np.stack([expected, np.full((9, 10), IGNORE, dtype=np.uint8)]))


@pytest.mark.parametrize("shape", [(40, 28), (3, 40, 28)])
@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("iterations", [1, 4, 10])
def test_erosion_equals_the_scipy_reference(shape, background, iterations):
    dense = _blobs(1, shape)[0, 0].numpy().astype(np.uint8)
    weak = erosion(dense, _spacing(dense), _rng(), IGNORE, iterations=iterations, background=background)
    np.testing.assert_array_equal(weak, _reference(dense, IGNORE, iterations, background))


def test_erosion_falls_back_on_a_thin_band_and_keeps_a_one_pixel_line():
    plane = np.zeros((30, 41), dtype=np.int16)
    plane[10:15, :] = 1  # 5 wide: two erosions leave one row
    plane[20, 3:30] = 2  # 1 wide: kept whole
    plane[22:29, 3:10] = 3  # 7 x 7: three erosions leave one voxel
    weak = erosion(plane, (1.0, 1.0), _rng(), IGNORE)
    np.testing.assert_array_equal(weak == 1, _erode(plane == 1, 2))
    assert (weak == 1).sum() == 41 - 2 * 2
    np.testing.assert_array_equal(weak == 2, plane == 2)
    assert (weak == 3).sum() == 1 and weak[25, 6] == 3


def test_erosion_background_is_the_eroded_background():
    dense = _scene((2, 40, 28))
    weak = erosion(dense, (1.0, 1.0, 1.0), _rng(), IGNORE, background=True)
    for plane, out in zip(dense, weak, strict=True):
        np.testing.assert_array_equal(out == 0, _fallback_erosion(plane == 0, 10))


# --- component classes -----------------------------------------------------------------------------------------------


def _two_blobs() -> tuple[np.ndarray, np.ndarray]:
    """Class 2 as a 30 x 30 square and a separate 5 x 5 square (the small one), plus a class-1 bar."""
    plane = np.zeros((40, 56), dtype=np.int16)
    plane[4:34, 4:34] = 2  # ten erosions leave 10 x 10
    plane[10:15, 42:47] = 2  # two erosions leave one voxel, three empty it
    plane[36:39, 40:52] = 1
    small = np.zeros(plane.shape, dtype=bool)
    small[10:15, 42:47] = True
    return plane, small


def test_erosion_drops_a_small_component_unless_its_class_is_a_component_class():
    plane, small = _two_blobs()
    per_class = erosion(plane, (1.0, 1.0), _rng(), IGNORE)
    assert (per_class == 2).sum() == 10 * 10
    assert not (per_class[small] == 2).any()  # the class's erosion depth wipes the small square out
    per_component = erosion(plane, (1.0, 1.0), _rng(), IGNORE, component_classes=(2,))
    _assert_weak(plane, per_component)
    np.testing.assert_array_equal(per_component[small] == 2, _erode(small, 2)[small])
    assert (per_component[small] == 2).sum() == 1
    np.testing.assert_array_equal(per_component[~small], per_class[~small])


@pytest.mark.parametrize("kind", ANNOTATING)
@pytest.mark.parametrize("depth", [None, 2])
def test_component_classes_annotate_every_component(kind, depth):
    plane, _ = _two_blobs()
    dense = plane if depth is None else np.stack([plane] * depth)
    weak = simulate_weak_label(kind, dense, (3.0, 1.0, 1.0)[-dense.ndim:], _rng(), IGNORE, component_classes=(2,))
    _assert_weak(dense, weak)
    labeled, n = ndimage.label(plane == 2, structure=FULL_3X3)
    assert n == 2
    for out in _planes(weak):
        assert all(((out == 2) & (labeled == i)).any() for i in (1, 2))
        assert (out == 1).any()


def test_points_draw_k_points_per_component_of_a_component_class():
    plane, small = _two_blobs()
    per_class = points(plane, (1.0, 1.0), _rng(), IGNORE, k=3)
    assert annotated_voxels_per_class(per_class, IGNORE) == {1: 3, 2: 3}
    per_component = points(plane, (1.0, 1.0), _rng(), IGNORE, k=3, component_classes=(2,))
    assert annotated_voxels_per_class(per_component, IGNORE) == {1: 3, 2: 6}
    assert (per_component[small] == 2).sum() == 3


# --- points ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 28), (3, 40, 28)])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_points_draw_exactly_k_voxels_per_structure_and_slice(shape, k):
    dense = _scene(shape)
    weak = points(dense, _spacing(dense), _rng(), IGNORE, k=k)
    _assert_weak(dense, weak)
    for plane, out in zip(_planes(dense), _planes(weak), strict=True):
        assert annotated_voxels_per_class(out, IGNORE) == {int(c): k for c in np.unique(plane) if c != 0}


def test_points_take_every_voxel_of_a_structure_smaller_than_k():
    plane = np.zeros((12, 17), dtype=np.int16)
    plane[3, 4:6] = 1
    plane[6:10, 6:12] = 2
    weak = points(plane, (1.0, 1.0), _rng(), IGNORE, k=5)
    np.testing.assert_array_equal(weak == 1, plane == 1)
    assert (weak == 2).sum() == 5


def test_background_points_are_k_background_voxels_per_slice():
    dense = _scene((3, 40, 28))
    weak = points(dense, SPACING_3D, _rng(), IGNORE, k=4, background=True)
    assert all((out == 0).sum() == 4 for out in weak)


def test_points_grow_to_discs_in_mm_clipped_to_the_structure():
    plane = np.zeros((41, 61), dtype=np.int16)
    plane[5:36, 5:56] = 1
    plane[5:36, 30:33] = 2  # a wall through the structure: discs stop there
    centre = np.argwhere(points(plane, (1.0, 2.0), _rng(4), IGNORE, k=1) == 1)[0]
    weak = points(plane, (1.0, 2.0), _rng(4), IGNORE, k=1, radius_mm=4.0)  # same draws, then the disc
    yy, xx = np.mgrid[:41, :61]
    disc = (yy - centre[0]) ** 2 + ((xx - centre[1]) * 2.0) ** 2 <= 4.0 ** 2  # 4 voxels along y, 2 along x
    np.testing.assert_array_equal(weak == 1, disc & (plane == 1))
    whole = points(plane, (1.0, 2.0), _rng(4), IGNORE, k=1, radius_mm=1000.0)
    np.testing.assert_array_equal(whole, np.where(plane > 0, plane, IGNORE))


# --- scribbles -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 28), (3, 40, 28)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scribbles_are_connected_strokes_smaller_than_the_structure(shape, seed):
    dense = _scene(shape)
    weak = scribble(dense, _spacing(dense), _rng(seed), IGNORE)
    _assert_weak(dense, weak)
    for plane, out in zip(_planes(dense), _planes(weak), strict=True):
        for c in np.unique(plane[plane != 0]):
            stroke = out == c
            assert stroke.any() and _n_components(stroke) == 1
            assert stroke.sum() < (plane == c).sum()


def _bar() -> np.ndarray:
    plane = np.zeros((20, 50), dtype=np.int16)
    plane[3:18, 5:45] = 1
    return plane


@pytest.mark.parametrize("fraction", [0.1, 0.5, 1.0])
def test_scribble_is_a_fraction_of_the_skeleton_of_the_eroded_structure(fraction):
    from skimage.morphology import skeletonize

    plane = _bar()
    skeleton = skeletonize(_erode(plane == 1, 1))
    assert _n_components(skeleton) == 1
    weak = scribble(plane, (1.0, 1.0), _rng(), IGNORE, fraction=fraction)
    stroke = weak == 1
    assert not (stroke & ~skeleton).any() and _n_components(stroke) == 1
    assert stroke.sum() == max(1, round(fraction * skeleton.sum()))


@pytest.mark.parametrize(("spacing", "thickness"), [((1.0, 1.0), 3), ((0.5, 0.5), 7), ((0.5, 1.0), 7)])
def test_scribble_width_is_in_mm_and_clipped_to_the_structure(spacing, thickness):
    plane = _bar()
    thin = scribble(plane, spacing, _rng(), IGNORE, fraction=1.0) == 1
    thick = scribble(plane, spacing, _rng(), IGNORE, fraction=1.0, width_mm=3.0) == 1
    assert (thin <= thick).all() and not (thick & (plane != 1)).any()
    assert thin[:, 25].sum() == 1 and thick[:, 25].sum() == thickness  # a column across the horizontal stroke
    wide = scribble(plane, (1.0, 1.0), _rng(), IGNORE, fraction=1.0, width_mm=100.0)
    np.testing.assert_array_equal(wide == 1, plane == 1)


def test_scribble_keeps_the_most_interior_voxel_when_the_skeleton_is_empty(monkeypatch):
    monkeypatch.setattr(region_annotators, "skeletonize", lambda mask: np.zeros_like(mask))
    plane = np.zeros((12, 15), dtype=np.int16)
    plane[2:9, 3:10] = 1  # 7 x 7: the centre (5, 6) is the only voxel 4 away from the background
    weak = scribble(plane, (1.0, 1.0), _rng(), IGNORE)
    assert np.argwhere(weak == 1).tolist() == [[5, 6]]


def test_background_scribble_stays_in_a_band_around_the_foreground():
    plane = np.zeros((60, 70), dtype=np.int16)
    plane[25:35, 30:40] = 1
    weak = scribble(plane, (1.0, 1.0), _rng(), IGNORE, background=True, fraction=1.0)
    stroke = weak == 0
    assert stroke.any() and _n_components(stroke) == 1
    distance = ndimage.distance_transform_edt(plane == 0)
    assert distance[stroke].max() <= BACKGROUND_BAND_VOXELS
    empty = np.zeros((20, 30), dtype=np.int16)  # no foreground: the whole background is the region
    stroke = scribble(empty, (1.0, 1.0), _rng(), IGNORE, background=True) == 0
    assert stroke.sum() > 1 and _n_components(stroke) == 1


# --- counts and errors -----------------------------------------------------------------------------------------------


def test_annotated_voxels_per_class_counts_every_non_ignore_value():
    label = np.full((2, 5, 6), IGNORE, dtype=np.uint8)
    label[0, 0, :3] = 0
    label[1, 2:4, 1:3] = 2
    label[0, 4, 5] = 3
    assert annotated_voxels_per_class(label, IGNORE) == {0: 3, 2: 4, 3: 1}
    assert annotated_voxels_per_class(np.full((3, 3), IGNORE), IGNORE) == {}
    assert annotated_voxels_per_class(label, 0) == {2: 4, 3: 1, IGNORE: 60 - 8}
    weak = points(_scene((40, 28)), (1.0, 1.0), _rng(), IGNORE, k=2, background=True)
    assert annotated_voxels_per_class(weak, IGNORE) == {0: 2, 1: 2, 2: 2, 3: 2}


@pytest.mark.parametrize("kind", WEAK_KINDS)
@pytest.mark.parametrize(("dense", "spacing", "ignore", "match"), [
    (np.full((6, 7), 0.5), (1.0, 1.0), IGNORE, "integer labels"),
    (np.zeros((6, 7), dtype=bool), (1.0, 1.0), IGNORE, "integer labels"),
    (np.full((6, 7), -1, dtype=np.int16), (1.0, 1.0), IGNORE, "non-negative"),
    (np.full((6, 7), IGNORE, dtype=np.int16), (1.0, 1.0), IGNORE, "contains the ignore label"),
    (np.zeros((6, 7), dtype=np.int16), (1.0,), IGNORE, "spacing"),
    (np.zeros((2, 6, 7), dtype=np.int16), (1.0, 1.0), IGNORE, "spacing"),
    (np.zeros((6, 7), dtype=np.int16), (1.0, 0.0), IGNORE, "spacing"),
    (np.zeros(7, dtype=np.int16), (1.0,), IGNORE, "2 or 3 axes"),
    (np.zeros((2, 2, 6, 7), dtype=np.int16), (1.0,) * 4, IGNORE, "2 or 3 axes"),
    (np.zeros((6, 7), dtype=np.uint8), (1.0, 1.0), 300, "does not fit"),
])
def test_invalid_inputs_raise_a_clear_value_error(kind, dense, spacing, ignore, match):
    with pytest.raises(ValueError, match=match):
        simulate_weak_label(kind, dense, spacing, _rng(), ignore)


def test_unknown_kind_names_the_allowed_kinds():
    with pytest.raises(ValueError, match="'boxes'; allowed kinds: erosion, points, scribble, unlabeled"):
        simulate_weak_label("boxes", _scene((20, 16)), (1.0, 1.0), _rng(), IGNORE)


@pytest.mark.parametrize(("kind", "params", "match"), [
    ("erosion", {"iterations": -1}, "iterations"),
    ("points", {"k": 0}, "k must"),
    ("points", {"radius_mm": -1.0}, "radius_mm"),
    ("scribble", {"fraction": 0.0}, "fraction"),
    ("scribble", {"fraction": 1.5}, "fraction"),
    ("scribble", {"width_mm": float("nan")}, "width_mm"),
    ("scribble", {"erode": -1}, "erode"),
    ("points", {"component_classes": (1.5,)}, "component_classes"),
])
def test_invalid_parameters_raise_a_clear_value_error(kind, params, match):
    with pytest.raises(ValueError, match=match):
        simulate_weak_label(kind, _scene((20, 16)), (1.0, 1.0), _rng(), IGNORE, **params)
