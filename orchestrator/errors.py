"""Error types. The type decides what happens (see README, "Errors").

- ``UserError`` (``ConfigError``, ``DataError``): the user can fix it. The CLI prints one line
  and exits with code 2, before any Ray resources are used; raised inside a Ray Train worker (a bad
  image met while streaming), it fails the run at once, never retried (``trainer.make``).
- Anything else in a worker (a crash, a lost node) is retried from the latest checkpoint.
A trial whose loss or outputs become NaN/inf is recorded as ``diverged`` and the sweep goes on.
- ``StorageError``: storage kept failing after retries (a leaderboard read during an outage). One line, exit
  code 1; also an OSError.
- ``Interrupted``: Ctrl-C ended a sweep or a batch of runs. One line saying how to continue, exit code 130.
- ``LeaderboardWriteError``: rows that storage refused after retries; they wait in a local spool file. One
  line naming it, exit code 1.
"""


class UserError(Exception):
    """A mistake the user can fix; the message names the problem and the fix."""

    exit_code = 2


class ConfigError(UserError):
    """The experiment config (YAML or CLI) is invalid."""


class DataError(UserError):
    """The data set does not match the experiment config."""


class Interrupted(UserError):
    """Ctrl-C ended a Tune run (Tune saved its state and stopped the trials): ``what`` stopped, ``again`` how to
    continue."""

    exit_code = 130

    def __init__(self, what: str, again: str):
        super().__init__(f"interrupted (Ctrl-C): {what}; {again}")
        self.what, self.again = what, again


class LeaderboardWriteError(UserError):
    """Rows could not be written to the leaderboard after retries; the message names the local spool file that
    keeps them (``tune --resume`` appends it)."""

    exit_code = 1


class StorageError(UserError, OSError):
    """Storage kept failing after retries; nothing was answered from partial data. Run the command again."""

    exit_code = 1


def shortened(text: str, width: int, *, tail: int = 0) -> str:
    """``text`` as written if it fits in ``width`` characters, else cut to ``width`` with "..." (keeping its last
    ``tail`` characters: a file's name): long user input quoted in a one-line message."""
    if len(text) <= width:
        return text
    head = width - 3 - tail
    return text[:head] + "..." + (text[-tail:] if tail else "")
