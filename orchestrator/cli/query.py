"""`orchestrator leaderboard [compact] | best | pareto`: query and tidy the leaderboard (registered on the main
CLI group). Mistakes raise ConfigError: one line on stderr, exit code 2."""
from __future__ import annotations

import math
import os

import click

from ..errors import ConfigError
from ..leaderboard.query import refuse_missing
from ..leaderboard.query import rows as row_dicts
from ..leaderboard.ranking import OBJECTIVES, ROW_KINDS as KINDS, apart_line, objective_groups, objectives_apart
from ..metrics import direction, finite
from .common import mean_pm, os_error_line, reached, storage_opt

ROW_KINDS = [*KINDS, "all"]


def write_best(row: dict, output: str) -> None:
    """The winner's config as a runnable YAML (rows hold credentials-free configs), written atomically."""
    from .. import storage
    from ..config.loading import write_yaml

    if not isinstance(row.get("config"), dict):
        raise ConfigError(f"row {row.get('trial_id')!r} has no config to write; pick a row written by a sweep")
    objective = row.get("objective")
    shown = f"{objective:.4f}" if isinstance(objective, float) and math.isfinite(objective) else "n/a"
    named = storage.redact(output)   # a URI's credentials are neither printed nor written into the file
    header = (f"# best trial {row.get('trial_id')} of experiment {row.get('experiment')} (sweep {row.get('sweep_id')}):"
              f" objective {shown} ({row.get('status')}, {row.get('epochs')} epochs)\n"
              f"# retrain: orchestrator train {named}\n")
    if not storage.is_uri(output) and os.path.isdir(output):
        raise ConfigError(f"-o {named} is a folder: give a file name, e.g. {os.path.join(named, 'best.yaml')}")
    try:
        storage.atomic_write(output, (header + write_yaml(row["config"])).encode())
    except OSError as e:   # which path stops it, and what to do: a file where a folder is needed, no permission
        raise ConfigError(f"cannot write {named}: {os_error_line(e)}") from None
    click.echo(f"wrote {named} (trial {row.get('trial_id')}, objective {shown})")


_storage_opt = storage_opt()
_filter_opts = [
    click.option("--experiment", "-e", multiple=True, help="only these experiments (repeatable)"),
    click.option("--where", "-w", default=None, help='filter, e.g. "right_accuracy >= 0.9 and freeze_depth <= 2"'),
    click.option("--sweep", multiple=True, help="only these sweep ids (repeatable)"),
    click.option("--kind", type=click.Choice(ROW_KINDS), default="trial", show_default=True,
                 help="trial rows, single-task baselines, confirmation runs, or all"),
]
_format_opt = click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
                           show_default=True)


def _filters(f):
    for opt in reversed(_filter_opts):
        f = opt(f)
    return _storage_opt(f)


def _scope(experiment, where, sweep, kind) -> dict:
    return {"experiment": list(experiment) or None, "where": where, "sweep_id": list(sweep) or None,
            "kind": None if kind == "all" else kind}


@click.group(invoke_without_command=True)
@_filters
@click.option("--sort", "metric", default="objective", show_default=True, help="metric to sort by (direction known)")
@click.option("--top", "k", type=click.IntRange(min=1), default=20, show_default=True, help="rows to show")
@_format_opt
@click.pass_context
def leaderboard(ctx, storage, experiment, where, sweep, kind, metric, k, fmt):
    """Show the leaderboard: best trials first. `leaderboard compact` merges its small files."""
    if ctx.invoked_subcommand is not None:
        return
    from ..leaderboard import Leaderboard, render
    from ..leaderboard.query import default_columns

    board = Leaderboard(storage)
    table = board.top(k, metric=metric, ranked=False, **_scope(experiment, where, sweep, kind))
    if not table.num_rows or experiment or sweep:   # a typo beside a name that matches is a typo too
        refuse_missing(board, experiment, sweep)
    if table.num_rows and metric not in OBJECTIVES and metric in table.column_names and not any(
            finite(v) is not None for v in table.column(metric).to_pylist()):   # a listing of failed trials has none
        having = [c for c in table.column_names if (c in OBJECTIVES or direction(c) is not None) and any(
            finite(v) is not None for v in table.column(c).to_pylist())]
        raise ConfigError(f"no row selected has a value of {metric}: sort by a metric they have "
                          f"({', '.join(having) or 'none'}), or select other rows")
    listed = row_dicts(table) if metric in OBJECTIVES else []
    apart = objectives_apart(listed)
    if len(apart) > 1:   # a listing stays, but its ranks do not compare across objectives (best refuses these rows)
        table = _ranked_per_objective(table, objective_groups(listed))
    shown = default_columns(table, also=(metric,)) if fmt == "table" and metric in table.column_names else None
    click.echo(render(table, fmt=fmt, columns=shown) if table.num_rows or fmt != "table"
               else f"no matching rows in {board.uri}")   # the sort column shown, as pareto shows its metrics
    if len(apart) > 1 and fmt == "table":
        click.echo(f"note: these rows rank by {apart_line(apart, verb='list')}; ranks are within each objective")
    if fmt == "table" and table.num_rows and table.column("rank").null_count:
        click.echo(f"rank -: not ranked by {metric} (failed, diverged, no value, or measured otherwise than its "
                   f"experiment's newest rows: older code, other data or baselines)")


