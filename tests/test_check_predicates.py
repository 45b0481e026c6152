"""CHECK constraints compiled for the Python client evaluate as PostgreSQL evaluates them.

protoc_gen_crud/check_predicates.py compiles a constraint's SQL into a tree the generated
client's checks.py walks. Each case here is one expression and one row: PostgreSQL computes
the expression over the row (true, false or NULL) and the client's evaluator, installed from
a generated package, must give the same, on the edges where Python and SQL differ (integer
division and modulo, NaN's order, float4 rounding, three-valued logic, a regular expression's
`$` and `.` around newlines, negative `left`/`right`, code-point order under COLLATE "C").
Constructs without an exact Python form are left to the database, with a reason.
"""

from __future__ import annotations

import math

import psycopg
import pytest

from protoc_gen_crud import check_predicates as cp

from .support import from_text
from .test_python_client import install, load

NAN = math.nan

# (expression, {column: (SQL type, client kind, value for PostgreSQL, value on the wire)})
CASES = [
    ('"a" / "b" = -2', {"a": ("int", "int", -7, -7), "b": ("int", "int", 3, 3)}),
    ('"a" % "b" = -1', {"a": ("int", "int", -7, -7), "b": ("int", "int", 3, 3)}),
    ('"a" / "b" > 0', {"a": ("int", "int", 1, 1), "b": ("int", "int", 0, 0)}),
    ('"x" > 1e308', {"x": ("float8", "float", NAN, "NaN")}),
    ('"x" = \'NaN\'::float8', {"x": ("float8", "float", NAN, "NaN")}),
    ('"x" <> \'NaN\'::float8 AND "x" >= 0', {"x": ("float8", "float", NAN, "NaN")}),
    ('"x" < \'Infinity\'::float8', {"x": ("float8", "float", math.inf, "Infinity")}),
    ('"x" > 0.1', {"x": ("float8", "float", 0.1, 0.1)}),
    ('"x" IN (1.5, 2.5)', {"x": ("float8", "float", 2.5, 2.5)}),
    ('"r" > 0.1', {"r": ("float4", "float4", 0.1, 0.1)}),
    ('"r" <= 0.30000001', {"r": ("float4", "float4", 0.3, 0.3)}),
    ('"d" >= 0.5 AND NOT ("d" > 0.5)', {"d": ("numeric(10,2)", "num", "0.50", "0.50")}),
    ('"d" >= "x"', {"d": ("numeric", "num", "0.1", "0.1"), "x": ("float8", "float", 0.1, 0.1)}),
    ('"n" IS NULL OR "n" > 3', {"n": ("int", "int", None, None)}),
    ('NOT ("n" > 3)', {"n": ("int", "int", None, None)}),
    ('"n" > 3 AND false', {"n": ("int", "int", None, None)}),
    ('"n" > 3 OR true', {"n": ("int", "int", None, None)}),
    ('"n" NOT IN (1, NULL)', {"n": ("int", "int", 2, 2)}),
    ('"n" IN (2, NULL)', {"n": ("int", "int", 2, 2)}),
    ('COALESCE("n", 0) >= 0', {"n": ("int", "int", None, None)}),
    ('(CASE WHEN "t" <> \'\' THEN 1 ELSE 0 END) + (CASE WHEN "n" IS NOT NULL THEN 1 ELSE 0 '
     'END) = 1', {"t": ("text", "text", "x", "x"), "n": ("int", "int", 5, 5)}),
    ('"t" ~ \'^ab$\'', {"t": ("text", "text", "ab\n", "ab\n")}),
    ('"t" ~ \'^a.b$\'', {"t": ("text", "text", "a\nb", "a\nb")}),
    ('"t" ~* \'AB\'', {"t": ("text", "text", "xab", "xab")}),
    ('"t" !~ \'\\yab\\y\'', {"t": ("text", "text", "xab", "xab")}),
    ('"t" ~ \'^[^@\\s]+@[^@\\s]+$\'', {"t": ("text", "text", "a@b c", "a@b c")}),
    ('right("t", -1) = \'bc\' AND left("t", -1) = \'ab\'', {"t": ("text", "text", "abc", "abc")}),
    ('right("t", 5) = \'abc\' AND right("t", 0) = \'\'', {"t": ("text", "text", "abc", "abc")}),
    ('strpos("t", \'\') = 1 AND strpos("t", \'c\') = 3', {"t": ("text", "text", "abc", "abc")}),
    ('starts_with("t", \'ab\') AND char_length("t") = 3', {"t": ("text", "text", "abé", "abé")}),
    ('octet_length("t") = 4', {"t": ("text", "text", "abé", "abé")}),
    ('"t" COLLATE "C" < \'b\'', {"t": ("text", "text", "B", "B")}),
    ('"t" COLLATE "C" < \'b\'', {"t": ("text", "text", "é", "é")}),
    ('"b" = true', {"b": ("bool", "bool", False, False)}),
    ('"ts" > \'2020-01-01T00:00:00+00:00\'::timestamptz',
     {"ts": ("timestamptz", "ts", "2020-01-01T00:00:00.000001Z", "2020-01-01T00:00:00.000001Z")}),
    ('"ts" = \'2020-01-01T00:00:00.000002+00:00\'::timestamptz',
     {"ts": ("timestamptz", "ts", "2020-01-01T00:00:00.0000015Z", "2020-01-01T00:00:00.0000015Z")}),
    ('"iv" < \'1.000000 seconds\'::interval AND "iv" > \'-1.000000 seconds\'::interval',
     {"iv": ("interval", "iv", "0.999999 seconds", "0.999999s")}),
    ('"iv" < \'0.000000 seconds\'::interval', {"iv": ("interval", "iv", "-5 seconds", "-5s")}),
    ('cardinality("tags") = 0', {"tags": ("text[]", "text[]", [], [])}),
    ('cardinality("tags") = 0', {"tags": ("text[]", "text[]", None, None)}),
    ('"tags" <@ ARRAY[\'a\', \'b\']::text[]',
     {"tags": ("text[]", "text[]", ["a", "a"], ["a", "a"])}),
    ('"tags" <@ ARRAY[\'a\', \'b\']::text[]', {"tags": ("text[]", "text[]", ["c"], ["c"])}),
    ('jsonb_array_length(jsonb_path_query_array(jsonb_object("tags"::text[], "tags"::text[]), '
     '\'$.keyvalue()\')) = cardinality("tags")', {"tags": ("text[]", "text[]", ["a", "A", "a"],
                                                            ["a", "A", "a"])}),
    ('jsonb_array_length(jsonb_path_query_array(jsonb_object("codes"::text[], "codes"::text[]), '
     '\'$.keyvalue()\')) = cardinality("codes")', {"codes": ("int[]", "int[]", [1, 2], [1, 2])}),
    ('-"a" > 0 AND "a" * 2 = -14', {"a": ("int", "int", -7, -7)}),
    ('"a" >= 8999999999999999999', {"a": ("bigint", "int", 9000000000000000000,
                                         "9000000000000000000")}),
]


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    """The evaluator of a generated client, installed with pip."""
    files = from_text('database { name: "probe" }\nentity { name: "thing" fields { name: '
                      '"t" type: SQL_TYPE_TEXT } }\n', targets=["python_client"])
    package, site = install(files, tmp_path_factory.mktemp("probe-client"))
    return load(package, site).checks


