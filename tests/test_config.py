import numpy as np
import pytest

from orchestrator.config import load_config, parse_config
from orchestrator.errors import ConfigError

from factories import experiment, write_yaml


def base(tmp_path, **kw):
    return experiment(tmp_path, "builtin:multidigits/train", **kw)


def test_valid_config_is_frozen_and_normalizes_weights(tmp_path):
    cfg = parse_config(base(tmp_path, train={"loss_weights": {"left": 2, "right": 1, "sum": 1}}))
    assert cfg.normalized_loss_weights() == {"left": 0.5, "right": 0.25, "sum": 0.25}
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        cfg.train.epochs = 3  # frozen
    assert parse_config(base(tmp_path)).normalized_loss_weights() == pytest.approx({t: 1 / 3 for t in ("left", "right", "sum")})


def test_a_task_is_turned_off_by_weight_0_written_out(tmp_path):
    """A partial loss_weights gave the unlisted tasks 0 without a word; it is refused (test_bad_input), and 0 is
    written out instead."""
    cfg = parse_config(base(tmp_path, train={"loss_weights": {"left": 1.0, "right": 0, "sum": 0}}))
    assert cfg.normalized_loss_weights() == {"left": 1.0, "right": 0.0, "sum": 0.0}


@pytest.mark.parametrize("change, expected", [
    ({"train": {"lr": 0.1}}, "unknown config key 'train.lr'"),
    ({"trian": {}}, "unknown config key 'trian'"),
    ({"train": {"epochs": "many"}}, "'train.epochs'"),
    ({"train": {"backbone_lr": -0.1}}, "'train.backbone_lr': Input should be greater than 0"),
    ({"train": {"loss_weights": {"left": 1, "depth": 1}}}, "unknown task(s) ['depth']"),
    ({"train": {"freeze_depth": -1}}, "freeze_depth must be >= 0 or 'all'"),
    ({"train": {"freeze_depth": "some"}}, "'train.freeze_depth'"),
    ({"tasks": {"left": {"type": "ranking"}}}, "'tasks.left.type'"),
    ({"tasks": {"left": {"type": "classification", "metric": "mae"}}}, "metric 'mae' is not available"),
    ({"objective": {"metric": "left_f1", "mode": "max"}}, "objective.metric 'left_f1' is not reported"),
    ({"data": {"validation": 1.5}}, "validation fraction"),
    ({"resources": {"gpus_per_worker": 0.5}}, "needs use_gpu: true"),
    # a folder name in storage, reports and exports: '..' wrote the report into the storage's parent
    ({"name": ".."}, "'name'"), ({"name": "."}, "'name'"),
    # MultiWorkerMirroredStrategy makes a replica of every GPU a worker sees; the loop feeds one batch per worker
    ({"resources": {"use_gpu": True, "gpus_per_worker": 2}}, "gpus_per_worker 2.0: a worker trains on one GPU"),
])
def test_bad_config_is_one_clear_line(tmp_path, change, expected):
    with pytest.raises(ConfigError) as e:
        parse_config(base(tmp_path, **change))
    msg = str(e.value)
    assert expected in msg and "\n" not in msg


def test_load_config_overrides_and_yaml_errors(tmp_path):
    path = write_yaml(tmp_path / "e.yaml", base(tmp_path))
    cfg = load_config(path, {"train.epochs": 7, "train.freeze_depth": "all"})
    assert cfg.train.epochs == 7 and cfg.train.freeze_depth == "all"
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_with_values_sets_dotted_paths_and_revalidates(tmp_path):
    cfg = parse_config(base(tmp_path))
    new = cfg.with_values({"train.head_lr": 0.05, "train.loss_weights": {"left": 1, "right": 0, "sum": 0}})
    assert new.train.head_lr == 0.05 and new.normalized_loss_weights()["left"] == 1.0
    with pytest.raises(ConfigError):
        cfg.with_values({"train.head_lr": -1})
    assert cfg.config_hash() != new.config_hash()


