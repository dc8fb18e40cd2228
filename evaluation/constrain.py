"""Schema-constrained decoding, the pure part: the grammar of SQL that names only the request's DDL.

A small model trained on a few hundred schemas still writes names it memorised (``customers`` where the
DDL says ``t_clients``) and values it saw in training. PICARD (Scholak et al., 2021) showed that refusing
such tokens while decoding lifts execution accuracy without retraining. sqlray writes one EBNF grammar per
request (xgrammar's dialect, which vLLM's structured outputs also take): SQLite's SELECT with its clauses in
order, a table name only after FROM / JOIN and a column only where an expression stands, each from the DDL;
keywords in upper, lower or title case; string and number literals copy the question. A lexical grammar
(any keyword or name anywhere) let the 1M model write ``SELECT witH FROM witH`` on the unseen game database;
the structure lifted unseen-schema EX from 0.860 to 0.893 on the demo's model (README). Not covered:
WITH, window functions, VALUES. The engines apply it in ``evaluation.grammar_decoding`` (transformers) and
``serving.vllm_engine`` (vLLM).
"""
from __future__ import annotations

import re

# Words a SQL answer may use besides the schema's names, for the lexical check ``foreign_words``: the
# clauses, operators and functions of SQLite's SELECT (https://sqlite.org/lang_select.html), any case.
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
# A name whole: a quoted one keeps its spaces ("unit price", [order items]); lengths bounded so that scans
# of hostile input stay linear. A table may be schema-qualified (main.t, [dbo].[Users]): the last part counts.
_QUOTED_PART = r'"([^"\n]{1,256})"|`([^`\n]{1,256})`|\[([^\]\n]{1,256})\]'
_QUOTED_NAME = re.compile(_QUOTED_PART)
# For ``schema_names``' keyword-spelled names: a column definition's first word (then a type or constraint)
# and the word after TABLE, even where no column list follows.
_DEF_NAME = re.compile(r'(?:\(|,)\s*["`\[]?([^\W\d]\w*)["`\]]?\s+[A-Za-z]', re.UNICODE)
_TABLE_NAME = re.compile(r'\bTABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?["`\[]?([^\W\d]\w*)', re.UNICODE | re.IGNORECASE)
_ANY_NAME = r'(?:' + _QUOTED_PART + r'|([^\W\d]\w*))'
_NAME_NC = r'(?:"[^"\n]{1,256}"|`[^`\n]{1,256}`|\[[^\]\n]{1,256}\]|[^\W\d]\w*)'
_TABLE_DEF = re.compile(r'\bTABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:' + _NAME_NC + r'\s*\.\s*)?' + _ANY_NAME + r'\s*\(',
                        re.UNICODE | re.IGNORECASE)
_ELEMENT_NAME = re.compile(r'\s*' + _ANY_NAME, re.UNICODE)
_QUOTED = re.compile(r"'([^'\n]+)'|\"([^\"\n]+)\"")
_HANGUL = re.compile("[\uac00-\ud7a3]")
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
# Bounds: a request decides the grammar's size, and the grammar is compiled while others wait.
MAX_NAMES, MAX_SPANS, PARTICLE_SYLLABLES = 2000, 4000, 3


def schema_names(ddl: str) -> tuple[list[str], list[str]]:
    """(bare names, quoted names) the DDL defines, in first-seen order. Bare: its words minus DDL syntax,
    plus words in a name's place even if they spell a keyword (a column ``date``); quoted: names in
    quotes, backticks or brackets, spaces allowed, which the SQL must quote too."""
    return _schema_names(strip_comments(ddl))


def _schema_names(ddl: str) -> tuple[list[str], list[str]]:
    """``schema_names`` of a DDL already without comments."""
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
    strings = [s for s in spans if "'" not in s and s.isprintable()][:MAX_SPANS]
    numbers = {n.replace(",", "") for n in _NUMBER.findall(question)} | {"0", "1"}
    return sorted(set(strings)), sorted(numbers)