def _ranked_per_objective(table, objectives: list):
    """``table`` (a listing, best first) with its ranks numbered within each objective (``objectives``: what each
    row's measures, ``ranking.objective_groups``): the rows of one objective keep their ranking's order, whatever
    the rows of others between them."""
    import pyarrow as pa

    seen: dict = {}
    ranks = []
    for rank, objective in zip(table.column("rank").to_pylist(), objectives):
        seen[objective] = seen.get(objective, 0) + (rank is not None)
        ranks.append(seen[objective] if rank is not None else None)
    return table.set_column(table.column_names.index("rank"), "rank", pa.array(ranks, pa.int64()))


@leaderboard.command("compact")
@storage_opt(default=None, help="storage holding the leaderboard  [default: runs]")
@click.pass_context
def compact_cmd(ctx, storage):
    """Merge the leaderboard's small files into few large ones (safe while sweeps run)."""
    from ..leaderboard import Leaderboard

    board = Leaderboard(storage or ctx.parent.params.get("storage") or "runs")
    refuse_missing(board)   # a typo in --storage: not "0 -> 0 files"
    r = board.compact()
    click.echo(f"compacted {board.uri}: {r['files_before']} -> {r['files_after']} files, {r['rows']} rows merged "
               f"from {r['files_merged']} files, {r['duplicates']} duplicate copies dropped, {r['seconds']} s")


@click.command()
@_filters
@click.option("--metric", "-m", default="objective", show_default=True, help="metric that decides the winner")
@click.option("--confirmed", is_flag=True, help="rank by the mean objective of confirmation runs "
                                                "(`orchestrator confirm`), not by one trial's score")
@click.option("--output", "-o", default="best.yaml", show_default=True, callback=reached)
def best(storage, experiment, where, sweep, kind, metric, confirmed, output):
    """Write the best trial's configuration as a runnable YAML (no search block)."""
    from ..leaderboard import Leaderboard, NoMatchingRows

    board = Leaderboard(storage)
    if not confirmed:
        try:
            row = board.best(metric=metric, **_scope(experiment, where, sweep, kind))
        except NoMatchingRows:
            refuse_missing(board, experiment, sweep)
            raise
        write_best(row, output)
        return
    from ..sweep.confirm import confirmed as ranking, confirmed_now

    ignored = [flag for flag, used in (("--sweep", sweep), ("--where", where), ("--kind", kind != "trial"),
                                       ("--metric", metric != "objective")) if used]
    if ignored:
        raise ConfigError(f"--confirmed ranks the experiment's confirmation runs by their mean objective: drop "
                          f"{', '.join(ignored)} (or --confirmed)")
    if len(experiment) != 1:
        raise ConfigError("--confirmed ranks one experiment's confirmation runs: give exactly one --experiment")
    ranked = [c for c in ranking(board, experiment[0]) if c["n"]]   # a seed completed
    if not ranked:
        raise ConfigError(f"experiment {experiment[0]!r} has no confirmation runs: run `orchestrator confirm -e "
                          f"{experiment[0]}` first")
    top = ranked[0]
    row = board.best(experiment=experiment[0], where=f"trial_id == '{top['confirm_of']}'")
    confirmed_now(board, experiment[0], top["confirm_of"])
    click.echo(f"confirmed winner {top['confirm_of']}: mean objective {mean_pm(top)} over seeds")
    write_best(row, output)


@click.command()
@_filters
@click.option("--metrics", "-m", "names", multiple=True, required=True,
              help="two or more metrics, comma-separated (-m left_accuracy,right_accuracy) or repeated "
                   "(-m left_accuracy -m right_accuracy); directions come from the metric registry")
@_format_opt
def pareto(storage, experiment, where, sweep, kind, names, fmt):
    """Show the Pareto front: trials that no other trial beats on every metric."""
    from ..leaderboard import Leaderboard, render
    from ..leaderboard.query import default_columns

    metrics = [m.strip() for part in names for m in part.split(",") if m.strip()]
    if len(metrics) < 2:
        raise ConfigError(f"--metrics needs two or more metrics, got {metrics}: e.g. -m left_accuracy,right_accuracy")
    board = Leaderboard(storage)
    table = board.pareto(metrics, **_scope(experiment, where, sweep, kind))
    if not table.num_rows or experiment or sweep:   # a typo beside a name that matches is a typo too
        refuse_missing(board, experiment, sweep)
    if fmt == "table" and not table.num_rows:
        click.echo(f"no matching rows with {', '.join(metrics)} in {board.uri}")
        return
    click.echo(render(table, fmt=fmt, columns=default_columns(table, also=tuple(metrics)) if fmt == "table" else None))
