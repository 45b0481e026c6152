"""Python client target: `clients/python/`, an installable package per backend.

The entity models are betterproto2 dataclasses. They are made from the model, not from the
user's descriptors: this target builds a FileDescriptorProto (one message per entity, one
nested enum per enum column, field numbers from the column keys) and hands it to
betterproto2's compiler in-process, so both front doors still give byte-identical output and
no second protoc plugin runs. The client around them (templates/python_client/) speaks the
routes the gateway serves (see targets/openapi.py and templates/openresty/) in the wire
contract's JSON: proto field names, proto3 JSON values.

Why betterproto2 and not betterproto 2.0.0b7: betterproto's 2.0 line has stayed a beta since
2024, while betterproto2 is its maintained successor by the same authors, and its
`to_dict`/`from_dict` write and read proto3 JSON (64-bit integers as strings, Timestamps as
RFC 3339, Durations as "1.5s", bytes as base64, enums by value name, `google.protobuf.Value`
as plain JSON, `ignore_unknown_fields`), which is the wire contract.
"""

from __future__ import annotations

import contextlib
import io
import keyword
import os
import re
import tempfile
from dataclasses import dataclass

from .. import check_predicates, rendering
from ..model import Backend, Column, Endpoint, Entity

ROOT = "clients/python"
# The proto package the models are compiled in: betterproto2 writes it as the subpackage
# `models` of the client package (its imports of `..message_pool` rely on that depth).
MODELS_PACKAGE = "models"
# The runtime must match the compiler minor (the generated code checks its version).
BETTERPROTO2 = "betterproto2>=0.10.0,<0.11"
HTTPX = "httpx>=0.27,<1"
# Implicit columns (id, created_at, updated_at) have no field of the user's message; they get
# field numbers from the top of the range, where no hand-written message puts its fields.
_IMPLICIT_NUMBER = 536_870_000
_WELL_KNOWN = ("timestamp", "duration", "struct")


@dataclass(frozen=True)
class Field:
    """One model field as the templates need it."""

    column: Column
    attr: str  # the Python attribute betterproto2 gives the field
    wire: str  # the proto field name: the JSON key on the wire
    value_type: str  # the Python type of one filter value, e.g. "int", "_m.ProductStatus"
    array: bool


@dataclass(frozen=True)
class EntityView:
    """An entity with the names its Python code uses."""

    entity: Entity
    cls: str  # model class name in `models`
    attr: str  # the client's attribute for it
    fields: tuple[Field, ...]
    key: Field | None  # the single primary key column, if any
    renames: tuple[tuple[str, str], ...]  # (betterproto2's snake key, proto name) that differ
    attrs: tuple[tuple[str, str], ...]  # (proto name, attribute) that from_dict would miss
    read_only: tuple[str, ...]  # audit and tenant columns left out of write bodies when unset
    durations: tuple[tuple[str, str], ...]  # (proto name, attribute) of Duration fields


@dataclass(frozen=True)
class ConstraintView:
    """One CHECK constraint as the client checks it (tree None: the database alone)."""

    name: str
    field: str
    sql: str
    tree: object
    reason: str


@dataclass(frozen=True)
class RulesView:
    """What the client checks of an entity's rows before sending them (checks.py.j2)."""

    const: str  # the module attribute in rules.py
    kinds: tuple[tuple[str, str], ...]
    defaults: tuple[tuple[str, object], ...]
    required: tuple[str, ...]
    zero_filled: tuple[str, ...]
    checks: tuple[ConstraintView, ...]


@dataclass(frozen=True)
class ParamView:
    name: str
    attr: str
    py_type: str


@dataclass(frozen=True)
class EndpointView:
    endpoint: Endpoint
    method_name: str
    params: tuple[ParamView, ...]
    row: str  # the TypedDict of a result row, "" when the columns are not known
    columns: tuple[tuple[str, str], ...]  # (column, Python type of its JSON)

    @property
    def class_syntax(self) -> bool:
        """Whether the row's TypedDict can be a class (every key a usable Python name)."""
        return all(name.isidentifier() and not keyword.iskeyword(name)
                   for name, _ in self.columns)


