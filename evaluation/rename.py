"""Rename the names a small model never saw into names it knows, and rename its SQL back.

A model trained on a closed set of schema words (the embedded default: the generator's few hundred) copies
a name it knows from the DDL but garbles one it never saw (`players` is `Ġpl ay ers` to it, and it writes
`FROM players` for a question about `matches`). For such a model each table or column with a word outside
that set is renamed, before the prompt is built, to an unused name of the same kind that the model knows
(a table to a table, an INT column to a numeric one, a DATE to a date), the question's mentions of it with
it (outside quoted values), and the SQL it writes is renamed back. Keys follow their table (`player_id` ->
`doctor_id`). The set comes with the model: ``schema_vocab.json`` in its folder, counted from the DDLs of
its training rows (``build_vocab``); a model without one is prompted as it is.

Pure functions; the renamed DDL depends on the DDL alone, so prompts about one schema still share a prefix.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

VOCAB_FILE = "schema_vocab.json"
KINDS = ("num", "text", "label", "date")
MAX_DDL_CHARS = 100_000  # a longer DDL is prompted as it is: its parse would cost more than it can gain
_GENERIC = {"id", "no", "tbl", "t"}  # key and prefix parts every naming style uses
_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_QUOTED_SPAN = re.compile(r"'[^']*'|\"[^\"]*\"")
_SQL_STRING = re.compile(r"'(?:[^']|'')*'")


class VocabError(ValueError):
    """A schema_vocab.json that is not what build_vocab writes."""


def parts(identifier: str) -> list[str]:
    """An identifier's words, lower-case: ``joined_at``, ``joinedAt`` and ``JOINED_AT`` -> [joined, at]."""
    return [p.lower() for p in _PARTS.findall(identifier)]


def _style(identifier: str) -> str:
    if "_" in identifier or identifier.islower():
        return "upper" if identifier.isupper() else "snake"
    if identifier.isupper():
        return "upper"
    return "pascal" if identifier[0].isupper() else "camel"


def render(words: list[str], like: str) -> str:
    """``words`` written the way ``like`` writes its own: snake, camel, Pascal or UPPER case, prefix kept."""
    prefix = next((p for p in ("tbl_", "t_", "TBL_", "T_") if like.startswith(p) and len(like) > len(p)), "")
    style = _style(like[len(prefix):])
    if style == "camel":
        return prefix + words[0] + "".join(w.capitalize() for w in words[1:])
    if style == "pascal":
        return prefix + "".join(w.capitalize() for w in words)
    joined = "_".join(words)
    return prefix + (joined.upper() if style == "upper" else joined)


def singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if re.search(r"(ch|sh|x|ss)es$", word):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def _is_plural(word: str) -> bool:
    return singular(word) != word


@dataclass
class _Column:
    name: str
    kind: str | None  # None: a key (primary or foreign), renamed only with its table
    ref: str | None = None  # the table a foreign key points at


@dataclass
class _Table:
    name: str
    columns: list[_Column] = field(default_factory=list)


def _kind(coldef, pk: bool, fk: bool, first_text: bool) -> str | None:
    from sqlglot import exp

    if pk or fk:
        return None
    dtype = coldef.args.get("kind")
    t = dtype.this if dtype is not None else None
    if t in exp.DataType.TEMPORAL_TYPES:
        return "date"
    if t in exp.DataType.NUMERIC_TYPES:
        return "num"
    strong = any(isinstance(c.args.get("kind"), (exp.NotNullColumnConstraint, exp.UniqueColumnConstraint))
                 for c in coldef.constraints)
    return "label" if strong and first_text else "text"


def read_tables(ddl: str) -> list[_Table]:
    """CREATE TABLE statements, their columns and kinds (sqlglot; MySQL, then SQLite). [] when unparseable."""
    import sqlglot
    from sqlglot import exp

    statements = None
    for dialect in ("mysql", "sqlite"):
        try:
            statements = sqlglot.parse(ddl, read=dialect)
            break
        except Exception:  # any DDL a client sends: unreadable means "prompt it as it is", never a failure
            continue
    tables = []
    for st in statements or []:
        if not isinstance(st, exp.Create) or not isinstance(st.this, exp.Schema):
            continue
        schema = st.this
        pks, fks = set(), {}
        for e in schema.expressions:
            if isinstance(e, exp.PrimaryKey):
                pks |= {c.name for c in e.expressions}
            elif isinstance(e, exp.ForeignKey):
                ref = e.args.get("reference")
                target = ref.find(exp.Table) if ref is not None else None
                fks.update({c.name: target.name if target is not None else None for c in e.expressions})
        table, seen_text = _Table(schema.this.name), False
        for e in schema.expressions:
            if not isinstance(e, exp.ColumnDef):
                continue
            pk = e.name in pks or any(isinstance(c.args.get("kind"), exp.PrimaryKeyColumnConstraint)
                                      for c in e.constraints)
            kind = _kind(e, pk, e.name in fks, not seen_text)
            seen_text |= kind in ("text", "label")
            table.columns.append(_Column(e.name, kind, fks.get(e.name)))
        tables.append(table)
    return tables


