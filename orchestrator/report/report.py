"""An experiment's report: its leaderboard rows -> PNG plots and a one-page ``report.md`` (README, "Reports").

``write_report`` reads the experiment's rows (one table read), ranks with ``Leaderboard.best`` and ``Leaderboard.pareto``
(directions from the metric registry), computes the numbers (``summarize``, pure), draws them on matplotlib's Agg
canvas (no pyplot: the caller's backend and global state are left alone) and writes each file atomically, to a
local folder or a URI. Measured numbers are shown with 4 significant digits.
"""
from __future__ import annotations

import io
import math
import textwrap
from collections import Counter, defaultdict
from typing import Optional

import numpy as np

from .. import metrics as registry
from .. import storage
from ..errors import ConfigError
from ..leaderboard.files import KNOWN_TYPES, column_type
from ..leaderboard.query import rows as row_dicts

FILES = {"freeze": "objective_by_freeze_depth.png", "pareto": "pareto_front.png",
         "weights": "score_vs_loss_weight.png", "curves": "learning_curves.png",
         "delta_m": "delta_m_by_weighting.png", "confirm": "confirmation_runs.png"}
REPORT = "report.md"
METHODS = ("static", "uncertainty", "dwa")
STYLE = {"static": dict(marker="o", color="tab:blue"), "uncertainty": dict(marker="^", color="tab:orange"),
         "dwa": dict(marker="s", color="tab:green")}
NO_BASELINES = ("no single-task baselines: set `search.baselines: true` in the experiment (or run "
                "`orchestrator baselines CONFIG`) and report again")
_NOT_HP = {"confirm_of", "baseline_task", "baseline_key"}
_HP = ("freeze_depth", "backbone_lr", "head_lr", "loss_weighting", "optimizer", "batch_size", "max_epochs", "seed")


def fmt(v) -> str:
    """Measured numbers with 4 significant digits (``0.9300``); "-" for a missing or non-finite value."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:#.4g}" if isinstance(v, float) else str(v)


def _num(v) -> Optional[float]:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _method(row: dict) -> str:
    return row.get("loss_weighting") or "static"


def _order(method: str) -> tuple:
    return (METHODS.index(method) if method in METHODS else len(METHODS), method)


def write_report(board, experiment: str, out_dir: str, *, metrics: Optional[list[str]] = None,
                 sweep_id: Optional[str] = None) -> dict:
    """Write the plots and ``report.md`` for ``experiment`` into ``out_dir`` (a folder or URI).

    ``metrics``: the two metrics of the Pareto plot (default: the first two tasks' score metrics). ``sweep_id``:
    only that sweep's trials, the confirmation runs of those trials, and the experiment's baselines. Returns
    ``summarize``'s numbers plus ``paths`` (plot name -> file) and ``report`` (report.md's location)."""
    known = board.experiments()
    if experiment not in known:
        raise ConfigError(f"unknown experiment {experiment!r} in {board.uri}; experiments: "
                          f"{', '.join(known) or 'none'}")
    rows = row_dicts(board.table(experiment=experiment, kind=None))
    trials = [r for r in rows if r.get("kind") in (None, "trial") and sweep_id in (None, r.get("sweep_id"))]
    if not trials:
        sweeps = sorted({r["sweep_id"] for r in rows if r.get("kind") in (None, "trial") and r.get("sweep_id")})
        raise ConfigError(f"experiment {experiment!r} has no trials in sweep {sweep_id!r}; its sweeps: "
                          f"{', '.join(sweeps) or 'none'}")
    ids = {r["trial_id"] for r in trials}
    rows = trials + [r for r in rows if r.get("kind") == "baseline"
                     or (r.get("kind") == "confirm" and (sweep_id is None or r.get("confirm_of") in ids))]
    pair = pareto_metrics(trials, metrics)
    scope = {"experiment": experiment, "sweep_id": sweep_id, "kind": "trial"}
    front = [] if pair is None else row_dicts(board.pareto(pair, **scope))
    best = board.best(**scope) if any(_num(r.get("objective")) is not None for r in trials) else None
    result = summarize(rows, best=best, front=front, pair=pair)
    result["experiment"], result["board"] = experiment, board.uri

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def figure(w, h):
        fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        return fig

    plots = {"freeze": plot_freeze, "pareto": plot_pareto, "weights": plot_weights, "curves": plot_curves,
             "delta_m": plot_delta_m, "confirm": plot_confirm}
    result["paths"] = {}
    for name, draw in plots.items():
        fig = draw(figure, trials, result)
        if fig is not None:
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            result["paths"][name] = storage.join(out_dir, FILES[name])
            storage.atomic_write(result["paths"][name], buf.getvalue())
    result["report"] = storage.join(out_dir, REPORT)
    storage.atomic_write(result["report"], markdown(result).encode())
    return result


def task_scores(trials: list[dict]) -> list[tuple[str, str]]:
    """(task, score metric) in config order, from a row's stored config; else from the ``best_<task>_<metric>``
    columns."""
    for r in trials:
        tasks = r["config"].get("tasks") if isinstance(r.get("config"), dict) else None
        if tasks:
            return [(t, tc.get("metric") or registry.default_score(tc["type"])) for t, tc in tasks.items()]
    cols = dict.fromkeys(k[5:] for r in trials for k in r if k.startswith("best_") and k != "best_objective")
    return [tuple(c.rsplit("_", 1)) for c in cols]


def pareto_metrics(trials: list[dict], chosen: Optional[list[str]]) -> Optional[list[str]]:
    """The two Pareto metrics: ``chosen`` (checked: a value in some trial and a known direction) or the first two
    tasks' score metrics; None when the experiment has one task and nothing was chosen."""
    if not chosen:
        scores = [f"{t}_{m}" for t, m in task_scores(trials)]
        return scores[:2] if len(scores) >= 2 else None
    chosen = list(dict.fromkeys(chosen))
    if len(chosen) != 2:
        raise ConfigError(f"--metrics needs exactly two metrics for the Pareto plot, got {chosen}")
    having = [c for c in dict.fromkeys(k for r in trials for k in r) if any(_num(r.get(c)) is not None for r in trials)
              and (c in ("objective", "best_objective") or registry.direction(c) is not None)]
    for m in chosen:
        if m not in having:
            raise ConfigError(f"unknown metric {m!r} for this experiment's trials; choose two of: {', '.join(having)}")
    return chosen


