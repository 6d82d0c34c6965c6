"""Finding a dataset folder by id or name, the way nnU-Net's ``-d`` reads it: ``502``, ``Dataset502_ACDC`` or
``ACDC``, under ``nnUNet_raw``, ``nnUNet_preprocessed`` or any folder of that layout. Every command of the package
looks datasets up here, so they all accept the same spellings and say the same thing when none or several match."""

from __future__ import annotations

from pathlib import Path

from nnunetv2_confkd.checks import ConfKDInputError


def matching_datasets(root: Path, dataset: str) -> list[Path]:
    """The ``DatasetXXX_Name`` folders under ``root`` that ``dataset`` names (id, full folder name or bare name).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ("Dataset502_ACDC", "Dataset503_ACDC_LV"):
        ...     (root / name).mkdir()
        >>> [[p.name for p in matching_datasets(root, d)] for d in ("502", "002", "Dataset503_ACDC_LV", "ACDC", "9")]
        [['Dataset502_ACDC'], [], ['Dataset503_ACDC_LV'], ['Dataset502_ACDC'], []]
    """
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("Dataset*_*") if p.is_dir() and names(p.name, dataset))


def names(folder_name: str, dataset: str) -> bool:
    """Whether ``dataset`` (id, full folder name or bare name) names the dataset folder ``folder_name``.

    Example:
        >>> [names("Dataset502_ACDC", d) for d in ("502", "Dataset502_ACDC", "ACDC", "503")]
        [True, True, True, False]
    """
    if dataset.isdigit():
        return folder_name.startswith(f"Dataset{int(dataset):03d}_")
    return folder_name == dataset or folder_name.split("_", 1)[-1] == dataset


def dataset_folder(root: Path, dataset: str, where: str, fix: str) -> Path:
    """The one folder under ``root`` that ``dataset`` names; otherwise a :class:`ConfKDInputError` that names
    ``where`` (e.g. ``"$nnUNet_raw (/data/raw)"``), the datasets found there and ``fix`` (what to do)."""
    hits = matching_datasets(root, dataset)
    if len(hits) != 1:
        found = [p.name for p in sorted(Path(root).glob("Dataset*_*")) if p.is_dir()] if Path(root).is_dir() else []
        what = "no" if not hits else f"several ({', '.join(p.name for p in hits)})"
        raise ConfKDInputError(f"dataset {dataset!r}: {what} matching folder in {where}; has {found or 'none'}. {fix}")
    return hits[0]
