"""/v1/sql renames the names the served model never saw (its folder's schema_vocab.json) in the prompt and
answers in the original names. The served model is the committed base, which knows the generator's schema
words and not the held-out game database's."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from sqlray.serving.config import ServeSettings

from .test_serve import _client, _free_port

pytestmark = pytest.mark.usefixtures("ray_cluster")
GAME = ("CREATE TABLE players (\n  player_id INT PRIMARY KEY AUTO_INCREMENT,\n  username VARCHAR(255) UNIQUE NOT NULL,"
        "\n  server VARCHAR(50),\n  level INT\n);")


@pytest.fixture(scope="module")
def server():
    from ray import serve

    from sqlray.serving.cli import start

    base = Path(__file__).resolve().parents[2] / "data" / "tiny-sql-base"
    url = start(ServeSettings(model=str(base), model_name="base", port=_free_port(), max_batch_size=2,
                              batch_wait_timeout_s=0.05))
    yield url
    serve.shutdown()


def test_sql_route_renames_unknown_names_and_answers_in_the_originals(server):
    from sqlray.evaluation.constrain import foreign_words

    with _client(server) as c:
        r = c.post("/v1/sql", json={"context": GAME, "question": "How many players have level above 10?"})
        known = c.post("/v1/sql", json={"context": "CREATE TABLE customers (customer_id INT PRIMARY KEY, age INT);",
                                        "question": "How many customers have age above 10?"})
    assert r.status_code == 200 and known.status_code == 200, (r.text, known.text)
    body = r.json()
    assert set(body["renamed"]) == {"players", "player_id", "username", "server", "level"}, body
    prompt_names = {n.lower() for n in body["renamed"].values()}
    words = set(re.findall(r"\w+", re.sub(r"'[^']*'", "", body["sql"].lower())))
    assert "players" in words and not words & prompt_names and foreign_words(body["sql"], GAME) == [], body
    assert known.json()["renamed"] == {} and "customers" in known.json()["sql"], known.json()
