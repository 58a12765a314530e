"""`orchestrator validate` and the checks every command runs first: the search space, the global batch against a
worker's share, backbone files, --set into a value, errors after TensorFlow loads are one line; the same images in
training and validation (a warning); failed baselines under delta_m and searched resources the cluster cannot hold."""
import os
import subprocess
import sys

import pytest

from factories import experiment, run_cli, small_table, write_parquet, write_yaml


def test_validate_checks_the_search_space(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, "builtin:multidigits/train", search={"space": {"train.freeze_depth": {"choice": [0, 50]}}})
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "choice 50 is beyond the backbone's 5 blocks" in err


def test_tune_checks_the_space_before_pretraining(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, "builtin:multidigits/train", backbone={"kind": "builtin", "weights": "pretrained"},
                     search={"space": {"train.freeze_depth": {"choice": [0, 50]}}})
    code, _, err = run_cli(capsys, "tune", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "beyond the backbone" in err
    assert not (tmp_path / "runs" / "backbones").exists()


def test_validate_checks_the_global_batch_against_a_worker_shard(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(80)),
                     train={"batch_size": 64}, resources={"workers": 2})
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "train.batch_size 64" in err and "\n" not in err, err


@pytest.mark.parametrize("space, base, expected", [
    # workers drawn at the top, batch sizes in a branch: a trial of 3 workers and batch 64 trained 63 per step
    ({"resources.workers": {"choice": [1, 3]},
      "train.optimizer": {"choice": ["adam", {"sgd": {"train.batch_size": {"choice": [64, 96]}}}]}},
     {"train": {"batch_size": 96}},
     "train.batch_size 64 is not a multiple of resources.workers 3"),
    # a randint draws every size between its ends: 65 with 2 workers trained 64
    ({"train.batch_size": {"randint": [64, 96]}}, {"resources": {"workers": 2}},
     "search.space train.batch_size randint [64, 96] draws sizes that do not split across resources.workers 2"),
    # a branch's workers with the base batch size
    ({"train.optimizer": {"choice": ["adam", {"sgd": {"resources.workers": {"choice": [3]}}}]}},
     {"train": {"batch_size": 64}}, "train.batch_size 64 is not a multiple of resources.workers 3"),
])
def test_validate_checks_every_batch_size_and_worker_count_a_trial_can_draw(tmp_path, capsys, no_ray, space, base,
                                                                            expected):
    """Only a pair searched at the top was checked, and a randint at its ends: a trial's step then trained fewer
    examples than its row's batch size said (found by a helper's audit)."""
    cfg = experiment(tmp_path, "builtin:multidigits/train", search={"space": space}, **base)
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and expected in err and "\n" not in err, err


@pytest.mark.parametrize("space", [
    # 3 workers only under adam (base batch 96), batch 64 only under sgd (base workers 1): no trial draws both
    {"train.optimizer": {"choice": [{"adam": {"resources.workers": {"choice": [3]}}},
                                    {"sgd": {"train.batch_size": {"choice": [64]}}}]}},
    # batch sizes chosen per worker count: 64 and 128 only with 2 workers (refused by this stop's first version,
    # which checked them against the worker choice's other value, 3: found by reviewing it)
    {"resources.workers": {"choice": [3, {2: {"train.batch_size": {"choice": [64, 128]}}}]}},
])
def test_branches_that_never_meet_are_not_checked_together(tmp_path, capsys, no_ray, space):
    cfg = experiment(tmp_path, "builtin:multidigits/train", search={"space": space}, train={"batch_size": 96})
    code, out, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 0, err


def test_a_worker_refuses_a_batch_that_does_not_split_across_its_workers():
    """The worker loop floored batch // workers: whatever a check missed trained fewer examples than the row says."""
    from orchestrator.errors import ConfigError
    from orchestrator.training.batch import per_worker_batch

    assert per_worker_batch(96, 3) == 32 and per_worker_batch(7, 1) == 7
    with pytest.raises(ConfigError, match="train.batch_size 65 is not a multiple of resources.workers 2 \\(each step "
                                          "would train on 64 examples\\): use 64 or 66"):
        per_worker_batch(65, 2)


def test_validate_loads_the_backbone_file(tmp_path, capsys, no_ray):
    (tmp_path / "broken.keras").write_bytes(b"not a keras file")
    cfg = experiment(tmp_path, "builtin:multidigits/train", backbone={"kind": "file", "path": "broken.keras"})
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "broken.keras" in err and "\n" not in err, err