def summarize(rows: list[dict], *, best: Optional[dict], front: list[dict], pair: Optional[list[str]]) -> dict:
    """The report's numbers from the experiment's rows (every kind), the best trial and the Pareto front rows.
    Failed trials and trials without a finite objective are left out of the freeze-depth summary (and counted)."""
    trials = [r for r in rows if r.get("kind") in (None, "trial")]
    mode = next((r["objective_mode"] for r in trials if r.get("objective_mode")), "max")
    tasks = task_scores(trials)
    best_of = max if mode == "max" else min
    by_depth, dm, groups = defaultdict(list), defaultdict(list), defaultdict(list)
    for r in plotted(trials):
        by_depth[r["freeze_depth"]].append(r)
    for r in trials:
        if _num(r.get("delta_m_pct")) is not None:
            dm[_method(r)].append(r["delta_m_pct"])
    for r in rows:
        if r.get("kind") == "confirm" and _num(r.get("objective")) is not None:
            groups[r.get("confirm_of")].append(r)
    originals = {r["trial_id"]: r for r in trials}
    confirm = sorted(({"confirm_of": k, "n": len(g), "objectives": [r["objective"] for r in g],
                       "mean": float(np.mean([r["objective"] for r in g])),
                       "std": float(np.std([r["objective"] for r in g], ddof=1)) if len(g) > 1 else 0.0,
                       "seeds": sorted(r.get("seed") for r in g), "freeze_depth": g[0].get("freeze_depth"),
                       "original": _num(originals.get(k, {}).get("objective"))} for k, g in groups.items()),
                     key=lambda c: -c["mean"] if mode == "max" else c["mean"])
    best_info = None if best is None else {
        "trial_id": best["trial_id"], "sweep_id": best.get("sweep_id"), "status": best.get("status"),
        "objective": best.get("objective"), "delta_m_pct": _num(best.get("delta_m_pct")),
        "metrics": {k: best[k] for t, _ in tasks for k in sorted(best) if k.startswith(f"{t}_") and
                    _num(best[k]) is not None}, "hyperparameters": hyperparameters(best)}
    return {
        "sweep_ids": sorted({r["sweep_id"] for r in rows if r.get("sweep_id")}),
        "counts": dict(Counter(r["status"] for r in trials)),
        "kinds": dict(Counter(r.get("kind") or "trial" for r in rows)),
        "objective_metric": next((r["objective_metric"] for r in trials if r.get("objective_metric")), "objective"),
        "objective_mode": mode, "tasks": tasks, "best": best_info,
        "freeze": {d: {"n": len(g), "completed": sum(r["status"] == "completed" for r in g),
                       "mean": float(np.mean([r["objective"] for r in g])),
                       "best": best_of(r["objective"] for r in g)} for d, g in sorted(by_depth.items())},
        "left_out": {"failed": sum(r["status"] == "failed" for r in trials),
                     "no_objective": sum(r["status"] != "failed" and _num(r.get("objective")) is None for r in trials)},
        "pareto": {"metrics": pair, "trial_ids": [r["trial_id"] for r in front],
                   "rows": [{"trial_id": r["trial_id"], **{m: r.get(m) for m in pair or ()}} for r in front],
                   "n_trials": sum(all(_num(r.get(m)) is not None for m in pair) for r in trials) if pair else 0},
        "delta_m": {m: {"mean": float(np.mean(dm[m])), "n": len(dm[m])} for m in sorted(dm, key=_order)},
        "confirm": confirm,
        "baselines": [{"task": t, "trial_id": r["trial_id"], "status": r.get("status"), "seed": r.get("seed"),
                       "metric": m, "value": r.get(f"{t}_{m}")}
                      for r in rows if r.get("kind") == "baseline" for t, m in tasks if t == r.get("baseline_task")],
    }


