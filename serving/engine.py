"""The generation engine behind the routes: a small interface, and a transformers implementation.

One ``generate`` call serves a whole batch: each request keeps its own token limit, stop strings and
LoRA adapter (PEFT's mixed-adapter batches), so batching never changes what a request gets back.
Prompt heads that many requests share (the instruction and one database's DDL) keep their KV cache:
a batch only runs the questions through the model (vLLM's prefix caching, for the HF engine).
"""
from __future__ import annotations

import functools
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import torch

from sqlray.evaluation.grammar_decoding import GrammarLogitsProcessor, grammar_cache
from sqlray.text2sql import encode_prompt

BASE = "__base__"  # PEFT's name for "no adapter" inside a mixed batch


@dataclass
class GenRequest:
    prompt: str
    max_new_tokens: int
    stop: list[str] = field(default_factory=list)
    adapter: str | None = None
    ids: list[int] | None = None  # the prompt's token ids, once check() has tokenized it
    grammar: str | None = None  # EBNF the completion must follow (evaluation.constrain.sql_grammar), if any
    outcome: "GenResult | None" = None  # set by stream() when it ends: finish_reason and token counts


@dataclass
class GenResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


class PromptTooLong(ValueError):
    """The prompt plus the requested tokens do not fit the model's context."""


class Engine(Protocol):
    def generate(self, reqs: list[GenRequest]) -> list[GenResult]: ...
    def stream(self, req: GenRequest) -> Iterator[str]: ...
    def check(self, req: GenRequest) -> int: ...
    def load_adapter(self, name: str, path: str) -> None: ...
    def unload_adapter(self, name: str) -> None: ...


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Text before the earliest stop string (OpenAI semantics: the stop itself is not returned)."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class _RowStops:
    """Per-row stopping for a batched generate(): a row ends at its own token limit or stop string."""

    def __init__(self, tokenizer, prompt_len: int, reqs: list[GenRequest]):
        self.tok, self.start, self.reqs = tokenizer, prompt_len, reqs
        # A stop string spans at most this many tokens (every token decodes to >= 1 character).
        self.window = max((len(s) for r in reqs for s in r.stop), default=0) + 2

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.start:]
        done = torch.zeros(len(self.reqs), dtype=torch.bool, device=input_ids.device)
        for i, r in enumerate(self.reqs):
            if new.shape[1] >= r.max_new_tokens:
                done[i] = True
            elif r.stop:
                tail = self.tok.decode(new[i, -self.window:], skip_special_tokens=True)
                done[i] = any(s in tail for s in r.stop)
        return done


class PrefixCache:
    """LRU of per-layer (key, value) tensors for prompt heads, keyed by (adapter, token ids)."""

    def __init__(self, size: int):
        self.size, self.entries = size, OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> list | None:
        kv = self.entries.get(key)
        if kv is not None:
            self.entries.move_to_end(key)
            self.hits += 1
        return kv

    def put(self, key: tuple, kv: list) -> None:
        self.misses += 1
        self.entries[key] = kv
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def drop_adapter(self, adapter: str) -> None:
        for key in [k for k in self.entries if k[0] == adapter]:
            del self.entries[key]


