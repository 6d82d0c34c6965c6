"""Trainer glue in-process: discovery, start-up checks, composed batches, one train step (CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

import nnunetv2_confkd.training.registry as trainers
import nnunetv2_confkd.training.trainer as trainer_module
from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.supervision import full_mask
from nnunetv2_confkd.training.network import DualDecoderUNet
from nnunetv2_confkd.training.trainer import NonFiniteLossError
from nnunetv2_confkd.training.views import BoxMix


def make_trainer(ds, cls, configuration="2d", fold=0, dataset_json=None):
    plans = load_json(str(ds.preprocessed / "nnUNetPlans.json"))
    plans["continue_training"] = False
    dataset_json = dataset_json or load_json(str(ds.preprocessed / "dataset.json"))
    return cls(plans=plans, configuration=configuration, fold=fold, dataset_json=dataset_json,
               device=torch.device("cpu"))


@pytest.mark.parametrize("name", trainers.__all__)
def test_every_trainer_is_found_through_nnUNet_extTrainer(name, nnunet_paths):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    found = recursive_find_trainer_class_by_name(name)
    # the class lives in the installed package: one object, picklable for spawned data workers
    assert found is getattr(trainers, name)


def test_ext_trainer_dir_holds_only_the_reexport_module():
    import os

    import nnunetv2_confkd

    files = [f for f in os.listdir(nnunetv2_confkd.EXT_TRAINER_DIR) if f.endswith(".py")]
    assert files == ["nnunetv2_confkd_trainers.py"]


def test_initialize_builds_dual_network_and_reads_manifest(nnunet_paths):
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke)
    trainer.initialize()
    assert isinstance(trainer.network, DualDecoderUNet)
    assert sum(v == "full" for v in trainer.supervision.values()) == 4
    assert trainer.confkd_loss.config.ignore_label == 4


def _first(dj, level):
    return sorted(c for c, v in dj["supervision"].items() if v == level)[0]


def _set_all_full(dj, level):
    dj["supervision"].update({c: level for c, v in list(dj["supervision"].items()) if v == "full"})


# scenario -> (change the dataset.json dict, expected message given that dict before the change)
SCENARIOS = {
    "no manifest": (lambda dj: dj.pop("supervision"), lambda dj: "no \"supervision\" key"),
    "missing case": (lambda dj: dj["supervision"].pop(_first(dj, "weak")),
                     lambda dj: f"no level for case.*{_first(dj, 'weak')}"),
    "unknown level": (lambda dj: dj["supervision"].update({_first(dj, "weak"): "partial"}),
                      lambda dj: f"{_first(dj, 'weak')} has level 'partial'"),
    "unknown case": (lambda dj: dj["supervision"].update(case_999="weak"), lambda dj: "not in the dataset: case_999"),
    # a weak label is mostly ignore, so declaring it full must be refused
    "weak declared full": (lambda dj: dj["supervision"].update({_first(dj, "weak"): "full"}),
                           lambda dj: f"{_first(dj, 'weak')} is marked \"full\" but its label has"),
    # fold 0 validates on the full cases
    "weak validation case": (lambda dj: dj["supervision"].update({_first(dj, "full"): "weak"}),
                             lambda dj: f"validation case.*{_first(dj, 'full')}.*not fully labeled"),
    "no full training case": (lambda dj: _set_all_full(dj, "weak"), lambda dj: "training split.*has no fully labeled"),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_bad_supervision_is_refused_before_training(nnunet_paths, scenario):
    change, message = SCENARIOS[scenario]
    dataset_json = json.loads((nnunet_paths.preprocessed / "dataset.json").read_text())
    match = message(dataset_json)
    change(dataset_json)
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke, dataset_json=dataset_json)
    with pytest.raises(ConfKDInputError, match=match):
        trainer.initialize()


@pytest.mark.parametrize("cls", [trainers.nnUNetTrainerConfKD_smoke, trainers.nnUNetTrainerStrongOnly_smoke])
def test_fold_all_trains_on_every_case_and_validates_on_the_full_ones(nnunet_paths, cls):
    trainer = make_trainer(nnunet_paths, cls, fold="all")
    trainer.initialize()
    tr_keys, val_keys = trainer.do_split()
    manifest = trainer.dataset_json["supervision"]
    assert sorted(tr_keys) == sorted(manifest)
    assert val_keys and sorted(val_keys) == sorted(k for k, level in manifest.items() if level == "full")


@pytest.mark.parametrize(("cls", "expected_strong", "expected_other"),
                         [(trainers.nnUNetTrainerConfKD_smoke, 7, 7),  # the plan's batch of strong cases + as many
                          (trainers.nnUNetTrainerConfKD_replaceHalf_smoke, 3, 4),
                          (trainers.nnUNetTrainerConfKD_strong75_smoke, 5, 2),
                          (trainers.nnUNetTrainerStrongOnly_smoke, 7, 0)])
def test_training_batches_hold_a_fixed_number_of_full_cases(nnunet_paths, cls, expected_strong, expected_other):
    trainer = make_trainer(nnunet_paths, cls)
    trainer.initialize()
    assert trainer.batch_size == 7  # the plans' 2d batch size
    train_loader, _ = trainer.get_dataloaders()
    for _ in range(5):
        batch = next(train_loader)
        is_full = full_mask(batch["keys"], trainer.supervision)
        assert (is_full.sum(), (~is_full).sum()) == (expected_strong, expected_other)
        assert batch["data"].shape[0] == expected_strong + expected_other


def test_an_unknown_batch_composition_is_refused_before_the_workers_start(nnunet_paths):
    class Unknown(trainers.nnUNetTrainerConfKD_smoke):
        batch_composition = "mix"

    trainer = make_trainer(nnunet_paths, Unknown)
    with pytest.raises(ValueError, match="batch composition must be one of"):
        trainer.initialize()


def test_padding_stays_ignore_for_weak_cases_and_background_for_full_cases(nnunet_paths):
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke)
    trainer.initialize()
    train_loader, _ = trainer.get_dataloaders()
    unlabeled = {k for k, v in trainer.supervision.items() if v == "unlabeled"}
    for _ in range(10):
        batch = next(train_loader)
        for key, seg in zip(batch["keys"], batch["target"][0], strict=True):
            if str(key) in unlabeled:  # nnU-Net would have turned padding into background here
                assert torch.all(seg == 4)
        _, target, is_full, _, _ = trainer._prepare_batch(batch)
        assert not torch.any(target[0][is_full] == 4)  # full cases: padding mapped back to background, as stock


def test_two_views_perturb_the_other_rows_and_predict_them_clean_without_gradient(nnunet_paths):
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_twoView_smoke)
    trainer.initialize()
    train_loader, _ = trainer.get_dataloaders()
    data, target, is_full, _, _ = trainer._prepare_batch(next(train_loader))
    n = int(is_full.sum())
    assert 0 < n < len(is_full)
    views, view_target, reference = trainer._two_views(data, target, n)
    assert torch.equal(views[:n], data[:n]) and not torch.allclose(views[n:], data[n:])
    assert all(torch.equal(a, b) for a, b in zip(view_target, target, strict=True))  # same geometry, same labels
    assert reference.shape[0] == len(is_full) - n and not reference.requires_grad
    with torch.no_grad():  # the teacher head of the network's own forward pass on the clean rows
        torch.testing.assert_close(reference, trainer.network(data[n:]).teacher[0], atol=1e-5, rtol=1e-5)


def test_cutmix_view_moves_images_labels_and_reference_by_the_same_boxes(nnunet_paths, monkeypatch):
    """``student_view = "cutmix"``: the full rows stay as they are; on the other rows the images (before the intensity
    view), every label scale and the teacher's clean-view logits take the same partner's voxels in the same boxes."""
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_cutMix_smoke)
    trainer.initialize()
    train_loader, _ = trainer.get_dataloaders()
    draws = []
    monkeypatch.setattr(trainer_module, "intensity_view", lambda x: x.clone())  # geometry only
    monkeypatch.setattr(trainer_module, "BoxMix", lambda n, ndim: draws.append(BoxMix(n, ndim)) or draws[-1])
    views = None
    for _ in range(20):  # a batch with at least two other rows, one of them mixed
        data, target, is_full, _, _ = trainer._prepare_batch(next(train_loader))
        n = int(is_full.sum())
        views, view_target, reference = trainer._two_views(data, target, n)
        if len(is_full) - n > 1 and draws[-1].mixed.any():
            break
    mix = draws[-1]
    assert mix.mixed.any(), "no batch with a mixed case in 20 draws"
    assert torch.equal(views[:n], data[:n]) and torch.equal(views[n:], mix(data[n:]))
    assert not torch.equal(views[n:], data[n:])
    for mixed_t, t in zip(view_target, target, strict=True):
        assert torch.equal(mixed_t[:n], t[:n]) and torch.equal(mixed_t[n:], mix(t[n:]))
    with torch.no_grad():
        clean = trainer.network(data[n:]).teacher[0]
    torch.testing.assert_close(reference, mix(clean), atol=1e-5, rtol=1e-5)
    assert not reference.requires_grad


def test_prepared_batch_holds_the_same_cases_with_the_full_ones_first(nnunet_paths):
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke)
    trainer.initialize()
    train_loader, _ = trainer.get_dataloaders()
    seen_mixed = False
    for _ in range(10):
        batch = next(train_loader)
        full = trainer._is_full(batch["keys"])
        data, target, is_full, teacher_mask, teacher_cases = trainer._prepare_batch(batch)
        n = int(full.sum())
        assert is_full.tolist() == [True] * n + [False] * (len(full) - n)
        assert teacher_cases == n and torch.equal(teacher_mask, is_full)
        order = list(np.flatnonzero(full)) + list(np.flatnonzero(~full))
        assert torch.equal(data, batch["data"][order])  # each row keeps its own image and labels
        raw = batch["target"][0][order]
        assert torch.equal(target[0][~is_full], raw[~is_full])
        seen_mixed |= 0 < n < len(full) and order != sorted(order)
    assert seen_mixed  # some batch had to be reordered


@pytest.mark.slow
@pytest.mark.parametrize("trainer_class", [trainers.nnUNetTrainerConfKD_smoke,
                                           trainers.nnUNetTrainerConfKD_twoView_smoke,
                                           trainers.nnUNetTrainerConfKD_cutMix_smoke], ids=lambda c: c.__name__)
def test_train_step_reports_every_term_and_changes_both_heads(nnunet_paths, trainer_class):
    trainer = make_trainer(nnunet_paths, trainer_class)
    trainer.initialize()
    train_loader, _ = trainer.get_dataloaders()
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    out = trainer.train_step(next(train_loader))
    assert {"loss", "term_sup", "term_weak", "term_kd", "term_ent"} <= out.keys()
    assert all(np.isfinite(v) for v in out.values())
    after = trainer.network.state_dict()
    for prefix in ("encoder.", "teacher_decoder.", "student_decoder."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)), prefix


@pytest.mark.slow
def test_entropy_ramp_scales_the_entropy_term_from_zero_over_a_quarter_of_training(nnunet_paths):
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_entropyRamp_cpu)
    assert trainer.num_epochs == 48 and trainer.entropy_rampup_fraction == 0.25  # 12 of 48 epochs
    scales = []
    for epoch in (0, 6, 12, 47):
        trainer.current_epoch = epoch
        scales.append(trainer._entropy_scale())
    assert scales == [0.0, 0.5, 1.0, 1.0]
    trainer.initialize()
    trainer.current_epoch = 0
    train_loader, _ = trainer.get_dataloaders()
    out = trainer.train_step(next(train_loader))
    assert out["term_ent"] > 0  # the entropy is measured, but at epoch 0 it adds nothing to the total
    expected = out["term_sup"] + trainer.weak_weight * out["term_weak"] + trainer.kd_weight * out["term_kd"]
    assert out["loss"] == pytest.approx(expected, rel=1e-5)


def test_entropy_ramp_outside_zero_to_one_is_refused_before_training(nnunet_paths):
    class RampTooLong(trainers.nnUNetTrainerConfKD_smoke):
        entropy_rampup_fraction = 250  # epochs, not a share: the old meaning of the switch

    trainer = make_trainer(nnunet_paths, RampTooLong)
    with pytest.raises(ValueError, match=r"RampTooLong.entropy_rampup_fraction must lie in \[0, 1\].*got 250"):
        trainer.initialize()
    assert not hasattr(trainer, "confkd_loss")


@pytest.mark.slow
def test_non_finite_loss_stops_before_the_weights_change(nnunet_paths, monkeypatch):
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke)
    trainer.initialize()
    train_loader, _ = trainer.get_dataloaders()
    batch = next(train_loader)
    batch["data"][:] = float("nan")
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="epoch 0, batch keys"):
        trainer.train_step(batch)
    assert all(torch.equal(before[k], v) for k, v in trainer.network.state_dict().items())


def _saved(trainer, tmp_path, name="checkpoint.pth"):
    path = str(tmp_path / name)
    trainer.save_checkpoint(path)
    return path


def test_checkpoint_writes_are_atomic(nnunet_paths, tmp_path, monkeypatch):
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke)
    trainer.initialize()
    path = _saved(trainer, tmp_path)
    good = open(path, "rb").read()

    def killed_while_saving(obj, filename):
        with open(filename, "wb") as f:
            f.write(good[: len(good) // 3])
        raise KeyboardInterrupt  # the process dies half way through writing

    monkeypatch.setattr(torch, "save", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(path)
    assert open(path, "rb").read() == good  # the previous checkpoint is intact and loadable
    monkeypatch.undo()
    trainer.load_checkpoint(path)


def test_truncated_checkpoint_is_refused_with_its_name(nnunet_paths, tmp_path):
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke)
    trainer.initialize()
    path = _saved(trainer, tmp_path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ConfKDInputError, match="checkpoint .*checkpoint.pth is truncated or corrupt"):
        trainer.load_checkpoint(path)


def test_stock_checkpoint_is_refused_by_confkd_and_a_missing_head_is_named(nnunet_paths, tmp_path):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    stock = make_trainer(nnunet_paths, nnUNetTrainer)
    stock.initialize()
    stock_path = _saved(stock, tmp_path, "stock.pth")
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke)
    trainer.initialize()
    with pytest.raises(ConfKDInputError, match="written by nnUNetTrainer.*student_decoder.*teacher_decoder"):
        trainer.load_checkpoint(stock_path)
    checkpoint = torch.load(_saved(trainer, tmp_path), weights_only=False)
    checkpoint["network_weights"] = {k: v for k, v in checkpoint["network_weights"].items()
                                     if not k.startswith("student_decoder.")}
    torch.save(checkpoint, tmp_path / "no_student.pth")
    with pytest.raises(ConfKDInputError, match="missing and 0 unexpected weights, in \\['student_decoder'\\]"):
        trainer.load_checkpoint(str(tmp_path / "no_student.pth"))


def test_confkd_checkpoint_is_refused_by_strong_only(nnunet_paths, tmp_path):
    confkd = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke)
    confkd.initialize()
    path = _saved(confkd, tmp_path)
    strong_only = make_trainer(nnunet_paths, trainers.nnUNetTrainerStrongOnly_smoke)
    strong_only.initialize()
    with pytest.raises(ConfKDInputError, match="written by nnUNetTrainerConfKD_smoke"):
        strong_only.load_checkpoint(path)


# --- property: a broken dataset.json never starts training silently, nor fails inside nnU-Net --------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_BREAK_KEYS = st.sampled_from(["labels", "channel_names", "file_ending", "supervision", None])
_LEVEL = st.sampled_from(["full", "weak", "unlabeled", "partial", 3])


def _expected_valid(original: dict, changed: dict, split: dict, dropped) -> bool:
    if dropped is not None:
        return False
    if any(v not in ("full", "weak", "unlabeled") for v in changed.values()):
        return False
    if any(v == "full" and original[k] != "full" for k, v in changed.items()):
        return False  # its label holds ignore voxels
    if any(changed[k] != "full" for k in split["val"]):
        return False
    return any(changed[k] == "full" for k in split["train"])


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(dropped=_BREAK_KEYS, relabel=st.dictionaries(st.integers(0, 21), _LEVEL, max_size=5))
@pytest.mark.slow
def test_broken_dataset_json_raises_a_clear_error_or_trains(nnunet_paths, dropped, relabel):
    dataset_json = json.loads((nnunet_paths.preprocessed / "dataset.json").read_text())
    original = dict(dataset_json["supervision"])
    for index, level in relabel.items():
        dataset_json["supervision"][f"case_{index:03d}"] = level
    changed = dict(dataset_json["supervision"])
    if dropped is not None:
        dataset_json.pop(dropped)
    split = json.loads((nnunet_paths.preprocessed / "splits_final.json").read_text())[0]
    try:
        trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke, dataset_json=dataset_json)
        trainer.initialize()
    except ConfKDInputError as e:
        assert not _expected_valid(original, changed, split, dropped), f"valid input refused: {e}"
    else:
        assert _expected_valid(original, changed, split, dropped), "broken input started silently"


def test_a_weak_case_without_annotation_is_reported_and_trained_as_unlabeled(nnunet_paths):
    dataset_json = json.loads((nnunet_paths.preprocessed / "dataset.json").read_text())
    case = _first(dataset_json, "unlabeled")
    dataset_json["supervision"][case] = "weak"
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke, dataset_json=dataset_json)
    with pytest.warns(UserWarning, match=f"no annotated voxel and are trained as unlabeled ones: {case}"):
        trainer.initialize()
    log = open(trainer.log_file).read()
    assert f"WARNING: 1 weak case(s) have no annotated voxel and are trained as unlabeled ones: {case}" in log


def test_stock_nnunet_refuses_a_confkd_checkpoint_with_its_own_error(nnunet_paths, tmp_path):
    """The reverse direction is nnU-Net's code: its strict load names the unexpected decoder keys."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    confkd = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke)
    confkd.initialize()
    path = _saved(confkd, tmp_path)
    stock = make_trainer(nnunet_paths, nnUNetTrainer)
    stock.initialize()
    with pytest.raises(RuntimeError, match="Missing key.*decoder"):
        stock.load_checkpoint(path)


