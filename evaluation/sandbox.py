"""Throwaway SQLite sandboxes: the only place sqlray ever executes SQL.

Every database lives in memory and dies with its connection. Queries run under four bounds, because
the input is hostile (a model's prediction, or a user's file of them):
- an authorizer allow-list: reading tables, calling functions (not load_extension), recursive CTEs;
  everything else (PRAGMA, writes, DDL, ATTACH, VACUUM INTO, transactions) is denied;
- SQLite's own limits: no string or blob over MAX_VALUE_BYTES (``zeroblob(9e8)``, ``printf('%.*c', ...)``
  and string-doubling CTEs fail at once instead of allocating), short SQL, shallow expressions;
- a hard heap limit for this process's SQLite (sorts and hash tables of a cross join hit it and fail);
- a deadline, checked by a progress handler inside the running query (asyncio or thread timeouts cannot
  stop SQLite), and a byte budget while the result is fetched.
"""
from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

DEFAULT_TIMEOUT_S = 2.0
_PROGRESS_EVERY = 2_000  # SQLite VM instructions between deadline checks
MAX_VALUE_BYTES = 1_000_000  # the longest string or blob any query may build
MAX_RESULT_BYTES = 32 * 2**20  # what one result may hold once fetched into Python
HEAP_LIMIT_BYTES = 256 * 2**20  # SQLite's heap in a scoring process (sqlite3_hard_heap_limit64)
_LIMITS = {sqlite3.SQLITE_LIMIT_LENGTH: MAX_VALUE_BYTES, sqlite3.SQLITE_LIMIT_SQL_LENGTH: 100_000,
           sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 200, sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 50,
           sqlite3.SQLITE_LIMIT_ATTACHED: 0, sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 1_000,
           sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 32, sqlite3.SQLITE_LIMIT_COLUMN: 64, sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH: 1}
# Authorizer actions a read-only query needs; everything else is denied.
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_DENIED_FUNCTIONS = {"load_extension"}
_heap_limited = False


class SandboxError(RuntimeError):
    """The schema itself could not be created (bad DDL)."""


@dataclass(frozen=True)
class QueryResult:
    rows: list[tuple] | None
    error: str | None
    columns: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


def _read_only(action: int, arg1, arg2, _db, _trigger) -> int:
    if action not in _ALLOWED:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _limit_heap(conn: sqlite3.Connection) -> None:
    """Process-wide, once: the pragma can only lower the limit, so a later, larger setting is a no-op."""
    global _heap_limited
    if not _heap_limited:
        conn.execute(f"PRAGMA hard_heap_limit = {HEAP_LIMIT_BYTES}")
        _heap_limited = True


@lru_cache(maxsize=4096)
def to_sqlite(sql: str, read: str = "mysql") -> tuple[str, ...]:
    """Transpile (MySQL-flavoured) SQL to SQLite statements; raises SqlglotError if unparsable."""
    return tuple(s for s in sqlglot.transpile(sql, read=read, write="sqlite") if s.strip())


def open_sandbox(ddl: str, read: str = "mysql") -> sqlite3.Connection:
    """A fresh in-memory database with ``ddl``'s schema (foreign keys enforced), still writable: the
    caller fills it; the first ``run_query`` seals it read-only."""
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    _limit_heap(conn)
    for k, v in _LIMITS.items():
        conn.setlimit(k, v)
    for name in ("printf", "format"):
        conn.create_function(name, -1, _bounded_printf, deterministic=True)
    conn.execute("PRAGMA foreign_keys = ON")
    try:
        statements = to_sqlite(ddl, read)
    except SqlglotError as e:
        conn.close()
        raise SandboxError(f"context: DDL does not parse as {read}: {e}") from e
    try:
        for stmt in statements:
            conn.execute(stmt)
    except sqlite3.Error as e:
        conn.close()
        raise SandboxError(f"context: DDL failed in SQLite: {e}") from e
    return conn


def seal(conn: sqlite3.Connection) -> None:
    """From now on the connection only reads (PRAGMA query_only as well as the authorizer)."""
    conn.set_authorizer(None)  # sealing again (every run_query does) must not be denied by the authorizer
    conn.execute("PRAGMA query_only = ON")
    conn.set_authorizer(_read_only)


