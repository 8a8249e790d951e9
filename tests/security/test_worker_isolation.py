"""The model worker tried as a hostile tenant would, over gRPC with two tenants' keys against a real in-process
worker (`tiny` engine, sessions on disk): IDs that would reach another tenant's keys, request IDs shared across
tenants, imports that are bombs, quota-sized streams or not archives at all, compute RPCs around the per-tenant
limits, a full disk, and client mistakes that used to come back INTERNAL."""

from __future__ import annotations

import errno
import io
import itertools
import json
import os
import tarfile

import grpc
import pytest

from foundation.blobs import InvalidKey
from foundation.blobs.stores import FsspecBlobs, RedisBlobs, TieredBlobs
from foundation.serving import CHANNEL_OPTIONS
from model_worker.engine.loading import load_model
from model_worker.model import ForwardBatch
from model_worker.server.serve import serve_in_process
from model_worker.sessions import SessionStore, open_blobs
from model_worker.sessions.archive import ImportLimits
from model_worker.sessions.commits import CommitWriter, prepare
from model_worker.sessions.manifest import tenant_key
from protos.dsv4.worker.v1 import worker_pb2 as pb
from protos.dsv4.worker.v1 import worker_pb2_grpc

KEYS = {"key-alice": "alice", "key-bob": "bob"}
ALICE = (("authorization", "Bearer key-alice"),)
BOB = (("authorization", "Bearer key-bob"),)


@pytest.fixture(scope="module")
def model():
    return load_model(None, "tiny", numerics="official")


class Worker:
    """A worker serving both tenants on an OS-chosen port; `stub(ALICE)` calls as Alice."""

    def __init__(self, model, blobs, **options) -> None:
        self.served = serve_in_process(model, blobs, api_keys=KEYS, token_budget=256, **options)
        self.runtime = self.served.runtime
        self.channel = grpc.insecure_channel(self.served.address, options=CHANNEL_OPTIONS)
        self._stub = worker_pb2_grpc.ModelWorkerStub(self.channel)

    def call(self, who, method: str, request, **kwargs):
        return getattr(self._stub, method)(request, metadata=who, timeout=120, **kwargs)

    def stop(self) -> None:
        self.channel.close()
        self.served.stop()


@pytest.fixture
def worker(model, tmp_path):
    w = Worker(model, open_blobs(str(tmp_path / "store")))
    yield w
    w.stop()


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code()


def generate(w: Worker, who, ids, max_tokens: int, **fields):
    return w.call(who, "Generate", pb.GenerateRequest(token_ids=pb.TokenIds(ids=ids), sampling=pb.SamplingParams(
        temperature=0.0, max_tokens=max_tokens, ignore_eos=True), **fields))


def export_of(w: Worker, who, session_id: str) -> bytes:
    return b"".join(c.data for c in w.call(who, "ExportSession", pb.ExportSessionRequest(session_id=session_id)))


def import_(w: Worker, who, data: bytes, session_id: str = "", chunk: int = 1 << 16):
    chunks = [pb.ImportChunk(session_id=session_id if i == 0 else "", data=data[i : i + chunk])
              for i in range(0, len(data), chunk)] or [pb.ImportChunk(session_id=session_id)]
    return w.call(who, "ImportSession", iter(chunks))


def retar(export: bytes, extra: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w", first: bool = False
          ) -> bytes:
    """The export's members with `extra` ones added (before them when `first`), written in `mode`."""
    with tarfile.open(fileobj=io.BytesIO(export)) as source:
        members = [(m, source.extractfile(m).read()) for m in source.getmembers()]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for info, data in (extra + members if first else members + extra):
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def file_member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


# -- 1. every ID is checked at the boundary; the stores refuse keys that leave their root -------------------------


