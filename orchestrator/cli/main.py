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
        sys.exit(2 if isinstance(e, tuple(_PATH_ERRORS)) else 1)


_PATH_ERRORS = {
    NotADirectoryError: "part of it is a file, not a folder: give a path whose folders are folders",
    IsADirectoryError: "it is a folder: give a file's path",
    FileExistsError: "it exists and is not a folder: give a folder, or another path",
    PermissionError: "no permission: give a path you can write (or read)",
    FileNotFoundError: "not found: check the path",
}


def os_error_line(e: OSError) -> str:
    """One line for an OSError that reached the command line: the path it names and what to do, credentials
    removed; otherwise its first line."""
    from ..storage import first_line, redact_text

    where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"   # a rename names both
    hint = next((h for kind, h in _PATH_ERRORS.items() if isinstance(e, kind)), None)
    if e.filename is not None and hint is not None:
        return f"{redact_text(str(where))}: {hint}"
    return first_line(e)


def _traceback_file(e: BaseException) -> str:
    """The error's traceback, for when the path was not the user's (a bug of ours): written to a file of this user in
    the temp dir, overwritten by the next one, so the console keeps one line."""
    import os
    import tempfile
    import traceback

    from ..storage import redact_text

    path = os.path.join(tempfile.gettempdir(), f"orchestrator-{os.getuid()}-last-error.txt")
    try:
        with open(path, "w") as f:
            f.write(redact_text("".join(traceback.format_exception(e))))
    except OSError:
        return "none: the temp dir cannot be written"
    return path
