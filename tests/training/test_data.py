import json
from collections import Counter

import pytest

from sqlray.evaluation.sandbox import open_sandbox, run_query
from sqlray.text2sql import DataError, load_text2sql
from sqlray.training.data import tokenize_row
from sqlray.text2sql import make_prompt


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def test_bundled_dataset_shape(data_dir):
    dd = load_text2sql(str(data_dir))
    assert set(dd) == {"train", "validation", "test", "test_unseen_db"}
    train = list(dd["train"])
    assert len({r["db_id"] for r in train}) >= 7
    assert len({r["db_id"] for split in dd.values() for r in split}) >= 8
    assert len({r["shape"] for r in train}) >= 12
    assert Counter(r["lang"] for r in train).keys() == {"ko", "en"}
    unseen = {r["db_id"] for r in dd["test_unseen_db"]}
    assert len(unseen) == 1 and unseen.isdisjoint({r["db_id"] for r in train})
    train_q = {r["question"] for r in train}
    assert not train_q & {r["question"] for r in dd["test"]}, "test questions must be held out"


def test_every_gold_query_runs(data_dir):
    dd = load_text2sql(str(data_dir))
    for split in dd.values():
        for ctx in {r["context"] for r in split}:
            conn = open_sandbox(ctx)
            for r in (r for r in split if r["context"] == ctx):
                assert run_query(conn, r["answer"]).ok, r


def test_generator_is_seeded(tmp_path):
    from sqlray.training.datagen import write_dataset

    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(a, seed=7)
    write_dataset(b, seed=7)
    assert (a / "train.jsonl").read_text() == (b / "train.jsonl").read_text()


def test_missing_column_names_file_and_column(tmp_path):
    f = tmp_path / "train.jsonl"
    _write_jsonl(f, [{"db_id": 1, "context": "CREATE TABLE t (a INT);", "question": "q"}])
    with pytest.raises(DataError) as e:
        load_text2sql(str(f))
    assert str(f) in str(e.value) and "'answer'" in str(e.value)


def test_empty_rows_dropped_and_csv_parquet(tmp_path):
    import pandas as pd

    rows = [{"db_id": 1, "context": "CREATE TABLE t (a INT);", "question": "q", "answer": "SELECT a FROM t;"},
            {"db_id": 1, "context": "CREATE TABLE t (a INT);", "question": "", "answer": "SELECT 1;"},
            {"db_id": 1, "context": "CREATE TABLE t (a INT);", "question": "q2", "answer": None}]
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "test.parquet")
    dd = load_text2sql(str(tmp_path))
    assert len(dd["train"]) == 1 and len(dd["test"]) == 1


def test_unsupported_and_unreadable_files(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unsupported file type"):
        load_text2sql(str(tmp_path / "x.txt"))
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match="bad.jsonl"):
        load_text2sql(str(tmp_path / "bad.jsonl"))


def test_prompt_is_the_reference_prompt():
    p = make_prompt("CREATE TABLE t (a INT);", "질문", "SELECT a FROM t;")
    assert p.startswith("당신은 SQL을 생성하는 SQL 봇입니다. DDL의 테이블을 활용한 Question을 해결할 수 있는 SQL 쿼리를 생성하세요.\n\n### DDL:\n")
    assert p.endswith("### Question:\n질문\n\n### SQL:\nSELECT a FROM t;")


def test_loss_only_on_sql_and_eos(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    row = {"context": "CREATE TABLE t (a INT);", "question": "몇 개?", "answer": "SELECT COUNT(*) FROM t;"}
    out = tokenize_row(row, tok, 1024)
    labelled = [t for t in out["labels"] if t != -100]
    assert labelled[-1] == tok.eos_token_id
    assert tok.decode(labelled[:-1]) == row["answer"]
    n_prompt = out["labels"].index(labelled[0])
    assert tok.decode(out["input_ids"][:n_prompt], skip_special_tokens=True) == make_prompt(row["context"], row["question"])
