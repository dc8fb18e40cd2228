"""Seeded generator for the bundled Text2SQL dataset (reference schema: db_id, context, question, answer).

`sqlray data generate` writes data/text2sql/{train,validation,test,test_unseen_db}.jsonl.
Every gold query is executed on SQLite at generation time; rows that fail are not written.
"""
from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Callable

from sqlray.core import atomic_write_jsonl
from sqlray.evaluation.sandbox import open_sandbox, run_query
from sqlray.training.schemas import DATABASES, Database, Table, database_ddl

HELDOUT_DB_ID = 1  # the game database, held out like the reference's db_id == 1
Row = dict


def _date(rng: random.Random) -> str:
    return (dt.date(2019, 1, 1) + dt.timedelta(days=rng.randrange(6 * 365))).isoformat()


def _num(rng: random.Random, lo: int, hi: int) -> int:
    n = rng.randint(lo, hi)
    return round(n, -3) if hi >= 100_000 else n  # money-like columns use round figures


def _tables(db: Database, *kinds: str) -> list[Table]:
    return [t for t in db.tables if all(t.col(k) for k in kinds)]


def _child_parent(db: Database) -> list[tuple[Table, Table]]:
    return [(t, db.table(t.col("fk").ref)) for t in db.tables if t.col("fk")]


def _label(t: Table):
    return t.col("name") or t.col("pk")


# Each shape returns (sql, korean question, english question) or None when the schema lacks it.
def s_count(db, rng):
    t = rng.choice(_tables(db, "cat")); c = t.col("cat"); v = rng.choice(c.values)
    return (f"SELECT COUNT(*) FROM {t.name} WHERE {c.name} = '{v}';",
            rng.choice([f"{c.ko}이(가) '{v}'인 {t.ko}는 몇 개인가요?", f"'{v}' {c.ko}의 {t.ko} 수를 알려줘."]),
            rng.choice([f"How many {t.en} have {c.en} '{v}'?", f"Count the {t.en} whose {c.en} is '{v}'."]))


def s_filter(db, rng):
    t = rng.choice(_tables(db, "num")); c = t.col("num"); n = _num(rng, c.lo, c.hi); lab = _label(t)
    op, ko_op, en_op = rng.choice([(">", "보다 큰", "greater than"), ("<", "보다 작은", "less than")])
    return (f"SELECT {lab.name} FROM {t.name} WHERE {c.name} {op} {n};",
            f"{c.ko}이(가) {n}{ko_op} {t.ko}의 {lab.ko or 'ID'}을(를) 보여줘.",
            f"List the {lab.en or 'id'} of {t.en} with {c.en} {en_op} {n}.")


