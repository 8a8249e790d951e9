"""Constrained decoding with llguidance: a per-worker compiler (the tokenizer's byte trie, built once, and compiled
grammars by text) and a per-request constraint the sampler asks for the allowed tokens of each step."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

import llguidance
import torch

from foundation.chat import Tokenizer
from model_worker.structured.reply_grammar import ReplySpec, reply_grammar
from model_worker.structured.values import UnsupportedSchema

_BIT = torch.arange(8, dtype=torch.uint8)


class ConstraintViolation(RuntimeError):
    """A sampled token the grammar does not allow (only after an internal error: the mask forbids it)."""


class OutputConstraint:
    """One request's grammar state; used on the engine thread only."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int, eos_token_id: int) -> None:
        self._matcher, self.vocab_size, self._eos = matcher, vocab_size, eos_token_id

    def allowed(self) -> torch.Tensor:
        """[vocab] bool: the tokens the grammar allows next. A complete grammar allows only EOS; so does a matcher in
        error, and `accept` then reports the error, so a broken request ends instead of sampling from nothing."""
        if self._matcher.is_error() or self._matcher.is_stopped():
            mask = torch.zeros(self.vocab_size, dtype=torch.bool)
            mask[self._eos] = True
            return mask
        bits = torch.frombuffer(bytearray(self._matcher.compute_bitmask()), dtype=torch.uint8)
        return ((bits.unsqueeze(-1) >> _BIT) & 1).flatten()[: self.vocab_size].bool()

    def accept(self, token_id: int) -> None:
        if not self._matcher.consume_token(token_id):
            raise ConstraintViolation(f"token {token_id} breaks the output grammar: {self._matcher.get_error()}")

    def rollback(self, num_tokens: int) -> None:
        if num_tokens and not self._matcher.rollback(num_tokens):
            raise ConstraintViolation(f"cannot roll the output grammar back by {num_tokens} tokens")

    @property
    def done(self) -> bool:
        """The grammar is complete: only EOS may follow."""
        return self._matcher.is_stopped()


class GrammarCompiler:
    """Builds constraints for reply specs. Thread-safe; compiled grammars are cached by text, so repeated requests
    with the same tools pay only a copy."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, eos_token_id: int, cache_size: int = 128) -> None:
        self.vocab_size, self.eos_token_id, self.cache_size = vocab_size, eos_token_id, cache_size
        self._tokenizer = tokenizer
        self._ll_tokenizer: llguidance.LLTokenizer | None = None
        self._cache: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()

    def constraint(self, spec: ReplySpec) -> OutputConstraint | None:
        """The constraint for `spec`, or None when it constrains nothing; raises UnsupportedSchema."""
        if not spec.constrained:
            return None
        grammar = reply_grammar(spec)
        with self._lock:
            template = self._cache.get(grammar)
            if template is not None:
                self._cache.move_to_end(grammar)
        if template is None:
            template = llguidance.LLMatcher(self._llg_tokenizer(), llguidance.LLMatcher.grammar_from_lark(grammar),
                                            log_level=0)
            if template.is_error():
                raise UnsupportedSchema(f"cannot enforce this schema: {template.get_error()}")
            with self._lock:
                self._cache[grammar] = template
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return OutputConstraint(template.deep_copy(), self.vocab_size, self.eos_token_id)

    def _llg_tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:  # built on first use (~0.6 s): workers that never constrain never pay for it
            if self._ll_tokenizer is None:
                spec = json.loads(self._tokenizer.path.read_text(encoding="utf-8"))
                # tokenizer.json leaves `｜DSML｜` and `</think>` unmarked; as special tokens the grammar places
                # them where the protocol does and free text can never contain one.
                for added in spec.get("added_tokens", []):
                    added["special"] = True
                self._ll_tokenizer = llguidance.LLTokenizer(json.dumps(spec), n_vocab=self.vocab_size,
                                                            eos_token=self.eos_token_id)
            return self._ll_tokenizer
