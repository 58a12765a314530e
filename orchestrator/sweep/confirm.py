"""Is the winner really the winner? Retrain the top configurations with new seeds and rank by mean.

The best of N trials is optimistic: seed and data-order noise plus the maximum over N. ``confirm``
retrains each of the K best configurations (recipes: a grid's repeats are one) of an experiment with S new seeds
(``train.seed`` + 1, + 2, ..., skipping seeds a trial of the recipe trained; the validation split does not move,
see ``data.split_seed``), at the target scale, as one Tune run.
Every run is a leaderboard row of kind ``confirm`` naming its original trial (``confirm_of``), and
``confirmed`` ranks configurations by mean ± std.
"""
from __future__ import annotations

import itertools
import json

from ..config.freezing import hashes_of_same_work
from ..config.schema import ExperimentConfig, parse_config
from ..errors import ConfigError
from ..leaderboard import ranking
from ..leaderboard.query import rows as row_dicts, top_distinct


def confirmed(board, experiment: str) -> list[dict]:
    """Configurations of ``experiment`` with confirmation runs, best mean first (``ranking.confirmed``)."""
    return ranking.confirmed(board.table(experiment=experiment, kind="confirm").to_pylist())


PARENT = {"confirm": "confirm_of", "ablation": "ablation_of"}   # the row a confirmation or ablation run serves


def done_runs(board, experiment: str, *, kind: str, fingerprint: str | None) -> set:
    """(parent trial, config hash with the seed) of ``experiment``'s completed rows of ``kind`` trained on the data
    with ``fingerprint`` (the hash names the data's path, not its content): runs not to train again for that
    parent. Another parent's run of the same config is its own work: reused, it would count for the wrong trial."""
    table = board.table(experiment=experiment, kind=kind, where="status == 'completed'")
    if not table.num_rows or PARENT[kind] not in table.column_names:
        return set()
    return {(r[PARENT[kind]], r["config_hash"]) for r in table.to_pylist() if ranking.data_of(r) == fingerprint}


def trial_row(board, experiment: str, trial_id: str) -> dict:
    """The row of ``trial_id`` in ``experiment`` (JSON columns parsed); ConfigError saying where to look if none."""
    where = f"trial_id == {trial_id!r}"
    if not board.table(experiment=experiment, where=where, columns=["trial_id"]).num_rows:
        raise ConfigError(f"experiment {experiment!r} has no trial {trial_id!r}: see `orchestrator leaderboard "
                          f"-e {experiment}`")
    return board.best(experiment=experiment, where=where)


def recipe(cfg: ExperimentConfig) -> str:
    """What a configuration trains, whatever its seed: the config hash at seed 0."""
    return cfg.with_values({"train.seed": 0}).config_hash()


def _recipe_of(row: dict) -> str:
    """A row's recipe; a row of older code whose config no longer validates is its own."""
    try:
        return recipe(parse_config(row["config"]))
    except (ConfigError, TypeError):
        return row.get("config_hash") or row.get("row_id") or row.get("trial_id")


def _top_recipes(board, experiment: str, top: int) -> list[dict]:
    """The ``top`` best rows with an objective of distinct recipes (a grid's repeats of one recipe are one
    configuration; a trial stopped before its first report has nothing to confirm)."""
    return top_distinct(board, top, experiment=experiment,
                        key=lambda row: _recipe_of(row) if ranking.finite(row.get("objective")) is not None else None)


def _measure(row: dict) -> tuple:
    """What a row's confirmation is one of: its recipe, and under objective delta_m the baselines its objective is
    measured against (another set's confirmation is another measurement)."""
    return _recipe_of(row), row.get("baselines_id") if row.get("objective_metric") == "delta_m" else None


def _trials_by_recipe(board, experiment: str) -> tuple[dict[str, set], dict[tuple, str]]:
    """recipe -> the seeds the experiment's trials trained it with (a grid trains seed + r for repeat r), and
    ``_measure`` -> the trial its confirmation runs name (the first confirmed: a recipe is confirmed once per
    measurement, whichever of its trials leads now)."""
    seeds, of_trial = {}, {}
    for row in row_dicts(board.table(experiment=experiment, kind="trial", columns=["trial_id", "config"])):
        try:
            cfg = parse_config(row["config"])
        except (ConfigError, TypeError):   # a row of older code whose config no longer validates: no recipe here
            continue
        of_trial[row["trial_id"]] = key = recipe(cfg)
        seeds.setdefault(key, set()).add(cfg.train.seed)
    anchors: dict[tuple, str] = {}
    for row in sorted(board.table(experiment=experiment, kind="confirm").to_pylist(),
                      key=lambda r: str(r.get("created_at") or "")):
        if row.get("confirm_of") in of_trial:   # a confirmation run is measured as its trial is
            anchors.setdefault((of_trial[row["confirm_of"]], _measure(row)[1]), row["confirm_of"])
    return seeds, anchors


