"""Error types. The type decides what happens (see README, "Errors").

- ``UserError`` (``ConfigError``, ``DataError``): the user can fix it. The CLI prints one line
  and exits with code 2, before any Ray resources are used.
- ``TrialDiverged``: a trial's loss became NaN/inf. The trial is recorded with this reason and
  the sweep goes on.
"""


class UserError(Exception):
    """A mistake the user can fix; the message names the problem and the fix."""

    exit_code = 2


class ConfigError(UserError):
    """The experiment config (YAML or CLI) is invalid."""


class DataError(UserError):
    """The data set does not match the experiment config."""


class TrialDiverged(RuntimeError):
    """Training produced a non-finite loss."""
