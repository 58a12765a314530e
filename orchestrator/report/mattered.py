"""The report's "What mattered" numbers, pure functions of leaderboard rows: the ablation runs (``orchestrator ablate``,
rows of kind ``ablation``) as mean ± std per alternative and controlled Δm% per loss-weighting method, and the
parameter importance over the sweep's trials (fANOVA, ``optuna.importance``)."""
from __future__ import annotations

import json
import random
import shlex
import statistics
from collections import defaultdict
from typing import Optional

from .. import storage
from ..config.space import dotted_get
from ..leaderboard import ranking
from ..leaderboard.ranking import finite
from ..leaderboard.rows import ABLATION_REFERENCE as REFERENCE

IMPORTANCE_COLUMNS = ("freeze_depth", "backbone_lr", "head_lr", "loss_weighting", "optimizer", "batch_size",
                      "max_epochs")
MIN_TRIALS_FOR_IMPORTANCE = 4
IMPORTANCE_SAMPLE = 300   # fANOVA's cost grows faster than the trials (1,000: 33 s here): more are sampled to this


def _label(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _delta_m(row: dict) -> Optional[float]:
    """The run's own Δm%: measured against the baselines of the winner's sweep (``sweep.ablate``), never against
    whatever baseline rows the leaderboard holds (other budgets, other data)."""
    return finite(row.get("delta_m_pct"))


def _stats(values: list[float]) -> dict:
    return {"n": len(values), "mean": statistics.fmean(values) if values else None,
            "std": ranking.spread(values)}


def _scored(row: dict) -> bool:
    return row.get("status") == "completed" and finite(row.get("objective")) is not None


def what_mattered(rows: list[dict], *, winner: Optional[str] = None) -> Optional[dict]:
    """The runs of ``winner``'s ablation (default: the latest ablated winner's): per dimension, per alternative (the
    winner's own value marked), the objective's mean ± std over seeds, and for ``train.loss_weighting`` the mean Δm%
    (None without baselines); the seeds that diverged are listed per alternative, not averaged, and each seed counts once,
    its newest run (as confirm ranks)."""
    runs = [r for r in ranking.each_work_once([r for r in rows if ranking.kind_of(r) == "ablation"])
            if _scored(r) or r.get("status") == "diverged"]   # a merged copy counts where its own ablation run is
    # not: a copy of a confirm run (the same work at the same seed) is this ablation's run all the same
    if winner is None and runs:
        winner = max([r for r in runs if _scored(r)] or runs, key=ranking.newest_first)["ablation_of"]
    runs = [r for r in runs if r.get("ablation_of") == winner]
    if not runs:
        return None
    runs = ranking.newest_version(runs, judge=_scored)   # one code, one data: the newest a completed run measured
    # one run per alternative and seed, the newest (a rerun retrains a diverged seed, or static with a better static
    runs = ranking.per_seed(runs, by=("ablation_dim", "ablation_value"))   # trial's weights)
    reference = [r for r in runs if r.get("ablation_dim") == REFERENCE]
    dims = list(dict.fromkeys(r["ablation_dim"] for r in runs if r.get("ablation_dim") != REFERENCE))
    out, seeds = {}, {}
    for dim in dims:
        out[dim], seeds[dim] = _dimension(dim, reference, [r for r in runs if r.get("ablation_dim") == dim])
    mode = runs[0].get("objective_mode") or "max"
    return {"winner": winner, "dims": out, "mode": mode, "baselines": any(_delta_m(r) is not None for r in runs),
            "seeds": seeds}


def _dimension(dim: str, reference: list[dict], runs: list[dict]) -> tuple[dict, list]:
    """One dimension's alternatives (the winner's own value from the ``reference`` runs) over the seeds every
    alternative ran (one `ablate --seeds 3`, another `--seeds 2` reusing the winner's runs: seeds 1 and 2), and
    those seeds."""
    groups: dict[str, list[dict]] = defaultdict(list)
    own = None
    for r in reference:
        own = _label(dotted_get(r["config"], dim) if isinstance(r.get("config"), dict) else None)
        groups[own].append(r)
    for r in runs:
        groups[_label(json.loads(r["ablation_value"]))].append(r)
    common = set.intersection(*({r.get("seed") for r in g} for g in groups.values()))
    groups = {value: [r for r in g if r.get("seed") in common] for value, g in groups.items()}
    return ({value: {**_stats([r["objective"] for r in g if _scored(r)]), "winner": value == own,
                     "diverged": sorted(r.get("seed") for r in g if not _scored(r)),
                     "delta_m": _stats([d for r in g if _scored(r) and (d := _delta_m(r)) is not None])}
             for value, g in groups.items()}, sorted(s for s in common if s is not None))


def importance(trials: list[dict]) -> Optional[dict]:
    """fANOVA importance of each hyperparameter column that varies over the trials with a finite objective, not
    failed (stopped trials included, at the epoch they stopped); None with fewer than 4 such trials, no parameter
    varying or the objective not varying."""
    import optuna

    done = [r for r in trials if ranking.kind_of(r) == "trial" and ranking.pickable(r)
            and finite(r.get("objective")) is not None]
    of = len(done)
    if of > IMPORTANCE_SAMPLE:   # seeded, and by row, not by the order the files gave them: the same sample each time
        done = random.Random(0).sample(sorted(done, key=lambda r: (str(r.get("row_id")), str(r.get("trial_id")))),
                                       IMPORTANCE_SAMPLE)
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE or len({float(r["objective"]) for r in done}) < 2:
        return None   # fANOVA raises on an objective without variance
    from .numbers import hyperparameters

    names = list(dict.fromkeys([*IMPORTANCE_COLUMNS, *(k for r in done for k in hyperparameters(r))]))
    dists, left_out = {}, []
    for name in names:
        values = [r.get(name) for r in done]
        distinct = {v for v in values if v is not None}
        if name == "seed" or not distinct:
            continue
        if any(v is None for v in values):   # set in some trials only (a branch's parameter): fANOVA needs all
            left_out.append(name)
            continue
        if len(distinct) < 2:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            dists[name] = optuna.distributions.FloatDistribution(float(min(values)), float(max(values)))
        else:
            dists[name] = optuna.distributions.CategoricalDistribution(sorted({str(v) for v in values}))
    if not dists:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mode = done[0].get("objective_mode") or "max"
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for r in done:
        params = {k: (float(r[k]) if isinstance(d, optuna.distributions.FloatDistribution) else str(r[k]))
                  for k, d in dists.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(r["objective"])))
    ranked = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return {"n": len(done), "of": of, "importance": {k: float(v) for k, v in ranked.items()}, "left_out": left_out}


