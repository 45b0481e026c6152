"""OpenAPI target: `openapi/openapi.json`, OpenAPI 3.1 for the API the gateway serves.

Every path in it is one the gateway answers (entity collections and rows, custom endpoints,
Server-Sent Events); PostgREST's own OpenAPI 2.0 document describes `/<table>` and
`/rpc/<fn>` paths the gateway does not serve, so this one replaces it at `<base>/` and
`<base>/openapi.json`. Schemas follow the wire contract: a column's JSON is its entity
message field's proto3 JSON (64-bit integers and decimals as strings, bytes as base64,
durations as "1.5s", enums by value name, dates and times of day as google.type.Date and
TimeOfDay objects), as the domains of 0003_wire.sql make PostgREST write it.
"""

from __future__ import annotations

import copy
import json

from ..model import Backend, Column, Endpoint, Entity
from ..sqltypes import WIRE_KINDS

FILE = "openapi/openapi.json"
FILTER_OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "in", "is")
_PATTERNS = {
    "int64": r"^-?[0-9]+$",
    "decimal": r"^-?[0-9]+(\.[0-9]+)?$",
    "duration": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
}

def _int32(description: str, low: int, high: int) -> dict:
    return {"type": "integer", "format": "int32", "minimum": low, "maximum": high,
            "description": description}


# google.type messages as proto3 JSON objects: a field at zero is left out by bindings.
_MESSAGES: dict[str, dict] = {
    "date": {
        "type": "object", "description": "A google.type.Date: a whole date (a partial date, with "
        "a zero or missing year, month or day, is refused).",
        "properties": {"year": _int32("Year, 1 to 9999", 1, 9999),
                       "month": _int32("Month, 1 to 12", 1, 12),
                       "day": _int32("Day of the month, 1 to 31", 1, 31)},
        "required": ["year", "month", "day"], "additionalProperties": False,
    },
    "time_of_day": {
        "type": "object", "description": "A google.type.TimeOfDay (zero fields left out; nanos "
        "keep microseconds; 24:00:00 is {\"hours\": 24}).",
        "properties": {"hours": _int32("Hours, 0 to 24", 0, 24),
                       "minutes": _int32("Minutes, 0 to 59", 0, 59),
                       "seconds": _int32("Seconds, 0 to 59", 0, 59),
                       "nanos": _int32("Nanoseconds, 0 to 999999999", 0, 999999999)},
        "additionalProperties": False,
    },
}
_SCALARS: dict[str, dict] = {
    "TEXT": {"type": "string"},
    "UUID": {"type": "string", "format": "uuid"},
    "INTEGER": {"type": "integer", "format": "int32"},
    "SMALLINT": {"type": "integer", "format": "int32"},
    "SERIAL": {"type": "integer", "format": "int32"},
    "BIGSERIAL": {"type": "integer", "format": "int64"},
    "REAL": {"type": "number", "format": "float"},
    "DOUBLE": {"type": "number", "format": "double"},
    "BOOLEAN": {"type": "boolean"},
    "TIMESTAMPTZ": {"type": "string", "format": "date-time"},
    "TIMESTAMP": {"type": "string"},
    "DATE": {"type": "string", "format": "date"},
    "TIME": {"type": "string"},
    "JSON": {},
    "JSONB": {},
}
ERROR = {
    "type": "object",
    "description": "A JSON error: the gateway's own (code, message) or PostgREST's (code, "
                   "message, details, hint).",
    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                   "details": {"type": ["string", "null"]}, "hint": {"type": ["string", "null"]}},
    "required": ["message"],
}
_ERRORS = {
    "400": "The request is malformed (e.g. an unknown column: PGRST204)",
    "401": "The token is missing where required, invalid or expired",
    "403": "The role may not do this",
    "404": "No such route, or no such row",
    "413": "The body is larger than the limit",
    "429": "Too many requests from this client; see Retry-After",
}


def _element(column: Column) -> dict:
    wire = WIRE_KINDS.get(column.kind) if column.domain else None
    if wire == "bytes":
        return {"type": "string", "contentEncoding": "base64"}
    if wire in _PATTERNS:
        fmt = {"int64": {"format": "int64"}}.get(wire, {})
        return {"type": "string", "pattern": _PATTERNS[wire], **fmt}
    if wire in _MESSAGES:
        return copy.deepcopy(_MESSAGES[wire])  # the caller may change it
    return dict(_SCALARS[column.kind])


