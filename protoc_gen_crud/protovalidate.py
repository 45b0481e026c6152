"""protovalidate (`buf.validate`) rules as the database constraints `crud.v1` would give.

Teams on buf already state their rules with protovalidate; reading them here means one
annotation protects the database too. The rules are read from the request itself: protoc puts
every imported file's descriptor into the CodeGeneratorRequest, so a descriptor pool built from
the request's own `buf/validate/validate.proto` parses the options' extension bytes, and no
protovalidate package is needed at generation time.

Each rule lands in the same `crud.v1.Constraints` slot a user could have written (min/max,
min_length/max_length, pattern, not_null) or, where no slot says it, in the field's `check`
(SQL built here, identifiers and literals through the renderer's own quoting). So the model
and the targets never learn that protovalidate existed. A rule that has no translation is a
diagnostic at its `file:line:column`, never dropped: the database is where the rule holds.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from .diagnostics import Diagnostic, Location
from .gen.crud.v1 import options_pb2 as pb
from .rendering import ident, literal

F = descriptor_pb2.FieldDescriptorProto
VALIDATE_FILE = "buf/validate/validate.proto"
# The extension number of (buf.validate.field), (buf.validate.message) and (...oneof).
EXTENSION = 1159
_MSG_FIELDS, _MSG_OPTIONS, _FIELD_OPTIONS, _MSG_ONEOFS = 2, 7, 8, 8

_INTEGER_RULES = {"int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32",
                  "fixed64", "sfixed32", "sfixed64"}
_FLOAT_RULES = {"float", "double"}
# Constraints slots with presence; the others count as given when not empty.
_PRESENCE = frozenset({"not_null", "min", "max", "min_length", "max_length"})
# Exactly representable as the double Constraints.min/max hold.
_EXACT = 2**53
# protovalidate's string formats, as POSIX regular expressions with the same verdicts.
_FORMATS = {
    "email": r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
             r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$",
    "uuid": r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    "tuuid": r"^[0-9a-fA-F]{32}$",
}
_HINT = ("state it with (crud.v1.field).constraints (e.g. check) instead, or move it to a "
         "rule the database can hold; see the protovalidate mapping in crud/v1/options.proto")


class Untranslatable(Exception):
    """A rule or CEL construct with no database translation; the text names it."""


def _number(value: float | int, float_column: bool) -> str:
    """A SQL numeric literal: integers exactly, doubles by repr, non-finite as float8."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "'NaN'::float8"
    if math.isinf(value):
        return "'Infinity'::float8" if value > 0 else "'-Infinity'::float8"
    if value.is_integer() and not float_column:
        return str(int(value))
    return repr(value) + "::float8" if float_column else repr(value)


def translate_regex(pattern: str) -> str:
    """An RE2 pattern (protovalidate's dialect) as a PostgreSQL ARE with the same matches.

    The dialects differ in a few places: RE2's `.` does not match a newline (an ARE's does),
    `\\b`/`\\B` are word boundaries (`\\y`/`\\Y` in an ARE, where `\\b` is a backspace), `\\z`
    is the end of text (`\\Z`). Constructs an ARE lacks (Unicode classes, named groups,
    flags past the start) are refused rather than guessed.
    """
    flags = ""
    head = re.match(r"\(\?([a-zA-Z]+)\)", pattern)
    if head:
        flags = head.group(1)
        if set(flags) - set("is"):
            raise Untranslatable(f"regular expression flags (?{flags}): only i and s are "
                                 "translated")
        pattern = pattern[head.end():]
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt in "pPQEC" or (nxt == "x" and pattern[i + 2:i + 3] == "{"):
                raise Untranslatable(f"regular expression escape \\{nxt} (PostgreSQL's "
                                     "regular expressions have no equivalent)")
            if not in_class and nxt in "bBz":
                out.append({"b": r"\y", "B": r"\Y", "z": r"\Z"}[nxt])
            else:
                out.append(ch + nxt)
            i += 2
            continue
        if in_class:
            if ch == "]" and not (out and out[-1] in ("[", "[^")):
                in_class = False
            out.append(ch)
        elif ch == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "^":
                out.append("[^")
                i += 1
            else:
                out.append("[")
            if pattern[i + 1:i + 2] == "]":
                out.append("]")
                i += 1
        elif ch == "(" and pattern[i + 1:i + 2] == "?" and pattern[i + 2:i + 3] != ":":
            raise Untranslatable("regular expression group (?...) other than (?:...)")
        elif ch == "." and "s" not in flags:
            out.append("[^\\n]")
        else:
            out.append(ch)
        i += 1
    return ("(?i)" if "i" in flags else "") + "".join(out)


