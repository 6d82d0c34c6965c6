"""What a converter is asked for (method.md §4, §5): the budget options every converter shares, their parsing and
checks, and the command-line plumbing around :mod:`nnunetv2_confkd.conversion`.

A converter module only knows its source layout; for the rest it uses this module:

- **budget**: :func:`make_budget` (a checked :class:`~nnunetv2_confkd.conversion.Budget` whose simulator parameters
  include the simulator's defaults, :func:`effective_params`), :func:`default_name`;
- **held-out test part**: :func:`split_holdout` draws whole patients with the fixed :data:`HOLDOUT_SEED` (as nnU-Net's
  ``create_ACDC_split``), independent of ``--seed`` and ``--full``, so that every budget and every seed is scored on
  the same patients; optional groups stratify the draw round-robin;
- **component policy**: :func:`component_check`, the ``verify`` hook of
  :func:`~nnunetv2_confkd.conversion.write_mixed_dataset` that checks that every 2D connected component of the
  protected classes keeps an annotated voxel (it runs before a case is written, so a failure never touches an
  existing dataset);
- **command line**: :func:`add_budget_arguments`, :func:`add_holdout_arguments`, :func:`add_dense_twin_argument`,
  :func:`budget_kwargs` (the flags as the converter function's keywords) and :func:`run_converter`, the body of
  every converter's ``main()``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from nnunetv2_confkd import weak_labels
from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.conversion import EXPERT, Budget, SourceCase, Verify, summarize, twin_folder
from nnunetv2_confkd.weak_labels import WEAK_KINDS, simulate_weak_label

HOLDOUT_SEED = 1234  # fixed (as nnU-Net's create_ACDC_split): the test part never depends on --seed or --full
SIMULATED_KINDS = ("erosion", "points", "scribble")  # the kinds that take parameters and keep component_classes

# command-line flag -> (simulator keyword, type, weak kind it applies to, help)
WEAK_FLAGS = {
    "--iterations": ("iterations", int, "erosion", "erosion: maximal 3x3 erosions per slice and structure (paper: 10)"),
    "--points": ("k", int, "points", "points: voxels per slice and structure (or component)"),
    "--radius-mm": ("radius_mm", float, "points", "points: grow every point to a disc of this radius (mm)"),
    "--scribble-fraction": ("fraction", float, "scribble", "scribble: share of the skeleton kept, in (0, 1]"),
    "--scribble-width-mm": ("width_mm", float, "scribble", "scribble: thicken strokes to this width (mm)"),
    "--scribble-erode": ("erode", int, "scribble", "scribble: 3x3 erosions before skeletonising"),
}


# ---------------------------------------------------------------------------------------------------------------------
# amounts of patients
# ---------------------------------------------------------------------------------------------------------------------


def _amount(value: str | float, flag: str, zero: bool) -> float:
    """A count of patients (a positive integer) or a fraction in (0, 1); 0 too where ``zero``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or number < 0 or (number == 0 and not zero) or (number >= 1 and number != int(number)):
        allowed = "0, " if zero else ""
        raise ConfKDInputError(f"{flag} must be {allowed}a positive integer number of patients or a fraction in "
                               f"(0, 1), got {value!r}")
    return number


def parse_full(value: str | float) -> float:
    """``--full``: a count of patients (``"7"``) or a fraction (``"0.1"``).

    Example:
        >>> parse_full("7"), parse_full("0.1")
        (7.0, 0.1)
    """
    return _amount(value, "--full", zero=False)


def parse_unlabeled(value: str | float) -> float:
    """``--unlabeled``: 0, a count of the patients that are not full, or a fraction of them in (0, 1)."""
    return _amount(value, "--unlabeled", zero=True)


def parse_holdout(value: str | float) -> float:
    """``--holdout``: 0 (none), a count of patients or a fraction in (0, 1).

    Example:
        >>> parse_holdout("0.2"), parse_holdout("5"), parse_holdout("0")
        (0.2, 5.0, 0.0)
    """
    return _amount(value, "--holdout", zero=True)