def test_stock_baseline_with_ignore_padding_keeps_unlabeled_cases_all_ignore(nnunet_paths):
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerIgnorePadding_smoke)
    trainer.initialize()
    train_loader, _ = trainer.get_dataloaders()
    supervision = trainer.dataset_json["supervision"]
    seen = 0
    for _ in range(20):
        batch = next(train_loader)
        for key, seg in zip(batch["keys"], batch["target"][0], strict=True):
            if supervision[str(key)] == "unlabeled":
                seen += 1
                assert torch.all(seg == 4)  # stock nnU-Net would turn padding into background here
    assert seen > 0


class _AutoForTest(trainers.nnUNetTrainerConfKDAuto_smoke):
    settings_by_labels = {"foreground_only": {"kd_on": "all", "weak_weight": 0.1}, "background_annotated": {}}


@pytest.mark.parametrize("recorded", [True, False])
def test_auto_trainer_applies_the_settings_of_its_weak_label_kind(nnunet_paths, recorded):
    dataset_json = load_json(str(nnunet_paths.preprocessed / "dataset.json"))
    assert dataset_json["weak_label"]["background_annotated"] is False  # the synthetic seeds are foreground-only
    if not recorded:
        del dataset_json["weak_label"]["background_annotated"]
    trainer = make_trainer(nnunet_paths, _AutoForTest, dataset_json=dataset_json)
    trainer.initialize()
    config = trainer.confkd_loss.config
    assert (config.kd_on, config.weak_weight, config.entropy_weight) == ("all", 0.1, 0.1)
    assert trainer.chosen_settings["kind"] == "foreground_only"
    assert trainer.chosen_settings["decided_by"].startswith("dataset.json" if recorded else "the weak labels: 0 ")
    assert _AutoForTest.kd_on == "strong"  # the class keeps its switches; only this trainer changed


