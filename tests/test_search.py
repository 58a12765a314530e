"""Search spaces: pure Python (no TensorFlow), validated before Ray starts."""
import random

import pytest

from orchestrator.config import parse_config
from orchestrator.errors import ConfigError
from orchestrator.config.sampling import materialize, param_space, simplex_weights
from orchestrator.config.space import hp_columns

from factories import experiment

SPACE = {
    "train.freeze_depth": {"choice": [0, 1, 2, "all"]},
    "train.backbone_lr": {"loguniform": [1e-5, 1e-2]},
    "train.head_lr": {"uniform": [1e-4, 1e-2]},
    "heads.hidden_units": {"randint": [8, 32]},
    "train.loss_weights": {"simplex": {"concentration": 1.0}},
}


def sweep_cfg(tmp_path, space=SPACE, **search):
    return parse_config(experiment(tmp_path, "builtin:multidigits/train",
                                   search={"space": space, "num_samples": 4, **search}))


@pytest.mark.parametrize("concentration", [0.3, 1.0, 5.0])
def test_simplex_always_sums_to_one_over_the_tasks(concentration):
    rng = random.Random(0)
    tasks = ["left", "right", "sum"]
    for _ in range(500):
        w = simplex_weights({t: rng.uniform(1e-6, 1 - 1e-6) for t in tasks}, concentration)
        assert set(w) == set(tasks)
        assert sum(w.values()) == pytest.approx(1.0, abs=1e-12)
        assert all(v >= 0 for v in w.values())


def test_simplex_concentration_shapes_the_draws():
    rng = random.Random(1)
    spread = {}
    for c in (0.2, 20.0):
        draws = [simplex_weights({t: rng.uniform(1e-6, 1 - 1e-6) for t in "abc"}, c)["a"] for _ in range(2000)]
        spread[c] = sum(abs(d - 1 / 3) for d in draws) / len(draws)
    assert spread[20.0] < spread[0.2] / 3   # high concentration: near equal weights


def test_every_searched_field_reaches_the_trial_config(tmp_path):
    """Sample Tune's space the way Tune does (random search), materialize, and check the trial's config."""
    from ray.tune.search.variant_generator import generate_variants

    from orchestrator.sweep.runner import trial_config

    cfg = sweep_cfg(tmp_path, searcher="random")
    space = param_space(cfg.search, list(cfg.tasks))
    for _, params in generate_variants(space):
        trial = trial_config(cfg, params)
        assert trial.train.freeze_depth == params["train.freeze_depth"]
        assert trial.train.backbone_lr == params["train.backbone_lr"]
        assert trial.train.head_lr == params["train.head_lr"]
        assert trial.heads.hidden_units == params["heads.hidden_units"]
        assert 8 <= trial.heads.hidden_units <= 32
        w = trial.normalized_loss_weights()
        assert w == pytest.approx(trial.train.loss_weights) and sum(w.values()) == pytest.approx(1.0)
        cols = hp_columns(materialize(cfg.search, params, list(cfg.tasks)), n_blocks=5)
        assert set(cols) == {"freeze_depth", "backbone_lr", "head_lr", "hidden_units",
                             "weight_left", "weight_right", "weight_sum"}
        assert cols["freeze_depth"] == (5 if params["train.freeze_depth"] == "all" else params["train.freeze_depth"])


def test_grid_expands_choices(tmp_path):
    from ray.tune.search.variant_generator import generate_variants

    cfg = sweep_cfg(tmp_path, space={"train.freeze_depth": {"choice": [0, 2, 4]}}, searcher="grid", num_samples=1)
    values = [materialize(cfg.search, p, list(cfg.tasks))["train.freeze_depth"]
              for _, p in generate_variants(param_space(cfg.search, list(cfg.tasks)))]
    assert values == [0, 2, 4]


