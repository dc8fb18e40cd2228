"""Write trained weights as HF folders. Inside a run's checkpoint: ``hf_model/`` for full fine-tuning,
``adapter/`` alone for LoRA/QLoRA (no merged copy per checkpoint or per Tune trial). The merged model is
made once, by the driver, in the run's dtype (``merge_into``)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from sqlray.core import atomic_write_json
from sqlray.evaluation.rename import VOCAB_FILE, extend_vocab, load_vocab
from sqlray.training.config import ModelSettings
from sqlray.training.model import merge_adapter, peft_config

log = logging.getLogger(__name__)
RUN_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _save_hf(model, tokenizer, target: Path, vocab: dict | None = None) -> Path:
    model.config.use_cache = True
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    if vocab is not None:
        atomic_write_json(target / VOCAB_FILE, vocab)
    return target


def export_model(state: dict[str, torch.Tensor], cfg: ModelSettings, tokenizer, out: Path,
                 dtype: torch.dtype = torch.float32, vocab: dict | None = None) -> Path:
    """``out/hf_model`` (full, in ``dtype``) or ``out/adapter`` (lora/qlora, fp32 master weights).
    ``vocab``: the schema names the result knows (``run_vocab``), written beside it for evaluation.rename."""
    if cfg.method != "full":
        from safetensors.torch import save_file

        adapter_dir = out / "adapter"
        adapter_dir.mkdir(parents=True, exist_ok=True)
        peft_cfg = peft_config(cfg)
        peft_cfg.base_model_name_or_path = cfg.name_or_path
        peft_cfg.save_pretrained(adapter_dir)
        save_file(state, str(adapter_dir / "adapter_model.safetensors"))
        tokenizer.save_pretrained(adapter_dir)
        if vocab is not None:
            atomic_write_json(adapter_dir / VOCAB_FILE, vocab)
        return adapter_dir
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(cfg.name_or_path), dtype=dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if k not in getattr(model, "_tied_weights_keys", {})]
    if bad or unexpected:
        raise RuntimeError(f"exported weights do not match the model: missing {bad[:5]}, unexpected {unexpected[:5]}")
    return _save_hf(model, tokenizer, out / "hf_model", vocab)


def merge_into(adapter_dir: Path, cfg: ModelSettings, target: Path, dtype: torch.dtype) -> Path:
    """The base with the adapter folded in, in the run's dtype (fp16 for an fp16 QLoRA run, as the
    reference's merge_and_unload, not an fp32 copy twice the size)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    state = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    return _save_hf(merge_adapter(cfg.name_or_path, state, cfg, dtype=dtype),
                    AutoTokenizer.from_pretrained(adapter_dir), target, load_vocab(adapter_dir))


def run_vocab(base: str, contexts) -> dict | None:
    """The schema names a fine-tune of ``base`` on rows with these DDLs (a list, or a function giving one)
    knows: the base's vocabulary (evaluation.rename) extended with them; None for a base without one (a hub
    model, a random tiny one) or with an unreadable one (logged: the trained weights matter more)."""
    try:
        vocab = load_vocab(base)
        return extend_vocab(vocab, contexts() if callable(contexts) else contexts) if vocab is not None else None
    except Exception as e:  # VocabError, a field of the wrong type, the dataset unreadable now: log, keep the run
        log.warning("not writing a schema vocabulary: %s: %s", type(e).__name__, e)
        return None
