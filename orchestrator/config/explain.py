"""One line from a config's pydantic ValidationError: the first error, where it is, and the fix; the fields two
configs differ in."""
from __future__ import annotations

import json

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


def changed_fields(before: dict, after: dict, *, most: int = 3) -> str:
    """The dotted fields whose values differ between two config dicts, "train.epochs: 1 → 3, ..." (``most`` of them,
    then how many more); "" where none differ."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
        return out

    def shown(v) -> str:
        text = json.dumps(v, sort_keys=True, default=str) if v is not None else "unset"
        return text if len(text) <= 40 else text[:37] + "..."

    a, b = flat(before), flat(after)
    paths = sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p))
    listed = ", ".join(f"{p}: {shown(a.get(p))} → {shown(b.get(p))}" for p in paths[:most])
    return listed + (f" and {len(paths) - most} more" if len(paths) > most else "")
