"""ConfKD on real ACDC data with real expert scribbles (read in place from ../shared/data/acdc_wsl4mis; skipped where
that folder is absent): convert a few patients with the project's converter, plan and preprocess with nnU-Net, then
start the trainer and run training steps in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunetv2_confkd.supervision import full_mask
from nnunetv2_confkd.training.registry import nnUNetTrainerConfKD_smoke

ACDC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "acdc_wsl4mis"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ACDC.is_dir(), reason=f"real ACDC data not found at {ACDC} (present in CI only; its terms "
                                                 "forbid copying it into the repository)"),
]
DATASET_ID = 502


@pytest.fixture(scope="module")
def acdc_planned(tmp_path_factory):
    from conftest import PlannedDataset, nnunet_env

    root = tmp_path_factory.mktemp("acdc")
    ds = PlannedDataset(root, nnunet_env(root))
    split = json.loads((ACDC / "split.json").read_text())
    patients = split["train"][:5] + split["val"][:1]
    ds.run("confkd_convert_acdc", "--source", str(ACDC), "--out", ds.env["nnUNet_raw"], "--preprocessed",
           ds.env["nnUNet_preprocessed"], "--id", str(DATASET_ID), "--name", "ACDCReal", "--full", "2", "--weak",
           "expert", "--spacing", "10", "1.5", "1.5", "--patients", *patients)
    ds.run("nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1",
           "--verify_dataset_integrity")
    return ds


def test_confkd_trains_on_real_expert_scribbles(acdc_planned, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(var, acdc_planned.env[var])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    preprocessed = Path(acdc_planned.env["nnUNet_preprocessed"]) / f"Dataset{DATASET_ID}_ACDCReal"
    plans = load_json(str(preprocessed / "nnUNetPlans.json"))
    plans["continue_training"] = False
    trainer = nnUNetTrainerConfKD_smoke(plans, "2d", 0, load_json(str(preprocessed / "dataset.json")),
                                        torch.device("cpu"))
    trainer.initialize()  # manifest, split and dense-label checks on the real data
    levels = sorted(set(trainer.supervision.values()))
    assert levels == ["full", "weak"] and sum(v == "full" for v in trainer.supervision.values()) == 4  # 2 x ED/ES
    train_loader, _ = trainer.get_dataloaders()
    n_strong = trainer._strong_per_rank()
    for _ in range(2):
        batch = next(train_loader)
        assert full_mask(batch["keys"], trainer.supervision).sum() == n_strong
        out = trainer.train_step(batch)
        assert all(np.isfinite(v) for v in out.values())
        assert out["term_weak"] > 0 and out["term_sup"] > 0
