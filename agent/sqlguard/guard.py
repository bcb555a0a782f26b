"""The guard in front of `sql_query`: one plain SELECT over the allow-listed views, or a reason.

The text is parsed by Postgres' own parser (pglast wraps libpg_query, the server's grammar), never
matched with patterns: comments, quoting and statement boundaries mean exactly what they mean to
the server. The tree is then walked against allow-lists (`agent.sqlguard.allowlist`): node types,
functions, cast types, and relations, which must be views of the allow-listed schema or a CTE in
scope. Relations and the organisation's functions are qualified with the schema in the tree, and
the SQL that runs is rendered from that checked tree, so whatever a comment or odd spacing hid
from a reader is not in what executes.

`check` is pure; a caller that checks the same query twice keeps the answer in an
`agent.sqlguard.checks.SqlChecks`.

This is the first of two walls. The second is the database itself: the query runs as the tenant's
own LOGIN role, read-only, under row-level security (`datastore.tenant_roles`). The guard's job is
to refuse early with a reason the model can act on; isolation never depends on it alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

from agent.ports import SqlCatalog
from agent.sqlguard import allowlist

MAX_SQL_CHARS: Final = 4000

# Stable reasons, recorded on the step as `sql_rejected` + reason; the model sees them too.
EMPTY: Final = "empty"
TOO_LONG: Final = "too_long"
TOO_COMPLEX: Final = "too_complex"
SYNTAX_ERROR: Final = "syntax_error"
MULTIPLE_STATEMENTS: Final = "multiple_statements"
NOT_A_SELECT: Final = "not_a_select"
SELECT_INTO: Final = "select_into"
LOCKING_CLAUSE: Final = "locking_clause"
WRITABLE_CTE: Final = "writable_cte"
PARAMETER: Final = "parameter_not_allowed"
SCHEMA_NOT_ALLOWED: Final = "schema_not_allowed"
RELATION_NOT_ALLOWED: Final = "relation_not_allowed"
FUNCTION_NOT_ALLOWED: Final = "function_not_allowed"
OPERATOR_NOT_ALLOWED: Final = "operator_not_allowed"
TYPE_NOT_ALLOWED: Final = "type_not_allowed"
SYNTAX_NOT_ALLOWED: Final = "syntax_not_allowed"
UNRENDERABLE: Final = "unrenderable"

_WRITES = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})


@dataclass(frozen=True, slots=True)
class Accepted:
    sql: str
    """Rendered from the checked tree, relations qualified: exactly what is sent to Postgres."""
    views: tuple[str, ...]
    """The allow-listed views it reads, in first-mention order."""


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    """One of the module's reason constants."""
    message: str