@pytest.mark.slow   # the real CLI in fresh processes (each loads TensorFlow): end-to-end
def test_an_error_after_tensorflow_loads_is_one_line(tmp_path):
    """A missing backbone file is found while building the backbone (TensorFlow loaded): stderr is one line."""
    cfg = experiment(tmp_path, "builtin:multidigits/train", backbone={"kind": "file", "path": "missing.keras"})
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", write_yaml(tmp_path / "e.yaml", cfg)],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing.keras" in proc.stderr, proc.stderr


def test_set_into_a_value_is_one_line(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, "builtin:multidigits/train")
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg), "--set", "train.epochs.x=1")
    assert code == 2 and "train.epochs" in err and "\n" not in err, err


def test_use_gpu_built_in_python_gets_one_gpu_per_worker():
    from orchestrator.config.schema import ResourcesConfig

    assert ResourcesConfig(use_gpu=True).gpus_per_worker == 1.0


def leak_line(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("warning:") and "also in the training data" in line]


def test_validate_warns_once_about_the_same_images_in_training_and_validation(tmp_path, capsys, no_ray):
    import pyarrow as pa

    train = small_table(80)
    val = pa.concat_tables([train.slice(10, 5), small_table(20, part="val")])      # 5 training images again
    cfg = experiment(tmp_path, write_parquet(tmp_path / "train.parquet", train),
                     data={"validation": write_parquet(tmp_path / "val.parquet", val)})
    code, out, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 0, err
    assert leak_line(out) == ["warning: 5 of 25 validation images are also in the training data (0 by file path, 5 "
                              "by identical bytes): the validation score is optimistic; remove them from one side"]
    cfg["data"]["validation"] = write_parquet(tmp_path / "clean.parquet", small_table(20, part="val"))
    code, out, _ = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 0 and leak_line(out) == []


def test_validate_warns_about_manifests_sharing_files(tmp_path, capsys, no_ray):
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from PIL import Image

    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "img" / "copy.png").write_bytes((tmp_path / "img" / "0.png").read_bytes())   # same bytes, other name

    def manifest(name, images):
        pacsv.write_csv(pa.table({"image": [f"img/{i}.png" for i in images],
                                  "left": [5 + i % 2 for i in range(len(images))]}), tmp_path / name)
        return str(tmp_path / name)

    cfg = experiment(tmp_path, manifest("train.csv", list(range(24))),
                     data={"validation": manifest("val.csv", [22, 23, "copy", 24, 25, 26, 27])}, train={"batch_size": 8})
    cfg["tasks"] = {"left": {"type": "classification"}}
    code, out, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 0, err
    assert leak_line(out) == ["warning: 3 of 7 validation images are also in the training data (2 by file path, 3 "
                              "by identical bytes): the validation score is optimistic; remove them from one side"]


def test_failed_baselines_stop_a_delta_m_sweep_with_one_line(tmp_path, monkeypatch, no_ray):
    """Baseline runs that wrote no completed row (they failed): Δm% cannot be computed, so the sweep must not run."""
    from types import SimpleNamespace

    from orchestrator.config import parse_config
    from orchestrator.errors import UserError
    from orchestrator.sweep import baselines, runner

    ran = []
    monkeypatch.setattr(runner, "run_configs", lambda session, configs, **kw: ran.append(len(configs)) or [])
    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", objective={"metric": "delta_m"}))
    session = SimpleNamespace(cfg=cfg, prepared=SimpleNamespace(spec=SimpleNamespace(fingerprint="f")))
    with pytest.raises(UserError) as info:
        baselines.baselines_for(session, out=lambda line: None)
    assert ran == [3] and "\n" not in str(info.value)
    assert str(info.value).startswith("the single-task baselines of left, right, sum failed: objective delta_m needs")
    mean = cfg.with_values({"objective.metric": "mean_score"})         # Δm% only reported: the sweep goes on
    assert baselines.baselines_for(SimpleNamespace(cfg=mean, prepared=session.prepared), out=lambda line: None) == {}


