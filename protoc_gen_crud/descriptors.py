"""The plugin front door: a CodeGeneratorRequest's annotated messages as a `crud.v1.Backend`.

Each message carrying `(crud.v1.entity)` becomes an entity whose fields are the message's own
fields, refined by `(crud.v1.field)`. Whatever the proto already says (types, presence, enum
values, field numbers, `reserved`, comments) is filled in here, so the builder sees the same
kind of Backend message a textproto config gives. This is the only module that reads
descriptors; targets see only the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from . import protovalidate
from .diagnostics import Diagnostic, GenerationError, Location, Path, SourceMap
from .gen.crud.v1 import options_pb2 as pb

F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    F.TYPE_STRING: pb.SQL_TYPE_TEXT,
    F.TYPE_INT32: pb.SQL_TYPE_INTEGER,
    F.TYPE_SINT32: pb.SQL_TYPE_INTEGER,
    F.TYPE_SFIXED32: pb.SQL_TYPE_INTEGER,
    F.TYPE_UINT32: pb.SQL_TYPE_BIGINT,
    F.TYPE_FIXED32: pb.SQL_TYPE_BIGINT,
    F.TYPE_INT64: pb.SQL_TYPE_BIGINT,
    F.TYPE_SINT64: pb.SQL_TYPE_BIGINT,
    F.TYPE_SFIXED64: pb.SQL_TYPE_BIGINT,
    F.TYPE_UINT64: pb.SQL_TYPE_DECIMAL,
    F.TYPE_FIXED64: pb.SQL_TYPE_DECIMAL,
    F.TYPE_BOOL: pb.SQL_TYPE_BOOLEAN,
    F.TYPE_DOUBLE: pb.SQL_TYPE_DOUBLE,
    F.TYPE_FLOAT: pb.SQL_TYPE_REAL,
    F.TYPE_BYTES: pb.SQL_TYPE_BYTEA,
    F.TYPE_ENUM: pb.SQL_TYPE_TEXT,
}
_WELL_KNOWN = {
    ".google.protobuf.Timestamp": pb.SQL_TYPE_TIMESTAMPTZ,
    ".google.protobuf.Duration": pb.SQL_TYPE_INTERVAL,
    ".google.protobuf.Struct": pb.SQL_TYPE_JSONB,
    ".google.protobuf.Value": pb.SQL_TYPE_JSONB,
    ".google.protobuf.ListValue": pb.SQL_TYPE_JSONB,
    ".google.protobuf.StringValue": pb.SQL_TYPE_TEXT,
    ".google.protobuf.BytesValue": pb.SQL_TYPE_BYTEA,
    ".google.protobuf.BoolValue": pb.SQL_TYPE_BOOLEAN,
    ".google.protobuf.Int32Value": pb.SQL_TYPE_INTEGER,
    ".google.protobuf.UInt32Value": pb.SQL_TYPE_BIGINT,
    ".google.protobuf.Int64Value": pb.SQL_TYPE_BIGINT,
    ".google.protobuf.UInt64Value": pb.SQL_TYPE_DECIMAL,
    ".google.protobuf.FloatValue": pb.SQL_TYPE_REAL,
    ".google.protobuf.DoubleValue": pb.SQL_TYPE_DOUBLE,
    ".google.type.Date": pb.SQL_TYPE_DATE,
    ".google.type.TimeOfDay": pb.SQL_TYPE_TIME,
}
# Column types whose JSON is a message's (sqltypes.WIRE_KINDS): only that message's field
# can hold what the API returns for them.
_WIRE_MESSAGES = {pb.SQL_TYPE_DATE: ".google.type.Date", pb.SQL_TYPE_TIME: ".google.type.TimeOfDay"}
# DescriptorProto / FileDescriptorProto field numbers used in source_code_info paths.
_FILE_MESSAGES, _FILE_OPTIONS = 4, 8
_MSG_FIELDS, _MSG_NESTED, _MSG_OPTIONS = 2, 3, 7
_FIELD_NAME, _FIELD_TYPE, _FIELD_TYPE_NAME, _FIELD_OPTIONS = 1, 5, 6, 8
_ENTITY_EXT = pb.entity.number
_API_EXT = pb.api.number
_STREAM_EXT = pb.stream.number
_FIELD_EXT = pb.field.number
_DATABASE_EXT = pb.database.number
_INFRA_EXT = pb.infrastructure.number
_MAX_RESERVED_EXPANSION = 10000


def snake_case(name: str) -> str:
    """SensorReading -> sensor_reading."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