@pytest.mark.one_major
@pytest.mark.parametrize("expression,columns", CASES)
def test_the_client_evaluates_as_postgresql_does(checks, database, expression, columns):
    kinds = {name: kind for name, (_, kind, _, _) in columns.items()}
    compiled = cp.compile_check(f"CHECK ({expression})", kinds)
    assert compiled.tree is not None, compiled.reason
    row = {name: checks.from_wire(kind, wire) for name, (_, kind, _, wire) in columns.items()}
    try:
        client = checks.evaluate(compiled.tree, row)
    except checks._Unknown:  # what the database raises an error for: no verdict
        client = "error"
    select = ", ".join(f'%s::{sql_type} AS "{name}"'
                       for name, (sql_type, _, _, _) in columns.items())
    with database.connect() as conn:
        try:
            sql = f"SELECT ({expression.replace('%', '%%')}) FROM (SELECT {select}) AS row"
            (postgres,) = conn.execute(sql,
                                       [value for _, _, value, _ in columns.values()]).fetchone()
        except psycopg.errors.DivisionByZero:  # an error, never a verdict
            postgres = "error"
    assert client == postgres, (expression, row)


@pytest.mark.parametrize("expression,why", [
    ("lower(\"t\") <> 'admin'", "function lower()"),
    ("\"t\" < 'b'", "collation"),
    ("\"t\" COLLATE \"en_US\" < 'b'", "collation en_US"),
    ("\"t\" ~ '[[:alpha:]]+'", "bracket expressions"),
    ("\"t\" ~ '\\mword'", "escape \\m"),
    ("\"t\" ~ '(?<=a)b'", "(?...)"),
    ("\"j\" IS NOT NULL", "does not convert"),
    ("\"t\" ~ \"t\"", "not a constant"),
    ("(SELECT true)", "SubLink"),
])
def test_what_has_no_exact_python_form_is_left_to_the_database(expression, why):
    compiled = cp.compile_check(f"CHECK ({expression})", {"t": "text"})
    assert compiled.tree is None and why in compiled.reason, compiled


def test_a_constraint_left_to_the_database_is_skipped_and_the_rest_checked(tmp_path):
    files = from_text('database { name: "probe" }\nentity { name: "thing"\n'
                      '  fields { name: "t" type: SQL_TYPE_TEXT constraints {\n'
                      '    check: "lower(t) <> \'admin\'" min_length: 2 } } }\n',
                      targets=["python_client"])
    pkg = load(*install(files, tmp_path))
    rules = pkg.rules.THING
    assert [(c.name, c.tree is None, c.reason) for c in rules.checks] == [
        ("thing_t_min_length", False, ""), ("thing_t_check", True, "function lower()")]
    pkg.checks.check_row("thing", rules, {"t": "admin"}, partial=False)  # the database's call
    with pytest.raises(pkg.InvalidMessage) as caught:
        pkg.checks.check_row("thing", rules, {"t": "a"}, partial=False)
    assert [(v.field, v.constraint) for v in caught.value.violations] == [
        ("t", "thing_t_min_length")]
