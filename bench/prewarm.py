"""Pre-warmed processes: do a trial's Ray Train workers land on pooled processes with a module already imported?

Ray's raylet can import modules into every Python worker process it starts (``preload_python_modules``) and
starts a pool of idle workers for the first driver (``prestart_worker_first_driver``). If a Train worker took such a
pooled process, TensorFlow's import (about 3 s per trial here) could be paid before the trial starts. This bench
measures it without TensorFlow: the preloaded module is a stand-in that records its process id and sleeps 2 s.

1. Plain actors (no runtime_env: the pool's own) and actors with runtime_env env_vars, one after another: was each
   given a pooled process, had that process preloaded the module, how long did creation take?
2. The product's launch path without its warm route: Tune trials (one at a time) each fitting a DataParallelTrainer
   with our TF_CONFIG backend and 1 worker, whose loop reports its own process id: was the Train worker a pooled,
   preloaded process?
3. Every Ray worker process's RSS at the end (the pool's price).
4. The product's route around it (orchestrator/training/warm.py): Train workers whose runtime env runs TensorFlow's
   import as their process starts, and spares with that runtime env asked of the raylet as each run starts: of N+1
   trials one at a time, were the Train workers of trials 2..N+1 spares, and what does an unused spare hold (RSS)?
   This part imports TensorFlow (in the spares and workers only).

    python bench/prewarm.py            # about 3 minutes; TensorFlow only in part 4
Last line: RESULT plain_pooled=K/N envvar_pooled=K/N train_workers_pooled=K/N pool_rss_mb=...
warm_route_train_workers=K/N warm_spare_rss_mb=...
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

N = 3
STAND_IN = "orch_preload_stand_in"
TMP = tempfile.mkdtemp(prefix="rpw")           # short: long Ray temp paths misbehave (ray-2.60.md)
MARKS = os.path.join(TMP, "marks.txt")
with open(os.path.join(TMP, STAND_IN + ".py"), "w") as f:
    f.write(f"import os, time\ntime.sleep(2.0)\nopen({MARKS!r}, 'a').write(f'{{os.getpid()}}\\n')\n")
os.environ["PYTHONPATH"] = TMP + os.pathsep + os.environ.get("PYTHONPATH", "")   # the raylet passes it on
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ray  # noqa: E402

SYSTEM_CONFIG = {"preload_python_modules": [STAND_IN], "num_workers_soft_limit": 8,
                 "idle_worker_killing_time_threshold_ms": 600_000}     # keep the pool, so reuse is possible


def preloaded() -> set[int]:
    return {int(x) for x in open(MARKS).read().split()} if os.path.exists(MARKS) else set()


def _cmdline(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def worker_pids() -> set[int]:
    """Ray's Python worker processes (idle ones run default_worker.py; busy ones are renamed ray::<Class>)."""
    return {int(pid) for pid in os.listdir("/proc") if pid.isdigit() and
            ("default_worker.py" in _cmdline(pid) or _cmdline(pid).startswith("ray::"))}


def rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@ray.remote(num_cpus=0)
class Probe:
    def pid(self):
        return os.getpid()


def actors(label: str, options: dict) -> tuple[int, list]:
    pooled, keep = 0, []
    for i in range(N):
        before, t0 = worker_pids(), time.perf_counter()
        a = Probe.options(**options).remote()
        pid = ray.get(a.pid.remote())
        keep.append(a)
        pooled += pid in before
        print(f"{label} actor {i}: pid {pid} pooled={pid in before} preloaded={pid in preloaded()} "
              f"create_s={time.perf_counter() - t0:.2f}")
    return pooled, keep


def _report_pid(config):
    import ray.train

    open(config["pid_file"], "w").write(str(os.getpid()))   # a Train V2 result keeps no metrics without checkpoints
    ray.train.report({"done": 1})


def _trial(params):
    import ray.train
    from ray import tune

    from orchestrator.training import backend

    before = worker_pids()
    pid_file = os.path.join(TMP, f"train-worker-{params['i']}.pid")
    backend.make(_report_pid, train_loop_config={"pid_file": pid_file}, scaling_config=ray.train.ScalingConfig(
        num_workers=1, resources_per_worker={"CPU": 0.5}), run_config=ray.train.RunConfig(
        name=f"prewarm-{params['i']}", storage_path=params["storage"])).fit()
    pid = int(open(pid_file).read())
    tune.report({"pid": pid, "pooled": pid in before, "preloaded": pid in preloaded()})


def train_workers() -> int:
    from ray import tune

    storage = os.path.join(TMP, "runs")
    grid = tune.Tuner(tune.with_resources(_trial, {"CPU": 0.05}),
                      param_space={"i": tune.grid_search(list(range(N))), "storage": storage},
                      tune_config=tune.TuneConfig(max_concurrent_trials=1),
                      run_config=tune.RunConfig(name="prewarm", storage_path=storage, verbose=0)).fit()
    pooled = 0
    for r in grid:
        m = r.metrics
        pooled += bool(m["pooled"])
        print(f"Train worker of trial {r.config['i']}: pid {m['pid']} pooled={m['pooled']} preloaded={m['preloaded']}")
    return pooled