@pytest.mark.parametrize("space, expected", [
    ({"train.lr": {"choice": [1]}}, "search path 'train.lr' is not a config field"),
    ({"train": {"choice": [1]}}, "'train' is a section"),
    ({"train.head_lr": {"loguniform": [1e-2, 1e-4]}}, "low < high"),
    ({"train.head_lr": {"loguniform": [0, 1e-2]}}, "bounds must be > 0"),
    ({"train.head_lr": {"uniform": [1e-3, 1e-2], "choice": [1]}}, "exactly one of"),
    ({"train.head_lr": {"simplex": {"concentration": 1.0}}}, "simplex only applies to train.loss_weights"),
    ({"train.loss_weights": {"choice": [1]}}, "search train.loss_weights with {simplex"),
])
def test_bad_search_spaces_are_config_errors(tmp_path, space, expected):
    with pytest.raises(ConfigError) as e:
        sweep_cfg(tmp_path, space=space)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_grid_needs_a_choice_and_samples_the_rest(tmp_path):
    from ray.tune.search.variant_generator import generate_variants

    with pytest.raises(ConfigError, match="grid search needs at least one choice domain"):
        sweep_cfg(tmp_path, space={"train.head_lr": {"uniform": [0.1, 0.2]}}, searcher="grid")
    cfg = sweep_cfg(tmp_path, space={"train.freeze_depth": {"choice": [0, 3]}, "train.head_lr": {"uniform": [0.1, 0.2]}},
                    searcher="grid", num_samples=2)
    variants = [materialize(cfg.search, p, list(cfg.tasks))
                for _, p in generate_variants(param_space(cfg.search, list(cfg.tasks)))]
    assert [p["train.freeze_depth"] for p in variants] == [0, 3, 0, 3]   # num_samples 2: the grid repeated...
    assert [p.get("train.seed", 0) for p in variants] == [0, 0, 1, 1]   # ... each repeat with a new seed
    assert all(0.1 <= p["train.head_lr"] <= 0.2 for p in variants)


def test_search_code_never_imports_tensorflow():
    import subprocess
    import sys

    code = ("import sys; import orchestrator.config.space, orchestrator.config.schema, orchestrator.leaderboard.leaderboard; "
            "print('tensorflow' in sys.modules or 'keras' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_optuna_accepts_the_simplex_space(tmp_path):
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator.config.sampling import OptunaSpace
    from orchestrator.sweep.runner import trial_config

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", search={
        "searcher": "optuna", "space": {"train.loss_weights": {"simplex": {"concentration": 1.0}},
                                        "train.freeze_depth": {"choice": [0, 2]}}}))
    searcher = OptunaSearch(space=OptunaSpace(cfg.search, list(cfg.tasks)), metric="objective", mode="max", seed=0)
    params = searcher.suggest("trial-1")
    weights = trial_config(cfg, params).normalized_loss_weights()
    assert sum(weights.values()) == pytest.approx(1.0) and set(weights) == {"left", "right", "sum"}


def test_searched_epochs_set_the_scheduler_and_the_status(tmp_path):
    from factories import row as trial_row
    from orchestrator.sweep.tuner import make_scheduler

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 2},
                                  search={"space": {"train.epochs": {"choice": [2, 6]}}}))
    assert make_scheduler(cfg)._max_t == 6
    trial = cfg.with_values({"train.epochs": 6})
    history = [{"epoch": e, "objective": 0.5, "status": "running"} for e in (1, 2)]
    row = trial_row(trial, history, sweep_id="s", trial_id="t", searched={"train.epochs": 6}, n_blocks=5)
    assert row["status"] == "stopped"
    row = trial_row(cfg, history, sweep_id="s", trial_id="t", searched={"train.epochs": 2}, n_blocks=5)
    assert row["status"] == "completed"


# -- conditional spaces -------------------------------------------------------------------------------------------
WEIGHTING = {"train.loss_weighting": {"choice": [
    {"static": {"train.loss_weights": {"simplex": {"concentration": 1.0}}}},
    "uncertainty",
    {"dwa": {"train.dwa_temperature": {"uniform": [1.0, 4.0]}}}]},
    "train.freeze_depth": {"choice": [0, 2]}}
USED = {"static": {"train.loss_weights"}, "uncertainty": set(), "dwa": {"train.dwa_temperature"}}