@dataclass
class _Message:
    proto: descriptor_pb2.DescriptorProto
    full_name: str
    path: tuple[int, ...]
    file: descriptor_pb2.FileDescriptorProto


class Registry:
    """The request's files indexed by full name: messages, enums and source locations."""

    def __init__(self, request: plugin_pb2.CodeGeneratorRequest):
        self.request = request
        self.files = {f.name: f for f in request.proto_file}
        self.messages: dict[str, _Message] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.spans: dict[str, dict[tuple[int, ...], descriptor_pb2.SourceCodeInfo.Location]] = {}
        for f in request.proto_file:
            prefix = "." + f.package if f.package else ""
            for i, m in enumerate(f.message_type):
                self._add(f, m, prefix, (_FILE_MESSAGES, i))
            for e in f.enum_type:
                self.enums[f"{prefix}.{e.name}"] = e
            self.spans[f.name] = self._index(f.source_code_info.location)

    @staticmethod
    def _index(locations) -> dict[tuple[int, ...], descriptor_pb2.SourceCodeInfo.Location]:
        """Each recorded path, and each of its prefixes, mapped to the earliest span below it.

        An option set field by field, like `(crud.v1.field).type = ...`, is recorded by protoc
        only under longer paths; the earliest of those stands for the whole option.
        """
        index: dict[tuple[int, ...], descriptor_pb2.SourceCodeInfo.Location] = {}
        exact = set()
        for loc in locations:
            if not loc.span:
                continue
            path = tuple(loc.path)
            exact.add(path)
            index[path] = loc
        for loc in locations:
            if not loc.span:
                continue
            path = tuple(loc.path)
            for end in range(len(path) - 1, 0, -1):
                prefix = path[:end]
                if prefix in exact:
                    break
                best = index.get(prefix)
                if best is None or tuple(loc.span[:2]) < tuple(best.span[:2]):
                    index[prefix] = loc
        return index

    def _add(self, f, m, prefix: str, path: tuple[int, ...]) -> None:
        full = f"{prefix}.{m.name}"
        self.messages[full] = _Message(m, full, path, f)
        for j, nested in enumerate(m.nested_type):
            self._add(f, nested, full, path + (_MSG_NESTED, j))
        for e in m.enum_type:
            self.enums[f"{full}.{e.name}"] = e

    def location(self, file: descriptor_pb2.FileDescriptorProto, path: tuple[int, ...]) -> (
        Location | None
    ):
        """Where `path` was written (see `_index` for options set field by field)."""
        loc = self.spans.get(file.name, {}).get(path)
        if loc is None:
            return None
        return Location(file.name, loc.span[0] + 1, loc.span[1] + 1)

    def comment(self, file: descriptor_pb2.FileDescriptorProto, path: tuple[int, ...]) -> str:
        loc = self.spans.get(file.name, {}).get(path)
        if loc is None:
            return ""
        return " ".join(line.strip() for line in loc.leading_comments.strip().splitlines())


