"""SessionStore over real files and real Redis with the real engine (small config): resume without re-prefill gives the
logits of a process that never stopped, commits write what is new, forks and rewinds share pages, prefixes are
reused, tenants are isolated, damage is detected, the byte cap holds."""

from __future__ import annotations

import pytest
import torch
from sessions_testlib import TOKENS, feed, grow, small_model

from model_worker.numerics import OFFICIAL
from model_worker.sessions import (
    BlobCodec,
    CorruptSession,
    Head,
    IncompatibleSession,
    QuotaExceeded,
    SessionExists,
    SessionNotFound,
    SessionStore,
    admin,
    open_blobs,
)
from model_worker.sessions.chain import page_address
from model_worker.sessions.manifest import blob_key, tenant_key


def test_resume_in_another_store_object_is_bitwise_the_same(model, store, tmp_path) -> None:
    session = store.create("acme", Head(system_prompt="be brief"))
    grow(model, store, session, TOKENS[:2500])
    continued = feed(model, session, [7, 8, 9], chunk=3)
    reopened = SessionStore(open_blobs(f"file://{tmp_path}/sessions"), model.fingerprint, model.layout).open(
        "acme", session.session_id)
    assert not reopened.rebuilt and reopened.token_ids == TOKENS[:2500] and reopened.head.system_prompt == "be brief"
    assert torch.equal(feed(model, reopened, [7, 8, 9], chunk=3), continued)


def test_official_numerics_resume_the_stored_fp8_state(tmp_path) -> None:
    model = small_model(OFFICIAL)
    store = SessionStore(open_blobs(str(tmp_path)), model.fingerprint, model.layout)
    session = store.create("acme")
    grow(model, store, session, TOKENS[:1100])
    expected = feed(model, session, [3], chunk=1)
    assert torch.equal(feed(model, store.open("acme", session.session_id), [3], chunk=1), expected)


def test_commit_bytes_do_not_grow_with_history(model, store) -> None:
    session = store.create("acme")
    sizes = []
    # The same place in every cycle of pages (1,024 tokens) and of the token log's pages (4,096): equal partial pages.
    for length in (40, 4136):
        grow(model, store, session, TOKENS[len(session.token_ids) : length])
        feed(model, session, [5], chunk=1)
        sizes.append(store.commit(session, [5]).bytes_written)
    # one token appended: a tail and a record (no page completes), the same size at 40 and 4,136 tokens of history
    assert max(sizes) - min(sizes) < 0.01 * min(sizes), sizes


def test_pages_are_written_once_and_shared_by_forks(model, store) -> None:
    session = store.create("acme")
    grow(model, store, session, TOKENS[:1200])
    tk = tenant_key("acme")
    values = set(store.blobs.list(f"t/{tk}/b/"))
    child = admin.fork(store, "acme", session.session_id)
    assert set(store.blobs.list(f"t/{tk}/b/")) == values  # a fork writes only its commit record
    forked = store.open("acme", child)
    expected = feed(model, session, [9, 9], chunk=2)
    assert torch.equal(feed(model, forked, [9, 9], chunk=2), expected)
    store.commit(forked, [9, 9])
    assert store.open("acme", session.session_id).token_ids == TOKENS[:1200]  # the parent did not move


def test_rewind_to_a_retained_commit_and_prune(model, tmp_path) -> None:
    store = SessionStore(open_blobs(str(tmp_path)), model.fingerprint, model.layout, retain_commits=3)
    session = store.create("acme")
    grow(model, store, session, TOKENS[:600], chunk=100)  # commits 0..5
    store.commit(session, [], checkpoint=True)  # 6, a checkpoint
    grow(model, store, session, TOKENS[600:1000], chunk=100)  # 7..10
    assert store.commit_seqs(tenant_key("acme"), session.session_id) == [6, 8, 9, 10]
    at_checkpoint = store.open("acme", session.session_id, seq=6)
    expected = feed(model, at_checkpoint, [4], chunk=1)
    assert admin.rewind(store, "acme", session.session_id, 6) == 11
    rewound = store.open("acme", session.session_id)
    assert rewound.token_ids == TOKENS[:600] and torch.equal(feed(model, rewound, [4], chunk=1), expected)
    with pytest.raises(SessionNotFound):
        store.open("acme", session.session_id, seq=2)  # pruned


def test_shared_prefix_is_reused_not_prefilled(model, store) -> None:
    head = TOKENS[:700]
    first = store.create("acme", Head(head_tokens=700))
    grow(model, store, first, head)
    second = store.create("acme", Head(head_tokens=700), prefix=head)
    assert second.reused_prefix_tokens == 700 and second.state.num_tokens == 700
    assert torch.equal(feed(model, second, [1, 2], chunk=2), feed(model, first, [1, 2], chunk=2))
    other_tenant = store.create("globex", prefix=head)
    assert other_tenant.reused_prefix_tokens == 0 and other_tenant.state.num_tokens == 0
    # a longer prompt of which only the head was committed: the longest committed candidate position is taken
    longer = store.create("acme", prefix=head + [5, 6, 7], reuse_at=[300, 700, 703])
    assert longer.reused_prefix_tokens == 700 and longer.token_ids == head


