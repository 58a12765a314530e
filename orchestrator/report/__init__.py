"""Stage 7 — reports: an experiment's leaderboard rows -> plots and a one-page report.md."""
