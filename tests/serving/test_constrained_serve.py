"""/v1/sql decodes under the request's schema grammar on both engines (transformers with xgrammar's
masks, vLLM with its own structured-output backend); the OpenAI routes stay free. The served model is
the rigged ``parrot_model`` (see tests/conftest.py): free, it writes ``customers``; under the players
table's grammar it must write a SELECT that names ``name`` (and nothing a shops table lacks)."""
from __future__ import annotations

import pytest

from sqlray.serving.config import ServeSettings

from .test_serve import DDL, _client, _concurrent, _free_port

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _follows(ddl: str, text: str) -> bool:
    """``text`` starts some SQL the DDL's grammar accepts (the reply may stop at its token limit)."""
    import xgrammar as xgr

    from sqlray.evaluation.constrain import sql_grammar

    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo([]))  # string-level matching: no vocabulary needed
    return xgr.GrammarMatcher(compiler.compile_grammar(sql_grammar(ddl))).accept_string(text)


@pytest.fixture(scope="module")
def server(engine_kind, parrot_model):
    from ray import serve

    from sqlray.serving.cli import start

    url = start(ServeSettings(engine=engine_kind, model=str(parrot_model), model_name="parrot", port=_free_port(),
                              api_key_env="SQLRAY_TEST_KEY", max_batch_size=4, batch_wait_timeout_s=0.05))
    yield url
    serve.shutdown()


def test_sql_route_names_only_the_ddl_and_completions_stay_free(server):
    from sqlray.evaluation.constrain import foreign_words
    from sqlray.text2sql import make_prompt

    with _client(server) as c:
        sql = c.post("/v1/sql", json={"context": DDL, "question": "How many players?", "max_new_tokens": 8})
        free = c.post("/v1/completions", json={"model": "parrot", "max_tokens": 8,
                                               "prompt": make_prompt(DDL, "How many players?")})
    assert sql.status_code == 200 and free.status_code == 200, (sql.text, free.text)
    text = sql.json()["sql"]
    assert text.startswith("SELECT") and "name" in text and "customers" not in text, text
    assert foreign_words(text, DDL) == [] and _follows(DDL, text)
    assert free.json()["choices"][0]["text"] == "customers" * 8


def test_concurrent_constrained_requests_keep_their_own_schema(server):
    """One batch (HF) or one scheduler step (vLLM) holding requests on two schemas: each keeps its grammar."""
    other = "CREATE TABLE shops (shop_id INT PRIMARY KEY, city VARCHAR(30));"
    bodies = [("/v1/sql", {"context": d, "question": "q", "max_new_tokens": 8}) for d in (DDL, other) * 3]
    rs = _concurrent(server, bodies)
    assert [r.status_code for r in rs] == [200] * 6, [r.text for r in rs]
    texts = [r.json()["sql"] for r in rs]
    assert all(t.startswith("SELECT") for t in texts), texts
    assert all("name" in t and _follows(DDL, t) for t in texts[::2]), texts
    assert all("name" not in t and _follows(other, t) for t in texts[1::2]), texts
