"""Deleting a stored response, and the worker sessions only it needed.

Which responses share a session: a conversation's first response creates a session named after itself; a response
continuing the newest one goes on in place, on the same session (so a chain of responses names one session, each at
its own commit); a response continuing an older one forks a new session named after itself (values shared by
address, so the fork does not need its source). A background response gets a branch named after itself, which its
job branches again; once the job ends, the response names the job's session. So a response's own session ID, and the
one it names, are the candidates; one goes when no other stored response of the tenant names it. Deleting a session
releases its records; its values go at the worker's next collection unless another session still names them.

A session still needed by a request in flight is left (the worker refuses to delete a busy session, and that
request's response will name it), as is one whose worker does not answer: the worker's expiry of idle sessions
reclaims whatever is left over, so a failure here never fails the deletion of the response.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select
from starlette.concurrency import run_in_threadpool

from foundation.clients.worker import NotFound, WorkerError
from services.gateway.state import Gateway
from services.gateway.store import StoredResponse

log = logging.getLogger(__name__)


async def delete_response(gw: Gateway, row: StoredResponse) -> list[str]:
    """Delete the row, then the worker sessions no other stored response needs; returns the sessions deleted."""
    unneeded = await run_in_threadpool(_delete_row, gw, row)
    deleted = []
    for session_id in unneeded:
        try:
            await gw.worker(gw.place(session_id, row.worker_address)).delete_session(session_id)
            deleted.append(session_id)
        except NotFound:
            continue  # a response that went on in place has no session of its own
        except WorkerError as exc:  # busy with a request, or no worker answers: left for the worker's expiry
            log.warning("response %s deleted; its session %s stays until it expires (%s)", row.id, session_id, exc)
    return deleted


def _delete_row(gw: Gateway, row: StoredResponse) -> list[str]:
    """Delete the row; the candidate sessions that no other stored response of the tenant names."""
    candidates = {row.id, row.worker_session_id} - {None} if row.worker_address else set()
    with gw.db.begin() as s:
        s.execute(delete(StoredResponse).where(StoredResponse.id == row.id))
        still_named = set(s.scalars(select(StoredResponse.worker_session_id).where(
            StoredResponse.tenant == row.tenant, StoredResponse.worker_session_id.in_(candidates))))
    return sorted(candidates - still_named)
