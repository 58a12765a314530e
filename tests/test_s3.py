"""Storage on a real S3-compatible server (moto's server mode, slow): a sweep, its resume, queries; nothing left in
the temp dir.

Credentials are written into the storage URI, as a user might, with a secret holding ``/`` and ``+`` as AWS
secrets do: they must reach every Ray process and never be printed or stored (rows, best.yaml, Tune's pickled
state, checkpoints, TensorBoard files, Ray's session logs, the job table and its runtime_env)."""
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

import pyarrow.fs as pafs
import pytest
import yaml

from orchestrator import layout

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
KEY, SECRET = "AKIAORCHTEST", "s3cr3t/Orch+estrator/Key+"
FORMS = [SECRET, quote(SECRET, safe=""), quote(SECRET), json.dumps(SECRET)[1:-1], SECRET.replace("/", "\\/"),
         quote(SECRET, safe="").lower()]
JOB_TABLE = """
import json, sys
from orchestrator.config.loading import load_config
from orchestrator.training.session import init_ray, resolve_storage
resolve_storage(load_config(sys.argv[1]))
init_ray(None)
import ray
from ray.util.state import list_jobs
print(json.dumps({"runtime_env": ray.get_runtime_context().runtime_env,
                  "jobs": [j.__dict__ if hasattr(j, "__dict__") else str(j) for j in
                           list_jobs(address=ray.get_runtime_context().gcs_address, detail=True)]},
                 default=str))
"""


# What a command may leave in its temp dir: not per-run files. TensorFlow autograph's sources of converted functions
# and Python multiprocessing's folders (left by processes Ray ends), and the one TensorFlow start-up log per user that
# every run appends to (console.py).
SHARED_TEMP = ("__autograph_generated_file", "pymp-", f"orchestrator-{os.getuid()}-tensorflow.log")


def leaked(text: str) -> list[str]:
    return [form for form in FORMS if form in text]


def objects(endpoint, bucket):
    fs = pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, endpoint_override=endpoint, scheme="http",
                           region="us-east-1")
    return fs, [i for i in fs.get_file_info(pafs.FileSelector(bucket, recursive=True)) if i.type == pafs.FileType.File]


def test_pretraining_writes_its_cache_into_s3_and_prints_no_secret(s3_server, tmp_path, capsys, monkeypatch):
    """`orchestrator pretrain --storage s3://KEY:SECRET@...` in this process (the sweeps below find the cache
    there already: pretraining is this test's), on 1 epoch of the source task instead of 8: the backbone lands in
    the storage's pretrain cache, its lines name the storage without the secret, and its temp folder is removed."""
    from factories import run_cli
    from orchestrator.training import pretrain

    fs = pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, endpoint_override=s3_server, scheme="http",
                           region="us-east-1", allow_bucket_creation=True)
    fs.create_dir("orch-pretrain")
    monkeypatch.setitem(pretrain.SOURCE, "train", {**pretrain.SOURCE["train"], "epochs": 1})
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.makedirs(tmp_path / "tmp")
    storage = f"s3://{KEY}:{SECRET}@orch-pretrain/p?endpoint_override={s3_server}&scheme=http&region=us-east-1"
    code, out, err = run_cli(capsys, "pretrain", "--storage", storage)
    assert code == 0, err
    assert f"saved built-in backbone to s3://orch-pretrain/p/{layout.BUILTIN_BACKBONE}?" in out, out
    assert not leaked(out + err) and KEY not in out + err, out + err
    (cached,) = [i for i in objects(s3_server, "orch-pretrain")[1]]
    assert cached.path == f"orch-pretrain/p/{layout.BUILTIN_BACKBONE}" and cached.size > 10_000, cached
    assert [n for n in os.listdir(tmp_path / "tmp") if not n.startswith(SHARED_TEMP)] == []
    code, out, _ = run_cli(capsys, "pretrain", "--storage", storage)        # then it is the cache
    assert code == 0 and "built-in backbone cached at s3://orch-pretrain/p/" in out and not leaked(out), out


