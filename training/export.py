"""Write the trained weights as HF folders: ``hf_model/`` (merged, ready to serve) and ``adapter/``."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from sqlray.training.config import ModelSettings
from sqlray.training.model import peft_config, merge_adapter


def export_model(state: dict[str, torch.Tensor], cfg: ModelSettings, tokenizer, out: Path) -> Path:
    """``out/hf_model`` always; ``out/adapter`` too for lora/qlora."""
    target = out / "hf_model"
    if cfg.method == "full":
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(cfg.name_or_path), dtype=torch.float32)
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing if k not in getattr(model, "_tied_weights_keys", {})]
        if bad or unexpected:
            raise RuntimeError(f"exported weights do not match the model: missing {bad[:5]}, unexpected {unexpected[:5]}")
    else:
        adapter_dir = out / "adapter"
        adapter_dir.mkdir(parents=True, exist_ok=True)
        peft_cfg = peft_config(cfg)
        peft_cfg.base_model_name_or_path = cfg.name_or_path
        peft_cfg.save_pretrained(adapter_dir)
        from safetensors.torch import save_file

        save_file(state, str(adapter_dir / "adapter_model.safetensors"))
        model = merge_adapter(cfg.name_or_path, state, cfg)
    model.config.use_cache = True
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
