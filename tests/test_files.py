"""Issue 7, fast: image files and manifests, ImageNet preprocessing, paths relative to the config."""
import os

import numpy as np
import pytest
from PIL import Image

from orchestrator.cli import main

from factories import experiment, run_cli, write_yaml


pytestmark = pytest.mark.usefixtures("no_ray")


def image_files(folder, n=24, *, sizes=((20, 24), (16, 16), (30, 22)), mode="RGB", seed=0):
    """PNG and JPEG files of mixed sizes plus a CSV manifest with relative paths; returns the manifest path."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines = ["path,left,right,sum"]
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        name = f"img/{i:03d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / name)
        left, right = 5 + i % 5, 5 + (i // 5) % 5
        lines.append(f"{name},{left},{right},{left + right}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return str(folder / "manifest.csv")


def flat_pixel_table(tmp_path, *, values: int, n: int = 64) -> str:
    """A Parquet file of ``n`` flat float pixel lists of ``values`` each (no shape metadata) and the three tasks."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    flat = pa.array([list(rng.random(values).astype(np.float32)) for _ in range(n)], pa.list_(pa.float32()))
    pq.write_table(pa.table({"image": flat, "left": rng.integers(0, 3, n), "right": rng.integers(0, 3, n),
                             "sum": rng.random(n).astype(np.float32)}), tmp_path / "flat.parquet")
    return str(tmp_path / "flat.parquet")


def manifest_cfg(tmp_path, manifest, *, image_size=(16, 16), **sections):
    return experiment(tmp_path, manifest, data={"train": manifest, "validation": 0.25, "image_column": "path",
                                                "image_size": list(image_size)}, train={"batch_size": 8}, **sections)


def test_validate_reads_a_manifest_of_mixed_size_files(tmp_path, capsys):
    cfg = manifest_cfg(tmp_path, image_files(tmp_path / "d"))
    main(["validate", write_yaml(tmp_path / "e.yaml", cfg)])
    out = capsys.readouterr().out
    assert "ok:" in out and "data: 18 training + 6 validation images, 16x16x3 uint8" in out, out
    assert "image files" in out


@pytest.mark.parametrize("case, expected", [
    ("missing manifest", "manifest"),
    ("not an image", "003.png"),
    ("mixed sizes", "data.image_size"),
    ("missing file", "006.jpg"),
])
def test_bad_image_files_exit_2_with_one_line(tmp_path, capsys, case, expected):
    manifest = image_files(tmp_path / "d")
    data = {"train": manifest, "validation": 0.25, "image_column": "path", "image_size": [16, 16]}
    if case == "missing manifest":
        data["train"] = str(tmp_path / "d" / "nope.csv")
    elif case == "not an image":
        (tmp_path / "d" / "img" / "003.png").write_text("this is text, not a PNG")
    elif case == "mixed sizes":
        del data["image_size"]
    else:
        os.remove(tmp_path / "d" / "img" / "006.jpg")
    cfg = experiment(tmp_path, manifest, data=data, train={"batch_size": 8})
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and expected in err and "\n" not in err, err


def test_one_channel_images_with_imagenet_weights_exit_2(tmp_path, capsys):
    manifest = image_files(tmp_path / "d", mode="L")
    cfg = manifest_cfg(tmp_path, manifest, image_size=(32, 32),
                       backbone={"kind": "application", "name": "MobileNetV2", "weights": "imagenet"})
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "3 channels" in err and "1" in err and "\n" not in err, err


def test_missing_backbone_file_exits_2(tmp_path, capsys):
    cfg = experiment(tmp_path, "builtin:multidigits/train", backbone={"kind": "file", "path": "nope.keras"})
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "nope.keras" in err and "not found" in err, err


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch, capsys):
    import keras

    from orchestrator.model.backbones import digits_cnn

    project = tmp_path / "project"
    manifest = image_files(project / "data", mode="L")
    digits_cnn((16, 16, 1)).save(project / "my_backbone.keras")
    cfg = experiment(tmp_path, manifest, data={"train": "data/manifest.csv", "validation": 0.25, "image_column": "path",
                                               "image_size": [16, 16]},
                     backbone={"kind": "file", "path": "my_backbone.keras"}, storage="out", train={"batch_size": 8})
    path = write_yaml(project / "e.yaml", cfg)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    main(["validate", path])
    out = capsys.readouterr().out
    assert "ok:" in out and str(project / "out") in out, out
    assert keras.__version__


