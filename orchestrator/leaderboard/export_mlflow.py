"""Leaderboard rows -> MLflow (the optional extra ``orchestrator[mlflow]``): an MLflow experiment per experiment, a
parent run per sweep, and a nested run per trial with its hyperparameters as params, its final and per-epoch
metrics (step = epoch), tags (experiment, sweep, status, Δm%, row id, checkpoint) and its start and end times.

Exporting again finds the runs by their ``row_id`` tag: a finished run gets its tags refreshed, nothing is logged
twice. A run that an earlier export left unfinished (killed midway: no ``orchestrator.complete`` tag) is deleted and
written again, unless its writing began less than ``WRITING_S`` ago (tag ``orchestrator.writing``): then another
export is writing it now, and it is left to that one (counted ``in_progress``). Any tracking URI MLflow accepts
works (``sqlite:///mlflow.db``, ``http://host:5000``, ...)."""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Optional

import pyarrow as pa

from ..errors import ConfigError
from ..storage import first_line, redact
from .flat import WORK_MARKS, exported_points, hparam_columns, metric_columns
from .query import rows as row_dicts
from .ranking import UNRANKED

KIND, COMPLETE, WRITING = "orchestrator.kind", "orchestrator.complete", "orchestrator.writing"
WRITING_S = 600.0   # a trial run is written in seconds: one unfinished for longer was left by a killed export
TAGS = ("experiment", "sweep_id", "trial_id", "status", "reason", "delta_m_pct", "row_id", "checkpoint", "kind",
        *WORK_MARKS)


def export_mlflow(table: pa.Table, uri: str, *, chain: dict | None = None) -> dict:
    """Write the rows of ``table`` to the MLflow tracking server or database at ``uri``; ``chain``: row id -> the
    row it supersedes, of every row held (``ranking.reruns``), so a rerun's run replaces the run of any row before."""
    counts = {"target": "mlflow", "rows": table.num_rows, "to": redact(uri), "created": 0, "updated": 0,
              "in_progress": 0}
    names = {"params": hparam_columns(table), "metrics": metric_columns(table)}
    with _quiet():   # the client too: a new SQLite store logs its tables' creation as it opens
        client, errors = _client(uri)
        return _export(client, errors, table, uri, counts=counts, names=names, chain=chain or {})


def _export(client, errors, table: pa.Table, uri: str, *, counts: dict, names: dict, chain: dict) -> dict:
    try:
        by_experiment: dict[str, list[dict]] = {}
        for row in row_dicts(table):
            by_experiment.setdefault(row.get("experiment") or "default", []).append(row)
        for experiment, rows in by_experiment.items():
            exp_id = _experiment_id(client, experiment)
            sweeps, trials = _existing(client, exp_id)
            for row in rows:
                sweep = row.get("sweep_id") or ""   # as the parent run's tag holds it
                if sweep not in sweeps:
                    sweeps[sweep] = _sweep_run(client, exp_id, experiment, row.get("sweep_id"))
                before, seen = row.get("supersedes"), set()
                while before is not None and before not in seen:   # the failed runs a rerun replaces, however many
                    seen.add(before)                                 # reruns ago: no query shows them any more
                    stale = trials.pop(before, None)
                    if stale is not None:
                        client.delete_run(stale.info.run_id)
                    before = chain.get(before)
                counts[_trial_run(client, exp_id, row, parent=sweeps[sweep], found=trials.get(row["row_id"]),
                                  names=names)] += 1
    except errors as e:
        raise ConfigError(f"MLflow at {redact(uri)} refused the export: {first_line(e, 200)}") from None
    return counts


@contextlib.contextmanager
def _quiet():
    """MLflow's and alembic's INFO lines (a new sqlite store's tables) off the console."""
    with contextlib.suppress(ImportError):
        import mlflow  # noqa: F401 - its import sets its loggers' levels: first, so these hold
    quiet = [(lg, lg.level) for lg in map(logging.getLogger, ("mlflow", "alembic"))]
    for lg, _ in quiet:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in quiet:
            lg.setLevel(level)


def reach(uri: str) -> None:
    """An HTTP tracking server must answer a connection (endpoints.CONNECT_S): MLflow's client retries a refused one
    with backoff for minutes, silently."""
    from urllib.parse import urlsplit

    from ..endpoints import unreachable

    s = urlsplit(uri)
    if s.scheme not in ("http", "https") or not s.hostname:
        return
    try:
        port = s.port or (443 if s.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"MLflow address {redact(uri)} has no valid port: e.g. http://HOST:5000") from None
    why = unreachable(s.scheme, s.hostname, port)
    if why is not None:
        raise ConfigError(f"cannot reach MLflow at {redact(uri)} ({why}): start it (mlflow server "
                          f"--host 0.0.0.0 --port {s.port or 5000}) or fix the address")