def test_duplicate_keys_are_refused_at_any_level_but_merge_keys_still_work():
    from orchestrator.config.loading import read_yaml

    with pytest.raises(ConfigError, match=r"^e.yaml: duplicate key 'x' at line 3: write each key once"):
        read_yaml("a:\n  x: 1\n  x: 2\n", source="e.yaml")
    with pytest.raises(ConfigError, match=r"duplicate key 1 at line 1"):
        read_yaml("- {1: a, 1: b}\n", source="e.yaml")
    assert read_yaml("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n", source="e.yaml")["other"] == {"x": 1, "y": 3}
    assert read_yaml("a: {x: 1}\nb: {x: 1}\n", source="e.yaml") == {"a": {"x": 1}, "b": {"x": 1}}


def test_every_float_must_be_finite(tmp_path):
    for change in ({"train": {"head_lr": float("nan")}}, {"train": {"dwa_temperature": float("inf")}},
                   {"heads": {"dropout": float("nan")}}, {"data": {"augment": {"zoom": float("nan")}}},
                   {"resources": {"cpus_per_worker": float("inf")}}):
        with pytest.raises(ConfigError, match="must be a finite number"):
            parse_config(base(tmp_path, **change))


def test_relative_paths_given_by_set_resolve_against_the_working_directory(tmp_path, monkeypatch):
    """As the docstring of load_config says: `--set data.train=d.parquet` stayed relative, to be read from whatever
    folder a Ray worker runs in."""
    import yaml

    from orchestrator.config import load_config

    (tmp_path / "conf").mkdir()
    (tmp_path / "here").mkdir()
    (tmp_path / "conf" / "e.yaml").write_text(yaml.safe_dump(base(tmp_path)))
    monkeypatch.chdir(tmp_path / "here")
    cfg = load_config(tmp_path / "conf" / "e.yaml", {"data.train": "d.parquet", "storage": "out"})
    assert cfg.data.train == str(tmp_path / "here" / "d.parquet") and cfg.storage == str(tmp_path / "here" / "out")


def test_equal_work_hashes_equal(tmp_path):
    """Equal weights written three ways trained the same and hashed three ways (work done again instead of reused);
    a dwa trial and the best.yaml written from it (no search section) hashed differently over weights dwa never
    reads."""
    cfg = parse_config(base(tmp_path))
    same = [cfg.with_values({"train.loss_weights": w}) for w in
            (None, {"left": 1, "right": 1, "sum": 1}, {"left": 0.5, "right": 0.5, "sum": 0.5})]
    assert len({c.config_hash() for c in same}) == 1
    assert cfg.with_values({"train.loss_weights": {"left": 2, "right": 1, "sum": 1}}).config_hash() != \
        cfg.config_hash()
    dwa = cfg.with_values({"train.loss_weighting": "dwa"})
    assert dwa.with_values({"train.loss_weights": {"left": 5, "right": 1, "sum": 1}}).config_hash() == \
        dwa.config_hash()
    assert dwa.with_values({"train.dwa_temperature": 4.0}).config_hash() != dwa.config_hash()
    # the base config as a simplex's point: its weights through the search's uniforms and back drift in the last
    # digit (1/3 came back 0.33333333333333337), so the sweep's base trial was other work than the config it is
    from orchestrator.config.sampling import simplex_uniforms, simplex_weights

    for concentration in (1.0, 2.5):
        drifted = simplex_weights(simplex_uniforms(cfg.normalized_loss_weights(), concentration), concentration)
        assert cfg.with_values({"train.loss_weights": drifted}).config_hash() == cfg.config_hash()


def test_adam_and_adamw_are_the_same_work():
    """Keras 3 applies weight decay decoupled (AdamW's) for every optimizer, and AdamW is Adam with it: a search over
    {adam, adamw} trained every point twice and reported a difference of noise."""
    import keras

    from orchestrator.model.multitask import make_optimizer

    cfg = parse_config({"name": "o", "data": {"train": "builtin:multidigits/train"},
                        "tasks": {"left": {"type": "classification"}}, "train": {"weight_decay": 0.01}})
    adamw = cfg.with_values({"train.optimizer": "adamw"})
    assert cfg.config_hash() == adamw.config_hash() != cfg.with_values({"train.optimizer": "sgd"}).config_hash()
    results = []
    for c in (cfg, adamw):
        v = keras.Variable(np.ones(3, "float32"))
        make_optimizer(c, 0.1).apply_gradients([(keras.ops.convert_to_tensor(np.array([1.0, -2.0, 0.5], "float32")), v)])
        results.append(v.numpy())
    assert np.array_equal(*results), results        # why: the same update


