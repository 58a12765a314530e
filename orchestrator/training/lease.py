"""One writer per run folder: an exclusive lease, ``<run>/lease.json`` = ``{owner, host, host_id, pid, expires}``.

The holder extends its lease every ``HEARTBEAT_S`` (a thread) and deletes the file when it ends. Locally it moves
the file's mtime to the new expiry through its own descriptor and never rewrites the content, so a takeover's lease,
which is a new file, can't be overwritten by a beat that read the lease just before it; such a lease says
``renews: mtime``, and ``read`` takes the later of its ``expires`` and its mtime. Another process
takes the folder over only when the lease has expired (``EXPIRY_S`` after the last heartbeat), or when its holder
ran on this host, in this pid namespace (``processes.host_id``: a container sharing the host's name sees other pids),
and that PID is dead (a killed `train` or sweep, resumed at once). Anything else is refused with one line naming the
holder.

Local storage: the lease is created exclusively (``O_EXCL``, atomic on one file system), and read, judged and taken
over by one process at a time (a lock on the run folder). Object stores (S3 through
pyarrow, which has no conditional put): written, then read back after a pause to see who won. Two starts in the
same second can both pass there; README "Failures and resume" says so.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Optional

from .. import layout, processes, storage
from ..errors import UserError

HEARTBEAT_S = 10.0
EXPIRY_S = 60.0
SETTLE_S = 1.0   # object stores: how long a writer waits before reading back who holds the lease


class RunInUse(UserError):
    """Another live process holds the run folder's lease."""


