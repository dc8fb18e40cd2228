"""The task's shared contract: the reference prompt, its one token encoding, and loading data in the
reference schema (db_id, context, question, answer). Training, evaluation and serving all use these.

Sources: a hub id with a config name (``shangrilar/ko_text2sql`` + ``origin``), a local folder of
``{split}.jsonl|json|csv|parquet`` files, or one local file (its rows become the ``train`` split).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset

PROMPT_TEMPLATE = """당신은 SQL을 생성하는 SQL 봇입니다. DDL의 테이블을 활용한 Question을 해결할 수 있는 SQL 쿼리를 생성하세요.

### DDL:
{ddl}

### Question:
{question}

### SQL:
{query}"""

# Everything a model sees before the answer; generation starts right after it.
SQL_MARKER = "### SQL:\n"


def make_prompt(ddl: str, question: str, query: str = "") -> str:
    """Format the reference prompt. With ``query=""`` it is the generation prompt."""
    return PROMPT_TEMPLATE.format(ddl=ddl.strip(), question=question.strip(), query=query)


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """A prompt's token ids as every stage sees them: the special tokens the tokenizer itself puts in
    front (BOS where its post-processor adds one, none where ``add_bos_token`` is false) and none at the
    end, since the answer follows. Training, generation and serving all call this: they agree token for token."""
    full = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    plain = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if not plain or full[-len(plain):] == plain:
        return full
    for i in range(len(full) - len(plain) + 1):  # a tokenizer that also appends (EOS): keep its prefix only
        if full[i:i + len(plain)] == plain:
            return full[:i] + plain
    return plain


log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("context", "question", "answer")  # db_id is optional (kept when present)
_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class DataError(ValueError):
    """A dataset file or row does not match the reference schema."""


def _local_files(path: Path) -> dict[str, str]:
    if path.is_file():
        if path.suffix not in _FORMATS:
            raise DataError(f"{path}: unsupported file type {path.suffix!r}; expected one of {sorted(_FORMATS)}")
        return {"train": str(path)}
    files = {p.stem: str(p) for p in sorted(path.iterdir()) if p.suffix in _FORMATS and not p.name.startswith(".")}
    if not files:
        raise DataError(f"{path}: no dataset files ({', '.join(sorted(_FORMATS))}) in this folder")
    return files


def _check_columns(ds: Dataset, where: str) -> None:
    for col in REQUIRED_COLUMNS:
        if col not in ds.column_names:
            raise DataError(f"{where}: missing required column {col!r} "
                            f"(expected columns {list(REQUIRED_COLUMNS)} plus optional 'db_id'; found {ds.column_names})")


def _non_empty(row: dict[str, Any]) -> bool:
    return all(isinstance(row[c], str) and row[c].strip() for c in REQUIRED_COLUMNS)


def load_text2sql(source: str, config_name: str | None = None) -> DatasetDict:
    """Every split of ``source``, with rows missing a required field dropped (the reference's dropna)."""
    path = Path(source).expanduser()
    if path.exists():
        files = _local_files(path)
        dd = DatasetDict()
        for split, file in files.items():
            fmt = _FORMATS[Path(file).suffix]
            try:
                dd[split] = load_dataset(fmt, data_files=file, split="train")
            except Exception as e:  # pyarrow/json errors: say which file
                raise DataError(f"{file}: cannot be read as {fmt}: {e}") from e
            _check_columns(dd[split], file)
    else:
        try:
            dd = load_dataset(source, config_name)
        except Exception as e:
            raise DataError(f"{source}: not a local file or folder, and loading it as a hub dataset "
                            f"(config {config_name!r}) failed: {type(e).__name__}: {e}") from e
        if isinstance(dd, Dataset):
            dd = DatasetDict(train=dd)
        for split, ds in dd.items():
            _check_columns(ds, f"{source}[{split}]")
    for split, ds in list(dd.items()):
        before = len(ds)
        dd[split] = ds.filter(_non_empty)
        if len(dd[split]) < before:
            log.warning("%s[%s]: dropped %d rows with an empty context/question/answer",
                        source, split, before - len(dd[split]))
    return dd


def get_split(dd: DatasetDict, split: str, source: str = "dataset") -> Dataset:
    if split not in dd:
        raise DataError(f"{source}: no split {split!r}; available splits: {sorted(dd)}")
    return dd[split]


