"""Reading an experiment config: YAML -> relative paths resolved -> ``--set`` overrides -> validated object.

Every YAML a user writes (the config file, ``--set`` values) is read by ``read_yaml``: PyYAML's safe loader,
except that a key given twice in one mapping is an error naming the key and its line (PyYAML keeps the last one,
so a task written twice would silently change type), and that numbers and booleans are YAML 1.2's: ``1e-4`` is a
number, ``010`` is ten, ``1:30`` and ``no`` are text."""
from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, shortened
from .paths import get_dotted, resolve_paths, set_dotted
from .schema import ExperimentConfig, parse_config
from .space import KINDS

_SPACE = "search.space."
WHOLE = ("tasks", "train.loss_weights", "search.space")   # maps of the user's own entries, not sections of fields


class DuplicateKey(yaml.constructor.ConstructorError):
    """A mapping holds the same key twice."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping, at any level."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:     # the mapping's own keys: merged ones (<<: *x) may be overridden
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) or key is None:
                    if key in seen:
                        raise DuplicateKey(None, None, f"duplicate key {key!r} at line {key_node.start_mark.line + 1}",
                                           key_node.start_mark)
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's numbers and booleans: PyYAML follows YAML 1.1, where an exponent needs a dot (1e-4 was the string
# '1e-4'), a leading zero makes an octal (seed: 010 was 8), colons a base-60 number (1:30 was 90), and yes/no/on/off
# are booleans (a task named `no` was the key False)
_NUMBERS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_REPLACED = (*_NUMBERS, "tag:yaml.org,2002:bool")
UniqueKeyLoader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED]
                                           for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                      list("tTfF"))
UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(
    r"^(?:[-+]?[0-9][0-9_]*|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", lambda loader, node: _int(loader.construct_scalar(node)))


def _int(text: str) -> int:
    digits = text.replace("_", "")
    base = {"0o": 8, "0x": 16}.get(digits[:2], 10)
    return int(digits[2:] if base != 10 else digits, base)


UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


class QuotingDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes text ``read_yaml`` would read as a number ('1e1'), as it quotes what YAML 1.1
    would ('010'): what is written as text reads back as text."""


for _first, _resolvers in UniqueKeyLoader.yaml_implicit_resolvers.items():
    for _tag, _rx in _resolvers:
        if _tag in _NUMBERS:
            QuotingDumper.add_implicit_resolver(_tag, _rx, [_first])


def write_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=QuotingDumper, sort_keys=False)


def read_yaml(text: str, *, source: str) -> Any:
    """``text`` parsed as YAML, or a ConfigError naming ``source`` (cut short), the line and the fix."""
    source = shortened(source, 120, tail=40)   # a file's name stays in
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ValueError as e:   # e.g. an int of more digits than Python reads (sys.get_int_max_str_digits)
        raise ConfigError(f"{source} is not valid YAML: a value it cannot read ({str(e).split(':')[0][:80]})") from None
    except RecursionError:
        raise ConfigError(f"{source} is not valid YAML: nested too deep; write the value flatter") from None
    except DuplicateKey as e:
        raise ConfigError(f"{source}: {e.problem}: write each key once (YAML would keep only the last)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        lines = text.splitlines()
        tab = mark is not None and mark.line < len(lines) and "\t" in lines[mark.line]
        fix = "indent with spaces: YAML does not allow tabs there" if tab else "fix the syntax"
        raise ConfigError(f"{source} is not valid YAML{at}: {fix}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read YAML, resolve its relative paths against its folder, apply dotted-path overrides
    (``--set train.epochs=3``; relative paths given there resolve against the working directory), validate."""
    p = Path(path)
    if not p.is_file():
        what = "is a folder" if p.is_dir() else "not found"
        raise ConfigError(f"config file {str(p)!r} {what}: pass the path to an experiment YAML")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text: pass an experiment YAML") from None
    data = read_yaml(text, source=str(p))
    if data is None:
        raise ConfigError(f"config file {str(p)!r} is empty: write an experiment in it (see README, 'Experiment config')")
    if isinstance(data, dict):
        data = resolve_paths(data, p.resolve().parent)
        for k, v in (overrides or {}).items():   # in order; a path given on the command line: the shell's folder
            given: dict = {}
            set_dotted(given, k, v)
            _override(data, k, get_dotted(resolve_paths(given, Path.cwd()), k))
    return parse_config(data)


def _override(data: dict, key: str, value: Any) -> None:
    """One ``--set``: ``search.space.<dotted path>`` is one search dimension (the path keeps its dots); a mapping merges
    into the section already there (keys it does not name keep the file's values), where a search domain replaces,
    and so does any mapping set on a map of the user's own entries (``WHOLE``), one of whose entries null drops."""
    if key.startswith(_SPACE):
        search = data["search"] = data.get("search") if isinstance(data.get("search"), dict) else {}
        space = search["space"] = search.get("space") if isinstance(search.get("space"), dict) else {}
        if value is None:
            space.pop(key[len(_SPACE):], None)
        else:
            space[key[len(_SPACE):]] = value
        return
    parent, _, entry = key.rpartition(".")
    if value is None and parent in WHOLE:
        with contextlib.suppress(KeyError, TypeError, AttributeError):
            get_dotted(data, parent).pop(entry, None)
        return
    if key in WHOLE:
        set_dotted(data, key, value)
        return
    try:
        current = get_dotted(data, key)
    except (KeyError, TypeError):
        current = None
    set_dotted(data, key, _merged(current, value, key))


def _merged(current: Any, value: Any, path: str) -> Any:
    """``value`` merged into ``current`` (at dotted ``path``): sections merge key by key, a search domain and a map
    of the user's own entries (``WHOLE``) are replaced whole, however deep the ``--set`` that reaches them."""
    if not (isinstance(current, dict) and isinstance(value, dict)) or set(value) & set(KINDS) or path in WHOLE:
        return value
    return {**current, **{k: _merged(current.get(k), v, f"{path}.{k}") for k, v in value.items()}}