def confirm_configs(board, experiment: str, *, top: int, seeds: int, workers: int | None, storage: str,
                    trials: tuple[str, ...] = ()) -> tuple[list[ExperimentConfig], list[dict]]:
    """Each of the ``top`` best recipes (and ``trials``) with ``seeds`` seeds that no trial of it trained: the
    trial's seed + 1, + 2, ... skipping those."""
    rows = _top_recipes(board, experiment, top)
    for trial_id in trials:   # named trials too (e.g. the base config, a sweep's first trial)
        if trial_id not in {r["trial_id"] for r in rows}:
            rows.append(trial_row(board, experiment, trial_id))
    if not rows:
        raise ConfigError(f"experiment {experiment!r} has no trials in {board.uri}: run `orchestrator tune` first "
                          f"(experiments: {board.experiments()})")
    trained, anchors = _trials_by_recipe(board, experiment)
    picked: dict[tuple, dict] = {}
    for row in rows:   # each recipe once (per measurement): its confirmed trial's, else its first row here
        key = _measure(row)
        if key not in picked:
            picked[key] = row if anchors.get(key, row["trial_id"]) == row["trial_id"] else \
                trial_row(board, experiment, anchors[key])
    configs, extra = [], []
    rows = list(picked.values())
    for row in rows:
        base = parse_config(row["config"])
        check_reachable(base, row)
        taken = trained.get(recipe(base), set()) | {base.train.seed}
        for seed in itertools.islice((s for s in itertools.count(base.train.seed + 1) if s not in taken), seeds):
            values = {"train.seed": seed, "storage": storage}
            if workers:
                values["resources.workers"] = workers
            configs.append(base.with_values(values))
            extra.append({"confirm_of": row["trial_id"]})
    return configs, extra


def sweep_record(row: dict) -> dict:
    """The sweep.json of a row's sweep ({} when it cannot be read)."""
    from .. import layout, storage as places

    try:
        return json.loads(places.read_bytes(layout.sweep_record(parse_config(row["config"]).storage, row["experiment"],
                                                                row["sweep_id"])))
    except (OSError, ValueError, KeyError):
        return {}


def sweep_baselines(row: dict) -> dict | None:
    """The single-task baselines a row's sweep measured Δm% against (task -> score), None without: its confirmation
    and ablation runs are measured against the same ones, so they are comparable with the sweep's."""
    return sweep_record(row).get("baselines") or None


def measured_against(rows: list[dict]) -> dict:
    """trial id -> the single-task baselines its sweep measured Δm% against (None without): its confirmation and
    ablation runs are measured against the same. Under objective delta_m, a ConfigError before anything trains naming
    a trial without any (every run's objective would be NaN), or two trials measured against different ones (their
    objectives do not compare: the confirmed ranking keeps the newest measurement's)."""
    out = {row["trial_id"]: sweep_baselines(row) for row in rows}
    scales: dict[str, dict] = {}
    for row in rows:
        if parse_config(row["config"]).objective.metric != "delta_m":
            continue
        if out[row["trial_id"]] is None:
            raise ConfigError(f"trial {row['trial_id']} has no record of the single-task baselines its Δm% was "
                              f"measured against (objective delta_m; its sweep's record is not in this storage): "
                              f"choose a trial of a sweep run here")
        scales.setdefault(json.dumps(out[row["trial_id"]], sort_keys=True), row)
        if len(scales) > 1:
            first = next(iter(scales.values()))
            raise ConfigError(f"trials {first['trial_id']} (sweep {first['sweep_id']}) and {row['trial_id']} (sweep "
                              f"{row['sweep_id']}) were measured against different single-task baselines (objective "
                              f"delta_m): their objectives do not compare; confirm one sweep's trials at a time")
    return out