def test_a_release_holder_cannot_delete_another_tenants_commit(worker) -> None:
    worker.call(BOB, "CreateSession", pb.CreateSessionRequest(session_id="victim", system_prompt="bob's"))
    worker.call(ALICE, "CreateSession", pb.CreateSessionRequest(session_id="mine", system_prompt="s"))
    # t/{alice}/s/mine/lease/{holder} -> t/{bob}/s/victim/c/000000000000 (Bob's only commit record)
    holder = f"../../../../{tenant_key('bob')}/s/victim/c/000000000000"
    assert code_of(lambda: worker.call(ALICE, "HoldSession", pb.HoldSessionRequest(
        session_id="mine", holder=holder, seconds=0))) == grpc.StatusCode.INVALID_ARGUMENT
    assert worker.call(BOB, "GetSession", pb.GetSessionRequest(session_id="victim")).commit == 0


BAD = "../x"


@pytest.mark.parametrize("method, message", [
    ("HoldSession", pb.HoldSessionRequest(session_id="mine", holder=BAD, seconds=0)),
    ("HoldSession", pb.HoldSessionRequest(session_id="mine", holder="a\\b", seconds=60)),
    ("ListSessions", pb.ListSessionsRequest(page_token=BAD)),
    ("Abort", pb.AbortRequest(request_id=BAD)),
    ("Abort", pb.AbortRequest()),
    ("Generate", pb.GenerateRequest(request_id=BAD, token_ids=pb.TokenIds(ids=[1]),
                                    sampling=pb.SamplingParams(max_tokens=1))),
    ("ForkSession", pb.ForkSessionRequest(session_id="mine", new_session_id=BAD)),
    ("CreateSession", pb.CreateSessionRequest(from_session=BAD)),
    ("CreateSession", pb.CreateSessionRequest(session_id=BAD)),
    ("RewindSession", pb.RewindSessionRequest(session_id=BAD)),
    ("ImportSession", None),
], ids=lambda v: v if isinstance(v, str) else "")
def test_every_id_of_every_rpc_is_checked(worker, method, message) -> None:
    worker.call(ALICE, "CreateSession", pb.CreateSessionRequest(session_id="mine", system_prompt="s"))
    if method == "ImportSession":
        export = export_of(worker, ALICE, "mine")
        call = lambda: import_(worker, ALICE, export, session_id=BAD)  # noqa: E731
    elif method == "Generate":
        call = lambda: list(worker.call(ALICE, method, message))  # noqa: E731
    else:
        call = lambda: worker.call(ALICE, method, message)  # noqa: E731
    assert code_of(call) == grpc.StatusCode.INVALID_ARGUMENT
    assert worker.call(ALICE, "ListSessions", pb.ListSessionsRequest()).session_ids == ["mine"]


@pytest.fixture(params=["directory", "memory", "redis", "tiered"])
def blob_store(request, tmp_path):
    if request.param == "directory":
        return FsspecBlobs(str(tmp_path / "blobs"))
    if request.param == "memory":
        return FsspecBlobs(f"memory://isolation-{os.urandom(6).hex()}")
    redis = pytest.importorskip("redis")
    store = RedisBlobs(f"redis://127.0.0.1:6379/0?prefix=isolation-{os.urandom(6).hex()}:")
    try:
        store.client.ping()
    except redis.exceptions.RedisError:
        pytest.skip("no Redis server")
    return store if request.param == "redis" else TieredBlobs(store, FsspecBlobs(str(tmp_path / "cold")))


@pytest.mark.parametrize("key", ["", ".", "t/../../escape", "t/a/..", "/etc/passwd", "t//a", "t/a\\..\\b", "t/a\0b",
                                 "t/./a", "t/a/"])
def test_stores_refuse_keys_that_would_leave_their_root(blob_store, key) -> None:
    operations = [lambda: blob_store.get(key), lambda: blob_store.put(key, b"x"),
                  lambda: blob_store.put_if_absent(key, b"x"), lambda: blob_store.exists(key),
                  lambda: blob_store.delete(key), lambda: blob_store.size(key), lambda: blob_store.written_at(key)]
    for operation in operations:
        with pytest.raises(InvalidKey):
            operation()
    with pytest.raises(InvalidKey):
        list(blob_store.list(key + "/"))
    blob_store.put("t/a/b", b"kept")
    assert blob_store.get("t/a/b") == b"kept" and list(blob_store.list("t/")) == ["t/a/b"]
    blob_store.delete("t/a/b")


