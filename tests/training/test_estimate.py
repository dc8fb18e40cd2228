from sqlray.training.config import load_config
from sqlray.training.estimate import estimate_memory, format_estimate


def _est(tiny, *o):
    cfg = load_config(None, [f"model.name_or_path={tiny}", "data.max_length=256", "train.micro_batch_size=4", *o])
    return estimate_memory(cfg), cfg


def test_zero_stages_shard_what_they_should(tiny_model):
    s0, _ = _est(tiny_model, "deepspeed.stage=0", "scaling.num_workers=4")
    s1, _ = _est(tiny_model, "deepspeed.stage=1", "scaling.num_workers=4")
    s2, _ = _est(tiny_model, "deepspeed.stage=2", "scaling.num_workers=4")
    s3, _ = _est(tiny_model, "deepspeed.stage=3", "scaling.num_workers=4")
    assert s1.optimizer == s0.optimizer / 4 and s1.gradients == s0.gradients
    assert s2.gradients == s0.gradients / 4 and s2.weights == s0.weights
    assert s3.weights == s0.weights / 4
    assert s0.total > s1.total > s2.total > s3.total


def test_lora_and_offload_and_checkpointing(tiny_model):
    full, _ = _est(tiny_model)
    lora, cfg = _est(tiny_model, "model.method=lora", "model.lora.r=4")
    assert lora.trainable_params < 0.1 * full.trainable_params
    assert lora.optimizer < full.optimizer and lora.gradients < full.gradients
    off, _ = _est(tiny_model, "deepspeed.offload_optimizer=cpu")
    assert off.optimizer == 0
    ckpt, _ = _est(tiny_model, "model.gradient_checkpointing=true")
    assert ckpt.activations < full.activations
    text = format_estimate(lora, cfg)
    for word in ("parameters", "gradients", "optimizer state", "activations", "GiB"):
        assert word in text


def test_full_fp32_matches_the_16_bytes_per_parameter_rule(tiny_model):
    e, _ = _est(tiny_model, "deepspeed.stage=0", "scaling.num_workers=1")
    n = e.total_params
    assert e.weights + e.gradients + e.optimizer == 16 * n  # 4 weights + 4 grads + 8 Adam (fp32)
