"""The end user's tenant as it travels between the platform's services.

A service that calls another for an end user (the gateway, the jobs runner, the agent service) does so with its own
service key and names the tenant it acts for in the call metadata (`dsv4-tenant`). The callee honours that name only
for keys its table marks as service keys (foundation/auth.py), so the tenant that reaches the data is the
end user's at every hop, never the calling service's.

A service sets the tenant once where it learns it (`acting_for`); every typed client reads it when a call starts, the
way the trace context travels (foundation/clients/worker/policy.py). It lives in a context variable: asyncio tasks
inherit it, threads do not, so work handed to a thread runs in a copy of the caller's context (`in_current_context`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

TENANT_HEADER = "dsv4-tenant"
MAX_TENANT_CHARS = 128  # the SQL stores' tenant columns hold this many

_acting: contextvars.ContextVar[str | None] = contextvars.ContextVar("dsv4_acting_tenant", default=None)

P = ParamSpec("P")
R = TypeVar("R")


class InvalidTenant(ValueError):
    """A tenant name that is empty, too long or holds control characters (INVALID_ARGUMENT)."""


def check_tenant(tenant: object) -> str:
    if not isinstance(tenant, str) or not 0 < len(tenant) <= MAX_TENANT_CHARS or not tenant.isprintable():
        raise InvalidTenant(f"a tenant is 1-{MAX_TENANT_CHARS} printable characters, not {tenant!r:.80}")
    return tenant


def acting_tenant() -> str | None:
    """The tenant calls made now act for (None: the caller's own)."""
    return _acting.get()


@contextlib.contextmanager
def acting_for(tenant: str | None) -> Iterator[None]:
    """Calls to other services made inside act for `tenant` (None: for the caller's own tenant)."""
    token = _acting.set(None if tenant is None else check_tenant(tenant))
    try:
        yield
    finally:
        _acting.reset(token)


def act_for(tenant: str) -> None:
    """Calls made from now on in the current context act for `tenant`: for a scope that is a context of its own
    (an asyncio task serving one request), where nothing follows that could need it reset."""
    _acting.set(check_tenant(tenant))


def in_current_context(function: Callable[P, R]) -> Callable[P, R]:
    """`function` bound to a copy of the current context, for a thread's target: the thread then acts for the same
    tenant (and continues the same trace) as the code that started it."""
    context = contextvars.copy_context()

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return context.run(function, *args, **kwargs)

    return run