def load(request: plugin_pb2.CodeGeneratorRequest) -> tuple[pb.Backend, SourceMap]:
    """Translate the files to generate into a Backend message and its source map."""
    registry = Registry(request)
    targets = [registry.files[name] for name in request.file_to_generate]
    first = targets[0].name if targets else "<request>"
    sources = SourceMap(Location(first))
    backend = pb.Backend()
    problems: list[Diagnostic] = []
    _file_options(registry, targets, backend, sources, problems)
    validation = protovalidate.Rules(registry.files)  # buf.validate, when a file imports it
    for message in registry.messages.values():
        if message.file.name not in request.file_to_generate:
            continue
        if not message.proto.options.HasExtension(pb.entity):
            for ext, what in ((pb.api, "api"), (pb.stream, "stream")):
                if message.proto.options.HasExtension(ext):
                    problems.append(Diagnostic(
                        registry.location(message.file, message.path) or Location(
                            message.file.name),
                        f"message {message.full_name[1:]} sets (crud.v1.{what}) but is not an "
                        "entity; add option (crud.v1.entity) = {} or remove it",
                    ))
            continue
        _entity(registry, message, backend, sources, problems)
        protovalidate.apply(validation, registry, message, backend.entity[-1], problems)
    if problems:
        raise GenerationError(problems)
    return backend, sources


def _file_options(registry, targets, backend, sources, problems) -> None:
    for ext, attr, number in ((pb.database, "database", _DATABASE_EXT),
                              (pb.infrastructure, "infrastructure", _INFRA_EXT)):
        owner = None
        for f in targets:
            if not f.options.HasExtension(ext):
                continue
            value = f.options.Extensions[ext]
            place = registry.location(f, (_FILE_OPTIONS, number)) or Location(f.name)
            if owner is None:
                getattr(backend, attr).CopyFrom(value)
                sources.add((attr,), place)
                owner = place
            elif getattr(backend, attr).SerializeToString(deterministic=True) != (
                value.SerializeToString(deterministic=True)
            ):
                problems.append(Diagnostic(place, f"option (crud.v1.{attr}) differs from the "
                                           f"one at {owner}; set it once per backend"))


def _entity(registry: Registry, message: _Message, backend: pb.Backend, sources: SourceMap,
            problems: list[Diagnostic]) -> None:
    f, m, path = message.file, message.proto, message.path
    index = len(backend.entity)
    where: Path = ("entity", index)
    entity = backend.entity.add()
    option = m.options.Extensions[pb.entity]
    entity.CopyFrom(option)
    here = registry.location(f, path) or Location(f.name)
    option_place = registry.location(f, path + (_MSG_OPTIONS, _ENTITY_EXT)) or here
    sources.add(where, here)
    for desc in pb.Entity.DESCRIPTOR.fields:
        if desc.name not in ("fields", "api", "stream"):
            sources.add(where + (desc.name,), option_place)
    if option.fields:
        problems.append(Diagnostic(option_place, f"message {message.full_name[1:]}: leave "
                                   "(crud.v1.entity).fields empty; the message's own fields "
                                   "are the columns"))
        del entity.fields[:]
    if not entity.name:
        entity.name = snake_case(m.name)
    if not entity.description:
        entity.description = registry.comment(f, path)
    for ext, attr, number in ((pb.api, "api", _API_EXT), (pb.stream, "stream", _STREAM_EXT)):
        if m.options.HasExtension(ext):
            getattr(entity, attr).CopyFrom(m.options.Extensions[ext])
            sources.add(where + (attr,), registry.location(f, path + (_MSG_OPTIONS, number))
                        or here)
    numbers = set(entity.reserved_numbers)
    for r in m.reserved_range:
        if r.end - r.start <= _MAX_RESERVED_EXPANSION:
            numbers.update(range(r.start, r.end))
    del entity.reserved_numbers[:]
    entity.reserved_numbers.extend(sorted(numbers))
    zeroed = set()
    for j, field in enumerate(m.field):
        if _field(registry, message, j, field, entity.fields.add(), where + ("fields", j),
                  sources, problems):
            zeroed.add(j)
    owner, tenant = entity.api.access.owner_field, entity.api.access.tenant_field
    for j in zeroed:  # the owner and the tenant default to the caller's claims
        if entity.fields[j].name in (owner, tenant):
            entity.fields[j].ClearField("default_value")


