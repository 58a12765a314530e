"""The shape of the house, held by a test: small modules and functions, short signatures, no forwarding of
*args/**kwargs, no import cycles, and no module importing from a stage above its own (README, "Architecture")."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "orchestrator"
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_POSITIONAL, MAX_PARAMETERS = 350, 60, 6, 10
# The flow of one sweep, lowest first: a module may import from its own stage and the stages below it.
STAGES = ["", "config", "data", "model", "training", "leaderboard", "sweep", "report", "cli"]
# Signatures that are not ours to choose: they forward what their framework passes.
FORWARDING_ALLOWED = {
    "orchestrator._ray.controller._initialize_and_run_controller": "Ray Train's own hook; its keywords pass through to Ray",
    "orchestrator._ray.controller.remote": "stands in for Ray's ActorClass.remote: Ray Train passes the actor's keywords",
    "orchestrator.model.backbones.__init__": "a Keras layer passes its base config (name, dtype, trainable) through",
    "orchestrator.config.schema.__init__": "pydantic's constructor takes the config's fields as keywords",
}


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = ast.parse(path.read_text(), filename=str(path))
    return out


def functions(tree: ast.Module):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def is_click_command(fn) -> bool:
    for dec in fn.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute) and target.attr in ("command", "group"):
            return True
    return False


def imports(name: str, tree: ast.Module, is_package: bool, known: set[str]) -> set[str]:
    """Every orchestrator module this one imports, at any depth (function-level imports too). ``from X import a``
    counts as importing ``X.a`` when that is a module, else ``X``."""
    found = set()
    package = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("orchestrator")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            if base.startswith("orchestrator"):
                for a in node.names:
                    found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return found


def stage(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return len(STAGES)            # the public face sits above everything
    return STAGES.index(parts[1]) if parts[1] in STAGES else 0


def test_modules_and_functions_are_small():
    long_modules, long_functions = [], []
    for name, tree in modules().items():
        lines = (tree.body[-1].end_lineno if tree.body else 0)
        if lines > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {lines} lines")
        for fn in functions(tree):
            length = fn.end_lineno - fn.lineno + 1
            if length > MAX_FUNCTION_LINES:
                long_functions.append(f"{name}.{fn.name}: {length} lines")
    assert not long_modules, long_modules
    assert not long_functions, long_functions


def test_signatures_are_short_and_nothing_forwards_star_args():
    wide, forwarding = [], []
    for name, tree in modules().items():
        for fn in functions(tree):
            a = fn.args
            positional = [p.arg for p in a.posonlyargs + a.args if p.arg not in ("self", "cls")]
            total = len(positional) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
            if not is_click_command(fn) and (len(positional) > MAX_POSITIONAL or total > MAX_PARAMETERS):
                wide.append(f"{name}.{fn.name}: {len(positional)} positional, {total} in all")
            star = {p.arg for p in (a.vararg, a.kwarg) if p is not None}
            for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
                passed = [s.value.id for s in call.args if isinstance(s, ast.Starred) and isinstance(s.value, ast.Name)]
                passed += [k.value.id for k in call.keywords if k.arg is None and isinstance(k.value, ast.Name)]
                if star & set(passed) and f"{name}.{fn.name}" not in FORWARDING_ALLOWED:
                    forwarding.append(f"{name}.{fn.name} forwards {sorted(star & set(passed))}")
    assert not wide, wide
    assert not forwarding, forwarding


def test_no_import_cycles_and_no_upward_imports():
    mods = modules()
    packages = {n for n in mods if (PACKAGE.parent / n.replace(".", "/") / "__init__.py").exists()}
    graph = {n: {m for m in imports(n, t, n in packages, set(mods)) if m in mods and m != n} for n, t in mods.items()}
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets if stage(b) > stage(a)]
    assert not upward, upward
    # Cycles among modules (a package face that only re-exports is a module too): depth-first search.
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The checks above on small made-up sources: each rule fires where it should."""
    src = ast.parse("def f(a, b, c, d, e, f, g):\n    return h(*a)\n\ndef k(*args, **kw):\n    return m(*args, **kw)\n")
    fns = {fn.name: fn for fn in functions(src)}
    assert len(fns["f"].args.args) == 7
    call = next(n for n in ast.walk(fns["k"]) if isinstance(n, ast.Call))
    assert [s.value.id for s in call.args if isinstance(s, ast.Starred)] == ["args"]
    tree = ast.parse("from ..sweep import tuner\nfrom .. import storage\nfrom ..config import load_config\n")
    known = {"orchestrator.sweep.tuner", "orchestrator.storage", "orchestrator.config"}
    assert imports("orchestrator.data.prepare", tree, False, known) == known
    assert stage("orchestrator.sweep.tuner") > stage("orchestrator.data.prepare")
    assert stage("orchestrator.storage") == 0 and stage("orchestrator") == len(STAGES)