def _words(word: str) -> str:
    """A keyword as EBNF: upper, lower or title case (SELECT, select, Count), never mixed (``witH``)."""
    forms = {word, word.lower(), word.title()}
    return "(" + " | ".join(_lit(f) for f in sorted(forms)) + ")"


def _alts(names: list[str]) -> str:
    return " | ".join(_lit(n) for n in names) or '"_"'


# SQLite's SELECT (https://sqlite.org/lang_select.html) as EBNF, minus WITH, windows and VALUES: clause order
# is fixed, a table name stands only after FROM / JOIN, a column only where an expression does. K_X are
# keywords (``_words``); ws is one space or a newline and up to 8 spaces of indentation (a model cannot spend
# its tokens on whitespace). ``_SELECT`` is instantiated once for any column (suffix "") and once per table
# (suffix _t0, _t1, ...): a SELECT over one table names its own columns unqualified, any table's qualified
# (a correlated subquery's outer table); joins, comma lists and FROM subqueries take the suffix-less copy.
_TOP = """root ::= query (sp ";")? sp
query ::= single | part (ws compound ws part)+ order? limit? | core order? limit?
compound ::= K_UNION (ws K_ALL)? | K_INTERSECT | K_EXCEPT
limit ::= ws K_LIMIT ws number ((ws K_OFFSET ws | sp "," sp) number)?
item ::= (table | "(" sp query sp ")") (ws (K_AS ws)? alias)?
join ::= ws (jointype ws)? K_JOIN ws item (ws K_ON ws expr | ws K_USING sp "(" sp name (sp "," sp name)* sp ")")?
jointype ::= K_NATURAL | (K_NATURAL ws)? (K_INNER | K_CROSS | (K_LEFT | K_RIGHT | K_FULL) (ws K_OUTER)?)
op ::= "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=" | "+" | "*" | "/" | "%" | "||"
column ::= tcolumn | (alias ".")? name
qual ::= table | alias
quoted ::= "\\"" qname "\\"" | "`" qname "`" | "[" qname "]"
alias ::= [A-Za-z] [0-9]?
ws ::= " " | "\\n" [ \\t]{0,8}
sp ::= ws?"""
_SELECT = """core{S} ::= K_SELECT (ws (K_DISTINCT | K_ALL))? ws results{S} ws K_FROM ws source{S} \
(ws K_WHERE ws expr{S})? (ws K_GROUP ws K_BY ws exprs{S} (ws K_HAVING ws expr{S})?)?
order{S} ::= ws K_ORDER ws K_BY ws term{S} (sp "," sp term{S})*
term{S} ::= (expr{S} | alias) (ws (K_ASC | K_DESC))?
results{S} ::= result{S} (sp "," sp result{S})*
result{S} ::= "*" | qual "." "*" | expr{S} (ws (K_AS ws)? alias)?
exprs{S} ::= expr{S} (sp "," sp expr{S})*
expr{S} ::= operand{S} tail{S}*
operand{S} ::= (K_NOT ws)* "-"? primary{S}
tail{S} ::= sp op sp operand{S} | ws "-" ws operand{S} | ws (K_AND | K_OR) ws operand{S} \
| ws (K_NOT ws)? (K_LIKE | K_GLOB) ws operand{S} (ws K_ESCAPE ws "'" [^'\\n] "'")? \
| ws (K_NOT ws)? K_BETWEEN ws operand{S} ws K_AND ws operand{S} \
| ws (K_NOT ws)? K_IN sp "(" sp (query | exprs{S}) sp ")" | ws K_IS (ws K_NOT)? ws operand{S} | ws K_COLLATE ws K_NOCASE
primary{S} ::= column{S} | number | string | K_NULL | K_TRUE | K_FALSE | K_CURRENT_DATE | K_CURRENT_TIME \
| K_CURRENT_TIMESTAMP | "(" sp query sp ")" | "(" sp exprs{S} sp ")" | K_EXISTS sp "(" sp query sp ")" | call{S} \
| case{S} | K_CAST sp "(" sp expr{S} ws K_AS ws (K_INTEGER | K_REAL | K_TEXT | K_NUMERIC) sp ")"
call{S} ::= aggregate sp "(" sp ("*" | (K_DISTINCT ws)? exprs{S}) sp ")" \
| function sp "(" sp ((expr{S} | date_string) (sp "," sp (expr{S} | date_string))*)? sp ")"
case{S} ::= K_CASE (ws expr{S})? (ws K_WHEN ws expr{S} ws K_THEN ws expr{S})+ (ws K_ELSE ws expr{S})? ws K_END"""
AGGREGATES = ["COUNT", "SUM", "AVG", "MIN", "MAX", "TOTAL", "GROUP_CONCAT"]
FUNCTIONS = ["ROUND", "ABS", "LENGTH", "LOWER", "UPPER", "SUBSTR", "TRIM", "COALESCE", "IFNULL", "NULLIF", "IIF",
             "DATE", "TIME", "DATETIME", "STRFTIME", "JULIANDAY", "INSTR", "REPLACE", "MIN", "MAX"]
