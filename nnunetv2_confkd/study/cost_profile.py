"""Where the time of a training step goes: the parts of a step timed one by one, from outside the trainer.

Method (in every worker, after the timed steps and the memory measurement, on batches of the trainer's own loader
that no timed step used): each part of ``train_step`` is replayed on the trainer's own modules and timed on its own
with ``time.perf_counter`` (bracketed by ``torch.cuda.synchronize()`` on CUDA, forward passes under autocast there,
as ``train_step`` runs them). A part that trains is timed forward + backward, with its inputs detached and requiring
gradients, so no part's backward reaches into another part:

* ``prepare``: the batch to the device (ConfKD: ``trainer._prepare_batch``, which also turns the augmentation padding of
  full cases back into background);
* ``encoder``: ``network.encoder(x)``, backward of a random gradient on every skip;
* ``decoder``: the student decoder on all rows (stock nnU-Net: the network's only decoder), backward of random
  gradients on its outputs;
* ``teacher_decoder``: the teacher decoder on the rows it runs on (taking those rows of the skips included);
* ``seeds``: ``confkd_loss.student_targets``, i.e. ``erosion_seeds`` (training/seeds.py) on the strong rows at full
  resolution, resampled to every deep-supervision scale (no gradient);
* ``sup``, ``weak``, ``kd``, ``ent``: each term of the ConfKD objective, forward + backward on the decoders' logits
  (stock nnU-Net and the strong-only baseline: ``trainer.loss``, nnU-Net's deep-supervised Dice + CE, as ``sup``);
* ``optimizer``: ``clip_grad_norm_`` and the optimizer step (through the grad scaler on CUDA) on the gradients the
  parts above left.

Beside them the report shows ``load``, the time ``next(trainer.dataloader_train)`` took for a batch (loading and
augmentation in the worker's own process, ``nnUNet_n_proc_DA=0``; in training, augmentation workers prepare batches
while the steps run, so it is not part of the step), ``step``, the median of the timed ``train_step`` calls, and
``other``, the step minus the sum of its parts (what isolation leaves out: autograd across the parts' seams, summing
the terms, glue; it can be negative where isolated parts cost more than inside one graph). A part a trainer does not
have is ``None``.
"""

from __future__ import annotations

import time

import numpy as np

PARTS = ("prepare", "encoder", "decoder", "teacher_decoder", "seeds", "sup", "weak", "kd", "ent", "optimizer")
COLUMNS = ("load", "step", *PARTS[1:], "other")  # the Markdown table; ``prepare`` is in the JSON only
HEADERS = {"teacher_decoder": "teacher decoder"}


def _timer(device: str):
    """A context-free stopwatch: ``timed(fn)`` returns ``(fn(), seconds)`` with device syncs around ``fn``."""
    import torch

    def timed(fn):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        value = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return value, time.perf_counter() - t0

    return timed


def _leaves(tensors):
    return [t.detach().requires_grad_(True) for t in tensors]


def _detached(output):
    return [o.detach() for o in output] if isinstance(output, (list, tuple)) else output.detach()


def _as_list(output):
    return list(output) if isinstance(output, (list, tuple)) else [output]


def _forward_backward(fn, device: str):
    """``fn()`` under autocast on CUDA, then backward of its output: a scalar as is, tensors with random gradients."""
    import torch
    from nnunetv2.utilities.helpers import dummy_context

    with torch.autocast(device, enabled=True) if device == "cuda" else dummy_context():
        out = fn()
    outs = _as_list(out)
    if outs[0].ndim == 0:
        outs[0].backward()
    else:
        torch.autograd.backward(outs, [torch.randn_like(o) for o in outs])
    return out


def _prepare(trainer, batch: dict):
    """``(data, targets, is_full, teacher_mask, teacher_cases)``; the last three ``None`` for a stock trainer."""
    if hasattr(trainer, "confkd_loss"):
        return trainer._prepare_batch(batch)
    target = batch["target"] if isinstance(batch["target"], list) else [batch["target"]]
    return (batch["data"].to(trainer.device, non_blocking=True),
            [t.to(trainer.device, non_blocking=True) for t in target], None, None, None)


def _loss_parts(trainer, teacher, student, targets, is_full, teacher_mask, timed, device) -> dict:
    """Seconds of the seeds and of each loss term, forward + backward on leaf logits (``student``: a list of logits
    per deep-supervision scale, or one tensor without deep supervision)."""
    if not hasattr(trainer, "confkd_loss"):
        def stock():
            logits = _leaves(_as_list(student))
            return trainer.loss(logits if isinstance(student, list) else logits[0],
                                targets if isinstance(student, list) else targets[0])

        return {"sup": timed(lambda: _forward_backward(stock, device))[1]}
    teacher, student = _as_list(teacher), _as_list(student)
    objective = trainer.confkd_loss
    student_targets, seconds = timed(lambda: objective.student_targets(targets, is_full))
    parts = {"seeds": seconds}
    from nnunetv2_confkd.training.objective import row_index

    in_teacher, full = row_index(is_full[teacher_mask]), row_index(is_full)
    terms = {
        "sup": lambda t, s: objective.supervised_loss([o[in_teacher] for o in t], [x[full] for x in targets]),
        "weak": lambda t, s: objective.weak_term(s, student_targets, is_full),
        "kd": lambda t, s: objective.kd_term(t[0], s[0], is_full, teacher_mask),
        "ent": lambda t, s: objective.ent_term(t[0], s[0], is_full, teacher_mask)}
    for name, term in terms.items():
        if name == "sup" and not bool(is_full.any()):
            parts[name] = None
            continue
        t, s = _leaves(teacher), _leaves(student)
        parts[name] = timed(lambda term=term, t=t, s=s: _forward_backward(lambda: term(t, s), device))[1]
    return parts


