"""One line from a config's pydantic ValidationError: the first error, where it is, and the fix."""
from __future__ import annotations

from pydantic import ValidationError

from .space import KINDS


def one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-after"))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        domains = f"; a domain is one of {', '.join(KINDS)}" if loc.startswith("search.space.") else ""
        return f"unknown config key '{loc}': remove it or check the spelling{domains} (see README, 'Experiment config')"
    if first["type"] == "missing":
        return f"missing config key '{loc}': add it (see README, 'Experiment config')"
    if first["type"] == "finite_number":
        msg = f"must be a finite number, not {first['input']} (YAML's .nan / .inf cannot train)"
    if first["type"] == "string_pattern_mismatch":
        msg = f"{first['input']!r} may hold only letters, digits, '_', '-' and '.' (not dots alone): e.g. my-exp"
    if "instance of Domain" in msg:
        msg = (f"{first['input']!r} is not a search domain: write {{choice: [...]}}, {{uniform: [lo, hi]}}, "
               f"{{loguniform: [lo, hi]}}, {{randint: [lo, hi]}} or {{simplex: {{}}}} (a fixed value goes in the config)")
    more = f" (and {len(err.errors()) - 1} more error(s))" if len(err.errors()) > 1 else ""
    where = f"'{loc}': " if loc else ""
    return f"invalid config {where}{msg}{more}"
