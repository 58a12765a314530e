"""Which choices mattered? Vary the winner's recipe one dimension at a time, with new seeds, as one Tune run.

A sweep's "Δm% by loss weighting" averages over whatever freeze depths and learning rates random sampling gave each
method: confounded. ``ablate`` holds everything at the winner's values (its scale, budget and data) and changes one
dimension (``--dims train.loss_weighting,train.freeze_depth``) over its alternatives: a choice dimension's values in
the sweep's space, or the values given with ``--values DIM=V1,V2``. Every alternative, the winner's own value
included, runs with the same S seeds (``train.seed`` + 1..S), so differences are controlled comparisons.

The winner: ``--trial``, else the confirmed winner (``confirm``), else the best completed trial. ``static`` weighting
uses the winner's loss weights, or the best static trial's when the winner learns its weights. Rows are kind
``ablation`` (``ablation_of``: the winner's trial id; ``ablation_dim``/``ablation_value``: what changed, ``reference``
for the winner's own values) and are reused on reruns: a configuration with a completed ablation row is not trained
again.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .. import layout, storage
from ..config.freezing import every_block_as_all, frozen_blocks, hashes_of_same_work
from ..config.loading import read_yaml
from ..config.schema import ExperimentConfig, parse_config
from ..config.space import dotted_get, same_option
from ..errors import ConfigError
from ..leaderboard.query import rows as row_dicts
from ..leaderboard.rows import ABLATION_REFERENCE as REFERENCE
from .confirm import confirmed, confirmed_now, done_runs, measured_against, sweep_baselines, sweep_record, trial_row


@dataclass(frozen=True)
class Ablation:
    """What one ``ablate`` trains: the winner, and per configuration its extra row columns."""
    winner: dict
    configs: tuple
    extra: tuple
    reused: int = 0


def _config(row: dict) -> ExperimentConfig:
    return parse_config(row["config"])


def winner_row(board, experiment: str, trial: str | None = None) -> dict:
    """``trial``'s row, else the confirmed winner's, else the best completed trial's."""
    if trial is None:
        winners = [c for c in confirmed(board, experiment) if c["n"]]   # a seed completed
        trial = winners[0]["confirm_of"] if winners else None
        if trial is not None:   # as best --confirmed: not a winner the experiment's newest trials have outdated
            confirmed_now(board, experiment, trial)
    if trial is not None:
        return trial_row(board, experiment, trial)
    if board.table(experiment=experiment, where="status == 'completed'", columns=["trial_id"]).num_rows == 0:
        raise ConfigError(f"experiment {experiment!r} has no completed trials in {board.uri}: run `orchestrator "
                          f"tune` first (experiments: {board.experiments()})")
    return board.best(experiment=experiment, where="status == 'completed'")


def parse_values(pairs: tuple[str, ...]) -> dict[str, list]:
    """``--values DIM=V1,V2`` -> ``{DIM: [V1, V2]}``: the values read as one YAML list (``[V1,V2]``), so a value may be
    a mapping (``train.loss_weights={left: 0.9, right: 0.1}``)."""
    out = {}
    for pair in pairs:
        dim, sep, values = pair.partition("=")
        if not sep or not values.strip():
            raise ConfigError(f"--values {pair!r} is not DIM=V1,V2: write e.g. --values train.head_lr=0.001,0.01")
        out[dim.strip()] = read_yaml(f"[{values}]", source=f"--values {pair!r}")
    return out


VARIED = ("train.", "heads.", "data.augment.")   # what one session's runs can vary: its data and backbone are prepared once
_NO_FIELD = object()


def alternatives(board, winner: dict, dims: list[str], given: dict[str, list]) -> dict[str, list]:
    """dim -> its values: ``given``, else the choice in the winner's sweep's space."""
    for dim in given:
        if dim not in dims:
            raise ConfigError(f"--values {dim}: not in --dims {','.join(dims)}: add it to --dims, or drop its --values")
    fields = _config(winner).run_fields(public=False)
    for dim in dims:   # the runs share the reference's session; the rest is what is measured and ranked
        if not dim.startswith(VARIED):
            raise ConfigError(f"ablate --dims {dim}: ablation runs vary how the winner trains (train.*, heads.*, "
                              f"data.augment.*) on its data, backbone, tasks and objective; for {dim}, run `orchestrator "
                              f"train` or a sweep with --set {dim}=...")
        if dotted_get(fields, dim, _NO_FIELD) is _NO_FIELD:
            raise ConfigError(f"ablate --dims {dim}: not a config field; check the spelling (see README, 'Experiment "
                              f"config')")
    record = sweep_record(winner)
    space = ((record.get("config") or {}).get("search") or {}).get("space") or {}
    out = {}
    for dim in dims:
        if dim in given:
            out[dim] = given[dim]
        elif isinstance(space.get(dim), dict) and space[dim].get("choice") is not None:   # a record has choice: null
            # a conditional branch ({static: {train.loss_weights: ...}}) is its parent's value
            out[dim] = [next(iter(v)) if isinstance(v, dict) and len(v) == 1 else v for v in space[dim]["choice"]]
        else:
            raise ConfigError(f"--dims {dim}: not a choice in sweep {winner['sweep_id']}'s space; give its "
                              f"alternatives with --values {dim}=V1,V2")
    return out


