"""Schema-constrained decoding, the transformers edge: compiles ``constrain.sql_grammar`` grammars with
xgrammar for one tokenizer and masks each batch row's next-token scores (vLLM applies the same grammars
through its own structured outputs)."""
from __future__ import annotations

import logging
import threading

import torch
from transformers import LogitsProcessor

log = logging.getLogger(__name__)


class GrammarCache:
    """xgrammar's compiler for one tokenizer. Its own cache stays off: every grammar carries the request's
    question, so none repeats, and an unbounded cache would grow with every request a replica serves.
    Compiling costs a few ms at the tiny model's 2k vocabulary and grows with the vocabulary."""

    def __init__(self, tokenizer, vocab_size: int):
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                  stop_token_ids=[tokenizer.eos_token_id])
        self.compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self.vocab_size = vocab_size
        self._lock = threading.Lock()

    def compile(self, grammar: str):
        with self._lock:
            return self.compiler.compile_grammar(grammar)


def grammar_cache(model, tokenizer) -> GrammarCache:
    """One grammar compiler per loaded model (kept on it): the tokenizer's tables are built once."""
    cache = getattr(model, "_sqlray_grammars", None)
    if cache is None:
        cache = GrammarCache(tokenizer, model.config.vocab_size)
        model._sqlray_grammars = cache
    return cache


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks, per batch row, the tokens its grammar forbids next (rows whose grammar is None are free).

    Unlike xgrammar's own HF processor it tolerates rows that ``generate`` ended by a stop string or a
    token limit (their next tokens are padding the grammar never accepted): such a row stops being masked.
    Use one instance per ``generate`` call.
    """

    def __init__(self, cache: GrammarCache, grammars: list[str | None], pad_token_id: int | None = None):
        import xgrammar as xgr

        self.xgr = xgr
        self.matchers = [self._matcher(cache, g) for g in grammars]
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), cache.vocab_size)
        self.vocab_size = cache.vocab_size
        self.pad = pad_token_id
        self.started = False

    def _matcher(self, cache: GrammarCache, grammar: str | None):
        if not grammar:
            return None
        try:
            return self.xgr.GrammarMatcher(cache.compile(grammar))
        except Exception as e:  # never expected (sql_grammar escapes): that row decodes freely, others go on
            log.warning("schema grammar did not compile; this row decodes unconstrained: %s", str(e)[:200])
            return None

    def _advance(self, i: int, tok: int) -> None:
        m = self.matchers[i]
        if m.is_terminated():  # EOS accepted last step
            self.matchers[i] = None
        elif not m.accept_token(tok):
            if tok != self.pad:  # not the padding of a finished row: a mask that did not hold
                log.warning("row %d: token %d broke its schema grammar; it decodes unconstrained", i, tok)
            self.matchers[i] = None
        elif m.is_terminated():
            self.matchers[i] = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.started:  # the previous step's tokens: advance each live row's matcher
            for i, tok in enumerate(input_ids[:, -1].tolist()):
                if self.matchers[i] is not None:
                    self._advance(i, tok)
        self.started = True
        live = [i for i, m in enumerate(self.matchers) if m is not None]
        if live:
            for i in live:
                self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
            self.xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device),
                                                 vocab_size=self.vocab_size, indices=live)
        return scores
