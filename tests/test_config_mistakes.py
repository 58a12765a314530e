"""Config mistakes that did something other than what was written, or ended in a traceback (found by a helper's
audit of the config and the Python API; each test seen failing before its fix). No Ray, no TensorFlow."""
import pytest

from factories import experiment, run_cli, write_yaml
from orchestrator.config import load_config, parse_config
from orchestrator.errors import ConfigError


def test_a_label_column_the_builtin_data_lacks_is_one_line(tmp_path, capsys):
    """`validate --set tasks.left.label=leftt` on built-in data: a traceback ending in KeyError, exit 1."""
    path = write_yaml(tmp_path / "e.yaml", experiment(tmp_path, "builtin:multidigits/train"))
    code, _, err = run_cli(capsys, "validate", path, "--set", "tasks.left.label=leftt")
    assert code == 2 and "\n" not in err and "leftt" in err and "Traceback" not in err, err


def test_a_mapping_set_on_tasks_or_loss_weights_or_the_space_replaces_it(tmp_path):
    """`--set tasks={left: ...}` merged into the file's three tasks: the run still trained left, right and sum; a
    `--set search.space={...}` kept every dimension of the file's space."""
    raw = experiment(tmp_path, "builtin:multidigits/train",
                     train={"loss_weights": {"left": 1.0, "right": 1.0, "sum": 0.5}},
                     search={"space": {"train.head_lr": {"loguniform": [1e-4, 1e-2]},
                                       "train.freeze_depth": {"choice": [0, 1]}}})
    path = write_yaml(tmp_path / "e.yaml", raw)
    cfg = load_config(path, {"tasks": {"left": {"type": "classification"}}, "train.loss_weights": {"left": 1.0},
                             "search.space": {"train.freeze_depth": {"choice": [0, 2]}}})
    assert list(cfg.tasks) == ["left"] and cfg.train.loss_weights == {"left": 1.0}
    assert list(cfg.search.space) == ["train.freeze_depth"]
    # a section still merges: keys it does not name keep the file's values
    assert load_config(path, {"train": {"epochs": 3}}).train.batch_size == 32


def test_one_entry_of_tasks_or_the_space_is_dropped_by_setting_it_null(tmp_path):
    """`--set tasks.sum=null` was "Input should be a valid dictionary"; `search.space.train.head_lr=null` was
    "None is not a search domain": no way to drop one entry from the command line."""
    raw = experiment(tmp_path, "builtin:multidigits/train",
                     search={"space": {"train.head_lr": {"loguniform": [1e-4, 1e-2]},
                                       "train.freeze_depth": {"choice": [0, 1]}}})
    path = write_yaml(tmp_path / "e.yaml", raw)
    cfg = load_config(path, {"tasks.sum": None, "search.space.train.head_lr": None})
    assert list(cfg.tasks) == ["left", "right"] and list(cfg.search.space) == ["train.freeze_depth"]


def test_an_empty_storage_is_refused():
    """`storage: ''` meant the working directory: leaderboard, trials/ and logs/ scattered there."""
    raw = experiment(__import__("pathlib").Path("/tmp"), "builtin:multidigits/train")
    with pytest.raises(ConfigError, match="storage"):
        parse_config({**raw, "storage": ""})


def test_one_tasks_loss_weight_is_not_a_search_path_of_its_own(tmp_path):
    """`search.space.train.loss_weights.left={uniform: ...}` passed validate; in a static trial it overwrote the
    simplex's draw (the weights were no Dirichlet draw), in dwa/uncertainty trials it was drawn and never read."""
    raw = experiment(tmp_path, "builtin:multidigits/train",
                     train={"loss_weights": {"left": 1.0, "right": 1.0, "sum": 0.5}},
                     search={"space": {"train.loss_weights": {"simplex": {"concentration": 1.0}},
                                       "train.loss_weights.left": {"uniform": [0.1, 1.0]}}})
    with pytest.raises(ConfigError, match="train.loss_weights.left"):
        parse_config(raw)


def test_validate_runs_tunes_objective_check(tmp_path, capsys):
    """validate said ok to a sweep whose objective differs from the experiment's rows; tune then refused it."""
    from factories import row
    from orchestrator.leaderboard import Leaderboard

    raw = experiment(tmp_path, "builtin:multidigits/train", search={"space": {"train.head_lr": {"choice": [1e-3]}}})
    cfg = parse_config(raw)
    Leaderboard(cfg.storage).append([row(cfg, [{"epoch": 1, "objective": 0.9, "mean_score": 0.9}], trial_id="a",
                                         sweep_id="s")])
    path = write_yaml(tmp_path / "e.yaml", raw)
    code, _, err = run_cli(capsys, "validate", path, "--set", "objective.metric=sum_mae")
    assert code == 2 and "ranks its trials by mean_score" in err and "\n" not in err, err


def test_a_grace_period_no_trial_outlives_is_refused(tmp_path, capsys):
    """grace_period 10 with 5 epochs was clamped to 5 without a word: ASHA then stopped no trial."""
    raw = experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 5},
                     search={"space": {"train.head_lr": {"choice": [1e-3, 1e-2]}},
                             "scheduler": {"type": "asha", "grace_period": 10}})
    path = write_yaml(tmp_path / "e.yaml", raw)
    code, _, err = run_cli(capsys, "validate", path)
    assert code == 2 and "grace_period" in err and "\n" not in err, err
    code, _, err = run_cli(capsys, "validate", path, "--set", "search.scheduler.grace_period=2")
    assert code == 0, err


def test_the_grace_period_check_leaves_resuming_an_older_sweep_to_it(tmp_path):
    """A sweep started before the check (grace 10 on 5 epochs, clamped) could not be resumed: tune --resume ran the
    check first, and a lowered grace period is another sweep (found reviewing this change)."""
    from orchestrator.sweep.tuner import tune

    raw = experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 5},
                     search={"space": {"train.head_lr": {"choice": [1e-3, 1e-2]}},
                             "scheduler": {"type": "asha", "grace_period": 10}})
    with pytest.raises(ConfigError) as refused:
        tune(parse_config(raw), resume=True, out=lambda line: None)
    assert "is more than the trials" not in str(refused.value) and "to resume" in str(refused.value), refused.value


def test_a_mapping_set_on_the_section_above_replaces_the_map_inside_it_too(tmp_path):
    """`--set 'search={space: {...}}'` merged the file's space into it: the map inside a section merges as a whole
    or not at all, however the --set reaches it (found reviewing this change)."""
    raw = experiment(tmp_path, "builtin:multidigits/train", train={"loss_weights": {"left": 1.0, "right": 1.0,
                                                                                      "sum": 0.5}},
                     search={"space": {"train.head_lr": {"loguniform": [1e-4, 1e-2]},
                                       "train.freeze_depth": {"choice": [0, 1]}}})
    path = write_yaml(tmp_path / "e.yaml", raw)
    cfg = load_config(path, {"search": {"space": {"train.freeze_depth": {"choice": [0, 2]}}},
                             "train": {"loss_weights": {"left": 2.0, "right": 1.0, "sum": 1.0}, "epochs": 2}})
    assert list(cfg.search.space) == ["train.freeze_depth"] and cfg.train.epochs == 2
    cfg = load_config(path, {"train": {"loss_weights": {"left": 2.0}}, "tasks": {"left": {"type": "classification"}}})
    assert cfg.train.loss_weights == {"left": 2.0} and list(cfg.tasks) == ["left"]
