"""Rules for `Entity`, `Field`, `Constraints`, `Index`, `ForeignKey` and `default_data`: the
tables, their columns with the seed's best practices added (an `id` key, audit columns), and
the checks that cross entities (foreign keys, one namespace per schema)."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace as _replace

from .. import model, sqltypes
from ..diagnostics import Path
from ..gen.crud.v1 import options_pb2 as pb
from .common import (
    ACTIONS,
    DEFAULT_BASE_PATH,
    INDEX_METHODS,
    SEED_NAMESPACE,
    STREAM_RESERVED,
    RulesBase,
    enum_name,
    short_name,
)


class EntityRules(RulesBase):
    """Entities, fields, indexes, foreign keys and seed data."""

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
        if access.tenant_column:  # required, and filled from the caller's tenant claim
            columns = [
                _replace(c, nullable=False, default=model.Default("user_claim",
                                                                  auth.tenant_claim))
                if c.name == access.tenant_column and not c.primary_key else c
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
        seed = self.seed(i, e, name, label, {c.name: c for c in columns}, pk,
                         (access.tenant_column, access.default_tenant))
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
        elif value in ("/docs", "/openapi.json") or value.startswith("/docs/"):
            self.error(path, f"{what} {value!r} is where the gateway serves the API's "
                             f"{'reference page' if 'docs' in value else 'OpenAPI document'} "
                             "under the base path; choose another path")

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
                if (c.enum_values and not f.array
                        and f.default_value not in c.enum_values):
                    named = [v for v in c.enum_values
                             if v.lower().endswith("_" + f.default_value.lower())]
                    hint = (f"; proto enums are stored by value name: use {named[0]!r}"
                            if len(named) == 1 else "")
                    self.error(path + ("default_value",), f"{where}: default_value "
                               f"{f.default_value!r} is not one of enum_values{hint}")
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
                    domain="" if identity else sqltypes.wire_domain(
                        kind, f.array, f.precision or None, f.scale or None,
                        default.text if default and default.kind == "literal" else None),
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
            if not (is_text or (is_array and col.kind == "TEXT")):
                self.error(cpath + ("enum_values",), f"{where}: enum_values needs a TEXT field, "
                           f"not {col.sql_type}; change the type or use a check")
            if len(set(c.enum_values)) != len(c.enum_values):
                self.error(cpath + ("enum_values",), f"{where}: enum_values has duplicates")
            if is_array:  # a repeated enum: every element one of the names
                checks.append(model.Check(short_name(f"{table}_{f.name}", "enum"), "enum_array",
                                          f.name, values=tuple(c.enum_values)))
            else:
                checks.append(model.Check(short_name(f"{table}_{f.name}", "enum"), "enum",
                                          f.name, values=tuple(c.enum_values),
                                          renames=_short_enum_names(tuple(c.enum_values))))
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
            action = ACTIONS[fk.on_delete]
            if action == "SET NULL" and not col.nullable:
                self.error(cpath + ("foreign_key", "on_delete"), f"{where}: on_delete SET_NULL "
                           "needs a nullable field")
            fks.append(model.ForeignKey(
                name=short_name(f"{table}_{f.name}", "fkey"), column=f.name, table=fk.entity,
                ref_column=fk.field, on_delete=action, on_update=ACTIONS[fk.on_update],
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
                resolved.append(_replace(fk, ref_column=ref, **self.tenant_key(
                    path, entity, fk, target)))
            entities[i] = by_name[entity.name] = _replace(entity, foreign_keys=tuple(resolved))

    def tenant_key(self, path: Path, entity: model.Entity, fk: model.ForeignKey,
                   target: model.Entity) -> dict[str, str]:
        """The tenant columns a foreign key also compares, so that a row can reference only a
        row of its own tenant (the referential check bypasses row-level security, so the key
        itself must say it). A tenant-scoped row referenced from a table without tenants
        would let one tenant's rows hang on another's: refused."""
        mine, theirs = entity.access.tenant_column, target.access.tenant_column
        where = f"entity {entity.name!r}, field {fk.column!r}"
        if theirs and not mine:
            self.error(path, f"{where}: {fk.table!r} is tenant-scoped but {entity.name!r} is "
                       "not; set tenant_field on it too, so its rows reference only rows of "
                       "their own tenant")
            return {}
        if not (mine and theirs):
            return {}
        if entity.column(mine).sql_type != target.column(theirs).sql_type:
            self.error(path, f"{where}: the tenant columns {entity.name}.{mine} and "
                       f"{fk.table}.{theirs} have different types")
        if fk.on_update in ("SET NULL", "SET DEFAULT"):
            self.error(path + ("on_update",), f"{where}: on_update {fk.on_update} would also "
                       "clear the tenant column the key includes; use CASCADE or RESTRICT")
        return {"tenant_column": mine, "ref_tenant_column": theirs}

    def indexes(self, i: int, e: pb.Entity, table: str, label: str,
                columns: dict[str, model.Column]) -> list[model.Index]:
        result = []
        for k, ix in enumerate(e.indexes):
            path = ("entity", i, "indexes", k)
            name = self.identifier(path + ("name",), ix.name, f"{label} index")
            where = f"{label}, index {name!r}"
            method = INDEX_METHODS[ix.type]
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

    def seed(self, i: int, e: pb.Entity, table: str, label: str,
             columns: dict[str, model.Column], pk: tuple[str, ...],
             tenant: tuple[str, str] = ("", "")) -> list[model.SeedRow]:
        """Seed rows; in a tenant-scoped entity each goes to the row's own tenant column or
        else to `default_tenant` (the migration has no caller whose claim could fill it)."""
        rows = []
        for k, row in enumerate(e.default_data):
            path = ("entity", i, "default_data", k)
            values = dict(row.values)
            if tenant[0] and tenant[0] in columns and tenant[0] not in values:
                if tenant[1]:
                    values[tenant[0]] = tenant[1]
                else:
                    self.error(path, f"{label}, default_data row {k + 1} has no tenant: "
                               f"give {tenant[0]!r} or set access.default_tenant")
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
            if tenant_key_name(e):
                items.append((("entity", i, "name"), tenant_key_name(e)))
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


def tenant_key_name(entity: model.Entity) -> str:
    """The UNIQUE (tenant, primary key) constraint of a tenant-scoped entity with a
    single-column key, which foreign keys within a tenant reference; "" for others."""
    tenant = entity.access.tenant_column
    if not tenant or len(entity.primary_key) != 1:
        return ""
    return short_name(f"{entity.name}_{tenant}_{entity.primary_key[0]}", "key")


def _short_enum_names(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(short name, value name) pairs for a proto enum's values ("paid", "STATUS_PAID"): the
    form versions before the wire contract stored (prefix stripped, lower case). A list is a
    proto enum's when every value is UPPER_SNAKE_CASE; the prefix is the one the values share
    up to an underscore (the enum's name, by protobuf's style guide). Others get none."""
    if not values or not all(re.fullmatch(r"[A-Z][A-Z0-9_]*", v) for v in values):
        return ()
    common = values[0]
    for value in values[1:]:
        while not value.startswith(common):
            common = common[:-1]
    prefix = common[:common.rfind("_") + 1] if len(values) > 1 else ""
    shorts = [v.removeprefix(prefix).lower() for v in values]
    if len(set(shorts)) != len(shorts):
        return ()
    return tuple((short, value) for short, value in zip(shorts, values, strict=True)
                 if short not in values)
