"""Pure SQL text functions: pull the SQL out of a generation, and exact match (strict and normalised)."""
from __future__ import annotations

import re

import sqlglot
from sqlglot import exp

# A base model keeps writing sections such as "### SQL 봇:" after its SQL (the reference's failure).
_STOP = re.compile(r"\n\s*\n|###|</s>|<\|endoftext\|>|```\s*$")


def extract_sql(text: str) -> str:
    """The SQL at the start of a generation: up to a blank line, a '###' section or the first ';'."""
    text = text.strip()
    fence = re.match(r"```(?:sql)?\s*(.*?)(```|$)", text, re.S | re.I)
    if fence:
        text = fence.group(1)
    text = _STOP.split(text, maxsplit=1)[0].strip()
    end = _statement_end(text)
    return (text[: end + 1] if end is not None else text).strip()


def _statement_end(sql: str) -> int | None:
    """Index of the first ';' outside string literals and quoted identifiers ('' and \\' escapes too)."""
    quote, i = None, 0
    while i < len(sql):
        ch = sql[i]
        if quote:
            if ch == "\\" and quote != "`":
                i += 1
            elif ch == quote:
                if i + 1 < len(sql) and sql[i + 1] == quote:
                    i += 1  # a doubled quote stays inside
                else:
                    quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == ";":
            return i
        i += 1
    return None


def _squash(sql: str) -> str:
    return re.sub(r"\s+", " ", sql.strip().rstrip(";").strip())


def strict_match(pred: str, gold: str) -> bool:
    """Identical up to whitespace and a trailing semicolon."""
    return _squash(pred) == _squash(gold)


def _canonical_aliases(tree: exp.Expression) -> exp.Expression:
    """Aliases don't matter, which table instance a column reads does: a table used once loses its alias
    (its columns name the table), a table used several times (a self-join) gets positional aliases
    ``emp_1, emp_2`` in order of appearance, so ``a.name`` and ``b.name`` stay different columns."""
    tables = list(tree.find_all(exp.Table, bfs=False))
    uses: dict[str, int] = {}
    for t in tables:
        uses[t.name.lower()] = uses.get(t.name.lower(), 0) + 1
    renamed: dict[str, str] = {}  # old alias (or the name itself) -> canonical reference
    seen: dict[str, int] = {}
    for t in tables:
        name, old = t.name.lower(), (t.alias or t.name).lower()
        if uses[name] == 1:
            renamed[old] = t.name
            t.set("alias", None)
        else:
            seen[name] = seen.get(name, 0) + 1
            renamed[old] = f"{t.name}_{seen[name]}"
            t.set("alias", exp.TableAlias(this=exp.to_identifier(renamed[old])))
    for col in tree.find_all(exp.Column):
        if col.table and col.table.lower() in renamed:
            col.set("table", exp.to_identifier(renamed[col.table.lower()]))
    return tree


def normalize_sql(sql: str, dialect: str = "mysql") -> str | None:
    """Canonical text: keyword and identifier case, quoting, whitespace, table aliases and the
    trailing semicolon normalised. None when the SQL does not parse."""
    try:
        trees = [t for t in sqlglot.parse(sql, read=dialect) if t is not None]
        if len(trees) != 1:
            return None
        tree = _canonical_aliases(trees[0])
        from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

        tree = normalize_identifiers(tree, dialect=dialect)
        for ident in tree.find_all(exp.Identifier):
            ident.set("quoted", False)
        return tree.sql(dialect=dialect, normalize=True, pretty=False)
    except Exception:  # normalisation must never crash a row
        return None


def normalized_match(pred: str, gold: str, dialect: str = "mysql") -> bool:
    a, b = normalize_sql(pred, dialect), normalize_sql(gold, dialect)
    if a is None or b is None:
        return strict_match(pred, gold)
    return a == b


def parses(sql: str, dialect: str = "mysql") -> bool:
    return normalize_sql(sql, dialect) is not None
