"""Real Ray Serve on CPU with the tiny model, once per engine (transformers and vLLM's CPU build): every
route through httpx and the official openai client, batching, adapter switching, the bad-input battery,
auth and overload."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import time

import httpx
import pytest

from sqlray.serving.config import ServeSettings

pytestmark = pytest.mark.usefixtures("ray_cluster")
DDL = "CREATE TABLE players (id INT PRIMARY KEY, name VARCHAR(50), level INT);"
KEY = "test-secret-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(engine_kind, served_model, adapters, monkeypatch_module):
    from ray import serve

    from sqlray.serving.cli import start

    assert os.environ.get("SQLRAY_TEST_KEY") == KEY  # set before Ray started (conftest): replicas inherit it
    s = ServeSettings(engine=engine_kind, model=str(served_model), model_name="tiny", port=_free_port(),
                      adapters={k: str(v) for k, v in adapters.items()}, max_batch_size=8, batch_wait_timeout_s=0.1,
                      max_ongoing_requests=16, max_queued_requests=8, max_tokens_limit=256, max_input_chars=2000,
                      max_body_bytes=8000, api_key_env="SQLRAY_TEST_KEY", max_adapters_per_replica=2)
    url = start(s)
    yield url
    serve.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _client(url: str, auth: bool = True) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {KEY}"} if auth else {})


def test_health_ready_and_models(server, engine_kind):
    with _client(server) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["engine"] == engine_kind
        models = c.get("/v1/models")
        assert models.status_code == 200, models.text
        ids = [m["id"] for m in models.json()["data"]]
        assert ids == ["tiny", "alpha", "beta"]


def test_sql_route_returns_sql_validity_and_usage(server):
    with _client(server) as c:
        r = c.post("/v1/sql", json={"context": DDL, "question": "How many players are there?", "max_new_tokens": 24})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"sql", "valid", "model", "usage", "finish_reason"}
    assert isinstance(body["sql"], str) and isinstance(body["valid"], bool) and body["model"] == "tiny"
    assert "###" not in body["sql"]
    assert 0 < body["usage"]["completion_tokens"] <= 24
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def test_openai_client_completions_chat_and_streaming(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list().data][0] == "tiny"
    c = client.completions.create(model="tiny", prompt="SELECT name FROM", max_tokens=12, temperature=0)
    assert c.choices[0].finish_reason in ("stop", "length") and c.usage.completion_tokens <= 12
    chunks = list(client.completions.create(model="tiny", prompt="SELECT name FROM", max_tokens=12, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == c.choices[0].text
    assert chunks[-1].choices[0].finish_reason == c.choices[0].finish_reason  # "length" when it ran out
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "SELECT name FROM"}],
                                          max_tokens=12)
    assert chat.choices[0].message.role == "assistant"
    streamed = client.chat.completions.create(model="tiny", max_tokens=12, stream=True,
                                              messages=[{"role": "user", "content": "SELECT name FROM"}])
    text = "".join(ch.choices[0].delta.content or "" for ch in streamed)
    assert text == chat.choices[0].message.content


def test_stop_strings_are_honoured(server):
    with _client(server) as c:
        free = c.post("/v1/completions", json={"model": "tiny", "prompt": "SELECT", "max_tokens": 20}).json()
        text = free["choices"][0]["text"]
        assert len(text) > 4
        stopped = c.post("/v1/completions", json={"model": "tiny", "prompt": "SELECT", "max_tokens": 20,
                                                  "stop": [text[2:4]]}).json()
    assert stopped["choices"][0]["text"] == text[: text.find(text[2:4])]


def _concurrent(url: str, bodies: list[tuple[str, dict]]) -> list[httpx.Response]:
    async def go():
        async with httpx.AsyncClient(base_url=url, timeout=180, headers={"Authorization": f"Bearer {KEY}"},
                                     limits=httpx.Limits(max_connections=200)) as c:
            return await asyncio.gather(*[c.post(path, json=b) for path, b in bodies])
    return asyncio.run(go())


def test_concurrent_requests_are_batched_and_answers_unchanged(server, engine_kind):
    from ray import serve

    body = {"context": DDL, "question": "List the names of players above level 10", "max_new_tokens": 16}
    with _client(server) as c:
        alone = c.post("/v1/sql", json=body).json()["sql"]
    handle = serve.get_deployment_handle("SQLModel", app_name="sqlray")
    before = len(handle.stats.remote().result().get("batch_sizes", []))
    rs = _concurrent(server, [("/v1/sql", body)] * 8)
    assert [r.status_code for r in rs] == [200] * 8, [r.text for r in rs]
    assert [r.json()["sql"] for r in rs] == [alone] * 8  # batching never changes an answer
    if engine_kind == "hf":  # vLLM batches inside its scheduler (continuous batching): no Serve batches to count
        sizes = handle.stats.remote().result()["batch_sizes"][before:]
        assert max(sizes) > 1, sizes


@pytest.mark.engines("hf")  # Serve's batch window; vLLM has none
def test_batch_size_follows_the_replicas_concurrency(server):
    from ray import serve

    body = {"context": DDL, "question": "Show the highest level", "max_new_tokens": 8}
    handle = serve.get_deployment_handle("SQLModel", app_name="sqlray")
    with _client(server) as c:
        for _ in range(3):
            assert c.post("/v1/sql", json=body).status_code == 200
    # One client at a time: a batch closes with its one request instead of waiting out the timeout.
    assert handle.stats.remote().result()["batch_target"] == 1
    before = len(handle.stats.remote().result()["batch_sizes"])
    rs = _concurrent(server, [("/v1/sql", body)] * 8)
    assert [r.status_code for r in rs] == [200] * 8
    st = handle.stats.remote().result()
    assert st["batch_target"] > 1 and max(st["batch_sizes"][before:]) > 1, st


def test_adapters_switch_per_request(server):
    body = {"context": DDL, "question": "How many players?", "max_new_tokens": 24}
    with _client(server) as c:
        outs = {a: c.post("/v1/sql", json={**body, "adapter": a}).json() for a in ("alpha", "beta")}
        base = c.post("/v1/sql", json=body).json()
        again = c.post("/v1/sql", json={**body, "adapter": "alpha"}).json()
        comp = c.post("/v1/completions", json={"model": "beta", "prompt": "SELECT", "max_tokens": 8})
    assert outs["alpha"]["adapter"] == "alpha" and outs["beta"]["adapter"] == "beta" and base["adapter"] is None
    raws = {outs["alpha"]["sql"], outs["beta"]["sql"], base["sql"]}
    assert len(raws) == 3, raws
    assert again["sql"] == outs["alpha"]["sql"]
    assert comp.status_code == 200 and comp.json()["model"] == "beta"
    # Serve's multiplexing header picks the adapter too (and routes to a replica that holds it).
    with _client(server) as c:
        by_header = c.post("/v1/sql", json=body, headers={"serve_multiplexed_model_id": "beta"}).json()
    assert by_header["adapter"] == "beta" and by_header["sql"] == outs["beta"]["sql"]
    # A mixed batch (base + both adapters at once) gives each request its own adapter's answer.
    rs = _concurrent(server, [("/v1/sql", {**body, "adapter": a}) for a in ("alpha", "beta")] + [("/v1/sql", body)])
    assert [r.json()["sql"] for r in rs] == [outs["alpha"]["sql"], outs["beta"]["sql"], base["sql"]]


BAD = [
    (b'{"context": "x", "question": ', 400, "not valid JSON"),
    (b'\xff\xfe{"context": 1}', 400, "UTF-8"),
    (b'[1, 2]', 422, "JSON object"),
    (json.dumps({"question": "q"}).encode(), 422, "context"),
    (json.dumps({"context": DDL, "question": 5}).encode(), 422, "question"),
    (json.dumps({"context": DDL, "question": "   "}).encode(), 422, "question"),
    (json.dumps({"context": DDL, "question": "q", "max_new_tokens": 0}).encode(), 422, "max_new_tokens"),
    (json.dumps({"context": DDL, "question": "q", "max_new_tokens": 100000}).encode(), 422, "max_new_tokens"),
    (json.dumps({"context": DDL, "question": "q", "max_new_tokens": "5"}).encode(), 422, "max_new_tokens"),
    (json.dumps({"context": DDL, "question": "q", "adapter": "nope"}).encode(), 404, "nope"),
    (json.dumps({"context": DDL, "question": "q" * 3000}).encode(), 413, "question"),
    (json.dumps({"context": DDL * 200, "question": "q"}).encode(), 413, "bytes"),
    (json.dumps({"context": DDL, "question": "q", "extra": 1}).encode(), 422, "extra"),
    (b"[" * 3000, 400, "nested"),  # under the size limit, deeper than the JSON parser recurses
]


@pytest.mark.parametrize("raw,status,needle", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_gets_a_clear_json_error(server, raw, status, needle):
    with _client(server) as c:
        r = c.post("/v1/sql", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert needle in err["message"], err
        assert c.get("/healthz").status_code == 200  # still up


def test_openai_routes_reject_bad_requests(server):
    with _client(server) as c:
        assert c.post("/v1/completions", json={"model": "ghost", "prompt": "x"}).status_code == 404
        assert c.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": -1}).status_code == 422
        assert c.post("/v1/completions", json={"model": "tiny", "prompt": "x", "n": 3}).status_code == 422
        assert c.post("/v1/chat/completions", json={"model": "tiny", "messages": []}).status_code == 422
        long_prompt = c.post("/v1/completions", json={"model": "tiny", "prompt": "7" * 1900, "max_tokens": 256})  # digits: one token each
        assert long_prompt.status_code == 400 and "context" in long_prompt.json()["error"]["message"]


def test_api_key_is_required(server):
    with _client(server, auth=False) as c:
        r = c.post("/v1/sql", json={"context": DDL, "question": "q"})
        assert r.status_code == 401 and "bearer" in r.json()["error"]["message"]
        assert c.get("/v1/models").status_code == 401
        assert c.get("/healthz").status_code == 200  # liveness stays open for probes
        bad = c.post("/v1/sql", json={"context": DDL, "question": "q"}, headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401


def test_overload_gives_503_with_retry_after_and_the_server_survives(server):
    body = {"context": DDL, "question": "List every player name and level", "max_new_tokens": 200}
    rs = _concurrent(server, [("/v1/sql", body)] * 60)  # 16 held + 8 queued: the rest must be refused
    codes = [r.status_code for r in rs]
    assert codes.count(503) > 0 and codes.count(200) > 0, codes
    assert set(codes) <= {200, 503}
    assert all(r.headers.get("retry-after") and r.json()["error"]["type"] == "overloaded"
               for r in rs if r.status_code == 503)
    with _client(server) as c:
        assert c.post("/v1/sql", json={**body, "max_new_tokens": 8}).status_code == 200


def test_streams_report_length_and_usage_and_refuse_long_prompts_before_streaming(server):
    from openai import BadRequestError, OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    chunks = list(client.completions.create(model="tiny", prompt="SELECT name FROM", max_tokens=3, stream=True,
                                            stream_options={"include_usage": True}))
    finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals and finals[-1].choices[0].finish_reason in ("length", "stop")
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens <= 3 and usage.prompt_tokens > 0
    if finals[-1].choices[0].finish_reason == "length":
        assert usage.completion_tokens == 3
    with pytest.raises(BadRequestError) as e:  # a 400, not a 200 followed by an error event
        list(client.completions.create(model="tiny", prompt="7" * 1900, max_tokens=256, stream=True))
    assert "context" in str(e.value)


def test_disconnected_streams_release_adapters_and_slots(server):
    from ray import serve

    handle = serve.get_deployment_handle("SQLModel", app_name="sqlray")

    async def leave_early(c, adapter):
        async with c.stream("POST", "/v1/completions", json={"model": adapter, "prompt": "SELECT", "max_tokens": 200,
                                                             "stream": True}) as r:
            assert r.status_code == 200
            async for _ in r.aiter_lines():
                break  # the client goes away mid-stream

    async def go():
        async with httpx.AsyncClient(base_url=server, timeout=120, headers={"Authorization": f"Bearer {KEY}"}) as c:
            await asyncio.gather(*[leave_early(c, ("alpha", "beta")[i % 2]) for i in range(20)])
    asyncio.run(go())
    deadline = time.time() + 60
    while time.time() < deadline:
        refs = handle.refs.remote().result()
        if refs["admitted"] == 0 and all(v <= 1 for v in refs["adapter_refs"].values()):
            break  # only Serve's LRU entry may still hold an adapter
        time.sleep(0.5)
    assert refs["admitted"] == 0 and all(v <= 1 for v in refs["adapter_refs"].values()), refs
    with _client(server) as c:
        assert c.post("/v1/sql", json={"context": DDL, "question": "q", "max_new_tokens": 4}).status_code == 200


def test_body_limit_is_enforced_while_reading(server):
    host, port = server.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:  # claims 1 GB, sends 10 bytes
        s.sendall(b"POST /v1/sql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{\"context\"")
        head = s.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head  # answered without waiting for (or reading) the rest

    def chunks():
        for _ in range(100):
            yield b"x" * 1000  # chunked, no Content-Length: cut off at the limit (8000 bytes)
    with _client(server) as c:
        r = c.post("/v1/sql", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "limit" in r.json()["error"]["message"]


def test_every_error_has_openais_shape_and_readyz_hides_adapters(server):
    with _client(server) as c:
        r = c.get("/v1/nothing-here")
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        r = c.get("/v1/sql")
        assert r.status_code == 405 and "error" in r.json()
        assert "adapters_loaded" in c.get("/readyz").json()
    with _client(server, auth=False) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200 and "adapters_loaded" not in ready.json()


@pytest.mark.engines("vllm")
def test_vllm_answers_match_transformers_greedy(server, served_model, adapters):
    """The same prompts through vLLM (served) and the transformers engine (in this process): the same text,
    for the base model and an adapter."""
    from sqlray.evaluation.generate import STOP_STRINGS
    from sqlray.serving.engine import GenRequest, HFEngine
    from sqlray.text2sql import make_prompt

    questions = ["How many players?", "Show the highest level", "List player names"]
    hf = HFEngine(str(served_model))
    hf.load_adapter("beta", str(adapters["beta"]))
    for adapter in (None, "beta"):
        want = [r.text for r in hf.generate([GenRequest(make_prompt(DDL, q), 24, list(STOP_STRINGS), adapter)
                                             for q in questions])]
        with _client(server) as c:
            got = [c.post("/v1/completions", json={"model": adapter or "tiny", "prompt": make_prompt(DDL, q),
                                                   "max_tokens": 24, "stop": list(STOP_STRINGS)}).json()
                   for q in questions]
        # A multi-byte character cut by the token limit: transformers decodes its bytes to U+FFFD, vLLM's
        # incremental detokenizer holds them back. Everything before it must be identical.
        def cut(t):
            return t.rstrip().rstrip("\ufffd").rstrip()
        assert [cut(g["choices"][0]["text"]) for g in got] == [cut(w) for w in want], (adapter, got, want)


def test_the_default_model_is_the_committed_trained_base():
    """`sqlray serve` with no model serves weights that read a DDL, not a random model built on the spot."""
    from pathlib import Path

    s = ServeSettings()
    path = Path(__file__).resolve().parents[2] / s.model
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert (path / "base.json").is_file() and not s.create_tiny_if_missing  # trained by `make tiny-base`