def package_name(backend: Backend) -> str:
    """The import name: the database name made an identifier, plus `_client`."""
    base = re.sub(r"[^a-z0-9_]", "_", backend.database.name.lower()).strip("_") or "crud"
    if base[0].isdigit():
        base = "db_" + base
    return f"{base}_client"


def _py_attr(name: str) -> str:
    """A Python name for a lower_snake_case model name (a keyword gets a trailing `_`)."""
    return name + "_" if keyword.iskeyword(name) or keyword.issoftkeyword(name) else name


def _class_name(entity: Entity) -> str:
    return "".join(part.capitalize() for part in entity.name.split("_"))


def _enums(entity: Entity) -> dict[str, tuple[str, ...]]:
    return {c.column: c.values for c in entity.checks if c.kind == "enum"}


def _enum_name(column: Column) -> str:
    return "".join(part.capitalize() for part in column.name.split("_"))


# The proto type each column kind is written as, so that the message's proto3 JSON is the
# column's wire form (README: the wire contract). TEXT with an enum CHECK becomes an enum.
_PROTO_SCALARS = {
    "TEXT": ("STRING", "str"),
    "UUID": ("STRING", "str"),
    "DECIMAL": ("STRING", "str"),
    "TIMESTAMP": ("STRING", "str"),
    "DATE": ("STRING", "str"),
    "TIME": ("STRING", "str"),
    "INTEGER": ("INT32", "int"),
    "SMALLINT": ("INT32", "int"),
    "SERIAL": ("INT32", "int"),
    "BIGINT": ("INT64", "int"),
    "BIGSERIAL": ("INT64", "int"),
    "REAL": ("FLOAT", "float"),
    "DOUBLE": ("DOUBLE", "float"),
    "BOOLEAN": ("BOOL", "bool"),
    "BYTEA": ("BYTES", "bytes"),
}
# google.type.Date and TimeOfDay columns (those in a wire domain) travel as their messages'
# JSON; their descriptors are written here (googleapis' numbers and names), since the
# protobuf runtime does not ship them.
_GOOGLE_TYPES = {
    "DATE": (".google.type.Date", "google_type.Date", "date",
             ("year", "month", "day")),
    "TIME": (".google.type.TimeOfDay", "google_type.TimeOfDay", "timeofday",
             ("hours", "minutes", "seconds", "nanos")),
}
_PROTO_MESSAGES = {
    "TIMESTAMPTZ": (".google.protobuf.Timestamp", "datetime.datetime"),
    "INTERVAL": (".google.protobuf.Duration", "datetime.timedelta"),
    "JSON": (".google.protobuf.Value", "Any"),
    "JSONB": (".google.protobuf.Value", "Any"),
}


def _field_number(column: Column, implicit_index: int) -> int:
    if column.key.startswith("#"):
        return int(column.key[1:])
    return _IMPLICIT_NUMBER + implicit_index


