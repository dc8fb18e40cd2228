"""Execution accuracy on test-suite databases (Zhong et al. 2020), as pure functions.

For each example several random databases are built from the DDL (seeded by the gold query), respecting
primary keys, UNIQUE, NOT NULL, types and foreign keys, and seeded with the gold query's literals and
their neighbours. Prediction and gold must agree on every database.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from sqlray.evaluation.sandbox import DEFAULT_TIMEOUT_S, SandboxError, open_sandbox, run_query


@dataclass
class ColumnSpec:
    name: str
    kind: str  # int | real | text | date
    pk: bool = False
    unique: bool = False
    not_null: bool = False
    ref: tuple[str, str] | None = None  # (table, column)


@dataclass
class TableSpec:
    name: str
    columns: list[ColumnSpec] = field(default_factory=list)


def _kind(dtype: str) -> str:
    d = dtype.upper()
    if any(k in d for k in ("DATE", "TIME")):
        return "date"
    if any(k in d for k in ("INT", "BOOL", "BIT")):
        return "int"
    if any(k in d for k in ("REAL", "FLOA", "DOUB", "DEC", "NUM")):
        return "real"
    return "text"


def parse_schema(ddl: str) -> list[TableSpec]:
    """Tables in DDL order (parents are expected before children, as in CREATE order)."""
    tables = []
    for stmt in sqlglot.parse(ddl, read="mysql"):
        if not isinstance(stmt, exp.Create) or not isinstance(stmt.this, exp.Schema):
            continue
        t = TableSpec(stmt.this.this.name)
        for item in stmt.this.expressions:
            if isinstance(item, exp.ColumnDef):
                c = ColumnSpec(item.name, _kind(item.args["kind"].sql() if item.args.get("kind") else "TEXT"))
                for cons in item.constraints:
                    k = cons.kind
                    c.pk |= isinstance(k, exp.PrimaryKeyColumnConstraint)
                    c.unique |= isinstance(k, exp.UniqueColumnConstraint)
                    c.not_null |= isinstance(k, exp.NotNullColumnConstraint) and not k.args.get("allow_null")
                t.columns.append(c)
            elif isinstance(item, exp.ForeignKey):
                ref = item.args.get("reference")
                cols = [e.name for e in item.expressions]
                if ref is not None and cols:
                    rt = ref.this
                    rcols = [e.name for e in rt.expressions] if isinstance(rt, exp.Schema) else []
                    rname = rt.this.name if isinstance(rt, exp.Schema) else rt.name
                    for col in t.columns:
                        if col.name == cols[0]:
                            col.ref = (rname, rcols[0] if rcols else "")
            elif isinstance(item, exp.PrimaryKey):
                names = {e.name for e in item.expressions}
                for col in t.columns:
                    col.pk |= col.name in names
        tables.append(t)
    return tables


def gold_literals(sql: str) -> tuple[list[str], list[float]]:
    """String and numeric literals of the gold query (LIKE wildcards stripped)."""
    strings, numbers = [], []
    try:
        tree = sqlglot.parse_one(sql, read="mysql")
    except Exception:
        return strings, numbers
    for lit in tree.find_all(exp.Literal):
        if lit.is_string:
            strings.append(lit.this.strip("%").replace("%", "").replace("_", ""))
        else:
            try:
                numbers.append(float(lit.this))
            except ValueError:
                pass
    return [s for s in strings if s], numbers


def _date_like(s: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(s[:10])
    except ValueError:
        return None


class _ValuePools:
    """Values per column type: random ones mixed with the gold literals and their neighbours."""

    def __init__(self, rng: random.Random, strings: list[str], numbers: list[float]):
        self.rng = rng
        dates = [d for d in map(_date_like, strings) if d]
        self.dates = [d + dt.timedelta(days=k) for d in dates for k in (-1, 0, 1)]
        self.texts = [s for s in strings if not _date_like(s)]
        self.text_variants = [v for s in self.texts for v in (s, s + "x", "x" + s, s[:-1] + "#", s.upper())]
        self.ints = [int(n) + k for n in numbers for k in (-1, 0, 1)]
        hi = max([abs(int(n)) for n in numbers] + [100])
        self.int_range = (0, int(hi * 1.5) + 1)

    def value(self, kind: str):
        r = self.rng
        lit = r.random() < 0.5
        if kind == "int":
            return r.choice(self.ints) if lit and self.ints else r.randint(*self.int_range)
        if kind == "real":
            return float(r.choice(self.ints)) if lit and self.ints else round(r.uniform(*self.int_range), 2)
        if kind == "date":
            d = r.choice(self.dates) if lit and self.dates else dt.date(2018, 1, 1) + dt.timedelta(days=r.randrange(8 * 365))
            return d.isoformat()
        if lit and self.text_variants:
            return r.choice(self.text_variants)
        return r.choice(["alpha", "beta", "gamma", "delta", "omega", "서울", "부산", "kim", "lee", "park"]) + str(r.randrange(50))


def build_rows(tables: list[TableSpec], pools: _ValuePools, rng: random.Random) -> dict[str, list[dict]]:
    """Rows per table, parents first: several children per parent, some parents childless, duplicates and NULLs."""
    rows: dict[str, list[dict]] = {}
    for t in tables:
        n = rng.randint(12, 30)
        out, seen = [], {c.name: set() for c in t.columns if c.pk or c.unique}
        for i in range(n):
            row = {}
            for c in t.columns:
                if c.pk and c.kind == "int":
                    v = i + 1
                elif c.ref and rows.get(c.ref[0]):
                    parents = rows[c.ref[0]]
                    # children cluster on the first half of the parents, so the rest are childless
                    v = rng.choice(parents[: max(1, len(parents) // 2)])[c.ref[1] or c.name]
                elif not (c.not_null or c.pk) and rng.random() < 0.08:
                    v = None
                else:
                    v = pools.value(c.kind)
                if c.name in seen:
                    while v in seen[c.name]:
                        v = f"{v}_{rng.randrange(10**6)}" if c.kind == "text" else pools.value(c.kind)
                    seen[c.name].add(v)
                row[c.name] = v
            out.append(row)
        rows[t.name] = out
    return rows


def _fill(conn, rows: dict[str, list[dict]]) -> None:
    for table, trows in rows.items():
        if trows:
            cols = list(trows[0])
            conn.executemany(f'INSERT INTO "{table}" ({", ".join(chr(34) + c + chr(34) for c in cols)}) '
                             f'VALUES ({", ".join("?" for _ in cols)})', [tuple(r[c] for c in cols) for r in trows])
    conn.execute("PRAGMA query_only = ON")  # predictions can read, never write


def _has_order_by(sql: str) -> bool:
    try:
        return sqlglot.parse_one(sql, read="mysql").args.get("order") is not None
    except Exception:
        return bool(re.search(r"\border\s+by\b", sql, re.I))


def _norm(v):
    return round(v, 6) if isinstance(v, float) else v


def results_match(gold: list[tuple], pred: list[tuple], ordered: bool) -> bool:
    """Bag semantics unless ordered; any column permutation of the prediction may match."""
    if len(gold) != len(pred):
        return False
    if not gold:
        return True
    width = len(gold[0])
    if any(len(r) != width for r in pred):
        return False
    g = [tuple(map(_norm, r)) for r in gold]
    p = [tuple(map(_norm, r)) for r in pred]
    target = g if ordered else Counter(g)
    for perm in itertools.permutations(range(width)) if width <= 6 else [tuple(range(width))]:
        cand = [tuple(r[i] for i in perm) for r in p]
        if (cand if ordered else Counter(cand)) == target:
            return True
    return False


@dataclass(frozen=True)
class ExResult:
    ex: bool | None  # None: the gold itself fails, reported but not counted
    error: str | None


def _is_query(sql: str) -> bool:
    try:
        return isinstance(sqlglot.parse_one(sql, read="mysql"), (exp.Query, exp.Subquery))
    except Exception:
        return True  # let SQLite give the real error


def execution_match(pred: str, gold: str, ddl: str, n_databases: int = 3,
                    timeout_s: float = DEFAULT_TIMEOUT_S) -> ExResult:
    """True when ``pred`` returns the same result as ``gold`` on every test-suite database."""
    if not pred.strip():
        return ExResult(False, "empty prediction")
    if not _is_query(pred):
        return ExResult(False, "prediction is not a query (statements that write are never run)")
    try:
        tables = parse_schema(ddl)
    except Exception as e:
        return ExResult(None, f"context: DDL does not parse: {e}")
    strings, numbers = gold_literals(gold)
    ordered = _has_order_by(gold)
    seed = int(hashlib.sha256((gold + ddl).encode()).hexdigest()[:12], 16)
    for k in range(n_databases):
        rng = random.Random(seed + k)
        try:
            conn = open_sandbox(ddl)
        except SandboxError as e:
            return ExResult(None, str(e))
        try:
            _fill(conn, build_rows(tables, _ValuePools(rng, strings, numbers), rng))
            g = run_query(conn, gold, timeout_s)
            if not g.ok:
                return ExResult(None, f"gold error: {g.error}")
            p = run_query(conn, pred, timeout_s)
            if not p.ok:
                return ExResult(False, p.error)
            if not results_match(g.rows, p.rows, ordered):
                return ExResult(False, f"different result on test database {k}")
        except Exception as e:  # a bad row must not stop a run
            return ExResult(None, f"sandbox error: {type(e).__name__}: {e}")
        finally:
            conn.close()
    return ExResult(True, None)
