"""Per-GPU training memory, the way the reference teaches it: parameters + gradients + optimizer
state + activations, for the config's method, precision, ZeRO stage and world size. The model is
built on the meta device from its config alone, so no weights are loaded."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sqlray.training.config import TrainConfig

GiB = 1024**3


@dataclass
class MemoryEstimate:
    total_params: int
    trainable_params: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits


def _meta_model(name_or_path: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(name_or_path)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config), config


def _lora_params(model, cfg: TrainConfig) -> int:
    targets = cfg.model.lora.target_modules
    n = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
            if targets == "all-linear" or name.rsplit(".", 1)[-1] in targets:
                n += cfg.model.lora.r * (mod.in_features + mod.out_features)
    return n


def estimate_memory(cfg: TrainConfig) -> MemoryEstimate:
    model, mc = _meta_model(cfg.model.name_or_path)
    n = sum(p.numel() for p in model.parameters())
    world, stage = cfg.scaling.num_workers, cfg.deepspeed.stage
    half = cfg.deepspeed.precision in ("bf16", "fp16")
    method = cfg.model.method
    t = n if method == "full" else _lora_params(model, cfg)
    if method == "qlora":
        # NF4 is 0.5 byte + ~0.03 byte of (double-quantised) constants per parameter, for the linear
        # layers only: embeddings, norms and lm_head stay unquantised, in fp32 after k-bit preparation.
        linear = sum(m.weight.numel() for name, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and "lm_head" not in name)
        weights = linear * 0.53 + (n - linear) * 4
    else:
        weights = n * (2 if half else 4) / (world if stage == 3 else 1)
    if method != "full":
        weights += t * (2 if half else 4)
    gradients = t * (2 if half else 4) / (world if stage >= 2 else 1)
    # AdamW: m and v (8 bytes) plus an fp32 master copy (4 bytes) under mixed precision.
    opt = t * (12 if half else 8) / (world if stage >= 1 else 1)
    optimizer = 0.0 if cfg.deepspeed.offload_optimizer != "none" else opt
    # Activations (Korthikanti et al. 2022), per layer s*b*h*(34 + 5*a*s/h) bytes in 16-bit;
    # checkpointing keeps only each layer's input (2*s*b*h) plus one layer's full set.
    s, b = cfg.data.max_length, cfg.train.micro_batch_size
    h, layers, a = mc.hidden_size, mc.num_hidden_layers, mc.num_attention_heads
    per_layer = s * b * h * (34 + 5 * a * s / h) * (1 if half else 2)
    activations = (layers * 2 * s * b * h + per_layer) if cfg.model.gradient_checkpointing else layers * per_layer
    # The loss works on fp32 logits and their gradient: ~8 bytes a logit (measured on an H100 with
    # benchmarks/gpu_memory.py: a 78k vocabulary x 8k tokens is ~5 GiB, more than the checkpointed layers).
    logits = s * b * mc.vocab_size * 8
    return MemoryEstimate(n, t, weights, gradients, optimizer, activations, logits)


def format_estimate(e: MemoryEstimate, cfg: TrainConfig) -> str:
    ds = cfg.deepspeed
    head = (f"{cfg.model.name_or_path}: {e.total_params / 1e6:,.1f}M parameters, {e.trainable_params / 1e6:,.3f}M trainable "
            f"({100 * e.trainable_params / e.total_params:.3f}%); method={cfg.model.method}, precision={ds.precision}, "
            f"ZeRO-{ds.stage}, {cfg.scaling.num_workers} workers, micro-batch {cfg.train.micro_batch_size} x "
            f"{cfg.data.max_length} tokens")
    rows = [("parameters", e.weights), ("gradients", e.gradients), ("optimizer state", e.optimizer),
            ("activations", e.activations), ("logits (loss)", e.logits), ("total per GPU", e.total)]
    return head + "\n" + "\n".join(f"  {k:<16}{v / GiB:>10.2f} GiB" for k, v in rows)
