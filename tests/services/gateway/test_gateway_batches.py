"""Batches and files through the official `openai` SDK, against the live gateway, model worker and jobs service: a
batch submitted as an uploaded JSONL file runs to completion and its results are fetched as an output file; files and
batches are the tenant's own (also in lists that must read past other tenants' batches); a batch is cancelled; bad
input is refused OpenAI-shaped. The last test needs no live parts: an upload over the size limit."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

ENDPOINT = "/v1/chat/completions"


def request_line(custom_id: str, model: str, content: str, max_tokens: int = 4) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT,
            "body": {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
                     "temperature": 0, "reasoning_effort": "none"}}


def jsonl(lines: list[dict | str]) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def wait_for(client, batch_id: str, statuses: tuple[str, ...], timeout: float = 30):
    deadline = time.monotonic() + timeout
    while (batch := client.batches.retrieve(batch_id)).status not in statuses:
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status}"
        time.sleep(0.2)
    return batch


def lines_of(client, file_id: str) -> list[dict]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


@pytest.fixture(scope="module")
def model(gateway) -> str:
    return gateway.client().models.list().data[0].id


@pytest.fixture(scope="module")
def finished_batch(gateway, model):
    """Three questions and, on line 3, a request without messages; run to the end."""
    client = gateway.client()
    data = jsonl([request_line("q-1", model, "one"), request_line("q-2", model, "two"),
                  {"custom_id": "no-messages", "method": "POST", "url": ENDPOINT, "body": {"messages": []}},
                  request_line("q-3", model, "three")])
    upload = client.files.create(file=("questions.jsonl", data), purpose="batch")
    created = client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h",
                                    metadata={"run": "nightly"})
    return upload, data, created, wait_for(client, created.id, ("completed",))


def test_a_batch_submitted_as_a_file_and_its_results_fetched(gateway, model, finished_batch):
    client = gateway.client()
    upload, data, created, batch = finished_batch
    assert (upload.object, upload.purpose, upload.status) == ("file", "batch", "processed")
    assert upload.bytes == len(data) and upload.filename == "questions.jsonl" and upload.id.startswith("file-")
    assert created.input_file_id == upload.id and created.endpoint == ENDPOINT
    assert created.completion_window == "24h" and created.metadata == {"run": "nightly"}  # reserved keys hidden
    assert [(e.line, e.code) for e in created.errors.data] == [(3, "invalid_request")]
    assert "messages" in created.errors.data[0].message
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (3, 3, 0)
    assert batch.completed_at >= batch.created_at and batch.error_file_id is None

    results = lines_of(client, batch.output_file_id)
    assert sorted(r["custom_id"] for r in results) == ["q-1", "q-2", "q-3"]
    for result in results:
        body = result["response"]["body"]
        assert result["error"] is None and result["id"].startswith("batch_req_")
        assert result["response"]["status_code"] == 200 and result["response"]["request_id"] == body["id"]
        assert body["object"] == "chat.completion" and body["model"] == model
        assert body["usage"]["completion_tokens"] <= 4
    output = client.files.retrieve(batch.output_file_id)
    assert (output.purpose, output.bytes) == ("batch_output", len(client.files.content(output.id).content))
    again = client.batches.retrieve(batch.id)  # the output is written once, not per read
    assert again.output_file_id == batch.output_file_id
    assert [f.id for f in client.files.list(purpose="batch_output")].count(batch.output_file_id) == 1


def test_batches_are_the_tenants_own(gateway, model, finished_batch):
    client, other = gateway.client(), gateway.client("key-other")
    batch = finished_batch[3]
    unknown = "batch_" + "0" * 32
    with pytest.raises(openai.NotFoundError) as error:
        client.batches.retrieve(unknown)
    assert error.value.body["message"] == f"no batch {unknown}"
    for call in (other.batches.retrieve, other.batches.cancel):  # a foreign batch reads as an unknown one
        with pytest.raises(openai.NotFoundError) as error:
            call(batch.id)
        assert error.value.body["message"] == f"no batch {batch.id}"
    assert client.batches.retrieve(batch.id).status == "completed"  # the refused cancel changed nothing
    for call in (other.files.retrieve, other.files.content, other.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(batch.output_file_id)
    with pytest.raises(openai.NotFoundError):  # their upload cannot be their batch's input either
        other.batches.create(input_file_id=batch.input_file_id, endpoint=ENDPOINT, completion_window="24h")

    theirs = other.files.create(file=("bad.jsonl", jsonl(["not json"])), purpose="batch")
    their_batch = other.batches.create(input_file_id=theirs.id, endpoint=ENDPOINT, completion_window="24h")
    assert their_batch.status == "failed" and their_batch.errors.data[0].line == 1  # no valid line: ends at once
    mine = [b.id for b in client.batches.list(limit=1)]  # one per page: the SDK follows `after` through them all
    assert batch.id in mine and their_batch.id not in mine and len(mine) == len(set(mine))
    assert [b.id for b in other.batches.list()] == [their_batch.id]
    with pytest.raises(openai.NotFoundError):
        client.batches.list(after=their_batch.id)
    assert theirs.id not in [f.id for f in client.files.list()]


def test_files_are_listed_retrieved_and_deleted(gateway):
    client = gateway.client()
    data = b'{"custom_id": "x"}\n'
    first = client.files.create(file=("one.jsonl", data), purpose="batch")
    second = client.files.create(file=("two.jsonl", data), purpose="batch")
    assert client.files.retrieve(first.id).model_dump() == first.model_dump()
    assert client.files.content(first.id).content == data
    newest = client.files.list(limit=1)
    assert [f.id for f in newest.data] == [second.id] and newest.has_more
    assert [f.id for f in client.files.list(after=second.id, limit=1).data] == [first.id]
    oldest_first = [f.id for f in client.files.list(order="asc")]
    assert oldest_first.index(first.id) < oldest_first.index(second.id)
    deleted = client.files.delete(first.id)
    assert (deleted.id, deleted.deleted) == (first.id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(first.id)
    assert first.id not in [f.id for f in client.files.list()]


def test_cancelling_a_batch(gateway, model):
    client = gateway.client()
    custom_ids = [f"c-{i}" for i in range(12)]
    upload = client.files.create(file=("many.jsonl", jsonl([request_line(c, model, "count to ten", max_tokens=48)
                                                           for c in custom_ids])), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h")
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at is not None
    cancelled = wait_for(client, batch.id, ("cancelled",))
    counts = cancelled.request_counts
    assert counts.total == 12 and counts.completed < 12 and cancelled.cancelled_at >= cancelled.cancelling_at
    failed = lines_of(client, cancelled.error_file_id)
    done = lines_of(client, cancelled.output_file_id)
    assert len(done) == counts.completed and all(r["error"] is None for r in done)
    assert sorted(r["custom_id"] for r in done + failed) == sorted(custom_ids)
    assert {r["error"]["code"] for r in failed} == {"batch_cancelled"}


def test_bad_input_is_refused_openai_shaped(gateway, model, finished_batch):
    client = gateway.client()
    with pytest.raises(openai.BadRequestError) as error:
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="fine-tune")
    assert error.value.body["param"] == "purpose" and "batch" in error.value.body["message"]
    upload = client.files.create(file=("q.jsonl", jsonl([request_line("q", model, "hi")])), purpose="batch")
    with pytest.raises(openai.BadRequestError) as error:
        client.batches.create(input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h")
    assert error.value.body["param"] == "endpoint" and ENDPOINT in error.value.body["message"]
    with pytest.raises(openai.BadRequestError) as error:
        client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT, completion_window="1h")
    assert error.value.body["param"] == "completion_window"
    with pytest.raises(openai.BadRequestError) as error:
        client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h",
                              metadata={"gateway.tenant": "other"})
    assert error.value.body["param"] == "metadata"
    with pytest.raises(openai.NotFoundError) as error:
        client.batches.create(input_file_id="file-nothing", endpoint=ENDPOINT, completion_window="24h")
    assert error.value.body["param"] == "input_file_id" and error.value.body["type"] == "not_found_error"
    with pytest.raises(openai.BadRequestError) as error:  # an output file is no input
        client.batches.create(input_file_id=finished_batch[3].output_file_id, endpoint=ENDPOINT,
                              completion_window="24h")
    assert "purpose" in error.value.body["message"]


def test_listing_reads_past_other_tenants_batches(gateway):
    """The jobs service lists every tenant's batches to the gateway, a hundred a page; a tenant's page must come
    from beyond pages holding none of theirs."""
    client, other = gateway.client(), gateway.client("key-other")
    mine = client.batches.create(input_file_id=client.files.create(file=("bad.jsonl", jsonl(["{"])),
                                                                   purpose="batch").id,
                                 endpoint=ENDPOINT, completion_window="24h")
    theirs = other.files.create(file=("bad.jsonl", jsonl(["{"])), purpose="batch")
    with ThreadPoolExecutor(8) as pool:  # a whole jobs page of theirs, newer than mine (invalid lines end at once)
        list(pool.map(lambda _: other.batches.create(input_file_id=theirs.id, endpoint=ENDPOINT,
                                                     completion_window="24h"), range(100)))
    assert [b.id for b in client.batches.list(limit=1).data] == [mine.id]


def test_a_file_over_the_limit_is_refused_and_leaves_no_bytes(tmp_path):
    from services.gateway.errors import ApiError
    from services.gateway.files import NewFile
    from services.gateway.settings import GatewaySettings
    from services.gateway.state import Gateway

    gw = Gateway(GatewaySettings(files_dir=str(tmp_path)), jobs=None, db=None)
    with pytest.raises(ApiError) as error, NewFile(gw, "acme", "file-big", limit=8) as new:
        new.write(b"12345")
        new.write(b"6789")
    assert (error.value.status, error.value.code) == (413, "file_too_large")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    with NewFile(gw, "../../escape", "file-ok", limit=8) as new:  # a tenant name is never a path
        new.write(b"fits")
        row = new.keep("ok.jsonl", "batch")
    assert (tmp_path / row.path).read_bytes() == b"fits" and (tmp_path / row.path).parent.parent == tmp_path
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["file-ok"]
