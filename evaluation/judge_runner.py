"""The judge on Ray: a pool of async actors sharing one rate-limiter actor and one journal actor.

The openai SDK's own retries are off (it would resend without an idempotency key); this runner owns
them: 429 waits for Retry-After (and pauses every actor), 5xx/timeouts/dropped connections and malformed
200s (HTML, no choices, null content) back off and retry, 400/401/404 and context-length errors are final;
a row that runs out of attempts is marked gave_up and tried again by the next run. Actors are created with max_task_retries=0: a task is never re-run
by Ray behind our back (which would pay twice); a rerun of the whole job resumes from the journal.
"""
from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlray.evaluation.judge import (Journal, MalformedAnswer, RateLimiter, estimate_tokens, judge_messages,
                                     parse_chat_body, parse_verdict, request_key)


@dataclass
class JudgeSettings:
    model: str = "gpt-4-turbo-preview"
    base_url: str | None = None  # any OpenAI-compatible server; OPENAI_BASE_URL otherwise
    api_key: str | None = None  # OPENAI_API_KEY otherwise
    rpm: float = 2500
    tpm: float = 100_000
    max_tokens: int = 32
    num_actors: int = 4
    concurrency_per_actor: int = 8
    max_attempts: int = 5
    timeout_s: float = 60
    backoff_s: float = 1.0
    params: dict[str, Any] = field(default_factory=lambda: {"temperature": 0})


def eval_messages(r: dict) -> list[dict]:
    return judge_messages(r["context"], r["question"], r["answer"], r["prediction"])


def judge_requests(rows: list[dict], s: JudgeSettings, build=eval_messages) -> list[dict]:
    """One request per row: {key, row_id, messages}; ``build`` makes a row's messages."""
    out = []
    for r in rows:
        msgs = build(r)
        out.append({"key": request_key(r["id"], s.model, {**s.params, "max_tokens": s.max_tokens}, msgs),
                    "row_id": str(r["id"]), "messages": msgs})
    return out


class LimiterActor:
    """Async: ``acquire`` returns when the caller may send. Waiting here, rather than handing back a delay
    for the caller to sleep, keeps RPC latency from bunching sends together (measured: a relative delay
    overshot a 1200 RPM limit by up to 7%)."""

    def __init__(self, rpm: float, tpm: float):
        self.limiter = RateLimiter(rpm, tpm)

    async def acquire(self, tokens: int) -> None:
        delay = self.limiter.reserve(tokens)
        if delay > 0:
            await asyncio.sleep(delay)

    async def pause(self, seconds: float) -> None:
        self.limiter.pause(seconds)


class JournalActor:
    """The single writer of the journal file (on the driver's node)."""

    def __init__(self, path: str):
        self.journal = Journal(path)

    def mark_sent(self, key: str, row_id: str) -> None:
        self.journal.mark_sent(key, row_id)

    def record(self, key: str, **kw) -> None:
        self.journal.record(key, **kw)

    def note(self, key: str, error: str, raw: str | None = None) -> None:
        self.journal.note(key, error, raw)