def _report_marks(config):
    import json

    import ray.train

    from orchestrator.training import warm

    with open(config["out"], "w") as f:
        json.dump({"pid": os.getpid(), "marks": warm.marks()}, f)
    ray.train.report({"done": 1})


def _warm_trial(params):
    """The product's route (orchestrator/training/warm.py): Train workers whose runtime env runs the TensorFlow import
    as their process starts, and spare processes with that runtime env asked of the raylet as each run starts."""
    import json

    import ray.train
    from ray import tune

    from orchestrator import _ray
    from orchestrator.training import backend, warm

    t0, out = time.time(), os.path.join(TMP, f"warm-worker-{params['i']}.json")
    backend.make(_report_marks, train_loop_config={"out": out}, scaling_config=ray.train.ScalingConfig(
        num_workers=1, resources_per_worker={"CPU": 0.5}), run_config=ray.train.RunConfig(
        name=f"warm-{params['i']}", storage_path=params["storage"], worker_runtime_env=warm.worker_runtime_env()),
        controller=_ray.LocalController(), spares=True).fit()
    with open(out) as f:
        seen = json.load(f)
    tune.report({"pid": seen["pid"], "warm": seen["marks"].get("worker_process_start", float("inf")) < t0,
                 "tensorflow": "worker_tensorflow_ready" in seen["marks"]})


def warm_train_workers() -> tuple[int, float]:
    """(trials after the first whose Train worker was a warm spare, the RSS of the spare left unused at the end)."""
    from ray import tune

    from orchestrator import _ray
    from orchestrator.training import warm

    storage = os.path.join(TMP, "runs")
    grid = tune.Tuner(tune.with_resources(_warm_trial, {"CPU": 0.05}),
                      param_space={"i": tune.grid_search(list(range(N + 1))), "storage": storage},
                      tune_config=tune.TuneConfig(max_concurrent_trials=1),
                      run_config=tune.RunConfig(name="warm", storage_path=storage, verbose=0)).fit()
    warm_count = 0
    for r in sorted(grid, key=lambda r: r.config["i"]):
        m = r.metrics
        warm_count += bool(m["warm"]) and r.config["i"] > 0
        print(f"warm route, Train worker of trial {r.config['i']}: pid {m['pid']} warm={m['warm']} "
              f"tensorflow_imported={m['tensorflow']}")
    time.sleep(8)   # the last run's spare finishes its import
    spares = [pid for pid in worker_pids() if _ray.SETUP_HOOK_ENV_VAR.encode() in _environ(pid) and
              warm.HOOK.encode() in _environ(pid) and _cmdline(str(pid)).startswith("ray::IDLE")]
    spare_mb = sum(rss_mb(pid) for pid in spares) / max(1, len(spares))
    print(f"unused warm spares at the end: {len(spares)}, {spare_mb:.0f} MB RSS each")
    return warm_count, spare_mb


def _environ(pid: int) -> bytes:
    try:
        return open(f"/proc/{pid}/environ", "rb").read()
    except OSError:
        return b""


def main() -> None:
    t0 = time.perf_counter()
    ray.init(num_cpus=2, _system_config=SYSTEM_CONFIG, include_dashboard=False, log_to_driver=False)
    while len(preloaded()) < 2 and time.perf_counter() - t0 < 90:
        time.sleep(0.2)
    print(f"pool: {len(preloaded())} processes preloaded the stand-in within {time.perf_counter() - t0:.1f} s")
    plain, keep = actors("plain", {})
    envvar, keep2 = actors("env_vars", {"runtime_env": {"env_vars": {"ORCH_PROBE": "1"}}})
    for a in keep + keep2:
        ray.kill(a)
    in_train = train_workers()
    rss = [(pid in preloaded(), rss_mb(pid)) for pid in worker_pids()]
    pool_mb = sum(mb for pre, mb in rss if pre)
    print(f"Ray worker processes at the end: {len(rss)}, {sum(mb for _, mb in rss):.0f} MB RSS; "
          f"the {sum(pre for pre, _ in rss)} preloaded ones: {pool_mb:.0f} MB")
    warm_count, spare_mb = warm_train_workers()
    ray.shutdown()
    print(f"RESULT plain_pooled={plain}/{N} envvar_pooled={envvar}/{N} train_workers_pooled={in_train}/{N} "
          f"pool_rss_mb={pool_mb:.0f} warm_route_train_workers={warm_count}/{N} warm_spare_rss_mb={spare_mb:.0f}")


if __name__ == "__main__":
    main()
