"""The FastAPI dependencies every route takes: the app's `Gateway` (`GatewayDep`) and the caller's tenant
(`TenantDep`, from its Bearer key; `AnthropicTenantDep` takes `x-api-key` too). Routers import
these, never app.py, which imports the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from foundation import tenancy
from foundation.auth import tenant_for
from services.gateway.state import Gateway


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def tenant(request: Request, gw: Annotated[Gateway, Depends(gateway)]) -> str:
    """The caller's tenant; every call the request makes to the workers and the jobs service acts for it. (An async
    dependency runs in the request's own task, so the tenant set here holds for the endpoint, its stream and the
    threads it hands work to, and goes with the task.)"""
    caller = tenant_for(request.headers, gw.api_keys)
    tenancy.act_for(caller)
    return caller


async def anthropic_tenant(request: Request, gw: Annotated[Gateway, Depends(gateway)]) -> str:
    """The tenant of an Anthropic-API request: its key in `x-api-key` (as Anthropic's SDKs send it) or Bearer."""
    headers = dict(request.headers)
    if "authorization" not in headers and "x-api-key" in headers:
        headers["authorization"] = f"Bearer {headers['x-api-key']}"
    caller = tenant_for(headers, gw.api_keys)
    tenancy.act_for(caller)
    return caller


GatewayDep = Annotated[Gateway, Depends(gateway)]
TenantDep = Annotated[str, Depends(tenant)]
AnthropicTenantDep = Annotated[str, Depends(anthropic_tenant)]
