"""Ranges the best trials press against: a hint to widen them. Pure Python on leaderboard-like rows."""
from orchestrator.config import parse_config
from orchestrator.config.edges import edge_hints

from factories import experiment

SPACE = {"train.freeze_depth": {"choice": [0, 2]},
         "train.backbone_lr": {"loguniform": [3e-4, 3e-3]},
         "train.head_lr": {"uniform": [1e-3, 1e-2]},
         "train.loss_weighting": {"choice": [{"dwa": {"train.dwa_temperature": {"uniform": [1.0, 4.0]}}},
                                             "uncertainty"]}}


def cfg(tmp_path, **objective):
    return parse_config(experiment(tmp_path, "builtin:multidigits/train",
                                   search={"space": SPACE, "searcher": "random", "num_samples": 8},
                                   **({"objective": objective} if objective else {})))


def hints_of(c, rows):
    """The hints ``tune`` prints at a sweep's end."""
    return edge_hints(c.search, rows, tasks=list(c.tasks), mode=c.objective_mode)


def row(objective, *, backbone_lr=1e-3, head_lr=5e-3, weighting="uncertainty", temperature=2.0, status="completed"):
    train = {"freeze_depth": 0, "backbone_lr": backbone_lr, "head_lr": head_lr, "loss_weighting": weighting,
             "dwa_temperature": temperature}
    return {"status": status, "objective": objective, "config": {"train": train}}


def test_best_trials_at_the_top_of_a_log_range_give_one_hint(tmp_path):
    rows = [row(0.95, backbone_lr=2.9e-3), row(0.94, backbone_lr=2.2e-3), row(0.93, backbone_lr=1.5e-3),
            row(0.70, backbone_lr=3.1e-4), row(0.50, backbone_lr=1e-3)]
    hints = hints_of(cfg(tmp_path), rows)
    assert len(hints) == 1
    assert hints[0].startswith("backbone_lr:") and "2.9e-03" in hints[0] and "top tenth" in hints[0]
    assert "widen" in hints[0] and "3.0e-03" in hints[0]


def test_middle_values_a_split_top_three_or_too_few_trials_give_none(tmp_path):
    c = cfg(tmp_path)
    middle = [row(0.95 - i / 100, backbone_lr=lr) for i, lr in enumerate([9e-4, 1e-3, 1.1e-3, 2.9e-3])]
    assert hints_of(c, middle) == []
    split = [row(0.95, backbone_lr=2.9e-3), row(0.94, backbone_lr=4e-4), row(0.93, backbone_lr=2.5e-3)]
    assert hints_of(c, split) == []   # the best at the edge, but the next best at the other end
    assert hints_of(c, [row(0.95, backbone_lr=2.9e-3), row(0.94, backbone_lr=2.8e-3)]) == []


def test_failed_rows_do_not_count_and_a_minimized_objective_ranks_the_lowest_first(tmp_path):
    rows = [row(None, head_lr=9.9e-3, status="failed"), row(0.10, head_lr=1.1e-3), row(0.20, head_lr=1.5e-3),
            row(0.30, head_lr=2e-3), row(0.90, head_lr=9.8e-3), row(0.95, head_lr=9.7e-3)]
    hints = hints_of(cfg(tmp_path, metric="sum_mae"), rows)
    assert [h.split(":")[0] for h in hints] == ["head_lr"] and "bottom tenth" in hints[0]


def test_an_inactive_parameter_is_judged_only_on_the_trials_that_use_it(tmp_path):
    # the three best are uncertainty trials: their dwa_temperature (a default, 2.0) is not a searched value
    rows = [row(0.95 - i / 100) for i in range(3)] + [
        row(0.90, weighting="dwa", temperature=3.99), row(0.89, weighting="dwa", temperature=3.95),
        row(0.88, weighting="dwa", temperature=3.9)]
    hints = hints_of(cfg(tmp_path), rows)
    assert [h.split(":")[0] for h in hints] == ["dwa_temperature"]
    assert "trials with loss_weighting=dwa" in hints[0]


def written_sweep(tmp_path):
    """A sweep's rows in Parquet (the run fields as JSON text, as ``tune`` writes them) and its sweep.json."""
    import json

    from factories import row as trial_row
    from orchestrator import layout, storage
    from orchestrator.leaderboard import Leaderboard

    c = cfg(tmp_path)
    board, written = Leaderboard(c.storage), []
    for i, lr in enumerate([2.9e-3, 2.2e-3, 1.5e-3, 3.1e-4]):
        searched = {"train.freeze_depth": 0, "train.backbone_lr": lr, "train.head_lr": 5e-3,
                    "train.loss_weighting": "uncertainty"}   # every active path, as a trial's are
        history = [{"epoch": 1, "objective": 0.95 - i / 10, "mean_score": 0.95 - i / 10, "train_loss": 0.1}]
        written.append(trial_row(c.with_values(searched), history, trial_id=f"t{i}", searched=searched))
    board.append(written)
    storage.atomic_write(layout.sweep_record(c.storage, c.name, written[0]["sweep_id"]),
                         json.dumps({"sweep_id": written[0]["sweep_id"], "config": c.public_dump()}).encode())
    return c, board, written[0]["sweep_id"]


def test_rows_read_back_from_the_leaderboard_give_the_same_hint(tmp_path):
    """The sweep's end reads its rows from Parquet (the run fields as JSON text), as ``tune`` does."""
    from orchestrator.leaderboard.query import rows as row_dicts

    c, board, sweep_id = written_sweep(tmp_path)
    table = board.table(experiment=c.name, sweep_id=sweep_id, columns=["status", "objective", "config"])
    assert isinstance(table.to_pylist()[0]["config"], str)   # stored as JSON text ...
    rows = row_dicts(table)                                   # ... and parsed as tune reads it
    assert isinstance(rows[0]["config"], dict) and len(rows) == 4
    assert [h.split(":")[0] for h in hints_of(c, rows)] == ["backbone_lr"]


def test_the_report_gives_each_sweeps_hints(tmp_path):
    """The same hint in report.md, under its sweep, from the space in the sweep's sweep.json."""
    from orchestrator.report import write_report

    c, board, sweep_id = written_sweep(tmp_path)
    res = write_report(board, c.name, str(tmp_path / "report"))
    assert list(res["hints"]) == [sweep_id] and [h.split(":")[0] for h in res["hints"][sweep_id]] == ["backbone_lr"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Ranges that bind" in text and f"sweep {sweep_id}" in text and "widen the range" in text