def test_switches_of_a_variant_are_what_auto_may_set(nnunet_paths):
    """A variant chosen by cross-validation becomes an entry of ``settings_by_labels`` through ``switches_of``, and
    that entry makes the Auto trainer's objective the variant's."""
    from nnunetv2_confkd.training.auto_settings import switches_of

    assert switches_of(trainers.nnUNetTrainerConfKD_cutMix) == {
        "student_view": "cutmix", "confidence_term": "pseudo_teacher", "pseudo_threshold": 0.9, "entropy_weight": 1.0}
    assert switches_of(trainers.nnUNetTrainerConfKD_cutMix_smoke) == switches_of(trainers.nnUNetTrainerConfKD_cutMix)
    assert switches_of(trainers.nnUNetTrainerConfKD) == {}
    assert switches_of(trainers.nnUNetTrainerConfKD_teacherHead) == {"inference_head": "teacher"}
    with pytest.raises(ValueError, match="no variant of nnUNetTrainerConfKD"):
        switches_of(trainers.nnUNetTrainerStrongOnly)

    class Chosen(trainers.nnUNetTrainerConfKDAuto_smoke):
        settings_by_labels = {"foreground_only": switches_of(trainers.nnUNetTrainerConfKD_weak01)}

    auto = make_trainer(nnunet_paths, Chosen)
    auto.initialize()
    variant = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_weak01_smoke)
    variant.initialize()
    assert auto.confkd_loss.config == variant.confkd_loss.config