def choose_holdout(patients: Sequence[str], holdout: str | float, seed: int = HOLDOUT_SEED,
                   groups: Mapping[str, str] | None = None) -> list[str]:
    """Held-out test patients: ``holdout`` patients (a count, or a fraction of the patients if < 1), drawn with
    ``seed``; with ``groups`` (patient -> group), round-robin over the groups (stratified).

    Raises:
        ConfKDInputError: an invalid amount, or one that leaves no training patient.

    Example:
        >>> choose_holdout(["a", "b", "c", "d"], 0), len(choose_holdout(["a", "b", "c", "d"], 0.5))
        ([], 2)
        >>> choose_holdout(["p1", "p2", "p3", "p4"], 2, groups={"p1": "A", "p2": "A", "p3": "B", "p4": "B"}) in (
        ...     ["p1", "p3"], ["p1", "p4"], ["p2", "p3"], ["p2", "p4"])
        True
    """
    patients = sorted(set(patients))
    holdout = parse_holdout(holdout)
    count = int(holdout) if holdout >= 1 or holdout == 0 else max(1, int(round(holdout * len(patients))))
    if count >= len(patients) and count > 0:
        raise ConfKDInputError(f"--holdout {holdout:g} asks for {count} of the {len(patients)} patients and leaves "
                               "none for training")
    group_of = {p: (groups or {}).get(p, "") for p in patients}
    rng = np.random.default_rng(seed)
    strata = [rng.permutation([p for p in patients if group_of[p] == g]).tolist()
              for g in sorted(set(group_of.values()))]
    order = [stratum[i] for i in range(max(map(len, strata), default=0)) for stratum in strata if i < len(stratum)]
    return sorted(order[:count])


def split_holdout(cases: Sequence[SourceCase], holdout: str | float, seed: int = HOLDOUT_SEED,
                  groups: Mapping[str, str] | None = None) -> tuple[list[SourceCase], list[SourceCase]]:
    """``(training, held-out)`` cases, held out by patient (:func:`choose_holdout`)."""
    held = set(choose_holdout([c.patient for c in cases], holdout, seed, groups))
    return [c for c in cases if c.patient not in held], [c for c in cases if c.patient in held]


# ---------------------------------------------------------------------------------------------------------------------
# the budget
# ---------------------------------------------------------------------------------------------------------------------


def default_name(base: str, full: float, weak: str, seed: int = 0, unlabeled: float = 0, tag: str = "") -> str:
    """The dataset name when ``--name`` is not given (a valid nnU-Net name: fractions with ``p`` for the dot).

    Example:
        >>> default_name("LiTS", 5, "erosion"), default_name("Heart", 0.25, "points", 2, unlabeled=3)
        ('LiTS_5full_erosion_s0', 'Heart_0p25full_points_3unl_s2')
        >>> default_name("ACDC", 3, "expert", 1, tag="LV")
        'ACDC_3full_expert_LV_s1'
    """
    def amount(x: float) -> str:
        return str(int(x)) if x >= 1 else f"{x:g}".replace(".", "p")

    unl = f"_{amount(unlabeled)}unl" if unlabeled else ""
    return f"{base}_{amount(full)}full_{weak}{unl}{f'_{tag}' if tag else ''}_s{seed}"