def s_like(db, rng):
    t = rng.choice(_tables(db, "name")); c = t.col("name"); v = rng.choice(c.values)
    part = v[: max(2, len(v) // 2)] if rng.random() < 0.5 else v[-max(2, len(v) // 2):]
    return (f"SELECT {c.name} FROM {t.name} WHERE {c.name} LIKE '%{part}%';",
            f"{c.ko}에 '{part}'이(가) 들어가는 {t.ko}를 찾아줘.",
            f"Find {t.en} whose {c.en} contains '{part}'.")


def s_between(db, rng):
    t = rng.choice(_tables(db, "num")); c = t.col("num"); a, b = sorted((_num(rng, c.lo, c.hi), _num(rng, c.lo, c.hi)))
    lab = _label(t)
    return (f"SELECT {lab.name} FROM {t.name} WHERE {c.name} BETWEEN {a} AND {b};",
            f"{c.ko}이(가) {a}에서 {b} 사이인 {t.ko}의 {lab.ko or 'ID'}은(는)?",
            f"Which {t.en} have {c.en} between {a} and {b}? Give the {lab.en or 'id'}.")


def s_topk(db, rng):
    t = rng.choice(_tables(db, "num")); c = t.col("num"); k = rng.randint(1, 10); lab = _label(t)
    desc = rng.random() < 0.5
    return (f"SELECT {lab.name} FROM {t.name} ORDER BY {c.name} {'DESC' if desc else 'ASC'} LIMIT {k};",
            f"{c.ko}이(가) {'가장 높은' if desc else '가장 낮은'} {t.ko} {k}개의 {lab.ko or 'ID'}을(를) 보여줘.",
            f"Show the {lab.en or 'id'} of the {k} {t.en} with the {'highest' if desc else 'lowest'} {c.en}.")


def s_having(db, rng):
    t = rng.choice(_tables(db, "cat")); c = t.col("cat"); k = rng.randint(1, 20)
    return (f"SELECT {c.name}, COUNT(*) FROM {t.name} GROUP BY {c.name} HAVING COUNT(*) > {k};",
            f"{t.ko}가 {k}개보다 많은 {c.ko}별 개수를 구해줘.",
            f"For each {c.en} with more than {k} {t.en}, give the {c.en} and the count.")


def s_agg(db, rng):
    t = rng.choice(_tables(db, "num", "cat")); n = t.col("num"); c = t.col("cat"); v = rng.choice(c.values)
    fn, ko, en = rng.choice([("AVG", "평균", "average"), ("MAX", "최대", "maximum"), ("MIN", "최소", "minimum"),
                             ("SUM", "합계", "total")])
    return (f"SELECT {fn}({n.name}) FROM {t.name} WHERE {c.name} = '{v}';",
            f"{c.ko}이(가) '{v}'인 {t.ko}의 {n.ko} {ko}은(는)?",
            f"What is the {en} {n.en} of {t.en} with {c.en} '{v}'?")


def s_distinct(db, rng):
    t = rng.choice(_tables(db, "num", "cat")); n = t.col("num"); c = t.col("cat"); x = _num(rng, n.lo, n.hi)
    return (f"SELECT DISTINCT {c.name} FROM {t.name} WHERE {n.name} < {x};",
            f"{n.ko}이(가) {x}보다 작은 {t.ko}의 서로 다른 {c.ko} 목록을 알려줘.",
            f"List the distinct {c.en} values of {t.en} with {n.en} below {x}.")


def s_date(db, rng):
    t = rng.choice(_tables(db, "date")); c = t.col("date"); d = _date(rng); lab = _label(t)
    op, ko_op, en_op = rng.choice([(">=", "이후", "on or after"), ("<", "이전", "before")])
    return (f"SELECT {lab.name} FROM {t.name} WHERE {c.name} {op} '{d}';",
            f"{c.ko}이(가) {d} {ko_op}인 {t.ko}의 {lab.ko or 'ID'}을(를) 알려줘.",
            f"Which {t.en} have a {c.en} {en_op} {d}? Show the {lab.en or 'id'}.")


def s_join(db, rng):
    pairs = _child_parent(db)
    if not pairs:
        return None
    child, parent = rng.choice(pairs); fk = child.col("fk"); pk = parent.col("pk"); pn = parent.col("name")
    v = rng.choice(pn.values); m = child.col("num")
    return (f"SELECT c.{m.name} FROM {child.name} c JOIN {parent.name} p ON c.{fk.name} = p.{pk.name} "
            f"WHERE p.{pn.name} = '{v}';",
            f"{pn.ko}이(가) '{v}'인 {parent.ko}의 {child.ko} {m.ko}을(를) 모두 보여줘.",
            f"Show the {m.en} of all {child.en} for the {fk.en} whose {pn.en} is '{v}'.")


def s_anti(db, rng):
    pairs = _child_parent(db)
    if not pairs:
        return None
    child, parent = rng.choice(pairs); fk = child.col("fk"); pk = parent.col("pk"); lab = _label(parent)
    return (f"SELECT {lab.name} FROM {parent.name} WHERE {pk.name} NOT IN (SELECT {fk.name} FROM {child.name});",
            f"{child.ko} 기록이 없는 {parent.ko}의 {lab.ko}을(를) 알려줘.",
            f"Which {parent.en} have no {child.en}? Give the {lab.en}.")


def s_nested(db, rng):
    t = rng.choice(_tables(db, "num")); c = t.col("num"); lab = _label(t)
    op, ko, en = rng.choice([(">", "평균보다 높은", "above the average"), ("<", "평균보다 낮은", "below the average")])
    return (f"SELECT {lab.name} FROM {t.name} WHERE {c.name} {op} (SELECT AVG({c.name}) FROM {t.name});",
            f"{c.ko}이(가) {ko} {t.ko}의 {lab.ko or 'ID'}을(를) 보여줘.",
            f"Show the {lab.en or 'id'} of {t.en} whose {c.en} is {en}.")


SHAPES: dict[str, Callable] = {
    "count": s_count, "filter": s_filter, "like": s_like, "between": s_between, "order_limit": s_topk,
    "group_having": s_having, "aggregate": s_agg, "distinct": s_distinct, "date": s_date, "join": s_join,
    "anti_join": s_anti, "nested": s_nested,
}


def generate_rows(seed: int = 42, variants: int = 30) -> list[Row]:
    """All rows for all databases; gold SQL that fails on SQLite is dropped."""
    rng = random.Random(seed)
    rows: list[Row] = []
    seen: set[str] = set()
    for db in DATABASES:
        context = database_ddl(db)
        conn = open_sandbox(context)
        for shape, fn in SHAPES.items():
            for _ in range(variants):
                out = fn(db, rng)
                if out is None:
                    break
                sql, ko, en = out
                if not run_query(conn, sql).ok:
                    continue
                for lang, q in (("ko", ko), ("en", en)):
                    if q in seen:
                        continue
                    seen.add(q)
                    rows.append({"db_id": db.db_id, "context": context, "question": q, "answer": sql,
                                 "shape": shape, "lang": lang, "domain": db.domain})
        conn.close()
    return rows


def split_rows(rows: list[Row], seed: int = 42, n_val: int = 200, n_test: int = 200,
               n_unseen: int = 112) -> dict[str, list[Row]]:
    """test_unseen_db: the held-out database; test/validation: held-out questions on training schemas."""
    rng = random.Random(seed)
    unseen = [r for r in rows if r["db_id"] == HELDOUT_DB_ID]
    seen = [r for r in rows if r["db_id"] != HELDOUT_DB_ID]
    rng.shuffle(unseen)
    rng.shuffle(seen)
    splits = {"validation": seen[:n_val], "test": seen[n_val:n_val + n_test], "train": seen[n_val + n_test:],
              "test_unseen_db": unseen[:n_unseen]}
    for name, part in splits.items():
        for i, r in enumerate(part):
            r["id"] = f"{name}-{i:05d}"
    return splits


def write_dataset(out_dir: str | Path, seed: int = 42) -> dict[str, int]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, part in split_rows(generate_rows(seed), seed).items():
        atomic_write_jsonl(out / f"{name}.jsonl", part)
        counts[name] = len(part)
    return counts


def write_domain_dataset(out_dir: str | Path, db_id: int = HELDOUT_DB_ID, seed: int = 42) -> dict[str, int]:
    """A shifted task for LoRA and tuning: only database ``db_id`` (never seen by the base run), split
    60/20/20. Adapting a base that scores 0 on this schema is where rank and alpha matter."""
    rng = random.Random(seed)
    rows = [r for r in generate_rows(seed) if r["db_id"] == db_id]
    rng.shuffle(rows)
    n = len(rows)
    splits = {"train": rows[: int(0.6 * n)], "validation": rows[int(0.6 * n): int(0.8 * n)], "test": rows[int(0.8 * n):]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        for i, r in enumerate(part):
            r["id"] = f"{name}-{i:05d}"
        atomic_write_jsonl(out / f"{name}.jsonl", part)
    return {k: len(v) for k, v in splits.items()}
