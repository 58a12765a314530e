"""The autoscaler's node types: what the cluster can grow to.

Ray 2.60 exposes no public API for this (``get_cluster_config()`` is empty in open-source Ray, the
autoscaler's GCS status has no node types), so the config the autoscaler itself runs with is read
on the head node, by a zero-CPU task pinned there: the ``--autoscaling-config`` of the running
monitor (``ray up`` clusters: ``~/ray_bootstrap_config.yaml``; the local fake autoscaler: its JSON).
Without an autoscaler: an empty list, and callers use the nodes that are up.
"""
from __future__ import annotations

from .capacity import NodeType

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
        if opts.get("autoscaling-config"):
            same = opts.get("gcs-address", "").rsplit(":", 1)[-1] == gcs_address.rsplit(":", 1)[-1]
            candidates.append((0 if same else 1, os.path.expanduser(opts["autoscaling-config"])))
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
    head_resources = {k: v for k, v in head["Resources"].items() if not k.startswith("node:")}
    types = [NodeType("head", head_resources, 1)]
    budget = info["max_workers"]
    for name, t in info["node_types"].items():
        if name == info["head_node_type"]:
            continue
        count = t["max_workers"] if t["max_workers"] not in (None, -1) else (budget or 0)
        if budget is not None:
            count = min(count, budget)
            budget -= count
        if count > 0:
            types.append(NodeType(name, {k: float(v) for k, v in t["resources"].items()}, int(count)))
    return types