@dataclass
class Column:
    """What a CEL or field rule needs to know of one proto field's column."""

    name: str
    kind: str  # string | bytes | int | uint | double | bool | enum | list | message
    nullable: bool
    array: bool
    enum_names: dict[int, str]

    def ref(self) -> str:
        """The column as CEL sees it: its zero value where the row holds NULL."""
        zero = {"string": "''", "bytes": "'\\x'::bytea", "int": "0", "uint": "0",
                "double": "0", "bool": "false"}.get(self.kind)
        if self.nullable and zero is not None and not self.array:
            return f"COALESCE({ident(self.name)}, {zero})"
        return ident(self.name)


def _kind(field: F) -> str:
    if field.label == F.LABEL_REPEATED:
        return "list"
    return {
        F.TYPE_STRING: "string", F.TYPE_BYTES: "bytes", F.TYPE_BOOL: "bool",
        F.TYPE_DOUBLE: "double", F.TYPE_FLOAT: "double", F.TYPE_ENUM: "enum",
        F.TYPE_UINT32: "uint", F.TYPE_UINT64: "uint", F.TYPE_FIXED32: "uint",
        F.TYPE_FIXED64: "uint", F.TYPE_MESSAGE: "message", F.TYPE_GROUP: "message",
    }.get(field.type, "int")


# --- CEL: the common subset, parsed and translated to SQL -----------------------------------

_CEL_TOKEN = re.compile(r"""
    \s*(?:
      (?P<number>\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|0x[0-9a-fA-F]+u?|\d+u?)
    | (?P<string>[rR]?"(?:[^"\\\n]|\\.)*"|[rR]?'(?:[^'\\\n]|\\.)*')
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>&&|\|\||==|!=|<=|>=|[<>!()\[\],.?:+\-*%/])
    )""", re.X)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?", "`": "`"}


def _unquote(token: str) -> str:
    raw = token[:1] in "rR"
    body = token[2:-1] if raw else token[1:-1]
    if raw:
        return body
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\":
            nxt = body[i + 1]
            if nxt not in _ESCAPES:
                raise Untranslatable(f"string escape \\{nxt}")
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


@dataclass
class Sql:
    """A translated CEL expression: SQL text and the CEL type it has."""

    text: str
    kind: str  # string | bytes | int | uint | double | bool | list | null | enum | message
    column: Column | None = None


