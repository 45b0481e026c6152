"""A custom endpoint's query, read the way PostgreSQL reads it, before any server sees it.

An endpoint becomes a SQL function. Two things about its query must be settled at generation
time, because the migration that creates the function runs in production:

- the types of its undeclared `$n` parameters. Giving every one `text` breaks
  `WHERE stock < $1` on an integer column (`operator does not exist: integer < text`).
  PostgreSQL infers such a parameter from its context when it prepares the statement: the
  operand on the other side of an operator (after reducing a domain to its base type), the
  column a value is assigned to (the column's own type, domain included), LIMIT and OFFSET
  (bigint), a cast, the other arguments of COALESCE, CASE, IN lists, a function's signature;
- what PostgreSQL would refuse outright: syntax, a table or column that is not there, a GET
  endpoint that writes. These are reported with the endpoint's `file:line:column` instead of
  failing the migration.

The query is parsed by libpg_query (pglast), PostgreSQL 18's own parser, so the syntax is
PostgreSQL's to the letter. Names are resolved against the model's tables. The test suite
compares every inference with PostgreSQL's (`PREPARE` and
`pg_prepared_statements.parameter_types`) and every refusal with the server's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind, SetOperation, SubLinkType
from pglast.parser import ParseError

from .pg_typing import (
    ARGUMENTS,
    AVG,
    COMPARISON,
    RESULTS,
    SUM,
    UNKNOWN,
    VALUE_FUNCTIONS,
    base_type,
    category,
    constant,
    operand,
    result,
    type_name,
)


@dataclass(frozen=True)
class ColumnType:
    """A column as a query sees it: `operand` is what operators compare (a domain reduced to
    its base type, as PostgreSQL resolves operators), `stored` what an assignment targets."""

    operand: str
    stored: str


# A table's columns in order, or None where this reader cannot know them (a function in FROM,
# a relation outside the backend's schema): references into it are not checked.
Columns = Mapping[str, ColumnType] | None


@dataclass(frozen=True)
class Problem:
    """Something PostgreSQL would refuse; `position` is 1-based within the query, 0 if none."""

    message: str
    position: int = 0


@dataclass(frozen=True)
class Reading:
    """What the query says: parameter number -> inferred type (absent: text), the statement
    kind (select/insert/update/delete), whether it writes, and what PostgreSQL would refuse."""

    params: dict[int, str]
    kind: str
    writes: bool
    problems: tuple[Problem, ...]
    # The result's columns: name -> type as the function returns it ("" where only the
    # server knows), for the OpenAPI document and the clients.
    columns: tuple[tuple[str, str], ...] = ()



# A statement's output columns in order (None: type not known here).
Outputs = dict[str, ColumnType | None]


def _known(sql_type: str | None) -> ColumnType | None:
    return ColumnType(sql_type, sql_type) if sql_type and sql_type != UNKNOWN else None


@dataclass
class _Frame:
    """One query level's FROM: names in scope -> their columns, and the output aliases that
    ORDER BY and GROUP BY may use."""

    relations: dict[str, Columns] = field(default_factory=dict)
    outputs: set[str] = field(default_factory=set)
    ctes: dict[str, Columns] = field(default_factory=dict)


class _Reader:
    def __init__(self, tables: Mapping[str, Columns], schema: str) -> None:
        self.tables = tables
        self.schema = schema
        self.params: dict[int, str] = {}
        self.problems: list[Problem] = []
        self.writes = False
        # `$n IS NULL` before anything types $n: PostgreSQL leaves it unknown there and then
        # cannot settle it when a later use types it.
        self.untyped: dict[int, int] = {}
        # A `*` over columns this reader cannot know: the result's columns are the server's.
        self.unknown_star = False

    # --- parameters -------------------------------------------------------------------

    def assign(self, node, sql_type: str | None) -> None:
        """A bare `$n` (maybe in parentheses) met in a context that types it."""
        if isinstance(node, ast.ParamRef) and sql_type and sql_type != UNKNOWN:
            self.params.setdefault(node.number, base_type(sql_type) if not
                                   sql_type.startswith("crud_meta.") else sql_type)

    def param_type(self, node) -> str | None:
        return self.params.get(node.number) if isinstance(node, ast.ParamRef) else None

    # --- statements ---------------------------------------------------------------------

    def statement(self, node, outer: list[_Frame]) -> Outputs:
        """Visit one statement; returns its output columns (for subqueries and CTEs)."""
        if isinstance(node, ast.SelectStmt):
            return self.select(node, outer)
        if isinstance(node, (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt)):
            self.writes = True
            return self.modify(node, outer)
        self.problems.append(Problem(f"a {type(node).__name__.removesuffix('Stmt')} statement "
                                     "cannot be an endpoint; use SELECT, INSERT, UPDATE or "
                                     "DELETE"))
        return {}

    def with_clause(self, node, frame: _Frame, outer: list[_Frame]) -> None:
        if not node:
            return
        for cte in node.ctes or ():
            outputs = self.statement(cte.ctequery, [frame, *outer])
            names = [c.sval for c in cte.aliascolnames or ()]
            columns = dict(outputs)
            if names:
                values = list(outputs.values())
                columns = {n: values[i] if i < len(values) else None for i, n in enumerate(names)}
            frame.ctes[cte.ctename] = {n: t or ColumnType("", "") for n, t in columns.items()}

    def select(self, node: ast.SelectStmt, outer: list[_Frame]) -> Outputs:
        frame = _Frame()
        self.with_clause(node.withClause, frame, outer)
        scope = [frame, *outer]
        if node.op != SetOperation.SETOP_NONE:
            left = self.statement(node.larg, scope)
            self.statement(node.rarg, scope)
            self.limits(node, scope)
            return left
        if node.valuesLists:
            out: Outputs = {}
            for row in node.valuesLists:
                for i, value in enumerate(row):
                    out.setdefault(f"column{i + 1}", _known(self.expr(value, scope)))
            return out
        for item in node.fromClause or ():
            self.from_item(item, frame, scope)
        out = self.targets(node.targetList, scope)
        frame.outputs.update(t.name for t in node.targetList or () if t.name)
        self.condition(node.whereClause, scope)
        for item in node.groupClause or ():
            self.expr(item, scope, outputs=True)
        self.condition(node.havingClause, scope)
        for window in node.windowClause or ():
            self.window(window, scope)
        for sort in node.sortClause or ():
            self.expr(sort.node, scope, outputs=True)
        self.limits(node, scope)
        return out

    def limits(self, node: ast.SelectStmt, scope: list[_Frame]) -> None:
        for limit in (node.limitCount, node.limitOffset):
            if limit is not None:
                self.assign(limit, "bigint")
                self.expr(limit, scope)

    def window(self, window, scope: list[_Frame]) -> None:
        for item in (window.partitionClause or ()):
            self.expr(item, scope)
        for sort in (window.orderClause or ()):
            self.expr(sort.node, scope)

    def condition(self, node, scope: list[_Frame]) -> None:
        if node is not None:
            self.assign(node, "boolean")
            self.expr(node, scope)

    def modify(self, node, outer: list[_Frame]) -> Outputs:
        frame = _Frame()
        self.with_clause(node.withClause, frame, outer)
        scope = [frame, *outer]
        target = self.range_var(node.relation, frame, scope)
        columns = target or {}
        if isinstance(node, ast.InsertStmt):
            names = ([c.name for c in node.cols] if node.cols else list(columns))
            for c in node.cols or ():
                self.check_column(target, c.name, node.relation, c.location)
            source = node.selectStmt
            if isinstance(source, ast.SelectStmt) and source.valuesLists:
                for row in source.valuesLists:
                    for i, value in enumerate(row):
                        if i < len(names) and names[i] in columns:
                            self.assign(value, columns[names[i]].stored)
                        self.expr(value, scope)
            elif isinstance(source, ast.SelectStmt):
                inner = _Frame()
                for item in source.fromClause or ():
                    self.from_item(item, inner, [inner, *outer])
                for i, t in enumerate(source.targetList or ()):
                    if i < len(names) and names[i] in columns:
                        self.assign(t.val, columns[names[i]].stored)
                # read the rest of the SELECT with its own scope (FROM again is harmless)
                self.select(source, outer)
            if node.onConflictClause is not None:
                excluded = _Frame(relations={"excluded": target})
                conflict = node.onConflictClause
                for t in conflict.targetList or ():
                    if t.name in columns:
                        self.assign(t.val, columns[t.name].stored)
                    self.expr(t.val, [excluded, *scope])
                self.condition(conflict.whereClause, [excluded, *scope])
        elif isinstance(node, ast.UpdateStmt):
            for item in node.fromClause or ():
                self.from_item(item, frame, scope)
            for t in node.targetList or ():
                self.check_column(target, t.name, node.relation, t.location)
                if t.name in columns:
                    self.assign(t.val, columns[t.name].stored)
                self.expr(t.val, scope)
            self.condition(node.whereClause, scope)
        else:
            for item in node.usingClause or ():
                self.from_item(item, frame, scope)
            self.condition(node.whereClause, scope)
        returning = getattr(node, "returningClause", None)  # PostgreSQL 18's RETURNING
        return self.targets(returning.exprs if returning is not None else None, scope)

    def targets(self, items, scope: list[_Frame]) -> Outputs:
        """A target list's columns: a column keeps its table's types (a wire domain stays
        one), an expression has its own type."""
        out: Outputs = {}
        for t in items or ():
            value = t.val
            if isinstance(value, ast.ColumnRef) and isinstance(value.fields[-1], ast.A_Star):
                out.update(self.star(value, scope))
            elif isinstance(value, ast.ColumnRef):
                out[t.name or _default_name(value)] = self.column(value, scope, False)
            else:
                out[t.name or _default_name(value)] = _known(self.expr(value, scope))
        return out

    # --- FROM ---------------------------------------------------------------------------

    def from_item(self, item, frame: _Frame, scope: list[_Frame]) -> None:
        if isinstance(item, ast.RangeVar):
            self.range_var(item, frame, scope)
        elif isinstance(item, ast.JoinExpr):
            self.from_item(item.larg, frame, scope)
            self.from_item(item.rarg, frame, scope)
            self.condition(item.quals, scope)
        elif isinstance(item, ast.RangeSubselect):
            outputs = self.statement(item.subquery, scope[1:] if not item.lateral else scope)
            if item.alias is not None:
                names = [c.sval for c in item.alias.colnames or ()]
                values = list(outputs.items())
                if names:
                    values = [(n, values[i][1] if i < len(values) else None)
                              for i, n in enumerate(names)]
                frame.relations[item.alias.aliasname] = {
                    n: t or ColumnType("", "") for n, t in values}
        else:  # a function, VALUES with an alias, a table sample ...: columns not known here
            for child in _children(item):
                self.expr(child, scope)
            alias = getattr(item, "alias", None)
            frame.relations[alias.aliasname if alias else f"#{id(item)}"] = None

    def range_var(self, node: ast.RangeVar, frame: _Frame, scope: list[_Frame]) -> Columns:
        name = node.relname
        columns: Columns
        if node.schemaname and node.schemaname != self.schema:
            columns = None  # another schema (pg_catalog, an extension's): not checked here
        elif not node.schemaname and any(name in f.ctes for f in scope):
            columns = next(f.ctes[name] for f in scope if name in f.ctes)
        elif name in self.tables:
            columns = self.tables[name]
        elif not node.schemaname and name.startswith("pg_"):
            columns = None  # a system catalog view, found through pg_catalog
        else:
            known = ", ".join(sorted(self.tables)) or "none"
            self.problems.append(Problem(f'relation "{name}" does not exist (the backend\'s '
                                         f"tables: {known})", node.location + 1))
            columns = None
        frame.relations[node.alias.aliasname if node.alias else name] = columns
        return columns

    # --- names --------------------------------------------------------------------------

    def check_column(self, columns: Columns, name: str, relation: ast.RangeVar,
                     location: int) -> None:
        if columns is not None and name not in columns:
            self.problems.append(Problem(
                f'column "{name}" of relation "{relation.relname}" does not exist (its '
                f"columns: {', '.join(columns)})", location + 1))

    def star(self, node: ast.ColumnRef, scope: list[_Frame]) -> Outputs:
        names = [f.sval for f in node.fields[:-1]]
        frame = scope[0]
        if names:
            columns = self.qualified(names[-1], node, scope)
            self.unknown_star = self.unknown_star or columns is None
            return dict((columns or {}).items())
        out: Outputs = {}
        for columns in frame.relations.values():
            self.unknown_star = self.unknown_star or columns is None
            out.update((columns or {}).items())
        return out

    def qualified(self, alias: str, node, scope: list[_Frame]) -> Columns:
        for frame in scope:
            if alias in frame.relations:
                return frame.relations[alias]
        if not any(None in f.relations.values() or any(k.startswith("#") for k in f.relations)
                   for f in scope):
            self.problems.append(Problem(f'missing FROM-clause entry for table "{alias}"',
                                         node.location + 1))
        return None

    def column(self, node: ast.ColumnRef, scope: list[_Frame], outputs: bool
               ) -> ColumnType | None:
        names = [f.sval for f in node.fields if isinstance(f, ast.String)]
        if len(names) != len(node.fields) or len(names) > 3:
            return None
        if len(names) >= 2:
            columns = self.qualified(names[-2], node, scope)
            if columns is None:
                return None
            if names[-1] not in columns:
                self.problems.append(Problem(
                    f'column {names[-2]}.{names[-1]} does not exist (its columns: '
                    f"{', '.join(columns)})", node.location + 1))
                return None
            return columns[names[-1]]
        name = names[0]
        opaque = False
        for frame in scope:
            found = [c[name] for c in frame.relations.values() if c is not None and name in c]
            if len(found) > 1:
                self.problems.append(Problem(f'column reference "{name}" is ambiguous',
                                             node.location + 1))
                return None
            if found:
                return found[0]
            opaque = opaque or any(c is None for c in frame.relations.values())
            if outputs and frame is scope[0] and name in frame.outputs:
                return None
        if not opaque:
            self.problems.append(Problem(f'column "{name}" does not exist', node.location + 1))
        return None

    # --- expressions --------------------------------------------------------------------

    def expr(self, node, scope: list[_Frame], outputs: bool = False) -> str | None:
        """The type of an expression (None: not known here), typing the `$n` inside it."""
        if node is None:
            return None
        if isinstance(node, ast.ParamRef):
            return self.params.get(node.number)
        if isinstance(node, ast.ColumnRef):
            if isinstance(node.fields[-1], ast.A_Star):
                self.star(node, scope)
                return None
            found = self.column(node, scope, outputs)
            return found.operand or None if found else None
        if isinstance(node, ast.A_Const):
            return constant(node)
        if isinstance(node, ast.TypeCast):
            sql_type = type_name(node.typeName)
            self.assign(node.arg, sql_type)
            self.expr(node.arg, scope)
            return sql_type
        if isinstance(node, ast.A_Expr):
            return self.operator(node, scope)
        if isinstance(node, ast.BoolExpr):
            for arg in node.args:
                self.condition(arg, scope)
            return "boolean"
        if isinstance(node, ast.NullTest):
            if isinstance(node.arg, ast.ParamRef) and node.arg.number not in self.params:
                self.untyped.setdefault(node.arg.number, node.location)
            self.expr(node.arg, scope)
            return "boolean"
        if isinstance(node, ast.BooleanTest):
            self.condition(node.arg, scope)
            return "boolean"
        if isinstance(node, ast.FuncCall):
            return self.call(node, scope)
        if isinstance(node, (ast.CoalesceExpr, ast.MinMaxExpr)):
            return self.common(list(node.args), scope)
        if isinstance(node, ast.CaseExpr):
            return self.case(node, scope)
        if isinstance(node, ast.SubLink):
            return self.sublink(node, scope)
        if isinstance(node, ast.SQLValueFunction):
            return VALUE_FUNCTIONS.get(node.op, "name")
        if isinstance(node, ast.A_ArrayExpr):
            element = self.common(list(node.elements or ()), scope)
            if element is None and node.elements and all(
                    isinstance(e, ast.ParamRef) for e in node.elements):
                element = UNKNOWN
            if element == UNKNOWN:  # ARRAY['a', $1]: PostgreSQL resolves unknowns as text
                for e in node.elements:
                    self.assign(e, "text")
                return "text[]"
            return f"{element}[]" if element else None
        if isinstance(node, ast.RowExpr):
            for arg in node.args or ():
                self.expr(arg, scope)
            return None
        if isinstance(node, ast.CollateClause):
            return self.expr(node.arg, scope)
        if isinstance(node, ast.SortBy):
            return self.expr(node.node, scope, outputs)
        for child in _children(node):
            self.expr(child, scope)
        return None

    def common(self, args: list, scope: list[_Frame]) -> str | None:
        """COALESCE, GREATEST, LEAST, CASE results, ARRAY[...]: a bare `$n` takes the
        first known type among the others."""
        types = [self.expr(a, scope) for a in args]
        known = next((t for t in types if t and t != UNKNOWN), None)
        for a in args:
            self.assign(a, known)
        if known is None:
            return UNKNOWN if types and all(t == UNKNOWN for t in types) else None
        return known

    def case(self, node: ast.CaseExpr, scope: list[_Frame]) -> str | None:
        subject = self.expr(node.arg, scope) if node.arg is not None else None
        results = []
        for when in node.args:
            if node.arg is not None:
                self.assign(when.expr, subject)
                self.expr(when.expr, scope)
            else:
                self.condition(when.expr, scope)
            results.append(when.result)
        if node.defresult is not None:
            results.append(node.defresult)
        return self.common(results, scope)

    def sublink(self, node: ast.SubLink, scope: list[_Frame]) -> str | None:
        outputs = self.statement(node.subselect, scope)
        column = next(iter(outputs.values()), None)
        first = column.operand or None if column else None
        if node.subLinkType == SubLinkType.EXISTS_SUBLINK:
            return "boolean"
        if node.subLinkType in (SubLinkType.ANY_SUBLINK, SubLinkType.ALL_SUBLINK):
            self.assign(node.testexpr, first)
            self.expr(node.testexpr, scope)
            return "boolean"
        if node.subLinkType == SubLinkType.ARRAY_SUBLINK:
            return f"{first}[]" if first else None
        return first

    def call(self, node: ast.FuncCall, scope: list[_Frame]) -> str | None:
        name = node.funcname[-1].sval.lower()
        args = list(node.args or ())
        types = [self.expr(a, scope) for a in args]
        expected = ARGUMENTS.get(name, ())
        for i, a in enumerate(args):
            if isinstance(a, ast.NamedArgExpr) and name == "make_interval":
                self.assign(a.arg, "double precision" if a.name == "secs" else "integer")
            elif i < len(expected):
                self.assign(a, expected[i])
        if node.agg_filter is not None:
            self.condition(node.agg_filter, scope)
        for sort in node.agg_order or ():
            self.expr(sort.node, scope)
        if node.over is not None:
            self.window(node.over, scope)
        if name in ("sum", "avg") and types and types[0]:
            return (SUM if name == "sum" else AVG).get(base_type(types[0]))
        if name == "nullif" and types:
            return types[0]
        if name == "timezone" and len(types) == 2:  # x AT TIME ZONE z
            return {"timestamp with time zone": "timestamp without time zone",
                    "timestamp without time zone": "timestamp with time zone"}.get(
                        base_type(types[1] or ""), types[1])
        result = RESULTS.get(name)
        if result and result.startswith("$"):
            index = int(result[1:]) - 1
            found = types[index] if index < len(types) else None
            return base_type(found) if found and found != UNKNOWN else None
        return result

    def operator(self, node: ast.A_Expr, scope: list[_Frame]) -> str | None:
        kind = node.kind
        op = node.name[-1].sval if node.name else ""
        if kind == A_Expr_Kind.AEXPR_IN:
            items = list(node.rexpr) if isinstance(node.rexpr, (list, tuple)) else [node.rexpr]
            return self.common_with(node.lexpr, items, scope) or "boolean"
        if kind in (A_Expr_Kind.AEXPR_BETWEEN, A_Expr_Kind.AEXPR_NOT_BETWEEN,
                    A_Expr_Kind.AEXPR_BETWEEN_SYM, A_Expr_Kind.AEXPR_NOT_BETWEEN_SYM):
            self.common_with(node.lexpr, list(node.rexpr), scope)
            return "boolean"
        if kind in (A_Expr_Kind.AEXPR_OP_ANY, A_Expr_Kind.AEXPR_OP_ALL):
            left = self.expr(node.lexpr, scope)
            right = self.expr(node.rexpr, scope)
            if left and left != UNKNOWN:
                self.assign(node.rexpr, base_type(left) + "[]")
            if right and right.endswith("[]"):
                self.assign(node.lexpr, right[:-2])
                left = self.param_type(node.lexpr) or left
                self.comparable(op, left, right[:-2], node)
            return "boolean"
        if kind in (A_Expr_Kind.AEXPR_LIKE, A_Expr_Kind.AEXPR_ILIKE,
                    A_Expr_Kind.AEXPR_SIMILAR):
            for side in (node.lexpr, node.rexpr):
                self.assign(side, "text")
                self.expr(side, scope)
            return "boolean"
        if isinstance(node.lexpr, ast.RowExpr) and isinstance(node.rexpr, ast.RowExpr):
            for a, b in zip(node.lexpr.args, node.rexpr.args, strict=False):
                self.pair(op, a, b, scope)
            return "boolean"
        if node.lexpr is None:  # a prefix operator: -x
            return self.expr(node.rexpr, scope)
        left, right = self.pair(op, node.lexpr, node.rexpr, scope)
        if kind in (A_Expr_Kind.AEXPR_DISTINCT, A_Expr_Kind.AEXPR_NOT_DISTINCT):
            return "boolean"
        if kind == A_Expr_Kind.AEXPR_NULLIF:
            return left
        if (op == "+" and base_type(left or "") == "date" and right is None
                and isinstance(node.rexpr, ast.ParamRef)):
            self.problems.append(Problem("operator is not unique: date + unknown (cast the "
                                         "parameter: $n::integer for days, $n::interval)",
                                         node.location + 1))
        if op in COMPARISON:
            self.comparable(op, left, right, node)
        return result(op, left, right)

    def comparable(self, op: str, left: str | None, right: str | None, node) -> None:
        """`a op b` across type categories (an interval with a timestamp, a uuid with a
        number): PostgreSQL has no such operator and refuses the query."""
        a, b = (category(t) for t in (left, right))
        if a and b and a != b:
            self.problems.append(Problem(f"operator does not exist: {base_type(left or '')} "
                                         f"{op} {base_type(right or '')}", node.location + 1))

    def common_with(self, subject, items: list, scope: list[_Frame]) -> str | None:
        """`x IN (a, b)`, `x BETWEEN a AND b`: bare `$n` take the subject's or items' type."""
        types = [self.expr(subject, scope)] + [self.expr(i, scope) for i in items]
        known = next((t for t in types if t and t != UNKNOWN), None)
        for item in (subject, *items):
            self.assign(item, base_type(known) if known else None)
        return None

    def pair(self, op: str, a, b, scope: list[_Frame]) -> tuple[str | None, str | None]:
        left = self.expr(a, scope)
        right = self.expr(b, scope)
        if isinstance(b, ast.ParamRef) and b.number not in self.params:
            self.assign(b, operand(op, left, on_right=True))
            right = self.param_type(b)
        if isinstance(a, ast.ParamRef) and a.number not in self.params:
            self.assign(a, operand(op, right, on_right=False))
            left = self.param_type(a)
        return left, right


def _default_name(node) -> str:
    """The column name PostgreSQL gives an unnamed output expression."""
    if isinstance(node, ast.ColumnRef) and isinstance(node.fields[-1], ast.String):
        return node.fields[-1].sval
    if isinstance(node, ast.FuncCall):
        return node.funcname[-1].sval
    if isinstance(node, ast.TypeCast):
        return _default_name(node.arg) if not isinstance(node.arg, ast.A_Const) else \
            node.typeName.names[-1].sval
    return "?column?"


def _children(node):
    """The sub-nodes of a node this reader has no rule for, to reach the `$n` inside."""
    if isinstance(node, (list, tuple)):
        for item in node:
            if isinstance(item, ast.Node):
                yield item
            else:
                yield from _children(item)
        return
    if not isinstance(node, ast.Node):
        return
    for slot in node.__slots__:
        value = getattr(node, slot, None)
        if isinstance(value, ast.Node):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _children(value)


def read(query: str, tables: Mapping[str, Columns], schema: str = "public") -> Reading:
    """Read one endpoint query against the backend's tables (name -> columns, or None for a
    table whose columns are not known here, such as an aggregation's output)."""
    try:
        statements = parse_sql(query)
    except ParseError as error:
        message = error.args[0]
        position = error.args[1] if len(error.args) > 1 and error.args[1] is not None else -1
        return Reading({}, "", False, (Problem(message, position + 1),))
    if len(statements) != 1:
        return Reading({}, "", False, (Problem(f"it holds {len(statements)} statements; an "
                                               "endpoint runs exactly one"),))
    reader = _Reader(tables, schema)
    stmt = statements[0].stmt
    outputs = reader.statement(stmt, [])
    for number, location in sorted(reader.untyped.items()):
        if number in reader.params:
            reader.problems.append(Problem(
                f"could not determine data type of parameter ${number}: its first use says "
                f"nothing of its type; cast it there (${number}::{reader.params[number]})",
                location + 1))
    kind = type(stmt).__name__.removesuffix("Stmt").lower()
    # A data-modifying CTE writes too.
    columns = () if reader.unknown_star else tuple(
        (name, t.stored if t else "") for name, t in outputs.items())
    return Reading(dict(sorted(reader.params.items())), kind, reader.writes,
                   tuple(dict.fromkeys(reader.problems)), columns)
