"""The report's plots: each takes (figure factory, trial rows, the numbers) and returns a Figure, or None when there is
nothing to draw. Drawn on matplotlib's Agg canvas by the caller (no pyplot: the caller's backend and state are left
alone)."""
from __future__ import annotations

import textwrap
from typing import Optional

import numpy as np

from .. import metrics as registry
from ..leaderboard import ranking
from .numbers import NO_OBJECTIVE, _method, _order, delta_m_rows, finite, front_candidates, plotted

STYLE = {"static": dict(marker="o", color="tab:blue"), "uncertainty": dict(marker="^", color="tab:orange"),
         "dwa": dict(marker="s", color="tab:green")}
NO_BASELINES = ("no single-task baselines: set `search.baselines: true` in the experiment (or run "
                "`orchestrator baselines CONFIG`) and report again")


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
    styles = {"completed": dict(marker="o", color="tab:blue"),
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
                  f"early by the scheduler. Left out: {lo['failed']} failed, {lo['no_objective']} "
                  f"{NO_OBJECTIVE}.")
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
    pts = front_candidates(trials, (a, b))
    ax.scatter([r[a] for r in pts], [r[b] for r in pts], color="0.6", label=f"trials ({len(pts)})")
    f = sorted(p["rows"], key=lambda r: r[a])
    ax.plot([r[a] for r in f], [r[b] for r in f], "o-", color="tab:red", label=f"Pareto front ({len(f)})")
    for r in f[:20]:
        ax.annotate(r["trial_id"], (r[a], r[b]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel=_direction(a, res), ylabel=_direction(b, res), title="Pareto front over the trials compared")
    ax.legend(fontsize=8)
    return fig


def loss_weight(row: dict, task: str, tasks: list[str]) -> Optional[float]:
    """The x of the weights plot: static -> ``weight_<task>``; learned -> ``eff_weight_<task>`` normalized over the
    tasks (uncertainty's weights do not sum to 1), or ``weight_<task>`` when the row has no effective weights."""
    if _method(row) != "static":
        eff = [finite(row.get(f"eff_weight_{t}")) for t in tasks]
        if all(e is not None for e in eff) and sum(eff) > 0:
            return row[f"eff_weight_{task}"] / sum(eff)
    return finite(row.get(f"weight_{task}"))


def plot_weights(figure, trials, res):
    tasks, trials = res["tasks"], [r for r in trials if ranking.pickable(r)]   # a failed trial's early scores: not
    fig = figure(4 * max(len(tasks), 1), 4)
    names = [t for t, _ in tasks]
    for i, (task, metric) in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), i + 1)
        for method in sorted({_method(r) for r in trials}, key=_order):
            pts = [(loss_weight(r, task, names), finite(r.get(f"{task}_{metric}"))) for r in trials
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
            pts = [(h["epoch"], h[key]) for h in r["history"] if finite(h.get(key)) is not None and "epoch" in h]
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
        ys = [r["delta_m_pct"] for r in delta_m_rows(trials) if _method(r) == m]
        ax.scatter(i + _jitter(len(ys), i), ys, **STYLE.get(m, dict(marker="D")), alpha=0.7)
        ax.plot([i - 0.3, i + 0.3], [res["delta_m"][m]["mean"]] * 2, "k-", lw=2)
    ax.axhline(0, color="0.5", ls="--", lw=1)
    ax.set_xticks(range(len(methods)), [f"{m}\n(n={res['delta_m'][m]['n']})" for m in methods])
    ax.set(ylabel="Δm% (+ = better than single-task)", title="Δm% by loss weighting (bar: mean)")
    return fig


def plot_confirm(figure, trials, res):
    conf = [c for c in res["confirm"] if c["n"]]   # a configuration with no seed completed has no point to draw
    if not conf:
        return None
    fig = figure(7, 1.5 + 0.45 * len(conf))
    ax = fig.add_subplot()
    ys = np.arange(len(conf))[::-1]
    ax.errorbar([c["mean"] for c in conf], ys, xerr=[c["std"] or 0.0 for c in conf], fmt="o", color="tab:blue",
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
