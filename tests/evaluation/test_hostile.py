"""Hostile SQL can't hurt: blob/printf bombs, runaway CTEs, cross joins, PRAGMAs, writes, ATTACH,
VACUUM INTO and load_extension are all scored wrong, quickly, within a bounded amount of memory."""
import json
import subprocess
import sys

from sqlray.evaluation.execution import execution_match
from sqlray.evaluation.sandbox import open_sandbox, run_query

DDL = """CREATE TABLE owners (owner_id INT PRIMARY KEY, name VARCHAR(50), city VARCHAR(30));
CREATE TABLE pets (pet_id INT PRIMARY KEY, owner_id INT, kind VARCHAR(20), age INT,
  FOREIGN KEY (owner_id) REFERENCES owners(owner_id));"""
GOLD = "SELECT name FROM owners WHERE city = 'seoul'"

HOSTILE = [
    "SELECT zeroblob(900000000) FROM owners",
    "SELECT randomblob(900000000) FROM owners",
    "SELECT printf('%.*c', 900000000, 'x') FROM owners",
    "SELECT length(printf('%.*c', 2000000000, 'x'))",
    "SELECT printf('%.*c', 1000000000.0, 'x') FROM owners",  # a float width, read as SQLite reads it
    "SELECT printf('%.*c', '1000000000', 'x') FROM owners",  # numeric text too
    "SELECT replace(hex(zeroblob(400000000)), '0', 'xx')",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c",
    "WITH RECURSIVE c(s) AS (SELECT 'ab' UNION ALL SELECT s || s FROM c) SELECT length(s) FROM c",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c",
    "SELECT randomblob(900000) FROM pets a, pets b, pets c, owners d",
    "SELECT * FROM pets a, pets b, pets c, pets d, pets e, pets f ORDER BY a.age, b.age",
    "SELECT group_concat(randomblob(500000)) FROM pets a, pets b, pets c",
    "PRAGMA query_only = OFF",
    "PRAGMA writable_schema = ON",
    "DELETE FROM owners",
    "DROP TABLE owners",
    "ATTACH DATABASE '/tmp/sqlray-hostile.db' AS x",
    "VACUUM INTO '/tmp/sqlray-hostile.db'",
    "SELECT load_extension('/tmp/evil')",
    "INSERT INTO owners VALUES (999, 'x', 'seoul')",
]

_SCRIPT = """
import json, resource, sys, time
from sqlray.evaluation.execution import execution_match
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = []
for pred in json.loads(sys.argv[1]):
    t = time.monotonic()
    r = execution_match(pred, sys.argv[2], sys.argv[3])
    out.append({"pred": pred, "ex": r.ex, "error": r.error, "s": time.monotonic() - t})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": out, "base_mib": base / 1024, "peak_mib": peak / 1024}))
"""


def test_hostile_predictions_are_wrong_fast_and_bounded_in_memory():
    r = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(HOSTILE), GOLD, DDL],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for row in res["rows"]:
        assert row["ex"] is False, row
        assert row["s"] < 8, row  # each query's deadline is 2 s per test database
    # SQLite's heap limit (256 MiB) and the fetch budget (32 MiB) bound the whole battery.
    assert res["peak_mib"] - res["base_mib"] < 450, res
    import os
    assert not os.path.exists("/tmp/sqlray-hostile.db")


def test_run_query_itself_refuses_writes_and_pragmas():
    conn = open_sandbox(DDL)
    for sql in ("DELETE FROM owners", "PRAGMA query_only = OFF", "CREATE TABLE z (a INT)"):
        res = run_query(conn, sql, read=None)
        assert not res.ok, sql
    conn.execute("INSERT INTO owners VALUES (1, 'a', 'b')")  # still writable: nothing was sealed by a refusal
    assert run_query(conn, "SELECT count(*) FROM owners").rows == [(1,)]
    assert not run_query(conn, "PRAGMA writable_schema = ON", read=None).ok  # sealed now
    assert run_query(conn, "SELECT count(*) FROM owners").rows == [(1,)]


def test_a_good_prediction_still_passes():
    assert execution_match("SELECT o.name FROM owners o WHERE o.city = 'seoul'", GOLD, DDL).ex is True
