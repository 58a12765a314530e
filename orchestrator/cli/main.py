"""`orchestrator` command line: the group and its commands, one module per command group. User mistakes end with one
line on stderr and exit code 2."""
from __future__ import annotations

import sys

import click

from ..errors import UserError
from .ablate import ablate
from .data import manifest
from .interop import export
from .jobs import jobs, submit
from .query import best, leaderboard, pareto
from .report import report
from .run import baselines, confirm, demo, pretrain, train, tune, validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Multi-task fine-tuning sweeps on Ray: train, tune, and query the leaderboard."""


for command in (pretrain, validate, train, tune, baselines, confirm, ablate, demo, submit, jobs, leaderboard, best,
                pareto, report, manifest, export):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    from ..console import quiet_warnings

    quiet_warnings()
    try:
        cli.main(args=argv, prog_name="orchestrator", standalone_mode=False)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