class Lease:
    """A held lease; ``release()`` (or leaving the ``with`` block) stops the heartbeat and deletes the file. The
    process of a ``with`` block whose lease another process takes over ends at once (``_end_process``); used
    without ``with``, ``lost`` is set and ``check`` raises ``RunInUse``."""

    def __init__(self, run_dir: str, record: dict):
        self.run_dir, self.record = run_dir, record
        self.location = layout.lease_file(run_dir)
        self.lost, self.taker = False, None   # another process took the lease over (this one looked dead to it)
        self._fd = None if storage.is_uri(self.location) else os.open(self.location, os.O_RDONLY)
        self._stop, self._guarding = threading.Event(), False
        self._thread = threading.Thread(target=self._beat, daemon=True, name="orchestrator-lease")
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                holder = _read_or_raise(self.run_dir)
            except OSError:
                continue   # storage hiccup: unknown, not lost; the next beat reads again (the lease lasts EXPIRY_S)
            if holder is not None and holder.get("owner") != self.record["owner"]:
                self.lost, self.taker = True, holder.get("owner", "another process")
                if self._guarding and not self._stop.is_set():
                    _end_process(self)
                return
            try:
                self.record = {**self.record, "expires": time.time() + EXPIRY_S}
                if self._fd is None:   # object store: no conditional put, so rewrite (README says what that risks)
                    storage.atomic_write(self.location, json.dumps(self.record).encode())
                else:   # our own file only: after a takeover this touches the file that was moved aside
                    os.utime(self._fd, (self.record["expires"], self.record["expires"]))
            except OSError:
                pass   # storage hiccup: the next beat tries again

    def release(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        try:
            if (read(self.run_dir) or {}).get("owner") == self.record["owner"] and self._still_ours():
                fs, path = storage.filesystem(self.location)
                fs.delete_file(path)
                if self._fd is not None:
                    os.rmdir(os.path.dirname(self.location))   # a run refused before it wrote: no empty folder
        except OSError:
            pass   # it expires by itself (a folder with files in it stays)
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _still_ours(self) -> bool:
        return self._fd is None or os.fstat(self._fd).st_ino == os.stat(self.location).st_ino

    def __enter__(self) -> "Lease":
        self._guarding = True   # the block is the holder's work: losing the lease ends the process
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self.check()

    def check(self) -> None:
        """RunInUse when another process took the lease over: call before a side effect on the folder."""
        if self.lost:
            raise RunInUse(self.lost_line())

    def lost_line(self) -> str:
        return (f"{self.record['owner'].rsplit(' ', 1)[0]} lost {storage.redact(self.run_dir)} to {self.taker} (this "
                f"process looked dead to it: its lease went unrenewed for {EXPIRY_S:.0f} s) and stopped; the run goes "
                f"on there")


def read(run_dir: str) -> Optional[dict]:
    try:
        return _read_or_raise(run_dir)
    except OSError:
        return None


def _read_or_raise(run_dir: str) -> Optional[dict]:
    """The lease's record; None when there is no lease file (or it does not parse); OSError when it cannot be read."""
    location = layout.lease_file(run_dir)
    try:
        mtime = None if storage.is_uri(location) else os.stat(location).st_mtime
        return _record(storage.read_bytes(location), mtime)
    except FileNotFoundError:
        return None


def _end_process(held: "Lease") -> None:
    """The holder of a lease another process took over ends at once, as the taker assumed it had: one line, exit
    code 2, nothing more written (no Tune or Train shutdown into the folder; Ray ends this driver's workers). A
    signal would not do: Ray job entrypoints run with SIGINT blocked."""
    try:
        sys.stderr.write(f"error: {held.lost_line()}\n")
        sys.stderr.flush()
    finally:
        os._exit(RunInUse.exit_code)


def _record(raw: bytes | str, mtime: Optional[float]) -> Optional[dict]:
    """A lease file's record, None unless its ``expires`` and ``pid`` are numbers; a local holder's (``renews:
    mtime``) expires when its file's mtime says."""
    try:
        record = json.loads(raw)
        record["expires"], record["pid"] = float(record.get("expires", 0)), int(record.get("pid", 0))
        if mtime is not None and record.get("renews") == "mtime":
            record["expires"] = max(record["expires"], mtime)
        return record
    except (ValueError, TypeError, AttributeError, OverflowError):
        return None


def acquire(run_dir: str, *, what: str, wait_s: float = 0.0, poll_s: float = 1.0,
            kept_before: tuple[str, ...] = ()) -> Lease:
    """Take the run folder's lease for ``what`` (e.g. "train run x"); ``RunInUse`` if a live holder keeps it
    for longer than ``wait_s``. ``kept_before``: folders where older code kept this lease; a live holder there
    keeps it too (they are read, never written)."""
    record = {"owner": f"{what} {uuid.uuid4().hex[:12]}", "host": socket.gethostname(), "host_id": processes.host_id(),
              "pid": os.getpid(), "expires": time.time() + EXPIRY_S}
    deadline = time.monotonic() + wait_s
    while True:
        folder, holder = live_holder(kept_before)
        if holder is None:
            folder, holder = run_dir, _try(run_dir, record)
        if holder is None:
            return Lease(run_dir, record)
        if time.monotonic() >= deadline:
            raise RunInUse(in_use_line(folder, holder))
        time.sleep(poll_s)


def live_holder(folders: tuple[str, ...]) -> tuple[Optional[str], Optional[dict]]:
    """The first of ``folders`` (where older code kept a lease) whose lease a live process holds, and its record;
    (None, None) if none does (an unreadable lease counts as none: these are read only). Ray Tune uploads its
    stale copy of a lease at its sweep folder's top level every few seconds (a resumed older driver's), so there
    any write to the file counts as a renewal: the lease lasts EXPIRY_S past its last modification."""
    for folder in folders:
        holder = read(folder)
        if holder is None:
            continue
        try:
            mtime_ns = storage.file_stats([layout.lease_file(folder)])[0][1]
        except OSError:
            mtime_ns = None
        if mtime_ns is not None:
            written = mtime_ns / 1e9   # a local holder moves it to its new expiry; an upload, to the upload's time
            holder["expires"] = max(holder["expires"], written if written > time.time() else written + EXPIRY_S)
        if not is_stale(holder):
            return folder, holder
    return None, None


def in_use_line(run_dir: str, holder: dict) -> str:
    left = max(0, round(float(holder.get("expires", 0)) - time.time()))
    return (f"{storage.redact(run_dir)} is in use by {holder.get('owner', '?').rsplit(' ', 1)[0]} on host "
            f"{holder.get('host')}, pid {holder.get('pid')} (its lease {layout.LEASE_FILE} runs {left} s more): "
            f"wait for it to end or stop it, or use another name")


def is_stale(holder: dict, *, now: Optional[float] = None) -> bool:
    """Expired, or held by a dead process of this host and pid namespace (``processes.host_id``: another namespace's
    pid is not seen here, and a record without one, of older code, waits for its expiry)."""
    if float(holder.get("expires", 0)) <= (now or time.time()):
        return True
    return processes.this_host(holder.get("host_id")) and not processes.running(int(holder.get("pid", 0)))


def _try(run_dir: str, record: dict) -> Optional[dict]:
    """None once ``record`` holds the lease, else the live holder's record."""
    location = layout.lease_file(run_dir)
    if storage.is_uri(location):
        return _try_object_store(run_dir, record)
    path = os.path.abspath(location)
    os.makedirs(os.path.dirname(path), exist_ok=True)   # a folder that can't be made is an error of the lease's own
    with one_at_a_time(os.path.dirname(path)):
        return _try_local(path, run_dir, record)


@contextmanager
def one_at_a_time(folder: str):
    """Hold an exclusive lock on a local ``folder`` (flock on its descriptor: no file left behind) for a step two
    processes must not interleave: here reading, judging and taking over a lease (two takers of one stale lease each
    moved the other's new one aside, and both held the folder; heartbeats and readers don't take it); the sweep
    callback's look for the same work and write of its row; a merge into a leaderboard. Not reentrant. An object
    store's folder (a URI) has no such lock; where a local folder can't be made or opened, or the file system refuses
    the lock (some network mounts), the step goes on unlocked (its own errors are its)."""
    import fcntl

    fd = None
    if not storage.is_uri(folder):
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            pass
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass
        yield
    finally:
        if fd is not None:
            os.close(fd)   # closing the descriptor releases the lock


def _try_local(path: str, run_dir: str, record: dict) -> Optional[dict]:
    for attempt in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:   # the last holder's release removed the folder, empty, since it was made
            if attempt == 2:
                raise
            os.makedirs(os.path.dirname(path), exist_ok=True)
            continue
        except FileExistsError:
            holder = read(run_dir)
            if holder is None:   # being written this instant, or half-written by a crash
                holder = _unreadable(path)
                if holder is not None:
                    return holder
            elif not is_stale(holder):
                return holder
            _take_away(path, holder)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({**record, "renews": "mtime"}))
            f.flush()
            os.fsync(f.fileno())
        return None
    return read(run_dir) or {"owner": "another process", "expires": 0}


