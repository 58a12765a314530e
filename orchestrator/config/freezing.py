"""A freeze depth as the number of backbone blocks it freezes: the one place 'all' becomes a number."""
from __future__ import annotations

from typing import Union

from ..errors import ConfigError


def frozen_blocks(depth: Union[int, str], n_blocks: int, *, where: str = "train.freeze_depth") -> int:
    """How many blocks a freeze depth freezes ('all' = every block); ConfigError if out of range."""
    n = n_blocks if depth == "all" else int(depth)
    if not 0 <= n <= n_blocks:
        raise ConfigError(f"{where} {depth} is beyond the backbone's {n_blocks} blocks; use 0..{n_blocks} or 'all'")
    return n