def test_a_branch_is_searched_only_where_its_choice_is_taken(tmp_path):
    from orchestrator.sweep.callback import short_values
    from orchestrator.sweep.runner import trial_config

    cfg = sweep_cfg(tmp_path, space=WEIGHTING, num_samples=30, searcher="random")   # Optuna's: a test below
    seen = set()
    space = param_space(cfg.search, list(cfg.tasks))
    for _ in range(60):
        params = {k: v.sample() if hasattr(v, "sample") else v for k, v in space.items()}
        values = materialize(cfg.search, params, list(cfg.tasks))
        method = values["train.loss_weighting"]
        seen.add(method)
        assert set(values) == {"train.loss_weighting", "train.freeze_depth"} | USED[method]
        trial = trial_config(cfg, params)
        assert trial.train.loss_weighting == method
        if method == "dwa":
            assert trial.train.dwa_temperature == values["train.dwa_temperature"]
        line = short_values(values, 5)
        assert ("weight_left" in line) == (method == "static") and ("dwa_temperature" in line) == (method == "dwa")
    assert seen == {"static", "uncertainty", "dwa"}


def test_a_grid_takes_the_cross_product_within_each_branch(tmp_path):
    from ray.tune.search.variant_generator import generate_variants

    space = {"train.loss_weighting": {"choice": [
        {"static": {"train.freeze_depth": {"choice": [0, 1]}}},
        {"dwa": {"train.dwa_temperature": {"choice": [1.0, 2.0, 4.0]}}}, "uncertainty"]}}
    cfg = sweep_cfg(tmp_path, space=space, searcher="grid", num_samples=1)
    points = [materialize(cfg.search, p, list(cfg.tasks))
              for _, p in generate_variants(param_space(cfg.search, list(cfg.tasks)))]
    assert sorted(map(str, points)) == sorted(map(str, [
        {"train.loss_weighting": "static", "train.freeze_depth": 0},
        {"train.loss_weighting": "static", "train.freeze_depth": 1},
        {"train.loss_weighting": "dwa", "train.dwa_temperature": 1.0},
        {"train.loss_weighting": "dwa", "train.dwa_temperature": 2.0},
        {"train.loss_weighting": "dwa", "train.dwa_temperature": 4.0},
        {"train.loss_weighting": "uncertainty"}]))


def test_optuna_suggests_a_branch_only_when_it_is_taken(tmp_path):
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator.config.sampling import OptunaSpace

    cfg = sweep_cfg(tmp_path, space=WEIGHTING, searcher="optuna")
    searcher = OptunaSearch(space=OptunaSpace(cfg.search, list(cfg.tasks)), metric="objective", mode="max", seed=0)
    seen = set()
    for i in range(30):
        params = searcher.suggest(f"t{i}")
        method = params["train.loss_weighting"]
        seen.add(method)
        assert ("train.dwa_temperature" in params) == (method == "dwa")
        assert ("train.loss_weights.left" in params) == (method == "static")
        values = materialize(cfg.search, params, list(cfg.tasks))
        assert set(values) == {"train.loss_weighting", "train.freeze_depth"} | USED[method]
        searcher.on_trial_complete(f"t{i}", {"objective": 0.5 + 0.01 * i, "training_iteration": 1})
    assert seen == {"static", "uncertainty", "dwa"}


def test_the_config_hash_ignores_inactive_parameters(tmp_path):
    cfg = sweep_cfg(tmp_path, space=WEIGHTING)
    a = cfg.with_values({"train.loss_weighting": "uncertainty", "train.dwa_temperature": 1.5,
                         "train.loss_weights": {"left": 0.2, "right": 0.3, "sum": 0.5}})
    b = cfg.with_values({"train.loss_weighting": "uncertainty", "train.dwa_temperature": 3.0})
    assert a.config_hash() == b.config_hash()          # same work
    assert a.train.dwa_temperature == 1.5              # the config itself keeps its values
    c = cfg.with_values({"train.loss_weighting": "dwa", "train.dwa_temperature": 1.5})
    d = cfg.with_values({"train.loss_weighting": "dwa", "train.dwa_temperature": 3.0})
    assert c.config_hash() != d.config_hash()
    assert a.with_values({"train.seed": 1}).config_hash() != a.config_hash()


def test_inactive_parameters_are_null_in_the_row(tmp_path):
    from factories import row

    cfg = sweep_cfg(tmp_path, space=WEIGHTING)
    history = [{"epoch": 1, "objective": 0.5, "status": "running"}]
    r = row(cfg.with_values({"train.loss_weighting": "uncertainty"}), history,
            searched={"train.loss_weighting": "uncertainty", "train.freeze_depth": 0})
    assert r["weight_left"] is None and r["weight_sum"] is None and r["dwa_temperature"] is None
    assert r["loss_weighting"] == "uncertainty"
    r = row(cfg.with_values({"train.loss_weighting": "dwa", "train.dwa_temperature": 3.0}), history,
            searched={"train.loss_weighting": "dwa", "train.freeze_depth": 0, "train.dwa_temperature": 3.0})
    assert r["dwa_temperature"] == 3.0 and r["weight_left"] is None


