"""Ranking, one place for each fact: a metric's direction as a sign on a column (``metrics.sign``; the objective's
per row, from ``objective_mode``), which rows are trials, which rows a ranking may pick (never failed or diverged
ones), which rows are current (not superseded by a rerun), Pareto fronts, and the confirmed ranking. Pure: numpy and
pyarrow, no files."""
from __future__ import annotations

import json
import statistics
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config.revision import TRAINING_REVISION, revision_of
from ..metrics import direction, finite, objective_identity, sign

OBJECTIVES = ("objective", "best_objective")   # their direction is each row's objective_mode
TIE_BREAKS = ("created_at", "row_id")             # what orders rows of equal value (best_first): reached first wins
ROW_KINDS = ("trial", "baseline", "confirm", "ablation")   # what a row is: a sweep's trial, or a run of another command
UNRANKED = ("failed", "diverged")               # statuses no ranking picks: best, top, confirm, warm starts, fronts


def config_of(row: dict) -> Optional[dict]:
    """A row's config as a dict (its JSON column parsed); None for a row without one."""
    config = row.get("config")
    config = json.loads(config) if isinstance(config, str) else config
    return config if isinstance(config, dict) else None


def objective_of(row: dict) -> Optional[str]:
    """What a row's objective measures (``metrics.objective_identity``: with each task's score metric where it
    combines them), from its config; its objective metric alone for a row without one."""
    config = config_of(row)
    if config is None or not row.get("objective_metric"):
        return row.get("objective_metric")
    return objective_identity(row["objective_metric"], config.get("tasks") or {})


def objectives_apart(rows: list[dict]) -> dict[str, dict[str, set]]:
    """What the rows' objectives measure (``objective_of``) -> {"experiments", "kinds"} of its rows: more than one
    entry, and their values do not compare. A row without a config (its tasks unknown) is no other objective beside
    rows of its metric that have one."""
    found: dict = {}
    for r in rows:
        measured = objective_of(r)   # parses the row's config: once
        if measured:
            entry = found.setdefault(measured, {"experiments": set(), "kinds": set(), "tasks": set()})
            entry["experiments"].add(str(r.get("experiment")))
            entry["kinds"].add(kind_of(r))
            entry["tasks"] |= {r["baseline_task"]} if r.get("baseline_task") else set()
    known = {i.split(" of ", 1)[0] for i in found if " of " in i}
    return {i: e for i, e in found.items() if i not in known}


def objective_groups(rows: list[dict]) -> list[Optional[str]]:
    """Each row's objective as ``objectives_apart`` groups them: a row without a config (its metric alone) with the
    rows of its metric that have one, where those measure one objective."""
    keys = [objective_of(r) for r in rows]
    full = {k for k in keys if k and " of " in k}
    out = []
    for k in keys:
        same = [f for f in full if k and " of " not in k and f.startswith(f"{k} of ")]
        out.append(same[0] if len(same) == 1 else k)
    return out


def apart_line(apart: dict[str, dict[str, set]], *, verb: str) -> str:
    """The objectives ``objectives_apart`` found, by experiment, and what to narrow (``verb`` one experiment, one
    kind: whichever the rows span)."""
    named = "; ".join(f"{m}: {', '.join(sorted(e['experiments']))}" for m, e in sorted(apart.items()))
    tasks = sorted(set().union(*(e["tasks"] for e in apart.values())))   # baselines of one kind and experiment
    wide = [what for what, key in (("experiment with -e", "experiments"), ("kind with --kind", "kinds"))
            if len(set().union(*(e[key] for e in apart.values()))) > 1] or [
        f"task with --where \"baseline_task == '{tasks[0]}'\"" if tasks else "experiment with -e"]
    return f"other objectives ({named}), whose values do not compare: {verb} one {' and one '.join(wide)}"


def kind_of(row: dict) -> str:
    """A row's kind; rows written before kinds existed are trials."""
    return row.get("kind") or "trial"


