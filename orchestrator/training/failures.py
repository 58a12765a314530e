"""What a failed run means: a user error raised in a worker (``UserError``: bad data, config, shape, file) fails the
run at once with its one line; anything else (a killed worker, a lost node) is retried from the latest checkpoint
(``FailureConfig(max_failures)``). Ray Train V2 retries every worker error alike, so the trainer
(``training.backend``) gives its controller the policy below, which tells the two apart.
"""
from __future__ import annotations

from typing import Optional

from .. import _ray, storage
from ..errors import UserError


def find_user_error(exc: Optional[BaseException], _depth: int = 0) -> Optional[UserError]:
    """The UserError inside a worker failure, through Ray's and Ray Train's wrappers."""
    if exc is None or _depth > 12:
        return None
    if isinstance(exc, UserError):
        return exc
    for inner in _ray.exception_causes(exc):
        found = find_user_error(inner, _depth + 1)
        if found is not None:
            return found
    return None


def one_line(exc: BaseException) -> str:
    """What a failed run reports: the user error's line, or the last line of the crash, credentials redacted."""
    user = find_user_error(exc)
    if user is not None:   # one line by design; redacted here, not at each raise site
        return storage.redact_text(str(user))
    failures = getattr(exc, "worker_failures", None)
    if failures:
        rank, e = sorted(failures.items())[0]
        return f"worker {rank} failed: {_last_line(_ray.original_error(e))}"[:300]
    return _last_line(exc)


def _last_line(exc: BaseException) -> str:
    return storage.line_of(str(exc), last=True, limit=300) or type(exc).__name__


def failure_policy(failure_config):
    """Ray Train V2's default policy (retry worker failures up to max_failures), except that a
    UserError in any worker is raised at once."""
    from ray.train.v2.api.exceptions import WorkerGroupError

    default_policy, decision = _ray.failure_policy_base()

    class NoRetryOnUserError(default_policy):
        def make_decision(self, training_failed_error):
            if isinstance(training_failed_error, WorkerGroupError) and any(
                    find_user_error(e) for e in training_failed_error.worker_failures.values()):
                return decision.RAISE
            return super().make_decision(training_failed_error)

    return NoRetryOnUserError(failure_config)
