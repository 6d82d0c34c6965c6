"""``nnUNetTrainerConfKD`` and ``nnUNetTrainerStrongOnly``: thin glue between nnU-Net and the ConfKD objective.

Differences from ``nnUNetTrainer`` (nnunetv2 2.8.1), and no others:

1. ``build_network_architecture`` (a classmethod, so the predictor's class-level call sees each variant's
   ``inference_head``, or the head the model's plans name, :func:`~.network.configured_head`) returns
   :class:`~.network.DualDecoderUNet`: nnU-Net's own builder is called twice,
   the encoder and decoder of the first network are the encoder and teacher decoder, the decoder of the second network
   is the student decoder; both point at the shared encoder.
2. ``set_deep_supervision_enabled`` toggles both decoders.
3. ``initialize`` additionally checks dataset, manifest and split (:mod:`nnunetv2_confkd.checks`), calls the
   ``_choose_settings`` hook (a no-op here; ``nnUNetTrainerConfKDAuto`` sets switches from its data) and builds
   :class:`~.objective.ConfKDLoss` around the stock ``self.loss``; ``self.loss`` stays the stock loss, so
   online validation of the inference head is computed exactly as for ``nnUNetTrainer``.
4. ``get_dataloaders`` composes batches with a fixed number of strong cases per rank (by default the authors'
   composition: the plan's whole batch of strong cases plus as many other cases), and augmentation padding of the
   segmentation stays *ignore* (mixed_loading.py).
5. ``train_step`` computes the ConfKD objective; padding of fully labeled cases is mapped back to background there, so
   the teacher sees exactly the stock targets. A non-finite loss stops training before the weights change.
6. ``on_train_epoch_end`` logs every loss term (log file, ``progress_terms.png``, logger keys ``term_*`` kept in the
   checkpoint).
7. ``do_split`` keeps only the full cases in the validation part of nnU-Net's fold ``all``; ``save_checkpoint`` writes
   through a temporary name and ``load_checkpoint`` refuses truncated or foreign checkpoints (mixed_loading.py).

The switches are class attributes; variants (variants.py) change one or two of them.
"""

from __future__ import annotations

import numpy as np
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast
from torch import distributed as dist

from nnunetv2_confkd.training.mixed_loading import MixedSupervisionMixin, quiet_no_annotation_warning, unwrap
from nnunetv2_confkd.training.network import DualDecoderUNet, configured_head, teacher_logits
from nnunetv2_confkd.training.objective import TERMS, ConfKDConfig, ConfKDLoss, DeepSupervisedPartialCE
from nnunetv2_confkd.training.progress import log_terms, plot_terms, register_term_keys
from nnunetv2_confkd.training.views import BoxMix, intensity_view


class NonFiniteLossError(FloatingPointError):
    """The objective became NaN or infinite; raised before the optimizer step, so the weights stay intact."""


