"""What tests make: data sets, experiment configs, leaderboard rows, free ports, and one CLI runner."""
from __future__ import annotations

import os
import socket
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from orchestrator.data import builtin


def small_table(n: int = 200, *, seed: int = 0, part: str = "train") -> pa.Table:
    """MultiDigits canvases (digits 5-9) as a Parquet-ready table: image, left, right, sum."""
    return builtin.image_table(builtin.composites((5, 6, 7, 8, 9), part, n=n, seed=seed))


def write_parquet(path, table: pa.Table) -> str:
    pq.write_table(table, path)
    return str(path)


EMBEDDED_DATA = {"train": "builtin:multidigits/train", "validation": "builtin:multidigits/val"}


def merged(base: dict, sections: dict) -> dict:
    """``base`` with top-level ``sections`` replacing its values, or extending them where both are mappings."""
    cfg = dict(base)
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return cfg


def experiment(tmp_path, data_uri: str, **sections) -> dict:
    """A small experiment dict on ``data_uri`` (a quarter held out), three tasks, under ``tmp_path/runs``."""
    return merged({
        "name": "t",
        "data": {"train": data_uri, "validation": 0.25},
        "tasks": {"left": {"type": "classification"}, "right": {"type": "classification"},
                  "sum": {"type": "regression", "metric": "r2"}},
        "backbone": {"kind": "builtin", "weights": "none"},
        "heads": {"hidden_units": 16},
        "train": {"epochs": 1, "batch_size": 32, "seed": 0},
        "resources": {"workers": 1},
        "storage": str(tmp_path / "runs"),
    }, sections)


def embedded(storage, **sections) -> dict:
    """An experiment dict on the embedded default (its own validation split), the two digit tasks, small heads:
    what end-to-end tests train."""
    return merged({
        "name": "t", "storage": str(storage), "data": dict(EMBEDDED_DATA),
        "tasks": {"left": {"type": "classification"}, "right": {"type": "classification"}},
        "backbone": {"kind": "builtin", "weights": "none"},
        "heads": {"hidden_units": 16},
        "train": {"epochs": 1, "batch_size": 64, "seed": 0},
        "resources": {"workers": 1, "cpus_per_worker": 0.9},
    }, sections)


def seeded_storage(storage, backbone_file: str) -> str:
    """``storage`` with the built-in backbone's pretrained weights (the ``pretrained_backbone`` fixture's file) in its
    pretrain cache: a run there loads them instead of pretraining for about 25 s."""
    import shutil

    from orchestrator import layout

    target = layout.builtin_backbone(str(storage))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(backbone_file, target)
    return str(storage)


def write_yaml(path, cfg: dict) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: every socket stays bound until all are chosen (``free_port()`` called twice may
    return one port twice, as the kernel can hand a just-closed port out again)."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def wait_until(condition, *, timeout_s: float, what: str, poll_s: float = 0.1):
    """Poll ``condition()`` until it returns something truthy (returned); AssertionError naming ``what`` after
    ``timeout_s``. Instead of fixed sleeps: as fast as the machine allows, as patient as it needs."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout_s} s")
        time.sleep(poll_s)


def group_maker(*, num_cpus: float):
    """An actor class whose ``make`` creates a 0.5-CPU placement group from inside the actor, as a Train
    controller makes its worker group's (defined here, not at module level, so Ray ships it by value)."""
    import ray
    from ray.util.placement_group import placement_group

    @ray.remote(num_cpus=num_cpus)
    class GroupMaker:
        def make(self):
            pg = placement_group([{"CPU": 0.5}])
            ray.get(pg.ready())
            return pg.id.hex()

    return GroupMaker


def dead_creator_group(group_id: str) -> bool:
    """Is ``group_id`` among the placement groups whose creating actor Ray reports dead?"""
    from orchestrator import _ray

    return any(g["id"] == group_id for g in _ray.placement_groups_with_dead_creators())


class Cli(NamedTuple):
    code: int
    out: str
    err: str


def run_cli(capsys, *argv) -> Cli:
    """The CLI in this process, as a user runs it: exit code (0 when it returned), stdout, stderr (stripped)."""
    from orchestrator.cli import main

    code = 0
    try:
        main(list(argv))
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return Cli(code, captured.out, captured.err.strip())


def read_events(run_dir):
    """TensorBoard's own reader over the event files in ``run_dir`` (every scalar and tensor kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalar_steps(run_dir) -> set:
    """(tag, step) of every scalar in ``run_dir``'s event files."""
    acc = read_events(run_dir)
    return {(tag, e.step) for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}


def row(cfg, history: list[dict], *, trial_id: str = "t", sweep_id: str = "s", searched: dict | None = None,
        n_blocks: int = 5, kind: str = "trial", error=None, fingerprint=None, wall_time_s=None, checkpoint=None,
        versions=None, baselines=None, extra=None) -> dict:
    """A leaderboard row as the sweep's callback builds it (``rows.trial_row``)."""
    from orchestrator.leaderboard.rows import RowContext, TrialFacts, trial_row

    context = RowContext(sweep_id, n_blocks, kind=kind, fingerprint=fingerprint, versions=versions,
                         baselines=baselines)
    facts = TrialFacts(trial_id, searched or {}, error=error, wall_time_s=wall_time_s, checkpoint=checkpoint,
                       extra=extra)
    return trial_row(cfg, history, context=context, trial=facts)


def minimized_rows():
    """Two trials of an experiment whose objective is sum_mae, minimized."""
    common = {"experiment": "mae", "sweep_id": "s1", "kind": "trial", "status": "completed",
              "objective_metric": "sum_mae", "objective_mode": "min"}
    return [{**common, "trial_id": "good", "objective": 0.2, "best_objective": 0.2, "sum_mae": 0.2},
            {**common, "trial_id": "bad", "objective": 0.9, "best_objective": 0.9, "sum_mae": 0.9}]


@pytest.fixture
def no_ray(monkeypatch):
    """Fail loudly if anything tries to start or join Ray: errors must stop before that."""
    import ray

    def forbidden(*a, **k):
        raise AssertionError("ray.init was called for a bad input")

    monkeypatch.setattr(ray, "init", forbidden)