def check_reachable(cfg: ExperimentConfig, row: dict) -> None:
    """The data and backbone files a row trained on must be reachable from here (a row merged from another storage
    may name files that stayed there): ConfigError naming the first one that is not."""
    from .. import storage as places

    b = cfg.backbone
    wanted = [("data.train", cfg.data.train), ("data.validation", cfg.data.validation), ("backbone.path", b.path),
              ("backbone.weights", b.weights if b.kind == "application" and b.weights not in ("imagenet", "none")
               else None)]
    for field, location in wanted:
        if isinstance(location, str) and not location.startswith("builtin:") and not places.exists(location):
            where = f" (merged from {row['merged_from']})" if row.get("merged_from") else ""
            raise ConfigError(f"trial {row.get('trial_id')}{where} needs {field} {places.redact(location)!r}, which "
                              f"is not reachable from here: copy it here and set {field} in its config, or confirm "
                              f"where it ran")


def confirm(storage: str, experiment: str, *, top: int, seeds: int, workers: int | None = None,
            address: str | None = None, trials: tuple[str, ...] = (), out=print) -> list[dict]:
    """Run the confirmation runs (one Tune run) and return the ranking."""
    from .. import layout
    from ..leaderboard.leaderboard import Leaderboard
    from ..storage import adopt_credentials
    from ..training.session import check, check_batch, one_off
    from .runner import new_sweep_id, run_configs

    storage = adopt_credentials(storage)   # kept in memory: the runs' configs (pickled, Tune's state) never hold them
    board = Leaderboard(storage)
    configs, extra = confirm_configs(board, experiment, top=top, seeds=seeds, workers=workers, storage=storage,
                                     trials=trials)
    out(f"confirming the {len(configs) // seeds} best configurations of {experiment} with {seeds} new seeds each "
        f"({len(configs)} runs)")
    originals = dict.fromkeys(e["confirm_of"] for e in extra)
    measured = measured_against([trial_row(board, experiment, t) for t in originals])
    groups = [(group, check(group[0][0])) for group in by_inputs(configs, extra, measured)]
    for group, p in groups:   # every run's batch against its workers (--workers), before any starts
        for c, _ in group:
            check_batch(c, p.data)
    for group, p in groups:   # each backbone, data set and baselines: one session, one run
        baselines = measured[group[0][1]["confirm_of"]]
        done = done_runs(board, experiment, kind="confirm", fingerprint=p.spec.fingerprint)
        todo = [(c, e) for c, e in group   # done under any hash of its work
                if not any((e["confirm_of"], h) in done for h in hashes_of_same_work(c, p.n_blocks))]
        if len(todo) < len(group):
            out(f"{len(group) - len(todo)} of these {len(group)} runs were done before, on the same data: reused")
        if not todo:
            continue
        group = todo
        sweep_id = f"confirm-{new_sweep_id()}"
        with one_off(p, owner=f"sweep {sweep_id}", record=layout.sweep_dir(p.cfg.storage, experiment, sweep_id),
                     address=address, out=out) as session:
            run_configs(session, [c for c, _ in group], kind="confirm", sweep_id=sweep_id, out=out,
                        extra=[e for _, e in group], baselines=baselines)
    return confirmed(board, experiment)


def by_inputs(configs: list[ExperimentConfig], extra: list[dict],
              measured: dict) -> list[list[tuple[ExperimentConfig, dict]]]:
    """The runs grouped by what a session prepares once for all its runs, the backbone and the data, and by what their
    Δm% is measured against (``measured``: original trial -> its sweep's baselines)."""
    groups: dict[str, list] = {}
    for cfg, e in zip(configs, extra):
        key = json.dumps([cfg.backbone.model_dump(mode="json"), cfg.data.model_dump(mode="json"),
                          measured[e["confirm_of"]]], sort_keys=True)
        groups.setdefault(key, []).append((cfg, e))
    return list(groups.values())


def confirmed_now(board, experiment: str, winner: str) -> None:
    """ConfigError when the winner's confirmation runs are of older code or data than the experiment's newest
    trials (its confirmation then ranks a measurement the leaderboard no longer compares)."""
    newest = board.best(experiment=experiment)   # the experiment's newest measurement (code, data), as best ranks
    runs = row_dicts(board.table(experiment=experiment, kind="confirm", where=f"confirm_of == '{winner}'"))
    latest = max(runs, key=ranking.newest_first)
    if not any(r is latest for r in ranking.newest_version([latest, newest])):
        raise ConfigError(f"the confirmed winner {winner} of experiment {experiment!r} was confirmed on older data or "
                          f"code than its newest trials (best now: {newest['trial_id']}): run `orchestrator confirm "
                          f"-e {experiment}` again, or leave the confirmation out (best without --confirmed, ablate --trial ID)")
