"""Greedy SQL generation with the reference prompt: a pure batched function, and Ray actors at the edge."""
from __future__ import annotations

import os
from typing import Any

import torch

from sqlray.core import ConfigError, resolve_path
from sqlray.evaluation.constrain import sql_grammar
from sqlray.evaluation.grammar_decoding import GrammarLogitsProcessor, grammar_cache
from sqlray.evaluation.rename import load_vocab, plan
from sqlray.evaluation.sql import extract_sql
from sqlray.text2sql import encode_prompt, make_prompt

STOP_STRINGS = ["###", "\n\n"]


def load_for_generation(model: str, adapter: str | None = None, device: str = "cpu",
                        dtype: torch.dtype | None = None):
    """Tokenizer and model in eval mode. ``dtype`` None: fp32 on CPU; on a GPU the checkpoint's own 16-bit
    dtype, else bf16 (fp16 where the card lacks bf16). An adapter merges into fp32 weights first, so its
    small update is not rounded away in 16 bits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # decoder-only batching: prompts end where generation begins
    if dtype is None:
        dtype = _gpu_dtype(model) if device.startswith("cuda") else torch.float32
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32 if adapter else dtype)
    if adapter:
        from peft import PeftModel

        m = PeftModel.from_pretrained(m, adapter).merge_and_unload()
    m.to(device=device, dtype=dtype).eval()
    return m, tok


def _gpu_dtype(model: str) -> torch.dtype:
    from transformers import AutoConfig

    saved = getattr(AutoConfig.from_pretrained(model), "dtype", None)
    saved = getattr(torch, saved) if isinstance(saved, str) else saved
    if saved in (torch.float16, torch.bfloat16):
        return saved
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: list[str], max_new_tokens: int = 96,
                   grammars: list[str | None] | None = None) -> tuple[list[str], list[int]]:
    """Raw completions (prompt excluded, like return_full_text=False) and generated-token counts.
    ``grammars``: per prompt, an EBNF its completion must follow (``constrain.sql_grammar``) or None."""
    # The same ids training saw (encode_prompt), padded on the left: generation starts where prompts end.
    enc = tokenizer.pad({"input_ids": [encode_prompt(tokenizer, p) for p in prompts]}, padding=True,
                        return_tensors="pt").to(model.device)
    procs = ([GrammarLogitsProcessor(grammar_cache(model, tokenizer), grammars, tokenizer.pad_token_id)]
             if grammars and any(grammars) else [])
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, logits_processor=procs,
                         stop_strings=STOP_STRINGS, tokenizer=tokenizer,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    new = out[:, enc["input_ids"].shape[1]:]
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    counts = [int((row != tokenizer.pad_token_id).sum()) for row in new]
    return texts, counts


def generate_sql(model, tokenizer, rows: list[dict[str, Any]], max_new_tokens: int = 96,
                 batch_size: int = 32, constrain: bool = False, vocab: dict | None = None) -> list[dict[str, Any]]:
    """For each row: {"id", "raw", "prediction"} (+ "renamed" where names were renamed). Rows are sorted by
    length inside to pad less. ``constrain``: the SQL may name only the row's DDL tables and columns
    (``evaluation.constrain``). ``vocab``: the model's schema vocabulary (``evaluation.rename``): names it
    never saw are renamed to ones it knows in the prompt, and back in the prediction; "raw" is as written."""
    plans = _plans(rows, vocab)
    inputs = [(p.ddl, p.question(r["question"])) if p else (r["context"], r["question"]) for r, p in zip(rows, plans)]
    order = sorted(range(len(rows)), key=lambda i: len(inputs[i][0]) + len(inputs[i][1]))
    out: list[dict[str, Any] | None] = [None] * len(rows)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        prompts = [make_prompt(*inputs[i]) for i in idx]
        grammars = [sql_grammar(*inputs[i]) for i in idx] if constrain else None
        texts, _ = generate_batch(model, tokenizer, prompts, max_new_tokens, grammars)
        for i, t in zip(idx, texts):
            sql, p = extract_sql(t), plans[i]
            out[i] = {"id": rows[i].get("id", i), "raw": t, "prediction": p.restore(sql) if p else sql,
                      **({"renamed": p.names} if p else {})}
    return out  # type: ignore[return-value]


def _plans(rows: list[dict[str, Any]], vocab: dict | None) -> list:
    """Each row's renaming (``rename.plan``), computed once per distinct DDL."""
    if not vocab:
        return [None] * len(rows)
    cache: dict[str, Any] = {}
    return [cache[r["context"]] if r["context"] in cache else cache.setdefault(r["context"], plan(r["context"], vocab))
            for r in rows]