class nnUNetTrainerConfKD(MixedSupervisionMixin, nnUNetTrainer):
    """ConfKD (Liu et al., MedIA 2023): teacher on full cases, student on all, KL teacher -> student, student entropy.

    Every switch is a class attribute; a variant (variants.py) changes one or two of them. ``kd_alpha`` acts only with
    ``legacy = True`` (in the clean objective its role is ``kd_weight``'s). Which values the ACDC study's
    cross-validation chose, and against what, is in ``docs/acdc_study/README.md``.
    """

    report_label = "ConfKD (KL+Ent)"
    weak_weight: float = 1.0
    kd_weight: float = 1.0
    entropy_weight: float = 0.1
    temperature: float = 1.0
    kd_alpha: float = 0.5
    detach_teacher: bool = True
    kd_direction: str = "teacher_student"
    entropy_on: str = "all"
    kd_on: str = "strong"
    student_strong_labels: str = "derived_weak"
    weak_loss: str = "ce"
    confidence_term: str = "entropy"
    pseudo_threshold: float = 0.0
    seed_iterations: int = 10
    legacy: bool = False
    student_view: str = "same"
    entropy_rampup_fraction: float = 0.0
    inference_head: str = "student"
    batch_composition: str = "add"
    weak_ratio: float = 1.0
    strong_fraction: float = 0.5
    pad_seg_as_ignore: bool = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        register_term_keys(self.logger.local_logger, TERMS)
        quiet_no_annotation_warning()

    @classmethod
    def confkd_config(cls, ignore_label: int, source: object = None) -> ConfKDConfig:
        """The switches of this class (or of ``source``, e.g. a trainer whose switches were set from its data) as a
        :class:`ConfKDConfig` (validated)."""
        names = [f for f in ConfKDConfig.__dataclass_fields__ if f != "ignore_label"]
        return ConfKDConfig(ignore_label=ignore_label, **{n: getattr(source or cls, n) for n in names})

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> DualDecoderUNet:
        args = (plans_manager, configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision)
        first = nnUNetTrainer.build_network_architecture(*args)
        second = nnUNetTrainer.build_network_architecture(*args)
        head = configured_head(configuration_manager.configuration, cls.inference_head)
        return DualDecoderUNet(first.encoder, first.decoder, second.decoder, head)

    def set_deep_supervision_enabled(self, enabled: bool):
        unwrap(self.network).deep_supervision = enabled

    def initialize(self):
        if not 0.0 <= self.entropy_rampup_fraction <= 1.0:
            raise ValueError(f"{type(self).__name__}.entropy_rampup_fraction must lie in [0, 1] (a share of "
                             f"num_epochs), got {self.entropy_rampup_fraction}")
        super().initialize()
        self._read_and_check_supervision()
        self._choose_settings()
        ignore = self.label_manager.ignore_label
        config = self.confkd_config(ignore if ignore is not None else -1, self)
        self.confkd_loss = ConfKDLoss(self._deep_supervised(self.loss), self._build_weak_loss(config), config)
        self.print_to_log_file(f"ConfKD switches ({self.__class__.__name__}): {config}")

    def _choose_settings(self) -> None:
        """Hook between the supervision checks and the objective: a trainer that sets switches from its dataset
        (instance attributes) does it here. The class's own switches stay as they are."""

    def _ds_weights(self) -> tuple[float, ...]:
        return tuple(self.loss.weight_factors) if isinstance(self.loss, DeepSupervisionWrapper) else (1.0,)

    def _deep_supervised(self, loss):
        if isinstance(loss, DeepSupervisionWrapper):
            return loss
        return lambda outputs, targets: loss(outputs[0], targets[0])

    def _build_weak_loss(self, config: ConfKDConfig):
        if config.weak_loss == "ce":
            return DeepSupervisedPartialCE(config.ignore_label, self._ds_weights())
        # local (ddp=False) Dice: per-rank student batches may differ in size, and the all-gather needs equal shapes
        dice_ce = DC_and_CE_loss({"batch_dice": self.configuration_manager.batch_dice, "smooth": 1e-5, "do_bg": False,
                                  "ddp": False}, {}, weight_ce=1, weight_dice=1, ignore_label=config.ignore_label,
                                 dice_class=MemoryEfficientSoftDiceLoss)
        return DeepSupervisionWrapper(dice_ce, self._ds_weights())

    def _entropy_scale(self) -> float:
        """Factor on the entropy weight: rises linearly from 0 to 1 over the first ``entropy_rampup_fraction`` of
        ``num_epochs`` (a share, so a ramp keeps its meaning under any schedule), 1 without a ramp."""
        ramp_epochs = self.entropy_rampup_fraction * self.num_epochs
        if ramp_epochs <= 0:
            return 1.0
        return min(1.0, self.current_epoch / ramp_epochs)

    def _prepare_batch(self, batch: dict):
        """The batch on the device with its fully labeled rows first (every term is a mean or sum over rows, and
        nnU-Net normalises per sample, so row order changes no value; the teacher's rows and the terms' row sets
        become views instead of copies), the padding of full cases made background, and the row masks (on the host,
        so that selecting rows needs no device sync).

        Returns ``(data, targets, is_full, teacher_mask, teacher_cases)``; ``teacher_cases`` is the number of leading
        rows the teacher runs on (the full rows), or None for all rows."""
        full = self._is_full(batch["keys"])
        order = torch.from_numpy(np.argsort(~full, kind="stable"))
        is_full = torch.from_numpy(full[order.numpy()])
        target = batch["target"] if isinstance(batch["target"], list) else [batch["target"]]
        data, target = batch["data"][order], [t[order] for t in target]
        ignore = self.label_manager.ignore_label
        if self.pad_seg_as_ignore and ignore is not None:
            # full cases hold no ignore voxel (checked at start), so every ignore voxel there is augmentation padding:
            # make it background, exactly as stock nnU-Net does
            target = [torch.where(is_full.view(-1, *[1] * (t.ndim - 1)) & (t == ignore), torch.zeros_like(t), t)
                      for t in target]
        data = data.to(self.device, non_blocking=True)
        target = [t.to(self.device, non_blocking=True) for t in target]
        teacher_on_all = self.confkd_loss.config.teacher_on_all
        teacher_mask = torch.ones_like(is_full) if teacher_on_all else is_full
        teacher_cases = None if teacher_on_all else int(full.sum())
        return data, target, is_full, teacher_mask, teacher_cases

    def _two_views(self, data: torch.Tensor, target: list[torch.Tensor], n_full: int):
        """``student_view`` other than ``"same"``: the batch with its other (trailing) rows replaced by an intensity
        view (views.py) and, with ``"cutmix"``, boxes pasted between those rows, in the images and in every label
        scale alike; and the teacher's logits on the clean other rows, computed without gradient and mixed by the
        same boxes. Returns ``(data, target, reference)``."""
        with torch.no_grad():
            reference = teacher_logits(unwrap(self.network), data[n_full:])
        other = intensity_view(data[n_full:])
        if self.confkd_loss.config.student_view == "cutmix":
            mix = BoxMix(len(other), other.ndim - 2)
            other, reference = mix(other), mix(reference)
            target = [torch.cat([t[:n_full], mix(t[n_full:])]) for t in target]
        return torch.cat([data[:n_full], other]), target, reference

    def train_step(self, batch: dict) -> dict:
        data, target, is_full, teacher_mask, teacher_cases = self._prepare_batch(batch)
        self.optimizer.zero_grad(set_to_none=True)
        # AMP on CUDA only, as nnunetv2 2.8.1 nnUNetTrainer.train_step
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            teacher_view = None
            if self.confkd_loss.config.student_view != "same":
                # the teacher runs on the full rows only here (ConfKDConfig refuses kd_on="all" with these views), so
                # teacher_cases is their number, already counted on the host
                data, target, teacher_view = self._two_views(data, target, teacher_cases)
            output = self.network(data, teacher_cases=teacher_cases)
            teacher, student = (o if isinstance(o, list) else [o] for o in output)
            total, terms = self.confkd_loss(teacher, student, target, is_full, teacher_mask, self._entropy_scale(),
                                            teacher_view)
        if not torch.isfinite(total):
            bad = [k for k, v in terms.items() if not torch.isfinite(v)] or ["total"]
            raise NonFiniteLossError(f"non-finite ConfKD loss term(s) {bad} at epoch {self.current_epoch}, batch keys "
                                     f"{[str(k) for k in batch['keys']]}; weights were not updated")
        # backward, clipping and step: nnunetv2 2.8.1 nnUNetTrainer.train_step, unchanged
        if self.grad_scaler is not None:
            self.grad_scaler.scale(total).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            total.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
        out = {"loss": total.detach().cpu().numpy()}
        out.update({f"term_{k}": v.float().cpu().numpy() for k, v in terms.items()})
        return out

    def on_train_epoch_end(self, train_outputs: list[dict]):
        super().on_train_epoch_end(train_outputs)
        outputs = collate_outputs(train_outputs)
        means = {}
        for name in TERMS:
            values = np.asarray(outputs[f"term_{name}"], dtype=np.float64)
            if self.is_ddp:
                gathered = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, values)
                values = np.concatenate([np.ravel(g) for g in gathered])
            means[name] = float(np.mean(values))
        log_terms(self.logger, means, self.current_epoch)
        self.print_to_log_file("loss terms: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))

    def on_epoch_end(self):
        super().on_epoch_end()
        if self.local_rank == 0:
            plot_terms(self.logger.local_logger, self.output_folder, TERMS, self.confkd_loss.config)


class nnUNetTrainerStrongOnly(MixedSupervisionMixin, nnUNetTrainer):
    """Strong-only lower bound: the stock nnU-Net objective, every batch drawn from the fully labeled cases only
    (``strong_fraction = 1``), with the same plans, splits and validation as ConfKD."""

    report_label = "strong-only"
    strong_fraction: float = 1.0

    def initialize(self):
        super().initialize()
        self._read_and_check_supervision()