def plotted(trials: list[dict]) -> list[dict]:
    """The trials in the freeze-depth plot and summary: not failed, with a finite objective."""
    return [r for r in trials if r["status"] != "failed" and _num(r.get("objective")) is not None]


def hyperparameters(row: dict) -> dict:
    """The row's fixed hyperparameter columns, its loss weights and any other searched column."""
    searched = [k for k in row if k not in KNOWN_TYPES and column_type(k) is None and k not in _NOT_HP]
    keys = [*_HP, *sorted(k for k in row if k.startswith("weight_")), *searched]
    return {k: row[k] for k in dict.fromkeys(keys) if row.get(k) is not None}


def summary_lines(result: dict) -> list[str]:
    """Three lines for a terminal: the best trial (with Δm%), the Pareto front's size, the freeze-depth summary."""
    b, p = result["best"], result["pareto"]
    if b is None:
        first = "best trial: none (no trial has an objective)"
    else:
        dm = f"Δm% {fmt(b['delta_m_pct'])}" if b["delta_m_pct"] is not None else "Δm% n/a (no single-task baselines)"
        first = f"best trial {b['trial_id']}: {result['objective_metric']} {fmt(b['objective'])}, {dm}"
    second = (f"Pareto front ({p['metrics'][0]} vs {p['metrics'][1]}): {len(p['trial_ids'])} of {p['n_trials']} "
              f"trials: {', '.join(p['trial_ids']) or 'none'}" if p["metrics"] else
              "Pareto front: one task; choose two metrics with --metrics a,b")
    third = "freeze depth: " + ("; ".join(f"{d}: mean {fmt(s['mean'])} best {fmt(s['best'])} (n={s['n']})"
                                          for d, s in result["freeze"].items()) or "no trial has an objective")
    return [first, second, third]


# -- plots: each takes (figure factory, trial rows, numbers) and returns a Figure, or None: nothing to draw -----

def _caption(fig, text: str) -> None:
    """A caption under the plots (constrained layout makes room for it)."""
    fig.supxlabel("\n".join(textwrap.wrap(text, 120)), fontsize=8)


def _jitter(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.15, 0.15, n)


def plot_freeze(figure, trials, res):
    fig = figure(7, 4.5)
    ax = fig.add_subplot()
    pts = plotted(trials)
    x = np.array([r["freeze_depth"] for r in pts], float) + _jitter(len(pts), 0)
    styles = {"completed": dict(marker="o", color="tab:blue"), "diverged": dict(marker="x", color="tab:red"),
              "stopped": dict(marker="o", facecolors="none", edgecolors="tab:blue")}
    for status, style in styles.items():
        idx = [i for i, r in enumerate(pts) if r["status"] == status]
        if idx:
            ax.scatter(x[idx], [pts[i]["objective"] for i in idx], label=f"{status} ({len(idx)})", **style)
    depths = list(res["freeze"])
    ax.plot(depths, [res["freeze"][d]["mean"] for d in depths], "k_-", ms=24, mew=2, label="mean per depth")
    ax.set(xlabel="freeze depth (backbone blocks frozen)", ylabel=f"objective ({res['objective_metric']})",
           xticks=depths, title="Objective by freeze depth")
    ax.legend(fontsize=8)
    lo = res["left_out"]
    _caption(fig, f"Each point: one trial's final-epoch objective (column `objective`, x jittered). Hollow: stopped "
                  f"early by the scheduler; x: diverged. Left out: {lo['failed']} failed, {lo['no_objective']} "
                  f"without a finite objective.")
    return fig


