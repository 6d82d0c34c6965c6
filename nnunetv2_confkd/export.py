"""Write one head of a trained ConfKD model as a stock nnU-Net model folder.

A ConfKD checkpoint holds a shared encoder and two decoders (``encoder.*``, ``teacher_decoder.*``,
``student_decoder.*``). :func:`export_head` keeps the encoder and one decoder, renames them to the keys of the
network that ``nnUNetTrainer.build_network_architecture`` builds from the same plans (``encoder.*``, ``decoder.*``),
loads them strictly into such a network, and writes a checkpoint whose ``trainer_name`` is ``nnUNetTrainer``, beside
copies of ``plans.json``, ``dataset.json`` and ``dataset_fingerprint.json``, laid out as nnU-Net's results folder.
Stock ``nnUNetv2_predict -tr nnUNetTrainer`` then predicts with it, with no ``nnUNet_extTrainer`` and without this
package installed.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import nnunetv2_confkd
from nnunetv2_confkd.checks import ConfKDInputError, read_checkpoint
from nnunetv2_confkd.training.heads import model_inference_head
from nnunetv2_confkd.training.network import HEADS

STOCK_TRAINER = "nnUNetTrainer"
#: Files copied from the model folder: what nnU-Net's predictor and ``nnUNetv2_export_model_to_zip`` read there.
MODEL_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")
#: Key of the checkpoint entry that records where an exported checkpoint came from.
PROVENANCE_KEY = "confkd_export"


def head_weights(network_weights: Mapping[str, torch.Tensor], head: str, source: str = "checkpoint"
                 ) -> dict[str, torch.Tensor]:
    """The weights of ``head`` (``"student"`` or ``"teacher"``) under the key names of a stock nnU-Net network.

    ``encoder.*`` stays, ``<head>_decoder.*`` becomes ``decoder.*`` (its ``encoder.*`` sub-keys included: nnU-Net's
    decoder registers the encoder, and in a ConfKD network that is the shared one, so those tensors must equal
    ``encoder.*``), and the other decoder is dropped.

    Raises:
        ConfKDInputError: an unknown head, weights without both decoders (not a ConfKD network), an unknown key, or a
            decoder whose encoder copy differs from the shared encoder.
    """
    if head not in HEADS:
        raise ConfKDInputError(f"head must be one of {HEADS}, got {head!r}")
    weights = {k[7:] if k.startswith("module.") else k: v for k, v in network_weights.items()}
    roots = {k.split(".", 1)[0] for k in weights}
    if not {"teacher_decoder", "student_decoder"} <= roots:
        raise ConfKDInputError(
            f"{source} holds no ConfKD network (top-level weights {sorted(roots)}, expected encoder, teacher_decoder "
            "and student_decoder). Export a model trained with a ConfKD trainer (-tr nnUNetTrainerConfKD...); a "
            "model trained with a single-decoder trainer already is a stock nnU-Net model.")
    unknown = sorted(roots - {"encoder", "teacher_decoder", "student_decoder"})
    if unknown:
        raise ConfKDInputError(f"{source} holds weights of unknown modules {unknown}; it was not written by a ConfKD "
                               "trainer of this package")
    prefix, tied = f"{head}_decoder.", f"{head}_decoder.encoder."
    mapped = {}
    for key, value in weights.items():
        if key.startswith("encoder."):
            mapped[key] = value
        elif key.startswith(prefix):
            if key.startswith(tied):
                shared = weights.get("encoder." + key[len(tied):])
                if shared is None or shared.shape != value.shape or not torch.equal(shared, value):
                    raise ConfKDInputError(f"{source}: {key} differs from the shared encoder's weight; the file is "
                                           "not a consistent ConfKD checkpoint")
            mapped["decoder." + key[len(prefix):]] = value
    return mapped


def stock_network(plans: dict, dataset_json: dict, configuration: str) -> nn.Module:
    """The network ``nnUNetPredictor`` builds for a stock ``nnUNetTrainer`` model of these plans (no deep
    supervision)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    num_inputs = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    num_outputs = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    return nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_inputs, num_outputs,
                                                    enable_deep_supervision=False)


def load_head_strictly(network: nn.Module, weights: Mapping[str, torch.Tensor], source: str) -> None:
    """``network.load_state_dict(weights, strict=True)``; a mismatch raises ConfKDInputError naming ``source``."""
    expected = set(network.state_dict())
    missing, unexpected = sorted(expected - weights.keys()), sorted(weights.keys() - expected)
    if missing or unexpected:
        raise ConfKDInputError(f"{source} does not fit the stock network of its plans: {len(missing)} missing and "
                               f"{len(unexpected)} unexpected weights (e.g. missing {missing[:2]}, unexpected "
                               f"{unexpected[:2]}); was it trained with other plans or configuration?")
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise ConfKDInputError(f"{source} does not fit the stock network of its plans: {error}") from None


