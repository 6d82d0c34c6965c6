"""What a converter hands to the writer: its source cases (:class:`SourceCase`, read lazily into :class:`CaseData`),
the output dataset (:class:`DatasetSpec`) and an optional per-case check (:data:`Verify`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_confkd.checks import ConfKDInputError

EXPERT = "expert"  # the weak kind that takes the source's expert weak labels instead of simulating them
TEST = "test"  # the level passed to ``verify`` for a held-out case (dense label)


@dataclass(frozen=True)
class CaseData:
    """One case in memory: image channels, dense label and, for sources that have one, an expert weak label whose
    unannotated voxels already carry the ignore label."""

    images: list[sitk.Image]
    label: sitk.Image
    expert: sitk.Image | None = None
    expert_ignore: int | None = None  # the source's "not annotated" value in ``expert``


def read_case(images: Sequence[Path], label: Path) -> CaseData:
    """A case from its channel files and label file (read with SimpleITK; an unreadable file is named)."""
    read = []
    for path in (*images, label):
        try:
            read.append(sitk.ReadImage(str(path)))
        except RuntimeError as error:
            raise ConfKDInputError(f"{path}: SimpleITK cannot read it ({str(error).strip()[-200:]})") from None
    return CaseData(images=read[:-1], label=read[-1])


@dataclass(frozen=True)
class SourceCase:
    """A case of the source, read lazily. ``patient`` groups cases that must stay on one side of every split."""

    case_id: str
    patient: str
    read: Callable[[], CaseData]
    origin: str = ""  # file or folder named in error messages


@dataclass(frozen=True)
class DatasetSpec:
    """What the output dataset is."""

    dataset_id: int
    name: str
    labels: dict[str, int]  # without "ignore"; it is added as the highest integer
    channel_names: dict[int, str]
    file_ending: str = ".nii.gz"
    description: str = ""
    source: str = ""
    spacing_setting: Sequence[float] | None = None
    label_map: Callable[[np.ndarray], np.ndarray] | None = None  # applied to dense (and expert) labels

    @property
    def folder_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"

    @property
    def ignore_label(self) -> int:
        return max(self.labels.values()) + 1


Verify = Callable[[SourceCase, np.ndarray, np.ndarray, str], None]
"""A per-case check ``verify(case, dense, written_label, level)`` of :func:`~.writer.write_mixed_dataset`, called before
the case is written (``level``: ``"full"``, ``"weak"``, ``"unlabeled"`` or ``"test"``); an exception aborts the
conversion."""
