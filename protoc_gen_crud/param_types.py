"""The types of a custom endpoint's undeclared `$n` parameters, as PostgreSQL would infer them.

An endpoint becomes a SQL function whose arguments need types. Where `params` leaves a type
out, giving every argument `text` breaks queries such as `WHERE stock < $1` on an integer
column (`operator does not exist: integer < text`), and the migration fails in production.
PostgreSQL itself infers such a parameter from its context when a statement is prepared: the
operand on the other side of an operator, the column it is assigned or compared to, LIMIT and
OFFSET (bigint), an explicit cast. The generator has no server, so this module reads the same
contexts from the query's tokens and the model's columns; the test suite checks every
inference against PostgreSQL's own (`PREPARE` and `pg_prepared_statements.parameter_types`).
Where no context says anything, the type is text, as PostgreSQL decides for an unknown too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .sqlexpr import ExpressionError, Token, tokenize

# Operators whose unknown operand takes the other operand's type (PostgreSQL's operator
# resolution prefers `T op T` when one side is unknown).
_SAME_TYPE = frozenset({"=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%",
                        "@>", "<@", "||"})
_TEXT_OPERAND = frozenset({"like", "ilike", "~~", "~~*", "~", "~*"})
# jsonb's key-existence operators take text (`?`) or text[] (`?|`, `?&`) on the right.
_JSONB_KEYS = {"?": "text", "?|": "text[]", "?&": "text[]"}
_CLAUSES = frozenset({"from", "join", "update", "into"})
_NOT_ALIAS = frozenset({
    "where", "join", "inner", "left", "right", "full", "cross", "on", "using", "group",
    "order", "limit", "offset", "set", "returning", "values", "having", "window", "union",
    "natural", "lateral", "for", "as", "select", "default"})
# Calls and keywords whose result type is fixed, for `now() - $1` and the like.
_RESULTS = {"now": "timestamp with time zone", "clock_timestamp": "timestamp with time zone",
            "statement_timestamp": "timestamp with time zone",
            "transaction_timestamp": "timestamp with time zone",
            "current_timestamp": "timestamp with time zone", "current_date": "date",
            "localtimestamp": "timestamp without time zone"}
# PostgreSQL's own spelling of type names users write in casts.
_TYPE_NAMES = {
    "int": "integer", "int4": "integer", "int8": "bigint", "int2": "smallint",
    "float8": "double precision", "float4": "real", "float": "double precision",
    "bool": "boolean", "decimal": "numeric", "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone", "varchar": "character varying",
    "character varying": "character varying", "time": "time without time zone",
    "timetz": "time with time zone", "char": "character", "double precision": "double precision",
    "timestamp with time zone": "timestamp with time zone",
    "timestamp without time zone": "timestamp without time zone",
}
_TYPMOD = re.compile(r"\(\s*\d+(\s*,\s*\d+)?\s*\)")


def base_type(sql_type: str) -> str:
    """A parameter's type has no modifier: numeric(10,2) is inferred as numeric."""
    return _TYPMOD.sub("", sql_type).strip()


def _words(tokens: list[Token]) -> list[str]:
    return [t.text.lower() if t.kind in ("word", "op", "cast") else t.text for t in tokens]


def _tables(tokens: list[Token], tables: Mapping[str, Mapping[str, str]]
            ) -> dict[str, Mapping[str, str]]:
    """Names and aliases in scope -> columns: every table after FROM, JOIN, UPDATE or INTO
    (schema-qualified or not), with the alias written after it."""
    scope: dict[str, Mapping[str, str]] = {}
    words = _words(tokens)
    for i, word in enumerate(words):
        if word not in _CLAUSES or i + 1 >= len(tokens):
            continue
        j = i + 1
        name = _name(tokens[j])
        if j + 2 < len(tokens) and words[j + 1] == ".":
            j += 2
            name = _name(tokens[j])
        if name not in tables:
            continue
        scope[name] = tables[name]
        k = j + 1
        if k < len(words) and words[k] == "as":
            k += 1
        if k < len(tokens) and tokens[k].kind in ("word", "qident") and words[k] not in _NOT_ALIAS:
            scope[_name(tokens[k])] = tables[name]
    return scope


