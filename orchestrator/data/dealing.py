"""Which units (and in-memory blocks, one per unit) a worker gets: a pure function of (epoch, rank, world size, seed),
so every rank knows every rank's row count without talking, and the driver's batch check counts the shares the
workers train."""
from __future__ import annotations

from typing import Optional

import numpy as np


def deal(sizes: list[int], *, world: int, epoch: Optional[int], seed: int) -> list[list[int]]:
    """Unit indices of each rank, in an order reshuffled each epoch (None: fixed). Largest units first, each to the
    rank with the fewest rows so far (ties: the lower rank; equal sizes in the shuffled order): every epoch deals each
    rank the same number of rows, so the steps of an epoch (the smallest share over the batch) follow neither the
    seed nor the epoch, and a check of one deal holds for all. Dealt round-robin, a rank's share swung by a unit."""
    n = len(sizes)
    order = np.arange(n) if epoch is None else np.random.default_rng([seed, epoch]).permutation(n)
    loads, dealt = [0] * world, [[] for _ in range(world)]
    for i in sorted(order.tolist(), key=lambda i: -sizes[i]):    # stable: equal sizes keep the shuffled order
        r = loads.index(min(loads))
        loads[r] += sizes[i]
        dealt[r].append(i)
    place = {u: k for k, u in enumerate(order.tolist())}
    return [sorted(units, key=place.get) for units in dealt]      # each rank's units in the shuffled order


def rows_per_rank(sizes: list[int], *, world: int, epoch: Optional[int], seed: int) -> list[int]:
    return [sum(sizes[i] for i in units) for units in deal(sizes, world=world, epoch=epoch, seed=seed)]


def memory_blocks(payload: dict, part: str, *, rank: int, world: int) -> list:
    """This rank's decoded blocks of ``part`` (train or val; one block per unit, in order), dealt as the units are
    (``deal``): the shares the driver's batch check counts."""
    return [payload[part][i] for i in deal(payload["sizes"][part], world=world, epoch=None, seed=0)[rank]]


def sizes_of(units: list[dict]) -> list[int]:
    return [len(u["rows"]) for u in units]