def _unreadable(path: str) -> Optional[dict]:
    """An unparseable lease younger than EXPIRY_S counts as held (its writer is writing); older, as stale."""
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    return {"owner": "another process", "expires": time.time() + EXPIRY_S - age} if age < EXPIRY_S else None


def _take_away(path: str, stale: dict) -> None:
    """Move a stale lease aside; if it changed meanwhile (someone else took over), put it back."""
    aside = f"{path}.{uuid.uuid4().hex[:8]}.stale"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    try:
        with open(aside) as f:
            moved = _record(f.read(), os.fstat(f.fileno()).st_mtime)   # a renewal moves the mtime only
    except OSError:
        moved = None
    if moved is not None and moved != stale:
        try:
            os.link(aside, path)   # a fresh lease: restore it (fails if yet another one is there already)
        except FileExistsError:
            pass
    os.unlink(aside)


def _try_object_store(run_dir: str, record: dict) -> Optional[dict]:
    holder = read(run_dir)
    if holder is not None and not is_stale(holder):
        return holder
    storage.atomic_write(layout.lease_file(run_dir), json.dumps(record).encode())
    time.sleep(SETTLE_S)
    holder = read(run_dir)
    return None if holder and holder.get("owner") == record["owner"] else holder or {"owner": "another process",
                                                                                     "expires": 0}