def effective_params(weak: str, given: Mapping[str, object] | None, background: bool = False,
                     component_classes: Sequence[int] = ()) -> dict:
    """The simulator's keyword arguments with its defaults filled in (recorded in ``dataset.json``), tried on a tiny
    mask so that a parameter of another kind or an invalid value fails before anything is written.

    Raises:
        ConfKDInputError: naming the flag of a parameter the kind does not take, or the simulator's message.

    Example:
        >>> effective_params("points", {"k": 5})
        {'k': 5, 'radius_mm': 0.0}
    """
    given = dict(given or {})
    foreign = [f"{flag} applies to --weak {kind}, not to --weak {weak}"
               for flag, (dest, _, kind, _) in WEAK_FLAGS.items() if dest in given and kind != weak]
    if foreign:
        raise ConfKDInputError("; ".join(foreign))
    if weak not in SIMULATED_KINDS:
        if given:
            raise ConfKDInputError(f"--weak {weak} takes no simulator parameters, got {sorted(given)}")
        return {}
    defaults = {k: p.default for k, p in inspect.signature(getattr(weak_labels, weak)).parameters.items()
                if p.kind is p.KEYWORD_ONLY and k not in ("background", "component_classes")}
    dense = np.zeros((1, 5, 5), np.uint8)
    dense[0, 1:4, 1:4] = 1
    try:
        simulate_weak_label(weak, dense, (1.0, 1.0, 1.0), np.random.default_rng(0), 9, background=background,
                            component_classes=tuple(component_classes), **given)
    except (TypeError, ValueError) as error:
        flags = {dest: flag for flag, (dest, _, _, _) in WEAK_FLAGS.items()}
        text = ", ".join(f"{flags.get(k, k)} {v}" for k, v in given.items())
        raise ConfKDInputError(f"--weak {weak} with {text}: {error}") from None
    return {**defaults, **given}


def make_budget(full: str | float, weak: str, seed: int = 0, weak_params: Mapping[str, object] | None = None,
                background: bool = False, component_classes: Sequence[int] = (), unlabeled: str | float = 0,
                kinds: Sequence[str] = WEAK_KINDS) -> Budget:
    """A checked :class:`~nnunetv2_confkd.conversion.Budget` whose parameters include the simulator's defaults.

    Args:
        kinds: the weak kinds the source supports (``WEAK_KINDS``, plus ``"expert"`` where it has expert labels).
    """
    if weak not in kinds:
        raise ConfKDInputError(f"--weak must be one of {list(kinds)}, got {weak!r}")
    classes = tuple(int(c) for c in component_classes)
    return Budget(full=parse_full(full), weak=weak, unlabeled=parse_unlabeled(unlabeled), seed=seed,
                  params=effective_params(weak, weak_params, background, classes), background=background,
                  component_classes=classes)


# ---------------------------------------------------------------------------------------------------------------------
# the component policy
# ---------------------------------------------------------------------------------------------------------------------


def lost_components(dense: np.ndarray, weak: np.ndarray, classes: Sequence[int]) -> dict[int, tuple[int, int]]:
    """``{class: (components without an annotated voxel, components)}`` over the 2D 8-connected components of every
    slice (the last two axes), the unit that ``component_classes`` protects.

    Example:
        >>> dense = np.array([[[2, 0, 2], [2, 0, 0]]])
        >>> lost_components(dense, np.array([[[2, 3, 3], [3, 3, 3]]]), [2])
        {2: (1, 2)}
    """
    structure = np.zeros((3,) * dense.ndim, bool)
    structure[(1,) * (dense.ndim - 2)] = True  # 8-connected within a slice, never across slices
    result = {}
    for c in classes:
        components, n = ndimage.label(dense == c, structure=structure)
        hit = np.unique(components[(weak == c) & (components > 0)])
        result[int(c)] = (int(n - hit.size), int(n))
    return result


