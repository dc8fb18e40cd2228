"""Schema-constrained decoding: the SQL may name only the tables and columns of the request's DDL.

A small model trained on a few hundred schemas still writes names it memorised (``customers`` where the
DDL says ``t_clients``). PICARD (Scholak et al., 2021) showed that rejecting such tokens while decoding
lifts execution accuracy without retraining. sqlray does it at the lexical level, with one EBNF grammar
per request that both engines run through xgrammar (vLLM's own structured-output backend): every word
of the SQL is a SQL keyword, a name from the DDL or a short alias; string and number literals copy the
question; punctuation and spaces are free; two words (or numbers) never touch. Clause order is left to
the model.
"""
from __future__ import annotations

import logging
import re
import threading

import torch
from transformers import LogitsProcessor

# Words a SQL answer may use besides the schema's names: the clauses, operators and functions of
# SQLite's SELECT (https://sqlite.org/lang_select.html); both cases, as users write either.
SQL_WORDS = """SELECT FROM WHERE GROUP BY HAVING ORDER ASC DESC LIMIT OFFSET DISTINCT ALL AS ON JOIN INNER LEFT
RIGHT FULL OUTER CROSS NATURAL USING UNION INTERSECT EXCEPT AND OR NOT IN IS NULL LIKE GLOB BETWEEN EXISTS CASE
WHEN THEN ELSE END CAST WITH RECURSIVE COUNT SUM AVG MIN MAX TOTAL ROUND ABS LENGTH LOWER UPPER SUBSTR TRIM
COALESCE IFNULL NULLIF DATE TIME DATETIME STRFTIME JULIANDAY INTEGER REAL TEXT TRUE FALSE ESCAPE COLLATE NOCASE
INSTR REPLACE""".split()
# A DDL's own words that are never names (the identifier regex below would pick them up).
DDL_WORDS = {w.upper() for w in """CREATE TABLE IF NOT EXISTS PRIMARY KEY FOREIGN REFERENCES UNIQUE NULL DEFAULT
AUTO_INCREMENT AUTOINCREMENT CHECK CONSTRAINT INDEX ON DELETE UPDATE CASCADE INT INTEGER BIGINT SMALLINT TINYINT
VARCHAR CHAR TEXT DATE DATETIME TIMESTAMP TIME DECIMAL NUMERIC FLOAT DOUBLE REAL BOOLEAN BOOL BLOB""".split()}
log = logging.getLogger(__name__)
_IDENT = re.compile(r"[^\W\d]\w*", re.UNICODE)
_ALIAS = '[a-z] [0-9]?'  # the one- or two-character aliases of joins (c, p, t1)


def schema_names(ddl: str) -> list[str]:
    """Every name the DDL defines (tables and columns), in first-seen order: its words minus DDL syntax."""
    seen: dict[str, None] = {}
    for m in _IDENT.finditer(ddl):
        w = m.group(0)
        if w.upper() not in DDL_WORDS:
            seen.setdefault(w, None)
    return list(seen)


