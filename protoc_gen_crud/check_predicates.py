"""CHECK constraints as predicates the typed Python client evaluates before it sends a row.

One annotation should protect the API, the client and the database alike (issue 18): the
client checks a row against the very CHECK constraints the migrations install. The SQL of
each constraint (as templates/postgres/_checks.sql.j2 writes it, from crud.v1 constraints or
from buf.validate rules folded into them) is parsed here with PostgreSQL's own parser
(pglast) and compiled into a small tree of tuples the client's runtime walks with
PostgreSQL's semantics: three-valued logic (a CHECK that is NULL holds), NaN equal to itself
and above every number, integer division truncating, a `real` column rounding to float4.

Only what evaluates exactly the same in Python is compiled; anything else (a function the
runtime does not know, text ordering under a collation other than "C", a regular expression
construct Python's `re` reads differently) leaves the constraint to the database, with the
reason kept beside it in the generated code. The database stays the authority either way:
its refusals come back to the client as typed errors naming the field.

Tree nodes (all tuples of str/int/bool/None): ("col", name), ("val", python literal),
("num", decimal text), ("float", text), ("ts", iso text), ("iv", microseconds),
("and", *args), ("or", *args), ("not", a), ("null", a), ("notnull", a),
("cmp", op, a, b), ("in", a, items), ("re", a, pattern), ("call", name, *args),
("case", whens, otherwise), ("arith", op, a, b), ("neg", a), ("within", a, b),
("texts", a), ("array", *items); ("call", "float8", a) is a cast.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pglast import ast, parse_sql
from pglast.enums.parsenodes import A_Expr_Kind
from pglast.enums.primnodes import BoolExprType, NullTestType

# The value kinds the client converts a column's wire JSON into (runtime: _from_wire).
# Columns of other kinds (json, date, time, uuid, timestamp without zone) are left out:
# a constraint reading one stays with the database.
KINDS = {
    "TEXT": "text", "INTEGER": "int", "SMALLINT": "int", "BIGINT": "int", "SERIAL": "int",
    "BIGSERIAL": "int", "DECIMAL": "num", "REAL": "float4", "DOUBLE": "float",
    "BOOLEAN": "bool", "TIMESTAMPTZ": "ts", "INTERVAL": "iv", "BYTEA": "bytes",
}
_NUMBERS = {"int", "num", "float", "float4"}
_ORDERED = _NUMBERS | {"ts", "iv"}
# Functions the runtime implements with PostgreSQL's results: name -> (argument types, result).
_FUNCTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "char_length": (("text",), "int"), "character_length": (("text",), "int"),
    "octet_length": (("text|bytes",), "int"), "cardinality": (("list",), "int"),
    "starts_with": (("text", "text"), "bool"), "right": (("text", "int"), "text"),
    "left": (("text", "int"), "text"), "strpos": (("text", "text"), "int"),
    "jsonb_object": (("list", "list"), "object"),
    "jsonb_path_query_array": (("object", "text"), "list"),
    "jsonb_array_length": (("list",), "int"),
}
_CASTS = {"float8": "float", "float4": "float4", "numeric": "num", "int4": "int",
          "int8": "int", "int2": "int", "text": "text", "timestamptz": "ts",
          "interval": "iv", "bool": "bool"}
_INTERVAL = re.compile(r"(-?)(\d+)\.(\d{6}) seconds")


class NotPortable(Exception):
    """The constraint (or a part of it) does not evaluate the same in Python; says why."""


@dataclass(frozen=True)
class Compiled:
    """A constraint as the client sees it: the tree (None: left to the database) and why."""

    tree: Any
    columns: tuple[str, ...]
    reason: str = ""


def compile_check(check_sql: str, kinds: dict[str, str]) -> Compiled:
    """`CHECK (...)` as the installed constraint reads, over columns of `kinds`
    (column -> KINDS value, "[]" appended for arrays)."""
    body = check_sql.strip()
    if not (body.upper().startswith("CHECK") and body.endswith(")")):
        return Compiled(None, (), "not a CHECK constraint")
    expression = body[len("CHECK"):].strip()
    try:
        node = parse_sql(f"SELECT {expression}")[0].stmt.targetList[0].val
    except Exception as exc:  # pglast raises its own ParseError
        return Compiled(None, (), f"unparsable: {exc}")
    compiler = _Compiler(kinds)
    try:
        tree, result = compiler.expr(node)
        if result not in ("bool", "null"):
            raise NotPortable(f"the expression is a {result}, not a boolean")
    except NotPortable as exc:
        return Compiled(None, tuple(sorted(compiler.columns)), str(exc))
    return Compiled(tree, tuple(sorted(compiler.columns)))


def python_regex(pattern: str, case_insensitive: bool = False) -> str:
    """A PostgreSQL ARE as a Python pattern with the same verdicts under `re.DOTALL` (in an
    ARE `.` matches a newline and `$` is only the end of the text)."""
    out: list[str] = ["(?i)"] if case_insensitive else []
    if pattern.startswith("***"):
        raise NotPortable("regular expression directors (***) have no Python form")
    head = re.match(r"\(\?([a-z]+)\)", pattern)
    if head:
        if set(head.group(1)) - {"i"}:
            raise NotPortable(f"regular expression options (?{head.group(1)})")
        out.append("(?i)")
        pattern = pattern[head.end():]
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= len(pattern):
                raise NotPortable("a regular expression ending in a backslash")
            nxt = pattern[i + 1]
            if nxt.isalnum():
                mapped = ({"y": r"\b", "Y": r"\B", "Z": r"\Z", "A": r"\A"}.get(nxt)
                          if not in_class else None)
                if mapped is None and nxt in "dwsDWSntrfv":
                    mapped = "\\" + nxt
                if mapped is None:
                    raise NotPortable(f"regular expression escape \\{nxt}")
                out.append(mapped)
            else:
                out.append("\\" + nxt)
            i += 2
            continue
        if in_class:
            if ch == "[" and pattern[i + 1:i + 2] in (":", "=", "."):
                raise NotPortable("bracket expressions like [:alpha:] in a regular expression")
            if ch == "]" and out[-1] not in ("[", "[^"):
                in_class = False
            out.append(ch)
        elif ch == "[":
            in_class = True
            out.append("[^" if pattern[i + 1:i + 2] == "^" else "[")
            i += 1 if pattern[i + 1:i + 2] == "^" else 0
            if pattern[i + 1:i + 2] == "]":
                out.append("\\]")
                i += 1
        elif ch == "$":
            out.append(r"\Z")
        elif ch == "(" and pattern[i + 1:i + 2] == "?" and pattern[i + 2:i + 3] not in (":",
                                                                                       "=", "!"):
            raise NotPortable("regular expression group (?...) other than (?:, (?= and (?!")
        else:
            out.append(ch)
        i += 1
    text = "".join(out)
    try:
        re.compile(text, re.DOTALL)
    except re.error as exc:
        raise NotPortable(f"regular expression Python reads differently ({exc})") from None
    return text


def literal_value(text: str, kind: str) -> Any:
    """A column default's literal (model.Default.text) as the tree node of its value."""
    if kind.endswith("[]"):
        if text.strip() != "{}":
            raise NotPortable(f"array default {text!r}")
        return ("array",)
    if kind == "text":
        return ("val", text)
    if kind == "int":
        return ("val", int(text))
    if kind == "bool":
        return ("val", text.strip().lower() in ("true", "t", "yes", "on", "1"))
    if kind == "num":
        try:
            return ("num", str(Decimal(text)))
        except InvalidOperation:
            raise NotPortable(f"default {text!r}") from None
    if kind in ("float", "float4"):
        return ("float", str(float(text)))
    raise NotPortable(f"a {kind} default")


