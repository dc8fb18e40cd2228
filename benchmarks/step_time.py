"""Where a training step's time goes: the model alone (plain PyTorch AdamW) against the same model under
sqlray's DeepSpeed wrapping, with and without gradient checkpointing, on one device, side by side.

    python benchmarks/step_time.py [--config configs/smollm2-gpu-qlora.yaml] [--steps 30] [overrides ...]
    python benchmarks/step_time.py --config configs/tiny-cpu.yaml scaling.use_gpu=false   # CPU smoke run

Written after an H200 ran SmolLM2-135M QLoRA (micro-batch 16, bf16, ZeRO-2) through `sqlray train` at
about one optimizer step per second. Each variant runs in a process of its own on the config's own
data (real micro-batches of prompt + SQL, padded per batch as training pads them) and model
(``build_training_model``), so the table says whether the time is the model's (4-bit kernels,
checkpointing) or the wrapping's. The plain loop keeps the built model's fp32 trainable weights and
computes under autocast (fp16 with a loss scaler), clipping like DeepSpeed; DeepSpeed casts the module
to its precision and keeps fp32 masters, so dtype effects are part of the ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _isolated import as_single_rank, measure_in_child, report  # noqa: E402
VARIANTS = ["plain", "plain+ckpt", "deepspeed", "deepspeed+ckpt"]


def _batches(cfg, tokenizer, n: int) -> list[dict]:
    from torch.utils.data import DataLoader
    from transformers import DataCollatorForSeq2Seq

    from sqlray.text2sql import get_split, load_text2sql
    from sqlray.training.data import tokenize_split

    rows = get_split(load_text2sql(cfg.data.source, cfg.data.config_name), cfg.data.train_split, cfg.data.source)
    rows = rows.shuffle(seed=0).select(range(min(len(rows), n * cfg.train.micro_batch_size * 2)))
    ds = tokenize_split(rows, tokenizer, cfg.data.max_length).remove_columns(["length"])
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt")
    loader = DataLoader(ds, batch_size=cfg.train.micro_batch_size, collate_fn=collate, drop_last=True)
    return [b for _, b in zip(range(n), loader)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(cfg, variant: str, steps: int, warmup: int) -> dict:
    """Seconds per optimizer step (one micro-batch each) after ``warmup`` steps, and peak GPU memory."""
    from sqlray.training.model import build_tokenizer
    from sqlray.training.train import build_training_model

    gpu = cfg.scaling.use_gpu
    device = torch.device("cuda", 0) if gpu else torch.device("cpu")
    model = build_training_model(cfg, device_map={"": 0} if gpu else None)
    batches = _batches(cfg, build_tokenizer(cfg.model.name_or_path), warmup + steps)
    if len(batches) < warmup + steps:
        raise SystemExit(f"only {len(batches)} micro-batches of data for {warmup} + {steps} steps")
    if variant.startswith("deepspeed"):
        from sqlray.training.parallelize import wrap

        engine = wrap(model, cfg, total_steps=warmup + steps)

        def step(batch):
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()
            return loss
    else:  # fp32 master weights as built, 16-bit compute by autocast (fp16 with a loss scaler), clipped
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.train.learning_rate)
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.deepspeed.precision)
        scaler = torch.amp.GradScaler(device.type, enabled=half is torch.float16)

        def step(batch):
            with torch.autocast(device.type, dtype=half or torch.float32, enabled=half is not None):
                loss = model(**batch).loss
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            if cfg.train.max_grad_norm:  # 0 disables clipping, as in the DeepSpeed config
                torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            return loss
    model.train()
    tokens, t0 = 0, None
    for i, batch in enumerate(batches):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        loss = step({k: v.to(device) for k, v in batch.items()})
        if i >= warmup:
            tokens += int(batch["attention_mask"].sum())
    _sync(device)
    elapsed = time.perf_counter() - t0
    return {"s_per_step": elapsed / steps, "tokens_per_s": tokens / elapsed, "loss": float(loss),
            "peak_gib": torch.cuda.max_memory_allocated() / 1024**3 if gpu else None}


def _child(args) -> None:
    as_single_rank(29533)
    from sqlray.training.config import load_config
    from sqlray.training.parallelize import init_distributed

    ckpt = "true" if args.variant.endswith("+ckpt") else "false"
    cfg = load_config(args.config, [*args.overrides, f"model.gradient_checkpointing={ckpt}",
                                    "scaling.num_workers=1", "train.gradient_accumulation_steps=1"])  # one process
    if args.variant.startswith("deepspeed"):
        init_distributed(cfg.scaling.use_gpu)
    report(measure(cfg, args.variant, args.steps, args.warmup))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "smollm2-gpu-qlora.yaml"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.micro_batch_size=8")
    args = ap.parse_args()
    if args.variant:
        return _child(args)
    rows = {}
    for v in args.variants:
        cmd = [sys.executable, __file__, "--variant", v, "--config", args.config, "--steps", str(args.steps),
               "--warmup", str(args.warmup), *args.overrides]
        r = rows[v] = measure_in_child(cmd, v, timeout=1800)
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        print(f"{v:<16} {r['s_per_step']:8.3f} s/step {r['tokens_per_s']:10,.0f} tok/s  peak {peak} GiB  "
              f"loss {r['loss']:.3f}", flush=True)
    for ds, plain in (("deepspeed", "plain"), ("deepspeed+ckpt", "plain+ckpt"), ("plain+ckpt", "plain")):
        if ds in rows and plain in rows:
            print(f"ratio {ds} / {plain} (time per step): {rows[ds]['s_per_step'] / rows[plain]['s_per_step']:.2f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
