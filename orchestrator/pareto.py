"""Pareto fronts of several metrics, pure Python (no NumPy, no TensorFlow): what MO-ASHA promotes by, and what the
report and bench/moasha.py measure a front with.

Every function takes points as tuples where **higher is better** on every coordinate: turn a metric into that with
``metrics.sign`` first (``signed_point``). Directions are never guessed here.

- ``nondominated_fronts``: non-dominated sorting (front 0 = the Pareto front, front 1 = the front once front 0 is
  removed, ...). Points that tie on every coordinate share a front.
- ``eps_net_order``: the order inside one front that MO-ASHA keeps from (Schmucker et al. 2021, as Syne Tune's
  MOASHA): start from the point best on the first metric, then repeatedly take the point farthest (in min-max
  normalized coordinates) from those already taken, so a front cut short keeps points spread along it.
- ``mo_order``: every point ranked, front by front, ε-net inside each front.
- ``hypervolume``: the volume dominated by a front and bounded by a reference point (exact; inclusion-exclusion
  is exponential, so this slices the first coordinate instead: O(n^2) for 2 metrics, O(n^3) for 3, n the front's
  points; ``first_front`` finds them in one pass over the points).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

from . import metrics

Point = tuple[float, ...]


def signed_point(values: Sequence[Optional[float]], names: Sequence[str]) -> Point:
    """Metric values -> a point where higher is better on every coordinate (each metric's direction from the
    registry); a missing or non-finite value becomes -inf, so it loses to every finite one."""
    out = []
    for v, name in zip(values, names):
        x = metrics.finite(v)
        out.append(metrics.sign(metrics.direction(name)) * x if x is not None else -math.inf)
    return tuple(out)


def dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def nondominated_fronts(points: Sequence[Point]) -> list[list[int]]:
    """Indices of ``points`` by front, each front in input order."""
    left, fronts = list(range(len(points))), []
    while left:
        front = [i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i)]
        fronts.append(front)
        taken = set(front)
        left = [i for i in left if i not in taken]
    return fronts


def first_front(points: Sequence[Point]) -> list[int]:
    """``nondominated_fronts(points)[0]`` without sorting the other fronts. Best first (descending, coordinate by
    coordinate), a point's dominators all come before it, and a dominated dominator's own dominator dominates the
    point too: so a point is on the front unless a front point taken before it dominates it."""
    front: list[int] = []
    for i in sorted(range(len(points)), key=lambda i: points[i], reverse=True):
        if not any(dominates(points[j], points[i]) for j in front):
            front.append(i)
    return sorted(front)


def _scales(points: Sequence[Point]) -> list[tuple[float, float]]:
    """Per coordinate (low, span) over the finite values, for min-max normalization."""
    out = []
    for k in range(len(points[0]) if points else 0):
        col = [p[k] for p in points if math.isfinite(p[k])]
        lo, hi = (min(col), max(col)) if col else (0.0, 1.0)
        out.append((lo, (hi - lo) or 1.0))
    return out


def eps_net_order(points: Sequence[Point], front: Sequence[int], *,
                  scales: Optional[list[tuple[float, float]]] = None) -> list[int]:
    """``front`` (indices into ``points``) ordered as an ε-net; ties go to the earlier index. Exact duplicates of a
    point already taken are at distance 0, so they come last."""
    if len(front) <= 1:
        return list(front)
    scales = scales or _scales(points)

    def norm(i):
        return [(x - lo) / span if math.isfinite(x) else -1.0 for x, (lo, span) in zip(points[i], scales)]

    coords = {i: norm(i) for i in front}
    first = max(front, key=lambda i: (points[i][0], -i))
    order, rest = [first], [i for i in front if i != first]
    gap = {i: math.dist(coords[i], coords[first]) for i in rest}
    while rest:
        nxt = max(rest, key=lambda i: (gap[i], -i))
        order.append(nxt)
        rest.remove(nxt)
        for i in rest:
            gap[i] = min(gap[i], math.dist(coords[i], coords[nxt]))
    return order


def mo_order(points: Sequence[Point]) -> list[int]:
    """Every index of ``points``, best first: front by front, each front as an ε-net (scaled over all points)."""
    scales = _scales(points)
    return [i for front in nondominated_fronts(points) for i in eps_net_order(points, front, scales=scales)]


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The distinct non-dominated points."""
    return sorted({points[i] for i in first_front(points)})


def hypervolume(points: Sequence[Point], ref: Point) -> float:
    """The volume dominated by ``points`` and dominating ``ref`` (higher is better; points not strictly better
    than ``ref`` everywhere add nothing)."""
    pts = [p for p in points if all(math.isfinite(x) and x > r for x, r in zip(p, ref))]
    pts = [pts[i] for i in first_front(pts)]   # what the others dominate, the front dominates already
    if not pts:
        return 0.0
    if len(ref) == 1:
        return max(p[0] for p in pts) - ref[0]
    # slice along the first coordinate: between consecutive cuts, the points reaching past the cut dominate a
    # (d-1)-dimensional volume
    cuts = sorted({p[0] for p in pts} | {ref[0]})
    total = 0.0
    for lo, hi in zip(cuts, cuts[1:]):
        slab = [p[1:] for p in pts if p[0] >= hi]
        total += (hi - lo) * hypervolume(slab, ref[1:])
    return total
