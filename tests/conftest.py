"""Shared fixtures: small data sets the project makes itself, and one local Ray per session."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from orchestrator.data import builtin  # noqa: E402


def small_table(n: int = 200, *, seed: int = 0, part: str = "train") -> pa.Table:
    """MultiDigits canvases (digits 5-9) as a Parquet-ready table: image, left, right, sum."""
    return builtin.image_table(builtin.composites((5, 6, 7, 8, 9), part, n=n, seed=seed))


def write_parquet(path, table: pa.Table) -> str:
    pq.write_table(table, path)
    return str(path)


def experiment(tmp_path, data_uri: str, **sections) -> dict:
    """A small experiment dict on ``data_uri``; ``sections`` replace or extend top-level keys."""
    cfg = {
        "name": "t",
        "data": {"train": data_uri, "validation": 0.25},
        "tasks": {"left": {"type": "classification"}, "right": {"type": "classification"},
                  "sum": {"type": "regression", "metric": "r2"}},
        "backbone": {"kind": "builtin", "weights": "none"},
        "heads": {"hidden_units": 16},
        "train": {"epochs": 1, "batch_size": 32, "seed": 0},
        "resources": {"workers": 1},
        "storage": str(tmp_path / "runs"),
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_yaml(path, cfg: dict) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the slow tests (2 CPUs, 1 logical GPU for scheduling tests)."""
    import ray

    from orchestrator.train.driver import init_ray

    init_ray(None, num_gpus=1)
    yield ray
    ray.shutdown()


@pytest.fixture
def no_ray(monkeypatch):
    """Fail loudly if anything tries to start or join Ray: errors must stop before that."""
    import ray

    def forbidden(*a, **k):
        raise AssertionError("ray.init was called for a bad input")

    monkeypatch.setattr(ray, "init", forbidden)


def run_cli(capsys, *argv):
    """The CLI in this process, as a user runs it: (exit code, stderr, stdout)."""
    from orchestrator.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(argv))
    captured = capsys.readouterr()
    return e.value.code, captured.err.strip(), captured.out


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's server mode) on 127.0.0.1; yields "host:port"."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()


# A hang must not eat CI's whole budget. A slow test that takes longer than this, counting its fixtures' setup and
# teardown (the last test's teardown also stops Ray and the S3 server), dumps every thread's stack and ends the run.
# faulthandler's watchdog is a C thread: it fires even when the main thread is stuck in Ray's or gRPC's C code,
# where a Python signal handler would never run.
SLOW_TEST_LIMIT_S = 1200


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    import faulthandler

    if item.get_closest_marker("slow") is not None:
        faulthandler.dump_traceback_later(SLOW_TEST_LIMIT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def pytest_unconfigure(config):
    """Exit hooks (Ray's atexit among them) get five minutes too."""
    import faulthandler

    faulthandler.dump_traceback_later(300, exit=True)
