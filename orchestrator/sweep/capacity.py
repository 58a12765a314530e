"""How big the cluster can get, whether a trial's request can ever fit, and how many trials to run at once.

Tune cannot see the placement groups Ray Train makes for each trial's workers, so the sweep sets
``max_concurrent_trials`` itself: from ``search.max_concurrent_trials`` if given, else from the
cluster's **maximum** size — with an autoscaler, what its node types can add, not what is up now —
so pending trials make the autoscaler add nodes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config.schema import ExperimentConfig
from ..errors import ConfigError


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict            # per node
    max_count: int             # nodes of this type the cluster can have (up now, or up to max_workers)


def trial_request(cfg: ExperimentConfig) -> tuple[dict, int]:
    """(resources of one worker bundle, number of bundles)."""
    r = cfg.resources
    bundle = {"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if r.use_gpu else {})}
    return bundle, r.workers


def _per_node(bundle: dict, node: dict) -> int:
    """How many of this bundle one node holds."""
    counts = [math.floor(node.get(k, 0.0) / v + 1e-9) for k, v in bundle.items() if v > 0]
    return min(counts) if counts else 0


def check_feasible(cfg: ExperimentConfig, nodes: list[NodeType], *, driver_cpu: float) -> None:
    """A ConfigError with the numbers if one trial can never be placed, even at the cluster's largest.
    The bundles of a trial are identical, so placing them is counting how many each node holds."""
    bundle, n = trial_request(cfg)
    strategy = cfg.resources.placement_strategy
    where = ", ".join(f"{t.name} x{t.max_count} {_fmt(t.resources)}" for t in nodes) or "no nodes"
    largest = {k: max((t.resources.get(k, 0.0) for t in nodes), default=0.0) for k in bundle}
    if not any(_per_node(bundle, t.resources) for t in nodes):
        raise ConfigError(f"one worker asks for {_fmt(bundle)} but no node can ever have that (largest node: "
                          f"{_fmt(largest)}; cluster at its largest: {where}): lower resources.cpus_per_worker / "
                          f"gpus_per_worker")
    if strategy == "STRICT_PACK" and not any(_per_node(bundle, t.resources) >= n for t in nodes):
        raise ConfigError(f"placement STRICT_PACK puts all {n} workers ({_fmt(bundle)} each) on one node, and no "
                          f"node can hold them (cluster at its largest: {where}): use PACK or fewer workers")
    spread = sum(t.max_count for t in nodes if _per_node(bundle, t.resources))
    if strategy == "STRICT_SPREAD" and spread < n:
        raise ConfigError(f"placement STRICT_SPREAD needs {n} nodes that each fit {_fmt(bundle)}; the cluster can "
                          f"have {spread} (cluster at its largest: {where}): use SPREAD or fewer workers")
    placeable = sum(_per_node(bundle, t.resources) * t.max_count for t in nodes)
    if placeable < n:
        raise ConfigError(f"one trial needs {n} workers of {_fmt(bundle)}; the cluster at its largest holds "
                          f"{placeable} ({where}): use fewer workers or smaller requests")


def concurrency(cfg: ExperimentConfig, nodes: list[NodeType], *, driver_cpu: float) -> int:
    """Trials that fit at once in the cluster at its largest (bundles counted node by node)."""
    bundle, n = trial_request(cfg)
    workers = sum(_per_node(bundle, t.resources) * t.max_count for t in nodes)
    total_cpu = sum(t.resources.get("CPU", 0.0) * t.max_count for t in nodes)
    by_cpu = math.floor(total_cpu / (n * bundle.get("CPU", 0.0) + driver_cpu) + 1e-9)
    return max(1, min(workers // n, by_cpu))


def _fmt(resources: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


def current_nodes() -> list[NodeType]:
    """The nodes up now, from Ray (one NodeType each)."""
    import ray

    out = []
    for node in ray.nodes():
        if node.get("Alive"):
            res = {k: v for k, v in node.get("Resources", {}).items() if k in ("CPU", "GPU") or not k.startswith("node:")}
            out.append(NodeType(node.get("NodeManagerAddress", "node"), res, 1))
    return out


def max_nodes() -> tuple[list[NodeType], bool]:
    """(node types at the cluster's largest, whether an autoscaler defines them)."""
    from .autoscaler import autoscaler_node_types

    types = autoscaler_node_types()
    return (types, True) if types else (current_nodes(), False)


def plan_concurrency(cfg: ExperimentConfig, *, say=print, driver_cpu: float = 0.05) -> int:
    nodes, autoscaling = max_nodes()
    check_feasible(cfg, nodes, driver_cpu=driver_cpu)
    if cfg.search is not None and cfg.search.max_concurrent_trials:
        return cfg.search.max_concurrent_trials
    n = concurrency(cfg, nodes, driver_cpu=driver_cpu)
    if autoscaling:
        say(f"autoscaling cluster: up to {n} trials at once when all nodes are up "
            f"({', '.join(f'{t.name} x{t.max_count}' for t in nodes)})")
    return n