def _lit(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


_QUOTED = re.compile(r"'([^'\n]+)'|\"([^\"\n]+)\"")
_HANGUL = re.compile("[\uac00-\ud7a3]")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def question_values(question: str, max_words: int = 3) -> tuple[list[str], list[str]]:
    """What a literal may copy from the request: (strings, numbers). Strings are its quoted spans, its
    words and runs of up to ``max_words`` words (punctuation trimmed), and the prefixes of Korean words,
    whose particles stick to the value (서울에서 -> 서울); numbers are the numbers it writes, plus 0 and 1."""
    spans = {a or b for a, b in _QUOTED.findall(question)}
    words = [w.strip(".,?!:;()[]{}\"'`") for w in question.split()]
    words = [w for w in words if w]
    for i in range(len(words)):
        for j in range(i + 1, min(i + max_words, len(words)) + 1):
            spans.add(" ".join(words[i:j]))
        if _HANGUL.search(words[i]):
            spans.update(words[i][:k] for k in range(1, len(words[i])))
    # Only printable text: a control character (or U+2028) would end the grammar's string literal.
    strings = sorted(s for s in spans if "'" not in s and s.isprintable())
    return strings, sorted(set(_NUMBER.findall(question)) | {"0", "1"})


def sql_grammar(ddl: str, question: str | None = None) -> str:
    """The EBNF (xgrammar's dialect, which vLLM also takes) of SQL naming only ``ddl``'s tables and columns.
    With ``question``, string and number literals must also copy it (``question_values``), as every
    literal of the training data does."""
    names = schema_names(ddl)
    keywords = sorted({w for k in SQL_WORDS for w in (k, k.lower())})
    name_alts = " | ".join(_lit(n) for n in names) or '"_"'
    if question is None:
        text, number = "[^'\\n]*", "[0-9]+ (\".\" [0-9]+)?"
    else:
        strings, numbers = question_values(question)
        text = "(" + " | ".join(_lit(s) for s in strings) + ")?" if strings else '""'
        number = " | ".join(_lit(n) for n in numbers)
    return "\n".join([
        # Words and numbers are atoms; two atoms never touch (no "name" + "city", no "1" + "8").
        "root ::= other* (atom other+)* atom?",
        "atom ::= word | number",
        f"word ::= keyword | name | \"\\\"\" name \"\\\"\" | \"`\" name \"`\" | {_ALIAS}",
        "keyword ::= " + " | ".join(_lit(k) for k in keywords),
        f"name ::= {name_alts}",
        "other ::= [ \\t\\n] | [(),.*=<>!+\\-/%;|] | string",
        f"string ::= \"'\" \"%\"? {text} \"%\"? \"'\"",
        f"number ::= {number}",
    ])


class GrammarCache:
    """Compiled grammars for one tokenizer (compiling is the costly part; requests repeat schemas)."""

    def __init__(self, tokenizer, vocab_size: int):
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                  stop_token_ids=[tokenizer.eos_token_id])
        self.compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=True)
        self.vocab_size = vocab_size
        self._lock = threading.Lock()

    def compile(self, grammar: str):
        with self._lock:
            return self.compiler.compile_grammar(grammar)


def grammar_cache(model, tokenizer) -> "GrammarCache":
    """One grammar compiler per loaded model (kept on it): compiled schemas are reused across batches."""
    cache = getattr(model, "_sqlray_grammars", None)
    if cache is None:
        cache = GrammarCache(tokenizer, model.config.vocab_size)
        model._sqlray_grammars = cache
    return cache


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks, per batch row, the tokens its grammar forbids next (rows whose grammar is None are free).

    Unlike xgrammar's own HF processor it tolerates rows that ``generate`` ended by a stop string or a
    token limit (their next tokens are padding the grammar never accepted): such a row stops being masked.
    Use one instance per ``generate`` call.
    """

    def __init__(self, cache: GrammarCache, grammars: list[str | None]):
        import xgrammar as xgr

        self.xgr = xgr
        self.matchers = [self._matcher(cache, g) for g in grammars]
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), cache.vocab_size)
        self.vocab_size = cache.vocab_size
        self.started = False

    def _matcher(self, cache: GrammarCache, grammar: str | None):
        if not grammar:
            return None
        try:
            return self.xgr.GrammarMatcher(cache.compile(grammar))
        except RuntimeError as e:  # never expected (literals are escaped): that row decodes freely, others go on
            log.warning("schema grammar did not compile; this row decodes unconstrained: %s", str(e)[:200])
            return None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.started:  # the previous step's tokens: advance each live row's matcher
            for i, tok in enumerate(input_ids[:, -1].tolist()):
                m = self.matchers[i]
                if m is not None and (m.is_terminated() or not m.accept_token(tok) or m.is_terminated()):
                    self.matchers[i] = None  # finished (EOS, stop string or padding): no longer masked
        self.started = True
        live = [i for i, m in enumerate(self.matchers) if m is not None]
        if live:
            for i in live:
                self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
            self.xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device),
                                                 vocab_size=self.vocab_size, indices=live)
        return scores


def foreign_words(sql: str, ddl: str) -> list[str]:
    """The words of ``sql`` (outside string literals) that its grammar would refuse: neither SQL words, the
    DDL's names, nor short aliases. Empty for every constrained output."""
    allowed = set(schema_names(ddl)) | {w for k in SQL_WORDS for w in (k, k.lower())}
    bare = re.sub(r"'[^']*'", "''", sql)
    return [w for w in _IDENT.findall(bare) if w not in allowed and not re.fullmatch(r"[a-z][0-9]?", w)]
