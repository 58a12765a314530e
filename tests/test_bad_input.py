"""Every user mistake: exit code 2, one line on stderr naming the problem, no traceback, no Ray."""
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.cli import main

from factories import experiment, run_cli, small_table, write_parquet, write_yaml


pytestmark = pytest.mark.usefixtures("no_ray")


def with_column(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, pa.array(values))


def ragged(table):
    rows = [list(r) for r in table.column("image").to_pylist()]
    rows[3] = rows[3][:-4]
    return with_column(table, "image", rows)


def wrong_size(table):
    img = np.asarray(table.column("image").to_pylist(), np.float32)[:, :100]
    return with_column(table, "image", pa.FixedSizeListArray.from_arrays(pa.array(img.ravel()), 100))


def left_label(values_fn):
    return lambda t: with_column(t, "left", values_fn(t.column("left").to_pylist()))


DATA_CASES = {
    "missing column": (lambda t: t.drop_columns(["right"]), "column 'right' not in"),
    "empty data": (lambda t: t.slice(0, 0), "has no rows"),
    "label out of range": (None, "label 3 is not one of the classes"),
    "unseen label in validation": (None, "label 4 is not one of the classes"),
    "null label": (left_label(lambda v: v[:5] + [None] + v[6:]), "row 5 of label column 'left'"),
    "NaN regression label": (lambda t: with_column(t, "sum", [float("nan")] + t.column("sum").to_pylist()[1:]),
                             "row 0 of label column 'sum'"),
    "binary label not 0/1": (None, "not 0/1"),
    "ragged images": (ragged, "is ragged: row 3"),
    "wrong image size": (wrong_size, "100 values per image but data.image_shape"),
    "infinite regression label": (lambda t: with_column(t, "sum", [float("inf")] + t.column("sum").to_pylist()[1:]),
                                  "row 0 of label column 'sum' (task 'sum') in"),
    "list label": (left_label(lambda v: [[x] for x in v]), "label column 'left' of"),
    "struct label": (left_label(lambda v: [{"digit": x} for x in v]), "label column 'left' of"),
    "float32-overflowing label": (lambda t: with_column(t, "sum", t.column("sum").to_pylist()[:7] + [-1e39]
                                                        + t.column("sum").to_pylist()[8:]), "is -1e+39: regression"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_exits_2_with_one_line(tmp_path, capsys, case):
    mutate, expected = DATA_CASES[case]
    table = small_table(120)
    val = None
    sections = {}
    if case == "label out of range":
        sections["tasks"] = {"left": {"type": "classification", "classes": [5, 6, 7, 8, 9]}}
        table = left_label(lambda v: [3] + v[1:])(table)
    elif case == "unseen label in validation":
        val = write_parquet(tmp_path / "val.parquet", left_label(lambda v: [4] + v[1:])(small_table(40, part="val")))
    elif case == "binary label not 0/1":
        table = table.append_column("odd", pa.array([2] + [1] * (table.num_rows - 1)))
        sections["tasks"] = {"odd": {"type": "binary"}}
    else:
        table = mutate(table)
    if case == "wrong image size":
        sections["data"] = {"image_shape": [12, 12, 1]}
    cfg = experiment(tmp_path, write_parquet(tmp_path / "train.parquet", table), **sections)
    if val:
        cfg["data"]["validation"] = val
    code, _, err = run_cli(capsys, "train", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2
    assert err.startswith("error: ") and expected in err and "\n" not in err, err


def test_truncated_and_missing_files(tmp_path, capsys):
    path = write_parquet(tmp_path / "train.parquet", small_table(50))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", experiment(tmp_path, path)))
    assert code == 2 and "cannot read Parquet data" in err and "\n" not in err
    cfg = experiment(tmp_path, str(tmp_path / "nope.parquet"))
    code, _, err = run_cli(capsys, "train", write_yaml(tmp_path / "e2.yaml", cfg))
    assert code == 2 and "not found" in err


@pytest.mark.parametrize("change, expected", [
    ({"train": {"learning_rate": 0.1}}, "unknown config key 'train.learning_rate'"),
    ({"train": {"epochs": "ten"}}, "'train.epochs'"),
    ({"train": {"head_lr": -1e-3}}, "'train.head_lr'"),
    ({"train": {"loss_weights": {"left": 1, "middle": 1}}}, "unknown task(s) ['middle']"),
    ({"train": {"freeze_depth": 6}}, "freeze_depth 6 is beyond the backbone's 5 blocks"),
    ({"train": {"loss_weights": {"left": float("nan")}}}, "'train.loss_weights.left': must be a finite number, not nan"),
    ({"train": {"backbone_lr": float("inf")}}, "'train.backbone_lr': must be a finite number, not inf"),
    ({"train": {"weight_decay": float("inf")}}, "'train.weight_decay': must be a finite number, not inf"),
    ({"train": {"batch_size": 33}, "resources": {"workers": 2}},
     "train.batch_size 33 is not a multiple of resources.workers 2 (each step would train on 32 examples): use 32 or 34"),
    ({"search": {"space": {"train.head_lr": {"uniform": [0.001, float("inf")]}}}},
     "'search.space.train.head_lr.uniform.1': must be a finite number, not inf"),
    # the tasks left out got weight 0: their heads never trained, yet they were scored and averaged in
    ({"train": {"loss_weights": {"left": 2.0}}}, "train.loss_weights leaves out task(s) ['right', 'sum']: give every "
                                                 "task a weight (0 turns one off)"),
    # a task named like a column prefix: best_mae read as 'best of mae' (maximized), train_loss overwritten
    ({"tasks": {"best": {"type": "regression", "label": "sum", "metric": "mae"}}},
     "task name 'best' starts like the leaderboard's own columns (best, train, objective, eff, weight, mean, delta)"),
    ({"tasks": {"weight_class": {"type": "regression", "label": "sum"}}}, "task name 'weight_class' starts like"),
    # 0 was taken for "not given" and became 1 GPU per worker, silently (found by an audit)
    ({"resources": {"workers": 1, "use_gpu": True, "gpus_per_worker": 0}}, "gpus_per_worker 0 with use_gpu: true"),
    # numpy's and TensorFlow's seeds: a traceback at the split, or a worker's failure once Ray had started
    ({"train": {"seed": -1}}, "'train.seed'"), ({"data": {"split_seed": -1}}, "'data.split_seed'"),
    ({"train": {"seed": 2 ** 32}}, "'train.seed'"), ({"search": {"seed": -1, "space": {"train.head_lr": {"choice": [0.01, 0.02]}}}}, "'search.seed'"),
])
def test_bad_config_exits_2(tmp_path, capsys, change, expected):
    cfg = experiment(tmp_path, write_parquet(tmp_path / "train.parquet", small_table(60)), **change)
    code, _, err = run_cli(capsys, "train", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and expected in err and "\n" not in err, err


def test_real_process_exit_code_and_no_traceback(tmp_path):
    cfg = experiment(tmp_path, str(tmp_path / "missing.parquet"))
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "train", write_yaml(tmp_path / "e.yaml", cfg)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Started a local Ray" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: data file")


def test_validate_prints_a_summary(tmp_path, capsys):
    cfg = experiment(tmp_path, write_parquet(tmp_path / "train.parquet", small_table(80)))
    main(["validate", write_yaml(tmp_path / "e.yaml", cfg)])
    out = capsys.readouterr().out
    assert "ok:" in out and "data: 60 training + 20 validation images, 12x12x1 " in out and "5 blocks" in out


@pytest.mark.parametrize("space, expected", [
    ({"train.freeze_depth": {"choice": [0, 9]}}, "search.space train.freeze_depth choice 9 is beyond the backbone's 5"),
    ({"train.head_lr": {"choice": [0.01, -1]}}, "search.space train.head_lr: value -1 is invalid"),
    ({"train.nope": {"choice": [1]}}, "search path 'train.nope' is not a config field"),
    ({"train.head_lr": {"loguniform": [0.1, 0.01]}}, "low < high"),
    # every trial drew a fraction (epochs 3.7) and failed on the cluster; the edges alone validated
    ({"train.epochs": {"uniform": [2, 8]}}, "search.space train.epochs: uniform draws fractions (e.g. 2.5), which "
                                            "this field refuses: use randint: [2, 8]"),
    ({"heads.hidden_units": {"loguniform": [16, 256]}}, "use randint: [16, 256]"),
    ({"train.freeze_depth": {"choice": [1, 2, 1]}}, "choice option 1 appears twice"),   # the same work twice
    ({"train.freeze_depth": {"choice": [1, {1: {"train.head_lr": {"choice": [0.1]}}}]}}, "appears twice: each option is one point"),
    # depth 5 of a 5-block backbone is 'all': two labels of one configuration (found by rereading stop 39's note)
    ({"train.freeze_depth": {"choice": [0, 5, "all"]}}, "search.space train.freeze_depth: choice 5 and 'all' both "
                                                         "freeze the backbone's 5 blocks: list one"),
    # a grid's repeat r trains with train.seed + r: with train.seed searched, repeats are other points' work
    # blocks are counted once, on the base backbone: freeze depths and 'all' would mean other blocks
    ({"backbone.name": {"choice": ["digits-cnn"]}}, "search.space backbone.name: a sweep counts blocks and checks "
                                                    "freeze depths on one backbone: run one sweep per backbone"),
    ({"searcher": "grid", "num_samples": 2, "space": {"train.seed": {"choice": [0, 1]}}},
     "train.seed is searched in a grid with num_samples 2: the grid's repeats would train the same seeds again"),
    # a drawn seed too: it replaced the repeat's seed + r, so two repeats could draw one seed (found by an audit)
    ({"searcher": "grid", "num_samples": 3, "space": {"train.head_lr": {"choice": [0.01, 0.02]},
                                                      "train.seed": {"randint": [0, 2]}}},
     "train.seed is searched in a grid with num_samples 3"),
    # a field no trial's training reads: every trial was the same work (one config hash), its rows showed the draws
    ({"train.dwa_temperature": {"uniform": [1, 4]}}, "search.space train.dwa_temperature: no trial of this space "
                                                     "reads it"),
    ({"train.loss_weighting": {"choice": ["static", {"uncertainty": {"train.loss_weights": {"simplex": {}}}}]}},
     "search.space train.loss_weights: no trial of this space reads it"),
    ({"train.freeze_depth": {"choice": ["all"]}, "train.backbone_lr": {"loguniform": [1e-4, 1e-2]}},
     "search.space train.backbone_lr: no trial of this space reads it"),
    # what a sweep measures and ranks by is one for all its trials, or their scores would not compare
    ({"objective.metric": {"choice": ["mean_score", "left_accuracy"]}}, "search.space objective.metric: what a "
                                                                        "sweep measures"),
    ({"tasks.left.metric": {"choice": ["accuracy", "auc"]}}, "search.space tasks.left.metric: what a sweep measures"),
    ({"name": {"choice": ["a", "b"]}}, "search.space name: what a sweep measures"),
])
def test_bad_search_space_exits_2_before_ray(tmp_path, capsys, space, expected):
    cfg = experiment(tmp_path, write_parquet(tmp_path / "train.parquet", small_table(60)),
                     search=space if "space" in space else {"space": space})
    code, _, err = run_cli(capsys, "tune", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and expected in err and "\n" not in err, err


def test_tune_without_search_section_is_a_config_error(tmp_path, capsys):
    cfg = experiment(tmp_path, write_parquet(tmp_path / "train.parquet", small_table(60)))
    code, _, err = run_cli(capsys, "tune", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "has no 'search' section" in err


# -- YAML: duplicate keys at any level, with the line and the key --------------------------------------------------
BASE_YAML = """\
name: t
data: {{train: {data}, validation: 0.25}}
tasks:
  left: {{type: classification}}
{more_tasks}train: {{epochs: 1, batch_size: 32}}
{more}resources: {{workers: 1}}
backbone: {{kind: builtin, weights: none}}
storage: {storage}
"""

YAML_CASES = {
    "task twice": ({"more_tasks": "  left: {type: regression}\n"}, "duplicate key 'left' at line 5"),
    "train twice": ({"more": "train: {epochs: 2}\n"}, "duplicate key 'train' at line 6"),
    "nested key twice": ({"more": "heads:\n  hidden_units: 8\n  hidden_units: 16\n"},
                         "duplicate key 'hidden_units' at line 8"),
    "space key twice": ({"more": "search:\n  space:\n    train.head_lr: {choice: [0.1]}\n"
                                 "    train.head_lr: {choice: [0.2]}\n"}, "duplicate key 'train.head_lr' at line 9"),
    "not a mapping": (None, "must be a YAML mapping"),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_bad_yaml_exits_2(tmp_path, capsys, case):
    parts, expected = YAML_CASES[case]
    data = write_parquet(tmp_path / "train.parquet", small_table(60))
    text = "- just\n- a list\n" if parts is None else BASE_YAML.format(
        data=data, storage=tmp_path / "runs", **{"more_tasks": "", "more": "", **parts})
    (tmp_path / "e.yaml").write_text(text)
    code, _, err = run_cli(capsys, "validate", str(tmp_path / "e.yaml"))
    assert code == 2 and expected in err and "\n" not in err, err


# -- --set: each value is YAML too ------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    ("train.epochs=[1", "--set 'train.epochs=[1' is not valid YAML at line 1"),
    ("train.loss_weights={left: 1, left: 2}", "--set 'train.loss_weights={left: 1, left: 2}': duplicate key 'left' at line 1"),
    ("train.head_lr=.nan", "'train.head_lr': must be a finite number, not nan"),
    ("train.epochs", "is not KEY=VALUE"),
    ("=3", "--set '=3' has no key"),
    ("s3://AKIDX:se/cr+et@bucket/x", "--set 's3://bucket/x' is not KEY=VALUE"),    # the key forgotten: no secret shown
    ("=s3://AKIDX:se/cr+et@bucket/x", "--set '=s3://bucket/x' has no key"),
    ("storage=[s3://AKIDX:se/cr+et@bucket/x", "--set 'storage=[s3://bucket/x' is not valid YAML"),
    ("train.seed=" + "1" * 5000, "a value it cannot read (Exceeds the limit (4300 digits)"),   # Python's int
    ("train.epochs=" + "[" * 3000 + "]" * 3000, "is not valid YAML: nested too deep"),  # the parser's recursion
    ("name=" + "[" * 400 + "1" + "]" * 400, "nested too deep"),                        # the validation's
])
def test_bad_set_exits_2(tmp_path, capsys, value, expected):
    cfg = experiment(tmp_path, write_parquet(tmp_path / "train.parquet", small_table(60)))
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg), "--set", value)
    assert code == 2 and expected in err and "\n" not in err and "cr+et" not in err and len(err) < 400, err


# -- --where: one line for whatever the expression is -----------------------------------------------------------
@pytest.mark.parametrize("where, expected", [
    ("objective > 99999999999999999999", "the number 99999999999999999999 in --where (where=) is too large"),
    ("status in [1, 'a']", "mixes types"),
    ("not " * 2000 + "objective > 1", "is nested too deeply"),
    ("objective > " + "-" * 2000 + "1", "is nested too deeply"),
    ("trial_id in [1, 2]", "trial_id is string"),
])
def test_bad_where_exits_2(tmp_path, capsys, where, expected):
    import pyarrow.parquet as pq

    (tmp_path / "leaderboard").mkdir()
    pq.write_table(pa.table({"experiment": ["e"], "trial_id": ["a"], "status": ["completed"], "objective": [0.5]}),
                   tmp_path / "leaderboard" / "rows.parquet")
    code, _, err = run_cli(capsys, "leaderboard", "--storage", str(tmp_path), "--where", where)
    assert code == 2 and expected in err and "\n" not in err, err[:500]


# -- data.allow_outside: false (manifests from others) --------------------------------------------------------------
@pytest.mark.parametrize("path, expected", [
    ("../secret/a.png", "image path '../secret/a.png' (row 3 of"),
    ("/etc/passwd", "is absolute"),
    ("s3://bucket/a.png?endpoint_override=10.0.0.1:9000", "is a URI"),
    ("img/../../a.png", "goes up with '..'"),
])
def test_manifest_paths_outside_its_folder(tmp_path, capsys, path, expected):
    table = small_table(40)
    paths = [f"img/{i}.png" for i in range(table.num_rows)]
    paths[3] = path
    manifest = table.drop_columns(["image"]).append_column("image", pa.array(paths))
    import pyarrow.csv as pacsv

    pacsv.write_csv(manifest, tmp_path / "m.csv")
    cfg = experiment(tmp_path, str(tmp_path / "m.csv"), data={"allow_outside": False})
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and expected in err and "data.allow_outside" in err and "\n" not in err, err
    cfg["data"]["allow_outside"] = True   # the default: today's behaviour, the path is followed
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "data.allow_outside" not in err, err


def test_a_manifest_naming_a_column_twice_is_one_line(tmp_path, capsys):
    """A CSV header "image,left,left": pyarrow's KeyError came out as a traceback (exit 1). Found by a helper's
    audit."""
    table = small_table(40)
    manifest = table.drop_columns(["image"]).append_column("image", pa.array([f"img/{i}.png" for i in range(40)]))
    import pyarrow.csv as pacsv

    pacsv.write_csv(manifest, tmp_path / "m.csv")
    text = (tmp_path / "m.csv").read_text().splitlines()
    (tmp_path / "m.csv").write_text("\n".join([text[0] + ',"left"', *(line + ",5" for line in text[1:])]) + "\n")
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", experiment(tmp_path, str(tmp_path / "m.csv"))))
    assert code == 2 and "column 'left' appears 2 times in" in err and "\n" not in err, err


# -- backbones whose output is not (batch, features), and the pretrained built-in on other images ---------------------
def saved_backbone(path, kind: str) -> str:
    import keras

    inp = keras.Input((12, 12, 1))
    if kind == "conv":
        out = keras.layers.Conv2D(4, 3, padding="same", name="block1_conv")(inp)
    elif kind == "sequence":
        out = keras.layers.Dense(4, name="block1_dense")(keras.layers.Reshape((144, 1))(inp))
    else:
        out = keras.layers.Dense(1, name="block1_dense")(keras.layers.Flatten()(inp))[:, 0]
    keras.Model(inp, out).save(path)
    return str(path)


@pytest.mark.parametrize("case, expected", [
    ("conv", "outputs [None, 12, 12, 4], not (batch, features): add pooling (e.g. pooling='avg') or use kind: application"),
    ("sequence", "outputs [None, 144, 4], not (batch, features)"),
    ("vector", "outputs [None], not (batch, features)"),
    ("pretrained, 16x16", "the pretrained built-in backbone takes 12x12x1 images; these are 16x16x1"),
    ("pretrained, rgb", "the pretrained built-in backbone takes 12x12x1 images; these are 12x12x3"),
])
def test_bad_backbone_exits_2(tmp_path, capsys, case, expected):
    sections = {}
    if case.startswith("pretrained"):
        sections["backbone"] = {"kind": "builtin", "weights": "pretrained"}
        sections["data"] = {"image_size": [16, 16]} if "16" in case else {"color_mode": "rgb"}
    else:
        sections["backbone"] = {"kind": "file", "path": saved_backbone(tmp_path / "b.keras", case)}
    cfg = experiment(tmp_path, write_parquet(tmp_path / "train.parquet", small_table(60)), **sections)
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and expected in err and "\n" not in err, err
    assert not (tmp_path / "runs" / "backbones").exists()     # nothing pretrained for a config that cannot run


@pytest.mark.parametrize("extra", [["--sweep", "s1"], ["--where", "seed == 1"], ["--metric", "left_accuracy"],
                                   ["--kind", "all"]])
def test_best_confirmed_refuses_filters_it_would_ignore(tmp_path, capsys, extra):
    """`best --confirmed` ranks by the experiment's confirmation runs only: --sweep S2 wrote the overall confirmed
    winner, possibly of another sweep, without a word."""
    code, _, err = run_cli(capsys, "best", "--storage", str(tmp_path), "-e", "digits", "--confirmed", *extra)
    assert code == 2 and "--confirmed ranks the experiment's confirmation runs by their mean objective" in err, err
    assert "\n" not in err and extra[0] in err, err


def test_train_on_delta_m_without_baselines_stops_before_ray(tmp_path, capsys):
    """A sweep on objective delta_m trains the baselines first; `train` (e.g. of the best.yaml of such a sweep) got
    none, so every epoch's objective was NaN and the run 'completed' with objective n/a."""
    cfg = experiment(tmp_path, write_parquet(tmp_path / "train.parquet", small_table(60)),
                     objective={"metric": "delta_m"})
    code, _, err = run_cli(capsys, "train", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "\n" not in err, err
    assert err == ("error: objective delta_m needs single-task baselines of left, right, sum on this data and budget: "
                   "run `orchestrator baselines CONFIG` first (they are reused), or use objective.metric: "
                   "mean_score"), err


@pytest.mark.parametrize("space", [
    {"train.loss_weighting": {"choice": ["static", "dwa"]}, "train.dwa_temperature": {"uniform": [1, 4]}},
    {"train.loss_weighting": {"choice": ["uncertainty", {"static": {"train.loss_weights": {"simplex": {}}}}]}},
    {"train.freeze_depth": {"choice": ["all", {1: {"train.backbone_lr": {"loguniform": [1e-4, 1e-2]}}}]}},
    {"train.backbone_lr": {"loguniform": [1e-4, 1e-2]}},                         # the base freeze depth 0 reads it
])
def test_a_searched_field_some_trial_reads_is_accepted(tmp_path, space):
    from orchestrator.config import parse_config
    from orchestrator.config.space import walk
    from orchestrator.sweep.tuner import refuse_unsearchable

    cfg = parse_config(experiment(tmp_path, "x.parquet", search={"space": space}))
    for path, _, when in walk(cfg.search.space):
        refuse_unsearchable(cfg, path, when)


def test_a_home_folder_in_config_paths_is_expanded(tmp_path, monkeypatch):
    """`storage: ~/runs` resolved to <config folder>/~/runs: runs landed there and `leaderboard --storage ~/runs`
    found none of them."""
    from orchestrator.config import load_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = experiment(tmp_path, "~/data/train.parquet", storage="~/runs")
    (tmp_path / "conf").mkdir()
    loaded = load_config(write_yaml(tmp_path / "conf" / "e.yaml", cfg))
    assert loaded.storage == str(tmp_path / "home" / "runs")
    assert loaded.data.train == str(tmp_path / "home" / "data" / "train.parquet")


def test_a_config_that_is_not_utf8_is_one_line(tmp_path, capsys):
    """A config file that is not text (a Parquet file passed by mistake) gave a UnicodeDecodeError traceback."""
    bad = tmp_path / "e.yaml"
    bad.write_bytes(b"PAR1\xff\xfe\x00\x15binary")
    code, _, err = run_cli(capsys, "validate", str(bad))
    assert code == 2 and err.startswith("error: ") and "not UTF-8 text" in err and "\n" not in err, err


def test_a_flat_image_shape_needs_positive_sizes(tmp_path):
    """data.image_shape [-8, -8, 1] multiplies to 64 and validated; decoding then raised a reshape ValueError."""
    from orchestrator.config import parse_config
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match="image_shape"):
        parse_config(experiment(tmp_path, "x.parquet", data={"image_shape": [-8, -8, 1]}))


def seeded(tmp_path):
    """A config file and a leaderboard holding one trial of it (experiment ``t``)."""
    from orchestrator.config import parse_config
    from orchestrator.leaderboard.leaderboard import Leaderboard

    from factories import row

    raw = experiment(tmp_path, "builtin:multidigits/train")
    cfg = parse_config(raw)
    Leaderboard(cfg.storage).append([row(cfg, [{"epoch": 1, "objective": 0.5, "left_accuracy": 0.5,
                                                "right_accuracy": 0.5, "sum_r2": 0.1}], trial_id="a")])
    return write_yaml(tmp_path / "e.yaml", raw), cfg.storage


@pytest.mark.parametrize("case", ["config storage", "report -o", "export --to", "leaderboard --storage"])
def test_a_uri_without_bucket_is_refused_not_taken_for_a_local_folder(tmp_path, capsys, monkeypatch, case):
    """``s3://`` alone was read as a local folder named ``s3:``: `report -o s3://` wrote ./s3:/report.md and exited 0,
    `validate --set storage=s3://` said ok (a run would have written into ./s3:)."""
    config, storage = seeded(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = {"config storage": ["validate", config, "--set", "storage=s3://"],
            "report -o": ["report", "-e", "t", "--storage", storage, "-o", "s3://"],
            "export --to": ["export", "-e", "t", "--storage", storage, "--to", "csv:s3://"],
            "leaderboard --storage": ["leaderboard", "--storage", "s3://"]}[case]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "\n" not in err and "s3:// names no bucket (or host): write s3://BUCKET/folder" in err, err
    assert not (tmp_path / "s3:").exists()


@pytest.mark.parametrize("case", ["train storage", "report -o", "export csv", "export tensorboard"])
def test_a_path_that_is_a_file_or_a_folder_where_the_other_is_needed_is_one_line(tmp_path, capsys, case):
    """These ended in a traceback (NotADirectoryError, FileExistsError, IsADirectoryError from deep inside)."""
    config, storage = seeded(tmp_path)
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    argv = {"train storage": ["train", config, "--set", f"storage={a_file}"],
            "report -o": ["report", "-e", "t", "--storage", storage, "-o", str(a_file)],
            "export csv": ["export", "-e", "t", "--storage", storage, "--to", f"csv:{tmp_path}"],
            "export tensorboard": ["export", "-e", "t", "--storage", storage, "--to", f"tensorboard:{a_file}"]}[case]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "\n" not in err and err.startswith("error: ") and "Traceback" not in err, err
    assert str(tmp_path) in err and ("file" in err or "folder" in err or "directory" in err.lower()), err


@pytest.mark.parametrize("command", [["leaderboard"], ["pareto", "-m", "left_accuracy,right_accuracy"], ["best"]])
def test_an_unknown_experiment_is_one_line_and_exit_2_in_every_query(tmp_path, capsys, command):
    """README: an unknown experiment is one line on stderr and exit code 2. `best` did so; `leaderboard -e nope` and
    `pareto -e nope` printed "no matching rows" and exited 0, as if the experiment existed and had none."""
    _, storage = seeded(tmp_path)
    code, out, err = run_cli(capsys, *command, "--storage", storage, "-e", "nope", *(
        ["-o", str(tmp_path / "best.yaml")] if command == ["best"] else []))
    assert code == 2 and "\n" not in err and "'nope'" in err and "t" in err.split("experiments")[-1], (out, err)
    assert not (tmp_path / "best.yaml").exists()
    code, out, err = run_cli(capsys, *command, "--storage", storage, "-e", "t", "--where", "objective > 2", *(
        ["-o", str(tmp_path / "best.yaml")] if command == ["best"] else []))
    assert (code, "matching rows" in out) == (0, True) if command != ["best"] else code == 2, (out, err)


def test_compacting_a_storage_without_a_leaderboard_is_refused(tmp_path, capsys):
    code, out, err = run_cli(capsys, "leaderboard", "compact", "--storage", str(tmp_path / "nowhere"))
    assert code == 2 and "no leaderboard at" in err and "\n" not in err and not (tmp_path / "nowhere").exists(), out


def test_exporting_an_unknown_experiment_is_refused_and_writes_nothing(tmp_path, capsys):
    """It wrote header-only nope.csv and nope-history.csv and said "exported 0 rows"."""
    _, storage = seeded(tmp_path)
    code, _, err = run_cli(capsys, "export", "--storage", storage, "-e", "nope", "--to", f"csv:{tmp_path / 'nope.csv'}")
    assert code == 2 and "no experiment 'nope'" in err and "\n" not in err, err
    assert not list(tmp_path.glob("nope*"))


@pytest.mark.parametrize("case", ["name", "scalar in the space", "unknown domain", "a folder", "empty file"])
def test_config_mistakes_name_what_to_write(tmp_path, capsys, case):
    """One line each, but they showed a raw regex, pydantic's "valid dictionary or instance of Domain", no list of
    domains, "not found" for a folder, and no file name for an empty file."""
    raw = experiment(tmp_path, "builtin:multidigits/train")
    space = {"scalar in the space": {"train.head_lr": 0.01}, "unknown domain": {"train.head_lr": {"normal": [0, 1]}}}
    if case in space:
        raw["search"] = {"space": space[case]}
    path = write_yaml(tmp_path / "e.yaml", raw)
    args = {"name": [path, "--set", "name=../../escape"], "a folder": [str(tmp_path)],
            "empty file": [str(tmp_path / "empty.yaml")]}.get(case, [path])
    (tmp_path / "empty.yaml").write_text("")
    code, _, err = run_cli(capsys, "validate", *args)
    expected = {"name": "'../../escape' may hold only letters, digits",
                "scalar in the space": "0.01 is not a search domain: write {choice: [...]}",
                "unknown domain": "a domain is one of choice, uniform, loguniform, randint, simplex",
                "a folder": "is a folder: pass the path to an experiment YAML",
                "empty file": "empty.yaml' is empty: write an experiment"}[case]
    assert code == 2 and "\n" not in err and expected in err, err


def test_a_command_stopped_by_its_input_leaves_no_log_and_no_storage_folder(tmp_path, capsys):
    """`confirm -e nope --storage <typo>` made <typo>/logs/ and a log file; so did `tune --resume` with nothing to
    resume. A command's log file is made at its first line."""
    code, _, err = run_cli(capsys, "confirm", "-e", "nope", "--storage", str(tmp_path / "typo"))
    assert code == 2 and "\n" not in err and not (tmp_path / "typo").exists(), err
    raw = {**experiment(tmp_path, "builtin:multidigits/train"), "storage": str(tmp_path / "empty"),
           "search": {"space": {"train.head_lr": {"choice": [1e-3]}}}}
    code, _, err = run_cli(capsys, "tune", write_yaml(tmp_path / "e.yaml", raw), "--resume")
    assert code == 2 and "\n" not in err and not (tmp_path / "empty").exists(), err


@pytest.mark.parametrize("argv, expected", [
    (["best", "--bogus"], "No such option '--bogus' (see orchestrator best --help)"),
    (["nosuch"], "No such command 'nosuch' (see orchestrator --help)"),
    (["leaderboard", "--top", "0"], "Invalid value for '--top': 0 is not in the range x>=1 (see orchestrator "
                                    "leaderboard --help)")])
def test_a_command_line_mistake_is_one_line(capsys, argv, expected):
    """Click printed four lines (Usage, Try, a blank one, Error)."""
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err == f"error: {expected}", err


def test_a_tab_in_the_yaml_is_named(tmp_path, capsys):
    (tmp_path / "e.yaml").write_text("name: t\ntrain:\n\tepochs: 2\n")
    code, _, err = run_cli(capsys, "validate", str(tmp_path / "e.yaml"))
    assert code == 2 and "\n" not in err and "at line 3: indent with spaces" in err, err


def test_no_arguments_show_the_help_and_a_usage_error_hides_credentials(capsys, tmp_path):
    code, out, err = run_cli(capsys)
    assert code == 2 and "Commands:" in out + err and not (out + err).startswith("error:")
    code, _, err = run_cli(capsys, "submit", "x.yaml", "--address", "http://127.0.0.1:1", "--working-dir",
                           "s3://AKIAXXXX:TOPSECRET@bucket/wd")
    assert code == 2 and "\n" not in err and "TOPSECRET" not in err and err.startswith("error: "), err


def test_an_os_error_of_ours_is_one_line_that_says_where_its_traceback_is(capsys, tmp_path, monkeypatch):
    """One line on the console for a path that can't be used; the traceback (a bug of ours would need it) in a file."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "src").mkdir()
    _, source = seeded(tmp_path / "src")
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    code, _, err = run_cli(capsys, "leaderboard", "merge", source, "--into", str(a_file))
    assert code == 2 and "\n" not in err and "part of it is a file" in err, err
    kept = err.rsplit("(traceback in ", 1)[1].rstrip(")")
    assert kept.startswith(str(tmp_path)) and "Traceback (most recent call last)" in open(kept).read()


@pytest.mark.parametrize("case", ["leaderboard --storage", "report --storage", "train storage", "report -o", "best -o",
                                  "merge --into", "merge SOURCE", "export --to"])
def test_an_s3_endpoint_nothing_answers_on_is_one_line_at_once(tmp_path, capsys, no_ray, case):
    """An S3 endpoint_override nothing listens on (a typo in the port, MinIO not started): `leaderboard` waited 34 s
    (pyarrow's retries inside ours) and said "... Failed to connect to 127.) after 5 attempts; try again". The
    endpoint is reached first, as MLflow's server is."""
    from factories import free_port

    config, storage = seeded(tmp_path)
    where = f"127.0.0.1:{free_port()}"
    uri = f"s3://bucket/runs?endpoint_override={where}&scheme=http"
    argv = {"leaderboard --storage": ["leaderboard", "--storage", uri],
            "report --storage": ["report", "-e", "t", "--storage", uri, "-o", str(tmp_path / "rep")],
            "train storage": ["train", config, "--set", f"storage={uri}"],
            "report -o": ["report", "-e", "t", "--storage", storage, "-o", uri],
            "best -o": ["best", "-e", "t", "--storage", storage, "-o", uri],
            "merge --into": ["leaderboard", "merge", storage, "--into", uri],
            "merge SOURCE": ["leaderboard", "merge", uri, "--into", str(tmp_path / "rep")],
            "export --to": ["export", "-e", "t", "--storage", storage, "--to", f"csv:s3://bucket/t.csv?endpoint_override={where}&scheme=http"]}[case]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "\n" not in err.rstrip("\n") and "try again" not in err, err
    assert f"cannot reach the storage endpoint http://{where}" in err and "endpoint_override" in err, err
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("argv", [
    ["export", "--to", "s3://AKIAX:SeCrEt@bkt/x"],                                   # the csv: prefix forgotten
    ["leaderboard", "--where", "experiment == 's3://AKIAX:SeCrEt@bkt/x' and"],
    ["leaderboard", "--sort", "s3://AKIAX:SeCrEt@bkt/x"],
    ["leaderboard", "-e", "s3://AKIAX:SeCrEt@bkt/x"],
])
def test_a_secret_typed_into_a_mistake_is_not_echoed(tmp_path, capsys, argv):
    """A user's mistake is one line that quotes what was given: a URI with credentials typed in the wrong place was
    quoted whole (click's usage errors were redacted, the product's own were not)."""
    _, storage = seeded(tmp_path)
    code, out, err = run_cli(capsys, *argv, "--storage", storage)
    assert code == 2 and err.startswith("error: ") and "SeCrEt" not in out + err and "AKIAX" not in out + err, err


@pytest.mark.parametrize("name", ["../leaderboard", "a/b", "..", ".hidden", "20261206-190307-9e9193-c0377_00004", "",
                                  "confirm-20261206-190307-9e9193-c0377_00004_s1"])
def test_a_train_run_name_that_would_reach_another_folder_is_refused(tmp_path, capsys, name):
    """`train --name` named a folder under <storage>/trials without a check: `../leaderboard` reached the leaderboard's
    folder, `a/b` a folder inside another run's, and a sweep's trial run name (`<sweep id>-<trial id>`) that trial's
    folder, which has no lease of its own."""
    config, _ = seeded(tmp_path)
    code, _, err = run_cli(capsys, "train", config, "--name", name)
    assert code == 2 and "\n" not in err.rstrip("\n") and "--name" in err, err
    assert not (tmp_path / "runs" / "trials").exists()


@pytest.mark.parametrize("address, expected", [
    ("http://127.0.0.1:8265", "is the dashboard's URL"),
    ("127.0.0.1:9", "cannot reach the Ray cluster at 127.0.0.1:9"),
])
def test_a_ray_address_that_cannot_serve_is_one_line_before_anything_starts(tmp_path, capsys, address, expected):
    """--address with the dashboard's URL (what submit and jobs take) was a 47-line traceback from ray.init, after a
    run folder was written; a GCS address nothing listens on hung for over 5 minutes, deaf to Ctrl-C. Found by a
    helper's audit."""
    cfg = experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(120)))
    code, _, err = run_cli(capsys, "train", write_yaml(tmp_path / "e.yaml", cfg), "--address", address)
    assert code == 2 and expected in err and "\n" not in err, err
    assert not (tmp_path / "runs").exists()
    import orchestrator   # the Python API checks as the CLI does (a helper's audit: train(address=) hung in ray.init)

    for run in (orchestrator.train, orchestrator.tune):
        with pytest.raises(orchestrator.ConfigError, match=expected) as refused:
            run({**cfg, "search": {"space": {"train.head_lr": {"choice": [1e-3, 3e-3]}}}} if run is orchestrator.tune
                else cfg, address=address)
        assert "address=" in str(refused.value) and "--address" not in str(refused.value), refused.value
    assert not (tmp_path / "runs").exists()


def test_a_csv_class_written_as_a_missing_value_says_why(tmp_path, capsys):
    """A CSV reads an empty cell, NA, null or nan as missing (pyarrow's strings_can_be_null): a class named NA was
    refused as an unlabeled row, which it is not to its author. The line says how a CSV cell reads. Found by a
    helper's audit."""
    table = small_table(40)
    left = ["NA" if v == 5 else str(v) for v in table.column("left").to_pylist()]
    manifest = table.drop_columns(["image", "left"]).append_column("left", pa.array(left)).append_column(
        "image", pa.array([f"img/{i}.png" for i in range(40)]))
    import pyarrow.csv as pacsv

    pacsv.write_csv(manifest, tmp_path / "m.csv")
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", experiment(tmp_path, str(tmp_path / "m.csv"))))
    assert code == 2 and "is null/NaN" in err and "a CSV reads an empty cell, NA, N/A, null or nan as missing" in err, err


def test_a_dashboard_url_in_ray_address_is_one_line_too(tmp_path, capsys, monkeypatch):
    """Without --address the CLI joins RAY_ADDRESS's cluster (a Ray job's): RAY_ADDRESS=http://HEAD:8265, what
    `ray job submit` is told to use, sent ray.init to Ray Client on a dashboard and out came a traceback. Found by a
    helper's review."""
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    cfg = experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(120)))
    code, _, err = run_cli(capsys, "train", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "RAY_ADDRESS=http://127.0.0.1:8265 is a dashboard's URL" in err and "\n" not in err, err


def test_regression_labels_that_float32_cannot_hold_are_refused(tmp_path, capsys, no_ray):
    """Unix times (1.7e9 + 0..600 s) as a regression label were read as float32: 6 distinct targets of 290, errors up
    to 63 s, and a model predicting the true times exactly scored R² 0.96 (found by a helper's audit). Refused, naming
    the fix; labels like 3000 ± 1 keep their digits in float32 and pass."""
    import numpy as np
    import pyarrow as pa

    table = small_table(80)
    rng = np.random.default_rng(0)
    times = table.set_column(table.schema.get_field_index("sum"), "sum",
                             pa.array(1_700_000_000 + rng.integers(0, 600, 80)))
    cfg = experiment(tmp_path, write_parquet(tmp_path / "t.parquet", times))
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "\n" not in err, err
    assert "regression task 'sum'" in err and "as float32" in err and "subtract an offset" in err, err
    near = table.set_column(table.schema.get_field_index("sum"), "sum",
                            pa.array(3000 + rng.random(80) * 2 - 1))
    cfg = experiment(tmp_path, write_parquet(tmp_path / "n.parquet", near))
    assert run_cli(capsys, "validate", write_yaml(tmp_path / "n.yaml", cfg)).code == 0
