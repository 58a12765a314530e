"""The code and packages behind a row (its provenance): the project's version, the git commit of its checkout, and the
versions of the packages that trained it."""
from __future__ import annotations

import functools
import os
import subprocess
from importlib import metadata
from typing import Optional


def versions() -> dict:
    """Package versions behind a row (its provenance)."""
    out = {}
    for pkg in ("orchestrator", "ray", "tensorflow", "keras", "pyarrow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def provenance(package: Optional[str] = None) -> dict:
    """The code behind a row: the project's version, and the git commit of ``package`` (this package's folder by
    default) when it is tracked in a git checkout, with ``-dirty`` when its tracked files differ from the commit;
    None when it is not (an installed wheel, even one inside some other repository)."""
    if package is None:
        return _own_provenance()
    try:
        version = metadata.version("orchestrator")
    except metadata.PackageNotFoundError:
        version = None
    return {"code_version": version, "git_commit": _git_commit(package)}


@functools.lru_cache(maxsize=1)
def _own_provenance() -> dict:
    return provenance(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _git_commit(folder: str) -> Optional[str]:
    def git(*args) -> Optional[str]:
        try:
            done = subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    if not os.path.isdir(folder) or git("ls-files", "--error-unmatch", "--", ".") is None:
        return None        # not a checkout, or this folder is not tracked in it
    commit = git("rev-parse", "HEAD")
    dirty = commit is not None and git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return commit + "-dirty" if dirty else commit
