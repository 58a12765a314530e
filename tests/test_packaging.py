"""Packaging: the wheel holds every module and the package data, and each of them imports from the wheel; every
bench, example and job entrypoint imports, and every ``orchestrator`` name it imports (at any depth) exists."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("bench/*.py"), *ROOT.glob("examples/*.py"), *ROOT.glob("jobs/*.py")])

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import orchestrator
names = [m.name for m in pkgutil.walk_packages(orchestrator.__path__, "orchestrator.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
from importlib.resources import files
demo = files("orchestrator.experiments").joinpath("demo.yaml").read_text()
print(json.dumps({"file": orchestrator.__file__, "modules": names, "demo": len(demo)}))
"""


@pytest.mark.slow   # the real CLI in fresh processes (each loads TensorFlow): end-to-end
def test_the_wheel_holds_and_imports_every_module(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("orchestrator-*.whl")
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={"PYTHONPATH": str(wheel), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["file"].startswith(str(wheel)), found["file"]          # imported from the wheel, not the tree
    source = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
              for p in (ROOT / "orchestrator").rglob("*.py") if p.name != "__main__.py"}
    assert set(found["modules"]) | {"orchestrator"} == source
    assert found["demo"] > 0


def orchestrator_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("orchestrator"):
            out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("orchestrator")]
    return out


def is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:      # its parent is a plain module
        return False


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_script_imports_and_names_what_exists(script, monkeypatch):
    monkeypatch.syspath_prepend(str(script.parent))
    spec = importlib.util.spec_from_file_location(f"smoke_{script.stem}", script)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))     # top level runs; main() does not
    missing = []
    for line, module, names in orchestrator_imports(script):
        mod = importlib.import_module(module)
        for name in names:
            if not hasattr(mod, name) and not is_module(f"{module}.{name}"):
                missing.append(f"{script.name}:{line} {module}.{name}")
    assert not missing, missing


def test_the_package_says_its_version():
    """No __version__: a user reporting a bug had none to give (a helper's audit)."""
    from importlib import metadata

    import orchestrator

    assert orchestrator.__version__ == metadata.version("orchestrator")
