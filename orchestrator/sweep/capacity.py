"""How big the cluster can get, whether a trial's request can ever fit, and how many trials to run at once.

Tune cannot see the placement groups Ray Train makes for each trial's workers, so the sweep sets
``max_concurrent_trials`` itself: from ``search.max_concurrent_trials`` if given, else from the
cluster's **maximum** size — with an autoscaler, what its node types can add, not what is up now —
so pending trials make the autoscaler add nodes.

The autoscaler's node types (what the cluster can grow to): Ray 2.60 exposes no public API for this (``get_cluster_config()`` is empty in open-source Ray, the
autoscaler's GCS status has no node types), so the config the autoscaler itself runs with is read
on the head node, by a zero-CPU task pinned there: the ``--autoscaling-config`` of the running
monitor (``ray up`` clusters: ``~/ray_bootstrap_config.yaml``; the local fake autoscaler: its JSON).
Without an autoscaler: an empty list, and callers use the nodes that are up.
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
    head: bool = False         # the head node (where this job's own driver is counted)
    pool: int | None = None    # the most nodes every type with a pool has together (the autoscaler's max_workers)


def _counts(bundle: dict, nodes: list[NodeType]) -> list[tuple[NodeType, int]]:
    """Each node type with the nodes a trial of ``bundle``s can count on: its max, but types sharing a pool share it,
    the nodes that hold the most bundles first (the autoscaler launches what the waiting bundles fit)."""
    pooled = sorted((t for t in nodes if t.pool is not None), key=lambda t: -_per_node(bundle, t.resources))
    left, given = (pooled[0].pool if pooled else 0), {}
    for t in pooled:
        given[id(t)] = min(t.max_count, left)
        left -= given[id(t)]
    return [(t, given.get(id(t), t.max_count)) for t in nodes]


def _pool(nodes: list[NodeType]) -> str:
    """" (max_workers N in all)" where worker types share a pool, for messages that list each type's count."""
    return next((f" (max_workers {t.pool} in all)" for t in nodes if t.pool is not None), "")