def _descriptor(backend: Backend):
    """betterproto2's FileDescriptorProto of the entity messages, built from the model."""
    from betterproto2_compiler.lib.google.protobuf import (
        DescriptorProto,
        EnumDescriptorProto,
        EnumValueDescriptorProto,
        FieldDescriptorProto,
        FieldDescriptorProtoLabel,
        FieldDescriptorProtoType,
        FileDescriptorProto,
        OneofDescriptorProto,
        SourceCodeInfo,
        SourceCodeInfoLocation,
    )

    locations = []
    messages = []
    for m_index, entity in enumerate(backend.entities):
        enums = _enums(entity)
        fields, oneofs, nested = [], [], []
        about = entity.description or entity.display_name
        if about:
            locations.append(SourceCodeInfoLocation(path=[4, m_index],
                                                    leading_comments=" " + about))
        implicit = 0
        for f_index, column in enumerate(entity.columns):
            if not column.key.startswith("#"):
                implicit += 1
            array = column.sql_type.endswith("]")
            field = FieldDescriptorProto(
                name=column.name, number=_field_number(column, implicit),
                label=(FieldDescriptorProtoLabel.REPEATED if array
                       else FieldDescriptorProtoLabel.OPTIONAL))
            if column.name in enums:
                enum = _enum_name(column)
                nested.append(EnumDescriptorProto(name=enum, value=[
                    EnumValueDescriptorProto(name=value, number=number)
                    for number, value in enumerate(enums[column.name])]))
                field.type = FieldDescriptorProtoType.ENUM
                field.type_name = f".{MODELS_PACKAGE}.{_class_name(entity)}.{enum}"
            elif _is_message(column):
                field.type = FieldDescriptorProtoType.MESSAGE
                field.type_name = _message_type(column)[0]
            else:
                field.type = FieldDescriptorProtoType[_PROTO_SCALARS[column.kind][0]]
            if column.nullable and not array and not _is_message(column):
                # proto3 `optional`: explicit presence, so NULL and the zero value differ.
                field.proto3_optional = True
                field.oneof_index = len(oneofs)
                oneofs.append(OneofDescriptorProto(name=f"_{column.name}"))
            fields.append(field)
            if column.description:
                locations.append(SourceCodeInfoLocation(path=[4, m_index, 2, f_index],
                                                        leading_comments=" "
                                                        + column.description))
        messages.append(DescriptorProto(name=_class_name(entity), field=fields,
                                        oneof_decl=oneofs, enum_type=nested))
    return FileDescriptorProto(
        name=f"{MODELS_PACKAGE}.proto", package=MODELS_PACKAGE, syntax="proto3",
        dependency=[f"google/protobuf/{name}.proto" for name in _WELL_KNOWN]
        + [f"google/type/{_GOOGLE_TYPES[kind][2]}.proto" for kind in _google_types(backend)],
        message_type=messages, source_code_info=SourceCodeInfo(location=locations))


def _is_message(column: Column) -> bool:
    return column.kind in _PROTO_MESSAGES or (column.kind in _GOOGLE_TYPES
                                               and bool(column.domain))


def _message_type(column: Column) -> tuple[str, str]:
    """(proto type name, Python type) of a column written as a message."""
    if column.kind in _GOOGLE_TYPES:
        return _GOOGLE_TYPES[column.kind][0], _GOOGLE_TYPES[column.kind][1]
    return _PROTO_MESSAGES[column.kind]


def _google_types(backend: Backend) -> list[str]:
    """The google.type kinds (DATE, TIME) some column uses as a message, in a fixed order."""
    used = {c.kind for e in backend.entities for c in e.columns if _is_message(c)}
    return [kind for kind in _GOOGLE_TYPES if kind in used]


def _well_known(backend: Backend):
    """The well-known types' descriptors, from the protobuf runtime, and google.type's
    Date and TimeOfDay as googleapis declares them (not from the user's descriptors)."""
    from betterproto2_compiler.lib.google.protobuf import (
        DescriptorProto,
        FieldDescriptorProto,
        FieldDescriptorProtoLabel,
        FieldDescriptorProtoType,
        FileDescriptorProto,
        SourceCodeInfo,
    )
    from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

    files = []
    for module in (timestamp_pb2, duration_pb2, struct_pb2):
        parsed = FileDescriptorProto.parse(module.DESCRIPTOR.serialized_pb)
        parsed.source_code_info = SourceCodeInfo(location=[])
        files.append(parsed)
    for kind in _google_types(backend):
        full, _, file, names = _GOOGLE_TYPES[kind]
        fields = [FieldDescriptorProto(name=name, number=number, json_name=name,
                                       type=FieldDescriptorProtoType.INT32,
                                       label=FieldDescriptorProtoLabel.OPTIONAL)
                  for number, name in enumerate(names, start=1)]
        files.append(FileDescriptorProto(
            name=f"google/type/{file}.proto", package="google.type", syntax="proto3",
            message_type=[DescriptorProto(name=full.rsplit(".", 1)[1], field=fields)],
            source_code_info=SourceCodeInfo(location=[])))
    return files