@pytest.mark.parametrize("space, expected", [
    ({"train.loss_weighting": {"choice": [{"dwa": {"train.temperature": {"uniform": [1, 2]}}}, "static"]}},
     "search path 'train.temperature' is not a config field"),
    ({"train.loss_weighting": {"choice": [{"dwa": {"train.dwa_temperature": {"uniform": [2, 1]}}}]}}, "low < high"),
    ({"train.loss_weighting": {"choice": [{"dwa": {"train.freeze_depth": {"choice": [1]}}}]},
      "train.freeze_depth": {"choice": [0]}}, "'train.freeze_depth' appears twice"),
    ({"train.loss_weighting": {"choice": [{"dwa": 1, "static": 2}]}}, "neither a value nor a branch"),
])
def test_bad_conditional_spaces_are_config_errors(tmp_path, space, expected):
    with pytest.raises(ConfigError) as e:
        sweep_cfg(tmp_path, space=space)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_the_default_search_is_tpe_under_asha(tmp_path):
    """The default searcher is model-based (Optuna TPE) and the default scheduler multi-fidelity (ASHA): replayed on
    measured learning curves (bench/search_sim.py) TPE + ASHA found the grid's best far more often than random + ASHA
    from 24 trials on, and tied it at 12."""
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator.sweep.tuner import make_scheduler, make_searcher

    cfg = sweep_cfg(tmp_path)
    assert (cfg.search.searcher, cfg.search.scheduler.type) == ("optuna", "asha")
    searcher = make_searcher(cfg, 2, [])
    assert isinstance(getattr(searcher, "searcher", searcher), OptunaSearch)
    from ray.tune.schedulers import ASHAScheduler

    assert isinstance(make_scheduler(cfg, concurrent=2), ASHAScheduler)   # Ray's, its rungs kept (sweep/kept.py)


@pytest.mark.parametrize("concentration", [1.0, 2.0, 8.0, 20.0])
def test_known_loss_weights_map_to_uniforms_that_give_them_back(concentration):
    """base_first and warm starts hand the searcher a config's own loss weights as the simplex's uniforms. At
    concentration 8 the inverse fed normalized weights (each <= 1) to Gamma(8)'s CDF: every uniform came out ~1e-8,
    was clipped to the same floor, and the trial trained equal weights instead of the ones written."""
    from orchestrator.config.sampling import simplex_uniforms

    for weights in ({"left": 0.4, "right": 0.4, "sum": 0.2}, {"left": 0.7, "right": 0.3},
                    {"a": 0.1, "b": 0.15, "c": 0.3, "d": 0.45}):
        back = simplex_weights(simplex_uniforms(weights, concentration), concentration)
        assert back == pytest.approx(weights, abs=1e-6), (concentration, weights, back)


def test_loss_weights_a_simplex_cannot_reach_are_named_in_the_warm_start():
    """Dirichlet(20) over 4 tasks puts 0.05 on a task with probability ~1e-8 (a uniform below the clipping floor):
    the point handed to the searcher trains other weights, and the line says which."""
    from orchestrator.config.sampling import point_for
    from orchestrator.config.schema import SearchConfig

    search = SearchConfig.model_validate({"space": {"train.loss_weights": {"simplex": {"concentration": 20}}}})
    said = []
    point = point_for(search, {"train.loss_weights": {"a": 0.05, "b": 0.15, "c": 0.3, "d": 0.5}}, list("abcd"),
                      say=said.append)
    assert len(point) == 4 and len(said) == 1 and "beyond what simplex concentration 20 reaches" in said[0], said
    said.clear()
    point_for(search, {"train.loss_weights": {"a": 0.2, "b": 0.2, "c": 0.3, "d": 0.3}}, list("abcd"), say=said.append)
    assert said == []


