"""Tokenize Text2SQL rows for causal-LM training: the prompt (encoded as generation encodes it) is
masked out of the labels; the loss is on the SQL and EOS only."""
from __future__ import annotations

import functools
import logging
import random
import sys
from pathlib import Path
from typing import Any

from datasets import Dataset
from datasets.fingerprint import Hasher

from sqlray.text2sql import DataError, encode_prompt, make_prompt

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


class SubwordDropout:
    """BPE-dropout (Provilkov et al., 2020) for a byte-level BPE tokenizer, seeded, and one segmentation per
    pre-token per row: each token of the usual segmentation is split, with probability ``p``, into two
    vocabulary tokens at a random cut (and so on down), and a pre-token keeps its split everywhere in the
    row (` singers` in the DDL and the SQL alike; `singers` after `.` or `(` is another pre-token). The split
    is drawn once per row, not per epoch. Every name then also comes in pieces during training: the model
    practises copying a name piece by piece from the DDL, which an unseen name (always in pieces) needs at
    inference. Inference keeps the usual segmentation."""

    def __init__(self, tokenizer, p: float):
        backend = tokenizer.backend_tokenizer
        if type(backend.model).__name__ != "BPE" or backend.pre_tokenizer is None:
            raise DataError(f"data.bpe_dropout needs a BPE tokenizer with a pre-tokenizer; "
                            f"{type(tokenizer).__name__} has a {type(backend.model).__name__} model")
        self.pre, self.model, self.p = backend.pre_tokenizer, backend.model, p
        self.vocab = backend.get_vocab()
        # what encode_prompt keeps in front of any prompt (BOS, or nothing): the same for every row
        self.prefix = encode_prompt(tokenizer, "x")[:-len(tokenizer("x", add_special_tokens=False)["input_ids"])]

    def _split(self, tok: str, rng: random.Random) -> list[str]:
        if len(tok) < 2 or rng.random() >= self.p:
            return [tok]
        cuts = list(range(1, len(tok)))
        rng.shuffle(cuts)
        for c in cuts:
            if tok[:c] in self.vocab and tok[c:] in self.vocab:
                return self._split(tok[:c], rng) + self._split(tok[c:], rng)
        return [tok]

    def encode(self, text: str, rng: random.Random, memo: dict[str, list[int]]) -> list[int]:
        """Like ``tokenizer(text, add_special_tokens=False)``, with the row's splits kept in ``memo``."""
        ids: list[int] = []
        for piece, _ in self.pre.pre_tokenize_str(text):
            if piece not in memo:
                memo[piece] = [self.vocab[s] for t in self.model.tokenize(piece) for s in self._split(t.value, rng)]
            ids += memo[piece]
        return ids


def tokenize_row(row: dict[str, Any], tokenizer, max_length: int, loss_on_prompt: bool = False,
                 dropout: tuple[SubwordDropout, random.Random] | None = None) -> dict[str, list[int]]:
    """Prompt + SQL + EOS, with the prompt masked out of the labels (loss on SQL and EOS only), unless
    ``loss_on_prompt``: then every token is a target. ``dropout``: split words (training only)."""
    prompt = make_prompt(row["context"], row["question"])
    answer = row["answer"].strip()
    if dropout:
        splitter, rng = dropout
        memo: dict[str, list[int]] = {}
        prompt_ids = splitter.prefix + splitter.encode(prompt, rng, memo)
        answer_ids = splitter.encode(answer, rng, memo) + [tokenizer.eos_token_id]
    else:
        prompt_ids = encode_prompt(tokenizer, prompt)
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = prompt_ids + answer_ids
    labels = ids if loss_on_prompt else [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    return {"input_ids": ids, "labels": labels,
            "length": len(ids), "fits": len(ids) <= max_length}


@functools.cache
def _code_version() -> str:
    """This module's and the prompt's source and the tokenizer libraries' versions: a change to how rows
    are tokenized invalidates cached maps."""
    import tokenizers
    import transformers

    import sqlray.text2sql

    sources = [Path(m.__file__).read_bytes() for m in (sys.modules[__name__], sqlray.text2sql)]
    return Hasher.hash((sources, transformers.__version__, tokenizers.__version__))


def derived_fingerprint(ds: Dataset, *parts) -> str:
    """The fingerprint of ``ds`` after a transform described by ``parts`` (plain values, a tokenizer) and
    this module's code. Passed as ``new_fingerprint``, it spares datasets from hashing the transform's
    function with dill, whose dill.detect.nestedglobals disassembles it to a captured stdout; Ray Train v2's
    print (patch_print.py) logs that capture anyway: hundreds of lines of bytecode per map in every worker.
    A transform defined elsewhere must name its own code in ``parts`` or not be cached."""
    return Hasher.hash((ds._fingerprint, _code_version(), *parts))


def tokenize_split(ds: Dataset, tokenizer, max_length: int, name: str = "split",
                   loss_on_prompt: bool = False, bpe_dropout: float = 0.0, seed: int = 0) -> Dataset:
    """Tokenize; rows longer than ``max_length`` (the block size) are dropped rather than losing their SQL.
    ``bpe_dropout`` > 0 splits words as `SubwordDropout` does, seeded by ``seed`` and the row's index."""
    splitter = SubwordDropout(tokenizer, bpe_dropout) if bpe_dropout > 0 else None

    def one(r, i):
        drop = (splitter, random.Random(seed * 1_000_003 + i)) if splitter else None
        return tokenize_row(r, tokenizer, max_length, loss_on_prompt, drop)

    fp = derived_fingerprint(ds, "tokenize_row", tokenizer, max_length, loss_on_prompt, bpe_dropout,
                             seed if bpe_dropout > 0 else None)  # the seed only matters to dropout
    out = ds.map(one, with_indices=True, remove_columns=ds.column_names, desc=f"tokenize {name}", new_fingerprint=fp)
    n = len(out)
    out = out.filter(lambda r: r["fits"], new_fingerprint=derived_fingerprint(out, "fits")).remove_columns(["fits"])
    if len(out) < n:
        log.warning("%s: dropped %d of %d rows longer than max_length=%d tokens", name, n - len(out), n, max_length)
    if len(out) == 0:
        raise DataError(f"{name}: no rows fit in data.max_length={max_length} tokens")
    return out
