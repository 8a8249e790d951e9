"""BlobCodec, the envelope around every stored session value: seal/open round trips for raw bytes, JSON records and
safetensors tensor groups (with metadata); corruption (truncation, flipped bytes, wrong magic, unknown flags, bodies
that do not parse) raising CorruptSession; and AES-256-GCM encryption at rest (no plaintext in the blob, the storage
key authenticated, wrong or missing keys refused, key length checked)."""

from __future__ import annotations

import hashlib
import random

import pytest
import torch

from model_worker.sessions.codec import _HEADER, MAGIC, BlobCodec, parse_tensors
from model_worker.sessions.errors import CorruptSession, SessionError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NAME = "t/0123456789abcdef0123456789abcdef/b/page"
SECRET = b"the quick brown fox keeps a secret: 42 " * 8


@pytest.fixture(params=["plain", "encrypted"])
def codec(request) -> BlobCodec:
    return BlobCodec(KEY if request.param == "encrypted" else None)


def _flip(blob: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(blob)
    out[index] ^= mask
    return bytes(out)


def _with_flags(blob: bytes, flags: int, rehash: bool = False) -> bytes:
    """The blob with another flags byte; rehash: with a checksum recomputed to match (a writer that meant it)."""
    out = bytearray(blob)
    out[len(MAGIC)] = flags
    if rehash:
        out[len(MAGIC) + 1 : _HEADER] = hashlib.sha256(bytes([flags]) + blob[_HEADER:]).digest()
    return bytes(out)


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    return {
        "kv": torch.randint(0, 256, (64, 584), dtype=torch.uint8, generator=g),
        "scores": torch.randn(3, 7, generator=g),
        "features": torch.randn(5, 16, generator=g).to(torch.bfloat16),
        "positions": torch.randint(-(2**31), 2**31 - 1, (100,), dtype=torch.int32, generator=g),
        "empty": torch.zeros(0, 5),
        "scalar": torch.tensor(3.5),
    }


# --- round trips -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"x", SECRET, bytes(range(256)), random.Random(3).randbytes(50_000)],
                         ids=["empty", "one-byte", "text", "all-byte-values", "50k-random"])
def test_seal_open_round_trips_bytes(codec, payload):
    blob = codec.seal(NAME, payload)
    assert blob.startswith(MAGIC)
    assert codec.open(NAME, blob) == payload


def test_unencrypted_envelope_layout():
    blob = BlobCodec().seal(NAME, SECRET)
    assert blob[: len(MAGIC)] == MAGIC == b"DSV4SES1"
    assert blob[len(MAGIC)] == 0
    assert blob[len(MAGIC) + 1 : _HEADER] == hashlib.sha256(b"\0" + SECRET).digest()  # the flags are covered too
    assert blob[_HEADER:] == SECRET
    assert len(blob) == 8 + 1 + 32 + len(SECRET)


def test_encrypted_envelope_layout():
    blob = BlobCodec(KEY).seal(NAME, SECRET)
    assert blob.startswith(MAGIC)
    assert blob[len(MAGIC)] == 1
    body = blob[_HEADER:]
    assert blob[len(MAGIC) + 1 : _HEADER] == hashlib.sha256(b"\1" + body).digest()
    assert len(body) == 12 + len(SECRET) + 16  # nonce, ciphertext, GCM tag


def test_json_round_trip(codec):
    record = {"format": "dsv4-session/1", "seq": 7, "ratio": 0.25, "ok": True, "none": None, "text": "héllo ✓ 日本",
              "list": [1, "two", {"three": 3}], "nested": {"b": [], "a": {}}}
    blob = codec.seal_json(NAME, record)
    assert codec.open_json(NAME, blob) == record


def test_json_is_canonical():
    codec = BlobCodec()
    a = codec.seal_json(NAME, {"b": 1, "a": [2, 3]})
    b = codec.seal_json(NAME, {"a": [2, 3], "b": 1})
    assert a == b
    assert codec.open(NAME, a) == b'{"a":[2,3],"b":1}'


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"3", b"null"])
def test_json_record_must_be_an_object(codec, body):
    with pytest.raises(CorruptSession):
        codec.open_json(NAME, codec.seal(NAME, body))


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"a": 1', b"\xff\xfe{}"])
def test_unparsable_json_is_corrupt(codec, body):
    with pytest.raises(CorruptSession):
        codec.open_json(NAME, codec.seal(NAME, body))


