"""One schema for many leaderboard files, and a table conformed to it (see ``files``), or with columns set."""
from __future__ import annotations

import json

import pyarrow as pa

from .columns import JSON_KEY


def unify(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for many files, columns in first-seen order: int + float -> float, null + x -> x, clashing
    types -> string; the JSON-column lists of all files merged into the metadata."""
    distinct = list({id(s): s for s in schemas}.values())
    distinct = list({(s, tuple(sorted((s.metadata or {}).items()))): s for s in distinct}.values())
    json_cols = sorted({c for s in distinct for c in json.loads((s.metadata or {}).get(JSON_KEY, b"[]"))})
    plain = [s.remove_metadata() for s in distinct]
    try:
        merged = pa.unify_schemas(plain, promote_options="permissive") if plain else pa.schema([])
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        fields = []
        for name in dict.fromkeys(n for s in plain for n in s.names):
            try:
                parts = [pa.schema([s.field(name)]) for s in plain if name in s.names]
                fields.append(pa.unify_schemas(parts, promote_options="permissive").field(0))
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                fields.append(pa.field(name, pa.string()))
        merged = pa.schema(fields)
    return merged.with_metadata({JSON_KEY: json.dumps(json_cols)})


def to_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns and types (missing -> nulls)."""
    return pa.Table.from_arrays(
        [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
         for f in schema], schema=schema)


def with_columns(table: pa.Table, values: dict[str, list]) -> pa.Table:
    """``table`` with string columns set (added at the end if new; merge's), conformed to its unified schema, JSON
    columns still named."""
    metadata = table.schema.metadata
    for name, column in values.items():
        array = pa.array(column, pa.string())
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, array)
        else:
            table = table.append_column(name, array)
    schema = unify([table.schema.with_metadata(metadata or {})])
    return to_schema(table, schema).replace_schema_metadata(schema.metadata)
