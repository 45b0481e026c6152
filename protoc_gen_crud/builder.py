"""From a `crud.v1.Backend` message to the validated model.

Both front doors hand over a Backend message plus a SourceMap; everything the seed's best
practices promise (an `id` primary key, audit columns, least-privilege defaults) is added here,
and every problem is reported at once, each pointing at the place the user wrote it.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from dataclasses import replace as _replace
from urllib.parse import urlparse

from . import aggregates, auth_rules, model, param_types, sqlexpr, sqltypes
from .diagnostics import Path, Reporter, SourceMap
from .gen.crud.v1 import options_pb2 as pb

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_IDENTIFIER_BYTES = 63
DEFAULT_BASE_PATH = "/api/v1"
SEED_NAMESPACE = uuid.UUID("5b1d3d1e-7c3a-4f7e-9a55-63727564a001")
_PARAM = re.compile(r"\$(\d+)")
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.S)
_ACTIONS = {
    pb.REFERENTIAL_ACTION_UNSPECIFIED: "NO ACTION",
    pb.REFERENTIAL_ACTION_RESTRICT: "RESTRICT",
    pb.REFERENTIAL_ACTION_CASCADE: "CASCADE",
    pb.REFERENTIAL_ACTION_SET_NULL: "SET NULL",
    pb.REFERENTIAL_ACTION_SET_DEFAULT: "SET DEFAULT",
}
_INDEX_METHODS = {
    pb.INDEX_TYPE_UNSPECIFIED: "btree",
    pb.INDEX_TYPE_BTREE: "btree",
    pb.INDEX_TYPE_HASH: "hash",
    pb.INDEX_TYPE_GIN: "gin",
    pb.INDEX_TYPE_GIST: "gist",
    pb.INDEX_TYPE_BRIN: "brin",
}
# Keys of a change event next to the row's columns (see relay/events.py).
STREAM_RESERVED = ("table_name", "action", "old", "commit_time", "commit_lsn")
_NEEDS_TARGET = {"SUM", "AVG", "MIN", "MAX", "COUNT_DISTINCT", "STRING_AGG"}


def enum_name(enum: str, number: int) -> str:
    """SQL_TYPE_DECIMAL -> DECIMAL."""
    full = pb.DESCRIPTOR.enum_types_by_name[enum].values_by_number[number].name
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum).upper() + "_"
    return full.removeprefix(prefix)


def short_name(base: str, suffix: str) -> str:
    """A derived object name that fits PostgreSQL's 63 bytes, kept unique by a hash."""
    name = f"{base}_{suffix}"
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return name.encode()[: MAX_IDENTIFIER_BYTES - 9].decode(errors="ignore") + "_" + digest


def function_name(path: str) -> str:
    """/products/by-category -> products_by_category."""
    return re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_")


def query_parameters(query: str) -> list[int]:
    """The $n numbers a query uses, ignoring string literals, quoted names and comments."""
    return sorted({int(n) for n in _PARAM.findall(_QUOTED.sub(" ", query))})


