"""An experiment's report: its leaderboard rows -> PNG plots and a one-page ``report.md`` (README, "Reports").

``write_report`` reads the experiment's rows once, ranks them with ``leaderboard.ranking`` (directions from the
metric registry), computes the numbers (``numbers.summarize``, pure), draws the plots (``plots``) and writes each
file atomically, to a local folder or a URI. Measured numbers are shown with 4 significant digits.
"""
from __future__ import annotations

import io
import os
from collections import Counter
from typing import Optional

import pyarrow as pa

from .. import storage
from ..config.revision import revision_of
from ..errors import ConfigError
from ..leaderboard import ranking
from ..leaderboard.query import rows as row_dicts
from . import fronts, mattered, plots
from .numbers import NO_OBJECTIVE, finite, fmt, front_candidates, pareto_metrics, summarize
from .plots import NO_BASELINES

FILES = {"freeze": "objective_by_freeze_depth.png", "pareto": "pareto_front.png",
         "weights": "score_vs_loss_weight.png", "curves": "learning_curves.png",
         "delta_m": "delta_m_by_weighting.png", "confirm": "confirmation_runs.png"}
REPORT = "report.md"


def _baselines(board, trials: list[dict], rows: list[dict]) -> list[dict]:
    """The baseline rows the trials' sweeps measured Δm% against, by key, whichever experiment trained them (keys are
    shared: a later experiment reuses an earlier one's). Without sweep records (rows merged from elsewhere): the
    experiment's baselines of the trials' data and code (a key begins with the data fingerprint it serves)."""
    from ..config import parse_config
    from ..sweep.baselines import baseline_key
    from ..sweep.confirm import sweep_record

    keys = set()
    for record in map(sweep_record, {r.get("sweep_id"): r for r in trials}.values()):
        try:   # a record of older code whose config no longer validates: the fallback below
            cfg = parse_config(record["config"]) if record.get("baselines") else None
        except (ConfigError, KeyError, TypeError):
            cfg = None
        keys |= {baseline_key(cfg, t, record.get("data_fingerprint"), revision=record.get("training_revision"))
                 for t in (cfg.tasks if cfg else ())}   # the code that sweep ran, not today's
    if keys:
        return [r for r in row_dicts(board.table(kind="baseline")) if r.get("baseline_key") in keys]
    measured = (revision_of(trials[0]), ranking.data_of(trials[0]))
    return [r for r in rows if ranking.kind_of(r) == "baseline"
            and measured == (revision_of(r), str(r.get("baseline_key") or "").split("|", 1)[0])]


def write_report(board, experiment: str, out_dir: str, *, metrics: Optional[list[str]] = None,
                 sweep_id: Optional[str] = None) -> dict:
    """Write the plots and ``report.md`` for ``experiment`` into ``out_dir`` (a folder or URI).

    ``metrics``: the two metrics of the Pareto plot (default: the first two tasks' score metrics). ``sweep_id``:
    only that sweep's trials, the confirmation runs of those trials, and the experiment's baselines. Returns
    ``summarize``'s numbers plus ``paths`` (plot name -> file) and ``report`` (report.md's location)."""
    out_dir = os.fspath(out_dir)
    table = board.table(experiment=experiment, kind=None)     # the one read of the leaderboard
    if table.num_rows == 0:
        known = board.experiments()
        raise ConfigError(f"unknown experiment {experiment!r} in {board.uri}; experiments: "
                          f"{', '.join(known) or 'none'}")
    rows = row_dicts(table)
    keep = [i for i, r in enumerate(rows) if ranking.kind_of(r) == "trial" and (
        sweep_id is None or r.get("sweep_id") == sweep_id)]
    # one measurement as `best` ranks (older code, data or baselines are another, not pooled; --metrics hold only the
    # front to one set), then each work once (not a merged copy, nor a sweep's row of work it reused, beside it)
    measured = {id(r) for r in ranking.newest_version([rows[i] for i in keep],
                                                      judge=ranking.pickable)} if keep else set()
    other_version = len(keep) - len(measured)   # rows of another measurement, left out
    keep = [i for i in keep if id(rows[i]) in measured]
    keep = [keep[j] for j in ranking.once_per_work([rows[i].get("row_id") for i in keep],
                                                   [rows[i].get("duplicate_of") for i in keep])]
    trials = [rows[i] for i in keep]
    if not trials:
        sweeps = sorted({r["sweep_id"] for r in rows if ranking.kind_of(r) == "trial" and r.get("sweep_id")})
        raise ConfigError(f"experiment {experiment!r} has no trials in sweep {sweep_id!r}; its sweeps: "
                          f"{', '.join(sweeps) or 'none'}")
    objectives = Counter(ranking.objective_of(r) for r in trials)
    if len(objectives) > 1:
        sweeps = sorted({r["sweep_id"] for r in trials if r.get("sweep_id")})
        raise ConfigError(f"experiment {experiment!r} mixes objectives ("
                          f"{', '.join(f'{m}: {n} trials' for m, n in objectives.most_common())}), whose numbers do "
                          f"not compare: report one sweep with --sweep (its sweeps: {', '.join(sweeps)})")
    ids = {r["trial_id"] for r in trials}
    ablations = [r for r in rows
                 if ranking.kind_of(r) == "ablation" and (sweep_id is None or r.get("ablation_of") in ids)]
    rows = trials + ranking.each_work_once(_baselines(board, trials, rows)) + [
        r for r in rows if ranking.kind_of(r) == "confirm" and (sweep_id is None or r.get("confirm_of") in ids)]
    pair = pareto_metrics(trials, metrics)
    picks = [j for j, r in enumerate(trials) if ranking.pickable(r)]   # no failed trial's early scores compete
    light, pickable = table.take(pa.array([keep[j] for j in picks], pa.int64())), [trials[j] for j in picks]
    front = [] if pair is None else _front(table, [keep[j] for j in picks], pickable, pair)
    order = ranking.best_first(light, "objective").to_pylist()
    best = pickable[order[0]] if any(finite(r.get("objective")) is not None for r in pickable) else None
    result = summarize(rows, best=best, front=front, pair=pair)
    result["left_out"]["other_version"] = other_version
    result["experiment"], result["board"] = experiment, board.uri
    result["mattered"] = mattered.what_mattered(ablations + rows)
    result["importance"] = mattered.importance(trials)
    result.update(_searched(trials, best, root=storage.parent(board.uri), experiment=experiment))
    result["report"] = storage.join(out_dir, REPORT)
    if storage.exists(result["report"]):   # an earlier report.md must not stand beside new plots if drawing stops
        fs, path = storage.filesystem(result["report"])
        fs.delete_file(path)
    result["paths"] = _draw(trials, result, out_dir)
    storage.atomic_write(result["report"], markdown(result).encode())
    return result


