"""Shared fixtures: one local Ray per session, no Ray for bad inputs, a real S3 server; a watchdog for hung slow
tests. What tests make (data, configs, rows, ports, the CLI runner) is in factories.py."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from factories import no_ray  # noqa: E402,F401 - a fixture for every test file


@pytest.fixture(autouse=True)
def _credentials_forgotten_after_each_test():
    """Credentials a test's URIs carried are kept in this process's memory (``credentials.adopt``): forgotten after
    every test, so no test finds in this process a pair that an earlier one gave (and passes for that reason). Ray's
    processes of a shared session (the job's holder actor, warm workers) may still hold earlier pairs."""
    yield
    from orchestrator import credentials

    credentials.forget()


@pytest.fixture(scope="session")
def _one_ray():
    import ray

    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_session(_one_ray):
    """One local Ray for the slow tests (2 CPUs, 1 logical GPU for scheduling tests), started again when a test
    module before this one ended it or replaced it by a Ray of its own (a driver's run started one without the GPU).
    Module-scoped, so module-scoped fixtures (a shared sweep) can use it."""
    from orchestrator.training.session import init_ray

    ray = _one_ray
    if not ray.is_initialized() or ray.cluster_resources().get("GPU") != 1:
        ray.shutdown()
        init_ray(None, num_gpus=1)
    return ray


@pytest.fixture(scope="session")
def pretrained_backbone(tmp_path_factory):
    """The built-in backbone pretrained once for the session (about 25 s), into a local storage: ``seeded_storage``
    puts it in other storages as their pretrain cache. Pretraining into S3 (and its cache found there) is
    tests/test_s3.py's."""
    from orchestrator import layout
    from orchestrator.training.pretrain import pretrain

    storage = str(tmp_path_factory.mktemp("pretrained"))
    pretrain(storage, out=lambda line: None)
    return layout.builtin_backbone(storage)


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
