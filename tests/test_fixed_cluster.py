"""A run that can never fit a cluster without an autoscaler (or beyond its maximum) fails at once, naming the
numbers, the job's own reservation included, and the fix; it never waits forever."""
import os

import pytest

from factories import embedded, run_cli, write_yaml


def config(tmp_path, *, workers: int, cpus: float, **sections):
    from orchestrator.config.schema import parse_config

    return parse_config(embedded(tmp_path / "runs", resources={"workers": workers, "cpus_per_worker": cpus},
                                 **sections))


def test_a_run_that_never_fits_a_fixed_cluster_names_the_numbers_and_the_fix(tmp_path):
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.capacity import NodeType, check_feasible

    two_cpus = [NodeType("127.0.0.1", {"CPU": 2.0}, 1, head=True)]
    with pytest.raises(ConfigError) as e:      # the job's 0.1-CPU entrypoint leaves 1.9
        check_feasible(config(tmp_path, workers=2, cpus=1.0), two_cpus, reserved_cpu=0.1, autoscaling=False)
    msg = str(e.value)
    assert "2 workers of {CPU: 1}" in msg and "this job itself holds 0.1 CPU" in msg and "holds 1" in msg, msg
    assert "no autoscaler" in msg and "resources.cpus_per_worker: 0.95" in msg, msg
    with pytest.raises(ConfigError, match=r"cpus_per_worker: 0\.66"):
        check_feasible(config(tmp_path, workers=3, cpus=1.0), two_cpus, reserved_cpu=0.0, autoscaling=False)
    check_feasible(config(tmp_path, workers=2, cpus=0.95), two_cpus, reserved_cpu=0.1, autoscaling=False)


def test_with_an_autoscaler_its_maximum_counts(tmp_path):
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.capacity import NodeType, check_feasible

    grows = [NodeType("head", {"CPU": 2.0}, 1, head=True), NodeType("cpu", {"CPU": 2.0}, 2)]
    check_feasible(config(tmp_path, workers=5, cpus=1.0), grows, reserved_cpu=0.15, autoscaling=True)
    with pytest.raises(ConfigError, match="autoscaler's maximum"):
        check_feasible(config(tmp_path, workers=6, cpus=1.0), grows, reserved_cpu=0.15, autoscaling=True)


def test_worker_types_share_the_autoscalers_max_workers_without_one_using_up_the_others(tmp_path):
    """With a CPU worker type (max 4) listed before a GPU type (max 4) and max_workers 4, the CPU type took the whole
    budget and the GPU type got none: a 1-GPU sweep was refused ("no node can ever have that"), though Ray can launch
    4 GPU nodes. Each type counts up to the shared budget, and a trial's nodes are chosen within it (a helper's
    audit)."""
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.capacity import check_feasible, concurrency, worker_types

    info = {"max_workers": 4, "head_node_type": "head", "node_types": {
        "head": {"max_workers": 0, "resources": {"CPU": 2}},
        "cpu_worker": {"max_workers": 4, "resources": {"CPU": 16}},
        "gpu_worker": {"max_workers": 4, "resources": {"CPU": 8, "GPU": 1}}}}
    nodes = worker_types(info, {"CPU": 2.0})
    gpu = config(tmp_path, workers=4, cpus=4.0).with_values({"resources.use_gpu": True, "resources.gpus_per_worker": 1.0})
    check_feasible(gpu, nodes, reserved_cpu=0.1, autoscaling=True)   # 4 GPU nodes
    with pytest.raises(ConfigError, match="autoscaler's maximum holds 4"):
        check_feasible(gpu.with_values({"resources.workers": 5}), nodes, reserved_cpu=0.1, autoscaling=True)
    # CPU trials: the budget goes to the nodes that hold the most (4 x 16 CPUs, not 4 + 4 nodes), plus the head
    cpu = config(tmp_path, workers=2, cpus=8.0)
    assert concurrency(cpu, nodes, driver_cpu=0.05) == 4
    # idle cores count the same nodes (a review: 16 phantom cores started warm spares); messages say the budget
    from orchestrator.sweep.capacity import idle_cores

    assert idle_cores(cpu, nodes, concurrent=4) == 4 * 16 + 2 - 4 * 2
    with pytest.raises(ConfigError, match=r"\(max_workers 4 in all\)"):
        check_feasible(gpu.with_values({"resources.workers": 5}), nodes, reserved_cpu=0.1, autoscaling=True)


@pytest.mark.slow
@pytest.mark.parametrize("command, workers", [("train", 2), ("tune", 3)])
def test_train_and_tune_jobs_that_never_fit_fail_at_once(ray_session, tmp_path, capsys, command, workers):
    """As a job `orchestrator submit` started (its command says its entrypoint holds 0.1 CPU) on the tests' 2-CPU
    cluster, which has no autoscaler."""
    search = {"search": {"num_samples": 1, "space": {"train.head_lr": {"choice": [1e-3]}}}} if command == "tune" else {}
    # batch 96: a multiple of 2 and 3 workers (a batch the workers cannot share is refused before this check)
    cfg = embedded(tmp_path / "runs", resources={"workers": workers, "cpus_per_worker": 1.0},
                   train={"batch_size": 96}, backbone={"kind": "builtin", "weights": "pretrained"}, **search)
    code, out, err = run_cli(capsys, command, write_yaml(tmp_path / "e.yaml", cfg), "--in-ray-job",
                             "--entrypoint-cpus", "0.1")
    assert code == 2 and "this job itself holds" in err and "resources.cpus_per_worker: 0." in err, out + err
    assert "\n" not in err and "waits for resources" not in out
    # refused before it cost anything: the built-in backbone's pretraining, a record of a run that never started
    # (both were done first: the check ran once Ray was up, after them)
    from orchestrator import layout

    written = sorted(str(p.relative_to(tmp_path / "runs")) for p in (tmp_path / "runs").rglob("*") if p.is_file())
    assert not os.path.exists(layout.builtin_backbone(str(tmp_path / "runs"))), written
    assert not [f for f in written if f.endswith("config.json")], written
