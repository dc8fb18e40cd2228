"""The schema generator's made-up words: what the base model learns to copy rather than recall."""
import random
import sqlite3

import pytest
import sqlglot

from sqlray.evaluation.sandbox import open_sandbox
from sqlray.training.datagen import database_rows
from sqlray.training.schemagen import _reserved, english_words, naive_plural, nonce_word, synth_databases
from sqlray.training.schemas import database_ddl


def test_nonce_words_are_new_pronounceable_and_spelled_in_hangul():
    rng = random.Random(3)
    words = [nonce_word(rng, _reserved()) for _ in range(300)]
    assert len({w for w, _ in words}) > 250  # varied, not a small pool
    for latin, hangul in words:
        assert latin.isascii() and latin.isalpha() and latin.islower() and len(latin) >= 4
        assert latin not in _reserved()  # no SQL keyword, no word of the real vocabulary
        assert 2 <= len(hangul) <= 3 and all("가" <= ch <= "힣" for ch in hangul)
    r1, r2 = random.Random(5), random.Random(5)
    assert [nonce_word(r1) for _ in range(5)] == [nonce_word(r2) for _ in range(5)]  # seeded


def test_english_words_are_common_words_usable_as_bare_names():
    words = english_words()
    assert len(words) == len(set(words)) == 4997
    assert not set(words) & _reserved()  # no SQL keyword, no word of the generator's vocabulary
    db = sqlite3.connect(":memory:")
    for word in words:  # SQLite's own keywords (CHECK, PRIMARY, MATCH, ...) would break a DDL or a query
        assert word.isascii() and word.isalpha() and word.islower() and 4 <= len(word) <= 12
        # a table takes the plural (schemagen._nonce_entity): `value` is fine, `values` is a keyword
        for w in {word, naive_plural(word)}:
            db.execute(f"CREATE TABLE {w} ({w} INT, x INT)")
            db.execute(f"SELECT {w}.{w}, COUNT(*) FROM {w} AS {w} WHERE {w} = 1 GROUP BY {w} ORDER BY {w}")
            db.execute(f"DROP TABLE {w}")
            # the pipeline reads DDL and SQL as MySQL (evaluation.execution): FORCE, SIGNED, ... would not parse
            sqlglot.parse_one(f"SELECT {w}.{w} FROM {w} AS {w} WHERE {w} = 1 ORDER BY {w}", read="mysql")


def test_an_unknown_word_source_is_refused():
    with pytest.raises(ValueError, match="words must be one of"):
        synth_databases(3, seed=1, nonce=0.3, words="latin")


@pytest.mark.parametrize("words", ["madeup", "english"])
def test_nonce_keeps_the_schema_sequence_and_swaps_names(words):
    plain, made_up = synth_databases(80, seed=11), synth_databases(80, seed=11, nonce=0.3, words=words)
    swapped = 0
    for a, b in zip(plain, made_up):
        # the same draw: same entities, tables and column kinds; only some names differ
        assert b.domain.removesuffix("+nonce") == a.domain
        assert [[c.kind for c in t.columns] for t in a.tables] == [[c.kind for c in t.columns] for t in b.tables]
        names_a = {c.name for t in a.tables for c in t.columns} | {t.name for t in a.tables}
        names_b = {c.name for t in b.tables for c in t.columns} | {t.name for t in b.tables}
        swapped += len(names_b - names_a)
        if not b.domain.endswith("+nonce"):
            assert database_ddl(a) == database_ddl(b)
        assert len({t.name for t in b.tables}) == len(b.tables)  # two tables never draw the same word
        if words == "english":
            assert all(_has_english_word(n) for n in names_b - names_a), names_b - names_a
        open_sandbox(database_ddl(b)).close()  # every made-up DDL runs on SQLite
    total = sum(len(t.columns) + 1 for d in made_up for t in d.tables)
    assert 0.1 < swapped / total < 0.6


def _has_english_word(name: str) -> bool:
    """A name some naming style made from a word of the list (`tbl_gardens`, `gardenId`, `GARDEN_NO`)."""
    import re

    words = set(english_words())
    parts = [p.lower() for p in re.split(r"_|(?<=[a-z])(?=[A-Z])", name)]
    return any(p in words or p.removesuffix("s") in words for p in parts)


def _copied(nonce: float, words: str = "madeup") -> int:
    """English rows whose SQL uses a made-up column the question names by the same word."""
    rng, copied = random.Random(0), 0
    for db in synth_databases(30, seed=5, nonce=nonce, words=words):
        made_up = {c.en: c.name for t in db.tables for c in t.columns
                   if c.en and c.kind not in ("fk", "name") and all(w not in _reserved() for w in c.en.split())}
        for r in database_rows(db, rng, variants=1):
            copied += sum(ident in r["answer"] and r["lang"] == "en" and word in r["question"]
                          for word, ident in made_up.items())
    return copied


@pytest.mark.parametrize("words", ["madeup", "english"])
def test_questions_name_the_made_up_words_they_ask_about(words):
    assert _copied(0.0, words) == 0  # the vocabulary's words only
    assert _copied(0.5, words) > 30  # English questions say the very word the DDL and the SQL use


def test_the_bundled_schemas_are_the_generator_sequence(data_dir):
    """Adding made-up names must not move the bundled splits' schemas (same seed, nonce off)."""
    from sqlray.text2sql import load_text2sql
    from sqlray.training.datagen import SPLIT_SCHEMAS

    contexts = {r["context"] for split in load_text2sql(str(data_dir)).values() for r in split}
    synth = {database_ddl(d) for d in synth_databases(sum(SPLIT_SCHEMAS.values()), seed=42)}
    assert len(synth) == 340 and synth <= contexts