class Cel:
    """A recursive-descent parser of one CEL expression that emits SQL as it goes.

    `this` is the message (message rules: `this.field` names a column) or the field's value
    (field rules). Anything outside the subset raises Untranslatable naming the construct.
    """

    def __init__(self, text: str, columns: dict[str, Column], this: Column | None):
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _CEL_TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise Untranslatable(f"CEL syntax near {text[pos:pos + 12]!r}")
            kind = m.lastgroup or "op"
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.pos, self.columns, self.this = 0, columns, this

    def translate(self) -> str:
        result = self.ternary()
        if self.pos != len(self.tokens):
            raise Untranslatable(f"CEL syntax near {self.tokens[self.pos][1]!r}")
        if result.kind != "bool":
            raise Untranslatable("a CEL rule that is not a boolean (a rule returning an error "
                                 "message string)")
        return result.text

    def peek(self, value: str | None = None) -> bool:
        return self.pos < len(self.tokens) and (value is None or self.tokens[self.pos][1]
                                                == value)

    def take(self, value: str | None = None) -> tuple[str, str]:
        if not self.peek(value):
            raise Untranslatable(f"CEL syntax: expected {value or 'more'}")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def ternary(self) -> Sql:
        cond = self.binary(0)
        if not self.peek("?"):
            return cond
        self.take("?")
        yes = self.ternary()
        self.take(":")
        no = self.ternary()
        return Sql(f"(CASE WHEN {self.boolean(cond)} THEN {yes.text} ELSE {no.text} END)",
                   yes.kind)

    _LEVELS = (("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">=", "in"), ("+", "-"),
               ("*", "/", "%"))

    def binary(self, level: int) -> Sql:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.pos < len(self.tokens) and self.tokens[self.pos][1] in self._LEVELS[level]:
            op = self.take()[1]
            right = self.binary(level + 1)
            left = self.combine(op, left, right)
        return left

    def boolean(self, node: Sql) -> str:
        if node.kind != "bool":
            raise Untranslatable(f"CEL: a {node.kind} where a boolean is needed")
        return node.text

    def combine(self, op: str, a: Sql, b: Sql) -> Sql:
        if op in ("&&", "||"):
            joined = " AND " if op == "&&" else " OR "
            return Sql(f"({self.boolean(a)}{joined}{self.boolean(b)})", "bool")
        if op == "in":
            if b.kind != "list":
                raise Untranslatable("CEL `in` on something other than a list")
            if b.text.startswith("("):  # a list literal
                return Sql(f"({a.text} IN {b.text})", "bool")
            return Sql(f"({a.text} = ANY({b.text}))", "bool")
        if op in ("+", "-", "*", "/", "%"):
            if op == "+" and a.kind == "string" and b.kind == "string":
                return Sql(f"({a.text} || {b.text})", "string")
            if a.kind not in ("int", "uint", "double") or b.kind not in ("int", "uint",
                                                                        "double"):
                raise Untranslatable(f"CEL operator {op} on {a.kind} and {b.kind}")
            if op in ("/", "%"):
                raise Untranslatable(f"CEL operator {op} (division by zero is an error in "
                                     "CEL, a different one in SQL)")
            return Sql(f"({a.text} {op} {b.text})", "double" if "double" in (a.kind, b.kind)
                       else a.kind)
        sql_op = {"==": "=", "!=": "<>"}.get(op, op)
        if a.kind == "enum" and b.kind == "int" and a.column is not None:
            b = Sql(literal(a.column.enum_names.get(int(b.text), b.text)), "string")
        collate = ' COLLATE "C"' if a.kind == "string" and op in ("<", "<=", ">", ">=") else ""
        return Sql(f"({a.text}{collate} {sql_op} {b.text})", "bool")

    def unary(self) -> Sql:
        if self.peek("!"):
            self.take()
            return Sql(f"(NOT {self.boolean(self.unary())})", "bool")
        if self.peek("-"):
            self.take()
            inner = self.unary()
            return Sql(f"(-{inner.text})", inner.kind)
        return self.postfix(self.primary())

    def primary(self) -> Sql:
        kind, value = self.take()
        if kind == "number":
            if "." in value or ("e" in value.lower() and not value.startswith("0x")):
                return Sql(repr(float(value)), "double")
            unsigned = value.endswith("u")
            number = int(value.rstrip("u"), 0)
            return Sql(str(number), "uint" if unsigned else "int")
        if kind == "string":
            if value[:1] in "bB":
                raise Untranslatable("CEL bytes literals")
            return Sql(literal(_unquote(value)), "string")
        if value == "(":
            inner = self.ternary()
            self.take(")")
            return Sql(f"({inner.text})", inner.kind, inner.column)
        if value == "[":
            items: list[Sql] = []
            while not self.peek("]"):
                items.append(self.ternary())
                if not self.peek("]"):
                    self.take(",")
            self.take("]")
            if not items:
                raise Untranslatable("CEL empty list literal")
            return Sql("(" + ", ".join(i.text for i in items) + ")", "list")
        if kind != "name":
            raise Untranslatable(f"CEL syntax near {value!r}")
        if value in ("true", "false"):
            return Sql(value, "bool")
        if value == "this":
            if self.this is not None:
                return Sql(self.this.ref(), self.this.kind, self.this)
            return Sql("this", "message")
        if self.peek("("):
            return self.call(value, None)
        raise Untranslatable(f"CEL identifier {value!r} (only `this` and its fields are "
                             "translated)")

    def postfix(self, node: Sql) -> Sql:
        while self.peek("."):
            self.take(".")
            name = self.take()[1]
            if self.peek("("):
                node = self.call(name, node)
            elif node.text == "this" and node.kind == "message":
                column = self.columns.get(name)
                if column is None:
                    raise Untranslatable(f"CEL field this.{name}: no such column")
                node = Sql(column.ref(), column.kind, column)
            else:
                raise Untranslatable(f"CEL field selection .{name} inside a {node.kind}")
        return node

    def args(self) -> list[Sql]:
        self.take("(")
        out: list[Sql] = []
        while not self.peek(")"):
            out.append(self.ternary())
            if not self.peek(")"):
                self.take(",")
        self.take(")")
        return out

    def call(self, name: str, target: Sql | None) -> Sql:
        if name == "has" and target is None:
            start = self.pos
            args = self.args()
            if len(args) != 1 or args[0].column is None:
                self.pos = start
                raise Untranslatable("CEL has() of something other than this.field")
            col = args[0].column
            if col.array:
                return Sql(f"(cardinality({ident(col.name)}) > 0)", "bool")
            if col.nullable:
                return Sql(f"({ident(col.name)} IS NOT NULL)", "bool")
            return Sql(f"({ident(col.name)} <> {_zero_sql(col)})", "bool")
        args = self.args()
        if target is None and name == "size" and len(args) == 1:
            target, args = args[0], []
        if target is None:
            raise Untranslatable(f"CEL function {name}()")
        methods: dict[str, Callable[[Sql, list[Sql]], Sql]] = {
            "size": _size, "startsWith": _starts, "endsWith": _ends, "contains": _contains,
            "matches": _matches,
        }
        if name not in methods:
            raise Untranslatable(f"CEL function {name}()")
        return methods[name](target, args)


def _present(col: Column) -> str:
    """protovalidate's presence of a field, over its column."""
    if col.array:
        return f"cardinality({ident(col.name)}) > 0"
    if col.nullable:
        return f"{ident(col.name)} IS NOT NULL"
    zero = literal(col.enum_names.get(0, "")) if col.kind == "enum" else _zero_sql(col)
    return f"{ident(col.name)} <> {zero}"


def _zero_sql(col: Column) -> str:
    return {"string": "''", "bytes": "'\\x'::bytea", "bool": "false"}.get(col.kind, "0")


def _size(target: Sql, args: list[Sql]) -> Sql:
    if args:
        raise Untranslatable("CEL size() with arguments")
    if target.kind == "string":
        return Sql(f"char_length({target.text})", "int")
    if target.kind == "bytes":
        return Sql(f"octet_length({target.text})", "int")
    if target.kind == "list" and target.column is not None:
        return Sql(f"cardinality({target.text})", "int")
    raise Untranslatable(f"CEL size() of a {target.kind}")


def _string_args(name: str, target: Sql, args: list[Sql]) -> Sql:
    if target.kind != "string" or len(args) != 1 or args[0].kind != "string":
        raise Untranslatable(f"CEL {name}() on something other than strings")
    return args[0]


def _starts(target: Sql, args: list[Sql]) -> Sql:
    arg = _string_args("startsWith", target, args)
    return Sql(f"starts_with({target.text}, {arg.text})", "bool")


def _ends(target: Sql, args: list[Sql]) -> Sql:
    arg = _string_args("endsWith", target, args)
    return Sql(f"(right({target.text}, char_length({arg.text})) = {arg.text})", "bool")


def _contains(target: Sql, args: list[Sql]) -> Sql:
    arg = _string_args("contains", target, args)
    return Sql(f"(strpos({target.text}, {arg.text}) > 0)", "bool")


def _matches(target: Sql, args: list[Sql]) -> Sql:
    arg = _string_args("matches", target, args)
    if not (arg.text.startswith("'") and arg.text.endswith("'")):
        raise Untranslatable("CEL matches() with a pattern that is not a literal")
    pattern = arg.text[1:-1].replace("''", "'")
    return Sql(f"({target.text} ~ {literal(translate_regex(pattern))})", "bool")


# --- Reading the options -----------------------------------------------------------------


class Rules:
    """The request's buf.validate options, parsed with the request's own descriptors."""

    def __init__(self, files: dict[str, descriptor_pb2.FileDescriptorProto]):
        self.field_ext = self.message_ext = self.oneof_ext = None
        self.oneof_options: Any = None
        self.field_options: Any = None
        self.message_options: Any = None
        if VALIDATE_FILE not in files:
            return
        pool = descriptor_pool.DescriptorPool()
        added: set[str] = set()

        def add(name: str) -> None:
            if name in added or name not in files:
                return
            added.add(name)
            for dep in files[name].dependency:
                add(dep)
            pool.Add(files[name])

        add(VALIDATE_FILE)
        self.field_ext = pool.FindExtensionByName("buf.validate.field")
        self.message_ext = pool.FindExtensionByName("buf.validate.message")
        self.oneof_ext = pool.FindExtensionByName("buf.validate.oneof")
        self.oneof_options = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("google.protobuf.OneofOptions"))
        self.field_options = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("google.protobuf.FieldOptions"))
        self.message_options = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("google.protobuf.MessageOptions"))

    def field(self, field: F) -> Message | None:
        """The field's (buf.validate.field) rules, or None."""
        if self.field_ext is None:
            return None
        options = self.field_options.FromString(field.options.SerializeToString())
        if not options.HasExtension(self.field_ext):
            return None
        return options.Extensions[self.field_ext]

    def oneof(self, oneof: descriptor_pb2.OneofDescriptorProto) -> Message | None:
        """The oneof's (buf.validate.oneof) rules, or None."""
        options = self.oneof_options.FromString(oneof.options.SerializeToString())
        if not options.HasExtension(self.oneof_ext):
            return None
        return options.Extensions[self.oneof_ext]

    def message(self, message: descriptor_pb2.DescriptorProto) -> Message | None:
        """The message's (buf.validate.message) rules, or None."""
        if self.message_ext is None:
            return None
        options = self.message_options.FromString(message.options.SerializeToString())
        if not options.HasExtension(self.message_ext):
            return None
        return options.Extensions[self.message_ext]


