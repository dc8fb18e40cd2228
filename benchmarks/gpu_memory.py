"""Per-GPU training memory on a real GPU against `sqlray train --estimate`, side by side in one run.

    python benchmarks/gpu_memory.py [--config configs/yi-ko-6b-qlora.yaml] [--methods qlora lora]
                                    [--steps 2] [--shape yi-ko-6b|tiny-1b]

No hub is reachable, so the model is the reference model's architecture (beomi/Yi-Ko-6B's config.json)
with random fp16 weights, saved in HF format and loaded back with ``from_pretrained`` the way training
does. Each method runs the training path's own pieces, in a process of its own: ``build_training_model``
(4-bit NF4 base for QLoRA), DeepSpeed ``wrap`` with the config's ZeRO stage and precision, then full-length
micro-batches (the worst case: every sequence ``data.max_length`` tokens). Peak is
``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _isolated import as_single_rank, measure_in_child, report  # noqa: E402

# beomi/Yi-Ko-6B's config.json (Llama architecture); tiny-1b is TinyLlama-1.1B's shape, for a quick run.
SHAPES = {
    "yi-ko-6b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=4, vocab_size=78464, max_position_embeddings=4096, rope_theta=5e6),
    "tiny-1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                    num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048),
}
GiB = 1024**3


def save_random_model(shape: str, folder: Path) -> Path:
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**SHAPES[shape]), dtype=torch.float16)
    model.save_pretrained(folder)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return folder


def measure(cfg, steps: int) -> dict:
    """Peak GPU memory (and step time) of ``steps`` optimizer steps on the training path's own pieces."""
    from sqlray.training.parallelize import wrap
    from sqlray.training.train import build_training_model

    torch.cuda.reset_peak_memory_stats()
    model = build_training_model(cfg, device_map={"": 0})
    loaded = torch.cuda.memory_allocated()
    engine = wrap(model, cfg, total_steps=steps * cfg.train.gradient_accumulation_steps)
    wrapped = torch.cuda.memory_allocated()
    b, s = cfg.train.micro_batch_size, cfg.data.max_length
    vocab = engine.module.config.vocab_size
    t0, losses = time.perf_counter(), []
    for _ in range(steps * cfg.train.gradient_accumulation_steps):
        ids = torch.randint(0, vocab, (b, s), device=engine.device)
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    torch.cuda.synchronize()
    out = {"loaded": loaded, "wrapped": wrapped, "peak": torch.cuda.max_memory_allocated(),
           "s_per_micro": (time.perf_counter() - t0) / len(losses), "loss": losses[-1]}
    engine.destroy()
    del engine, model
    gc.collect()
    torch.cuda.empty_cache()
    return out


def _config(args, folder, method):
    from sqlray.training.config import load_config

    return load_config(args.config, [f"model.name_or_path={folder}", f"model.method={method}",
                                     f"train.gradient_accumulation_steps={args.grad_accum}", *args.overrides])


def _child(args) -> None:
    """One method in a fresh process, so nothing of the previous method's model stays allocated."""
    as_single_rank(29531)
    from sqlray.training.parallelize import init_distributed

    init_distributed(True)
    report(measure(_config(args, args.model, args.measure), args.steps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "yi-ko-6b-qlora.yaml"))
    ap.add_argument("--shape", choices=sorted(SHAPES), default="yi-ko-6b")
    ap.add_argument("--methods", nargs="+", default=["qlora", "lora"])
    ap.add_argument("--steps", type=int, default=1,
                    help="optimizer steps (each gradient_accumulation_steps micro-batches)")
    ap.add_argument("--grad-accum", type=int, default=1, help="override train.gradient_accumulation_steps")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.micro_batch_size=4")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu_memory.py needs a CUDA GPU")
    if args.measure:
        return _child(args)
    from sqlray.training.estimate import estimate_memory

    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, shape {args.shape}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_random_model(args.shape, Path(tmp) / args.shape)
        for method in args.methods:
            cfg = _config(args, folder, method)
            est = estimate_memory(cfg)
            cmd = [sys.executable, __file__, "--measure", method, "--model", str(folder), "--config", args.config,
                   "--steps", str(args.steps), "--grad-accum", str(args.grad_accum), *args.overrides]
            got = measure_in_child(cmd, method)
            rows.append((method, cfg, est, got))
            print(f"  {method}: loaded {got['loaded'] / GiB:.2f} GiB, wrapped {got['wrapped'] / GiB:.2f} GiB, "
                  f"peak {got['peak'] / GiB:.2f} GiB, {got['s_per_micro']:.2f} s/micro-batch, loss {got['loss']:.3f}; "
                  "estimate: " + ", ".join(f"{k} {getattr(est, k) / GiB:.2f}" for k in
                                           ("weights", "gradients", "optimizer", "activations", "logits")), flush=True)
    c = rows[0][1]
    print(f"\nper-GPU memory, micro-batch {c.train.micro_batch_size} x {c.data.max_length} tokens, "
          f"ZeRO-{c.deepspeed.stage}, {c.deepspeed.precision}, gradient checkpointing {c.model.gradient_checkpointing}")
    print(f"{'method':<8}{'weights loaded':>16}{'peak measured':>16}{'estimate':>12}{'est/meas':>10}")
    for method, _, est, got in rows:
        print(f"{method:<8}{got['loaded'] / GiB:>12.2f} GiB{got['peak'] / GiB:>12.2f} GiB{est.total / GiB:>8.2f} GiB"
              f"{est.total / got['peak']:>10.2f}")


if __name__ == "__main__":
    main()
