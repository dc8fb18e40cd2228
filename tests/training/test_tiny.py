import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from sqlray.core import ConfigError
from sqlray.evaluation.rename import VOCAB_FILE, load_vocab
from sqlray.text2sql import load_text2sql
from sqlray.training.data import tokenize_row
from sqlray.training.fingerprint import dataset_hash
from sqlray.training.tiny import BASE_CARD, heldout_hash, publish_base


def test_tiny_model_loads_like_a_hub_model(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    n = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n < 2e6
    assert model.config.model_type == "llama"
    assert 1000 <= len(tok) <= 4096
    assert tok.eos_token_id is not None and tok.pad_token_id is not None


def test_numbers_split_into_digits(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    pieces = tok.convert_ids_to_tokens(tok("WHERE amount > 12345", add_special_tokens=False)["input_ids"])
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == list("12345")


BASE = Path(__file__).resolve().parents[2] / "data" / "tiny-sql-base"


def test_committed_base_was_built_against_the_committed_heldout_splits(data_dir):
    # base.json hashes the held-out splits its training set was built against: if the data was regenerated
    # without `make tiny-base`, the base may have trained on what are now held-out rows.
    card = json.loads((BASE / BASE_CARD).read_text())
    assert card["heldout_hash"] == heldout_hash(load_text2sql(str(data_dir)))
    assert card["steps"] * card["rows_per_step"] >= 50_000
    model_cfg = yaml.safe_load((BASE.parents[1] / "configs" / "tiny-cpu.yaml").read_text())["model"]
    assert Path(model_cfg["name_or_path"]) == Path("data/tiny-sql-base")  # the demo starts from it


def test_committed_base_writes_sql_a_random_model_cannot(tiny_model, data_dir):
    """The committed weights are trained: SQL-token loss on unseen-schema rows far below a random model's."""
    rows = list(load_text2sql(str(data_dir))["test_unseen_schemas"])[:16]

    def sql_loss(path):
        tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
        losses = []
        for r in rows:
            t = tokenize_row(r, tok, max_length=512)
            with torch.no_grad():
                out = model(input_ids=torch.tensor([t["input_ids"]]), labels=torch.tensor([t["labels"]]))
            losses.append(out.loss.item())
        return sum(losses) / len(losses)

    trained, random = sql_loss(BASE), sql_loss(tiny_model)
    assert random > 6 and trained < 0.5, (trained, random)


def test_publish_copies_the_model_with_its_provenance(tiny_model, data_dir, tmp_path):
    run = tmp_path / "runs" / "base"
    shutil.copytree(tiny_model, run / "model")
    cfg = {"model": {"name_or_path": str(tiny_model), "method": "full"}, "data": {"source": str(data_dir)},
           "train": {"max_steps": 5, "micro_batch_size": 4, "gradient_accumulation_steps": 2},
           "scaling": {"num_workers": 2}}
    summary = {"run": "base", "config": cfg, "train": {"loss": 1.0, "step": 5, "completed": True}, "wall_clock_s": 3.0,
               "splits": {"test": {"ex": 0.5}}, "splits_free_decoding": {}}
    (run / "summary.json").write_text(json.dumps(summary))
    out = publish_base(run, tmp_path / "published")
    card = json.loads((out / BASE_CARD).read_text())
    assert card["rows_per_step"] == 16 and card["ex_grammar"] == {"test": 0.5}
    bundled = load_text2sql(str(data_dir))
    assert card["train_rows_hash"] == dataset_hash(bundled["train"])
    assert card["heldout_hash"] == heldout_hash(bundled)
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "llama"
    assert card["steps"] == 5
    vocab = load_vocab(out)  # the schema names it trained on, for renaming the ones it did not
    assert vocab["schemas"] == len(set(bundled["train"]["context"])) and "customer" in vocab["words"]
    assert vocab["ko"]["customer"] == "고객" and "이름" in vocab["ko_words"]  # the Korean renaming needs

    summary["train"]["completed"] = False
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match="did not complete"):
        publish_base(run, tmp_path / "again")
    summary["train"]["completed"] = True
    cfg["model"]["method"] = "lora"
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match="lora"):
        publish_base(run, tmp_path / "again")
    with pytest.raises(ConfigError, match="not a finished run"):
        publish_base(tmp_path / "nothing", tmp_path / "again")


