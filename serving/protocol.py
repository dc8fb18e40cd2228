"""Request and response models (pydantic) and the JSON error shape. Nothing here knows about Ray."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class APIError(Exception):
    """An error the client caused or should see; rendered as OpenAI's {"error": {...}} JSON."""

    def __init__(self, status: int, message: str, param: str | None = None, type_: str = "invalid_request_error",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.headers = status, message, param, type_, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.status}}


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


class SqlRequest(BaseModel):
    """POST /v1/sql: the reference prompt is built from these two fields."""
    model_config = ConfigDict(extra="forbid", strict=True)
    context: str = Field(description="Table DDL (CREATE TABLE statements).")
    question: str = Field(description="The request in natural language (Korean or English).")
    adapter: str | None = Field(None, description="LoRA adapter name; None uses the base (or merged) model.")
    max_new_tokens: int | None = Field(None, description="Generation limit for the SQL.")

    _blank = field_validator("context", "question")(_not_blank)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class SqlResponse(BaseModel):
    sql: str = Field(description="The extracted SQL (never executed by the server).")
    valid: bool = Field(description="Whether the SQL parses (sqlglot, MySQL dialect).")
    model: str
    adapter: str | None = None
    renamed: dict[str, str] = Field(default_factory=dict, description="Names the prompt renamed to ones the model "
                                    "knows (original -> prompt's); the SQL names the originals.")
    finish_reason: str
    usage: Usage


class _OpenAIRequest(BaseModel):
    # OpenAI clients send fields this server has no use for (user, logprobs, ...): they are ignored.
    model_config = ConfigDict(extra="ignore")
    model: str = Field(description="The served model name, or an adapter name.")
    max_tokens: int | None = Field(None, description="Generation limit.")
    max_completion_tokens: int | None = Field(None, description="Newer name for max_tokens.")
    stop: str | list[str] | None = Field(None, description="Up to 4 stop strings (not included in the output).")
    stream: bool = Field(False, description="Server-sent events, one chunk per decoded piece.")
    n: int = Field(1, description="Only 1: decoding is greedy, so more choices would be identical.")
    temperature: float | None = Field(None, description="Accepted for compatibility; decoding is greedy.")
    top_p: float | None = Field(None, description="Accepted for compatibility; decoding is greedy.")
    stream_options: dict[str, Any] | None = Field(
        None, description="With stream: {'include_usage': true} adds a last chunk with the usage and no choices.")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.get("include_usage"))

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        if isinstance(v, str):
            v = [v]
        if v is not None and (len(v) > 4 or any(not s for s in v)):
            raise ValueError("at most 4 non-empty stop strings")
        return v

    @field_validator("n")
    @classmethod
    def _one(cls, v):
        if v != 1:
            raise ValueError("only n=1 is supported (greedy decoding)")
        return v

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_OpenAIRequest):
    prompt: str | list[str] = Field(description="A prompt, or a list of prompts (one choice each).")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(_OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")


def parse_json_body(raw: bytes, model: type[BaseModel], max_bytes: int) -> BaseModel:
    """Bytes -> validated request, or an APIError naming what is wrong (413, 400 or 422)."""
    if len(raw) > max_bytes:
        raise APIError(413, f"request body is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise APIError(400, f"request body is not UTF-8 (byte {e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise APIError(400, f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise APIError(400, "request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise APIError(422, "request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "(body)"
        raise APIError(422, f"{field}: {err['msg']}", param=field) from None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def completion_body(model: str, texts: list[tuple[str, str]], usage: dict) -> dict:
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "text": t, "finish_reason": f, "logprobs": None} for i, (t, f) in enumerate(texts)],
            "usage": usage}


def chat_body(model: str, text: str, finish: str, usage: dict) -> dict:
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                         "logprobs": None}], "usage": usage}


def stream_chunk(kind: Literal["completion", "chat"], cid: str, model: str, text: str | None,
                 finish: str | None, first: bool = False, usage: dict | None = None) -> str:
    """One SSE event in OpenAI's streaming format; with ``usage``, the usage chunk (``choices`` empty)."""
    if usage is not None:
        obj = "text_completion" if kind == "completion" else "chat.completion.chunk"
        body = {"id": cid, "object": obj, "created": int(time.time()), "model": model, "choices": [], "usage": usage}
        return f"data: {json.dumps(body)}\n\n"
    if kind == "completion":
        choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    else:
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        obj = "chat.completion.chunk"
    body = {"id": cid, "object": obj, "created": int(time.time()), "model": model, "choices": [choice]}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
