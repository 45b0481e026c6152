"""The SQL PostgREST 12.2.3 runs for a table request, built the way it builds it, from the live
catalog, so the wire contract is tested on real PostgreSQL where PostgREST cannot be installed.

Each rule cites PostgREST's source at tag v12.2.3:
- Domain representations (SchemaCache.hs:345-365): IMPLICIT casts through a function
  (castcontext 'i', castmethod 'f', executable) between a domain and json or text. The cache
  query runs with an empty search_path (SchemaCache.hs:149), so every name is qualified.
- A column's type is its nominal type, format_type(atttypid, atttypmod) (SchemaCache.hs:645);
  a represented column is read through `json` and its cast function (Plan.hs:300-315, 951-956).
- Writes: the column list is the body's keys, sorted (ApiRequest.hs:239-247, Plan.hs:949),
  each looked up in the schema cache: an unknown key is PGRST204 "Could not find the '<key>'
  column of '<table>' in the schema cache" (Plan.hs:955, Error.hs:254-255); the body goes
  through json_to_record(set) (SqlFragment.hs:299-337, QueryBuilder.hs:110-168).
- Reads: `select=*` is expanded to every column, the represented ones wrapped in their cast
  function under their own name, when any column has a representation (Plan.hs:431-451,
  377-386, SqlFragment.hs:251-271), and the rows are aggregated with json_agg
  (Statements.hs:96-110).
- Filters: a query-string value is an unknown literal, passed to the column's text -> domain
  cast function where it has one (Plan.hs:310-323, SqlFragment.hs:356-357), else cast to the
  column's type.
- Role settings: each request first sets the settings of the role it runs as, read once
  from pg_roles.rolconfig of the roles the authenticator is a member of
  (Config/Database.hs:134-170, Query.hs:284-298).
"""

from __future__ import annotations

import json
from dataclasses import dataclass


class ColumnNotFound(Exception):
    """PGRST204, HTTP 400."""


@dataclass(frozen=True)
class TableShape:
    schema: str
    table: str
    columns: dict[str, str]  # name -> nominal type, in attnum order
    readers: dict[str, str]  # column -> function giving its json (domain -> json)
    parsers: dict[str, str]  # column -> function reading it from json (json -> domain)
    defaults: dict[str, str | None]  # column -> default expression for missing=default
    text_parsers: dict[str, str]  # column -> function reading a filter value (text -> domain)

    @property
    def qualified(self) -> str:
        return f'{ident(self.schema)}.{ident(self.table)}'


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def shape(conn, schema: str, table: str, loader: str | None = "authenticator") -> TableShape:
    """Columns and representations as PostgREST's schema cache reads them, as the role that
    loads it (the authenticator: has_function_privilege is asked for that role)."""
    with conn.transaction():
        if loader:
            conn.execute(f'SET LOCAL ROLE "{loader}"')
        conn.execute("SET LOCAL search_path = ''")
        casts = conn.execute("""
            SELECT c.castsource::regtype::text, c.casttarget::regtype::text,
                   c.castfunc::regproc::text
              FROM pg_catalog.pg_cast c
              JOIN pg_catalog.pg_type s ON s.oid = c.castsource
              JOIN pg_catalog.pg_type t ON t.oid = c.casttarget
             WHERE c.castcontext = 'i' AND c.castmethod = 'f'
               AND pg_catalog.has_function_privilege(c.castfunc, 'execute')
               AND ((s.typtype = 'd' AND c.casttarget IN ('pg_catalog.json'::pg_catalog.regtype,
                                                         'pg_catalog.text'::pg_catalog.regtype))
                 OR (t.typtype = 'd' AND c.castsource IN ('pg_catalog.json'::pg_catalog.regtype,
                                                         'pg_catalog.text'::pg_catalog.regtype)))
        """).fetchall()
        # A domain-typed column's default is its domain's, even NULL (SchemaCache.hs:818-836).
        columns = conn.execute("""
            SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod),
                   CASE WHEN t.typtype = 'd' THEN pg_catalog.pg_get_expr(t.typdefaultbin, 0)
                        ELSE pg_catalog.pg_get_expr(d.adbin, d.adrelid) END
              FROM pg_catalog.pg_attribute a
              JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
              LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = %s AND c.relname = %s
               AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
        """, (schema, table)).fetchall()
    to_json = {source: fn for source, target, fn in casts if target == "json"}
    from_json = {target: fn for source, target, fn in casts if source == "json"}
    from_text = {target: fn for source, target, fn in casts if source == "text"}
    return TableShape(
        schema, table, {name: t for name, t, _ in columns},
        {name: to_json[t] for name, t, _ in columns if t in to_json},
        {name: from_json[t] for name, t, _ in columns if t in from_json},
        {name: default for name, _, default in columns},
        {name: from_text[t] for name, t, _ in columns if t in from_text},
    )


