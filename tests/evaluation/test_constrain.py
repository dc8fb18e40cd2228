"""Schema-constrained decoding: every gold query of the shipped splits passes its own row's grammar, names
from elsewhere do not, and generation under the grammar writes only the DDL's names."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sqlray.evaluation.constrain import foreign_words, schema_names, sql_grammar, table_columns
from sqlray.evaluation.grammar_decoding import GrammarCache

DATA = Path(__file__).resolve().parents[2] / "data" / "text2sql"

DDL = ("CREATE TABLE t_clients (\n  client_no INT PRIMARY KEY AUTO_INCREMENT,\n  clientName VARCHAR(100) NOT NULL,\n"
       "  city VARCHAR(30)\n);\n\nCREATE TABLE t_orders (\n  order_no INT PRIMARY KEY,\n  client_no INT,\n  amount INT,\n"
       "  FOREIGN KEY (client_no) REFERENCES t_clients(client_no)\n);")


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def cache(tok):
    return GrammarCache(tok, len(tok))


def _accepts(cache, tok, ddl: str, sql: str, question: str | None = None) -> bool:
    import xgrammar as xgr

    m = xgr.GrammarMatcher(cache.compile(sql_grammar(ddl, question)))
    ids = tok(sql, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return all(m.accept_token(i) for i in ids)


def test_schema_names_are_the_ddls_tables_and_columns():
    names = ["t_clients", "client_no", "clientName", "city", "t_orders", "order_no", "amount"]
    assert schema_names(DDL) == (names, names)
    assert table_columns(DDL) == {"t_clients": ["client_no", "clientName", "city"],
                                  "t_orders": ["order_no", "client_no", "amount"]}  # FOREIGN KEY is no column
    # Keywords where a name stands are names; quoted names keep their spaces (and must be quoted in SQL).
    odd = 'CREATE TABLE logs (\n  id INT,\n  date DATE,\n  `key` TEXT,\n  "unit price" REAL\n);'
    bare, quoted = schema_names(odd)
    assert bare == ["logs", "id", "date", "key", "unit", "price"] and "unit price" in quoted


def test_every_shipped_gold_query_passes_its_rows_grammar(cache, tok):
    rows = [json.loads(line) for split in ("test", "test_unseen_schemas", "test_unseen_db")
            for line in (DATA / f"{split}.jsonl").read_text().splitlines()]
    refused = [r["answer"] for r in rows if not _accepts(cache, tok, r["context"], r["answer"], r["question"])]
    assert len(rows) >= 600 and refused == []


@pytest.mark.parametrize("sql, ok", [
    ("SELECT clientName FROM t_clients WHERE city = 'Seoul';", True),
    ("SELECT c.clientName, COUNT(*) FROM t_clients c JOIN t_orders o ON c.client_no = o.client_no "
     "GROUP BY c.clientName HAVING COUNT(*) >= 2 ORDER BY COUNT(*) DESC LIMIT 3;", True),
    ("select city from t_clients where clientName like '%김%'", True),  # lower-case keywords, Korean in a literal
    ("SELECT name FROM customers;", False),          # memorised names from another schema
    ("SELECT client_name FROM t_clients;", False),   # right idea, wrong naming style
    ("SELECT clientNamecity FROM t_clients;", False),  # two names glued into one word
])
def test_grammar_accepts_this_schemas_sql_and_refuses_other_names(cache, tok, sql, ok):
    assert _accepts(cache, tok, DDL, sql) is ok
    assert (foreign_words(sql, DDL) == []) is ok


@pytest.mark.parametrize("sql, ok", [
    ("SELECT t_clients FROM t_clients;", False),     # a table where a column stands
    ("SELECT city FROM city;", False),               # a column where a table stands
    ("SELECT witH FROM t_clients;", False),          # a keyword in mixed case, where a column stands
    ("SELECT amount WHERE amount > 1 FROM t_orders;", False),  # clauses out of order
    ("SELECT city fRoM t_clients;", False),          # keywords in mixed case
    ("SELECT COUNT(*);", False),                     # no FROM
    ("SELECT city FROM t_clients JOIN JOIN t_orders;", False),
    ("SELECT city\n  FROM t_clients\n  WHERE city IS NOT NULL\n  ORDER BY city ASC LIMIT 1 OFFSET 1;", True),
    ("SELECT city FROM t_clients WHERE client_no IN (SELECT client_no FROM t_orders) UNION SELECT city FROM "
     "t_clients;", True),
    ("SELECT city FROM t_clients WHERE city =                   'x';", False),  # whitespace runs are bounded
    ("SELECT amount FROM t_clients;", False),        # one table: only its own columns (amount is t_orders')
    ("SELECT city FROM t_clients ORDER BY amount;", False),
    ("SELECT t_orders.city FROM t_orders o JOIN t_clients c ON o.client_no = c.client_no;", False),
    ("SELECT city, amount FROM t_clients JOIN t_orders USING (client_no);", True),  # a join: either table's
    ("SELECT amount FROM t_orders WHERE client_no IN (SELECT client_no FROM t_clients WHERE city = 'x');", True),
    # Correlated subqueries: the outer table's columns, qualified, inside a one-table SELECT.
    ("SELECT city FROM t_clients c WHERE EXISTS (SELECT order_no FROM t_orders o WHERE o.client_no = c.client_no "
     "AND amount > 1);", True),
    ("SELECT city FROM t_clients WHERE client_no IN (SELECT client_no FROM t_orders WHERE t_orders.amount > "
     "t_clients.client_no);", True),
    ("SELECT client_no, COUNT(*) AS n FROM t_orders GROUP BY client_no ORDER BY n DESC;", True),  # an alias, used
    ("SELECT amount - -1 FROM t_orders WHERE city LIKE 'a!%%' ESCAPE '!';", False),  # city: not t_orders'
    ("SELECT amount - -1 FROM t_orders WHERE order_no LIKE 'a!%%' ESCAPE '!';", True),
    ("SELECT amount FROM t_orders WHERE amount--1 > 0;", False),  # "--" would comment out the rest
])
def test_grammar_knows_the_clause_structure(cache, tok, sql, ok):
    """Names only where names stand: a table after FROM / JOIN, a column where an expression stands,
    keywords in their clauses and in order (the lexical check, ``foreign_words``, cannot tell)."""
    assert _accepts(cache, tok, DDL, sql) is ok


PLAYERS = "CREATE TABLE players (id INT PRIMARY KEY, name VARCHAR(50), level INT);"


@pytest.fixture(scope="module")
def parrot(parrot_model):
    from sqlray.evaluation.generate import load_for_generation

    return load_for_generation(str(parrot_model))


ODD = 'CREATE TABLE logs (\n  id INT,\n  date DATE,\n  `key` TEXT,\n  "unit price" REAL\n);'


@pytest.mark.parametrize("sql, ok", [
    ("SELECT T1.date, Count(*) FROM logs AS T1 GROUP BY T1.date;", True),  # Spider's aliases, any-case keywords
    ('SELECT "unit price" FROM logs WHERE `key` = \'a b\';', True),       # quoted names, spaces kept
    ("SELECT id FROM logs WHERE date > DATE('now', 'start of month');", True),  # SQLite's date strings
    ('SELECT id FROM logs WHERE "unit price" > 1000;', True),              # 1,000 in the question
    ('SELECT id FROM logs WHERE "unit price" > 2000;', False),            # a number the question did not write
    ("SELECT unit FROM logs;", False),                                    # half of a quoted name
    ("SELECT id FROM logs WHERE date > DATE('yesterday');", False),
    ("SELECT id FROM logs WHERE `key` = 'now';", False),  # date strings only as a function's argument
])
def test_grammar_takes_real_world_sql(cache, tok, sql, ok):
    assert _accepts(cache, tok, ODD, sql, "Logs with key 'a b' and a unit price over 1,000 this month?") is ok


@pytest.mark.parametrize("sql, ok", [
    ("SELECT COUNT(*) FROM t_clients WHERE city = '서울';", True),        # a prefix of 서울에서 (particle dropped)
    ("SELECT clientName FROM t_clients WHERE clientName LIKE '%Kim%';", True),  # a quoted span, as a LIKE pattern
    ("SELECT clientName FROM t_clients WHERE clientName LIKE '%Kim%' ESCAPE '!';", True),
    ("SELECT city FROM t_orders o JOIN t_clients c ON o.client_no = c.client_no WHERE amount > 250 LIMIT 1;", True),
    ("SELECT COUNT(*) FROM t_clients WHERE city = '부산';", False),       # a value the request never wrote
    ("SELECT clientName FROM t_clients WHERE clientName LIKE '%Lee%';", False),
    ("SELECT city FROM t_orders WHERE amount > 25;", False),              # a number it did not write
    ("SELECT city FROM t_orders WHERE amount > 2500;", False),            # 250 and 0 may not touch
])
def test_literals_must_copy_the_question(cache, tok, sql, ok):
    question = "서울에서 주문 금액이 250 넘는 'Kim' 고객 도시는?"
    assert _accepts(cache, tok, DDL, sql, question) is ok


def _prefix_follows(cache, ddl: str, text: str) -> bool:
    """``text`` is a prefix of some SQL its grammar accepts (generation may stop at its token limit)."""
    import xgrammar as xgr

    return xgr.GrammarMatcher(cache.compile(sql_grammar(ddl))).accept_string(text)


def test_constrained_generation_names_only_the_ddl(parrot, cache):
    from sqlray.evaluation.generate import generate_sql

    model, tok = parrot
    rows = [{"id": i, "context": PLAYERS, "question": q} for i, q in enumerate(["How many players?", "Top level"])]
    free = generate_sql(model, tok, rows, max_new_tokens=12, batch_size=2)
    bound = generate_sql(model, tok, rows, max_new_tokens=12, batch_size=2, constrain=True)
    assert [f["raw"] for f in free] == ["customers" * 12] * 2
    # "customers" is refused; the SQL starts as a SELECT must and the parrot's other favourite, the players
    # table's column "name", is where the grammar lets a column stand.
    for b in bound:
        assert b["raw"].startswith("SELECT") and "customers" not in b["raw"], b["raw"]
        assert "name" in b["raw"].split("FROM")[0] and foreign_words(b["raw"], PLAYERS) == []
        assert _prefix_follows(cache, PLAYERS, b["raw"]), b["raw"]


def test_grammar_applies_per_row_in_a_mixed_batch(parrot, cache):
    """One generate() with rows on two schemas beside a free row: each constrained row follows its own
    grammar, and a row that ends early (stop string) must not have its padding trip its grammar."""
    from sqlray.evaluation.generate import generate_batch
    from sqlray.text2sql import make_prompt

    model, tok = parrot
    prompts = [make_prompt(PLAYERS, "How many players?")] * 3 + [make_prompt(DDL, "How many clients?")]
    # The third row's grammar refuses both of the parrot's favourites, leaving the newline: with the prompt's
    # last newline it makes the stop string "\n\n", so that row ends after one token and pads while others go on.
    newlines = 'root ::= ("\\n" | "level")*'
    alone, _ = generate_batch(model, tok, prompts[:1], 12, [sql_grammar(PLAYERS)])
    texts, counts = generate_batch(model, tok, prompts, 12, [sql_grammar(PLAYERS), None, newlines, sql_grammar(DDL)])
    assert texts[0] == alone[0] and texts[1] == "customers" * 12 and counts[1] == 12
    assert texts[2] == "\n" and counts[2] == 1, (texts[2], counts[2])
    texts[2] = texts.pop()
    assert _prefix_follows(cache, PLAYERS, texts[0]) and _prefix_follows(cache, DDL, texts[2]), texts
    assert "name" not in texts[2].replace("clientName", "") and not _prefix_follows(cache, PLAYERS, texts[2])


def test_hostile_ddl_and_questions_always_give_a_grammar_that_compiles(cache):
    """Quotes, backslashes, control characters, U+2028, emoji, NULs, escape look-alikes: every request's
    grammar compiles (a failure would cost the request its constraint), and a 400-word question stays cheap."""
    import random
    import time

    alphabet = list("abc'\"\\`\t\n\r\x00\x01 %_-()[]{};:,.?!") + ["서울에서", "é", "\u2028", "\ufeff", "😀", "\\u0041"]
    rng = random.Random(0)
    for _ in range(200):
        question = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        ddl = "CREATE TABLE " + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        cache.compile(sql_grammar(ddl, question))  # raises on a grammar xgrammar cannot parse
    # The request decides the grammar's size: a 20,000-character Korean run without spaces, 5,000 words
    # and a 2,000-column DDL (the serve input limit) stay small and quick.
    for ddl, question in [(DDL, "가" * 20_000), (DDL, " ".join(f"w{i}" for i in range(5000))),
                          ("CREATE TABLE t (" + ", ".join(f"c{i} INT" for i in range(2000)) + ");", "q")]:
        t = time.perf_counter()
        grammar = sql_grammar(ddl, question)
        cache.compile(grammar)
        assert len(grammar) < 400_000 and time.perf_counter() - t < 5, (len(grammar), time.perf_counter() - t)


COMMENTED = ("CREATE TABLE t (\n  -- surrogate id\n  id INT PRIMARY KEY,\n  name TEXT -- display name, may be null\n"
             ");\nCREATE TABLE `Users` (`Id` INTEGER, `DisplayName` TEXT, `key` TEXT);\n"
             "CREATE TABLE [order items] (qty INTEGER);\nCREATE TABLE bare (a, b);")


@pytest.mark.parametrize("sql, ok", [
    ("SELECT id FROM t;", True), ("SELECT may FROM t;", False),        # comments name nothing
    ("SELECT `DisplayName` FROM `Users` WHERE key = 'x';", True),       # quoted tables; a quoted `key` column
    ('SELECT "DisplayName" FROM [Users];', True), ("SELECT id FROM Users;", False),
    ("SELECT qty FROM [order items];", True), ("SELECT qty FROM order;", False),  # spaces: quoted only
    ("SELECT a FROM bare;", True), ("SELECT _ FROM bare;", False),     # untyped columns: any of the DDL's
])
def test_grammar_reads_ddl_as_users_write_it(cache, tok, sql, ok):
    assert _accepts(cache, tok, COMMENTED, sql) is ok


HARD = ("CREATE TABLE t (note TEXT DEFAULT '--', a, b DECIMAL(10, 2), PRIMARY KEY (a, b));\n"
        "CREATE TABLE s (id INT, timetable TEXT, x INT);\nCREATE TABLE [dbo].[Users] ([Id] INT, [Name] NVARCHAR(50));\n"
        'CREATE TABLE [a"b] (q INT);')


@pytest.mark.parametrize("sql, ok", [
    ("SELECT a FROM t;", True), ("SELECT b FROM t;", True),          # '--' in a DEFAULT is no comment
    ("SELECT x FROM s;", True), ("SELECT timetable FROM s;", True),  # "timetable" starts no table
    ("SELECT x FROM TEXT;", False),
    ("SELECT Name FROM Users;", True), ("SELECT Name FROM dbo;", False),  # schema-qualified: the table
    ("SELECT note FROM t JOIN s ON t.a = s.id;", True),
    ("SELECT NVARCHAR FROM t JOIN s ON t.a = s.id;", False),         # joins: columns, not any DDL word
    ('SELECT q FROM [a"b];', True), ('SELECT q FROM "a"b";', False),  # no quoting that breaks the name
])
def test_grammar_reads_hostile_ddl_exactly(cache, tok, sql, ok):
    assert _accepts(cache, tok, HARD, sql) is ok


def test_ddl_reading_stays_linear_on_hostile_input():
    import time

    for ddl in ["[" * 20_000, "CREATE TABLE t " + "([" * 9_990, "CREATE TABLE t (" * 1_250, "'--" * 6_000]:
        t = time.perf_counter()
        sql_grammar(ddl, "q")
        table_columns(ddl)
        assert time.perf_counter() - t < 1.5, (ddl[:20], time.perf_counter() - t)


def test_many_tables_fall_back_to_any_column_and_stay_cheap(cache, tok):
    """Up to MAX_TABLE_GRAMMARS tables each get their own SELECT rules; beyond, a one-table SELECT may name
    any column, so the grammar (compiled while other requests wait) does not grow with tables x columns."""
    import time

    from sqlray.evaluation.constrain import MAX_TABLE_GRAMMARS

    def ddl(n: int) -> str:
        return "\n".join(f"CREATE TABLE t{i} (" + ", ".join(f"c{i}_{j} INT" for j in range(120)) + ");"
                         for i in range(n))

    for n, bound in [(MAX_TABLE_GRAMMARS, True), (MAX_TABLE_GRAMMARS + 1, False)]:
        t = time.perf_counter()
        assert _accepts(cache, tok, ddl(n), "SELECT c1_5 FROM t0;") is not bound  # c1_5 is t1's
        assert _accepts(cache, tok, ddl(n), "SELECT c0_5 FROM t0 WHERE c0_7 > 1;")
        assert time.perf_counter() - t < 10, (n, time.perf_counter() - t)