@contextlib.contextmanager
def _formatting_place():
    """Where betterproto2's compiler runs: it formats its output with `ruff` found on PATH,
    which reads the configuration found from the current directory up (or else the user's
    own), and it skips `__init__.py` files that exist in the current directory. So it runs
    in an empty folder holding a ruff.toml that pins the format (found first, so no other
    configuration is read), with the ruff installed next to it first on PATH (protoc may
    start the plugin without the environment's scripts on PATH): the output depends on
    neither where nor by whom it was generated. (The working directory is process-wide;
    generation is single-threaded.)"""
    from ruff.__main__ import find_ruff_bin

    before = os.environ.get("PATH")
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="crud-betterproto2-") as folder:
        with open(os.path.join(folder, "ruff.toml"), "w") as config:
            config.write('line-length = 100\ntarget-version = "py311"\n')
        os.environ["PATH"] = os.path.dirname(find_ruff_bin()) + os.pathsep + (before or "")
        os.chdir(folder)
        try:
            yield
        finally:
            os.chdir(cwd)
            if before is None:
                os.environ.pop("PATH", None)
            else:
                os.environ["PATH"] = before


def models(backend: Backend) -> dict[str, str]:
    """betterproto2's files for the entity messages, relative to the client package."""
    from betterproto2_compiler.lib.google.protobuf.compiler import CodeGeneratorRequest
    from betterproto2_compiler.plugin.parser import generate_code

    request = CodeGeneratorRequest(file_to_generate=[f"{MODELS_PACKAGE}.proto"],
                                   proto_file=[*_well_known(backend), _descriptor(backend)])
    # It reports the files it writes on stderr; a plugin's stderr is the user's terminal.
    with _formatting_place(), contextlib.redirect_stderr(io.StringIO()):
        response = generate_code(request)
    if response.error:
        raise RuntimeError(f"betterproto2 failed on the entity models: {response.error}")
    out: dict[str, str] = {}
    for file in response.file:
        # Only files with content: the empty __init__.py files are written here.
        if file.content:
            out[file.name] = file.content
    for name in list(out):
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            out.setdefault("/".join(parts[:depth]) + "/__init__.py", "")
    out.setdefault("py.typed", "")
    return dict(sorted(out.items()))


def _value_type(entity: Entity, column: Column, cls: str) -> str:
    if column.name in _enums(entity):
        return f"_m.{cls}{_enum_name(column)}"
    if _is_message(column):
        return _message_type(column)[1]
    return _PROTO_SCALARS[column.kind][1]


def _views(backend: Backend) -> tuple[EntityView, ...]:
    from betterproto2 import Casing
    from betterproto2.casing import safe_snake_case
    from betterproto2_compiler.compile.naming import pythonize_class_name, pythonize_field_name

    views = []
    for entity in backend.entities:
        cls = pythonize_class_name(_class_name(entity))
        fields = []
        for column in entity.columns:
            attr = pythonize_field_name(column.name)
            element = _value_type(entity, column, cls)
            array = column.sql_type.endswith("]")
            fields.append(Field(column, attr, column.name, element, array))
        renames = tuple((Casing.SNAKE(f.attr).rstrip("_"), f.wire) for f in fields
                        if Casing.SNAKE(f.attr).rstrip("_") != f.wire)
        # from_dict looks a key up as the runtime's snake_case of it, which can differ from
        # the attribute the compiler gave (a1b: a1_b against a1b).
        attrs = tuple((f.wire, f.attr) for f in fields if safe_snake_case(f.wire) != f.attr)
        key = None
        if len(entity.primary_key) == 1:
            key = next(f for f in fields if f.wire == entity.primary_key[0])
        # Audit columns, and a tenant-scoped entity's tenant column (which only platform
        # roles may write: a body naming it, even at its zero value, is refused).
        read_only = tuple(f.wire for f in fields
                          if (f.column.implicit and f.wire in ("created_at", "updated_at"))
                          or f.wire == entity.access.tenant_column)
        durations = tuple((f.wire, f.attr) for f in fields if f.column.kind == "INTERVAL")
        views.append(EntityView(entity, cls, _py_attr(entity.name), tuple(fields), key,
                                renames, attrs, read_only, durations))
    return tuple(views)