def test_overlapping_set_pairs_apply_in_order_without_a_traceback(tmp_path):
    import yaml

    from orchestrator.errors import ConfigError

    (tmp_path / "e.yaml").write_text(yaml.safe_dump(base(tmp_path)))
    cfg = load_config(tmp_path / "e.yaml", {"train.epochs": 3, "train.batch_size": 8, "train": {"batch_size": 16}})
    assert cfg.train.batch_size == 16
    with pytest.raises(ConfigError, match="'train'"):
        load_config(tmp_path / "e.yaml", {"train.epochs": 3, "train": 5})


def test_set_overrides_apply_in_the_order_given_a_repeated_key_too(tmp_path):
    """A repeated --set key kept its first position: `--set train.epochs=3 --set 'train={epochs: 5}' --set
    train.epochs=7` applied 7 before the section, and trained 5 epochs."""
    from factories import experiment, write_yaml
    from orchestrator.cli.common import overrides
    from orchestrator.config import load_config

    sets = overrides(("train.epochs=3", "train={epochs: 5, seed: 0}", "train.epochs=7"))
    assert load_config(write_yaml(tmp_path / "e.yaml", experiment(tmp_path, "x.parquet")), sets).train.epochs == 7


def test_use_gpu_given_as_text_false_means_no_gpu(tmp_path):
    """`use_gpu: "false"` (quoted) was truthy when the default GPU count was filled in, before validation read it
    as False: the error then said gpus_per_worker 1 needs use_gpu, a setting the user never wrote."""
    from factories import experiment

    cfg = parse_config(experiment(tmp_path, "x.parquet", resources={"workers": 1, "use_gpu": "false"}))
    assert cfg.resources.use_gpu is False and cfg.resources.gpus_per_worker == 0
    cfg = parse_config(experiment(tmp_path, "x.parquet", resources={"workers": 1, "use_gpu": "true"}))
    assert cfg.resources.use_gpu is True and cfg.resources.gpus_per_worker == 1


@pytest.mark.parametrize("path", ["train.epochs", "train.batch_size", "train.backbone_lr", "train.seed",
                                  "resources.workers", "resources.cpus_per_worker", "data.split_seed",
                                  "heads.hidden_units", "heads.dropout", "data.validation"])
def test_a_yes_or_no_is_not_a_number(tmp_path, path):
    """Pydantic reads true as 1 in lax mode: `train.epochs: true` trained one epoch without a word."""
    section, key = path.split(".")
    cfg = base(tmp_path)
    cfg.setdefault(section, {})[key] = True
    with pytest.raises(ConfigError) as e:
        parse_config(cfg)
    assert f"'{path}'" in str(e.value) and "true" in str(e.value) and "\n" not in str(e.value)


def test_the_order_of_the_tasks_is_part_of_the_work(tmp_path):
    """Heads are built in the tasks' order (their initial weights drawn in turn) and per-task state (learned loss
    weights, FAMO's logits, optimizer slots) is saved by position. The hashes sorted the tasks away: a config with its
    tasks reordered was the same work, `train --name X` continued a run from its checkpoint and `tune --resume` a
    sweep, and the uncertainty weights of left landed on sum. Found by a helper's audit."""
    from orchestrator.sweep.resume import sweep_hash

    d = base(tmp_path)
    cfg = parse_config(d)
    reordered = parse_config({**d, "tasks": dict(reversed(list(d["tasks"].items())))})
    assert list(reordered.tasks) != list(cfg.tasks)
    assert reordered.config_hash() != cfg.config_hash() and sweep_hash(reordered) != sweep_hash(cfg)
    assert parse_config({**d, "tasks": dict(d["tasks"])}).config_hash() == cfg.config_hash()
    from orchestrator.leaderboard.merge import work_key

    def same(location, column):
        return "data"

    assert work_key(reordered.run_fields(), same) != work_key(cfg.run_fields(), same)


