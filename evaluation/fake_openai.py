"""A small OpenAI-compatible chat server for tests and benchmarks, on loopback only.

It judges the reference judge prompt (yes when gen_sql equals gt_sql up to whitespace/case) and can
inject faults per request: 429 with Retry-After, 500s, slow answers and malformed JSON, and the faults of
a broken upstream in its transport (an HTML 200, a 200 without choices, null content, a dropped connection). Every request is
recorded (time and a content hash), so tests can count what was sent and paid.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Faults:
    rate_limit_first: int = 0  # the first N requests of each prompt get 429
    retry_after_s: float = 0.2
    server_error_first: int = 0  # then the next N get 500
    malformed_first: int = 0  # then the next N get non-JSON content
    latency_s: float = 0.0
    status_for: dict[str, int] = field(default_factory=dict)  # substring of the prompt -> final status
    # Scripts of first answers, one picked per prompt by its hash: "html", "no_choices", "null_content",
    # "drop" (connection closed, no answer), "500", "429", "ok".
    transport: list[list[str]] = field(default_factory=list)


def _verdict(prompt: str) -> str:
    """Evaluation prompts: yes when gen_sql equals gt_sql (case/space-insensitive). Cleaning prompts (no
    gt_sql): yes when every table gen_sql reads is defined in the DDL."""
    gt = re.search(r"gt_sql: (.*)", prompt)
    gen = re.search(r"gen_sql: (.*)", prompt)
    if gt is None and gen is not None:
        defined = set(re.findall(r"CREATE TABLE (\w+)", prompt, re.I))
        used = set(re.findall(r"(?:FROM|JOIN)\s+(\w+)", gen.group(1), re.I))
        return "yes" if used and used <= defined else "no"
    norm = lambda m: re.sub(r"\s+", " ", m.group(1)).strip().rstrip(";").lower() if m else None  # noqa: E731
    return "yes" if norm(gt) is not None and norm(gt) == norm(gen) else "no"


class FakeOpenAI:
    def __init__(self, faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0):
        self.faults = faults or Faults()
        self.requests: list[tuple[float, str, int]] = []  # (time, prompt hash, status)
        self._seen: dict[str, int] = {}
        self.valid_answers: dict[str, int] = {}  # prompt hash -> well-formed 200s with a verdict sent
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, status: int | None = None) -> int:
        return sum(1 for _, _, s in self.requests if status is None or s == status)

    def _decide(self, prompt: str, arrived: float) -> tuple[int | str, str | None]:
        f = self.faults
        h = hashlib.sha256(prompt.encode()).hexdigest()[:16]
        with self._lock:
            n = self._seen.get(h, 0)
            self._seen[h] = n + 1
        if f.transport:
            script = f.transport[int(h, 16) % len(f.transport)]
            if n < len(script) and script[n] != "ok":
                kind = script[n]
                with self._lock:
                    self.requests.append((arrived, h, int(kind) if kind.isdigit() else 200))
                return (int(kind) if kind.isdigit() else kind), None
            n -= len(script)
        status, content = 200, json.dumps({"resolve_yn": _verdict(prompt)})
        for needle, code in f.status_for.items():
            if needle in prompt:
                status, content = code, None
        if status == 200:
            if n < f.rate_limit_first:
                status, content = 429, None
            elif n < f.rate_limit_first + f.server_error_first:
                status, content = 500, None
            elif n < f.rate_limit_first + f.server_error_first + f.malformed_first:
                content = "definitely yes!"
        with self._lock:
            self.requests.append((arrived, h, status))
            if status == 200 and content and content.startswith("{"):
                self.valid_answers[h] = self.valid_answers.get(h, 0) + 1
        return status, content

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _json(self, code: int, obj: dict, headers: dict | None = None) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _completion(self, req: dict) -> None:
                """A canned SQL followed by the trailing section a base model writes."""
                outer.requests.append((time.monotonic(), "completion", 200))
                self._json(200, {"id": "cmpl-1", "object": "text_completion", "created": int(time.time()),
                                 "model": req.get("model", "fake"),
                                 "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                              "text": "SELECT COUNT(*) FROM t;\n\n### SQL 봇: more"}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}})

            def do_POST(self):
                arrived = time.monotonic()  # stamped on arrival: the latency sleep must not blur timings
                n = int(self.headers.get("content-length", 0))
                req = json.loads(self.rfile.read(n) or b"{}")
                if self.path.endswith("/completions") and "messages" not in req:
                    return self._completion(req)
                prompt = "\n".join(m.get("content", "") for m in req.get("messages", []))
                if outer.faults.latency_s:
                    time.sleep(outer.faults.latency_s)
                status, content = outer._decide(prompt, arrived)
                if status == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)  # the answer never arrives
                    return None
                if status == "html":
                    body = b"<html><body>502 Bad Gateway (but sent as 200)</body></html>"
                    self.send_response(200)
                    self.send_header("content-type", "text/html")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return None
                if status == "no_choices":
                    return self._json(200, {"id": "chatcmpl-x", "object": "chat.completion", "model": "fake"})
                if status == "null_content":
                    return self._json(200, {"id": "chatcmpl-x", "object": "chat.completion", "model": "fake",
                                            "choices": [{"index": 0, "finish_reason": "stop",
                                                         "message": {"role": "assistant", "content": None}}]})
                if status == 429:
                    return self._json(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                                      {"retry-after": str(outer.faults.retry_after_s)})
                if status != 200:
                    return self._json(status, {"error": {"message": f"injected {status}", "type": "test"}})
                pt = len(prompt) // 4
                self._json(200, {"id": f"chatcmpl-{len(outer.requests)}", "object": "chat.completion",
                                 "created": int(time.time()), "model": req.get("model", "fake"),
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": content}}],
                                 "usage": {"prompt_tokens": pt, "completion_tokens": 8, "total_tokens": pt + 8}})

        return Handler