def test_submit_refuses_a_relative_local_storage(tmp_path, capsys):
    root = tmp_path / "proj"
    (root / "jobs").mkdir(parents=True)
    (root / "jobs" / "tune.py").write_text("")
    cfg = experiment(tmp_path, "builtin:multidigits/train", storage="runs")
    path = write_yaml(root / "e.yaml", cfg)
    code, _, err = run_cli(capsys, "submit", path, "--address", "http://127.0.0.1:9", "--working-dir", str(root))
    assert code == 2 and "storage" in err and "shared" in err and "\n" not in err, err


APPLICATIONS = ["VGG16", "ResNet50", "MobileNetV2", "EfficientNetB0"]


@pytest.mark.parametrize("name", APPLICATIONS)
def test_application_backbones_apply_their_own_preprocess_input(tmp_path, name):
    """Decoded file -> the product's backbone == Keras's reference model(preprocess_input(x)) within 1e-4."""
    import importlib

    import keras

    from orchestrator.model.backbones import build_backbone
    from orchestrator.config.schema import BackboneConfig
    from orchestrator.data.decode import decode_image

    rng = np.random.default_rng(0)
    path = tmp_path / "x.png"
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)
    keras.utils.set_random_seed(0)
    bb = build_backbone(BackboneConfig(kind="application", name=name, weights="none"), (48, 48, 3), storage=str(tmp_path))
    ours = bb(decode_image(path.read_bytes(), where=str(path))[None].astype("float32")).numpy()

    app = next(layer for layer in bb.layers if isinstance(layer, keras.Model))
    module = importlib.import_module(type(app).__module__ if hasattr(type(app), "preprocess_input") else
                                     {"VGG16": "keras.applications.vgg16", "ResNet50": "keras.applications.resnet50",
                                      "MobileNetV2": "keras.applications.mobilenet_v2",
                                      "EfficientNetB0": "keras.applications.efficientnet"}[name])
    x = keras.utils.img_to_array(keras.utils.load_img(path))[None]
    reference = app(module.preprocess_input(x.copy())).numpy()
    assert ours.shape == reference.shape
    scale = float(np.abs(reference).max())
    assert scale > 0
    assert float(np.abs(ours - reference).max()) <= 1e-4 * max(scale, 1.0)      # within 1e-4 (relative if large)
    assert float(np.abs(ours - reference).max()) <= 1e-4 * scale                # and relative to the output's size
    if name != "EfficientNetB0":   # EfficientNet's preprocess_input is the identity (it rescales inside)
        raw = app(x).numpy()
        assert float(np.abs(raw - reference).max()) > 1e-2 * scale, "preprocessing made no difference: proves nothing"


def test_flat_pixel_lists_with_image_shape_and_image_size_decode_on_the_cluster_as_validated(tmp_path):
    """One decoder for the driver's sample and the cluster: flat pixel lists (no shape metadata) with both
    data.image_shape (how they are stored) and data.image_size (resize on decode) validate, and the units the
    cluster decodes come out at the validated shape."""
    from orchestrator.config import parse_config
    from orchestrator.data.pipeline import load_arrays

    cfg = parse_config(experiment(tmp_path, flat_pixel_table(tmp_path, values=144),
                                  data={"image_shape": [6, 8, 3], "image_size": [16, 16]}))
    (x, y), (xv, yv), spec = load_arrays(cfg)   # the cluster's decoder, run in this process
    assert spec.image_shape == (16, 16, 3)
    assert x.shape == (48, 16, 16, 3) and xv.shape == (16, 16, 16, 3)


