"""The embedded default model: a ~1M-parameter Llama and a byte-level BPE tokenizer, made on the spot.

Saved with ``save_pretrained`` so everything downstream loads it with ``from_pretrained`` exactly as it
would a hub model. The tokenizer splits numbers into single digits: a tiny model copies the digits of
a literal from the question far more reliably than it copies multi-digit BPE pieces.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from sqlray.core import ConfigError, atomic_write_json
from sqlray.evaluation.rename import VOCAB_FILE, build_vocab
from sqlray.text2sql import load_text2sql, make_prompt
from sqlray.training.config import TrainConfig
from sqlray.training.fingerprint import dataset_hash
from sqlray.training.schemagen import korean_glosses

BASE_CARD = "base.json"  # a published base's provenance, beside its weights

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_tokenizer(texts: list[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    # BOS in front of every text, as Llama's tokenizers do: encode_prompt() then gives it to training,
    # evaluation and serving alike.
    bos = SPECIAL["bos_token"]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=1024, padding_side="right", **SPECIAL)


def tiny_config(tokenizer, hidden: int = 128, layers: int = 4, heads: int = 4) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=int(hidden * 2.75),
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=1024, tie_word_embeddings=True, use_cache=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def make_tiny_model(out_dir: str | Path, data: str = "data/text2sql", vocab_size: int = 2048,
                    hidden: int = 128, layers: int = 4, seed: int = 0) -> Path:
    """Train the tokenizer on the training split's prompts, build a random Llama, save both."""
    out = Path(out_dir)
    train = load_text2sql(data)["train"]
    texts = [make_prompt(r["context"], r["question"], r["answer"]) for r in train]
    tokenizer = train_tokenizer(texts, vocab_size)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(tokenizer, hidden, layers))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        import shutil
        shutil.rmtree(out)
    tmp.replace(out)  # atomic: a half-written model folder never looks finished
    return out


def add_word_tokens(src: str | Path, out: str | Path, words: list[str] | None = None) -> dict:
    """``src``'s model and tokenizer with each of ``words`` (default: the 4,997 common English words of
    schemagen.english_words) that the tokenizer splits into pieces (after a space or not) added as one token,
    matched only as a whole word (`_` counts as a letter, so `player_id` is not matched), so a name is the
    same token after a space (then a token of its own), `(` or `.`. Ids already in the vocabulary keep their
    meaning; a new word's embedding (tied to the output) starts as the mean of its pieces'."""
    from tokenizers import AddedToken
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sqlray.training.driver import replace_dir
    from sqlray.training.schemagen import english_words

    tok, model = AutoTokenizer.from_pretrained(src), AutoModelForCausalLM.from_pretrained(src)
    vocab = tok.get_vocab()
    new = [w for w in (english_words() if words is None else words)  # split after a space, or after `(`
           if w not in vocab and max(len(tok.tokenize(" " + w)), len(tok.tokenize(w))) > 1]
    pieces = {w: tok(w, add_special_tokens=False)["input_ids"] for w in new}
    before = len(tok)
    tok.add_tokens([AddedToken(w, single_word=True, normalized=False) for w in new])
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        for w in new:
            emb[tok.convert_tokens_to_ids(w)] = emb[pieces[w]].mean(0)

    def make(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    replace_dir(Path(out), make)
    return {"out": str(out), "vocab_before": before, "vocab_after": len(tok), "words_added": len(new)}


def ensure_tiny_model(path: str | Path, data: str = "data/text2sql") -> Path:
    path = Path(path)
    if not (path / "config.json").exists():
        make_tiny_model(path, data)
    return path


def write_vocab(data: str, model_dir: str | Path) -> dict:
    """Write the schema names ``data``'s training split taught into ``model_dir`` (evaluation.rename)."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"model vocab: --out {model_dir} is not a model folder (config.json expected)")
    train = load_text2sql(data)["train"]
    vocab = build_vocab(train["context"], glosses=korean_glosses(), questions=train["question"])
    atomic_write_json(model_dir / VOCAB_FILE, vocab)
    return {"path": str(model_dir / VOCAB_FILE), "schemas": vocab["schemas"], "words": len(vocab["words"]),
            "tables": len(vocab["tables"]), **{k: len(v) for k, v in vocab["columns"].items()}}


def publish_base(run: str | Path, out: str | Path) -> Path:
    """Copy a finished full-training run's ``model/`` to ``out`` (the committed base, data/tiny-sql-base)
    with ``base.json``: its config, steps, losses, scores, and hashes of the rows it trained on and of the
    held-out splits its training set was built against, so a test can check it against the committed data."""
    from sqlray.training.driver import replace_dir

    run, out = Path(run), Path(out)
    if not (run / "summary.json").exists() or not (run / "model" / "config.json").exists():
        raise ConfigError(f"model publish: {run} is not a finished run folder (summary.json and model/ expected)")
    summary = json.loads((run / "summary.json").read_text())
    cfg = summary["config"]
    if cfg["model"]["method"] != "full":
        raise ConfigError(f"model publish: run {run} is {cfg['model']['method']}; a base is a full-training run")
    train = summary.get("train", {})
    if not train.get("completed"):
        raise ConfigError(f"model publish: run {run} did not complete (rerun it to resume, then publish)")
    splits = load_text2sql(cfg["data"]["source"])
    card = {"run": summary["run"], "started_from": cfg["model"]["name_or_path"],
            "steps": train.get("step", cfg["train"]["max_steps"]),
            "rows_per_step": TrainConfig.model_validate(cfg).global_batch_size,
            "wall_clock_s": summary.get("wall_clock_s"), "train": train,
            "train_rows_hash": dataset_hash(splits["train"]), "heldout_hash": heldout_hash(splits),
            "ex_grammar": {k: v.get("ex") for k, v in summary.get("splits", {}).items()},
            "ex_free": {k: v.get("ex") for k, v in summary.get("splits_free_decoding", {}).items()},
            "config": cfg}

    def make(tmp: Path) -> None:
        shutil.copytree(run / "model", tmp)
        atomic_write_json(tmp / BASE_CARD, card)
        if not (tmp / VOCAB_FILE).exists():  # a run from a base with one wrote its own (base's + its rows')
            train = splits["train"]  # the names it knows, and the Korean words
            atomic_write_json(tmp / VOCAB_FILE, build_vocab(train["context"], glosses=korean_glosses(),
                                                            questions=train["question"]))

    replace_dir(out, make)
    return out


def heldout_hash(splits) -> str:
    """One hash over every split but train, in name order: what a base must never have trained on."""
    return dataset_hash([r for name in sorted(splits) if name != "train" for r in splits[name]])