def generate_via_endpoint(base_url: str, model: str, rows: list[dict], max_new_tokens: int = 128,
                          concurrency: int = 8) -> list[dict]:
    """The same prompt through any OpenAI-compatible /v1/completions server (sqlray's own, vLLM, ...)."""
    from concurrent.futures import ThreadPoolExecutor

    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "unset"), max_retries=3)

    def one(r: dict) -> dict:
        resp = client.completions.create(model=model, prompt=make_prompt(r["context"], r["question"]),
                                         max_tokens=max_new_tokens, temperature=0, stop=STOP_STRINGS)
        text = resp.choices[0].text
        return {"id": r.get("id"), "raw": text, "prediction": extract_sql(text)}

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, rows))


class GeneratorActor:
    """One model replica; Ray wraps it with ray.remote at the call site."""

    def __init__(self, model: str, adapter: str | None = None, threads: int = 1, device: str = "cpu"):
        torch.set_num_threads(threads)
        # a relative path is the driver's (e.g. the committed data/tiny-sql-base): actors start elsewhere
        self.paths = resolve_path(model), adapter and resolve_path(adapter)
        self.model, self.tok = load_for_generation(*self.paths, device)
        self.vocab: dict | None | bool = False  # read on the first call that renames

    def generate(self, rows: list[dict], max_new_tokens: int, batch_size: int, constrain: bool = False,
                 rename: bool = True) -> list[dict]:
        if rename and self.vocab is False:  # what the adapter's training taught (written with it), else the model's
            model, adapter = self.paths
            self.vocab = (adapter and load_vocab(adapter)) or load_vocab(model)
        return generate_sql(self.model, self.tok, rows, max_new_tokens, batch_size, constrain,
                            self.vocab if rename else None)


def generate_with_actors(model: str, rows: list[dict], adapter: str | None = None, num_actors: int = 2,
                         max_new_tokens: int = 96, batch_size: int = 32, constrain: bool = False,
                         use_gpu: bool = False, rename: bool = True) -> list[dict]:
    """Shard rows over ``num_actors`` Ray actors; results come back in input order. ``rename``: rename names
    the model never saw, if its folder has a schema vocabulary (``evaluation.rename``).
    ``use_gpu``: each actor holds one GPU (Ray sets its CUDA_VISIBLE_DEVICES) and decodes in bf16/fp16."""
    import ray

    if not rows:
        return []
    n = max(1, min(num_actors, len(rows)))
    if use_gpu:  # an actor per GPU: more would wait for a GPU forever
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus == 0:
            raise ConfigError("GPU generation (eval.use_gpu / --gpu) but the Ray cluster has no GPU now "
                              "(an autoscaling cluster: start a GPU worker first)")
        n = min(n, gpus)
    Actor = ray.remote(num_cpus=1, num_gpus=1 if use_gpu else 0)(GeneratorActor)
    actors = [Actor.remote(model, adapter, 1, "cuda" if use_gpu else "cpu") for _ in range(n)]
    shards = [rows[i::n] for i in range(n)]
    try:
        results = ray.get([a.generate.remote(s, max_new_tokens, batch_size, constrain, rename)
                           for a, s in zip(actors, shards)])
    finally:
        for a in actors:
            ray.kill(a)
    merged: list[dict] = [None] * len(rows)  # type: ignore[list-item]
    for k, part in enumerate(results):
        for j, r in enumerate(part):
            merged[k + j * n] = r
    return merged
