"""Manifest lookups and batch composition."""

from __future__ import annotations

import numpy as np
import pytest

from nnunetv2_confkd.supervision import batch_counts, compose_batch, full_mask, strong_count


@pytest.mark.parametrize(
    ("batch", "world", "fraction", "expected"),
    [(16, 1, 0.5, 8), (7, 1, 0.5, 3), (2, 1, 0.5, 1), (2, 1, 0.01, 1), (8, 1, 1.0, 8), (5, 2, 0.5, 1), (12, 4, 0.5, 1),
     (3, 3, 0.5, 1)],
)
def test_strong_count(batch, world, fraction, expected):
    assert strong_count(batch, world, fraction) == expected


@pytest.mark.parametrize(("batch", "world", "fraction"), [(4, 1, 0.0), (4, 1, 1.5), (1, 2, 0.5)])
def test_strong_count_rejects_bad_values(batch, world, fraction):
    with pytest.raises(ValueError):
        strong_count(batch, world, fraction)


def test_strong_count_equal_on_every_rank_of_an_uneven_split():
    # nnU-Net splits a global batch of 5 over 2 ranks as 3 + 2; both ranks must hold the same number of strong cases
    assert strong_count(5, 2, 0.5) == 1 and strong_count(5, 2, 1.0) == 2


def test_composed_batches_hold_exactly_n_strong_over_many_batches():
    """3 full cases among 70 (the ACDC budget B): every batch still holds n_strong of them."""
    rng = np.random.default_rng(0)
    strong = [f"s{i}" for i in range(3)]
    other = [f"w{i}" for i in range(67)]
    positions = np.zeros(8)
    seen_strong, seen_other = set(), set()
    for _ in range(2000):
        batch = compose_batch(strong, other, 8, 4, rng)
        is_strong = np.array([k.startswith("s") for k in batch])
        assert len(batch) == 8 and is_strong.sum() == 4
        positions += is_strong
        seen_strong |= {k for k in batch if k.startswith("s")}
        seen_other |= {k for k in batch if k.startswith("w")}
    # shuffled: strong cases land on every batch position (oversampling acts on the last third of positions)
    assert np.all(np.abs(positions / 2000 - 0.5) < 0.05)
    assert seen_strong == set(strong) and seen_other == set(other)


def test_strong_only_batches_when_no_other_cases():
    rng = np.random.default_rng(1)
    batch = compose_batch(["a", "b"], [], 6, 3, rng)
    assert len(batch) == 6 and set(batch) <= {"a", "b"}


def test_compose_batch_is_deterministic_under_a_seed():
    a = compose_batch(["a", "b"], ["c", "d", "e"], 5, 2, np.random.default_rng(7))
    b = compose_batch(["a", "b"], ["c", "d", "e"], 5, 2, np.random.default_rng(7))
    assert list(a) == list(b)


def test_compose_batch_without_strong_cases_fails():
    with pytest.raises(ValueError, match="fully labeled"):
        compose_batch([], ["a"], 2, 1, np.random.default_rng(0))


def test_full_mask_reads_numpy_string_keys():
    manifest = {"a": "full", "b": "weak", "c": "unlabeled"}
    keys = np.array(["c", "a", "b", "a"])  # nnU-Net's batch["keys"] holds np.str_
    assert full_mask(keys, manifest).tolist() == [False, True, False, True]


@pytest.mark.parametrize(
    ("batch", "world", "composition", "fraction", "ratio", "expected"),
    [(8, 1, "add", 0.5, 1.0, (8, 8)), (8, 1, "add", 0.5, 0.5, (8, 4)), (7, 1, "add", 0.5, 1.0, (7, 7)),
     (5, 2, "add", 0.5, 1.0, (2, 2)), (8, 1, "add", 0.5, 0.0, (8, 0)), (8, 1, "replace", 0.5, 1.0, (4, 4)),
     (7, 1, "replace", 0.5, 1.0, (3, 4)), (8, 1, "replace", 1.0, 1.0, (8, 0)), (5, 2, "replace", 0.5, 1.0, (1, 1))],
)
def test_batch_counts(batch, world, composition, fraction, ratio, expected):
    assert batch_counts(batch, world, composition, fraction, ratio) == expected


@pytest.mark.parametrize(("composition", "ratio"), [("mix", 1.0), ("add", -1.0), ("add", float("nan"))])
def test_batch_counts_rejects_bad_values(composition, ratio):
    with pytest.raises(ValueError):
        batch_counts(8, 1, composition, 0.5, ratio)
