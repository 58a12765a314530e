"""Stage 6 — sweeps on Ray Tune: every trial is one Ray Train run; the runner, the tuner, the driver's Tune callback
(one leaderboard row per trial), cluster capacity, single-task baselines and confirmation runs."""
