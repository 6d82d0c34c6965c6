"""The part of the trainers that is about mixed supervision rather than the ConfKD objective.

:class:`MixedSupervisionMixin` (used by ``nnUNetTrainerConfKD`` and ``nnUNetTrainerStrongOnly``):

* reads the ``"supervision"`` manifest and checks dataset, manifest and split before the data workers start;
* composes every training batch with a fixed number of fully labeled cases per rank (``batch_composition``:
  ``"add"`` puts the plan's whole batch of strong cases plus ``weak_ratio`` times as many other cases in each batch,
  ``"replace"`` makes ``strong_fraction`` of the plan's batch strong and the rest other), the one
  place where the project changes nnU-Net's data loading (``get_dataloaders``, which mirrors nnunetv2 2.8.1 and
  swaps ``nnUNetDataLoader`` for :class:`ComposedDataLoader`);
* writes checkpoints atomically (temporary name, then ``os.replace``), so a kill during saving leaves the previous
  checkpoint loadable;
* optionally keeps augmentation padding as *ignore* instead of background (``pad_seg_as_ignore``,
  nnU-Net 2.8.1): nnU-Net pads with -1 and then turns -1 into 0, which gives weak and unlabeled cases
  spurious background labels at patch borders and rotated corners.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTransform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from torch import distributed as dist

from nnunetv2_confkd.checks import (
    ConfKDInputError,
    check_checkpoint_keys,
    check_dataset_json,
    check_full_cases_dense,
    check_ignore_label,
    check_label_values,
    check_manifest,
    check_split,
    read_checkpoint,
)
from nnunetv2_confkd.supervision import MANIFEST_KEY, batch_counts, compose_batch, full_mask
from nnunetv2_confkd.training.annotations import check_annotations


class ComposedDataLoader(nnUNetDataLoader):
    """``nnUNetDataLoader`` whose batches hold exactly ``n_strong`` fully labeled cases (drawn with replacement)."""

    def __init__(self, *args, strong_keys, other_keys, n_strong: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.strong_keys = list(strong_keys)
        self.other_keys = list(other_keys)
        self.n_strong = n_strong

    def get_indices(self):
        return compose_batch(self.strong_keys, self.other_keys, self.batch_size, self.n_strong, np.random)


def with_ignore_padding(transforms, ignore_label):
    """Point nnU-Net's ``RemoveLabelTransform(-1, 0)`` at the ignore label, so padding stays unannotated."""
    if ignore_label is None:
        return transforms
    for t in transforms.transforms:
        if isinstance(t, RemoveLabelTransform) and t.label_value == -1:
            t.set_to = ignore_label
    return transforms


