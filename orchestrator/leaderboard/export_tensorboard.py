"""Leaderboard rows -> TensorBoard's HParams dashboard: ``DIR/<experiment>/`` holds the experiment's HParams config
(every hyperparameter with its domain, every metric), and ``DIR/<experiment>/<sweep>/<trial>/`` one session per
trial (its hyperparameter values and status) next to its per-epoch scalars (step = epoch, from the row's history),
so the table, the parallel coordinates and the scatter plots show every trial and link to its curves.

``tensorboard --logdir DIR/<experiment>``. The protos come from TensorBoard's own hparams API (no TensorFlow
needed); each event file has a fixed name and is written whole, so exporting again replaces it."""
from __future__ import annotations

import io
import time
from typing import Optional

import pyarrow as pa

from .. import storage
from ..errors import ConfigError
from .flat import WORK_MARKS, exported_points, hparam_columns, metric_columns
from .query import rows as row_dicts

EVENTS = "events.out.tfevents.0.orchestrator-export"


def export_tensorboard(table: pa.Table, location: str) -> dict:
    """Write the rows of ``table`` as HParams sessions under ``location`` (a local path or URI)."""
    try:                                   # before any file is written
        import tensorboard.plugins.hparams.summary_v2  # noqa: F401
    except ImportError:
        raise ConfigError("exporting to TensorBoard needs the tensorboard extra: "
                          "pip install 'orchestrator[tensorboard]'") from None
    by_experiment: dict[str, list[dict]] = {}
    for row in row_dicts(table):
        by_experiment.setdefault(row.get("experiment") or "default", []).append(row)
    marks = [c for c in WORK_MARKS if c in table.column_names and table.column(c).null_count < table.num_rows]
    params, metric_names = hparam_columns(table) + marks, metric_columns(table)   # marks: to filter repeats out
    sessions = 0
    for experiment, rows in by_experiment.items():
        root = storage.join(location, experiment) if storage.is_uri(location) else f"{location}/{experiment}"
        points = {row["row_id"]: exported_points(row, metric_names) for row in rows}
        seen = sorted({key for p in points.values() for _, key, _ in p})
        storage.atomic_write(f"{root}/{EVENTS}" if not storage.is_uri(root) else storage.join(root, EVENTS),
                             _events([(0, _config(rows, params, seen))]))
        for row in rows:
            run = [str(row.get("sweep_id") or "sweep"), str(row.get("trial_id") or row["row_id"]), EVENTS]
            where = storage.join(root, *run) if storage.is_uri(root) else "/".join([root, *run])
            storage.atomic_write(where, _events(_session(row, params, points[row["row_id"]])))
            sessions += 1
    return {"target": "tensorboard", "rows": table.num_rows, "to": storage.redact(location), "sessions": sessions}


def _config(rows: list[dict], params: list[str], metric_names: list[str]):
    """The HParams experiment config: each hyperparameter's domain (interval of numbers, or the values seen)."""
    from tensorboard.plugins.hparams import summary_v2 as hp

    infos = []
    for name in params:
        values = [r[name] for r in rows if r.get(name) is not None]
        if not values:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            whole = all(isinstance(v, int) for v in values)
            domain = (hp.IntInterval(min(values), max(values)) if whole
                      else hp.RealInterval(float(min(values)), float(max(values))))
        else:
            domain = hp.Discrete(sorted({v if isinstance(v, (bool, str)) else str(v) for v in values}, key=str))
        infos.append(hp.HParam(name, domain))
    return hp.hparams_config_pb(infos, [hp.Metric(m) for m in metric_names], time_created_secs=time.time())


def _session(row: dict, params: list[str], points: list) -> list:
    """One trial: session start (hyperparameter values), its scalars, session end (status)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp

    values = {k: row[k] if isinstance(row[k], (bool, int, float, str)) else str(row[k])
              for k in params if row.get(k) is not None}
    start = _seconds(row.get("started_at"))
    summaries = [(0, hp.hparams_pb(values, trial_id=str(row.get("trial_id") or row["row_id"]),
                                   start_time_secs=start))]
    summaries += [(step, Summary(value=[Summary.Value(tag=key, simple_value=value)])) for step, key, value in points]
    status = {"completed": api_pb2.STATUS_SUCCESS, "stopped": api_pb2.STATUS_SUCCESS, "failed": api_pb2.STATUS_FAILURE,
              "diverged": api_pb2.STATUS_FAILURE}.get(row.get("status"), api_pb2.STATUS_UNKNOWN)
    end = plugin_data_pb2.HParamsPluginData(session_end_info=plugin_data_pb2.SessionEndInfo(
        status=status, end_time_secs=_seconds(row.get("created_at")) or 0.0))
    summaries.append((max((s for s, _, _ in points), default=0), Summary(value=[Summary.Value(
        tag=metadata.SESSION_END_INFO_TAG, metadata=metadata.create_summary_metadata(end))])))
    return summaries


def _events(summaries: list) -> bytes:
    """An event file's bytes: the version record, then one event per (step, Summary)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    buffer, now = io.BytesIO(), time.time()
    writer = RecordWriter(buffer)
    writer.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
    for step, summary in summaries:
        writer.write(Event(wall_time=now, step=step, summary=summary).SerializeToString())
    return buffer.getvalue()


def _seconds(value) -> Optional[float]:
    return value.timestamp() if hasattr(value, "timestamp") else None