def signed(light: pa.Table, metric: str) -> pa.ChunkedArray:
    """``metric`` signed so that higher is better: the registry's direction, each row's ``objective_mode`` for the
    objective (rows without one count as max); columns of unknown direction count as max."""
    values = light.column(metric).cast(pa.float64())
    if metric in OBJECTIVES:
        if "objective_mode" not in light.column_names:
            return values
        per_row = pc.if_else(pc.equal(light.column("objective_mode"), "min"), sign("min"), sign("max"))
        return pc.multiply(values, per_row.fill_null(sign("max")))
    return pc.multiply(values, sign(direction(metric)))


def pickable(row: dict) -> bool:
    """A row a ranking may pick (``ranked`` for one row): a failed trial keeps the scores it reported before it
    failed, and none of its scores compete."""
    return row.get("status") not in UNRANKED


def ranked(schema_names) -> pc.Expression:
    """The rows a ranking may pick: any status but ``UNRANKED`` (rows without a status are from before statuses)."""
    if "status" not in schema_names:
        return pc.scalar(True)
    return pc.field("status").is_null() | ~pc.field("status").isin(list(UNRANKED))


def current(light: pa.Table) -> pa.Table:
    """``light`` without the rows another row supersedes (a rerun's row names the stale row it replaces in
    ``supersedes``: a resumed sweep's rerun of an errored trial)."""
    if "supersedes" not in light.column_names:
        return light
    stale = pc.drop_null(pc.unique(light.column("supersedes")))
    if len(stale) == 0:
        return light
    return light.filter(pc.invert(pc.is_in(light.column("row_id"), value_set=stale)))


def reruns(table: pa.Table) -> dict:
    """Row id -> the row id it supersedes (None), of every row of ``table`` (``Leaderboard.reruns``)."""
    ids = table.column("row_id").to_pylist() if table.num_rows else []
    named = table.column("supersedes").to_pylist() if "supersedes" in table.column_names else [None] * len(ids)
    return dict(zip(ids, named))


def best_first(light: pa.Table, metric: str, *, ascending: Optional[bool] = None,
               after: Optional[pa.Array] = None) -> pa.Array:
    """Row indices, best ``metric`` first (``signed``; or by its raw value if ``ascending`` is given), rows without a
    value last, the rows ``after`` marks after the others, and rows of ``UNRANKED`` statuses after all; of tied rows
    the earlier (``created_at``) first, then the lower row id: the files' order is no order (names hold a random
    part)."""
    if ascending is None:
        key, order = signed(light, metric), "descending"
    else:
        key, order = light.column(metric).cast(pa.float64()), "ascending" if ascending else "descending"
    keys = {"key": key} if after is None else {"after": after, "key": key}
    if "status" in light.column_names:
        keys = {"unranked": pc.fill_null(pc.is_in(light.column("status"), value_set=pa.array(UNRANKED)), False), **keys}
    keys.update({tie: light.column(tie) for tie in TIE_BREAKS if tie in light.column_names})
    sort = [(k, order if k == "key" else "ascending", "at_end") for k in keys]
    return pc.sort_indices(pa.table(keys), sort_keys=sort)


def compared(light: pa.Table, metric: str) -> list[bool]:
    """Which rows a ranking by ``metric`` compares: of ranked statuses, measured like their experiment's newest
    (``newest_versions``)."""
    pickable_rows = light.filter(ranked(light.column_names))
    ids = set(newest_versions(pickable_rows, by=[metric]).column("row_id").to_pylist() if pickable_rows.num_rows
              else ())
    return [r in ids for r in light.column("row_id").to_pylist()]


