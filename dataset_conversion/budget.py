"""The supervision budget of a conversion: the :class:`Budget` the writer follows, built and checked by
:func:`make_budget` (its simulator parameters include the simulator's defaults, :func:`effective_params`), the
command-line flags of the simulator parameters (:data:`WEAK_FLAGS`) and the default dataset name
(:func:`default_name`)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from nnunetv2_confkd_conversion import weak_labels
from nnunetv2_confkd_conversion.amounts import parse_full, parse_unlabeled
from nnunetv2_confkd_conversion.weak_labels import WEAK_KINDS, simulate_weak_label

from nnunetv2_confkd.checks import ConfKDInputError

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


@dataclass(frozen=True)
class Budget:
    """How much supervision the training cases get."""

    full: float  # number of fully labeled patients (>= 1) or a fraction of the training patients (< 1)
    weak: str  # a kind of weak_labels.WEAK_KINDS, or "expert"
    unlabeled: float = 0  # of the other patients, how many (>= 1) or which fraction (< 1) get no label at all
    seed: int = 0
    params: dict = field(default_factory=dict)  # keyword arguments of the simulator
    background: bool = False
    component_classes: tuple[int, ...] = ()
    simulation_spacing: tuple[float, float] | None = None  # in-plane grid (mm) the simulator runs on; None: native


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
                kinds: Sequence[str] = WEAK_KINDS, simulation_spacing: Sequence[float] | None = None) -> Budget:
    """A checked :class:`Budget` whose parameters include the simulator's defaults.

    Args:
        kinds: the weak kinds the source supports (``WEAK_KINDS``, plus ``"expert"`` where it has expert labels).
        simulation_spacing: in-plane ``(Y, X)`` spacing in mm of the grid the simulator runs on (simulated kinds
            only; see :mod:`~.simulation_grid`).
    """
    if weak not in kinds:
        raise ConfKDInputError(f"--weak must be one of {list(kinds)}, got {weak!r}")
    if simulation_spacing is not None:
        if weak not in SIMULATED_KINDS:
            raise ConfKDInputError(f"--simulation-spacing applies to the simulated kinds {list(SIMULATED_KINDS)}, "
                                   f"not to --weak {weak}")
        if len(simulation_spacing) != 2 or not min(simulation_spacing) > 0:
            raise ConfKDInputError(f"--simulation-spacing needs two positive in-plane spacings in mm (Y X), got "
                                   f"{list(simulation_spacing)}")
        simulation_spacing = tuple(float(s) for s in simulation_spacing)
    classes = tuple(int(c) for c in component_classes)
    return Budget(full=parse_full(full), weak=weak, unlabeled=parse_unlabeled(unlabeled), seed=seed,
                  params=effective_params(weak, weak_params, background, classes), background=background,
                  component_classes=classes, simulation_spacing=simulation_spacing)
