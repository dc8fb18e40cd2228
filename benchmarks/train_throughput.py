"""Training throughput: the Ray Train + DeepSpeed ZeRO-2 path on 2 CPU workers against a plain
single-process PyTorch loop on the same model, data and cores, measured side by side in one run.

    python benchmarks/train_throughput.py [--steps 120] [--micro-batch 16]

Tokens/s counts the non-padding tokens seen by the optimizer (prompt + SQL) over the timed steps,
after a warm-up that excludes process start, model load and DeepSpeed set-up.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _forever(loader):
    """Batches across epochs: the timed steps may outrun one pass over the data."""
    while True:
        yield from loader


def plain_loop(model_dir: str, data: str, steps: int, warmup: int, mb: int, threads: int) -> float:
    """Single process, `threads` torch threads, global batch = 2 x mb (same as 2 workers x mb)."""
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

    from sqlray.text2sql import load_text2sql
    from sqlray.training.data import tokenize_split

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ds = tokenize_split(load_text2sql(data)["train"], tok, 512).remove_columns(["length"])
    loader = DataLoader(ds, batch_size=2 * mb, shuffle=True,
                        collate_fn=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    it = _forever(loader)
    tokens, t0 = 0, None
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        batch = next(it)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if step >= warmup:
            tokens += int(batch["attention_mask"].sum())
    return tokens / (time.perf_counter() - t0)


def ray_zero2(model_dir: str, data: str, steps: int, warmup: int, mb: int, method: str = "full") -> float:
    import ray.train
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    def fn(config):
        from torch.utils.data import DataLoader, DistributedSampler
        from transformers import DataCollatorForSeq2Seq

        from sqlray.training.config import load_config
        from sqlray.text2sql import load_text2sql
        from sqlray.training.data import tokenize_split
        from sqlray.training.model import build_model, build_tokenizer
        from sqlray.training.parallelize import init_distributed, wrap

        torch.set_num_threads(1)
        ctx = ray.train.get_context()
        cfg = load_config(None, [f"model.name_or_path={config['model']}", f"train.micro_batch_size={config['mb']}",
                                 "deepspeed.stage=2", "train.learning_rate=1e-3", f"model.method={config['method']}"])
        init_distributed(False)
        tok = build_tokenizer(cfg.model.name_or_path)
        ds = tokenize_split(load_text2sql(config["data"])["train"], tok, 512).remove_columns(["length"])
        loader = DataLoader(ds, batch_size=config["mb"], collate_fn=DataCollatorForSeq2Seq(tok, padding=True),
                            sampler=DistributedSampler(ds, ctx.get_world_size(), ctx.get_world_rank(), seed=0))
        engine = wrap(build_model(cfg.model), cfg, total_steps=config["warmup"] + config["steps"])
        it = _forever(loader)
        tokens, t0 = 0, None
        for step in range(config["warmup"] + config["steps"]):
            if step == config["warmup"]:
                torch.distributed.barrier()
                t0 = time.perf_counter()
            batch = next(it)
            engine.backward(engine(**batch).loss)
            engine.step()
            if step >= config["warmup"]:
                tokens += int(batch["attention_mask"].sum())
        torch.distributed.barrier()
        elapsed = time.perf_counter() - t0
        total = torch.tensor([tokens], dtype=torch.float64)
        torch.distributed.all_reduce(total)
        return {"tokens_per_s": float(total) / elapsed}

    result = TorchTrainer(fn, train_loop_config={"model": model_dir, "data": data, "steps": steps,
                                                 "warmup": warmup, "mb": mb, "method": method},
                          scaling_config=ScalingConfig(num_workers=2, use_gpu=False)).fit()
    return result.return_value["tokens_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--data", default=str(REPO / "data" / "text2sql"))
    args = ap.parse_args()

    import ray

    from sqlray.training.tiny import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(make_tiny_model(Path(tmp) / "tiny", data=args.data))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}})
        zero2 = ray_zero2(model_dir, args.data, args.steps, args.warmup, args.micro_batch)
        lora = ray_zero2(model_dir, args.data, args.steps, args.warmup, args.micro_batch, method="lora")
        ray.shutdown()
        plain = plain_loop(model_dir, args.data, args.steps, args.warmup, args.micro_batch, threads=2)
    print(f"{'path':<36}{'tokens/s':>12}")
    print(f"{'plain loop, 1 process x 2 threads':<36}{plain:>12,.0f}")
    print(f"{'Ray Train ZeRO-2, 2 workers x 1':<36}{zero2:>12,.0f}")
    print(f"{'Ray Train ZeRO-2 LoRA (r 16, qkvo)':<36}{lora:>12,.0f}")
    print(f"ratio (Ray ZeRO-2 / plain): {zero2 / plain:.2f}   (goal >= 0.8)")
    print(f"ratio (LoRA / full fine-tuning, same cores): {lora / zero2:.2f}")
    print(json.dumps({"plain_tokens_per_s": plain, "ray_zero2_tokens_per_s": zero2, "ray_zero2_lora_tokens_per_s": lora,
                      "ratio": zero2 / plain, "lora_over_full": lora / zero2}))


if __name__ == "__main__":
    main()
