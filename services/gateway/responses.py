"""`/v1/responses` on persistent worker sessions. A stored response is a commit of a session: a new conversation
creates one (its instructions and tools fixed there); `previous_response_id` continues that session in place when
the response is still its newest commit, and on a fork at the response's commit otherwise, so only the new input is
prefilled. `background: true` runs the turn as an interactive (by default Think Max) job on a branch of the session;
polling reads the job. The request is in responses_request.py, the Response object in responses_shapes.py."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from foundation.clients.worker import FailedPrecondition, Final, Message, NotFound, Tool, WorkerError
from services.gateway import errors
from services.gateway import responses_cleanup as cleanup
from services.gateway import responses_request as inputs
from services.gateway import responses_rows as rows
from services.gateway import responses_shapes as shapes
from services.gateway.bounds import BoundedRoute
from services.gateway.deps import GatewayDep, TenantDep
from services.gateway.responses_request import ResponsesRequest
from services.gateway.responses_rows import ENDED
from services.gateway.responses_shapes import EventStream
from services.gateway.state import Gateway, first_event
from services.gateway.store import StoredResponse

router = APIRouter(route_class=BoundedRoute)

JOB_ENDED = ("completed", "failed", "expired", "cancelled")
CANCEL_WAIT_S = 10.0  # a running job stops at its next lease renewal or decode chunk; cancel waits that long for it


@dataclass
class Target:
    """Where a reply is generated: a worker session expected at `commit` (no session: stateless), and the tokens
    this request prefilled to make the session (a new one's head), which are not cached tokens."""

    address: str
    session_id: str | None = None
    commit: int | None = None
    in_place: bool = False  # the previous response's own session: the worker refuses if it has moved on
    fresh_tokens: int = 0

    def columns(self, commit: int | None = None) -> dict[str, Any]:
        return {"worker_address": self.address, "worker_session_id": self.session_id, "worker_commit": commit}


@dataclass
class ResponseTurn:
    """One POST /v1/responses: what it asks, the stored response it continues, its row (kept when it is stored)."""

    body: ResponsesRequest
    row: StoredResponse
    previous: StoredResponse | None
    messages: list[Message]
    tool_choice: str | None  # as the worker takes it, checked against the conversation's tools
    response: dict[str, Any]  # the Response object as it starts

    @property
    def conversation(self) -> dict[str, Any]:
        return self.row.request["conversation"]


@router.post("/responses")
async def create_response(body: ResponsesRequest, gw: GatewayDep, tenant: TenantDep):
    gw.check_model(body.model)
    body.check(gw.settings.input_limits())
    body.choose_mode(gw.mode_policy)
    response_id = f"resp_{uuid.uuid4().hex}"
    previous = await _continuable(gw, tenant, body.previous_response_id) if body.previous_response_id else None
    conversation = _conversation(body, previous)
    request = {"body": body.model_dump(mode="json", exclude_none=True), "conversation": conversation}
    row = StoredResponse(id=response_id, tenant=tenant, model=gw.model_name, status="in_progress", store=body.store,
                         background=body.background, previous_response_id=body.previous_response_id, request=request)
    known = inputs.known_items(previous.body) if previous else set()
    turn = ResponseTurn(body, row, previous, inputs.input_messages(body.input, known, gw.settings.max_json_depth),
                body.worker_tool_choice([tool["name"] for tool in conversation["tools"]]),
                shapes.new_response(response_id, body, gw.model_name, conversation, int(time.time())))
    if body.background:
        return await _submit(gw, turn)
    if gw.rates is not None:
        gw.rates.admit(tenant, sum(len(m.content) for m in turn.messages) // 4 + 1)
    if not body.stream:
        with gw.slot(tenant):
            target, event, events = await _start(gw, turn)
            while not isinstance(event, Final):
                event = await events.__anext__()
        calls = [(c.id, c.name, json.dumps(c.arguments)) for c in event.tool_calls]
        output = shapes.output_items(response_id, event.content, event.reasoning_content, calls)
        return await _finish(gw, turn, target, output, event)
    gw.acquire(tenant)  # here, so that a refusal is an HTTP status rather than a broken stream; _sse releases
    try:
        target, first, events = await _start(gw, turn)
        if body.store:  # retrievable, in_progress, while it streams
            await rows.save(gw, turn.row, turn.response, **target.columns())
    except BaseException:
        gw.release(tenant)
        raise
    return StreamingResponse(_sse(gw, turn, target, first, events), media_type="text/event-stream")


@router.get("/responses/{response_id}")
async def get_response(response_id: str, gw: GatewayDep, tenant: TenantDep):
    return (await _refresh(gw, await rows.load(gw, tenant, response_id))).body


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, gw: GatewayDep, tenant: TenantDep):
    row = await rows.load(gw, tenant, response_id)
    if not row.background:
        raise errors.ApiError(400, f"response {response_id} is not a background response; only those are cancelled")
    if row.status not in ENDED:
        await run_in_threadpool(gw.need_jobs().cancel, row.batch_id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while (row := await _refresh(gw, row)).status not in ENDED and time.monotonic() < deadline:
            await asyncio.sleep(gw.settings.background_poll_seconds)
    return row.body


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, gw: GatewayDep, tenant: TenantDep):
    """The stored response goes, and the worker sessions no other stored response needs (responses_cleanup.py)."""
    row = await rows.load(gw, tenant, response_id)
    if row.background and row.status not in ENDED:
        await run_in_threadpool(gw.need_jobs().cancel, row.batch_id)
    await cleanup.delete_response(gw, row)
    return {"id": row.id, "object": "response.deleted", "deleted": True}


@router.get("/responses/{response_id}/input_items")
async def list_input_items(response_id: str, gw: GatewayDep, tenant: TenantDep,
                           order: Literal["asc", "desc"] = "desc"):
    """The response's own input items, on one page (one turn's input)."""
    row = await rows.load(gw, tenant, response_id)
    items = inputs.input_item_objects(row.id, row.request["body"]["input"])
    items = items[::-1] if order == "desc" else items
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": False}


# -- the conversation's session -----------------------------------------------------------------------------------

def _conversation(body: ResponsesRequest, previous: StoredResponse | None) -> dict[str, Any]:
    """The instructions and tools, set by a conversation's first response. The session holds them in its prefix, so
    a continuation may repeat them (agent frameworks resend both every turn) but not change them."""
    tools = [dataclasses.asdict(tool) for tool in body.worker_tools() or ()]
    if previous is None:
        return {"instructions": body.instructions or "", "tools": tools}
    conversation = previous.request["conversation"]
    for name, changed in (("instructions", body.instructions not in (None, conversation["instructions"])),
                          ("tools", body.tools is not None and tools != conversation["tools"])):
        if changed:
            raise errors.ApiError(400, f"{name}: fixed by the conversation's first response (its session holds "
                                       "them); start a new conversation to change them", param=name)
    return conversation


async def _start(gw: Gateway, turn: ResponseTurn) -> tuple[Target, Any, AsyncIterator]:
    """(target, first event, the rest): the generation started where the conversation goes on. In place first; when
    the session has moved past the response (or another turn is on it), the worker refuses and it forks."""
    previous, body = turn.previous, turn.body
    if previous is not None:
        target = Target(gw.place(previous.worker_session_id, previous.worker_address), previous.worker_session_id,
                        previous.worker_commit, in_place=True)
    elif body.store:
        target = await _new_session(gw, turn)
    else:
        target = Target(gw.pick(body.affinity(turn.row.tenant)))
    try:
        try:
            events = _generate(gw, turn, target)
            return target, await first_event(events), events
        except FailedPrecondition:
            if not target.in_place:
                raise
        target = await _fork(gw, previous, turn.row.id)
        events = _generate(gw, turn, target)
        return target, await first_event(events), events
    except NotFound:
        if previous is None:
            raise
        raise _state_gone(previous) from None


async def _new_session(gw: Gateway, turn: ResponseTurn) -> Target:
    address = gw.pick(turn.body.affinity(turn.row.tenant))
    tools = [Tool(**tool) for tool in turn.conversation["tools"]] or None
    info = await gw.worker(address).create_session(session_id=turn.row.id, tools=tools,
                                                     system_prompt=turn.conversation["instructions"],
                                                     think_max=turn.body.mode() == "think-max")
    gw.workers.placed(info.session_id, address)
    return Target(address, info.session_id, info.commit, fresh_tokens=info.tokens - info.reused_prefix_tokens)


async def _fork(gw: Gateway, previous: StoredResponse, session_id: str) -> Target:
    address = gw.place(previous.worker_session_id, previous.worker_address)
    try:
        info = await gw.worker(address).fork(previous.worker_session_id, previous.worker_commit, session_id)
    except NotFound:
        raise _state_gone(previous) from None
    gw.workers.placed(info.session_id, address)
    return Target(address, info.session_id, info.commit)


def _state_gone(previous: StoredResponse) -> errors.ApiError:
    return errors.ApiError(409, f"the model worker no longer holds the state of response {previous.id} (session "
                                f"{previous.worker_session_id}, commit {previous.worker_commit}); continue from a "
                                "newer response", param="previous_response_id", code="state_expired")


def _generate(gw: Gateway, turn: ResponseTurn, target: Target) -> AsyncIterator:
    body = turn.body
    common = dict(mode=body.mode(), sampling=body.sampling(body.max_output_tokens), tool_choice=turn.tool_choice,
                  response_format=body.schema())
    client = gw.worker(target.address)
    if target.session_id is None:  # stateless: the instructions and tools go with the request
        instructions = turn.conversation["instructions"]
        system = [Message("system", instructions)] if instructions else []
        return client.generate(messages=system + turn.messages, tools=body.worker_tools(), **common)
    return client.generate(session_id=target.session_id, expected_commit=target.commit, messages=turn.messages,
                           **common)


async def _finish(gw: Gateway, turn: ResponseTurn, target: Target, output: list[dict], final: Final) -> dict[str, Any]:
    """The ended Response; a stored one's row points at the session's commit that now holds its reply."""
    usage = final.usage
    gw.count_usage(turn.row.tenant, usage)
    # Input: all the reply was computed from, the reused session history and what was fed now (the new input and
    # the tokens the last reply still owed); cached: the history, less what this request prefilled to build it.
    response = shapes.ended(turn.response, output, final.finish_reason, shapes.response_usage(
        usage.reused_tokens + usage.prefilled_tokens, usage.reused_tokens - target.fresh_tokens,
        usage.completion_tokens, usage.reasoning_tokens, stored=turn.body.store), int(time.time()))
    if turn.body.store:
        commit = (await gw.worker(target.address).get_session(target.session_id)).commit
        await rows.save(gw, turn.row, response, **target.columns(commit))
    return response


async def _sse(gw: Gateway, turn: ResponseTurn, target: Target, first, events: AsyncIterator) -> AsyncIterator[str]:
    stream, response, ended = EventStream(turn.row.id), turn.response, False
    yield stream.event("response.created", response=response)
    yield stream.event("response.in_progress", response=response)
    try:
        event = first
        while True:
            for chunk in stream.feed(event):
                yield chunk
            if isinstance(event, Final):
                break
            event = await events.__anext__()
        for chunk in stream.close():
            yield chunk
        response, ended = await _finish(gw, turn, target, stream.items, event), True
        yield stream.event("response.incomplete" if response["status"] == "incomplete" else "response.completed",
                           response=response)
    except WorkerError as error:  # mid-stream: the status is sent already; the failure goes in the stream
        response, ended = shapes.failed(response, errors.from_worker(error).message, int(time.time())), True
        if turn.body.store:
            await rows.save(gw, turn.row, response)
        yield stream.event("response.failed", response=response)
    finally:
        gw.release(turn.row.tenant)
        if not ended and turn.body.store:  # the caller went away: the reply was cut off, nothing to go on from
            cut = shapes.failed(response, "the stream closed before the reply ended", int(time.time()))
            rows.write(gw, rows.stamp(turn.row, cut))  # not awaited: a cancelled stream's awaits are cancelled too


# -- background: a job on the jobs service ------------------------------------------------------------------------

async def _submit(gw: Gateway, turn: ResponseTurn) -> dict[str, Any]:
    jobs, body = gw.need_jobs(), turn.body
    if not body.store or body.stream:
        raise errors.ApiError(400, "background: a background response is polled: store it and do not stream it",
                              param="store" if not body.store else "stream")
    # The job forks the session's newest commit when it runs: it gets a branch of its own at the right commit.
    target = await _fork(gw, turn.previous, turn.row.id) if turn.previous else await _new_session(gw, turn)
    request = inputs.job_request(turn.row.id, target.session_id, body, turn.messages, turn.tool_choice)
    batch = await run_in_threadpool(functools.partial(jobs.submit, [request], interactive=True))
    turn.row.request = {**turn.row.request, "fresh_tokens": target.fresh_tokens}
    row = await rows.save(gw, turn.row, {**turn.response, "status": "queued"}, batch_id=batch.id, **target.columns())
    return row.body


async def _refresh(gw: Gateway, row: StoredResponse) -> StoredResponse:
    """A background response as its job now stands (others as stored). An ended job's reply becomes the output,
    and the job's own session (a branch of the conversation's) is where the conversation goes on."""
    if not row.background or row.status in ENDED:
        return row
    jobs = gw.need_jobs()
    batch = await run_in_threadpool(jobs.get, row.batch_id)
    if batch.status not in JOB_ENDED:
        status = "in_progress" if batch.request_counts.running or batch.status == "cancelling" else "queued"
        return row if status == row.status else await rows.save(gw, row, {**row.body, "status": status})
    lines = await run_in_threadpool(lambda: list(jobs.results(row.batch_id)))
    line, now = (lines or [None])[0], int(time.time())
    if line is None or not line.response_json:  # failed, expired, or cancelled before it started
        if batch.status == "cancelled" or (line is not None and line.status == "cancelled"):
            return await rows.save(gw, row, {**row.body, "status": "cancelled", "completed_at": now})
        reason = line.error_message if line is not None else ""
        return await rows.save(gw, row, shapes.failed(row.body, reason or f"its job ended {batch.status}", now))
    completion = json.loads(line.response_json)
    session, commit = completion.get("session_id"), None
    try:
        if session:
            commit = (await gw.worker(gw.place(session, row.worker_address)).get_session(session)).commit
    except NotFound:  # the jobs service ran it on a worker (or worker tenant) this gateway does not reach
        session = None  # its reply is shown, but not continued from
    response = shapes.from_completion(row.body, completion, line.status == "cancelled",
                                      row.request.get("fresh_tokens", 0), session is not None, now)
    return await rows.save(gw, row, response, worker_session_id=session, worker_commit=commit)


# -- rows --------------------------------------------------------------------------------------------------------

async def _continuable(gw: Gateway, tenant: str, response_id: str) -> StoredResponse:
    row = await _refresh(gw, await rows.load(gw, tenant, response_id, param="previous_response_id"))
    if row.status in ("queued", "in_progress") or row.worker_commit is None:
        why = f"is still {row.status}" if row.status not in ENDED else f"ended {row.status} with no reply"
        raise errors.ApiError(409, f"response {response_id} {why} to continue from", param="previous_response_id",
                              code="response_not_continuable")
    return row
