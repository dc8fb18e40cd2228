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

import functools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

VOCAB_FILE = "schema_vocab.json"
KINDS = ("num", "cat", "text", "label", "date")
CAT_MAX_LENGTH = 50  # a VARCHAR this short holds codes and categories (status, city), a longer one free text
MAX_KOREAN_CHARS = 20_000  # Korean mentions are looked for in a question (part) up to this long
MAX_DDL_CHARS = 100_000  # a longer DDL is prompted as it is: its parse would cost more than it can gain
_GENERIC = {"id", "no", "tbl", "t"}  # key and prefix parts every naming style uses
_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # only such names are renamed: no quoting needed either way
# a quoted value in a question: quotes at word edges only ("the player's level" quotes nothing)
# (the closing edge ASCII: Korean attaches its particle straight to a quoted value, 'st'이 or '서버'를)
_QUOTED_SPAN = re.compile(r"(?<!\w)'[^'\n]*'(?![A-Za-z0-9_])|\"[^\"\n]*\"")
_NAME_TOKENS = ("VAR", "IDENTIFIER")
_TABLE_OPTIONS = "engine charset collate comment action cascade restrict unsigned zerofill auto_increment"


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
    if strong and first_text:
        return "label"
    size = dtype.find(exp.DataTypeParam) if dtype is not None else None
    short = size is not None and size.this.is_int and int(size.this.name) <= CAT_MAX_LENGTH
    return "cat" if short and t in (exp.DataType.Type.VARCHAR, exp.DataType.Type.CHAR, exp.DataType.Type.NVARCHAR,
                                     exp.DataType.Type.NCHAR) else "text"


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
        pks, fks = set(), set()
        for e in (x.find(exp.PrimaryKey, exp.ForeignKey) or x if isinstance(x, exp.Constraint) else x
                  for x in schema.expressions):  # `CONSTRAINT fk FOREIGN KEY (...)` too
            if isinstance(e, exp.PrimaryKey):
                pks |= {c.name for c in e.expressions}
            elif isinstance(e, exp.ForeignKey):
                fks |= {c.name for c in e.expressions}
        table, seen_text = _Table(schema.this.name), False
        for e in schema.expressions:
            if not isinstance(e, exp.ColumnDef):
                continue
            pk = e.name in pks or any(isinstance(c.args.get("kind"), exp.PrimaryKeyColumnConstraint)
                                      for c in e.constraints)
            # a key also by an inline REFERENCES, or by its name (`player_id`, `teamNo`) where none is declared
            fk = e.name in fks or any(isinstance(c.args.get("kind"), exp.Reference) for c in e.constraints) \
                or parts(e.name)[-1:] in (["id"], ["no"])
            kind = _kind(e, pk, fk, not seen_text)
            seen_text |= kind in ("cat", "text", "label")
            table.columns.append(_Column(e.name, kind))
        tables.append(table)
    return tables


def build_vocab(contexts, min_count: int = 5, glosses: dict[str, str] | None = None, questions=None) -> dict:
    """The schema words a model trained on rows with these DDLs saw, and its most frequent names by kind:
    what ``plan`` renames unknown names to. Counted per row (a schema asked about in many rows is seen as
    often); ``min_count``: a word in fewer rows counts as unknown. ``glosses``: how the training rows'
    Korean questions name a table word or column phrase (the generator's lexicon), kept for those names.
    ``questions``: the rows' questions, whose Korean words (seen ``min_count`` times) are never taken for
    an English name written in Hangul (이름 is not `room`)."""
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
                if c.kind and parts(c.name):
                    columns[c.kind][" ".join(parts(c.name))] += n
    known = {w for w, k in words.items() if k >= min_count}
    # candidates: known words only, none an SQL word or function itself (`order`, `year`; `order_date` is fine)
    top = lambda counter: [w for w, k in counter.most_common() if k >= min_count and set(w.split()) <= known
                           and "_".join(w.split()) not in reserved_words()]
    vocab = {"format": 1, "schemas": len(rows), "rows": sum(rows.values()), "min_count": min_count,
             "words": sorted(known), "tables": [t for t in top(tables) if " " not in t],
             "columns": {k: top(columns[k]) for k in KINDS}}
    if questions is not None:
        vocab["ko_words"] = korean_words(questions, min_count)
    return with_glosses(vocab, glosses or {})