def build_vocab(contexts, min_count: int = 5) -> dict:
    """The schema words a model trained on rows with these DDLs saw, and its most frequent names by kind:
    what ``plan`` renames unknown names to. Counted per row (a schema asked about in many rows is seen as
    often); ``min_count``: a word in fewer rows counts as unknown."""
    words, tables, columns = Counter(), Counter(), {k: Counter() for k in KINDS}
    rows = Counter(contexts)
    for ddl, n in rows.items():  # each schema parsed once
        for t in read_tables(ddl):
            tw = [p for p in parts(t.name) if p not in _GENERIC]
            for p in parts(t.name):
                words[p] += n
            if tw:
                tables[singular(tw[-1])] += n
            for c in t.columns:
                for p in parts(c.name):
                    words[p] += n
                if c.kind:
                    columns[c.kind][" ".join(parts(c.name))] += n
    known = {w for w, k in words.items() if k >= min_count}
    top = lambda counter: [w for w, k in counter.most_common() if k >= min_count and set(w.split()) <= known]
    return {"format": 1, "schemas": len(rows), "rows": sum(rows.values()), "min_count": min_count,
            "words": sorted(known), "tables": [t for t in top(tables) if " " not in t],
            "columns": {k: top(columns[k]) for k in KINDS}}


def extend_vocab(vocab: dict, contexts) -> dict:
    """``vocab`` plus what a fine-tune on rows with these DDLs taught: its names are known afterwards (a
    model tuned on the game database must not have `players` renamed away)."""
    new = build_vocab(contexts, vocab.get("min_count", 5))
    more = lambda old, add: old + [x for x in add if x not in set(old)]
    return {**vocab, "schemas": vocab.get("schemas", 0) + new["schemas"], "rows": vocab.get("rows", 0) + new["rows"],
            "words": sorted(set(vocab["words"]) | set(new["words"])), "tables": more(vocab["tables"], new["tables"]),
            "columns": {k: more(vocab["columns"].get(k, []), new["columns"][k]) for k in KINDS}}


def load_vocab(model_dir: str | Path) -> dict | None:
    """The model folder's schema vocabulary, or None (no file there, or a hub id)."""
    path = Path(model_dir) / VOCAB_FILE
    if not path.is_file():
        return None
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise VocabError(f"{path}: not JSON ({e})") from e
    missing = [k for k in ("format", "words", "tables", "columns") if k not in vocab]
    if missing or vocab.get("format") != 1 or not isinstance(vocab["columns"], dict):
        raise VocabError(f"{path}: expected build_vocab's format 1 with words, tables and columns; "
                         f"missing {missing or 'nothing'}, format {vocab.get('format')!r}")
    return vocab


@dataclass(frozen=True)
class Renaming:
    ddl: str  # the DDL with every renamed identifier replaced
    names: dict[str, str]  # original identifier -> new one
    phrases: dict[str, str]  # how a question may mention an original name -> its new wording

    def question(self, question: str) -> str:
        """``question`` with its mentions of renamed names replaced, quoted values left alone."""
        if not self.phrases:
            return question
        alts = "|".join(re.escape(p) for p in sorted(self.phrases, key=len, reverse=True))
        pattern = re.compile(rf"(?<![\w])(?:{alts})(?![\w])", re.IGNORECASE)
        lower = {k.lower(): v for k, v in self.phrases.items()}

        def swap(m: re.Match) -> str:
            new = lower[m.group(0).lower()]
            return new[:1].upper() + new[1:] if m.group(0)[:1].isupper() else new

        out, last = [], 0
        for q in _QUOTED_SPAN.finditer(question):
            out += [pattern.sub(swap, question[last:q.start()]), q.group(0)]
            last = q.end()
        return "".join([*out, pattern.sub(swap, question[last:])])

    def apply(self, sql: str) -> str:
        """SQL over the original schema rewritten over the renamed one (string literals untouched)."""
        return _swap(sql, self.names) if self.names else sql

    def restore(self, sql: str) -> str:
        """The model's SQL with the original names back, whatever case it wrote them in (literals untouched)."""
        return _swap(sql, {v: k for k, v in self.names.items()}, re.IGNORECASE) if self.names else sql


