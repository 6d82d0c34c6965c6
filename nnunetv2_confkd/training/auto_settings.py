"""``nnUNetTrainerConfKDAuto``: ConfKD whose switches follow the kind of weak labels its dataset has.

The kind is read from the dataset, never guessed from the task:

- ``"unlabeled_only"``: no case is ``"weak"`` in the manifest (the other cases carry no label at all);
- ``"foreground_only"``: the weak cases annotate no background voxel (the paper's eroded seeds, clicks inside
  structures): nothing tells the student where a structure ends except the teacher;
- ``"background_annotated"``: the weak cases annotate background too (scribbles drawn in every class).

``dataset.json["weak_label"]["background_annotated"]``, which the converters write, decides between the last two;
without it, the preprocessed weak labels are counted at start-up. :attr:`settings_by_labels` maps each kind to the
switches it changes (class attributes of ``nnUNetTrainerConfKD``); the trainer applies them as instance attributes
before the objective is built and logs the kind, where it came from, and every switch it set. The table holds only
settings chosen by cross-validation inside training patients (the study's pre-registered rules, computed by
``confkd_decide``, which prints the chosen variant's :func:`switches_of`); a kind without such a choice keeps the
defaults.

An entry may also set ``inference_head``: nnU-Net's predictor rebuilds the network from the class and the model's
plans, so the trainer writes the head into its configuration of the plans it saves with the model
(:data:`~.network.PLANS_HEAD_KEY`), where ``build_network_architecture`` finds it; ``nnUNetv2_predict``, nnU-Net's
validation and ``confkd_export`` then use that head (:func:`~.heads.model_inference_head` reads it back).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from nnunetv2_confkd.supervision import MANIFEST_KEY, WEAK_LABEL_KEY
from nnunetv2_confkd.training.mixed_loading import unwrap
from nnunetv2_confkd.training.network import HEADS, PLANS_HEAD_KEY
from nnunetv2_confkd.training.trainer import nnUNetTrainerConfKD

KINDS = ("background_annotated", "foreground_only", "unlabeled_only")


def weak_label_kind(dataset_json: Mapping, counted_background_voxels: int | None) -> tuple[str, str]:
    """The kind of weak labels of a dataset and what decided it.

    Args:
        dataset_json: the dataset's ``dataset.json`` with its ``"supervision"`` manifest.
        counted_background_voxels: annotated background voxels counted in the weak cases' labels (None: not counted).

    Example:
        >>> manifest = {"supervision": {"a": "full", "b": "weak"}}
        >>> weak_label_kind({**manifest, "weak_label": {"background_annotated": False}}, 12)
        ('foreground_only', 'dataset.json weak_label.background_annotated')
        >>> weak_label_kind(manifest, 12)
        ('background_annotated', 'the weak labels: 12 annotated background voxels')
    """
    if not any(level == "weak" for level in (dataset_json.get(MANIFEST_KEY) or {}).values()):
        return "unlabeled_only", 'the manifest: no case is "weak"'
    recorded = (dataset_json.get(WEAK_LABEL_KEY) or {}).get("background_annotated")
    if isinstance(recorded, bool):
        return ("background_annotated" if recorded else "foreground_only",
                "dataset.json weak_label.background_annotated")
    if counted_background_voxels is None:
        raise ValueError("the weak labels' background was not counted and dataset.json does not record it")
    kind = "background_annotated" if counted_background_voxels > 0 else "foreground_only"
    return kind, f"the weak labels: {counted_background_voxels} annotated background voxels"


def switch_names() -> tuple[str, ...]:
    """The class attributes of ``nnUNetTrainerConfKD`` that are switches (plain values, not methods; the report label
    is no switch): what an entry of :attr:`nnUNetTrainerConfKDAuto.settings_by_labels` may set."""
    return tuple(n for n, v in vars(nnUNetTrainerConfKD).items()
                 if not n.startswith("_") and not callable(v)
                 and not isinstance(v, (classmethod, staticmethod, property)) and n != "report_label")


def switches_of(trainer: type) -> dict[str, object]:
    """The switches in which ``trainer`` (a variant of ``nnUNetTrainerConfKD``) differs from it, the inference head
    included, as an entry of :attr:`nnUNetTrainerConfKDAuto.settings_by_labels` would set them (the report label is
    no switch). Raises for a class that is no variant of ``nnUNetTrainerConfKD`` (it has no switches to copy).

    Example:
        >>> from nnunetv2_confkd.training.variants import nnUNetTrainerConfKD_kdAll
        >>> switches_of(nnUNetTrainerConfKD_kdAll)
        {'kd_on': 'all'}
    """
    if not (isinstance(trainer, type) and issubclass(trainer, nnUNetTrainerConfKD)):
        raise ValueError(f"{trainer!r} is no variant of nnUNetTrainerConfKD: its settings are not switches")
    return {n: getattr(trainer, n) for n in switch_names() if getattr(trainer, n) != getattr(nnUNetTrainerConfKD, n)}


class nnUNetTrainerConfKDAuto(nnUNetTrainerConfKD):
    """ConfKD with the switches of :attr:`settings_by_labels` for its dataset's kind of weak labels."""

    report_label = "ConfKD, settings by weak-label kind"
    #: switches per kind of weak labels; filled only from pre-registered cross-validation inside training patients.
    #: ``foreground_only``: ``nnUNetTrainerConfKD_weak01``'s switches, chosen on ACDC's foreground-only LV seeds
    #: (7 full patients, folds 0 and 1), student head kept. ``background_annotated``: the defaults, which neither
    #: ``_pseudoMaskTeacher`` nor the teacher head replaced on ACDC's expert scribbles (7 full patients, folds 1 and
    #: 2). ``unlabeled_only`` keeps the defaults until its cross-validation decides.
    settings_by_labels: ClassVar[dict[str, dict[str, object]]] = {
        "background_annotated": {},
        "foreground_only": {"weak_weight": 0.1},
        "unlabeled_only": {},
    }

    def _choose_settings(self) -> None:
        kind, reason = weak_label_kind(self.dataset_json, getattr(self, "weak_background_voxels", None))
        settings = self.settings_by_labels.get(kind, {})
        unknown = sorted(set(settings) - set(switch_names()))
        if unknown:
            raise ValueError(f"{type(self).__name__}.settings_by_labels[{kind!r}] sets {unknown}, which are not "
                             "switches it may set")
        for name, value in settings.items():
            setattr(self, name, value)
        if "inference_head" in settings:
            self._set_inference_head(settings["inference_head"])
        self.chosen_settings = {"kind": kind, "decided_by": reason, "switches": dict(settings)}
        changed = ", ".join(f"{k} = {v!r}" for k, v in settings.items()) or "none (the defaults)"
        self.print_to_log_file(f"weak labels: {kind} (decided by {reason}); switches set for it: {changed}")

    def _set_inference_head(self, head: str) -> None:
        """Run ``head`` at inference: on this network now, and, through the plans saved with the model, on every
        network nnU-Net's predictor builds from it."""
        if head not in HEADS:
            raise ValueError(f"{type(self).__name__}: inference_head must be one of {HEADS}, got {head!r}")
        unwrap(self.network).inference_head = head
        self.plans_manager.plans["configurations"][self.configuration_name][PLANS_HEAD_KEY] = head
        self.configuration_manager.configuration[PLANS_HEAD_KEY] = head
