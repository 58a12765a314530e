"""Stage 7 — reports: an experiment's leaderboard rows -> numbers (``numbers``), plots (``plots``) and a one-page
report.md (``report``)."""
from .numbers import summary_lines
from .report import FILES, write_report

__all__ = ["FILES", "summary_lines", "write_report"]