def test_the_baselines_command_fails_when_a_baseline_run_failed(tmp_path, monkeypatch, capsys, no_ray):
    """`orchestrator baselines CONFIG` printed nothing and exited 0 when the runs failed (found by a helper's audit).
    Ray and the runs are stubbed (one_off, run_configs: failed rows, as the Tune run records a failing worker's); the
    config check and the leaderboard are real."""
    import contextlib
    from types import SimpleNamespace

    from factories import row
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep import runner
    from orchestrator.training import session as sessions

    @contextlib.contextmanager
    def one_off(p, **kw):
        yield SimpleNamespace(cfg=p.cfg, prepared=p)

    def run_configs(session, configs, *, extra, **kw):
        Leaderboard(session.cfg.storage).append([
            row(c, [], kind="baseline", trial_id=e["baseline_task"], extra=e, error="worker died",
                fingerprint=session.prepared.spec.fingerprint) for c, e in zip(configs, extra)])
        return []

    monkeypatch.setattr(sessions, "one_off", one_off)
    monkeypatch.setattr(runner, "run_configs", run_configs)
    cfg = experiment(tmp_path, "builtin:multidigits/train")
    r = run_cli(capsys, "baselines", write_yaml(tmp_path / "e.yaml", cfg))
    assert r.code == 1 and r.err.count("\n") == 0, r
    assert r.err.startswith("error: the single-task baselines of left, right, sum failed: see `orchestrator "
                            "leaderboard --kind baseline -e "), r.err


def test_baselines_are_reused_only_for_the_same_training(tmp_path, monkeypatch, no_ray):
    """A recorded baseline serves a later experiment only when its run would train the same way: same data, budget
    and rates, and also the same augmentation, weight decay, head dropout and precision. Name and storage don't count."""
    from types import SimpleNamespace

    from factories import row
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep import baselines, runner

    trained = []

    def run_configs(session, configs, *, extra, **kw):   # what the baselines' Tune run records: completed rows
        trained.append(len(configs))
        Leaderboard(session.cfg.storage).append([
            row(c, [{"epoch": 1, "objective": 0.9, f"{e['baseline_task']}_{c.tasks[e['baseline_task']].score_metric}":
                     0.9}], kind="baseline", trial_id=e["baseline_task"], extra=e) for c, e in zip(configs, extra)])
        return []

    monkeypatch.setattr(runner, "run_configs", run_configs)
    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train"))
    spec = SimpleNamespace(spec=SimpleNamespace(fingerprint="f"))
    for changed, trains in [({}, 3), ({"name": "other"}, 0), ({"train.weight_decay": 0.01}, 3),
                            ({"heads.dropout": 0.2}, 3), ({"train.precision": "mixed_bfloat16"}, 3),
                            ({"data.augment.rotation": 0.1}, 3)]:
        trained.clear()
        baselines.baselines_for(SimpleNamespace(cfg=cfg.with_values(changed), prepared=spec), out=lambda line: None)
        assert sum(trained) == trains, changed
    from orchestrator.config import schema

    monkeypatch.setattr(schema, "TRAINING_REVISION", schema.TRAINING_REVISION + 1)   # code that trains otherwise
    trained.clear()
    baselines.baselines_for(SimpleNamespace(cfg=cfg, prepared=spec), out=lambda line: None)
    assert sum(trained) == 3


def test_every_searched_resource_value_is_checked_against_the_cluster(tmp_path, no_ray):
    from orchestrator.config import parse_config
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.capacity import NodeType, check_search_fits

    nodes = [NodeType("head", {"CPU": 4.0}, 1), NodeType("worker", {"CPU": 4.0}, 2)]     # 12 CPUs at most

    def space(**searched):
        return parse_config(experiment(tmp_path, "builtin:multidigits/train", search={"space": searched}))

    check_search_fits(space(**{"resources.workers": {"choice": [1, 8]}}), nodes, reserved_cpu=0.05)
    for searched, expected in [
        ({"resources.workers": {"choice": [1, 64]}}, "search.space resources.workers value 64: one trial needs 64"),
        ({"resources.workers": {"randint": [1, 20]}}, "search.space resources.workers value 20: one trial needs 20"),
        ({"resources.cpus_per_worker": {"choice": [1, 6]}}, "search.space resources.cpus_per_worker value 6: one "
                                                            "worker asks for {CPU: 6}"),
        ({"resources.workers": {"choice": [1, 4]}, "resources.cpus_per_worker": {"uniform": [1, 4]}},
         "search.space resources.workers value 4, resources.cpus_per_worker value 4"),
        # in a branch: only paths at the top were checked, and such a trial waited for a cluster it never fits
        ({"train.optimizer": {"choice": ["adam", {"sgd": {"resources.workers": {"choice": [64]}}}]}},
         "search.space resources.workers value 64 (with train.optimizer sgd): one trial needs 64"),
        ({"resources.workers": {"choice": [1, 4]},
          "train.optimizer": {"choice": ["adam", {"sgd": {"resources.cpus_per_worker": {"choice": [4]}}}]}},
         "search.space resources.workers value 4, resources.cpus_per_worker value 4 (with train.optimizer sgd)"),
    ]:
        with pytest.raises(ConfigError) as info:
            check_search_fits(space(**searched), nodes, reserved_cpu=0.05)
        assert str(info.value).startswith(expected) and "\n" not in str(info.value), str(info.value)


