"""Ranges a sweep's best trials press against: one hint per numeric searched parameter whose best value may lie
beyond its range. Pure Python on leaderboard rows (no Ray, no TensorFlow).

A parameter gets a hint when the best completed trial's value lies in the outer tenth of its range (on the scale it
is sampled on: log for ``loguniform``) and the next best trials (``TOP`` in all) are on the same half. No searcher
samples a range's very edge, so an optimum there is found late, or not at all: ``bench/search_sim.py`` measured a
space whose best lay at the top of the backbone learning-rate range, and random search found it in 23 of 100
sweeps of 12 trials.
"""
from __future__ import annotations

import math
from typing import Optional

from ..metrics import finite
from .schema import SearchConfig
from .space import active_values, column_name, walk

EDGE = 0.1   # the outer tenth of a range
TOP = 3      # the best trials that must agree (and the fewest completed trials for any hint)


def edge_hints(search: Optional[SearchConfig], rows: list[dict], *, tasks: list[str], mode: str) -> list[str]:
    """One line per parameter of ``search``'s space whose best trials sit at one end of its range (see the module
    doc); ``rows``: one sweep's, as ``leaderboard.query.rows`` gives them (run fields parsed); ``mode``: the
    objective's direction (max or min)."""
    if search is None:
        return []
    done = [r for r in rows if r.get("status") == "completed" and finite(r.get("objective")) is not None]
    done.sort(key=lambda r: r["objective"], reverse=mode == "max")
    active = [active_values(search.space, r["config"], tasks) for r in done]   # best first
    hints = []
    for path, domain, when in walk(search.space):
        if domain.kind not in ("uniform", "loguniform", "randint"):
            continue
        lo, hi = getattr(domain, domain.kind)
        using = [values[path] for values in active if path in values]   # the trials that use it, best first
        if len(using) < TOP:
            continue
        spots = [_position(value, lo, hi, log=domain.kind == "loguniform") for value in using[:TOP]]
        line = _hint(column_name(path), using[0], spots, lo=lo, hi=hi, log=domain.kind == "loguniform")
        if line:
            hints.append(line + (f" (among the trials with {', '.join(f'{column_name(p)}={v}' for p, v in when)})"
                                 if when else ""))
    return hints


def _position(value: float, lo: float, hi: float, *, log: bool) -> float:
    """Where ``value`` lies in [lo, hi]: 0 at lo, 1 at hi."""
    f = math.log if log else float
    return (f(value) - f(lo)) / (f(hi) - f(lo))


def _hint(name: str, best, spots: list[float], *, lo: float, hi: float, log: bool) -> Optional[str]:
    scale = " (log scale)" if log else ""
    fmt = (lambda v: f"{v:.1e}") if log else (lambda v: f"{v:g}")
    if spots[0] >= 1 - EDGE and all(s >= 0.5 for s in spots):
        end, half, bound = "top", "upper", hi
    elif spots[0] <= EDGE and all(s <= 0.5 for s in spots):
        end, half, bound = "bottom", "lower", lo
    else:
        return None
    return (f"{name}: the best trial's {fmt(best)} lies in the {end} tenth of [{fmt(lo)}, {fmt(hi)}]{scale} and "
            f"the {len(spots)} best are all in its {half} half; the best value may lie beyond {fmt(bound)}: widen the "
            f"range")