def component_check(classes: Sequence[int], strict: bool = True) -> Verify:
    """A ``verify`` hook of :func:`~nnunetv2_confkd.conversion.write_mixed_dataset`: every 2D connected component
    (:func:`lost_components`) of ``classes`` in a weak case keeps an annotated voxel.

    Args:
        classes: the classes to check (the budget's ``component_classes``).
        strict: raise ``RuntimeError`` when a component lost its annotation (the conversion stops, nothing is
            written or replaced: the policy is broken, a bug of the simulator); otherwise warn.
    """
    classes = tuple(int(c) for c in classes)

    def verify(case: SourceCase, dense: np.ndarray, label: np.ndarray, level: str) -> None:
        if level != "weak":
            return
        lost = {c: v for c, v in lost_components(dense, label, classes).items() if v[0]}
        if not lost:
            return
        listing = ", ".join(f"class {c} {n}/{t} components" for c, (n, t) in lost.items())
        message = f"a weak case lost every annotated voxel of some components ({case.case_id}: {listing})"
        if strict:
            raise RuntimeError(f"{message}; this breaks the component policy, so the conversion stopped and nothing "
                               "was written. Please report it as a bug of nnunetv2_confkd.weak_labels.")
        warnings.warn(message, stacklevel=2)

    return verify


# ---------------------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------------------


def argument_type(parse: Callable[[str], object]) -> Callable[[str], object]:
    """``parse`` as an argparse type whose usage error carries the ConfKDInputError's message."""
    def convert(value: str) -> object:
        try:
            return parse(value)
        except ConfKDInputError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def add_budget_arguments(parser: argparse.ArgumentParser, name_default: str,
                         kinds: Sequence[str] = WEAK_KINDS) -> None:
    """The flags every converter shares: output, id and name, budget, simulator parameters, overwrite."""
    add = parser.add_argument
    add("--out", type=Path, default=None, help="nnUNet_raw folder of the output (default: $nnUNet_raw)")
    add("--preprocessed", type=Path, default=None,
        help="nnUNet_preprocessed folder for splits_final.json (default: $nnUNet_preprocessed, if set)")
    add("--id", type=int, required=True, help="output dataset id (1..999)")
    add("--name", default=None, help=f"output dataset name (default: {name_default})")
    add("--full", type=argument_type(parse_full), required=True,
        help="fully labeled training patients: a count or a fraction")
    add("--weak", choices=list(kinds), required=True, help="weak-label kind of the other training cases"
        + ("; expert: the source's expert annotations" if EXPERT in kinds else ""))
    add("--unlabeled", type=argument_type(parse_unlabeled), default=0,
        help="of the patients that are not full, how many (count) or which fraction get no label at all")
    add("--seed", type=int, default=0, help="seed of the full-patient draw and of the weak-label simulation")
    add("--background", action="store_true", help="simulated kinds: annotate background too")
    for flag, (dest, kind, _, text) in WEAK_FLAGS.items():
        add(flag, dest=f"weak_{dest}", type=kind, default=None, metavar=dest.upper(),
            help=text + " (default: the simulator's)")
    add("--overwrite", action="store_true", help="replace an existing output dataset of the same id and name")


def add_holdout_arguments(parser: argparse.ArgumentParser, default: float) -> None:
    """``--holdout`` and ``--holdout-seed``: training patients carved into the held-out test part."""
    parser.add_argument("--holdout", type=argument_type(parse_holdout), default=default,
                        help="training patients held out as test cases (imagesTs/labelsTs, dense): a count or a "
                             f"fraction (default {default:g})")
    parser.add_argument("--holdout-seed", type=int, default=HOLDOUT_SEED,
                        help=f"seed of the held-out draw (default {HOLDOUT_SEED}; independent of --seed and --full)")


def add_dense_twin_argument(parser: argparse.ArgumentParser) -> None:
    """``--dense-twin-id``: also write the dense twin (:func:`~nnunetv2_confkd.conversion.write_with_dense_twin`)."""
    parser.add_argument("--dense-twin-id", type=int, default=None,
                        help="also write Dataset<N>_<name>Dense: same cases, split and test part, dense labels, all "
                             "'full' (to plan CT datasets on, see the hint printed at the end)")


def weak_params_from(args: argparse.Namespace) -> dict:
    """The simulator keyword arguments given on the command line (the simulator's defaults for the others)."""
    params = {dest: getattr(args, f"weak_{dest}") for dest, _, _, _ in WEAK_FLAGS.values()}
    return {k: v for k, v in params.items() if v is not None}


