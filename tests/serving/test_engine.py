"""The engine without Ray: per-row limits and stops inside one batch, mixed adapters, streaming."""
from __future__ import annotations

import pytest

from serving.engine import GenRequest, HFEngine, PromptTooLong, cut_at_stop
from training.prompt import make_prompt

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