class Builder:
    """Normalizes and validates one Backend message; `build()` returns the model."""

    def __init__(self, backend: pb.Backend, sources: SourceMap):
        self.msg = backend
        self.report = Reporter(sources)

    # ----------------------------------------------------------------- helpers
    def error(self, path: Path, message: str) -> None:
        self.report.error(path, message)

    def identifier(self, path: Path, name: str, what: str) -> str:
        if not name:
            self.error(path, f"{what} has no name; give it a lower_snake_case name")
        elif len(name.encode()) > MAX_IDENTIFIER_BYTES:
            self.error(
                path,
                f"{what} name {name!r} is {len(name.encode())} bytes long; PostgreSQL keeps "
                f"only {MAX_IDENTIFIER_BYTES}, so it would be silently truncated. Shorten it",
            )
        elif not IDENTIFIER.match(name):
            self.error(
                path,
                f"{what} name {name!r} is not lower_snake_case ([a-z_][a-z0-9_]*); PostgreSQL "
                "folds unquoted names to lower case, so custom SQL could not refer to it. "
                "Rename it",
            )
        elif name.startswith("pg_") and what in ("role", "schema"):
            self.error(path, f"{what} name {name!r} is reserved by PostgreSQL (pg_ prefix)")
        return name

    def unique(self, items: Iterable[tuple[Path, str]], what: str, scope: str) -> None:
        seen: dict[str, Path] = {}
        for path, name in items:
            if not name:
                continue
            if name in seen:
                first = self.report.sources.find(seen[name])
                self.error(path, f"duplicate {what} {name!r} in {scope} (first defined at "
                                 f"{first}); {what} names must be unique")
            else:
                seen[name] = path

    # ------------------------------------------------------------------- build
    def build(self) -> model.Backend:
        msg = self.msg
        self.unique(
            ((("entity", i, "name"), e.name) for i, e in enumerate(msg.entity)),
            "entity", "the backend",
        )
        if not msg.entity:
            self.error((), "the backend has no entities; add an `entity { ... }` block "
                           "(textproto) or a message with option (crud.v1.entity)")
        database = self.database()
        auth, cors, rate_limit = self.api_settings()
        names = {e.name for e in msg.entity}
        entities = [self.entity(i, e, auth, names) for i, e in enumerate(msg.entity)]
        by_name = {e.name: e for e in entities}
        self.check_foreign_keys(entities, by_name)
        endpoints = self.endpoints(auth, entities)
        rules = self.rules(by_name)
        self.check_schema_names(entities, rules)
        infrastructure = self.infrastructure()
        self.report.raise_if_any()
        return model.Backend(
            database=database,
            auth=auth,
            cors=cors,
            rate_limit=rate_limit,
            entities=tuple(entities),
            endpoints=tuple(endpoints),
            rules=tuple(rules),
            infrastructure=infrastructure,
        )

    def database(self) -> model.Database:
        db = self.msg.database
        schema = db.schema or "public"
        self.identifier(("database", "schema"), schema, "schema")
        publication = db.publication or "crud_changes"
        self.identifier(("database", "publication"), publication, "publication")
        if db.name:
            self.identifier(("database", "name"), db.name, "database")
        for k, extension in enumerate(db.extensions):
            self.identifier(("database", "extensions", k), extension, "extension")
        self.unique(((("database", "extensions", k), x) for k, x in enumerate(db.extensions)),
                    "extension", "database")
        port = db.connection.port or 5432
        if not 0 < port < 65536:
            self.error(("database", "connection", "port"), f"port {port} is not 1-65535")
        return model.Database(
            name=db.name or "crud",
            schema=schema,
            host=db.connection.host or "database",
            port=port,
            username=db.connection.username or "postgres",
            publication=publication,
            extensions=tuple(dict.fromkeys(db.extensions)),
        )

    def api_blocks(self) -> list[tuple[Path, pb.Api]]:
        """Every Api block in the config with its path: the root one, then each entity's."""
        blocks: list[tuple[Path, pb.Api]] = []
        if self.msg.HasField("api"):
            blocks.append((("api",), self.msg.api))
        for i, entity in enumerate(self.msg.entity):
            if entity.HasField("api"):
                blocks.append((("entity", i, "api"), entity.api))
        return blocks

    def backend_wide(self, field: str) -> tuple[Path, object] | None:
        """A backend-wide Api setting; it may be set once, or identically in several places."""
        found: tuple[Path, object] | None = None
        for path, api in self.api_blocks():
            if not api.HasField(field):
                continue
            value = getattr(api, field)
            if found is None:
                found = (path + (field,), value)
            elif found[1].SerializeToString(deterministic=True) != value.SerializeToString(
                deterministic=True
            ):
                first = self.report.sources.find(found[0])
                self.error(path + (field,), f"api.{field} differs from the one at {first}; "
                                            f"it is backend-wide, so set it once")
        return found

    def api_settings(self) -> tuple[model.Auth, model.Cors, model.RateLimit]:
        found = self.backend_wide("auth")
        a, auth_path = (found[1], found[0]) if found else (pb.Auth(), ("api", "auth"))
        roles = {}
        for key, default in (("anon_role", "anon"), ("authenticated_role", "authenticated"),
                             ("authenticator_role", "authenticator")):
            roles[key] = getattr(a, key) or default
            self.identifier(auth_path + (key,), roles[key], "role")
        if len(set(roles.values())) != 3:
            self.error(auth_path, "anon_role, authenticated_role and authenticator_role must "
                                  "be three different roles")
        kind = "JWT" if a.type == pb.AUTH_TYPE_UNSPECIFIED else enum_name("AuthType", a.type)
        if kind == "OAUTH2" and not a.jwks_url:
            self.error(auth_path + ("type",), "AUTH_TYPE_OAUTH2 needs jwks_url (the identity "
                                              "provider's JWKS address)")
        auth_rules.check(auth_path, a.role_claim, a.user_claim, a.audience, self.error)
        auth = model.Auth(
            type=kind, audience=a.audience, jwks_url=a.jwks_url,
            role_claim=a.role_claim or "role", user_claim=a.user_claim or "sub", **roles,
        )
        found = self.backend_wide("cors")
        c = found[1] if found else pb.Cors()
        for k, origin in enumerate(c.allowed_origins):
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d+)?", origin):
                self.error(found[0] + ("allowed_origins", k), f"CORS origin {origin!r} is not "
                           "like https://app.example.com (scheme, host, optional port) or *")
        if c.allow_credentials and "*" in c.allowed_origins:
            self.error(found[0] + ("allow_credentials",), "CORS with credentials cannot allow "
                       "origin \"*\"; list the allowed origins")
        cors = model.Cors(
            allowed_origins=tuple(c.allowed_origins),
            allowed_methods=tuple(m.upper() for m in c.allowed_methods)
            or ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"),
            allowed_headers=tuple(c.allowed_headers)
            or ("Authorization", "Content-Type", "Prefer", "Range", "Accept", "Last-Event-ID"),
            expose_headers=tuple(c.expose_headers) or ("Content-Range", "Location"),
            allow_credentials=c.allow_credentials,
            max_age_seconds=c.max_age_seconds or 600,
        )
        found = self.backend_wide("rate_limit")
        r = found[1] if found else pb.RateLimit()
        if r.requests_per_second < 0 or r.burst < 0:
            self.error(found[0], "rate limits cannot be negative")
        if r.max_body_size and not re.fullmatch(r"\d+[kKmMgG]?", r.max_body_size):
            self.error(found[0] + ("max_body_size",), f"max_body_size {r.max_body_size!r} is "
                       "not a size like 512k or 1m")
        per_second = r.requests_per_second if r.HasField("requests_per_second") else 20
        burst = r.burst if r.HasField("burst") else 2 * per_second
        rate = model.RateLimit(per_second, burst, r.max_body_size or "1m")
        return auth, cors, rate

    # ----------------------------------------------------------------- entities
    def entity_block(self, index: int, field: str) -> tuple[Path, pb.Api | pb.Stream]:
        """An entity's own `api` or `stream` block; with a single entity and no block of its
        own, the root one (the seed's layout); otherwise an empty block."""
        entity = self.msg.entity[index]
        if entity.HasField(field):
            return ("entity", index, field), getattr(entity, field)
        if self.root_serves_entity(field):
            return (field,), getattr(self.msg, field)
        return ("entity", index, field), type(getattr(entity, field))()

    def root_serves_entity(self, field: str) -> bool:
        """Whether the root `api`/`stream` block is the single entity's own block."""
        return len(self.msg.entity) == 1 and not self.msg.entity[0].HasField(field)

    def entity(self, i: int, e: pb.Entity, auth: model.Auth, names: set[str]) -> model.Entity:
        where = ("entity", i)
        name = self.identifier(where + ("name",), e.name, "entity")
        label = f"entity {name!r}"
        columns = self.columns(i, e, label)
        self.unique(
            ((where + ("fields", j, "name"), f.name) for j, f in enumerate(e.fields)),
            "field", label,
        )
        column_names = {c.name for c in columns}
        pk = tuple(c.name for c in columns if c.primary_key)
        checks: list[model.Check] = []
        fks: list[model.ForeignKey] = []
        for j, f in enumerate(e.fields):
            self.field_constraints(where + ("fields", j), f, name, label, columns, checks, fks,
                                   names)
        indexes = self.indexes(i, e, name, label, {c.name: c for c in columns})
        api_path, api = self.entity_block(i, "api")
        base_path = api.base_path or self.root_base_path()
        self.route(api_path + ("base_path",), base_path, "base_path")
        path = api.entity_path or f"/{name}"
        self.route(api_path + ("entity_path",), path, "entity_path")
        access = self.access(api_path + ("access",), api.access, auth, {c.name: c for c in
                                                                        columns}, label)
        if access.owner_column:
            columns = [
                _replace(c, default=model.Default("user_claim", auth.user_claim))
                if c.name == access.owner_column and c.default is None else c
                for c in columns
            ]
        stream_path, stream = self.entity_block(i, "stream")
        streamed = stream.enable_streaming if stream.HasField("enable_streaming") else True
        if streamed:
            for j, f in enumerate(e.fields):
                if f.name in STREAM_RESERVED:
                    reserved = ", ".join(STREAM_RESERVED)
                    self.error(where + ("fields", j, "name"), f"{label}: field name "
                               f"{f.name!r} is reserved in change events ({reserved}); "
                               "rename it, or set enable_streaming: false")
        if stream.max_len < 0:
            self.error(stream_path + ("max_len",), "max_len cannot be negative")
        max_len = stream.max_len or 100000
        if stream.retention_max_len and stream.retention_max_len < max_len:
            self.error(stream_path + ("retention_max_len",),
                       f"retention_max_len {stream.retention_max_len} is below max_len "
                       f"{max_len}")
        subscribers = []
        for k, s in enumerate(stream.subscribers):
            if not s.app_id:
                self.error(stream_path + ("subscribers", k), "subscriber needs an app_id")
            if not s.route.startswith("/"):
                self.error(stream_path + ("subscribers", k, "route"),
                           f"subscriber route {s.route!r} must start with /")
            subscribers.append(model.Subscriber(s.app_id, s.route))
        seed = self.seed(i, e, name, label, {c.name: c for c in columns}, pk)
        retired = []
        for k, number in enumerate(e.reserved_numbers):
            key = f"#{number}"
            if any(c.key == key for c in columns):
                self.error(where + ("reserved_numbers", k), f"{label}: field number {number} "
                           "is both reserved and in use; remove one of them")
            retired.append(key)
        return model.Entity(
            name=name,
            display_name=e.display_name or name.replace("_", " ").title(),
            description=e.description,
            columns=tuple(columns),
            primary_key=pk,
            checks=tuple(checks),
            foreign_keys=tuple(fks),
            indexes=tuple(indexes),
            seed=tuple(seed),
            base_path=base_path,
            path=path,
            access=access,
            streamed=streamed,
            stream_max_len=max_len,
            subscribers=tuple(subscribers),
            stream_retention_max_len=stream.retention_max_len or 10 * max_len,
            retired_keys=tuple(sorted(set(retired), key=lambda k: int(k[1:]))),
            drop_retired=e.drop_reserved_columns,
            audit=not e.skip_audit_fields and bool(column_names),
        )

    def root_base_path(self) -> str:
        return self.msg.api.base_path or DEFAULT_BASE_PATH

    def route(self, path: Path, value: str, what: str) -> None:
        if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value):
            self.error(path, f"{what} {value!r} must look like /name or /name/more (letters, "
                             "digits, . _ ~ -; no trailing slash)")

    def columns(self, i: int, e: pb.Entity, label: str) -> list[model.Column]:
        columns: list[model.Column] = []
        numbers: dict[int, Path] = {}
        for j, f in enumerate(e.fields):
            path = ("entity", i, "fields", j)
            fname = self.identifier(path + ("name",), f.name, f"{label} field")
            where = f"{label}, field {fname!r}"
            number = f.number if f.HasField("number") else j + 1
            if number <= 0:
                self.error(path + ("number",), f"{where}: number must be positive")
            elif number in numbers:
                first = self.report.sources.find(numbers[number])
                self.error(path + ("number",), f"{where}: number {number} is already used by "
                                               f"the field at {first}")
            numbers.setdefault(number, path)
            if f.type == pb.SQL_TYPE_UNSPECIFIED:
                self.error(path + ("type",), f"{where} has no type; set type to one of "
                           "SQL_TYPE_TEXT, SQL_TYPE_INTEGER, SQL_TYPE_DECIMAL, ...")
                kind = "TEXT"
            else:
                kind = enum_name("SqlType", f.type)
            if kind != "DECIMAL" and (f.HasField("precision") or f.HasField("scale")):
                self.error(path + ("precision",), f"{where}: precision and scale apply only to "
                                                  "SQL_TYPE_DECIMAL")
            if f.HasField("scale") and not f.HasField("precision"):
                self.error(path + ("scale",), f"{where}: scale needs precision")
            if f.HasField("precision") and not 1 <= f.precision <= 1000:
                self.error(path + ("precision",), f"{where}: precision must be 1-1000")
            if f.HasField("scale") and f.HasField("precision") and not (
                0 <= f.scale <= f.precision
            ):
                self.error(path + ("scale",), f"{where}: scale must be between 0 and precision")
            identity = kind in sqltypes.IDENTITY_KINDS
            if identity and f.array:
                self.error(path + ("array",), f"{where}: a SERIAL column cannot be an array")
            c = f.constraints
            default = None
            if f.HasField("default_value") and f.HasField("default_expression"):
                self.error(path + ("default_expression",), f"{where}: set default_value or "
                                                           "default_expression, not both")
            elif f.HasField("default_value"):
                problem = sqltypes.literal_problem(kind, f.array, f.default_value)
                if problem:
                    self.error(path + ("default_value",), f"{where}: default_value {problem}")
                if c.enum_values and f.default_value not in c.enum_values:
                    self.error(path + ("default_value",), f"{where}: default_value "
                               f"{f.default_value!r} is not one of enum_values")
                default = model.Default("literal", f.default_value)
            elif f.HasField("default_expression"):
                if not f.default_expression.strip():
                    self.error(path + ("default_expression",), f"{where}: default_expression "
                                                               "is empty")
                default = model.Default("expression", f.default_expression)
            if identity and default is not None:
                self.error(path, f"{where}: a SERIAL column takes its values from a sequence; "
                                 "remove the default")
            for k, old in enumerate(f.previous_names):
                self.identifier(path + ("previous_names", k), old, f"{where} previous")
            columns.append(
                model.Column(
                    name=fname,
                    key=f"#{number}",
                    kind=kind,
                    sql_type=sqltypes.sql_type(kind, f.array, f.precision or None,
                                               f.scale or None),
                    nullable=not c.not_null,
                    default=default,
                    identity=identity,
                    primary_key=c.primary_key,
                    unique=c.unique,
                    is_primary_content=f.is_primary_content,
                    implicit=False,
                    description=f.description,
                    previous_names=tuple(f.previous_names),
                )
            )
        if sum(1 for f in e.fields if f.is_primary_content) > 1:
            self.error(("entity", i), f"{label}: only one field may be is_primary_content")
        if not any(c.primary_key for c in columns):
            existing = next((c for c in columns if c.name == "id"), None)
            if existing is not None:
                default = existing.default
                if default is None and existing.kind == "UUID" and not existing.sql_type.endswith(
                    "]"
                ):
                    default = model.Default("expression", "gen_random_uuid()")
                columns[columns.index(existing)] = _replace(existing, primary_key=True,
                                                            default=default)
            else:
                columns.insert(0, model.Column(
                    name="id", key="@id", kind="UUID", sql_type="uuid", nullable=False,
                    default=model.Default("expression", "gen_random_uuid()"), identity=False,
                    primary_key=True, unique=False, is_primary_content=False, implicit=True,
                    description="Primary key, generated when not given.",
                ))
        columns = [_replace(c, nullable=False) if c.primary_key else c for c in columns]
        if not e.skip_audit_fields:
            for audit in ("created_at", "updated_at"):
                if any(c.name == audit for c in columns):
                    existing = next(c for c in columns if c.name == audit)
                    if existing.kind not in ("TIMESTAMPTZ", "TIMESTAMP"):
                        j = next(k for k, f in enumerate(e.fields) if f.name == audit)
                        self.error(("entity", i, "fields", j, "type"), f"{label}: {audit} is "
                                   "an audit column and must be SQL_TYPE_TIMESTAMPTZ; rename the "
                                   "field or set skip_audit_fields")
                    continue
                columns.append(model.Column(
                    name=audit, key=f"@{audit}", kind="TIMESTAMPTZ",
                    sql_type="timestamp with time zone", nullable=False,
                    default=model.Default("expression", "now()"), identity=False,
                    primary_key=False, unique=False, is_primary_content=False, implicit=True,
                    description="Set when the row is created." if audit == "created_at"
                    else "Set on every change by a trigger.",
                ))
        return columns

    def field_constraints(self, path: Path, f: pb.Field, table: str, label: str,
                          columns: list[model.Column], checks: list[model.Check],
                          fks: list[model.ForeignKey], names: set[str]) -> None:
        c = f.constraints
        col = next((x for x in columns if x.name == f.name), None)
        if col is None:
            return
        where = f"{label}, field {f.name!r}"
        cpath = path + ("constraints",)
        is_array = col.sql_type.endswith("]")
        is_text = col.kind == "TEXT" and not is_array
        if c.enum_values:
            if not is_text:
                self.error(cpath + ("enum_values",), f"{where}: enum_values needs a TEXT field, "
                           f"not {col.sql_type}; change the type or use a check")
            if len(set(c.enum_values)) != len(c.enum_values):
                self.error(cpath + ("enum_values",), f"{where}: enum_values has duplicates")
            checks.append(model.Check(short_name(f"{table}_{f.name}", "enum"), "enum", f.name,
                                      values=tuple(c.enum_values)))
        for bound in ("min", "max"):
            if c.HasField(bound):
                if not col.numeric:
                    self.error(cpath + (bound,), f"{where}: {bound} needs a numeric field, not "
                                                 f"{col.sql_type}; use min_length/max_length")
                value = getattr(c, bound)
                number = str(int(value)) if value.is_integer() else repr(value)
                checks.append(model.Check(short_name(f"{table}_{f.name}", bound), bound, f.name,
                                          number=number))
        if c.HasField("min") and c.HasField("max") and c.min > c.max:
            self.error(cpath + ("max",), f"{where}: max {c.max:g} is below min {c.min:g}")
        for bound in ("min_length", "max_length"):
            if c.HasField(bound):
                if not is_text:
                    self.error(cpath + (bound,), f"{where}: {bound} needs a TEXT field")
                if getattr(c, bound) < 0:
                    self.error(cpath + (bound,), f"{where}: {bound} cannot be negative")
                checks.append(model.Check(short_name(f"{table}_{f.name}", bound), bound,
                                          f.name, number=str(getattr(c, bound))))
        if (c.HasField("min_length") and c.HasField("max_length")
                and c.min_length > c.max_length):
            self.error(cpath + ("max_length",), f"{where}: max_length is below min_length")
        if c.pattern:
            if not is_text:
                self.error(cpath + ("pattern",), f"{where}: pattern needs a TEXT field")
            try:
                re.compile(c.pattern)
            except re.error as exc:
                self.error(cpath + ("pattern",), f"{where}: pattern is not a valid regular "
                                                 f"expression ({exc})")
            checks.append(model.Check(short_name(f"{table}_{f.name}", "pattern"), "pattern",
                                      f.name, text=c.pattern))
        if c.check:
            if c.check.count("(") != c.check.count(")") or ";" in c.check:
                self.error(cpath + ("check",), f"{where}: check must be one boolean expression "
                                               "with balanced parentheses and no ';'")
            checks.append(model.Check(short_name(f"{table}_{f.name}", "check"), "expression",
                                      f.name, text=c.check))
        if c.HasField("foreign_key"):
            fk = c.foreign_key
            if fk.entity not in names:
                self.error(cpath + ("foreign_key", "entity"), f"{where}: foreign_key names "
                           f"entity {fk.entity!r}, which does not exist")
            action = _ACTIONS[fk.on_delete]
            if action == "SET NULL" and not col.nullable:
                self.error(cpath + ("foreign_key", "on_delete"), f"{where}: on_delete SET_NULL "
                           "needs a nullable field")
            fks.append(model.ForeignKey(
                name=short_name(f"{table}_{f.name}", "fkey"), column=f.name, table=fk.entity,
                ref_column=fk.field, on_delete=action, on_update=_ACTIONS[fk.on_update],
            ))

    def check_foreign_keys(self, entities: list[model.Entity],
                           by_name: dict[str, model.Entity]) -> None:
        """Resolve each foreign key's referenced column and check it can be referenced."""
        for i, entity in enumerate(entities):
            resolved: list[model.ForeignKey] = []
            for fk in entity.foreign_keys:
                target = by_name.get(fk.table)
                if target is None:
                    continue
                j = next(k for k, f in enumerate(self.msg.entity[i].fields)
                         if f.name == fk.column)
                path = ("entity", i, "fields", j, "constraints", "foreign_key")
                ref = fk.ref_column or (target.primary_key[0] if len(target.primary_key) == 1
                                        else "")
                if not ref:
                    self.error(path, f"entity {entity.name!r}, field {fk.column!r}: entity "
                               f"{fk.table!r} has a composite primary key; name the field")
                    continue
                ref_col = next((c for c in target.columns if c.name == ref), None)
                if ref_col is None:
                    self.error(path + ("field",), f"entity {entity.name!r}, field "
                               f"{fk.column!r}: entity {fk.table!r} has no field {ref!r}")
                    continue
                if not (ref_col.primary_key and len(target.primary_key) == 1) and not (
                    ref_col.unique
                ):
                    self.error(path + ("field",), f"entity {entity.name!r}, field "
                               f"{fk.column!r}: {fk.table}.{ref} is neither the primary key "
                               "nor unique, so it cannot be referenced")
                if ref_col.sql_type != entity.column(fk.column).sql_type:
                    self.error(path, f"entity {entity.name!r}, field {fk.column!r} is "
                               f"{entity.column(fk.column).sql_type} but {fk.table}.{ref} is "
                               f"{ref_col.sql_type}; foreign keys need equal types")
                resolved.append(_replace(fk, ref_column=ref))
            entities[i] = by_name[entity.name] = _replace(entity, foreign_keys=tuple(resolved))

    def indexes(self, i: int, e: pb.Entity, table: str, label: str,
                columns: dict[str, model.Column]) -> list[model.Index]:
        result = []
        for k, ix in enumerate(e.indexes):
            path = ("entity", i, "indexes", k)
            name = self.identifier(path + ("name",), ix.name, f"{label} index")
            where = f"{label}, index {name!r}"
            method = _INDEX_METHODS[ix.type]
            if not ix.fields:
                self.error(path + ("fields",), f"{where} lists no fields")
            for n, fname in enumerate(ix.fields):
                col = columns.get(fname)
                if col is None:
                    self.error(path + ("fields", n), f"{where} uses field {fname!r}, which "
                               f"{label} does not have (fields: {', '.join(sorted(columns))})")
                elif method == "gin" and not (col.kind == "JSONB" or col.sql_type.endswith("]")):
                    self.error(path + ("type",), f"{where}: GIN indexes JSONB or array "
                               f"fields, and {fname!r} is {col.sql_type}; use INDEX_TYPE_BTREE")
            if len(set(ix.fields)) != len(ix.fields):
                self.error(path + ("fields",), f"{where} repeats a field")
            if method == "hash" and len(ix.fields) > 1:
                self.error(path + ("type",), f"{where}: HASH indexes take exactly one field")
            if ix.unique and method != "btree":
                self.error(path + ("unique",), f"{where}: only B-tree indexes can be unique")
            if ix.where and (";" in ix.where or ix.where.count("(") != ix.where.count(")")):
                self.error(path + ("where",), f"{where}: where must be one boolean expression")
            result.append(model.Index(name, tuple(ix.fields), method, ix.unique, ix.where))
        self.unique(((("entity", i, "indexes", k, "name"), ix.name)
                     for k, ix in enumerate(e.indexes)), "index", label)
        return result

    def access(self, path: Path, a: pb.Access, auth: model.Auth,
               columns: dict[str, model.Column], label: str) -> model.Access:
        lists = {}
        for op in ("read", "create", "update", "delete", "admin_roles"):
            values = getattr(a, op)
            for k, role in enumerate(values):
                self.identifier(path + (op, k), role, "role")
                if role == auth.authenticator_role:
                    self.error(path + (op, k), f"{label}: {role!r} is the authenticator login "
                               "role; it must not get table rights. Grant "
                               f"{auth.authenticated_role!r} or a role of your own instead")
            lists[op] = tuple(dict.fromkeys(values))
        if not a.ListFields():
            default = (auth.authenticated_role,)
            lists = {"read": default, "create": default, "update": default, "delete": default,
                     "admin_roles": ()}
        # PostgreSQL needs SELECT to find the rows an UPDATE or DELETE filters on (and
        # PostgREST to return them), so changing implies reading.
        lists["read"] = tuple(dict.fromkeys(lists["read"] + lists["update"] + lists["delete"]))
        owner = a.owner_field
        if owner:
            col = columns.get(owner)
            if col is None:
                self.error(path + ("owner_field",), f"{label}: owner_field {owner!r} is not a "
                           "field of the entity")
            elif col.kind not in ("TEXT", "UUID") or col.sql_type.endswith("]"):
                self.error(path + ("owner_field",), f"{label}: owner_field {owner!r} must be "
                           f"TEXT or UUID (it holds the user claim), not {col.sql_type}")
            anon = auth.anon_role
            for op in ("create", "update", "delete"):
                if anon in lists[op]:
                    self.error(path + (op,), f"{label}: with owner_field, {anon!r} cannot "
                               f"{op}: anonymous callers own no rows")
        return model.Access(owner_column=owner, shared_read=a.shared_read, **{
            "read": lists["read"], "create": lists["create"], "update": lists["update"],
            "delete": lists["delete"], "admin_roles": lists["admin_roles"]})

    def seed(self, i: int, e: pb.Entity, table: str, label: str,
             columns: dict[str, model.Column], pk: tuple[str, ...]) -> list[model.SeedRow]:
        rows = []
        for k, row in enumerate(e.default_data):
            path = ("entity", i, "default_data", k)
            values = dict(row.values)
            for cname, text in sorted(values.items()):
                col = columns.get(cname)
                if col is None:
                    self.error(path + ("values",), f"{label}, default_data row {k + 1}: "
                               f"{cname!r} is not a field")
                    continue
                problem = sqltypes.literal_problem(col.kind, col.sql_type.endswith("]"), text)
                if problem:
                    self.error(path + ("values",), f"{label}, default_data row {k + 1}, "
                               f"field {cname!r}: {problem}")
            missing = [c.name for c in columns.values()
                       if not c.nullable and c.default is None and not c.identity
                       and c.name not in values and not c.primary_key]
            if missing:
                self.error(path, f"{label}, default_data row {k + 1} lacks required "
                           f"field(s) {', '.join(missing)}")
            for key in pk:
                if key not in values:
                    if len(pk) == 1 and columns[key].kind == "UUID":
                        content = "\x1f".join(f"{n}={v}" for n, v in sorted(values.items()))
                        values[key] = str(uuid.uuid5(SEED_NAMESPACE, f"{table}\x1e{content}"))
                    else:
                        self.error(path, f"{label}, default_data row {k + 1} must give the "
                                   f"primary key {key!r} (only a single UUID key is derived)")
            ordered = tuple((c, values[c]) for c in columns if c in values)
            rows.append(model.SeedRow(ordered))
        keys = [tuple(dict(r.values).get(p) for p in pk) for r in rows]
        for k, key in enumerate(keys):
            if key in keys[:k]:
                self.error(("entity", i, "default_data", k), f"{label}, default_data row "
                           f"{k + 1} has the same primary key as an earlier row")
        return rows

    # ---------------------------------------------------------------- endpoints
    def endpoints(self, auth: model.Auth, entities: list[model.Entity]) -> list[model.Endpoint]:
        blocks: list[tuple[Path, pb.Api, str]] = []
        if self.msg.HasField("api") and not self.root_serves_entity("api"):
            for key in ("entity_path", "access"):
                if self.msg.api.HasField(key) if key == "access" else self.msg.api.entity_path:
                    self.error(("api", key), f"api.{key} at the root applies to no entity here "
                               "(there are several entities, or the entity has its own api "
                               "block); move it into the entity's api block")
            blocks.append((("api",), self.msg.api, self.root_base_path()))
        for i in range(len(self.msg.entity)):
            path, api = self.entity_block(i, "api")
            base = entities[i].base_path if i < len(entities) else self.root_base_path()
            blocks.append((path, api, base))
        result = []
        seen: list[tuple[Path, str]] = []
        routes: list[tuple[Path, str]] = []
        columns_by_table = {e.name: {c.name: c.sql_type for c in e.columns} for e in entities}
        for path, api, base in blocks:
            for k, ep in enumerate(api.custom_endpoints):
                here = path + ("custom_endpoints", k)
                where = f"custom endpoint {ep.path!r}"
                self.route(here + ("path",), ep.path, f"{where} path")
                method = ep.method.upper() or "GET"
                if method not in ("GET", "POST"):
                    self.error(here + ("method",), f"{where}: method {ep.method!r} is not "
                               "supported; use GET (read-only) or POST")
                fname = function_name(ep.path)
                if fname:
                    self.identifier(here + ("path",), fname, f"{where} function")
                seen.append((here + ("path",), fname))
                routes.append((here + ("path",), f"{method} {base}{ep.path}"))
                if not ep.sql_query.strip():
                    self.error(here + ("sql_query",), f"{where} has no sql_query")
                numbers = query_parameters(ep.sql_query)
                expected = list(range(1, len(numbers) + 1))
                if numbers != expected:
                    self.error(here + ("sql_query",), f"{where}: parameters must be numbered "
                               f"$1..$n without gaps; the query uses "
                               f"{', '.join('$' + str(n) for n in numbers)}")
                if len(ep.params) > len(numbers):
                    self.error(here + ("params",), f"{where}: params names "
                               f"{len(ep.params)} argument(s) but the query uses "
                               f"{len(numbers)}")
                if ";" in _QUOTED.sub(" ", ep.sql_query).strip().rstrip(";"):
                    self.error(here + ("sql_query",), f"{where}: sql_query must be a single "
                                                      "statement")
                params = []
                inferred = param_types.infer(ep.sql_query, columns_by_table) if numbers else {}
                for n in range(1, max(numbers, default=0) + 1):
                    p = ep.params[n - 1] if n <= len(ep.params) else pb.Param()
                    pname = p.name or f"p{n}"
                    self.identifier(here + ("params", n - 1, "name"), pname, f"{where} param")
                    if p.type == pb.SQL_TYPE_UNSPECIFIED:  # as PostgreSQL infers it
                        sql_type = inferred.get(n, "text")
                    else:
                        sql_type = sqltypes.sql_type(enum_name("SqlType", p.type), False, None,
                                                     None)
                    params.append(model.Param(pname, sql_type))
                self.unique(((here + ("params", n), p.name) for n, p in enumerate(params)),
                            "param", where)
                roles = tuple(dict.fromkeys(ep.roles)) or (auth.authenticated_role,)
                for n, role in enumerate(ep.roles):
                    self.identifier(here + ("roles", n), role, "role")
                result.append(model.Endpoint(
                    path=ep.path, base_path=base, method=method, description=ep.description,
                    query=ep.sql_query.strip().rstrip(";").strip(), function=fname,
                    params=tuple(params), roles=roles, security_definer=ep.security_definer,
                ))
        self.unique(seen, "custom endpoint function", "the backend")
        self.unique(routes, "custom endpoint route", "the backend")
        for path, route in routes:
            method, url = route.split(" ", 1)
            for entity in entities:
                if url == entity.base_path + entity.path:
                    self.error(path, f"custom endpoint {url} is the route of entity "
                                     f"{entity.name!r}; choose another path")
        return sorted(result, key=lambda ep: ep.function)

    # -------------------------------------------------------------------- rules
    def rules(self, by_name: dict[str, model.Entity]) -> list[model.Rule]:
        blocks: list[tuple[Path, pb.Stream, str]] = []
        if self.msg.HasField("stream") and not self.root_serves_entity("stream"):
            only = self.msg.entity[0].name if len(self.msg.entity) == 1 else ""
            if (self.msg.stream.HasField("enable_streaming") or self.msg.stream.max_len
                    or self.msg.stream.retention_max_len):
                self.error(("stream",), "enable_streaming, max_len and retention_max_len at the "
                           "root apply to no entity here; set them in each entity's stream block")
            blocks.append((("stream",), self.msg.stream, only))
        for i, e in enumerate(self.msg.entity):
            path, stream = self.entity_block(i, "stream")
            blocks.append((path, stream, e.name))
        result, names = [], []
        for path, stream, owner in blocks:
            for k, r in enumerate(stream.aggregation.rules):
                here = path + ("aggregation", "rules", k)
                name = self.identifier(here + ("name",), r.name, "aggregation rule")
                names.append((here + ("name",), name))
                where = f"aggregation rule {name!r}"
                source = r.source_entity or owner
                if r.source_entity and owner and r.source_entity != owner:
                    self.error(here + ("source_entity",), f"{where}: source_entity "
                               f"{r.source_entity!r} differs from the entity it is declared on")
                entity = by_name.get(source)
                if not source:
                    self.error(here + ("source_entity",), f"{where}: with several entities, "
                               "name the entity it reads in source_entity")
                elif entity is None:
                    self.error(here + ("source_entity",), f"{where}: source_entity "
                               f"{source!r} is not an entity")
                fields = {c.name: c for c in entity.columns} if entity else {}
                window = self.window(here + ("window",), r.window, where)
                fn = enum_name("FunctionType", r.function.type)
                fpath = here + ("function",)
                if fn == "UNSPECIFIED":
                    self.error(fpath + ("type",), f"{where}: function.type is not set; use "
                               "FUNCTION_TYPE_COUNT, _SUM, _AVG, _MIN, _MAX, ...")
                target = r.function.target_field
                if fn in _NEEDS_TARGET and not target:
                    self.error(fpath + ("target_field",), f"{where}: FUNCTION_TYPE_{fn} needs "
                                                          "target_field")
                if target and entity and target not in fields:
                    self.error(fpath + ("target_field",), f"{where}: target_field "
                               f"{target!r} is not a field of entity {source!r} (fields: "
                               f"{', '.join(sorted(fields))})")
                elif target and entity and fn in ("SUM", "AVG") and not fields[target].numeric:
                    self.error(fpath + ("target_field",), f"{where}: FUNCTION_TYPE_{fn} needs "
                               f"a numeric field, and {target!r} is {fields[target].sql_type}")
                if fn == "CUSTOM" and not r.function.custom_sql.strip():
                    self.error(fpath + ("custom_sql",), f"{where}: FUNCTION_TYPE_CUSTOM needs "
                                                        "custom_sql")
                if fn != "CUSTOM" and r.function.custom_sql:
                    self.error(fpath + ("custom_sql",), f"{where}: custom_sql is only used "
                                                        "with FUNCTION_TYPE_CUSTOM")
                for n, g in enumerate(r.group_by):
                    if entity and g not in fields:
                        self.error(here + ("group_by", n), f"{where}: group_by field {g!r} is "
                                   f"not a field of entity {source!r}")
                out = r.output
                if out.table_name:
                    self.identifier(here + ("output", "table_name"), out.table_name,
                                    f"{where} output table")
                if out.webhook_url:
                    url = urlparse(out.webhook_url)
                    if url.scheme not in ("http", "https") or not url.netloc:
                        self.error(here + ("output", "webhook_url"), f"{where}: webhook_url "
                                   f"{out.webhook_url!r} is not an http(s) URL")
                if out.sse_channel and (
                        not re.fullmatch(r"/stream/[a-z0-9_-]+", out.sse_channel)
                        or out.sse_channel == "/stream/sse"):
                    self.error(here + ("output", "sse_channel"), f"{where}: sse_channel "
                               f"{out.sse_channel!r} must look like /stream/<name> (lower "
                               "case letters, digits, _ and -; not /stream/sse, which "
                               "serves the entities' change streams)")
                if entity:
                    self.rule_expressions(here, r, fields, where)
                    if not entity.streamed:
                        self.error(here + ("name",), f"{where}: entity {source!r} has "
                                   "enable_streaming: false, and a rule reads its change "
                                   "stream; turn streaming on or remove the rule")
                result.append(model.Rule(
                    name=name, description=r.description, entity=source, window=window,
                    function=fn, target_field=target, custom_sql=r.function.custom_sql.strip(),
                    separator=r.function.separator or ", ", group_by=tuple(r.group_by),
                    having=r.having, where=r.where_condition, output_table=out.table_name,
                    webhook_url=out.webhook_url,
                    # Results nobody receives are useless: without outputs, publish them.
                    sse_channel=out.sse_channel or ("" if out.table_name or out.webhook_url
                                                    else f"/stream/{name}"),
                ))
        self.unique(names, "aggregation rule", "the backend")
        return result

    def rule_expressions(self, here: Path, r: pb.AggregationRule,
                         fields: dict[str, model.Column], where: str) -> None:
        """The rule's SQL pieces run in Arroyo: check their columns and functions here, so a
        mistake is reported at its rule rather than when the pipeline is deployed."""
        event = set(fields) | {"table_name", "action", "commit_time", "commit_lsn"}
        groups = [g for g in r.group_by if g in fields]
        for n, g in enumerate(r.group_by):
            if g in fields and g in aggregates.OUTPUT_NAMES:
                self.error(here + ("group_by", n), f"{where}: group_by field {g!r} has the "
                           f"name of an output column ({', '.join(aggregates.OUTPUT_NAMES)})")
        if aggregates.WATERMARK in fields:
            self.error(here + ("name",), f"{where}: the source entity has a field named "
                       f"{aggregates.WATERMARK!r}, which the pipeline needs for its watermark;"
                       " rename the field")
        pieces = [(("function", "custom_sql"), r.function.custom_sql, "custom_sql", event,
                   True, set(groups))]
        pieces.append((("where_condition",), r.where_condition, "where_condition", event,
                       False, None))
        pieces.append((("having",), r.having, "having",
                       {"value", "window_start", "window_end", *groups}, False, None))
        for sub, text, what, columns, allow_aggregates, grouped in pieces:
            if not text.strip():
                continue
            try:
                sqlexpr.check(text, columns, f"{where}: {what}", aggregates=allow_aggregates,
                              grouped=grouped)
            except sqlexpr.ExpressionError as problem:
                self.error(here + sub, str(problem))

    def window(self, path: Path, w: pb.Window, where: str) -> model.Window:
        kind = enum_name("WindowType", w.type)
        if kind == "UNSPECIFIED":
            self.error(path + ("type",), f"{where}: window.type is not set; use "
                       "WINDOW_TYPE_TUMBLING, WINDOW_TYPE_SLIDING or WINDOW_TYPE_SESSION")
        seconds = sqltypes.interval_seconds(w.interval)
        if seconds is None:
            self.error(path + ("interval",), f"{where}: interval {w.interval!r} is not like "
                       "\"30 seconds\", \"5 minutes\", \"1 hour\" or \"1 day\"")
            seconds = 60
        slide_seconds = 0
        if w.slide:
            if kind != "SLIDING":
                self.error(path + ("slide",), f"{where}: slide is only used by "
                                              "WINDOW_TYPE_SLIDING")
            slide_seconds = sqltypes.interval_seconds(w.slide) or 0
            if not slide_seconds:
                self.error(path + ("slide",), f"{where}: slide {w.slide!r} is not an interval")
            elif seconds % slide_seconds:
                self.error(path + ("slide",), f"{where}: the window width must be a whole "
                           f"multiple of slide ({w.interval} / {w.slide})")
        elif kind == "SLIDING":
            slide_seconds = seconds // 4 if seconds % 4 == 0 else seconds
        return model.Window(
            type=kind, interval=sqltypes.format_interval(seconds), seconds=seconds,
            slide=sqltypes.format_interval(slide_seconds) if slide_seconds else "",
            slide_seconds=slide_seconds,
        )

    # --------------------------------------------------------- cross-checks
    def check_schema_names(self, entities: list[model.Entity], rules: list[model.Rule]) -> None:
        """Tables, indexes and output tables share one namespace in the schema, and so do the
        indexes PostgreSQL makes for primary keys (<table>_pkey) and UNIQUE fields
        (<table>_<field>_key): "a" + "b_c" and "a_b" + "c" would both want "a_b_c_key"."""
        # Tables first, then names PostgreSQL derives, then names the user picked, so a
        # collision is reported at the user's own index or output table.
        items: list[tuple[Path, str]] = [(("entity", i, "name"), e.name)
                                         for i, e in enumerate(entities)]
        for i, e in enumerate(entities):
            items.append((("entity", i, "name"), f"{e.name}_pkey"))
            fields = [f.name for f in self.msg.entity[i].fields]
            for c in e.columns:
                if c.unique:
                    j = fields.index(c.name)
                    items.append((("entity", i, "fields", j, "constraints", "unique"),
                                  f"{e.name}_{c.name}_key"))
        for i, e in enumerate(entities):
            items.extend((("entity", i, "indexes", k, "name"), ix.name)
                         for k, ix in enumerate(e.indexes))
        items.extend((self.rule_path(r) + ("output", "table_name"), r.output_table)
                     for r in rules if r.output_table)
        names: dict[str, Path] = {}
        for path, name in items:
            if name in names and names[name][:1] + names[name][2:] == path[:1] + path[2:] == (
                "entity", "name"
            ):
                continue  # two entities of one name: already reported as a duplicate entity
            if name in names and names[name] != path:
                first = self.report.sources.find(names[name])
                self.error(path, f"{name!r} is already the name of another table or index in "
                           f"the schema (at {first}); tables, indexes and output tables share "
                           "one namespace")
            names.setdefault(name, path)

    def rule_path(self, rule: model.Rule) -> Path:
        for i in range(len(self.msg.entity)):
            path, stream = self.entity_block(i, "stream")
            for k, r in enumerate(stream.aggregation.rules):
                if r.name == rule.name:
                    return path + ("aggregation", "rules", k)
        for k, r in enumerate(self.msg.stream.aggregation.rules):
            if r.name == rule.name:
                return ("stream", "aggregation", "rules", k)
        return ()

    def infrastructure(self) -> model.Infrastructure:
        infra = self.msg.infrastructure
        services = []
        known = {"database", "crud", "proxy", "relay", "redis", "mesh", "arroyo", "migrate"}
        for k, s in enumerate(infra.services):
            if s.name not in known:
                self.error(("infrastructure", "services", k, "name"), f"service {s.name!r} is "
                           f"not generated; use one of {', '.join(sorted(known))}")
            for attr in ("port", "published_port"):
                value = getattr(s, attr)
                if value and not 0 < value < 65536:
                    self.error(("infrastructure", "services", k, attr), f"{attr} {value} is "
                                                                        "not 1-65535")
            hc = s.health_check
            services.append(model.Service(s.name, s.port, s.published_port, s.image,
                                          hc.interval_seconds, hc.timeout_seconds, hc.retries))
        self.unique(((("infrastructure", "services", k, "name"), s.name)
                     for k, s in enumerate(infra.services)), "service", "infrastructure")
        obs = infra.observability
        return model.Infrastructure(
            services=tuple(sorted(services, key=lambda s: s.name)),
            observability=obs.enabled if obs.HasField("enabled") else True,
            scrape_interval_seconds=obs.scrape_interval_seconds or 15,
            otlp_endpoint=obs.otlp_endpoint,
        )


def build(backend: pb.Backend, sources: SourceMap) -> model.Backend:
    """Validate and normalize; raises GenerationError listing every problem."""
    return Builder(backend, sources).build()
