"""The envelope around every stored session value (docs/session-format.md).

    magic "DSV4SES1" (8 bytes) | flags (1 byte: bit 0 = encrypted) | sha256(flags | body) (32 bytes) | body

The body is a safetensors file (pages, tails, token pages) or UTF-8 JSON (manifests, records); encrypted bodies are
AES-256-GCM: a 12-byte nonce, then the ciphertext with its tag, authenticated together with the flags and the value's
key, so a blob copied under another key, or relabelled unencrypted, does not open. The checksum catches truncation
and bit rot before anything is parsed.

Keys rotate without downtime: values are sealed with the current key and opened with it or any previous key
(`DSV4_SESSION_KEY`, `DSV4_SESSION_PREVIOUS_KEYS`); `reseal` (the `sessions rekey` command) moves a stored value to
the current key, so a previous key can be retired once every value is resealed.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from model_worker.sessions.errors import CorruptSession

KEY_ENV = "DSV4_SESSION_KEY"  # 64 hex digits: the AES-256 key values are sealed with
PREVIOUS_KEYS_ENV = "DSV4_SESSION_PREVIOUS_KEYS"  # comma-separated: keys values sealed before a rotation open with
MAGIC = b"DSV4SES1"
_HEADER = len(MAGIC) + 1 + 32
_ENCRYPTED = 1


class BlobCodec:
    def __init__(self, encryption_key: bytes | None = None, previous_keys: tuple[bytes, ...] = ()) -> None:
        keys = [k for k in (encryption_key, *previous_keys) if k is not None]
        if any(len(k) != 32 for k in keys):
            raise ValueError("a session encryption key must be 32 bytes (AES-256)")
        if previous_keys and encryption_key is None:
            raise ValueError("previous session keys need a current key to seal with")
        self._aeads = []
        if keys:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aeads = [AESGCM(k) for k in keys]  # the current first

    @classmethod
    def from_env(cls) -> BlobCodec:
        """The codec the environment configures (no key: values are stored unencrypted)."""
        current = os.environ.get(KEY_ENV)
        previous = [k for k in os.environ.get(PREVIOUS_KEYS_ENV, "").split(",") if k.strip()]
        try:
            return cls(bytes.fromhex(current) if current else None, tuple(bytes.fromhex(k.strip()) for k in previous))
        except ValueError as exc:
            raise ValueError(f"{KEY_ENV} / {PREVIOUS_KEYS_ENV}: 64 hex digits each ({exc})") from None

    def seal(self, key: str, payload: bytes) -> bytes:
        flags = 0
        if self._aeads:
            nonce = os.urandom(12)
            flags |= _ENCRYPTED
            payload = nonce + self._aeads[0].encrypt(nonce, payload, bytes([flags]) + key.encode())
        return MAGIC + bytes([flags]) + hashlib.sha256(bytes([flags]) + payload).digest() + payload

    def open(self, key: str, blob: bytes) -> bytes:
        payload, sealed_with = self._open(key, blob)
        if sealed_with is None and self._aeads:
            raise CorruptSession(f"{key}: stored unencrypted while encryption at rest is configured")
        return payload

    def reseal(self, key: str, blob: bytes) -> bytes | None:
        """The value sealed with the current key, or None when it already is (an unencrypted value is encrypted)."""
        payload, sealed_with = self._open(key, blob)
        return None if sealed_with == 0 or (sealed_with is None and not self._aeads) else self.seal(key, payload)

    def _open(self, key: str, blob: bytes) -> tuple[bytes, int | None]:
        """The payload and the index of the key that opened it (None: stored unencrypted)."""
        if len(blob) < _HEADER or not blob.startswith(MAGIC):
            raise CorruptSession(f"{key}: not a session blob (bad magic or truncated header)")
        flags, digest, body = blob[len(MAGIC)], blob[len(MAGIC) + 1 : _HEADER], blob[_HEADER:]
        if hashlib.sha256(bytes([flags]) + body).digest() != digest:
            raise CorruptSession(f"{key}: checksum mismatch (truncated or altered)")
        if flags & ~_ENCRYPTED:
            raise CorruptSession(f"{key}: unknown flags {flags:#x} (written by a newer format?)")
        if not flags & _ENCRYPTED:
            return body, None
        if not self._aeads:
            raise CorruptSession(f"{key}: encrypted, and no session encryption key is configured")
        from cryptography.exceptions import InvalidTag

        for index, aead in enumerate(self._aeads):
            try:
                return aead.decrypt(body[:12], body[12:], bytes([flags]) + key.encode()), index
            except InvalidTag:
                continue
        raise CorruptSession(f"{key}: does not decrypt with the configured keys")

    def seal_tensors(self, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> bytes:
        contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
        return self.seal(key, save_safetensors(contiguous, metadata={"dsv4": json.dumps(metadata, sort_keys=True)}))

    def open_tensors(self, key: str, blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return parse_tensors(key, self.open(key, blob))

    def seal_json(self, key: str, record: dict[str, Any]) -> bytes:
        return self.seal(key, json.dumps(record, sort_keys=True, separators=(",", ":")).encode())

    def open_json(self, key: str, blob: bytes) -> dict[str, Any]:
        try:
            record = json.loads(self.open(key, blob))
        except ValueError as exc:
            raise CorruptSession(f"{key}: unreadable record ({exc})") from exc
        if not isinstance(record, dict):
            raise CorruptSession(f"{key}: a record must be a JSON object")
        return record


def parse_tensors(key: str, body: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A safetensors body -> (tensors, the "dsv4" metadata)."""
    try:
        header_len = int.from_bytes(body[:8], "little")
        header = json.loads(body[8 : 8 + header_len])
        tensors = load_safetensors(body)
        metadata = json.loads(header.get("__metadata__", {}).get("dsv4", "{}"))
    except Exception as exc:  # a valid checksum over a body this format cannot parse: a writer's bug
        raise CorruptSession(f"{key}: unreadable tensors ({exc})") from exc
    return tensors, metadata
