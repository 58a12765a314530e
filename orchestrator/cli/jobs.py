"""`orchestrator submit | jobs`: the Ray Jobs API from the command line: submit an experiment to a cluster, list
jobs, show logs.

A job runs ``python jobs/tune.py CONFIG`` with the project directory as its runtime_env working_dir
(uploaded without EXCLUDES and .gitignore/.rayignore matches). Mistakes the user can fix (config
outside the project, cluster unreachable, token missing or wrong) raise ConfigError / ClusterError.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import click

from .. import _ray
from ..endpoints import auth_message, unreachable
from ..errors import ConfigError, UserError, shortened
from ..storage import line_of, redact, redact_text, uris_in
from .common import overrides, raw_storage, require_shared_storage, set_opt, sets_for_job

EXCLUDES = [".venv", "runs", ".git", "__pycache__", "*.egg-info", "orchestrator-logs"]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
POLL_S = 2.0
ENTRYPOINT_CPUS = 0.1   # what a submitted job's entrypoint (its driver) holds while the job runs
HEAD_NODE = "node:__internal_head__"   # a resource only the head node has (Ray's HEAD_NODE_RESOURCE_NAME)
_UNREACHABLE = ("cannot reach Ray dashboard at {}: is the cluster up? "
                "(`ray dashboard cluster.yaml` opens a tunnel)")
_QUIET = logging.getLogger(__name__ + ".upload")
_QUIET.setLevel(logging.ERROR)


class ClusterError(UserError):
    """The Ray cluster cannot be reached, or its Jobs API refused the request."""


class ClusterAuthError(ClusterError):
    """Token authentication failed (Ray 2.60: RAY_AUTH_MODE=token and the cluster's token)."""


def submit_job(config_path: str, address: str | None, *, entrypoint_script: str = "jobs/tune.py",
           extra_args: list[str] = (), working_dir: str | None = None, follow: bool = False,
           wait: bool = True, out=print) -> int:
    """Submit ``python ENTRYPOINT_SCRIPT CONFIG [EXTRA_ARGS]``; return 0 (succeeded / not waited) or 1."""
    root = Path(working_dir).resolve() if working_dir else _project_root(entrypoint_script)
    if not (root / entrypoint_script).is_file():
        raise ConfigError(f"{entrypoint_script} not found in {root}: run from the project directory")
    cfg = Path(config_path).resolve()
    if not cfg.is_file():
        raise ConfigError(f"config file {str(config_path)!r} not found: pass the path to an experiment YAML")
    if not cfg.is_relative_to(root):
        raise ConfigError(f"config file {config_path} is outside {root}, the directory uploaded with the "
                          "job: place it in the project directory")
    rel = cfg.relative_to(root).as_posix()
    if _excluded(root, rel):
        raise ConfigError(f"config file {rel} is left out of the upload (.gitignore, .rayignore or "
                          f"{', '.join(EXCLUDES)}): copy it to an uploaded path, e.g. examples/")
    values = overrides([extra_args[i + 1] for i, a in enumerate(extra_args[:-1]) if a == "--set"])
    require_shared_storage(str(values.get("storage") or raw_storage(cfg)))
    extra_args = sets_for_job(extra_args, root)
    for path in {cfg, *_uploaded_yaml(root)}:   # the whole folder is uploaded, not only the config
        refuse_secrets(path, path.relative_to(root).as_posix())
    refuse_secret_args(extra_args)
    from ..config.loading import load_config

    load_config(cfg, values)   # a config error stops here, not on the cluster (data files may be the cluster's: not checked)
    # the CPUs this submission has Ray hold for the entrypoint, counted by its runs' checks (plain ray job submit: none)
    entrypoint = shlex.join(["python", entrypoint_script, rel, "--entrypoint-cpus", f"{ENTRYPOINT_CPUS:g}", *extra_args])
    url = _url(address)
    with _translate(url):
        client = _client(url)
        job_id = _submit_when_ready(client, entrypoint=entrypoint,
                                    runtime_env={"working_dir": str(root), "excludes": list(EXCLUDES)})
    out(f"submitted job {job_id} to {redact(url)}: {entrypoint}")
    if follow:
        return _follow(client, url, job_id, out)
    return _wait(client, url, job_id, out, changes=True) if wait else 0


def refuse_secret_args(args) -> None:
    """Ray stores a job's entrypoint in its job table and shows it in the dashboard: no credentials on it."""
    from ..credentials import holds_secret

    for arg in args:
        if any(holds_secret(uri) for uri in uris_in(arg)):
            raise ConfigError(f"the command line holds credentials ({redact_text(arg)}): Ray stores a job's "
                              f"entrypoint and shows it in the dashboard; write the URI without them and give the "
                              f"nodes an IAM role (cluster.yaml) or AWS_* in their environment")


def refuse_secrets(path: Path, shown: str) -> None:
    """The working directory a job uploads is stored by the cluster and unpacked on every node: a YAML file that holds
    credentials (s3://KEY:SECRET@..., a secret query parameter) would carry them there: its values, and then its
    text (a comment, or a file that is not YAML after all, such as a template)."""
    from ..config.loading import read_yaml
    from ..credentials import holds_secret

    def found(node, at=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from found(v, f"{at}.{k}" if at else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from found(v, f"{at}[{i}]")
        elif isinstance(node, str) and holds_secret(node):
            yield at, node

    text = path.read_text(errors="replace")
    try:
        first = next(found(read_yaml(text, source=str(path))), None)
    except ConfigError:   # not YAML after all (a template): its text is searched below
        first = None
    if first is None:     # a comment (a commented-out storage line) is uploaded too
        first = next((("", uri) for uri in uris_in(text) if holds_secret(uri)), None)
    if first is not None:
        key, value = first
        raise ConfigError(f"{shown} holds credentials ({key + ': ' if key else ''}{redact(value)}): a Ray job uploads "
                          f"it to the cluster, which stores it and unpacks it on every node; write the URI without "
                          f"them and give the "
                          f"nodes an IAM role (cluster.yaml) or AWS_* in their environment")


def _submit_when_ready(client, *, entrypoint: str, runtime_env: dict, patience_s: float = 120.0) -> str:
    """A cluster that just started has no job agent yet ("try again later"): retry for a while."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            # any entrypoint resource drops Ray's pin of the driver to the head node (Ray 2.60's job manager): asked for
            # again, so the sweep's driver never lands on a spot worker the autoscaler may take away
            return client.submit_job(entrypoint=entrypoint, entrypoint_num_cpus=ENTRYPOINT_CPUS,
                                     entrypoint_resources={HEAD_NODE: 0.001}, runtime_env=runtime_env)
        except RuntimeError as e:
            if "try again later" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(POLL_S)


def status(address: str | None, job_id: str | None = None, *, out=print) -> int:
    """One job's status, or all jobs as a table: id, status, entrypoint, start time."""
    url = _url(address)
    with _translate(url, job_id):
        client = _client(url)
        if job_id:
            info = client.get_job_info(job_id)
            note = f"  ({line_of(info.message, limit=200)})" if info.message else ""
            out(redact_text(f"{job_id}  {info.status}  {info.entrypoint}{note}"))
            return 0
        jobs = sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
    if not jobs:
        out(f"no jobs on {redact(url)}")
        return 0
    rows = [("ID", "STATUS", "ENTRYPOINT", "STARTED")] + [(
        j.submission_id or j.job_id or "-", str(j.status),
        shortened(redact_text(j.entrypoint), 60),   # redacted: other tools' jobs on a shared cluster too
        datetime.fromtimestamp(j.start_time / 1000).strftime("%Y-%m-%d %H:%M:%S") if j.start_time else "-",
    ) for j in jobs]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        out("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3])
    return 0


def logs(address: str | None, job_id: str, *, follow: bool = False, out=print) -> int:
    """Print a job's logs; with follow, stream them until it ends: 0 if it SUCCEEDED else 1."""
    url = _url(address)
    with _translate(url, job_id):
        client = _client(url)
        if not follow:
            out(client.get_job_logs(job_id).rstrip("\n"))
            return 0
    return _follow(client, url, job_id, out)


def _follow(client, url, job_id, out) -> int:
    async def tail():
        async for chunk in client.tail_job_logs(job_id):
            out(chunk.rstrip("\n"))
    try:
        with _translate(url, job_id):
            asyncio.run(tail())
    except KeyboardInterrupt:
        out(f"stopped following; job {job_id} keeps running (`ray job stop {job_id} --address {redact(url)}` stops it)")
        return 130
    return _wait(client, url, job_id, out, changes=False)


def _wait(client, url, job_id, out, *, changes: bool) -> int:
    """Poll until the job ends; print status changes (changes=True) and the end: 0 if SUCCEEDED else 1."""
    last = None
    try:
        with _translate(url, job_id):
            while not (info := client.get_job_info(job_id)).status.is_terminal():
                if changes and info.status != last:
                    out(f"job {job_id}: {info.status}")
                    last = info.status
                time.sleep(POLL_S)
            ok = str(info.status) == "SUCCEEDED"
            if changes and not ok:  # show why (unless the logs were just streamed)
                out("\n".join(client.get_job_logs(job_id).rstrip("\n").splitlines()[-20:]))
    except KeyboardInterrupt:
        out(f"stopped waiting; job {job_id} keeps running (`ray job logs --follow {job_id} --address {redact(url)}`)")
        return 130
    # Ray's message of a failed job holds up to 20,000 characters of its logs (shown above): its first line, redacted
    out(f"job {job_id} {info.status}" + ("" if ok or not info.message else f": {line_of(info.message, limit=200)}"))
    return 0 if ok else 1


def _uploaded_yaml(root: Path):
    """The YAML files a job's working_dir upload takes (Ray's own exclusions: EXCLUDES, .gitignore, .rayignore),
    linked folders followed as Ray's upload follows them (each real folder once: a link to a parent ends there)."""
    seen = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        rel = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if not _excluded(root, (rel / d).as_posix())]
        yield from (Path(folder) / f for f in files if f.endswith((".yaml", ".yml"))
                    and not _excluded(root, (rel / f).as_posix()))


def _project_root(entrypoint_script: str) -> Path:
    here = Path(__file__).resolve().parents[2]  # the repository (source checkout or editable install)
    return here if (here / entrypoint_script).is_file() else Path.cwd().resolve()


def _excluded(root: Path, rel: str) -> bool:
    """Would Ray's working_dir upload leave the file out? Same walk as runtime_env packaging."""
    gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    try:
        return _ray.upload_exclusions(root, EXCLUDES, Path(rel).parts, gitignore=gitignore, logger=_QUIET)
    except ImportError:  # private helpers moved: skip the check
        return False


def _url(address: str | None) -> str:
    address = (address or os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_ADDRESS).strip()
    return (address if "://" in address else f"http://{address}").rstrip("/")


def _client(url: str):
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError(url)
    except ValueError:
        raise ClusterError(f"invalid Ray dashboard address {redact(url)!r}: use e.g. {DEFAULT_ADDRESS}") from None
    if unreachable(parts.scheme, host, port):   # fail fast, before the SDK's untimed requests (a proxy: its to try)
        raise ClusterError(_UNREACHABLE.format(redact(url)))
    from ray.job_submission import JobSubmissionClient
    saved = {k: os.environ.pop(k) for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS") if k in os.environ}
    try:  # Ray lets these variables override the address; the explicit one wins here
        return JobSubmissionClient(url)
    finally:
        os.environ.update(saved)


@contextlib.contextmanager
def _translate(url: str, job_id: str | None = None):
    """Ray Jobs SDK exceptions -> ClusterError with one line naming the fix."""
    import aiohttp
    import requests
    from ray.exceptions import AuthenticationError
    url = redact(url)   # messages only: a password in the address (basic auth through a proxy) is never shown
    no_job = f"no job {job_id!r} on the cluster at {url}: `ray job list --address {url}` lists jobs"
    try:
        yield
    except AuthenticationError as e:  # HTTP 401/403, or RAY_AUTH_MODE=token and no local token
        raise ClusterAuthError(auth_message(getattr(e, "message", str(e)), url)) from None
    except aiohttp.WSServerHandshakeError as e:  # tail_job_logs
        if e.status in (401, 403):
            raise ClusterAuthError(auth_message(f"HTTP {e.status}", url)) from None
        raise ClusterError(no_job if e.status == 404 and job_id else f"cannot follow logs at {url}: "
                           f"HTTP {e.status}") from None
    except (ConnectionError, requests.exceptions.ConnectionError, aiohttp.ClientConnectionError):
        raise ClusterError(_UNREACHABLE.format(url)) from None
    except (RuntimeError, requests.exceptions.RequestException) as e:
        # the SDK's "Request failed with status code N: ...", or requests' HTTPError (a proxy's 502/503), whose text
        # holds the URL as given: redacted, then cut
        text = redact_text((str(e).strip().splitlines() or [type(e).__name__])[0])[:300]
        if "Version check returned 404" in text:
            text = "not a Ray dashboard (no Jobs API): check the address, default port 8265"
        elif job_id and "status code 404" in text:
            raise ClusterError(no_job) from None
        raise ClusterError(f"Ray Jobs API at {url}: {text}") from None


@click.command()
@click.argument("config", type=click.Path())
@click.option("--address", required=True, help="Ray dashboard URL, e.g. http://127.0.0.1:8265")
@click.option("--entrypoint", type=click.Choice(["tune", "train"]), default="tune", show_default=True)
@click.option("--follow/--no-follow", default=False, help="stream the job's logs until it ends")
@click.option("--wait/--no-wait", default=True, help="wait for the job to end (default) or return at once")
@click.option("--working-dir", default=None, type=click.Path(file_okay=False, exists=True),
              help="directory uploaded with the job (default: this project's root)")
@click.option("--resume", is_flag=True, help="tune: continue the experiment's latest interrupted sweep")
@set_opt
def submit(config, address, entrypoint, follow, wait, working_dir, resume, sets):
    """Submit a sweep (or a train run) to a Ray cluster as a Ray job."""
    if resume and entrypoint != "tune":
        raise UserError("--resume continues a sweep: use it with --entrypoint tune")
    if follow and not wait:
        raise click.UsageError("--follow waits for the job to end: drop --no-wait (or --follow)")
    sys.exit(submit_job(config, address, entrypoint_script=f"jobs/{entrypoint}.py", follow=follow, wait=wait,
                        working_dir=working_dir, out=click.echo,
                        extra_args=[*(["--resume"] if resume else []), *(a for s in sets for a in ("--set", s))]))


@click.command()
@click.argument("job_id", required=False)
@click.option("--address", required=True, help="Ray dashboard URL")
@click.option("--logs", "show_logs", is_flag=True, help="print the job's logs")
@click.option("--follow", is_flag=True, help="with --logs: keep streaming")
def jobs(job_id, address, show_logs, follow):
    """List Ray jobs, or show one job's status (and logs)."""
    if follow and not show_logs:
        raise click.UsageError("--follow needs --logs: orchestrator jobs JOB_ID --logs --follow")
    if show_logs:
        if not job_id:
            raise click.UsageError("--logs needs a JOB_ID")
        sys.exit(logs(address, job_id, follow=follow, out=click.echo))
    sys.exit(status(address, job_id, out=click.echo))