def test_a_searched_path_outside_its_branch_counts_in_the_hash_when_the_trial_still_uses_it(tmp_path):
    """Inactive means "not searched here", not "not used": a freeze-depth-4 trial of a space that searches
    backbone_lr only under freeze depth 0 trains the backbone at the config's backbone_lr. Counting it at the
    schema's default made two such trials at different rates one piece of work (and reused one for the other)."""
    space = {"train.freeze_depth": {"choice": [4, {0: {"train.backbone_lr": {"loguniform": [1e-4, 1e-2]}}}]}}
    slow, fast = (sweep_cfg(tmp_path, space=space).with_values({"train.freeze_depth": 4, "train.backbone_lr": lr})
                  for lr in (1e-3, 1e-2))
    assert slow.config_hash() != fast.config_hash()
    space_all = {"train.freeze_depth": {"choice": ["all", {0: {"train.backbone_lr": {"loguniform": [1e-4, 1e-2]}}}]}}
    frozen = [sweep_cfg(tmp_path, space=space_all).with_values({"train.freeze_depth": "all", "train.backbone_lr": lr})
              for lr in (1e-3, 1e-2)]
    assert frozen[0].config_hash() == frozen[1].config_hash()     # a frozen backbone has no learning rate


def test_a_searched_value_named_like_a_row_column_keeps_its_own_column(tmp_path):
    """Searched values become columns by their short name: backbone.kind became the row's `kind` ("application"),
    so the trial was no longer a trial to best, top, report, confirm and warm starts. A short name the row already
    uses for something else falls back to the dotted path."""
    from factories import row

    cfg = sweep_cfg(tmp_path, space={"backbone.kind": {"choice": ["builtin", "application"]},
                                     "train.freeze_depth": {"choice": [0, 2]}})
    r = row(cfg, [{"epoch": 1, "objective": 0.5, "status": "running"}], kind="trial",
            searched={"backbone.kind": "builtin", "train.freeze_depth": 2})
    assert r["kind"] == "trial" and r["backbone_kind"] == "builtin" and r["freeze_depth"] == 2


@pytest.mark.parametrize("path, key, other", [
    ("heads.hidden_units", 64, 0), ("train.freeze_depth", 2, 0), ("train.jit_compile", True, False),
    ("heads.dropout", 0.5, 0.25), ("tasks.left.metric", None, "accuracy"),
    ("tasks.left.label", "0", "left"),   # a string key that looks like a number stays a string
])
def test_a_branch_keyed_by_a_number_or_bool_survives_the_plain_dict_the_worker_gets(tmp_path, path, key, other):
    """Trials get the config as a JSON plain dict, where a branch's key 64 becomes "64": the worker then found no
    branch for the drawn 64 and trained the base values while the row recorded the drawn ones."""
    from orchestrator.sweep.runner import trial_config

    space = {path: {"choice": [other, {key: {"train.head_lr": {"uniform": [0.02, 0.03]}}}]}}
    cfg = sweep_cfg(tmp_path, space=space, searcher="random")
    on_worker = parse_config(cfg.model_dump(mode="json"))
    params = {path: key, "train.head_lr": 0.025}
    values = materialize(on_worker.search, params, list(cfg.tasks))
    assert values == materialize(cfg.search, params, list(cfg.tasks)) == params, values
    assert trial_config(on_worker, params).config_hash() == trial_config(cfg, params).config_hash()


def test_a_small_concentration_gives_a_corner_not_a_division_by_zero():
    """Every Gamma quantile underflows to 0 at concentration 1e-6: the draw raised ZeroDivisionError in the trial.
    The limit of Dirichlet(alpha -> 0) is a corner: the task of the largest uniform."""
    assert simplex_weights({"a": 0.3, "b": 0.6}, 1e-6) == {"a": 0.0, "b": 1.0}
    w = simplex_weights({"a": 0.3, "b": 0.6}, 0.05)
    assert sum(w.values()) == pytest.approx(1.0) and w["b"] > w["a"]