def test_tenants_are_isolated(model, store) -> None:
    session = store.create("acme", session_id="shared-name")
    grow(model, store, session, TOKENS[:300])
    for action in (lambda: store.open("globex", "shared-name"), lambda: admin.fork(store, "globex", "shared-name"),
                   lambda: admin.delete(store, "globex", "shared-name"),
                   lambda: admin.stats(store, "globex", "shared-name")):
        with pytest.raises(SessionNotFound):
            action()
    assert admin.list_sessions(store, "globex") == [] and admin.list_sessions(store, "acme") == ["shared-name"]
    theirs = store.create("globex", session_id="shared-name")  # the same name is a different session
    grow(model, store, theirs, TOKENS[:300])
    ours, theirs_values = (set(store.blobs.list(f"t/{tenant_key(t)}/b/")) for t in ("acme", "globex"))
    assert ours and theirs_values and not ours & theirs_values


def test_taken_ids_incompatible_weights_and_format(model, store) -> None:
    store.create("acme", session_id="s1")
    with pytest.raises(SessionExists):
        store.create("acme", session_id="s1")
    s = store.create("acme", session_id="s2")
    grow(model, store, s, TOKENS[:50])
    with pytest.raises(IncompatibleSession):
        SessionStore(store.blobs, "other-weights", model.layout).open("acme", "s2")
    with pytest.raises(IncompatibleSession):
        SessionStore(store.blobs, model.fingerprint, small_model(OFFICIAL).layout).open("acme", "s2")
    with pytest.raises(SessionNotFound):
        store.open("acme", "no-such")


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_page_means_rebuild_from_the_token_log(model, store, damage: str) -> None:
    session = store.create("acme")
    grow(model, store, session, TOKENS[:1100])
    page = blob_key(tenant_key("acme"), page_address(session.chain, 4, 2, 256))
    blob = store.blobs.get(page)
    if damage == "delete":
        store.blobs.delete(page)
    else:
        store.blobs.put(page, blob[:-10] if damage == "truncate" else blob[:-1] + bytes([blob[-1] ^ 1]))
    reopened = store.open("acme", session.session_id)
    assert reopened.rebuilt and reopened.state.num_tokens == 0 and reopened.replay == TOKENS[:1100]
    expected = feed(model, session, [3], chunk=1)
    feed(model, reopened, reopened.replay)  # the caller prefills the log again and commits it
    store.commit(reopened, reopened.replay)
    again = store.open("acme", session.session_id)
    assert not again.rebuilt and again.token_ids == TOKENS[:1100]
    assert torch.equal(feed(model, again, [3], chunk=1), expected)


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_an_unfinished_newest_commit_gives_way_to_the_previous_one(model, store, damage: str) -> None:
    """A writer that died mid-commit on a store without atomic writes leaves a record whose own values are absent or
    cut short: the session opens at the commit before, and the next commit takes the unfinished one's number."""
    session = store.create("acme")
    grow(model, store, session, TOKENS[:600])
    tk = tenant_key("acme")
    tail = blob_key(tk, store.read_commit(tk, session.session_id, None).tail)  # written by the last commit alone
    if damage == "delete":
        store.blobs.delete(tail)
    else:
        store.blobs.put(tail, store.blobs.get(tail)[:-100])
    reopened = store.open("acme", session.session_id)
    assert not reopened.rebuilt and reopened.seq == 0 and reopened.token_ids == TOKENS[:300]
    assert store.commit_seqs(tk, session.session_id) == [0]
    grow(model, store, reopened, TOKENS[300:600])
    expected = feed(model, reopened, [5], chunk=1)
    again = store.open("acme", session.session_id)
    assert again.seq == 1 and again.token_ids == TOKENS[:600]
    assert torch.equal(feed(model, again, [5], chunk=1), expected)


def test_quota_refuses_a_commit_and_keeps_the_previous_one(model, store) -> None:
    session = store.create("acme")
    grow(model, store, session, TOKENS[:300])
    used = sum(store.blobs.size(k) for k in store.blobs.list(f"t/{tenant_key('acme')}/b/"))
    capped = SessionStore(store.blobs, model.fingerprint, model.layout, tenant_quota_bytes=used + 50_000)
    session = capped.open("acme", session.session_id)
    feed(model, session, TOKENS[300:1300])
    with pytest.raises(QuotaExceeded):
        capped.commit(session, TOKENS[300:1300])  # four new page groups do not fit in 50 KB
    assert capped.open("acme", session.session_id).token_ids == TOKENS[:300]
    assert sum(store.blobs.size(k) for k in store.blobs.list(f"t/{tenant_key('acme')}/b/")) == used