def korean_words(questions, min_count: int = 5) -> list[str]:
    """The Hangul words of these questions seen ``min_count`` times or more, each also without a particle
    at its end (이름을 -> 이름)."""
    from sqlray.evaluation.loanwords import HANGUL_RUN, strip_particle

    counts = Counter()
    for q in questions:
        for w in set(HANGUL_RUN.findall(q or "")):
            counts.update({w, strip_particle(w)})
    return sorted(w for w, n in counts.items() if n >= min_count)


def with_glosses(vocab: dict, glosses: dict[str, str]) -> dict:
    """``vocab`` with ``ko``: the Korean of each of its table words and column phrases that ``glosses`` has."""
    names = [*vocab["tables"], *(p for k in KINDS for p in vocab["columns"].get(k, []))]
    return {**vocab, "ko": {**vocab.get("ko", {}), **{n: glosses[n] for n in names if n in glosses}}}


def extend_vocab(vocab: dict, contexts) -> dict:
    """``vocab`` plus what a fine-tune on rows with these DDLs taught: its names are known afterwards (a
    model tuned on the game database must not have `players` renamed away)."""
    new = build_vocab(contexts, vocab.get("min_count", 5))
    more = lambda old, add: old + [x for x in add if x not in set(old)]
    return {**vocab, "schemas": vocab.get("schemas", 0) + new["schemas"], "rows": vocab.get("rows", 0) + new["rows"],
            "words": sorted(set(vocab["words"]) | set(new["words"])), "tables": more(vocab["tables"], new["tables"]),
            "columns": {k: more(vocab["columns"].get(k, []), new["columns"][k]) for k in KINDS},
            "ko": vocab.get("ko", {}), **({"ko_words": vocab["ko_words"]} if "ko_words" in vocab else {})}


def load_vocab(model_dir: str | Path) -> dict | None:
    """The model folder's schema vocabulary, or None (no file there, or a hub id)."""
    path = Path(model_dir) / VOCAB_FILE
    if not path.is_file():
        return None
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise VocabError(f"{path}: not JSON ({e})") from e
    missing = [k for k in ("format", "words", "tables", "columns") if not isinstance(vocab, dict) or k not in vocab]
    if missing or not _well_formed(vocab):
        raise VocabError(f"{path}: expected build_vocab's format 1: an object with lists of strings 'words', "
                         f"'tables', 'columns' (by kind) and, if any, 'ko_words', and 'ko' an object of non-empty "
                         f"strings; missing {missing or 'nothing'}")
    return vocab


def _well_formed(vocab: dict) -> bool:
    strings = lambda x: isinstance(x, list) and all(isinstance(w, str) for w in x)
    ko = vocab.get("ko", {})
    return (vocab.get("format") == 1 and isinstance(vocab["columns"], dict)
            and all(strings(x) for x in [vocab["words"], vocab["tables"], *vocab["columns"].values(),
                                         vocab.get("ko_words", [])])
            and isinstance(ko, dict) and all(k and isinstance(v, str) and v for k, v in ko.items()))


@functools.cache
def reserved_words() -> frozenset[str]:
    """Words never renamed nor handed out: SQL keywords (every word of sqlglot's, in MySQL and SQLite), the
    grammar's SQL words and functions, type names and MySQL table options (`engine`, `charset`)."""
    from sqlglot.dialects import MySQL, SQLite
    from sqlglot.tokens import Tokenizer

    from sqlray.evaluation.constrain import AGGREGATES, DDL_WORDS, FUNCTIONS, SQL_WORDS

    keys = {*Tokenizer.KEYWORDS, *MySQL.Tokenizer.KEYWORDS, *SQLite.Tokenizer.KEYWORDS}
    return frozenset({w.lower() for k in keys for w in k.split()}
                     | {k.lower() for k in keys} | {w.lower() for w in [*SQL_WORDS, *DDL_WORDS, *AGGREGATES, *FUNCTIONS]}
                     | set(_TABLE_OPTIONS.split()))


