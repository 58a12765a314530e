"""A real two-node Ray cluster on this host (slow): Ray jobs, spread placement, token auth.

Starts its own head and worker node (`ray start`, free ports, its own temp dir, token auth on),
and at the end stops only the processes of that cluster.
"""
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.leaderboard import Leaderboard

from factories import embedded, free_ports

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(cmd, env, timeout=300):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def succeeded(proc):
    """A command that must exit 0; else fail with its whole output's tail as text (an assertion's tuple of long
    strings is cut in the middle by pytest, and CI showed only that a job failed, not why)."""
    if proc.returncode != 0:
        pytest.fail(f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}",
                    pytrace=False)


def start_node(args, env, log):
    """`ray start` with output to a file: its daemons must not inherit a pipe this test closes."""
    with open(log, "a") as f:
        proc = subprocess.run([str(BIN / "ray"), "start", *args], env=env, stdout=f, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0, Path(log).read_text()[-3000:]


@pytest.fixture(scope="module")
def cluster():
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")   # short: Ray's socket paths have a length limit
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600"}
    env.pop("RAY_ADDRESS", None)
    # Two nodes on one host: every per-node agent port must differ (defaults collide), and every port must be
    # distinct, so all are chosen at once.
    ports = iter(free_ports(15))
    gcs, dash = next(ports), next(ports)
    log = f"{temp}.log"

    # Each raylet hands out its range's worker ports unaware of other raylets on the host; Ray's default range
    # (10002-19999) is the one any other Ray here uses. Below the kernel's ephemeral range (32768-60999).
    workers = iter([(20000, 24999), (25000, 29999)])

    def own_ports():
        flags = ("dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export", "runtime-env-agent",
                 "node-manager", "object-manager")
        low, high = next(workers)
        return [*(f"--{flag}-port={next(ports)}" for flag in flags), f"--min-worker-port={low}",
                f"--max-worker-port={high}"]

    start_node([*own_ports(), "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", f"--dashboard-port={dash}",
                "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--ray-client-server-port={next(ports)}",
                "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp}", "--disable-usage-stats"], env, log)
    # Its own temp dir too: nodes sharing one would share (and garbage-collect) runtime_env working dirs.
    start_node([*own_ports(), f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                f"--temp-dir={temp}/n2",
                '--resources={"sim_node": 1}', "--disable-usage-stats"], env, log)
    url = f"http://127.0.0.1:{dash}"
    try:
        yield {"url": url, "env": env, "temp": temp, "gcs": f"127.0.0.1:{gcs}"}
    finally:
        # Stop only this cluster: every one of its processes names its temp dir or its GCS port.
        for signal in ("-TERM", "-KILL"):   # Ray's daemons may outlive SIGTERM
            subprocess.run(["pkill", signal, "-f", temp])
            subprocess.run(["pkill", signal, "-f", f"127.0.0.1:{gcs}"])
            time.sleep(3)
        shutil.rmtree(temp, ignore_errors=True)


def job_dir(tmp_path: Path, name: str, run_fields: dict) -> Path:
    """A working dir to upload: the package, the job entrypoints, and the experiment file."""
    wd = tmp_path / name
    shutil.copytree(ROOT / "orchestrator", wd / "orchestrator", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "jobs", wd / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    (wd / "experiment.yaml").write_text(yaml.safe_dump(run_fields))
    return wd


def experiment(name: str, storage: str, **extra) -> dict:
    return embedded(storage, name=name, train={"batch_size": 128, "head_lr": 3e-3, "backbone_lr": 3e-3}, **extra)


SEARCH = {"space": {"train.freeze_depth": {"choice": [0, "all"]}}, "searcher": "grid", "scheduler": {"type": "none"},
          "num_samples": 1}


def test_sweep_submitted_with_orchestrator_submit_and_ray_job_submit(cluster, tmp_path):
    storage = str(tmp_path / "storage")
    wd = job_dir(tmp_path, "wd1", experiment("via-orchestrator", storage, search=SEARCH))
    sub = run([str(BIN / "orchestrator"), "submit", str(wd / "experiment.yaml"), "--address", cluster["url"],
               "--working-dir", str(wd), "--follow"], cluster["env"], timeout=900)
    succeeded(sub)
    assert "submitted job" in sub.stdout and "SUCCEEDED" in sub.stdout

    # one trial is enough to show the plain `ray job submit` path (the grid's two trials are shown above)
    one = {**SEARCH, "space": {"train.freeze_depth": {"choice": ["all"]}}}
    wd2 = job_dir(tmp_path, "wd2", experiment("via-ray-job", storage, search=one))
    ray_sub = run([str(BIN / "ray"), "job", "submit", "--address", cluster["url"], "--working-dir", str(wd2),
                   "--entrypoint-num-cpus", "0.1", "--", "python", "jobs/tune.py", "experiment.yaml"],
                  cluster["env"], timeout=900)
    assert ray_sub.returncode == 0 and "succeeded" in ray_sub.stdout.lower(), ray_sub.stdout[-3000:]

    board = Leaderboard(storage)
    for name, depths in (("via-orchestrator", [0, 5]), ("via-ray-job", [5])):
        rows = board.table(experiment=name).to_pylist()
        assert sorted(r["freeze_depth"] for r in rows) == depths and all(r["status"] == "completed" for r in rows)
    status = run([str(BIN / "orchestrator"), "jobs", "--address", cluster["url"]], cluster["env"])
    assert status.returncode == 0 and status.stdout.count("SUCCEEDED") == 2


def test_missing_token_is_a_one_line_error(cluster, tmp_path):
    env = {k: v for k, v in cluster["env"].items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env["HOME"] = str(tmp_path)   # no ~/.ray/auth_token either
    out = run([str(BIN / "orchestrator"), "jobs", "--address", cluster["url"]], env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error:") and "RAY_AUTH_MODE=token" in out.stderr


@pytest.mark.parametrize("token,fix", [(None, "RAY_AUTH_MODE=token"), ("wrong", "rejected the auth token"),
                                       ("", "no Ray auth token")])
def test_a_refused_token_on_the_gcs_address_is_one_line_at_once(cluster, tmp_path, token, fix):
    """train/tune --address HEAD:6379 on a token cluster without its token: ray.init printed 20 InvalidAuthToken
    warnings over 20 s, then 'Failed to connect' with a traceback file, exit 1."""
    env = {k: v for k, v in cluster["env"].items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env["HOME"] = str(tmp_path)   # no ~/.ray/auth_token either
    if token is not None:
        env["RAY_AUTH_MODE"] = "token"   # with no token ("") found anywhere, or another cluster's
        env.update({"RAY_AUTH_TOKEN": token * 8} if token else {})
    out = subprocess.run([str(BIN / "orchestrator"), "train", str(ROOT / "examples" / "digits.yaml"), "--address",
                          cluster["gcs"]], env=env, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: "), out.stderr[-3000:]
    assert fix in out.stderr and (cluster["gcs"] in out.stderr or not token), out.stderr
    assert not (tmp_path / "runs").exists()


def test_the_python_api_on_a_refused_token_is_one_error_at_once(cluster, tmp_path):
    """orchestrator.train(cfg, address=HEAD:6379) skipped the CLI's --address checks: 20 InvalidAuthToken warnings
    over 20 s, then ConnectionError (found reviewing this stop's change)."""
    script = ("import sys, orchestrator\n"
              "try:\n"
              "    cfg = orchestrator.load_config(sys.argv[1]).with_values({'backbone.weights': 'none'})\n"
              "    orchestrator.train(cfg, address=sys.argv[2])\n"
              "except orchestrator.ConfigError as e:\n"
              "    print('refused:', e)\n")
    env = {k: v for k, v in cluster["env"].items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env.update(HOME=str(tmp_path), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="wrong" * 8)
    out = subprocess.run([sys.executable, "-c", script, str(ROOT / "examples" / "digits.yaml"), cluster["gcs"]],
                         env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert "refused: Ray cluster" in out.stdout and "rejected the auth token" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "InvalidAuthToken" not in out.stderr, out.stderr[-2000:]


def test_a_driver_attached_to_a_cluster_is_refused_another_ray_and_accepted_its_own(cluster, tmp_path):
    """A process attached to a cluster (a notebook after train(cfg, address=HEAD)) and then given address='local'
    trained on the cluster without a word; its own cluster's address is accepted (this session's second review)."""
    script = ("import sys, ray\n"
              "from orchestrator.errors import ConfigError\n"
              "from orchestrator.training.session import init_ray\n"
              "ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n"
              "for address in ('local', '127.0.0.1:1', sys.argv[1], 'auto'):\n"
              "    try:\n"
              "        init_ray(address)\n"
              "        print(address, 'joined')\n"
              "    except ConfigError as e:\n"
              "        print(address, 'refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", script, cluster["gcs"]], env=cluster["env"], capture_output=True,
                         text=True, timeout=300, stdin=subprocess.DEVNULL, cwd=tmp_path)
    lines = [ln for ln in out.stdout.splitlines() if " joined" in ln or " refused:" in ln]
    assert [ln.split(" ", 2)[1] for ln in lines] == ["refused:", "refused:", "joined", "joined"], \
        out.stdout + out.stderr[-3000:]
    assert "Ray already runs in this process" in lines[0], lines


def test_a_train_job_with_relative_paths_spread_over_two_nodes(cluster, tmp_path):
    """A `train` job whose two workers must be on two nodes (STRICT_SPREAD): one worker per node, the same steps on
    each, and above chance. The config's relative data and backbone paths resolve against its folder in the job's
    working dir; the backbone file reaches the workers through the object store; a relative storage is refused.
    (One job for both: a job's start and its run cost about a minute here.)"""
    import pyarrow.parquet as pq

    from orchestrator.data import builtin
    from orchestrator.model.backbones import digits_cnn

    storage = str(tmp_path / "storage")
    run_fields = experiment("relative", storage, backbone={"kind": "file", "path": "models/bb.keras"},
                            resources={"workers": 2, "cpus_per_worker": 1, "placement_strategy": "STRICT_SPREAD"})
    run_fields["train"]["epochs"] = 2
    run_fields["data"] = {"train": "data/train.parquet", "validation": 0.25}
    wd = job_dir(tmp_path, "wd4", run_fields)
    (wd / "data").mkdir()
    pq.write_table(builtin.image_table(builtin.composites((5, 6, 7, 8, 9), "train", n=4000)),
                   wd / "data/train.parquet")
    (wd / "models").mkdir()
    digits_cnn((12, 12, 1)).save(wd / "models" / "bb.keras")
    sub = run([str(BIN / "orchestrator"), "submit", str(wd / "experiment.yaml"), "--address", cluster["url"],
               "--working-dir", str(wd), "--entrypoint", "train"], cluster["env"], timeout=900)
    succeeded(sub)
    (summary,) = Path(storage, "trials").glob("*/summary.json")
    s = json.loads(summary.read_text())
    assert s["status"] == "completed" and s["data"]["n_train"] == 3000 and s["world_size"] == 2
    assert s["config"]["backbone"]["path"].endswith("models/bb.keras")
    assert s["rank_steps"][0] == s["rank_steps"][1] > 0
    assert s["tasks"]["left"]["accuracy"] > 0.4 and s["tasks"]["right"]["accuracy"] > 0.4   # chance: 0.2
    submission = next(w for w in sub.stdout.split() if w.startswith("raysubmit_"))
    jobs = run([str(BIN / "ray"), "list", "jobs", "--address", cluster["url"], "--detail", "--format", "json"],
               cluster["env"])
    job_id = next(j["job_id"] for j in json.loads(jobs.stdout) if j.get("submission_id") == submission)
    actors = run([str(BIN / "ray"), "list", "actors", "--address", cluster["url"], "--detail", "--format", "json",
                  "--filter", "class_name=RayTrainWorker", "--filter", f"job_id={job_id}", "--limit", "1000"],
                 cluster["env"])
    assert actors.returncode == 0, actors.stderr[-2000:]
    workers = json.loads(actors.stdout)
    assert len(workers) == 2 and len({a["node_id"] for a in workers}) == 2, workers   # one worker per node
    # and from another working directory, without Ray jobs: validate resolves the same paths
    other = tmp_path / "elsewhere"
    other.mkdir()
    val = subprocess.run([str(BIN / "orchestrator"), "validate", str(wd / "experiment.yaml")], cwd=other,
                         capture_output=True, text=True, timeout=300)
    assert val.returncode == 0 and "3000 training + 1000 validation" in val.stdout, val.stderr
    # a relative storage would be lost with the job's working directory: refused before submitting
    (wd / "experiment.yaml").write_text(yaml.safe_dump({**run_fields, "storage": "runs"}))
    bad = run([str(BIN / "orchestrator"), "submit", str(wd / "experiment.yaml"), "--address", cluster["url"],
               "--working-dir", str(wd), "--entrypoint", "train"], cluster["env"], timeout=300)
    assert bad.returncode == 2 and "relative local path" in bad.stderr and "Traceback" not in bad.stderr
    plain = run([str(BIN / "ray"), "job", "submit", "--address", cluster["url"], "--working-dir", str(wd),
                 "--entrypoint-num-cpus", "0.1", "--", "python", "jobs/train.py", "experiment.yaml"],
                cluster["env"], timeout=600)
    assert plain.returncode != 0 and "relative local path" in plain.stdout + plain.stderr
