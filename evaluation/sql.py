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
    if ";" in text:
        text = text[: text.index(";") + 1]
    return text.strip()


def _squash(sql: str) -> str:
    return re.sub(r"\s+", " ", sql.strip().rstrip(";").strip())


def strict_match(pred: str, gold: str) -> bool:
    """Identical up to whitespace and a trailing semicolon."""
    return _squash(pred) == _squash(gold)


def _drop_table_aliases(tree: exp.Expression) -> exp.Expression:
    aliases: dict[str, str] = {}
    for table in tree.find_all(exp.Table):
        if table.alias:
            aliases[table.alias.lower()] = table.name
            table.set("alias", None)
    for col in tree.find_all(exp.Column):
        if col.table and col.table.lower() in aliases:
            col.set("table", exp.to_identifier(aliases[col.table.lower()]))
    return tree


def normalize_sql(sql: str, dialect: str = "mysql") -> str | None:
    """Canonical text: keyword and identifier case, quoting, whitespace, table aliases and the
    trailing semicolon normalised. None when the SQL does not parse."""
    try:
        trees = [t for t in sqlglot.parse(sql, read=dialect) if t is not None]
        if len(trees) != 1:
            return None
        tree = _drop_table_aliases(trees[0])
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