def _client(uri: str):
    try:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise ConfigError("exporting to MLflow needs the mlflow extra: pip install 'orchestrator[mlflow]'") from None
    reach(uri)
    try:
        return MlflowClient(tracking_uri=uri), (MlflowException,)
    except MlflowException as e:   # a tracking URI it refuses (MLflow 3: a file store)
        raise ConfigError(f"MLflow refused the tracking URI {redact(uri)} ({first_line(e, 200).split('. ')[0]}): give "
                          f"a database or server URI, e.g. mlflow:sqlite:///mlflow.db") from None


def _experiment_id(client, name: str) -> str:
    found = _not_deleted(client, name)
    return found.experiment_id if found is not None else client.create_experiment(name, tags={KIND: "experiment"})


def _not_deleted(client, name: str):
    """The MLflow experiment ``name`` (None: there is none); ConfigError if someone deleted it: theirs to bring
    back, not ours (MLflow refuses runs in it)."""
    found = client.get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage != "active":
        raise ConfigError(f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore "
                          f"--experiment-id {found.experiment_id}) or remove it for good, then run again")
    return found


def check_experiment(uri: str, name: str) -> None:
    """Before a sweep logs live to ``uri``: the server answers, and its experiment ``name`` is not a deleted one."""
    with _quiet():   # the client too: a new SQLite store logs its tables' creation as it opens
        client, errors = _client(uri)
    try:
        with _quiet():
            _not_deleted(client, name)
    except errors as e:
        raise ConfigError(f"MLflow at {redact(uri)} refused: {first_line(e, 200)}") from None


def _existing(client, exp_id: str) -> tuple[dict, dict]:
    """(sweep id -> parent run id, row id -> trial run) of the runs already in the experiment."""
    sweeps, trials, token = {}, {}, None
    while True:
        page = client.search_runs([exp_id], max_results=1000, page_token=token)
        for run in page:
            tags = run.data.tags
            if tags.get(KIND) == "sweep" and tags.get("sweep_id") not in sweeps:
                sweeps[tags.get("sweep_id")] = run.info.run_id
            elif tags.get(KIND) == "trial" and tags.get("row_id"):
                trials[tags["row_id"]] = run
        token = page.token
        if not token:
            return sweeps, trials


def _sweep_run(client, exp_id: str, experiment: str, sweep_id: Optional[str]) -> str:
    run = client.create_run(exp_id, run_name=sweep_id or "sweep",
                            tags={KIND: "sweep", "experiment": experiment, "sweep_id": sweep_id or ""})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _trial_run(client, exp_id: str, row: dict, *, parent: str, found, names: dict) -> str:
    """Create (or refresh the tags of) one trial's run: "created", "updated" (it was complete), or "in_progress"
    (another export began writing it less than WRITING_S ago)."""
    from mlflow.entities import Metric

    tags, params, points = trial_record(row, params=names["params"], metrics=names["metrics"])
    tags["mlflow.parentRunId"] = parent
    now = int(time.time() * 1000)
    if found is not None and found.data.tags.get(COMPLETE) == "1":
        _log(client, found.info.run_id, tags=tags)
        return "updated"
    if found is not None and now - int(found.data.tags.get(WRITING) or 0) < WRITING_S * 1000:
        return "in_progress"
    if found is not None:                   # left unfinished by a killed export: write it again
        client.delete_run(found.info.run_id)
    start = _ms(row.get("started_at")) or _ms(row.get("created_at"))
    run_id = client.create_run(exp_id, start_time=start, tags={**tags, WRITING: str(now)},
                               run_name=tags["mlflow.runName"]).info.run_id
    when = _ms(row.get("created_at")) or now
    _log(client, run_id, params=params, metrics=[Metric(key, value, when, step) for step, key, value in points])
    _log(client, run_id, tags={COMPLETE: "1"})
    client.set_terminated(run_id, "FAILED" if row.get("status") in UNRANKED else "FINISHED",
                          end_time=_ms(row.get("created_at")))
    return "created"


def trial_record(row: dict, *, params: list[str], metrics: list[str]) -> tuple[dict, dict, list]:
    """One row as MLflow sees it: (tags, params, metric points (step, key, value), see ``flat.row_points``)."""
    tags = {KIND: "trial", "mlflow.runName": str(row.get("trial_id") or row["row_id"])}
    tags.update({k: str(row[k]) for k in TAGS if row.get(k) is not None})
    return tags, {k: str(row[k]) for k in params if row.get(k) is not None}, exported_points(row, metrics)


def _log(client, run_id: str, *, params: Optional[dict] = None, metrics: Optional[list] = None,
         tags: Optional[dict] = None) -> None:
    """``log_batch`` within MLflow's limits (100 params or tags, 1000 metrics per call)."""
    from mlflow.entities import Param, RunTag

    params = [Param(k, v) for k, v in (params or {}).items()]
    tags = [RunTag(k, v) for k, v in (tags or {}).items()]
    metrics = metrics or []
    for i in range(0, max(len(params), len(tags), 1), 100):
        client.log_batch(run_id, params=params[i:i + 100], tags=tags[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])


def _ms(value) -> Optional[int]:
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else None
