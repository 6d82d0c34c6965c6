"""``confkd_export`` (one head of a ConfKD model as a stock nnU-Net model) and ``confkd_predict_head``'s ensembling
flags: the key mapping and the refusals on hand-made model folders (fast), then end to end through nnU-Net's own
console scripts on a trained smoke model (slow)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import (
    CONFIGURATION_NAMES,
    DATASET_JSON,
    NUM_CLASSES,
    NUM_INPUT_CHANNELS,
    PlannedDataset,
    make_plans_dict,
    make_plans_manager,
)
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.cli import export_main, predict_head_main, with_ext_trainers
from nnunetv2_confkd.export import PROVENANCE_KEY, head_weights
from nnunetv2_confkd.training.trainer import nnUNetTrainerConfKD

FAKE_DATASET = "Dataset999_X"  # the dataset name of conftest's hand-written plans
TRAINER = "nnUNetTrainerConfKD"


def _dual(kind: str, seed: int = 0):
    plans_manager, configuration_manager = make_plans_manager(kind)
    torch.manual_seed(seed)
    net = nnUNetTrainerConfKD.build_network_architecture(plans_manager, configuration_manager, NUM_INPUT_CHANNELS,
                                                         NUM_CLASSES, False)
    return net, plans_manager, configuration_manager


def _head_output(net, head: str, x: torch.Tensor) -> torch.Tensor:
    net.eval()
    net.inference_head = head
    with torch.no_grad():
        return net(x)


@pytest.mark.parametrize("kind", ["2d", "3d", "resenc"])
@pytest.mark.parametrize("head", ["student", "teacher"])
def test_head_weights_load_strictly_into_the_stock_network_and_compute_the_head(kind, head):
    dual, plans_manager, configuration_manager = _dual(kind)
    stock = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, NUM_INPUT_CHANNELS,
                                                     NUM_CLASSES, False)
    mapped = head_weights(dual.state_dict(), head)
    assert mapped.keys() == stock.state_dict().keys()
    assert any(k.startswith("decoder.encoder.") for k in mapped)
    stock.load_state_dict(mapped, strict=True)
    x = torch.randn(2, NUM_INPUT_CHANNELS, *configuration_manager.patch_size)
    stock.eval()
    with torch.no_grad():
        assert torch.equal(stock(x), _head_output(dual, head, x))


def test_head_weights_refuse_what_is_not_a_consistent_confkd_network():
    dual, plans_manager, configuration_manager = _dual("2d")
    stock = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, NUM_INPUT_CHANNELS,
                                                     NUM_CLASSES, False)
    with pytest.raises(ConfKDInputError, match="no ConfKD network.*already is a stock nnU-Net model"):
        head_weights(stock.state_dict(), "student", "model.pth")
    with pytest.raises(ConfKDInputError, match="head must be one of"):
        head_weights(dual.state_dict(), "decoder")
    untied = dict(dual.state_dict())
    key = next(k for k in untied if k.startswith("student_decoder.encoder."))
    untied[key] = untied[key] + 1
    with pytest.raises(ConfKDInputError, match=f"{key} differs from the shared encoder"):
        head_weights(untied, "student")
    head_weights(untied, "teacher")  # the other decoder's copy is not exported
    with pytest.raises(ConfKDInputError, match="unknown modules"):
        head_weights({**dual.state_dict(), "extra.weight": torch.zeros(1)}, "student")
    ddp = {f"module.{k}": v for k, v in dual.state_dict().items()}
    assert head_weights(ddp, "teacher").keys() == stock.state_dict().keys()


# ======================================================================================================================
# Export of hand-made model folders (no training)
# ======================================================================================================================


def _make_model(results: Path, trainer: str = TRAINER, folds=(0,), network=None, configuration: str = "2d") -> Path:
    """A model folder as nnUNetv2_train leaves it: json files, per fold a checkpoint, progress.png and summary.json."""
    plans = make_plans_dict()
    folder = results / FAKE_DATASET / f"{trainer}__nnUNetPlans__{configuration}"
    folder.mkdir(parents=True)
    for name, content in (("plans.json", plans), ("dataset.json", DATASET_JSON), ("dataset_fingerprint.json", {})):
        (folder / name).write_text(json.dumps(content))
    network = network if network is not None else _dual("2d")[0]
    optimizer = torch.optim.SGD(network.parameters(), 0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    for fold in folds:
        (folder / f"fold_{fold}" / "validation").mkdir(parents=True)
        (folder / f"fold_{fold}" / "progress.png").write_bytes(b"png")
        (folder / f"fold_{fold}" / "validation" / "summary.json").write_text('{"foreground_mean": {"Dice": 0.5}}')
        torch.save({
            "network_weights": network.state_dict(), "optimizer_state": optimizer.state_dict(),
            "grad_scaler_state": None, "logging": {"train_losses": [1.0, 0.5], "term_kd": [0.1, 0.1]},
            "_best_ema": 0.5, "current_epoch": 2, "trainer_name": trainer,
            "init_args": {"plans": plans, "configuration": CONFIGURATION_NAMES["2d"], "fold": fold,
                          "dataset_json": DATASET_JSON, "device": torch.device("cpu")},
            "inference_allowed_mirroring_axes": (0, 1),
        }, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


@pytest.fixture
def results(tmp_path, monkeypatch):
    """``$nnUNet_results`` with one ConfKD model (fold 0); raw and preprocessed unset."""
    for var in ("nnUNet_raw", "nnUNet_preprocessed"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    # confkd_predict_head adds the trainer folder to nnUNet_extTrainer in os.environ: restore it afterwards
    monkeypatch.setenv("nnUNet_extTrainer", os.environ.get("nnUNet_extTrainer", ""))
    _make_model(tmp_path / "results")
    return tmp_path / "results"


def _export(out: Path, *extra: str) -> Path:
    export_main(["-d", "999", "-c", "2d", "-f", "0", "-tr", TRAINER, "-o", str(out), *extra])
    return out / FAKE_DATASET / "nnUNetTrainer__nnUNetPlans__2d"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("head", ["student", "teacher"])
def test_export_writes_a_stock_model_that_nnunets_predictor_loads(results, tmp_path, head):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    target = _export(tmp_path / "out", "--head", head)
    expected = {"plans.json", "dataset.json", "dataset_fingerprint.json", "fold_0/checkpoint_final.pth",
                "fold_0/progress.png"} | ({"fold_0/validation/summary.json"} if head == "student" else set())
    assert set(_files(target)) == expected  # the summary scores the model's inference head (student) only
    assert set(_files(tmp_path / "out")) == {f"{FAKE_DATASET}/nnUNetTrainer__nnUNetPlans__2d/{f}" for f in expected}
    checkpoint = torch.load(target / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainer"
    assert set(checkpoint["init_args"]) == {"plans", "configuration", "fold", "dataset_json", "device"}
    assert checkpoint["init_args"]["configuration"] == "2d" and checkpoint["inference_allowed_mirroring_axes"] == (0, 1)
    assert checkpoint["logging"] == {"train_losses": [1.0, 0.5]}
    assert checkpoint["_best_ema"] == (0.5 if head == "student" else None)
    assert checkpoint[PROVENANCE_KEY]["head"] == head
    assert checkpoint[PROVENANCE_KEY]["source_checkpoint"].endswith("nnUNetTrainerConfKD__nnUNetPlans__2d/fold_0/"
                                                                     "checkpoint_final.pth")
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(target), (0,), "checkpoint_final.pth")
    assert type(predictor.network).__name__ == "PlainConvUNet"
    # the optimizer state loads into nnU-Net's SGD on the stock network (nnUNetv2_train --val, fine-tuning)
    torch.optim.SGD(predictor.network.parameters(), 0.01, momentum=0.99, nesterov=True).load_state_dict(
        checkpoint["optimizer_state"])
    dual = _dual("2d")[0]
    x = torch.randn(1, NUM_INPUT_CHANNELS, 32, 48)
    predictor.network.eval()
    with torch.no_grad():
        assert torch.equal(predictor.network(x), _head_output(dual, head, x))


def test_a_head_named_by_the_models_plans_is_its_inference_head(results, tmp_path):
    """A trainer that chose its head from its data writes it into its configuration of the model's plans.json:
    ``model_inference_head`` reads it, nnU-Net's predictor builds that head, and the export treats it as the head
    nnU-Net's validation scored (its summary and EMA go with it)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunetv2_confkd.training.heads import model_inference_head
    from nnunetv2_confkd.training.network import PLANS_HEAD_KEY

    model = results / FAKE_DATASET / f"{TRAINER}__nnUNetPlans__2d"
    assert model_inference_head(model) == "student"  # the class's
    plans = json.loads((model / "plans.json").read_text())
    plans["configurations"][CONFIGURATION_NAMES["2d"]][PLANS_HEAD_KEY] = "teacher"
    (model / "plans.json").write_text(json.dumps(plans))
    assert model_inference_head(model) == "teacher"
    with_ext_trainers()  # nnUNetv2_predict finds the package's trainers through nnUNet_extTrainer (restored after)
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), (0,), "checkpoint_final.pth")
    assert predictor.network.inference_head == "teacher"
    target = _export(tmp_path / "out")  # without --head: the model's inference head
    assert (target / "fold_0" / "validation" / "summary.json").is_file()
    checkpoint = torch.load(target / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["_best_ema"] == 0.5 and checkpoint[PROVENANCE_KEY]["head"] == "teacher"
    assert model_inference_head(tmp_path / "x" / "nnUNetTrainer__nnUNetPlans__2d") is None  # no heads


def _refused(capsys, out: Path, *argv: str, match: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        export_main([*argv, "-o", str(out)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert match in message, message
    return message


ARGS = ["-d", "999", "-c", "2d", "-f", "0", "-tr", TRAINER]


@pytest.mark.parametrize("argv, match", [
    (["-d", "998", "-c", "2d", "-f", "0", "-tr", TRAINER], "-d 998"),
    (["-d", "999", "-c", "2d", "-f", "0", "-tr", "nnUNetTrainerConfKD_smoke"], "no trained model at"),
    (["-d", "999", "-c", "3d_fullres", "-f", "0", "-tr", TRAINER], "check -d, -tr, -p and -c"),
    (["-d", "999", "-c", "2d", "-f", "0", "1", "-tr", TRAINER], "fold 1 of"),
    ([*ARGS, "-chk", "checkpoint_best.pth"], "fold_0/checkpoint_best.pth does not exist (present: "
                                             "['checkpoint_final.pth'])"),
    ([*ARGS, "--head", "decoder"], "invalid choice"),
])
def test_export_refuses_a_missing_model_fold_or_checkpoint_before_writing(results, tmp_path, capsys, argv, match):
    _refused(capsys, tmp_path / "out", *argv, match=match)
    assert not (tmp_path / "out").exists()


def test_export_refuses_bad_checkpoints_and_missing_files_before_writing(results, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    stock = nnUNetTrainer.build_network_architecture(*make_plans_manager("2d"), NUM_INPUT_CHANNELS, NUM_CLASSES, False)
    _make_model(results, "nnUNetTrainer", network=stock)
    _refused(capsys, out, "-d", "999", "-c", "2d", "-f", "0", "-tr", "nnUNetTrainer",
             match="holds no ConfKD network")
    folder = results / FAKE_DATASET / f"{TRAINER}__nnUNetPlans__2d"
    checkpoint = folder / "fold_0" / "checkpoint_final.pth"
    intact = checkpoint.read_bytes()
    payload = torch.load(checkpoint, weights_only=False)
    payload["init_args"]["configuration"] = "3d_fullres"
    torch.save(payload, checkpoint)
    _refused(capsys, out, *ARGS, match="trained for configuration '3d_fullres', not '2d'")
    checkpoint.write_bytes(intact[: len(intact) // 2])
    _refused(capsys, out, *ARGS, match=f"checkpoint {checkpoint} is truncated or corrupt")
    checkpoint.write_bytes(intact)
    (folder / "dataset_fingerprint.json").unlink()
    _refused(capsys, out, *ARGS, match="dataset_fingerprint.json is missing")
    monkeypatch.delenv("nnUNet_results")
    _refused(capsys, out, *ARGS, match="nnUNet_results is not set")
    assert not out.exists()


def test_export_refuses_to_overwrite_and_adds_folds_beside_identical_files(results, tmp_path, capsys):
    out = tmp_path / "out"
    target = _export(out)
    fold_0 = target / "fold_0" / "checkpoint_final.pth"
    before = _files(out)
    message = _refused(capsys, out, *ARGS, match="pass --overwrite")
    assert str(fold_0) in message and _files(out) == before
    # another fold of a retrained model: the json files are identical, so they are no conflict
    shutil.rmtree(results / FAKE_DATASET)
    source = _make_model(results, folds=(0, 1), network=_dual("2d", seed=1)[0])
    export_main(["-d", "999", "-c", "2d", "-f", "1", "-tr", TRAINER, "-o", str(out)])
    assert (target / "fold_1" / "checkpoint_final.pth").is_file() and fold_0.read_bytes() == before[
        str(fold_0.relative_to(out))]
    # a plans.json that differs from the exported one is a conflict
    (source / "plans.json").write_text(json.dumps(make_plans_dict(), indent=1))
    after = _files(out)
    message = _refused(capsys, out, "-d", "999", "-c", "2d", "-f", "1", "-tr", TRAINER, match="pass --overwrite")
    assert str(target / "plans.json") in message and _files(out) == after
    _export(out, "--overwrite")
    assert fold_0.read_bytes() != before[str(fold_0.relative_to(out))]
    assert (target / "plans.json").read_text() == (source / "plans.json").read_text()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_export_refuses_to_write_into_the_model_folder_itself(results, capsys):
    _make_model(results, "nnUNetTrainer", network=_dual("2d")[0])
    _refused(capsys, results, "-d", "999", "-c", "2d", "-f", "0", "-tr", "nnUNetTrainer",
             match="is the model folder itself")


def _raw_images(folder: Path, seed: int) -> Path:
    """An nnU-Net raw image folder with one random single-channel case, ``case``."""
    folder.mkdir()
    image = sitk.GetImageFromArray(np.random.default_rng(seed).normal(size=(3, 40, 56)).astype(np.float32))
    image.SetSpacing((1.5, 1.5, 1.0))
    sitk.WriteImage(image, str(folder / "case_0000.nii.gz"))
    return folder


def test_predict_head_without_workers_saves_probabilities_and_equals_the_exported_head(results, tmp_path):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    images = _raw_images(tmp_path / "images", seed=0)
    model = results / FAKE_DATASET / f"{TRAINER}__nnUNetPlans__2d"
    predict_head_main(["-i", str(images), "-o", str(tmp_path / "head"), "-m", str(model), "-device", "cpu",
                       "--head", "teacher", "-npp", "0", "-nps", "0", "--save_probabilities", "--disable_tta"])
    assert {p.name for p in (tmp_path / "head").iterdir()} >= {"case.nii.gz", "case.npz", "case.pkl"}
    target = _export(tmp_path / "out", "--head", "teacher")
    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(target), (0,), "checkpoint_final.pth")
    (tmp_path / "stock").mkdir()
    predictor.predict_from_files_sequential(str(images), str(tmp_path / "stock"), save_probabilities=True)
    _assert_same_labels(tmp_path / "head", tmp_path / "stock")
    assert np.array_equal(np.load(tmp_path / "head" / "case.npz")["probabilities"],
                          np.load(tmp_path / "stock" / "case.npz")["probabilities"])


def test_predict_head_runs_a_model_without_heads_with_its_own_network(results, tmp_path):
    """Without ``--head``, a stock nnU-Net model (no heads) predicts with its own network, as nnUNetv2_predict would."""
    images = _raw_images(tmp_path / "images", seed=1)
    stock = nnUNetTrainer.build_network_architecture(*make_plans_manager("2d"), NUM_INPUT_CHANNELS, NUM_CLASSES, False)
    model = _make_model(results, "nnUNetTrainer", network=stock)
    predict_head_main(["-i", str(images), "-o", str(tmp_path / "pred"), "-m", str(model), "-device", "cpu",
                       "-npp", "0", "-nps", "0", "--disable_tta"])
    assert (tmp_path / "pred" / "case.nii.gz").is_file()


@pytest.mark.parametrize("argv, match", [
    (["-num_parts", "2", "-part_id", "2"], "part_id must lie in 0..num_parts-1"),
    (["-npp", "0", "-nps", "0", "-num_parts", "2"], "without worker processes"),
    (["-f", "3"], "fold_3/checkpoint_final.pth"),
])
def test_predict_head_refuses_bad_parts_and_missing_folds(results, tmp_path, capsys, argv, match):
    model = results / FAKE_DATASET / f"{TRAINER}__nnUNetPlans__2d"
    with pytest.raises(SystemExit) as exit_info:
        predict_head_main(["-i", str(tmp_path), "-o", str(tmp_path / "pred"), "-m", str(model), "-device", "cpu",
                           *argv])
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "pred").exists()


# ======================================================================================================================
# End to end: a trained smoke model, exported and predicted with nnU-Net's unmodified console scripts
# ======================================================================================================================

SMOKE = "nnUNetTrainerConfKD_smoke"
PREDICT = ("-d", "990", "-c", "2d", "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar")
EXPORT = ("-c", "import sys; from nnunetv2_confkd.cli import export_main; export_main(sys.argv[1:])")
# nnU-Net's predictor alone, as someone without this package would run it; fails if this package gets imported
PREDICT_WITHOUT_PACKAGE = """
import multiprocessing, os, sys
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
torch.set_num_threads(multiprocessing.cpu_count())
predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
predictor.initialize_from_trained_model_folder(sys.argv[1], (0,), "checkpoint_final.pth")
os.makedirs(sys.argv[3], exist_ok=True)
predictor.predict_from_files_sequential(sys.argv[2], sys.argv[3], save_probabilities=False, overwrite=True)
imported = sorted(m for m in sys.modules if m.startswith("nnunetv2_confkd"))
assert not imported, imported
print(type(predictor.network).__name__)
"""


def _stock(ds: PlannedDataset, results: Path) -> PlannedDataset:
    """``ds`` with ``nnUNet_results`` at ``results`` and no ``nnUNet_extTrainer``: a plain nnU-Net installation."""
    env = {k: v for k, v in ds.env.items() if k != "nnUNet_extTrainer"}
    return PlannedDataset(ds.root, {**env, "nnUNet_results": str(results)})


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.glob("*.nii.gz"))}


def _assert_same_labels(a: Path, b: Path) -> None:
    first, second = _labels(a), _labels(b)
    assert first and first.keys() == second.keys()
    for name, array in first.items():
        assert np.array_equal(array, second[name]), f"{name}: {np.sum(array != second[name])} voxels differ"


class Trained:
    """The smoke model in its own results folder, its two exports and the reference predictions of both heads."""

    def __init__(self, ds: PlannedDataset, root: Path):
        self.ds, self.root = ds, root
        self.images = ds.raw / "imagesTs"
        self.model = ds.results / f"{SMOKE}__nnUNetPlans__2d"
        self.exports = {head: root / f"export_{head}" for head in ("student", "teacher")}
        self.reference = {head: root / f"reference_{head}" for head in ("student", "teacher")}


@pytest.fixture(scope="module")
def trained(planned_dataset, tmp_path_factory) -> Trained:
    root = tmp_path_factory.mktemp("export_e2e")
    ds = PlannedDataset(planned_dataset.root, {**planned_dataset.env, "nnUNet_results": str(root / "results")})
    t = Trained(ds, root)
    ds.run("nnUNetv2_train", "990", "2d", "0", "-tr", SMOKE, "-device", "cpu")
    for head, out in t.exports.items():
        ds.run(sys.executable, *EXPORT, "-d", "990", "-c", "2d", "-f", "0", "-tr", SMOKE, "-o", str(out),
               "--head", head)
    ds.run("nnUNetv2_predict", "-i", str(t.images), "-o", str(t.reference["student"]), "-tr", SMOKE, *PREDICT)
    ds.run("confkd_predict_head", "-i", str(t.images), "-o", str(t.reference["teacher"]), "-m", str(t.model),
           "-f", "0", "--head", "teacher", "-device", "cpu")
    return t


@pytest.mark.slow
@pytest.mark.parametrize("head", ["student", "teacher"])
def test_exported_head_predicts_with_stock_nnunet_exactly_what_the_confkd_model_predicts(trained, tmp_path, head):
    stock = _stock(trained.ds, trained.exports[head])
    model = stock.results / "nnUNetTrainer__nnUNetPlans__2d"
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainer"
    assert not any("_decoder." in k for k in checkpoint["network_weights"])
    stock.run("nnUNetv2_predict", "-i", str(trained.images), "-o", str(tmp_path), "-tr", "nnUNetTrainer", *PREDICT)
    _assert_same_labels(tmp_path, trained.reference[head])
    assert len(_labels(tmp_path)) == 6


@pytest.mark.slow
def test_zip_export_and_install_then_predict_without_importing_the_package(trained, tmp_path):
    exported = _stock(trained.ds, trained.exports["student"])
    archive = tmp_path / "model.zip"
    exported.run("nnUNetv2_export_model_to_zip", "-d", "990", "-o", str(archive), "-c", "2d", "-tr", "nnUNetTrainer",
                 "-f", "0")
    installed = _stock(trained.ds, tmp_path / "installed")
    installed.run("nnUNetv2_install_pretrained_model_from_zip", str(archive))
    model = installed.results / "nnUNetTrainer__nnUNetPlans__2d"
    assert (model / "fold_0" / "checkpoint_final.pth").is_file()
    proc = installed.run(sys.executable, "-c", PREDICT_WITHOUT_PACKAGE, str(model), str(trained.images),
                         str(tmp_path / "pred"))
    assert proc.stdout.strip().endswith("PlainConvUNet")
    _assert_same_labels(tmp_path / "pred", trained.reference["student"])


@pytest.mark.slow
def test_nnunet_validation_of_the_exported_teacher_writes_the_summary_that_zip_export_needs(trained, tmp_path):
    exported = _stock(trained.ds, trained.exports["teacher"])
    fold = exported.results / "nnUNetTrainer__nnUNetPlans__2d" / "fold_0"
    assert not (fold / "validation" / "summary.json").exists()  # the model's validation scored the student
    exported.run("nnUNetv2_train", "990", "2d", "0", "-tr", "nnUNetTrainer", "--val", "-device", "cpu")
    assert set(json.loads((fold / "validation" / "summary.json").read_text())["mean"]) == {"1", "2", "3"}
    exported.run("nnUNetv2_export_model_to_zip", "-d", "990", "-o", str(tmp_path / "teacher.zip"), "-c", "2d",
                 "-tr", "nnUNetTrainer", "-f", "0")


@pytest.mark.slow
def test_both_heads_predicted_in_parts_with_probabilities_go_into_nnunet_ensemble(trained, tmp_path):
    ds, cases = trained.ds, sorted(p.name for p in (trained.reference["teacher"]).glob("*.nii.gz"))
    head_args = ("-m", str(trained.model), "-f", "0", "-device", "cpu", "--save_probabilities")
    parts = [tmp_path / f"teacher_part{k}" for k in (0, 1)]
    for k, out in enumerate(parts):
        ds.run("confkd_predict_head", "-i", str(trained.images), "-o", str(out), "--head", "teacher", *head_args,
               "-num_parts", "2", "-part_id", str(k))
    predicted = [{p.name for p in out.glob("*.nii.gz")} for out in parts]
    assert predicted[0] and predicted[1] and not predicted[0] & predicted[1]
    assert sorted(predicted[0] | predicted[1]) == cases
    for out, names in zip(parts, predicted, strict=True):
        assert {p.name for p in out.glob("*.npz")} == {n.replace(".nii.gz", ".npz") for n in names}
    teacher = tmp_path / "teacher"
    for out in parts:
        shutil.copytree(out, teacher, dirs_exist_ok=True)
    _assert_same_labels(teacher, trained.reference["teacher"])
    student = tmp_path / "student"
    ds.run("confkd_predict_head", "-i", str(trained.images), "-o", str(student), "--head", "student", *head_args,
           "-np", "2")
    _assert_same_labels(student, trained.reference["student"])
    ensemble = tmp_path / "ensemble"
    ds.run("nnUNetv2_ensemble", "-i", str(teacher), str(student), "-o", str(ensemble), "-np", "1")
    ensembled = _labels(ensemble)
    assert sorted(ensembled) == cases
    for name, labels in ensembled.items():  # the argmax of the two heads' mean probabilities
        npz = name.replace(".nii.gz", ".npz")
        mean = (np.load(teacher / npz)["probabilities"] + np.load(student / npz)["probabilities"]) / 2
        assert np.array_equal(labels, np.argmax(mean, 0))
