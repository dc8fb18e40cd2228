"""The schema generator's made-up words: what the base model learns to copy rather than recall."""
import random

from sqlray.evaluation.sandbox import open_sandbox
from sqlray.training.datagen import database_rows
from sqlray.training.schemagen import _reserved, nonce_word, synth_databases
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


def test_nonce_keeps_the_schema_sequence_and_swaps_names():
    plain, made_up = synth_databases(80, seed=11), synth_databases(80, seed=11, nonce=0.3)
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
        open_sandbox(database_ddl(b)).close()  # every made-up DDL runs on SQLite
    total = sum(len(t.columns) + 1 for d in made_up for t in d.tables)
    assert 0.1 < swapped / total < 0.6


def _copied(nonce: float) -> int:
    """English rows whose SQL uses a made-up column the question names by the same word."""
    rng, copied = random.Random(0), 0
    for db in synth_databases(30, seed=5, nonce=nonce):
        made_up = {c.en: c.name for t in db.tables for c in t.columns
                   if c.en and c.kind not in ("fk", "name") and all(w not in _reserved() for w in c.en.split())}
        for r in database_rows(db, rng, variants=1):
            copied += sum(ident in r["answer"] and r["lang"] == "en" and word in r["question"]
                          for word, ident in made_up.items())
    return copied


def test_questions_name_the_made_up_words_they_ask_about():
    assert _copied(0.0) == 0  # real words only
    assert _copied(0.5) > 30  # English questions say the very word the DDL and the SQL use


def test_the_bundled_schemas_are_the_generator_sequence(data_dir):
    """Adding made-up names must not move the bundled splits' schemas (same seed, nonce off)."""
    from sqlray.text2sql import load_text2sql
    from sqlray.training.datagen import SPLIT_SCHEMAS

    contexts = {r["context"] for split in load_text2sql(str(data_dir)).values() for r in split}
    synth = {database_ddl(d) for d in synth_databases(sum(SPLIT_SCHEMAS.values()), seed=42)}
    assert len(synth) == 340 and synth <= contexts
