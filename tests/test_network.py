"""The dual-decoder network as nnU-Net builds it: outputs, heads, shared encoder,
parameter count, state-dict round trip into the predictor's network and prediction through ``nnUNetPredictor``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import DATASET_JSON, NUM_CLASSES, NUM_INPUT_CHANNELS, PLAN_KINDS, make_plans_manager
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_confkd.training.network import DualDecoderUNet, DualOutput, count_parameters
from nnunetv2_confkd.training.trainer import nnUNetTrainerConfKD
from nnunetv2_confkd.training.variants import nnUNetTrainerConfKD_teacherHead

TRAINERS = (nnUNetTrainerConfKD, nnUNetTrainerConfKD_teacherHead)
BATCH = 3


def _build(kind: str, trainer_class=nnUNetTrainerConfKD, deep_supervision: bool = True, seed: int = 0):
    plans_manager, configuration_manager = make_plans_manager(kind)
    torch.manual_seed(seed)
    net = trainer_class.build_network_architecture(plans_manager, configuration_manager, NUM_INPUT_CHANNELS,
                                                   NUM_CLASSES, deep_supervision)
    return net, plans_manager, configuration_manager


def _input(configuration_manager, batch: int = BATCH, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, NUM_INPUT_CHANNELS, *configuration_manager.patch_size, generator=generator)


def _ds_shapes(configuration_manager, batch: int) -> list[tuple[int, ...]]:
    """Output shape per deep-supervision scale, highest resolution first (as ``_get_deep_supervision_scales``)."""
    cumulative = np.cumprod(np.vstack(configuration_manager.pool_op_kernel_sizes), axis=0)[:-1]
    return [(batch, NUM_CLASSES, *(p // int(s) for p, s in zip(configuration_manager.patch_size, c, strict=True)))
            for c in cumulative]


def _own_parameter_count(decoder: torch.nn.Module) -> int:
    """Parameters of a decoder without those of the encoder it points at."""
    return sum(p.numel() for name, module in decoder.named_children() if name != "encoder"
               for p in module.parameters())


def _head(net: DualDecoderUNet, name: str) -> torch.nn.Module:
    return net.student_decoder if name == "student" else net.teacher_decoder


@pytest.mark.parametrize("kind", PLAN_KINDS)
def test_train_returns_dual_output_with_deep_supervision(kind):
    net, _, cm = _build(kind)
    net.train()
    out = net(_input(cm))
    assert isinstance(out, DualOutput)
    expected = _ds_shapes(cm, BATCH)
    assert expected[0] == (BATCH, NUM_CLASSES, *cm.patch_size)
    for head in (out.teacher, out.student):
        assert isinstance(head, list)
        assert [tuple(t.shape) for t in head] == expected
        assert all(torch.isfinite(t).all() for t in head)


@pytest.mark.parametrize("kind", PLAN_KINDS)
def test_train_without_deep_supervision_returns_one_tensor_per_head(kind):
    net, _, cm = _build(kind, deep_supervision=False)
    net.train()
    out = net(_input(cm))
    assert isinstance(out, DualOutput)
    for head in out:
        assert isinstance(head, torch.Tensor)
        assert tuple(head.shape) == (BATCH, NUM_CLASSES, *cm.patch_size)


@pytest.mark.parametrize("kind", PLAN_KINDS)
def test_teacher_on_subset_equals_rows_of_full_batch(kind):
    net, _, cm = _build(kind)
    net.train()
    x = _input(cm, batch=4)
    rows = torch.tensor([0, 2])
    with torch.no_grad():
        full = net(x)
        subset = net(x, teacher_cases=rows)
    assert len(subset.teacher) == len(full.teacher)
    for sub, ref in zip(subset.teacher, full.teacher, strict=True):
        assert sub.shape[0] == 2
        torch.testing.assert_close(sub, ref[rows], atol=1e-5, rtol=1e-5)
    for sub, ref in zip(subset.student, full.student, strict=True):
        assert sub.shape[0] == 4
        torch.testing.assert_close(sub, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", PLAN_KINDS)
def test_teacher_on_the_first_n_rows_equals_those_rows_of_the_full_batch(kind):
    net, _, cm = _build(kind)
    net.train()
    x = _input(cm, batch=4)
    with torch.no_grad():
        full = net(x)
        first = net(x, teacher_cases=2)
    for sub, ref in zip(first.teacher, full.teacher, strict=True):
        assert sub.shape[0] == 2
        torch.testing.assert_close(sub, ref[:2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("trainer_class", TRAINERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("kind", PLAN_KINDS)
def test_eval_returns_one_tensor_of_the_inference_head(kind, trainer_class):
    net, _, cm = _build(kind, trainer_class)
    net.eval()
    net.deep_supervision = False
    x = _input(cm)
    with torch.no_grad():
        out = net(x)
        skips = net.encoder(x)
        expected = _head(net, trainer_class.inference_head)(skips)
        other = _head(net, "teacher" if trainer_class.inference_head == "student" else "student")(skips)
    assert isinstance(out, torch.Tensor)
    assert tuple(out.shape) == (BATCH, NUM_CLASSES, *cm.patch_size)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    assert not torch.allclose(out, other), "the two heads are initialised independently and must differ"


def test_teacher_head_variant_differs_only_in_the_head():
    assert nnUNetTrainerConfKD.inference_head == "student"
    assert nnUNetTrainerConfKD_teacherHead.inference_head == "teacher"
    net, _, _ = _build("2d", nnUNetTrainerConfKD_teacherHead)
    assert net.inference_head == "teacher"


@pytest.mark.parametrize("kind", PLAN_KINDS)
def test_encoder_is_shared(kind):
    net, _, _ = _build(kind)
    assert net.teacher_decoder.encoder is net.encoder
    assert net.student_decoder.encoder is net.encoder
    assert net.teacher_decoder is not net.student_decoder
    # no parameter of the heads is shared apart from the encoder's
    encoder_ids = {id(p) for p in net.encoder.parameters()}
    teacher_ids = {id(p) for p in net.teacher_decoder.parameters()} - encoder_ids
    student_ids = {id(p) for p in net.student_decoder.parameters()} - encoder_ids
    assert teacher_ids and student_ids and not teacher_ids & student_ids


@pytest.mark.parametrize("kind", PLAN_KINDS)
def test_parameter_count_is_plain_unet_plus_one_decoder(kind):
    net, pm, cm = _build(kind)
    plain = nnUNetTrainer.build_network_architecture(pm, cm, NUM_INPUT_CHANNELS, NUM_CLASSES, True)
    own = _own_parameter_count(plain.decoder)
    assert own > 0
    assert count_parameters(net) == count_parameters(plain) + own
    assert _own_parameter_count(net.teacher_decoder) == _own_parameter_count(net.student_decoder) == own
    # parameters() de-duplicates the shared encoder; the optimizer sees every parameter once
    assert len(list(net.parameters())) == len({id(p) for p in net.parameters()})


@pytest.mark.parametrize("trainer_class", TRAINERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("kind", PLAN_KINDS)
def test_state_dict_loads_strictly_into_the_predictor_network(kind, trainer_class):
    net, pm, cm = _build(kind, trainer_class, seed=0)
    net.train()
    x = _input(cm)
    # one optimizer step, so the weights are "trained" and not the initialisation of any seed
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    out = net(x)
    (sum(o.square().mean() for o in out.teacher) + sum(o.square().mean() for o in out.student)).backward()
    optimizer.step()
    state = net.state_dict()

    # how nnUNetPredictor.initialize_from_trained_model_folder builds and loads the network
    torch.manual_seed(123)
    loaded = trainer_class.build_network_architecture(pm, cm, NUM_INPUT_CHANNELS, NUM_CLASSES,
                                                      enable_deep_supervision=False)
    assert isinstance(loaded, DualDecoderUNet)
    assert not loaded.deep_supervision
    result = loaded.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert loaded.teacher_decoder.encoder is loaded.encoder is loaded.student_decoder.encoder

    net.eval()
    net.deep_supervision = False
    loaded.eval()
    with torch.no_grad():
        reference = net(x)
        restored = loaded(x)
    assert isinstance(restored, torch.Tensor)
    torch.testing.assert_close(restored, reference, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", PLAN_KINDS)
def test_no_decoder_attribute_so_the_stock_toggle_fails_loudly(kind):
    net, _, _ = _build(kind)
    assert not hasattr(net, "decoder")
    with pytest.raises(AttributeError):
        nnUNetTrainer.set_deep_supervision_enabled(SimpleNamespace(is_ddp=False, network=net), False)
    # the trainer's own toggle switches both heads
    nnUNetTrainerConfKD.set_deep_supervision_enabled(SimpleNamespace(network=net), False)
    assert net.teacher_decoder.deep_supervision is False and net.student_decoder.deep_supervision is False
    assert net.deep_supervision is False
    nnUNetTrainerConfKD.set_deep_supervision_enabled(SimpleNamespace(network=net), True)
    assert net.teacher_decoder.deep_supervision and net.student_decoder.deep_supervision and net.deep_supervision


def test_invalid_inference_head_is_rejected():
    net, _, _ = _build("2d")
    with pytest.raises(ValueError, match="inference_head"):
        DualDecoderUNet(net.encoder, net.teacher_decoder, net.student_decoder, "both")


def _predictor(network, pm, cm, mirror_axes, use_gaussian: bool = True):
    predictor = nnUNetPredictor(use_gaussian=use_gaussian, device=torch.device("cpu"),
                                perform_everything_on_device=False, allow_tqdm=False)
    predictor.manual_initialization(network, pm, cm, None, DATASET_JSON, "nnUNetTrainerConfKD", mirror_axes)
    return predictor


def _predictor_input(kind: str, spatial) -> torch.Tensor:
    """``(C, *spatial)`` for 3D, ``(C, n_slices, X, Y)`` for 2D configurations (nnU-Net's convention)."""
    generator = torch.Generator().manual_seed(7)
    shape = (NUM_INPUT_CHANNELS, *spatial) if kind == "3d" else (NUM_INPUT_CHANNELS, 2, *spatial)
    return torch.randn(*shape, generator=generator)


@pytest.mark.parametrize("trainer_class", TRAINERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("kind", PLAN_KINDS)
def test_predictor_logits_equal_the_inference_head_on_one_tile(kind, trainer_class):
    network, pm, cm = _build(kind, trainer_class, deep_supervision=False)
    data = _predictor_input(kind, cm.patch_size)
    # no Gaussian weighting: its float16 values near the tile corners would dominate the comparison
    logits = _predictor(network, pm, cm, None, use_gaussian=False).predict_sliding_window_return_logits(data)
    assert tuple(logits.shape) == (NUM_CLASSES, *data.shape[1:])
    network.eval()
    with torch.no_grad():
        if kind == "3d":
            expected = network(data[None])[0]
        else:  # one 2D slice at a time, stacked along axis 1
            expected = torch.stack([network(data[:, d][None])[0] for d in range(data.shape[1])], dim=1)
    # the predictor accumulates in float16
    torch.testing.assert_close(logits.float(), expected, atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize("kind", PLAN_KINDS)
def test_predictor_sliding_window_with_mirroring(kind):
    network, pm, cm = _build(kind, deep_supervision=False)
    spatial = [*cm.patch_size[:-1], cm.patch_size[-1] + 8]  # two overlapping tiles along the last axis
    mirror_axes = tuple(range(len(cm.patch_size)))
    data = _predictor_input(kind, spatial)
    logits = _predictor(network, pm, cm, mirror_axes).predict_sliding_window_return_logits(data)
    assert tuple(logits.shape) == (NUM_CLASSES, *data.shape[1:])
    assert torch.isfinite(logits).all()