def _name(token: Token) -> str:
    if token.kind == "qident":
        return token.text[1:-1].replace('""', '"')
    return token.text.lower()


def _column_before(tokens: list[Token], end: int, scope) -> str | None:
    """The type of the operand ending at tokens[end]: a column (maybe qualified) or a call
    or keyword of fixed type."""
    if end < 0:
        return None
    token = tokens[end]
    if token.text == ")":
        depth, k = 0, end
        while k >= 0:
            depth += {")": 1, "(": -1}.get(tokens[k].text, 0)
            if depth == 0:
                break
            k -= 1
        if k > 0 and tokens[k - 1].kind == "word":
            return _RESULTS.get(tokens[k - 1].text.lower())
        return None
    if token.kind not in ("word", "qident"):
        return None
    name = _name(token)
    if token.kind == "word" and name in _RESULTS:
        return _RESULTS[name]
    if end >= 2 and tokens[end - 1].text == ".":
        columns = scope.get(_name(tokens[end - 2]), {})
        return columns.get(name)
    return _lookup(name, scope)


_ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})
_MULTIPLICATIVE = frozenset({"*", "/", "%"})
# Numeric types in the order PostgreSQL's implicit casts promote them.
_NUMERIC_RANK = ("smallint", "integer", "bigint", "numeric", "real", "double precision")


def _operand_before(tokens: list[Token], end: int, scope, tight: bool) -> str | None:
    """The type of the arithmetic operand ending at tokens[end]: `a`, or `a * b + c` read to
    its left end (only over `*`, `/`, `%` when `tight`: the operator after it binds more
    strongly than `+` and `-`). Mixed numeric types promote as PostgreSQL promotes them."""
    types, k = [], end
    while True:
        start = k
        if tokens[k].text == ")":  # step over a call's parentheses to its name
            depth = 0
            while start >= 0:
                depth += {")": 1, "(": -1}.get(tokens[start].text, 0)
                if depth == 0:
                    break
                start -= 1
            start -= 1
        elif start >= 2 and tokens[start - 1].text == ".":
            start -= 2
        types.append(_column_before(tokens, k, scope))
        op = tokens[start - 1].text if start >= 1 else ""
        if op not in (_MULTIPLICATIVE if tight else _ARITHMETIC) or start < 2:
            break
        k = start - 2
    if None in types:
        return None
    if len(types) == 1:
        return types[0]
    bases = [base_type(t) for t in types]
    if all(b in _NUMERIC_RANK for b in bases):
        return max(bases, key=_NUMERIC_RANK.index)
    return None


def _column_after(tokens: list[Token], start: int, scope) -> str | None:
    if start >= len(tokens) or tokens[start].kind not in ("word", "qident"):
        return None
    if start + 2 < len(tokens) and tokens[start + 1].text == ".":
        columns = scope.get(_name(tokens[start]), {})
        return columns.get(_name(tokens[start + 2]))
    if start + 1 < len(tokens) and tokens[start + 1].text == "(":
        return None  # a function call: its result type is not known here
    return _lookup(_name(tokens[start]), scope)


def _lookup(name: str, scope) -> str | None:
    for columns in scope.values():
        if name in columns:
            return columns[name]
    return None


def _cast_type(tokens: list[Token], start: int) -> str:
    """The type name starting at tokens[start] (after `::` or `AS` in CAST)."""
    words, k = [], start
    while k < len(tokens) and tokens[k].kind == "word":
        words.append(tokens[k].text.lower())
        k += 1
        if " ".join(words) in ("double", "timestamp with", "timestamp without", "time with",
                               "time without", "character"):
            continue
        if words[-1] in ("with", "without", "time", "zone", "precision", "varying"):
            continue
        break
    name = " ".join(words)
    if k < len(tokens) and tokens[k].text == "(":  # a type modifier
        while k < len(tokens) and tokens[k].text != ")":
            k += 1
        k += 1
    array = ""
    while k + 1 < len(tokens) and tokens[k].text == "[" and tokens[k + 1].text == "]":
        array += "[]"
        k += 2
    return _TYPE_NAMES.get(name, name) + array


def _operator(tokens: list[Token], index: int) -> str:
    return tokens[index].text.lower() if 0 <= index < len(tokens) else ""