def _rewrite(text: str, names: dict[str, str], dialect: str, calls: bool = True) -> str | None:
    """``text`` with every identifier token (bare or quoted) of ``names`` (matched without case) replaced;
    string literals, keywords and, unless ``calls``, names followed by ``(`` (function calls) untouched.
    None when the tokenizer cannot read ``text``."""
    from sqlglot.dialects import Dialect

    lookup = {k.lower(): v for k, v in names.items()}
    try:
        tokens = Dialect.get_or_raise(dialect).tokenize(text)
    except Exception:  # an unterminated string, a hostile byte: the caller decides what to do instead
        return None
    out, last = [], 0
    for i, t in enumerate(tokens):
        new = lookup.get(t.text.lower()) if t.token_type.name in _NAME_TOKENS else None
        if new is None or (not calls and i + 1 < len(tokens) and tokens[i + 1].token_type.name == "L_PAREN"):
            continue
        quoted = t.token_type.name == "IDENTIFIER"  # `x`, "x", [x]: the name between the quotes
        start, end = (t.start + 1, t.end) if quoted else (t.start, t.end + 1)
        if text[start:end].lower() != t.text.lower():
            continue  # an escaped quote inside: leave it
        out += [text[last:start], new]
        last = end
    return "".join([*out, text[last:]])


def _swap_words(text: str, names: dict[str, str]) -> str:
    """Fallback for SQL the tokenizer cannot read (cut off mid-string): whole ASCII words outside
    single-quoted strings."""
    lookup = {k.lower(): v for k, v in names.items()}
    pattern = re.compile(r"(?<![\w])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")(?![\w])",
                         re.IGNORECASE | re.ASCII)
    sub = lambda s: pattern.sub(lambda m: lookup.get(m.group(0).lower(), m.group(0)), s)
    out, last = [], 0
    for m in re.finditer(r"'(?:[^']|'')*(?:'|$)", text):  # a string cut off by the token limit runs to the end
        out += [sub(text[last:m.start()]), m.group(0)]
        last = m.end()
    return "".join([*out, sub(text[last:])])


@dataclass(frozen=True)
class Renaming:
    ddl: str  # the DDL with every renamed identifier replaced
    names: dict[str, str]  # original identifier -> new one
    phrases: dict[str, str]  # how a question may mention an original name -> its new wording
    # an original English word -> the Korean the model knows for its new name: a Korean question writes
    # `server` as 서버 (loanwords.py finds it) and the model learned 상태 for `status`
    hangul: dict[str, str] = field(default_factory=dict)
    # the Korean of an original name's words (`username`: user + name -> 사용자 이름) -> the new name's
    korean: dict[str, str] = field(default_factory=dict)
    known_korean: frozenset[str] = frozenset()  # Korean words the model knows: never taken for a loanword

    def question(self, question: str) -> str:
        """``question`` with its mentions of renamed names replaced (English words, and English words written
        in Hangul), quoted values left alone."""
        if not self.phrases and not self.hangul and not self.korean:
            return question
        alts = "|".join(re.escape(p) for p in sorted(self.phrases, key=len, reverse=True))
        pattern = re.compile(rf"(?<![\w])(?:{alts})(?![\w])", re.IGNORECASE | re.ASCII)
        lower = {k.lower(): v for k, v in self.phrases.items()}

        def swap(m: re.Match) -> str:
            new = lower.get(m.group(0).lower(), m.group(0))
            return new[:1].upper() + new[1:] if m.group(0)[:1].isupper() else new

        sub = lambda text: self._korean(pattern.sub(swap, text) if self.phrases else text)
        out, last = [], 0
        for q in _QUOTED_SPAN.finditer(question):
            out += [sub(question[last:q.start()]), q.group(0)]
            last = q.end()
        return "".join([*out, sub(question[last:])])

    def _korean(self, text: str) -> str:
        if len(text) > MAX_KOREAN_CHARS:
            return text  # ~12 µs a character: a question far longer than any real one is left as it is
        from sqlray.evaluation.loanwords import HANGUL_RUN, find_loanwords, particles, with_particle

        spans = []
        if self.korean:  # whole words only, particles allowed after: 사용자 이름표 is another word
            alts = "|".join(re.escape(p) for p in sorted(self.korean, key=len, reverse=True))
            rest = lambda end: (m.group(0) if (m := HANGUL_RUN.match(text, end)) else "")
            spans = [(m.start(), m.end(), self.korean[m.group(0)])
                     for m in re.finditer(rf"(?<![\uac00-\ud7a3])(?:{alts})", text) if particles(rest(m.end()))]
        taken = lambda a, b: any(a < e and s < b for s, e, _ in spans)
        spans += [(a, b, self.hangul[w]) for a, b, w in find_loanwords(text, list(self.hangul), self.known_korean)
                  if not taken(a, b)]
        out, last = [], 0
        for start, end, new in sorted(spans):
            new, skip = with_particle(new, text[end:])  # 레벨이 -> 나이가
            out += [text[last:start], new]
            last = end + skip
        return "".join([*out, text[last:]])

    def apply(self, sql: str) -> str:
        """SQL over the original schema written over the renamed one (literals and function calls untouched)."""
        return _rewrite(sql, self.names, "sqlite", calls=False) or _swap_words(sql, self.names)

    def restore(self, sql: str) -> str:
        """The model's SQL with the original names back, whatever case it wrote them in (literals untouched)."""
        back = {v: k for k, v in self.names.items()}
        return _rewrite(sql, back, "sqlite", calls=False) or _swap_words(sql, back)