class _Compiler:
    def __init__(self, kinds: dict[str, str]) -> None:
        self.kinds = kinds
        self.columns: set[str] = set()

    def expr(self, node: Any) -> tuple[Any, str]:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise NotPortable(f"SQL construct {type(node).__name__}")
        return method(node)

    def _ColumnRef(self, node: ast.ColumnRef) -> tuple[Any, str]:
        names = [f.sval for f in node.fields if isinstance(f, ast.String)]
        if len(names) != 1 or len(node.fields) != 1:
            raise NotPortable("a qualified column reference")
        name = names[0]
        self.columns.add(name)
        kind = self.kinds.get(name)
        if kind is None:
            raise NotPortable(f"column {name!r} is of a type the client does not convert")
        return ("col", name), ("list:" + kind[:-2]) if kind.endswith("[]") else kind

    def _A_Const(self, node: ast.A_Const) -> tuple[Any, str]:
        if node.isnull:
            return ("val", None), "null"
        value = node.val
        if isinstance(value, ast.Integer):
            return ("val", value.ival), "int"
        if isinstance(value, ast.Float):
            return ("num", str(Decimal(value.fval))), "num"
        if isinstance(value, ast.Boolean):
            return ("val", bool(value.boolval)), "bool"
        if isinstance(value, ast.String):
            return ("val", value.sval), "unknown_text"
        raise NotPortable(f"constant {type(value).__name__}")

    def _TypeCast(self, node: ast.TypeCast) -> tuple[Any, str]:
        names = [n.sval for n in node.typeName.names if isinstance(n, ast.String)]
        target = _CASTS.get(names[-1]) if names else None
        array = bool(node.typeName.arrayBounds)
        if target is None:
            raise NotPortable(f"a cast to {'.'.join(names)}")
        if array:
            if target != "text":
                raise NotPortable("a cast to an array other than text[]")
            if isinstance(node.arg, ast.A_ArrayExpr):
                items = tuple(self.text_constant(e) for e in node.arg.elements or ())
                return ("array", *items), "list:text"
            inner, kind = self.expr(node.arg)
            if not kind.startswith("list:") or kind[5:] not in ("text", "int", "bool"):
                raise NotPortable(f"a {kind} as text[] (its text form differs in Python)")
            return ("texts", inner), "list:text"
        if isinstance(node.arg, ast.A_Const) and not node.arg.isnull:
            value = node.arg.val
            text = (value.sval if isinstance(value, ast.String) else
                    str(value.ival) if isinstance(value, ast.Integer) else
                    value.fval if isinstance(value, ast.Float) else None)
            if text is None:
                raise NotPortable("a cast of a non-literal constant")
            return self.typed_literal(text, target), target
        inner, kind = self.expr(node.arg)
        if kind == target or (target == "text" and kind == "unknown_text"):
            return inner, target
        if target == "float" and kind in ("int", "float4", "num"):
            return ("call", "float8", inner), "float"
        raise NotPortable(f"a cast of a {kind} to {target}")

    def typed_literal(self, text: str, target: str) -> Any:
        if target in ("float", "float4"):
            if text.strip().lower() in ("nan", "infinity", "-infinity", "inf", "-inf"):
                return ("float", {"nan": "nan", "infinity": "inf", "inf": "inf",
                                  "-infinity": "-inf", "-inf": "-inf"}[text.strip().lower()])
            return ("float", repr(float(text)))
        if target == "num":
            return ("num", str(Decimal(text)))
        if target == "int":
            return ("val", int(text))
        if target == "text":
            return ("val", text)
        if target == "bool":
            return literal_value(text, "bool")
        if target == "ts":
            try:
                stamp = datetime.datetime.fromisoformat(text)
            except ValueError:
                raise NotPortable(f"timestamp literal {text!r}") from None
            if stamp.tzinfo is None:
                raise NotPortable("a timestamp literal without a zone")
            return ("ts", stamp.isoformat())
        if target == "iv":
            m = _INTERVAL.fullmatch(text.strip())
            if not m:
                raise NotPortable(f"interval literal {text!r}")
            micros = int(m.group(2)) * 1_000_000 + int(m.group(3))
            return ("iv", -micros if m.group(1) else micros)
        raise NotPortable(f"a {target} literal")

    def text_constant(self, node: Any) -> Any:
        if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
            return ("val", node.val.sval)
        raise NotPortable("an array element that is not a text constant")

    def _BoolExpr(self, node: ast.BoolExpr) -> tuple[Any, str]:
        args = [self.boolean(a) for a in node.args]
        if node.boolop == BoolExprType.NOT_EXPR:
            return ("not", args[0]), "bool"
        return ("and" if node.boolop == BoolExprType.AND_EXPR else "or", *args), "bool"

    def boolean(self, node: Any) -> Any:
        tree, kind = self.expr(node)
        if kind not in ("bool", "null"):
            raise NotPortable(f"a {kind} where a boolean is needed")
        return tree

    def _NullTest(self, node: ast.NullTest) -> tuple[Any, str]:
        inner, _ = self.expr(node.arg)
        return ("null" if node.nulltesttype == NullTestType.IS_NULL else "notnull",
                inner), "bool"

    def _CollateClause(self, node: ast.CollateClause) -> tuple[Any, str]:
        names = [n.sval for n in node.collname]
        inner, kind = self.expr(node.arg)
        if names != ["C"]:
            raise NotPortable(f"collation {'.'.join(names)}")
        return inner, "text_c" if kind in ("text", "unknown_text") else kind

    def _CoalesceExpr(self, node: ast.CoalesceExpr) -> tuple[Any, str]:
        parts = [self.expr(a) for a in node.args]
        kind = self.common([k for _, k in parts])
        return ("call", "coalesce", *(t for t, _ in parts)), kind

    def _CaseExpr(self, node: ast.CaseExpr) -> tuple[Any, str]:
        if node.arg is not None:
            raise NotPortable("CASE with an operand")
        whens, kinds = [], []
        for when in node.args:
            value, kind = self.expr(when.result)
            whens.append((self.boolean(when.expr), value))
            kinds.append(kind)
        otherwise: Any = ("val", None)
        if node.defresult is not None:
            otherwise, kind = self.expr(node.defresult)
            kinds.append(kind)
        return ("case", tuple(whens), otherwise), self.common(kinds)

    def _A_ArrayExpr(self, node: ast.A_ArrayExpr) -> tuple[Any, str]:
        return ("array", *(self.text_constant(e) for e in node.elements or ())), "list:text"

    def _FuncCall(self, node: ast.FuncCall) -> tuple[Any, str]:
        names = [n.sval for n in node.funcname]
        name = names[-1] if names[:-1] in ([], ["pg_catalog"]) else ".".join(names)
        if name not in _FUNCTIONS or node.agg_star or node.agg_distinct or node.over:
            raise NotPortable(f"function {name}()")
        wanted, result = _FUNCTIONS[name]
        args = list(node.args or ())
        if len(args) != len(wanted):
            raise NotPortable(f"{name}() with {len(args)} arguments")
        trees = []
        for arg, want in zip(args, wanted, strict=True):
            tree, kind = self.expr(arg)
            base = "text" if kind in ("unknown_text", "text_c") else kind
            if not any(base == w or (w == "list" and base.startswith("list:"))
                       for w in want.split("|")):
                raise NotPortable(f"{name}() of a {kind}")
            trees.append(tree)
        if name == "jsonb_path_query_array" and trees[1] != ("val", "$.keyvalue()"):
            raise NotPortable("jsonb_path_query_array() with a path other than $.keyvalue()")
        return ("call", name, *trees), result

    def _A_Expr(self, node: ast.A_Expr) -> tuple[Any, str]:
        op = node.name[-1].sval if node.name else ""
        if node.kind == A_Expr_Kind.AEXPR_IN:
            left, kind = self.expr(node.lexpr)
            items = []
            for item in node.rexpr:
                tree, item_kind = self.expr(item)
                self.comparable(kind, item_kind, "=")
                items.append(tree)
            found = ("in", left, tuple(items))
            return (found if op == "=" else ("not", found)), "bool"
        if node.kind != A_Expr_Kind.AEXPR_OP:
            raise NotPortable(f"SQL operator form {node.kind.name}")
        if node.lexpr is None:
            inner, kind = self.expr(node.rexpr)
            if op == "-" and kind in _NUMBERS:
                return ("neg", inner), kind
            if op == "+" and kind in _NUMBERS:
                return inner, kind
            raise NotPortable(f"prefix operator {op}")
        left, lkind = self.expr(node.lexpr)
        right, rkind = self.expr(node.rexpr)
        if op in ("=", "<>", "!=", "<", "<=", ">", ">="):
            self.comparable(lkind, rkind, op)
            return ("cmp", "<>" if op == "!=" else op, left, right), "bool"
        if op in ("+", "-", "*", "/", "%"):
            if lkind not in _NUMBERS or rkind not in _NUMBERS:
                raise NotPortable(f"operator {op} on {lkind} and {rkind}")
            return ("arith", op, left, right), self.common([lkind, rkind])
        if op in ("~", "~*", "!~", "!~*"):
            if lkind not in ("text", "text_c", "unknown_text"):
                raise NotPortable(f"a regular expression match on a {lkind}")
            if right[0] != "val" or not isinstance(right[1], str):
                raise NotPortable("a regular expression that is not a constant")
            found = ("re", left, python_regex(right[1], "*" in op))
            return (("not", found) if op.startswith("!") else found), "bool"
        if op == "<@" and lkind.startswith("list:") and rkind.startswith("list:"):
            return ("within", left, right), "bool"
        raise NotPortable(f"operator {op} on {lkind} and {rkind}")

    def comparable(self, left: str, right: str, op: str) -> None:
        kinds = {left, right}
        if kinds <= _NUMBERS or (len(kinds) == 1 and left in _ORDERED):
            return
        texts = {"text", "text_c", "unknown_text"}
        if kinds <= texts:
            if op in ("=", "<>", "!=") or "text_c" in kinds:
                return
            raise NotPortable("text ordered by the database's collation")
        if "null" in kinds:
            return
        if op in ("=", "<>", "!=") and (kinds == {"bool"} or kinds == {"bytes"}):
            return
        if kinds <= {"ts", "unknown_text"} or kinds <= {"iv", "unknown_text"}:
            raise NotPortable("a text constant compared with a time (give it a type)")
        raise NotPortable(f"{left} {op} {right}")

    @staticmethod
    def common(kinds: list[str]) -> str:
        known = [k for k in kinds if k != "null"]
        if not known:
            return "null"
        if set(known) <= _NUMBERS:
            for k in ("float", "float4", "num", "int"):
                if k in known:
                    return "float" if k == "float4" and len(set(known)) > 1 else k
        if set(known) <= {"text", "text_c", "unknown_text"}:
            return "text"
        if len(set(known)) == 1:
            return known[0]
        raise NotPortable(f"values of types {sorted(set(known))} in one expression")
