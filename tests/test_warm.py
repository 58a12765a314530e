"""Warm Train workers (training/warm.py): the setup hook Ray runs in a Train worker's process as it starts."""
import subprocess
import sys

import pytest

from orchestrator import _ray
from orchestrator.training import warm


def test_train_workers_runtime_env_names_an_importable_hook():
    """Ray imports the hook by its dotted name in a new process; a wrong name would end every Train worker there."""
    import importlib

    hook = warm.worker_runtime_env()["env_vars"][_ray.SETUP_HOOK_ENV_VAR]
    module, _, name = hook.rpartition(".")
    assert getattr(importlib.import_module(module), name) is warm.import_tensorflow


def test_the_hook_imports_tensorflow_without_probing_devices_or_keras_s_optional_extras():
    """The hook Ray runs in a Train worker's process as it starts (a fresh interpreter here, so nothing was imported
    yet). A warm process is given its GPU (CUDA_VISIBLE_DEVICES) only when a run takes it: the hook must import
    TensorFlow and Keras, and what the run's Train worker imports next (Ray Train), but leave device discovery to
    the run.

    Keras imports scikit-learn (and much of SciPy with it) and matplotlib's pyplot, for its scikit-learn wrappers
    and its plotting utilities, whenever they are installed: about a CPU-second of every Train worker's start. The
    product uses neither (scikit-learn is here for the report's fANOVA, matplotlib for its plots), so its TensorFlow
    import (``console.import_tensorflow_quietly``, the hook's) hides them from Keras, and leaves them importable
    after. One process for both checks: each costs a TensorFlow import."""
    code = ("from orchestrator.training import warm; warm.import_tensorflow(); import sys; "
            "from tensorflow.python.eager import context; m = warm.marks(); "
            "print('keras' in sys.modules, 'ray.train' in sys.modules, "
            "context.context()._physical_devices is None, m['worker_tensorflow_ready'] >= m['worker_process_start'], "
            "'sklearn' in sys.modules, 'matplotlib' in sys.modules); "
            "import sklearn.ensemble, matplotlib.pyplot; print(sklearn.ensemble.RandomForestRegressor.__name__, "
            "matplotlib.pyplot.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["True"] * 4 + ["False", "False", "RandomForestRegressor", "matplotlib.pyplot"], (
        out.stdout, out.stderr[-2000:])


def test_spares_only_where_trials_leave_cores_idle(tmp_path):
    """A TensorFlow worker keeps about a core busy whatever it requests: 1 one-worker trial at a time on 2 cores leaves
    one idle (spares), 2-worker trials or 4 trials packed on 2 cores leave none; a GPU cluster's nodes do."""
    from factories import embedded

    from orchestrator.config import parse_config
    from orchestrator.sweep.capacity import NodeType, idle_cores

    def idle(workers, concurrent, nodes):
        cfg = parse_config(embedded(str(tmp_path), resources={"workers": workers, "cpus_per_worker": 0.45}))
        return idle_cores(cfg, nodes, concurrent=concurrent)

    laptop = [NodeType("laptop", {"CPU": 2.0}, 1, head=True)]
    gpus = [NodeType("head", {"CPU": 4.0}, 1, head=True), NodeType("gpu", {"CPU": 8.0, "GPU": 1.0}, 4)]
    assert idle(1, 1, laptop) == 1.0
    assert idle(2, 1, laptop) == 0.0
    assert idle(1, 4, laptop) == -2.0
    assert idle(2, 4, gpus) == 28.0
    # on a shared cluster, cores other jobs hold are not idle: spares there would import TensorFlow on their cores
    # (found by a helper's audit)
    cfg = parse_config(embedded(str(tmp_path), resources={"workers": 2, "cpus_per_worker": 0.45}))
    assert idle_cores(cfg, gpus, concurrent=4, held_elsewhere=28.0) == 0.0


@pytest.mark.slow
def test_decode_tasks_a_train_worker_starts_import_no_tensorflow(ray_session):
    """Tasks inherit their caller's runtime env, the setup hook too: a streaming run's decode tasks, started by a Train
    worker, each imported TensorFlow as their process started (a streamed 2-worker run took 298 s instead of about 50).
    A task with the stream's options, started by an actor with the Train workers' runtime env, must not; the same
    task with no options does (what the hook does to a task that is not told otherwise)."""
    import ray

    from orchestrator.data.pipeline import stream_task_options

    def probe():
        from orchestrator.training import warm

        return "worker_process_start" in warm.marks(), "tensorflow" in sys.modules

    @ray.remote(num_cpus=0)
    class Caller:   # stands for a Train worker: the same runtime env
        def run(self, options):
            return ray.get(ray.remote(probe).options(**options).remote())

    caller = Caller.options(runtime_env=warm.worker_runtime_env()).remote()
    assert ray.get(caller.run.remote({"num_cpus": 0})) == (True, True)
    assert ray.get(caller.run.remote(stream_task_options())) == (False, False)
    ray.kill(caller)