def _from_operator(op: str, other: str | None) -> str | None:
    if op in _TEXT_OPERAND:
        return "text"
    if op in _JSONB_KEYS and other and base_type(other) == "jsonb":
        return _JSONB_KEYS[op]
    if op in _SAME_TYPE and other:
        return base_type(other)
    return None


def _infer_one(tokens: list[Token], i: int, scope, insert_columns: dict[int, str]) -> str | None:
    words = _words(tokens)
    after = words[i + 1] if i + 1 < len(words) else ""
    before = words[i - 1] if i else ""
    if after == "::":
        return _cast_type(tokens, i + 2)
    if before == "(" and i >= 2 and words[i - 2] == "cast" and after == "as":
        return _cast_type(tokens, i + 2)
    if before in ("limit", "offset"):
        return "bigint"
    if i in insert_columns:
        return insert_columns[i]
    # col op $n  /  $n op col
    left = _operand_before(tokens, i - 2, scope, tight=before in _MULTIPLICATIVE) \
        if i >= 2 else None
    found = _from_operator(before, left)
    if found:
        return found
    if after in _SAME_TYPE or after in _TEXT_OPERAND:
        found = _from_operator(after, _column_after(tokens, i + 2, scope))
        if found:
            return found
    # col BETWEEN $a AND $b
    for k in (i - 1, i - 3):
        if k >= 1 and words[k] == "between" and (k == i - 1 or words[i - 1] == "and"):
            column = _column_before(tokens, k - 1, scope)
            if column:
                return base_type(column)
    # col IN ($a, $b)  /  col = ANY($n)
    k = i - 1
    while k >= 0 and (words[k] == "," or tokens[k].kind == "param"):
        k -= 1
    if k >= 1 and words[k] == "(":
        if words[k - 1] == "in":
            column = _column_before(tokens, k - 2, scope)
            return base_type(column) if column else None
        if words[k - 1] in ("any", "all") and k >= 2 and words[k - 2] in _SAME_TYPE:
            column = _column_before(tokens, k - 3, scope)
            return base_type(column) + "[]" if column else None
    return None


def _insert_columns(tokens: list[Token], scope) -> dict[int, str]:
    """INSERT INTO t (a, b) VALUES ($1, $2): token index of each value -> its column's type."""
    words = _words(tokens)
    found: dict[int, str] = {}
    for i, word in enumerate(words):
        if word != "into" or i + 2 >= len(tokens):
            continue
        j = i + 1
        if j + 2 < len(tokens) and words[j + 1] == ".":
            j += 2
        columns = scope.get(_name(tokens[j]), {})
        if j + 1 >= len(words) or words[j + 1] != "(":
            continue
        names, k = [], j + 2
        while k < len(words) and words[k] != ")":
            if words[k] != ",":
                names.append(_name(tokens[k]))
            k += 1
        if k + 2 >= len(words) or words[k + 1] != "values" or words[k + 2] != "(":
            continue
        position, k = 0, k + 3
        depth = 0
        while k < len(words) and not (depth == 0 and words[k] == ")"):
            if words[k] == "(":
                depth += 1
            elif words[k] == ")":
                depth -= 1
            elif words[k] == "," and depth == 0:
                position += 1
            elif (tokens[k].kind == "param" and depth == 0 and position < len(names)
                  and names[position] in columns and words[k - 1] in ("(", ",")
                  and words[k + 1] in (",", ")")):
                found[k] = base_type(columns[names[position]])
            k += 1
    return found


def infer(query: str, tables: Mapping[str, Mapping[str, str]]) -> dict[int, str]:
    """Parameter number -> the type PostgreSQL would infer from its first telling use in
    `query`; parameters without one are absent (their type is text). `tables` maps each
    table name to its columns' types (as PostgreSQL prints them)."""
    try:
        tokens = tokenize(query)
    except ExpressionError:  # syntax this reader does not know: PostgreSQL will judge it
        return {}
    scope = _tables(tokens, tables)
    inserts = _insert_columns(tokens, scope)
    found: dict[int, str] = {}
    for i, token in enumerate(tokens):
        if token.kind != "param":
            continue
        number = int(token.text[1:])
        if number in found:
            continue
        inferred = _infer_one(tokens, i, scope, inserts)
        if inferred:
            found[number] = inferred
    return found