def role_settings(conn, loader: str = "authenticator") -> dict[str, dict[str, str]]:
    """Each API role's settings as PostgREST reads them at start-up (queryRoleSettings,
    Config/Database.hs:134-170, the PostgreSQL 15+ branch, `current_user` being the
    authenticator): the roles it is a member of, settings it may set, values lower-cased."""
    with conn.transaction():
        rows = conn.execute("""
            WITH role_setting AS (
                SELECT r.rolname, unnest(r.rolconfig) AS setting
                  FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
                 WHERE member = %(loader)s::regrole::oid),
            kv_settings AS (
                SELECT rolname, substr(setting, 1, strpos(setting, '=') - 1) AS key,
                       lower(substr(setting, strpos(setting, '=') + 1)) AS value
                  FROM role_setting)
            SELECT kv.rolname::text, kv.key, kv.value
              FROM kv_settings kv
              JOIN pg_settings ps ON ps.name = kv.key
               AND (ps.context = 'user'
                    OR has_parameter_privilege(%(loader)s::regrole::oid, ps.name, 'set'))
             WHERE kv.key <> 'default_transaction_isolation'
        """, {"loader": loader}).fetchall()
    found: dict[str, dict[str, str]] = {}
    for role, key, value in rows:
        found.setdefault(role, {})[key] = value
    return found


def begin_request(conn, role: str, claims: dict, settings: dict[str, dict[str, str]]) -> None:
    """What PostgREST runs first in a request's transaction (setPgLocals, Query.hs:284-298):
    the role's settings, then the role and the claims, all transaction-local."""
    for key, value in sorted(settings.get(role, {}).items()):
        conn.execute("SELECT set_config(%s, %s, true)", (key, value))
    conn.execute("SELECT set_config('role', %s, true)", (role,))
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))


def _record(s: TableShape, keys: list[str]) -> tuple[str, str]:
    """The LATERAL select over json_to_record(set) and its column definitions."""
    for key in keys:
        if key not in s.columns:
            raise ColumnNotFound(f"Could not find the '{key}' column of '{s.table}' in the "
                                 "schema cache")
    picked = ", ".join(f"{s.parsers[k]}({ident(k)}) AS {ident(k)}" if k in s.parsers
                       else ident(k) for k in keys)
    definition = ", ".join(f"{ident(k)} {'json' if k in s.parsers else s.columns[k]}"
                           for k in keys)
    return picked, definition


def select_list(s: TableShape, source: str) -> str:
    """`select=*` as PostgREST expands it when a column has a representation."""
    if not s.readers:
        return f"{source}.*"
    return ", ".join(f"{s.readers[c]}({source}.{ident(c)}) AS {ident(c)}" if c in s.readers
                     else f"{source}.{ident(c)}" for c in s.columns)


def _body(s: TableShape, rows_sql: str, source: str) -> str:
    return (f"WITH pgrst_source AS ({rows_sql}) SELECT coalesce(json_agg(_postgrest_t), "
            f"'[]')::text AS body FROM (SELECT {select_list(s, source)} FROM {source}) "
            "_postgrest_t")


