from transformers import AutoModelForCausalLM, AutoTokenizer


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
