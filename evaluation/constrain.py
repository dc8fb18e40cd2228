"""Schema-constrained decoding, the pure part: the grammar of SQL that names only the request's DDL.

A small model trained on a few hundred schemas still writes names it memorised (``customers`` where the
DDL says ``t_clients``) and values it saw in training. PICARD (Scholak et al., 2021) showed that refusing
such tokens while decoding lifts execution accuracy without retraining. sqlray does it at the lexical
level, with one EBNF grammar per request (xgrammar's dialect, which vLLM's structured outputs also take):
every word of the SQL is a SQL keyword (any case), a name from the DDL or a short alias; string and
number literals copy the question; punctuation and spaces are free; two words (or numbers) never touch.
Clause order is left to the model. The engines apply it in ``evaluation.grammar_decoding`` (transformers)
and ``serving.vllm_engine`` (vLLM).
"""
from __future__ import annotations

import re

# Words a SQL answer may use besides the schema's names: the clauses, operators and functions of
# SQLite's SELECT (https://sqlite.org/lang_select.html), matched in any case.
SQL_WORDS = """SELECT FROM WHERE GROUP BY HAVING ORDER ASC DESC LIMIT OFFSET DISTINCT ALL AS ON JOIN INNER LEFT
RIGHT FULL OUTER CROSS NATURAL USING UNION INTERSECT EXCEPT AND OR NOT IN IS NULL LIKE GLOB BETWEEN EXISTS CASE
WHEN THEN ELSE END CAST WITH RECURSIVE COUNT SUM AVG MIN MAX TOTAL ROUND ABS LENGTH LOWER UPPER SUBSTR TRIM
COALESCE IFNULL NULLIF IIF GROUP_CONCAT DATE TIME DATETIME STRFTIME JULIANDAY CURRENT_DATE CURRENT_TIME
CURRENT_TIMESTAMP INTEGER REAL TEXT NUMERIC TRUE FALSE ESCAPE COLLATE NOCASE INSTR REPLACE""".split()
# String literals SQLite's date functions need and no question writes.
SQL_STRINGS = ["now", "localtime", "utc", "unixepoch", "start of day", "start of month", "start of year",
               "%Y", "%m", "%d", "%H", "%M", "%S", "%Y-%m", "%Y-%m-%d", "%H:%M"]
# A DDL's own words that are never names, unless they stand where a name stands (see ``schema_names``).
DDL_WORDS = {w.upper() for w in """CREATE TABLE IF NOT EXISTS PRIMARY KEY FOREIGN REFERENCES UNIQUE NULL DEFAULT
AUTO_INCREMENT AUTOINCREMENT CHECK CONSTRAINT INDEX ON DELETE UPDATE CASCADE INT INTEGER BIGINT SMALLINT TINYINT
VARCHAR CHAR TEXT DATE DATETIME TIMESTAMP TIME DECIMAL NUMERIC FLOAT DOUBLE REAL BOOLEAN BOOL BLOB""".split()}
_TABLE_CONSTRAINTS = {"PRIMARY", "FOREIGN", "UNIQUE", "CHECK", "CONSTRAINT", "KEY", "INDEX"}  # ", FOREIGN KEY (..."
ALIAS = re.compile(r"[A-Za-z][0-9]?")  # the one- or two-character aliases of joins (c, p, t1, T1)
_IDENT = re.compile(r"[^\W\d]\w*", re.UNICODE)
_QUOTED_NAME = re.compile(r'"([^"\n]+)"|`([^`\n]+)`|\[([^\]\n]+)\]')
# A column definition's name: first word after "(" or "," (quotes allowed), then a type or constraint.
_DEF_NAME = re.compile(r'(?:\(|,)\s*["`\[]?([^\W\d]\w*)["`\]]?\s+[A-Za-z]', re.UNICODE)
_TABLE_NAME = re.compile(r'TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?["`\[]?([^\W\d]\w*)', re.UNICODE | re.IGNORECASE)
_QUOTED = re.compile(r"'([^'\n]+)'|\"([^\"\n]+)\"")
_HANGUL = re.compile("[\uac00-\ud7a3]")
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
# Bounds: a request decides the grammar's size, and the grammar is compiled while others wait.
MAX_NAMES, MAX_SPANS, PARTICLE_SYLLABLES = 2000, 4000, 3