class _Cancelled:
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class HFEngine:
    """transformers generation on CPU or one GPU; LoRA adapters loaded and dropped on demand."""

    def __init__(self, model_path: str, device: str | None = None, threads: int | None = None,
                 prefix_marker: str | None = None, prefix_cache_size: int = 0):
        from sqlray.evaluation.generate import load_for_generation  # same loading (left padding, eval mode) as scoring

        if threads:
            torch.set_num_threads(threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.base, self.tok = load_for_generation(model_path)
        self.base.to(self.device)
        self.model = self.base
        self.max_positions = int(getattr(self.base.config, "max_position_embeddings", 0) or 10**9)
        self.adapters: set[str] = set()
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # what batching achieved, for stats and tests
        self.gen_ms: deque[float] = deque(maxlen=1000)  # each batch's generate() time
        # PEFT's mixed-adapter batches install forward hooks: one generate at a time per model.
        self.lock = threading.Lock()
        # A prompt's head up to the last marker is cached; the marker ends the shared part of the prompt.
        self.prefix_marker = prefix_marker
        self.prefix_cache = PrefixCache(prefix_cache_size)
        # Heads repeat (one per schema): each is tokenized once.
        self._head_ids = functools.lru_cache(maxsize=max(1, prefix_cache_size))(
            lambda head: encode_prompt(self.tok, head))
        # Who still needs each adapter: Serve's LRU entry and every batch or stream using it. The last
        # release unloads it, so an eviction never pulls an adapter from under a running generate().
        self._refs: Counter[str] = Counter()
        self._refs_lock = threading.Lock()

    # -- adapters --------------------------------------------------------------------------------
    def load_adapter(self, name: str, path: str) -> None:
        from peft import PeftModel

        with self.lock:
            if name in self.adapters:
                return
            if not self.adapters:
                self.model = PeftModel.from_pretrained(self.base, path, adapter_name=name)
            else:
                self.model.load_adapter(path, adapter_name=name)
            self.model.eval()
            self.adapters.add(name)

    def adapter_refs(self) -> dict[str, int]:
        with self._refs_lock:
            return {k: v for k, v in self._refs.items() if v}

    def acquire(self, name: str, path: str | None = None) -> None:
        """One more user of ``name``; loads it from ``path`` if needed (without a path it must be loaded)."""
        with self._refs_lock:
            self._refs[name] += 1
        if path is not None:
            try:
                self.load_adapter(name, path)  # checks under the model lock: safe beside a release's unload
            except BaseException:
                self.release(name)  # a failed load holds nothing
                raise
        elif name not in self.adapters:
            self.release(name)
            raise KeyError(f"adapter {name!r} is not loaded")

    def release(self, name: str) -> None:
        """One user fewer; the last one unloads the adapter."""
        with self._refs_lock:
            self._refs[name] -= 1
            if self._refs[name] > 0:
                return
        with self.lock:
            with self._refs_lock:
                if self._refs[name] > 0:  # acquired again while we waited for the model
                    return
                del self._refs[name]
            self._unload(name)

    def unload_adapter(self, name: str) -> None:
        with self.lock:
            self._unload(name)

    def _unload(self, name: str) -> None:
        """Under the model lock."""
        if name not in self.adapters:
            return
        self.adapters.discard(name)
        self.prefix_cache.drop_adapter(name)  # a later adapter by this name may have other weights
        if self.adapters:
            self.model.delete_adapter(name)
        else:  # the last one: take the LoRA layers out of the base again
            self.base = self.model.unload()
            self.model = self.base

    # -- generation ------------------------------------------------------------------------------
    def check(self, req: GenRequest) -> int:
        """Prompt tokens, or PromptTooLong when prompt + max_new_tokens exceed the context."""
        n = len(self._ids(req))
        if n + req.max_new_tokens > self.max_positions:
            raise PromptTooLong(f"the prompt has {n} tokens and max tokens is {req.max_new_tokens}: together more "
                                f"than the model's context of {self.max_positions} tokens")
        return n

    def _ids(self, req: GenRequest) -> list[int]:
        if req.ids is None:  # kept on the request: the batch encoding needs them again
            req.ids = encode_prompt(self.tok, req.prompt)  # as training encoded it
        return req.ids

    def _gen_kwargs(self, reqs: list[GenRequest]) -> dict:
        kw = {"do_sample": False, "num_beams": 1, "pad_token_id": self.tok.pad_token_id,
              "eos_token_id": self.tok.eos_token_id}
        if self.adapters:
            kw["adapter_names"] = [r.adapter or BASE for r in reqs]
        return kw

    def _grammars(self, reqs: list[GenRequest]) -> dict:
        """The schema-grammar processor for a batch (one per generate(): it tracks each row's state), built
        before the engine lock is taken: compiling the rows' grammars need not hold up another batch."""
        if not any(r.grammar for r in reqs):
            return {}
        return {"logits_processor": [GrammarLogitsProcessor(grammar_cache(self.base, self.tok),
                                                            [r.grammar for r in reqs], self.tok.pad_token_id)]}

    # -- prefix caching ---------------------------------------------------------------------------
    def _split(self, req: GenRequest) -> tuple[list[int], list[int]]:
        """(head ids, rest ids): the head ends with the last marker; empty when the prompt has no marker or
        the head's tokens aren't a prefix of the whole prompt's (a token spanning the cut)."""
        prompt, ids = req.prompt, self._ids(req)
        cut = prompt.rfind(self.prefix_marker) if self.prefix_marker and self.prefix_cache.size else -1
        if cut < 0:
            return [], ids
        head = self._head_ids(prompt[: cut + len(self.prefix_marker)])
        if len(head) >= len(ids) or ids[: len(head)] != head:
            return [], ids
        return head, ids[len(head):]

    def _head_kv(self, head: list[int], adapter: str | None) -> list:
        from transformers import DynamicCache

        key = (adapter or BASE, tuple(head))
        kv = self.prefix_cache.get(key)
        if kv is None:
            cache = DynamicCache(config=self.base.config)
            extra = {"adapter_names": [adapter or BASE]} if self.adapters else {}
            self.model(input_ids=torch.tensor([head], device=self.device), past_key_values=cache, use_cache=True,
                       **extra)
            kv = [(layer.keys, layer.values) for layer in cache.layers]
            self.prefix_cache.put(key, kv)
        return kv

    def _encode(self, reqs: list[GenRequest]) -> dict:
        """Model inputs for a batch. With cached heads each row is laid out as
        [pad][head][pad][rest]: heads end at one column, so their cached KV stack into one cache, and
        positions follow the attention mask, so the pads in between change nothing."""
        from transformers import StaticCache

        splits = [self._split(r) for r in reqs]
        if not any(head for head, _ in splits):
            return self.tok.pad({"input_ids": [r.ids for r in reqs]}, return_tensors="pt").to(self.device)
        P, S = max(len(h) for h, _ in splits), max(len(t) for _, t in splits)
        ids = torch.full((len(reqs), P + S), self.tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(reqs), P + S), dtype=torch.long)
        layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i, ((head, rest), r) in enumerate(zip(splits, reqs)):
            ids[i, P - len(head):P], ids[i, P + S - len(rest):] = torch.tensor(head, dtype=torch.long), torch.tensor(rest)
            mask[i, P - len(head):P], mask[i, P + S - len(rest):] = 1, 1
            if not head:
                continue
            for n, (k, v) in enumerate(self._head_kv(head, r.adapter)):
                if len(layers) <= n:
                    shape = (len(reqs), k.shape[1], P, k.shape[3])
                    layers.append((k.new_zeros(shape), v.new_zeros(shape)))
                layers[n][0][i, :, P - len(head):] = k[0]
                layers[n][1][i, :, P - len(head):] = v[0]
        # Preallocated: a growing cache re-copies every row's keys and values at each step.
        cache = StaticCache(config=self.base.config, max_cache_len=P + S + max(r.max_new_tokens for r in reqs))
        for n, (k, v) in enumerate(layers):
            cache.update(k, v, n)
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device), "past_key_values": cache}

    @torch.no_grad()
    def generate(self, reqs: list[GenRequest]) -> list[GenResult]:
        from transformers import StoppingCriteriaList

        unknown = {r.adapter for r in reqs if r.adapter and r.adapter not in self.adapters}
        if unknown:
            raise KeyError(f"adapters not loaded: {sorted(unknown)}")
        grammars = self._grammars(reqs)
        with self.lock:
            t0 = time.perf_counter()
            self.batch_sizes.append(len(reqs))
            enc = self._encode(reqs)
            plen = enc["input_ids"].shape[1]
            out = self.model.generate(**enc, max_new_tokens=max(r.max_new_tokens for r in reqs),
                                      stopping_criteria=StoppingCriteriaList([_RowStops(self.tok, plen, reqs)]),
                                      **self._gen_kwargs(reqs), **grammars)
            self.gen_ms.append(round(1000 * (time.perf_counter() - t0), 1))
        results = []
        for i, r in enumerate(reqs):
            ids = out[i, plen:plen + r.max_new_tokens].tolist()
            eos = self.tok.eos_token_id
            hit_eos = eos in ids
            ids = ids[: ids.index(eos)] if hit_eos else ids
            ids = [t for t in ids if t != self.tok.pad_token_id or t == eos]
            text, hit_stop = cut_at_stop(self.tok.decode(ids, skip_special_tokens=True), r.stop)
            prompt_tokens = int(enc["attention_mask"][i].sum())
            results.append(GenResult(text, prompt_tokens, len(ids) + int(hit_eos),
                                     "stop" if hit_eos or hit_stop else "length"))
        return results

    def stream(self, req: GenRequest, cancel: threading.Event | None = None) -> Iterator[str]:
        """Decoded pieces as they are generated, holding back any text that could begin a stop string.
        ``cancel`` (set by the caller when its client goes away) stops generation at the next step. When it
        ends, ``req.outcome`` holds the finish reason ("stop": EOS or a stop string; "length") and the
        token counts."""
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        enc = self.tok.pad({"input_ids": [self._ids(req)]}, return_tensors="pt").to(self.device)
        plen = enc["input_ids"].shape[1]
        streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True)
        cancel = cancel or threading.Event()  # set when the client has what it needs (or went away)
        stops = StoppingCriteriaList([_RowStops(self.tok, enc["input_ids"].shape[1], [req]), _Cancelled(cancel)])
        kwargs = {**enc, "max_new_tokens": req.max_new_tokens, "streamer": streamer, "stopping_criteria": stops,
                  **self._grammars([req])}

        error: list[BaseException] = []
        new_ids: list[list[int]] = []

        def run() -> None:
            try:
                with self.lock, torch.no_grad():
                    self.batch_sizes.append(1)
                    # Adapter kwargs under the lock: adapters may load or unload while this waits for it.
                    out = self.model.generate(**kwargs, **self._gen_kwargs([req]))
                    new_ids.append(out[0, plen:].tolist())
            except BaseException as e:  # noqa: BLE001 - handed to the consumer below
                error.append(e)
                streamer.end()  # unblock the consumer, which re-raises

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        hold = max((len(s) for s in req.stop), default=1) - 1
        sent, buf, hit = 0, "", False
        try:
            for piece in streamer:
                buf += piece
                text, hit = cut_at_stop(buf, req.stop)
                safe = len(text) if hit else max(sent, len(buf) - hold)
                if safe > sent:
                    yield buf[sent:safe]
                    sent = safe
                if hit:
                    return
            if error:
                raise error[0]
            if len(buf) > sent:
                yield buf[sent:]
        finally:
            cancel.set()  # the streamer's queue is unbounded: the thread stops at its next step, never blocks
            worker.join()
            ids = new_ids[0] if new_ids else []
            eos = self.tok.eos_token_id
            hit_eos = eos in ids
            n = (ids.index(eos) + 1) if hit_eos else len([t for t in ids if t != self.tok.pad_token_id])
            req.outcome = GenResult(buf, plen, n, "stop" if hit or hit_eos else "length")
