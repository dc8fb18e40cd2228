"""Thin HTTP routes (FastAPI under Ray Serve): parse, validate, hand the requests to the replica's batcher,
shape the answer. ``Routes`` knows nothing of the model: the replica class that mixes it in (serving/app.py)
provides ``_run`` (generate a list of requests), ``_pieces`` (stream one) and ``ready``.

Every failure a client can cause is a JSON error with a status below 500; the process never exits on one.
"""

import asyncio
import hmac
import logging
import os
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)
PLAN_CACHE = 64  # DDLs whose renaming a replica keeps (the prefix cache's size)
_PLANNER = ThreadPoolExecutor(1, thread_name_prefix="sqlray-rename")  # never the pool generation runs on

from sqlray.core import resolve_path
from sqlray.evaluation.constrain import sql_grammar
from sqlray.evaluation.generate import STOP_STRINGS
from sqlray.evaluation.rename import load_vocab, plan
from sqlray.evaluation.sql import extract_sql, parses
from sqlray.serving.config import ServeSettings
from sqlray.serving.engine import GenRequest, PromptTooLong
from sqlray.serving.protocol import (APIError, ChatRequest, CompletionRequest, SqlRequest, chat_body, completion_body,
                              new_id, parse_json_body, stream_chunk)
from sqlray.text2sql import make_prompt

app = FastAPI(title="sqlray", description="Text2SQL on Ray Serve: /v1/sql plus an OpenAI-compatible API.")


