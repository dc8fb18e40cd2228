import json
from collections import Counter
from pathlib import Path

import pytest

from sqlray.evaluation.sandbox import open_sandbox, run_query
from sqlray.text2sql import DataError, load_text2sql
from sqlray.training.data import SubwordDropout, tokenize_row, tokenize_split
from sqlray.text2sql import make_prompt


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def test_bundled_dataset_shape(data_dir):
    dd = load_text2sql(str(data_dir))
    assert set(dd) == {"train", "validation", "test", "test_unseen_schemas", "test_unseen_db"}
    train = list(dd["train"])
    schemas = {split: {r["context"] for r in dd[split]} for split in dd}
    assert len(set().union(*schemas.values())) >= 300  # hundreds of schemas, not ten
    assert len({r["shape"] for r in train}) >= 18
    assert Counter(r["lang"] for r in train).keys() == {"ko", "en"}
    for split in ("validation", "test_unseen_schemas", "test_unseen_db"):  # schemas no training row uses
        assert schemas[split].isdisjoint(schemas["train"]), split
    assert schemas["test"] <= schemas["train"]  # new questions on training schemas
    assert len({r["db_id"] for r in dd["test_unseen_db"]}) == 1
    train_q = {(r["context"], r["question"]) for r in train}
    assert len(train_q) == len(train), "duplicate rows"
    assert not train_q & {(r["context"], r["question"]) for r in dd["test"]}, "test questions must be held out"
    assert not {(r["context"], r["answer"]) for r in train} & {(r["context"], r["answer"]) for r in dd["test"]}


def test_schemas_use_every_naming_style(data_dir):
    import re

    ddl = "\n".join({r["context"] for r in load_text2sql(str(data_dir))["train"]})
    tables = re.findall(r"CREATE TABLE (\w+)", ddl)
    assert any(t.startswith("tbl_") for t in tables) and any(t.startswith("t_") for t in tables)
    assert any(t.isupper() for t in tables) and any(t[0].isupper() and not t.isupper() for t in tables)
    assert any(re.search(r"\b[a-z]+[A-Z][a-z]+ ", ddl) for _ in [0])  # camelCase columns
    assert "gogaek" in ddl or "sangpum" in ddl  # romanised Korean


def test_datasheet_counts(data_dir):
    from sqlray.training.datagen import datasheet

    sheet = datasheet(load_text2sql(str(data_dir)))
    assert sheet["train"]["rows"] == len(load_text2sql(str(data_dir))["train"])
    assert sum(sheet["train"]["by_shape"].values()) == sheet["train"]["rows"]
    assert sheet["test_unseen_schemas"]["schemas"] >= 20


def test_every_gold_query_runs(data_dir):
    dd = load_text2sql(str(data_dir))
    for split in dd.values():
        by_context: dict[str, list[dict]] = {}
        for r in split.to_list():  # one pass: a Dataset decodes a row from Arrow on every access
            by_context.setdefault(r["context"], []).append(r)
        for ctx, rows in by_context.items():
            conn = open_sandbox(ctx)
            for r in rows:
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