def test_a_yaml_file_keeps_its_branch_keys_numbers(tmp_path):
    """Loading a YAML file copied the config through JSON, which made every branch key a string: `train.epochs:
    {choice: [{5: ...}, {20: ...}]}` gave ASHA max_t '5' (the largest string), so 20-epoch trials were stopped at
    epoch 5, and a base freeze depth 0 did not fit the option '0'."""
    from factories import small_table, write_parquet, write_yaml
    from orchestrator.config import load_config
    from orchestrator.config.space import fits, largest

    cfg = experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(40)), train={"freeze_depth": 0})
    cfg["search"] = {"num_samples": 2, "space": {
        "train.epochs": {"choice": [{5: {"train.head_lr": {"choice": [0.01, 0.1]}}}, {20: {}}]},
        "train.freeze_depth": {"choice": [{0: {"train.backbone_lr": {"loguniform": [1e-4, 1e-2]}}}, 2]}}}
    loaded = load_config(write_yaml(tmp_path / "e.yaml", cfg))
    assert largest(loaded.search, "train.epochs", None) == 20
    assert fits(loaded.search.space["train.freeze_depth"], 0)
    assert loaded.search.space["train.epochs"].options == [5, 20]


def test_yaml_reads_1e_minus_4_as_a_number(tmp_path):
    """PyYAML follows YAML 1.1, where `1e-4` (no dot) is a string: `train.head_lr: {choice: [1e-4, 1e-3, 0.001]}`
    kept two strings, so '1e-3' and 0.001 were two grid points of one config hash and a base 0.001 fit no option."""
    from orchestrator.config.loading import read_yaml

    assert read_yaml("a: [1e-4, 1E3, -2.5e+2, 1.0e-2, .5, 3, '1e-4', 1e, e5, 1_000]", source="x") == {
        "a": [1e-4, 1e3, -250.0, 1e-2, 0.5, 3, "1e-4", "1e", "e5", 1000]}
    with pytest.raises(ConfigError, match="appears twice"):
        parse_config({**experiment(tmp_path, "x.parquet"),
                      **read_yaml("search: {space: {train.head_lr: {choice: [1e-3, 0.001]}}}", source="x")})


def test_a_numeric_branch_key_survives_a_config_copy_and_the_base_trial_still_comes_first(tmp_path):
    """A copy of the config (`tune --name`, `--set`, resolving its storage) went through JSON, which keeps object keys
    as strings: branch key 0 became "0", the base config (freeze depth 0) no longer fitted the space, and the sweep
    said "outside the search space, not evaluated first" of a config inside it."""
    from orchestrator.config.space import fits
    from orchestrator.sweep.tuner import first_points

    space = {"train.freeze_depth": {"choice": [4, {0: {"train.backbone_lr": {"loguniform": [1e-4, 1e-2]}}}]}}
    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"freeze_depth": 0, "backbone_lr": 3e-3},
                                  search={"space": space, "searcher": "optuna"}))
    said = []
    for copy in (cfg, cfg.with_values({"name": "other"})):
        assert first_points(copy, say=said.append) == [{"train.freeze_depth": 0, "train.backbone_lr": 3e-3}], said
    assert not said
    stored = parse_config(cfg.model_dump(mode="json")).search.space["train.freeze_depth"]   # as a sweep.json holds it
    assert fits(stored, 0) and fits(stored, 4) and not fits(stored, 1)


def test_a_budget_searched_inside_one_branch_leaves_the_others_their_own(tmp_path):
    """train.epochs searched only under dwa: the largest value was the branch's (2), so ASHA's max_t was 2 and the
    base trial (static, 3 epochs) and every other static trial was cut at epoch 2, its row saying "stopped early by
    the scheduler"; resources.workers the same for the units data is cut into. Found by a helper's audit."""
    from orchestrator.config.space import largest
    from orchestrator.sweep.tuner import make_scheduler

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 3}, resources={"workers": 1},
                                  search={"space": {"train.loss_weighting": {"choice": [
                                      "static", {"dwa": {"train.epochs": {"choice": [1, 2]},
                                                         "resources.workers": {"choice": [1, 2]}}}]}},
                                      "scheduler": {"type": "asha", "grace_period": 1}}))
    assert largest(cfg.search, "train.epochs", cfg.train.epochs) == 3
    assert largest(cfg.search, "resources.workers", cfg.resources.workers) == 2
    assert make_scheduler(cfg, trials=4, concurrent=2)._max_t == 3
    top = cfg.with_values({"search.space": {"train.epochs": {"choice": [1, 2]}}})   # every trial draws it: 2
    assert largest(top.search, "train.epochs", top.train.epochs) == 2