def _direction(metric: str, res: dict) -> str:
    word = {"max": " (higher is better)", "min": " (lower is better)"}
    return metric + word.get(registry.direction(metric, objective_mode=res["objective_mode"]), "")


def plot_pareto(figure, trials, res):
    p = res["pareto"]
    if not p["metrics"]:
        return None
    fig, (a, b) = figure(6, 5), p["metrics"]
    ax = fig.add_subplot()
    pts = [r for r in trials if _num(r.get(a)) is not None and _num(r.get(b)) is not None]
    ax.scatter([r[a] for r in pts], [r[b] for r in pts], color="0.6", label=f"trials ({len(pts)})")
    f = sorted(p["rows"], key=lambda r: r[a])
    ax.plot([r[a] for r in f], [r[b] for r in f], "o-", color="tab:red", label=f"Pareto front ({len(f)})")
    for r in f[:20]:
        ax.annotate(r["trial_id"], (r[a], r[b]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel=_direction(a, res), ylabel=_direction(b, res), title="Pareto front over all trials")
    ax.legend(fontsize=8)
    return fig


def loss_weight(row: dict, task: str, tasks: list[str]) -> Optional[float]:
    """The x of the weights plot: static -> ``weight_<task>``; learned -> ``eff_weight_<task>`` normalized over the
    tasks (uncertainty's weights do not sum to 1), or ``weight_<task>`` when the row has no effective weights."""
    if _method(row) != "static":
        eff = [_num(row.get(f"eff_weight_{t}")) for t in tasks]
        if all(e is not None for e in eff) and sum(eff) > 0:
            return row[f"eff_weight_{task}"] / sum(eff)
    return _num(row.get(f"weight_{task}"))


def plot_weights(figure, trials, res):
    tasks = res["tasks"]
    fig = figure(4 * max(len(tasks), 1), 4)
    names = [t for t, _ in tasks]
    for i, (task, metric) in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), i + 1)
        for method in sorted({_method(r) for r in trials}, key=_order):
            pts = [(loss_weight(r, task, names), _num(r.get(f"{task}_{metric}"))) for r in trials
                   if _method(r) == method]
            pts = [(x, y) for x, y in pts if x is not None and y is not None]
            if pts:
                ax.scatter(*zip(*pts), **STYLE.get(method, dict(marker="D")), label=method)
        ax.set(xlabel=f"loss weight of {task}", ylabel=f"{task}_{metric}", title=task)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, title="loss weighting", title_fontsize=8)
    _caption(fig, "x: static -> the normalized loss weight (weight_<task>); uncertainty/dwa -> the effective final "
                  "weight (eff_weight_<task>, normalized over tasks).")
    return fig


def plot_curves(figure, trials, res):
    from matplotlib.collections import LineCollection
    from matplotlib.ticker import MaxNLocator

    fig = figure(11, 4.2)
    trials = [r for r in trials if r.get("history")]
    best = (res["best"] or {}).get("trial_id")
    depths = [r["freeze_depth"] for r in trials] or [0]
    for i, key in enumerate(("objective", "train_loss")):
        ax = fig.add_subplot(1, 2, i + 1)
        lines, colors = [], []
        for r in trials:
            pts = [(h["epoch"], h[key]) for h in r["history"] if _num(h.get(key)) is not None and "epoch" in h]
            if pts:
                lines.append(pts)
                colors.append(r["freeze_depth"])
                if r["trial_id"] == best:
                    ax.plot(*zip(*pts), color="tab:red", lw=2.5, zorder=3, label=f"best ({best})")
        if not lines:
            ax.text(0.5, 0.5, f"no per-epoch {key}", ha="center", transform=ax.transAxes)
            continue
        lc = LineCollection(lines, array=np.array(colors, float), cmap="viridis", linewidths=1, alpha=0.7)
        lc.set_clim(min(depths), max(max(depths), min(depths) + 1))
        ax.add_collection(lc)
        ax.autoscale()
        ax.set(xlabel="epoch", ylabel=key, title=f"{key} per epoch, one line per trial")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best:
            ax.legend(fontsize=8)
        if i == 1:
            fig.colorbar(lc, ax=ax, label="freeze depth")
    return fig


