"""Ray's local fake autoscaler, started the way ``ray.cluster_utils.AutoscalingCluster`` starts it, but safe
to use here.

``AutoscalingCluster`` itself cannot run from the Ray 2.60 wheel: its constructor reads
``autoscaler/_private/fake_multi_node/example.yaml``, which the wheel does not ship, and its ``start()``
and ``shutdown()`` run ``ray stop --force`` (every Ray process on the machine). This class writes the
same config (that example's content inline), starts the head with the same ``--autoscaling-config``
and environment (``RAY_FAKE_CLUSTER=1``; the v1 autoscaler, which needs no more files), on its own port
and temp dir, and stops only the processes it started (tagged through their environment).
"""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

BIN = Path(sys.executable).parent
BASE = {   # ray/autoscaler/_private/fake_multi_node/example.yaml (upstream)
    "cluster_name": "fake_multinode", "max_workers": 8,
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                 "disable_launch_config_check": True},
    "available_node_types": {}, "head_node_type": "ray.head.default", "auth": {}, "upscaling_speed": 1.0,
    "idle_timeout_minutes": 0.1, "docker": {}, "initialization_commands": [], "setup_commands": [],
    "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
    "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
    "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
}


class FakeAutoscalingCluster:
    def __init__(self, head_resources: dict, worker_node_types: dict, *, port: int, temp_dir: str, **config):
        self.head_resources, self.port, self.temp = dict(head_resources), port, temp_dir
        self.address = f"127.0.0.1:{port}"
        self.tag = uuid.uuid4().hex
        cfg = copy.deepcopy(BASE)
        cfg["available_node_types"] = {**copy.deepcopy(worker_node_types), "ray.head.default": {
            "resources": dict(head_resources), "node_config": {}, "max_workers": 0}}
        cfg["provider"]["gcs_address"] = self.address    # fake worker nodes join this GCS, not :6379
        cfg.update(config)
        self.config_path = os.path.join(temp_dir, "autoscaling.json")
        with open(self.config_path, "w") as f:
            json.dump(cfg, f)

    def env(self) -> dict:
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
               "RAY_FAKE_CLUSTER": "1", "ORCH_TEST_CLUSTER_TAG": self.tag, "RAY_AUTH_MODE": "token",
               "RAY_AUTH_TOKEN": self.tag}
        env.pop("RAY_ADDRESS", None)
        return env

    def start(self) -> None:
        hr = dict(self.head_resources)
        cmd = [str(BIN / "ray"), "start", "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
               f"--autoscaling-config={self.config_path}", f"--temp-dir={self.temp}", "--include-dashboard=false",
               "--disable-usage-stats", f"--num-cpus={hr.pop('CPU', 0)}", f"--num-gpus={hr.pop('GPU', 0)}"]
        if hr:
            cmd.append(f"--resources={json.dumps(hr)}")
        with open(os.path.join(self.temp, "start.log"), "w") as log:
            subprocess.run(cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT, check=True, timeout=300)

    def logs(self, chars: int = 3000) -> str:
        """The tails of the autoscaler's and the nodes' logs, for a failure message."""
        out = []
        for pattern in ("monitor.log", "monitor.err", "raylet*.err", "raylet*.out", "gcs_server.err"):
            for path in sorted(Path(self.temp).glob(f"session_latest/logs/{pattern}")):
                text = path.read_text(errors="replace")
                if text.strip():
                    out.append(f"--- {path.name}\n{text[-chars:]}")
        return "\n".join(out) or f"(no logs under {self.temp})"

    def _pids(self) -> list[int]:
        needle = f"ORCH_TEST_CLUSTER_TAG={self.tag}".encode()
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    with open(f"/proc/{entry}/environ", "rb") as f:
                        if needle in f.read().split(b"\0"):
                            pids.append(int(entry))
                except OSError:
                    pass
        return pids

    def shutdown(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self._pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 10
            while self._pids() and time.time() < deadline:
                time.sleep(0.5)
