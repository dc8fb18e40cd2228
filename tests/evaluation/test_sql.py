import pytest

from sqlray.evaluation.sql import extract_sql, normalize_sql, normalized_match, strict_match


@pytest.mark.parametrize("raw,want", [
    ("SELECT a FROM t;\n\n### SQL 봇:\nSELECT b FROM t;", "SELECT a FROM t;"),
    ("SELECT a FROM t\n### Question: more", "SELECT a FROM t"),
    ("```sql\nSELECT a FROM t;\n```", "SELECT a FROM t;"),
    ("  SELECT a\n  FROM t; SELECT 2;", "SELECT a\n  FROM t;"),
    ("", ""),
])
def test_extract_sql(raw, want):
    assert extract_sql(raw) == want


def test_strict_ignores_only_whitespace_and_semicolon():
    assert strict_match("SELECT a  FROM t;", "SELECT a FROM t")
    assert not strict_match("select a from t", "SELECT a FROM t")


@pytest.mark.parametrize("pred,gold", [
    ("select a from t", "SELECT a FROM t;"),
    ("SELECT `a` FROM `t`", "SELECT a FROM t"),
    ("SELECT c.x FROM child AS c JOIN parent p ON c.pid = p.id", "SELECT child.x FROM child JOIN parent ON child.pid = parent.id"),
    ("SELECT A FROM T", "select a from t"),
])
def test_normalised_match(pred, gold):
    assert normalized_match(pred, gold)


@pytest.mark.parametrize("pred,gold", [
    ("SELECT a FROM t WHERE x = 1", "SELECT a FROM t WHERE x = 2"),
    ("SELECT a FROM t WHERE s = 'A'", "SELECT a FROM t WHERE s = 'a'"),  # string literals keep their case
    ("SELECT a, b FROM t", "SELECT b, a FROM t"),
])
def test_normalised_mismatch(pred, gold):
    assert not normalized_match(pred, gold)


def test_normalisation_never_crashes():
    for junk in ["SELECT FROM WHERE (((", "\x00\x01", "DROP", "SELECT 1; SELECT 2"]:
        normalize_sql(junk)
        normalized_match(junk, "SELECT 1")


def test_self_join_aliases_are_positional_not_collapsed():
    from sqlray.evaluation.sql import normalized_match
    a = "SELECT a.name FROM emp a JOIN emp b ON a.boss_id = b.id"
    assert not normalized_match(a, "SELECT b.name FROM emp a JOIN emp b ON a.boss_id = b.id")
    assert normalized_match(a, "SELECT x.name FROM emp AS x JOIN emp AS y ON x.boss_id = y.id")
    assert normalized_match("SELECT e.name FROM emp e", "SELECT emp.name FROM emp")


def test_extraction_keeps_semicolons_inside_literals():
    from sqlray.evaluation.sql import extract_sql
    assert extract_sql("SELECT a FROM t WHERE b = 'x;y' AND c = 'it''s;'; DROP TABLE t") == \
        "SELECT a FROM t WHERE b = 'x;y' AND c = 'it''s;';"
    assert extract_sql('SELECT "a;b" FROM t;\n### next') == 'SELECT "a;b" FROM t;'