def _retry_after(err) -> float | None:
    try:
        return float(err.response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None


RAW_KEEP = 4000  # characters of each 200's body kept in the journal


class JudgeActor:
    def __init__(self, s: JudgeSettings, limiter, journal):
        from openai import AsyncOpenAI

        self.s, self.limiter, self.journal = s, limiter, journal
        self.client = AsyncOpenAI(base_url=s.base_url or os.environ.get("OPENAI_BASE_URL"),
                                  api_key=s.api_key or os.environ.get("OPENAI_API_KEY") or "unset",
                                  max_retries=0, timeout=s.timeout_s)
        self.sem = asyncio.Semaphore(s.concurrency_per_actor)

    async def _send(self, req: dict) -> str:
        """One request; the raw body of its 200 (parsed by us: the SDK turns an HTML 200 into a str)."""
        s = self.s
        # "sent" is journaled before the slot is taken: the fsync'd write must not sit between the
        # limiter's go and the request, or queued writes release sends in bunches.
        await self.journal.mark_sent.remote(req["key"], req["row_id"])
        await self.limiter.acquire.remote(estimate_tokens(req["messages"], s.max_tokens))
        raw = await self.client.chat.completions.with_raw_response.create(
            model=s.model, messages=req["messages"], max_tokens=s.max_tokens,
            response_format={"type": "json_object"}, **s.params)
        return raw.text

    async def _one(self, req: dict) -> str:
        import openai

        s, asked_again, usage, last, kept = self.s, False, [0, 0], "rate limited", None
        for attempt in range(1, s.max_attempts + 1):
            try:
                body = await self._send(req)
                answer = parse_chat_body(body)
            except openai.RateLimitError as e:
                wait = _retry_after(e) or s.backoff_s * 2 ** attempt
                last = "429 rate limited"
                await self.limiter.pause.remote(wait)
                await asyncio.sleep(wait)
                continue
            except (openai.APIConnectionError, openai.InternalServerError, openai.APITimeoutError,
                    MalformedAnswer) as e:
                last = f"{type(e).__name__}: {str(e)[:200]}"
                await self.journal.note.remote(req["key"], last,
                                               body[:RAW_KEEP] if isinstance(e, MalformedAnswer) else None)
                await asyncio.sleep(s.backoff_s * 2 ** (attempt - 1) * (1 + random.random()))
                continue
            except openai.APIStatusError as e:  # 400/401/403/404/422, context length: final
                await self.journal.record.remote(req["key"], status="failed", error=f"{e.status_code}: {e.message}")
                return "failed"
            usage = [usage[0] + answer.prompt_tokens, usage[1] + answer.completion_tokens]
            verdict = parse_verdict(answer.text)
            if verdict is None and not asked_again and attempt < s.max_attempts:
                asked_again = True  # a well-formed answer the judge worded badly: ask once more, then keep it
                kept = (answer, body)
                await self.journal.note.remote(req["key"], "unparseable judge output", body[:RAW_KEEP])
                continue
            await self.journal.record.remote(req["key"], status="done", verdict=verdict, text=answer.text,
                                             error=None if verdict else "unparseable judge output",
                                             prompt_tokens=usage[0], completion_tokens=usage[1],
                                             request_id=answer.request_id, raw=body[:RAW_KEEP])
            return "done"
        if asked_again:  # a valid (if unparseable) answer was received: final, never paid for again
            answer, body = kept
            await self.journal.record.remote(req["key"], status="done", verdict=None, text=answer.text,
                                             error="unparseable judge output", prompt_tokens=usage[0],
                                             completion_tokens=usage[1], request_id=answer.request_id,
                                             raw=body[:RAW_KEEP])
            return "done"
        await self.journal.record.remote(req["key"], status="gave_up", prompt_tokens=usage[0],
                                         completion_tokens=usage[1],
                                         error=f"gave up after {s.max_attempts} attempts ({last}); retried on the next run")
        return "gave_up"

    async def _guarded(self, req: dict) -> str:
        """Whatever happens to one request (a bug included), the others go on and the row is retried later."""
        async with self.sem:
            try:
                return await self._one(req)
            except Exception as e:  # noqa: BLE001
                await self.journal.record.remote(req["key"], status="gave_up",
                                                 error=f"unexpected {type(e).__name__}: {str(e)[:200]}")
                return "gave_up"

    async def run(self, reqs: list[dict]) -> int:
        return len(await asyncio.gather(*(self._guarded(r) for r in reqs)))


def run_judge(rows: list[dict], s: JudgeSettings, journal_path: str | Path, progress: bool = True,
              build=eval_messages) -> dict[str, Any]:
    """Judge every row without a final result in the journal; returns {row_id: verdict|None} and usage.

    The journal path is made absolute and its one writer is pinned to this (the driver's) node, where
    this function reads it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    journal_path = str(Path(journal_path).expanduser().resolve())
    reqs = judge_requests(rows, s, build)
    j = Journal(journal_path)
    done = j.finished()
    j.close()
    todo = [r for r in reqs if r["key"] not in done]
    if todo:
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        limiter = ray.remote(num_cpus=0)(LimiterActor).remote(s.rpm, s.tpm)
        journal = ray.remote(num_cpus=0)(JournalActor).options(scheduling_strategy=here).remote(journal_path)
        n = max(1, min(s.num_actors, len(todo)))
        Judge = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(JudgeActor)
        actors = [Judge.remote(s, limiter, journal) for _ in range(n)]
        try:
            refs = [a.run.remote(todo[i::n]) for i, a in enumerate(actors)]
            _wait(refs, {r["key"] for r in todo}, journal_path, progress)
        finally:
            for a in [*actors, limiter, journal]:
                ray.kill(a)
    return collect(reqs, journal_path)


def _wait(refs, keys: set[str], journal_path, progress: bool) -> None:
    """Block until every actor is done; the bar follows results as they land in the journal."""
    import ray
    from tqdm import tqdm

    bar = tqdm(total=len(keys), desc="judge", disable=not progress)
    journal = Journal(journal_path)
    pending = list(refs)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        bar.n = len(keys & journal.finished())
        bar.refresh()
    ray.get(refs)  # surface an actor's failure
    journal.close()
    bar.close()


def collect(reqs: list[dict], journal_path) -> dict[str, Any]:
    j = Journal(journal_path)
    entries = j.entries()
    j.close()
    verdicts, errors = {}, {}
    for r in reqs:
        e = entries.get(r["key"])
        verdicts[r["row_id"]] = e.verdict if e else None
        errors[r["row_id"]] = (e.error if e else "not judged")
    mine = [entries[r["key"]] for r in reqs if r["key"] in entries]
    return {"verdicts": verdicts, "errors": errors, "requests_sent": sum(e.attempts for e in mine),
            "prompt_tokens": sum(e.prompt_tokens for e in mine), "completion_tokens": sum(e.completion_tokens for e in mine)}
