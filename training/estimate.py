"""Per-GPU training memory, the way the reference teaches it: parameters + gradients + optimizer
state + activations, for the config's method, precision, ZeRO stage, offload and world size. Model
states come from DeepSpeed's own estimators; the model is built on the meta device from its config
alone, so no weights are loaded."""
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


def _largest_layer(model) -> int:
    """Parameters of the largest single module's own weights (ZeRO-3 gathers one at a time)."""
    return max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)


def model_state_bytes(trainable: int, largest_layer: int, cfg: TrainConfig) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per GPU for the trainable parameters.

    Mixed precision (fp16/bf16) under ZeRO-2/3 is DeepSpeed's own estimate, split into its parts:
    ``estimate_zero2_model_states_mem_needs`` = 2N + 18N/W (16-bit params; 16-bit grads + fp32 grad
    partition + fp32 master + Adam m, v), or 2N with the optimizer offloaded; ``estimate_zero3_...`` =
    4 x largest layer + 18N/W, largest + 2N/W with the optimizer offloaded, the largest layer alone with
    parameters offloaded too. fp32 (CPU) and stages 0/1 follow the same accounting by hand."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    ds, w, t = cfg.deepspeed, cfg.scaling.num_workers, trainable
    half, off_opt, off_par = ds.precision != "fp32", ds.offload_optimizer != "none", ds.offload_param != "none"
    if half and ds.stage == 2:
        _, gpu = estimate_zero2_model_states_mem_needs(t, num_gpus_per_node=w, num_nodes=1, cpu_offload=off_opt)
        rest = gpu - 2 * t  # DeepSpeed's 18N/W: 6 bytes of gradients (16 + 32-bit), 12 of fp32 master + Adam
        return 2 * t, rest * 6 / 18, rest * 12 / 18
    if half and ds.stage == 3:
        _, gpu, _ = estimate_zero3_model_states_mem_needs(t, largest_layer, num_gpus_per_node=w, num_nodes=1,
                                                       cpu_offload=off_opt, cpu_offload_params=off_par)
        if off_opt:
            return gpu, 0.0, 0.0  # what stays on the GPU is gathered parameters
        rest = gpu - 4 * largest_layer  # 18N/W, split as for ZeRO-2
        return 4 * largest_layer + rest * 2 / 18, rest * 6 / 18, rest * 10 / 18
    wb = 2 if half else 4
    weights = t * wb / (w if ds.stage == 3 else 1)
    grads = t * wb / (w if ds.stage >= 2 else 1)
    # AdamW: m and v (8 bytes), plus an fp32 master and fp32 gradients (8 more) under mixed precision.
    opt = 0.0 if off_opt else t * (16 if half else 8) / (w if ds.stage >= 1 else 1)
    return weights, grads, opt


def _frozen_base_bytes(model, n: int, cfg: TrainConfig) -> float:
    """The frozen base of LoRA/QLoRA: not in the optimizer, so DeepSpeed's model-state formulas skip it."""
    if cfg.model.method == "qlora":
        # NF4 is 0.5 byte + ~0.03 byte of (double-quantised) constants per parameter, for the linear
        # layers only: embeddings, norms and lm_head stay unquantised, in fp32 after k-bit preparation.
        linear = sum(m.weight.numel() for name, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and "lm_head" not in name)
        return linear * 0.53 + (n - linear) * 4
    ds = cfg.deepspeed
    if ds.offload_param != "none":
        return 0.0
    return n * (2 if ds.precision != "fp32" else 4) / (cfg.scaling.num_workers if ds.stage == 3 else 1)


def activation_bytes(mc, cfg: TrainConfig) -> float:
    """Korthikanti et al. (2022): per layer s*b*h*(34 + 5*a*s/h) bytes in 16-bit. The 5*a*s/h term is the
    s x s attention scores, which SDPA and flash attention never hold (transformers' default): kept only
    for ``attn_implementation: eager``. Checkpointing keeps each layer's input plus one layer's full set."""
    s, b = cfg.data.max_length, cfg.train.micro_batch_size
    h, layers, a = mc.hidden_size, mc.num_hidden_layers, mc.num_attention_heads
    eager = getattr(mc, "_attn_implementation", None) == "eager"
    per_layer = s * b * h * (34 + (5 * a * s / h if eager else 0)) * (1 if cfg.deepspeed.precision != "fp32" else 2)
    if cfg.model.gradient_checkpointing:
        return layers * 2 * s * b * h + per_layer
    return layers * per_layer


def estimate_memory(cfg: TrainConfig) -> MemoryEstimate:
    model, mc = _meta_model(cfg.model.name_or_path)
    n = sum(p.numel() for p in model.parameters())
    method = cfg.model.method
    t = n if method == "full" else _lora_params(model, cfg)
    weights, gradients, optimizer = model_state_bytes(t, _largest_layer(model), cfg)
    if method != "full":
        weights += _frozen_base_bytes(model, n, cfg)
    # The loss works on fp32 logits and their gradient: ~8 bytes a logit (measured on an H100 with
    # benchmarks/gpu_memory.py: a 78k vocabulary x 8k tokens is ~5 GiB, more than the checkpointed layers).
    logits = cfg.data.max_length * cfg.train.micro_batch_size * mc.vocab_size * 8
    return MemoryEstimate(n, t, weights, gradients, optimizer, activation_bytes(mc, cfg), logits)


def format_estimate(e: MemoryEstimate, cfg: TrainConfig) -> str:
    ds = cfg.deepspeed
    head = (f"{cfg.model.name_or_path}: {e.total_params / 1e6:,.1f}M parameters, {e.trainable_params / 1e6:,.3f}M trainable "
            f"({100 * e.trainable_params / e.total_params:.3f}%); method={cfg.model.method}, precision={ds.precision}, "
            f"ZeRO-{ds.stage}, {cfg.scaling.num_workers} workers, micro-batch {cfg.train.micro_batch_size} x "
            f"{cfg.data.max_length} tokens")
    rows = [("parameters", e.weights), ("gradients", e.gradients), ("optimizer state", e.optimizer),
            ("activations", e.activations), ("logits (loss)", e.logits), ("total per GPU", e.total)]
    return head + "\n" + "\n".join(f"  {k:<16}{v / GiB:>10.2f} GiB" for k, v in rows)
