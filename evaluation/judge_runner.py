"""The judge on Ray: a pool of async actors sharing one rate-limiter actor and one journal actor.

The openai SDK's own retries are off (it would resend without an idempotency key); this runner owns
them: 429 waits for Retry-After (and pauses every actor), 5xx/timeouts back off, 400/401/404 and
context-length errors are final. Actors are created with max_task_retries=0: a task is never re-run
by Ray behind our back (which would pay twice); a rerun of the whole job resumes from the journal.
"""
from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlray.evaluation.judge import Journal, RateLimiter, estimate_tokens, judge_messages, parse_verdict, request_key


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


def _retry_after(err) -> float | None:
    try:
        return float(err.response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None


class JudgeActor:
    def __init__(self, s: JudgeSettings, limiter, journal):
        from openai import AsyncOpenAI

        self.s, self.limiter, self.journal = s, limiter, journal
        self.client = AsyncOpenAI(base_url=s.base_url or os.environ.get("OPENAI_BASE_URL"),
                                  api_key=s.api_key or os.environ.get("OPENAI_API_KEY") or "unset",
                                  max_retries=0, timeout=s.timeout_s)
        self.sem = asyncio.Semaphore(s.concurrency_per_actor)

    async def _send(self, req: dict) -> Any:
        s = self.s
        # "sent" is journaled before the slot is taken: the fsync'd write must not sit between the
        # limiter's go and the request, or queued writes release sends in bunches.
        await self.journal.mark_sent.remote(req["key"], req["row_id"])
        await self.limiter.acquire.remote(estimate_tokens(req["messages"], s.max_tokens))
        return await self.client.chat.completions.create(
            model=s.model, messages=req["messages"], max_tokens=s.max_tokens,
            response_format={"type": "json_object"}, **s.params)

    async def _one(self, req: dict) -> str:
        import openai

        s, asked_again, usage, last = self.s, False, [0, 0], "rate limited"
        for attempt in range(1, s.max_attempts + 1):
            try:
                resp = await self._send(req)
            except openai.RateLimitError as e:
                wait = _retry_after(e) or s.backoff_s * 2 ** attempt
                last = "429 rate limited"
                await self.limiter.pause.remote(wait)
                await asyncio.sleep(wait)
                continue
            except (openai.APIConnectionError, openai.InternalServerError, openai.APITimeoutError) as e:
                await asyncio.sleep(s.backoff_s * 2 ** (attempt - 1) * (1 + random.random()))
                last = f"{type(e).__name__}: {e}"
                continue
            except openai.APIStatusError as e:  # 400/401/403/404/422, context length: final
                await self.journal.record.remote(req["key"], status="failed", error=f"{e.status_code}: {e.message}")
                return "failed"
            text = resp.choices[0].message.content if resp.choices else None
            if resp.usage:
                usage = [usage[0] + resp.usage.prompt_tokens, usage[1] + resp.usage.completion_tokens]
            verdict = parse_verdict(text)
            if verdict is None and not asked_again:
                asked_again = True  # unparseable: ask once more, then give up
                continue
            await self.journal.record.remote(req["key"], status="done", verdict=verdict, text=text,
                                             error=None if verdict else "unparseable judge output",
                                             prompt_tokens=usage[0], completion_tokens=usage[1], request_id=resp.id)
            return "done"
        await self.journal.record.remote(req["key"], status="failed",
                                         error=f"gave up after {s.max_attempts} attempts ({last})")
        return "failed"

    async def run(self, reqs: list[dict]) -> int:
        async def guarded(r):
            async with self.sem:
                return await self._one(r)

        return len(await asyncio.gather(*(guarded(r) for r in reqs)))


def run_judge(rows: list[dict], s: JudgeSettings, journal_path: str | Path, progress: bool = True,
              build=eval_messages) -> dict[str, Any]:
    """Judge every row not yet in the journal; returns {row_id: verdict|None} and usage totals."""
    import ray

    reqs = judge_requests(rows, s, build)
    done = Journal(journal_path).finished()
    todo = [r for r in reqs if r["key"] not in done]
    if todo:
        limiter = ray.remote(num_cpus=0)(LimiterActor).remote(s.rpm, s.tpm)
        journal = ray.remote(num_cpus=0)(JournalActor).remote(str(journal_path))
        n = max(1, min(s.num_actors, len(todo)))
        Judge = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(JudgeActor)
        actors = [Judge.remote(s, limiter, journal) for _ in range(n)]
        refs = [a.run.remote(todo[i::n]) for i, a in enumerate(actors)]
        _wait(refs, {r["key"] for r in todo}, journal_path, progress)
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