def trial_request(cfg: ExperimentConfig) -> tuple[dict, int]:
    """(resources of one worker bundle, number of bundles)."""
    r = cfg.resources
    bundle = {"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if r.use_gpu else {})}
    return bundle, r.workers


def _per_node(bundle: dict, node: dict) -> int:
    """How many of this bundle one node holds."""
    counts = [math.floor(node.get(k, 0.0) / v + 1e-9) for k, v in bundle.items() if v > 0]
    return min(counts) if counts else 0


def check_feasible(cfg: ExperimentConfig, nodes: list[NodeType], *, reserved_cpu: float = 0.0,
                   autoscaling: bool = False, what: str = "trial") -> None:
    """A ConfigError with the numbers if one trial (or run) can never be placed, even at the cluster's largest.
    The bundles of a trial are identical, so placing them is counting how many each node holds. ``reserved_cpu``:
    what this job itself holds while the workers wait (a Ray job's entrypoint, a Tune trial's own actor), counted
    on the head node."""
    bundle, n = trial_request(cfg)
    strategy = cfg.resources.placement_strategy
    where = (", ".join(f"{t.name} x{t.max_count} {_fmt(t.resources)}" for t in nodes) or "no nodes") + _pool(nodes)
    largest = {k: max((t.resources.get(k, 0.0) for t in nodes), default=0.0) for k in bundle}
    if not any(_per_node(bundle, t.resources) for t in nodes):
        raise ConfigError(f"one worker asks for {_fmt(bundle)} but no node can ever have that (largest node: "
                          f"{_fmt(largest)}; cluster at its largest: {where}): lower resources.cpus_per_worker / "
                          f"gpus_per_worker")
    if strategy == "STRICT_PACK" and not any(_per_node(bundle, t.resources) >= n for t in nodes):
        raise ConfigError(f"placement STRICT_PACK puts all {n} workers ({_fmt(bundle)} each) on one node, and no "
                          f"node can hold them (cluster at its largest: {where}): use PACK or fewer workers")
    spread = sum(count for t, count in _counts(bundle, nodes) if _per_node(bundle, t.resources))
    if strategy == "STRICT_SPREAD" and spread < n:
        raise ConfigError(f"placement STRICT_SPREAD needs {n} nodes that each fit {_fmt(bundle)}; the cluster can "
                          f"have {spread} (cluster at its largest: {where}): use SPREAD or fewer workers")
    placeable = _placeable(bundle, nodes, reserved_cpu)
    if placeable >= n:
        return
    held = f"; this job itself holds {reserved_cpu:g} CPU while it waits" if reserved_cpu > 0 else ""
    scope = "at its autoscaler's maximum" if autoscaling else "(no autoscaler: it never grows)"
    fits = _fitting_cpus(bundle, nodes, reserved_cpu, n)
    fix = f"set resources.cpus_per_worker: {fits:g} or use fewer workers" if fits else "use fewer workers"
    raise ConfigError(f"one {what} needs {n} workers of {_fmt(bundle)}{held}, so the cluster {scope} holds "
                      f"{placeable} ({where}): {fix}")


def _placeable(bundle: dict, nodes: list[NodeType], reserved_cpu: float) -> int:
    """Bundles the cluster holds at its largest, after ``reserved_cpu`` on the head node (else the first node)."""
    head = next((t for t in nodes if t.head), nodes[0] if nodes else None)
    total = 0
    for t, count in _counts(bundle, nodes):
        total += _per_node(bundle, t.resources) * count
        if t is head and reserved_cpu > 0:
            less = {**t.resources, "CPU": max(0.0, t.resources.get("CPU", 0.0) - reserved_cpu)}
            total += _per_node(bundle, less) - _per_node(bundle, t.resources)
    return total


def _fitting_cpus(bundle: dict, nodes: list[NodeType], reserved_cpu: float, n: int) -> float | None:
    """The largest CPUs per worker (in hundredths) with which ``n`` workers fit, or None if CPUs are not the limit."""
    if not bundle.get("CPU"):
        return None
    for hundredths in range(int(bundle["CPU"] * 100) - 1, 0, -1):
        if _placeable({**bundle, "CPU": hundredths / 100}, nodes, reserved_cpu) >= n:
            return hundredths / 100
    return None


RESOURCE_PATHS = ("resources.workers", "resources.cpus_per_worker", "resources.gpus_per_worker", "resources.use_gpu",
                  "resources.placement_strategy")


def check_search_fits(cfg: ExperimentConfig, nodes: list[NodeType], *, reserved_cpu: float = 0.05,
                      autoscaling: bool = False) -> None:
    """``check_feasible`` for every searched resource value (each combination of the domains' edges one trial can
    draw, branches included): a trial that could never be placed is found once connected, before any trial starts,
    not after Tune waited for it."""
    from ..config.space import candidate_values

    for point, _ in drawn_points(cfg, RESOURCE_PATHS, lambda path, d: candidate_values(d, list(cfg.tasks))):
        try:
            check_feasible(cfg.with_values(point), nodes, reserved_cpu=reserved_cpu, autoscaling=autoscaling)
        except ConfigError as e:
            which = ", ".join(f"{p} value {f'{v:g}' if isinstance(v, float) else v}" for p, v in point.items()
                              if p in RESOURCE_PATHS)
            gates = ", ".join(f"{p} {v}" for p, v in point.items() if p not in RESOURCE_PATHS)
            raise ConfigError(f"search.space {which}{f' (with {gates})' if gates else ''}: {e}") from None


def drawn_points(cfg: ExperimentConfig, paths: tuple, values_of) -> list[tuple[dict, dict]]:
    """Every combination of values one trial can draw for ``paths``: (point, sources); point: path -> value for the
    paths drawn and the branch choices that lead to them (a path not drawn keeps its base value), sources: path ->
    the domain it came from. A branch's values come only with its parent's value; ``values_of(path, domain)``: the
    values taken of a domain that is not a choice."""
    from ..config.space import walk

    def points(space: dict) -> list[tuple[dict, dict]]:
        out = [({}, {})]
        for path, d in space.items():
            if not any(q in paths for q, _, _ in walk({path: d})):
                continue
            options = ([({path: v, **pt}, {path: d, **src}) for v, sub in d.branches() for pt, src in points(sub)]
                       if d.kind == "choice" else [({path: v}, {path: d}) for v in values_of(path, d)])
            out = [({**a, **b}, {**sa, **sb}) for a, sa in out for b, sb in options]
        return out

    return points(cfg.search.space if cfg.search is not None else {})


BATCH_PATHS = ("train.batch_size", "resources.workers")


def check_batch_draws(p) -> None:
    """Every batch size a trial of the sweep can draw splits across the worker count it draws with it (``check_batch``
    on ``p``, a Prepared; ``drawn_points``): every worker count of a randint; a randint of batch sizes only with one
    worker (its edges: a larger batch only needs more rows)."""
    from ..config.space import candidate_values
    from ..training.session import check_batch

    def values_of(path, d):
        if path == "resources.workers" and d.kind == "randint":
            return list(range(int(d.randint[0]), int(d.randint[1]) + 1))
        return candidate_values(d, list(p.cfg.tasks))

    for point, sources in drawn_points(p.cfg, BATCH_PATHS, values_of):
        trial, d = p.cfg.with_values(point), sources.get(BATCH_PATHS[0])
        if d is not None and d.kind == "randint" and d.randint[1] > d.randint[0] and trial.resources.workers > 1:
            raise ConfigError(f"search.space train.batch_size randint [{d.randint[0]:g}, {d.randint[1]:g}] draws "
                              f"sizes that do not split across resources.workers {trial.resources.workers}: use a "
                              f"choice of multiples of it")
        check_batch(trial, p.data)


def concurrency(cfg: ExperimentConfig, nodes: list[NodeType], *, driver_cpu: float) -> int:
    """Trials that fit at once in the cluster at its largest (bundles counted node by node)."""
    bundle, n = trial_request(cfg)
    counts = _counts(bundle, nodes)
    workers = sum(_per_node(bundle, t.resources) * count for t, count in counts)
    total_cpu = sum(t.resources.get("CPU", 0.0) * count for t, count in counts)
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
            out.append(NodeType(node.get("NodeManagerAddress", "node"), res, 1,
                                head=HEAD_MARKER in node.get("Resources", {})))
    return out


def max_nodes() -> tuple[list[NodeType], bool]:
    """(node types at the cluster's largest, whether an autoscaler defines them)."""
    types = autoscaler_node_types()
    return (types, True) if types else (current_nodes(), False)


def check_fits(cfg: ExperimentConfig, *, reserved_cpu: float = 0.0, what: str = "run") -> None:
    """``check_feasible`` against the cluster as it can get (its autoscaler's maximum, or the nodes up now)."""
    nodes, autoscaling = max_nodes()
    check_feasible(cfg, nodes, reserved_cpu=reserved_cpu, autoscaling=autoscaling, what=what)


@dataclass(frozen=True)
class TrialsPlan:
    """How a Tune run's trials run: how many at once, and whether each starts warm spare Train workers for a later
    one (training/warm.py)."""
    concurrent: int
    spares: bool


def plan_concurrency(cfg: ExperimentConfig, *, trials: int, say=print, driver_cpu: float = 0.05,
                     reserved_cpu: float = 0.0) -> TrialsPlan:
    """Trials to run at once, of ``trials``; first a ConfigError if one trial never fits (its own
    ``driver_cpu`` and the job's ``reserved_cpu`` counted), for the base config and for every searched resource
    value."""
    nodes, autoscaling = max_nodes()
    check_feasible(cfg, nodes, reserved_cpu=reserved_cpu + driver_cpu, autoscaling=autoscaling)
    check_search_fits(cfg, nodes, reserved_cpu=reserved_cpu + driver_cpu, autoscaling=autoscaling)
    if cfg.search is not None and cfg.search.max_concurrent_trials:
        n = cfg.search.max_concurrent_trials
    else:
        n = concurrency(cfg, nodes, driver_cpu=driver_cpu)
        if autoscaling:
            say(f"autoscaling cluster: up to {n} trials at once when all nodes are up "
                f"({', '.join(f'{t.name} x{t.max_count}' for t in nodes)}{_pool(nodes)})")
    idle = idle_cores(cfg, nodes, concurrent=n, held_elsewhere=cpus_held_elsewhere())
    return TrialsPlan(n, spares=trials > n and idle > 0)


def idle_cores(cfg: ExperimentConfig, nodes: list[NodeType], *, concurrent: int, held_elsewhere: float = 0.0) -> float:
    """CPU cores of the cluster at its largest that ``concurrent`` trials, and other jobs (``held_elsewhere``), leave
    idle. A TensorFlow worker keeps about a core busy whatever CPUs it requests, so that is what it counts. Warm
    spares import TensorFlow only on idle cores: beside trials that fill the cores, the import slows them more than
    it saves (bench/sweep_overhead, 2 workers on 2 cores: fixed cost per trial 26 s with spares, 14 s without), and
    on cores another job holds it takes that job's time."""
    total = sum(t.resources.get("CPU", 0.0) * count for t, count in _counts(trial_request(cfg)[0], nodes))
    return total - held_elsewhere - concurrent * cfg.resources.workers


def cpus_held_elsewhere() -> float:
    """CPUs other jobs of the cluster hold now in their placement groups (this job's own, a finished Tune run's
    releasing, or a killed earlier driver's of this job, are not other jobs')."""
    import ray

    from .. import _ray

    return _ray.cpus_of_other_jobs(ray.get_runtime_context().get_job_id())


HEAD_MARKER = "node:__internal_head__"


def _read_config_on_head(gcs_address: str):
    """Runs on the head: the autoscaler's node types (resources, max_workers) and global max_workers."""
    import glob
    import os

    import yaml

    candidates = []
    for fn in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(fn, "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if not any(a.endswith("monitor.py") for a in argv):
            continue
        opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
        # only this cluster's monitor: other clusters may run on the same host (tests, shared machines)
        if opts.get("autoscaling-config") and opts.get("gcs-address", "").rsplit(":", 1)[-1] == \
                gcs_address.rsplit(":", 1)[-1]:
            candidates.append((0, os.path.expanduser(opts["autoscaling-config"])))
    candidates = sorted(candidates) + [(2, os.path.expanduser("~/ray_bootstrap_config.yaml"))]
    for _, path in candidates:
        if os.path.exists(path):
            with open(path) as f:
                cfg = yaml.safe_load(f) or {}
            return {"max_workers": cfg.get("max_workers"), "head_node_type": cfg.get("head_node_type"),
                    "node_types": {n: {"resources": dict(t.get("resources") or {}),
                                       "max_workers": t.get("max_workers", 0)}
                                   for n, t in (cfg.get("available_node_types") or {}).items()}}
    return None


def autoscaler_node_types(timeout_s: float = 60.0) -> list[NodeType]:
    """The head (as it is) plus every worker type at its max count, or [] without an autoscaler."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    head = next((n for n in ray.nodes() if n.get("Alive") and HEAD_MARKER in n.get("Resources", {})), None)
    if head is None:
        return []
    reader = ray.remote(num_cpus=0, max_retries=0)(_read_config_on_head)
    try:
        info = ray.get(reader.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head["NodeID"], soft=False))
                       .remote(ray.get_runtime_context().gcs_address), timeout=timeout_s)
    except Exception:  # noqa: BLE001 - no way to read it: behave as without an autoscaler
        return []
    if not info:
        return []
    return worker_types(info, {k: v for k, v in head["Resources"].items() if not k.startswith("node:")})


def worker_types(info: dict, head_resources: dict) -> list[NodeType]:
    """The head and every worker type of an autoscaler's config (``info``) at its max count, each at most the
    cluster's max_workers, which they share (``pool``: one type listed first does not use it up for the others)."""
    types, budget = [NodeType("head", head_resources, 1, head=True)], info["max_workers"]
    for name, t in info["node_types"].items():
        if name == info["head_node_type"]:
            continue
        count = t["max_workers"] if t["max_workers"] not in (None, -1) else (budget or 0)
        count = min(count, budget) if budget is not None else count
        if count > 0:
            types.append(NodeType(name, {k: float(v) for k, v in t["resources"].items()}, int(count), pool=budget))
    return types