def ablate_command(experiment: str, best: Optional[dict], searches: dict, root: str) -> str:
    """The `ablate` command the report suggests: up to two dimensions the best trial's sweep chose from (loss
    weighting and freeze depth first) that ablation runs can vary, else one it searched otherwise, with --values."""
    from ..sweep.ablate import VARIED

    space = ((searches.get((best or {}).get("sweep_id")) or {}).get("space") or {})
    varied = [d for d in space if d.startswith(VARIED)]
    preferred = ["train.loss_weighting", "train.freeze_depth"]
    chosen = sorted((d for d in varied if isinstance(space[d], dict) and space[d].get("choice") is not None),
                    key=lambda d: preferred.index(d) if d in preferred else len(preferred))[:2]
    other = (varied or ["train.freeze_depth"])[0]
    dims = f"--dims {','.join(chosen)}" if chosen else f"--dims {other} --values {other}=V1,V2"
    trial = f"--trial {shlex.quote(best['trial_id'])} " if best and best.get("trial_id") else ""   # the one reported
    return (f"orchestrator ablate -e {shlex.quote(experiment)} {trial}{dims} --seeds 3 --storage "
            f"{shlex.quote(storage.redact(root))}")


def markdown_lines(res: dict, table) -> list[str]:
    """The "What mattered" section (``table``: the report's markdown table writer)."""
    out = ["## What mattered", ""]
    m = res.get("mattered")
    if m is None:
        out += [f"No ablation runs: `{res['ablate_command']}` varies the winner one dimension at a time.", ""]
    else:
        out += [f"The winner ({m['winner']}) varied one dimension at a time, everything else held, on the same "
                f"seeds for every alternative of a dimension: objective mean ± std over seeds (* = the winner's own "
                f"value).", ""]
        for dim, alts in m["dims"].items():
            out += [f"`{dim}`: seeds {', '.join(map(str, m['seeds'][dim]))} for every alternative.", ""]
            dm, lost = dim == "train.loss_weighting", any(a["diverged"] for a in alts.values())
            header = [dim, "n", "mean", "std", *(["diverged (seeds)"] if lost else []),
                      *(["controlled Δm%"] if dm else [])]
            out += table(header, [[f"{v}{' *' if a['winner'] else ''}", a["n"], a["mean"], a["std"],
                                   *([", ".join(map(str, a["diverged"])) or "none"] if lost else []),
                                   *([a["delta_m"]["mean"]] if dm else [])] for v, a in alts.items()])
            if lost:
                out += ["A diverged seed is not averaged in: n counts the seeds that completed.", ""]
            if dm and not m["baselines"]:
                out += ["Controlled Δm% needs the winner's sweep to have single-task baselines (`search.baselines: "
                        "true`): the ablation measures Δm% against the same ones.", ""]
    imp = res.get("importance")
    out += ["### Parameter importance (fANOVA over the sweep's trials)", ""]
    if imp is None:
        out += [f"Fewer than {MIN_TRIALS_FOR_IMPORTANCE} trials with an objective, or no parameter varied, or the "
                f"objective did not vary.", ""]
    else:
        gaps = imp.get("left_out")
        out += [(f"A seeded sample of {imp['n']} of the {imp['of']} trials, as fANOVA's cost grows faster than the "
                 f"trials" if imp["of"] > imp["n"] else f"{imp['n']} trials") +
                " (final objective; stopped trials at the epoch they stopped; failed ones left out). "
                "Importance sums to 1" + (f" over the parameters set in every trial; left out, set in some trials "
                                          f"only: {', '.join(gaps)}" if gaps else "") + ".", ""]
        out += table(["parameter", "importance"], [[k, v] for k, v in imp["importance"].items()])
    return out

