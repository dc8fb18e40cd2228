"""training/model.py: the pure builders."""
import pytest

from sqlray.training.config import load_config
from sqlray.training.model import build_model


@pytest.mark.parametrize("method", ["full", "lora"])
def test_built_model_is_ready_to_train(tiny_model, method):
    # from_pretrained hands back eval mode, where gradient checkpointing and LoRA dropout do nothing.
    cfg = load_config(None, [f"model.name_or_path={tiny_model}", f"model.method={method}",
                             "model.gradient_checkpointing=true"])
    model = build_model(cfg.model)
    assert all(m.training for m in model.modules())
    assert model.is_gradient_checkpointing
    assert model.config.use_cache is False


def test_gpu_wrap_refuses_a_cpu_deepspeed_accelerator(tiny_model):
    """A GPU config under a DeepSpeed that chose the CPU (DS_ACCELERATOR=cpu, as this test process sets it)
    fails before DeepSpeed moves the model to the CPU and breaks its NCCL broadcast, naming the cause."""
    from sqlray.training.parallelize import wrap

    cfg = load_config(None, [f"model.name_or_path={tiny_model}", "model.method=lora", "scaling.use_gpu=true"])
    with pytest.raises(RuntimeError, match=r"use_gpu=true but DeepSpeed's accelerator is 'cpu' \(DS_ACCELERATOR='cpu'"):
        wrap(build_model(cfg.model), cfg, total_steps=1)