def test_the_data_fingerprint_follows_image_and_parquet_content_rewritten_in_place(tmp_path):
    """Done work is reused by data fingerprint (sweeps, baselines, confirm, ablate, warm starts): images or a Parquet
    file rewritten at the same path, labels unchanged, are other data."""
    from factories import small_table, write_parquet
    from orchestrator.config import parse_config
    from orchestrator.data.prepare import prepare

    manifest = image_files(tmp_path / "d")
    cfg = parse_config(manifest_cfg(tmp_path, manifest))
    before = prepare(cfg).spec.fingerprint
    assert prepare(cfg).spec.fingerprint == before                                 # nothing changed: the same
    img = tmp_path / "d" / "img" / "001.png"
    pixels = np.asarray(Image.open(img))
    Image.fromarray(np.ascontiguousarray(255 - pixels[:, ::-1])).save(img)         # inverted and flipped, in place
    assert prepare(cfg).spec.fingerprint != before
    table = small_table(120)
    path = write_parquet(tmp_path / "p.parquet", table)
    pq_cfg = parse_config(experiment(tmp_path, path))
    before = prepare(pq_cfg).spec.fingerprint
    other = small_table(120, seed=1).select(["image"])
    write_parquet(path, table.set_column(table.column_names.index("image"), "image", other.column("image")))
    assert prepare(pq_cfg).spec.fingerprint != before


def test_a_backbone_file_rewritten_in_place_is_other_work(tmp_path):
    """The config names a backbone file by path only; its results were reused after the file was rewritten (a newer
    export at the same path). The fingerprint of what a run reads covers the backbone file as it covers the images."""
    import os

    from orchestrator.config import parse_config
    from orchestrator.data.prepare import prepare

    manifest = image_files(tmp_path / "d")
    for backbone, path in (({"kind": "file"}, tmp_path / "bb.keras"),
                           ({"kind": "application", "name": "MobileNetV2"}, tmp_path / "w.weights.h5")):
        path.write_bytes(b"first export")
        cfg = parse_config(manifest_cfg(tmp_path, manifest, backbone={
            "weights": "none", **backbone, ("path" if backbone["kind"] == "file" else "weights"): str(path)}))
        before = prepare(cfg).spec.fingerprint
        assert prepare(cfg).spec.fingerprint == before
        path.write_bytes(b"later export")                                          # same size, new content
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
        assert prepare(cfg).spec.fingerprint != before, backbone


def test_16_bit_grayscale_pngs_are_scaled_to_0_255_not_clipped(tmp_path):
    """A 16-bit PNG (Pillow mode I;16 or I) holds 0-65535. Pillow's convert("L") clips every value above 255 to 255,
    which turned nearly every pixel white; the decoder scales by 255/65535 instead, in every color mode."""
    import io

    from orchestrator.data.decode import decode_image

    values = np.array([[0, 257, 1000], [30000, 50000, 65535]], dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="PNG")
    expected = np.round(values / 257.0).astype(np.uint8)
    for mode in ("keep", "grayscale", "rgb"):
        arr = decode_image(buf.getvalue(), where="x.png", color_mode=mode)
        assert arr.dtype == np.uint8
        assert arr.shape == (2, 3, 3 if mode == "rgb" else 1)
        for c in range(arr.shape[-1]):
            np.testing.assert_array_equal(arr[..., c], expected, err_msg=mode)


@pytest.mark.parametrize("make, mode", [
    (lambda: Image.fromarray(np.arange(256, dtype=np.int32).reshape(16, 16), "I"), "32-bit integer"),
    (lambda: Image.fromarray(np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16), "F"), "32-bit float"),
])
def test_images_of_no_fixed_pixel_range_are_refused_not_crushed(make, mode):
    """A 32-bit integer TIFF holding 0-255 was scaled as if 16-bit (max 1: black), a float TIFF in [0, 1] cut to
    0/1 by Pillow's conversion: scientific images trained on almost constant inputs, without a word (found by a
    helper's audit). Such a file has no fixed range to scale from: refused in one line naming the fix."""
    import io

    from orchestrator.data.decode import decode_image
    from orchestrator.errors import DataError

    buf = io.BytesIO()
    make().save(buf, format="TIFF")
    with pytest.raises(DataError, match=f"x.tif is a {mode} image") as e:
        decode_image(buf.getvalue(), where="x.tif")
    assert "8- or 16-bit" in str(e.value) and "\n" not in str(e.value)