def _field(registry: Registry, message: _Message, j: int, field: F, out: pb.Field,
           where: Path, sources: SourceMap, problems: list[Diagnostic]) -> bool:
    """Fill `out` from the proto field; True when its default is the zero value we added."""
    f = message.file
    path = message.path + (_MSG_FIELDS, j)
    here = registry.location(f, path) or Location(f.name)
    option = field.options.Extensions[pb.field]
    option_place = registry.location(f, path + (_FIELD_OPTIONS, _FIELD_EXT))
    sources.add(where, here)
    if option_place and option.name:
        sources.add(where + ("name",), option_place)
    sources.add(where + ("name",), registry.location(f, path + (_FIELD_NAME,)) or here)
    type_place = registry.location(f, path + (_FIELD_TYPE_NAME,)) or registry.location(
        f, path + (_FIELD_TYPE,))
    if option_place:
        for desc in pb.Field.DESCRIPTOR.fields:
            if desc.name != "name":
                sources.add(where + (desc.name,), option_place)
    elif type_place:
        sources.add(where + ("type",), type_place)
    out.CopyFrom(option)
    label = f"message {message.full_name[1:]}, field {field.name}"
    if option.HasField("number"):
        problems.append(Diagnostic(option_place or here, f"{label}: do not set "
                                   "(crud.v1.field).number; the proto field number "
                                   f"({field.number}) is the column identity"))
    out.number = field.number
    if not out.name:
        out.name = field.name
    if not out.description:
        out.description = registry.comment(f, path)
    repeated = field.label == F.LABEL_REPEATED
    is_map = False
    if field.type == F.TYPE_MESSAGE:
        entry = registry.messages.get(field.type_name)
        is_map = bool(entry and entry.proto.options.map_entry)
    inferred = _SCALARS.get(field.type)
    if field.type == F.TYPE_MESSAGE:
        inferred = _WELL_KNOWN.get(field.type_name, pb.SQL_TYPE_JSONB)
        if repeated or is_map:
            inferred = pb.SQL_TYPE_JSONB
    unsigned = _UNSIGNED.get(field.type_name if field.type == F.TYPE_MESSAGE else field.type)
    if out.type == pb.SQL_TYPE_UNSPECIFIED:
        out.type = inferred
        if unsigned == _UINT64_MAX and not out.HasField("precision"):
            out.precision, out.scale = 20, 0
    as_array = repeated and field.type != F.TYPE_MESSAGE
    wire_message = _WIRE_MESSAGES.get(out.type)
    if wire_message and (field.type != F.TYPE_MESSAGE or field.type_name != wire_message
                         or repeated):
        # The column's JSON is that message's (the wire contract): a field of another type
        # could not parse what the API returns for it.
        name = wire_message[1:]
        problems.append(Diagnostic(option_place or here, f"{label}: a "
                                   f"{pb.SqlType.Name(out.type)} column reads and writes as "
                                   f"a {name} message; declare the field as a single {name} "
                                   "(its type is then inferred) or choose another column "
                                   "type"))
    if unsigned and not as_array and out.type in _NUMBER_COLUMNS:
        # What a binding can parse back: no negative value, none past the type's range.
        if not out.constraints.HasField("min"):
            out.constraints.min = 0
        if unsigned < 2**53 and not out.constraints.HasField("max"):
            out.constraints.max = unsigned  # exact as a double; uint64 is bounded by (20,0)
    if as_array:
        out.array = True
    enum = registry.enums.get(field.type_name) if field.type == F.TYPE_ENUM else None
    if (enum is not None and not out.constraints.enum_values
            and out.type == pb.SQL_TYPE_TEXT):  # repeated enums too: every element a name
        out.constraints.enum_values.extend(v.name for v in enum.value)
    if not out.constraints.HasField("not_null"):
        if repeated or is_map:
            out.constraints.not_null = True
            if not out.HasField("default_value") and not out.HasField("default_expression"):
                # An empty array literal, an empty JSON object for maps, an empty JSON list.
                out.default_value = "{}" if as_array or is_map else "[]"
        elif not _explicit_presence(registry, message, field):
            out.constraints.not_null = True
            # proto3 JSON omits a field at its zero value: the column's default must be
            # that value, or the message cannot be written as a binding serializes it.
            zero = _zero_value(field, out, enum)
            # proto2/editions required fields are always serialized: no default needed.
            required = (field.label == F.LABEL_REQUIRED or field.options.features.field_presence
                        == descriptor_pb2.FeatureSet.LEGACY_REQUIRED)
            if (zero is not None and not required
                    and not out.HasField("default_value")
                    and not out.HasField("default_expression")
                    and not out.constraints.primary_key and field.name != "id"
                    and not out.constraints.foreign_key.entity):
                out.default_value = zero
                return True
        else:
            out.constraints.not_null = False
    return False