@app.exception_handler(APIError)
async def _api_error(request: Request, e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
    """Unknown routes (404) and wrong methods (405) in OpenAI's error shape too."""
    kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
    return JSONResponse(APIError(e.status_code, f"{request.method} {request.url.path}: {e.detail}", type_=kind).body(),
                        status_code=e.status_code, headers=getattr(e, "headers", None))


@app.exception_handler(Exception)
async def _internal_error(request: Request, e: Exception) -> JSONResponse:
    """A bug answers a JSON 500 (the replica stays up); the traceback goes to the replica's log."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(APIError(500, f"internal error: {type(e).__name__}", type_="server_error").body(),
                        status_code=500)


def _usage(results) -> dict:
    p, c = sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


class Routes:
    """The HTTP surface, mixed into the model replica (one hop: proxy -> replica, no router actor between)."""

    def _init_routes(self, s: ServeSettings) -> None:
        self.name = s.served_name
        self.api_key = os.environ.get(s.api_key_env) if s.api_key_env else None
        if s.api_key_env and not self.api_key:
            raise RuntimeError(f"api_key_env={s.api_key_env} is set but that environment variable is empty")
        # the schema vocabularies (evaluation.rename) of the model and of each adapter (its own training's,
        # else the model's): /v1/sql renames the names they never saw, and back
        base = load_vocab(resolve_path(s.model)) if s.rename_names else None
        self.vocabs = {None: base, **{n: (load_vocab(resolve_path(p)) or base) if s.rename_names else None
                                      for n, p in s.adapters.items()}}
        self._plans: OrderedDict = OrderedDict()  # (adapter, DDL) -> its renaming: LRU, PLAN_CACHE entries

    # -- helpers ---------------------------------------------------------------------------------
    async def _renaming(self, ddl: str, adapter: str | None):
        """The DDL's renaming for this model or adapter (evaluation.rename), cached per DDL; None when it
        needs none or cannot be read: a failure here prompts the DDL as it is, never fails the request."""
        vocab = self.vocabs.get(adapter)
        if not vocab:
            return None
        key = (adapter, ddl)
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        try:  # up to ~1 s for a 20,000-character DDL: off the event loop, on one thread of its own
            renaming = await asyncio.get_running_loop().run_in_executor(_PLANNER, plan, ddl, vocab)
        except Exception:
            log.exception("renaming the DDL failed; prompting it as it is")
            renaming = None
        self._plans[key] = renaming
        if len(self._plans) > PLAN_CACHE:
            self._plans.popitem(last=False)
        return renaming

    def _authorised(self, request: Request) -> bool:
        if self.api_key is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode())

    def _auth(self, request: Request) -> None:
        if not self._authorised(request):
            raise APIError(401, "missing or wrong bearer token (Authorization: Bearer <key>)",
                           type_="authentication_error")

    async def _read_body(self, request: Request) -> bytes:
        """The body under max_body_bytes, enforced while reading: a Content-Length over the limit is refused
        before any of it is read, and a body longer than it said (or without one) is cut off at the limit."""
        limit = self.s.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise APIError(400, f"Content-Length: expected a number of bytes, got {declared[:40]!r}")
            if int(declared) > limit:
                raise APIError(413, f"request body is {int(declared)} bytes; the limit is {limit}")
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"request body is over {limit} bytes (more than its Content-Length said)"
                               if declared else f"request body is over the limit of {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def _parse(self, request: Request, model):
        self._auth(request)
        return parse_json_body(await self._read_body(request), model, self.s.max_body_bytes)

    def _adapter_for(self, name: str | None, param: str) -> str | None:
        """None for the base model; 404 for a name that is neither the model nor an adapter. Without one in
        the body, Serve's multiplexing header (``serve_multiplexed_model_id``) names it: a client that sends
        the header is routed to a replica that already holds that adapter."""
        name = name or serve.get_multiplexed_model_id() or None
        if name is None or name == self.name:
            return None
        if name not in self.s.adapters:
            known = [self.name, *self.s.adapters]
            raise APIError(404, f"{param}: unknown model or adapter {name!r}; available: {known}", param=param,
                           type_="not_found_error")
        return name

    def _limit(self, n: int | None, param: str) -> int:
        if n is None:
            return self.s.default_max_tokens
        if not 1 <= n <= self.s.max_tokens_limit:
            raise APIError(422, f"{param}: must be between 1 and {self.s.max_tokens_limit} (got {n})", param=param)
        return n

    def _size(self, text: str, param: str) -> None:
        if len(text) > self.s.max_input_chars:
            raise APIError(413, f"{param}: {len(text)} characters; the limit is {self.s.max_input_chars}", param=param)

    async def _run(self, reqs: list[GenRequest]) -> list:
        raise NotImplementedError  # the replica class provides it

    def _pieces(self, req: GenRequest):
        raise NotImplementedError  # the replica class provides it: (async iterator of text, admission slot)

    async def _generate(self, reqs: list[GenRequest]) -> list:
        try:
            return await self._run(reqs)
        except PromptTooLong as e:
            raise APIError(400, str(e), param="prompt", type_="context_length_exceeded") from None

    def _stream(self, req: GenRequest, kind: str, include_usage: bool = False) -> StreamingResponse:
        from starlette.background import BackgroundTask

        cid, model = new_id("cmpl" if kind == "completion" else "chatcmpl"), req.adapter or self.name
        try:  # admission (503) and the length check (400) happen here, before the stream's 200 is sent
            pieces, slot = self._pieces(req)
        except PromptTooLong as e:
            raise APIError(400, str(e), param="prompt", type_="context_length_exceeded") from None

        async def events():
            first = True
            async for piece in pieces:
                yield stream_chunk(kind, cid, model, piece, None, first)
                first = False
            out = req.outcome
            yield stream_chunk(kind, cid, model, None, out.finish_reason if out else "stop", first)
            if include_usage and out is not None:
                yield stream_chunk(kind, cid, model, None, None, usage=_usage([out]))
            yield "data: [DONE]\n\n"

        # The slot is released by the stream's end, or by this task if the client left before it began.
        return StreamingResponse(events(), media_type="text/event-stream", background=BackgroundTask(slot.release))

    # -- routes ----------------------------------------------------------------------------------
    @app.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self, request: Request) -> JSONResponse:
        # Routes live in the model replica, which Serve starts only once the model is loaded: until
        # then the proxy has no replica and answers 503 itself. Adapter names only for an authorised caller.
        info = self.ready()
        if not self._authorised(request):
            info = {k: v for k, v in info.items() if k != "adapters_loaded"}
        return JSONResponse({"ready": True, "model": self.name, **info})

    @app.get("/v1/models")
    def models(self, request: Request) -> dict:
        self._auth(request)
        now = int(time.time())
        names = [(self.name, None), *[(a, self.name) for a in self.s.adapters]]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": now, "owned_by": "sqlray",
                                            "parent": p} for n, p in names]}

    @app.post("/v1/sql")
    async def sql(self, request: Request) -> dict:
        body: SqlRequest = await self._parse(request, SqlRequest)
        self._size(body.context, "context")
        self._size(body.question, "question")
        adapter = self._adapter_for(body.adapter, "adapter")
        renaming = await self._renaming(body.context, adapter)
        ddl, question = (renaming.ddl, renaming.question(body.question)) if renaming else (body.context, body.question)
        req = GenRequest(make_prompt(ddl, question), self._limit(body.max_new_tokens, "max_new_tokens"),
                         list(STOP_STRINGS), adapter,
                         grammar=sql_grammar(ddl, question) if self.s.constrain_sql else None)
        (res,) = await self._generate([req])
        sql = extract_sql(res.text)
        sql = renaming.restore(sql) if renaming else sql
        # The SQL is parsed, never executed: this endpoint has no database to run it against.
        return {"sql": sql, "valid": bool(sql) and parses(sql), "model": self.name, "adapter": adapter,
                "renamed": renaming.names if renaming else {}, "finish_reason": res.finish_reason,
                "usage": _usage([res])}

    @app.post("/v1/completions")
    async def completions(self, request: Request):
        body: CompletionRequest = await self._parse(request, CompletionRequest)
        adapter = self._adapter_for(body.model, "model")
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise APIError(422, "prompt: must not be empty", param="prompt")
        for p in prompts:
            self._size(p, "prompt")
        limit = self._limit(body.token_limit, "max_tokens")
        reqs = [GenRequest(p, limit, body.stop or [], adapter) for p in prompts]
        if body.stream:
            if len(reqs) != 1:
                raise APIError(422, "stream: only one prompt per streaming request", param="stream")
            return self._stream(reqs[0], "completion", body.include_usage)
        results = await self._generate(reqs)
        return completion_body(body.model, [(r.text, r.finish_reason) for r in results], _usage(results))

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request):
        body: ChatRequest = await self._parse(request, ChatRequest)
        adapter = self._adapter_for(body.model, "model")
        # Text2SQL models here are tuned on a plain prompt, not a chat template: contents are joined.
        prompt = "\n\n".join(m.text() for m in body.messages if m.text())
        self._size(prompt, "messages")
        req = GenRequest(prompt, self._limit(body.token_limit, "max_tokens"), body.stop or [], adapter)
        if body.stream:
            return self._stream(req, "chat", body.include_usage)
        (res,) = await self._generate([req])
        return chat_body(body.model, res.text, res.finish_reason, _usage([res]))
