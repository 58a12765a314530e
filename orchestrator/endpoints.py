"""Reaching a server before relying on it. Clients that retry a refused connection with backoff (MLflow's, and the AWS
SDK inside pyarrow's S3 filesystem) keep a user waiting in silence, then say little: an S3 endpoint with a mistyped
port took 34 s to end in "... Failed to connect to 127.) after 5 attempts; try again". One TCP connection, of
CONNECT_S at most, tells first."""
from __future__ import annotations

import os
import socket
from urllib.parse import parse_qsl, urlsplit
from urllib.request import getproxies, proxy_bypass

from .errors import ConfigError
from .storage import first_line, redact

CONNECT_S = 5.0


def unreachable(scheme: str, host: str, port: int) -> str | None:
    """Why ``host:port`` takes no connection now, or None: it does, or a proxy serves it, as the client will reach it
    (a direct connection says nothing then)."""
    if scheme in getproxies() and not proxy_bypass(host):
        return None
    try:
        socket.create_connection((host, port), timeout=CONNECT_S).close()
    except OSError as e:
        return first_line(e, 80)
    return None


def require_writable(location: str) -> None:
    """A local storage is a folder this process may write, or one it may make: else a ConfigError naming the path,
    before Ray starts. Checked without writing (`validate` writes nothing), by the nearest part of it that exists."""
    from pathlib import Path

    path = Path(os.path.abspath(location))
    try:
        existing = next(p for p in (path, *path.parents) if p.exists())
    except OSError as e:   # a folder on the way this user may not enter
        raise ConfigError(f"storage {location}: {first_line(e, 200)}: give a folder you can write") from None
    if not existing.is_dir():
        raise ConfigError(f"storage {location}: {existing} is a file, not a folder: give a folder's path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"storage {location}: this user may not write {existing} on this machine (its permissions, "
                          f"or a read-only filesystem): give a folder you can write here")


def reach_storage(location: str) -> None:
    """An ``s3://`` location whose ``endpoint_override`` (MinIO, Ceph, ...) takes no connection is a ConfigError naming
    it. AWS's own endpoints are left to the SDK; other locations are not servers of ours to reach."""
    if not location.startswith("s3://"):
        return
    query = dict(parse_qsl(urlsplit(location).query))
    endpoint = query.get("endpoint_override")
    if not endpoint:
        return
    where = urlsplit(endpoint if "://" in endpoint else f"{query.get('scheme', 'https')}://{endpoint}")
    if where.scheme not in ("http", "https") or not where.hostname:
        return   # not an endpoint pyarrow would take either: its own error says so
    try:
        port = where.port or (80 if where.scheme == "http" else 443)
    except ValueError:
        raise ConfigError(f"{redact(location)}: endpoint_override={endpoint} has no valid port: e.g. "
                          f"endpoint_override=HOST:9000") from None
    why = unreachable(where.scheme, where.hostname or "", port)
    if why is not None:
        raise ConfigError(f"cannot reach the storage endpoint {where.scheme}://{where.hostname}:{port} of "
                          f"{redact(location)} ({why}): check endpoint_override and scheme in the URI, and that the "
                          f"server runs")


def auth_message(detail: str, url: str) -> str:
    """The fix for a refused Ray auth token (``detail`` as Ray's Jobs SDK words the refusal), naming the cluster."""
    if detail.startswith(("Authentication failed", "HTTP 403")):
        return (f"Ray cluster at {url} rejected the auth token: use the cluster's token (RAY_AUTH_TOKEN or "
                "RAY_AUTH_TOKEN_PATH; it is ~/.ray/auth_token on the head)")
    if detail.startswith(("Authentication required", "HTTP 401")):
        return (f"Ray cluster at {url} requires a token: export RAY_AUTH_MODE=token (token from "
                "~/.ray/auth_token on the head, or RAY_AUTH_TOKEN)")
    first = detail.splitlines()[0].split(". ")[0].rstrip(".")
    return f"no Ray auth token: {first} (copy ~/.ray/auth_token from the head, or set RAY_AUTH_TOKEN)"


def refuse_ray_token(address: str | None, *, named: str | None = None) -> None:
    """A cluster's GCS address (HOST:PORT) that refuses this process's Ray auth token: one ConfigError at once (named
    as ``named``, default the address), where ray.init retried for 20 s, a warning line a second. Other addresses
    (none, auto, local, a ray:// client) are ray.init's to judge."""
    from . import _ray

    if not address or address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    refused = _ray.gcs_token_refusal(address) if host and port.isdigit() else None
    if refused:
        raise ConfigError(auth_message(refused, named or address))


def joined(address: str) -> bool:
    """Is ``address`` the Ray this process runs? auto: the running one; local: one this process started; a ray://
    address: a Ray client's (not compared further); HOST:PORT: when its GCS answers with this Ray's cluster id
    (``_ray.same_cluster``, False when it does not answer)."""
    from . import _ray

    if address == "auto":
        return True
    if address == "local":
        return _ray.started_here()
    if "://" in address:   # ray://, or another client builder's scheme
        import ray

        return ray.util.client.ray.is_connected()
    return _ray.same_cluster(address)


def check_ray_address(value: str | None, *, flag: str = "address=") -> str | None:
    """A cluster's GCS address (HEAD:6379) as train, tune and the other commands take it (``flag``: how the caller
    names it, ``--address `` or ``address=``): the dashboard's URL (what submit and jobs take) is one line, not
    ray.init's traceback; an address that takes no connection, or refuses this process's Ray auth token, is one line
    at once, where ray.init retried for minutes, deaf to Ctrl-C (20 s and 20 warning lines for a token)."""
    joined = os.environ.get("RAY_ADDRESS", "")   # no address: the cluster a Ray job's RAY_ADDRESS names, if any
    if not value and urlsplit(joined).scheme in ("http", "https"):
        raise ConfigError(f"RAY_ADDRESS={joined} is a dashboard's URL (what ray job submit takes): unset it to start "
                          f"a Ray of this command's own, or give {flag}HEAD:6379")
    if not value or value in ("auto", "local"):
        return value
    s = urlsplit(value if "://" in value else f"gcs://{value}")
    if s.scheme in ("http", "https"):
        raise ConfigError(f"{flag}{value} is the dashboard's URL, which submit and jobs take; train, tune and the "
                          f"other commands that run on a cluster take its GCS address: {flag}HEAD:6379")
    try:
        why = unreachable("gcs", s.hostname or "", s.port or 6379) if s.hostname else "no host"
    except ValueError:
        why = "no valid port"
    if why:
        raise ConfigError(f"cannot reach the Ray cluster at {value} ({why}): start it (ray start --head) or fix "
                          f"{flag.strip()} (HEAD:6379)")
    refuse_ray_token(f"{s.hostname}:{s.port or 6379}", named=value)
    return value
