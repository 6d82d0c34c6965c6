"""The student's second views (training/views.py): other intensities with the same geometry, input untouched; CutMix
boxes that move every tensor of a case the same way at every scale."""

from __future__ import annotations

import pytest
import torch

from nnunetv2_confkd.training.views import BOX_SHARE, CONTRAST, MIX_PROBABILITY, BoxMix, intensity_view


@pytest.mark.parametrize("shape", [(4, 1, 32, 28), (2, 2, 8, 16, 12)])
def test_view_keeps_shape_and_dtype_and_leaves_the_input_alone(shape):
    x = torch.randn(shape)
    before = x.clone()
    view = intensity_view(x, torch.Generator().manual_seed(0))
    assert view.shape == x.shape and view.dtype == x.dtype
    assert torch.equal(x, before)
    assert not torch.allclose(view, x)


def test_view_is_an_affine_map_of_each_case_plus_noise():
    """Each case stays strongly correlated with its own clean image (same structures in the same places), and its
    contrast lies in the documented range."""
    torch.manual_seed(0)
    x = torch.randn(8, 1, 64, 64)
    view = intensity_view(x, torch.Generator().manual_seed(1))
    for clean, other in zip(x, view, strict=True):
        c = torch.corrcoef(torch.stack([clean.flatten(), other.flatten()]))[0, 1]
        assert c > 0.9
        slope = ((clean - clean.mean()) * (other - other.mean())).sum() / ((clean - clean.mean()) ** 2).sum()
        assert CONTRAST[0] - 0.05 < slope < CONTRAST[1] + 0.05


def test_views_differ_between_cases_and_draws():
    x = torch.randn(1, 1, 16, 16).repeat(2, 1, 1, 1)
    view = intensity_view(x, torch.Generator().manual_seed(0))
    assert not torch.allclose(view[0], view[1])  # drawn per case
    again = intensity_view(x, torch.Generator().manual_seed(0))
    assert torch.equal(view, again)  # reproducible with a generator


def _case_ids(n: int, spatial: tuple[int, ...]) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32).view(n, 1, *[1] * len(spatial)).expand(n, 1, *spatial).clone()


@pytest.mark.parametrize("spatial", [(64, 56), (16, 24, 20)])
def test_box_mix_pastes_one_box_of_the_partner_and_keeps_the_rest(spatial):
    n = 64
    mix = BoxMix(n, len(spatial), torch.Generator().manual_seed(0))
    ids = _case_ids(n, spatial)
    before = ids.clone()
    mixed = mix(ids)
    assert torch.equal(ids, before)  # input untouched
    assert sorted(mix.partner.tolist()) == list(range(n)) and bool((mix.partner != torch.arange(n)).all())
    box = mix.mask(spatial)
    for i in range(n):
        values = set(mixed[i].unique().tolist())
        assert values <= {float(i), float(mix.partner[i])}
        inside = mixed[i][box[i]]
        assert bool((inside == mix.partner[i]).all()) and bool((mixed[i][~box[i]] == i).all())
        if not mix.mixed[i]:
            assert values == {float(i)}
        # a box is an axis-aligned block: its extent along every axis is one run of voxels
        if box[i].any():
            nz = box[i, 0].nonzero()
            extent = [int(nz[:, a].max() - nz[:, a].min() + 1) for a in range(len(spatial))]
            assert int(box[i].sum()) == torch.tensor(extent).prod().item()
    share = box.flatten(1).float().mean(1)[mix.mixed]
    assert 0 < mix.mixed.float().mean() < 1  # each case mixed with probability MIX_PROBABILITY
    assert abs(mix.mixed.float().mean().item() - MIX_PROBABILITY) < 0.2
    assert bool((share <= BOX_SHARE[1] + 0.05).all())  # clipped at the border, never above the drawn share


def test_box_mix_pastes_the_same_region_at_every_scale():
    """Labels at nnU-Net's deep-supervision scales move with the image: the box at half resolution is the full
    resolution box seen on the coarser grid."""
    mix = BoxMix(16, 2, torch.Generator().manual_seed(3))
    full, half = mix.mask((64, 48)), mix.mask((32, 24))
    pooled = torch.nn.functional.avg_pool2d(full.float(), 2)
    assert bool(((pooled == 1) <= half).all()) and bool((half <= (pooled > 0)).all())


def test_box_mix_of_one_case_changes_nothing():
    x = torch.randn(1, 2, 8, 8)
    assert torch.equal(BoxMix(1, 2, torch.Generator().manual_seed(0))(x), x)