class _Refusal(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def check(sql: str, catalog: SqlCatalog) -> Accepted | Rejected:
    """Accept exactly one read-only SELECT over `catalog`, or say why not."""
    if not sql.strip():
        return Rejected(EMPTY, "the query is empty")
    if len(sql) > MAX_SQL_CHARS:
        return Rejected(TOO_LONG, f"the query is longer than {MAX_SQL_CHARS} characters")
    if "\x00" in sql:
        return Rejected(SYNTAX_ERROR, "the query contains a NUL character")
    try:
        first = _checked(sql, catalog)
        # The rendering must be a fixed point that passes the same check: what runs is then
        # provably the statement that was checked, whatever the printer did.
        again = _checked(first.sql, catalog)
    except _Refusal as refusal:
        return Rejected(refusal.reason, refusal.message)
    except RecursionError:
        return Rejected(TOO_COMPLEX, "the query is nested too deeply")
    if again.sql != first.sql:
        return Rejected(UNRENDERABLE, "the query could not be rendered back to the same SQL")
    return first


def _checked(sql: str, catalog: SqlCatalog) -> Accepted:
    try:
        statements = parse_sql(sql)
    except ParseError as exc:
        raise _Refusal(SYNTAX_ERROR, f"not valid PostgreSQL: {exc}") from None
    if not statements:
        raise _Refusal(EMPTY, "the query holds no statement (only comments or semicolons)")
    if len(statements) > 1:
        raise _Refusal(MULTIPLE_STATEMENTS, "send exactly one statement")
    raw = statements[0]
    if not isinstance(raw.stmt, ast.SelectStmt):
        kind = type(raw.stmt).__name__
        raise _Refusal(NOT_A_SELECT, f"only SELECT is allowed, not {kind}")
    walker = _Walker(catalog)
    walker.visit(raw.stmt, frozenset())
    try:
        rendered = RawStream()(raw)
    except Exception as exc:  # a printer gap must refuse, never crash the tool
        raise _Refusal(UNRENDERABLE, f"the query could not be rendered: {exc}") from None
    return Accepted(sql=rendered, views=tuple(dict.fromkeys(walker.views)))


class _Walker:
    """One pass over a statement tree: refuses what is not allowed, qualifies what is."""

    def __init__(self, catalog: SqlCatalog) -> None:
        self._catalog = catalog
        self.views: list[str] = []

    def visit(self, node: Any, ctes: frozenset[str]) -> None:
        if node is None or isinstance(node, str | int | float | Enum):
            return
        if isinstance(node, tuple | list):
            for item in node:
                self.visit(item, ctes)
            return
        if not isinstance(node, ast.Node):
            raise _Refusal(SYNTAX_NOT_ALLOWED, f"unexpected element {type(node).__name__}")
        kind = type(node).__name__
        if isinstance(node, ast.SelectStmt):
            self._select(node, ctes)
            return
        if kind not in allowlist.NODE_TYPES:
            raise _not_allowed(kind)
        if isinstance(node, ast.RangeVar):
            self._relation(node, ctes)
        elif isinstance(node, ast.FuncCall):
            self._function(node)
        elif isinstance(node, ast.TypeName):
            self._type(node)
        elif isinstance(node, ast.SQLValueFunction):
            op = getattr(node.op, "name", str(node.op))
            if op not in allowlist.VALUE_FUNCTIONS:
                what = op.removeprefix("SVFOP_")
                raise _Refusal(FUNCTION_NOT_ALLOWED, f"{what} is not allowed")
        elif isinstance(node, ast.A_Expr):
            self._operator(node)
        self._children(node, ctes)

    def _children(self, node: ast.Node, ctes: frozenset[str], skip: tuple[str, ...] = ()) -> None:
        for attribute in node:
            if attribute not in skip:
                self.visit(getattr(node, attribute), ctes)

    def _select(self, node: ast.SelectStmt, ctes: frozenset[str]) -> None:
        if node.intoClause is not None:
            raise _Refusal(SELECT_INTO, "SELECT ... INTO creates a table; only read")
        if node.lockingClause:
            raise _Refusal(LOCKING_CLAUSE, "FOR UPDATE/SHARE locks rows; only read")
        scope = ctes
        if node.withClause is not None:
            scope = self._with(node.withClause, ctes)
        self._children(node, scope, skip=("withClause",))

    def _with(self, clause: ast.WithClause, ctes: frozenset[str]) -> frozenset[str]:
        """Check each CTE with exactly the names Postgres lets it see: earlier siblings (all of
        them under RECURSIVE) and outer ones. A name seen too early would resolve to a real
        relation of that name, which must then pass the relation check instead."""
        entries = [c for c in clause.ctes or () if isinstance(c, ast.CommonTableExpr)]
        if len(entries) != len(clause.ctes or ()):
            raise _not_allowed("WITH entry")
        names = [str(c.ctename) for c in entries]
        for i, cte in enumerate(entries):
            if str(cte.ctename).startswith("pg_"):
                raise _Refusal(SYNTAX_NOT_ALLOWED, "a WITH name may not start with pg_")
            if not isinstance(cte.ctequery, ast.SelectStmt):
                kind = type(cte.ctequery).__name__
                raise _Refusal(WRITABLE_CTE, f"a WITH query must be a SELECT, not {kind}")
            visible = ctes | frozenset(names if clause.recursive else names[:i])
            self._children(cte, visible)
        return ctes | frozenset(names)

    def _relation(self, node: ast.RangeVar, ctes: frozenset[str]) -> None:
        schema = self._catalog.schema
        if node.catalogname is not None:
            raise _Refusal(SCHEMA_NOT_ALLOWED, "names qualified with a database are not allowed")
        if node.schemaname is None and node.relname in ctes:
            return
        if node.schemaname not in (None, schema):
            raise _Refusal(
                SCHEMA_NOT_ALLOWED,
                f"schema {node.schemaname!r} is not allowed; query the views of {schema!r}: "
                f"{self._views_text()}",
            )
        if node.relname not in self._catalog.views:
            raise _Refusal(
                RELATION_NOT_ALLOWED,
                f"{node.relname!r} is not an allowed view; the views are {self._views_text()}",
            )
        node.schemaname = schema
        self.views.append(str(node.relname))

    def _function(self, node: ast.FuncCall) -> None:
        parts = [getattr(p, "sval", None) for p in node.funcname or ()]
        own = self._catalog.functions
        schema = self._catalog.schema
        if len(parts) == 1 and parts[0] in allowlist.FUNCTIONS:
            return
        if len(parts) == 1 and parts[0] in own:
            # Qualified in the tree, so the name cannot resolve to anything but the schema's.
            node.funcname = (ast.String(sval=schema), ast.String(sval=parts[0]))
            return
        if len(parts) == 2 and parts[0] == "pg_catalog" and parts[1] in allowlist.FUNCTIONS:
            return
        if len(parts) == 2 and parts[0] == schema and parts[1] in own:
            return
        name = ".".join(str(p) for p in parts)
        raise _Refusal(FUNCTION_NOT_ALLOWED, f"function {name}() is not allowed")

    def _type(self, node: ast.TypeName) -> None:
        parts = [getattr(p, "sval", None) for p in node.names or ()]
        qualified_ok = len(parts) == 1 or (len(parts) == 2 and parts[0] == "pg_catalog")
        if node.setof or node.pct_type or not qualified_ok or parts[-1] not in allowlist.CAST_TYPES:
            name = ".".join(str(p) for p in parts)
            raise _Refusal(TYPE_NOT_ALLOWED, f"type {name} is not allowed")

    def _operator(self, node: ast.A_Expr) -> None:
        parts = [getattr(p, "sval", None) for p in node.name or ()]
        if len(parts) > 1 and parts[0] != "pg_catalog":
            name = ".".join(str(p) for p in parts)
            raise _Refusal(OPERATOR_NOT_ALLOWED, f"operator {name} is not allowed")

    def _views_text(self) -> str:
        return ", ".join(sorted(self._catalog.views)) or "(none)"


def _not_allowed(kind: str) -> _Refusal:
    if kind in _WRITES:
        return _Refusal(WRITABLE_CTE, f"{kind} inside a query is not allowed; only read")
    if kind == "ParamRef":
        return _Refusal(PARAMETER, "parameters ($1) are not allowed; write values inline")
    if kind == "IntoClause":
        return _Refusal(SELECT_INTO, "SELECT ... INTO creates a table; only read")
    if kind == "LockingClause":
        return _Refusal(LOCKING_CLAUSE, "FOR UPDATE/SHARE locks rows; only read")
    return _Refusal(SYNTAX_NOT_ALLOWED, f"{kind} is not allowed in a query")
