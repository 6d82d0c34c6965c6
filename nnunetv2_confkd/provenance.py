"""Provenance of a result: when, on which machine and with which code it was made, and how it is written safely.

Shared by the cost benchmark (``confkd_benchmark_cost``), the study runner (``confkd_benchmark``) and its report, so
that every record and report names its commit, CPU and date the same way.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
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
