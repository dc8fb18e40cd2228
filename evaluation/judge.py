"""The LLM judge's pure parts: the reference prompt, deterministic request keys, verdict parsing,
a requests+tokens-per-minute limiter, and a durable journal (SQLite in WAL mode).

What is promised: a key is written as "sent" before its request and its result right after, so a
request whose valid answer was received is never sent again; one lost in flight (the process died between
the answer and its record) may be. A rerun sends only keys without a final result ("done", or "failed" for
a final 4xx); rows that gave up after transient errors ("gave_up") are tried again. The raw body of every
200 is kept. The Ray actors in judge_runner.py only wrap these.
"""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

JUDGE_PROMPT = ('Based on below DDL and Question, evaluate gen_sql can resolve Question. If gen_sql and gt_sql do equal '
                'job, return "yes" else return "no". Output JSON Format: {"resolve_yn": ""}')
PROMPT_VERSION = "ref-v1"


def judge_messages(ddl: str, question: str, gt_sql: str, gen_sql: str) -> list[dict[str, str]]:
    """The reference's judge request: everything in one system message."""
    body = f"{JUDGE_PROMPT}\n\nDDL: {ddl}\nQuestion: {question}\ngt_sql: {gt_sql}\ngen_sql: {gen_sql}"
    return [{"role": "system", "content": body}]


CLEAN_PROMPT = ('Based on below DDL and Question, evaluate whether gen_sql correctly resolves Question on the given '
                'tables. If it does, return "yes" else return "no". Output JSON Format: {"resolve_yn": ""}')


def clean_messages(ddl: str, question: str, sql: str) -> list[dict[str, str]]:
    """The cleaning judge: a training row's own SQL against its question and DDL (no reference SQL)."""
    return [{"role": "system", "content": f"{CLEAN_PROMPT}\n\nDDL: {ddl}\nQuestion: {question}\ngen_sql: {sql}"}]