def column_schema(column: Column, values: tuple[str, ...] = ()) -> dict:
    """The JSON Schema of one column's value in responses (nullable: also null)."""
    schema = _element(column)
    if values:
        schema["enum"] = list(values)
    if column.sql_type.endswith("]"):
        schema = {"type": "array", "items": schema}
    if column.nullable and "type" in schema:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"].append(None)  # an enum admits only its values: null is one here
    if column.description:
        schema["description"] = column.description
    if column.implicit and column.name in ("created_at", "updated_at"):
        schema["readOnly"] = True
    return schema


def entity_schemas(entity: Entity) -> dict[str, dict]:
    """The row as read (every column present), as written (the columns without a default
    required; audit columns left out) and as patched (any of them)."""
    enums = {c.column: c.values for c in entity.checks if c.kind in ("enum", "enum_array")}
    properties = {c.name: column_schema(c, enums.get(c.name, ())) for c in entity.columns}
    if entity.access.tenant_column:  # set from the token; only platform roles may write it
        properties[entity.access.tenant_column]["readOnly"] = True
    writable = {name: schema for name, schema in properties.items()
                if not schema.get("readOnly")}
    required = [c.name for c in entity.columns
                if not c.nullable and c.default is None and not c.identity]
    about = entity.description or entity.display_name or entity.name
    name = _schema_name(entity)
    row = {"type": "object", "description": about, "properties": properties,
           "required": [c.name for c in entity.columns], "additionalProperties": False}
    write = {"type": "object", "description": f"{about} (to create or replace)",
             "properties": writable, "additionalProperties": False}
    if required:
        write["required"] = required
    patch = {"type": "object", "description": f"{about} (fields to change)",
             "properties": writable, "additionalProperties": False}
    return {name: row, f"{name}Input": write, f"{name}Patch": patch}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _schema_name(entity: Entity) -> str:
    return "".join(part.capitalize() for part in entity.name.split("_"))


def _roles(roles: tuple[str, ...]) -> str:
    return ", ".join(roles) if roles else "nobody"


def _errors(*codes: str) -> dict:
    return {code: {"$ref": f"#/components/responses/E{code}"} for code in codes}


def _filters(entity: Entity) -> list[dict]:
    return [{
        "name": c.name, "in": "query", "required": False,
        "description": f"Filter on {c.name}: <operator>.<value>, the operator one of "
                       + ", ".join(FILTER_OPERATORS) + " (PostgREST's query language).",
        "schema": {"type": "string",
                   "pattern": "^(not\\.)?(" + "|".join(FILTER_OPERATORS) + ")\\..*$"},
    } for c in entity.columns]


def _collection(entity: Entity, name: str) -> dict:
    access = entity.access
    rows = {"type": "array", "items": _ref(name)}
    body = {"required": True, "content": {"application/json": {"schema": {
        "oneOf": [_ref(f"{name}Input"), {"type": "array", "items": _ref(f"{name}Input")}]}}}}
    return {
        "parameters": _filters(entity),
        "get": {
            "operationId": f"list_{entity.name}",
            "summary": f"List {entity.display_name or entity.name}",
            "description": f"Roles: {_roles(access.read)}.",
            "tags": [entity.name],
            "parameters": [{"$ref": f"#/components/parameters/{p}"}
                           for p in ("select", "order", "limit", "offset", "Range", "Prefer")],
            "responses": {
                "200": {"description": "The rows", "content": {"application/json": {
                    "schema": rows}}},
                "206": {"description": "A page of the rows (Range)",
                        "headers": {"Content-Range": {"schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": rows}}},
                **_errors("400", "401", "403", "429"),
            },
        },
        "post": {
            "operationId": f"create_{entity.name}",
            "summary": f"Create {entity.display_name or entity.name} (one object or a list)",
            "description": f"Roles: {_roles(access.create)}. Keys are the entity message's "
                           "proto field names; with ?columns= and Prefer: missing=default, "
                           "rows may leave out different fields.",
            "tags": [entity.name],
            "parameters": [{"$ref": "#/components/parameters/Prefer"},
                           {"$ref": "#/components/parameters/columns"}],
            "requestBody": body,
            "responses": {
                "201": {"description": "Created (the rows with Prefer: return=representation)",
                        "content": {"application/json": {"schema": rows}}},
                **_errors("400", "401", "403", "413", "429"),
            },
        },
        "patch": {
            "operationId": f"update_{entity.name}",
            "summary": f"Update the {entity.name} rows the filters select",
            "description": f"Roles: {_roles(access.update)}.",
            "tags": [entity.name],
            "parameters": [{"$ref": "#/components/parameters/Prefer"}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref(f"{name}Patch")}}},
            "responses": {
                "200": {"description": "The updated rows (Prefer: return=representation)",
                        "content": {"application/json": {"schema": rows}}},
                "204": {"description": "Updated"},
                **_errors("400", "401", "403", "413", "429"),
            },
        },
        "delete": {
            "operationId": f"delete_{entity.name}",
            "summary": f"Delete the {entity.name} rows the filters select",
            "description": f"Roles: {_roles(access.delete)}.",
            "tags": [entity.name],
            "parameters": [{"$ref": "#/components/parameters/Prefer"}],
            "responses": {
                "200": {"description": "The deleted rows (Prefer: return=representation)",
                        "content": {"application/json": {"schema": rows}}},
                "204": {"description": "Deleted"},
                **_errors("401", "403", "429"),
            },
        },
    }