def listed(light: pa.Table, metric: str, *, ascending: Optional[bool] = None, compared_rows: list[bool]) -> tuple:
    """A listing's order and rank numbers: the ``compared_rows`` first, best first and numbered where they have a
    value; then the others (another measurement, failed, diverged), unnumbered."""
    order = best_first(light, metric, ascending=ascending, after=pa.array([not c for c in compared_rows], pa.bool_()))
    values, ranks, n = light.column(metric).to_pylist(), [], 0
    for i in order.to_pylist():
        numbered = compared_rows[i] and finite(values[i]) is not None
        n += numbered
        ranks.append(n if numbered else None)
    return order, ranks


def front_rows(light: pa.Table, metrics: list[str]) -> np.ndarray:
    """Indices of the non-dominated rows for ``metrics`` (each ``signed``), best first by the first metric; rows
    missing any of the metrics are left out, rows that tie on every metric are all kept."""
    values = np.column_stack([signed(light, m).to_numpy(zero_copy_only=False) for m in metrics])
    complete = np.flatnonzero(np.isfinite(values).all(axis=1))
    return complete[front(values[complete])]


def confirmed(rows: list[dict], *, originals: Optional[dict] = None) -> list[dict]:
    """Configurations with confirmation runs (rows of kind ``confirm``, grouped by ``confirm_of``; runs without a
    finite objective left out; one row per seed: the newest, a merged copy only where its own run is not there,
    ``each_work_once``; only runs of the newest confirmation run's training revision and data, ``newest_version``,
    for every configuration: runs of older code or data are another measurement), best mean first in the objective's
    direction: n, mean, sample std, seeds, the objectives, the config, and the original trial's objective
    (``originals``: trial id -> its row). A configuration with a diverged or failed run (``diverged``, ``failed``:
    their seeds) ranks after those without: its mean is over the seeds that completed; one with none (n 0, mean
    None) ranks last."""
    runs = [r for r in each_work_once([r for r in rows if kind_of(r) == "confirm"]) if r.get("confirm_of") and (
        (finite(r.get("objective")) is not None and pickable(r)) or r.get("status") in UNRANKED)]   # copies: of
    # confirm runs (an ablation run of the same work at the same seed is no reason to leave one out)
    groups: dict[str, list[dict]] = {}   # one code and data (one measurement), then one row per run (`confirm`
    for row in per_seed(newest_version(runs) if runs else [], by=("confirm_of",)):   # again, or a merged copy)
        groups.setdefault(row["confirm_of"], []).append(row)
    ranked = []
    for trial_id, runs in groups.items():
        group = [r for r in runs if r.get("status") not in UNRANKED]
        values, first = [r["objective"] for r in group], (group or runs)[0]
        lost = {status: sorted(r.get("seed") for r in runs if r.get("status") == status) for status in UNRANKED}
        ranked.append({"confirm_of": trial_id, "n": len(values), "objectives": values, **lost,
                       "mean": statistics.fmean(values) if values else None, "std": spread(values),
                       "mode": first.get("objective_mode") or "max", "config": first.get("config"),
                       "seeds": sorted(r.get("seed") for r in group), "freeze_depth": first.get("freeze_depth"),
                       "original": finite((originals or {}).get(trial_id, {}).get("objective"))})
    return sorted(ranked, key=lambda c: (not c["n"], bool(c["diverged"] or c["failed"]),
                                         -sign(c["mode"]) * (c["mean"] or 0.0)))


def per_seed(rows: list[dict], *, by: tuple) -> list[dict]:
    """The newest row of each (``by`` columns, seed) among ``rows`` (of one measurement): a run done again, or a
    merged copy, is one run (a row without a seed is its own)."""
    newest: dict[tuple, dict] = {}
    for row in sorted(rows, key=lambda r: str(r.get("created_at") or "")):
        seed = row.get("seed")
        newest[(*(row.get(c) for c in by), seed if seed is not None else row.get("row_id"))] = row
    return list(newest.values())


def data_of(row: dict) -> Optional[str]:
    """The data fingerprint a row is measured by: its own, or, merged from a copy of this storage's data elsewhere,
    this storage's (``data_alias``, ``leaderboard.merge.DataAliases``)."""
    return row.get("data_alias") or row.get("data_fingerprint")


