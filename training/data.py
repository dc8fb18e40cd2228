"""Load Text2SQL data in the reference schema (db_id, context, question, answer) and tokenize it.

Sources: a hub id with a config name (``shangrilar/ko_text2sql`` + ``origin``), a local folder of
``{split}.jsonl|json|csv|parquet`` files, or one local file (its rows become the ``train`` split).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset

from training.prompt import make_prompt

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("context", "question", "answer")  # db_id is optional (kept when present)
_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
IGNORE_INDEX = -100


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


def tokenize_row(row: dict[str, Any], tokenizer, max_length: int) -> dict[str, list[int]]:
    """Prompt + SQL + EOS, with the prompt masked out of the labels (loss on SQL and EOS only)."""
    prompt = make_prompt(row["context"], row["question"])
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None:
        prompt_ids = [tokenizer.bos_token_id] + prompt_ids
    answer_ids = tokenizer(row["answer"].strip(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = prompt_ids + answer_ids
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids,
            "length": len(ids), "fits": len(ids) <= max_length}


def tokenize_split(ds: Dataset, tokenizer, max_length: int, name: str = "split") -> Dataset:
    """Tokenize; rows longer than ``max_length`` (the block size) are dropped rather than losing their SQL."""
    out = ds.map(lambda r: tokenize_row(r, tokenizer, max_length), remove_columns=ds.column_names,
                 desc=f"tokenize {name}")
    n = len(out)
    out = out.filter(lambda r: r["fits"]).remove_columns(["fits"])
    if len(out) < n:
        log.warning("%s: dropped %d of %d rows longer than max_length=%d tokens", name, n - len(out), n, max_length)
    if len(out) == 0:
        raise DataError(f"{name}: no rows fit in data.max_length={max_length} tokens")
    return out
