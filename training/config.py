"""Typed run configuration. YAML is data: ``load_config("x.yaml", ["train.learning_rate=1e-3"])``."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from sqlray.core import ConfigError, StrictModel, load_yaml_config

__all__ = ["ConfigError", "TrainConfig", "load_config"]


PRECISION_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


class LoraSettings(StrictModel):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: float = Field(32, gt=0, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names to adapt, or 'all-linear'.")


class QuantSettings(StrictModel):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="bitsandbytes 4-bit data type (QLoRA uses NF4).")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too (QLoRA's double quant).")
    compute_dtype: Literal["float16", "bfloat16", "float32"] | None = Field(
        None, description="dtype the 4-bit weights are dequantised to for matmuls; unset: follows "
                          "deepspeed.precision (fp16 -> float16, bf16 -> bfloat16, fp32 -> float32).")


class ModelSettings(StrictModel):
    name_or_path: str = Field(description="Hub id (e.g. beomi/Yi-Ko-6B) or a local folder in HF format.")
    method: Literal["full", "lora", "qlora"] = Field("full", description="Full fine-tuning, LoRA, or QLoRA (4-bit base + LoRA).")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="Adapter settings for lora/qlora.")
    quantization: QuantSettings = Field(default_factory=QuantSettings, description="4-bit settings for qlora.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward: less memory, more time.")
    create_tiny_if_missing: bool = Field(
        False, description="If name_or_path has no model, build the embedded tiny Llama there (the default demo).")


class DataSettings(StrictModel):
    source: str = Field("data/text2sql", description="Local folder/file (jsonl, csv, parquet) or a hub dataset id.")
    config_name: str | None = Field(None, description="Hub dataset config (e.g. 'origin' or 'clean').")
    train_split: str = Field("train", description="Split to train on.")
    eval_split: str = Field("validation", description="Split for the validation loss during training.")
    test_splits: list[str] = Field(default_factory=lambda: ["test", "test_unseen_schemas", "test_unseen_db"],
                                   description="Splits scored (EM/EX) before and after training.")
    max_length: int = Field(1024, ge=16, description="Block size in tokens; longer rows are dropped, not truncated.")
    max_train_rows: int | None = Field(None, ge=1, description="Use only the first N training rows (smoke runs).")
    loss_on_prompt: bool = Field(False, description="Train on every token, prompt included, not only the SQL (the "
                                                    "validation loss stays SQL-only). For a model trained from "
                                                    "scratch: predicting the question's words from the DDL teaches "
                                                    "it to look names up in the DDL.")
    bpe_dropout: float = Field(0.0, ge=0, lt=1, description="BPE-dropout on the training rows (not validation, "
                                                          "not inference): each token of a row is split into two "
                                                          "vocabulary tokens with this probability (recursively), "
                                                          "a pre-token the same way everywhere in its row, seeded by "
                                                          "train.seed. For copying unseen names piece by piece.")
    group_by_length: bool = Field(False, description="Batch training rows of similar length (transformers' "
                                                     "DistributedLengthGroupedSampler: shuffled, then sorted within "
                                                     "mega-batches of 50 steps): ~1.45x the steps per second on the "
                                                     "demo, but each step learns less (README: runs F, G).")


class OptimSettings(StrictModel):
    epochs: int = Field(1, ge=1, description="Passes over the training split.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (a step budget).")
    micro_batch_size: int = Field(8, ge=1, description="Sequences per worker per forward pass.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not applied to norms and biases).")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps for linear warmup.")
    scheduler: Literal["linear", "cosine", "constant_with_warmup"] = Field("cosine", description="LR schedule after warmup.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 disables).")
    seed: int = Field(42, description="Seed for model init, data order and dropout.")
    log_every_steps: int = Field(10, ge=1, description="Record the training loss every N steps.")
    eval_every_steps: int = Field(100, ge=1, description="Validation loss and a checkpoint every N steps.")


class DeepSpeedSettings(StrictModel):
    stage: Literal[0, 1, 2, 3] = Field(2, description="ZeRO stage: 1 shards optimizer state, 2 also gradients, 3 also parameters.")
    offload_optimizer: Literal["none", "cpu"] = Field("none", description="Keep optimizer state in CPU memory (ZeRO-Offload).")
    offload_param: Literal["none", "cpu"] = Field("none", description="Keep parameters in CPU memory (ZeRO-3 only).")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="Training precision; bf16/fp16 need GPUs.")


class ScalingSettings(StrictModel):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (data-parallel ranks).")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs reserved per worker (also its torch threads).")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="How workers are placed on nodes (Ray placement group strategy); SPREAD uses more nodes.")


class RunSettings(StrictModel):
    name: str = Field("sqlray-run", pattern=r"^[A-Za-z0-9_.\-]+$", description="Run name; rerunning the same name resumes.")
    storage_path: str = Field("runs", description="Where runs live (local path, or a shared/cloud URI on clusters).")
    max_failures: int = Field(1, ge=-1, description="Worker-group restarts from the last checkpoint (-1: forever).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on storage.")


class EvalSettings(StrictModel):
    enabled: bool = Field(True, description="Score test splits before and after training.")
    score_base: bool = Field(True, description="Also score the base model before training (the 'before' "
                                               "columns); off for a randomly initialised base, which scores 0.")
    max_new_tokens: int = Field(96, ge=1, le=2048, description="Generation limit for the SQL.")
    batch_size: int = Field(32, ge=1, description="Prompts per generate() call.")
    num_actors: int = Field(2, ge=1, description="Ray actors generating in parallel.")
    max_rows: int | None = Field(None, ge=1, description="Score only the first N rows of each split.")
    constrain_sql: bool = Field(True, description="Decode under each row's schema grammar: the SQL names only its "
                                                  "DDL's tables and columns (evaluation.constrain), as /v1/sql serves.")
    rename_names: bool = Field(True, description="Rename tables and columns the model never saw to names it knows "
                                                 "(from the model folder's schema_vocab.json, if any), and back in "
                                                 "its SQL (evaluation.rename), as /v1/sql serves.")
    also_unconstrained: bool = Field(False, description="Also score free decoding and print both: what the network "
                                                        "learned alone vs with the schema grammar.")
    targets: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, description="Execution-accuracy goals by test split (split: lowest acceptable EX, "
                                          "0-1); the job prints each beside the EX reached, met or not (a split "
                                          "data.test_splits leaves out shows as not scored).")
    use_gpu: bool | None = Field(None, description="Generator actors each take one GPU (never more actors than "
                                                   "GPUs) and decode in the checkpoint's 16-bit dtype (bf16 for an fp32 "
                                                   "one, fp16 where bf16 is unsupported); default: scaling.use_gpu.")


class TrainConfig(StrictModel):
    model: ModelSettings = Field(description="Base model and fine-tuning method.")
    data: DataSettings = Field(default_factory=DataSettings, description="Dataset source and splits.")
    train: OptimSettings = Field(default_factory=OptimSettings, description="Optimisation and schedule.")
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings, description="ZeRO sharding and precision.")
    scaling: ScalingSettings = Field(default_factory=ScalingSettings, description="Ray Train workers.")
    run: RunSettings = Field(default_factory=RunSettings, description="Run name, storage and fault tolerance.")
    eval: EvalSettings = Field(default_factory=EvalSettings, description="Before/after scoring.")

    @model_validator(mode="after")
    def _compatible(self) -> "TrainConfig":
        m, ds, sc = self.model, self.deepspeed, self.scaling
        if m.method == "qlora" and not sc.use_gpu:
            raise ValueError("model.method=qlora needs scaling.use_gpu=true: bitsandbytes has no 4-bit backward "
                             "kernel on CPU. Use method=lora (or full) for CPU runs.")
        if m.method == "qlora" and ds.stage == 3 and sc.num_workers > 1:
            raise ValueError("model.method=qlora with deepspeed.stage=3 on several workers is not supported: "
                             "ZeRO-3 cannot partition bitsandbytes 4-bit weights. Use deepspeed.stage=2 "
                             "(each GPU holds the small 4-bit base; only adapter state is sharded).")
        if ds.precision != "fp32" and not sc.use_gpu:
            raise ValueError(f"deepspeed.precision={ds.precision} needs scaling.use_gpu=true; use fp32 on CPU.")
        if ds.offload_param != "none" and ds.stage != 3:
            raise ValueError("deepspeed.offload_param needs deepspeed.stage=3 (only ZeRO-3 partitions parameters).")
        if ds.offload_optimizer != "none" and ds.stage == 0:
            raise ValueError("deepspeed.offload_optimizer needs deepspeed.stage>=1.")
        if m.method == "full" and m.quantization != QuantSettings():
            raise ValueError("model.quantization is only used with model.method=qlora.")
        cd, want = m.quantization.compute_dtype, PRECISION_DTYPES[ds.precision]
        if m.method == "qlora" and cd is not None and cd != want:
            raise ValueError(f"model.quantization.compute_dtype={cd} contradicts deepspeed.precision={ds.precision} "
                             f"(which computes in {want}): leave compute_dtype unset or make them agree.")
        return self

    @property
    def compute_dtype(self) -> str:
        """The QLoRA compute dtype in effect: the one set, else the training precision's."""
        return self.model.quantization.compute_dtype or PRECISION_DTYPES[self.deepspeed.precision]

    @property
    def global_batch_size(self) -> int:
        t = self.train
        return t.micro_batch_size * t.gradient_accumulation_steps * self.scaling.num_workers


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read YAML, apply ``a.b=value`` overrides (values parsed as YAML), validate."""
    return load_yaml_config(path, overrides, TrainConfig)
