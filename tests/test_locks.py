"""Lock files of a study folder (``study/locks.py``): one holder at a time, the holder named, stale locks of this host
taken over, locks of other hosts only broken on request."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from nnunetv2_confkd.study.locks import LockHeld, StudyLock, holder_gone, lock_path, process_start


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(path, **holder) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": "2026-01-01T00:00:00+00:00",
                       "what": "run D/T/seed_0", "token": "theirs", **holder})
    path.write_text(text)
    return text


def test_lock_names_are_flat_files_below_locks(tmp_path):
    assert lock_path(tmp_path, "run/Dataset501_A/nnUNetTrainer/seed_0") == \
        tmp_path / "locks" / "run__Dataset501_A__nnUNetTrainer__seed_0.lock"


def test_a_second_acquisition_names_the_holder_and_leaves_its_lock_unchanged(tmp_path):
    path = lock_path(tmp_path, "run/D/T/seed_0")
    with StudyLock(path, "run D/T/seed_0"):
        held = path.read_bytes()
        holder = json.loads(held)
        assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid() and holder["since"]
        with pytest.raises(LockHeld) as error:
            StudyLock(path, "the same run again").acquire()
        message = str(error.value)
        assert f"host {socket.gethostname()}, pid {os.getpid()}, since {holder['since']}" in message
        assert str(path) in message and "--break-lock" in message
        assert path.read_bytes() == held
    assert not path.exists()  # released at the end


def test_the_lock_is_removed_when_the_work_fails(tmp_path):
    path = lock_path(tmp_path, "model/D/T/seed_0/fold_all")
    with pytest.raises(RuntimeError, match="training failed"), StudyLock(path):
        raise RuntimeError("training failed")
    assert not path.exists()


def test_a_stale_lock_of_a_dead_pid_on_this_host_is_taken_over(tmp_path, caplog):
    path = lock_path(tmp_path, "run/D/T/seed_0")
    _write_lock(path, pid=_dead_pid())
    with caplog.at_level(logging.WARNING), StudyLock(path, "mine") as lock:
        assert json.loads(path.read_text())["token"] == lock.token != "theirs"
    assert "its process is gone" in caplog.text and not path.exists()


def test_a_lock_whose_pid_now_belongs_to_another_process_is_stale(tmp_path):
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": process_start(os.getpid())}
    assert mine["process_start"] is not None and not holder_gone(mine)
    assert holder_gone({**mine, "process_start": "1"})  # the pid was reused by this (later) process


def test_a_lock_of_another_host_is_never_taken_over_without_break_lock(tmp_path, caplog):
    path = lock_path(tmp_path, "run/D/T/seed_0")
    text = _write_lock(path, host="other-node", pid=_dead_pid())
    with pytest.raises(LockHeld, match="host other-node"):
        StudyLock(path).acquire()
    assert path.read_text() == text
    with caplog.at_level(logging.WARNING), StudyLock(path, break_foreign=True):
        assert json.loads(path.read_text())["host"] == socket.gethostname()
    assert "--break-lock" in caplog.text


def test_break_lock_never_removes_a_live_lock_of_this_host(tmp_path):
    path = lock_path(tmp_path, "run/D/T/seed_0")
    text = _write_lock(path, process_start=process_start(os.getpid()))
    with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
        StudyLock(path, break_foreign=True).acquire()
    assert path.read_text() == text


def test_an_unreadable_lock_is_reported_not_taken_over(tmp_path):
    path = lock_path(tmp_path, "report")
    path.parent.mkdir()
    path.write_text("")
    with pytest.raises(LockHeld, match="cannot be read"):
        StudyLock(path).acquire()
    assert path.read_text() == ""


def test_a_lock_taken_over_by_another_job_is_left_to_it(tmp_path):
    path = lock_path(tmp_path, "run/D/T/seed_0")
    lock = StudyLock(path).acquire()
    text = _write_lock(path)  # e.g. removed by hand and taken by another job
    lock.release()
    assert path.read_text() == text


def test_waiting_for_a_lock_gives_up_after_the_wait(tmp_path):
    path = lock_path(tmp_path, "prepare/D")
    _write_lock(path, process_start=process_start(os.getpid()))
    seen = []
    with pytest.raises(LockHeld):
        StudyLock(path).acquire(wait=0.2, poll=0.05, on_wait=seen.append)
    assert len(seen) == 1 and seen[0]["what"] == "run D/T/seed_0"


def test_a_lock_acquired_with_a_wait_is_taken_once_by_with(tmp_path):
    path = lock_path(tmp_path, "prepare/D")
    with StudyLock(path).acquire(wait=1.0, poll=0.05) as lock:
        assert json.loads(path.read_text())["token"] == lock.token
    assert not path.exists()
