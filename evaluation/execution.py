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

    def __init__(self, rng: random.Random, strings: list[str], numbers: list[float], skew: bool = False):
        self.rng = rng
        # skewed databases (every other draw after the first ones left the gold empty): more rows, non-literal
        # text from two values (70/30), children on two parents: GROUP BY ... HAVING COUNT(*) > 18 has groups
        self.skew = skew
        self.few = [f"{rng.choice(['alpha', 'beta', 'gamma', 'delta'])}{i}" for i in range(2)] if skew else []
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
        if self.skew:  # one big group and one smaller: a threshold between them tells HAVINGs apart
            return self.few[0] if r.random() < 0.7 else self.few[1]
        return r.choice(["alpha", "beta", "gamma", "delta", "omega", "서울", "부산", "kim", "lee", "park"]) + str(r.randrange(50))


def parents_first(tables: list[TableSpec]) -> list[TableSpec]:
    """Tables ordered so that every referenced table comes before its children (DDL order where it
    already is; a child declared before its parent no longer finds no parents)."""
    by_name, done, out = {t.name: t for t in tables}, set(), []

    def visit(t: TableSpec, path: tuple[str, ...]) -> None:
        if t.name in done or t.name in path:  # a cycle: keep DDL order for the rest of it
            return
        for c in t.columns:
            if c.ref and c.ref[0] in by_name and c.ref[0] != t.name:
                visit(by_name[c.ref[0]], path + (t.name,))
        done.add(t.name)
        out.append(t)

    for t in tables:
        visit(t, ())
    return out


