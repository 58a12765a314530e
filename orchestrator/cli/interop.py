"""`orchestrator export` and `orchestrator leaderboard merge`: the leaderboard in the tools teams already use, and
leaderboards of other storages pulled into this one. Mistakes raise ConfigError: one line on stderr, exit code 2."""
from __future__ import annotations

import click

from .common import reached, storage_opt
from .query import ROW_KINDS, leaderboard


@click.command()
@storage_opt()
@click.option("--experiment", "-e", multiple=True, help="only these experiments (repeatable)")
@click.option("--sweep", multiple=True, help="only these sweep ids (repeatable)")
@click.option("--kind", type=click.Choice(ROW_KINDS), default="trial", show_default=True)
@click.option("--to", "to", required=True, metavar="TARGET",
              help="mlflow:URI (e.g. mlflow:sqlite:///mlflow.db), tensorboard:DIR, csv:FILE or parquet:FILE",
              callback=reached)
def export(storage, experiment, sweep, kind, to):
    """Export leaderboard rows to MLflow, TensorBoard HParams, or flat CSV / Parquet (history in FILE-history)."""
    from ..leaderboard import Leaderboard
    from ..leaderboard.export import parse_target

    parse_target(to)     # a bad target fails before anything is read
    board = Leaderboard(storage)
    r = board.export(to, experiment=list(experiment) or None, sweep_id=list(sweep) or None,
                     kind=None if kind == "all" else kind)
    more = "".join(f", {k} {v}" for k, v in r.items() if k not in ("target", "rows", "to"))
    click.echo(f"exported {r['rows']} rows of {board.uri} to {r['target']} {r['to']}{more}")


@leaderboard.command("merge")
@click.argument("sources", nargs=-1, required=True, callback=reached)
@click.option("--into", "into", required=True, help="the storage whose leaderboard receives the rows",
              callback=reached)
def merge_cmd(sources, into):
    """Pull the rows of other storages' leaderboards (local or s3://...) into --into's, each row once."""
    from .. import storage
    from ..leaderboard import Leaderboard

    board = Leaderboard(into)
    r = board.merge(list(sources), out=click.echo)
    copies = f"{r['duplicates']} of them {'a copy' if r['duplicates'] == 1 else 'copies'} of work another row holds"
    repeated = f", {r['repeated']} copies of rows in more than one source" if r["repeated"] else ""
    click.echo(f"merged {r['rows']} rows from {r['sources']} storage(s) into {board.uri} ({copies}, marked "
               f"duplicate_of; {r['skipped']} rows already there{repeated}), {r['seconds']} s"
               if r["rows"] or r["skipped"] or r["repeated"] else f"nothing to merge into {storage.redact(into)}")
