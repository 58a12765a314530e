"""`orchestrator report -e EXP -o DIR`: plots and a one-page report.md from the leaderboard (registered on the main
CLI group). Mistakes raise ConfigError: one line on stderr, exit code 2."""
from __future__ import annotations

import click

from ..errors import ConfigError
from .common import reached, storage_opt


@click.command()
@click.option("--experiment", "-e", required=True, help="the experiment to report on")
@click.option("--output", "-o", "out_dir", required=True, help="folder (or URI) for report.md and the plots",
              callback=reached)
@storage_opt()
@click.option("--metrics", "-m", "names", default=None,
              help="the two metrics of the Pareto plot, comma-separated (default: the first two tasks' score "
                   "metrics, e.g. left_accuracy,right_accuracy)")
@click.option("--sweep", default=None, help="only this sweep id (default: every sweep of the experiment)")
def report(experiment, out_dir, storage, names, sweep):
    """Write PNG plots and report.md for one experiment: objective by freeze depth, Pareto front, scores against
    loss weights, learning curves, Δm% by loss weighting, confirmation runs."""
    from ..leaderboard import Leaderboard
    from ..report import summary_lines, write_report
    from ..storage import redact

    metrics = None
    if names is not None:
        metrics = [m.strip() for m in names.split(",") if m.strip()]
        if len(metrics) != 2:
            raise ConfigError(f"--metrics needs two metrics, comma-separated, got {names!r}: e.g. "
                              f"-m left_accuracy,right_accuracy")
    result = write_report(Leaderboard(storage), experiment, out_dir, metrics=metrics, sweep_id=sweep)
    for path in [*result["paths"].values(), result["report"]]:
        click.echo(f"wrote {redact(path)}")
    for line in summary_lines(result):
        click.echo(line)
