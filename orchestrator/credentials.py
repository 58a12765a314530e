"""Credentials written into URIs (``s3://KEY:SECRET@bucket/...``): taken out, kept per storage location in this
process's memory, and never printed, stored, pickled, logged or put in an environment variable.

- ``split_userinfo`` finds them by hand: AWS secrets hold ``/`` and ``+``, which ``urllib.parse.urlsplit`` reads as
  the start of the path (it then sees no userinfo at all). Percent-encoded secrets (pyarrow's documented form) are
  unquoted.
- ``adopt`` keeps them under the location without them (its scheme, bucket and path; query left out), so two
  storages (e.g. a merge of two leaderboards) each keep their own pair. ``lookup`` finds the pair of the longest
  adopted location a URI lies under.
- Ray's processes (trial actors, Train workers and controller, Ray Data tasks) get them from a per-job actor that
  holds the pairs (``publish``): through the object store, never through ``runtime_env`` (Ray logs it and the
  dashboard shows it). A process without a pair for a location uses the environment (``AWS_*``) as before.
"""
from __future__ import annotations

import re
from typing import Optional
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

SECRET_PARAMS = {"access_key", "secret_key", "session_token", "aws_access_key_id", "aws_secret_access_key",
                 "token", "password", "credential", "credentials", "client_secret", "account_key", "sas_token",
                 "access_token", "sig"}
# and any name holding one of these (a pre-signed URL's X-Amz-Signature, X-Amz-Security-Token, X-Goog-Credential)
SECRET_PARTS = ("signature", "token", "secret", "password", "credential", "api_key", "apikey")
NOT_SECRET_PARAMS = {"credential_kind", "credential_token_expiration"}   # pyarrow's: which kind, until when
KEPT_PARAMS = {"access_key", "secret_key", "session_token"}   # what ``pair`` takes out and keeps in memory
_CONTAINER_USERINFO = {"abfs", "abfss", "wasb", "wasbs"}      # abfs://container@account...: not a credential
ACTOR_PREFIX = "orchestrator-credentials-"
_BY_LOCATION: dict[str, dict] = {}


def split_userinfo(location: str) -> tuple[str, Optional[str], str]:
    """``(scheme, userinfo or None, rest)`` of ``scheme://[userinfo@]rest``. The userinfo ends at the last ``@``
    before the first ``/`` that follows an ``@`` (and before the query): a path may hold ``@`` (``bucket/runs/a@b``)
    and so may an unencoded password (``minio:p@ss@bucket``); a ``user:secret`` whose user has no ``/`` counts even
    when the secret holds ``/``, while an ``@`` inside a path (``s3://bucket/a@b``) does not. So do ``?`` and ``#``
    in a secret (up to its first ``@``); without ``user:``, they start the query or fragment."""
    scheme, rest = location.split("://", 1)
    user = re.match(r"[^/?#@:]*:", rest)   # after `user:`, an unencoded '?' or '#' is the secret's, up to an '@'
    after = rest.find("@") + 1 if user else 0
    end = min([i for i in (rest.find("?", after), rest.find("#", after)) if i >= 0] or [len(rest)])
    slash = rest.find("/", rest.find("@", 0, end) + 1, end)
    at = rest.rfind("@", 0, slash if slash >= 0 else end)
    if at < 0:
        return scheme, None, rest
    candidate = rest[:at]
    if scheme.lower() in _CONTAINER_USERINFO and ":" not in candidate:
        return scheme, None, rest
    if "/" in candidate and ("/" in candidate.split(":", 1)[0] or ":" not in candidate):
        return scheme, None, rest
    return scheme, candidate, rest[at + 1:]


def strip(location: str) -> str:
    """``scheme://[userinfo@]rest?query`` without the userinfo and the query's secret parameters; one without either
    as given (rebuilding it would rewrite some: ``sqlite:////abs`` to ``sqlite://abs``, ``s3://`` to ``s3:``)."""
    if not holds_secret(location):
        return location
    scheme, _, rest = split_userinfo(location)
    s = urlsplit(f"{scheme}://{rest}")
    query = [(k, v) for k, v in parse_qsl(s.query, keep_blank_values=True) if not is_secret_param(k)]
    return urlunsplit((s.scheme, s.netloc, s.path, urlencode(query, safe=":/"), s.fragment))


def holds_secret(location: str) -> bool:
    """Does this URI carry a user or password, or a secret query parameter? (By its parts: ``strip`` asks this.)"""
    if "://" not in location:
        return False
    return split_userinfo(location)[1] is not None or any(map(is_secret_param, _query(location)))


def is_secret_param(name: str) -> bool:
    """Is a URI query parameter of this name a secret (``SECRET_PARAMS``, or a name holding ``SECRET_PARTS``)?"""
    name = name.lower()
    return name in SECRET_PARAMS or (name not in NOT_SECRET_PARAMS and any(part in name for part in SECRET_PARTS))