def test_encrypted_sessions_on_redis(model) -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0").ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    blobs = open_blobs("redis://127.0.0.1:6379/0?prefix=test-sessions-store:")
    try:
        key = bytes(range(32))
        store = SessionStore(blobs, model.fingerprint, model.layout, codec=BlobCodec(key))
        session = store.create("acme")
        grow(model, store, session, TOKENS[:400])
        expected = feed(model, session, [2], chunk=1)
        assert torch.equal(feed(model, store.open("acme", session.session_id), [2], chunk=1), expected)
        tail = blob_key(tenant_key("acme"), store.read_commit(tenant_key("acme"), session.session_id, None).tail)
        with pytest.raises(CorruptSession):  # without the key nothing opens
            SessionStore(blobs, model.fingerprint, model.layout).codec.open(tail, blobs.get(tail))
    finally:
        for k in list(blobs.list("")):
            blobs.delete(k)


def test_export_import_and_collect(model, store, tmp_path) -> None:
    session = store.create("acme", Head(think_max=True))
    grow(model, store, session, TOKENS[:1300])
    expected = feed(model, session, [6], chunk=1)
    admin.export_session(store, "acme", session.session_id, str(tmp_path / "s.tar"))
    imported = admin.import_session(store, "globex", str(tmp_path / "s.tar"))
    opened = store.open("globex", imported)
    assert opened.head.think_max and torch.equal(feed(model, opened, [6], chunk=1), expected)
    admin.delete(store, "acme", session.session_id)
    assert admin.collect(store, "acme", grace_seconds=0) > 0
    assert list(store.blobs.list(f"t/{tenant_key('acme')}/b/")) == []
    assert admin.collect(store, "globex", grace_seconds=0) == 0  # every value is still named by a commit
    assert torch.equal(feed(model, store.open("globex", imported), [6], chunk=1), expected)


def test_the_token_log_spans_token_pages_and_a_damaged_one_is_an_error(model, store) -> None:
    session = store.create("acme")
    # Two commits past a full 4,096-token page: both name it, so damage to it is not an unfinished last commit.
    grow(model, store, session, TOKENS[:4200], chunk=4150)
    tk = tenant_key("acme")
    reopened = store.open("acme", session.session_id)
    assert reopened.token_pages == 1 and reopened.token_ids == TOKENS[:4200] and not reopened.rebuilt
    page = blob_key(tk, reopened.last_token_page)
    store.blobs.put(page, store.blobs.get(page)[:-1])
    with pytest.raises(CorruptSession):  # without its token log a session cannot even be rebuilt
        store.open("acme", session.session_id)


def test_generation_commits_at_turn_ends_and_every_n_tokens(model, store) -> None:
    from foundation.chat import load_tokenizer
    from model_worker.engine import Generator
    from model_worker.sampling import SamplingParams

    generator = Generator(model, load_tokenizer(), prefill_chunk=64)
    session = store.create("acme")
    commits = []

    def commit(token_ids: list[int]) -> None:
        commits.append(len(token_ids))
        store.commit(session, token_ids)

    result = generator.generate(session.state, TOKENS[:100], SamplingParams(temperature=0.8, seed=3, max_tokens=11),
                                on_commit=commit, commit_every=4)
    # the prompt, then 4 + 4 generated tokens mid-output, then the rest that was fed (the last sample never is)
    assert commits == [100, 4, 4, 2] and len(result.token_ids) == 11
    reopened = store.open("acme", session.session_id)
    assert reopened.token_ids == TOKENS[:100] + result.token_ids[:10] and reopened.sampling == session.state.sampling


def test_the_encryption_key_rotates_without_downtime(model, tmp_path) -> None:
    """Sealed with the old key; opened by workers holding the new key and the old one as previous; `sessions rekey`
    reseals every value (an unencrypted one too), after which the old key can go."""
    from argparse import Namespace

    from model_worker.sessions.cli import _rekey

    old, new = bytes(range(32)), bytes(range(100, 132))
    blobs = open_blobs(str(tmp_path / "sessions"))
    before = SessionStore(blobs, model.fingerprint, model.layout, codec=BlobCodec(old))
    session = before.create("acme")
    grow(model, before, session, TOKENS[:600])
    expected = feed(model, session, [4], chunk=1)
    rotating = SessionStore(blobs, model.fingerprint, model.layout, codec=BlobCodec(new, previous_keys=(old,)))
    assert torch.equal(feed(model, rotating.open("acme", session.session_id), [4], chunk=1), expected)
    after = SessionStore(blobs, model.fingerprint, model.layout, codec=BlobCodec(new))
    with pytest.raises((CorruptSession, SessionNotFound)):  # its records do not open either: none is readable
        after.open("acme", session.session_id)
    _rekey(rotating, Namespace())
    assert all(rotating.codec.reseal(k, blobs.get(k)) is None for k in blobs.list("t/") if blobs.get(k))
    assert torch.equal(feed(model, after.open("acme", session.session_id), [4], chunk=1), expected)
