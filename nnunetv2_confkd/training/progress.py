"""Per-term loss curves: logger keys (kept in nnU-Net's checkpoint, so ``--c`` continues them) and a plot written
beside nnU-Net's ``progress.png``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402

PLOT_NAME = "progress_terms.png"


def term_key(name: str) -> str:
    return f"term_{name}"


def register_term_keys(local_logger, names: Sequence[str]) -> None:
    """Add one list per term to nnU-Net's ``LocalLogger``, which rejects unknown keys and must get exactly one value per
    epoch for every key (its ``plot_progress_png`` uses the shortest list)."""
    for name in names:
        local_logger.my_fantastic_logging.setdefault(term_key(name), [])


def log_terms(meta_logger, means: Mapping[str, float], epoch: int) -> None:
    for name, value in means.items():
        meta_logger.log(term_key(name), value, epoch)


def plot_terms(local_logger, output_folder: str, names: Sequence[str], config=None) -> str:
    """Plot the per-epoch mean of every term (raw, unweighted) and the weighted total; returns the file path."""
    logs = local_logger.my_fantastic_logging
    epochs = min(len(logs[term_key(n)]) for n in names)
    fig, ax = plt.subplots(figsize=(9, 5))
    x = list(range(epochs))
    for name in names:
        ax.plot(x, logs[term_key(name)][:epochs], label=name, linewidth=2)
    if "train_losses" in logs:
        ax.plot(x, logs["train_losses"][:epochs], label="total (weighted)", color="k", linestyle="--", linewidth=2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (unweighted term mean per epoch)")
    title = "ConfKD loss terms"
    if config is not None:
        title += (f"  (λ_w={config.weak_weight}, λ_kd={config.kd_weight}, λ_ent={config.entropy_weight}, "
                  f"T={config.temperature}{', legacy' if config.legacy else ''})")
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(output_folder, PLOT_NAME)
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
