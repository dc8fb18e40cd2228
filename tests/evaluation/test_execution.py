import time

import pytest

from sqlray.evaluation.execution import execution_match, parse_schema, results_match
from sqlray.evaluation.sandbox import open_sandbox, run_query

DDL = """CREATE TABLE owners (
  owner_id INT PRIMARY KEY AUTO_INCREMENT,
  name VARCHAR(50) UNIQUE NOT NULL,
  city VARCHAR(30),
  joined DATE
);
CREATE TABLE pets (
  pet_id INT PRIMARY KEY AUTO_INCREMENT,
  owner_id INT NOT NULL,
  kind VARCHAR(20),
  age INT,
  FOREIGN KEY (owner_id) REFERENCES owners(owner_id)
);"""


def ex(pred, gold, ddl=DDL):
    return execution_match(pred, gold, ddl)


def test_schema_parse():
    t = {x.name: x for x in parse_schema(DDL)}
    assert [c.name for c in t["pets"].columns] == ["pet_id", "owner_id", "kind", "age"]
    assert t["owners"].columns[0].pk and t["owners"].columns[1].unique and t["owners"].columns[1].not_null
    assert t["pets"].columns[1].ref == ("owners", "owner_id")


def test_identical_and_equivalent_queries_match():
    assert ex("SELECT name FROM owners WHERE city = 'seoul'", "SELECT name FROM owners WHERE city = 'seoul';").ex
    assert ex("SELECT o.name FROM owners o WHERE o.owner_id IN (SELECT owner_id FROM pets)",
              "SELECT DISTINCT owners.name FROM owners JOIN pets ON pets.owner_id = owners.owner_id").ex


def test_order_matters_only_with_gold_order_by():
    assert ex("SELECT age FROM pets ORDER BY age DESC", "SELECT age FROM pets").ex
    assert not ex("SELECT age FROM pets ORDER BY age ASC", "SELECT age FROM pets ORDER BY age DESC").ex


def test_column_permutation_and_multisets():
    assert ex("SELECT kind, age FROM pets", "SELECT age, kind FROM pets").ex
    assert not ex("SELECT DISTINCT age FROM pets", "SELECT age FROM pets").ex  # duplicates count


def test_boundaries_are_told_apart():
    # neighbours of the literal (41, 42, 43) are in the test databases
    assert not ex("SELECT pet_id FROM pets WHERE age >= 42", "SELECT pet_id FROM pets WHERE age > 42").ex
    assert not ex("SELECT name FROM owners WHERE joined > '2021-03-04'",
                  "SELECT name FROM owners WHERE joined >= '2021-03-04'").ex
    assert not ex("SELECT name FROM owners WHERE name LIKE 'kim%'", "SELECT name FROM owners WHERE name LIKE '%kim%'").ex


def test_nulls_matter():
    assert not ex("SELECT COUNT(city) FROM owners", "SELECT COUNT(*) FROM owners").ex


def test_fk_fan_out_and_anti_join():
    assert not ex("SELECT COUNT(*) FROM owners", "SELECT COUNT(*) FROM owners JOIN pets ON pets.owner_id = owners.owner_id").ex
    assert not ex("SELECT name FROM owners", "SELECT name FROM owners WHERE owner_id NOT IN (SELECT owner_id FROM pets)").ex


def test_errors_are_wrong_and_gold_errors_not_counted():
    r = ex("SELEC name FROM owners", "SELECT name FROM owners")
    assert r.ex is False and r.error
    r = ex("SELECT nope FROM owners", "SELECT name FROM owners")
    assert r.ex is False and "no such column" in r.error
    r = ex("SELECT name FROM owners", "SELECT missing FROM owners")
    assert r.ex is None and r.error.startswith("gold error")


def test_destructive_prediction_changes_nothing():
    r = ex("DROP TABLE owners", "SELECT name FROM owners")
    assert r.ex is False
    conn = open_sandbox(DDL)
    conn.execute("INSERT INTO owners (name) VALUES ('a')")
    conn.execute("PRAGMA query_only = ON")
    assert not run_query(conn, "DELETE FROM owners", read=None).ok
    assert run_query(conn, "SELECT COUNT(*) FROM owners").rows == [(1,)]


def test_attach_is_denied(tmp_path):
    conn = open_sandbox(DDL)
    target = tmp_path / "x.db"
    r = run_query(conn, f"ATTACH DATABASE '{target}' AS x", read=None)
    assert not r.ok and not target.exists()


def test_infinite_recursive_cte_is_stopped_within_seconds():
    t = time.monotonic()
    r = execution_match("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c",
                        "SELECT COUNT(*) FROM owners", DDL, timeout_s=1.0)
    assert r.ex is False and "timeout" in r.error
    assert time.monotonic() - t < 5


@pytest.mark.parametrize("gold,pred,ordered,want", [
    ([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], False, True),
    ([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], True, False),
    ([(1, "a")], [("a", 1)], True, True),
    ([(1,), (1,)], [(1,)], False, False),
    ([(None,)], [(None,)], False, True),
    ([(1.0,)], [(1,)], False, True),
    ([], [], False, True),
])
def test_results_match(gold, pred, ordered, want):
    assert results_match(gold, pred, ordered) is want
