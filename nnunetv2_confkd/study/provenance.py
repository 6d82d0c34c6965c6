"""Provenance of a result: when, on which machine and with which code it was made, and how it is written safely.

Shared by the cost benchmark (``confkd_benchmark_cost``), the study runner (``confkd_benchmark``) and its report, so
that every record and report names its commit, CPU and date the same way. Recorded commands name no folder of the
machine that made them (:func:`portable_command`): a path is written relative to the study folder, or from one of
nnU-Net's folder variables (``$nnUNet_raw/...``).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (the date stamp of reports and records)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def cpu_model() -> str:
    """``model name`` of ``/proc/cpuinfo``, else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit(repo: Path) -> str | None:
    """``git rev-parse HEAD`` of ``repo``, or ``None`` (no git, not a repository)."""
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages, or ``None``."""
    try:
        return [float(x) for x in os.getloadavg()]
    except OSError:
        return None


def busy_warning(load: list[float] | None, cores: int | None, share: float = 0.5) -> str | None:
    """A warning when the 1-minute load average before a timing run exceeds ``share`` of the cores, else ``None``."""
    if not load or not cores or load[0] <= share * cores:
        return None
    return (f"the machine was busy when timing started (1-minute load average {load[0]:.1f} on {cores} cores): step "
            "times and their ratios may be distorted; rerun on an idle machine")


def machine_metadata() -> dict:
    """Where and with what code a run or a report was made: git commit, CPU, platform, package versions."""
    return {"git_commit": git_commit(Path(__file__).resolve().parents[1]), "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "versions": {p: version(p) for p in ("torch", "nnunetv2", "monai", "numpy")}}


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON via a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def _absolute(path: str | os.PathLike, cwd: str | os.PathLike | None) -> str | None:
    """``path`` made absolute against ``cwd`` and normalised (no file system access); ``None`` for a relative path
    without ``cwd``."""
    text = os.fspath(path)
    if not os.path.isabs(text):
        if cwd is None:
            return None
        text = os.path.join(os.fspath(cwd), text)
    return os.path.normpath(text)


def _inside(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder`` (``"."`` for the folder itself) when it lies in it, else ``None``."""
    rel = os.path.relpath(path, folder)
    return None if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def _portable_parts(path: str | os.PathLike, study_folder: str | os.PathLike, environ: Mapping[str, str],
                    cwd: str | os.PathLike | None) -> tuple[str | None, str]:
    """``(variable, rest)`` of :func:`portable_path`: ``("nnUNet_raw", "Dataset1")`` for ``$nnUNet_raw/Dataset1``,
    ``(None, text)`` for a path written relative to the study folder (or a relative path left as it is)."""
    absolute = _absolute(path, cwd)
    if absolute is None:
        return None, os.fspath(path)
    study = _absolute(study_folder, cwd)
    if study is None:
        raise ValueError(f"study folder {os.fspath(study_folder)!r} is relative and no cwd was given")
    inside_study = _inside(absolute, study)
    if inside_study is not None:
        return None, inside_study
    roots = [(root, var) for var in NNUNET_FOLDERS if environ.get(var)
             and (root := _absolute(environ[var], cwd)) is not None]
    for root, var in sorted(roots, key=lambda r: -len(r[0])):  # the deepest folder that holds the path
        rel = _inside(absolute, root)
        if rel is not None:
            return var, "" if rel == "." else rel
    return None, os.path.relpath(absolute, study)


def portable_path(path: str | os.PathLike, study_folder: str | os.PathLike, environ: Mapping[str, str],
                  cwd: str | os.PathLike | None = None) -> str:
    """``path`` written without the machine's folders.

    A path inside ``study_folder`` is written relative to it (the folder itself as ``"."``); else a path inside a
    folder named by one of nnU-Net's variables in ``environ`` (``nnUNet_raw``, ``nnUNet_preprocessed``,
    ``nnUNet_results``; the deepest such folder) as ``$VARIABLE/...``; else relative to ``study_folder``. A relative
    ``path`` is taken relative to ``cwd``, and left as it is without one. Pure: nothing is read from the file system
    or the process.

    Example:
        >>> env = {"nnUNet_raw": "/data/raw"}
        >>> [portable_path(p, "/data/study", env) for p in ("/data/study", "/data/study/runs/a.json",
        ...                                                 "/data/raw/Dataset501_A", "/data/cost")]
        ['.', 'runs/a.json', '$nnUNet_raw/Dataset501_A', '../cost']
        >>> portable_path("study", "/data/study", env, cwd="/data")
        '.'
    """
    var, rest = _portable_parts(path, study_folder, environ, cwd)
    if var is None:
        return rest
    return f"${var}/{rest}" if rest else f"${var}"


def _quote(var: str | None, rest: str) -> str:
    """Shell form of :func:`_portable_parts`' result: the variable stays expandable, the rest is quoted if needed."""
    if var is None:
        return shlex.quote(rest)
    return f"${var}" + (shlex.quote(f"/{rest}") if rest else "")


def portable_command(argv: Iterable[str], study_folder: str | os.PathLike, environ: Mapping[str, str],
                     cwd: str | os.PathLike | None = None, path_options: Iterable[str] = ()) -> str:
    """The command line ``argv`` (program name first) as a shell string, every path in it written by
    :func:`portable_path`.

    A path is every absolute argument (also as the value of ``--option=VALUE``) and the value of every option in
    ``path_options`` (``-o DIR`` or ``-o=DIR``; relative values are taken relative to ``cwd``). Other arguments are
    kept as they are (quoted as ``shlex.join`` quotes them).

    Example:
        >>> portable_command(["confkd_benchmark", "-d", "501", "-o", "/data/study", "-i", "/data/raw/Dataset501_A"],
        ...                  "/data/study", {"nnUNet_raw": "/data/raw"}, path_options=("-o",))
        'confkd_benchmark -d 501 -o . -i $nnUNet_raw/Dataset501_A'
        >>> portable_command(["confkd_benchmark", "--report-only", "--out", "docs/acdc_study"],
        ...                  "/data/repo/docs/acdc_study", {}, cwd="/data/repo", path_options=("-o", "--out"))
        'confkd_benchmark --report-only --out .'
    """
    path_options = frozenset(path_options)
    words, value_is_path = [], False
    for token in argv:
        option, equals, value = token.partition("=")
        if value_is_path or os.path.isabs(token):
            words.append(_quote(*_portable_parts(token, study_folder, environ, cwd)))
        elif token.startswith("-") and equals and (option in path_options or os.path.isabs(value)):
            words.append(shlex.quote(option + "=") + _quote(*_portable_parts(value, study_folder, environ, cwd)))
        else:
            words.append(shlex.quote(token))
        value_is_path = not value_is_path and token in path_options
    return " ".join(words)