def stock_checkpoint(checkpoint: Mapping, network: nn.Module, head: str, fold: int | str, source: str,
                     source_head: str | None) -> dict:
    """The checkpoint ``nnUNetTrainer.save_checkpoint`` would have written for ``network`` (already loaded);
    ``source_head`` is the inference head of the source model (:func:`~.training.heads.model_inference_head`).

    The optimizer keeps its hyper-parameters but no per-parameter state (so ``nnUNetv2_train ... --val`` and
    fine-tuning load it); loss-term logs of the ConfKD trainer are left out; ``_best_ema`` (the validation EMA of the
    model's inference head) is kept only when that head is the exported one.
    """
    from nnunetv2.training.logging.nnunet_logger import LocalLogger
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    init_keys = [k for k in inspect.signature(nnUNetTrainer.__init__).parameters if k != "self"]
    init_args = {k: v for k, v in dict(checkpoint.get("init_args") or {}).items() if k in init_keys}
    init_args["fold"] = fold
    optimizer = None
    source_optimizer = checkpoint.get("optimizer_state")
    if isinstance(source_optimizer, Mapping) and len(source_optimizer.get("param_groups", ())) == 1:
        group = {k: v for k, v in source_optimizer["param_groups"][0].items() if k != "params"}
        optimizer = {"state": {}, "param_groups": [{**group, "params": list(range(len(list(network.parameters()))))}]}
    stock_logs = LocalLogger().my_fantastic_logging.keys()
    logging = {k: v for k, v in dict(checkpoint.get("logging") or {}).items() if k in stock_logs}
    trainer_name = checkpoint.get("trainer_name")
    same_head = source_head == head
    return {
        "network_weights": network.state_dict(),
        "optimizer_state": optimizer,
        "grad_scaler_state": None,
        "logging": logging,
        "_best_ema": checkpoint.get("_best_ema") if same_head else None,
        "current_epoch": checkpoint.get("current_epoch"),
        "init_args": init_args,
        "trainer_name": STOCK_TRAINER,
        "inference_allowed_mirroring_axes": checkpoint.get("inference_allowed_mirroring_axes"),
        PROVENANCE_KEY: {"head": head, "source_trainer": trainer_name, "source_checkpoint": source,
                         "nnunetv2_confkd_version": nnunetv2_confkd.__version__},
    }


@dataclass(frozen=True)
class ExportPlan:
    """What :func:`export_head` reads and writes, all checked before anything is written."""

    source: Path  # the ConfKD model folder
    target: Path  # the stock model folder that is written
    head: str  # the exported head
    source_head: str | None  # the source model's inference head (the one its validation scored)
    checkpoints: tuple[tuple[int | str, str], ...]  # (fold, checkpoint name)
    copies: tuple[tuple[Path, Path], ...]  # (source file, target file)


def _fold_folder(fold: int | str) -> str:
    return f"fold_{fold}"


