"""Throwaway SQLite sandboxes: the only place sqlray ever executes SQL.

Every database lives in memory and dies with its connection, so a destructive prediction
(DROP, DELETE, UPDATE) changes nothing for the next row. ATTACH is denied so a query cannot
reach a file, and a progress handler enforces a hard deadline: it interrupts a query that is
already running inside SQLite, which asyncio or thread timeouts cannot do.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot.errors import SqlglotError

DEFAULT_TIMEOUT_S = 2.0
_PROGRESS_EVERY = 2_000  # SQLite VM instructions between deadline checks


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


def _deny_attach(action: int, *_args) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


@lru_cache(maxsize=4096)
def to_sqlite(sql: str, read: str = "mysql") -> tuple[str, ...]:
    """Transpile (MySQL-flavoured) SQL to SQLite statements; raises SqlglotError if unparsable."""
    return tuple(s for s in sqlglot.transpile(sql, read=read, write="sqlite") if s.strip())


def open_sandbox(ddl: str, read: str = "mysql") -> sqlite3.Connection:
    """A fresh in-memory database with ``ddl``'s schema (foreign keys enforced)."""
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
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
    conn.set_authorizer(_deny_attach)
    return conn


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
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, _PROGRESS_EVERY)
    try:
        cur = conn.execute(statements[0])
        rows = cur.fetchmany(max_rows + 1)
        cols = tuple(d[0] for d in cur.description or ())
    except sqlite3.OperationalError as e:
        if "interrupted" in str(e):
            return QueryResult(None, f"timeout after {timeout_s}s")
        return QueryResult(None, f"sqlite error: {e}")
    except (sqlite3.Error, OverflowError, ValueError) as e:
        return QueryResult(None, f"sqlite error: {type(e).__name__}: {e}")
    finally:
        conn.set_progress_handler(None, 0)
    if len(rows) > max_rows:
        return QueryResult(None, f"result larger than {max_rows} rows")
    return QueryResult(rows, None, cols)
