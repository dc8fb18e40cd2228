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
from sqlray.training.schemagen import synth_databases
from sqlray.training.schemas import DATABASES, Column, Database, Table, database_ddl

HELDOUT_DB_ID = 1  # the game database, held out like the reference's db_id == 1
Row = dict


def _date(rng: random.Random) -> str:
    return (dt.date(2019, 1, 1) + dt.timedelta(days=rng.randrange(6 * 365))).isoformat()


def _num(rng: random.Random, lo: int, hi: int) -> int:
    n = rng.randint(lo, hi)
    return round(n, -3) if hi >= 100_000 else n  # money-like columns use round figures


def _tables(db: Database, *kinds: str) -> list[Table]:
    return [t for t in db.tables if all(t.col(k) for k in kinds)]


def _pick(db: Database, rng: random.Random, *kinds: str):
    """A random table having every kind, and a random column of each kind; None when there is none."""
    ts = _tables(db, *kinds)
    if not ts:
        return None
    t = rng.choice(ts)
    return (t, *[rng.choice(t.cols(k)) for k in kinds])


def _child_parent(db: Database) -> list[tuple[Table, Column, Table]]:
    by_name = {t.name: t for t in db.tables}
    return [(t, c, by_name[c.ref]) for t in db.tables for c in t.cols("fk") if c.ref in by_name]


def _label(t: Table) -> Column:
    return t.col("name") or t.col("pk")


def _w(c: Column, lang: str) -> str:
    """A column's words in a question (a key column is 'ID')."""
    return (c.ko if lang == "ko" else c.en) or "ID"


def _batchim(word: str) -> bool | None:
    ch = word.rstrip("'\" )")[-1:] if word else ""
    if "가" <= ch <= "힣":
        return (ord(ch) - 0xAC00) % 28 != 0
    if ch.isdigit():
        return ch in "013678"
    return None


def j(word: str, pair: str) -> str:
    """Word + Korean particle chosen by its last syllable: j('점수', '이가') -> '점수가'."""
    b = _batchim(word)
    a, c = pair[0], pair[1:]
    return word + (f"{a}({c})" if b is None else a if b else c)


def _cmp(rng):
    return rng.choice([(">", ["보다 큰", "초과인"], ["greater than", "more than", "above"]),
                       ("<", ["보다 작은", "미만인"], ["less than", "below", "under"])])


# Each shape returns (sql, korean question, english question) or None when the schema lacks it.
def s_count(db, rng):
    if not (p := _pick(db, rng, "cat")):
        return None
    t, c = p; v = rng.choice(c.values)
    return (f"SELECT COUNT(*) FROM {t.name} WHERE {c.name} = '{v}';",
            rng.choice([f"{j(c.ko, '이가')} '{v}'인 {t.ko}는 몇 개인가요?", f"'{v}' {c.ko}의 {t.ko} 수를 알려줘.",
                        f"{c.ko} '{v}'에 해당하는 {t.ko}의 개수는?"]),
            rng.choice([f"How many {t.en} have {c.en} '{v}'?", f"Count the {t.en} whose {c.en} is '{v}'.",
                        f"What is the number of {t.en} with {c.en} equal to '{v}'?"]))


def s_filter(db, rng):
    if not (p := _pick(db, rng, "num")):
        return None
    t, c = p; n = _num(rng, c.lo, c.hi); lab = _label(t); op, ko, en = _cmp(rng); k, e = rng.choice(ko), rng.choice(en)
    return (f"SELECT {lab.name} FROM {t.name} WHERE {c.name} {op} {n};",
            rng.choice([f"{j(c.ko, '이가')} {n}{k} {t.ko}의 {j(_w(lab, 'ko'), '을를')} 보여줘.",
                        f"{c.ko} {n}{k} {t.ko}들의 {_w(lab, 'ko')} 목록"]),
            rng.choice([f"List the {_w(lab, 'en')} of {t.en} with {c.en} {e} {n}.",
                        f"Which {t.en} have a {c.en} {e} {n}? Show their {_w(lab, 'en')}."]))


