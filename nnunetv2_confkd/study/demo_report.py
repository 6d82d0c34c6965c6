"""What ``confkd_demo`` shows while and after it trains: one progress line per epoch, read from nnU-Net's training log,
and a figure of held-out predictions beside their images and reference labels."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?): (.*?)\s*$")
# numbers, but not the "32" of "np.float32(0.5)"
_NUMBER = re.compile(r"(?<![\w.])(?:-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|nan)(?![\w.])")


@dataclass
class EpochReport:
    """One finished epoch of an nnU-Net training log: ``epoch`` is nnU-Net's 0-based number; ``values`` holds
    ``train_loss``, ``val_loss``, ``pseudo_dice`` (mean over classes) and ``epoch_time`` (s) where logged; ``terms``
    ConfKD's per-term losses (empty for other trainers)."""

    epoch: int
    started: datetime | None = None
    ended: datetime | None = None
    values: dict[str, float] = field(default_factory=dict)
    terms: dict[str, float] = field(default_factory=dict)


def parse_epochs(text: str) -> list[EpochReport]:
    """The finished epochs (those whose ``Epoch time`` line is written) of an nnU-Net training log's ``text``."""
    reports, current = [], None
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        stamp, message = datetime.fromisoformat(match[1]), match[2]
        if re.fullmatch(r"Epoch \d+", message):
            current = EpochReport(int(message.split()[1]), started=stamp)
        elif current is None:
            continue
        elif message.startswith("loss terms:"):
            pairs = (item.split() for item in message[len("loss terms:"):].split(","))
            current.terms = {name: float(value) for name, value in pairs}
        elif message.startswith(("train_loss ", "val_loss ")):
            name, value = message.split()
            current.values[name] = float(value)
        elif message.startswith("Pseudo dice"):
            dice = [float(n) for n in _NUMBER.findall(message)]
            current.values["pseudo_dice"] = float(np.nanmean(dice)) if dice else float("nan")
        elif message.startswith("Epoch time:"):
            current.values["epoch_time"] = float(message.split()[2])
            current.ended = stamp
            reports.append(current)
            current = None
    return reports


def seconds_left(reports: Sequence[EpochReport], total: int | None) -> float | None:
    """Estimated seconds until epoch ``total`` ends: the mean wall time per epoch so far (first epoch's start to the
    last one's end) times the epochs still to run; None without a finished epoch or a known total."""
    if not reports or total is None or reports[0].started is None:
        return None
    per_epoch = (reports[-1].ended - reports[0].started).total_seconds() / len(reports)
    return per_epoch * max(total - reports[-1].epoch - 1, 0)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def format_epoch(trainer: str, report: EpochReport, total: int | None, left: float | None) -> str:
    """One progress line: trainer, epoch/total, losses, ConfKD's terms, time per epoch and estimated time left.

    Example:
        >>> format_epoch("T", EpochReport(0, values={"train_loss": 1.5, "epoch_time": 2.0}), 3, 4.0)
        '  T  epoch 1/3  train_loss 1.500  |  2.0 s/epoch, ~0:04 left'
    """
    parts = [f"  {trainer}  epoch {report.epoch + 1}/{total if total is not None else '?'}"]
    parts += [f"{name} {report.values[name]:.3f}" for name in ("train_loss", "val_loss") if name in report.values]
    if "pseudo_dice" in report.values:
        parts.append(f"pseudo-Dice {report.values['pseudo_dice']:.3f}")
    if report.terms:
        parts.append("terms: " + ", ".join(f"{name} {value:.3f}" for name, value in report.terms.items()))
    timing = f"{report.values['epoch_time']:.1f} s/epoch" if "epoch_time" in report.values else ""
    if left is not None:
        timing += f", ~{_clock(left)} left"
    return "  ".join(parts) + (f"  |  {timing}" if timing else "")


class EpochMonitor:
    """Prints the epochs that a running ``nnUNetv2_train`` has newly finished, from the newest training log in
    ``fold`` written since ``since`` (a ``time.time()``); the total number of epochs is read from nnU-Net's
    ``debug.json``. Call it repeatedly while the training runs and once after."""

    def __init__(self, trainer: str, fold: Path, since: float, printer=print):
        self.trainer, self.fold, self.since, self.printer = trainer, Path(fold), since, printer
        self.shown = 0
        self.total: int | None = None

    def _newest_log(self) -> Path | None:
        logs = []
        for path in self.fold.glob("training_log_*.txt"):
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            if mtime >= self.since - 1:
                logs.append((mtime, path))
        return max(logs)[1] if logs else None

    def _read_total(self) -> int | None:
        try:
            return int(json.loads((self.fold / "debug.json").read_text())["num_epochs"])
        except (OSError, ValueError, KeyError):
            return None

    def __call__(self) -> None:
        log = self._newest_log()
        if log is None:
            return
        text = log.read_text(errors="replace")
        reports = parse_epochs(text[: text.rfind("\n") + 1])  # complete lines only
        if len(reports) > self.shown and self.total is None:
            self.total = self._read_total()
        for i in range(self.shown, len(reports)):
            left = seconds_left(reports[: i + 1], self.total)
            self.printer(format_epoch(self.trainer, reports[i], self.total, left), flush=True)
        self.shown = max(self.shown, len(reports))


LABEL_COLORS = ("#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")  # background first
PANEL_INCHES = 1.5
DPI = 100


def write_prediction_figure(path: Path, cases: Sequence[tuple[str, np.ndarray, np.ndarray]],
                            predictions: Mapping[str, Sequence[np.ndarray]], class_names: Sequence[str]) -> Path:
    """Write a PNG with one row per case: the image (grey), the reference labels and each method's predicted labels.

    Args:
        path: the PNG to write (replaced atomically).
        cases: ``(case id, 2d image, 2d reference label)`` per row.
        predictions: column title -> one 2d label array per case, in the order of ``cases``.
        class_names: names of labels 1, 2, ... for the legend (label 0 is background, drawn black).

    The figure is ``PANEL_INCHES`` per panel at ``DPI`` dots per inch, plus a strip of 0.5 inch for the legend.
    """
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    titles = ["image", "reference", *predictions]
    n_rows, n_cols = len(cases), len(titles)
    colors = LABEL_COLORS[: len(class_names) + 1]
    cmap = ListedColormap(colors)
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, dpi=DPI,
                             figsize=(PANEL_INCHES * n_cols, PANEL_INCHES * n_rows + 0.5))
    for row, (case, image, reference) in enumerate(cases):
        panels = [image, reference, *(column[row] for column in predictions.values())]
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            if col == 0:
                ax.imshow(panel, cmap="gray")
            else:
                ax.imshow(panel, cmap=cmap, vmin=0, vmax=len(colors) - 1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=8)
        axes[row, 0].set_ylabel(case, fontsize=8)
    fig.legend(handles=[Patch(color=c, label=n) for c, n in zip(colors[1:], class_names, strict=True)],
               loc="lower center", ncol=len(class_names), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.04, right=0.99, top=1 - 0.3 / fig.get_figheight(), bottom=0.45 / fig.get_figheight(),
                        wspace=0.05, hspace=0.05)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    os.replace(tmp, path)
    return path
