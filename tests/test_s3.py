"""Storage on a real S3-compatible server (moto's server mode, slow): a sweep, its resume, queries.

Credentials are written into the storage URI, as a user might: they must reach every Ray process and
never be printed or stored (rows, best.yaml, Tune's pickled state, checkpoints, logs)."""
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
KEY, SECRET = "AKIAORCHTEST", "s3cr3tOrchestratorKey"


def objects(endpoint, bucket):
    fs = pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, endpoint_override=endpoint, scheme="http",
                           region="us-east-1")
    return fs, [i for i in fs.get_file_info(pafs.FileSelector(bucket, recursive=True)) if i.type == pafs.FileType.File]


def test_sweep_resume_and_queries_on_s3(s3_server, tmp_path):
    bucket = "orch-test"
    fs = pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, endpoint_override=s3_server, scheme="http",
                           region="us-east-1", allow_bucket_creation=True)
    fs.create_dir(bucket)
    plain = f"s3://{bucket}/exp?endpoint_override={s3_server}&scheme=http&region=us-east-1"
    storage = f"s3://{KEY}:{SECRET}@{bucket}/exp?endpoint_override={s3_server}&scheme=http&region=us-east-1"
    cfg = {"name": "s3sweep", "storage": storage,
           "data": {"train": "builtin:multidigits/train", "validation": "builtin:multidigits/val"},
           "tasks": {"left": {"type": "classification"}, "right": {"type": "classification"}},
           "backbone": {"kind": "builtin", "weights": "pretrained"}, "heads": {"hidden_units": 16},
           "train": {"epochs": 2, "batch_size": 128, "head_lr": 3e-3},
           "resources": {"workers": 1, "cpus_per_worker": 0.9},
           "search": {"num_samples": 2, "searcher": "random", "scheduler": {"type": "none"},
                      "space": {"train.backbone_lr": {"loguniform": [3e-4, 3e-3]}}}}
    path = tmp_path / "s3.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = subprocess.run([str(BIN / "orchestrator"), "tune", str(path), "--address", "local"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # --resume of a finished sweep: nothing reruns, nothing is written twice
    again = subprocess.run([str(BIN / "orchestrator"), "tune", str(path), "--address", "local", "--resume"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "resuming sweep" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
    board = subprocess.run([str(BIN / "orchestrator"), "leaderboard", "--storage", plain, "--format", "json"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           env={**__import__("os").environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET})
    assert board.returncode == 0, board.stderr
    rows = yaml.safe_load(board.stdout)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"} and len({r["trial_id"] for r in rows}) == 2
    best = subprocess.run([str(BIN / "orchestrator"), "best", "--storage", storage, "-o", str(tmp_path / "best.yaml")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert best.returncode == 0, best.stderr
    names = [i.path for i in objects(s3_server, bucket)[1]]
    assert any(n.endswith("backbones/digits-cnn-v1.keras") for n in names)          # the pretrain cache
    assert any("/checkpoints/epoch_000002/state.json" in n for n in names)          # trial checkpoints
    assert any("/leaderboard/" in n and n.endswith(".parquet") for n in names)       # the leaderboard
    assert any(n.endswith("/tuner.pkl") for n in names)                             # Tune's state (resume)
    # the secret is never printed and never stored: not in any output, object, best.yaml or log
    outputs = first.stdout + first.stderr + again.stdout + again.stderr + board.stdout + best.stdout + best.stderr
    assert SECRET not in outputs and KEY not in outputs
    assert SECRET not in (tmp_path / "best.yaml").read_text()
    fs_, files = objects(s3_server, bucket)
    for info in files:
        with fs_.open_input_stream(info.path) as f:
            assert SECRET.encode() not in f.read(), info.path
    for log in tmp_path.rglob("*.log"):
        assert SECRET not in log.read_text(errors="replace"), log
