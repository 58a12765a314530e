"""`orchestrator leaderboard | best | pareto`: query the leaderboard (registered on the main CLI group)."""
from __future__ import annotations

import os

import click
import yaml


def write_best(row: dict, output: str) -> None:
    header = (f"# best trial {row['trial_id']} of experiment {row['experiment']}: objective {row['objective']:.4f} "
              f"({row['status']}, {row['epochs']} epochs)\n# retrain: orchestrator train {output}\n")
    tmp = output + ".partial"
    with open(tmp, "w") as f:
        f.write(header + yaml.safe_dump(row["config"], sort_keys=False))
    os.replace(tmp, output)
    click.echo(f"wrote {output} (trial {row['trial_id']}, objective {row['objective']:.4f})")


_storage_opt = click.option("--storage", default="runs", show_default=True, help="storage holding the leaderboard")
_query_opts = [
    click.option("--experiment", "-e", multiple=True, help="only these experiments (repeatable)"),
    click.option("--where", "-w", default=None, help='filter, e.g. "right_accuracy >= 0.9 and freeze_depth <= 2"'),
]


def _query(f):
    for opt in reversed(_query_opts):
        f = opt(f)
    return _storage_opt(f)


@click.command()
@_query
@click.option("--sort", "metric", default="objective", show_default=True, help="metric to sort by (direction known)")
@click.option("--top", "k", default=20, show_default=True, help="rows to show")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
def leaderboard(storage, experiment, where, metric, k, fmt):
    """Show the leaderboard: best trials first."""
    from .leaderboard import Leaderboard, render

    table = Leaderboard(storage).top(k, metric=metric, experiment=list(experiment) or None, where=where)
    click.echo(render(table, fmt=fmt))


@click.command()
@_query
@click.option("--metric", "-m", default="objective", show_default=True, help="metric that decides the winner")
@click.option("--output", "-o", default="best.yaml", show_default=True)
def best(storage, experiment, where, metric, output):
    """Write the best trial's configuration as a runnable YAML (no search block)."""
    from .leaderboard import Leaderboard

    write_best(Leaderboard(storage).best(metric=metric, experiment=list(experiment) or None, where=where), output)


