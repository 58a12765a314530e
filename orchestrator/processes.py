"""Is a process of this host still running, and still the one a record names? A record keeps a pid and that pid's
start time (Linux's /proc), so a pid the kernel gave to a later process does not count as the recorded one.
Used by leases, disk-cache owners and scratch files, each with ``host_id``; a process of another user counts as
running (it cannot be signalled, and is not ours to judge)."""
from __future__ import annotations

import hashlib
import os
import socket
from typing import Optional


def host_id() -> str:
    """This machine and pid namespace: where a recorded pid means this process table's pid. A container sharing the
    host's name (--net=host) and its /tmp has pids this one cannot see, and two machines may share a hostname (every
    machine's main pid namespace has the same id), so the machine's id (/etc/machine-id, kept across reboots) counts
    too: only a record of this host (``this_host``) may be judged dead here by its pid."""
    return _hashed(f"{_legacy()} {_machine_id()}")


def this_host(recorded: str | None) -> bool:
    """A record's host id is this host's: today's, or the one older code recorded (hostname and pid namespace only),
    judged as that code judged it."""
    return recorded in (host_id(), _hashed(_legacy()))


def _legacy() -> str:
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()} {namespace}"


def _hashed(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _machine_id() -> str:
    """The machine's id (systemd's /etc/machine-id, or D-Bus's); none elsewhere: there the hostname tells machines
    apart."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            continue
    return ""


def _stat(pid: int) -> Optional[list[str]]:
    """The fields of /proc/<pid>/stat after the command name (state first); None where unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_of(pid: int) -> Optional[str]:
    """When ``pid`` started (clock ticks since boot, as /proc says), or None where unknown."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def running(pid: int, start: Optional[str] = None) -> bool:
    """``pid`` runs (not a zombie) and, when ``start`` is given and knowable, is the process that started then.
    Unsure counts as running."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    fields = _stat(pid)
    if fields is None:
        return True
    if fields[0] == "Z":   # exited; its parent has not reaped it yet
        return False
    return start is None or len(fields) <= 19 or fields[19] == start