def plural(word: str) -> str:
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "es" if re.search(r"(s|x|ch|sh)$", word) else word + "s"


class _Picker:
    """Hands out vocabulary names in order, none twice and none that the schema already uses."""

    def __init__(self, tables: list[_Table]):
        self.names = {n.lower() for t in tables for n in [t.name, *(c.name for c in t.columns)]}
        self.words = {w for t in tables for w in parts(t.name)}

    def take(self, name: str) -> bool:
        """Claim ``name`` (False if the schema or an earlier pick has it, or SQL reserves it)."""
        if name.lower() in self.names or name.lower() in reserved_words():
            return False
        self.names.add(name.lower())
        return True

    def table(self, vocab: dict, like: str, many: bool) -> str | None:
        for w in vocab["tables"]:
            if w in self.words or plural(w) in self.words or {w, plural(w)} & self.names:
                continue
            if self.take(render([plural(w) if many else w], like)):
                self.words |= {w, plural(w)}
                self.names |= {w, plural(w)}  # a later column never takes the table's word either
                return w
        return None

    def column(self, vocab: dict, kind: str, like: str) -> str | None:
        # then the nearest kind: a vocabulary from before `cat` existed lists every text column as text
        for kind_ in {"label": ["label", "text"], "cat": ["cat", "text"], "text": ["text", "cat"]}.get(kind, [kind]):
            for phrase in vocab["columns"].get(kind_, []):
                ws = phrase.split()  # a blank entry (a hand-edited file) is skipped
                if ws and not set(ws) & self.words and self.take(render(ws, like)):
                    return phrase
        return None


def _unknown(name: str, known: set[str]) -> bool:
    words = [p for p in parts(name) if not p.isdigit()]
    return bool(_PLAIN.fullmatch(name)) and name.lower() not in reserved_words() and not set(words) <= known


def _phrases(*pairs: tuple[str, str]) -> dict[str, str]:
    """Question wordings worth replacing: three letters or more, not a number."""
    return {old: new for old, new in pairs if len(old) >= 3 and not old.isdigit()}


