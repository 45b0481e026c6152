"""The SQL expressions users write in aggregation rules, read just enough to check and translate.

`custom_sql`, `where_condition` and `having` are written in PostgreSQL's spelling (the seed's
custom example uses `json_build_object`), but they run in Arroyo, whose SQL is Apache
DataFusion's. A small tokenizer finds the function calls and column references in them, so
the builder can reject an unknown column or a function DataFusion has no equivalent of (with
the rule's file:line:column), and the Arroyo target can rename the functions that only differ
in name. No full parser: the generated queries are parsed and planned by sqlparser-rs and
DataFusion in the test suite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# PostgreSQL spelling -> DataFusion spelling, for functions that mean the same thing.
TRANSLATED = {
    "json_build_object": "named_struct",  # a struct serializes as a JSON object
    "jsonb_build_object": "named_struct",
    "json_agg": "array_agg",  # an array serializes as a JSON array
    "jsonb_agg": "array_agg",
    "stddev": "stddev_samp",
    "variance": "var_samp",
    "ceiling": "ceil",
    "char_length": "character_length",
    "ifnull": "coalesce",
}

# Functions DataFusion (and so Arroyo) has under the same name.
SAME = frozenset({
    # aggregates
    "count", "sum", "avg", "min", "max", "string_agg", "array_agg", "bool_and", "bool_or",
    "stddev_samp", "stddev_pop", "var_samp", "var_pop", "median", "approx_distinct",
    "approx_median", "approx_percentile_cont", "first_value", "last_value", "corr",
    "covar_samp", "covar_pop", "bit_and", "bit_or", "bit_xor", "regr_slope",
    "regr_intercept",
    # scalars
    "coalesce", "nullif", "greatest", "least", "abs", "round", "trunc", "ceil", "floor",
    "power", "sqrt", "cbrt", "exp", "ln", "log", "log10", "log2", "sign", "signum",
    "lower", "upper", "length", "character_length", "octet_length", "concat", "concat_ws",
    "substr", "left", "right", "lpad", "rpad", "trim", "btrim", "ltrim", "rtrim", "replace",
    "split_part", "starts_with", "ends_with", "strpos", "reverse", "repeat", "initcap",
    "md5", "sha256", "regexp_like", "regexp_replace", "regexp_match", "date_trunc",
    "date_part", "date_bin", "to_timestamp", "to_char", "named_struct", "struct",
    "make_array", "array_length", "cardinality", "array_to_string", "nvl", "to_hex",
})

# Words of SQL's expression grammar that are not column names.
KEYWORDS = frozenset({
    "and", "or", "not", "is", "null", "true", "false", "in", "like", "ilike", "similar",
    "between", "case", "when", "then", "else", "end", "distinct", "all", "as", "cast",
    "interval", "filter", "where", "order", "by", "asc", "desc", "nulls", "first", "last",
    "from", "for", "extract", "position", "substring", "overlay", "placing", "escape",
    "date", "time", "timestamp", "year", "month", "day", "hour", "minute", "second",
    "epoch", "dow", "doy", "week", "quarter", "any", "some", "exists", "unknown", "at",
    "zone", "with", "without",
})

_TOKEN = re.compile(r"""
    (?P<space>\s+|--[^\n]*)
  | (?P<string>'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")+")
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<param>\$\d+)
  | (?P<cast>::)
  | (?P<op><>|!=|<=|>=|\|\||@>|<@|\?\||\?&|~~\*|~~|!~\*|!~|~\*|[-+*/%<>=(),.\[\]?~])
""", re.X)


@dataclass(frozen=True)
class Token:
    kind: str  # string | qident | number | word | param | cast | op
    text: str
    start: int  # offset in the expression


class ExpressionError(ValueError):
    """A problem in a user's expression; `offset` is where it starts in the text."""

    def __init__(self, message: str, offset: int = 0):
        super().__init__(message)
        self.offset = offset


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ExpressionError(f"cannot read {text[pos:pos + 10]!r}", pos)
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    return tokens


@dataclass(frozen=True)
class Reading:
    """What an expression uses: function calls and column references, with offsets.

    `bare` are the column references outside every aggregate call: in an aggregated SELECT
    those must be grouped."""

    functions: tuple[Token, ...]
    columns: tuple[Token, ...]
    bare: tuple[Token, ...]