def insert(s: TableShape, body: dict | list, columns: list[str] | None = None,
           missing_default: bool = False) -> tuple[str, tuple]:
    """POST with Prefer: return=representation: (sql, params); the result is the JSON body.
    `columns` is ?columns= (the body's keys are then not checked); `missing_default` is
    Prefer: missing=default: the body goes in as jsonb under an object of the columns'
    defaults (Plan.hs:948, SqlFragment.hs:299-337)."""
    first = body[0] if isinstance(body, list) else body
    keys = sorted(columns if columns is not None else first)
    if columns is None and isinstance(body, list) and any(sorted(r) != keys for r in body):
        raise ValueError("PGRST102 All object keys must match")
    if missing_default and keys:
        picked, definition = _record(s, keys)
        defaults = ", ".join(f"'{k}', {s.defaults[k] or 'NULL'}" for k in keys)
        if isinstance(body, list):
            merged = (f"SELECT jsonb_agg(jsonb_build_object({defaults}) || elem) AS val "
                      "FROM jsonb_array_elements(pgrst_payload.json_data) elem")
            reader = "jsonb_to_recordset"
        else:
            merged = f"SELECT jsonb_build_object({defaults}) || pgrst_payload.json_data AS val"
            reader = "jsonb_to_record"
        names = ", ".join(ident(k) for k in keys)
        rows = (f"INSERT INTO {s.qualified}({names}) SELECT "
                + ", ".join(f"pgrst_body.{ident(k)}" for k in keys)
                + " FROM (SELECT %s::jsonb AS json_data) pgrst_payload, LATERAL ("
                f"{merged}) pgrst_json_defs, LATERAL (SELECT {picked} FROM "
                f"{reader}(pgrst_json_defs.val) AS _({definition})) pgrst_body "
                f"RETURNING {s.qualified}.*")
        return _body(s, rows, "pgrst_source"), (json.dumps(body),)
    if not keys:  # {}: a zero-column select, every column its default (SqlFragment.hs:300-313)
        rows = (f"INSERT INTO {s.qualified} SELECT FROM (SELECT %s::json AS json_data) "
                "pgrst_payload, LATERAL (SELECT FROM (values(1)) _ ) pgrst_body "
                f"RETURNING {s.qualified}.*")
        return _body(s, rows, "pgrst_source"), (json.dumps(body),)
    picked, definition = _record(s, keys)
    reader = "json_to_recordset" if isinstance(body, list) else "json_to_record"
    names = ", ".join(ident(k) for k in keys)
    rows = (f"INSERT INTO {s.qualified}({names}) SELECT "
            + ", ".join(f"pgrst_body.{ident(k)}" for k in keys)
            + " FROM (SELECT %s::json AS json_data) pgrst_payload, LATERAL (SELECT "
            f"{picked} FROM {reader}(pgrst_payload.json_data) AS _({definition})) pgrst_body "
            f"RETURNING {s.qualified}.*")
    return _body(s, rows, "pgrst_source"), (json.dumps(body),)


def filter_value(s: TableShape, key: str) -> str:
    """The SQL of `?<key>=eq.<value>`'s value (a %s parameter)."""
    if key in s.text_parsers:
        return f"{s.text_parsers[key]}(%s)"
    return f"%s::{s.columns[key]}"


def update(s: TableShape, body: dict, key: str, value: str) -> tuple[str, tuple]:
    """PATCH ?<key>=eq.<value> with return=representation."""
    keys = sorted(body)
    picked, definition = _record(s, keys)
    sets = ", ".join(f"{ident(k)} = pgrst_body.{ident(k)}" for k in keys)
    rows = (f"UPDATE {s.qualified} SET {sets} FROM (SELECT %s::json AS json_data) "
            f"pgrst_payload, LATERAL (SELECT {picked} FROM json_to_record("
            f"pgrst_payload.json_data) AS _({definition})) pgrst_body "
            f"WHERE {s.qualified}.{ident(key)} = {filter_value(s, key)} "
            f"RETURNING {s.qualified}.*")
    return _body(s, rows, "pgrst_source"), (json.dumps(body), value)


def upsert(s: TableShape, body: dict, key: str) -> tuple[str, tuple]:
    """PUT ?<key>=eq.<value>: an insert that updates the given columns on conflict."""
    sql, params = insert(s, body)
    keys = sorted(body)
    conflict = (f" ON CONFLICT({ident(key)}) DO UPDATE SET "
                + ", ".join(f"{ident(k)} = EXCLUDED.{ident(k)}" for k in keys))
    returning = f" RETURNING {s.qualified}.*"
    sql = sql.replace(returning, conflict + returning, 1)
    return sql, params


def select(s: TableShape, key: str | None = None, value: str | None = None) -> tuple[str, tuple]:
    """GET, optionally ?<key>=eq.<value>."""
    where = f" WHERE {s.qualified}.{ident(key)} = {filter_value(s, key)}" if key else ""
    rows = f"SELECT {s.qualified}.* FROM {s.qualified}{where}"
    return _body(s, rows, "pgrst_source"), ((value,) if key else ())
