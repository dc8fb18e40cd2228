"""The vLLM engine: sqlray's engine interface on vLLM's public async engine (``AsyncLLM``).

vLLM batches continuously (a request joins the running batch at the next step; no batch window), keeps
the KV cache in pages with prefix caching (the instruction + DDL head of Text2SQL prompts is shared), and
serves LoRA adapters from local folders through ``LoRARequest``s, many per batch. The engine runs in its
own process (vLLM spawns it); this object is its async client, used from the replica's event loop.
Prompts go in as token ids from ``encode_prompt``, exactly as training and the HF engine encode them.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
from pathlib import Path
from typing import AsyncIterator

from sqlray.serving.engine import GenRequest, GenResult, PromptTooLong
from sqlray.text2sql import encode_prompt

log = logging.getLogger(__name__)


def adapter_rank(path: str | Path) -> int:
    """The LoRA rank in a PEFT adapter folder (vLLM must be started with a max rank at least this)."""
    cfg = Path(path) / "adapter_config.json"
    try:
        return int(json.loads(cfg.read_text())["r"])
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"adapters: {path} is not a PEFT LoRA folder ({cfg}: {e})") from None


def checkpoint_dtype(model_path: str) -> str:
    """The dtype the checkpoint stores (vLLM's own 'auto' turns float32 into bfloat16; sqlray serves what
    was trained, as its transformers engine does, so both engines give the same answers)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path)
    dtype = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None) or "float32"
    return str(dtype).replace("torch.", "")


