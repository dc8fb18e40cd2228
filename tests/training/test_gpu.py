"""GPU-only paths (QLoRA 4-bit, bf16). Marked `gpu`: skipped cleanly on machines without CUDA."""
import pytest
import torch

from sqlray.training.config import load_config

pytestmark = pytest.mark.gpu


def test_qlora_builds_a_4bit_base_with_trainable_adapter_only(tiny_model):
    import bitsandbytes as bnb

    from sqlray.training.model import build_model, count_parameters

    cfg = load_config(None, [f"model.name_or_path={tiny_model}", "model.method=qlora", "scaling.use_gpu=true",
                             "deepspeed.precision=bf16", "model.quantization.compute_dtype=bfloat16"])
    model = build_model(cfg.model)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    trainable, total = count_parameters(model)
    assert 0 < trainable < total
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    batch = torch.randint(0, 100, (2, 16), device="cuda")
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n)


def test_bf16_training_on_one_gpu(tiny_model, data_dir, tmp_path, ray_cluster):
    from sqlray.training.driver import run_training

    cfg = load_config(None, [f"model.name_or_path={tiny_model}", f"data.source={data_dir}", "data.max_train_rows=64",
                             "scaling.use_gpu=true", "scaling.num_workers=1", "deepspeed.precision=bf16",
                             "train.max_steps=6", "train.micro_batch_size=4", "train.log_every_steps=1",
                             "train.learning_rate=2e-3", f"run.storage_path={tmp_path}", "run.name=bf16"])
    out = run_training(cfg)
    losses = [h["loss"] for h in out.history if "loss" in h]
    assert losses[-1] < losses[0]