MAX_TABLE_GRAMMARS = 16  # more tables than this: one-table SELECTs may name any column (grammar size)


def strip_comments(ddl: str) -> str:
    """``ddl`` without its ``--`` and ``/* */`` comments; quoted text (a DEFAULT '--', a table "a--b") kept."""
    out, i, quote, n = [], 0, None, len(ddl)
    while i < n:
        ch = ddl[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"`[":
            quote = "]" if ch == "[" else ch
        elif ddl.startswith("--", i) or ddl.startswith("/*", i):
            end = ddl.find("\n" if ch == "-" else "*/", i + 2)
            i = n if end < 0 else end + (0 if ch == "-" else 2)
            out.append(" ")
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _elements(ddl: str, start: int, stop: int) -> list[str]:
    """The comma-separated elements of the parenthesised list opening before ``start``: column definitions
    and table constraints, nested parentheses and quotes kept whole (``DECIMAL(10, 2)``, ``'a,b'``)."""
    parts, depth, quote, begin = [], 0, None, start
    for i in range(start, stop):
        ch = ddl[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"`[":
            quote = "]" if ch == "[" else ch
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif ch in ",)" and not depth:
            parts.append(ddl[begin:i])
            begin = i + 1
            if ch == ")":
                return parts
    return [*parts, ddl[begin:stop]]  # unclosed: up to the next CREATE TABLE


def table_columns(ddl: str) -> dict[str, list[str]]:
    """Each CREATE TABLE's column names, in order, quoted names whole and without their quotes: the first
    name of each element of its column list that is not a table constraint (PRIMARY KEY (...), FOREIGN KEY,
    ...; a column called ``key`` only if quoted). Typed or not (``CREATE TABLE t (a, b INT)``)."""
    return _table_columns(strip_comments(ddl))


def _table_columns(ddl: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    found = list(_TABLE_DEF.finditer(ddl))
    for m, stop in zip(found, [f.start() for f in found[1:]] + [len(ddl)]):
        cols = {}
        for element in _elements(ddl, m.end(), max(stop, m.end())):
            c = _ELEMENT_NAME.match(element)
            if c and (c.group(4) is None or c.group(4).upper() not in _TABLE_CONSTRAINTS) and _first(c).isprintable():
                cols[_first(c)] = None
        if _first(m).isprintable():
            out.setdefault(_first(m), list(cols)[:MAX_NAMES])
    return out


def _first(m: re.Match) -> str:
    return next(g for g in m.groups() if g is not None)


def _forms(name: str) -> str:
    """A name as SQL may write it: bare if it is one word, and in double quotes, backticks or brackets."""
    quoted = [f"{_lit(o)} {_lit(name)} {_lit(c)}" for o, c in ('""', "``", "[]") if c not in name]
    return " | ".join(([_lit(name)] if _IDENT.fullmatch(name) else []) + quoted)


def _name_alts(names) -> str:
    """Every way SQL may write any of ``names`` (``_forms``), as one EBNF alternation."""
    return " | ".join(f for f in map(_forms, names) if f) or '"_"'


def _per_table(tables: dict[str, list[str]]) -> list[str]:
    """The rules that bind a one-table SELECT to its table's columns, and the top-level alternatives. A
    table whose columns the DDL does not type (``CREATE TABLE t (a, b)``) takes any column."""
    rules, single, parts, tcols = [], [], [], []
    for i, (t, cols) in enumerate(tables.items()):
        s, written = f"_t{i}", _name_alts([t])
        rules += [_SELECT.replace("{S}", s), f"source{s} ::= ({written}) (ws (K_AS ws)? alias)?",
                  f"column{s} ::= name{s} | tcolumn | alias \".\" name",
                  f"name{s} ::= " + (_name_alts(cols) if cols else "name")]
        single.append(f"core{s} order{s}? limit?")
        parts.append(f"core{s}")
        tcols.append(f"({written}) \".\" name{s}")
    # Two or more FROM items (or a subquery) take the suffix-less rules; one table took its own above.
    return [*rules, "single ::= " + " | ".join(single), "part ::= core | " + " | ".join(parts),
            "tcolumn ::= " + " | ".join(tcols),
            "source ::= item join+ | item (sp \",\" sp item)+ | \"(\" sp query sp \")\" (ws (K_AS ws)? alias)?"]


def sql_grammar(ddl: str, question: str | None = None) -> str:
    """The EBNF of a SELECT over ``ddl``'s tables and columns (``_TOP``, ``_SELECT``). With ``question``,
    string and number literals must also copy it (``question_values``), as every literal of the training
    data does."""
    ddl = strip_comments(ddl)  # read once: the names and the tables' columns
    tables = _table_columns(ddl)
    bare, quotable = _schema_names(ddl)
    columns = list({c: None for cols in tables.values() for c in cols})[:MAX_NAMES]
    if tables and len(tables) <= MAX_TABLE_GRAMMARS:
        shape = _per_table(tables)
    else:  # no CREATE TABLE found (any name is a table) or too many: one-table SELECTs take any column
        shape = ["single ::= core order? limit?", "part ::= core", "tcolumn ::= qual \".\" name",
                 "source ::= item join* | item (sp \",\" sp item)+"]
    if question is None:
        text, number = "[^'\\n]*", "[0-9]+ (\".\" [0-9]+)?"
    else:
        strings, numbers = question_values(question)
        text = "(" + " | ".join(_lit(s) for s in strings) + ")?"
        number = " | ".join(_lit(n) for n in numbers)
    body = "\n".join([_TOP, _SELECT.replace("{S}", ""), *shape])
    keywords = set(re.findall(r"K_(\w+)", body)) | set(AGGREGATES) | set(FUNCTIONS)
    return "\n".join([
        body,
        # Parsed tables: their names and columns only, each bare (one word) or quoted; none (no CREATE
        # TABLE this reader knows): any word of the DDL, as the lexical grammar allowed.
        "table ::= " + (_name_alts(list(tables)[:MAX_NAMES]) if tables else _alts(bare) + " | quoted"),
        "name ::= " + (_name_alts(columns) if columns else _alts(bare) + " | quoted"),
        "qname ::= " + _alts(quotable),
        "aggregate ::= " + " | ".join(f"K_{k}" for k in AGGREGATES),
        "function ::= " + " | ".join(f"K_{k}" for k in FUNCTIONS),
        *(f"K_{k} ::= {_words(k)}" for k in sorted(keywords)),
        f"string ::= \"'\" \"%\"? {text} \"%\"? \"'\"",
        "date_string ::= \"'\" (" + _alts(SQL_STRINGS) + ") \"'\"",  # only as a function's argument
        f"number ::= {number}",
    ])


def foreign_words(sql: str, ddl: str) -> list[str]:
    """The words of ``sql`` (outside string literals) that no place in its grammar takes: neither SQL words,
    the DDL's names, nor short aliases. Empty for every constrained output (the grammar also refuses words
    out of place, which this lexical check cannot see)."""
    bare, _ = schema_names(ddl)
    names, keywords = set(bare), set(SQL_WORDS)
    unquoted = re.sub(r"'[^']*'", "''", sql)
    return [w for w in _IDENT.findall(unquoted)
            if w not in names and w.upper() not in keywords and not ALIAS.fullmatch(w)]
