"""Single-task baselines for Δm% (filled in below)."""
from __future__ import annotations


def baselines_for(p, *, data, backbone_ref, out=print):
    return None