def _searched(trials: list[dict], best: Optional[dict], *, root: str, experiment: str) -> dict:
    """What the report reads of the trials' sweeps (one read of each sweep.json): fronts by scheduler, hints to
    widen a searched range, the `ablate` command to suggest."""
    searches = fronts.sweep_searches(trials, root, experiment)
    return {"fronts": fronts.scheduler_fronts(trials, searches), "hints": fronts.sweep_hints(trials, searches),
            "ablate_command": mattered.ablate_command(experiment, best, searches, root)}


def _draw(trials: list[dict], result: dict, out_dir: str) -> dict:
    """Every plot that has something to draw, as a PNG in ``out_dir``; plot name -> file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def figure(w, h):
        fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        return fig

    draw = {"freeze": plots.plot_freeze, "pareto": plots.plot_pareto, "weights": plots.plot_weights,
            "curves": plots.plot_curves, "delta_m": plots.plot_delta_m, "confirm": plots.plot_confirm}
    paths = {}
    for name, plot in draw.items():
        fig, where = plot(figure, trials, result), storage.join(out_dir, FILES[name])
        if fig is not None:
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            paths[name] = where
            storage.atomic_write(where, buf.getvalue())
        elif storage.exists(where):   # an earlier report's plot of what this one has not: not left looking current
            fs, path = storage.filesystem(where)
            fs.delete_file(path)
    return paths


def _table(header: list[str], rows: list[list]) -> list[str]:
    cells = [[fmt(v).replace("|", "\\|") for v in r] for r in rows]
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header), *(f"| {' | '.join(r)} |" for r in cells), ""]


def _front(table: pa.Table, at: list[int], trials: list[dict], pair: list[str]) -> list[dict]:
    """The Pareto front of ``trials`` (rows ``at`` of ``table``) on ``pair``, among ``front_candidates`` (with Δm% on
    an axis, the trials of the newest one's baselines), the trials the report counts and draws beside it."""
    same = {id(r) for r in front_candidates(trials, pair)}
    chosen = [j for j, r in enumerate(trials) if id(r) in same]
    light = table.take(pa.array([at[j] for j in chosen], pa.int64()))
    return [trials[chosen[i]] for i in ranking.front_rows(light, pair)]


def _left_out(lo: dict) -> str:
    return (f"Final-epoch objective of every trial (stopped trials included, marked apart); left out: "
            f"{lo['failed']} failed, {lo['no_objective']} {NO_OBJECTIVE}"
            + (f"; and from this report's trials, fronts and Δm% means, {lo['other_version']} trials of older code, "
               f"older data or other baselines than the newest trial's (another measurement)"
               if lo.get("other_version") else "")
            + ".")


def _pareto_lines(p: dict) -> list[str]:
    if not p["metrics"]:
        return ["## Pareto front", "", "One task: choose two metrics with `--metrics a,b`.", ""]
    a, c = p["metrics"]
    return [f"## Pareto front: {a} vs {c}", "",
            f"{len(p['trial_ids'])} of {p['n_trials']} trials are not beaten on both metrics (stopped trials are "
            f"scored at the epoch they stopped, completed ones at their last).", "",
            *_table(["trial", a, c, "status"], [[r["trial_id"], r[a], r[c], r["status"] if r["status"] != "stopped"
                                                 else f"stopped at epoch {r['epochs']}"] for r in p["rows"]])]


def _confirm_lines(confirm: list[dict]) -> list[str]:
    return ["## Confirmation runs", "", "Top configurations retrained with new seeds, ranked by mean objective (one "
            "with a diverged or failed seed after those without, one with no seed completed last).", "",
            *_table(["rank", "configuration", "freeze depth", "n seeds", "mean", "std", "original objective",
                     "diverged seeds", "failed seeds"],
                    [[i, c["confirm_of"], c["freeze_depth"], c["n"], c["mean"], c["std"], c["original"],
                      ", ".join(map(str, c["diverged"])) or "-", ", ".join(map(str, c["failed"])) or "-"]
                     for i, c in enumerate(confirm, 1)])]


def markdown(res: dict) -> str:
    """report.md; images linked relative to it (the plots that were written)."""
    kinds, lo, p, b = res["kinds"], res["left_out"], res["pareto"], res["best"]

    def image(name, alt):
        return [f"![{alt}]({FILES[name]})", ""] if name in res.get("paths", {}) else []
    counts = ", ".join(f"{s} {n}" for s, n in sorted(res["counts"].items()))
    out = [f"# Report: {res['experiment']}", "",
           f"Leaderboard `{res['board']}`; sweeps: {', '.join(res['sweep_ids']) or '-'}.", "",
           f"Trials: {kinds.get('trial', 0)} ({counts or 'none'}); single-task baselines: {kinds.get('baseline', 0)};"
           f" confirmation runs: {kinds.get('confirm', 0)}. Objective: `{res['objective_metric']}` "
           f"({'higher' if res['objective_mode'] == 'max' else 'lower'} is better). Numbers: 4 significant digits.",
           "", "## Best trial", ""]
    if b is None:
        out += ["No trial has an objective.", ""]
    else:
        out += _table(["trial", "sweep", "status", "objective", "Δm%", *b["metrics"]],
                      [[b["trial_id"], b["sweep_id"], b["status"], b["objective"], b["delta_m_pct"],
                        *b["metrics"].values()]])
        out += ["Hyperparameters: " + ", ".join(f"`{k}` {v:g}" if isinstance(v, float) else f"`{k}` {v}"
                                                for k, v in b["hyperparameters"].items()), ""]
    out += fronts.hint_lines(res) + ["## Objective by freeze depth", ""]
    out += _table(["freeze depth", "n", "completed", "mean objective", "best objective"],
                  [[d, s["n"], s["completed"], s["mean"], s["best"]] for d, s in res["freeze"].items()])
    out += [*image("freeze", "objective by freeze depth"), _left_out(lo), ""]
    out += [*_pareto_lines(p), *image("pareto", "Pareto front"), "## Task scores against loss weights", "",
            *image("weights", "score vs loss weight"), "## Learning curves", "", *image("curves", "learning curves"),
            "## Δm% by loss weighting", ""]
    if res["delta_m"]:
        other = res["left_out"].get("other_baselines")
        out += ["Δm% of the completed trials against single-task baselines, + = better than single-task"
                + (f"; left out, {other} trials measured against other baselines (a sweep of another base config: "
                   f"another scale)" if other else "") + ".", ""]
        out += _table(["loss weighting", "n", "mean Δm%"], [[m, d["n"], d["mean"]] for m, d in res["delta_m"].items()])
    else:
        out += [NO_BASELINES[0].upper() + NO_BASELINES[1:] + ".", ""]
    out += image("delta_m", "Δm% by loss weighting")
    out += ["This averages over whatever else each trial sampled; \"What mattered\" below holds the rest fixed.", ""]
    out += mattered.markdown_lines(res, _table) + fronts.markdown_lines(res, _table)
    if res["confirm"]:
        out += [*_confirm_lines(res["confirm"]), *image("confirm", "confirmation runs")]
    if res["baselines"]:
        out += ["## Single-task baselines", ""]
        out += _table(["task", "trial", "status", "seed", "metric", "value"],
                      [[x["task"], x["trial_id"], x["status"], x["seed"], x["metric"], x["value"]]
                       for x in res["baselines"]])
    return "\n".join(out)
