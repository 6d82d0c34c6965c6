"""Trainer glue in-process: discovery, start-up checks, composed batches, one train step (CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

import nnunetv2_confkd.trainers as trainers
from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.network import DualDecoderUNet
from nnunetv2_confkd.supervision import full_mask
from nnunetv2_confkd.trainer import NonFiniteLossError


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
    assert sum(v == "full" for v in trainer.supervision.values()) == 6
    assert trainer.confkd_loss.config.ignore_label == 4


def _broken_dataset_json(ds, change):
    dj = json.loads((ds.preprocessed / "dataset.json").read_text())
    change(dj)
    return dj


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda dj: dj.pop("supervision"), "no \"supervision\" key"),
        (lambda dj: dj["supervision"].pop("case_010"), "no level for case.*case_010"),
        (lambda dj: dj["supervision"].update(case_010="partial"), "case_010 has level 'partial'"),
        (lambda dj: dj["supervision"].update(case_999="weak"), "not in the dataset: case_999"),
        # case_010 is weak: its label is mostly ignore, so declaring it full must be refused
        (lambda dj: dj["supervision"].update(case_010="full"), "case_010 is marked \"full\" but its label has"),
        # fold 0 validates on case_000 and case_001
        (lambda dj: dj["supervision"].update(case_000="weak"), "validation case.*case_000.*not fully labeled"),
        (lambda dj: dj["supervision"].update({f"case_{i:03d}": "weak" for i in range(2, 6)}),
         "training split.*has no fully labeled case"),
    ],
)
def test_bad_supervision_is_refused_before_training(nnunet_paths, change, match):
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke,
                           dataset_json=_broken_dataset_json(nnunet_paths, change))
    with pytest.raises(ConfKDInputError, match=match):
        trainer.initialize()


def test_fold_all_is_refused_because_it_validates_on_weak_cases(nnunet_paths):
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke, fold="all")
    with pytest.raises(ConfKDInputError, match="not fully labeled"):
        trainer.initialize()


@pytest.mark.parametrize(("cls", "expected_strong"), [(trainers.nnUNetTrainerConfKD_smoke, 3),
                                                      (trainers.nnUNetTrainerStrongOnly_smoke, 7)])
def test_training_batches_hold_a_fixed_number_of_full_cases(nnunet_paths, cls, expected_strong):
    trainer = make_trainer(nnunet_paths, cls)
    trainer.initialize()
    assert trainer.batch_size == 7  # the plans' 2d batch size
    train_loader, _ = trainer.get_dataloaders()
    for _ in range(5):
        batch = next(train_loader)
        assert full_mask(batch["keys"], trainer.supervision).sum() == expected_strong


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


def test_train_step_reports_every_term_and_changes_both_heads(nnunet_paths):
    trainer = make_trainer(nnunet_paths, trainers.nnUNetTrainerConfKD_smoke)
    trainer.initialize()
    train_loader, _ = trainer.get_dataloaders()
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    out = trainer.train_step(next(train_loader))
    assert {"loss", "term_sup", "term_weak", "term_kd", "term_ent"} <= out.keys()
    assert all(np.isfinite(v) for v in out.values())
    after = trainer.network.state_dict()
    for prefix in ("encoder.", "teacher_decoder.", "student_decoder."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)), prefix


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