def done_work(rows: list[dict], experiment: str, config_hashes: tuple[str, ...], *, fingerprint: Optional[str],
              epochs: Optional[int] = None) -> Optional[dict]:
    """The first of ``rows`` that is done work of these config hashes (which cover the seed; the hashes of one work:
    ``config.freezing.hashes_of_same_work``) in ``experiment``, on the
    data with this fingerprint (``data_of``): completed (or, given ``epochs``, completed or stopped after as many
    epochs: the same work as a stopped trial's), and the work's own row (not one naming another, ``duplicate_of``)."""
    ended = ("completed",) if epochs is None else ("completed", "stopped")
    return next((r for r in rows if r.get("status") in ended and not r.get("duplicate_of")
                 and (epochs is None or r.get("epochs") == epochs)
                 and r.get("config_hash") in config_hashes
                 and (r.get("experiment"), data_of(r)) == (experiment, fingerprint)), None)


def once_per_work(ids: list, duplicate_of: list) -> list[int]:
    """Indices of one row per work among these rows: the work's own row (the row id others name in ``duplicate_of``:
    a merged copy, a sweep's reuse of work done before) when they hold it, else the first row naming it. So a row of
    work counted elsewhere is left out only where that row is in the same read: alpha's trial hides beta's copy
    of it in a read of both, not in a read of beta alone."""
    chosen: dict = {}
    for i, (row_id, dup) in enumerate(zip(ids, duplicate_of)):
        work = dup or row_id or ("no row id", i)   # a row without an id (hand-made) is a work of its own
        if work not in chosen or row_id == work:
            chosen[work] = i
    return sorted(chosen.values())


def each_work_once(rows: list[dict]) -> list[dict]:
    """``once_per_work`` over row dicts."""
    return [rows[i] for i in once_per_work([r.get("row_id") for r in rows], [r.get("duplicate_of") for r in rows])]


def spread(values: list[float]) -> Optional[float]:
    """The sample std over seeds; None for one seed, which measures no spread (0 would claim certainty)."""
    return statistics.stdev(values) if len(values) > 1 else None


VERSION_COLUMNS = ("experiment", "training_revision", "data_fingerprint", "data_alias", "objective_metric",
                   "baselines_id", "created_at")   # what newest_versions reads


def newest_versions(light: pa.Table, *, by=()) -> pa.Table:
    """Per experiment, the rows measured like its newest one (``newest_version``): the rows a ranking (``by`` these
    columns) compares. Rows alike in every version column but created_at are one version: ``newest_version`` reads
    one row per version (its first newest: what ``max`` keeps of equals), so the Python pass is over versions, not
    rows (a leaderboard's queries read 100,000 rows)."""
    names = [c for c in VERSION_COLUMNS if c in light.column_names and c != "created_at"]
    if light.num_rows == 0:
        return light
    group, stamp = _version_ids(light, names), _stamp_ranks(light)
    order = np.lexsort((-np.arange(light.num_rows), stamp, group))   # by version, its first newest row last
    sorted_group = group[order]
    firsts = np.sort(order[np.r_[sorted_group[1:] != sorted_group[:-1], True]])
    reps = light.select(names + (["created_at"] if "created_at" in light.column_names else [])).take(firsts)
    by_experiment: dict = {}
    for i, row in zip(firsts.tolist(), reps.to_pylist() if reps.num_columns else [{}] * len(firsts)):
        by_experiment.setdefault(row.get("experiment"), []).append({**row, "_version": int(group[i])})
    kept = [r["_version"] for rows in by_experiment.values() for r in newest_version(rows, by=by)]
    keep = np.flatnonzero(np.isin(group, kept))
    return light if len(keep) == light.num_rows else light.take(keep)


