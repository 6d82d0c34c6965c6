"""The command line every converter shares: :func:`add_budget_arguments` (output folder, dataset id and name, budget,
simulator parameters, overwrite), :func:`add_holdout_arguments`, :func:`add_dense_twin_argument`,
:func:`budget_kwargs` (the flags as the converter function's keywords) and :func:`run_converter`, the body of every
converter's ``main()``. Flags follow nnU-Net's: ``-d`` is the output dataset id and ``-o`` the output ``nnUNet_raw``
folder (long forms ``--id`` and ``--out``).

The parsing and checks behind the flags are in :mod:`~.amounts`, :mod:`~.budget` and :mod:`~.holdout`; the summary
printed at the end in :mod:`~.reporting`.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from nnunetv2_confkd_conversion.amounts import parse_full, parse_holdout, parse_unlabeled
from nnunetv2_confkd_conversion.budget import WEAK_FLAGS
from nnunetv2_confkd_conversion.cases import EXPERT
from nnunetv2_confkd_conversion.holdout import HOLDOUT_SEED
from nnunetv2_confkd_conversion.reporting import report
from nnunetv2_confkd_conversion.weak_labels import WEAK_KINDS

from nnunetv2_confkd.checks import ConfKDInputError


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
    """The flags every converter shares: output folder, id and name, budget, simulator parameters, overwrite."""
    add = parser.add_argument
    add("-o", "--out", dest="out", type=Path, default=None,
        help="nnUNet_raw folder of the output (default: $nnUNet_raw)")
    add("--preprocessed", type=Path, default=None,
        help="nnUNet_preprocessed folder for splits_final.json (default: $nnUNet_preprocessed, if set)")
    add("-d", "--id", dest="id", type=int, required=True, help="output dataset id (1..999)")
    add("--name", default=None, help=f"output dataset name (default: {name_default})")
    add("--full", type=argument_type(parse_full), required=True,
        help="fully labeled training patients: a count or a fraction")
    add("--weak", choices=list(kinds), required=True, help="weak-label kind of the other training cases"
        + ("; expert: the source's expert annotations" if EXPERT in kinds else ""))
    add("--unlabeled", type=argument_type(parse_unlabeled), default=0,
        help="of the patients that are not full, how many (count) or which fraction get no label at all")
    add("--seed", type=int, default=0, help="seed of the full-patient draw and of the weak-label simulation")
    add("--background", action="store_true", help="simulated kinds: annotate background too")
    add("--simulation-spacing", type=float, nargs=2, default=None, metavar=("Y", "X"),
        help="simulated kinds: simulate on the label resampled to this in-plane spacing (mm), e.g. the spacing the "
             "network trains on, so that seeds survive nnU-Net's resampling (default: the native grid)")
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
    """``--dense-twin-id``: also write the dense twin (:func:`~.dense_twin.write_with_dense_twin`)."""
    parser.add_argument("--dense-twin-id", type=int, default=None,
                        help="also write Dataset<N>_<name>Dense: same cases, split and test part, dense labels, all "
                             "'full' (to plan CT datasets on, see the hint printed at the end)")


def weak_params_from(args: argparse.Namespace) -> dict:
    """The simulator keyword arguments given on the command line (the simulator's defaults for the others)."""
    params = {dest: getattr(args, f"weak_{dest}") for dest, _, _, _ in WEAK_FLAGS.values()}
    return {k: v for k, v in params.items() if v is not None}


def budget_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of a converter function that the shared flags give: ``name``, ``seed``,
    ``weak_params``, ``background``, ``overwrite``, ``unlabeled``, ``simulation_spacing`` and, where the parser has
    them, ``holdout``, ``holdout_seed`` and ``dense_twin_id``."""
    kwargs = {"name": args.name, "seed": args.seed, "weak_params": weak_params_from(args),
              "background": args.background, "overwrite": args.overwrite, "unlabeled": args.unlabeled,
              "simulation_spacing": args.simulation_spacing}
    return {**kwargs, **{k: getattr(args, k) for k in ("holdout", "holdout_seed", "dense_twin_id") if hasattr(args, k)}}


def env_path(value: Path | None, variable: str) -> Path | None:
    """``value``, else the environment variable as a path, else None."""
    return value if value is not None else (Path(os.environ[variable]) if os.environ.get(variable) else None)


def run_converter(parser: argparse.ArgumentParser, argv: list[str] | None,
                  convert: Callable[[argparse.Namespace, Path, Path | None], Path]) -> str:
    """The body of a converter's ``main()``: parse ``argv``, log to the console, run ``convert(args, raw_root,
    preprocessed_root)`` (``-o``/``--preprocessed``, else ``$nnUNet_raw``/``$nnUNet_preprocessed``) and return
    :func:`~.reporting.report` of the dataset written. Bad input (``ConfKDInputError``) exits with status 2 and its
    message."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raw = env_path(args.out, "nnUNet_raw")
    if raw is None:
        parser.error("give -o/--out or set nnUNet_raw")
    try:
        folder = convert(args, raw, env_path(args.preprocessed, "nnUNet_preprocessed"))
    except ConfKDInputError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return report(folder, getattr(args, "dense_twin_id", None))
