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
])
def test_bad_search_space_exits_2_before_ray(tmp_path, capsys, space, expected):
    cfg = experiment(tmp_path, write_parquet(tmp_path / "train.parquet", small_table(60)),
                     search={"space": space})
    code, _, err = run_cli(capsys, "tune", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and expected in err and "\n" not in err, err


def test_tune_without_search_section_is_a_config_error(tmp_path, capsys):
    cfg = experiment(tmp_path, write_parquet(tmp_path / "train.parquet", small_table(60)))
    code, _, err = run_cli(capsys, "tune", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "has no 'search' section" in err