# -- 2. request IDs are per tenant ---------------------------------------------------------------------------------


def test_request_ids_are_per_tenant(worker) -> None:
    running = generate(worker, ALICE, [1, 2, 3], 200, request_id="job-1")
    assert next(running).request_id == "job-1"
    assert not worker.call(BOB, "Abort", pb.AbortRequest(request_id="job-1")).aborted
    # Bob may use the same ID: his own namespace, and his request ending does not end Alice's.
    bobs = list(generate(worker, BOB, [4, 5], 1, request_id="job-1"))
    assert bobs[-1].final.usage.completion_tokens == 1
    # Alice's own duplicate is refused, and the refusal cancels nothing.
    assert code_of(lambda: list(generate(worker, ALICE, [6], 1, request_id="job-1"))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert worker.call(ALICE, "GetLoad", pb.GetLoadRequest()).running_requests >= 1  # hers, still going
    final = [r for r in running if r.WhichOneof("event") == "final"][0].final
    assert final.finish_reason == pb.LENGTH and final.usage.completion_tokens == 200
    # and her own abort still works
    again = generate(worker, ALICE, [1, 2], 200, request_id="job-2")
    next(again)
    assert worker.call(ALICE, "Abort", pb.AbortRequest(request_id="job-2")).aborted
    assert [r for r in again if r.WhichOneof("event") == "final"][0].final.finish_reason == pb.CANCELLED


# -- 3. ImportSession: bounded while it streams and while it unpacks ------------------------------------------------


def test_an_import_larger_than_the_tenants_quota_stops_being_read(worker) -> None:
    worker.runtime.store.tenant_quota_bytes = 2 << 20
    pulled = itertools.count()

    def chunks():
        for _ in range(64):  # 64 MiB offered
            next(pulled)
            yield pb.ImportChunk(data=bytes(1 << 20))

    assert code_of(lambda: worker.call(ALICE, "ImportSession", chunks())) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert next(pulled) < 16


def test_a_compressed_bomb_is_refused_before_it_is_unpacked(model, tmp_path) -> None:
    w = Worker(model, open_blobs(str(tmp_path / "store")), import_limits=ImportLimits(max_uncompressed_bytes=8 << 20))
    try:
        w.call(ALICE, "CreateSession", pb.CreateSessionRequest(session_id="orig", system_prompt="s"))
        bomb = retar(export_of(w, ALICE, "orig"), [(file_member("pages/4/9999.safetensors", 64 << 20),
                                                    bytes(64 << 20))], mode="w:xz", first=True)
        assert len(bomb) < 64 << 10
        assert code_of(lambda: import_(w, ALICE, bomb, "copy")) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert w.call(ALICE, "ListSessions", pb.ListSessionsRequest()).session_ids == ["orig"]
    finally:
        w.stop()


def test_compressed_exports_import_and_odd_archives_are_invalid_arguments(worker) -> None:
    worker.call(ALICE, "CreateSession", pb.CreateSessionRequest(session_id="orig", system_prompt="s"))
    export = export_of(worker, ALICE, "orig")
    assert import_(worker, ALICE, retar(export, [], mode="w:gz"), "gz").session_id == "gz"
    link = tarfile.TarInfo("pages/4/0.safetensors")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("pages/4/1.safetensors")
    hard.type, hard.linkname = tarfile.LNKTYPE, "export.json"
    folder = tarfile.TarInfo("pages")
    folder.type = tarfile.DIRTYPE
    header = json.loads(tarfile.open(fileobj=io.BytesIO(export)).extractfile("export.json").read())
    doctored = json.dumps({**header, "commit": 5}).encode()
    odd = {
        "symlink": retar(export, [(link, None)]),
        "hard link": retar(export, [(hard, None)]),
        "directory": retar(export, [(folder, None)]),
        "unknown member": retar(export, [(file_member("../../etc/cron.d/x", 1), b"x")]),
        "duplicate member": retar(export, [(file_member("export.json", len(doctored)), doctored)]),
        "commit not an object": _replace_member(export, "export.json", doctored),
        "not a tar": os.urandom(5000),
        "truncated": export[: len(export) // 2],
        "truncated gzip": retar(export, [], mode="w:gz")[:300],
        "empty stream": b"",
    }
    for what, data in odd.items():
        assert code_of(lambda: import_(worker, ALICE, data)) == grpc.StatusCode.INVALID_ARGUMENT, what
    assert sorted(worker.call(ALICE, "ListSessions", pb.ListSessionsRequest()).session_ids) == ["gz", "orig"]


def _replace_member(export: bytes, name: str, data: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(export)) as source:
        members = [(m, source.extractfile(m).read()) for m in source.getmembers()]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, body in members:
            if info.name == name:
                info, body = file_member(name, len(data)), data
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


# -- 4. per-tenant slots and token rates hold for every RPC that computes -------------------------------------------


def test_every_compute_rpc_takes_one_of_the_tenants_slots(model, tmp_path) -> None:
    w = Worker(model, open_blobs(str(tmp_path / "store")), max_requests_per_tenant=1)
    try:
        w.call(ALICE, "CreateSession", pb.CreateSessionRequest(session_id="s", system_prompt="s"))
        export = export_of(w, ALICE, "s")
        running = generate(w, ALICE, [1, 2, 3], 400)
        next(running)
        calls = {
            "append": lambda: w.call(ALICE, "AppendSession", pb.AppendSessionRequest(
                session_id="s", token_ids=pb.TokenIds(ids=[7, 8]))),
            "create": lambda: w.call(ALICE, "CreateSession", pb.CreateSessionRequest(system_prompt="other")),
            "copy": lambda: w.call(ALICE, "CreateSession", pb.CreateSessionRequest(from_session="s")),
            "import": lambda: import_(w, ALICE, export, "imported"),
        }
        for what, call in calls.items():
            assert code_of(call) == grpc.StatusCode.RESOURCE_EXHAUSTED, what
        w.call(BOB, "CreateSession", pb.CreateSessionRequest(system_prompt="bob's own slot"))
        running.cancel()
    finally:
        w.stop()


def test_every_compute_rpc_pays_the_tenants_token_rate(model, tmp_path) -> None:
    unlimited = Worker(model, open_blobs(str(tmp_path / "store")))
    try:
        unlimited.call(ALICE, "CreateSession", pb.CreateSessionRequest(session_id="s", system_prompt="s"))
        unlimited.call(ALICE, "AppendSession", pb.AppendSessionRequest(session_id="s",
                                                                       token_ids=pb.TokenIds(ids=[9] * 40)))
        export = export_of(unlimited, ALICE, "s")
    finally:
        unlimited.stop()
    rated = Worker(model, open_blobs(str(tmp_path / "store")), tokens_per_second_per_tenant=1.0)  # 10 of burst
    try:
        append = pb.AppendSessionRequest(session_id="s", token_ids=pb.TokenIds(ids=list(range(1, 30))))
        rated.call(ALICE, "AppendSession", append)  # a full bucket admits it, and is 19 tokens short after
        calls = {
            "append": lambda: rated.call(ALICE, "AppendSession", append),
            "create": lambda: rated.call(ALICE, "CreateSession", pb.CreateSessionRequest(system_prompt="another")),
            "copy": lambda: rated.call(ALICE, "CreateSession", pb.CreateSessionRequest(from_session="s")),
            "import": lambda: import_(rated, ALICE, export, "imported"),
        }
        for what, call in calls.items():
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, what
            assert float(dict(raised.value.trailing_metadata())["retry-after"]) > 1, what
        rated.call(BOB, "CreateSession", pb.CreateSessionRequest(system_prompt="bob's own bucket"))
    finally:
        rated.stop()


# -- 5. a full disk is RESOURCE_EXHAUSTED ---------------------------------------------------------------------------


class FillingBlobs(FsspecBlobs):
    """A directory store whose disk can be made full: every write fails as the OS reports ENOSPC."""

    full = False

    def _check_space(self, key: str) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), key)

    def put(self, key: str, data: bytes) -> None:
        self._check_space(key)
        super().put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._check_space(key)
        return super().put_if_absent(key, data)