def _version_ids(light: pa.Table, names: list[str]) -> np.ndarray:
    """One integer per row, equal where the rows are equal in every column of ``names`` (nulls alike)."""
    ids = np.zeros(light.num_rows, dtype=np.int64)
    for name in names:
        column = light.column(name)
        if pa.types.is_null(column.type):
            continue
        column = column.combine_chunks()
        column = column.dictionary_decode() if pa.types.is_dictionary(column.type) else column   # its nulls encoded
        encoded = pc.dictionary_encode(column, null_encoding="encode")
        ids = np.unique(ids * len(encoded.dictionary) + encoded.indices.to_numpy(zero_copy_only=False),
                        return_inverse=True)[1].reshape(-1)
    return ids


def _stamp_ranks(light: pa.Table) -> np.ndarray:
    """Each row's created_at as ``newest_first`` orders them (none and "" alike, before any time), as integers."""
    if "created_at" not in light.column_names or pa.types.is_null(light.column("created_at").type):
        return np.zeros(light.num_rows, dtype=np.int64)
    column = light.column("created_at").combine_chunks()
    if pa.types.is_timestamp(column.type):   # in time's order already: none first
        return pc.fill_null(column.cast(pa.int64()), np.iinfo(np.int64).min).to_numpy(zero_copy_only=False)
    ranks = pc.rank(pc.fill_null(column.cast(pa.string()), ""), sort_keys="ascending", tiebreaker="dense")
    return ranks.to_numpy(zero_copy_only=False).astype(np.int64)


def newest_first(row: dict) -> tuple:
    """A row's place in time for "the newest measurement": its training revision (a newer release's taken as this
    code's: this code cannot tell what it measures), then when it was written: an older release's rows merged in
    later do not take over. ``_stamp_ranks`` orders a column's created_at so: keep the two in step."""
    return min(revision_of(row), TRAINING_REVISION), str(row.get("created_at") or "")


def newest_version(rows: list[dict], *, by=(), judge: Callable[[dict], bool] = lambda r: True) -> list[dict]:
    """The rows measured like the newest one: the same training revision (none: 1) and data fingerprint, and under
    objective delta_m, or ranked ``by`` delta_m_pct, the same baselines (a sweep's base config with other epochs or
    rates trains others). Runs of older code, on the data before a rewrite, or against other baselines are another
    measurement and are not pooled with it. ``judge``: the rows whose newest decides (all, if none passes): the
    report's, ``pickable``, as the leaderboard's queries rank, keeping the failed rows of that measurement."""
    def version(r: dict) -> tuple:
        scale = r.get("baselines_id") if "delta_m_pct" in by or r.get("objective_metric") == "delta_m" else None
        return revision_of(r), data_of(r), scale

    latest = version(max([r for r in rows if judge(r)] or rows, key=newest_first))
    return [r for r in rows if version(r) == latest]


def front(values: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of ``values`` (n x d, higher is better in every column, all finite),
    best first by the first column. A row is dominated when another is at least as good everywhere and better
    somewhere; rows equal on every column do not dominate each other, so ties are all kept."""
    n, d = values.shape
    order = np.lexsort([-values[:, k] for k in reversed(range(d))])     # descending, first column first
    if n == 0:
        return order
    if d == 2:                     # one pass: best y among rows with a strictly greater x
        xs, ys = values[order, 0], values[order, 1]
        first = np.r_[True, xs[1:] != xs[:-1]]
        group = np.cumsum(first) - 1
        group_best = ys[first]
        before = np.r_[-np.inf, np.maximum.accumulate(group_best)[:-1]]
        return order[(ys == group_best[group]) & (ys > before[group])]
    kept: list[int] = []
    for i in order:                # a dominating row always sorts before the rows it dominates
        p = values[i]
        if kept:
            f = values[kept]
            if np.any(np.all(f >= p, axis=1) & np.any(f > p, axis=1)):
                continue
        kept.append(int(i))
    return np.array(kept, dtype=np.int64)