def test_sweep_resume_and_queries_on_s3(s3_server, pretrained_backbone, tmp_path):
    bucket = "orch-test"
    fs = pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, endpoint_override=s3_server, scheme="http",
                           region="us-east-1", allow_bucket_creation=True)
    fs.create_dir(bucket)
    # the storage's pretrain cache holds the session's pretrained built-in backbone (pretraining it here took about
    # 25 s; pretraining into S3 is the test above's): the sweep's workers load it from S3
    with fs.open_output_stream(f"{bucket}/exp/{layout.BUILTIN_BACKBONE}") as f, open(pretrained_backbone, "rb") as src:
        f.write(src.read())
    plain = f"s3://{bucket}/exp?endpoint_override={s3_server}&scheme=http&region=us-east-1"
    storage = f"s3://{KEY}:{SECRET}@{bucket}/exp?endpoint_override={s3_server}&scheme=http&region=us-east-1"
    ray_tmp = f"/tmp/rs{uuid.uuid4().hex[:6]}"          # this test's Ray sessions only (short: see ray-2.60.md)
    tmpdir = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))   # the commands' own temp dir: left empty at the end
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "TMPDIR": str(tmpdir)}
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
                           capture_output=True, text=True, timeout=1500, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"built-in backbone cached at s3://{bucket}/exp/{layout.BUILTIN_BACKBONE}" in first.stdout, first.stdout
    # --resume of a finished sweep: nothing reruns, nothing is written twice
    again = subprocess.run([str(BIN / "orchestrator"), "tune", str(path), "--address", "local", "--resume"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert again.returncode == 0 and "resuming sweep" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
    board = subprocess.run([str(BIN / "orchestrator"), "leaderboard", "--storage", plain, "--format", "json"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           env={**__import__("os").environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET})
    assert board.returncode == 0, board.stderr
    rows = yaml.safe_load(board.stdout)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"} and len({r["trial_id"] for r in rows}) == 2
    best = subprocess.run([str(BIN / "orchestrator"), "best", "--storage", storage, "-o", str(tmp_path / "best.yaml")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert best.returncode == 0, best.stderr
    # confirm and ablate take the storage (with credentials) on their command line, not from a config
    confirm = subprocess.run([str(BIN / "orchestrator"), "confirm", "-e", "s3sweep", "--top", "1", "--seeds", "1",
                              "--storage", storage, "--address", "local"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=900, env=env)
    assert confirm.returncode == 0 and "confirmed ranking" in confirm.stdout, confirm.stdout[-2000:] + confirm.stderr
    jobs = subprocess.run([sys.executable, "-c", JOB_TABLE, str(path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert jobs.returncode == 0 and '"jobs"' in jobs.stdout, jobs.stderr[-2000:]
    names = [i.path for i in objects(s3_server, bucket)[1]]
    assert any(n.endswith("backbones/digits-cnn-v1.keras") for n in names)          # the pretrain cache, kept
    assert any("/checkpoints/epoch_000002/state.json" in n for n in names)          # trial checkpoints
    assert any("/leaderboard/" in n and n.endswith(".parquet") for n in names)       # the leaderboard
    assert any(n.endswith("/tuner.pkl") for n in names)                             # Tune's state (resume)
    assert not [n for n in names if n.endswith("/lease.json")], names               # every lease was released
    # Nothing of the runs is left in the temp dir but SHARED_TEMP. Left before: backbone copies, the shipped backbone
    # and TensorBoard folders.
    left = sorted(p.name for p in tmpdir.iterdir() if p.name != "ray" and not p.name.startswith(SHARED_TEMP))
    assert left == [], left
    # the secret is never printed and never stored, in any form: not in any output, object, best.yaml or log
    outputs = [first.stdout, first.stderr, again.stdout, again.stderr, board.stdout, board.stderr, best.stdout,
               best.stderr, jobs.stdout, jobs.stderr, confirm.stdout, confirm.stderr]
    assert not [leaked(o) for o in outputs if leaked(o)] and not any(KEY in o for o in outputs)
    assert not leaked((tmp_path / "best.yaml").read_text())
    fs_, files = objects(s3_server, bucket)
    assert any("events.out.tfevents" in i.path for i in files)                    # TensorBoard was written too
    for info in files:
        with fs_.open_input_stream(info.path) as f:
            assert not leaked(f.read().decode("latin-1")), info.path
    sessions = [p for p in Path(ray_tmp).rglob("*") if p.is_file()]
    assert any(p.name.startswith("gcs_server") for p in sessions)                 # Ray's own logs were scanned
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != path]   # not the user's own config file
    for p in sessions + written + [p for p in tmpdir.rglob("*") if p.is_file()]:
        assert not leaked(p.read_bytes().decode("latin-1")), p


def test_a_secret_on_the_command_line_does_not_reach_rays_job_table(tmp_path):
    """Ray records a driver's whole command line as its job's entrypoint (the job table: the dashboard, `ray list
    jobs`, the Jobs API). `train --set storage=s3://KEY:SECRET@bucket/...` put the secret there, where anyone with
    the cluster's address reads it. Found by a helper's audit. A process that starts Ray as the CLI does (init_ray),
    its command line holding the secret, then reads the job table."""
    import subprocess
    import sys

    code = ("import json, ray\n"
            "from orchestrator.training.session import init_ray\n"
            "init_ray()\n"
            "print(json.dumps([j.get('Entrypoint', '') for j in ray._private.state.jobs()]))\n"
            "ray.shutdown()\n")
    secret = "s3://AKIAORCHTEST:s3cr3tKey@bucket/runs?endpoint_override=127.0.0.1:1"
    done = subprocess.run([sys.executable, "-c", code, "--set", f"storage={secret}"], capture_output=True, text=True,
                          timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    entrypoints = done.stdout.strip().splitlines()[-1]
    assert "s3cr3tKey" not in entrypoints and "AKIAORCHTEST" not in entrypoints
    assert "storage=s3://bucket/runs" in entrypoints, entrypoints   # the command line, redacted
