"""An autoscaling cluster (Ray's local fake autoscaler, slow): a GPU sweep sized by the cluster's maximum
makes the autoscaler add nodes and runs trials side by side; a request no node can ever hold is refused
before any trial starts. GPUs are logical here (TensorFlow runs on the CPU)."""
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from orchestrator.leaderboard import Leaderboard

from autoscaling_cluster import FakeAutoscalingCluster

from factories import free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def autoscaling():
    temp = tempfile.mkdtemp(prefix="ra", dir="/tmp")   # short: Ray's socket paths have a length limit
    cluster = FakeAutoscalingCluster(
        {"CPU": 1}, {"gpu": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0,
                             "max_workers": 2}},
        port=free_port(), temp_dir=temp, idle_timeout_minutes=0.5)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.shutdown()


def tune(cluster, path, cwd, *, timeout):
    """``orchestrator tune`` on the cluster. A sweep that outlives ``timeout`` fails the test with its own output and
    the autoscaler's logs (well before conftest's watchdog, which would end the run with stacks only)."""
    cmd = [str(BIN / "orchestrator"), "tune", str(path), "--address", cluster.address]
    try:
        return subprocess.run(cmd, env=cluster.env(), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        def text(b):   # what was captured before the timeout: bytes, whatever text=True says
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        pytest.fail(f"tune still running after {timeout} s\n--- stdout\n{text(e.stdout)[-4000:]}\n--- stderr\n"
                    f"{text(e.stderr)[-3000:]}\n{cluster.logs()}", pytrace=False)


def gpu_sweep(storage, name, *, gpus, cpus=0.5):
    return {
        "name": name, "storage": str(storage),
        "data": {"train": "builtin:multidigits/train", "validation": "builtin:multidigits/val"},
        "tasks": {"left": {"type": "classification"}, "right": {"type": "classification"}},
        "backbone": {"kind": "builtin", "weights": "none"}, "heads": {"hidden_units": 16},
        "train": {"epochs": 2, "batch_size": 128, "head_lr": 3e-3},
        "resources": {"workers": 1, "use_gpu": True, "gpus_per_worker": gpus, "cpus_per_worker": cpus},
        "search": {"space": {"train.backbone_lr": {"loguniform": [3e-4, 3e-3]}}, "num_samples": 4,
                   "scheduler": {"type": "none"}, "searcher": "random"},
    }


def test_a_gpu_sweep_scales_the_cluster_up(autoscaling, tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(gpu_sweep(tmp_path / "runs", "autoscale", gpus=1)))
    proc = tune(autoscaling, path, tmp_path, timeout=480)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + autoscaling.logs()
    # concurrency from the cluster's maximum size (2 GPU nodes), not from what was up at the start (0 GPUs)
    assert "autoscaling cluster: up to 2 trials at once" in proc.stdout, proc.stdout[-2000:]
    assert "up to 2 at once" in proc.stdout
    rows = Leaderboard(str(tmp_path / "runs")).table(experiment="autoscale").to_pylist()
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows), rows
    spans = sorted((r["started_at"], r["created_at"]) for r in rows)
    overlapping = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlapping >= 2, spans                                      # trials ran side by side
    print(f"trials at once (max): {overlapping}")


def test_a_request_no_node_can_hold_is_refused_before_any_trial(autoscaling, tmp_path):
    path = tmp_path / "big.yaml"
    # a GPU and 2 CPUs per worker: the GPU nodes have 1 CPU, the head no GPU (a worker takes one GPU at most:
    # gpus_per_worker > 1 is a config error)
    path.write_text(yaml.safe_dump(gpu_sweep(tmp_path / "runs", "too-big", gpus=1, cpus=2)))
    proc = tune(autoscaling, path, tmp_path, timeout=240)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "CPU: 2" in err[0] and "no node can ever have that" in err[0], err
    assert "gpu x2 {CPU: 1, GPU: 1}" in err[0], err
    assert not (tmp_path / "runs" / "trials").exists()                 # nothing ran
