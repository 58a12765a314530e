"""CPU use of Ray's processes while a bench runs (a module, not a bench: benches end with a RESULT line).
Ray names an actor's process ``ray::<Class>...``: a sampler thread reads every such process's CPU time from
/proc, and the busy fraction of the machine's CPUs from /proc/stat. Linux only."""
from __future__ import annotations

import os
import threading
import time
from collections import defaultdict

TICK = os.sysconf("SC_CLK_TCK")


def _ray_processes() -> dict[int, tuple[str, float]]:
    """pid -> (actor class, CPU seconds so far) of every live ``ray::`` process."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if title.startswith("ray::"):
            name = title[5:].split(".")[0].split(" ")[0].split(":")[0]
            found[int(pid)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return found


def busy_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the machine since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]    # idle + iowait
    return sum(values) - idle, sum(values)


class Sampler:
    """CPU seconds per Ray actor class (each process counted under the last class it ran, IDLE skipped) over a
    ``with`` block, and the busy fraction of all CPUs over it."""

    def __init__(self, period_s: float = 0.25):
        self.period_s, self._last, self._stop, self.first_seen = period_s, {}, threading.Event(), {}

    def _poll(self):
        for pid, (name, cpu) in _ray_processes().items():
            old = self._last.get(pid)
            self._last[pid] = (name if name != "IDLE" or old is None else old[0], cpu)
            self.first_seen.setdefault(pid, time.monotonic())

    def _loop(self):
        while not self._stop.wait(self.period_s):
            self._poll()

    def __enter__(self):
        self._poll()
        self._start = dict(self._last)
        self._ticks = busy_ticks()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._poll()
        busy, total = busy_ticks()
        self.busy_frac = (busy - self._ticks[0]) / max(total - self._ticks[1], 1)
        self.cpu_s, self.per_process = defaultdict(float), []
        for pid, (name, cpu) in self._last.items():
            used = cpu - self._start.get(pid, (name, 0.0))[1]
            self.cpu_s[name] += used
            self.per_process.append((self.first_seen[pid], name, used))
        self.per_process.sort()
        return False
