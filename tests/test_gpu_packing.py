"""Fractional GPUs: trials packed on one (logical) GPU. Ray schedules logical GPUs on this CPU-only
machine (ray.init(num_gpus=1)); TensorFlow then runs on the CPU. That is the only stand-in here."""
import pytest

from orchestrator.config import parse_config
from orchestrator.leaderboard import Leaderboard
from orchestrator.sweep.capacity import NodeType, concurrency
from orchestrator.sweep.runner import TRIAL_DRIVER_CPU
from orchestrator.sweep.tuner import tune


def packed(storage, name, gpus, depths):
    return parse_config({
        "name": name, "storage": storage,
        "data": {"train": "builtin:multidigits/train", "validation": "builtin:multidigits/val"},
        "tasks": {"left": {"type": "classification"}, "right": {"type": "classification"}},
        "backbone": {"kind": "builtin", "weights": "none"},
        "heads": {"hidden_units": 8},
        "train": {"epochs": 1, "batch_size": 256},
        "resources": {"workers": 1, "use_gpu": True, "gpus_per_worker": gpus, "cpus_per_worker": 0.2},
        "search": {"space": {"train.freeze_depth": {"choice": depths}}, "searcher": "grid",
                   "scheduler": {"type": "none"}},
    })


def max_concurrent(cfg, resources, nodes=1):
    return concurrency(cfg, [NodeType("n", resources, nodes)], driver_cpu=TRIAL_DRIVER_CPU)


def test_max_concurrent_follows_gpus_and_cpus(tmp_path):
    assert max_concurrent(packed("s", "a", 0.25, [0]), {"CPU": 2, "GPU": 1}) == 4
    assert max_concurrent(packed("s", "a", 1.0, [0]), {"CPU": 2, "GPU": 1}) == 1
    assert max_concurrent(packed("s", "a", 0.5, [0]), {"CPU": 4, "GPU": 1}, nodes=4) == 8
    cpu_only = packed("s", "a", 0.25, [0]).with_values({"resources.use_gpu": False, "resources.gpus_per_worker": 0})
    assert max_concurrent(cpu_only, {"CPU": 2}) == 8   # 2 / (0.2 worker + 0.05 trial driver)


@pytest.mark.slow
def test_quarter_gpu_trials_run_together_and_whole_gpu_trials_in_turn(ray_session, tmp_path):
    assert ray_session.cluster_resources().get("GPU") == 1
    storage = str(tmp_path)
    tune(packed(storage, "quarter", 0.25, [0, 1, 2, 3]))
    tune(packed(storage, "whole", 1.0, [0, 1]))
    board = Leaderboard(storage)
    quarter = board.table(experiment="quarter").to_pylist()
    assert len(quarter) == 4 and all(r["status"] == "completed" for r in quarter)
    assert max(r["started_at"] for r in quarter) < min(r["created_at"] for r in quarter)   # all 4 overlap
    whole = sorted(board.table(experiment="whole").to_pylist(), key=lambda r: r["started_at"])
    assert len(whole) == 2 and all(r["status"] == "completed" for r in whole)
    assert whole[1]["started_at"] >= whole[0]["created_at"]                                # one after another


@pytest.mark.slow
def test_the_waiting_line_counts_this_jobs_pending_placement_groups_only(ray_session):
    """A trial slow to start said "N placement group(s) pending" counting every job's on a shared cluster. Another
    driver (its own job) leaves a group pending that can never fit; this job's line names none until one of its
    own is pending. Found by a helper's audit."""
    import subprocess
    import sys

    from ray.util.placement_group import placement_group, remove_placement_group

    from orchestrator.training.progress import waiting_line

    other = subprocess.Popen([sys.executable, "-c", (
        "import ray, sys, time\n"
        f"ray.init(address={ray_session.get_runtime_context().gcs_address!r}, logging_level='ERROR')\n"
        "pg = ray.util.placement_group([{'CPU': 64}])\n"
        "print('pending', flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "pending"
        assert waiting_line("[t]", {"CPU": 1.0}, workers=1) is None
        mine = placement_group([{"CPU": 64}])
        try:
            line = waiting_line("[t]", {"CPU": 1.0}, workers=1)
            assert line is not None and "1 placement group(s) pending" in line, line
        finally:
            remove_placement_group(mine)
    finally:
        other.kill()


@pytest.mark.slow
def test_warm_spares_count_only_other_jobs_cpus_as_held_elsewhere(ray_session):
    """Spares start only on idle cores; cores another job holds are not idle, this job's own are (counted apart, as
    its trials). Counted from the cluster's totals less what was available, this job's own groups (a Tune run still
    releasing, a killed earlier driver's) counted as other jobs'. Found by a helper's review."""
    import subprocess
    import sys

    from ray.util.placement_group import placement_group, remove_placement_group

    from orchestrator.sweep.capacity import cpus_held_elsewhere

    mine = placement_group([{"CPU": 0.5}])
    mine.wait(30)
    other = subprocess.Popen([sys.executable, "-c", (
        "import ray, time\n"
        f"ray.init(address={ray_session.get_runtime_context().gcs_address!r}, logging_level='ERROR')\n"
        "pg = ray.util.placement_group([{'CPU': 1.0}])\n"
        "pg.wait(30)\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        assert cpus_held_elsewhere() == pytest.approx(1.0)
    finally:
        other.kill()
        remove_placement_group(mine)
