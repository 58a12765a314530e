"""`orchestrator ablate -e EXP --dims a,b --seeds S`: vary the winner one dimension at a time (registered on the main
CLI group). Mistakes raise ConfigError: one line on stderr, exit code 2."""
from __future__ import annotations

import click

from .. import layout, storage
from ..console import console
from ..errors import ConfigError
from .common import address_opt, mean_pm, storage_opt


@click.command()
@click.option("--experiment", "-e", required=True, help="the experiment whose winner is ablated")
@click.option("--trial", default=None, help="ablate this trial (default: the confirmed winner, else the best "
                                            "completed trial)")
@click.option("--dims", required=True,
              help="dotted paths, comma-separated, e.g. train.loss_weighting,train.freeze_depth")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(1), help="seeds per alternative")
@click.option("--values", "values", multiple=True, metavar="DIM=V1,V2",
              help="alternatives of a dimension that is not a choice in the sweep's space, e.g. "
                   "train.head_lr=1e-3,1e-2")
@storage_opt("location")
@address_opt
def ablate(experiment, trial, dims, seeds, values, location, address):
    """Retrain the winner with one dimension changed at a time, S seeds per alternative (rows of kind ablation,
    reused on reruns); prints mean ± std per alternative ("What mattered" in the report)."""
    import os

    from ..leaderboard import Leaderboard
    from ..leaderboard.query import rows as row_dicts
    from ..report.mattered import what_mattered
    from ..sweep.ablate import ablate as run, parse_values

    names = [d.strip() for d in dims.split(",") if d.strip()]
    if not names:
        raise ConfigError(f"--dims {dims!r} names no dimension: e.g. --dims train.loss_weighting,train.freeze_depth")
    location = location if storage.is_uri(location) else os.path.abspath(location)
    with console(layout.log_file(location, "ablate", experiment), verbose=False) as out:
        done = run(location, experiment, dims=names, seeds=seeds, values=parse_values(values), trial=trial,
                   address=address, out=out)
    rows = row_dicts(Leaderboard(location).table(experiment=experiment, kind=None))
    m = what_mattered(rows, winner=done["winner"])
    click.echo(f"\nwhat mattered for {experiment}'s winner {done['winner']} (objective mean ± std over seeds; "
               f"* = the winner's value):")
    for dim, alts in (m or {}).get("dims", {}).items():
        click.echo(f"  {dim} (seeds {', '.join(map(str, m['seeds'][dim]))}):")   # those every alternative ran
        for value, a in alts.items():
            dm = a["delta_m"]["mean"]
            click.echo(f"    {value}{' *' if a['winner'] else ''}: {mean_pm(a)}"
                       + (f", Δm {dm:+.2f}%" if dim == "train.loss_weighting" and dm is not None else ""))