def _query(location: str) -> dict[str, str]:
    """A URI's query parameters, names lower-cased."""
    return {k.lower(): v for k, v in parse_qsl(location.split("?", 1)[1] if "?" in location else "",
                                               keep_blank_values=True)}


def _key(location: str) -> str:
    """Where a location points, without credentials, query or trailing slash, behind its endpoint (a MinIO
    bucket's pair is not AWS's bucket of the same name's): what pairs are kept under."""
    scheme, _, rest = split_userinfo(location)
    where = rest.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    return f"{_query(rest).get('endpoint_override', '')}@{scheme}://{where}"


def pair(location: str) -> Optional[dict]:
    """The credentials written into a URI (userinfo, or ``access_key``/``secret_key``/``session_token`` in the
    query), unquoted; None without a complete pair."""
    scheme, userinfo, rest = split_userinfo(location)
    query = _query(rest)
    key = secret = None
    if userinfo is not None:
        user, _, password = userinfo.partition(":")
        key, secret = unquote(user), unquote(password)
    key, secret = key or query.get("access_key"), secret or query.get("secret_key")
    if not (key and secret):
        return None
    found = {"access_key": key, "secret_key": secret}
    if query.get("session_token"):
        found["session_token"] = query["session_token"]
    return found


def adopt(location: str, *, folder: bool = False) -> str:
    """Keep the credentials of ``location`` (if any) in memory under it (``folder``: under the folder holding it, for
    the many files a manifest lists); the location without them comes back."""
    if "://" not in location:
        return location
    unkept = sorted(name for name in _query(location) if is_secret_param(name) and name not in KEPT_PARAMS)
    if unkept:
        from .errors import ConfigError

        raise ConfigError(f"{strip(location)} holds {', '.join(unkept)} in its query: only S3 key pairs are kept out "
                          f"of what orchestrator stores and prints; write the URI without it and give the secret "
                          f"through the environment (Azure: AZURE_CLIENT_SECRET / AZURE_STORAGE_ACCOUNT_KEY; "
                          f"GCS: GOOGLE_APPLICATION_CREDENTIALS; S3: AWS_*)")
    found = pair(location)
    if found is not None:
        _BY_LOCATION[_key(location).rsplit("/", 1)[0] if folder else _key(location)] = found
    return strip(location)


def lookup(location: str) -> Optional[dict]:
    """The pair adopted for ``location`` or a folder above it (the longest match), else from this job's actor when
    in a Ray worker, else None (the environment's then)."""
    key = _key(location)
    matches = [k for k in _BY_LOCATION if key == k or key.startswith(k + "/")]
    if not matches:
        _fetch_from_job()
        matches = [k for k in _BY_LOCATION if key == k or key.startswith(k + "/")]
    return dict(_BY_LOCATION[max(matches, key=len)]) if matches else None


def install(pairs: dict[str, dict]) -> None:
    _BY_LOCATION.update(pairs)


def forget() -> None:
    """Drop every adopted pair (tests)."""
    _BY_LOCATION.clear()


class _Holder:
    """The job's pairs, for its Ray processes (an actor: what it returns travels through the object store)."""

    def __init__(self):
        self._pairs: dict = {}

    def put(self, pairs: dict) -> None:
        self._pairs.update(pairs)

    def get(self) -> dict:
        return dict(self._pairs)


def publish() -> None:
    """Hand this process's pairs to the job's holder actor (made once; it ends with the job). No-op without pairs."""
    import ray

    if not _BY_LOCATION or not ray.is_initialized():
        return
    context = ray.get_runtime_context()
    job = context.get_job_id()
    ray_of_job = (job, context.get_node_id())   # a new Ray (after ray.shutdown) numbers its jobs from 1 again
    if _HOLDER.get("job") != ray_of_job:   # a named actor dies with the handle that made it: this process keeps that
        # one for the job's life (a handle from get_if_exists does not keep it: a second publish killed the holder)
        made = ray.remote(num_cpus=0)(_Holder).options(name=ACTOR_PREFIX + job, get_if_exists=True, lifetime=None)
        _HOLDER.update(job=ray_of_job, handle=made.remote())
    ray.get(_HOLDER["handle"].put.remote(dict(_BY_LOCATION)))


_HOLDER: dict = {}


def _fetch_from_job() -> None:
    """In a Ray worker of a job that published pairs: copy them here. Asked on every miss, not once: the driver may
    publish pairs after this process's first lookup (a miss is an ``s3://`` location, which costs a request anyway)."""
    try:
        import ray

        if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
            return
        holder = ray.get_actor(ACTOR_PREFIX + ray.get_runtime_context().get_job_id())
        install(ray.get(holder.get.remote(), timeout=60))
    except (ValueError, ImportError):      # no holder: this job adopted nothing
        return