def _optimizer_step(trainer) -> None:
    import torch

    scaler = trainer.grad_scaler
    if scaler is not None:
        scaler.unscale_(trainer.optimizer)
    torch.nn.utils.clip_grad_norm_(trainer.network.parameters(), 12)
    if scaler is not None:
        scaler.step(trainer.optimizer)
        scaler.update()
    else:
        trainer.optimizer.step()


def profile_batch(trainer, batch: dict, device: str) -> dict:
    """Seconds of every part of :data:`PARTS` for one batch (``None`` where the trainer has no such part)."""
    from nnunetv2_confkd.training.mixed_loading import unwrap
    from nnunetv2_confkd.training.network import teacher_skips

    timed = _timer(device)
    net = unwrap(trainer.network)
    parts = dict.fromkeys(PARTS)
    (data, targets, is_full, teacher_mask, teacher_cases), parts["prepare"] = timed(lambda: _prepare(trainer, batch))
    trainer.optimizer.zero_grad(set_to_none=True)
    skips, parts["encoder"] = timed(lambda: _forward_backward(lambda: net.encoder(data), device))
    skips = [s.detach() for s in skips]
    confkd = hasattr(net, "student_decoder")
    student, parts["decoder"] = timed(lambda: _forward_backward(
        lambda: (net.student_decoder if confkd else net.decoder)(_leaves(skips)), device))
    student, teacher = _detached(student), None
    if confkd:
        teacher, parts["teacher_decoder"] = timed(lambda: _forward_backward(
            lambda: net.teacher_decoder(teacher_skips(_leaves(skips), teacher_cases)), device))
        teacher = _detached(teacher)
    parts.update(_loss_parts(trainer, teacher, student, targets, is_full, teacher_mask, timed, device))
    _, parts["optimizer"] = timed(lambda: _optimizer_step(trainer))
    trainer.optimizer.zero_grad(set_to_none=True)
    return parts


def profile_batches(trainer, batches: list[dict], device: str) -> dict[str, list[float] | None]:
    """Per part, the seconds of every batch (``None`` where the trainer has no such part)."""
    runs = [profile_batch(trainer, b, device) for b in batches]
    return {p: None if any(r[p] is None for r in runs) else [float(r[p]) for r in runs] for p in PARTS}


def summarize_profile(runs: list[dict]) -> dict:
    """Median milliseconds per step of every part over all profiled batches of all repeats of one trainer, with
    ``load``, ``step`` and ``other`` (step minus the parts); ``None`` for a part the trainer does not have."""
    pooled = {p: [x for r in runs for x in (r["profile_s"][p] or [])] for p in PARTS}
    ms = {p: float(np.median(v)) * 1000 if v else None for p, v in pooled.items()}
    load = [x for r in runs for x in r["load_times_s"]]
    step = float(np.median(np.concatenate([r["step_times_s"] for r in runs]))) * 1000
    summed = sum(v for v in ms.values() if v is not None)
    return {"median_ms": {"load": float(np.median(load)) * 1000, "step": step, **ms, "other": step - summed},
            "profiled_batches": len(pooled["encoder"]), "loaded_batches": len(load)}


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def format_profile_table(report: dict) -> str:
    """Markdown table of the per-part median milliseconds of every trainer that was profiled.

    Example:
        >>> parts = dict.fromkeys(COLUMNS, 1.0) | {"prepare": 0.5, "teacher_decoder": None}
        >>> print(format_profile_table({"results": [{"trainer": "T", "cases_per_step": 4,
        ...                                          "profile": {"median_ms": parts}}]}))
        | trainer | cases/step | load | step | encoder | decoder | teacher decoder | seeds | sup | weak | kd | ent | optimizer | other |
        |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
        | T | 4 | 1.0 | 1.0 | 1.0 | 1.0 | – | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 |
    """  # noqa: E501
    lines = ["| trainer | cases/step | " + " | ".join(HEADERS.get(c, c) for c in COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(COLUMNS)]
    for r in report["results"]:
        if r.get("profile"):
            ms = r["profile"]["median_ms"]
            lines.append(f"| {r['trainer']} | {r['cases_per_step']} | " + " | ".join(_cell(ms[c]) for c in COLUMNS)
                         + " |")
    return "\n".join(lines)