# Endpoint argument types, from the SQL types PostgreSQL gives them (model.Param).
_PARAM_TYPES = {
    "text": "str", "character varying": "str", "uuid": "str", "numeric": "str",
    "integer": "int", "smallint": "int", "bigint": "int",
    "real": "float", "double precision": "float", "boolean": "bool",
    "date": "datetime.date", "timestamp with time zone": "datetime.datetime",
    "timestamp without time zone": "datetime.datetime", "interval": "datetime.timedelta",
    "json": "Any", "jsonb": "Any", "bytea": "bytes",
}


def param_type(sql_type: str) -> str:
    """The Python type of an endpoint argument (str when PostgreSQL's type is not listed)."""
    base = sql_type.split("(")[0].strip()
    if base.endswith("[]"):
        return f"Sequence[{param_type(base[:-2])}]"
    return _PARAM_TYPES.get(base, "str")


# A result column's JSON as PostgREST writes a function's rows (json_agg): numbers stay
# numbers, only the wire domains' columns take the wire contract's forms.
_RESULT_TYPES = {
    "text": "str", "character varying": "str", "uuid": "str", "date": "str",
    "timestamp with time zone": "str", "timestamp without time zone": "str",
    "time without time zone": "str", "interval": "str", "bytea": "str",
    "integer": "int", "smallint": "int", "bigint": "int",
    "numeric": "float", "real": "float", "double precision": "float", "boolean": "bool",
}
_WIRE_RESULT = {"int64": "str", "decimal": "str", "bytes": "str", "duration": "str",
                "date": "dict[str, int]", "time_of_day": "dict[str, int]"}


def result_type(sql_type: str, backend: Backend) -> str:
    """The Python type of one result column's JSON ("Any" where only the server knows)."""
    domains = {f"crud_meta.{d.name}": d for d in backend.domains}
    if sql_type in domains:
        domain = domains[sql_type]
        element = _WIRE_RESULT[domain.wire]
        return f"list[{element}]" if domain.array else element
    base = sql_type.split("(")[0].strip()
    if base.endswith("[]"):
        return f"list[{result_type(base[:-2], backend)}]"
    return _RESULT_TYPES.get(base, "Any")


def _endpoints(backend: Backend) -> tuple[EndpointView, ...]:
    views = []
    for ep in sorted(backend.endpoints, key=lambda e: e.function):
        params = tuple(ParamView(p.name, _py_attr(p.name), param_type(p.sql_type))
                       for p in ep.params)
        columns = tuple((c.name, result_type(c.sql_type, backend)) for c in ep.columns)
        row = "".join(part.capitalize() for part in ep.function.split("_")) + "Row"
        views.append(EndpointView(ep, _py_attr(ep.function), params,
                                  row if columns else "", columns))
    return tuple(views)


def _column_kind(column: Column) -> str | None:
    kind = check_predicates.KINDS.get(column.kind)
    if kind is None:
        return None
    return kind + "[]" if column.sql_type.endswith("]") else kind


_ZERO_IS_A_VALUE = frozenset({"text", "int", "float", "float4", "bool", "bytes"})