def schema_names(ddl: str) -> tuple[list[str], list[str]]:
    """(bare names, quoted names) the DDL defines, in first-seen order. Bare: its words minus DDL syntax,
    plus words in a name's place even if they spell a keyword (a column ``date``); quoted: names in
    quotes, backticks or brackets, spaces allowed, which the SQL must quote too."""
    positional = {m.group(1) for rx in (_DEF_NAME, _TABLE_NAME) for m in rx.finditer(ddl)
                  if m.group(1).upper() not in _TABLE_CONSTRAINTS or ddl[m.start(1) - 1] in '"`['}
    bare: dict[str, None] = {}
    for m in _IDENT.finditer(ddl):
        w = m.group(0)
        if w.upper() not in DDL_WORDS or w in positional:
            bare.setdefault(w, None)
    quoted = {next(g for g in m.groups() if g): None for m in _QUOTED_NAME.finditer(ddl)}
    quoted = [q for q in quoted if q.isprintable()]
    return list(bare)[:MAX_NAMES], [*bare, *(q for q in quoted if q not in bare)][:MAX_NAMES]


def _lit(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _any_case(word: str) -> str:
    """An EBNF sequence matching ``word`` in any letter case: COUNT, count, Count."""
    return " ".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else _lit(c) for c in word)


def question_values(question: str, max_words: int = 3) -> tuple[list[str], list[str]]:
    """What a literal may copy from the request: (strings, numbers). Strings are its quoted spans, its
    words and runs of up to ``max_words`` words (punctuation trimmed), and Korean words without their
    last 1-3 syllables, where a particle sticks to the value (서울에서 -> 서울); numbers are the numbers it
    writes (1,000 also as 1000), plus 0 and 1. At most MAX_SPANS strings, the earliest first."""
    spans = {a or b: None for a, b in _QUOTED.findall(question)}
    words = [w.strip(".,?!:;()[]{}\"'`") for w in question.split()]
    words = [w for w in words if w]
    for i in range(len(words)):
        for j in range(i + 1, min(i + max_words, len(words)) + 1):
            spans.setdefault(" ".join(words[i:j]), None)
        if _HANGUL.search(words[i]):
            for k in range(max(1, len(words[i]) - PARTICLE_SYLLABLES), len(words[i])):
                spans.setdefault(words[i][:k], None)
        if len(spans) >= MAX_SPANS:
            break
    # Only printable text: a control character (or U+2028) would end the grammar's string literal.
    strings = [s for s in spans if "'" not in s and s.isprintable()][:MAX_SPANS] + SQL_STRINGS
    numbers = {n.replace(",", "") for n in _NUMBER.findall(question)} | {"0", "1"}
    return sorted(set(strings)), sorted(numbers)


def sql_grammar(ddl: str, question: str | None = None) -> str:
    """The EBNF of SQL naming only ``ddl``'s tables and columns. With ``question``, string and number
    literals must also copy it (``question_values``), as every literal of the training data does."""
    bare, quotable = schema_names(ddl)
    if question is None:
        text, number = "[^'\\n]*", "[0-9]+ (\".\" [0-9]+)?"
    else:
        strings, numbers = question_values(question)
        text = "(" + " | ".join(_lit(s) for s in strings) + ")?"
        number = " | ".join(_lit(n) for n in numbers)
    return "\n".join([
        # Words and numbers are atoms; two atoms never touch (no "name" + "city", no "1" + "8").
        "root ::= other* (atom other+)* atom?",
        "atom ::= word | number",
        "word ::= keyword | name | \"\\\"\" qname \"\\\"\" | \"`\" qname \"`\" | \"[\" qname \"]\" | [A-Za-z] [0-9]?",
        "keyword ::= " + " | ".join(f"({_any_case(k)})" for k in SQL_WORDS),
        "name ::= " + (" | ".join(_lit(n) for n in bare) or '"_"'),
        "qname ::= " + (" | ".join(_lit(n) for n in quotable) or '"_"'),
        # No "#": the model cannot write the "###" stop string under the grammar; EOS or "\n\n" end it.
        "other ::= [ \\t\\n] | [(),.*=<>!+\\-/%;|] | string",
        f"string ::= \"'\" \"%\"? {text} \"%\"? \"'\"",
        f"number ::= {number}",
    ])


def foreign_words(sql: str, ddl: str) -> list[str]:
    """The words of ``sql`` (outside string literals) that its grammar would refuse: neither SQL words, the
    DDL's names, nor short aliases. Empty for every constrained output."""
    bare, _ = schema_names(ddl)
    names, keywords = set(bare), set(SQL_WORDS)
    unquoted = re.sub(r"'[^']*'", "''", sql)
    return [w for w in _IDENT.findall(unquoted)
            if w not in names and w.upper() not in keywords and not ALIAS.fullmatch(w)]
