"""`orchestrator submit` seconds after `ray start` (slow): the job gets its working dir and succeeds.

Starts its own head (free ports, its own short temp dir, token auth on) and stops only that head's processes, by PID.
"""
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from factories import free_ports, wait_until

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def pids_of(temp: str) -> list[int]:
    """Processes whose command line names this head's temp dir (every Ray daemon of it does)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if temp.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def fresh_head():
    temp = tempfile.mkdtemp(prefix="rf", dir="/tmp")   # short: Ray's socket paths have a length limit
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    gcs, dash, client, agent, agent_grpc, metrics, runtime_env, node_manager, object_manager = free_ports(9)
    args = ["--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", f"--dashboard-port={dash}",
            "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
            f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}", "--num-cpus=1",
            # worker ports of its own: a raylet hands out its range unaware of another Ray on this host (the test
            # session's, on the default 10002-19999; test_cluster's nodes use 20000-29999)
            "--min-worker-port=30000", "--max-worker-port=32700",
            f"--temp-dir={temp}", "--disable-usage-stats"]
    try:
        with open(f"{temp}.log", "w") as log:
            started = subprocess.run([str(BIN / "ray"), "start", *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, timeout=300)
        assert started.returncode == 0, Path(f"{temp}.log").read_text()[-3000:]
        yield f"http://127.0.0.1:{dash}", env
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids_of(temp):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:
                wait_until(lambda: not pids_of(temp), timeout_s=15, what="the test's head stops")
                break
            except AssertionError:
                continue
        shutil.rmtree(temp, ignore_errors=True)


def test_submit_right_after_ray_start_succeeds(fresh_head, tmp_path, monkeypatch):
    from orchestrator.cli.jobs import submit_job

    from ray._private.authentication_test_utils import reset_auth_token_state

    url, env = fresh_head
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(key, env[key])
    # Ray caches the auth mode and token per process: an earlier test here may have loaded another cluster's (a
    # user's process talks to one cluster). Read them again now and after the test, as Ray's own tests do.
    reset_auth_token_state()
    try:
        wd = tmp_path / "wd"
        (wd / "jobs").mkdir(parents=True)
        (wd / "jobs" / "hello.py").write_text("import sys, pathlib\nprint('hello from', pathlib.Path.cwd().name, "
                                              "[ln for ln in open(sys.argv[1]) if ln.startswith('storage:')][0].strip())\n")
        import yaml

        from factories import experiment

        (wd / "experiment.yaml").write_text(yaml.safe_dump({**experiment(tmp_path, "builtin:multidigits/train"),
                                                           "storage": str(tmp_path / "storage")}))
        lines = []
        code = submit_job(str(wd / "experiment.yaml"), url, entrypoint_script="jobs/hello.py", working_dir=str(wd),
                          follow=True, out=lines.append)
        assert code == 0, lines[-20:]
        assert any("hello from" in line and "storage:" in line for line in lines), lines[-20:]
    finally:
        monkeypatch.undo()
        reset_auth_token_state()
