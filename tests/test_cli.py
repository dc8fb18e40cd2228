import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _sqlray(*args):
    return subprocess.run([sys.executable, "-c", "from sqlray.cli import main; main()", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_estimate_prints_the_memory_split(tiny_model):
    r = _sqlray("train", "--config", "configs/tiny-cpu.yaml", f"model.name_or_path={tiny_model}", "--estimate")
    assert r.returncode == 0, r.stderr
    assert "optimizer state" in r.stdout and "total per GPU" in r.stdout


def test_bad_config_exits_2_with_the_field():
    r = _sqlray("train", "--config", "configs/tiny-cpu.yaml", "model.method=qlora", "--estimate")
    assert r.returncode == 2
    assert "model.method=qlora" in r.stderr and "Traceback" not in r.stderr


def test_bad_dataset_exits_2_with_file_and_column(tmp_path, tiny_model):
    f = tmp_path / "train.jsonl"
    f.write_text('{"context": "CREATE TABLE t (a INT);", "answer": "SELECT a FROM t;"}\n')
    r = _sqlray("train", "--config", "configs/tiny-cpu.yaml", f"model.name_or_path={tiny_model}",
                f"data.source={f}", "data.eval_split=train", "--no-eval")
    assert r.returncode == 2
    assert str(f) in r.stderr and "'question'" in r.stderr


def test_model_tiny_writes_a_loadable_model(tmp_path):
    r = _sqlray("model", "tiny", "--out", str(tmp_path / "m"), "--hidden", "64", "--layers", "2")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m" / "config.json").exists() and (tmp_path / "m" / "tokenizer.json").exists()