def test_tensors_round_trip(codec):
    tensors = _tensors()
    metadata = {"kind": "page", "ratio": 4, "index": 0, "layers": [1, 3], "nested": {"a": None, "b": 1.5}}
    blob = codec.seal_tensors(NAME, tensors, metadata)
    got, meta = codec.open_tensors(NAME, blob)
    assert meta == metadata
    assert sorted(got) == sorted(tensors)
    for name, tensor in tensors.items():
        assert got[name].dtype == tensor.dtype, name
        assert got[name].shape == tensor.shape, name
        assert torch.equal(got[name], tensor), name
    assert got["empty"].shape == (0, 5)
    assert got["features"].dtype == torch.bfloat16


def test_tensors_round_trip_without_metadata_or_tensors(codec):
    got, meta = codec.open_tensors(NAME, codec.seal_tensors(NAME, {"x": torch.arange(6, dtype=torch.int32)}, {}))
    assert meta == {}
    assert torch.equal(got["x"], torch.arange(6, dtype=torch.int32))
    got, meta = codec.open_tensors(NAME, codec.seal_tensors(NAME, {}, {"only": "metadata"}))
    assert got == {}
    assert meta == {"only": "metadata"}


def test_tensors_non_contiguous_and_views_are_stored_by_value(codec):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {"transposed": base.t(), "strided": base[:, ::2], "slice": base[1:3]}
    got, _ = codec.open_tensors(NAME, codec.seal_tensors(NAME, tensors, {}))
    for name, tensor in tensors.items():
        assert got[name].shape == tensor.shape
        assert torch.equal(got[name], tensor), name


def test_tensor_blob_that_is_not_safetensors_is_corrupt(codec):
    bodies = [b"", b"not safetensors at all", (10**6).to_bytes(8, "little") + b"{}",
              (2).to_bytes(8, "little") + b"{}junk"]
    for body in bodies:
        with pytest.raises(CorruptSession):
            codec.open_tensors(NAME, codec.seal(NAME, body))
    with pytest.raises(CorruptSession):
        parse_tensors(NAME, b"\x00" * 3)


def test_tensor_blob_opened_as_json_is_corrupt(codec):
    blob = codec.seal_tensors(NAME, {"x": torch.ones(2)}, {})
    with pytest.raises(CorruptSession):
        codec.open_json(NAME, blob)


# --- corruption ------------------------------------------------------------------------------------------------------