@pytest.mark.slow
def test_a_searched_worker_count_the_cluster_cannot_hold_stops_the_sweep_before_any_trial(ray_session, tmp_path,
                                                                                          capsys):
    from orchestrator.leaderboard import Leaderboard

    cfg = experiment(tmp_path, "builtin:multidigits/train", resources={"workers": 1, "cpus_per_worker": 0.5},
                     train={"batch_size": 64},    # 64 workers share it; 32 would be refused first, before Ray
                     search={"space": {"resources.workers": {"choice": [1, 64]}}, "num_samples": 2})
    code, _, err = run_cli(capsys, "tune", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and err.startswith("error: search.space resources.workers value 64: one trial needs 64 workers")
    assert "\n" not in err and Leaderboard(str(tmp_path / "runs")).table(kind=None).num_rows == 0
def test_validate_checks_every_branch_of_a_conditional_space(tmp_path, capsys, no_ray):
    space = {"train.loss_weighting": {"choice": ["uncertainty", {"static": {
        "train.freeze_depth": {"choice": [0, 50]},
        "train.loss_weights": {"simplex": {"concentration": 1.0}}}}]}}
    cfg = experiment(tmp_path, "builtin:multidigits/train", search={"space": space})
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "choice 50 is beyond the backbone's 5 blocks" in err and "\n" not in err.strip(), err
    space["train.loss_weighting"]["choice"][1]["static"]["train.freeze_depth"]["choice"] = [0, 2]
    code, out, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 0, err


def test_a_flip_that_swaps_the_builtin_digits_sides_is_warned_about(tmp_path, capsys, no_ray):
    """The README's example config flipped the built-in MultiDigits canvases horizontally: its left and right digits
    swap places (and mirror), so the left and right tasks trained on each other's labels (found by a helper's
    audit). The example no longer does; validate warns where a config does."""
    searched = {"search": {"space": {"data.augment.flip": {"choice": ["none", "vertical"]}}}}
    for flip, more, warned in (("horizontal", {}, "horizontal"), ("horizontal_and_vertical", {}, "horizontal_and_vertical"),
                               ("vertical", {}, "vertical"), ("none", {}, None), ("none", searched, "vertical")):
        # vertical too: the digits sit at the canvas's top left and bottom right (the review of this stop's first
        # version, which advised flip vertical), and a searched flip is a flip
        cfg = experiment(tmp_path, "builtin:multidigits/train", data={"augment": {"flip": flip}}, **more)
        code, out, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
        lines = [line for line in out.splitlines() if line.startswith("warning:") and "flip" in line]
        assert code == 0 and len(lines) == (warned is not None), (flip, out)
        if warned:
            assert lines[0].startswith(f"warning: data.augment.flip {warned} mirrors the built-in MultiDigits "
                                       f"canvases: their left and right digits swap places"), lines
            assert lines[0].endswith("use flip none"), lines


def test_a_storage_that_cannot_be_written_stops_validate_and_train_before_ray(tmp_path, capsys, no_ray):
    """A local storage whose path runs through a file (or that this user may not write) passed `validate`, and
    the Python API's train started Ray before its first write failed: now both stop first, naming the path."""
    from orchestrator import ConfigError, train
    from orchestrator.config import parse_config

    (tmp_path / "afile").write_text("not a folder")
    cfg = experiment(tmp_path, "builtin:multidigits/train", storage=str(tmp_path / "afile" / "runs"))
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and f"{tmp_path / 'afile'} is a file, not a folder" in err and "\n" not in err.strip(), err
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        train(parse_config(cfg), out=lambda line: None)
    assert (tmp_path / "afile").read_text() == "not a folder"
