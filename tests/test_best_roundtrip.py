"""`best` writes the winner's config so that `train` retrains that trial's work (found by a helper's audit of best,
confirm and retrain; each test seen failing before its fix). No Ray: rows are written with the leaderboard's API."""
from factories import embedded, row, run_cli
from orchestrator.config import load_config, parse_config
from orchestrator.leaderboard import Leaderboard
from orchestrator.leaderboard.query import rows as row_dicts


def _reversed_tasks(tmp_path):
    raw = embedded(tmp_path / "runs")
    raw["tasks"] = dict(reversed(list(raw["tasks"].items())))      # right, then left: other work (heads' order)
    return parse_config(raw)


def test_a_stored_config_keeps_its_tasks_order(tmp_path):
    """Rows stored configs with sorted keys: tasks right, left came back left, right, another config hash."""
    cfg = _reversed_tasks(tmp_path)
    board = Leaderboard(cfg.storage)
    board.append([row(cfg, [{"epoch": 1, "objective": 0.9, "mean_score": 0.9}], trial_id="a", sweep_id="s")])
    stored = row_dicts(board.table())[0]
    assert list(stored["config"]["tasks"]) == ["right", "left"]
    assert parse_config(stored["config"]).config_hash() == stored["config_hash"] == cfg.config_hash()


def test_best_yaml_retrains_the_winners_config_hash(tmp_path, capsys):
    cfg = _reversed_tasks(tmp_path)
    board = Leaderboard(cfg.storage)
    board.append([row(cfg, [{"epoch": 1, "objective": 0.9, "mean_score": 0.9}], trial_id="a", sweep_id="s")])
    code, _, err = run_cli(capsys, "best", "--storage", cfg.storage, "-e", cfg.name, "-o", str(tmp_path / "b.yaml"))
    assert code == 0, err
    assert load_config(str(tmp_path / "b.yaml")).config_hash() == cfg.config_hash()


def test_a_merged_row_keeps_its_tasks_order_and_its_work(tmp_path):
    """Merge re-wrote a row's config with sorted keys, and rehashed it from that: another config's hash."""
    cfg = _reversed_tasks(tmp_path)
    Leaderboard(cfg.storage).append([row(cfg, [{"epoch": 1, "objective": 0.9, "mean_score": 0.9}], trial_id="a",
                                         sweep_id="s")])
    into = str(tmp_path / "dst")
    Leaderboard(into).merge([cfg.storage])
    merged = row_dicts(Leaderboard(into).table())[0]
    assert list(merged["config"]["tasks"]) == ["right", "left"]
    assert merged["config_hash"] == cfg.with_values({"storage": into}).config_hash()