def request_key(row_id: Any, model: str, params: dict[str, Any], messages: list[dict]) -> str:
    """Deterministic per (row, prompt version, model, parameters, content): the same work, the same key."""
    blob = json.dumps({"id": str(row_id), "v": PROMPT_VERSION, "model": model, "params": params, "messages": messages},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def parse_verdict(text: str | None) -> str | None:
    """'yes' / 'no' from the judge's JSON answer, or None when it cannot be read."""
    if not text:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        m = re.search(r"\{.*\}", text, re.S)
        try:
            obj = json.loads(m.group(0)) if m else None
        except ValueError:
            obj = None
    if not isinstance(obj, dict):
        return None
    v = str(obj.get("resolve_yn", "")).strip().lower()
    return v if v in ("yes", "no") else None


class MalformedAnswer(ValueError):
    """A 200 whose body is not a chat completion with text: HTML, no choices, null content."""


@dataclass
class ChatAnswer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    request_id: str | None


def parse_chat_body(body: str) -> ChatAnswer:
    """The answer in a chat-completion body, checked field by field; MalformedAnswer names what is wrong."""
    try:
        obj = json.loads(body)
    except ValueError:
        raise MalformedAnswer(f"body is not JSON: {body[:80]!r}") from None
    if not isinstance(obj, dict):
        raise MalformedAnswer(f"body is {type(obj).__name__}, expected an object")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedAnswer("no choices in the answer")
    msg = choices[0].get("message")
    text = msg.get("content") if isinstance(msg, dict) else None
    if not isinstance(text, str):
        raise MalformedAnswer("choices[0].message.content is missing or not a string")
    usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
    num = lambda v: v if isinstance(v, int) and v >= 0 else 0  # noqa: E731
    rid = obj.get("id")
    return ChatAnswer(text, num(usage.get("prompt_tokens")), num(usage.get("completion_tokens")),
                      rid if isinstance(rid, str) else None)


def estimate_tokens(messages: list[dict], max_tokens: int) -> int:
    """Charged up front: a conservative prompt estimate (~3 characters a token) plus max_tokens."""
    return sum(len(m["content"]) for m in messages) // 3 + 8 + max_tokens


class RateLimiter:
    """Two token buckets (requests and tokens per minute). ``reserve`` books capacity and says how long
    to wait before sending; balances may go negative, so reservations are served in order."""

    def __init__(self, rpm: float, tpm: float, clock: Callable[[], float] = time.monotonic):
        self.rpm, self.tpm, self.clock = rpm, tpm, clock
        self.req, self.tok = 1.0, float(min(tpm, max(1.0, tpm / 60)))  # start with a small burst allowance
        self.last = clock()
        self.paused_until = 0.0

    def _refill(self) -> float:
        now = self.clock()
        dt = now - self.last
        self.last = now
        self.req = min(max(1.0, self.rpm / 60), self.req + dt * self.rpm / 60)
        self.tok = min(max(1.0, self.tpm / 60), self.tok + dt * self.tpm / 60)
        return now

    def reserve(self, tokens: int) -> float:
        now = self._refill()
        self.req -= 1
        self.tok -= tokens
        wait = max(0.0, -self.req * 60 / self.rpm, -self.tok * 60 / self.tpm)
        return max(wait, self.paused_until - now)

    def pause(self, seconds: float) -> None:
        """A 429 with Retry-After pauses every sender, not only the one that was told."""
        self.paused_until = max(self.paused_until, self.clock() + seconds)


@dataclass
class JournalEntry:
    key: str
    row_id: str
    status: str  # sent | done | failed (final 4xx) | gave_up (transient errors; retried on the next run)
    verdict: str | None = None
    text: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0


class Journal:
    """Append-only record of judge requests: SQLite in WAL mode, synchronous=FULL (fsync per commit)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._lock = threading.Lock()
        # timeout: how long any statement waits for another connection's lock (the actor's, a rerun's)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._setup(deadline=time.monotonic() + 60)

    def _setup(self, deadline: float) -> None:
        """WAL mode and the table. Two connections opening a new file at once can both ask for WAL; SQLite
        then answers one with "database is locked" at once, without waiting (it would deadlock), so retry."""
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.execute("""CREATE TABLE IF NOT EXISTS requests (
                    key TEXT PRIMARY KEY, row_id TEXT, status TEXT, verdict TEXT, text TEXT, error TEXT,
                    prompt_tokens INTEGER DEFAULT 0, completion_tokens INTEGER DEFAULT 0, attempts INTEGER DEFAULT 0,
                    request_id TEXT, updated REAL, raw TEXT)""")
                if "raw" not in {r[1] for r in self.db.execute("PRAGMA table_info(requests)")}:
                    self.db.execute("ALTER TABLE requests ADD COLUMN raw TEXT")  # journals written before it
                return
            except sqlite3.OperationalError as e:
                if "duplicate column" in str(e):  # another connection added it first
                    return
                if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def mark_sent(self, key: str, row_id: str) -> None:
        with self._lock:
            self.db.execute("""INSERT INTO requests (key, row_id, status, attempts, updated) VALUES (?, ?, 'sent', 1, ?)
                ON CONFLICT(key) DO UPDATE SET attempts = attempts + 1, status = 'sent', updated = excluded.updated
                WHERE status IN ('sent', 'gave_up')""", (key, str(row_id), time.time()))

    def record(self, key: str, status: str, verdict: str | None = None, text: str | None = None,
               error: str | None = None, prompt_tokens: int = 0, completion_tokens: int = 0,
               request_id: str | None = None, raw: str | None = None) -> None:
        with self._lock:
            self.db.execute("""UPDATE requests SET status=?, verdict=?, text=?, error=?,
                prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?, request_id=?, updated=?,
                raw = COALESCE(?, raw) WHERE key=?""", (status, verdict, text, error, prompt_tokens, completion_tokens,
                                                        request_id, time.time(), raw, key))

    def note(self, key: str, error: str, raw: str | None = None) -> None:
        """A failed attempt: its error (and the body of a malformed 200) kept; the key stays 'sent'."""
        with self._lock:
            self.db.execute("UPDATE requests SET error=?, raw=COALESCE(?, raw), updated=? WHERE key=?",
                            (error, raw, time.time(), key))

    def raw(self, key: str) -> str | None:
        with self._lock:
            r = self.db.execute("SELECT raw FROM requests WHERE key=?", (key,)).fetchone()
        return r[0] if r else None

    def finished(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self.db.execute("SELECT key FROM requests WHERE status IN ('done', 'failed')")}

    def entries(self) -> dict[str, JournalEntry]:
        with self._lock:
            rows = self.db.execute("""SELECT key, row_id, status, verdict, text, error, prompt_tokens,
                completion_tokens, attempts FROM requests""").fetchall()
        return {r[0]: JournalEntry(*r) for r in rows}

    def close(self) -> None:
        self.db.close()
