"""Stage 5 — the leaderboard: rows, their Parquet files, compaction, queries and ranking. No Ray, no TensorFlow."""
from .leaderboard import Leaderboard, NoMatchingRows
from .query import render

__all__ = ["Leaderboard", "NoMatchingRows", "render"]
