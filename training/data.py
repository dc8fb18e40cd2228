"""Tokenize Text2SQL rows for causal-LM training: the prompt (encoded as generation encodes it) is
masked out of the labels; the loss is on the SQL and EOS only."""
from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset

from sqlray.text2sql import DataError, encode_prompt, make_prompt

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


def tokenize_row(row: dict[str, Any], tokenizer, max_length: int, loss_on_prompt: bool = False) -> dict[str, list[int]]:
    """Prompt + SQL + EOS, with the prompt masked out of the labels (loss on SQL and EOS only), unless
    ``loss_on_prompt``: then every token is a target."""
    prompt = make_prompt(row["context"], row["question"])
    prompt_ids = encode_prompt(tokenizer, prompt)
    answer_ids = tokenizer(row["answer"].strip(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = prompt_ids + answer_ids
    labels = ids if loss_on_prompt else [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    return {"input_ids": ids, "labels": labels,
            "length": len(ids), "fits": len(ids) <= max_length}


def tokenize_split(ds: Dataset, tokenizer, max_length: int, name: str = "split",
                   loss_on_prompt: bool = False) -> Dataset:
    """Tokenize; rows longer than ``max_length`` (the block size) are dropped rather than losing their SQL."""
    out = ds.map(lambda r: tokenize_row(r, tokenizer, max_length, loss_on_prompt), remove_columns=ds.column_names,
                 desc=f"tokenize {name}")
    n = len(out)
    out = out.filter(lambda r: r["fits"]).remove_columns(["fits"])
    if len(out) < n:
        log.warning("%s: dropped %d of %d rows longer than max_length=%d tokens", name, n - len(out), n, max_length)
    if len(out) == 0:
        raise DataError(f"{name}: no rows fit in data.max_length={max_length} tokens")
    return out