def _parent_pool(parents: list[dict], literals: set, skew: bool = False) -> list[dict]:
    """Children cluster on the first half of the parents (two of them when skewed; the rest stay childless)
    and also attach to every parent holding one of the gold's literals, so a join filtered on that literal
    has rows."""
    pool = parents[: 2 if skew else max(1, len(parents) // 2)]
    return pool + [p for p in parents[len(pool):] if any(v in literals for v in p.values())]


def _fk_value(c: ColumnSpec, rows: dict[str, list[dict]], literals: set, used: set, rng: random.Random,
              skew: bool = False):
    """A parent's key for ``c``; for a key that is also the primary key, an unused one (None: none left)."""
    key = c.ref[1] or c.name
    parents = rows[c.ref[0]]
    if c.pk or c.unique:
        free = [p[key] for p in parents if p.get(key) is not None and p[key] not in used]
        return rng.choice(free) if free else None
    return rng.choice(_parent_pool(parents, literals, skew)).get(key)


def build_rows(tables: list[TableSpec], pools: _ValuePools, rng: random.Random) -> dict[str, list[dict]]:
    """Rows per table, parents first: several children per parent, some parents childless, duplicates and NULLs."""
    rows: dict[str, list[dict]] = {}
    literals = set(pools.texts) | set(pools.ints) | {float(i) for i in pools.ints}
    for t in parents_first(tables):
        n = rng.randint(40, 80) if pools.skew else rng.randint(12, 30)
        out, seen = [], {c.name: set() for c in t.columns if c.pk or c.unique}
        for i in range(n):
            row = {}
            for c in t.columns:
                if c.ref and rows.get(c.ref[0]):
                    v = _fk_value(c, rows, literals, seen.get(c.name, set()), rng, pools.skew)
                    if v is None and (c.pk or c.not_null):
                        break  # every parent key is taken: this table has all the rows it can have
                elif c.pk and c.kind == "int":
                    v = i + 1
                elif not (c.not_null or c.pk) and rng.random() < 0.08:
                    v = None
                else:
                    v = pools.value(c.kind)
                if c.name in seen and not c.ref:
                    while v in seen[c.name]:
                        v = f"{v}_{rng.randrange(10**6)}" if c.kind == "text" else pools.value(c.kind)
                if c.name in seen:
                    seen[c.name].add(v)
                row[c.name] = v
            else:
                out.append(row)
                continue
            break
        rows[t.name] = out
    return rows


def _fill(conn, rows: dict[str, list[dict]]) -> None:
    for table, trows in rows.items():
        if trows:
            cols = list(trows[0])
            conn.executemany(f'INSERT INTO "{table}" ({", ".join(chr(34) + c + chr(34) for c in cols)}) '
                             f'VALUES ({", ".join("?" for _ in cols)})', [tuple(r[c] for c in cols) for r in trows])


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
    ex: bool | None  # None: the row is excluded from EX (its gold fails or never returns anything)
    error: str | None
    excluded: str | None = None  # why: "ddl", "gold_error", "gold_empty", "sandbox"


EXTRA_DRAWS = 6  # more databases drawn (seeded) while the gold has returned nothing on any


def _informative(rows: list[tuple]) -> bool:
    """A result that tells queries apart: some row with some non-NULL value."""
    return any(v is not None for r in rows for v in r)


def _is_query(sql: str) -> bool:
    try:
        return isinstance(sqlglot.parse_one(sql, read="mysql"), (exp.Query, exp.Subquery))
    except Exception:
        return True  # let SQLite give the real error


def _compare_on(k: int, ddl: str, tables, gold: str, pred: str, strings, numbers, seed: int, ordered: bool,
                timeout_s: float, n_first: int) -> tuple[ExResult | None, bool]:
    """One test database: (a final verdict or None to go on, whether the gold's result was informative).
    Every other database from ``n_first`` on is skewed (see _ValuePools)."""
    rng = random.Random(seed + k)
    try:
        conn = open_sandbox(ddl)
    except SandboxError as e:
        return ExResult(None, str(e), "ddl"), False
    try:
        skew = k >= n_first and (k - n_first) % 2 == 1  # extra draws alternate: as before, skewed, ...
        _fill(conn, build_rows(tables, _ValuePools(rng, strings, numbers, skew=skew), rng))
        g = run_query(conn, gold, timeout_s)
        if not g.ok:
            return ExResult(None, f"gold error: {g.error}", "gold_error"), False
        p = run_query(conn, pred, timeout_s)
        if not p.ok:
            return ExResult(False, p.error), False
        if not results_match(g.rows, p.rows, ordered):
            return ExResult(False, f"different result on test database {k}"), False
        return None, _informative(g.rows)
    except Exception as e:  # a bad row must not stop a run
        return ExResult(None, f"sandbox error: {type(e).__name__}: {e}", "sandbox"), False
    finally:
        conn.close()


def execution_match(pred: str, gold: str, ddl: str, n_databases: int = 3,
                    timeout_s: float = DEFAULT_TIMEOUT_S) -> ExResult:
    """True when ``pred`` returns the same result as ``gold`` on every test-suite database, and the gold
    returned something (non-empty, non-NULL) on at least one of them: databases are redrawn (seeded, up
    to EXTRA_DRAWS more, every other one skewed: big groups) until it does; a gold that stays empty excludes
    the row ("gold_empty"). The first ``n_databases`` + 1 are drawn as before skewing existed: rows they
    could judge keep their verdicts."""
    if not pred.strip():
        return ExResult(False, "empty prediction")
    if not _is_query(pred):
        return ExResult(False, "prediction is not a query (statements that write are never run)")
    try:
        tables = parse_schema(ddl)
    except Exception as e:
        return ExResult(None, f"context: DDL does not parse: {e}", "ddl")
    strings, numbers = gold_literals(gold)
    ordered = _has_order_by(gold)
    seed = int(hashlib.sha256((gold + ddl).encode()).hexdigest()[:12], 16)
    informative = False
    for k in range(n_databases + EXTRA_DRAWS):
        if k >= n_databases and informative:
            break
        verdict, info = _compare_on(k, ddl, tables, gold, pred, strings, numbers, seed, ordered, timeout_s,
                                    n_databases)
        if verdict is not None:
            return verdict
        informative |= info
    if not informative:
        return ExResult(None, f"gold returns no rows (or only NULL) on all {n_databases + EXTRA_DRAWS} "
                              "test databases: EX cannot tell predictions apart here", "gold_empty")
    return ExResult(True, None)