def test_loss_on_prompt_labels_every_token(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    row = {"context": "CREATE TABLE t (a INT);", "question": "몇 개?", "answer": "SELECT COUNT(*) FROM t;"}
    sql_only, full = tokenize_row(row, tok, 1024), tokenize_row(row, tok, 1024, loss_on_prompt=True)
    assert full["input_ids"] == sql_only["input_ids"] and full["labels"] == full["input_ids"]
    assert sum(t != -100 for t in sql_only["labels"]) < len(full["labels"])


def _sub(ids, part):
    return any(ids[i:i + len(part)] == part for i in range(len(ids) - len(part) + 1))


def test_bpe_dropout_splits_a_name_the_same_way_in_ddl_and_sql(data_dir):
    import random

    from datasets import Dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(data_dir.parent / "tiny-sql-base")
    row = {"context": "CREATE TABLE singers (\n  singer_id INT PRIMARY KEY,\n  likes INT\n);",
           "question": "Which singers have the most likes?", "answer": "SELECT singer_id FROM singers ORDER BY likes DESC LIMIT 1;"}
    plain = tokenize_row(row, tok, 1024)
    split = tokenize_row(row, tok, 1024, dropout=(SubwordDropout(tok, 0.5), random.Random(3)))
    assert len(split["input_ids"]) > len(plain["input_ids"]), "p=0.5 splits some token"
    assert split["input_ids"][0] == tok.bos_token_id and split["input_ids"][-1] == tok.eos_token_id
    assert tok.decode(split["input_ids"], skip_special_tokens=True) == tok.decode(plain["input_ids"], skip_special_tokens=True)
    labelled = [t for t in split["labels"] if t != -100]
    assert tok.decode(labelled[:-1]) == row["answer"]
    n_prompt = len(split["input_ids"]) - len(labelled)
    memo: dict = {}  # the prompt's splits, drawn as tokenize_row draws them (same seed, prompt first)
    SubwordDropout(tok, 0.5).encode(make_prompt(row["context"], row["question"]), random.Random(3), memo)
    changed = 0
    for word in (" singers", " likes", " singer"):  # each pre-token: one segmentation in the DDL and the SQL
        key = tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(word)[0][0]
        assert _sub(split["input_ids"][:n_prompt], memo[key]) and _sub(labelled, memo[key]), word
        changed += memo[key] != tok(word, add_special_tokens=False)["input_ids"]
    assert changed, "at p=0.5 one of the three is split"
    # p=0 is the usual tokenizer; a split set is seeded: the same row and seed give the same ids
    ds = Dataset.from_list([row] * 3)
    assert tokenize_split(ds, tok, 1024, bpe_dropout=0.0)["input_ids"] == [plain["input_ids"]] * 3
    a, b = (tokenize_split(ds, tok, 1024, bpe_dropout=0.5, seed=7)["input_ids"] for _ in range(2))
    assert a == b and len({tuple(x) for x in a}) > 1, "seeded per row: reproducible, and rows differ"


def test_bpe_dropout_rejects_a_tokenizer_without_bpe(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(DataError, match="bpe_dropout needs a BPE tokenizer"):
        SubwordDropout(PreTrainedTokenizerFast(tokenizer_object=t), 0.1)


def test_breakdown_table_reports_ex_by_shape_and_language():
    from sqlray.evaluation.scoring import summarize
    from sqlray.training.workflow import breakdown_table

    scored = [{"em": 0, "em_strict": 0, "ex": True, "lang": "ko", "shape": "count"},
              {"em": 0, "em_strict": 0, "ex": False, "lang": "en", "shape": "count"},
              {"em": 0, "em_strict": 0, "ex": False, "lang": "en", "shape": "join"}]
    after = {"test_unseen_schemas": {"by_lang": summarize(scored, "lang"), "by_shape": summarize(scored, "shape")}}
    lines = {ln.split()[0]: ln.split()[1:] for ln in breakdown_table(after).splitlines()[2:]}
    assert lines["Korean"] == ["1.00"] and lines["English"] == ["0.00"]
    assert lines["count"] == ["0.50"] and lines["join"] == ["0.00"]


def test_length_grouped_batches_pad_less_and_keep_every_row(tiny_model, data_dir):
    """data.group_by_length: the two ranks' batches of one epoch hold the same rows as shuffled batches,
    with far less padding."""
    from transformers import AutoTokenizer

    from sqlray.training.config import load_config
    from sqlray.training.train import _loaders

    tok = AutoTokenizer.from_pretrained(tiny_model)

    def epoch(grouped: bool) -> tuple[Counter, int, int]:
        cfg = load_config(None, ["model.name_or_path=m", f"data.source={data_dir}", "data.max_train_rows=1600",
                                 "train.micro_batch_size=16", f"data.group_by_length={str(grouped).lower()}"])
        rows, real, padded = Counter(), 0, 0
        for rank in (0, 1):
            loaders, _, _ = _loaders(cfg, tok, rank, 2)
            for batch in loaders["train"]:
                mask = batch["attention_mask"]
                real, padded = real + int(mask.sum()), padded + mask.numel()
                rows.update(tuple(ids[m.bool()].tolist()) for ids, m in zip(batch["input_ids"], mask))
        return rows, real, padded

    shuffled, real_s, padded_s = epoch(False)
    grouped, real_g, padded_g = epoch(True)
    assert grouped == shuffled and real_g == real_s
    assert (padded_g - real_g) < 0.25 * (padded_s - real_s), (padded_g - real_g, padded_s - real_s)


def test_before_after_table_adds_free_decoding_columns():
    from sqlray.training.workflow import before_after_table

    after = {"test": {"n": 200, "em": 0.1, "ex": 0.09}}
    plain = before_after_table({}, after)
    both = before_after_table({}, after, {"test": {"n": 200, "em": 0.0, "ex": 0.005}})
    assert "free decoding" not in plain and "EX after, free decoding" in both.splitlines()[0]
    assert both.splitlines()[2].split()[-2:] == ["0.000", "0.005"]


def test_targets_table_says_which_goals_are_met():
    from sqlray.training.config import load_config
    from sqlray.training.workflow import targets_table

    after = {"test": {"ex": 0.935}, "test_unseen_db": {"ex": 0.0}}
    table, verdict = targets_table(after, {"test": 0.7, "test_unseen_db": 0.3, "test_unseen_schemas": 0.4},
                                   before={"test": {"ex": 0.915}})
    assert verdict["test"] == {"target_ex": 0.7, "ex": 0.935, "met": True}
    assert not verdict["test_unseen_db"]["met"] and not verdict["test_unseen_schemas"]["met"]  # 0 and unscored
    lines = [ln.split() for ln in table.splitlines()[2:]]
    assert lines[0] == ["test", "0.700", "0.915", "0.935", "yes"]
    assert lines[1][-1] == "NO" and lines[2][-2:] == ["not", "scored"]
    shipped = Path(__file__).resolve().parents[2] / "configs" / "tiny-cpu.yaml"
    assert set(load_config(shipped).eval.targets) == {"test", "test_unseen_schemas", "test_unseen_db"}
    with pytest.raises(ValueError, match="less than or equal to 1"):
        load_config(None, ["model.name_or_path=m", "eval.targets={test: 70}"])


def test_base_dataset_adds_new_schemas_and_keeps_heldout_splits(data_dir, tmp_path):
    from sqlray.training.datagen import write_base_dataset

    counts = write_base_dataset(data_dir, tmp_path / "base", n_schemas=40)
    bundled, base = load_text2sql(str(data_dir)), load_text2sql(str(tmp_path / "base"))
    assert counts["new_schemas"] == 40 and counts["new_rows"] >= 40 * 20
    assert counts["nonce_rows"] == 0  # made-up names only when asked for (--nonce)
    train = list(base["train"])
    assert len(train) == len(bundled["train"]) + counts["new_rows"]
    old = {(r["context"], r["question"]) for r in bundled["train"]}
    assert old <= {(r["context"], r["question"]) for r in train}
    new = [r for r in train if (r["context"], r["question"]) not in old]
    new_contexts = {r["context"] for r in new}
    assert len(new_contexts) == 40
    for split in bundled:  # new schemas are none of the bundled ones; held-out splits copied as they were
        assert new_contexts.isdisjoint({r["context"] for r in bundled[split]}), split
        if split != "train":
            assert list(base[split]) == list(bundled[split])
            # a new schema may reuse a held-out schema's table: its questions must not come along
            assert {(r["question"], r["answer"]) for r in new}.isdisjoint(
                {(r["question"], r["answer"]) for r in bundled[split]}), split


def test_eval_shards_have_equal_lengths_and_count_every_row_once():
    """DistributedSampler pads the last round with repeated rows: their loss must not count twice."""
    from datasets import Dataset

    from sqlray.training.train import eval_shard

    ds = Dataset.from_dict({"input_ids": [[i] for i in range(5)], "labels": [[i, i] for i in range(5)]})
    shards = [eval_shard(ds, r, 2) for r in range(2)]
    assert [len(s) for s in shards] == [3, 3]  # ZeRO-3: every rank runs the same forwards
    counted = [s["input_ids"][j][0] for s in shards for j in range(3) if s["labels"][j][0] != -100]
    assert sorted(counted) == [0, 1, 2, 3, 4]
    assert eval_shard(ds.select(range(4)), 1, 2)["labels"] == [[1, 1], [3, 3]]


def test_tokenized_splits_name_their_fingerprint_without_disassembling_code(data_dir, monkeypatch):
    """datasets would hash the tokenizing closure with dill, whose nestedglobals prints its bytecode (Ray
    Train v2 logs it from every worker); tokenize_split names the new fingerprint from its inputs instead,
    so a different setting is a different cached map and the same one is reused."""
    import dill.detect
    from transformers import AutoTokenizer

    from sqlray.training.train import eval_shard

    calls = []
    real = dill.detect.nestedglobals
    monkeypatch.setattr(dill.detect, "nestedglobals", lambda *a, **k: calls.append(a) or real(*a, **k))
    tok = AutoTokenizer.from_pretrained(data_dir.parent / "tiny-sql-base")
    ds = load_text2sql(str(data_dir))["validation"]  # on disk: maps are cached by fingerprint
    a, again = tokenize_split(ds, tok, 1024), tokenize_split(ds, tok, 1024)
    short = tokenize_split(ds, tok, 160)
    prompt = tokenize_split(ds, tok, 1024, loss_on_prompt=True)
    dropped = [tokenize_split(ds, tok, 1024, bpe_dropout=0.3, seed=s) for s in (1, 2)]
    grown = AutoTokenizer.from_pretrained(data_dir.parent / "tiny-sql-base")
    grown.add_tokens(["SELECT COUNT"])  # another tokenizer: another map, not the cached one
    other = tokenize_split(ds, grown, 1024)
    shard = eval_shard(a, 2, 3)  # padded: 200 rows over 3 ranks, its last is row 0 again: the other mapped lambda
    assert calls == [], "a transform's function was hashed with dill"
    assert a.cache_files and again.cache_files == a.cache_files, "the same settings reuse the cached map"
    assert a["input_ids"] == again["input_ids"]
    fingerprints = {x._fingerprint for x in (a, short, prompt, other, *dropped)}
    assert len(fingerprints) == 6 and other.cache_files != a.cache_files
    assert 0 < len(short) < len(a) == len(ds)
    assert prompt["labels"] == prompt["input_ids"] != a["labels"]
    assert other["input_ids"] != a["input_ids"] and dropped[0]["input_ids"] != dropped[1]["input_ids"]
    assert len(shard) == 67 and shard["labels"][-1] == [-100] * len(shard["labels"][-1])