# String rules that are one SQL test of the column against the rule's text.
_STRING_TESTS = {
    "const": "{col} = {text}",
    "prefix": "starts_with({col}, {text})",
    "suffix": "right({col}, {length}) = {text}",
    "contains": "strpos({col}, {text}) > 0",
    "not_contains": "strpos({col}, {text}) = 0",
}


class Applier:
    """Folds one entity's buf.validate rules into its `crud.v1.Field`s."""

    def __init__(self, rules: Rules, registry: Any, message: Any, entity: pb.Entity,
                 problems: list[Diagnostic]):
        self.rules, self.registry, self.message = rules, registry, message
        self.entity, self.problems = entity, problems
        self.columns: dict[str, Column] = {}
        for field, out in zip(message.proto.field, entity.fields, strict=True):
            enum = registry.enums.get(field.type_name) if field.type == F.TYPE_ENUM else None
            self.columns[field.name] = Column(
                out.name, _kind(field), not out.constraints.not_null, out.array,
                {v.number: v.name for v in enum.value} if enum else {})
        self.extra: dict[int, list[str]] = {}

    def place(self, path: tuple[int, ...]) -> Location:
        f = self.message.file
        return self.registry.location(f, path) or self.registry.location(
            f, self.message.path) or Location(f.name)

    def run(self) -> None:
        for j, field in enumerate(self.message.proto.field):
            rules = self.rules.field(field)
            if rules is not None:
                self.field(j, field, rules)
        rules = self.rules.message(self.message.proto)
        if rules is not None:
            self.message_rules(rules)
        self.oneofs()
        for j, predicates in sorted(self.extra.items()):
            out = self.entity.fields[j]
            parts = ([out.constraints.check] if out.constraints.check else []) + predicates
            out.constraints.check = " AND ".join(
                p if len(parts) == 1 else f"({p})" for p in parts)

    def error(self, where: Location, text: str) -> None:
        self.problems.append(Diagnostic(where, text))

    def message_rules(self, rules: Message) -> None:
        where = self.place(self.message.path + (_MSG_OPTIONS, EXTENSION))
        label = f"message {self.message.full_name[1:]}"
        expressions = [(r.id or r.expression, r.expression) for r in rules.cel]
        expressions += [(e, e) for e in rules.cel_expression]
        for name, expression in expressions:
            try:
                sql = Cel(expression, self.columns, None).translate()
            except Untranslatable as exc:
                self.error(where, f"{label}: (buf.validate.message) rule {name!r}: {exc} is not "
                           f"translated to a database constraint; {_HINT}")
                continue
            if not self.entity.fields:
                self.error(where, f"{label}: (buf.validate.message) rule {name!r} needs a "
                           "field to carry its check; the message has none")
                continue
            # A rule over the row goes into the check of the first field it names.
            named = [j for j, f in enumerate(self.message.proto.field)
                     if ident(self.columns[f.name].name) in sql]
            self.extra.setdefault(named[0] if named else 0, []).append(sql)
        for k, rule in enumerate(rules.oneof):
            unknown = [n for n in rule.fields if n not in self.columns]
            if unknown or not rule.fields:
                self.error(where, f"{label}: (buf.validate.message).oneof rule {k + 1} names "
                           f"no field or fields the message lacks ({', '.join(unknown)})")
                continue
            # At most one field present (exactly one when required), presence counted as
            # protovalidate does: set for a field with presence, non-zero otherwise.
            count = " + ".join(f"(CASE WHEN {_present(self.columns[n])} THEN 1 ELSE 0 END)"
                               for n in rule.fields)
            first = next(j for j, f in enumerate(self.message.proto.field)
                         if f.name == rule.fields[0])
            self.extra.setdefault(first, []).append(
                f"{count} {'=' if rule.required else '<='} 1")

    def oneofs(self) -> None:
        """(buf.validate.oneof).required: one of a proto oneof's fields must be set."""
        for k, oneof in enumerate(self.message.proto.oneof_decl):
            rules = self.rules.oneof(oneof)
            if rules is None or not rules.required:
                continue
            members = [(j, f) for j, f in enumerate(self.message.proto.field)
                       if f.HasField("oneof_index") and f.oneof_index == k
                       and not f.proto3_optional]
            if not members:
                continue
            either = " OR ".join(f"{ident(self.columns[f.name].name)} IS NOT NULL"
                                 for _, f in members)
            self.extra.setdefault(members[0][0], []).append(either)

    def field(self, j: int, field: F, rules: Message) -> None:
        path = self.message.path + (_MSG_FIELDS, j)
        where = self.place(path + (_FIELD_OPTIONS, EXTENSION))
        label = f"message {self.message.full_name[1:]}, field {field.name}"
        out = self.entity.fields[j]
        user = field.options.Extensions[pb.field].constraints
        user_place = self.place(path + (_FIELD_OPTIONS, pb.field.number))
        column = self.columns[field.name]
        predicates: list[str] = []
        col = ident(out.name)

        def fail(rule: str, why: str = "") -> None:
            self.error(where, f"{label}: (buf.validate.field).{rule} is not translated to a "
                       f"database constraint{': ' + why if why else ''}; {_HINT}")

        def slot(rule: str, name: str, value: Any, predicate: str) -> None:
            """Set a Constraints slot, or report a disagreement with the user's own."""
            given = user.HasField(name) if name in _PRESENCE else bool(getattr(user, name))
            if given:
                mine = getattr(user, name)
                if mine != value:
                    self.error(where, f"{label}: (buf.validate.field).{rule} disagrees with "
                               f"(crud.v1.field).constraints.{name} {_show(mine)} at "
                               f"{user_place}; make them agree or remove one")
                    return
            if ignore_zero:
                predicates.append(predicate)
            else:
                setattr(out.constraints, name, value)

        ignore = rules.ignore
        if ignore == 3:  # IGNORE_ALWAYS
            return
        ignore_zero = ignore == 1
        if rules.required:
            if column.array:
                predicates.append(f"cardinality({col}) > 0")
            elif column.nullable or column.kind in ("message",):
                slot("required", "not_null", True, f"{col} IS NOT NULL")
            else:
                zero = _zero_sql(column) if column.kind != "enum" else literal(
                    column.enum_names.get(0, ""))
                predicates.append(f"{col} <> {zero}")
        # protovalidate skips a field's rules while the field is unset: `this` is the bare
        # column, NULL there, and a CHECK that is NULL holds.
        this = replace(column, nullable=False)
        for rule in rules.cel:
            try:
                predicates.append(Cel(rule.expression, self.columns, this).translate())
            except Untranslatable as exc:
                fail(f"cel {rule.id or rule.expression!r}", str(exc))
        for expression in rules.cel_expression:
            try:
                predicates.append(Cel(expression, self.columns, this).translate())
            except Untranslatable as exc:
                fail(f"cel_expression {expression!r}", str(exc))
        kind = rules.WhichOneof("type")
        if kind is not None:
            typed = getattr(rules, kind)
            for desc, value in typed.ListFields():
                name = f"{kind}.{desc.name}"
                if desc.name == "example":
                    continue
                try:
                    self.typed(kind, desc.name, value, typed, column, col, slot, predicates,
                               name, user)
                except Untranslatable as exc:
                    fail(name, str(exc))
        if ignore_zero and predicates and not column.array:
            zero = _zero_sql(column) if column.kind != "enum" else literal(
                column.enum_names.get(0, ""))
            predicates[:] = [f"{col} = {zero} OR " + " AND ".join(f"({p})" for p in predicates)]
        if predicates:
            self.extra.setdefault(j, []).extend(dict.fromkeys(predicates))

    def typed(self, kind: str, rule: str, value: Any, typed: Message, column: Column, col: str,
              slot: Callable[..., None], predicates: list[str], name: str,
              user: pb.Constraints) -> None:
        """One rule of the field's type-specific rules."""
        is_float = kind in _FLOAT_RULES
        if kind in _INTEGER_RULES or is_float:
            number = _number(value, is_float) if not isinstance(value, list) and rule not in (
                "in", "not_in") else ""
            if rule in ("gte", "lte", "gt", "lt") and is_float:
                predicates.append(f"{col} <> 'NaN'::float8")
            if rule in ("gte", "lte") or (rule in ("gt", "lt") and not is_float):
                bound = value + (1 if rule == "gt" else -1 if rule == "lt" else 0)
                target = "min" if rule in ("gt", "gte") else "max"
                op = ">=" if target == "min" else "<="
                if abs(bound) < _EXACT and not (is_float and not math.isfinite(bound)):
                    slot(name, target, float(bound), f"{col} {op} {_number(bound, is_float)}")
                else:
                    predicates.append(f"{col} {op} {_number(bound, is_float)}")
                return
            if rule in ("gt", "lt"):
                predicates.append(f"{col} {'>' if rule == 'gt' else '<'} {number}")
                return
            if rule == "const":
                predicates.append(f"{col} = {number}")
                return
            if rule in ("in", "not_in"):
                items = ", ".join(_number(v, is_float) for v in value)
                predicates.append(f"{col} {'NOT ' if rule == 'not_in' else ''}IN ({items})")
                return
            if rule == "finite" and value:
                predicates.append(f"{col} NOT IN ('NaN'::float8, 'Infinity'::float8, "
                                  "'-Infinity'::float8)")
                return
        if kind == "string":
            if rule in ("min_len", "max_len", "len"):
                targets = {"min_len": ("min_length",), "max_len": ("max_length",),
                           "len": ("min_length", "max_length")}[rule]
                for target in targets:
                    op = ">=" if target == "min_length" else "<="
                    slot(name, target, int(value), f"char_length({col}) {op} {int(value)}")
                return
            if rule in ("min_bytes", "max_bytes", "len_bytes"):
                op = {"min_bytes": ">=", "max_bytes": "<=", "len_bytes": "="}[rule]
                predicates.append(f"octet_length({col}) {op} {int(value)}")
                return
            if rule == "pattern":
                translated = translate_regex(value)
                predicate = f"{col} ~ {literal(translated)}"
                if user.pattern:  # agrees when the user wrote it in either dialect
                    slot(name, "pattern", user.pattern if user.pattern in (
                        value, translated) else translated, predicate)
                elif _python_compiles(translated):
                    slot(name, "pattern", translated, predicate)
                else:  # the slot is checked as a Python regex; ARE-only escapes are not one
                    predicates.append(predicate)
                return
            if rule in _STRING_TESTS:
                predicates.append(_STRING_TESTS[rule].format(col=col, text=literal(value),
                                                             length=len(value)))
                return
            if rule in ("in", "not_in"):
                items = ", ".join(literal(v) for v in value)
                predicates.append(f"{col} {'NOT ' if rule == 'not_in' else ''}IN ({items})")
                return
            if rule in _FORMATS and value:
                predicates.append(f"{col} ~ {literal(_FORMATS[rule])}")
                return
        if kind == "bytes" and rule in ("min_len", "max_len", "len"):
            op = {"min_len": ">=", "max_len": "<=", "len": "="}[rule]
            predicates.append(f"octet_length({col}) {op} {int(value)}")
            return
        if kind in ("timestamp", "duration"):
            ops = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "const": "="}
            if rule not in ops:
                raise Untranslatable("its verdict depends on the clock (a CHECK must not)"
                                     if rule in ("lt_now", "gt_now", "within") else "")
            bound = _time_literal(kind, value)
            if kind == "duration" and column.array:
                raise Untranslatable("")
            predicates.append(f"{col} {ops[rule]} {bound}")
            return
        if kind == "bool" and rule == "const":
            predicates.append(f"{col} = {'true' if value else 'false'}")
            return
        if kind == "enum":
            names = column.enum_names
            if rule == "defined_only":
                return  # the column holds value names; its CHECK admits only defined ones
            if rule in ("in", "not_in", "const"):
                wanted = list(value) if rule != "const" else [value]
                missing = [v for v in wanted if v not in names]
                if missing and rule != "not_in":
                    raise Untranslatable(f"enum numbers {missing} have no value name to store")
                items = ", ".join(literal(names[v]) for v in wanted if v in names)
                if items:
                    predicates.append(f"{col} {'NOT ' if rule == 'not_in' else ''}IN ({items})")
                return
        if kind == "repeated" and column.array:
            if rule in ("min_items", "max_items"):
                op = ">=" if rule == "min_items" else "<="
                predicates.append(f"cardinality({col}) {op} {int(value)}")
                return
            if rule == "unique" and value:
                # No subquery in a CHECK: a JSON object keyed by the items has one key per
                # distinct item, and `$.keyvalue()` lists them.
                predicates.append(
                    f"jsonb_array_length(jsonb_path_query_array(jsonb_object({col}::text[], "
                    f"{col}::text[]), '$.keyvalue()')) = cardinality({col})")
                return
        raise Untranslatable("no SQL form for this rule")


def _time_literal(kind: str, value: Any) -> str:
    """A Timestamp or Duration rule value as a timestamptz or interval literal, exactly (a
    column holds microseconds, so a finer bound has no exact SQL form)."""
    if value.nanos % 1000:
        raise Untranslatable("a bound finer than a microsecond (the column's precision)")
    micros = value.seconds * 1_000_000 + value.nanos // 1000
    if kind == "duration":
        sign = "-" if micros < 0 else ""
        whole, frac = divmod(abs(micros), 1_000_000)
        return f"'{sign}{whole}.{frac:06d} seconds'::interval"
    stamp = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        microseconds=micros)
    return f"'{stamp.isoformat()}'::timestamptz"


def _python_compiles(pattern: str) -> bool:
    """Whether the builder's check of a crud.v1 pattern (Python's re) accepts `pattern`."""
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def apply(rules: Rules, registry: Any, message: Any, entity: pb.Entity,
          problems: list[Diagnostic]) -> None:
    """Fold the message's buf.validate rules into `entity` (already filled from the message)."""
    if rules.field_ext is None:
        return
    Applier(rules, registry, message, entity, problems).run()
