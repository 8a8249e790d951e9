"""Finish decisions for one request: EOS, stop tokens, stop strings (with text hold-back), length.

The checker sees each new token with the text it added to the detokenized stream, releases only
text that can no longer turn out to be part of a stop string, and says how many tokens and
characters lie past the stop point so the engine can roll its state back to it.

Each stop string is followed by a streaming Knuth-Morris-Pratt matcher, so memory and work are
linear in the stop strings' lengths and in the text: a client-chosen stop string must not cost the
engine thread every tenant shares anything quadratic.
"""

from __future__ import annotations

import enum
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from foundation.sampling import SamplingParams


class FinishReason(enum.StrEnum):
    STOP = "stop"  # EOS, a stop token or a stop string
    LENGTH = "length"  # max_tokens reached
    ABORT = "abort"  # cancelled by the client or the engine
    ERROR = "error"  # the engine failed this request


@dataclass
class StopCheckResult:
    """Outcome of one StopChecker.update call.

    Attributes:
        text: newly released text for the client (already excludes anything past the stop point).
        finish_reason: set once the request is finished, else None.
        stop_reason: the stop token id or stop string that matched; None for EOS, length or running.
        num_tokens_to_truncate: trailing tokens of this update generated past the stop point.
        num_chars_to_truncate: trailing characters of all text passed in so far that lie past the
            stop point (stop-string text when excluded, text of tokens past the stop).
    """

    text: str
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None
    num_tokens_to_truncate: int = 0
    num_chars_to_truncate: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class StopChecker:
    """Incremental stop detection for one request; feed it every generated token exactly once.

    A stop string ends the output at its first occurrence to complete, even inside a token's text
    (the token itself is kept; only its text is cut). EOS and stop-token text is excluded from the
    output unless include_stop_str_in_output, as in vLLM. A stop wins over length on the same token.
    """

    def __init__(self, params: SamplingParams, eos_token_ids: Iterable[int] = ()) -> None:
        self._params = params
        self._eos_token_ids = frozenset(() if params.ignore_eos else eos_token_ids)
        self._stop_token_ids = frozenset(params.stop_token_ids)
        self._matchers = [_StopMatcher(stop_str) for stop_str in dict.fromkeys(params.stop)]
        self._pending = ""  # held-back text: the longest suffix that is a stop-string prefix
        self._num_output_tokens = 0
        self._finish_reason: FinishReason | None = None

    @property
    def num_output_tokens(self) -> int:
        return self._num_output_tokens

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._finish_reason

    @property
    def pending_text(self) -> str:
        return self._pending

    def update(self, token_ids: Sequence[int], texts: Sequence[str]) -> StopCheckResult:
        """Consume new tokens (one per decode step, several with speculative decoding).

        Args:
            token_ids: the new tokens, in order.
            texts: texts[i] is what token_ids[i] added to the detokenized stream ('' is fine, e.g.
                for a special token or an incomplete UTF-8 sequence).
        """
        if self._finish_reason is not None:
            raise RuntimeError(f"update() after the request finished ({self._finish_reason})")
        if len(token_ids) != len(texts):
            raise ValueError(f"got {len(token_ids)} token ids but {len(texts)} texts")
        buffer = self._pending
        for i, (token_id, text) in enumerate(zip(token_ids, texts, strict=True)):
            self._num_output_tokens += 1
            if token_id in self._eos_token_ids or token_id in self._stop_token_ids:
                keep_text = self._params.include_stop_str_in_output
                stop_reason = None if token_id in self._eos_token_ids else token_id
                return self._finish(
                    FinishReason.STOP,
                    buffer + text if keep_text else buffer,
                    stop_reason,
                    texts[i + 1 :],
                    0 if keep_text else len(text),
                )
            searched_len = len(buffer)
            buffer += text
            match = self._find_stop_str(buffer, searched_len)
            if match is not None:
                start, stop_str = match
                cut = start + len(stop_str) if self._params.include_stop_str_in_output else start
                return self._finish(
                    FinishReason.STOP, buffer[:cut], stop_str, texts[i + 1 :], len(buffer) - cut
                )
            max_tokens = self._params.max_tokens
            if max_tokens is not None and self._num_output_tokens >= max_tokens:
                return self._finish(FinishReason.LENGTH, buffer, None, texts[i + 1 :], 0)
        held = self._held_back_len(buffer)
        self._pending = buffer[len(buffer) - held :]
        return StopCheckResult(text=buffer[: len(buffer) - held])

    def flush(self) -> str:
        """Release held-back text, e.g. when the request is aborted mid stop-string prefix."""
        text, self._pending = self._pending, ""
        return text

    def _finish(
        self,
        reason: FinishReason,
        text: str,
        stop_reason: int | str | None,
        texts_after: Sequence[str],
        chars_cut_before: int,
    ) -> StopCheckResult:
        """Finish the request.

        `texts_after` belong to tokens past the stop; `chars_cut_before` counts text of kept tokens
        (held-back or the stopping token's own) that lies past the stop point.
        """
        self._finish_reason = reason
        self._pending = ""
        num_chars = chars_cut_before + sum(len(t) for t in texts_after)
        return StopCheckResult(text, reason, stop_reason, len(texts_after), num_chars)

    def _find_stop_str(self, buffer: str, searched_len: int) -> tuple[int, str] | None:
        """Earliest stop string ending past `searched_len` (the matchers have seen the text before it)."""
        best: tuple[int, str] | None = None
        new_text = buffer[searched_len:]
        for matcher in self._matchers:
            end = matcher.feed(new_text)
            if end is None:
                continue
            stop_str = matcher.pattern
            start = searched_len + end - len(stop_str)
            # Earliest start wins; at equal starts the shorter string completes first.
            if best is None or (start, len(stop_str)) < (best[0], len(best[1])):
                best = (start, stop_str)
        return best

    def _held_back_len(self, buffer: str) -> int:
        """Length of the longest suffix of `buffer` that is a proper prefix of some stop string."""
        return min(len(buffer), max((m.matched for m in self._matchers), default=0))


class _StopMatcher:
    """One stop string over a stream of text: `matched` is the length of the longest prefix of the string that the
    text seen so far ends with (Knuth-Morris-Pratt, one int per character of the string)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.matched = 0
        # fallback[k - 1]: the longest proper prefix of pattern[:k] that is also its suffix.
        self._fallback = array("i", bytes(4 * len(pattern)))
        k = 0
        for i in range(1, len(pattern)):
            while k and pattern[i] != pattern[k]:
                k = self._fallback[k - 1]
            if pattern[i] == pattern[k]:
                k += 1
            self._fallback[i] = k

    def feed(self, text: str) -> int | None:
        """Advance over `text`; the index in it just past the first complete match, or None."""
        pattern, k = self.pattern, self.matched
        for i, char in enumerate(text):
            while k and pattern[k] != char:
                k = self._fallback[k - 1]
            if pattern[k] == char:
                k += 1
            if k == len(pattern):
                self.matched = self._fallback[k - 1]
                return i + 1
        self.matched = k
        return None
