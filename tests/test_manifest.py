"""Fast: `orchestrator manifest` turns a class-per-folder tree into a manifest the data checks accept."""
import os
import re
import subprocess
import sys

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from factories import experiment, run_cli, write_yaml


@pytest.fixture(autouse=True)
def _no_ray(no_ray):
    """Nothing here starts Ray."""


def save(path, size=(10, 12), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, format=fmt)


def class_tree(root, classes=("5", "6", "7"), per_class=4):
    """root/<class>/<i>.png|jpg, mixed sizes."""
    for c in classes:
        for i in range(per_class):
            save(root / c / f"{i}.{'png' if i % 2 else 'jpg'}", size=(10 + i, 12), seed=i)
    return root


def test_one_task_tree_to_csv_with_paths_relative_to_the_manifest(tmp_path, capsys):
    class_tree(tmp_path / "data" / "train")
    out = tmp_path / "manifests" / "train.csv"          # not next to the images: paths go through ..
    code, stdout, err = run_cli(capsys, "manifest", str(tmp_path / "data" / "train"), "-o", str(out))
    assert code == 0, err
    assert "12 images" in stdout and "label: 3 classes (5, 6, 7)" in stdout, stdout
    table = pacsv.read_csv(out)
    assert table.column_names == ["image", "label"]
    assert table.column("label").to_pylist() == [5] * 4 + [6] * 4 + [7] * 4     # CSV reads folder names as ints
    paths = table.column("image").to_pylist()
    assert paths[0] == "../data/train/5/0.jpg" and paths[1] == "../data/train/5/1.png", paths
    assert all(os.path.isfile(out.parent / p) for p in paths)
    assert [f for f in os.listdir(out.parent) if f != "train.csv"] == []        # no temporary file left


@pytest.mark.slow   # the real CLI in fresh processes (each loads TensorFlow): end-to-end
def test_the_manifest_validates_from_another_folder(tmp_path):
    """The real CLI, twice in fresh processes: make the manifest, then `validate` an experiment on it from another
    folder (the manifest's path relative to the config file, next to it, and its image paths relative to it).
    tests/test_files.py had a `validate` from another folder in a process of its own too (a TensorFlow import,
    9 s), its manifest in a subfolder; image paths relative to a manifest in a subfolder are test_files's fast
    tests'."""
    project = tmp_path / "project"
    class_tree(project / "images", per_class=6)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    make = subprocess.run([sys.executable, "-m", "orchestrator.cli", "manifest", "images", "-o", "left.csv",
                           "--tasks", "left"], cwd=project, capture_output=True, text=True, timeout=120, env=env)
    assert make.returncode == 0, make.stderr
    cfg = experiment(tmp_path, "left.csv", data={"train": "left.csv", "validation": 0.25, "image_size": [12, 12]},
                     train={"batch_size": 4})
    cfg["tasks"] = {"left": {"type": "classification"}}
    config = write_yaml(project / "e.yaml", cfg)
    check = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", config], cwd=tmp_path,
                           capture_output=True, text=True, timeout=180, env=env)
    assert check.returncode == 0, check.stderr
    assert "data: 14 training + 4 validation images, 12x12x3 uint8" in check.stdout, check.stdout


def test_nested_folders_map_to_task_columns(tmp_path, capsys):
    root = tmp_path / "tree"
    for left, right in [("5", "7"), ("5", "8"), ("6", "7"), ("9", "8")]:
        save(root / left / right / f"{left}{right}.png")
    out = tmp_path / "m.csv"
    code, stdout, err = run_cli(capsys, "manifest", str(root), "-o", str(out), "--tasks", "left,right")
    assert code == 0, err
    table = pacsv.read_csv(out)
    assert table.column_names == ["image", "left", "right"]
    assert table.column("image").to_pylist() == ["tree/5/7/57.png", "tree/5/8/58.png", "tree/6/7/67.png",
                                                 "tree/9/8/98.png"]
    assert table.column("left").to_pylist() == [5, 5, 6, 9]
    assert table.column("right").to_pylist() == [7, 8, 7, 8]
    assert "left: 3 classes (5, 6, 9); right: 2 classes (7, 8)" in stdout, stdout