def test_an_export_knows_its_bases_schema_names_and_its_own_training_schemas(tiny_model, data_dir, tmp_path):
    """A fine-tune of a base with schema_vocab.json writes one beside its weights (full or adapter, and the
    merged model): the base's names plus its own training rows' (what the demo's scoring, Tune's and
    `sqlray serve` read). A base without one gets none."""
    from sqlray.training.config import ModelSettings
    from sqlray.training.export import export_model, merge_into, run_vocab

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    (base / VOCAB_FILE).write_text(json.dumps({"format": 1, "min_count": 5, "words": ["zebra"], "tables": ["zebra"],
                                               "columns": {"num": ["stripes"]}}))
    game = load_text2sql(str(data_dir))["test_unseen_db"]["context"]
    vocab = run_vocab(str(base), game)
    assert {"zebra", "player", "server"} <= set(vocab["words"]) and vocab["tables"][0] == "zebra"
    assert "player" in vocab["tables"] and vocab["columns"]["num"][0] == "stripes" and "level" in vocab["columns"]["num"]
    assert run_vocab(str(tiny_model), game) is None
    state = AutoModelForCausalLM.from_pretrained(base).state_dict()
    tok = AutoTokenizer.from_pretrained(base)
    full = export_model(state, ModelSettings(name_or_path=str(base), method="full"), tok, tmp_path / "a", vocab=vocab)
    assert load_vocab(full) == vocab
    assert load_vocab(export_model(state, ModelSettings(name_or_path=str(base), method="full"), tok, tmp_path / "b")) is None
    lora = ModelSettings(name_or_path=str(base), method="lora", lora={"r": 2, "alpha": 4})
    from peft import get_peft_model_state_dict

    from sqlray.training.model import build_model

    adapter_state = get_peft_model_state_dict(build_model(lora))  # what gather_weights hands export_model
    adapter = export_model(adapter_state, lora, tok, tmp_path / "c", vocab=vocab)
    assert load_vocab(adapter) == vocab
    assert load_vocab(merge_into(adapter, lora, tmp_path / "merged", torch.float32)) == vocab


def test_word_tokens_read_a_name_the_same_everywhere(tmp_path):
    """`sqlray model words`: a listed word becomes one token after a space, `(` or `.`, only as a whole word;
    the old ids keep their embeddings, a new one starts at the mean of its pieces' and stays tied."""
    from sqlray.training.tiny import add_word_tokens

    info = add_word_tokens(BASE, tmp_path / "words", ["players", "mode", "status", "SELECT"])
    old_tok, old = AutoTokenizer.from_pretrained(BASE), AutoModelForCausalLM.from_pretrained(BASE)
    tok, model = AutoTokenizer.from_pretrained(tmp_path / "words"), AutoModelForCausalLM.from_pretrained(tmp_path / "words")
    # `SELECT` is one token already; ` status` is too, but `.status` is not, so it is added
    assert info["words_added"] == 3 and len(tok) == len(old_tok) + 3
    assert old_tok.tokenize("x.status") != ["x", ".", "status"] == tok.tokenize("x.status")
    pieces = tok.convert_ids_to_tokens(tok("SELECT mode, MAX(mode) FROM players p WHERE p.mode = 1 AND modes = 2",
                                           add_special_tokens=False)["input_ids"])
    assert pieces.count("mode") == 3 and pieces.count("players") == 1 and "modes" not in pieces
    text = "SELECT mode FROM players WHERE status = 'modest'"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    emb, old_emb = model.get_input_embeddings().weight, old.get_input_embeddings().weight
    assert torch.equal(emb[: len(old_tok)], old_emb)
    mode_pieces = old_tok("mode", add_special_tokens=False)["input_ids"]
    assert len(mode_pieces) > 1 and torch.allclose(emb[tok.convert_tokens_to_ids("mode")], old_emb[mode_pieces].mean(0))
    assert model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()
