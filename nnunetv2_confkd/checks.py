"""Input checks run before any expensive work. Every failure is a :class:`ConfKDInputError` whose message names the
case or file and says what to do."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

from nnunetv2_confkd.supervision import LEVELS, MANIFEST_KEY

_FIX_MANIFEST = (f'Add a "{MANIFEST_KEY}" mapping {{case identifier: one of {list(LEVELS)}}} that covers every '
                 "training case to dataset.json (nnUNet_raw/DatasetXXX/dataset.json), then re-run "
                 "nnUNetv2_plan_and_preprocess (it copies dataset.json to nnUNet_preprocessed).")


class ConfKDInputError(ValueError):
    """Bad input (dataset, manifest, split or checkpoint); the message names the culprit and the fix."""


def _listing(names: Iterable[str], limit: int = 10) -> str:
    names = sorted(str(n) for n in names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_dataset_json(dataset_json, source: str = "dataset.json") -> None:
    """The keys nnU-Net reads from ``dataset.json`` before our checks could run, with the types it expects."""
    if not isinstance(dataset_json, Mapping):
        raise ConfKDInputError(f"{source} must hold a JSON object, got {type(dataset_json).__name__}")
    labels = dataset_json.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise ConfKDInputError(f'{source} needs "labels": {{name: integer}} (e.g. {{"background": 0, "LV": 1, '
                               f'"ignore": 2}}), got {labels!r}')
    values = list(labels.values())
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfKDInputError(f'{source}: "labels" must map names to integers (region-based labels are not '
                               f"supported by ConfKD), got {labels!r}")
    others = [v for k, v in labels.items() if k != "ignore"]
    if "ignore" in labels and (not others or labels["ignore"] != max(others) + 1):
        raise ConfKDInputError(f'{source}: the "ignore" label ({labels["ignore"]}) must be the highest label value, '
                               f"right after the last class ({max(others, default=-1) + 1}), as nnU-Net requires")
    if not isinstance(dataset_json.get("channel_names", dataset_json.get("modality")), Mapping):
        raise ConfKDInputError(f'{source} needs "channel_names": {{"0": "MRI", ...}}')
    if not isinstance(dataset_json.get("file_ending"), str):
        raise ConfKDInputError(f'{source} needs "file_ending", e.g. ".nii.gz"')


def check_manifest(dataset_json: Mapping, case_ids: Iterable[str], source: str = "dataset.json") -> dict[str, str]:
    """Validate the supervision manifest against the dataset's cases and return it as ``{case: level}``.

    Raises:
        ConfKDInputError: the mapping is absent or not a dict, misses cases, names unknown cases or unknown levels.
    """
    manifest = dataset_json.get(MANIFEST_KEY)
    if manifest is None:
        raise ConfKDInputError(f'{source} has no "{MANIFEST_KEY}" key. {_FIX_MANIFEST}')
    if not isinstance(manifest, Mapping):
        raise ConfKDInputError(f'{source}: "{MANIFEST_KEY}" must map case identifiers to levels, got '
                               f"{type(manifest).__name__}. {_FIX_MANIFEST}")
    manifest = {str(k): v for k, v in manifest.items()}
    case_ids = {str(c) for c in case_ids}
    missing = case_ids - manifest.keys()
    if missing:
        raise ConfKDInputError(f'{source}: "{MANIFEST_KEY}" has no level for case(s) {_listing(missing)}. '
                               f"{_FIX_MANIFEST}")
    unknown = manifest.keys() - case_ids
    if unknown:
        raise ConfKDInputError(f'{source}: "{MANIFEST_KEY}" names case(s) that are not in the dataset: '
                               f"{_listing(unknown)}. Remove them or fix the identifiers (no _0000 channel suffix, "
                               "no file ending).")
    bad = {k: v for k, v in manifest.items() if v not in LEVELS}
    if bad:
        first = next(iter(sorted(bad)))
        raise ConfKDInputError(f'{source}: case {first} has level {bad[first]!r} ({len(bad)} case(s) in all); '
                               f"allowed levels are {list(LEVELS)}.")
    return manifest


def check_ignore_label(manifest: Mapping[str, str], ignore_label: int | None, source: str = "dataset.json") -> None:
    """Weak and unlabeled cases need an ignore label declared in ``dataset.json``."""
    partial = [str(k) for k, v in manifest.items() if v != "full"]
    if partial and ignore_label is None:
        raise ConfKDInputError(f'{source} declares no "ignore" label, but case(s) {_listing(partial)} are weak or '
                               'unlabeled. Add "ignore": <highest integer> to "labels" and mark every unannotated '
                               "voxel of those cases with it.")


def check_split(manifest: Mapping[str, str], train_keys: Iterable[str], val_keys: Iterable[str],
                split_source: str = "splits_final.json") -> None:
    """The training split needs a full case, and every validation case must be full (it is scored densely)."""
    train_keys, val_keys = [str(k) for k in train_keys], [str(k) for k in val_keys]
    if not any(manifest.get(k) == "full" for k in train_keys):
        raise ConfKDInputError(f"the training split of {split_source} has no fully labeled case "
                               f"({len(train_keys)} cases, all weak or unlabeled). Move at least one \"full\" case "
                               "into the training part of the fold.")
    not_full = [k for k in val_keys if manifest.get(k) != "full"]
    if not_full:
        raise ConfKDInputError(f"validation case(s) {_listing(not_full)} of {split_source} are not fully labeled; "
                               "nnU-Net's validation would score them on their few labeled voxels. Write a "
                               "splits_final.json whose validation parts hold only \"full\" cases (the converters "
                               "do), or train nnU-Net's fold 'all', which validates on the full cases only.")


def check_full_cases_dense(manifest: Mapping[str, str], load_seg: Callable[[str], np.ndarray], ignore_label: int | None,
                           cases: Iterable[str] | None = None) -> None:
    """A ``"full"`` case must contain no ignore voxel. ``load_seg(case)`` returns its (preprocessed) label array."""
    if ignore_label is None:
        return
    cases = [str(c) for c in (cases if cases is not None else manifest)]
    for case in cases:
        if manifest[case] != "full":
            continue
        n_ignore = int(np.count_nonzero(np.asarray(load_seg(case)) == ignore_label))
        if n_ignore:
            raise ConfKDInputError(f'case {case} is marked "full" but its label has {n_ignore} ignore voxel(s) '
                                   f"(value {ignore_label}). Mark it \"weak\" in dataset.json, or give it a dense "
                                   "label.")


def check_label_values(case: str, seg: np.ndarray, labels: Mapping[str, int]) -> None:
    """Every value of a (preprocessed) label must be declared in ``dataset.json`` (``-1`` marks nnU-Net's crop)."""
    found = set(np.unique(seg).tolist()) - {-1}
    unknown = sorted(found - set(labels.values()))
    if unknown:
        raise ConfKDInputError(f"case {case}: label values {unknown} are not declared in dataset.json \"labels\" "
                               f"{dict(labels)}. Fix the label file or declare the values, then preprocess again.")


def read_checkpoint(filename: str) -> dict:
    """``torch.load`` a training checkpoint; a truncated or corrupt file raises ConfKDInputError naming it."""
    import pickle
    import zipfile

    import torch

    try:
        checkpoint = torch.load(filename, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise ConfKDInputError(f"checkpoint {filename} does not exist") from None
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise ConfKDInputError(f"checkpoint {filename} is truncated or corrupt ({type(e).__name__}: {e}). Resume "
                               "from another checkpoint of the fold (checkpoint_best.pth or checkpoint_latest.pth) "
                               "or retrain.") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise ConfKDInputError(f"{filename} is not an nnU-Net training checkpoint (no 'network_weights')")
    return checkpoint


def check_checkpoint_keys(checkpoint: Mapping, expected_keys: Iterable[str], filename: str, trainer: str) -> None:
    """The checkpoint's network must match the trainer's, head for head (a stock nnU-Net checkpoint has one decoder,
    a ConfKD checkpoint two)."""
    found = {k[7:] if k.startswith("module.") else k for k in checkpoint["network_weights"]}
    expected = set(expected_keys)
    if found == expected:
        return
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    heads = sorted({k.split(".")[0] for k in missing + unexpected})
    raise ConfKDInputError(
        f"checkpoint {filename} (written by {checkpoint.get('trainer_name', 'an unknown trainer')}) does not fit "
        f"{trainer}: {len(missing)} missing and {len(unexpected)} unexpected weights, in {heads} (e.g. missing "
        f"{missing[:2]}, unexpected {unexpected[:2]}). Resume with the trainer that wrote it (-tr), or start a new "
        "run.")
