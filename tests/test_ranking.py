"""Ranking: every metric's direction from the one registry; top and best follow a minimized objective."""


from orchestrator.leaderboard import Leaderboard

from factories import minimized_rows


def test_best_and_top_follow_a_minimized_objective(tmp_path):
    board = Leaderboard(str(tmp_path))
    board.append(minimized_rows())
    assert board.best()["trial_id"] == "good"
    assert board.best(metric="best_objective")["trial_id"] == "good"
    assert board.top(2).column("trial_id").to_pylist() == ["good", "bad"]


def test_one_registry_gives_every_metric_its_direction():
    from orchestrator.metrics import direction

    assert direction("sum_rmse") == "min" and direction("best_sum_rmse") == "min"
    assert direction("left_accuracy") == "max" and direction("sum_r2") == "max"
    assert direction("objective", objective_mode="min") == "min"
    assert direction("delta_m_pct") == "max"
