"""`orchestrator` command line: the group and its commands, one module per command group. User mistakes end with one
line on stderr and exit code 2."""
from __future__ import annotations

import sys

import click

from ..errors import UserError
from .ablate import ablate
from .common import PATH_ERRORS, os_error_line
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
    except UserError as e:   # it may quote what was given: a URI's credentials typed in the wrong place too
        from ..storage import redact_text

        click.echo(f"error: {redact_text(str(e))}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as e:   # `orchestrator` alone: its help, as before
        e.show()
        sys.exit(2)
    except click.UsageError as e:   # one line, as every other mistake: the message and where help is
        from ..storage import redact_text

        where = e.ctx.command_path if e.ctx is not None else "orchestrator"
        click.echo(f"error: {redact_text(e.format_message().rstrip('.'))} (see {where} --help)", err=True)
        sys.exit(2)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except OSError as e:   # a path given that can't be used (exit 2), or storage failing past its retries (exit 1)
        click.echo(f"error: {os_error_line(e)} (traceback in {_traceback_file(e)})", err=True)
        sys.exit(2 if isinstance(e, tuple(PATH_ERRORS)) else 1)


def _traceback_file(e: BaseException) -> str:
    """The error's traceback, for when the path was not the user's (a bug of ours): written to a file of this user in
    the temp dir, overwritten by the next one, so the console keeps one line."""
    import os
    import tempfile
    import traceback

    from ..scratch import own_file
    from ..storage import redact_text

    path = os.path.join(tempfile.gettempdir(), f"orchestrator-{os.getuid()}-last-error.txt")
    try:
        with os.fdopen(own_file(path), "w") as f:
            f.write(redact_text("".join(traceback.format_exception(e))))
    except OSError:
        return "none: the temp dir cannot be written"
    return path
