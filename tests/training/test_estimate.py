from pathlib import Path

import pytest

from sqlray.training.config import load_config
from sqlray.training.estimate import estimate_memory, format_estimate

REPO = Path(__file__).resolve().parents[2]


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


def _yi_ko_6b(tmp_path):
    """beomi/Yi-Ko-6B's architecture (its config.json), for a meta-device estimate: no weights needed."""
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=4, vocab_size=78464, max_position_embeddings=4096,
                rope_theta=5e6).save_pretrained(tmp_path)
    return tmp_path


def test_model_states_are_deepspeeds_own_estimates(tmp_path):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from sqlray.training.estimate import _largest_layer, _meta_model

    path = _yi_ko_6b(tmp_path)
    model, _ = _meta_model(str(path))
    n, largest = sum(p.numel() for p in model.parameters()), _largest_layer(model)
    base = [f"model.name_or_path={path}", "model.method=full", "deepspeed.precision=bf16", "scaling.use_gpu=true",
            "scaling.num_workers=8"]
    for stage, off, want in [
        (2, "none", estimate_zero2_model_states_mem_needs(n, 8, 1, cpu_offload=False)[1]),
        (2, "cpu", estimate_zero2_model_states_mem_needs(n, 8, 1, cpu_offload=True)[1]),
        (3, "none", estimate_zero3_model_states_mem_needs(n, largest, 8, 1, cpu_offload=False,
                                                          cpu_offload_params=False)[1]),
        (3, "cpu", estimate_zero3_model_states_mem_needs(n, largest, 8, 1, cpu_offload=True,
                                                         cpu_offload_params=False)[1]),
    ]:
        e = estimate_memory(load_config(None, [*base, f"deepspeed.stage={stage}", f"deepspeed.offload_optimizer={off}"]))
        assert e.weights + e.gradients + e.optimizer == pytest.approx(want, rel=1e-9), (stage, off)
    z2 = estimate_memory(load_config(None, [*base, "deepspeed.stage=2"]))
    assert z2.weights + z2.gradients + z2.optimizer == pytest.approx(2 * n + 18 * n / 8)  # not 2N + 14N/W


@pytest.mark.parametrize("method, measured_gib", [("qlora", 13.41), ("lora", 21.05)])
def test_estimate_matches_the_h100_measurements(tmp_path, method, measured_gib):
    """benchmarks/gpu_memory.py on one H100 (README): the reference run, micro-batch 8 x 1024, fp16,
    ZeRO-2, gradient checkpointing, all-linear r 16, SDPA attention."""
    path = _yi_ko_6b(tmp_path)
    cfg = load_config(REPO / "configs" / "yi-ko-6b-qlora.yaml", [f"model.name_or_path={path}", f"model.method={method}"])
    e = estimate_memory(cfg)
    assert e.total / 2**30 == pytest.approx(measured_gib, rel=0.10)
