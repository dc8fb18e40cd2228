"""The engine without Ray: per-row limits and stops inside one batch, mixed adapters, streaming."""
from __future__ import annotations

import pytest

from sqlray.serving.engine import GenRequest, HFEngine, PromptTooLong, cut_at_stop
from sqlray.text2sql import make_prompt

DDL = "CREATE TABLE players (id INT PRIMARY KEY, name VARCHAR(50), level INT);"


@pytest.fixture(scope="module")
def engine(served_model):
    return HFEngine(str(served_model), threads=1)


def test_cut_at_stop_takes_the_earliest_stop():
    assert cut_at_stop("SELECT 1;\n\n### SQL 봇: x", ["###", "\n\n"]) == ("SELECT 1;", True)
    assert cut_at_stop("SELECT 1", ["###"]) == ("SELECT 1", False)


def test_batch_honours_each_requests_token_limit(engine):
    p = make_prompt(DDL, "How many players?")
    short, long_ = engine.generate([GenRequest(p, 3), GenRequest(p, 20)])
    assert short.completion_tokens <= 3 and long_.completion_tokens > 3
    assert short.finish_reason == "length" or short.completion_tokens < 3
    # Greedy decoding: the short answer is a prefix of the long one, batching changed nothing.
    assert long_.text.startswith(short.text)
    alone = engine.generate([GenRequest(p, 20)])[0]
    assert alone.text == long_.text


def test_batch_honours_each_requests_stop_strings(engine):
    p = make_prompt(DDL, "List player names")
    (free,) = engine.generate([GenRequest(p, 30)])
    assert len(free.text) > 4
    stop = free.text[2:4]  # a string the model will write: the stopped row must end before it
    stopped, other = engine.generate([GenRequest(p, 30, [stop]), GenRequest(p, 30)])
    assert stopped.text == free.text[: free.text.find(stop)] and stopped.finish_reason == "stop"
    assert other.text == free.text


def test_mixed_adapters_in_one_batch(engine, adapters):
    p = make_prompt(DDL, "How many players?")
    engine.load_adapter("alpha", str(adapters["alpha"]))
    engine.load_adapter("beta", str(adapters["beta"]))
    base, a, b = engine.generate([GenRequest(p, 16), GenRequest(p, 16, adapter="alpha"), GenRequest(p, 16, adapter="beta")])
    assert len({base.text, a.text, b.text}) == 3, (base.text, a.text, b.text)
    assert engine.generate([GenRequest(p, 16, adapter="alpha")])[0].text == a.text
    engine.unload_adapter("alpha")
    engine.unload_adapter("beta")
    assert not engine.adapters
    assert engine.generate([GenRequest(p, 16)])[0].text == base.text  # the base is intact after unloading
    with pytest.raises(KeyError):
        engine.generate([GenRequest(p, 4, adapter="alpha")])


def test_stream_yields_the_same_text_as_generate(engine):
    p = make_prompt(DDL, "Top 3 players by level")
    (full,) = engine.generate([GenRequest(p, 24)])
    assert "".join(engine.stream(GenRequest(p, 24))) == full.text
    stop = full.text[3:5]
    assert "".join(engine.stream(GenRequest(p, 24, [stop]))) == full.text[: full.text.find(stop)]


def test_prompt_longer_than_the_context_is_refused(engine):
    with pytest.raises(PromptTooLong, match="context"):
        engine.check(GenRequest("word " * 2000, 16))


def test_prefix_cache_changes_no_output_and_skips_shared_heads(served_model, adapters, engine):
    """Questions about the same schema share the prompt head: cached, yet every answer is what the
    uncached engine writes, also for rows of different lengths, a prompt without the marker, and adapters."""
    cached = HFEngine(str(served_model), threads=1, prefix_marker="### Question:\n", prefix_cache_size=2)
    other = "CREATE TABLE guilds (id INT, name TEXT, founded DATE, members INT, region VARCHAR(20));"
    prompts = [make_prompt(DDL, "How many players?"), make_prompt(other, "Which guild has the most members overall?"),
               make_prompt(DDL, "List the names of players above level 10, highest first"), "SELECT name FROM"]
    reqs = [GenRequest(p, 12) for p in prompts]
    want = [r.text for r in engine.generate(reqs)]
    assert [r.text for r in cached.generate(reqs)] == want
    assert (cached.prefix_cache.misses, cached.prefix_cache.hits) == (2, 1)  # DDL's head computed once
    assert [r.text for r in cached.generate(reqs[::-1])] == want[::-1]
    assert cached.prefix_cache.misses == 2 and cached.prefix_cache.hits == 4
    assert cached.generate(reqs)[0].prompt_tokens == engine.generate(reqs)[0].prompt_tokens
    # A head's KV depends on the adapter: each gets its own entry, LRU-bounded to 2.
    for e in (engine, cached):
        e.load_adapter("alpha", str(adapters["alpha"]))
    mixed = [GenRequest(prompts[0], 12, adapter="alpha"), GenRequest(prompts[2], 12)]
    try:
        assert [r.text for r in cached.generate(mixed)] == [r.text for r in engine.generate(mixed)]
        assert ("alpha", ) == tuple({k[0] for k in cached.prefix_cache.entries} - {"__base__"})
        assert len(cached.prefix_cache.entries) == 2
    finally:
        for e in (engine, cached):
            e.unload_adapter("alpha")
    assert all(k[0] != "alpha" for k in cached.prefix_cache.entries)


def test_an_evicted_adapter_stays_loaded_until_its_last_user_is_done(engine, adapters):
    p = make_prompt(DDL, "How many players?")
    engine.acquire("alpha", str(adapters["alpha"]))  # Serve's LRU entry
    engine.acquire("alpha")  # a batch about to generate with it
    engine.release("alpha")  # the LRU evicts it meanwhile
    assert "alpha" in engine.adapters
    (res,) = engine.generate([GenRequest(p, 8, adapter="alpha")])
    assert res.completion_tokens > 0
    engine.release("alpha")  # the batch is done: the last user unloads it
    assert "alpha" not in engine.adapters and not engine._refs
    with pytest.raises(KeyError):
        engine.acquire("alpha")  # without a path only a loaded adapter can be held
    with pytest.raises(Exception):
        engine.acquire("broken", str(adapters["alpha"].parent / "missing"))
    assert not engine._refs and "broken" not in engine.adapters  # failed calls hold nothing