def s_like(db, rng):
    if not (p := _pick(db, rng, "name")):
        return None
    t, c = p; v = rng.choice(c.values)
    part = v[: max(1, len(v) // 2)] if rng.random() < 0.5 else v[-max(1, len(v) // 2):]
    quoted = f"'{part}'"
    return (f"SELECT {c.name} FROM {t.name} WHERE {c.name} LIKE '%{part}%';",
            rng.choice([f"{c.ko}에 {j(quoted, '이가')} 들어가는 {t.ko}를 찾아줘.",
                        f"{c.ko}에 '{part}' 문자열이 포함된 {t.ko}의 {j(c.ko, '을를')} 알려줘."]),
            rng.choice([f"Find {t.en} whose {c.en} contains '{part}'.", f"Which {t.en} have '{part}' in their {c.en}?"]))


def s_between(db, rng):
    if not (p := _pick(db, rng, "num")):
        return None
    t, c = p; a, b = sorted((_num(rng, c.lo, c.hi), _num(rng, c.lo, c.hi))); lab = _label(t)
    return (f"SELECT {lab.name} FROM {t.name} WHERE {c.name} BETWEEN {a} AND {b};",
            rng.choice([f"{j(c.ko, '이가')} {a}에서 {b} 사이인 {t.ko}의 {j(_w(lab, 'ko'), '은는')}?",
                        f"{c.ko} {a} 이상 {b} 이하인 {t.ko}의 {_w(lab, 'ko')}을 알려줘."]),
            rng.choice([f"Which {t.en} have {c.en} between {a} and {b}? Give the {_w(lab, 'en')}.",
                        f"Show the {_w(lab, 'en')} of {t.en} whose {c.en} is from {a} to {b}."]))


def s_topk(db, rng):
    if not (p := _pick(db, rng, "num")):
        return None
    t, c = p; k = rng.randint(1, 10); lab = _label(t); desc = rng.random() < 0.5
    ko, en = ("가장 높은", "highest") if desc else ("가장 낮은", "lowest")
    return (f"SELECT {lab.name} FROM {t.name} ORDER BY {c.name} {'DESC' if desc else 'ASC'} LIMIT {k};",
            rng.choice([f"{j(c.ko, '이가')} {ko} {t.ko} {k}개의 {j(_w(lab, 'ko'), '을를')} 보여줘.",
                        f"{c.ko} 기준 {'상위' if desc else '하위'} {k}개 {t.ko}의 {_w(lab, 'ko')}"]),
            rng.choice([f"Show the {_w(lab, 'en')} of the {k} {t.en} with the {en} {c.en}.",
                        f"Top {k} {t.en} by {c.en}{'' if desc else ' ascending'}: list the {_w(lab, 'en')}."]))


def s_having(db, rng):
    if not (p := _pick(db, rng, "cat")):
        return None
    t, c = p; k = rng.randint(1, 20)
    return (f"SELECT {c.name}, COUNT(*) FROM {t.name} GROUP BY {c.name} HAVING COUNT(*) > {k};",
            rng.choice([f"{j(t.ko, '이가')} {k}개보다 많은 {c.ko}별 개수를 구해줘.",
                        f"{c.ko}별 {t.ko} 수가 {k}를 넘는 경우만 보여줘."]),
            rng.choice([f"For each {c.en} with more than {k} {t.en}, give the {c.en} and the count.",
                        f"Which {c.en} values have over {k} {t.en}? Show each with its count."]))


_FNS = [("AVG", "평균", "average"), ("MAX", "최대", "maximum"), ("MIN", "최소", "minimum"), ("SUM", "합계", "total")]


def s_agg(db, rng):
    if not (p := _pick(db, rng, "num", "cat")):
        return None
    t, n, c = p; v = rng.choice(c.values); fn, ko, en = rng.choice(_FNS)
    return (f"SELECT {fn}({n.name}) FROM {t.name} WHERE {c.name} = '{v}';",
            rng.choice([f"{j(c.ko, '이가')} '{v}'인 {t.ko}의 {n.ko} {j(ko, '은는')}?",
                        f"'{v}' {c.ko} {t.ko}들의 {n.ko} {j(ko, '을를')} 계산해줘."]),
            rng.choice([f"What is the {en} {n.en} of {t.en} with {c.en} '{v}'?",
                        f"Compute the {en} {n.en} over {t.en} whose {c.en} is '{v}'."]))


def s_distinct(db, rng):
    if not (p := _pick(db, rng, "num", "cat")):
        return None
    t, n, c = p; x = _num(rng, n.lo, n.hi)
    return (f"SELECT DISTINCT {c.name} FROM {t.name} WHERE {n.name} < {x};",
            rng.choice([f"{j(n.ko, '이가')} {x}보다 작은 {t.ko}의 서로 다른 {c.ko} 목록을 알려줘.",
                        f"{n.ko} {x} 미만인 {t.ko}에 나오는 {c.ko} 종류는?"]),
            rng.choice([f"List the distinct {c.en} values of {t.en} with {n.en} below {x}.",
                        f"Which different {c.en} values appear among {t.en} whose {n.en} is under {x}?"]))


def s_date(db, rng):
    if not (p := _pick(db, rng, "date")):
        return None
    t, c = p; d = _date(rng); lab = _label(t)
    op, ko, en = rng.choice([(">=", "이후", ["on or after", "since"]), ("<", "이전", ["before", "earlier than"])])
    return (f"SELECT {lab.name} FROM {t.name} WHERE {c.name} {op} '{d}';",
            rng.choice([f"{j(c.ko, '이가')} {d} {ko}인 {t.ko}의 {j(_w(lab, 'ko'), '을를')} 알려줘.",
                        f"{c.ko} 기준 {d} {ko} {t.ko}의 {_w(lab, 'ko')}"]),
            f"Which {t.en} have a {c.en} {rng.choice(en)} {d}? Show the {_w(lab, 'en')}.")


def s_null(db, rng):
    if not (p := _pick(db, rng, "opt")):
        return None
    t, c = p; lab = _label(t); missing = rng.random() < 0.5
    return (f"SELECT {lab.name} FROM {t.name} WHERE {c.name} IS {'NULL' if missing else 'NOT NULL'};",
            rng.choice([f"{j(c.ko, '이가')} {'없는' if missing else '있는'} {t.ko}의 {j(_w(lab, 'ko'), '을를')} 보여줘.",
                        f"{c.ko} 정보가 {'비어 있는' if missing else '입력된'} {t.ko}의 {_w(lab, 'ko')}"]),
            rng.choice([f"Which {t.en} {'have no' if missing else 'have a'} {c.en}? Give the {_w(lab, 'en')}.",
                        f"List the {_w(lab, 'en')} of {t.en} whose {c.en} is {'missing' if missing else 'filled in'}."]))


def s_in(db, rng):
    if not (p := _pick(db, rng, "cat")):
        return None
    t, c = p
    if len(c.values) < 3:
        return None
    vs = rng.sample(c.values, 2); lab = _label(t); neg = rng.random() < 0.4
    lst = ", ".join(f"'{v}'" for v in vs)
    return (f"SELECT {lab.name} FROM {t.name} WHERE {c.name} {'NOT IN' if neg else 'IN'} ({lst});",
            rng.choice([f"{j(c.ko, '이가')} '{vs[0]}' 또는 '{vs[1]}'{'이 아닌' if neg else '인'} {t.ko}의 {_w(lab, 'ko')}을 보여줘.",
                        f"{c.ko} '{vs[0]}', '{vs[1]}' {'제외' if neg else '중 하나인'} {t.ko}의 {_w(lab, 'ko')}"]),
            rng.choice([f"Show the {_w(lab, 'en')} of {t.en} whose {c.en} is {'neither' if neg else 'either'} "
                        f"'{vs[0]}' {'nor' if neg else 'or'} '{vs[1]}'.",
                        f"Which {t.en} have a {c.en} {'not ' if neg else ''}in ('{vs[0]}', '{vs[1]}')?"
                        f" Give the {_w(lab, 'en')}."]))


def s_group_order(db, rng):
    if not (p := _pick(db, rng, "cat")):
        return None
    t, c = p; k = rng.randint(1, 3)
    return (f"SELECT {c.name}, COUNT(*) FROM {t.name} GROUP BY {c.name} ORDER BY COUNT(*) DESC LIMIT {k};",
            rng.choice([f"{t.ko}가 가장 많은 {c.ko} {k}개와 그 개수를 알려줘.", f"{c.ko}별 {t.ko} 수 상위 {k}개는?"]),
            rng.choice([f"Which {k} {c.en} values have the most {t.en}? Show the counts.",
                        f"Top {k} {c.en} by number of {t.en}, with the count."]))


def s_group_agg(db, rng):
    if not (p := _pick(db, rng, "num", "cat")):
        return None
    t, n, c = p; fn, ko, en = rng.choice(_FNS)
    return (f"SELECT {c.name}, {fn}({n.name}) FROM {t.name} GROUP BY {c.name};",
            rng.choice([f"{c.ko}별 {t.ko}의 {n.ko} {j(ko, '을를')} 구해줘.", f"{t.ko}의 {n.ko} {ko}, {c.ko}별로 보여줘."]),
            rng.choice([f"For each {c.en}, what is the {en} {n.en} of {t.en}?",
                        f"Show the {en} {n.en} of {t.en} per {c.en}."]))


def s_max_row(db, rng):
    if not (p := _pick(db, rng, "num")):
        return None
    t, c = p; lab = _label(t); fn, ko, en = rng.choice([("MAX", "가장 큰", "largest"), ("MIN", "가장 작은", "smallest")])
    return (f"SELECT {lab.name} FROM {t.name} WHERE {c.name} = (SELECT {fn}({c.name}) FROM {t.name});",
            rng.choice([f"{j(c.ko, '이가')} {ko} {t.ko}의 {j(_w(lab, 'ko'), '은는')}?", f"{c.ko} 값이 {ko} {t.ko}를 찾아 {_w(lab, 'ko')}을 보여줘."]),
            rng.choice([f"Which {t.en} has the {en} {c.en}? Give its {_w(lab, 'en')}.",
                        f"Find the {_w(lab, 'en')} of the {t.en} with the {en} {c.en}."]))


def s_nested(db, rng):
    if not (p := _pick(db, rng, "num")):
        return None
    t, c = p; lab = _label(t)
    op, ko, en = rng.choice([(">", "평균보다 높은", "above the average"), ("<", "평균보다 낮은", "below the average")])
    return (f"SELECT {lab.name} FROM {t.name} WHERE {c.name} {op} (SELECT AVG({c.name}) FROM {t.name});",
            rng.choice([f"{j(c.ko, '이가')} {ko} {t.ko}의 {j(_w(lab, 'ko'), '을를')} 보여줘.", f"{c.ko} {ko} {t.ko} 목록({_w(lab, 'ko')})"]),
            rng.choice([f"Show the {_w(lab, 'en')} of {t.en} whose {c.en} is {en}.",
                        f"Which {t.en} have {c.en} {en}? List the {_w(lab, 'en')}."]))


def _join_parts(db, rng, need: str):
    pairs = [(ch, fk, pa) for ch, fk, pa in _child_parent(db) if (ch.col(need) if need else True)]
    return rng.choice(pairs) if pairs else None


def s_join(db, rng):
    if not (p := _join_parts(db, rng, "num")) or not p[2].col("name"):
        return None
    child, fk, parent = p; pk = parent.col("pk"); pn = parent.col("name"); v = rng.choice(pn.values)
    m = rng.choice(child.cols("num"))
    return (f"SELECT c.{m.name} FROM {child.name} c JOIN {parent.name} p ON c.{fk.name} = p.{pk.name} "
            f"WHERE p.{pn.name} = '{v}';",
            rng.choice([f"{j(pn.ko, '이가')} '{v}'인 {parent.ko}의 {child.ko} {j(m.ko, '을를')} 모두 보여줘.",
                        f"'{v}' {parent.ko}에 딸린 {child.ko}들의 {m.ko}"]),
            rng.choice([f"Show the {m.en} of all {child.en} for the {fk.en} whose {pn.en} is '{v}'.",
                        f"List the {m.en} of {child.en} belonging to the {parent.en} named '{v}'."]))


def s_join_count(db, rng):
    if not (p := _join_parts(db, rng, "")):
        return None
    child, fk, parent = p; pk = parent.col("pk"); lab = _label(parent)
    return (f"SELECT p.{lab.name}, COUNT(*) FROM {parent.name} p JOIN {child.name} c ON c.{fk.name} = p.{pk.name} "
            f"GROUP BY p.{lab.name};",
            rng.choice([f"{parent.ko}별 {child.ko} 수를 {_w(lab, 'ko')}과 함께 알려줘.", f"각 {parent.ko}의 {child.ko} 개수는?"]),
            rng.choice([f"How many {child.en} does each {fk.en} have? Show the {_w(lab, 'en')} and the count.",
                        f"Count the {child.en} per {fk.en}, by {_w(lab, 'en')}."]))


def s_join_having(db, rng):
    if not (p := _join_parts(db, rng, "")):
        return None
    child, fk, parent = p; pk = parent.col("pk"); lab = _label(parent); k = rng.randint(2, 5)
    return (f"SELECT {lab.name} FROM {parent.name} WHERE {pk.name} IN "
            f"(SELECT {fk.name} FROM {child.name} GROUP BY {fk.name} HAVING COUNT(*) >= {k});",
            rng.choice([f"{child.ko}가 {k}개 이상인 {parent.ko}의 {j(_w(lab, 'ko'), '을를')} 보여줘.",
                        f"{child.ko} 기록이 {k}건 이상 있는 {parent.ko}는?"]),
            rng.choice([f"Which {parent.en} have at least {k} {child.en}? Give the {_w(lab, 'en')}.",
                        f"List the {_w(lab, 'en')} of {parent.en} with {k} or more {child.en}."]))


def s_anti(db, rng):
    if not (p := _join_parts(db, rng, "")):
        return None
    child, fk, parent = p; pk = parent.col("pk"); lab = _label(parent)
    return (f"SELECT {lab.name} FROM {parent.name} WHERE {pk.name} NOT IN (SELECT {fk.name} FROM {child.name});",
            rng.choice([f"{child.ko} 기록이 없는 {parent.ko}의 {j(_w(lab, 'ko'), '을를')} 알려줘.",
                        f"{j(child.ko, '이가')} 하나도 없는 {parent.ko}는?"]),
            rng.choice([f"Which {parent.en} have no {child.en}? Give the {_w(lab, 'en')}.",
                        f"List the {_w(lab, 'en')} of {parent.en} without any {child.en}."]))


def s_join3(db, rng):
    """A child with two parents in the schema: both parents' labels for the child's rows of a category."""
    by_child: dict[str, list] = {}
    for ch, fk, pa in _child_parent(db):
        by_child.setdefault(ch.name, []).append((ch, fk, pa))
    cands = [v for v in by_child.values() if len(v) >= 2 and v[0][0].col("cat")]
    if not cands:
        return None
    (child, f1, p1), (_, f2, p2) = rng.sample(rng.choice(cands), 2)
    c = rng.choice(child.cols("cat")); v = rng.choice(c.values); l1, l2 = _label(p1), _label(p2)
    return (f"SELECT a.{l1.name}, b.{l2.name} FROM {child.name} c JOIN {p1.name} a ON c.{f1.name} = a.{p1.col('pk').name} "
            f"JOIN {p2.name} b ON c.{f2.name} = b.{p2.col('pk').name} WHERE c.{c.name} = '{v}';",
            f"{j(c.ko, '이가')} '{v}'인 {child.ko}의 {p1.ko} {_w(l1, 'ko')}과 {p2.ko} {_w(l2, 'ko')}을 보여줘.",
            f"For {child.en} with {c.en} '{v}', show the {f1.en} {_w(l1, 'en')} and the {f2.en} {_w(l2, 'en')}.")


SHAPES: dict[str, Callable] = {
    "count": s_count, "filter": s_filter, "like": s_like, "between": s_between, "order_limit": s_topk,
    "group_having": s_having, "aggregate": s_agg, "distinct": s_distinct, "date": s_date, "null_check": s_null,
    "in_list": s_in, "group_order_limit": s_group_order, "group_aggregate": s_group_agg, "max_row": s_max_row,
    "nested": s_nested, "join": s_join, "join_group": s_join_count, "join_having": s_join_having,
    "anti_join": s_anti, "join_three": s_join3,
}


SPLIT_SCHEMAS = {"train": 290, "validation": 20, "test_unseen_schemas": 30}  # synthetic schemas per split
SPLIT_ROWS = {"validation": 200, "test": 200, "test_unseen_schemas": 300, "test_unseen_db": 112}


def schema_splits(seed: int = 42) -> dict[str, list[Database]]:
    """Schemas by split: validation and test_unseen_schemas get schemas no training row uses; the
    held-out game database is test_unseen_db; the nine hand-written databases are training schemas."""
    synth = synth_databases(sum(SPLIT_SCHEMAS.values()), seed)
    out, i = {}, 0
    for name, n in SPLIT_SCHEMAS.items():
        out[name], i = synth[i:i + n], i + n
    out["train"] = [db for db in DATABASES if db.db_id != HELDOUT_DB_ID] + out["train"]
    out["test_unseen_db"] = [db for db in DATABASES if db.db_id == HELDOUT_DB_ID]
    return out


def database_rows(db: Database, rng: random.Random, variants: int) -> list[Row]:
    """Rows for one database: ``variants`` draws per shape, each in Korean and English; gold SQL that
    fails on SQLite and repeated questions are dropped."""
    context = database_ddl(db)
    conn = open_sandbox(context)
    rows, seen = [], set()
    for shape, fn in SHAPES.items():
        for _ in range(variants):
            out = fn(db, rng)
            if out is None:
                break
            sql, ko, en = out
            if not run_query(conn, sql).ok:
                continue
            for lang, q in (("ko", ko), ("en", en)):
                if q not in seen:
                    seen.add(q)
                    rows.append({"db_id": db.db_id, "context": context, "question": q, "answer": sql,
                                 "shape": shape, "lang": lang, "domain": db.domain})
    conn.close()
    return rows


def generate_splits(seed: int = 42, variants: int = 2) -> dict[str, list[Row]]:
    rng = random.Random(seed)
    schemas = schema_splits(seed)
    rows = {name: [r for db in dbs for r in database_rows(db, rng, variants if name != "test_unseen_db" else 8)]
            for name, dbs in schemas.items()}
    for part in rows.values():
        rng.shuffle(part)
    # test: new questions on training schemas, whose gold SQL no training row has on that schema
    train, test, held = [], [], set()
    for r in rows["train"]:
        key = (r["db_id"], r["answer"])
        if key in held or (len(test) < SPLIT_ROWS["test"] and rng.random() < 0.1):
            held.add(key)
            test.append(r)
        else:
            train.append(r)
    train_keys = {(r["db_id"], r["answer"]) for r in train}
    test = [r for r in test if (r["db_id"], r["answer"]) not in train_keys]
    splits = {"train": train, "validation": rows["validation"], "test": test,
              "test_unseen_schemas": rows["test_unseen_schemas"], "test_unseen_db": rows["test_unseen_db"]}
    for name, part in splits.items():
        if name in SPLIT_ROWS:
            del part[SPLIT_ROWS[name]:]
        for i, r in enumerate(part):
            r["id"] = f"{name}-{i:05d}"
    return splits


def write_dataset(out_dir: str | Path, seed: int = 42) -> dict[str, int]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, part in generate_splits(seed).items():
        atomic_write_jsonl(out / f"{name}.jsonl", part)
        counts[name] = len(part)
    return counts


# Share of entity names, attribute names and category pools made up in the base's extra schemas. Off: at
# 0.3 (run L, README) the base copied only the first token or two of a new name (`matu` for `matches`),
# scored 0 on the game database all the same and fell from 0.87 to 0.65 on unseen schemas; with common
# English words instead (run N, `words="english"`) 0.03 on the game database and 0.83 -> 0.67 on unseen schemas.
NONCE = 0.0


def write_base_dataset(data: str | Path, out_dir: str | Path, n_schemas: int = 2400, seed: int = 42,
                       nonce: float = NONCE, words: str = "madeup") -> dict[str, int]:
    """The base model's training set (`make tiny-base`): the bundled train split plus ``n_schemas`` more
    synthetic schemas (one draw per shape, Korean and English: ~33 rows each), so a long run sees each row
    about once instead of memorising 299 schemas. The new schemas continue the bundled splits' seeded
    sequence; any whose DDL a bundled split has is dropped, and so is any new row whose question and SQL
    a held-out split has (a new schema may reuse a held-out schema's table, and with it its questions).
    ``nonce`` of their names are new words from ``words`` (schemagen.novel_word: made-up, or common
    English words the vocabulary lacks; a name the model must copy from the DDL; off by default, see
    NONCE). The held-out splits are copied unchanged (the run's validation loss and scores)."""
    import shutil

    from tqdm import tqdm

    from sqlray.text2sql import load_text2sql

    src, out = Path(data), Path(out_dir)
    bundled = load_text2sql(str(src))
    seen = {r["context"] for split in bundled.values() for r in split}
    held = {(r["question"], r["answer"]) for name, split in bundled.items() if name != "train" for r in split}
    first = sum(SPLIT_SCHEMAS.values())
    extra = synth_databases(first + n_schemas, seed, nonce=nonce, words=words)[first:]
    rng = random.Random(seed + 1)
    new = [r for db in tqdm(extra, desc="base schemas", unit="schema")
           for r in database_rows(db, rng, variants=1)
           if r["context"] not in seen and (r["question"], r["answer"]) not in held]
    rows = list(bundled["train"]) + new
    rng.shuffle(rows)
    for i, r in enumerate(rows):
        r["id"] = f"base-{i:06d}"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(out / "train.jsonl", rows)
    for name in bundled:
        if name != "train":
            shutil.copyfile(src / f"{name}.jsonl", out / f"{name}.jsonl")
    return {"train": len(rows), "new_schemas": len({r["context"] for r in new}), "new_rows": len(new),
            "nonce_rows": sum(r["domain"].endswith("+nonce") for r in new)}


def write_domain_dataset(out_dir: str | Path, db_id: int = HELDOUT_DB_ID, seed: int = 42) -> dict[str, int]:
    """A shifted task for LoRA and tuning: only database ``db_id`` (never seen by the base run), split
    60/20/20. Adapting a base that scores 0 on this schema is where rank and alpha matter."""
    rng = random.Random(seed)
    db = next(db for db in DATABASES if db.db_id == db_id)
    rows = database_rows(db, rng, variants=30)
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


def datasheet(splits) -> dict[str, dict]:
    """Per split: rows, distinct schemas, rows by language and by SQL shape."""
    from collections import Counter

    return {name: {"rows": len(rows), "schemas": len({r["context"] for r in rows}),
                   "by_lang": dict(Counter(r.get("lang", "?") for r in rows)),
                   "by_shape": dict(sorted(Counter(r.get("shape", "?") for r in rows).items()))}
            for name, rows in splits.items()}


def datasheet_table(sheet: dict[str, dict]) -> str:
    """A markdown table: one row per shape, one column per split (plus totals and languages)."""
    names = list(sheet)
    shapes = sorted({s for v in sheet.values() for s in v["by_shape"]})
    head = "| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    rows = [("rows", [sheet[n]["rows"] for n in names]), ("schemas", [sheet[n]["schemas"] for n in names]),
            ("Korean / English", [f"{sheet[n]['by_lang'].get('ko', 0)} / {sheet[n]['by_lang'].get('en', 0)}"
                                  for n in names])]
    rows += [(s, [sheet[n]["by_shape"].get(s, 0) for n in names]) for s in shapes]
    return head + "\n".join(f"| {k} | " + " | ".join(str(x) for x in v) + " |" for k, v in rows)