def static_weights(board, winner: dict) -> dict | None:
    """Loss weights for a ``static`` alternative: the winner's if it is static, else the best static trial's."""
    cfg = _config(winner)
    if cfg.train.loss_weighting == "static":
        return cfg.train.loss_weights
    rows = row_dicts(board.top(1, experiment=winner["experiment"], where="loss_weighting == 'static'"))
    return _config(rows[0]).train.loss_weights if rows and rows[0].get("objective") is not None else None


def _alternative(board, winner: dict, base: ExperimentConfig, dim: str, value) -> ExperimentConfig:
    """The winner's config (``base``) with ``dim`` set to ``value`` (nothing changed for the reference)."""
    changed = {} if dim == REFERENCE else {dim: value}
    if dim == "train.loss_weighting" and value == "static":
        changed["train.loss_weights"] = static_weights(board, winner)
    try:
        return base.with_values(changed)
    except ConfigError as e:
        raise ConfigError(f"ablation {dim}={value!r} is not a valid config ({e})") from None


def plan(board, winner: dict, *, dims: list[str], seeds: int, values: dict[str, list], storage_location: str,
         fingerprint: str | None = None, n_blocks: int | None = None) -> Ablation:
    """Every configuration to train around ``winner`` (its row, from ``winner_row``); those with a completed ablation
    row on the data with ``fingerprint`` are left out. ``n_blocks``: the backbone's, for a depth of every block."""
    base = _config(winner).with_values({"storage": storage_location})
    alts = alternatives(board, winner, dims, values)
    wanted: list[tuple[str, object]] = [(REFERENCE, None)]
    for dim, vals in alts.items():
        own = dotted_get(base.run_fields(public=False), dim)
        wanted += [(dim, v) for v in vals if not same_option(v, own)]   # the record is JSON: branch key 0 is "0"
    done = done_runs(board, winner["experiment"], kind="ablation", fingerprint=fingerprint)
    configs, extra, reused, made = [], [], 0, {}
    for k, (dim, value) in enumerate(wanted):
        cfg = _alternative(board, winner, base, dim, value)
        if n_blocks is not None:   # a depth beyond the backbone's blocks: refused here, not failed in a run
            frozen_blocks(cfg.train.freeze_depth, n_blocks)
            cfg = every_block_as_all(cfg, n_blocks)
        first = made.setdefault(cfg.config_hash(), k)
        if first != k:   # inactive fields reset, or a value given twice: one configuration, two labels
            same = wanted[first]
            what = "the winner's own" if same[0] == REFERENCE else f"{same[0]}={json.dumps(same[1])}"
            raise ConfigError(f"ablation {dim}={json.dumps(value)} trains the same configuration as {what} (the winner "
                              f"does not read {dim}, or the value repeats one): drop it from --dims/--values")
        for i in range(1, seeds + 1):
            run = cfg.with_values({"train.seed": base.train.seed + i})
            hashes = hashes_of_same_work(run, n_blocks) if n_blocks is not None else (run.config_hash(),)
            if any((winner["trial_id"], h) in done for h in hashes):   # a hash of its work: done
                reused += 1
                continue
            configs.append(run)
            extra.append({"ablation_of": winner["trial_id"], "ablation_dim": dim,
                          "ablation_value": json.dumps(value if dim != REFERENCE else None)})
    return Ablation(winner, tuple(configs), tuple(extra), reused)


def ablate(storage_location: str, experiment: str, *, dims: list[str], seeds: int, values: dict[str, list],
           trial: str | None = None, address: str | None = None, out=print) -> dict:
    """Plan, train what is missing (one Tune run, rows of kind ``ablation``), and return the summary by dimension."""
    from ..leaderboard.leaderboard import Leaderboard
    from ..training.session import check, check_batch, one_off
    from .runner import new_sweep_id, run_configs

    storage_location = storage.adopt_credentials(storage_location)   # kept in memory, out of the runs' configs
    board = Leaderboard(storage_location)
    # the data as it is now: runs done before on other content at the same path are not reused
    winner = winner_row(board, experiment, trial)
    baselines = measured_against([winner])[winner["trial_id"]]   # before anything starts
    p = check(_config(winner).with_values({"storage": storage_location}))
    todo = plan(board, winner, dims=dims, seeds=seeds, values=values, storage_location=storage_location,
                fingerprint=p.spec.fingerprint, n_blocks=p.n_blocks)
    for cfg in todo.configs:   # an ablated batch size against the winner's workers, before anything starts
        check_batch(cfg, p.data)
    out(f"ablating {experiment}'s winner {todo.winner['trial_id']} over {', '.join(dims)} with {seeds} seeds each: "
        f"{len(todo.configs)} runs to train, {todo.reused} reused")
    if todo.configs:   # one session: no alternative changes its data or backbone (VARIED)
        sweep_id = f"ablation-{new_sweep_id()}"
        with one_off(p, owner=f"sweep {sweep_id}", record=layout.sweep_dir(p.cfg.storage, experiment, sweep_id),
                     address=address, out=out) as session:
            run_configs(session, list(todo.configs), kind="ablation", sweep_id=sweep_id, out=out,
                        extra=list(todo.extra), baselines=baselines)
    return {"winner": todo.winner["trial_id"], "trained": len(todo.configs), "reused": todo.reused}