def _item(entity: Entity, name: str, key: Column) -> dict:
    access = entity.access
    one = {"description": "The row", "content": {"application/json": {"schema": _ref(name)}}}
    body = {"required": True, "content": {"application/json": {
        "schema": _ref(f"{name}Input")}}}
    patch = {"required": True, "content": {"application/json": {
        "schema": _ref(f"{name}Patch")}}}
    return {
        "parameters": [{"name": "id", "in": "path", "required": True,
                        "description": f"The row's {key.name}", "schema": _element(key)}],
        "get": {"operationId": f"get_{entity.name}", "tags": [entity.name],
                "summary": f"One {entity.name} by {key.name}",
                "description": f"Roles: {_roles(access.read)}.",
                "parameters": [{"$ref": "#/components/parameters/select"}],
                "responses": {"200": one, **_errors("401", "403", "404", "429")}},
        "patch": {"operationId": f"patch_{entity.name}", "tags": [entity.name],
                  "summary": f"Change fields of one {entity.name}",
                  "description": f"Roles: {_roles(access.update)}.",
                  "requestBody": patch,
                  "responses": {"200": one, **_errors("400", "401", "403", "404", "413",
                                                      "429")}},
        "put": {"operationId": f"put_{entity.name}", "tags": [entity.name],
                "summary": f"Create or replace one {entity.name} (the fields the body names)",
                "description": f"Roles: {_roles(access.create)} to create, "
                               f"{_roles(access.update)} to replace. The body's "
                               f"{key.name} must equal the path's.",
                "requestBody": body,
                "responses": {"200": one, "201": one,
                              **_errors("400", "401", "403", "413", "429")}},
        "delete": {"operationId": f"delete_one_{entity.name}", "tags": [entity.name],
                   "summary": f"Delete one {entity.name}",
                   "description": f"Roles: {_roles(access.delete)}.",
                   "responses": {"200": one, "204": {"description": "Deleted"},
                                 **_errors("401", "403", "404", "429")}},
    }


_PARAM_TYPES = {
    "integer": {"type": "integer", "format": "int32"},
    "smallint": {"type": "integer", "format": "int32"},
    "bigint": {"type": "string", "pattern": _PATTERNS["int64"], "format": "int64"},
    "numeric": {"type": "string", "pattern": _PATTERNS["decimal"]},
    "real": {"type": "number", "format": "float"},
    "double precision": {"type": "number", "format": "double"},
    "boolean": {"type": "boolean"},
    "uuid": {"type": "string", "format": "uuid"},
    "date": {"type": "string", "format": "date"},
    "timestamp with time zone": {"type": "string", "format": "date-time"},
    "jsonb": {}, "json": {},
}


def param_schema(sql_type: str) -> dict:
    """An endpoint argument's schema, from its SQL type (text when PostgreSQL gives none)."""
    base = sql_type.split("(")[0].strip()
    if base.endswith("[]"):
        return {"type": "array", "items": param_schema(base[:-2])}
    return dict(_PARAM_TYPES.get(base, {"type": "string"}))