def test_a_full_disk_is_resource_exhausted_and_the_worker_goes_on(model, tmp_path) -> None:
    blobs = FillingBlobs(str(tmp_path / "store"))
    w = Worker(model, blobs)
    try:
        w.call(ALICE, "CreateSession", pb.CreateSessionRequest(session_id="s", system_prompt="s"))
        blobs.full = True
        for call in (lambda: w.call(ALICE, "CreateSession", pb.CreateSessionRequest(system_prompt="new")),
                     lambda: w.call(ALICE, "AppendSession", pb.AppendSessionRequest(
                         session_id="s", token_ids=pb.TokenIds(ids=[5, 6, 7]))),
                     lambda: list(w.call(ALICE, "Generate", pb.GenerateRequest(
                         session_id="s", token_ids=pb.TokenIds(ids=[5]),
                         sampling=pb.SamplingParams(temperature=0.0, max_tokens=2)))),
                     lambda: w.call(ALICE, "ForkSession", pb.ForkSessionRequest(session_id="s"))):
            assert code_of(call) == grpc.StatusCode.RESOURCE_EXHAUSTED
        blobs.full = False
        appended = w.call(ALICE, "AppendSession", pb.AppendSessionRequest(session_id="s",
                                                                          token_ids=pb.TokenIds(ids=[5, 6, 7])))
        assert appended.commit == 1
    finally:
        w.stop()