def test_parquet_output_keeps_folder_names_as_text(tmp_path, capsys):
    class_tree(tmp_path / "t", classes=("cat", "dog", "007"), per_class=2)
    code, _, err = run_cli(capsys, "manifest", str(tmp_path / "t"), "-o", str(tmp_path / "m.parquet"),
                           "--image-column", "path", "--tasks", "animal")
    assert code == 0, err
    table = pq.read_table(tmp_path / "m.parquet")
    assert table.column_names == ["path", "animal"]
    assert str(table.schema.field("path").type) == "string"
    assert sorted(set(table.column("animal").to_pylist())) == ["007", "cat", "dog"]


def test_extensions_hidden_files_and_empty_class_folders(tmp_path, capsys):
    root = class_tree(tmp_path / "t", classes=("a", "b"), per_class=2)       # 0.jpg, 1.png in each
    save(root / "a" / "2.JPEG")                                               # case-insensitive
    (root / "a" / "notes.txt").write_text("not an image")
    save(root / "a" / ".hidden.png")
    save(root / ".cache" / "x" / "deep.png")                                  # hidden folder: skipped whole
    (root / "empty").mkdir()
    code, stdout, err = run_cli(capsys, "manifest", str(root), "-o", str(tmp_path / "all.csv"))
    assert code == 0, err
    assert pacsv.read_csv(tmp_path / "all.csv").column("image").to_pylist() == [
        "t/a/0.jpg", "t/a/1.png", "t/a/2.JPEG", "t/b/0.jpg", "t/b/1.png"]
    assert "1 class folder(s) hold no image" in stdout and "empty" in stdout, stdout
    code, _, err = run_cli(capsys, "manifest", str(root), "-o", str(tmp_path / "png.csv"), "--extensions", ".PNG")
    assert code == 0, err
    assert pacsv.read_csv(tmp_path / "png.csv").column("image").to_pylist() == ["t/a/1.png", "t/b/1.png"]


def _flat_images(root):
    save(root / "a.png")


def _txt_only(root):
    (root / "a").mkdir(parents=True)
    (root / "a" / "readme.txt").write_text("x")


@pytest.mark.parametrize("case, args, expected", [
    ("missing folder", [], "not found"),
    ("no class folders", [], "no class folders"),
    ("images at the top", [], "put every image in a class folder"),
    ("no images", [], "no images with extensions bmp, gif, jpeg, jpg, png"),
    ("too deep for one task", [], "name one task per folder level with --tasks"),
    ("too shallow for the tasks", ["--tasks", "left,right"], "--tasks left,right needs 2 folder levels"),
    ("extension filters out everything", ["--extensions", "gif"], "no images with extensions gif"),
    ("bad task name", ["--tasks", "left,my-task"], "plain identifier"),
    ("task named twice", ["--tasks", "left,left"], "names a task twice"),
    ("empty task name", ["--tasks", "left,"], "empty item"),
    ("wrong suffix", ["-o", "m.txt"], "must end in .csv or .parquet"),
    ("column clash", ["--image-column", "label"], "also a task name"),
    ("folders read back as one label", [], "read back as the same label"),
])
def test_mistakes_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, case, args, expected):
    root = tmp_path / "t"
    if case == "no class folders":
        root.mkdir()
        (root / "readme.txt").write_text("x")
    elif case == "images at the top":
        class_tree(root, classes=("a",), per_class=1)
        _flat_images(root)
    elif case == "no images":
        _txt_only(root)
    elif case == "too deep for one task":
        save(root / "5" / "7" / "a.png")
    elif case == "folders read back as one label":
        class_tree(root, classes=("5", "05"), per_class=1)
    elif case != "missing folder":
        class_tree(root, classes=("a", "b"), per_class=1)
    out = tmp_path / "m.csv"
    out.write_text("old\n")                      # a failed run leaves an existing manifest as it was
    if "-o" not in args:
        args = ["-o", str(out), *args]
    code, _, err = run_cli(capsys, "manifest", str(root), *args)
    assert code == 2 and err.startswith("error: ") and expected in err and "\n" not in err, err
    assert out.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == sorted(["m.csv"] + (["t"] if root.exists() else []))