def plural(word: str) -> str:
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "es" if re.search(r"(s|x|ch|sh)$", word) else word + "s"


def _keywords() -> frozenset[str]:
    from sqlglot.tokens import Tokenizer

    return frozenset(k.lower() for k in Tokenizer.KEYWORDS)


def _swap(text: str, names: dict[str, str], flags: int = 0) -> str:
    """``text`` with each whole identifier of ``names`` replaced, single-quoted strings untouched."""
    lookup = {(k.lower() if flags else k): v for k, v in names.items()}
    pattern = re.compile(r"(?<![\w])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")(?![\w])",
                         flags)
    sub = lambda s: pattern.sub(lambda m: lookup[m.group(0).lower() if flags else m.group(0)], s)
    out, last = [], 0
    for s in _SQL_STRING.finditer(text):
        out += [sub(text[last:s.start()]), s.group(0)]
        last = s.end()
    return "".join([*out, sub(text[last:])])


class _Picker:
    """Hands out vocabulary names in order, none twice and none that the schema already uses."""

    def __init__(self, tables: list[_Table]):
        self.names = {n.lower() for t in tables for n in [t.name, *(c.name for c in t.columns)]}
        self.words = {w for t in tables for w in parts(t.name)}

    def table(self, vocab: dict) -> str | None:
        for w in vocab["tables"]:
            if w not in self.words and plural(w) not in self.words:
                self.words |= {w, plural(w)}
                return w
        return None

    def column(self, vocab: dict, kind: str, like: str) -> str | None:
        for kind_ in ([kind, "text"] if kind == "label" else [kind]):
            for phrase in vocab["columns"].get(kind_, []):
                name = render(phrase.split(), like)
                if name.lower() not in self.names and not set(phrase.split()) & self.words:
                    self.names.add(name.lower())
                    return phrase
        return None


def plan(ddl: str, vocab: dict) -> Renaming | None:
    """How to rename ``ddl``'s unknown tables and columns for a model with ``vocab``; None when every name
    is known, the DDL is unreadable (then it is prompted as it is) or longer than MAX_DDL_CHARS."""
    if not ddl or len(ddl) > MAX_DDL_CHARS:
        return None
    tables = read_tables(ddl)
    known, keywords = set(vocab["words"]) | _GENERIC, _keywords()
    unknown = lambda name: name.lower() not in keywords and not set(parts(name)) <= known
    pick, names, phrases, words = _Picker(tables), {}, {}, {}
    for t in tables:
        tw = [p for p in parts(t.name) if p not in _GENERIC]
        if not tw or not unknown(t.name) or t.name in names:
            continue
        new = pick.table(vocab)
        if new is None:
            break
        old = singular(tw[-1])
        names[t.name] = render([plural(new) if _is_plural(tw[-1]) else new], t.name)
        words[old] = new
        phrases |= {old: new, plural(old): plural(new), tw[-1]: plural(new) if _is_plural(tw[-1]) else new}
        if len(tw) > 1:
            phrases[" ".join(tw)] = plural(new) if _is_plural(tw[-1]) else new
    for t in tables:
        for c in t.columns:
            if c.name in names or not unknown(c.name):
                continue
            ps = parts(c.name)
            if c.kind is None:  # a key: it follows its table (player_id -> doctor_id), or stays
                new_parts = [words.get(p, words.get(singular(p), p)) for p in ps]
                if new_parts != ps and (name := render(new_parts, c.name)).lower() not in pick.names:
                    names[c.name] = name
                    pick.names.add(name.lower())
                continue
            phrase = pick.column(vocab, c.kind, c.name)
            if phrase is None:
                continue
            names[c.name] = render(phrase.split(), c.name)
            phrases |= {" ".join(ps): phrase, c.name: phrase}
    if not names:
        return None
    return Renaming(_swap(ddl, names), names, phrases)
