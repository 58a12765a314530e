"""Stage 8 — the `orchestrator` command line: one module per command group."""
from .main import cli, main

__all__ = ["cli", "main"]
