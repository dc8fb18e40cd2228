import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sqlray.evaluation.fake_openai import FakeOpenAI

REPO = Path(__file__).resolve().parents[2]
CTX = "CREATE TABLE t (id INT PRIMARY KEY, v INT, name VARCHAR(20));"


def _sqlray(*args):
    return subprocess.run([sys.executable, "-c", "from sqlray.cli import main; main()", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def _jsonl(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def test_score_keeps_fields_joins_by_id_and_resumes_judge(tmp_path):
    rows = [{"id": "b", "db_id": 1, "context": CTX, "question": "count", "answer": "SELECT COUNT(*) FROM t",
             "prediction": "select count(*) from t;"},
            {"id": "a", "db_id": 1, "context": CTX, "question": "names", "answer": "SELECT name FROM t WHERE v > 3",
             "prediction": "SELECT name FROM t WHERE v >= 3"},
            {"id": "c", "context": CTX, "question": "broken", "answer": "SELECT v FROM t", "prediction": "SELEC v"}]
    inp, out = tmp_path / "preds.jsonl", tmp_path / "scored.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with FakeOpenAI() as srv:
        args = ["eval", "score", "--input", str(inp), "--output", str(out), "--metrics", "em,ex,judge",
                "--judge-base-url", srv.base_url, "--judge-actors", "2"]
        r = _sqlray(*args)
        assert r.returncode == 0, r.stderr
        scored = _jsonl(out)
        assert [s["id"] for s in scored] == ["b", "a", "c"], "output order follows input"
        assert all(set(rows[i]) <= set(s) for i, s in enumerate(scored)), "every input field is kept"
        b, a, c = scored
        assert (b["em"], b["ex"], b["judge"]) == (True, True, "yes")  # the fake judge ignores case and ";"
        assert (a["em"], a["ex"]) == (False, False) and a["judge"] == "no"
        assert c["ex"] is False and c["ex_error"]
        sent = len(srv.requests)
        assert sent == 3
        assert _sqlray(*args).returncode == 0
        assert len(srv.requests) == sent, "a rerun sends no judge request twice"


def test_report_prints_tables_and_writes_png(tmp_path):
    rows = [{"id": str(i), "db_id": i % 2, "shape": "count", "context": CTX, "answer": "SELECT 1",
             "prediction": "SELECT 1", "em": True, "em_strict": True, "ex": i % 2 == 0, "ex_error": None}
            for i in range(4)]
    f1 = tmp_path / "base.jsonl"
    f1.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = _sqlray("eval", "report", str(f1), "--png", str(tmp_path / "r.png"))
    assert r.returncode == 0, r.stderr
    assert "by db_id" in r.stdout and "by shape" in r.stdout and "0.500" in r.stdout
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_generate_through_an_openai_compatible_endpoint(tmp_path, data_dir):
    with FakeOpenAI() as srv:
        r = _sqlray("eval", "generate", "--endpoint", srv.base_url, "--model", "m", "--data", str(data_dir),
                    "--split", "test", "--max-rows", "4", "--out", str(tmp_path / "p.jsonl"))
        assert r.returncode == 0, r.stderr
        bad = _sqlray("eval", "generate", "--endpoint", srv.base_url, "--model", "m", "--data", str(data_dir),
                      "--split", "test", "--max-rows", "4", "--out", str(tmp_path / "c.jsonl"), "--constrain")
        assert bad.returncode != 0 and "--constrain needs a local --model" in bad.stderr, bad.stderr
    preds = _jsonl(tmp_path / "p.jsonl")
    assert len(preds) == 4 and all(p["prediction"] == "SELECT COUNT(*) FROM t;" for p in preds)
    assert all("### SQL 봇" in p["raw"] for p in preds)


def test_generate_with_ray_actors_keeps_ids(tmp_path, data_dir, tiny_model):
    r = _sqlray("eval", "generate", "--model", str(tiny_model), "--data", str(data_dir), "--split", "test",
                "--max-rows", "5", "--max-new-tokens", "8", "--out", str(tmp_path / "p.jsonl"))
    assert r.returncode == 0, r.stderr
    preds = _jsonl(tmp_path / "p.jsonl")
    gold = _jsonl(data_dir / "test.jsonl")[:5]
    assert [p["id"] for p in preds] == [g["id"] for g in gold]
    assert all(isinstance(p["prediction"], str) for p in preds)


@pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the refusal on a cluster without GPUs")
def test_generate_on_gpu_refuses_a_cluster_without_one(tmp_path, data_dir, tiny_model):
    """--gpu on a GPU-less Ray cluster fails at once, naming the cause (Ray alone would wait forever)."""
    r = _sqlray("eval", "generate", "--model", str(tiny_model), "--data", str(data_dir), "--split", "test",
                "--max-rows", "2", "--gpu", "--out", str(tmp_path / "p.jsonl"))
    assert r.returncode != 0 and "the Ray cluster has no GPU" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "p.jsonl").exists()


def test_bad_input_line_names_the_file(tmp_path):
    inp = tmp_path / "bad.jsonl"
    inp.write_text('{"id": 1}\nnot json\n')
    r = _sqlray("eval", "score", "--input", str(inp), "--output", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and "bad.jsonl:2" in r.stderr


def test_data_clean_drops_rows_the_judge_rejects(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    good = {"context": CTX, "question": "count", "answer": "SELECT COUNT(*) FROM t"}
    bad = {"context": CTX, "question": "people", "answer": "SELECT name FROM people"}  # table not in the DDL
    (src / "train.jsonl").write_text("".join(json.dumps({**r, "id": str(i)}) + "\n" for i, r in enumerate([good, bad, good])))
    (src / "validation.jsonl").write_text(json.dumps(good) + "\n")
    with FakeOpenAI() as srv:
        r = _sqlray("data", "clean", "--data", str(src), "--out", str(tmp_path / "clean"), "--judge-base-url", srv.base_url)
        assert r.returncode == 0, r.stderr
        assert len(srv.requests) == 3
    kept = _jsonl(tmp_path / "clean" / "train.jsonl")
    assert [k["id"] for k in kept] == ["0", "2"]
    assert [d["id"] for d in _jsonl(tmp_path / "clean" / "clean_report.jsonl")] == ["1"]
    assert (tmp_path / "clean" / "validation.jsonl").exists()
    assert json.loads((tmp_path / "clean" / "clean_summary.json").read_text())["dropped"] == 1