def test_manifest_module_imports_no_tensorflow_or_ray():
    code = ("import sys, orchestrator.data.manifest, orchestrator.cli.data; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'ray') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", (proc.stdout, proc.stderr)


def _species_manifest(tmp_path, species: list) -> dict:
    """A CSV manifest of len(species) small PNGs, its one task ``species``; the experiment dict on it."""
    for i in range(len(species)):
        save(tmp_path / "img" / f"{i:03d}.png", size=(12, 12), seed=i)
    rows = "".join(f"img/{i:03d}.png,{s}\n" for i, s in enumerate(species))
    (tmp_path / "m.csv").write_text("image,species\n" + rows)
    cfg = experiment(tmp_path, str(tmp_path / "m.csv"), data={"validation": 0.25})
    cfg["tasks"] = {"species": {"type": "classification"}}
    return cfg


@pytest.mark.parametrize("blank", ["", "NA", "null"])
def test_a_blank_or_na_label_in_a_csv_manifest_is_refused_not_made_a_class(tmp_path, blank):
    """A CSV read with pyarrow's defaults keeps an empty, "NA" or "null" cell of a text column as text: the class
    '' (or 'NA') trained beside cat and dog, and `validate` said ok. They are missing labels."""
    from orchestrator.config import parse_config
    from orchestrator.data.prepare import prepare
    from orchestrator.errors import DataError

    cfg = parse_config(_species_manifest(tmp_path, ["cat", "dog", blank] * 10))
    with pytest.raises(DataError, match="row 2 of label column 'species' .* is null/NaN; drop or fill"):
        prepare(cfg)


def test_a_class_the_split_leaves_without_training_rows_is_refused(tmp_path):
    """The class list comes from every row, the validation split after it: a rare class whose rows all fell into
    validation trained with no example of it, silently (validation then scored it as never predicted)."""
    from orchestrator.config import parse_config
    from orchestrator.data.prepare import prepare
    from orchestrator.errors import DataError

    n = 40
    held = np.random.default_rng(0).permutation(n)[round(n * 0.75):]   # what data.split_seed 0 holds out
    species = ["cat" if i % 2 else "dog" for i in range(n)]
    for i in held[:2]:
        species[i] = "bird"
    cfg = parse_config(_species_manifest(tmp_path, species))
    with pytest.raises(DataError, match="class 'bird' of task 'species' has no training rows"):
        prepare(cfg)
    species[int(np.setdiff1d(np.arange(n), held)[0])] = "bird"          # one bird to train on: fine
    prepare(parse_config(_species_manifest(tmp_path, species)))


def test_a_listed_class_only_a_separate_validation_table_has_is_refused(tmp_path):
    """With the classes listed (``classes:``) and a validation table of its own, a class that only validation rows
    have passed every check: training saw no example of it and a third of the validation rows could never be
    predicted right, silently. Without the list the same files are refused; now with it too. Found by a helper's
    audit."""
    from orchestrator.config import parse_config
    from orchestrator.data.prepare import prepare
    from orchestrator.errors import DataError

    (tmp_path / "img").mkdir()
    for i in range(52):
        save(tmp_path / "img" / f"{i}.png", seed=i)
    (tmp_path / "train.csv").write_text("image,species\n" + "".join(
        f"img/{i}.png,{'ab'[i % 2]}\n" for i in range(40)))
    (tmp_path / "val.csv").write_text("image,species\n" + "".join(
        f"img/{i}.png,{'abc'[i % 3]}\n" for i in range(40, 52)))
    d = {**experiment(tmp_path, str(tmp_path / "train.csv")),
         "tasks": {"species": {"type": "classification", "classes": ["a", "b", "c"]}}}
    d["data"] = {**d["data"], "validation": str(tmp_path / "val.csv")}
    with pytest.raises(DataError, match="class 'c' of task 'species' has no training rows"):
        prepare(parse_config(d))
    (tmp_path / "train.csv").write_text("image,species\n" + "".join(
        f"img/{i}.png,{'abc'[i % 3]}\n" for i in range(40)))   # c trains too: fine
    prepare(parse_config(d))


def test_a_class_folder_that_is_a_link_is_a_class(tmp_path, capsys):
    """os.walk does not enter a linked folder: a class folder linked from elsewhere (a shared store) was left out of
    the manifest, not even reported as empty, and training went on without that class. Keras's
    image_dataset_from_directory, which the command mirrors, follows it. A link back up the tree is not followed
    twice."""
    class_tree(tmp_path / "store", classes=("dog",), per_class=3)
    class_tree(tmp_path / "tree", classes=("cat",), per_class=3)
    os.symlink(tmp_path / "store" / "dog", tmp_path / "tree" / "dog")
    os.symlink(tmp_path / "tree", tmp_path / "tree" / "cat" / "loop")   # a link to an ancestor: no endless walk
    code, out, err = run_cli(capsys, "manifest", str(tmp_path / "tree"), "-o", str(tmp_path / "m.csv"))
    assert code == 0 and "6 images" in out and "2 classes (cat, dog)" in out, (out, err)


@pytest.mark.parametrize("spellings", [("007", "7"), ("1", "1.0")])
def test_two_spellings_of_one_number_in_a_csv_manifest_are_refused_not_made_one_class(tmp_path, spellings):
    """A CSV column whose every cell is a number is read as numbers: the classes '007' and '7' (or '1' and '1.0')
    became one class, their rows trained and scored as one, with no word."""
    from orchestrator.config import parse_config
    from orchestrator.data.prepare import prepare
    from orchestrator.errors import DataError

    a, b = spellings
    cfg = parse_config(_species_manifest(tmp_path, [a, b, "3"] * 10))
    with pytest.raises(DataError, match=f"labels '{a}' and '{b}' of column 'species' .* both read as one number"):
        prepare(cfg)
    prepare(parse_config(_species_manifest(tmp_path, [a, a, "3"] * 10)))   # one spelling per class: fine


def test_relabelling_a_dictionary_encoded_parquet_manifest_changes_the_data_fingerprint(tmp_path):
    """The fingerprint hashed a label column's raw buffers: of a dictionary-encoded column (as pyarrow writes
    categorical labels), the indices only. With one row group per class folder, relabelling the 'fox' group 'dog'
    kept every index at 0 and the fingerprint the same, so 3-class rows were reused and ranked as results on the
    2-class data (found by a helper's audit)."""
    import pyarrow as pa

    from orchestrator.config import parse_config
    from orchestrator.data.prepare import prepare

    (tmp_path / "img").mkdir()
    for i in range(30):
        save(tmp_path / "img" / f"{i}.png", seed=i)

    def fingerprint(classes):
        schema = pa.schema([("image", pa.string()), ("label", pa.dictionary(pa.int32(), pa.string()))])
        with pq.ParquetWriter(tmp_path / "m.parquet", schema) as w:
            for k, name in enumerate(classes):
                w.write_table(pa.table({"image": [f"img/{i}.png" for i in range(10 * k, 10 * k + 10)],
                                        "label": pa.array([name] * 10).dictionary_encode()}, schema=schema))
        d = {**experiment(tmp_path, str(tmp_path / "m.parquet")), "tasks": {"label": {"type": "classification"}}}
        return prepare(parse_config(d)).spec.fingerprint

    assert fingerprint(["cat", "dog", "fox"]) != fingerprint(["cat", "dog", "dog"])


@pytest.mark.parametrize("case, expected", [
    ("all zero", "task 'y' has only one label value (0) in the training data"),
    ("positives held out", "label 1 of task 'y' has no training rows"),
])
def test_a_binary_task_gets_the_class_checks_classification_has(tmp_path, case, expected):
    """A binary task whose labels are all 0 trained a constant predictor and scored accuracy 1.0; one whose every 1
    the split held out trained on no positive example. Classification refuses both; binary had neither check
    (found by a helper's audit)."""
    from orchestrator.config import parse_config
    from orchestrator.data.prepare import prepare
    from orchestrator.errors import DataError

    (tmp_path / "img").mkdir()
    n = 40
    for i in range(n):
        save(tmp_path / "img" / f"{i}.png", seed=i)
    held = np.random.default_rng(0).permutation(n)[round(n * 0.75):]   # what data.split_seed 0 holds out
    y = [0] * n if case == "all zero" else [int(i in held[:3]) for i in range(n)]
    (tmp_path / "d.csv").write_text("image,y\n" + "".join(f"img/{i}.png,{v}\n" for i, v in enumerate(y)))
    d = {**experiment(tmp_path, str(tmp_path / "d.csv")), "tasks": {"y": {"type": "binary", "metric": "accuracy"}}}
    with pytest.raises(DataError, match=re.escape(expected)):
        prepare(parse_config(d))
    y[int(np.setdiff1d(np.arange(n), held)[0])] = 1                    # one positive to train on: fine
    (tmp_path / "d.csv").write_text("image,y\n" + "".join(f"img/{i}.png,{v}\n" for i, v in enumerate(y)))
    prepare(parse_config(d))
