"""cluster.yaml is a valid Ray 2.60 cluster-launcher config: checked offline, no cloud calls, no Ray.

Two checks, both Ray's own:
- the JSON schema shipped in the ray package (``ray/autoscaler/ray-schema.json``, draft 7);
- ``validate_config(prepare_config(cfg))`` from ``ray.autoscaler._private.util``: what ``ray up`` runs
  first. ``prepare_config`` merges ``ray/autoscaler/aws/defaults.yaml`` into the config (a file read),
  merges setup commands, checks the docker block and fills per-type min/max workers; no boto3 call.
"""
import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

import ray
import ray.autoscaler
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.fixture(scope="module")
def cfg():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def schema_check(config):
    jsonschema.Draft7Validator(SCHEMA).validate(config)


def ray_check(config):
    validate_config(prepare_config(copy.deepcopy(config)))


CHECKS = [schema_check, ray_check]


def test_schema_is_draft7():
    assert "draft-07" in SCHEMA["$schema"]
    jsonschema.Draft7Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("check", CHECKS)
def test_shipped_file_is_valid(cfg, check):
    check(cfg)


def test_prepared_config_shape(cfg):
    p = prepare_config(copy.deepcopy(cfg))
    assert p["cluster_name"] == "orchestrator"
    assert p["provider"]["type"] == "aws" and p["provider"]["region"] == "us-west-2"
    assert p["max_workers"] == 4
    head = p["available_node_types"][p["head_node_type"]]
    assert head["node_config"]["InstanceType"] == "m5.2xlarge"
    assert head["resources"] == {"CPU": 8, "GPU": 0}
    assert head["max_workers"] == 0  # filled by prepare_config
    (gpu,) = [t for n, t in p["available_node_types"].items() if n != p["head_node_type"]]
    assert gpu["node_config"]["InstanceType"] == "g5.xlarge"
    assert gpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert gpu["resources"] == {"CPU": 4, "GPU": 1}
    assert (gpu["min_workers"], gpu["max_workers"]) == (0, 4)
    assert p["docker"]["image"] == "rayproject/ray:2.60.0-py311-gpu"
    assert p["docker"]["container_name"]
    assert p["idle_timeout_minutes"] > 0


def _head_start(cfg):
    return " ".join(cfg["head_start_ray_commands"])


def test_dashboard_only_on_loopback(cfg):
    start = _head_start(cfg)
    assert "--dashboard-host=127.0.0.1" in start
    assert "0.0.0.0" not in start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in start


def test_setup_installs_project_and_tensorflow(cfg):
    assert cfg["file_mounts"]["~/orchestrator"] == "."
    setup = " ".join(cfg["setup_commands"])
    assert "pip install" in setup and "-e ~/orchestrator" in setup
    assert '"tensorflow[and-cuda]==2.21.*"' in setup
    for excluded in (".venv", "runs", ".git"):
        assert excluded in cfg["rsync_exclude"]


def test_token_auth_on_every_node(cfg):
    assert "RAY_AUTH_MODE=token ray start --head" in _head_start(cfg)
    assert "RAY_AUTH_MODE=token ray start --address" in " ".join(cfg["worker_start_ray_commands"])
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def _worker_type(config):
    return next(n for n in config["available_node_types"] if n != config["head_node_type"])


def _misspelled_top_level(c):
    c["max_worker"] = c.pop("max_workers")


def _no_resources(c):
    del c["available_node_types"][_worker_type(c)]["resources"]


def _no_node_config(c):
    del c["available_node_types"][c["head_node_type"]]["node_config"]


def _fractional_custom_resource(c):
    c["available_node_types"][_worker_type(c)]["resources"]["a10g"] = 0.5


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize(
    "breaker, message",
    [
        (_misspelled_top_level, "'max_worker' was unexpected"),
        (_no_resources, "'resources' is a required property"),
        (_no_node_config, "'node_config' is a required property"),
        (_fractional_custom_resource, "0.5 is not of type 'integer'"),
    ],
)
def test_broken_copies_fail(cfg, breaker, message, check):
    broken = copy.deepcopy(cfg)
    breaker(broken)
    with pytest.raises(jsonschema.ValidationError) as err:
        check(broken)
    assert message in err.value.message


def test_min_workers_above_max_workers_fails(cfg):
    broken = copy.deepcopy(cfg)
    broken["available_node_types"][_worker_type(broken)]["min_workers"] = 5
    with pytest.raises(ValueError, match="min_workers"):
        ray_check(broken)


def test_no_ray_started():
    assert not ray.is_initialized()


def test_every_node_runs_with_the_settings_of_a_local_ray(cfg):
    """What init_ray sets for the Ray it starts (the Train health-check pace, how long idle processes are kept, how long
    a Train run waits for its worker group: a trial's Train controller runs in the trial's process, which takes the
    node's environment, not the driver's; a helper's audit found 60 s there, autoscaler launches included) reaches
    cluster nodes through their ray start lines."""
    from orchestrator.training.session import NODE_ENV

    assert {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_idle_worker_killing_time_threshold_ms",
            "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"} <= set(NODE_ENV)
    workers = [line for line in cfg["worker_start_ray_commands"] if "ray start" in line]
    for name, value in NODE_ENV.items():
        setting = f"{name}={value} "
        assert setting in _head_start(cfg)
        assert workers and all(setting in line for line in workers), (setting, workers)