def test_flat_pixel_vectors_without_a_shape_are_refused_not_guessed_square(tmp_path, capsys):
    """256 values per row may be 16x16 gray, 32x8 gray or 8x8 RGBA: a guess can train on scrambled images without a
    word. Flat vectors without shape metadata need data.image_shape, and the error says so."""
    data = flat_pixel_table(tmp_path, values=256)
    path = write_yaml(tmp_path / "exp.yaml", experiment(tmp_path, data))
    code, _, err = run_cli(capsys, "validate", path)
    assert code == 2 and "\n" not in err and "flat vectors of 256 values" in err and "data.image_shape" in err, err
    shaped = write_yaml(tmp_path / "shaped.yaml", experiment(tmp_path, data, data={"image_shape": [32, 8, 1]}))
    assert run_cli(capsys, "validate", shaped).code == 0


def test_validation_stored_unlike_training_is_refused_not_cast(tmp_path, capsys):
    """Training images from files reach the model as uint8 0-255; a validation pixel table in [0, 1] of the same
    shape was cast to uint8 (all zeros) and scored without a word. Both sides must be stored the same way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = image_files(tmp_path / "d", sizes=((16, 16),))
    rng = np.random.default_rng(0)
    n = 12
    img = rng.random((n, 16, 16, 3)).astype(np.float32)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(img.reshape(-1)), 16 * 16 * 3)
    table = pa.table({"path": flat, "left": rng.integers(5, 10, n), "right": rng.integers(5, 10, n),
                      "sum": rng.random(n).astype(np.float32)}).replace_schema_metadata(
        {b"orchestrator.image_shape": b"16,16,3"})
    pq.write_table(table, tmp_path / "val.parquet")
    cfg = manifest_cfg(tmp_path, manifest)
    cfg["data"]["validation"] = str(tmp_path / "val.parquet")
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "exp.yaml", cfg))
    assert code == 2 and "\n" not in err and "validation" in err and "training" in err and "uint8" in err, err


def test_pixel_tables_on_two_scales_are_refused(tmp_path, capsys):
    """Training pixels stored 0-255 and validation pixels 0-1, both float tables: validate said ok, and every
    validation image reached the model at 1/255 of the training scale (found by a helper's audit)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)

    def table(name, n, scale):
        img = rng.integers(0, 256, (n, 64)).astype(np.float32) * scale
        pq.write_table(pa.table({"image": pa.FixedSizeListArray.from_arrays(pa.array(img.reshape(-1)), 64),
                                 "left": rng.integers(0, 3, n), "right": rng.integers(0, 3, n),
                                 "sum": rng.random(n).astype(np.float32)}).replace_schema_metadata(
            {b"orchestrator.image_shape": b"8,8,1"}), tmp_path / name)
        return str(tmp_path / name)

    cfg = experiment(tmp_path, table("train.parquet", 48, 1.0), train={"batch_size": 8})
    cfg["data"]["validation"] = table("val.parquet", 24, 1 / 255)
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "exp.yaml", cfg))
    assert code == 2 and "\n" not in err, err
    assert "validation pixels reach 1 but training pixels reach 255" in err and "one scale" in err, err
    cfg["data"]["validation"] = table("val255.parquet", 24, 1.0)   # the same scale: fine
    assert run_cli(capsys, "validate", write_yaml(tmp_path / "ok.yaml", cfg)).code == 0


def test_channels_first_pixel_lists_are_refused_not_read_as_three_rows(tmp_path, capsys):
    """Nested pixel lists in (C, H, W) order, as a PyTorch tensor's tolist() gives, trained as images 3 rows high with
    16 channels (found by a helper's audit). Refused, naming the order; data.image_shape says it is meant."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    n = 48
    imgs = rng.random((n, 3, 16, 16)).astype(np.float32)
    pq.write_table(pa.table({"image": pa.array(imgs.tolist()), "left": rng.integers(0, 3, n),
                             "right": rng.integers(0, 3, n), "sum": rng.random(n).astype(np.float32)}),
                   tmp_path / "chw.parquet")
    cfg = experiment(tmp_path, str(tmp_path / "chw.parquet"), train={"batch_size": 8})
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "\n" not in err and "channels first" in err and "data.image_shape" in err, err
    cfg["data"]["image_shape"] = [3, 16, 16]   # meant: read so, and then too small for the built-in backbone, in one
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "meant.yaml", cfg))   # line (it was a traceback)
    assert code == 2 and "\n" not in err and "channels first" not in err and "too small" in err, err