def read(text: str) -> Reading:
    """Sort the words of an expression into function calls, column references and the rest.

    A word followed by `(` is a call; a word after `::`, after AS, or after a `.` is a type,
    an alias or a struct field; keywords are grammar. Every other word is a column."""
    tokens = tokenize(text)
    functions, columns, bare = [], [], []
    stack: list[bool] = []  # per open parenthesis: is it an aggregate's argument list?
    for i, t in enumerate(tokens):
        before = tokens[i - 1] if i else None
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        if t.text == "(":
            call = before is not None and functions and functions[-1].start == before.start
            stack.append(bool(call and functions[-1].text in _AGGREGATES))
            continue
        if t.text == ")":
            if not stack:
                raise ExpressionError("unbalanced parentheses", t.start)
            stack.pop()
            continue
        name = ""
        if t.kind == "qident":
            name = t.text[1:-1].replace('""', '"')
        elif t.kind == "word":
            word = t.text.lower()
            if before is not None and (before.kind == "cast" or before.text == "."
                                       or before.text.lower() == "as"):
                continue
            if after is not None and after.text == "(" and word not in KEYWORDS:
                functions.append(Token("word", word, t.start))
                continue
            if word in KEYWORDS:
                continue
            name = word
        if name:
            ref = Token("column", name, t.start)
            columns.append(ref)
            if not any(stack):
                bare.append(ref)
    if stack:
        raise ExpressionError("unbalanced parentheses", len(text))
    return Reading(tuple(functions), tuple(columns), tuple(bare))


def unsupported(function: str) -> bool:
    return function not in SAME and function not in TRANSLATED


_AGGREGATES = frozenset({
    "count", "sum", "avg", "min", "max", "string_agg", "array_agg", "bool_and", "bool_or",
    "stddev", "stddev_samp", "stddev_pop", "variance", "var_samp", "var_pop", "median",
    "approx_distinct", "approx_median", "approx_percentile_cont", "first_value",
    "last_value", "corr", "covar_samp", "covar_pop", "bit_and", "bit_or", "bit_xor",
    "json_agg", "jsonb_agg", "regr_slope", "regr_intercept",
})


def check(text: str, columns: frozenset[str] | set[str], what: str, *,
          aggregates: bool, grouped: frozenset[str] | set[str] | None = None) -> None:
    """Raise ExpressionError for the first problem in `text`: a function Arroyo lacks, an
    aggregate where none may be, an unknown column, or (when `grouped` is given, i.e. the
    expression is an aggregated SELECT item) a column outside both aggregates and GROUP BY."""
    reading = read(text)
    for fn in reading.functions:
        if unsupported(fn.text):
            raise ExpressionError(
                f"{what} calls {fn.text}(), which Arroyo's SQL (Apache DataFusion) has no "
                f"equivalent of; use functions such as json_build_object, sum, avg, count, "
                f"min, max, string_agg, array_agg, coalesce, round", fn.start)
        if not aggregates and fn.text in _AGGREGATES:
            raise ExpressionError(f"{what} cannot use the aggregate {fn.text}() here",
                                  fn.start)
    for col in reading.columns:
        if col.text not in columns:
            raise ExpressionError(
                f"{what} refers to {col.text!r}, which is not one of: "
                f"{', '.join(sorted(columns))}", col.start)
    if grouped is not None:
        for col in reading.bare:
            if col.text not in grouped:
                raise ExpressionError(
                    f"{what} uses {col.text!r} outside an aggregate; wrap it in one (e.g. "
                    f"sum({col.text})) or add it to group_by", col.start)


def translate(text: str) -> str:
    """The expression in DataFusion's spelling: renamed functions, one line, else as written.

    Only call names change; strings, numbers and the user's operators stay byte for byte."""
    tokens = tokenize(text)
    out: list[str] = []
    for i, t in enumerate(tokens):
        piece = t.text
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        before = tokens[i - 1] if i else None
        if (t.kind == "word" and after is not None and after.text == "("
                and t.text.lower() in TRANSLATED
                and not (before is not None and before.text == ".")):
            piece = TRANSLATED[t.text.lower()]
        if out and _needs_space(tokens[i - 1], t):
            out.append(" ")
        out.append(piece)
    return "".join(out)


def _needs_space(before: Token, token: Token) -> bool:
    if token.text in (")", ",", ".", "[", "]") or before.text in ("(", ".", "["):
        return False
    if token.kind == "cast" or before.kind == "cast":
        return False
    return not (token.text == "(" and before.kind == "word"
                and before.text.lower() not in KEYWORDS)
