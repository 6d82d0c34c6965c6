"""Lock files in a study folder (``OUT/locks/<name>.lock``): one job at a time trains a model, prepares a dataset or
writes the report, so that jobs of one study (a SLURM array, two machines on a shared folder) never write the same
files.

A lock is created with ``os.open(O_CREAT | O_EXCL)``, which fails if the file exists, and holds its holder as JSON:
host, pid, the process's start time (Linux ``/proc``), the UTC time it was taken and what it guards. It is removed
when the work ends, also on failure (context manager), and only by its holder (a random token in the file).

A lock whose holder is gone (a killed job) is stale. On the host that holds it this can be checked: a lock whose pid
is no longer alive, or is now another process, is taken over with a warning. A lock of another host (or one whose
content cannot be read) is never taken over automatically: :class:`LockHeld` says who holds it and how to remove it,
and ``break_foreign`` removes it where the user says that job is gone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from nnunetv2_confkd.study.provenance import utc_now

logger = logging.getLogger(__name__)


def lock_path(out: Path, name: str) -> Path:
    """``OUT/locks/<name>.lock``, with every character outside ``[A-Za-z0-9_.-]`` of ``name`` (e.g. ``/``) as
    ``__``."""
    return Path(out) / "locks" / (re.sub(r"[^A-Za-z0-9_.-]", "__", name) + ".lock")


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat``, field 22), which tells a
    reused pid from the process that held a lock; ``None`` where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # the fields after the command name start at field 3


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (signal 0: nothing is sent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def holder_gone(holder: dict) -> bool:
    """Whether a lock's holder is known to be gone: on this host, its pid is dead or now belongs to a process that
    started later. ``False`` for a holder on another host (that cannot be checked from here)."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = int(holder["pid"])
    if not pid_alive(pid):
        return True
    started = holder.get("process_start")
    return started is not None and process_start(pid) not in (None, started)


def describe(holder: dict | None) -> str:
    """``host H, pid P, since T (what)``, or a note that the lock's content cannot be read."""
    if holder is None:
        return "a holder that cannot be read (empty or damaged lock file)"
    what = f" ({holder['what']})" if holder.get("what") else ""
    return f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}{what}"


class LockHeld(RuntimeError):
    """The lock is held by a live job, or by a job this host cannot check; the message names the holder and says how
    to remove the lock once that job is gone."""

    def __init__(self, path: Path, holder: dict | None):
        self.path, self.holder = Path(path), holder
        super().__init__(f"locked by {describe(holder)}: {path}. If that job is no longer running, remove the lock "
                         f"(rm {path}) or run again with --break-lock")


class StudyLock:
    """A lock file (see the module docstring); ``what`` says in the file what it guards."""

    def __init__(self, path: Path, what: str = "", break_foreign: bool = False):
        self.path, self.what, self.break_foreign = Path(path), what, break_foreign
        self.token: str | None = None

    def read(self, attempts: int = 10) -> dict | None:
        """The holder in the lock file (``None`` if it cannot be read; a file being created is retried); raises
        ``FileNotFoundError`` when there is no lock."""
        for _ in range(attempts):
            text = self.path.read_text()
            try:
                holder = json.loads(text)
                if isinstance(holder, dict) and "pid" in holder:
                    return holder
            except json.JSONDecodeError:
                pass
            time.sleep(0.1)  # created, content not written yet
        return None

    def _create(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        token = uuid.uuid4().hex
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": process_start(os.getpid()),
                  "since": utc_now(), "what": self.what, "token": token}
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(holder))
        self.token = token
        return True

    def _remove_stale(self, seen: str, holder: dict | None, reason: str) -> None:
        """Move the lock aside, and delete it only if it is still the one judged stale (else put it back)."""
        aside = self.path.with_name(f"{self.path.name}.{os.getpid()}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # removed meanwhile
        if aside.read_text() == seen:
            aside.unlink()
            logger.warning("%s: removed the lock of %s (%s)", self.path, describe(holder), reason)
            return
        try:  # another job took the lock over meanwhile: give it back
            os.link(aside, self.path)
        except FileExistsError:
            pass
        aside.unlink()

    def acquire(self, wait: float = 0.0, poll: float = 2.0, on_wait: Callable[[dict | None], None] | None = None
                ) -> StudyLock:
        """Take the lock; wait up to ``wait`` seconds (``float("inf")``: for ever) for a live holder, calling
        ``on_wait(holder)`` once when it starts waiting. Raises :class:`LockHeld`."""
        deadline, waited = time.monotonic() + wait, False
        while not self._create():
            try:
                holder = self.read()
                seen = self.path.read_text()  # complete once readable: what a takeover must find unchanged
            except FileNotFoundError:
                continue  # released meanwhile
            if holder is not None and holder_gone(holder):
                self._remove_stale(seen, holder, "its process is gone")
                continue
            if self.break_foreign and (holder is None or holder.get("host") != socket.gethostname()):
                self._remove_stale(seen, holder, "--break-lock")
                continue
            if time.monotonic() >= deadline:
                raise LockHeld(self.path, holder)
            if not waited and on_wait is not None:
                on_wait(holder)
            waited = True
            time.sleep(poll)
        return self

    def release(self) -> None:
        """Remove the lock if this object holds it (a lock taken over by another job is left to that job)."""
        if self.token is None:
            return
        try:
            holder = self.read()
        except FileNotFoundError:
            holder = None
        if holder is not None and holder.get("token") == self.token:
            self.path.unlink()
        else:
            logger.warning("%s: no longer held by this job (now %s); left in place", self.path, describe(holder))
        self.token = None

    def __enter__(self) -> StudyLock:
        return self if self.token is not None else self.acquire()  # ``with lock.acquire(wait):`` takes it once

    def __exit__(self, *exc) -> None:
        self.release()