def _row_bytes(row: tuple) -> int:
    return sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in row) + 16


def _fetch(cur: sqlite3.Cursor, max_rows: int) -> tuple[list[tuple] | None, str | None]:
    """Row by row, so the byte budget is checked before the next (up to 1 MB x columns) row arrives."""
    rows, size = [], 0
    for row in cur:
        size += _row_bytes(row)
        rows.append(row)
        if len(rows) > max_rows:
            return None, f"result larger than {max_rows} rows"
        if size > MAX_RESULT_BYTES:
            return None, f"result larger than {MAX_RESULT_BYTES // 2**20} MiB"
    return rows, None


_WIDTH = re.compile(r"%[-+ 0#,!]*(\d*)(?:\.(\d*))?")
_printf_helper: sqlite3.Connection | None = None


def _bounded_printf(fmt, *args):
    """SQLite's printf/format with its widths bounded: one call with a width of 10^9 formats for seconds
    inside a single VM step, where neither the deadline nor the length limit can stop it. Widths up to
    MAX_VALUE_BYTES go to the real printf (a private connection with no tables)."""
    global _printf_helper
    if fmt is None:
        return None
    if _printf_helper is None:
        _printf_helper = sqlite3.connect(":memory:", check_same_thread=False)
        _printf_helper.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    widths = [int(w) for m in _WIDTH.finditer(str(fmt)) for w in m.groups() if w]
    if "*" in str(fmt):  # a '*' width is any argument, read as SQLite reads it (floats and numeric text too)
        widths += [abs(_printf_helper.execute("SELECT CAST(? AS INTEGER)", (a,)).fetchone()[0] or 0) for a in args]
    if any(w > MAX_VALUE_BYTES for w in widths):
        raise ValueError(f"printf width over {MAX_VALUE_BYTES}")
    marks = ", ".join("?" for _ in range(len(args) + 1))
    return _printf_helper.execute(f"SELECT printf({marks})", (fmt, *args)).fetchone()[0]


@lru_cache(maxsize=4096)
def _is_read_only_query(statement: str) -> bool:
    try:
        return isinstance(sqlglot.parse_one(statement, read="sqlite"), (exp.Query, exp.Subquery))
    except Exception:
        return True  # let SQLite (and the authorizer) give the real error


def run_query(conn: sqlite3.Connection, sql: str, timeout_s: float = DEFAULT_TIMEOUT_S,
              read: str | None = "mysql", max_rows: int = 100_000) -> QueryResult:
    """Run one query under a hard deadline. Errors are returned, never raised."""
    try:
        statements = to_sqlite(sql, read) if read else (sql,)
    except SqlglotError as e:
        return QueryResult(None, f"parse error: {str(e).splitlines()[0][:200]}")
    except Exception as e:  # sqlglot can raise non-SqlglotError on odd input
        return QueryResult(None, f"parse error: {type(e).__name__}: {e}")
    if len(statements) != 1:
        return QueryResult(None, f"expected one statement, got {len(statements)}")
    if not _is_read_only_query(statements[0]):
        return QueryResult(None, "not a query: only SELECT statements are run")
    deadline = time.monotonic() + timeout_s
    try:
        seal(conn)
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, _PROGRESS_EVERY)
        cur = conn.execute(statements[0])
        rows, error = _fetch(cur, max_rows)
        cols = tuple(d[0] for d in cur.description or ())
    except sqlite3.OperationalError as e:
        if "interrupted" in str(e):
            return QueryResult(None, f"timeout after {timeout_s}s")
        return QueryResult(None, f"sqlite error: {e}")
    except MemoryError:
        return QueryResult(None, f"sqlite error: out of memory (heap limit {HEAP_LIMIT_BYTES // 2**20} MiB)")
    except (sqlite3.Error, OverflowError, ValueError) as e:
        return QueryResult(None, f"sqlite error: {type(e).__name__}: {e}")
    finally:
        conn.set_progress_handler(None, 0)
    if error:
        return QueryResult(None, error)
    return QueryResult(rows, None, cols)