def test_a_searched_value_a_trial_does_not_draw_but_trains_with_is_in_its_row(tmp_path):
    """A path searched only under sgd is inactive for an adam trial, which still trains with the base value: its row
    said head_lr None (and train_epochs None for a static trial under a dwa-only epochs search), and the importance
    left out every row with a null there. Null stays only for what the trial's training never reads (dwa's
    temperature for a static trial). Found by a helper's audit."""
    from factories import row

    cfg = sweep_cfg(tmp_path, space={"train.optimizer": {"choice": [
        "adam", {"sgd": {"train.head_lr": {"loguniform": [0.01, 0.1]}}}]},
        "train.loss_weighting": {"choice": ["static", {"dwa": {"train.dwa_temperature": {"uniform": [1.0, 4.0]},
                                                               "train.epochs": {"choice": [1, 2]}}}]}})
    history = [{"epoch": 1, "objective": 0.5, "status": "running"}]
    adam = cfg.with_values({"train.optimizer": "adam", "train.loss_weighting": "static"})
    r = row(adam, history, searched={"train.optimizer": "adam", "train.loss_weighting": "static"})
    assert r["head_lr"] == adam.train.head_lr and r["dwa_temperature"] is None
    assert r["train_epochs"] == adam.train.epochs


def test_a_grid_says_when_the_base_config_or_a_warm_start_is_not_among_its_points(tmp_path):
    """base_first (default true) and warm_start {experiment, top} add trials before a random or Optuna search; a grid
    runs its own points only, and skipped both without a word, while the README promised the base config is always
    evaluated first (found by a helper's audit of the README). The sweep says so, once each."""
    from orchestrator.sweep.tuner import first_points

    space = {"train.freeze_depth": {"choice": [2, 4]}}
    said = []
    inside = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"freeze_depth": 2},
                                     search={"space": space, "searcher": "grid"}))
    assert first_points(inside, say=said.append) == [] and said == []        # the base is a grid point: it runs
    outside = inside.with_values({"train.freeze_depth": 3,
                                  "search.warm_start": {"experiment": "earlier", "top": 2}})
    assert first_points(outside, say=said.append) == []
    assert len(said) == 2 and "base config" in said[0] and "not a point of the grid" in said[0], said
    assert "warm start" in said[1] and "random or optuna" in said[1], said


@pytest.mark.parametrize("repeats", [2, 6])   # 6: more than the 4 x K rows this stop's first version read
def test_a_warm_start_hands_the_searcher_its_k_best_distinct_configurations(tmp_path, repeats):
    """warm_start {experiment, top: 3} of a grid run with 2 repeats (seeds) handed the searcher one configuration
    twice or three times (its repeats, and the base config again): first trials that are the same work (found by a
    helper's audit). The K best distinct configurations, each once, the base config included."""
    from factories import embedded, row
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.searchers import first_points

    space = {"train.freeze_depth": {"choice": [0, 1, 2]}, "train.head_lr": {"choice": [1e-3, 1e-2]}}
    earlier = parse_config(embedded(tmp_path, name="earlier", train={"epochs": 2, "seed": 0},
                                    search={"searcher": "grid", "num_samples": 2, "space": space}))
    rows = []
    for seed, bonus in ((r, 0.001 * r) for r in range(repeats)):   # grid repeat r trains seed + r
        for d, lr, v in [(2, 1e-2, 0.90), (1, 1e-2, 0.80), (0, 1e-3, 0.70)]:
            c = earlier.with_values({"train.freeze_depth": d, "train.head_lr": lr, "train.seed": seed})
            rows.append(row(c, [{"epoch": 2, "objective": v + bonus}], trial_id=f"d{d}-s{seed}", sweep_id="g",
                            searched={"train.freeze_depth": d, "train.head_lr": lr}))
    Leaderboard(str(tmp_path)).append(rows)
    later = parse_config(embedded(tmp_path, name="later", train={"epochs": 2, "seed": 0, "freeze_depth": 2,
                                                                 "head_lr": 1e-2},
                                  search={"searcher": "optuna", "num_samples": 6, "space": space,
                                          "warm_start": {"experiment": "earlier", "top": 3}}))
    points = first_points(later, say=lambda line: None)
    assert [(p["train.freeze_depth"], p["train.head_lr"]) for p in points] == [(2, 1e-2), (1, 1e-2), (0, 1e-3)]
