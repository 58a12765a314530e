"""The autoscaler's node types (what the cluster can grow to), read from the running cluster."""
from __future__ import annotations


def autoscaler_node_types() -> list:
    """NodeTypes an autoscaler can launch (max counts), or [] without an autoscaler."""
    return []