def test_auto_trainer_sets_the_inference_head_through_the_plans_it_saves(nnunet_paths):
    """An entry with ``inference_head`` switches this network's head and writes the head into the trainer's
    configuration of its plans (saved with the model), so that the network nnU-Net's predictor builds from the class
    and those plans runs it; the class and the plans on disk are unchanged."""
    import copy

    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_confkd.training.network import PLANS_HEAD_KEY

    class HeadChoosing(trainers.nnUNetTrainerConfKDAuto_smoke):
        settings_by_labels = {"foreground_only": {"inference_head": "teacher", "kd_on": "all"}}

    trainer = make_trainer(nnunet_paths, HeadChoosing)
    trainer.initialize()
    assert trainer.network.inference_head == "teacher" and trainer.confkd_loss.config.kd_on == "all"
    assert trainer.chosen_settings["switches"] == {"inference_head": "teacher", "kd_on": "all"}

    def rebuilt(plans: dict):
        manager = PlansManager(copy.deepcopy(plans))
        return HeadChoosing.build_network_architecture(manager, manager.get_configuration("2d"), 1, 4, False)

    assert rebuilt(trainer.plans_manager.plans).inference_head == "teacher"  # what the predictor builds
    on_disk = load_json(str(nnunet_paths.preprocessed / "nnUNetPlans.json"))
    assert PLANS_HEAD_KEY not in on_disk["configurations"]["2d"] and rebuilt(on_disk).inference_head == "student"

    class BadHead(trainers.nnUNetTrainerConfKDAuto_smoke):
        settings_by_labels = {"foreground_only": {"inference_head": "both"}}

    with pytest.raises(ValueError, match="inference_head must be one of"):
        make_trainer(nnunet_paths, BadHead).initialize()


