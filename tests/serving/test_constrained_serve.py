"""/v1/sql decodes under the request's schema grammar on both engines (transformers with xgrammar's
masks, vLLM with its own structured-output backend); the OpenAI routes stay free. The served model is
the rigged ``parrot_model`` (see tests/conftest.py): free, it writes ``customers``; under the players
table's grammar it must write ``name`` and newlines instead."""
from __future__ import annotations

import pytest

from sqlray.serving.config import ServeSettings

from .test_serve import DDL, _client, _concurrent, _free_port

pytestmark = pytest.mark.usefixtures("ray_cluster")


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
    assert sql.json()["sql"].split() == ["name"] * 4 and foreign_words(sql.json()["sql"], DDL) == []
    assert free.json()["choices"][0]["text"] == "customers" * 8


def test_concurrent_constrained_requests_keep_their_own_schema(server):
    """One batch (HF) or one scheduler step (vLLM) holding requests on two schemas: each keeps its grammar."""
    other = "CREATE TABLE shops (shop_id INT PRIMARY KEY, city VARCHAR(30));"
    bodies = [("/v1/sql", {"context": d, "question": "q", "max_new_tokens": 8}) for d in (DDL, other) * 3]
    rs = _concurrent(server, bodies)
    assert [r.status_code for r in rs] == [200] * 6, [r.text for r in rs]
    assert [r.json()["sql"].split() for r in rs] == [["name"] * 4, []] * 3
