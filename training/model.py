"""Pure builders for the tokenizer and the HF (+ PEFT, + 4-bit) model. Nothing here knows about
Ray or DeepSpeed: the distributed wiring lives in training/parallelize.py."""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sqlray.training.config import ModelSettings

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def build_tokenizer(name_or_path: str):
    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:  # Llama-family tokenizers ship without one
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"  # training pads after the answer; generation pads on the left
    return tok


def peft_config(cfg: ModelSettings):
    from peft import LoraConfig, TaskType

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type=TaskType.CAUSAL_LM, bias="none")


def build_model(cfg: ModelSettings, dtype: torch.dtype = torch.float32, device_map=None,
                compute_dtype: str | None = None):
    """The model for ``cfg.method``: full (all weights train), lora (frozen base + adapter) or
    qlora (NF4 base with double quantisation + adapter; ``compute_dtype``: TrainConfig.compute_dtype).
    Gradient checkpointing is non-reentrant everywhere, and input gradients are enabled once."""
    kwargs = {"dtype": dtype}
    if cfg.method == "qlora":
        from transformers import BitsAndBytesConfig

        q = cfg.quantization
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=_DTYPES[compute_dtype or q.compute_dtype or "float16"])
        kwargs["device_map"] = device_map or {"": 0}
    elif device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(cfg.name_or_path, **kwargs)
    model.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing
    if cfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        # It enables checkpointing (non-reentrant, as below) and input gradients itself.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.method == "lora":
            model.enable_input_require_grads()  # a frozen embedding: checkpointed blocks need a grad input
    if cfg.method in ("lora", "qlora"):
        from peft import get_peft_model

        model = get_peft_model(model, peft_config(cfg))
    # from_pretrained returns eval mode, where transformers skips gradient checkpointing and LoRA
    # dropout is off: a 6B QLoRA step then held every layer's activations (66 GiB peak on an H100).
    return model.train()


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total); ZeRO-3 partitioned parameters report their full size via ds_numel."""
    trainable = total = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", 0) or p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def merge_adapter(base_path: str, adapter_state: dict, cfg: ModelSettings, dtype: torch.dtype = torch.float32):
    """A plain HF model with the adapter folded in. The base is reloaded unquantised (in ``dtype``)
    even for QLoRA, as the reference does with ``merge_and_unload()`` in fp16."""
    from peft import get_peft_model, set_peft_model_state_dict

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    peft_model = get_peft_model(base, peft_config(cfg))
    set_peft_model_state_dict(peft_model, adapter_state)
    return peft_model.merge_and_unload()
