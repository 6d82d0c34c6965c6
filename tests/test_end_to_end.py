"""End to end through nnU-Net's real, unmodified console scripts (subprocesses, CPU): train the short ConfKD variant,
resume with --c, predict, evaluate; the teacher head from the same checkpoint; a 3D configuration."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

pytestmark = pytest.mark.slow

SMOKE = "nnUNetTrainerConfKD_smoke"
EPOCHS = 3  # SmokeSchedule.schedule_epochs


def model_folder(ds, trainer=SMOKE, configuration="2d"):
    return ds.results / f"{trainer}__nnUNetPlans__{configuration}"


@dataclass
class Trained:
    ds: object
    stopped_at: int  # epochs the killed run had checkpointed
    snapshot: Path  # checkpoint_latest.pth as the killed run left it
    resumed_stdout: str


@pytest.fixture(scope="module")
def trained_2d(planned_dataset, tmp_path_factory):
    """Train, SIGKILL the whole process group once the first epoch is checkpointed, then resume with --c."""
    ds = planned_dataset
    fold = model_folder(ds) / "fold_0"
    cmd = ["nnUNetv2_train", "990", "2d", "0", "-tr", SMOKE, "-device", "cpu"]
    proc = subprocess.Popen(cmd, env=ds.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (fold / "checkpoint_latest.pth").is_file():
        assert proc.poll() is None, "training ended before writing checkpoint_latest.pth"
        assert time.time() < deadline, "no checkpoint_latest.pth after 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (fold / "checkpoint_final.pth").exists()
    snapshot = tmp_path_factory.mktemp("snapshot") / "checkpoint_latest.pth"
    shutil.copy(fold / "checkpoint_latest.pth", snapshot)
    stopped_at = _load(snapshot)["current_epoch"]
    resumed = ds.run(*cmd, "--c")
    return Trained(ds, stopped_at, snapshot, resumed.stdout)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_training_writes_both_heads_per_term_logs_and_plots(trained_2d):
    fold = model_folder(trained_2d.ds) / "fold_0"
    checkpoint = _load(fold / "checkpoint_final.pth")
    assert checkpoint["trainer_name"] == SMOKE
    keys = checkpoint["network_weights"].keys()
    assert any(k.startswith("teacher_decoder.") for k in keys) and any(k.startswith("student_decoder.") for k in keys)
    assert not any(k.startswith("decoder.") for k in keys)
    logging = checkpoint["logging"]
    for term in ("sup", "weak", "kd", "ent"):
        assert len(logging[f"term_{term}"]) == EPOCHS and np.all(np.isfinite(logging[f"term_{term}"]))
    log_text = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    # the killed run logged its epochs, the resumed run the rest: at least one line per epoch over both logs
    assert log_text.count("loss terms: sup") >= EPOCHS
    assert (fold / "progress.png").is_file() and (fold / "progress_terms.png").is_file()
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2", "3"}


def test_resume_after_sigkill_continues_the_schedule_and_the_term_logs(trained_2d):
    stopped_at = trained_2d.stopped_at
    assert 1 <= stopped_at < EPOCHS
    snapshot = _load(trained_2d.snapshot)
    final = _load(model_folder(trained_2d.ds) / "fold_0" / "checkpoint_final.pth")
    assert final["current_epoch"] == EPOCHS
    for key in ("term_sup", "term_kd", "train_losses", "lrs"):
        assert len(final["logging"][key]) == EPOCHS
        assert final["logging"][key][:stopped_at] == snapshot["logging"][key][:stopped_at]
    # the resumed process trained only the remaining epochs
    assert f"Epoch {stopped_at}" in trained_2d.resumed_stdout
    assert "Epoch 0\n" not in trained_2d.resumed_stdout


def test_load_checkpoint_restores_both_heads_and_the_optimizer(trained_2d, nnunet_paths):
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from nnunetv2_confkd.training.registry import nnUNetTrainerConfKD_smoke

    plans = load_json(str(nnunet_paths.preprocessed / "nnUNetPlans.json"))
    plans["continue_training"] = True
    trainer = nnUNetTrainerConfKD_smoke(plans, "2d", 0, load_json(str(nnunet_paths.preprocessed / "dataset.json")),
                                        torch.device("cpu"))
    trainer.load_checkpoint(str(trained_2d.snapshot))
    snapshot = _load(trained_2d.snapshot)
    state = trainer.network.state_dict()
    assert state.keys() == snapshot["network_weights"].keys()
    assert all(torch.equal(state[k], v) for k, v in snapshot["network_weights"].items())
    assert trainer.current_epoch == trained_2d.stopped_at
    restored = trainer.optimizer.state_dict()["state"]
    assert restored and all(torch.equal(restored[i]["momentum_buffer"], s["momentum_buffer"])
                            for i, s in snapshot["optimizer_state"]["state"].items())


def _foreground_mean_dice(reference_folder, prediction_folder) -> float:
    """nnU-Net's ``foreground_mean`` Dice computed independently: per class the mean over cases (a case where
    reference and prediction both lack the class does not count), then the mean over classes 1-3."""
    per_class = {c: [] for c in (1, 2, 3)}
    for p in sorted(prediction_folder.glob("*.nii.gz")):
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(reference_folder / p.name)))
        for c, values in per_class.items():
            tp = np.sum((pred == c) & (ref == c))
            fp, fn = np.sum((pred == c) & (ref != c)), np.sum((pred != c) & (ref == c))
            if tp + fp + fn:
                values.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean([np.mean(v) for v in per_class.values()]))


def test_predict_and_evaluate_with_nnunet_commands_and_both_heads(trained_2d, tmp_path):
    ds = trained_2d.ds
    student, teacher = tmp_path / "student", tmp_path / "teacher"
    ds.run("nnUNetv2_predict", "-i", str(ds.raw / "imagesTs"), "-o", str(student), "-d", "990", "-c", "2d", "-f", "0",
           "-tr", SMOKE, "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar")
    ds.run("confkd_predict_head", "-i", str(ds.raw / "imagesTs"), "-o", str(teacher), "-m", str(model_folder(ds)),
           "-f", "0", "--head", "teacher", "-device", "cpu")
    dice = {}
    for name, folder in (("student", student), ("teacher", teacher)):
        ds.run("nnUNetv2_evaluate_folder", str(ds.raw / "labelsTs"), str(folder), "-djfile",
               str(model_folder(ds) / "dataset.json"), "-pfile", str(model_folder(ds) / "plans.json"), "-np", "1")
        predictions = sorted(folder.glob("*.nii.gz"))
        assert len(predictions) == 6
        for p in predictions:
            values = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(p)))).tolist())
            assert values <= {0, 1, 2, 3}  # never the ignore label
        dice[name] = json.loads((folder / "summary.json").read_text())["foreground_mean"]["Dice"]
        assert dice[name] == pytest.approx(_foreground_mean_dice(ds.raw / "labelsTs", folder), abs=1e-6)
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(sorted(student.glob("*.nii.gz"))[0])))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(sorted(teacher.glob("*.nii.gz"))[0])))
    assert not np.array_equal(a, b), "the two heads are distinct decoders and should not predict identically"


def test_pseudo_labels_from_the_teacher_turn_unlabeled_cases_into_weak_ones(trained_2d):
    ds = trained_2d.ds
    ds.run("confkd_pseudo_label", "-s", "990", "-d", "993", "-m", str(model_folder(ds)), "-f", "0", "--head", "teacher",
           "-t", "0.5", "-device", "cpu")
    target = Path(ds.env["nnUNet_raw"]) / "Dataset993_ConfKDSynthetic_pseudo0.5"
    source_json = json.loads((ds.raw / "dataset.json").read_text())
    dataset_json = json.loads((target / "dataset.json").read_text())
    unlabeled = sorted(c for c, level in source_json["supervision"].items() if level == "unlabeled")
    assert unlabeled and dataset_json["weak_label"]["kind"] == "pseudo"
    assert dataset_json["weak_label"]["model"].startswith("$nnUNet_results/Dataset990_ConfKDSynthetic/")
    for case in unlabeled:
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(target / "labelsTr" / f"{case}.nii.gz")))
        annotated = int(np.sum(label != 4))
        assert annotated == dataset_json["weak_label"]["annotated_voxels"][case]
        assert dataset_json["supervision"][case] == ("weak" if annotated else "unlabeled")
    assert any(dataset_json["supervision"][c] == "weak" for c in unlabeled)  # a 0.5 threshold keeps most voxels
    ds.run("nnUNetv2_plan_and_preprocess", "-d", "993", "-c", "2d", "-np", "1", "-npfp", "1",
           "--verify_dataset_integrity")


def test_3d_fullres_trains_with_the_same_code(planned_dataset):
    planned_dataset.run("nnUNetv2_train", "990", "3d_fullres", "0", "-tr", SMOKE, "-device", "cpu", "--npz")
    fold = model_folder(planned_dataset, configuration="3d_fullres") / "fold_0"
    checkpoint = _load(fold / "checkpoint_final.pth")
    assert len(checkpoint["logging"]["term_ent"]) == EPOCHS
    assert any(k.startswith("student_decoder.") for k in checkpoint["network_weights"])
    assert (fold / "validation" / "summary.json").is_file()