class MixedSupervisionMixin:
    """Manifest checks and composed batches; see the module docstring. Mix in before ``nnUNetTrainer``."""

    batch_composition: str = "replace"
    strong_fraction: float = 0.5
    weak_ratio: float = 1.0
    pad_seg_as_ignore: bool = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # nnU-Net reads "labels" and friends in its own __init__: check them first, so that a broken dataset.json
        # gives a clear error instead of a traceback from inside nnU-Net
        check_dataset_json(dataset_json, "dataset.json (nnUNet_preprocessed copy)")
        super().__init__(plans, configuration, fold, dataset_json, device)

    def do_split(self):
        """nnU-Net's split; on nnU-Net's fold ``all`` (train on every case, validate on the training cases) the
        validation part keeps only the full cases, as every validation case must be dense. That validation is
        monitoring only: the model trains on those cases too."""
        tr_keys, val_keys = super().do_split()
        if self.fold == "all":
            manifest = self.dataset_json.get(MANIFEST_KEY) or {}
            val_keys = [k for k in val_keys if manifest.get(k) == "full"]
        return tr_keys, val_keys

    def _read_and_check_supervision(self) -> None:
        n_strong, n_other = self._batch_counts()  # refuses bad composition switches before any data is read
        tr_keys, val_keys = self.do_split()
        source = "dataset.json of " + str(self.plans_manager.dataset_name)
        self.supervision = check_manifest(self.dataset_json, set(tr_keys) | set(val_keys), source)
        check_ignore_label(self.supervision, self.label_manager.ignore_label, source)
        check_split(self.supervision, tr_keys, val_keys, f"the split of fold {self.fold}")
        dataset = self.dataset_class(self.preprocessed_dataset_folder, list(set(tr_keys) | set(val_keys)))

        def load_seg(case):
            seg = np.asarray(dataset.load_case(case)[1][:])
            check_label_values(case, seg, self.dataset_json["labels"])
            return seg

        check_full_cases_dense(self.supervision, load_seg, self.label_manager.ignore_label)
        self._check_weak_cases(dataset, tr_keys)
        self.print_to_log_file(
            "Supervision manifest: " + ", ".join(
                f"{level} {sum(self.supervision[k] == level for k in tr_keys)}" for level in ("full", "weak",
                                                                                              "unlabeled"))
            + f" training cases; {len(val_keys)} validation cases (all full); per-rank batches of {n_strong} full "
            f"and {n_other} other cases ({self.batch_composition})")

    def _check_weak_cases(self, dataset, cases) -> None:
        """Warn (log file and ``warnings``) about weak cases without any annotated voxel (trained as unlabeled ones)
        and about weak cases whose annotation thinned out in preprocessing."""
        weak = [k for k in cases if self.supervision[k] == "weak"]
        ignore = self.label_manager.ignore_label
        empty, seen = [], set()
        self.weak_background_voxels = 0  # annotated background voxels over all weak cases (0: foreground-only)

        def load(case):
            _, seg, _, properties = dataset.load_case(case)
            seg = np.asarray(seg[:])
            check_label_values(case, seg, self.dataset_json["labels"])
            seen.add(case)
            if not np.any((seg >= 0) & (seg != ignore)):
                empty.append(case)
            self.weak_background_voxels += int(np.sum(seg == 0))
            return seg, properties

        findings = check_annotations(self.dataset_json, load, weak)
        for case in set(weak) - seen:
            load(case)
        messages = []
        if empty:
            messages.append(f"{len(empty)} weak case(s) have no annotated voxel and are trained as unlabeled ones: "
                            + ", ".join(sorted(empty)[:10]) + (" ..." if len(empty) > 10 else ""))
        if findings:
            messages.append(f"{len(findings)} weak case/class pair(s) lost most of their annotation in preprocessing "
                            "(thin scribbles vanish when resampled; consider thicker strokes or a finer target "
                            "spacing): " + "; ".join(str(f) for f in findings[:10])
                            + (" ..." if len(findings) > 10 else ""))
        for message in messages:
            self.print_to_log_file("WARNING: " + message)
            warnings.warn(message, stacklevel=2)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """Refuse truncated, foreign or incomplete checkpoints with a clear error before nnU-Net's strict load."""
        if not isinstance(filename_or_checkpoint, str):  # nnunetv2 2.8.1 cannot load a dict (UnboundLocalError)
            raise ConfKDInputError("load_checkpoint needs a file name")
        if not self.was_initialized:
            self.initialize()
        checkpoint = read_checkpoint(filename_or_checkpoint)
        check_checkpoint_keys(checkpoint, unwrap(self.network).state_dict().keys(), filename_or_checkpoint,
                              self.__class__.__name__)
        super().load_checkpoint(filename_or_checkpoint)

    def save_checkpoint(self, filename: str) -> None:
        tmp = f"{filename}.tmp"
        super().save_checkpoint(tmp)
        if self.local_rank == 0 and os.path.isfile(tmp):  # rank 0 writes; nothing is written if disabled
            os.replace(tmp, filename)

    def _is_full(self, keys) -> np.ndarray:
        try:
            return full_mask(keys, self.supervision)
        except KeyError as e:
            raise ConfKDInputError(f"batch case {e} has no supervision level in dataset.json") from None

    @classmethod
    def composition_name(cls) -> str:
        """The batch composition in a few words, as study records store it: ``"add <weak_ratio>"`` or ``"replace
        <strong_fraction>"``."""
        if cls.batch_composition == "add":
            return f"add {cls.weak_ratio:g}"
        return cls.unnoted_composition_name()

    @classmethod
    def unnoted_composition_name(cls) -> str:
        """The composition of a record or model folder that names none: ``"replace <strong_fraction>"``, the one every
        trainer had before ``batch_composition`` existed."""
        return f"replace {cls.strong_fraction:g}"

    def _batch_counts(self) -> tuple[int, int]:
        """Strong and other cases per rank (:func:`~nnunetv2_confkd.supervision.batch_counts`)."""
        world = dist.get_world_size() if self.is_ddp else 1
        return batch_counts(self.configuration_manager.batch_size, world, self.batch_composition,
                            self.strong_fraction, self.weak_ratio)

    def _strong_per_rank(self) -> int:
        return self._batch_counts()[0]

    def get_training_transforms(self, *args, **kwargs):  # noqa: D102 - nnU-Net calls it as self.get_training_transforms
        transforms = super().get_training_transforms(*args, **kwargs)
        if self.pad_seg_as_ignore:
            transforms = with_ignore_padding(transforms, kwargs.get("ignore_label"))
        return transforms

    def get_dataloaders(self):
        """nnunetv2 2.8.1 ``nnUNetTrainer.get_dataloaders`` with :class:`ComposedDataLoader` for training."""
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        patch_size = self.configuration_manager.patch_size
        ds_scales = self._get_deep_supervision_scales()
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        labels = self.label_manager
        regions = labels.foreground_regions if labels.has_regions else None
        tr_transforms = self.get_training_transforms(
            patch_size, rotation, ds_scales, mirror_axes, dummy_2d,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=self.is_cascaded,
            foreground_labels=labels.foreground_labels, regions=regions, ignore_label=labels.ignore_label)
        val_transforms = self.get_validation_transforms(
            ds_scales, is_cascaded=self.is_cascaded, foreground_labels=labels.foreground_labels, regions=regions,
            ignore_label=labels.ignore_label)
        dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        tr_keys = [str(k) for k in dataset_tr.identifiers]
        strong_keys = [k for k in tr_keys if self.supervision[k] == "full"]
        other_keys = [k for k in tr_keys if self.supervision[k] != "full"]
        n_strong, n_other = self._batch_counts()
        # every rank draws the same batch (the smallest per-rank share of the plan's batch, grown by the other cases
        # in "add"): nnU-Net's DDP batch Dice all-gathers per-case sums, which needs equal shapes on every rank
        batch = n_strong + n_other if other_keys or self.batch_composition == "replace" else n_strong
        common = dict(oversample_foreground_percent=self.oversample_foreground_percent, sampling_probabilities=None,
                      pad_sides=None, probabilistic_oversampling=self.probabilistic_oversampling)
        dl_tr = ComposedDataLoader(dataset_tr, batch, initial_patch_size, patch_size, labels, transforms=tr_transforms,
                                   strong_keys=strong_keys, other_keys=other_keys, n_strong=n_strong, **common)
        dl_val = nnUNetDataLoader(dataset_val, self.batch_size, patch_size, patch_size, labels,
                                  transforms=val_transforms, **common)
        n_proc = get_allowed_n_proc_DA()
        if n_proc == 0:
            mt_train, mt_val = SingleThreadedAugmenter(dl_tr, None), SingleThreadedAugmenter(dl_val, None)
        else:
            pin = self.device.type == "cuda"
            mt_train = NonDetMultiThreadedAugmenter(dl_tr, None, n_proc, max(6, n_proc // 2), None, pin, 0.002)
            mt_val = NonDetMultiThreadedAugmenter(dl_val, None, max(1, n_proc // 2), max(3, n_proc // 4), None, pin,
                                                  0.002)
        _ = next(mt_train)
        _ = next(mt_val)
        return mt_train, mt_val


def quiet_no_annotation_warning() -> None:
    """All-ignore (unlabeled) cases make nnU-Net's loader warn on every draw; the warning is expected here."""
    warnings.filterwarnings("ignore", message="Warning! No annotated pixels in image!")


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The bare module under DDP and ``torch.compile`` wrappers."""
    from torch._dynamo import OptimizedModule
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(network, DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network