def test_truncation_is_detected(codec):
    blob = codec.seal(NAME, SECRET)
    cuts = [0, 1, 4, len(MAGIC), len(MAGIC) + 1, len(MAGIC) + 16, _HEADER - 1, _HEADER, _HEADER + 1, _HEADER + 13,
            len(blob) // 2, len(blob) - 17, len(blob) - 1]
    for cut in cuts:
        with pytest.raises(CorruptSession):
            codec.open(NAME, blob[:cut])


def test_truncated_json_and_tensors_are_detected(codec):
    for blob, opener in ((codec.seal_json(NAME, {"a": "b" * 100}), codec.open_json),
                         (codec.seal_tensors(NAME, _tensors(), {"m": 1}), codec.open_tensors)):
        for cut in (5, _HEADER - 1, _HEADER + 3, len(blob) - 1):
            with pytest.raises(CorruptSession):
                opener(NAME, blob[:cut])


def test_flipped_body_byte_is_detected(codec):
    blob = codec.seal(NAME, SECRET)
    for index in (_HEADER, _HEADER + 1, (_HEADER + len(blob)) // 2, len(blob) - 1):
        for mask in (0x01, 0x80, 0xFF):
            with pytest.raises(CorruptSession):
                codec.open(NAME, _flip(blob, index, mask))


def test_flipped_checksum_byte_is_detected(codec):
    blob = codec.seal(NAME, SECRET)
    for index in (len(MAGIC) + 1, len(MAGIC) + 20, _HEADER - 1):
        with pytest.raises(CorruptSession):
            codec.open(NAME, _flip(blob, index))


def test_flipped_tensor_byte_is_detected(codec):
    blob = codec.seal_tensors(NAME, _tensors(), {"m": 1})
    rng = random.Random(5)
    for index in [rng.randrange(_HEADER, len(blob)) for _ in range(8)]:
        with pytest.raises(CorruptSession):
            codec.open_tensors(NAME, _flip(blob, index))


def test_appended_bytes_are_detected(codec):
    blob = codec.seal(NAME, SECRET)
    with pytest.raises(CorruptSession):
        codec.open(NAME, blob + b"\x00")


@pytest.mark.parametrize("magic", [b"DSV4SES2", b"DSV4SES0", b"dsv4ses1", b"\x00" * 8, b"PK\x03\x04SES1"])
def test_wrong_magic_is_detected(codec, magic):
    blob = codec.seal(NAME, SECRET)
    with pytest.raises(CorruptSession):
        codec.open(NAME, magic + blob[len(MAGIC) :])
    for index in range(len(MAGIC)):
        with pytest.raises(CorruptSession):
            codec.open(NAME, _flip(blob, index))


@pytest.mark.parametrize("blob", [b"", b"DSV4SES1", b"garbage", b"{}"])
def test_not_a_blob_is_corrupt(codec, blob):
    with pytest.raises(CorruptSession):
        codec.open(NAME, blob)


@pytest.mark.parametrize("extra", [0x02, 0x04, 0x80, 0xFE])
def test_unknown_flags_bit_is_refused(codec, extra):
    blob = codec.seal(NAME, SECRET)
    flags = blob[len(MAGIC)]
    with pytest.raises(CorruptSession, match="flags"):
        codec.open(NAME, _with_flags(blob, flags | extra, rehash=True))
    with pytest.raises(CorruptSession, match="checksum"):
        codec.open(NAME, _with_flags(blob, flags | extra))


def test_corrupt_session_is_a_session_error():
    with pytest.raises(SessionError):
        BlobCodec().open(NAME, b"")


# --- encryption at rest ----------------------------------------------------------------------------------------------


def test_encrypted_blob_hides_the_plaintext():
    codec = BlobCodec(KEY)
    blob = codec.seal(NAME, SECRET)
    assert SECRET not in blob
    assert all(SECRET[i : i + 16] not in blob for i in range(0, len(SECRET) - 16, 8))
    record_blob = codec.seal_json(NAME, {"system_prompt": SECRET.decode()})
    assert b"quick brown fox" not in record_blob
    tensor_blob = codec.seal_tensors(NAME, {"secret": torch.frombuffer(bytearray(SECRET), dtype=torch.uint8)},
                                     {"note": "quick brown fox"})
    assert b"quick brown fox" not in tensor_blob
    assert b"secret" not in tensor_blob  # tensor names and metadata are inside the ciphertext too
    assert b"quick brown fox" in BlobCodec().seal(NAME, SECRET)  # the check above can fail


def test_encrypted_round_trip_with_the_same_key():
    blob = BlobCodec(KEY).seal(NAME, SECRET)
    assert BlobCodec(bytes(KEY)).open(NAME, blob) == SECRET
    record = {"a": [1, 2], "s": "x"}
    assert BlobCodec(KEY).open_json(NAME, BlobCodec(KEY).seal_json(NAME, record)) == record
    tensors, meta = BlobCodec(KEY).open_tensors(NAME, BlobCodec(KEY).seal_tensors(NAME, _tensors(), {"m": 2}))
    assert meta == {"m": 2}
    assert all(torch.equal(tensors[name], t) for name, t in _tensors().items())


def test_encryption_uses_a_fresh_nonce():
    codec = BlobCodec(KEY)
    first, second = codec.seal(NAME, SECRET), codec.seal(NAME, SECRET)
    assert first != second
    assert first[_HEADER : _HEADER + 12] != second[_HEADER : _HEADER + 12]
    assert codec.open(NAME, first) == codec.open(NAME, second) == SECRET


def test_a_different_key_does_not_open():
    blob = BlobCodec(KEY).seal(NAME, SECRET)
    with pytest.raises(CorruptSession):
        BlobCodec(OTHER_KEY).open(NAME, blob)
    with pytest.raises(CorruptSession):
        BlobCodec(_flip(KEY, 31)).open_json(NAME, BlobCodec(KEY).seal_json(NAME, {"a": 1}))


@pytest.mark.parametrize("other_name", [NAME + "x", NAME[:-1], "t/0123456789abcdef0123456789abcdef/b/other", ""])
def test_the_storage_key_is_authenticated(other_name):
    codec = BlobCodec(KEY)
    blob = codec.seal(NAME, SECRET)
    with pytest.raises(CorruptSession):
        codec.open(other_name, blob)
    with pytest.raises(CorruptSession):
        codec.open_tensors(other_name, codec.seal_tensors(NAME, {"x": torch.ones(3)}, {}))


def test_encrypted_blob_without_a_key_is_refused():
    codec = BlobCodec()
    with pytest.raises(CorruptSession, match="encrypt"):
        codec.open(NAME, BlobCodec(KEY).seal(NAME, SECRET))
    with pytest.raises(CorruptSession):
        codec.open_json(NAME, BlobCodec(KEY).seal_json(NAME, {"a": 1}))
    with pytest.raises(CorruptSession):
        codec.open_tensors(NAME, BlobCodec(KEY).seal_tensors(NAME, {"x": torch.ones(2)}, {}))


def test_unencrypted_blob_is_refused_when_a_key_is_configured():
    plain = BlobCodec().seal(NAME, SECRET)
    with pytest.raises(CorruptSession, match="unencrypted"):
        BlobCodec(KEY).open(NAME, plain)
    with pytest.raises(CorruptSession):
        BlobCodec(KEY).open_json(NAME, BlobCodec().seal_json(NAME, {"a": 1}))


def test_encrypted_blob_with_its_flag_cleared_is_refused():
    blob = BlobCodec(KEY).seal_json(NAME, {"a": 1})
    for rehash in (False, True):
        with pytest.raises(CorruptSession):
            BlobCodec(KEY).open(NAME, _with_flags(blob, 0, rehash))
    with pytest.raises(CorruptSession, match="checksum"):
        BlobCodec().open(NAME, _with_flags(blob, 0))  # the flags are under the checksum
    with pytest.raises(CorruptSession):
        BlobCodec().open_json(NAME, _with_flags(blob, 0, rehash=True))  # the ciphertext does not parse


def test_plain_blob_with_the_encrypted_flag_set_is_refused():
    blob = BlobCodec().seal(NAME, SECRET)
    with pytest.raises(CorruptSession):
        BlobCodec().open(NAME, _with_flags(blob, 1))
    with pytest.raises(CorruptSession):
        BlobCodec(KEY).open(NAME, _with_flags(blob, 1))


@pytest.mark.parametrize("length", [0, 1, 16, 24, 31, 33, 64])
def test_a_key_of_the_wrong_length_is_rejected(length):
    with pytest.raises(ValueError):
        BlobCodec(bytes(length))


def test_a_32_byte_key_is_accepted():
    assert BlobCodec(bytes(32)).open(NAME, BlobCodec(bytes(32)).seal(NAME, b"z")) == b"z"


def test_a_previous_key_opens_and_reseal_moves_a_value_to_the_current_key() -> None:
    sealed_old, plain = BlobCodec(OTHER_KEY).seal(NAME, SECRET), BlobCodec().seal(NAME, SECRET)
    rotating = BlobCodec(KEY, previous_keys=(OTHER_KEY,))
    assert rotating.open(NAME, sealed_old) == SECRET
    with pytest.raises(CorruptSession):
        BlobCodec(KEY).open(NAME, sealed_old)
    for blob in (sealed_old, plain):  # an older key's value, and one stored before encryption was configured
        moved = rotating.reseal(NAME, blob)
        assert BlobCodec(KEY).open(NAME, moved) == SECRET and rotating.reseal(NAME, moved) is None
    assert BlobCodec().reseal(NAME, plain) is None
    with pytest.raises(ValueError):
        BlobCodec(None, previous_keys=(OTHER_KEY,))


def test_the_keys_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("DSV4_SESSION_KEY", KEY.hex())
    monkeypatch.setenv("DSV4_SESSION_PREVIOUS_KEYS", f"{OTHER_KEY.hex()}, ")
    assert BlobCodec.from_env().open(NAME, BlobCodec(OTHER_KEY).seal(NAME, SECRET)) == SECRET
    monkeypatch.setenv("DSV4_SESSION_PREVIOUS_KEYS", "not-hex")
    with pytest.raises(ValueError, match="64 hex digits"):
        BlobCodec.from_env()
