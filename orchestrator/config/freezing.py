"""A freeze depth as the number of backbone blocks it freezes: the one place 'all' becomes a number, and the one
place a number that freezes every block becomes 'all'."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

from ..errors import ConfigError

if TYPE_CHECKING:
    from .schema import ExperimentConfig

PATH = "train.freeze_depth"


def frozen_blocks(depth: Union[int, str], n_blocks: int, *, where: str = PATH) -> int:
    """How many blocks a freeze depth freezes ('all' = every block); ConfigError if out of range."""
    n = n_blocks if depth == "all" else int(depth)
    if not 0 <= n <= n_blocks:
        raise ConfigError(f"{where} {depth} is beyond the backbone's {n_blocks} blocks; use 0..{n_blocks} or 'all'")
    return n


def every_block_as_all(cfg: "ExperimentConfig", n_blocks: int) -> "ExperimentConfig":
    """``cfg`` with a freeze depth of ``n_blocks``, written or a choice, as 'all': the same work then has one config
    hash (and backbone_lr, which nothing trains with, is reset like any unused field). A choice holding both is
    refused. Where a range (randint) searches depths, the written one stays a number: 'all' is no value a range holds
    (the base config would fall outside its own space), so trials there keep the numbers they draw."""
    space = cfg.search.model_dump(exclude_none=True)["space"] if cfg.search is not None else {}
    values: dict[str, Any] = {"search.space": space} if _rewrite(space, n_blocks) else {}
    if is_every_block(cfg.train.freeze_depth, n_blocks) and not _ranged(space):
        values[PATH] = "all"
    return cfg.with_values(values) if values else cfg


def saved_as_today(cfg: "ExperimentConfig", n_blocks: int | None) -> "ExperimentConfig":
    """A config saved before (a sweep.json's, a run's config.json) as a config is read now (``every_block_as_all``);
    as saved without ``n_blocks``, or where its space lists a depth both ways (refused since)."""
    if n_blocks is None:
        return cfg
    try:
        return every_block_as_all(cfg, n_blocks)
    except ConfigError:
        return cfg


def hashes_of_same_work(cfg: "ExperimentConfig", n_blocks: int) -> tuple[str, ...]:
    """The config hashes a checkpoint or row of ``cfg``'s work may carry: its own (first), and where it freezes every
    one of ``n_blocks`` blocks, the hash of the same config with the depth written the other way, 'all' or the number
    (checkpoints and rows made before ``every_block_as_all``, the user's backbone_lr as written: the same work)."""
    own, depth = cfg.config_hash(), cfg.train.freeze_depth
    if depth != "all" and not is_every_block(depth, n_blocks):
        return (own,)
    return own, cfg.with_values({PATH: n_blocks if depth == "all" else "all"}).config_hash()


def is_every_block(depth: Any, n_blocks: int) -> bool:
    """A depth (a branch key may have travelled as JSON: "5") that freezes every block, written as a number."""
    return not isinstance(depth, bool) and str(depth) == str(n_blocks)


def _ranged(space: dict) -> bool:
    """Does a domain other than a choice search the freeze depth, anywhere in the space?"""
    for path, domain in space.items():
        if path == PATH and "choice" not in domain:
            return True
        for option in domain.get("choice") or []:
            if isinstance(option, dict) and any(_ranged(sub) for sub in option.values()):
                return True
    return False


def _rewrite(space: dict, n_blocks: int) -> bool:
    """Depths of ``n_blocks`` in the space's freeze-depth choice (wherever it is) as 'all', in place; True if any."""
    changed = False
    for path, domain in space.items():
        options = domain.get("choice") or []
        for i, option in enumerate(options):
            branch = isinstance(option, dict)
            (value, sub), = option.items() if branch else ((option, {}),)
            changed |= _rewrite(sub, n_blocks)
            if path == PATH and is_every_block(value, n_blocks):
                if any(o == "all" or (isinstance(o, dict) and "all" in o) for o in options):
                    raise ConfigError(f"search.space {PATH}: choice {n_blocks} and 'all' both freeze the backbone's "
                                      f"{n_blocks} blocks: list one")
                options[i], changed = ({"all": sub} if branch else "all"), True
    return changed