def _rules(view: EntityView) -> RulesView:
    """The entity's NOT NULL columns, defaults and CHECK constraints, compiled from the SQL
    the migrations install (the same template), so client and database cannot disagree on
    what a rule says."""
    entity = view.entity
    check_sql = rendering.environment().get_template("postgres/_checks.sql.j2").module.check_sql
    kinds = {c.name: k for c in entity.columns if (k := _column_kind(c)) is not None}
    defaults: list[tuple[str, object]] = []
    required = []
    for column in entity.columns:
        if column.default is None and not column.identity:
            if column.nullable:
                defaults.append((column.name, ("val", None)))
            elif column.name != entity.access.tenant_column:
                required.append(column.name)
        elif (column.default is not None and column.default.kind == "literal"
              and column.name in kinds):
            with contextlib.suppress(check_predicates.NotPortable, ValueError):
                defaults.append((column.name, check_predicates.literal_value(
                    column.default.text, kinds[column.name])))
    checks = []
    for check in entity.checks:
        sql = str(check_sql(check))
        compiled = check_predicates.compile_check(sql, kinds)
        checks.append(ConstraintView(check.name, check.column, sql, compiled.tree,
                                     compiled.reason))
    # A new row sends these at their zero value (proto3 leaves zeros out; the column has
    # no default to give): only where the zero is a value of the column, and never a key.
    zero_filled = tuple(name for name in required if name not in entity.primary_key
                        and (kinds.get(name, "").endswith("[]")
                             or kinds.get(name) in _ZERO_IS_A_VALUE))
    return RulesView(view.cls.upper(), tuple(sorted(kinds.items())), tuple(defaults),
                     tuple(required), zero_filled, tuple(checks))


def render_files(backend: Backend) -> dict[str, str]:
    package = package_name(backend)
    views = _views(backend)
    endpoints = _endpoints(backend)
    taken = {"session", "endpoints", "close"}
    clash = sorted(taken.intersection(v.attr for v in views))
    if clash:
        raise ValueError(f"entity names {clash} are names of the Python client itself")
    column_types = [f.value_type for v in views for f in v.fields]
    param_types = [p.py_type for ep in endpoints for p in ep.params]
    context = {
        "backend": backend,
        "package": package,
        "distribution": package.replace("_", "-"),
        "entities": views,
        "rules": [_rules(v) for v in views],
        "endpoints": endpoints,
        "column_imports": {"datetime": any("datetime." in t for t in column_types),
                           "any": "Any" in column_types,
                           "google_type": any("google_type." in t for t in column_types)},
        "client_imports": {
            "datetime": any("datetime." in t for t in param_types)
                        or any(v.key and "datetime." in v.key.value_type for v in views),
            "sequence": any("Sequence[" in t for t in param_types),
            "never": any(v.key is None for v in views),
            "any": any(not ep.row or any(t.endswith("Any") for _, t in ep.columns)
                       for ep in endpoints)
                   or any(v.key and v.key.value_type == "Any" for v in views),
            "typed_dict": any(ep.row for ep in endpoints)},
        "generated": rendering.GENERATED,
        "betterproto2": BETTERPROTO2,
        "httpx": HTTPX,
        "auth": backend.auth.type != "NONE",
    }
    src = f"{ROOT}/src/{package}"
    files = {
        f"{ROOT}/pyproject.toml": rendering.render("python_client/pyproject.toml.j2", **context),
        f"{ROOT}/README.md": rendering.render("python_client/README.md.j2", **context),
        f"{src}/__init__.py": rendering.render("python_client/__init__.py.j2", **context),
        f"{src}/errors.py": rendering.render("python_client/errors.py.j2", **context),
        f"{src}/runtime.py": rendering.render("python_client/runtime.py.j2", **context),
        f"{src}/checks.py": rendering.render("python_client/checks.py.j2", **context),
        f"{src}/rules.py": rendering.render("python_client/rules.py.j2", **context),
        f"{src}/columns.py": rendering.render("python_client/columns.py.j2", **context),
        f"{src}/client.py": rendering.render("python_client/client.py.j2", **context),
    }
    for name, text in models(backend).items():
        files[f"{src}/{name}"] = text
    return dict(sorted(files.items()))


def render(backend: Backend) -> dict[str, str]:
    return render_files(backend)
