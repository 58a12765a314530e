"""Temporary files and folders of this process (a backbone shipped to a Train worker, a checkpoint being written or
read, a local copy of a remote file), named after the process that made them so that a later one can remove what a
killed one left. Ray kills the Train workers of a trial it stops, and no ``finally`` runs in them: each one left its
copy of the shipped backbone (528 MB for VGG16) in the temp dir for good.

Names: ``<temp dir>/orchestrator-<uid>-<host>-<pid>-<start>-<random><suffix>`` (host: 8 hex digits of a hash of this
host's name and pid namespace; start: the process's start time from /proc, ``x`` where unknown). A process's first
scratch in a temp dir removes the scratch of processes of this user and host that are gone (``processes.running``); other users' and
other hosts' (a temp dir shared by machines) are theirs to judge.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile

from . import processes

_NAME = re.compile(r"orchestrator-(\d+)-([0-9a-f]{8})-(\d+)-(\d+|x)-")
_swept: set = set()   # (pid, temp dir) pairs whose sweep has run: once per process and temp dir


def _prefix() -> str:
    pid = os.getpid()
    return f"orchestrator-{os.getuid()}-{processes.host_id()}-{pid}-{processes.start_of(pid) or 'x'}-"


def mkdtemp() -> str:
    """A new folder of this process's scratch (the caller removes it)."""
    sweep()
    return tempfile.mkdtemp(prefix=_prefix())


def mkstemp(suffix: str = "") -> tuple[int, str]:
    """A new file of this process's scratch, open: ``(fd, path)`` (the caller removes it)."""
    sweep()
    return tempfile.mkstemp(prefix=_prefix(), suffix=suffix)


def own_file(path: str, *, append: bool = False) -> int:
    """A descriptor of ``path`` (a fixed name in a shared temp dir) open for writing, created 0600: a symlink there, or
    another user's file, is refused (OSError), as another user could point it at a file of ours."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else 0), 0o600)
    st = os.fstat(fd)
    if st.st_uid != os.getuid() or st.st_nlink != 1:   # another's, or a hard link to a file elsewhere
        os.close(fd)
        raise PermissionError(f"{path} belongs to another user or is linked elsewhere")
    if not append:
        os.ftruncate(fd, 0)   # only once it is known to be ours
    return fd


def sweep() -> list[str]:
    """Remove the scratch that gone processes of this user and host left in the temp dir (once per process and
    temp dir); the paths removed. Best effort: a file another sweep removed first, or one that can't go, is skipped."""
    root = tempfile.gettempdir()
    if (os.getpid(), root) in _swept:
        return []
    _swept.add((os.getpid(), root))
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return []   # mkstemp/mkdtemp will say what is wrong with the temp dir
    for name in names:
        m = _NAME.match(name)
        if not m or m[1] != str(os.getuid()) or not processes.this_host(m[2]) \
                or processes.running(int(m[3]), None if m[4] == "x" else m[4]):
            continue
        path = os.path.join(root, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(path)
        except OSError:
            continue
    return removed
