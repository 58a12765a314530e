"""What the commands share: ``--set`` overrides (and their paths in a Ray job), ``--address``, ``--storage`` (reached
first), loading the config (with the storage check a Ray job needs), and the one line an OSError becomes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..errors import ConfigError, UserError


def overrides(pairs: tuple[str, ...]) -> dict:
    """``--set a.b=VALUE`` pairs -> ``{"a.b": value}`` (values parsed as YAML)."""
    from ..config.loading import read_yaml
    from ..storage import redact_text

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        shown = redact_text(pair)   # a URI's credentials never reach the message (nor a Ray job's log)
        if not sep:
            raise UserError(f"--set {shown!r} is not KEY=VALUE; write e.g. --set train.epochs=3")
        if not key.strip() or any(not part for part in key.split(".")):
            raise UserError(f"--set {shown!r} has no key (or an empty part in it): write e.g. --set train.epochs=3")
        out.pop(key, None)   # a repeated key applies where it was last given (a dict keeps the first position)
        out[key] = read_yaml(value, source=f"--set {shown!r}")
    return out


def sets_for_job(extra_args, root: Path) -> list[str]:
    """``--set`` paths relative to this shell's folder (as here), made relative to ``root``: the job runs in its
    upload."""
    from ..config.paths import get_dotted, rebased_paths, set_dotted

    out = list(extra_args)
    for i, arg in enumerate(extra_args[:-1]):
        if arg == "--set":
            key = extra_args[i + 1].partition("=")[0]
            given: dict = {}
            set_dotted(given, key, overrides([extra_args[i + 1]])[key])
            value = get_dotted(rebased_paths(given, Path.cwd(), root, what="--set"), key)
            if value != get_dotted(given, key):   # as text that reads back as itself
                out[i + 1] = f"{key}={value if overrides([f'{key}={value}'])[key] == value else json.dumps(value)}"
    return out


def mean_pm(stats: dict) -> str:
    """``0.8000 ± 0.0100 (n=2)``: a mean over seeds and its sample std, which one seed does not have."""
    spread = f"± {stats['std']:.4f} " if stats["std"] is not None else ""
    diverged = "".join(f"; seed{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))} {status}"
                       for status in ("diverged", "failed") if (lost := stats.get(status) or []))
    if stats["mean"] is None:
        return f"no seed completed ({diverged[2:] or 'none ran'})"
    return f"{stats['mean']:.4f} {spread}(n={stats['n']}{'' if spread else ': no spread'}{diverged})"


def load(path, sets, *, in_job: bool = False):
    from ..config import load_config

    values = overrides(sets)
    if in_job and Path(path).is_file():   # a Ray job's working directory is temporary: its storage must be shared
        require_shared_storage(str(values.get("storage") or raw_storage(Path(path))))
    return load_config(path, values)   # a missing file: named here


def raw_storage(path: Path) -> str:
    """The storage a config file names, read without validating it (load_config reports errors itself)."""
    from ..config.loading import read_yaml

    if not path.is_file():
        return "runs"   # load_config reports the missing file itself
    data = read_yaml(path.read_text(), source=str(path))   # the same one-line errors load_config gives
    return str((data or {}).get("storage", "runs")) if isinstance(data, dict) else "runs"


def require_shared_storage(location: str) -> None:
    """A Ray job's working directory is temporary: a relative local storage would be lost with it."""
    if "://" not in location and not os.path.isabs(location):
        raise ConfigError(f"storage {location!r} is a relative local path: in a Ray job it lands in the job's "
                          f"temporary working directory and is lost; set storage to shared storage every node "
                          f"reaches (s3://bucket/prefix, or an absolute path on a shared filesystem)")


PATH_ERRORS = {
    NotADirectoryError: "part of it is a file, not a folder: give a path whose folders are folders",
    IsADirectoryError: "it is a folder: give a file's path",
    FileExistsError: "it exists and is not a folder: give a folder, or another path",
    PermissionError: "no permission: give a path you can write (or read)",
    FileNotFoundError: "not found: check the path",
}


def os_error_line(e: OSError) -> str:
    """One line for an OSError that reached the command line: the path it names and what to do, credentials
    removed; otherwise its first line."""
    from ..storage import first_line, redact_text

    where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"   # a rename names both
    hint = next((h for kind, h in PATH_ERRORS.items() if isinstance(e, kind)), None)
    if e.filename is not None and hint is not None:
        return f"{redact_text(str(where))}: {hint}"
    return first_line(e)


def reached(ctx, param, value):
    """A click callback for options that name storage: an ``s3://`` location in ``value`` (one, several, or inside a
    target such as ``csv:s3://...``) whose endpoint takes no connection is one line now (``reach_storage``)."""
    from ..endpoints import reach_storage

    for given in value if isinstance(value, tuple) else (value,):
        if isinstance(given, str) and "s3://" in given:
            reach_storage(given[given.index("s3://"):])
    return value


def storage_opt(dest: str = "storage", *, default: str | None = "runs", help: str = "storage holding the leaderboard"):
    """``--storage`` of every command: an S3 endpoint that takes no connection is one line at once, not half a minute
    of the SDK's retries and then "try again"."""
    return click.option("--storage", dest, default=default, show_default=default is not None, help=help,
                        callback=reached)


set_opt = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                       help="override a config value by dotted path, e.g. --set train.epochs=3")


def ray_address(ctx, param, value):
    """A click callback for ``--address``: ``endpoints.check_ray_address``."""
    from ..endpoints import check_ray_address

    return check_ray_address(value, flag="--address ")


address_opt = click.option("--address", default=None, callback=ray_address,
                           help="Ray cluster's GCS address, HEAD:6379 (default: RAY_ADDRESS's in a Ray job, else "
                                "start a local Ray)")
entrypoint_cpus_opt = click.option(
    "--entrypoint-cpus", "entrypoint_cpus", type=click.FloatRange(min=0), default=0.0, hidden=True,
    help="set by submit in a job's command: the CPUs Ray holds for the job's entrypoint while its runs wait (plain "
         "`ray job submit`: none, unless its --entrypoint-num-cpus, which to pass here too)")
job_opt = click.option("--in-ray-job", "in_job", is_flag=True, hidden=True,
                       help="set by jobs/*.py: refuse storage that would be lost with the job's working directory")