def plan(ddl: str, vocab: dict) -> Renaming | None:
    """How to rename ``ddl``'s unknown tables and columns for a model with ``vocab``; None when every name
    is known, or the DDL is unreadable or longer than MAX_DDL_CHARS (then it is prompted as it is)."""
    if not ddl or len(ddl) > MAX_DDL_CHARS:
        return None
    tables = read_tables(ddl)
    known = set(vocab["words"]) | _GENERIC
    pick, names, phrases, words, hangul, korean = _Picker(tables), {}, {}, {}, {}, {}
    ko = vocab.get("ko", {})
    for t in tables:
        tw = [p for p in parts(t.name) if p not in _GENERIC and not p.isdigit()]
        if not tw or not _unknown(t.name, known) or t.name.lower() in {n.lower() for n in names}:
            continue
        many = _is_plural(tw[-1])
        new = pick.table(vocab, t.name, many)
        if new is None:
            break
        old, wording = singular(tw[-1]), plural(new) if many else new
        names[t.name] = render([wording], t.name)
        phrases |= _phrases((" ".join(tw), wording), (t.name, wording))
        if new in ko and tw[-1] not in known and old not in known:  # zorg_items: 아이템 stays an item
            hangul[old] = ko[new]
        if tw[-1] not in known and old not in known:  # its last word alone, only if that word is new too
            words[old] = new
            phrases |= _phrases((old, new), (plural(old), plural(new)), (tw[-1], wording))
    for t in tables:
        for c in t.columns:
            if c.name.lower() in {n.lower() for n in names} or not _unknown(c.name, known):
                continue
            ps = parts(c.name)
            if c.kind is None:  # a key: it follows its table (player_id -> customer_id), or stays
                new_parts = [words.get(p, words.get(singular(p), p)) for p in ps]
                if new_parts != ps and pick.take(name := render(new_parts, c.name)):
                    names[c.name] = name
                continue
            phrase = pick.column(vocab, c.kind, c.name)
            if phrase is not None:
                names[c.name] = render(phrase.split(), c.name)
                phrases |= _phrases((" ".join(ps), phrase), (c.name, phrase))
                if phrase in ko:
                    _korean_mentions(ps, ko[phrase], ko, hangul, korean)
    known_korean = frozenset(vocab.get("ko_words", ())) if hangul else frozenset()
    return _checked(ddl, tables, names, phrases, hangul, korean, known_korean)


def _korean_mentions(old: list[str], new: str, ko: dict[str, str], hangul: dict, korean: dict) -> None:
    """How a Korean question may name a column of words ``old``, to be replaced by ``new``: a single word by
    sound (server: 서버), and a name made of known words by their Korean (username: user + name, 사용자 이름)."""
    if len(old) == 1:
        hangul[old[0]] = new
    words = [w for p in old for w in (split_compound(p, ko) or [p])]
    if len(words) > 1 and all(w in ko for w in words):
        korean[" ".join(ko[w] for w in words)] = new


def split_compound(word: str, known) -> list[str] | None:
    """``word`` as known words of three letters or more run together (username -> [user, name]), the
    fewest pieces; None when it is not one (or longer than 40 letters: no name runs that long, and a
    hostile one would cost its length squared)."""
    if len(word) > 40:
        return None
    best: list[list[str] | None] = [[]] + [None] * len(word)
    for end in range(3, len(word) + 1):
        for start in range(0, end - 2):
            if best[start] is not None and word[start:end] in known and (
                    best[end] is None or len(best[start]) + 1 < len(best[end])):
                best[end] = best[start] + [word[start:end]]
    return best[-1] if best[-1] and len(best[-1]) > 1 else None


def _checked(ddl: str, tables: list[_Table], names: dict[str, str], phrases: dict[str, str],
             hangul: dict[str, str], korean: dict[str, str], known_korean: frozenset[str]) -> Renaming | None:
    """The renaming, if the rewritten DDL reads back as exactly the renamed schema (else: prompt as is)."""
    if not names:
        return None
    lower = {k.lower(): v for k, v in names.items()}
    want = [(lower.get(t.name.lower(), t.name), [lower.get(c.name.lower(), c.name) for c in t.columns]) for t in tables]
    for dialect in ("mysql", "sqlite"):  # as read_tables reads it; "x" is a string to MySQL, a name to SQLite
        new_ddl = _rewrite(ddl, names, dialect)
        if new_ddl is not None and [(t.name, [c.name for c in t.columns]) for t in read_tables(new_ddl)] == want:
            return Renaming(new_ddl, names, phrases, hangul, korean, known_korean)
    return None
