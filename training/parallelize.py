"""DeepSpeed wiring, in one place: ZeRO config from the typed run config, engine setup,
sharded checkpoints, and gathering (ZeRO-3 partitioned) weights for export."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sqlray.training.config import TrainConfig

CKPT_TAG = "state"


def deepspeed_config(cfg: TrainConfig) -> dict[str, Any]:
    """The DeepSpeed JSON config for ``cfg`` (pure: unit-testable, printable with --estimate)."""
    t, ds = cfg.train, cfg.deepspeed
    zero: dict[str, Any] = {"stage": ds.stage, "contiguous_gradients": True, "overlap_comm": False}
    if ds.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": ds.offload_optimizer, "pin_memory": cfg.scaling.use_gpu}
    if ds.offload_param != "none":
        zero["offload_param"] = {"device": ds.offload_param, "pin_memory": cfg.scaling.use_gpu}
    if ds.stage == 3:
        # Without it a ZeRO-3 save has no consolidated weights (only shards).
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    conf: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "train_batch_size": cfg.global_batch_size,
        "gradient_clipping": t.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": ds.precision == "bf16"},
        "fp16": {"enabled": ds.precision == "fp16", "loss_scale": 0},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if ds.offload_optimizer != "none":
        # ZeRO-Offload needs DeepSpeed's own CPU Adam; it is built from this section.
        conf["optimizer"] = {"type": "AdamW", "params": {"lr": t.learning_rate, "weight_decay": t.weight_decay,
                                                         "betas": [0.9, 0.999], "eps": 1e-8}}
    return conf


def partitioned_construction(cfg: TrainConfig):
    """Under ZeRO-3, what makes ``from_pretrained`` build the model already partitioned (transformers runs
    it inside ``deepspeed.zero.Init`` while an ``HfDeepSpeedConfig`` is alive): no rank ever holds the full
    model. Keep the returned object for the whole run; None for other stages."""
    if cfg.deepspeed.stage != 3:
        return None
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(deepspeed_config(cfg))


def init_distributed(use_gpu: bool) -> None:
    """Reuse the process group Ray Train already created (gloo on CPU, nccl on GPU). A GPU run sets
    DeepSpeed's accelerator to cuda even where the environment said cpu (a test process does): DeepSpeed
    would otherwise move the model back to the CPU and fail at its NCCL broadcast."""
    if use_gpu:
        os.environ["DS_ACCELERATOR"] = "cuda"
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")


def _param_groups(model, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def wrap(model, cfg: TrainConfig, total_steps: int):
    """``deepspeed.initialize`` with an AdamW optimizer over trainable parameters and a warmup schedule."""
    import deepspeed
    from transformers import get_scheduler

    t = cfg.train
    if cfg.scaling.use_gpu:
        _check_cuda_accelerator()
    conf = deepspeed_config(cfg)
    optimizer = None
    if "optimizer" not in conf:
        optimizer = lambda params: torch.optim.AdamW(params, lr=t.learning_rate, betas=(0.9, 0.999), eps=1e-8)  # noqa: E731
    scheduler = lambda opt: get_scheduler(  # noqa: E731
        t.scheduler, opt, num_warmup_steps=int(t.warmup_ratio * total_steps), num_training_steps=total_steps)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=_param_groups(model, t.weight_decay),
                                           optimizer=optimizer, lr_scheduler=scheduler, config=conf)
    return engine


def _check_cuda_accelerator() -> None:
    """DeepSpeed picks its accelerator once per process (DS_ACCELERATOR, else detection); a cpu one moves a
    GPU model back to the CPU and then fails broadcasting it over NCCL ("No backend type associated with
    device type cpu"). Say so before that."""
    from deepspeed.accelerator import get_accelerator

    name = get_accelerator().device_name()
    if name != "cuda":
        raise RuntimeError(f"scaling.use_gpu=true but DeepSpeed's accelerator is {name!r} "
                           f"(DS_ACCELERATOR={os.environ.get('DS_ACCELERATOR')!r} when DeepSpeed first chose it): "
                           "call init_distributed(True) before anything asks DeepSpeed for its accelerator")


def _has_frozen(engine) -> bool:
    return any(not p.requires_grad for p in engine.module.parameters())


def save_state(engine, folder: Path) -> None:
    """Every rank writes its own shard (ZeRO optimizer state, and parameters under ZeRO-3). With a frozen
    base (LoRA/QLoRA) only the trainable parameters are written: the base comes from name_or_path."""
    engine.save_checkpoint(str(folder), tag=CKPT_TAG, exclude_frozen_parameters=_has_frozen(engine))


def load_state(engine, folder: Path) -> None:
    # A lean (adapter-only) checkpoint lacks the frozen weights the engine already holds from the base.
    path, _ = engine.load_checkpoint(str(folder), tag=CKPT_TAG, load_optimizer_states=True,
                                     load_lr_scheduler_states=True, load_module_strict=not _has_frozen(engine))
    if path is None:
        raise RuntimeError(f"no DeepSpeed state under {folder}")


def _fp32_master(param) -> torch.Tensor:
    """A trainable parameter's fp32 master copy (DeepSpeed's, gathered under ZeRO-3), or the parameter
    itself where it is the master (fp32 without ZeRO). Collective: every rank calls it."""
    from deepspeed.utils import safe_get_full_fp32_param

    full = safe_get_full_fp32_param(param)
    return (full if full is not None else param.detach()).float()


def gather_weights(engine, adapter_only: bool, rank: int) -> dict[str, torch.Tensor] | None:
    """Full (unpartitioned) weights on rank 0, None elsewhere; every rank must call this (collectives).

    LoRA/QLoRA: the adapter from the optimizer's fp32 master weights (not the 16-bit working copy).
    Full fine-tuning: the model's weights; under ZeRO-3 through DeepSpeed's consolidated state dict,
    which gathers one layer at a time onto rank 0 instead of every parameter on every rank at once."""
    module = engine.module
    if adapter_only:
        from peft import get_peft_model_state_dict

        masters = {n: _fp32_master(p) for n, p in module.named_parameters() if p.requires_grad}
        if rank != 0:
            return None
        sd = get_peft_model_state_dict(module, state_dict=masters)
    elif engine.zero_optimization_stage() == 3:
        sd = engine._zero3_consolidated_16bit_state_dict()  # DeepSpeed's own layer-by-layer gather
        if rank != 0:
            return None
    else:
        if rank != 0:
            return None
        sd = module.state_dict()
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in sd.items()}