def test_commits_built_on_one_that_failed_are_not_written_once_space_is_back(model, tmp_path) -> None:
    """A turn's later commits only add what came after the failed one: written, they would name values nobody
    wrote. They fail with it, and the session reopens at its last written commit."""
    blobs = FillingBlobs(str(tmp_path / "store"))
    store = SessionStore(blobs, model.fingerprint, model.layout)
    writer = CommitWriter(store)
    try:
        session = store.create("alice")
        commits = []
        for tokens in ([5] * 300, [6] * 300, [7] * 300):
            model(ForwardBatch.single(tokens, session.state))
            commits.append(prepare(store, session, tokens))
        writer.submit(commits[0]).result()
        blobs.full = True
        with pytest.raises(OSError):
            writer.submit(commits[1]).result()
        blobs.full = False
        with pytest.raises(OSError):
            writer.submit(commits[2]).result()
        reopened = store.open("alice", session.session_id)
        assert (reopened.seq, len(reopened.token_ids), reopened.rebuilt) == (0, 300, False)
    finally:
        writer.close()


# -- 6. client mistakes in the session RPCs are clear statuses -----------------------------------------------------


def test_hostile_session_requests_get_deliberate_statuses(worker) -> None:
    worker.call(ALICE, "CreateSession", pb.CreateSessionRequest(session_id="s", system_prompt="s"))
    expected = {
        grpc.StatusCode.INVALID_ARGUMENT: [
            lambda: worker.call(ALICE, "ListSessions", pb.ListSessionsRequest(page_size=1 << 30)),
            lambda: worker.call(ALICE, "ListSessions", pb.ListSessionsRequest(page_size=-5)),
            lambda: worker.call(ALICE, "HoldSession", pb.HoldSessionRequest(session_id="s", holder="h",
                                                                           seconds=float("nan"))),
            lambda: worker.call(ALICE, "HoldSession", pb.HoldSessionRequest(session_id="s", seconds=60)),
            lambda: worker.call(ALICE, "AppendSession", pb.AppendSessionRequest(session_id="s")),
        ],
        grpc.StatusCode.NOT_FOUND: [
            lambda: worker.call(ALICE, "ForkSession", pb.ForkSessionRequest(session_id="s", commit=-1)),
            lambda: worker.call(ALICE, "RewindSession", pb.RewindSessionRequest(session_id="s", commit=-7)),
            lambda: worker.call(BOB, "GetSession", pb.GetSessionRequest(session_id="s")),  # Alice's: not revealed
        ],
    }
    for code, calls in expected.items():
        for index, call in enumerate(calls):
            assert code_of(call) == code, (code, index)
    assert worker.call(ALICE, "GetSession", pb.GetSessionRequest(session_id="s")).commit == 0