# A function's result column in a plain type, as PostgREST writes it (json_agg of the rows):
# numbers stay numbers; only the wire domains' columns are strings.
_RESULT_TYPES = {**_PARAM_TYPES, "bigint": {"type": "integer", "format": "int64"},
                 "numeric": {"type": "number"}}


def result_schema(sql_type: str, wire: dict[str, Column]) -> dict:
    """One result column's schema: a wire domain's column as the entity's column with that
    domain is written; `{}` where only the server knows the type."""
    if sql_type in wire:
        column = wire[sql_type]
        element = _element(column)
        return {"type": "array", "items": element} if column.sql_type.endswith("]") else element
    base = sql_type.split("(")[0].strip()
    if base.endswith("[]"):
        return {"type": "array", "items": result_schema(base[:-2], wire)}
    return dict(_RESULT_TYPES.get(base, {"type": "string"} if base else {}))


def _result(endpoint: Endpoint, wire: dict[str, Column]) -> dict:
    if not endpoint.columns:
        return {"type": "array", "items": {"type": "object"}}
    properties = {}
    for column in endpoint.columns:
        schema = result_schema(column.sql_type, wire)
        if "type" in schema:  # any column of a result may be NULL (outer joins, aggregates)
            schema["type"] = [schema["type"], "null"]
        properties[column.name] = schema
    return {"type": "array", "items": {"type": "object", "properties": properties}}


def _endpoint(endpoint: Endpoint, wire: dict[str, Column]) -> dict:
    operation: dict = {
        "operationId": endpoint.function,
        "summary": endpoint.description or f"{endpoint.method} {endpoint.path}",
        "description": f"Roles: {_roles(endpoint.roles)}. Served by the SQL function "
                       f"{endpoint.function}.",
        "tags": ["endpoints"],
        "responses": {
            "200": {"description": "The query's rows", "content": {"application/json": {
                "schema": _result(endpoint, wire)}}},
            **_errors("400", "401", "403", "429"),
        },
    }
    if endpoint.method == "GET":
        operation["parameters"] = [{"name": p.name, "in": "query", "required": True,
                                    "schema": param_schema(p.sql_type)}
                                   for p in endpoint.params]
    else:
        properties = {p.name: param_schema(p.sql_type) for p in endpoint.params}
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"type": "object", "properties": properties,
                       "required": [p.name for p in endpoint.params]}}}}
    return {endpoint.method.lower(): operation}