def test_numbers_are_read_as_yaml_1_2_reads_them_everywhere_a_user_writes_one(tmp_path):
    """PyYAML follows YAML 1.1: `seed: 010` was 8 (octal) and `1:30` was 90 (base 60), silently; `ablate --values
    train.head_lr=1e-3,1e-2` read plain PyYAML, so 1e-3 was the text '1e-3', not the winner's 0.001: the winner's own
    value was trained again as an alternative named "1e-3" (its --help's own example). Found by a helper's audit."""
    from orchestrator.config.loading import read_yaml
    from orchestrator.sweep.ablate import parse_values

    assert [read_yaml(v, source="t") for v in ("010", "017", "1:30", "0o17", "0x1F", "1_000", "1e-3")] == \
        [10, 17, "1:30", 15, 31, 1000, 0.001]
    assert parse_values(("train.head_lr=1e-3,1e-2",)) == {"train.head_lr": [0.001, 0.01]}


def test_a_set_mapping_merges_into_its_section_and_a_search_path_is_one_key(tmp_path):
    """`--set data.augment={zoom: 0.2}` replaced the file's whole section: its flip and rotation went back to their
    defaults, and `--set train={head_lr: 0.01}` reset epochs, batch size and freeze depth, silently. And `--set
    search.space.train.head_lr=...` split the search path at its dots ("unknown config key"): --set could not reach
    one search dimension. Found by a helper's audit."""
    from factories import write_yaml
    from orchestrator.cli.common import overrides

    d = base(tmp_path, data={"augment": {"flip": "horizontal", "rotation": 0.05}},
             train={"epochs": 6, "batch_size": 64, "freeze_depth": 2},
             search={"space": {"train.freeze_depth": {"choice": [0, 2]}}})
    path = write_yaml(tmp_path / "e.yaml", d)
    cfg = load_config(path, overrides(("data.augment={zoom: 0.2}", "train={head_lr: 0.01}")))
    a, t = cfg.data.augment, cfg.train
    assert (a.flip, a.rotation, a.zoom) == ("horizontal", 0.05, 0.2)
    assert (t.epochs, t.batch_size, t.freeze_depth, t.head_lr) == (6, 64, 2, 0.01)
    cfg = load_config(path, overrides(("search.space.train.head_lr={loguniform: [0.001, 0.1]}",
                                       "search.space.train.freeze_depth={choice: [1, 3]}")))
    assert set(cfg.search.space) == {"train.freeze_depth", "train.head_lr"}
    assert cfg.search.space["train.freeze_depth"].choice == [1, 3]        # a domain is replaced, not merged


def test_yes_no_on_off_are_text_as_in_yaml_1_2(tmp_path):
    """YAML 1.1 reads yes/no/on/off as booleans: a task named `no` or `on` became the key False or True and was
    refused with "invalid config 'tasks.1.[key]'" (a key the user never wrote), and `classes: [yes, no]` were True and
    False, which no label of a CSV ever matches. YAML 1.2 reads them as text; a boolean field still takes yes/no.
    Found by a helper's audit."""
    from factories import write_yaml
    from orchestrator.config.loading import read_yaml

    assert [read_yaml(v, source="t") for v in ("no", "on", "Yes", "OFF", "true", "False")] == \
        ["no", "on", "Yes", "OFF", True, False]
    (tmp_path / "e.yaml").write_text(
        "name: t\ndata: {train: builtin:multidigits/train}\nresources: {use_gpu: no}\n"
        "tasks:\n  on: {type: classification, label: left, classes: [yes, no, 5, 6, 7, 8, 9]}\n")
    cfg = load_config(tmp_path / "e.yaml")
    assert list(cfg.tasks) == ["on"] and cfg.tasks["on"].classes[:2] == ["yes", "no"] and cfg.resources.use_gpu is False


def test_building_the_exported_config_class_directly_is_one_config_error(tmp_path):
    """orchestrator.ExperimentConfig is exported: ExperimentConfig(**d) raised pydantic's ValidationError wall ("For
    further information visit errors.pydantic.dev") where load_config and parse_config give one line (a helper's
    audit)."""
    from orchestrator import ConfigError, ExperimentConfig

    with pytest.raises(ConfigError, match=r"^invalid config 'train.epochs': Input should be greater than or equal to 1$"):
        ExperimentConfig(name="x", data={"train": "builtin:multidigits/train"}, tasks={"left": {"type": "classification"}},
                         train={"epochs": 0}, storage=str(tmp_path))
    assert ExperimentConfig(name="x", data={"train": "builtin:multidigits/train"},
                            tasks={"left": {"type": "classification"}}, storage=str(tmp_path)).train.epochs == 5
