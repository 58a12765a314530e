"""``data.cache: disk``: decoded units as uint8 ``.npy`` files on each node's disk, read memory-mapped.

One cache per node, data set and command (key: data fingerprint + decode options + the image files' sizes and
mtimes + the command: a sweep and its ``--resume``, a train run, ... + the code's training revision and Pillow's
version), so the trials of a sweep on one node share it and no command removes another's. Units are dealt to
ranks anew every epoch, so a node may need any unit: the cache holds units, not shards. It is filled lazily: the first worker that needs a unit decodes it (in its own
process, two at a time) and writes it to a temporary file renamed into place, so a half-written file is never read;
two writers of one unit write the same bytes, and the last rename wins. Later epochs and later trials read the
files memory-mapped, at the speed of the page cache. The driver removes the folder on every node when the command
ends; a killed sweep leaves it for ``--resume``. Each folder holds its command's owner record (driver host and
process): the next disk-cache command of that host removes the folders of its killed commands, sweeps' excepted.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional

import numpy as np

from .. import processes
from ..storage import fsync_dir

DEFAULT_ROOT = os.path.join(os.path.expanduser("~"), ".cache", "orchestrator", "decoded")
DECODERS = 2           # units decoded at once by a worker on a cache miss
SHUFFLE_UNITS = 4      # units mixed in a worker's shuffle buffer


def root(cache_dir: Optional[str]) -> str:
    """The cache root on each node: ``data.cache_dir`` (absolute, or under ``~``), else ``DEFAULT_ROOT``. A relative
    one is a ConfigError: taken against the driver's working directory, it would name a folder of the driver's
    machine (or of a Ray job's code upload) on every node."""
    if not cache_dir:
        return DEFAULT_ROOT
    path = os.path.expanduser(cache_dir)
    if not os.path.isabs(path):
        from ..errors import ConfigError

        raise ConfigError(f"data.cache_dir {cache_dir!r} is relative: give an absolute path (or one under ~) on the "
                          f"nodes' local disks")
    return path


def file_stats(units: list[dict]) -> list:
    """(size, mtime) of every image or Parquet file the units read, in order (pixels in memory: none)."""
    from ..storage import file_stats as stats

    return stats(sorted({p for u in units for p in u.get("paths", [])} | {u["parquet"][0] for u in units
                                                                         if "parquet" in u}))


def cache_folder(cache_dir: Optional[str], *, fingerprint: str, opts: dict, stats: list, owner: str) -> str:
    """The folder of one command's (``owner``: a sweep and its --resume, a train run, ...) cache of this data as
    this code decodes it: a folder left by a killed command never serves older code's pixels, and a command that
    ends removes its own folder only."""
    from importlib.metadata import version

    from ..config import schema

    key = json.dumps([fingerprint, opts, stats, owner, schema.TRAINING_REVISION, version("pillow")], sort_keys=True,
                     default=str)
    return os.path.join(root(cache_dir), hashlib.sha256(key.encode()).hexdigest()[:24])


def _whole(value) -> str:
    """An array by all of its bytes (numpy's text form shows only the first and last 3 values past 1,000)."""
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return f"{data.dtype.str}{data.shape}{hashlib.sha256(data.tobytes()).hexdigest()}"
    return str(value)


def _paths(folder: str, split: str, unit: dict) -> tuple[str, str]:
    """A unit's files, named by what it holds (its rows, files, ranges), not by its index: units are sized by the
    worker count, and a folder left by a run with other units must not serve their rows under this one's index."""
    name = f"{split}-{hashlib.sha256(json.dumps(unit, sort_keys=True, default=_whole).encode()).hexdigest()[:16]}"
    return os.path.join(folder, f"{name}.npy"), os.path.join(folder, f"{name}-labels.npz")


def load_or_decode(folder: str, split: str, index: int, unit: dict, opts: dict) -> dict:
    """One unit's decoded arrays: memory-mapped from the cache, or decoded and written there first."""
    from .decode import decode_unit

    images, labels = _paths(folder, split, unit)
    if os.path.exists(images):   # renamed into place last: its labels are complete too
        with np.load(labels) as y:
            return {"image": np.load(images, mmap_mode="r"), **{k: y[k] for k in y.files}}
    d = decode_unit(unit, opts)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{split}-{index}")
    _synced(tmp + ".npz", labels, lambda f: np.savez(f, **{k: v for k, v in d.items() if k != "image"}))
    _synced(tmp + ".npy", images, lambda f: np.save(f, np.ascontiguousarray(d["image"])))
    fsync_dir(folder)   # the renames too
    return d


def _synced(tmp: str, path: str, write) -> None:
    """``write(file)`` to ``tmp``, flushed and fsynced, then renamed to ``path``: after a crash, the whole file or
    none (a rename can reach the disk before unsynced bytes do)."""
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def units_in_order(folder: str, split: str, indices: list[int], units: list[dict], opts: dict) -> Iterator[dict]:
    """Decoded units in this order; misses are decoded ``DECODERS`` at a time, at most that many ahead of the reader
    (a worker never holds more of a data set larger than memory)."""
    with ThreadPoolExecutor(DECODERS) as pool:
        ahead: deque = deque()
        for i in indices:
            ahead.append(pool.submit(load_or_decode, folder, split, i, units[i], opts))
            if len(ahead) > DECODERS:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def shuffled_batches(arrays: Iterator[dict], *, batch_size: int, seed: int, keys: list[str]) -> Iterator[dict]:
    """Batches of ``batch_size`` rows, shuffled within a buffer of ``SHUFFLE_UNITS`` units (the units come in an
    order reshuffled every epoch); the remainder short of a batch is dropped."""
    rng, buffer = np.random.default_rng(seed), []

    def drain(final: bool):
        data = {k: np.concatenate([b[k] for b in buffer]) for k in keys}
        order = rng.permutation(len(data[keys[0]]))
        whole = len(order) // batch_size * batch_size
        for start in range(0, whole, batch_size):
            yield {k: v[order[start:start + batch_size]] for k, v in data.items()}
        rest = order[whole:]
        buffer.clear()
        if len(rest) and not final:
            buffer.append({k: v[rest] for k, v in data.items()})

    for unit in arrays:
        buffer.append({k: unit[k] for k in keys})
        if len(buffer) >= SHUFFLE_UNITS:
            yield from drain(final=False)
    if buffer:
        yield from drain(final=True)


OWNER_FILE = "owner.json"


def owner_record(owner: str, *, keep: bool) -> dict:
    """Who a cache folder serves: the command (``owner``), its driver's host and process, and ``keep``: a killed
    sweep's folder is kept for its ``--resume``; any other command's is an orphan once its driver is gone."""
    import socket

    pid = os.getpid()
    return {"owner": owner, "host": socket.gethostname(), "host_id": processes.host_id(), "pid": pid,
            "start": processes.start_of(pid), "keep": keep}


def alive(record: dict) -> bool:
    """Is the driver that wrote ``record`` (a process of this host) still running? Unsure counts as running."""
    try:
        return processes.running(int(record["pid"]), record.get("start"))
    except (KeyError, TypeError, ValueError):
        return True


def orphans(found: list) -> dict:
    """Of ``(folder, record)`` pairs found on the nodes: the folders of commands of this host and pid namespace
    (``processes.host_id``) that ended without removing them (killed), and not kept for a resume. Folders of other
    hosts' or namespaces' drivers (a container beside this shell) are theirs to judge, and so are records of older
    code, which do not say their namespace."""
    return {folder: r["owner"] for folder, r in found
            if processes.this_host(r.get("host_id")) and not r.get("keep") and not alive(r)}


def _claim(folder: str, record: dict) -> None:
    os.makedirs(folder, exist_ok=True)
    _synced(os.path.join(folder, f".tmp-owner-{os.getpid()}"), os.path.join(folder, OWNER_FILE),
            lambda f: f.write(json.dumps(record).encode()))


def _owned(root_dir: str) -> list:
    """(folder, owner record) of every cache folder under ``root_dir`` on this node that has one."""
    found = []
    for name in os.listdir(root_dir) if os.path.isdir(root_dir) else []:
        try:
            with open(os.path.join(root_dir, name, OWNER_FILE)) as f:
                found.append((os.path.join(root_dir, name), json.load(f)))
        except (OSError, ValueError):
            continue   # no record (a node that joined later makes its folder without one), or a torn one
    return found


def _on_every_node(fn, folder: str, record: Optional[dict] = None) -> list:
    """``fn(folder)`` (or ``fn(folder, record)``) in a task pinned to each alive node; their results."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0)(fn)
    args = (folder,) if record is None else (folder, record)
    return ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(*args) for n in ray.nodes() if n["Alive"]])


def claim_everywhere(folder: str, record: dict) -> None:
    """Make the command's folder on every alive node, with its owner record (written again by a resumed sweep)."""
    _on_every_node(_claim, folder, record)


def remove_orphans(root_dir: str) -> dict:
    """Remove, on every node, the cache folders that commands of this host left when they were killed (a disk cache
    can be as large as the data set decoded). Returns {folder: owner} of those removed."""
    gone = orphans([pair for node in _on_every_node(_owned, root_dir) for pair in node])
    for folder in gone:
        remove_everywhere(folder)
    return gone


def remove_everywhere(folder: str) -> None:
    """Delete the cache folder on every alive node of the Ray cluster (a task pinned to each node)."""
    _on_every_node(_rmtree, folder)


def _rmtree(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def fits(cache_dir: Optional[str], needed_bytes: float) -> bool:
    """Does this node's cache disk hold ``needed_bytes`` with a fifth to spare?"""
    path = root(cache_dir)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free >= 1.2 * needed_bytes