def zero_adapter(like: str | Path, out: Path) -> Path:
    """A copy of the adapter at ``like`` whose B matrices are zero: applying it changes nothing.

    vLLM 0.32's CPU LoRA ops index adapter slots with the token's adapter index, and a base-model token's
    index is -1, so Python's negative indexing applies the *last* loaded adapter to base-model rows batched
    beside LoRA rows (vllm-project/vllm PRs 48421 and 49656, open). On CPU, base requests therefore go
    through this no-op adapter whenever adapters are configured."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    src = Path(like)
    weights = load_file(src / "adapter_model.safetensors")
    save_file({k: (v.zero_() if "lora_B" in k else v) for k, v in weights.items()}, out / "adapter_model.safetensors")
    (out / "adapter_config.json").write_text((src / "adapter_config.json").read_text())
    return out


def lora_rank_slot(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds ``rank`` (vLLM allows 1, 8, 16, 32, ...)."""
    for slot in (1, 8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= slot:
            return slot
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank (512)")


class VLLMEngine:
    """Generation through vLLM. ``check`` is synchronous (the routes call it before answering 200);
    ``generate_one`` and ``stream`` are async and run concurrently: vLLM's scheduler does the batching."""

    def __init__(self, model_path: str, *, adapters: dict[str, str], max_model_len: int | None = None,
                 max_loras: int = 4, dtype: str = "auto", gpu_memory_utilization: float = 0.9,
                 kv_cache_gib: float = 1.0, threads: int = 1, enforce_eager: bool = True,
                 max_num_seqs: int = 16):
        import torch
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        import tempfile

        from vllm.lora.request import LoRARequest

        on_gpu = torch.cuda.is_available()
        if not on_gpu:  # vLLM's CPU backend reads these from the environment of the process it spawns
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(kv_cache_gib))))
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind" if threads > 1 else "auto")
            torch.set_num_threads(max(1, threads))
        self.tok = AutoTokenizer.from_pretrained(model_path)
        ranks = [adapter_rank(p) for p in adapters.values()]
        # One LoRARequest per adapter name, with a stable id: vLLM keeps adapters in its own LRU by id.
        self.loras = {name: LoRARequest(name, i, str(path)) for i, (name, path) in enumerate(adapters.items(), 1)}
        self.base_lora = None
        if adapters and not on_gpu:  # see zero_adapter(): base rows must not pick up another row's adapter
            self._tmp = tempfile.TemporaryDirectory(prefix="sqlray-zero-lora-")
            path = zero_adapter(next(iter(adapters.values())), Path(self._tmp.name) / "base")
            self.base_lora = LoRARequest("__base__", len(adapters) + 1, str(path))
        args = AsyncEngineArgs(
            model=model_path, tokenizer=model_path, max_model_len=max_model_len,
            dtype=checkpoint_dtype(model_path) if dtype == "auto" else dtype,
            enable_prefix_caching=True, enforce_eager=enforce_eager, disable_log_stats=True, max_num_seqs=max_num_seqs,
            enable_lora=bool(adapters), max_loras=max(1, min(max_loras, len(adapters) or 1)) + bool(self.base_lora),
            max_lora_rank=lora_rank_slot(max(ranks, default=1)),
            **({"gpu_memory_utilization": gpu_memory_utilization} if on_gpu else {}))
        self.llm = AsyncLLM.from_engine_args(args)
        self.max_positions = self.llm.model_config.max_model_len
        self._ids = itertools.count()

    @property
    def adapters(self) -> set[str]:
        return set(self.loras)

    def check(self, req: GenRequest) -> int:
        if req.ids is None:
            req.ids = encode_prompt(self.tok, req.prompt)
        n = len(req.ids)
        if n + req.max_new_tokens > self.max_positions:
            raise PromptTooLong(f"the prompt has {n} tokens and max tokens is {req.max_new_tokens}: together more "
                                f"than the model's context of {self.max_positions} tokens")
        return n

    def _params(self, req: GenRequest, delta: bool):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        grammar = _parsable(req.grammar)
        # Greedy, as the HF engine; stop strings are cut before they are returned (OpenAI's semantics), and
        # while streaming vLLM holds back text that could still begin one.
        return SamplingParams(temperature=0.0, max_tokens=req.max_new_tokens, stop=list(req.stop) or None,
                              include_stop_str_in_output=False, skip_special_tokens=True,
                              # the same EBNF the HF engine runs, through vLLM's own xgrammar backend
                              structured_outputs=StructuredOutputsParams(grammar=grammar) if grammar else None,
                              output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY)

    def _submit(self, req: GenRequest, delta: bool):
        from vllm.inputs import TokensPrompt

        self.check(req)
        if req.adapter and req.adapter not in self.loras:
            raise KeyError(f"adapter {req.adapter!r} is not configured")
        return self.llm.generate(TokensPrompt(prompt_token_ids=req.ids), self._params(req, delta),
                                 f"sqlray-{next(self._ids)}",
                                 lora_request=self.loras[req.adapter] if req.adapter else self.base_lora)

    @staticmethod
    def _result(text: str, out, n_prompt: int, n_new: int) -> GenResult:
        reason = out.outputs[0].finish_reason if out is not None else None
        return GenResult(text, n_prompt, n_new, "length" if reason == "length" else "stop")

    async def generate_one(self, req: GenRequest) -> GenResult:
        final = None
        async for final in self._submit(req, delta=False):
            pass
        o = final.outputs[0]
        return self._result(o.text, final, len(final.prompt_token_ids or req.ids), len(o.token_ids))

    async def stream(self, req: GenRequest) -> AsyncIterator[str]:
        """Text pieces as vLLM decodes them; ``req.outcome`` is set when it ends. Closing this iterator (the
        client went away) aborts the request inside vLLM."""
        text, n_new, last = "", 0, None
        try:
            async for last in self._submit(req, delta=True):
                o = last.outputs[0]
                n_new += len(o.token_ids)
                if o.text:
                    text += o.text
                    yield o.text
        finally:
            req.outcome = self._result(text, last, len(req.ids or []), n_new)

    async def alive(self) -> None:
        await self.llm.check_health()  # raises once vLLM's engine process has died

    def shutdown(self) -> None:
        self.llm.shutdown()


def _parsable(grammar: str | None) -> str | None:
    """The grammar if xgrammar parses it, else None (logged): vLLM would hand a grammar xgrammar refuses to
    another backend that reads a different dialect and fail the request; the HF engine decodes such a row
    freely, and so does this one."""
    if not grammar:
        return None
    import xgrammar as xgr

    try:
        xgr.Grammar.from_ebnf(grammar)
        return grammar
    except Exception as e:  # never expected: sql_grammar escapes what it copies
        log.warning("schema grammar did not parse; this request decodes unconstrained: %s", str(e)[:200])
        return None