def budget_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of a converter function that the shared flags give: ``name``, ``seed``,
    ``weak_params``, ``background``, ``overwrite``, ``unlabeled`` and, where the parser has them, ``holdout``,
    ``holdout_seed`` and ``dense_twin_id``."""
    kwargs = {"name": args.name, "seed": args.seed, "weak_params": weak_params_from(args),
              "background": args.background, "overwrite": args.overwrite, "unlabeled": args.unlabeled}
    return {**kwargs, **{k: getattr(args, k) for k in ("holdout", "holdout_seed", "dense_twin_id") if hasattr(args, k)}}


def env_path(value: Path | None, variable: str) -> Path | None:
    """``value``, else the environment variable as a path, else None."""
    return value if value is not None else (Path(os.environ[variable]) if os.environ.get(variable) else None)


def run_converter(parser: argparse.ArgumentParser, argv: list[str] | None,
                  convert: Callable[[argparse.Namespace, Path, Path | None], Path]) -> str:
    """The body of a converter's ``main()``: parse ``argv``, log to the console, run ``convert(args, raw_root,
    preprocessed_root)`` (``--out``/``--preprocessed``, else ``$nnUNet_raw``/``$nnUNet_preprocessed``) and return
    :func:`report` of the dataset written. Bad input (``ConfKDInputError``) exits with status 2 and its message."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raw = env_path(args.out, "nnUNet_raw")
    if raw is None:
        parser.error("give --out or set nnUNet_raw")
    try:
        folder = convert(args, raw, env_path(args.preprocessed, "nnUNet_preprocessed"))
    except ConfKDInputError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return report(folder, getattr(args, "dense_twin_id", None))


def report(mixed: Path, twin_id: int | None = None) -> str:
    """What a conversion prints: :func:`~nnunetv2_confkd.conversion.summarize` of the dataset and of its dense twin,
    and for CT data the planning hint (:func:`ct_fingerprint_hint`)."""
    twin = twin_folder(mixed, twin_id)
    parts = [summarize(mixed)] + ([summarize(twin)] if twin is not None else [])
    channels = json.loads((mixed / "dataset.json").read_text())["channel_names"].values()
    if any(str(c).casefold() == "ct" for c in channels):
        parts.append(ct_fingerprint_hint(mixed, twin))
    return "\n".join(parts)


def ct_fingerprint_hint(mixed: Path, twin: Path | None, configuration: str = "3d_fullres") -> str:
    """How to plan a CT mixed dataset on its dense twin (nnunet_notes.md §6.3): nnU-Net's fingerprint counts ignore
    voxels as foreground, so CTNormalization's clipping and z-scoring would come from unannotated voxels."""
    m = mixed.name.split("_")[0].removeprefix("Dataset")
    t = twin.name.split("_")[0].removeprefix("Dataset") if twin is not None else "<DENSE_ID>"
    lines = [
        f"CT fingerprint trap: nnU-Net counts the ignore voxels of {mixed.name} as foreground in the CTNormalization "
        "statistics. Plan on the dense twin and move the plans:",
        *([] if twin is not None else ["  (no twin written: re-run with --dense-twin-id N to write one)"]),
        f"  nnUNetv2_extract_fingerprint -d {t} && nnUNetv2_plan_experiment -d {t}",
        f"  nnUNetv2_extract_fingerprint -d {m}",
        f"  nnUNetv2_move_plans_between_datasets -s {t} -t {m} -sp nnUNetPlans -tp nnUNetPlansDense",
        f"  cp $nnUNet_raw/{mixed.name}/dataset.json $nnUNet_preprocessed/{mixed.name}/",
        f"  nnUNetv2_preprocess -d {m} -plans_name nnUNetPlansDense -c {configuration}",
        "  and train with -p nnUNetPlansDense",
    ]
    return "\n".join(lines)
