"""The student's second view (training/views.py): same geometry, other intensities, input untouched."""

from __future__ import annotations

import pytest
import torch

from nnunetv2_confkd.training.views import CONTRAST, intensity_view


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
