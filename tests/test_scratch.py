"""Scratch files named after their process (orchestrator.scratch) and the process checks behind them
(orchestrator.processes): what a sweep removes and what it leaves."""
from __future__ import annotations

import os
import subprocess
import tempfile
import time

import pytest

from orchestrator import processes, scratch


def test_a_sweep_removes_gone_processes_scratch_of_this_user_and_host_only(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])                              # a pid that has exited
    gone.wait()
    live = subprocess.Popen(["sleep", "60"])
    try:
        uid, host, start = os.getuid(), processes.host_id(), processes.start_of(live.pid)
        names = {
            "gone": f"orchestrator-{uid}-{host}-{gone.pid}-1-abc.keras",
            "gone, start unknown": f"orchestrator-{uid}-{host}-{gone.pid}-x-def",
            "live": f"orchestrator-{uid}-{host}-{live.pid}-{start}-ghi",
            "pid reused": f"orchestrator-{uid}-{host}-{live.pid}-{int(start) - 1}-jkl",   # not the process now
            "other host": f"orchestrator-{uid}-{'0' * 8 if host != '0' * 8 else '1' * 8}-{gone.pid}-1-mno",
            "other user": f"orchestrator-{uid + 1}-{host}-{gone.pid}-1-pqr",
            "not ours": "orchestrator-0-tensorflow.log",
        }
        for what, name in names.items():
            (tmp_path / name).mkdir() if what == "gone" else (tmp_path / name).write_text(what)
        (tmp_path / names["gone"] / "model.keras").write_text("weights")
        removed = {os.path.basename(p) for p in scratch.sweep()}
        assert removed == {names["gone"], names["gone, start unknown"], names["pid reused"]}, removed
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(names.values()) - removed)
        assert scratch.sweep() == []                                 # once per process and temp dir
        fd, path = scratch.mkstemp(".keras")
        os.close(fd)
        assert os.path.basename(path).startswith(f"orchestrator-{uid}-{host}-{os.getpid()}-")
    finally:
        live.kill()


def test_a_zombie_a_reused_pid_and_another_users_process(tmp_path):
    child = subprocess.Popen(["true"])
    start = processes.start_of(child.pid)
    for _ in range(100):                                            # exited, not reaped yet: a zombie
        with open(f"/proc/{child.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.02)
    assert not processes.running(child.pid, start) and not processes.running(child.pid)
    child.wait()
    me = os.getpid()
    assert processes.running(me, processes.start_of(me)) and processes.running(me)
    assert not processes.running(me, str(int(processes.start_of(me)) + 1))   # a later process given this pid
    assert processes.running(1)                                      # another user's, or init: not ours to judge
    assert not processes.running(0) and not processes.running(-5)


def test_files_at_fixed_names_in_the_temp_dir_do_not_follow_another_users_link(tmp_path, monkeypatch):
    """The last error's traceback and TensorFlow's start-up log live at fixed names in the shared temp dir, opened
    with a plain open(): another local user's symlink there made us overwrite (or append to) any file of ours it
    pointed at. Found by a helper's audit."""
    import tempfile

    from orchestrator import console
    from orchestrator.cli.main import _traceback_file

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    precious = tmp_path / "precious.txt"
    precious.write_text("precious")
    os.symlink(precious, tmp_path / f"orchestrator-{os.getuid()}-last-error.txt")
    try:
        raise ValueError("a bug")
    except ValueError as e:
        where = _traceback_file(e)
    assert precious.read_text() == "precious" and "precious" not in where
    link = tmp_path / "tf.log"
    os.symlink(precious, link)
    with console.stderr_to(str(link)):
        os.write(2, b"noise\n")
    assert precious.read_text() == "precious"
    own = tmp_path / "own.log"
    with console.stderr_to(str(own)):
        os.write(2, b"noise\n")
    assert own.read_text() == "noise\n" and (own.stat().st_mode & 0o777) == 0o600


def test_a_fixed_name_hard_linked_to_a_file_of_ours_is_not_written_through(tmp_path, monkeypatch):
    """O_NOFOLLOW stops a symbolic link, not a hard link to a file of ours (where the protection of hard links is
    off), and the file was truncated before its owner was checked. Found by a helper's review."""
    from orchestrator.scratch import own_file

    precious = tmp_path / "precious.txt"
    precious.write_text("precious")
    os.link(precious, tmp_path / "fixed.log")
    with pytest.raises(PermissionError):
        own_file(str(tmp_path / "fixed.log"))
    assert precious.read_text() == "precious"


def test_two_machines_of_one_hostname_are_two_hosts(monkeypatch):
    """host_id hashed the hostname and the pid namespace, which is the same on every machine's main namespace: two
    machines named alike were one host, and a lease, spool, disk cache or scratch of a live process on one was judged
    dead on the other by its pid and taken over or removed. The machine's id counts too (kept across reboots: a
    killed command's disk cache is still removed after one). Found by a helper's audit."""
    here = processes.host_id()
    legacy = processes._hashed(processes._legacy())                     # what older code recorded
    monkeypatch.setattr(processes, "_machine_id", lambda: "another-machine")
    elsewhere = processes.host_id()
    monkeypatch.undo()
    assert elsewhere != here and processes.this_host(here) and not processes.this_host(elsewhere)
    assert processes.this_host(legacy)                                  # older records are judged as older code did
    from orchestrator.training import lease

    held = {"host_id": elsewhere, "pid": 999999999, "expires": time.time() + 60}   # a live holder over there
    assert not lease.is_stale(held) and lease.is_stale({**held, "host_id": here})