def _multi_stream(backend: Backend) -> dict:
    names = sorted(e.name for e in backend.streamed)
    return {"get": {
        "operationId": "stream_entities",
        "summary": "Changes of several entities on one Server-Sent Events stream",
        "description": (
            "Each event: `id: <entity>=<stream id>,...` (the position of every included "
            "stream; resume with Last-Event-ID), `event: <entity>`, `data:` as on the "
            "entity's own stream. Each entity's read permission is checked; ?action=I,U "
            "filters all of them; column filters are refused (use /stream/sse/<entity>). "
            "The token: Authorization, or (browsers) the cookie POST /stream/session sets."),
        "tags": ["streams"],
        "parameters": [
            {"name": "entities", "in": "query", "required": True,
             "description": "Comma-separated: " + ", ".join(names),
             "schema": {"type": "string"}},
            {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
            {"name": "last_event_id", "in": "query", "schema": {"type": "string"}},
            {"name": "action", "in": "query", "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {"description": "The event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            **_errors("400", "401", "403", "404", "429"),
        },
    }}


def _stream_session() -> dict:
    cookie = {"Set-Cookie": {"schema": {"type": "string"}, "description": (
        "crud_stream_token=<token>; Path=/stream; HttpOnly; Max-Age up to the token's exp; "
        "Secure; SameSite=None; Partitioned over HTTPS, SameSite=Lax over HTTP")}}
    return {
        "post": {
            "operationId": "stream_session",
            "summary": "Hand the bearer token to the stream routes as an HttpOnly cookie",
            "description": "For browsers, whose EventSource cannot send Authorization: "
                           "open the stream with withCredentials: true afterwards.",
            "tags": ["streams"],
            "responses": {"204": {"description": "The cookie is set", "headers": cookie},
                          **_errors("401", "403", "429")},
        },
        "delete": {
            "operationId": "stream_session_end",
            "summary": "Remove the stream cookie",
            "tags": ["streams"],
            "responses": {"204": {"description": "The cookie is removed"},
                          **_errors("403", "429")},
        },
    }


def _stream(entity: Entity, name: str) -> dict:
    return {"get": {
        "operationId": f"stream_{entity.name}",
        "summary": f"Changes of {entity.name} as Server-Sent Events",
        "description": (
            f"Roles: {_roles(entity.access.read)}. Each event: `id: <stream id>`, `data: "
            "{table_name, action (I/U/D), the row's fields, old, commit_time, commit_lsn}`. "
            "Resume with Last-Event-ID (header or ?last_event_id=); `event: gap` says "
            "changes were trimmed away; ?history=all|<n>, ?action=I,U and <field>=eq.<value> "
            "filter. The token: Authorization, or (browsers) the cookie POST /stream/session "
            "sets; a token in the URL (?access_token=) is refused."),
        "tags": [entity.name],
        "parameters": [
            {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
            {"name": "last_event_id", "in": "query", "schema": {"type": "string"}},
            {"name": "history", "in": "query", "schema": {"type": "string"}},
            {"name": "action", "in": "query", "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {"description": "The event stream; each event's data is a change of "
                                   f"{name} (the row's fields plus table_name, action, old, "
                                   "commit_time, commit_lsn)",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            **_errors("401", "403", "404", "429"),
        },
    }}


def document(backend: Backend) -> dict:
    """The OpenAPI 3.1 document as data."""
    paths: dict[str, dict] = {}
    schemas: dict[str, dict] = {"Error": ERROR}
    for entity in backend.entities:
        name = _schema_name(entity)
        schemas.update(entity_schemas(entity))
        route = entity.base_path + entity.path
        paths[route] = _collection(entity, name)
        if len(entity.primary_key) == 1:
            paths[route + "/{id}"] = _item(entity, name, entity.column(entity.primary_key[0]))
    wire = {c.column_type: c for e in sorted(backend.entities, key=lambda e: e.name)
            for c in reversed(e.columns) if c.domain}
    for endpoint in backend.endpoints:
        paths.setdefault(endpoint.base_path + endpoint.path, {}).update(
            _endpoint(endpoint, wire))
    for entity in backend.streamed:
        paths[f"/stream/sse/{entity.name}"] = _stream(entity, _schema_name(entity))
    if backend.streamed:
        paths["/stream/sse"] = _multi_stream(backend)
        paths["/stream/session"] = _stream_session()
    components: dict = {
        "schemas": schemas,
        "parameters": {
            "select": {"name": "select", "in": "query", "schema": {"type": "string"},
                       "description": "Columns to return, e.g. id,name"},
            "order": {"name": "order", "in": "query", "schema": {"type": "string"},
                      "description": "e.g. price.desc,name.asc"},
            "limit": {"name": "limit", "in": "query",
                      "schema": {"type": "integer", "minimum": 0}},
            "offset": {"name": "offset", "in": "query",
                       "schema": {"type": "integer", "minimum": 0}},
            "columns": {"name": "columns", "in": "query", "schema": {"type": "string"},
                        "description": "The body's keys, for bulk inserts"},
            "Range": {"name": "Range", "in": "header", "schema": {"type": "string"},
                      "description": "Rows to return, e.g. 0-24"},
            "Prefer": {"name": "Prefer", "in": "header", "schema": {"type": "string"},
                       "description": "return=representation, count=exact, "
                                      "missing=default, resolution=merge-duplicates"},
        },
        "responses": {f"E{code}": {"description": text, "content": {"application/json": {
            "schema": _ref("Error")}}} for code, text in _ERRORS.items()},
    }
    out: dict = {
        "openapi": "3.1.0",
        "info": {"title": backend.database.name, "version": "1",
                 "description": "Generated by protoc-gen-crud from the backend's entity "
                                "messages: keys are proto field names and values their "
                                "proto3 JSON."},
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": components,
    }
    if backend.auth.type != "NONE":
        components["securitySchemes"] = {"bearer": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
        out["security"] = [{"bearer": []}, {}]
    return out


def text(backend: Backend) -> str:
    return json.dumps(document(backend), indent=2, sort_keys=False) + "\n"


def render(backend: Backend) -> dict[str, str]:
    return {FILE: text(backend)}
