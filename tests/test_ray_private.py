"""Every private Ray API the package uses lives in orchestrator/_ray.py, checked on one Ray version: this fails loudly,
naming what moved, when a Ray upgrade changes one of them, and when another module starts using one."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import ray

from orchestrator import _ray

PACKAGE = Path(__file__).resolve().parents[1] / "orchestrator"
PRIVATE_MODULES = ("ray._private", "ray._common", "ray.core", "ray._raylet")


def private_uses(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(PRIVATE_MODULES) or "._internal" in node.module:
                found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.startswith(PRIVATE_MODULES)
                      or "._internal" in a.name]
        elif isinstance(node, ast.Attribute) and node.attr in ("_local_tuner", "_base_exc", "print_to_stdstream",
                                                               "_initialize_and_run_controller"):
            found.append(f".{node.attr}")
    return found


def test_ray_is_the_version_the_private_uses_were_checked_on():
    assert ray.__version__ == _ray.CHECKED_ON, (
        f"Ray {ray.__version__} is installed; orchestrator/_ray.py was checked on {_ray.CHECKED_ON}: read each use "
        f"there against the new Ray, then update CHECKED_ON")


def test_every_private_name_still_resolves():
    _ray.check()


def test_no_other_module_uses_a_private_ray_api():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_ray.py":
            continue
        uses = private_uses(ast.parse(path.read_text()))
        if uses:
            offenders[str(path.relative_to(PACKAGE.parent))] = uses
    assert not offenders, offenders
    assert private_uses(ast.parse((PACKAGE / "_ray.py").read_text())), "the scan finds the uses in _ray.py itself"


def test_a_run_starts_no_dataset_manager_and_no_placement_group_cleaner(tmp_path):
    """Ray's DatasetsCallback starts a DatasetManager actor per run even with no datasets; ours pass none. Its
    PlacementGroupCleanerCallback starts a detached actor per run that asks the State API every second whether the
    controller lives; the sweep's driver releases the groups of dead controllers itself (training/progress.py)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.v2._internal.callbacks import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    from orchestrator.training import backend

    trainer = backend.make(lambda config: None, train_loop_config={}, scaling_config=ScalingConfig(num_workers=1),
                           run_config=RunConfig(name="t", storage_path=str(tmp_path)))
    kinds = [type(c).__name__ for c in trainer._create_default_callbacks()]
    assert "BackendSetupCallback" in kinds and "AcceleratorSetupCallback" in kinds, kinds
    unwanted = (DatasetsCallback, PlacementGroupCleanerCallback)
    assert not any(isinstance(c, unwanted) for c in trainer._create_default_callbacks()), kinds


def test_a_renamed_tune_variable_is_named(monkeypatch):
    """The check reads Tune's own source for the variable the sweep sets: a wrong name fails, naming it."""
    monkeypatch.setattr(_ray, "TRIAL_THREAD_TIMEOUT_ENV_VAR", "TUNE_NO_SUCH_VARIABLE")
    with pytest.raises(RuntimeError, match="no longer reads TUNE_NO_SUCH_VARIABLE"):
        _ray.check()