_UINT64_MAX = 2**64 - 1
# Unsigned proto types (scalars and wrappers) and their largest value.
_UNSIGNED: dict[object, int] = {
    F.TYPE_UINT32: 2**32 - 1, F.TYPE_FIXED32: 2**32 - 1,
    F.TYPE_UINT64: _UINT64_MAX, F.TYPE_FIXED64: _UINT64_MAX,
    ".google.protobuf.UInt32Value": 2**32 - 1, ".google.protobuf.UInt64Value": _UINT64_MAX,
}
_NUMBER_COLUMNS = frozenset({pb.SQL_TYPE_INTEGER, pb.SQL_TYPE_BIGINT, pb.SQL_TYPE_SMALLINT,
                             pb.SQL_TYPE_DECIMAL, pb.SQL_TYPE_REAL, pb.SQL_TYPE_DOUBLE})
_NUMBER_FIELDS = frozenset(t for t, sql in _SCALARS.items()
                           if sql in _NUMBER_COLUMNS or t in (F.TYPE_UINT64, F.TYPE_FIXED64))


def _zero_value(field: F, out: pb.Field,
                enum: descriptor_pb2.EnumDescriptorProto | None) -> str | None:
    """The literal of the field's proto zero value in its column, where the column can hold
    it: "" for a string in TEXT (not in a DECIMAL or UUID column: "" is no number or uuid),
    0, false, empty bytes, and an enum's value numbered 0 (proto3: the first) by name."""
    if out.array:
        return None
    if enum is not None:
        zero = next((v.name for v in enum.value if v.number == 0), None)
        return zero if zero in out.constraints.enum_values else None
    if out.constraints.enum_values:
        return None  # the user's own list of values decides; "" or 0 may not be one
    if field.type == F.TYPE_STRING:
        return "" if out.type == pb.SQL_TYPE_TEXT else None
    if field.type in _NUMBER_FIELDS:
        return "0" if out.type in _NUMBER_COLUMNS else None
    if field.type == F.TYPE_BOOL:
        return "false" if out.type == pb.SQL_TYPE_BOOLEAN else None
    if field.type == F.TYPE_BYTES:
        return "" if out.type == pb.SQL_TYPE_BYTEA else None
    return None


def _explicit_presence(registry: Registry, message: _Message, field: F) -> bool:
    """Whether the field distinguishes "not set" (and so maps to a nullable column)."""
    if field.type in (F.TYPE_MESSAGE, F.TYPE_GROUP) or field.HasField("oneof_index"):
        return True
    f = message.file
    if f.syntax == "proto3":
        return field.proto3_optional
    if f.syntax in ("", "proto2"):
        return field.label != F.LABEL_REQUIRED
    presence = descriptor_pb2.FeatureSet
    for options in (field.options, message.proto.options, f.options):
        value = options.features.field_presence
        if value != presence.FIELD_PRESENCE_UNKNOWN:
            return value == presence.EXPLICIT
    return True  # editions default: explicit presence