def plot_delta_m(figure, trials, res):
    fig = figure(6, 4.5)
    ax = fig.add_subplot()
    if not res["delta_m"]:
        ax.text(0.5, 0.5, NO_BASELINES.replace(" (", "\n("), ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    methods = list(res["delta_m"])
    for i, m in enumerate(methods):
        ys = [r["delta_m_pct"] for r in trials if _method(r) == m and _num(r.get("delta_m_pct")) is not None]
        ax.scatter(i + _jitter(len(ys), i), ys, **STYLE.get(m, dict(marker="D")), alpha=0.7)
        ax.plot([i - 0.3, i + 0.3], [res["delta_m"][m]["mean"]] * 2, "k-", lw=2)
    ax.axhline(0, color="0.5", ls="--", lw=1)
    ax.set_xticks(range(len(methods)), [f"{m}\n(n={res['delta_m'][m]['n']})" for m in methods])
    ax.set(ylabel="Δm% (+ = better than single-task)", title="Δm% by loss weighting (bar: mean)")
    return fig


def plot_confirm(figure, trials, res):
    conf = res["confirm"]
    if not conf:
        return None
    fig = figure(7, 1.5 + 0.45 * len(conf))
    ax = fig.add_subplot()
    ys = np.arange(len(conf))[::-1]
    ax.errorbar([c["mean"] for c in conf], ys, xerr=[c["std"] for c in conf], fmt="o", color="tab:blue",
                capsize=4, label="mean ± std over seeds")
    for y, c in zip(ys, conf):
        ax.scatter(c["objectives"], [y] * c["n"], s=12, color="0.4", zorder=3)
        if c["original"] is not None:
            ax.scatter([c["original"]], [y], marker="*", s=90, color="tab:red", zorder=4)
    ax.scatter([], [], marker="*", s=90, color="tab:red", label="original trial")
    ax.set_yticks(ys, [f"{c['confirm_of']} (n={c['n']})" for c in conf])
    ax.set(xlabel=f"objective ({res['objective_metric']})", title="Confirmation runs, ranked by mean")
    ax.legend(fontsize=8)
    return fig


# -- report.md -------------------------------------------------------------------------------------------------

def _table(header: list[str], rows: list[list]) -> list[str]:
    cells = [[fmt(v).replace("|", "\\|") for v in r] for r in rows]
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header), *(f"| {' | '.join(r)} |" for r in cells), ""]


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
    out += ["## Objective by freeze depth", ""]
    out += _table(["freeze depth", "n", "completed", "mean objective", "best objective"],
                  [[d, s["n"], s["completed"], s["mean"], s["best"]] for d, s in res["freeze"].items()])
    out += [*image("freeze", "objective by freeze depth"),
            f"Final-epoch objective of every trial (stopped and diverged trials included, marked apart); "
            f"left out: {lo['failed']} failed, {lo['no_objective']} without a finite objective.", ""]
    if p["metrics"]:
        a, c = p["metrics"]
        out += [f"## Pareto front: {a} vs {c}", "",
                f"{len(p['trial_ids'])} of {p['n_trials']} trials are not beaten on both metrics.", ""]
        out += _table(["trial", a, c], [[r["trial_id"], r[a], r[c]] for r in p["rows"]])
    else:
        out += ["## Pareto front", "", "One task: choose two metrics with `--metrics a,b`.", ""]
    out += [*image("pareto", "Pareto front"), "## Task scores against loss weights", "",
            *image("weights", "score vs loss weight"), "## Learning curves", "", *image("curves", "learning curves"),
            "## Δm% by loss weighting", ""]
    if res["delta_m"]:
        out += ["Δm% against single-task baselines, + = better than single-task.", ""]
        out += _table(["loss weighting", "n", "mean Δm%"], [[m, d["n"], d["mean"]] for m, d in res["delta_m"].items()])
    else:
        out += [NO_BASELINES[0].upper() + NO_BASELINES[1:] + ".", ""]
    out += image("delta_m", "Δm% by loss weighting")
    if res["confirm"]:
        out += ["## Confirmation runs", "", "Top configurations retrained with new seeds, ranked by mean objective.",
                ""]
        out += _table(["rank", "configuration", "freeze depth", "n seeds", "mean", "std", "original objective"],
                      [[i, c["confirm_of"], c["freeze_depth"], c["n"], c["mean"], c["std"], c["original"]]
                       for i, c in enumerate(res["confirm"], 1)])
        out += image("confirm", "confirmation runs")
    if res["baselines"]:
        out += ["## Single-task baselines", ""]
        out += _table(["task", "trial", "status", "seed", "metric", "value"],
                      [[x["task"], x["trial_id"], x["status"], x["seed"], x["metric"], x["value"]]
                       for x in res["baselines"]])
    return "\n".join(out)