def plan_export(dataset: str | int, configuration: str, folds: Sequence[int | str], trainer: str, plans_identifier: str,
                checkpoint_names: Sequence[str], output_root: Path, head: str | None, overwrite: bool) -> ExportPlan:
    """Resolve and check every input and output of an export (``head`` None: the model's inference head); raises
    ConfKDInputError naming the file and the fix."""
    from nnunetv2.paths import nnUNet_results
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

    if head is not None and head not in HEADS:
        raise ConfKDInputError(f"--head must be one of {HEADS}, got {head!r}")
    if not nnUNet_results.is_set():
        raise ConfKDInputError("nnUNet_results is not set; export it as the results folder that holds the ConfKD "
                               "model (the one nnUNetv2_train wrote to)")
    try:
        dataset_name = maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as error:
        raise ConfKDInputError(f"-d {dataset}: {error}") from None
    source = Path(nnUNet_results.get()) / dataset_name / convert_trainer_plans_config_to_identifier(
        trainer, plans_identifier, configuration)
    if not source.is_dir():
        raise ConfKDInputError(f"no trained model at {source}; check -d, -tr, -p and -c (nnUNetv2_train writes "
                               f"$nnUNet_results/DatasetXXX_Name/TRAINER__PLANS__CONFIG)")
    for name in MODEL_FILES:
        if not (source / name).is_file():
            raise ConfKDInputError(f"{source / name} is missing; nnU-Net writes it when training starts. Copy it from "
                                   f"nnUNet_preprocessed/{dataset_name} or retrain.")
    source_head = model_inference_head(source)
    head = head or source_head or "student"
    target = Path(output_root) / dataset_name / convert_trainer_plans_config_to_identifier(
        STOCK_TRAINER, plans_identifier, configuration)
    if target.resolve() == source.resolve():
        raise ConfKDInputError(f"the export target {target} is the model folder itself; choose another -o")
    folds = [f if f == "all" else int(f) for f in folds]
    checkpoints, copies = [], [(source / n, target / n) for n in MODEL_FILES]
    for fold in folds:
        folder = source / _fold_folder(fold)
        if not folder.is_dir():
            raise ConfKDInputError(f"fold {fold} of {source} was not trained ({folder} does not exist); train it "
                                   f"(nnUNetv2_train {dataset} {configuration} {fold} -tr {trainer}) or pick another "
                                   "-f")
        for name in checkpoint_names:
            if not (folder / name).is_file():
                present = sorted(p.name for p in folder.glob("checkpoint*.pth"))
                raise ConfKDInputError(f"{folder / name} does not exist (present: {present or 'no checkpoint'}); "
                                       "pass one of them with -chk, or finish training the fold")
            checkpoints.append((fold, name))
        copies.append((folder / "progress.png", target / _fold_folder(fold) / "progress.png"))
        if source_head == head:  # nnU-Net's validation of the model scored this head
            summary = folder / "validation" / "summary.json"
            copies.append((summary, target / _fold_folder(fold) / "validation" / "summary.json"))
    copies = [(s, t) for s, t in copies if s.is_file()]
    conflicts = [str(target / _fold_folder(f) / n) for f, n in checkpoints if (target / _fold_folder(f) / n).exists()]
    conflicts += [str(t) for s, t in copies if t.exists() and t.read_bytes() != s.read_bytes()]
    copies = [(s, t) for s, t in copies if not (t.exists() and t.read_bytes() == s.read_bytes())]  # already there
    if conflicts and not overwrite:
        raise ConfKDInputError(f"the export would overwrite {conflicts[:3]}{' ...' if len(conflicts) > 3 else ''}; "
                               "pass --overwrite to replace them, or choose another -o")
    return ExportPlan(source, target, head, source_head, tuple(checkpoints), tuple(copies))


def _atomic_write(target: Path, write) -> None:
    """``write(tmp_path)`` to a temporary name beside ``target``, then rename it to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _check_no_package_globals(path: str, source: str) -> None:
    """Refuse a written checkpoint that would import this package when unpickled."""
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if finder is None:
        return
    ours = [g for g in finder(path) if g.startswith(nnunetv2_confkd.__name__)]
    if ours:
        raise ConfKDInputError(f"{source}: the exported checkpoint would need {ours} to load; it cannot be exported")


def export_head(dataset: str | int, configuration: str, folds: Sequence[int | str], trainer: str,
                output_root: Path, head: str | None = None, plans_identifier: str = "nnUNetPlans",
                checkpoint_names: Sequence[str] = ("checkpoint_final.pth",), overwrite: bool = False) -> Path:
    """Export ``head`` of a ConfKD model of ``$nnUNet_results`` to ``output_root`` as a stock nnU-Net model (``head``
    None: the model's inference head, :func:`~.training.heads.model_inference_head`).

    Every checkpoint is read, mapped and loaded strictly into the stock network before anything is written; each
    file is written under a temporary name and renamed. ``validation/summary.json`` is copied only where it scores the
    exported head (the model's inference head). Returns the written model folder
    (``output_root/DatasetXXX_Name/nnUNetTrainer__PLANS__CONFIG``).
    """
    import json

    plan = plan_export(dataset, configuration, folds, trainer, plans_identifier, checkpoint_names, output_root, head,
                       overwrite)
    plans = json.loads((plan.source / "plans.json").read_text())
    dataset_json = json.loads((plan.source / "dataset.json").read_text())
    network = stock_network(plans, dataset_json, configuration)

    def converted(fold, name):
        path = plan.source / _fold_folder(fold) / name
        checkpoint = read_checkpoint(str(path))
        found = (checkpoint.get("init_args") or {}).get("configuration")
        if found != configuration:
            raise ConfKDInputError(f"{path} was trained for configuration {found!r}, not {configuration!r}")
        load_head_strictly(network, head_weights(checkpoint["network_weights"], plan.head, str(path)), str(path))
        relative = f"{plan.source.parent.name}/{plan.source.name}/{_fold_folder(fold)}/{name}"
        return stock_checkpoint(checkpoint, network, plan.head, fold, relative, plan.source_head)

    for fold, name in plan.checkpoints:  # check all before writing any
        converted(fold, name)
    for fold, name in plan.checkpoints:
        payload = converted(fold, name)
        target = plan.target / _fold_folder(fold) / name

        def write(tmp, payload=payload, target=target):
            torch.save(payload, tmp)
            _check_no_package_globals(tmp, str(target))

        _atomic_write(target, write)
    for source, target in plan.copies:
        _atomic_write(target, lambda tmp, source=source: shutil.copyfile(source, tmp))
    return plan.target
